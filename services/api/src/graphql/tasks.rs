//! Tasks: `task(id:)`, `tasks(…)`, `engagement.tasks`, and the mutations of tasks.

use std::collections::HashMap;

use async_graphql::{Context, Enum, InputObject, MaybeUndefined, Object, ID};
use pwnbook_projections::batch::{self, PerParent};
use pwnbook_projections::list::SortValue;
use pwnbook_projections::tasks::{self, TaskRow, TaskSort};
use serde::Serialize;
use sqlx::AnyPool;

use crate::error::ApiError;
use crate::graphql::connection::{self, page, Connection, Filters, ListArgs, SortOrder};
use crate::graphql::context::{allowed, route};
use crate::graphql::engagements::Engagement;
use crate::graphql::errors::Result;
use crate::graphql::events::EventFeed;
use crate::graphql::loaders::{child_kind, ChildKind};
use crate::graphql::loaders::{Node, Siblings};
use crate::graphql::shared::{body, history_of, id_strings, if_match, past};
use crate::graphql::targets::engagement_of;
use crate::graphql::view::View;
use crate::pagination::ListRequest;
use crate::routes::tasks as rest;

/// A task of an engagement.
pub struct Task(pub Node);

impl Task {
    pub fn of(row: &TaskRow) -> Self {
        Self(Siblings::alone(Self::view(row)))
    }

    /// The REST view of a row.
    pub fn view(row: &TaskRow) -> View {
        View::of(rest::render(row))
    }
}

/// A task of an engagement.
#[Object]
impl Task {
    async fn id(&self) -> Result<ID> {
        self.0.id()
    }

    async fn engagement_id(&self) -> Result<ID> {
        Ok(ID(self.0.str("engagementId")?.to_owned()))
    }

    async fn title(&self) -> Result<&str> {
        self.0.str("title")
    }

    async fn description(&self) -> Option<&str> {
        self.0.opt_str("description")
    }

    /// `open`, `in_progress` or `closed`.
    async fn status(&self) -> Result<&str> {
        self.0.str("status")
    }

    /// `low`, `medium` or `high`.
    async fn priority(&self) -> Result<&str> {
        self.0.str("priority")
    }

    /// `YYYY-MM-DD`.
    async fn due_date(&self) -> Option<&str> {
        self.0.opt_str("dueDate")
    }

    /// Set while the task is closed.
    async fn closed_at(&self) -> Option<&str> {
        self.0.opt_str("closedAt")
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
        history_of::<rest::Tracked>(ctx, route::TASK_HISTORY, self.0.str("id")?, after, limit).await
    }
}

/// Sort fields of task lists.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum TaskSortField {
    CreatedAt,
    UpdatedAt,
    /// Tasks without a due date first ascending.
    DueDate,
    /// By rank: high highest.
    Priority,
    Title,
}

impl TaskSortField {
    pub fn rest(self) -> &'static str {
        match self {
            Self::CreatedAt => "createdAt",
            Self::UpdatedAt => "updatedAt",
            Self::DueDate => "dueDate",
            Self::Priority => "priority",
            Self::Title => "title",
        }
    }
}

/// Filters of task lists (those of `GET /engagements/{id}/tasks`).
#[derive(InputObject, Default)]
pub struct TaskFilterInput {
    pub status: Option<Vec<String>>,
    pub priority: Option<Vec<String>>,
    /// Case-insensitive substring of the title.
    pub q: Option<String>,
    pub created_after: Option<String>,
    pub created_before: Option<String>,
}

impl TaskFilterInput {
    pub fn pairs(filter: Option<Self>) -> Vec<(String, String)> {
        Self::with_engagements(None, filter)
    }

    fn with_engagements(engagement_ids: Option<Vec<ID>>, filter: Option<Self>) -> Vec<(String, String)> {
        let f = filter.unwrap_or_default();
        Filters::default()
            .list("engagementId", id_strings(engagement_ids))
            .list("status", f.status)
            .list("priority", f.priority)
            .one("q", f.q)
            .one("createdAfter", f.created_after)
            .one("createdBefore", f.created_before)
            .done()
    }
}

/// Tasks listed per engagement.
pub struct TasksOf;

child_kind!(TasksOf, TaskSort, TaskRow, Task, scope: Some(Vec::new()), page: batch::tasks_page, count: batch::tasks_count);

#[derive(Default)]
pub struct TaskQuery;

#[Object]
impl TaskQuery {
    /// A task (tasks:read); with `version` or `asOf` (RFC 3339), as it was then.
    async fn task(
        &self,
        ctx: &Context<'_>,
        id: ID,
        version: Option<i64>,
        #[graphql(name = "asOf")] as_of: Option<String>,
    ) -> Result<Option<Task>> {
        let session = allowed(ctx, route::TASK)?;
        if let Some(view) = past::<rest::Tracked>(session, &id, version, as_of).await? {
            return Ok(Some(Task(Siblings::alone(view))));
        }
        Ok(Some(Task::of(&rest::load(&session.state, &session.caller, &id).await?)))
    }

    /// Tasks across engagements (tasks:read), as `GET /tasks`; `engagementId` keeps those of
    /// the engagements named.
    #[graphql(complexity = "connection::complexity(first, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        engagement_id: Option<Vec<ID>>,
        filter: Option<TaskFilterInput>,
        sort: Option<TaskSortField>,
        order: Option<SortOrder>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<Connection<Task>>> {
        let session = allowed(ctx, route::TASKS)?;
        let filters = TaskFilterInput::with_engagements(engagement_id, filter);
        let args = ListArgs::new(first, after, sort.map(TaskSortField::rest), order, filters);
        let request = args.request(rest::SORTS, rest::FLAT_FILTERS, TaskSort::accepts)?;
        let filter = rest::filter_of(&request, None)?;
        let (pool, org) = (session.state.store.pool(), session.organization_id());
        let window = request.probe_window();
        let rows = tasks::list(pool, org, &filter, request.sort, request.order, &window);
        let count = || tasks::count(pool, org, &filter);
        let sort = request.sort;
        Ok(Some(
            page(ctx, &request, rows, count, |row| (sort.value_of(row), row.id.clone()), Task::view, Task)
                .await?,
        ))
    }
}

/// A new task, always `open` (the body of `POST /engagements/{id}/tasks`).
#[derive(InputObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateTaskInput {
    /// Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `low`, `medium` (default) or `high`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_date: Option<String>,
}

/// Changed fields only (the body of `PATCH /tasks/{id}`); `status` moves the task.
#[derive(InputObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateTaskInput {
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub title: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub description: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub priority: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub due_date: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub status: MaybeUndefined<String>,
}

#[derive(Default)]
pub struct TaskMutation;

#[Object]
impl TaskMutation {
    /// Add a task to an engagement (tasks:write).
    async fn create_task(
        &self,
        ctx: &Context<'_>,
        engagement_id: ID,
        input: CreateTaskInput,
    ) -> Result<Option<Task>> {
        let session = allowed(ctx, route::CREATE_TASK)?;
        let row = rest::create_row(&session.state, &session.caller, &engagement_id, body(input)?).await?;
        Ok(Some(Task::of(&row)))
    }

    /// Update a task (tasks:write).
    async fn update_task(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateTaskInput,
        if_match: Option<i64>,
    ) -> Result<Option<Task>> {
        let session = allowed(ctx, route::UPDATE_TASK)?;
        let body = body(input)?;
        let row =
            rest::update_row(&session.state, &session.caller, &id, body, self::if_match(if_match)).await?;
        Ok(Some(Task::of(&row)))
    }

    /// Close a task (tasks:write; `CONFLICT` when it is closed already).
    async fn close_task(&self, ctx: &Context<'_>, id: ID, if_match: Option<i64>) -> Result<Option<Task>> {
        let session = allowed(ctx, route::CLOSE_TASK)?;
        let row = rest::close_row(&session.state, &session.caller, &id, self::if_match(if_match)).await?;
        Ok(Some(Task::of(&row)))
    }

    /// Delete a task (tasks:write). Returns the id.
    async fn delete_task(&self, ctx: &Context<'_>, id: ID, if_match: Option<i64>) -> Result<Option<ID>> {
        let session = allowed(ctx, route::DELETE_TASK)?;
        rest::delete_row(&session.state, &session.caller, &id, self::if_match(if_match)).await?;
        Ok(Some(id))
    }
}
