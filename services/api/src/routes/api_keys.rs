//! `/api/v1/api-keys`: create (the secret is shown once), list, get, revoke.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pwnbook_commands::api_key::{ApiKey, ApiKeyCommand, NewApiKey};
use pwnbook_commands::{Execution, FieldError};
use pwnbook_events::{Id, IdKind, LogEvent};
use pwnbook_projections::api_keys::{self, ApiKeyFilter, ApiKeyRow, ApiKeySort};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{etag, reject_unknown, ApiJson, QueryParams};
use crate::pagination;
use crate::routes::history;
use crate::secrets::Secret;
use crate::state::AppState;
use crate::time::{format_millis, now_millis};

const SORTS: &[(&str, ApiKeySort)] = &[
    ("createdAt", ApiKeySort::CreatedAt),
    ("name", ApiKeySort::Name),
    ("lastUsedAt", ApiKeySort::LastUsedAt),
];
const FILTERS: &[&str] = &["environment", "revoked"];
const READ_ONLY: &[&str] = &["id", "key", "prefix", "lastFour", "createdAt", "lastUsedAt", "revokedAt"];

pub fn render(row: &ApiKeyRow) -> Value {
    json!({
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "lastFour": row.last_four,
        "permissions": row.permissions,
        "environment": row.environment,
        "createdAt": format_millis(row.created_at),
        "lastUsedAt": row.last_used_at.map(format_millis),
        "expiresAt": row.expires_at.map(format_millis),
        "revokedAt": row.revoked_at.map(format_millis),
    })
}

fn parse_id(id: &str) -> Result<Id, ApiError> {
    Id::parse(IdKind::ApiKey, id).ok_or(ApiError::NotFound)
}

async fn load(state: &AppState, caller: &Caller, id: &Id) -> Result<ApiKeyRow, ApiError> {
    api_keys::get(state.store.pool(), caller.organization_id(), id.as_str()).await?.ok_or(ApiError::NotFound)
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    mut params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let request = pagination::parse(&mut params, SORTS, FILTERS)?;
    params.finish()?;
    request.check_cursor(ApiKeySort::accepts)?;
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
    let pool = state.store.pool();
    let org = caller.organization_id();
    let rows = api_keys::list(pool, org, &filter, request.sort, request.order, &request.window).await?;
    let total = if request.needs_total() { Some(api_keys::count(pool, org, &filter).await?) } else { None };
    let sort = request.sort;
    Ok(Json(request.envelope(rows, total, |row| (sort.value_of(row), row.id.clone()), render)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBody {
    name: Option<String>,
    permissions: Option<Vec<String>>,
    environment: Option<String>,
    expires_at: Option<String>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    reject_unknown(&body.unknown, READ_ONLY)?;
    let mut missing = Vec::new();
    if body.name.is_none() {
        missing.push(FieldError::new("name", "is required"));
    }
    if body.permissions.is_none() {
        missing.push(FieldError::new("permissions", "is required"));
    }
    if !missing.is_empty() {
        return Err(ApiError::Validation(missing));
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
        .execute::<ApiKey>(id.as_str(), command, &caller.command_context(), Execution::default())
        .await?;
    state.visibility.wait(&committed).await?;
    let row = load(&state, &caller, &id).await?;
    let mut data = render(&row);
    data["key"] = json!(secret.expose());
    let mut response =
        (StatusCode::CREATED, [(header::ETAG, etag(row.version))], Json(json!({ "data": data })))
            .into_response();
    if let Ok(location) = format!("/api/v1/api-keys/{id}").parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
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
        Ok(api_keys::fold(events)?.map(|row| (render(&row), row.version)))
    }
}

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
    Ok(([(header::ETAG, etag(row.version))], Json(json!({ "data": render(&row) }))).into_response())
}

pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    load(&state, &caller, &id).await?;
    let command = ApiKeyCommand::Revoke { organization_id: caller.organization_id().to_owned() };
    let committed = state
        .commands
        .execute::<ApiKey>(id.as_str(), command, &caller.command_context(), Execution::default())
        .await?;
    state.visibility.wait(&committed).await?;
    Ok(StatusCode::NO_CONTENT)
}
