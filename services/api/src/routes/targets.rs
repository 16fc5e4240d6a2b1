//! Targets: `GET|POST /engagements/{id}/targets`, `GET|PATCH|DELETE /targets/{id}`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pwnbook_commands::target::{NewTarget, Target, TargetCommand, TargetPatch, TYPES};
use pwnbook_commands::Execution;
use pwnbook_events::{Id, IdKind, LogEvent};
use pwnbook_projections::findings;
use pwnbook_projections::targets::{self, TargetFilter, TargetRow, TargetSort};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{etag, if_match, if_none_match, not_null, required, ApiJson, QueryParams};
use crate::openapi::{data, to_json, Data, Page};
use crate::pagination::{self, ListRequest};
use crate::routes::events::FeedPage;
use crate::routes::{history, scope};
use crate::state::AppState;
use crate::time::format_millis;

pub(crate) const SORTS: &[(&str, TargetSort)] = &[
    ("createdAt", TargetSort::CreatedAt),
    ("updatedAt", TargetSort::UpdatedAt),
    ("value", TargetSort::Value),
];
pub(crate) const FILTERS: &[&str] = &["type", "inScope", "tag", "q"];
const READ_ONLY: &[&str] = &["id", "engagementId", "createdAt", "updatedAt", "version"];

/// A target in an engagement's scope.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Target)]
pub struct TargetView {
    #[schema(example = "tgt_01j9k2m3n4p5q6r7s8t9")]
    id: String,
    engagement_id: String,
    /// `domain`, `hostname`, `ip`, `cidr`, `url` or `service`.
    #[serde(rename = "type")]
    #[schema(example = "ip")]
    kind: String,
    #[schema(example = "10.0.0.1")]
    value: String,
    port: Option<i64>,
    /// `tcp`, `udp` or null.
    protocol: Option<String>,
    in_scope: bool,
    tags: Vec<String>,
    notes: Option<String>,
    created_at: String,
    updated_at: String,
    version: i64,
}

pub fn render(row: &TargetRow) -> TargetView {
    TargetView {
        id: row.id.clone(),
        engagement_id: row.engagement_id.clone(),
        kind: row.kind.clone(),
        value: row.value.clone(),
        port: row.port,
        protocol: row.protocol.clone(),
        in_scope: row.in_scope,
        tags: row.tags.clone(),
        notes: row.notes.clone(),
        created_at: format_millis(row.created_at),
        updated_at: format_millis(row.updated_at),
        version: row.version,
    }
}

fn respond(status: StatusCode, row: &TargetRow) -> Response {
    (status, [(header::ETAG, etag(row.version))], data(render(row))).into_response()
}

/// Query parameters of `GET /engagements/{id}/targets`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct ListQuery {
    page: Option<i64>,
    perPage: Option<i64>,
    cursor: Option<String>,
    /// `createdAt` (default), `updatedAt` or `value`.
    sort: Option<String>,
    order: Option<String>,
    /// Target types, comma-separated.
    r#type: Option<String>,
    /// `true` or `false`.
    inScope: Option<String>,
    tag: Option<String>,
    /// Case-insensitive substring of the value.
    q: Option<String>,
}

/// The live target `id` of the caller's organization (404 otherwise).
pub(crate) async fn load(state: &AppState, caller: &Caller, id: &str) -> Result<TargetRow, ApiError> {
    let id = Id::parse(IdKind::Target, id).ok_or(ApiError::NotFound)?;
    targets::get(state.store.pool(), caller.organization_id(), id.as_str()).await?.ok_or(ApiError::NotFound)
}

/// The filter of a target list request of the engagement `engagement_id`.
pub(crate) fn filter_of(
    request: &ListRequest<TargetSort>,
    engagement_id: String,
) -> Result<TargetFilter, ApiError> {
    let mut filters = request.filters();
    let in_scope = match filters.take("inScope").as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::BadRequest("inScope must be true or false".to_owned())),
    };
    let filter = TargetFilter {
        engagement_id,
        kinds: filters.take_enum_list("type", TYPES)?,
        in_scope,
        tags: filters.take_list("tag"),
        q: filters.take("q").filter(|q| !q.is_empty()),
    };
    filters.finish()?;
    Ok(filter)
}

/// List an engagement's targets.
#[utoipa::path(get, path = "/api/v1/engagements/{id}/targets", tag = "targets", params(("id" = String, Path), ListQuery),
    responses((status = 200, description = "A page of targets", body = Page<TargetView>)))]
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
    let filter = filter_of(&request, engagement.id)?;
    let pool = state.store.pool();
    let org = caller.organization_id();
    let rows = targets::list(pool, org, &filter, request.sort, request.order, &request.window).await?;
    let total = if request.needs_total() { Some(targets::count(pool, org, &filter).await?) } else { None };
    let sort = request.sort;
    Ok(Json(request.envelope(rows, total, |row| (sort.value_of(row), row.id.clone()), render)))
}

/// A new target.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = NewTarget)]
pub struct CreateBody {
    #[schema(required = true)]
    #[serde(rename = "type")]
    kind: Option<String>,
    #[schema(required = true)]
    value: Option<String>,
    port: Option<i64>,
    protocol: Option<String>,
    in_scope: Option<bool>,
    tags: Option<Vec<String>>,
    notes: Option<String>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

/// Add a target to an engagement's scope.
#[utoipa::path(post, path = "/api/v1/engagements/{id}/targets", tag = "targets", request_body = CreateBody,
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, description = "Created", body = Data<TargetView>)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(engagement_id): Path<String>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let row = create_row(&state, &caller, &engagement_id, body).await?;
    let mut response = respond(StatusCode::CREATED, &row);
    if let Ok(location) = format!("/api/v1/targets/{}", row.id).parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Adds a target to the engagement `engagement_id` (REST and GraphQL).
pub(crate) async fn create_row(
    state: &AppState,
    caller: &Caller,
    engagement_id: &str,
    body: CreateBody,
) -> Result<TargetRow, ApiError> {
    let engagement = scope::writable(state, caller, engagement_id).await?;
    let caller = &caller.refusing(&body.unknown, READ_ONLY);
    // Missing fields are named with what the command finds invalid (it validates, and does not
    // commit).
    let caller =
        &caller.refusing_errors(required(&[("type", body.kind.is_some()), ("value", body.value.is_some())]));
    let (kind, value) = (body.kind.unwrap_or_default(), body.value.unwrap_or_default());
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
    run(
        state,
        caller,
        id.as_str(),
        &engagement.id,
        command,
        Execution { claim, fresh: true, ..Execution::default() },
    )
    .await
}

/// Targets in history and time travel.
pub struct Tracked;

impl history::Tracked for Tracked {
    const KIND: IdKind = IdKind::Target;
    const AGGREGATE: &'static str = "target";

    async fn fold(
        _: &AppState,
        events: &[LogEvent],
        _: Option<i64>,
    ) -> Result<Option<(Value, i64)>, ApiError> {
        Ok(targets::fold(events)?.map(|row| (to_json(render(&row)), row.version)))
    }
}

/// The events of a target.
#[utoipa::path(get, path = "/api/v1/targets/{id}/history", tag = "targets", params(("id" = String, Path), history::HistoryQuery),
    responses((status = 200, description = "Events in log order", body = FeedPage)))]
pub async fn history_page(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    params: QueryParams,
) -> Result<Json<FeedPage>, ApiError> {
    history::of::<Tracked>(state, caller, id, params).await
}

/// Get a target.
#[utoipa::path(get, path = "/api/v1/targets/{id}", tag = "targets",
    params(("id" = String, Path), history::TimeTravelQuery, ("If-None-Match" = Option<String>, Header)),
    responses((status = 200, description = "The target (as it was, with version or asOf)", body = Data<TargetView>)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    mut params: QueryParams,
) -> Result<Response, ApiError> {
    let id = Id::parse(IdKind::Target, &id).ok_or(ApiError::NotFound)?;
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

/// Changed fields only.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = TargetPatch)]
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
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

/// Update a target.
#[utoipa::path(patch, path = "/api/v1/targets/{id}", tag = "targets", request_body = PatchBody,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "The updated target", body = Data<TargetView>)))]
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

/// Updates a target; `expected_version` (`If-Match`) is checked where REST checks it.
pub(crate) async fn update_row(
    state: &AppState,
    caller: &Caller,
    id: &str,
    body: PatchBody,
    expected_version: Result<Option<i64>, ApiError>,
) -> Result<TargetRow, ApiError> {
    let current = load(state, caller, id).await?;
    scope::writable(state, caller, &current.engagement_id).await?;
    let caller = &caller.refusing(&body.unknown, READ_ONLY);
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
    let caller = &caller.refusing_errors(errors);
    let command = TargetCommand::Update { organization_id: caller.organization_id().to_owned(), patch };
    let claim = command.claim(Some(identity(&current)));
    let execution = Execution { expected_version: expected_version?, claim, ..Execution::default() };
    run(state, caller, &current.id, &current.engagement_id, command, execution).await
}

fn identity(row: &TargetRow) -> (&str, &str, &str, Option<u16>) {
    (&row.engagement_id, &row.kind, &row.value, row.port.and_then(|p| u16::try_from(p).ok()))
}

/// Delete a target.
#[utoipa::path(delete, path = "/api/v1/targets/{id}", tag = "targets",
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
    if findings::reference_target(state.store.pool(), caller.organization_id(), &current.id).await? {
        return Err(ApiError::Conflict(
            "findings list this target as affected; remove it from them first".to_owned(),
        ));
    }
    let command = TargetCommand::Delete { organization_id: caller.organization_id().to_owned() };
    let execution = Execution {
        expected_version: expected_version?,
        claim: command.claim(Some(identity(&current))),
        engagement_id: Some(current.engagement_id.clone()),
        fresh: false,
    };
    let committed =
        state.commands.execute::<Target>(&current.id, command, &caller.command_context(), execution).await?;
    state.visibility.wait(&committed).await
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
