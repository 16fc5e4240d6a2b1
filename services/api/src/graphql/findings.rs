//! Findings: `finding(id:)`, `findings(…)`, `engagement.findings`, `finding.affectedTargets`,
//! and the mutations of findings (bulk updates included).

use std::collections::HashMap;

use async_graphql::{Context, Enum, InputObject, MaybeUndefined, Object, SimpleObject, ID};
use pwnbook_projections::batch::{self, PerParent};
use pwnbook_projections::findings::{self, FindingRow, FindingSort};
use pwnbook_projections::list::SortValue;
use serde::Serialize;
use sqlx::AnyPool;

use crate::error::ApiError;
use crate::graphql::connection::{self, page, Connection, Filters, ListArgs, SortOrder};
use crate::graphql::context::{allowed, route};
use crate::graphql::engagements::Engagement;
use crate::graphql::errors::Result;
use crate::graphql::events::EventFeed;
use crate::graphql::loaders::{child_kind, ChildKind, TargetById};
use crate::graphql::loaders::{Node, Siblings};
use crate::graphql::shared::{body, history_of, id_strings, if_match, past, related};
use crate::graphql::targets::{engagement_of, Target};
use crate::graphql::view::View;
use crate::openapi::to_json;
use crate::pagination::ListRequest;
use crate::routes::findings as rest;

/// A finding's CVSS vector and the score the server computed from it.
pub struct Cvss(View);

/// A finding's CVSS vector and the score the server computed from it.
#[Object]
impl Cvss {
    async fn vector(&self) -> Result<&str> {
        self.0.str("vector")
    }

    async fn score(&self) -> Result<f64> {
        self.0.float("score")
    }

    /// `3.0`, `3.1` or `4.0`.
    async fn version(&self) -> Result<&str> {
        self.0.str("version")
    }
}

/// A finding.
pub struct Finding(pub Node);

impl Finding {
    pub fn of(row: &FindingRow) -> Self {
        Self(Siblings::alone(Self::view(row)))
    }

    /// The REST view of a row.
    pub fn view(row: &FindingRow) -> View {
        View::of(rest::render(row))
    }
}

/// A finding.
#[Object]
impl Finding {
    async fn id(&self) -> Result<ID> {
        self.0.id()
    }

    async fn engagement_id(&self) -> Result<ID> {
        Ok(ID(self.0.str("engagementId")?.to_owned()))
    }

    async fn title(&self) -> Result<&str> {
        self.0.str("title")
    }

    /// `critical`, `high`, `medium`, `low` or `info`.
    async fn severity(&self) -> Result<&str> {
        self.0.str("severity")
    }

    async fn cvss(&self) -> Option<Cvss> {
        self.0.object("cvss").map(Cvss)
    }

    async fn cwe(&self) -> Vec<String> {
        self.0.strings("cwe")
    }

    async fn cve(&self) -> Vec<String> {
        self.0.strings("cve")
    }

    async fn description(&self) -> Option<&str> {
        self.0.opt_str("description")
    }

    async fn impact(&self) -> Option<&str> {
        self.0.opt_str("impact")
    }

    async fn remediation(&self) -> Option<&str> {
        self.0.opt_str("remediation")
    }

    async fn steps_to_reproduce(&self) -> Option<&str> {
        self.0.opt_str("stepsToReproduce")
    }

    async fn references(&self) -> Vec<String> {
        self.0.strings("references")
    }

    async fn affected_target_ids(&self) -> Vec<ID> {
        self.0.ids("affectedTargetIds")
    }

    /// `draft`, `open`, `remediated`, `accepted_risk`, `false_positive` or `closed`.
    async fn status(&self) -> Result<&str> {
        self.0.str("status")
    }

    /// `in_progress`, `ready_for_review`, `approved` or `needs_improvement`.
    async fn review_status(&self) -> Result<&str> {
        self.0.str("reviewStatus")
    }

    async fn retest_notes(&self) -> Option<&str> {
        self.0.opt_str("retestNotes")
    }

    async fn tags(&self) -> Vec<String> {
        self.0.strings("tags")
    }

    async fn created_at(&self) -> Result<&str> {
        self.0.str("createdAt")
    }

    async fn updated_at(&self) -> Result<&str> {
        self.0.str("updatedAt")
    }

    async fn opened_at(&self) -> Option<&str> {
        self.0.opt_str("openedAt")
    }

    async fn remediated_at(&self) -> Option<&str> {
        self.0.opt_str("remediatedAt")
    }

    async fn closed_at(&self) -> Option<&str> {
        self.0.opt_str("closedAt")
    }

    async fn version(&self) -> Result<i64> {
        self.0.int("version")
    }

    /// The targets of `affectedTargetIds` that still exist (targets:read), in that order.
    #[graphql(complexity = "10 * child_complexity")]
    async fn affected_targets(&self, ctx: &Context<'_>) -> Result<Option<Vec<Target>>> {
        let session = allowed(ctx, route::TARGET)?;
        let found = related(
            &self.0,
            "affectedTargets",
            |view| view.strings("affectedTargetIds"),
            |ids| async move {
                let rows = session.loader.load_many(ids.into_iter().map(TargetById)).await?;
                Ok(rows.into_values().map(|row| (row.id.clone(), Target::view(&row))).collect())
            },
        )
        .await?;
        let ids = self.0.strings("affectedTargetIds");
        Ok(Some(ids.iter().filter_map(|id| found.get(id).cloned().map(Target)).collect()))
    }

    /// The engagement it belongs to (engagements:read).
    async fn engagement(&self, ctx: &Context<'_>) -> Result<Option<Engagement>> {
        engagement_of(ctx, &self.0).await
    }

    /// Its events (audit:read).
    #[graphql(complexity = "connection::per_item(limit, child_complexity)")]
    async fn history(
        &self,
        ctx: &Context<'_>,
        after: Option<i64>,
        limit: Option<i64>,
    ) -> Result<Option<EventFeed>> {
        history_of::<rest::Tracked>(ctx, route::FINDING_HISTORY, self.0.str("id")?, after, limit).await
    }
}

/// Sort fields of finding lists.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum FindingSortField {
    CreatedAt,
    UpdatedAt,
    /// By rank: critical highest.
    Severity,
    /// Findings without a vector lowest.
    CvssScore,
    Title,
    Status,
}

impl FindingSortField {
    pub fn rest(self) -> &'static str {
        match self {
            Self::CreatedAt => "createdAt",
            Self::UpdatedAt => "updatedAt",
            Self::Severity => "severity",
            Self::CvssScore => "cvssScore",
            Self::Title => "title",
            Self::Status => "status",
        }
    }
}

/// Filters of finding lists (those of `GET /engagements/{id}/findings`).
#[derive(InputObject, Default)]
pub struct FindingFilterInput {
    pub status: Option<Vec<String>>,
    pub severity: Option<Vec<String>>,
    pub review_status: Option<Vec<String>>,
    /// Findings affecting any of these targets.
    pub target_id: Option<Vec<ID>>,
    pub cwe: Option<Vec<String>>,
    pub cve: Option<Vec<String>>,
    pub tag: Option<Vec<String>>,
    /// Case-insensitive substring of the title.
    pub q: Option<String>,
    pub created_after: Option<String>,
    pub created_before: Option<String>,
}

impl FindingFilterInput {
    pub fn pairs(filter: Option<Self>) -> Vec<(String, String)> {
        Self::with_engagements(None, filter)
    }

    /// The parameters of `GET /findings`: `engagementId` first, as REST lists its filters.
    fn with_engagements(engagement_ids: Option<Vec<ID>>, filter: Option<Self>) -> Vec<(String, String)> {
        let f = filter.unwrap_or_default();
        Filters::default()
            .list("engagementId", id_strings(engagement_ids))
            .list("status", f.status)
            .list("severity", f.severity)
            .list("reviewStatus", f.review_status)
            .list("targetId", id_strings(f.target_id))
            .list("cwe", f.cwe)
            .list("cve", f.cve)
            .list("tag", f.tag)
            .one("q", f.q)
            .one("createdAfter", f.created_after)
            .one("createdBefore", f.created_before)
            .done()
    }
}

/// Findings listed per engagement.
pub struct FindingsOf;

child_kind!(FindingsOf, FindingSort, FindingRow, Finding, scope: false, page: batch::findings_page, count: batch::findings_count);

#[derive(Default)]
pub struct FindingQuery;

#[Object]
impl FindingQuery {
    /// A finding (findings:read); with `version` or `asOf` (RFC 3339), as it was then.
    async fn finding(
        &self,
        ctx: &Context<'_>,
        id: ID,
        version: Option<i64>,
        #[graphql(name = "asOf")] as_of: Option<String>,
    ) -> Result<Option<Finding>> {
        let session = allowed(ctx, route::FINDING)?;
        if let Some(view) = past::<rest::Tracked>(session, &id, version, as_of).await? {
            return Ok(Some(Finding(Siblings::alone(view))));
        }
        Ok(Some(Finding::of(&rest::load(&session.state, &session.caller, &id).await?)))
    }

    /// Findings across engagements (findings:read), as `GET /findings`; `engagementId` keeps
    /// those of the engagements named.
    #[graphql(complexity = "connection::complexity(first, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn findings(
        &self,
        ctx: &Context<'_>,
        engagement_id: Option<Vec<ID>>,
        filter: Option<FindingFilterInput>,
        sort: Option<FindingSortField>,
        order: Option<SortOrder>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<Connection<Finding>>> {
        let session = allowed(ctx, route::FINDINGS)?;
        let filters = FindingFilterInput::with_engagements(engagement_id, filter);
        let args = ListArgs::new(first, after, sort.map(FindingSortField::rest), order, filters);
        let request = args.request(rest::SORTS, rest::FLAT_FILTERS, FindingSort::accepts)?;
        let filter = rest::filter_of(&request, true)?;
        let (pool, org) = (session.state.store.pool(), session.organization_id());
        let window = request.probe_window();
        let rows = findings::list(pool, org, &filter, request.sort, request.order, &window);
        let count = || findings::count(pool, org, &filter);
        let sort = request.sort;
        Ok(Some(
            page(
                ctx,
                &request,
                rows,
                count,
                |row| (sort.value_of(row), row.id.clone()),
                Finding::view,
                Finding,
            )
            .await?,
        ))
    }
}

/// A CVSS vector (v3.0, v3.1 or v4.0); the server computes the score.
#[derive(InputObject, Serialize)]
pub struct CvssInput {
    /// Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<String>,
}

/// A new finding (the body of `POST /engagements/{id}/findings`); it starts as a `draft` in
/// review `in_progress`.
#[derive(InputObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateFindingInput {
    /// Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Without it, the CVSS score's rating (`info` for None); one of the two is required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cvss: Option<CvssInput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwe: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cve: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps_to_reproduce: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub references: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affected_target_ids: Option<Vec<ID>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retest_notes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// Changed fields only (the body of `PATCH /findings/{id}`); `status` and `reviewStatus` move
/// along their transition tables.
#[derive(InputObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateFindingInput {
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub title: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub severity: MaybeUndefined<String>,
    /// A new vector moves the severity along unless `severity` is given too; null removes it.
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub cvss: MaybeUndefined<CvssInput>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub cwe: MaybeUndefined<Vec<String>>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub cve: MaybeUndefined<Vec<String>>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub description: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub impact: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub remediation: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub steps_to_reproduce: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub references: MaybeUndefined<Vec<String>>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub affected_target_ids: MaybeUndefined<Vec<ID>>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub retest_notes: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub tags: MaybeUndefined<Vec<String>>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub status: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub review_status: MaybeUndefined<String>,
}

/// A move along either lifecycle (the body of `POST /findings/{id}/transition`).
#[derive(InputObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingTransitionInput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// What a bulk update sets on every finding.
#[derive(InputObject, Serialize)]
pub struct BulkFindingSetInput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// 1 to 100 finding ids and what to set on each (the body of
/// `PATCH /engagements/{id}/findings/bulk`).
#[derive(InputObject, Serialize)]
pub struct BulkUpdateFindingsInput {
    /// Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<ID>>,
    /// Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<BulkFindingSetInput>,
}

/// One invalid field.
#[derive(SimpleObject)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// The error of one item of a bulk update (REST's error envelope).
pub struct ErrorDetail(View);

/// The error of one item of a bulk update (REST's error envelope).
#[Object]
impl ErrorDetail {
    async fn code(&self) -> Result<&str> {
        self.0.str("code")
    }

    async fn message(&self) -> Result<&str> {
        self.0.str("message")
    }

    async fn status_code(&self) -> Result<i64> {
        self.0.int("statusCode")
    }

    /// For `VALIDATION_ERROR`: every invalid field.
    async fn details(&self) -> Result<Option<Vec<FieldError>>> {
        let items = self.0.objects("details");
        if items.is_empty() {
            return Ok(None);
        }
        let fields = items.iter().map(|d| {
            Ok(FieldError { field: d.str("field")?.to_owned(), message: d.str("message")?.to_owned() })
        });
        fields.collect::<Result<Vec<_>>>().map(Some)
    }

    async fn request_id(&self) -> Result<&str> {
        self.0.str("requestId")
    }
}

/// One item of a bulk update: its own status and either the finding or the error.
pub struct BulkFindingResult(View);

/// One item of a bulk update: its own status and either the finding or the error.
#[Object]
impl BulkFindingResult {
    async fn id(&self) -> Result<ID> {
        self.0.id()
    }

    /// The HTTP status this item alone would have had.
    async fn status(&self) -> Result<i64> {
        self.0.int("status")
    }

    async fn finding(&self) -> Option<Finding> {
        self.0.object("data").map(|view| Finding(Siblings::alone(view)))
    }

    async fn error(&self) -> Option<ErrorDetail> {
        self.0.object("error").map(ErrorDetail)
    }
}

#[derive(Default)]
pub struct FindingMutation;

#[Object]
impl FindingMutation {
    /// Add a finding to an engagement (findings:write).
    async fn create_finding(
        &self,
        ctx: &Context<'_>,
        engagement_id: ID,
        input: CreateFindingInput,
    ) -> Result<Option<Finding>> {
        let session = allowed(ctx, route::CREATE_FINDING)?;
        let row = rest::create_row(&session.state, &session.caller, &engagement_id, body(input)?).await?;
        Ok(Some(Finding::of(&row)))
    }

    /// Update a finding (findings:write).
    async fn update_finding(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateFindingInput,
        if_match: Option<i64>,
    ) -> Result<Option<Finding>> {
        let session = allowed(ctx, route::UPDATE_FINDING)?;
        let body = body(input)?;
        let row =
            rest::update_row(&session.state, &session.caller, &id, body, self::if_match(if_match)).await?;
        Ok(Some(Finding::of(&row)))
    }

    /// Move a finding along its remediation or review lifecycle (findings:write).
    async fn transition_finding(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: FindingTransitionInput,
        if_match: Option<i64>,
    ) -> Result<Option<Finding>> {
        let session = allowed(ctx, route::TRANSITION_FINDING)?;
        let body = body(input)?;
        let row = rest::transition_row(&session.state, &session.caller, &id, body, self::if_match(if_match))
            .await?;
        Ok(Some(Finding::of(&row)))
    }

    /// Delete a finding (findings:delete). Returns the id.
    async fn delete_finding(&self, ctx: &Context<'_>, id: ID, if_match: Option<i64>) -> Result<Option<ID>> {
        let session = allowed(ctx, route::DELETE_FINDING)?;
        rest::delete_row(&session.state, &session.caller, &id, self::if_match(if_match)).await?;
        Ok(Some(id))
    }

    /// Apply `set` to each finding as its own command (findings:write); one item failing does
    /// not stop the others.
    async fn bulk_update_findings(
        &self,
        ctx: &Context<'_>,
        engagement_id: ID,
        input: BulkUpdateFindingsInput,
    ) -> Result<Option<Vec<BulkFindingResult>>> {
        let session = allowed(ctx, route::BULK_FINDINGS)?;
        let results =
            rest::bulk_results(&session.state, &session.caller, &engagement_id, body(input)?).await?;
        if results.iter().any(rest::BulkResultView::failed) {
            session.effects.failed();
        }
        Ok(Some(results.into_iter().map(|r| BulkFindingResult(View::from_value(to_json(r)))).collect()))
    }
}
