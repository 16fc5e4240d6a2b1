//! Tasks: `GET|POST /engagements/{id}/tasks`, `GET /tasks`, `GET|PATCH|DELETE /tasks/{id}`,
//! `POST /tasks/{id}/close`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pwnbook_commands::task::{NewTask, Task, TaskCommand, TaskPatch, PRIORITIES, STATUSES};
use pwnbook_commands::{Execution, FieldError};
use pwnbook_events::{Id, IdKind};
use pwnbook_projections::tasks::{self, TaskFilter, TaskRow, TaskSort};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{etag, if_match, if_none_match, reject_unknown, ApiJson, QueryParams};
use crate::pagination::{self, ListRequest};
use crate::routes::scope;
use crate::state::AppState;
use crate::time::format_millis;

const SORTS: &[(&str, TaskSort)] = &[
    ("createdAt", TaskSort::CreatedAt),
    ("updatedAt", TaskSort::UpdatedAt),
    ("dueDate", TaskSort::DueDate),
    ("priority", TaskSort::Priority),
    ("title", TaskSort::Title),
];
const FILTERS: &[&str] = &["status", "priority", "q", "createdAfter", "createdBefore"];
const FLAT_FILTERS: &[&str] = &["engagementId", "status", "priority", "q", "createdAfter", "createdBefore"];
const READ_ONLY: &[&str] = &["id", "engagementId", "closedAt", "createdAt", "updatedAt", "version"];

pub fn render(row: &TaskRow) -> Value {
    json!({
        "id": row.id,
        "engagementId": row.engagement_id,
        "title": row.title,
        "description": row.description,
        "status": row.status,
        "priority": row.priority,
        "dueDate": row.due_date,
        "closedAt": row.closed_at.map(format_millis),
        "createdAt": format_millis(row.created_at),
        "updatedAt": format_millis(row.updated_at),
        "version": row.version,
    })
}

fn respond(status: StatusCode, row: &TaskRow) -> Response {
    (status, [(header::ETAG, etag(row.version))], Json(json!({ "data": render(row) }))).into_response()
}

async fn load(state: &AppState, caller: &Caller, id: &str) -> Result<TaskRow, ApiError> {
    let id = Id::parse(IdKind::Task, id).ok_or(ApiError::NotFound)?;
    tasks::get(state.store.pool(), caller.organization_id(), id.as_str()).await?.ok_or(ApiError::NotFound)
}

async fn respond_list(
    state: &AppState,
    caller: &Caller,
    request: ListRequest<TaskSort>,
    engagement_ids: Option<Vec<String>>,
) -> Result<Json<Value>, ApiError> {
    request.check_cursor(TaskSort::accepts)?;
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
    let pool = state.store.pool();
    let org = caller.organization_id();
    let rows = tasks::list(pool, org, &filter, request.sort, request.order, &request.window).await?;
    let total = if request.needs_total() { Some(tasks::count(pool, org, &filter).await?) } else { None };
    let sort = request.sort;
    Ok(Json(request.envelope(rows, total, |row| (sort.value_of(row), row.id.clone()), render)))
}

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

pub async fn list_all(
    State(state): State<AppState>,
    caller: Caller,
    mut params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let request = pagination::parse(&mut params, SORTS, FLAT_FILTERS)?;
    params.finish()?;
    respond_list(&state, &caller, request, None).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBody {
    title: Option<String>,
    description: Option<String>,
    priority: Option<String>,
    due_date: Option<String>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(engagement_id): Path<String>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let engagement = scope::writable(&state, &caller, &engagement_id).await?;
    // A new task is open; it moves through PATCH and /close.
    reject_unknown(&body.unknown, &[READ_ONLY, &["status"]].concat())?;
    let Some(title) = body.title else {
        return Err(ApiError::Validation(vec![FieldError::new("title", "is required")]));
    };
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
    let row = run(&state, &caller, id.as_str(), &engagement.id, command, None).await?;
    let mut response = respond(StatusCode::CREATED, &row);
    if let Ok(location) = format!("/api/v1/tasks/{id}").parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    params: QueryParams,
) -> Result<Response, ApiError> {
    params.finish()?;
    let row = load(&state, &caller, &id).await?;
    if if_none_match(&headers, row.version) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag(row.version))]).into_response());
    }
    Ok(respond(StatusCode::OK, &row))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
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
    unknown: BTreeMap<String, Value>,
}

fn not_null<T>(field: &str, value: Option<Option<T>>, errors: &mut Vec<FieldError>) -> Option<T> {
    match value {
        Some(None) => {
            errors.push(FieldError::new(field, "cannot be null"));
            None
        }
        other => other.flatten(),
    }
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Response, ApiError> {
    let current = load(&state, &caller, &id).await?;
    scope::writable(&state, &caller, &current.engagement_id).await?;
    reject_unknown(&body.unknown, READ_ONLY)?;
    let mut errors = Vec::new();
    let patch = TaskPatch {
        title: not_null("title", body.title, &mut errors),
        description: body.description,
        priority: not_null("priority", body.priority, &mut errors),
        due_date: body.due_date,
        status: not_null("status", body.status, &mut errors),
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let command = TaskCommand::Update { organization_id: caller.organization_id().to_owned(), patch };
    let row = run(&state, &caller, &current.id, &current.engagement_id, command, if_match(&headers)?).await?;
    Ok(respond(StatusCode::OK, &row))
}

pub async fn close(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let current = load(&state, &caller, &id).await?;
    scope::writable(&state, &caller, &current.engagement_id).await?;
    let command = TaskCommand::Close { organization_id: caller.organization_id().to_owned() };
    let row = run(&state, &caller, &current.id, &current.engagement_id, command, if_match(&headers)?).await?;
    Ok(respond(StatusCode::OK, &row))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let current = load(&state, &caller, &id).await?;
    scope::writable(&state, &caller, &current.engagement_id).await?;
    let command = TaskCommand::Delete { organization_id: caller.organization_id().to_owned() };
    let execution = Execution {
        expected_version: if_match(&headers)?,
        claim: None,
        engagement_id: Some(current.engagement_id.clone()),
    };
    let committed =
        state.commands.execute::<Task>(&current.id, command, &caller.command_context(), execution).await?;
    state.visibility.wait(&committed).await?;
    Ok(StatusCode::NO_CONTENT)
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
    let execution =
        Execution { expected_version, claim: None, engagement_id: Some(engagement_id.to_owned()) };
    let committed = state.commands.execute::<Task>(id, command, &caller.command_context(), execution).await?;
    state.visibility.wait(&committed).await?;
    load(state, caller, id).await
}
