//! Targets: `GET|POST /engagements/{id}/targets`, `GET|PATCH|DELETE /targets/{id}`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pwnbook_commands::target::{NewTarget, Target, TargetCommand, TargetPatch, TYPES};
use pwnbook_commands::{Execution, FieldError};
use pwnbook_events::{Id, IdKind};
use pwnbook_projections::targets::{self, TargetFilter, TargetRow, TargetSort};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{etag, if_match, if_none_match, reject_unknown, ApiJson, QueryParams};
use crate::pagination;
use crate::routes::scope;
use crate::state::AppState;
use crate::time::format_millis;

const SORTS: &[(&str, TargetSort)] = &[
    ("createdAt", TargetSort::CreatedAt),
    ("updatedAt", TargetSort::UpdatedAt),
    ("value", TargetSort::Value),
];
const FILTERS: &[&str] = &["type", "inScope", "tag", "q"];
const READ_ONLY: &[&str] = &["id", "engagementId", "createdAt", "updatedAt", "version"];

pub fn render(row: &TargetRow) -> Value {
    json!({
        "id": row.id,
        "engagementId": row.engagement_id,
        "type": row.kind,
        "value": row.value,
        "port": row.port,
        "protocol": row.protocol,
        "inScope": row.in_scope,
        "tags": row.tags,
        "notes": row.notes,
        "createdAt": format_millis(row.created_at),
        "updatedAt": format_millis(row.updated_at),
        "version": row.version,
    })
}

fn respond(status: StatusCode, row: &TargetRow) -> Response {
    (status, [(header::ETAG, etag(row.version))], Json(json!({ "data": render(row) }))).into_response()
}

async fn load(state: &AppState, caller: &Caller, id: &str) -> Result<TargetRow, ApiError> {
    let id = Id::parse(IdKind::Target, id).ok_or(ApiError::NotFound)?;
    targets::get(state.store.pool(), caller.organization_id(), id.as_str()).await?.ok_or(ApiError::NotFound)
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
    request.check_cursor(TargetSort::accepts)?;
    let mut filters = request.filters();
    let in_scope = match filters.take("inScope").as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::BadRequest("inScope must be true or false".to_owned())),
    };
    let filter = TargetFilter {
        engagement_id: engagement.id,
        kinds: filters.take_enum_list("type", TYPES)?,
        in_scope,
        tags: filters.take_list("tag"),
        q: filters.take("q").filter(|q| !q.is_empty()),
    };
    filters.finish()?;
    let pool = state.store.pool();
    let org = caller.organization_id();
    let rows = targets::list(pool, org, &filter, request.sort, request.order, &request.window).await?;
    let total = if request.needs_total() { Some(targets::count(pool, org, &filter).await?) } else { None };
    let sort = request.sort;
    Ok(Json(request.envelope(rows, total, |row| (sort.value_of(row), row.id.clone()), render)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    value: Option<String>,
    port: Option<i64>,
    protocol: Option<String>,
    in_scope: Option<bool>,
    tags: Option<Vec<String>>,
    notes: Option<String>,
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
    reject_unknown(&body.unknown, READ_ONLY)?;
    let mut missing = Vec::new();
    if body.kind.is_none() {
        missing.push(FieldError::new("type", "is required"));
    }
    if body.value.is_none() {
        missing.push(FieldError::new("value", "is required"));
    }
    let (Some(kind), Some(value)) = (body.kind, body.value) else {
        return Err(ApiError::Validation(missing));
    };
    let id = Id::generate(IdKind::Target);
    let command = TargetCommand::Create {
        organization_id: caller.organization_id().to_owned(),
        engagement_id: engagement.id.clone(),
        target: NewTarget {
            kind,
            value,
            port: body.port,
            protocol: body.protocol,
            in_scope: body.in_scope.unwrap_or(true),
            tags: body.tags.unwrap_or_default(),
            notes: body.notes,
        },
    };
    let claim = command.claim(None);
    let row = run(
        &state,
        &caller,
        id.as_str(),
        &engagement.id,
        command,
        Execution { claim, ..Execution::default() },
    )
    .await?;
    let mut response = respond(StatusCode::CREATED, &row);
    if let Ok(location) = format!("/api/v1/targets/{id}").parse() {
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
    #[serde(default, rename = "type", with = "pwnbook_events::patch")]
    kind: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    value: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    port: Option<Option<i64>>,
    #[serde(default, with = "pwnbook_events::patch")]
    protocol: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    in_scope: Option<Option<bool>>,
    #[serde(default, with = "pwnbook_events::patch")]
    tags: Option<Option<Vec<String>>>,
    #[serde(default, with = "pwnbook_events::patch")]
    notes: Option<Option<String>>,
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
    let patch = TargetPatch {
        kind: not_null("type", body.kind, &mut errors),
        value: not_null("value", body.value, &mut errors),
        port: body.port,
        protocol: body.protocol,
        in_scope: not_null("inScope", body.in_scope, &mut errors),
        tags: body.tags.map(Option::unwrap_or_default),
        notes: body.notes,
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let command = TargetCommand::Update { organization_id: caller.organization_id().to_owned(), patch };
    let claim = command.claim(Some(identity(&current)));
    let execution = Execution { expected_version: if_match(&headers)?, claim, ..Execution::default() };
    let row = run(&state, &caller, &current.id, &current.engagement_id, command, execution).await?;
    Ok(respond(StatusCode::OK, &row))
}

fn identity(row: &TargetRow) -> (&str, &str, &str, Option<u16>) {
    (&row.engagement_id, &row.kind, &row.value, row.port.and_then(|p| u16::try_from(p).ok()))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let current = load(&state, &caller, &id).await?;
    scope::writable(&state, &caller, &current.engagement_id).await?;
    let command = TargetCommand::Delete { organization_id: caller.organization_id().to_owned() };
    let execution = Execution {
        expected_version: if_match(&headers)?,
        claim: command.claim(Some(identity(&current))),
        engagement_id: Some(current.engagement_id.clone()),
    };
    let committed =
        state.commands.execute::<Target>(&current.id, command, &caller.command_context(), execution).await?;
    state.visibility.wait(&committed).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs `command`, waits until the read table shows it, and returns the row.
async fn run(
    state: &AppState,
    caller: &Caller,
    id: &str,
    engagement_id: &str,
    command: TargetCommand,
    execution: Execution,
) -> Result<TargetRow, ApiError> {
    let execution = Execution { engagement_id: Some(engagement_id.to_owned()), ..execution };
    let committed =
        state.commands.execute::<Target>(id, command, &caller.command_context(), execution).await?;
    state.visibility.wait(&committed).await?;
    load(state, caller, id).await
}
