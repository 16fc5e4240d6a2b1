//! `/api/v1/engagements`: list, create, get, update, archive, unarchive, delete.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pwnbook_commands::engagement::{Engagement, EngagementCommand, EngagementPatch, NewEngagement};
use pwnbook_commands::Execution;
use pwnbook_events::{Id, IdKind, LogEvent};
use pwnbook_projections::engagements::{self, EngagementFilter, EngagementRow, EngagementSort};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{etag, if_match, if_none_match, not_null, required, ApiJson, NoBody, QueryParams};
use crate::openapi::{data, to_json, Data, Page};
use crate::pagination::{self, ListRequest};
use crate::routes::events::FeedPage;
use crate::routes::history;
use crate::state::AppState;
use crate::time::format_millis;

pub(crate) const SORTS: &[(&str, EngagementSort)] = &[
    ("createdAt", EngagementSort::CreatedAt),
    ("updatedAt", EngagementSort::UpdatedAt),
    ("name", EngagementSort::Name),
    ("startDate", EngagementSort::StartDate),
];
pub(crate) const FILTERS: &[&str] = &["status", "q", "tag", "clientName", "createdAfter", "createdBefore"];
const STATUSES: &[&str] = &["active", "archived"];
/// Fields of the engagement object a client cannot write.
const READ_ONLY: &[&str] = &["id", "status", "archivedAt", "createdAt", "updatedAt", "version"];

/// An engagement.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Engagement)]
pub struct EngagementView {
    #[schema(example = "eng_01j9k2m3n4p5q6r7s8t9")]
    id: String,
    name: String,
    description: Option<String>,
    #[schema(example = "active")]
    status: String,
    client_name: Option<String>,
    #[schema(example = "2025-01-15")]
    start_date: Option<String>,
    end_date: Option<String>,
    tags: Vec<String>,
    archived_at: Option<String>,
    #[schema(example = "2025-01-15T10:30:00.000Z")]
    created_at: String,
    updated_at: String,
    version: i64,
}

pub fn render(row: &EngagementRow) -> EngagementView {
    EngagementView {
        id: row.id.clone(),
        name: row.name.clone(),
        description: row.description.clone(),
        status: row.status.clone(),
        client_name: row.client_name.clone(),
        start_date: row.start_date.clone(),
        end_date: row.end_date.clone(),
        tags: row.tags.clone(),
        archived_at: row.archived_at.map(format_millis),
        created_at: format_millis(row.created_at),
        updated_at: format_millis(row.updated_at),
        version: row.version,
    }
}

fn respond(status: StatusCode, row: &EngagementRow) -> Response {
    (status, [(header::ETAG, etag(row.version))], data(render(row))).into_response()
}

/// Query parameters of `GET /engagements` (parsed strictly by `list`).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct ListQuery {
    /// Page number, from 1 (page mode).
    page: Option<i64>,
    /// Items per page, 1 to 100 (default 20).
    perPage: Option<i64>,
    /// `meta.nextCursor` of the previous page (cursor mode; carries the filters and sort).
    cursor: Option<String>,
    /// `createdAt` (default), `updatedAt`, `name` or `startDate`.
    sort: Option<String>,
    /// `asc` or `desc` (default).
    order: Option<String>,
    /// `active` and/or `archived`, comma-separated.
    status: Option<String>,
    /// Case-insensitive substring of the name.
    q: Option<String>,
    /// Any of these tags, comma-separated.
    tag: Option<String>,
    /// Any of these client names, comma-separated.
    clientName: Option<String>,
    /// Created at or after (RFC 3339).
    createdAfter: Option<String>,
    /// Created before (RFC 3339).
    createdBefore: Option<String>,
}

fn parse_id(id: &str) -> Result<Id, ApiError> {
    Id::parse(IdKind::Engagement, id).ok_or(ApiError::NotFound)
}

async fn load(state: &AppState, caller: &Caller, id: &Id) -> Result<EngagementRow, ApiError> {
    engagements::get(state.store.pool(), caller.organization_id(), id.as_str())
        .await?
        .ok_or(ApiError::NotFound)
}

/// The live engagement `id` of the caller's organization (404 otherwise).
pub(crate) async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<EngagementRow, ApiError> {
    load(state, caller, &parse_id(id)?).await
}

/// The filter of an engagement list request (from its query string or its cursor).
pub(crate) fn filter_of(request: &ListRequest<EngagementSort>) -> Result<EngagementFilter, ApiError> {
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
    Ok(filter)
}

/// List engagements.
#[utoipa::path(get, path = "/api/v1/engagements", tag = "engagements", params(ListQuery),
    responses((status = 200, description = "A page of engagements", body = Page<EngagementView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    mut params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let request = pagination::parse(&mut params, SORTS, FILTERS)?;
    params.finish()?;
    request.check_cursor(EngagementSort::accepts)?;
    let filter = filter_of(&request)?;
    let pool = state.store.pool();
    let org = caller.organization_id();
    let rows = engagements::list(pool, org, &filter, request.sort, request.order, &request.window).await?;
    let total =
        if request.needs_total() { Some(engagements::count(pool, org, &filter).await?) } else { None };
    let sort = request.sort;
    Ok(Json(request.envelope(rows, total, |row| (sort.value_of(row), row.id.clone()), render)))
}

/// A new engagement.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = NewEngagement)]
pub struct CreateBody {
    /// 1 to 200 characters, unique in the organization (case-insensitively).
    #[schema(required = true)]
    name: Option<String>,
    description: Option<String>,
    client_name: Option<String>,
    start_date: Option<String>,
    end_date: Option<String>,
    tags: Option<Vec<String>>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

/// Create an engagement.
#[utoipa::path(post, path = "/api/v1/engagements", tag = "engagements", request_body = CreateBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for 24 h")),
    responses((status = 201, description = "Created", body = Data<EngagementView>)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let row = create_row(&state, &caller, body).await?;
    let mut response = respond(StatusCode::CREATED, &row);
    if let Ok(location) = format!("/api/v1/engagements/{}", row.id).parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Creates an engagement (REST and GraphQL).
pub(crate) async fn create_row(
    state: &AppState,
    caller: &Caller,
    body: CreateBody,
) -> Result<EngagementRow, ApiError> {
    let caller = &caller.refusing(&body.unknown, READ_ONLY);
    // A missing name is named with what the command finds invalid (it validates, and does not
    // commit).
    let caller = &caller.refusing_errors(required(&[("name", body.name.is_some())]));
    let name = body.name.unwrap_or_default();
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
    run(state, caller, &id, command, None).await
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
        Ok(engagements::fold(events)?.map(|row| (to_json(render(&row)), row.version)))
    }
}

/// An engagement's events, its children's included.
#[utoipa::path(get, path = "/api/v1/engagements/{id}/history", tag = "engagements", params(("id" = String, Path), history::HistoryQuery),
    responses((status = 200, description = "Events in log order", body = FeedPage)))]
pub async fn history_page(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    params: QueryParams,
) -> Result<Json<FeedPage>, ApiError> {
    history::of::<Tracked>(state, caller, id, params).await
}

/// Get an engagement.
#[utoipa::path(get, path = "/api/v1/engagements/{id}", tag = "engagements",
    params(("id" = String, Path), history::TimeTravelQuery, ("If-None-Match" = Option<String>, Header)),
    responses((status = 200, description = "The engagement (as it was, with version or asOf)", body = Data<EngagementView>)))]
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

/// Changed fields only; `null` clears an optional field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = EngagementPatch)]
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
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

/// Update an engagement.
#[utoipa::path(patch, path = "/api/v1/engagements/{id}", tag = "engagements", request_body = PatchBody,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "Version the change is based on")),
    responses((status = 200, description = "The updated engagement", body = Data<EngagementView>)))]
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

/// Updates an engagement; `expected_version` (`If-Match`) is checked where REST checks it.
pub(crate) async fn update_row(
    state: &AppState,
    caller: &Caller,
    id: &str,
    body: PatchBody,
    expected_version: Result<Option<i64>, ApiError>,
) -> Result<EngagementRow, ApiError> {
    let id = parse_id(id)?;
    load(state, caller, &id).await?;
    let caller = &caller.refusing(&body.unknown, READ_ONLY);
    let mut errors = Vec::new();
    let name = not_null("name", body.name, &mut errors);
    let caller = &caller.refusing_errors(errors);
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
    run(state, caller, &id, command, expected_version?).await
}

/// Archive an engagement (it becomes read-only).
#[utoipa::path(post, path = "/api/v1/engagements/{id}/archive", tag = "engagements", request_body = Option<crate::extract::NoBody>,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "The archived engagement", body = Data<EngagementView>)))]
pub async fn archive(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: NoBody,
) -> Result<Response, ApiError> {
    let caller = caller.refusing(body.fields(), &[]);
    let row = archive_row(&state, &caller, &id, if_match(&headers)).await?;
    Ok(respond(StatusCode::OK, &row))
}

pub(crate) async fn archive_row(
    state: &AppState,
    caller: &Caller,
    id: &str,
    expected_version: Result<Option<i64>, ApiError>,
) -> Result<EngagementRow, ApiError> {
    let id = parse_id(id)?;
    load(state, caller, &id).await?;
    let command = EngagementCommand::Archive { organization_id: caller.organization_id().to_owned() };
    run(state, caller, &id, command, expected_version?).await
}

/// Unarchive an engagement.
#[utoipa::path(post, path = "/api/v1/engagements/{id}/unarchive", tag = "engagements", request_body = Option<crate::extract::NoBody>,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "The active engagement", body = Data<EngagementView>)))]
pub async fn unarchive(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: NoBody,
) -> Result<Response, ApiError> {
    let caller = caller.refusing(body.fields(), &[]);
    let row = unarchive_row(&state, &caller, &id, if_match(&headers)).await?;
    Ok(respond(StatusCode::OK, &row))
}

pub(crate) async fn unarchive_row(
    state: &AppState,
    caller: &Caller,
    id: &str,
    expected_version: Result<Option<i64>, ApiError>,
) -> Result<EngagementRow, ApiError> {
    let id = parse_id(id)?;
    load(state, caller, &id).await?;
    let command = EngagementCommand::Unarchive { organization_id: caller.organization_id().to_owned() };
    run(state, caller, &id, command, expected_version?).await
}

/// Delete an engagement; it and its children answer 404 from then on (their events stay).
#[utoipa::path(delete, path = "/api/v1/engagements/{id}", tag = "engagements",
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
    let id = parse_id(id)?;
    load(state, caller, &id).await?;
    let command = EngagementCommand::Delete { organization_id: caller.organization_id().to_owned() };
    let execution = Execution {
        expected_version: expected_version?,
        claim: command.claim(),
        engagement_id: Some(id.to_string()),
        fresh: false,
    };
    let committed = state
        .commands
        .execute::<Engagement>(id.as_str(), command, &caller.command_context(), execution)
        .await?;
    state.visibility.wait(&committed).await
}

/// Runs `command`, waits until the read table shows it, and returns the row.
async fn run(
    state: &AppState,
    caller: &Caller,
    id: &Id,
    command: EngagementCommand,
    expected_version: Option<i64>,
) -> Result<EngagementRow, ApiError> {
    let execution = Execution {
        expected_version,
        claim: command.claim(),
        engagement_id: Some(id.to_string()),
        fresh: matches!(command, EngagementCommand::Create { .. }),
    };
    let committed = state
        .commands
        .execute::<Engagement>(id.as_str(), command, &caller.command_context(), execution)
        .await?;
    state.visibility.wait(&committed).await?;
    load(state, caller, id).await
}
