//! Tasks: `GET|POST /engagements/{id}/tasks`, `GET /tasks`, `GET|PATCH|DELETE /tasks/{id}`,
//! `POST /tasks/{id}/close`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pwnbook_commands::task::{NewTask, Task, TaskCommand, TaskPatch, PRIORITIES, STATUSES};
use pwnbook_commands::Execution;
use pwnbook_events::{Id, IdKind, LogEvent};
use pwnbook_projections::tasks::{self, TaskFilter, TaskRow, TaskSort};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{etag, if_match, if_none_match, not_null, required, ApiJson, NoBody, QueryParams};
use crate::openapi::{data, to_json, Data, Page};
use crate::pagination::{self, ListRequest};
use crate::routes::events::FeedPage;
use crate::routes::{history, scope};
use crate::state::AppState;
use crate::time::format_millis;

pub(crate) const SORTS: &[(&str, TaskSort)] = &[
    ("createdAt", TaskSort::CreatedAt),
    ("updatedAt", TaskSort::UpdatedAt),
    ("dueDate", TaskSort::DueDate),
    ("priority", TaskSort::Priority),
    ("title", TaskSort::Title),
];
pub(crate) const FILTERS: &[&str] = &["status", "priority", "q", "createdAfter", "createdBefore"];
pub(crate) const FLAT_FILTERS: &[&str] =
    &["engagementId", "status", "priority", "q", "createdAfter", "createdBefore"];
const READ_ONLY: &[&str] = &["id", "engagementId", "closedAt", "createdAt", "updatedAt", "version"];

/// A task of an engagement.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Task)]
pub struct TaskView {
    #[schema(example = "tsk_01j9k2m3n4p5q6r7s8t9")]
    id: String,
    engagement_id: String,
    title: String,
    description: Option<String>,
    /// `open`, `in_progress` or `closed`.
    status: String,
    /// `low`, `medium` or `high`.
    priority: String,
    /// `YYYY-MM-DD`.
    due_date: Option<String>,
    /// Set while the task is closed.
    closed_at: Option<String>,
    created_at: String,
    updated_at: String,
    version: i64,
}

pub fn render(row: &TaskRow) -> TaskView {
    TaskView {
        id: row.id.clone(),
        engagement_id: row.engagement_id.clone(),
        title: row.title.clone(),
        description: row.description.clone(),
        status: row.status.clone(),
        priority: row.priority.clone(),
        due_date: row.due_date.clone(),
        closed_at: row.closed_at.map(format_millis),
        created_at: format_millis(row.created_at),
        updated_at: format_millis(row.updated_at),
        version: row.version,
    }
}

fn respond(status: StatusCode, row: &TaskRow) -> Response {
    (status, [(header::ETAG, etag(row.version))], data(render(row))).into_response()
}

/// Query parameters of the task lists (`engagementId` only on `GET /tasks`).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct ListQuery {
    page: Option<i64>,
    perPage: Option<i64>,
    cursor: Option<String>,
    /// `createdAt` (default), `updatedAt`, `dueDate` (none first), `priority` (by rank) or `title`.
    sort: Option<String>,
    order: Option<String>,
    status: Option<String>,
    priority: Option<String>,
    /// Case-insensitive substring of the title.
    q: Option<String>,
    createdAfter: Option<String>,
    createdBefore: Option<String>,
}

/// `GET /tasks` also filters by engagement.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct FlatQuery {
    /// Engagement ids, comma-separated.
    engagementId: Option<String>,
}

/// The live task `id` of the caller's organization (404 otherwise).
pub(crate) async fn load(state: &AppState, caller: &Caller, id: &str) -> Result<TaskRow, ApiError> {
    let id = Id::parse(IdKind::Task, id).ok_or(ApiError::NotFound)?;
    tasks::get(state.store.pool(), caller.organization_id(), id.as_str()).await?.ok_or(ApiError::NotFound)
}

/// The filter of a task list request: of the engagements `engagement_ids`, or (`None`, the flat
/// list) of those its `engagementId` names.
pub(crate) fn filter_of(
    request: &ListRequest<TaskSort>,
    engagement_ids: Option<Vec<String>>,
) -> Result<TaskFilter, ApiError> {
    let mut filters = request.filters();
    let filter = TaskFilter {
        engagement_ids: engagement_ids.unwrap_or_else(|| filters.take_list("engagementId")),
        status: filters.take_enum_list("status", STATUSES)?,
        priority: filters.take_enum_list("priority", PRIORITIES)?,
        q: filters.take("q").filter(|q| !q.is_empty()),
        created_after: filters.take_timestamp("createdAfter")?,
        created_before: filters.take_timestamp("createdBefore")?,
    };
    filters.finish()?;
    Ok(filter)
}

async fn respond_list(
    state: &AppState,
    caller: &Caller,
    request: ListRequest<TaskSort>,
    engagement_ids: Option<Vec<String>>,
) -> Result<Json<Value>, ApiError> {
    request.check_cursor(TaskSort::accepts)?;
    let filter = filter_of(&request, engagement_ids)?;
    let pool = state.store.pool();
    let org = caller.organization_id();
    let rows = tasks::list(pool, org, &filter, request.sort, request.order, &request.window).await?;
    let total = if request.needs_total() { Some(tasks::count(pool, org, &filter).await?) } else { None };
    let sort = request.sort;
    Ok(Json(request.envelope(rows, total, |row| (sort.value_of(row), row.id.clone()), render)))
}

/// List an engagement's tasks.
#[utoipa::path(get, path = "/api/v1/engagements/{id}/tasks", tag = "tasks", params(("id" = String, Path), ListQuery),
    responses((status = 200, description = "A page of tasks", body = Page<TaskView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(engagement_id): Path<String>,
    mut params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let engagement = scope::readable(&state, &caller, &engagement_id).await?;
    let request = pagination::parse(&mut params, SORTS, FILTERS)?;
    params.finish()?;
    respond_list(&state, &caller, request, Some(vec![engagement.id])).await
}

/// List the tasks of every engagement.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", params(ListQuery, FlatQuery),
    responses((status = 200, description = "A page of tasks", body = Page<TaskView>)))]
pub async fn list_all(
    State(state): State<AppState>,
    caller: Caller,
    mut params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let request = pagination::parse(&mut params, SORTS, FLAT_FILTERS)?;
    params.finish()?;
    respond_list(&state, &caller, request, None).await
}

/// A new task (always `open`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = NewTask)]
pub struct CreateBody {
    #[schema(required = true)]
    title: Option<String>,
    description: Option<String>,
    priority: Option<String>,
    due_date: Option<String>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

/// Add a task to an engagement.
#[utoipa::path(post, path = "/api/v1/engagements/{id}/tasks", tag = "tasks", request_body = CreateBody,
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, description = "Created", body = Data<TaskView>)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(engagement_id): Path<String>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let row = create_row(&state, &caller, &engagement_id, body).await?;
    let mut response = respond(StatusCode::CREATED, &row);
    if let Ok(location) = format!("/api/v1/tasks/{}", row.id).parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Adds a task to the engagement `engagement_id` (REST and GraphQL).
pub(crate) async fn create_row(
    state: &AppState,
    caller: &Caller,
    engagement_id: &str,
    body: CreateBody,
) -> Result<TaskRow, ApiError> {
    let engagement = scope::writable(state, caller, engagement_id).await?;
    // A new task is open; it moves through PATCH and /close.
    let caller = &caller.refusing(&body.unknown, &[READ_ONLY, &["status"]].concat());
    // A missing title is named with what the command finds invalid (it validates, and does not
    // commit).
    let caller = &caller.refusing_errors(required(&[("title", body.title.is_some())]));
    let title = body.title.unwrap_or_default();
    let id = Id::generate(IdKind::Task);
    let command = TaskCommand::Create {
        organization_id: caller.organization_id().to_owned(),
        engagement_id: engagement.id.clone(),
        task: NewTask {
            title,
            description: body.description,
            priority: body.priority,
            due_date: body.due_date,
        },
    };
    run(state, caller, id.as_str(), &engagement.id, command, None).await
}

/// Tasks in history and time travel.
pub struct Tracked;

impl history::Tracked for Tracked {
    const KIND: IdKind = IdKind::Task;
    const AGGREGATE: &'static str = "task";

    async fn fold(
        _: &AppState,
        events: &[LogEvent],
        _: Option<i64>,
    ) -> Result<Option<(Value, i64)>, ApiError> {
        Ok(tasks::fold(events)?.map(|row| (to_json(render(&row)), row.version)))
    }
}

/// The events of a task.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/history", tag = "tasks", params(("id" = String, Path), history::HistoryQuery),
    responses((status = 200, description = "Events in log order", body = FeedPage)))]
pub async fn history_page(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    params: QueryParams,
) -> Result<Json<FeedPage>, ApiError> {
    history::of::<Tracked>(state, caller, id, params).await
}

/// Get a task.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path), history::TimeTravelQuery, ("If-None-Match" = Option<String>, Header)),
    responses((status = 200, description = "The task (as it was, with version or asOf)", body = Data<TaskView>)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    mut params: QueryParams,
) -> Result<Response, ApiError> {
    let id = Id::parse(IdKind::Task, &id).ok_or(ApiError::NotFound)?;
    let past = history::time_travel::<Tracked>(&state, &caller, id.as_str(), &mut params).await;
    params.finish()?;
    if let Some(response) = past? {
        return Ok(response);
    }
    let row = load(&state, &caller, id.as_str()).await?;
    if if_none_match(&headers, row.version) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag(row.version))]).into_response());
    }
    Ok(respond(StatusCode::OK, &row))
}

/// Changed fields only; `status` moves the task (`closed` closes it, leaving `closed` reopens it).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = TaskPatch)]
pub struct PatchBody {
    #[serde(default, with = "pwnbook_events::patch")]
    title: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    description: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    priority: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    due_date: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    status: Option<Option<String>>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

/// Update a task.
#[utoipa::path(patch, path = "/api/v1/tasks/{id}", tag = "tasks", request_body = PatchBody,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "The updated task", body = Data<TaskView>)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Response, ApiError> {
    let row = update_row(&state, &caller, &id, body, if_match(&headers)).await?;
    Ok(respond(StatusCode::OK, &row))
}

/// Updates a task; `expected_version` (`If-Match`) is checked where REST checks it.
pub(crate) async fn update_row(
    state: &AppState,
    caller: &Caller,
    id: &str,
    body: PatchBody,
    expected_version: Result<Option<i64>, ApiError>,
) -> Result<TaskRow, ApiError> {
    let current = load(state, caller, id).await?;
    scope::writable(state, caller, &current.engagement_id).await?;
    let caller = &caller.refusing(&body.unknown, READ_ONLY);
    let mut errors = Vec::new();
    let patch = TaskPatch {
        title: not_null("title", body.title, &mut errors),
        description: body.description,
        priority: not_null("priority", body.priority, &mut errors),
        due_date: body.due_date,
        status: not_null("status", body.status, &mut errors),
    };
    let caller = &caller.refusing_errors(errors);
    let command = TaskCommand::Update { organization_id: caller.organization_id().to_owned(), patch };
    run(state, caller, &current.id, &current.engagement_id, command, expected_version?).await
}

/// Close a task (409 when it is closed already).
#[utoipa::path(post, path = "/api/v1/tasks/{id}/close", tag = "tasks", request_body = Option<crate::extract::NoBody>,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "The closed task", body = Data<TaskView>)))]
pub async fn close(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: NoBody,
) -> Result<Response, ApiError> {
    let caller = caller.refusing(body.fields(), &[]);
    let row = close_row(&state, &caller, &id, if_match(&headers)).await?;
    Ok(respond(StatusCode::OK, &row))
}

pub(crate) async fn close_row(
    state: &AppState,
    caller: &Caller,
    id: &str,
    expected_version: Result<Option<i64>, ApiError>,
) -> Result<TaskRow, ApiError> {
    let current = load(state, caller, id).await?;
    scope::writable(state, caller, &current.engagement_id).await?;
    let command = TaskCommand::Close { organization_id: caller.organization_id().to_owned() };
    run(state, caller, &current.id, &current.engagement_id, command, expected_version?).await
}

/// Delete a task.
#[utoipa::path(delete, path = "/api/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    delete_row(&state, &caller, &id, if_match(&headers)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn delete_row(
    state: &AppState,
    caller: &Caller,
    id: &str,
    expected_version: Result<Option<i64>, ApiError>,
) -> Result<(), ApiError> {
    let current = load(state, caller, id).await?;
    scope::writable(state, caller, &current.engagement_id).await?;
    let command = TaskCommand::Delete { organization_id: caller.organization_id().to_owned() };
    let execution = Execution {
        expected_version: expected_version?,
        claim: None,
        engagement_id: Some(current.engagement_id.clone()),
        fresh: false,
    };
    let committed =
        state.commands.execute::<Task>(&current.id, command, &caller.command_context(), execution).await?;
    state.visibility.wait(&committed).await
}

/// Runs `command`, waits until the read table shows it, and returns the row.
async fn run(
    state: &AppState,
    caller: &Caller,
    id: &str,
    engagement_id: &str,
    command: TaskCommand,
    expected_version: Option<i64>,
) -> Result<TaskRow, ApiError> {
    let execution = Execution {
        expected_version,
        claim: None,
        engagement_id: Some(engagement_id.to_owned()),
        fresh: matches!(command, TaskCommand::Create { .. }),
    };
    let committed = state.commands.execute::<Task>(id, command, &caller.command_context(), execution).await?;
    state.visibility.wait(&committed).await?;
    load(state, caller, id).await
}
