//! Engagements: `engagement(id:)`, `engagements(…)`, their children as nested connections, and
//! the mutations of `/engagements`.

use async_graphql::{Context, Enum, InputObject, MaybeUndefined, Object, ID};
use pwnbook_projections::engagements::{self, EngagementRow};
use serde::Serialize;

use crate::graphql::connection::{self, page, wants_total, Connection, Filters, ListArgs, SortOrder};
use crate::graphql::context::{allowed, route};
use crate::graphql::errors::Result;
use crate::graphql::events::EventFeed;
use crate::graphql::findings::{Finding, FindingFilterInput, FindingSortField, FindingsOf};
use crate::graphql::loaders::{Node, Siblings};
use crate::graphql::reports::{Report, ReportFilterInput, ReportSortField, ReportsOf};
use crate::graphql::shared::{body, children, history_of, if_match, past};
use crate::graphql::targets::{Target, TargetFilterInput, TargetSortField, TargetsOf};
use crate::graphql::tasks::{Task, TaskFilterInput, TaskSortField, TasksOf};
use crate::graphql::view::View;
use crate::graphql::wiki::{WikiFilterInput, WikiPage, WikiPagesOf, WikiSortField};
use crate::routes::engagements as rest;

/// An engagement.
pub struct Engagement(pub Node);

impl Engagement {
    pub fn of(row: &EngagementRow) -> Self {
        Self(Siblings::alone(Self::view(row)))
    }

    /// The REST view of a row.
    pub fn view(row: &EngagementRow) -> View {
        View::of(rest::render(row))
    }

    fn id_str(&self) -> &str {
        self.0.str("id")
    }
}

/// An engagement.
#[Object]
impl Engagement {
    async fn id(&self) -> ID {
        self.0.id()
    }

    async fn name(&self) -> &str {
        self.0.str("name")
    }

    async fn description(&self) -> Option<&str> {
        self.0.opt_str("description")
    }

    /// `active` or `archived`.
    async fn status(&self) -> &str {
        self.0.str("status")
    }

    async fn client_name(&self) -> Option<&str> {
        self.0.opt_str("clientName")
    }

    /// `YYYY-MM-DD`.
    async fn start_date(&self) -> Option<&str> {
        self.0.opt_str("startDate")
    }

    async fn end_date(&self) -> Option<&str> {
        self.0.opt_str("endDate")
    }

    async fn tags(&self) -> Vec<String> {
        self.0.strings("tags")
    }

    async fn archived_at(&self) -> Option<&str> {
        self.0.opt_str("archivedAt")
    }

    async fn created_at(&self) -> &str {
        self.0.str("createdAt")
    }

    async fn updated_at(&self) -> &str {
        self.0.str("updatedAt")
    }

    async fn version(&self) -> i64 {
        self.0.int("version")
    }

    /// The engagement's targets (targets:read), as `GET /engagements/{id}/targets`.
    #[graphql(complexity = "connection::complexity(first, child_complexity)")]
    async fn targets(
        &self,
        ctx: &Context<'_>,
        filter: Option<TargetFilterInput>,
        sort: Option<TargetSortField>,
        order: Option<SortOrder>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<Connection<Target>>> {
        let session = allowed(ctx, route::ENGAGEMENT_TARGETS)?;
        let args = ListArgs::new(
            first,
            after,
            sort.map(TargetSortField::rest),
            order,
            TargetFilterInput::pairs(filter),
        );
        Ok(Some(children::<TargetsOf, _>(ctx, session, &self.0, args, Target).await?))
    }

    /// The engagement's findings (findings:read), as `GET /engagements/{id}/findings`.
    #[graphql(complexity = "connection::complexity(first, child_complexity)")]
    async fn findings(
        &self,
        ctx: &Context<'_>,
        filter: Option<FindingFilterInput>,
        sort: Option<FindingSortField>,
        order: Option<SortOrder>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<Connection<Finding>>> {
        let session = allowed(ctx, route::ENGAGEMENT_FINDINGS)?;
        let args = ListArgs::new(
            first,
            after,
            sort.map(FindingSortField::rest),
            order,
            FindingFilterInput::pairs(filter),
        );
        Ok(Some(children::<FindingsOf, _>(ctx, session, &self.0, args, Finding).await?))
    }

    /// The engagement's tasks (tasks:read), as `GET /engagements/{id}/tasks`.
    #[graphql(complexity = "connection::complexity(first, child_complexity)")]
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        filter: Option<TaskFilterInput>,
        sort: Option<TaskSortField>,
        order: Option<SortOrder>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<Connection<Task>>> {
        let session = allowed(ctx, route::ENGAGEMENT_TASKS)?;
        let args =
            ListArgs::new(first, after, sort.map(TaskSortField::rest), order, TaskFilterInput::pairs(filter));
        Ok(Some(children::<TasksOf, _>(ctx, session, &self.0, args, Task).await?))
    }

    /// The engagement's wiki pages (wiki:read), as `GET /engagements/{id}/wiki`.
    #[graphql(complexity = "connection::complexity(first, child_complexity)")]
    async fn wiki_pages(
        &self,
        ctx: &Context<'_>,
        filter: Option<WikiFilterInput>,
        sort: Option<WikiSortField>,
        order: Option<SortOrder>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<Connection<WikiPage>>> {
        let session = allowed(ctx, route::ENGAGEMENT_WIKI)?;
        let args =
            ListArgs::new(first, after, sort.map(WikiSortField::rest), order, WikiFilterInput::pairs(filter));
        Ok(Some(children::<WikiPagesOf, _>(ctx, session, &self.0, args, WikiPage).await?))
    }

    /// The engagement's reports (reports:read), as `GET /engagements/{id}/reports`.
    #[graphql(complexity = "connection::complexity(first, child_complexity)")]
    async fn reports(
        &self,
        ctx: &Context<'_>,
        filter: Option<ReportFilterInput>,
        sort: Option<ReportSortField>,
        order: Option<SortOrder>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<Connection<Report>>> {
        let session = allowed(ctx, route::ENGAGEMENT_REPORTS)?;
        let args = ListArgs::new(
            first,
            after,
            sort.map(ReportSortField::rest),
            order,
            ReportFilterInput::pairs(filter),
        );
        Ok(Some(children::<ReportsOf, _>(ctx, session, &self.0, args, Report).await?))
    }

    /// The engagement's events and those of everything in it (audit:read).
    #[graphql(complexity = 20)]
    async fn history(
        &self,
        ctx: &Context<'_>,
        after: Option<i64>,
        limit: Option<i64>,
    ) -> Result<Option<EventFeed>> {
        history_of::<rest::Tracked>(ctx, route::ENGAGEMENT_HISTORY, self.id_str(), after, limit).await
    }
}

/// Sort fields of `engagements`.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum EngagementSortField {
    CreatedAt,
    UpdatedAt,
    /// Case-insensitive.
    Name,
    /// Engagements without a start date sort first ascending.
    StartDate,
}

impl EngagementSortField {
    fn rest(self) -> &'static str {
        match self {
            Self::CreatedAt => "createdAt",
            Self::UpdatedAt => "updatedAt",
            Self::Name => "name",
            Self::StartDate => "startDate",
        }
    }
}

/// Filters of `engagements` (those of `GET /engagements`); a list matches any of its values.
#[derive(InputObject, Default)]
pub struct EngagementFilterInput {
    /// `active` and/or `archived`.
    pub status: Option<Vec<String>>,
    /// Case-insensitive substring of the name.
    pub q: Option<String>,
    pub tag: Option<Vec<String>>,
    pub client_name: Option<Vec<String>>,
    /// Created at or after (RFC 3339).
    pub created_after: Option<String>,
    /// Created before (RFC 3339).
    pub created_before: Option<String>,
}

impl EngagementFilterInput {
    fn pairs(filter: Option<Self>) -> Vec<(String, String)> {
        let Some(f) = filter else { return Vec::new() };
        Filters::default()
            .list("status", f.status)
            .one("q", f.q)
            .list("tag", f.tag)
            .list("clientName", f.client_name)
            .one("createdAfter", f.created_after)
            .one("createdBefore", f.created_before)
            .done()
    }
}

#[derive(Default)]
pub struct EngagementQuery;

#[Object]
impl EngagementQuery {
    /// An engagement (engagements:read); with `version` or `asOf` (RFC 3339), as it was then (a deleted
    /// one's past needs audit:read too). Nested lists always show the present.
    async fn engagement(
        &self,
        ctx: &Context<'_>,
        id: ID,
        version: Option<i64>,
        #[graphql(name = "asOf")] as_of: Option<String>,
    ) -> Result<Option<Engagement>> {
        let session = allowed(ctx, route::ENGAGEMENT)?;
        if let Some(view) = past::<rest::Tracked>(session, &id, version, as_of).await? {
            return Ok(Some(Engagement(Siblings::alone(view))));
        }
        Ok(Some(Engagement::of(&rest::find(&session.state, &session.caller, &id).await?)))
    }

    /// Engagements (engagements:read), as `GET /engagements`.
    #[graphql(complexity = "connection::complexity(first, child_complexity)")]
    async fn engagements(
        &self,
        ctx: &Context<'_>,
        filter: Option<EngagementFilterInput>,
        sort: Option<EngagementSortField>,
        order: Option<SortOrder>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<Connection<Engagement>>> {
        let session = allowed(ctx, route::ENGAGEMENTS)?;
        let args = ListArgs::new(
            first,
            after,
            sort.map(EngagementSortField::rest),
            order,
            EngagementFilterInput::pairs(filter),
        );
        let request = args.request(rest::SORTS, rest::FILTERS, engagements::EngagementSort::accepts)?;
        let filter = rest::filter_of(&request)?;
        let (pool, org) = (session.state.store.pool(), session.organization_id());
        let rows =
            engagements::list(pool, org, &filter, request.sort, request.order, &request.probe_window())
                .await
                .map_err(crate::error::ApiError::from)?;
        let total = if wants_total(ctx) {
            Some(engagements::count(pool, org, &filter).await.map_err(crate::error::ApiError::from)?)
        } else {
            None
        };
        let sort = request.sort;
        Ok(Some(page(
            &request,
            rows,
            total,
            |row| (sort.value_of(row), row.id.clone()),
            Engagement::view,
            Engagement,
        )))
    }
}

/// A new engagement (the body of `POST /engagements`).
#[derive(InputObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateEngagementInput {
    /// 1 to 200 characters, unique in the organization (case-insensitively).
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// Changed fields only (the body of `PATCH /engagements/{id}`); `null` clears a field.
#[derive(InputObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateEngagementInput {
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub name: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub description: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub client_name: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub start_date: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub end_date: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub tags: MaybeUndefined<Vec<String>>,
}

#[derive(Default)]
pub struct EngagementMutation;

#[Object]
impl EngagementMutation {
    /// Create an engagement (engagements:write), as `POST /engagements`.
    async fn create_engagement(
        &self,
        ctx: &Context<'_>,
        input: CreateEngagementInput,
    ) -> Result<Option<Engagement>> {
        let session = allowed(ctx, route::CREATE_ENGAGEMENT)?;
        let row = rest::create_row(&session.state, &session.caller, body(input)?).await?;
        Ok(Some(Engagement::of(&row)))
    }

    /// Update an engagement (engagements:write), as `PATCH /engagements/{id}`; `ifMatch` is
    /// the version the change is based on.
    async fn update_engagement(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateEngagementInput,
        if_match: Option<i64>,
    ) -> Result<Option<Engagement>> {
        let session = allowed(ctx, route::UPDATE_ENGAGEMENT)?;
        let body = body(input)?;
        let row =
            rest::update_row(&session.state, &session.caller, &id, body, self::if_match(if_match)).await?;
        Ok(Some(Engagement::of(&row)))
    }

    /// Archive an engagement (engagements:write): it becomes read-only.
    async fn archive_engagement(
        &self,
        ctx: &Context<'_>,
        id: ID,
        if_match: Option<i64>,
    ) -> Result<Option<Engagement>> {
        let session = allowed(ctx, route::ARCHIVE_ENGAGEMENT)?;
        let row = rest::archive_row(&session.state, &session.caller, &id, self::if_match(if_match)).await?;
        Ok(Some(Engagement::of(&row)))
    }

    /// Unarchive an engagement (engagements:write).
    async fn unarchive_engagement(
        &self,
        ctx: &Context<'_>,
        id: ID,
        if_match: Option<i64>,
    ) -> Result<Option<Engagement>> {
        let session = allowed(ctx, route::UNARCHIVE_ENGAGEMENT)?;
        let row = rest::unarchive_row(&session.state, &session.caller, &id, self::if_match(if_match)).await?;
        Ok(Some(Engagement::of(&row)))
    }

    /// Delete an engagement (engagements:delete); it and its children are gone from then on
    /// (their events stay). Returns the id.
    async fn delete_engagement(
        &self,
        ctx: &Context<'_>,
        id: ID,
        if_match: Option<i64>,
    ) -> Result<Option<ID>> {
        let session = allowed(ctx, route::DELETE_ENGAGEMENT)?;
        rest::delete_row(&session.state, &session.caller, &id, self::if_match(if_match)).await?;
        Ok(Some(id))
    }
}
