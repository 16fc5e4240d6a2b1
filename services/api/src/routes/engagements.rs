//! `/api/v1/engagements`: list, create, get, update, archive, unarchive, delete.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pwnbook_commands::engagement::{Engagement, EngagementCommand, EngagementPatch, NewEngagement};
use pwnbook_commands::{Execution, FieldError};
use pwnbook_events::{Id, IdKind, LogEvent};
use pwnbook_projections::engagements::{self, EngagementFilter, EngagementRow, EngagementSort};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{etag, if_match, if_none_match, reject_unknown, ApiJson, QueryParams};
use crate::pagination;
use crate::routes::history;
use crate::state::AppState;
use crate::time::format_millis;

const SORTS: &[(&str, EngagementSort)] = &[
    ("createdAt", EngagementSort::CreatedAt),
    ("updatedAt", EngagementSort::UpdatedAt),
    ("name", EngagementSort::Name),
    ("startDate", EngagementSort::StartDate),
];
const FILTERS: &[&str] = &["status", "q", "tag", "clientName", "createdAfter", "createdBefore"];
const STATUSES: &[&str] = &["active", "archived"];
/// Fields of the engagement object a client cannot write.
const READ_ONLY: &[&str] = &["id", "status", "archivedAt", "createdAt", "updatedAt", "version"];

pub fn render(row: &EngagementRow) -> Value {
    json!({
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "status": row.status,
        "clientName": row.client_name,
        "startDate": row.start_date,
        "endDate": row.end_date,
        "tags": row.tags,
        "archivedAt": row.archived_at.map(format_millis),
        "createdAt": format_millis(row.created_at),
        "updatedAt": format_millis(row.updated_at),
        "version": row.version,
    })
}

fn respond(status: StatusCode, row: &EngagementRow) -> Response {
    (status, [(header::ETAG, etag(row.version))], Json(json!({ "data": render(row) }))).into_response()
}

fn parse_id(id: &str) -> Result<Id, ApiError> {
    Id::parse(IdKind::Engagement, id).ok_or(ApiError::NotFound)
}

async fn load(state: &AppState, caller: &Caller, id: &Id) -> Result<EngagementRow, ApiError> {
    engagements::get(state.store.pool(), caller.organization_id(), id.as_str())
        .await?
        .ok_or(ApiError::NotFound)
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    mut params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let request = pagination::parse(&mut params, SORTS, FILTERS)?;
    params.finish()?;
    request.check_cursor(EngagementSort::accepts)?;
    let mut filters = request.filters();
    let filter = EngagementFilter {
        status: filters.take_enum_list("status", STATUSES)?,
        q: filters.take("q").filter(|q| !q.is_empty()),
        tags: filters.take_list("tag"),
        client_names: filters.take_list("clientName"),
        created_after: filters.take_timestamp("createdAfter")?,
        created_before: filters.take_timestamp("createdBefore")?,
    };
    filters.finish()?;
    let pool = state.store.pool();
    let org = caller.organization_id();
    let rows = engagements::list(pool, org, &filter, request.sort, request.order, &request.window).await?;
    let total =
        if request.needs_total() { Some(engagements::count(pool, org, &filter).await?) } else { None };
    let sort = request.sort;
    Ok(Json(request.envelope(rows, total, |row| (sort.value_of(row), row.id.clone()), render)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBody {
    name: Option<String>,
    description: Option<String>,
    client_name: Option<String>,
    start_date: Option<String>,
    end_date: Option<String>,
    tags: Option<Vec<String>>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    reject_unknown(&body.unknown, READ_ONLY)?;
    let Some(name) = body.name else {
        return Err(ApiError::Validation(vec![FieldError::new("name", "is required")]));
    };
    let id = Id::generate(IdKind::Engagement);
    let command = EngagementCommand::Create {
        organization_id: caller.organization_id().to_owned(),
        engagement: NewEngagement {
            name,
            description: body.description,
            client_name: body.client_name,
            start_date: body.start_date,
            end_date: body.end_date,
            tags: body.tags.unwrap_or_default(),
        },
    };
    let row = run(&state, &caller, &id, command, None).await?;
    let mut response = respond(StatusCode::CREATED, &row);
    if let Ok(location) = format!("/api/v1/engagements/{id}").parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Engagements in history and time travel; an engagement's history holds its children's events.
pub struct Tracked;

impl history::Tracked for Tracked {
    const KIND: IdKind = IdKind::Engagement;
    const AGGREGATE: &'static str = "engagement";
    const ENCLOSES: bool = true;

    async fn fold(
        _: &AppState,
        events: &[LogEvent],
        _: Option<i64>,
    ) -> Result<Option<(Value, i64)>, ApiError> {
        Ok(engagements::fold(events)?.map(|row| (render(&row), row.version)))
    }
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    mut params: QueryParams,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let past = history::time_travel::<Tracked>(&state, &caller, id.as_str(), &mut params).await;
    params.finish()?;
    if let Some(response) = past? {
        return Ok(response);
    }
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
    name: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    description: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    client_name: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    start_date: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    end_date: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    tags: Option<Option<Vec<String>>>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    load(&state, &caller, &id).await?;
    reject_unknown(&body.unknown, READ_ONLY)?;
    let name = match body.name {
        Some(None) => return Err(ApiError::validation("name", "cannot be null")),
        other => other.flatten(),
    };
    let patch = EngagementPatch {
        name,
        description: body.description,
        client_name: body.client_name,
        start_date: body.start_date,
        end_date: body.end_date,
        // `"tags": null` empties the list.
        tags: body.tags.map(Option::unwrap_or_default),
    };
    let command = EngagementCommand::Update { organization_id: caller.organization_id().to_owned(), patch };
    let row = run(&state, &caller, &id, command, if_match(&headers)?).await?;
    Ok(respond(StatusCode::OK, &row))
}

pub async fn archive(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    load(&state, &caller, &id).await?;
    let command = EngagementCommand::Archive { organization_id: caller.organization_id().to_owned() };
    let row = run(&state, &caller, &id, command, if_match(&headers)?).await?;
    Ok(respond(StatusCode::OK, &row))
}

pub async fn unarchive(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    load(&state, &caller, &id).await?;
    let command = EngagementCommand::Unarchive { organization_id: caller.organization_id().to_owned() };
    let row = run(&state, &caller, &id, command, if_match(&headers)?).await?;
    Ok(respond(StatusCode::OK, &row))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    load(&state, &caller, &id).await?;
    let command = EngagementCommand::Delete { organization_id: caller.organization_id().to_owned() };
    let execution = Execution {
        expected_version: if_match(&headers)?,
        claim: command.claim(),
        engagement_id: Some(id.to_string()),
    };
    let committed = state
        .commands
        .execute::<Engagement>(id.as_str(), command, &caller.command_context(), execution)
        .await?;
    state.visibility.wait(&committed).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs `command`, waits until the read table shows it, and returns the row.
async fn run(
    state: &AppState,
    caller: &Caller,
    id: &Id,
    command: EngagementCommand,
    expected_version: Option<i64>,
) -> Result<EngagementRow, ApiError> {
    let execution =
        Execution { expected_version, claim: command.claim(), engagement_id: Some(id.to_string()) };
    let committed = state
        .commands
        .execute::<Engagement>(id.as_str(), command, &caller.command_context(), execution)
        .await?;
    state.visibility.wait(&committed).await?;
    load(state, caller, id).await
}
