//! `/api/v1/api-keys`: create (the secret is shown once), list, get, revoke.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pwnbook_commands::api_key::{ApiKey, ApiKeyCommand, NewApiKey};
use pwnbook_commands::{Execution, FieldError};
use pwnbook_events::{Id, IdKind, LogEvent};
use pwnbook_projections::api_keys::{self, ApiKeyFilter, ApiKeyRow, ApiKeySort};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{etag, if_match, ApiJson, QueryParams};
use crate::openapi::{data, to_json, Data, Page};
use crate::pagination::{self, ListRequest};
use crate::routes::events::FeedPage;
use crate::routes::history;
use crate::secrets::Secret;
use crate::state::AppState;
use crate::time::{format_millis, now_millis};

pub(crate) const SORTS: &[(&str, ApiKeySort)] = &[
    ("createdAt", ApiKeySort::CreatedAt),
    ("name", ApiKeySort::Name),
    ("lastUsedAt", ApiKeySort::LastUsedAt),
];
pub(crate) const FILTERS: &[&str] = &["environment", "revoked"];
const READ_ONLY: &[&str] = &["id", "key", "prefix", "lastFour", "createdAt", "lastUsedAt", "revokedAt"];

/// An API key (never its secret, except once in the creation response as `key`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ApiKey)]
pub struct ApiKeyView {
    #[schema(example = "key_01j9k2m3n4p5q6r7s8t9")]
    id: String,
    name: String,
    #[schema(example = "pwbk_live_")]
    prefix: String,
    last_four: String,
    #[schema(example = json!(["engagements:read"]))]
    permissions: Vec<String>,
    #[schema(example = "live")]
    environment: String,
    created_at: String,
    last_used_at: Option<String>,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    /// The secret: only in the response to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

pub fn render(row: &ApiKeyRow) -> ApiKeyView {
    ApiKeyView {
        id: row.id.clone(),
        name: row.name.clone(),
        prefix: row.prefix.clone(),
        last_four: row.last_four.clone(),
        permissions: row.permissions.clone(),
        environment: row.environment.clone(),
        created_at: format_millis(row.created_at),
        last_used_at: row.last_used_at.map(format_millis),
        expires_at: row.expires_at.map(format_millis),
        revoked_at: row.revoked_at.map(format_millis),
        key: None,
    }
}

/// Query parameters of `GET /api-keys`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct ListQuery {
    page: Option<i64>,
    perPage: Option<i64>,
    cursor: Option<String>,
    /// `createdAt` (default), `name` or `lastUsedAt`.
    sort: Option<String>,
    order: Option<String>,
    /// `live` and/or `test`.
    environment: Option<String>,
    /// `true` or `false`.
    revoked: Option<String>,
}

fn parse_id(id: &str) -> Result<Id, ApiError> {
    Id::parse(IdKind::ApiKey, id).ok_or(ApiError::NotFound)
}

async fn load(state: &AppState, caller: &Caller, id: &Id) -> Result<ApiKeyRow, ApiError> {
    api_keys::get(state.store.pool(), caller.organization_id(), id.as_str()).await?.ok_or(ApiError::NotFound)
}

/// The key `id` of the caller's organization (404 otherwise).
pub(crate) async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<ApiKeyRow, ApiError> {
    load(state, caller, &parse_id(id)?).await
}

/// The filter of a key list request.
pub(crate) fn filter_of(request: &ListRequest<ApiKeySort>) -> Result<ApiKeyFilter, ApiError> {
    let mut filters = request.filters();
    let revoked = match filters.take("revoked").as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::BadRequest("revoked must be true or false".to_owned())),
    };
    let filter =
        ApiKeyFilter { environment: filters.take_enum_list("environment", &["live", "test"])?, revoked };
    filters.finish()?;
    Ok(filter)
}

/// List API keys.
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys", params(ListQuery),
    responses((status = 200, description = "A page of keys", body = Page<ApiKeyView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    mut params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let request = pagination::parse(&mut params, SORTS, FILTERS)?;
    params.finish()?;
    request.check_cursor(ApiKeySort::accepts)?;
    let filter = filter_of(&request)?;
    let pool = state.store.pool();
    let org = caller.organization_id();
    let rows = api_keys::list(pool, org, &filter, request.sort, request.order, &request.window).await?;
    let total = if request.needs_total() { Some(api_keys::count(pool, org, &filter).await?) } else { None };
    let sort = request.sort;
    Ok(Json(request.envelope(rows, total, |row| (sort.value_of(row), row.id.clone()), render)))
}

/// A new key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = NewApiKey)]
pub struct CreateBody {
    #[schema(required = true)]
    name: Option<String>,
    /// Permission names; a key cannot grant one it does not hold.
    #[schema(required = true)]
    permissions: Option<Vec<String>>,
    /// `live` (default) or `test`.
    environment: Option<String>,
    /// RFC 3339; the key stops working then.
    expires_at: Option<String>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

/// Create an API key; the response's `key` is the secret, shown only here.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", request_body = CreateBody,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, description = "Created", body = Data<ApiKeyView>)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let (row, secret) = create_row(&state, &caller, body).await?;
    let view = render_created(&row, &secret);
    let mut response = (StatusCode::CREATED, [(header::ETAG, etag(row.version))], data(view)).into_response();
    if let Ok(location) = format!("/api/v1/api-keys/{}", row.id).parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Creates a key (REST and GraphQL); its secret exists only in what this returns.
pub(crate) async fn create_row(
    state: &AppState,
    caller: &Caller,
    body: CreateBody,
) -> Result<(ApiKeyRow, Secret), ApiError> {
    let caller = &caller.refusing(&body.unknown, READ_ONLY);
    let mut missing = Vec::new();
    if body.name.is_none() {
        missing.push(FieldError::new("name", "is required"));
    }
    if body.permissions.is_none() {
        missing.push(FieldError::new("permissions", "is required"));
    }
    if !missing.is_empty() {
        return Err(caller.invalid(missing));
    }
    let environment = body.environment.unwrap_or_else(|| "live".to_owned());
    let secret = Secret::generate(&environment);
    let id = Id::generate(IdKind::ApiKey);
    let command = ApiKeyCommand::Create {
        organization_id: caller.organization_id().to_owned(),
        key: NewApiKey {
            name: body.name.unwrap_or_default(),
            environment,
            permissions: body.permissions.unwrap_or_default(),
            expires_at: body.expires_at,
            prefix: secret.prefix().to_owned(),
            last_four: secret.last_four(),
            secret_hash: secret.hash(),
        },
        granted_by: Some(caller.principal.permissions.clone()),
        now_millis: now_millis(),
    };
    let committed = state
        .commands
        .execute::<ApiKey>(
            id.as_str(),
            command,
            &caller.command_context(),
            Execution { fresh: true, ..Execution::default() },
        )
        .await?;
    state.visibility.wait(&committed).await?;
    Ok((load(state, caller, &id).await?, secret))
}

/// The view of a key as created: with its secret as `key`.
pub(crate) fn render_created(row: &ApiKeyRow, secret: &Secret) -> Value {
    to_json(ApiKeyView { key: Some(secret.expose().to_owned()), ..render(row) })
}

/// API keys in history and time travel.
pub struct Tracked;

impl history::Tracked for Tracked {
    const KIND: IdKind = IdKind::ApiKey;
    const AGGREGATE: &'static str = "api_key";

    async fn fold(
        _: &AppState,
        events: &[LogEvent],
        _: Option<i64>,
    ) -> Result<Option<(Value, i64)>, ApiError> {
        Ok(api_keys::fold(events)?.map(|row| (to_json(render(&row)), row.version)))
    }
}

/// An API key's events.
#[utoipa::path(get, path = "/api/v1/api-keys/{id}/history", tag = "api-keys", params(("id" = String, Path), history::HistoryQuery),
    responses((status = 200, description = "Events in log order", body = FeedPage)))]
pub async fn history_page(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    params: QueryParams,
) -> Result<Json<FeedPage>, ApiError> {
    history::of::<Tracked>(state, caller, id, params).await
}

/// Get an API key.
#[utoipa::path(get, path = "/api/v1/api-keys/{id}", tag = "api-keys", params(("id" = String, Path), history::TimeTravelQuery),
    responses((status = 200, description = "The key", body = Data<ApiKeyView>)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    mut params: QueryParams,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let past = history::time_travel::<Tracked>(&state, &caller, id.as_str(), &mut params).await;
    params.finish()?;
    if let Some(response) = past? {
        return Ok(response);
    }
    let row = load(&state, &caller, &id).await?;
    Ok(([(header::ETAG, etag(row.version))], data(render(&row))).into_response())
}

/// Revoke an API key; it answers 401 from the next request on.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Revoked")))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    revoke_row(&state, &caller, &id, if_match(&headers)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes a key (REST and GraphQL) and returns it; `expected_version` (`If-Match`) is checked
/// with the write.
pub(crate) async fn revoke_row(
    state: &AppState,
    caller: &Caller,
    id: &str,
    expected_version: Result<Option<i64>, ApiError>,
) -> Result<ApiKeyRow, ApiError> {
    let id = parse_id(id)?;
    load(state, caller, &id).await?;
    let command = ApiKeyCommand::Revoke { organization_id: caller.organization_id().to_owned() };
    let execution = Execution { expected_version: expected_version?, ..Execution::default() };
    let committed =
        state.commands.execute::<ApiKey>(id.as_str(), command, &caller.command_context(), execution).await?;
    state.visibility.wait(&committed).await?;
    load(state, caller, &id).await
}
