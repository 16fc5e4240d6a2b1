//! Reports: `report(id:)`, `reports(…)`, `engagement.reports`, a report's `content`, and the
//! mutations of reports (generation included).

use std::collections::HashMap;

use async_graphql::{Context, Enum, InputObject, MaybeUndefined, Object, ID};
use pwnbook_projections::batch::{self, PerParent};
use pwnbook_projections::list::SortValue;
use pwnbook_projections::reports::{self, ReportRow, ReportSort};
use serde::Serialize;
use sqlx::AnyPool;

use crate::error::ApiError;
use crate::graphql::connection::{self, page, Connection, Filters, ListArgs, SortOrder};
use crate::graphql::context::{allowed, route};
use crate::graphql::engagements::Engagement;
use crate::graphql::errors::Result;
use crate::graphql::events::EventFeed;
use crate::graphql::loaders::{child_kind, ChildKind, LoadKey, ReportContent};
use crate::graphql::loaders::{Node, Siblings};
use crate::graphql::shared::{body, history_of, id_strings, if_match, past};
use crate::graphql::targets::engagement_of;
use crate::graphql::view::View;
use crate::pagination::ListRequest;
use crate::routes::reports as rest;

/// A report of an engagement's findings.
pub struct Report(pub Node);

impl Report {
    pub fn of(row: &ReportRow) -> Self {
        Self(Siblings::alone(Self::view(row)))
    }

    /// The REST view of a row.
    pub fn view(row: &ReportRow) -> View {
        View::of(rest::render(row))
    }
}

/// A report of an engagement's findings.
#[Object]
impl Report {
    async fn id(&self) -> Result<ID> {
        self.0.id()
    }

    async fn engagement_id(&self) -> Result<ID> {
        Ok(ID(self.0.str("engagementId")?.to_owned()))
    }

    async fn title(&self) -> Result<&str> {
        self.0.str("title")
    }

    /// `markdown`, `html` or `json`.
    async fn format(&self) -> Result<&str> {
        self.0.str("format")
    }

    /// `draft`, `in_review`, `approved` or `published` (immutable).
    async fn status(&self) -> Result<&str> {
        self.0.str("status")
    }

    /// Findings in the last generated document.
    async fn finding_count(&self) -> Option<i64> {
        self.0.opt_int("findingCount")
    }

    async fn generated_at(&self) -> Option<&str> {
        self.0.opt_str("generatedAt")
    }

    async fn published_at(&self) -> Option<&str> {
        self.0.opt_str("publishedAt")
    }

    async fn created_at(&self) -> Result<&str> {
        self.0.str("createdAt")
    }

    async fn updated_at(&self) -> Result<&str> {
        self.0.str("updatedAt")
    }

    async fn version(&self) -> Result<i64> {
        self.0.int("version")
    }

    /// The last generated document, as `GET /reports/{id}/content` returns it (reports:read);
    /// null before the first generation.
    async fn content(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        let session = allowed(ctx, route::REPORT_CONTENT)?;
        let siblings = self.0.siblings();
        let documents = siblings
            .once(LoadKey::Field("content"), || async {
                let ids = siblings.all(|view| view.opt_str("id").map(str::to_owned).into_iter().collect());
                let found = session.loader.load_many(ids.into_iter().map(ReportContent)).await?;
                Ok(found
                    .into_iter()
                    .map(|(id, (_, content))| (id.0, content))
                    .collect::<HashMap<String, String>>())
            })
            .await?;
        Ok(documents.get(self.0.str("id")?).cloned())
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
        history_of::<rest::Tracked>(ctx, route::REPORT_HISTORY, self.0.str("id")?, after, limit).await
    }
}

/// Sort fields of report lists.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ReportSortField {
    CreatedAt,
    UpdatedAt,
    Title,
}

impl ReportSortField {
    pub fn rest(self) -> &'static str {
        match self {
            Self::CreatedAt => "createdAt",
            Self::UpdatedAt => "updatedAt",
            Self::Title => "title",
        }
    }
}

/// Filters of report lists (those of `GET /engagements/{id}/reports`).
#[derive(InputObject, Default)]
pub struct ReportFilterInput {
    pub status: Option<Vec<String>>,
    pub format: Option<Vec<String>>,
    /// Case-insensitive substring of the title.
    pub q: Option<String>,
}

impl ReportFilterInput {
    pub fn pairs(filter: Option<Self>) -> Vec<(String, String)> {
        Self::with_engagements(None, filter)
    }

    fn with_engagements(engagement_ids: Option<Vec<ID>>, filter: Option<Self>) -> Vec<(String, String)> {
        let f = filter.unwrap_or_default();
        Filters::default()
            .list("engagementId", id_strings(engagement_ids))
            .list("status", f.status)
            .list("format", f.format)
            .one("q", f.q)
            .done()
    }
}

/// Reports listed per engagement.
pub struct ReportsOf;

child_kind!(ReportsOf, ReportSort, ReportRow, Report, scope: Some(Vec::new()), page: batch::reports_page, count: batch::reports_count);

#[derive(Default)]
pub struct ReportQuery;

#[Object]
impl ReportQuery {
    /// A report (reports:read); with `version` or `asOf` (RFC 3339), as it was then.
    async fn report(
        &self,
        ctx: &Context<'_>,
        id: ID,
        version: Option<i64>,
        #[graphql(name = "asOf")] as_of: Option<String>,
    ) -> Result<Option<Report>> {
        let session = allowed(ctx, route::REPORT)?;
        if let Some(view) = past::<rest::Tracked>(session, &id, version, as_of).await? {
            return Ok(Some(Report(Siblings::alone(view))));
        }
        Ok(Some(Report::of(&rest::load(&session.state, &session.caller, &id).await?)))
    }

    /// Reports across engagements (reports:read), as `GET /reports`; `engagementId` keeps
    /// those of the engagements named.
    #[graphql(complexity = "connection::complexity(first, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn reports(
        &self,
        ctx: &Context<'_>,
        engagement_id: Option<Vec<ID>>,
        filter: Option<ReportFilterInput>,
        sort: Option<ReportSortField>,
        order: Option<SortOrder>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<Connection<Report>>> {
        let session = allowed(ctx, route::REPORTS)?;
        let filters = ReportFilterInput::with_engagements(engagement_id, filter);
        let args = ListArgs::new(first, after, sort.map(ReportSortField::rest), order, filters);
        let request = args.request(rest::SORTS, rest::FLAT_FILTERS, ReportSort::accepts)?;
        let filter = rest::filter_of(&request, None)?;
        let (pool, org) = (session.state.store.pool(), session.organization_id());
        let window = request.probe_window();
        let rows = reports::list(pool, org, &filter, request.sort, request.order, &window);
        let count = || reports::count(pool, org, &filter);
        let sort = request.sort;
        Ok(Some(
            page(
                ctx,
                &request,
                rows,
                count,
                |row| (sort.value_of(row), row.id.clone()),
                Report::view,
                Report,
            )
            .await?,
        ))
    }
}

/// A new report, always a `draft` (the body of `POST /engagements/{id}/reports`).
#[derive(InputObject, Serialize)]
pub struct CreateReportInput {
    /// Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `markdown` (default), `html` or `json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// Changed fields only (the body of `PATCH /reports/{id}`); `status` moves along `draft` ⇄
/// `in_review` ⇄ `approved` → `published`.
#[derive(InputObject, Serialize)]
pub struct UpdateReportInput {
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub title: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub format: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub status: MaybeUndefined<String>,
}

#[derive(Default)]
pub struct ReportMutation;

#[Object]
impl ReportMutation {
    /// Add a report to an engagement (reports:write).
    async fn create_report(
        &self,
        ctx: &Context<'_>,
        engagement_id: ID,
        input: CreateReportInput,
    ) -> Result<Option<Report>> {
        let session = allowed(ctx, route::CREATE_REPORT)?;
        let row = rest::create_row(&session.state, &session.caller, &engagement_id, body(input)?).await?;
        Ok(Some(Report::of(&row)))
    }

    /// Update a report (reports:write; `CONFLICT` once published).
    async fn update_report(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateReportInput,
        if_match: Option<i64>,
    ) -> Result<Option<Report>> {
        let session = allowed(ctx, route::UPDATE_REPORT)?;
        let body = body(input)?;
        let row =
            rest::update_row(&session.state, &session.caller, &id, body, self::if_match(if_match)).await?;
        Ok(Some(Report::of(&row)))
    }

    /// Render the engagement's findings, most severe first, into the report (reports:write).
    async fn generate_report(
        &self,
        ctx: &Context<'_>,
        id: ID,
        if_match: Option<i64>,
    ) -> Result<Option<Report>> {
        let session = allowed(ctx, route::GENERATE_REPORT)?;
        let row = rest::generate_row(&session.state, &session.caller, &id, self::if_match(if_match)).await?;
        Ok(Some(Report::of(&row)))
    }

    /// Delete a report (reports:write; `CONFLICT` once published). Returns the id.
    async fn delete_report(&self, ctx: &Context<'_>, id: ID, if_match: Option<i64>) -> Result<Option<ID>> {
        let session = allowed(ctx, route::DELETE_REPORT)?;
        rest::delete_row(&session.state, &session.caller, &id, self::if_match(if_match)).await?;
        Ok(Some(id))
    }
}
