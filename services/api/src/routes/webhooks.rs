//! `/api/v1/webhooks`: create (the secret is shown once), list, get, update, delete, and the
//! deliveries log.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pwnbook_commands::webhook::{Webhook, WebhookCommand};
use pwnbook_commands::{Execution, FieldError};
use pwnbook_events::{Id, IdKind, LogEvent};
use pwnbook_projections::webhooks::{self, WebhookRow};
use rand::distributions::{Alphanumeric, DistString};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{etag, if_match, reject_unknown, ApiJson, QueryParams};
use crate::pagination;
use crate::routes::history;
use crate::state::AppState;
use crate::time::format_millis;
use crate::webhooks::guard;

const SORTS: &[(&str, ())] = &[("createdAt", ())];
const READ_ONLY: &[&str] = &["id", "createdAt", "updatedAt", "version"];
const DEFAULT_DELIVERIES: i64 = 100;
const MAX_DELIVERIES: i64 = 1_000;

pub fn render(row: &WebhookRow) -> Value {
    json!({
        "id": row.id,
        "url": row.url,
        "events": row.events,
        "createdAt": format_millis(row.created_at),
        "updatedAt": format_millis(row.updated_at),
        "version": row.version,
    })
}

fn respond(status: StatusCode, row: &WebhookRow) -> Response {
    (status, [(header::ETAG, etag(row.version))], Json(json!({ "data": render(row) }))).into_response()
}

fn parse_id(id: &str) -> Result<Id, ApiError> {
    Id::parse(IdKind::Webhook, id).ok_or(ApiError::NotFound)
}

async fn load(state: &AppState, caller: &Caller, id: &Id) -> Result<WebhookRow, ApiError> {
    webhooks::get(state.store.pool(), caller.organization_id(), id.as_str()).await?.ok_or(ApiError::NotFound)
}

/// Webhooks in history and time travel.
pub struct Tracked;

impl history::Tracked for Tracked {
    const KIND: IdKind = IdKind::Webhook;
    const AGGREGATE: &'static str = "webhook";

    async fn fold(
        _: &AppState,
        events: &[LogEvent],
        _: Option<i64>,
    ) -> Result<Option<(Value, i64)>, ApiError> {
        Ok(webhooks::fold(events)?.map(|row| (render(&row), row.version)))
    }
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    mut params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let request = pagination::parse(&mut params, SORTS, &[])?;
    params.finish()?;
    request.check_cursor(|_, value| matches!(value, pwnbook_projections::list::SortValue::Int(_)))?;
    request.filters().finish()?;
    let pool = state.store.pool();
    let org = caller.organization_id();
    let rows = webhooks::list(pool, org, request.order, &request.window).await?;
    let total = if request.needs_total() { Some(webhooks::count(pool, org).await?) } else { None };
    Ok(Json(request.envelope(rows, total, |row| (row.sort_value(), row.id.clone()), render)))
}

#[derive(Debug, Deserialize)]
pub struct CreateBody {
    url: Option<String>,
    events: Option<Vec<String>>,
    secret: Option<String>,
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
    if body.url.is_none() {
        missing.push(FieldError::new("url", "is required"));
    }
    if body.events.is_none() {
        missing.push(FieldError::new("events", "is required"));
    }
    if !missing.is_empty() {
        return Err(ApiError::Validation(missing));
    }
    let url = body.url.unwrap_or_default();
    guard(&url, state.webhook_allow_private).await?;
    let secret = body
        .secret
        .unwrap_or_else(|| format!("whsec_{}", Alphanumeric.sample_string(&mut rand::thread_rng(), 32)));
    let id = Id::generate(IdKind::Webhook);
    let command = WebhookCommand::Create {
        organization_id: caller.organization_id().to_owned(),
        url,
        events: body.events.unwrap_or_default(),
        secret: secret.clone(),
    };
    let committed = state
        .commands
        .execute::<Webhook>(id.as_str(), command, &caller.command_context(), Execution::default())
        .await?;
    state.visibility.wait(&committed).await?;
    let row = load(&state, &caller, &id).await?;
    let mut data = render(&row);
    data["secret"] = json!(secret);
    let mut response =
        (StatusCode::CREATED, [(header::ETAG, etag(row.version))], Json(json!({ "data": data })))
            .into_response();
    if let Ok(location) = format!("/api/v1/webhooks/{id}").parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
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
    Ok(respond(StatusCode::OK, &load(&state, &caller, &id).await?))
}

#[derive(Debug, Deserialize)]
pub struct PatchBody {
    url: Option<String>,
    events: Option<Vec<String>>,
    secret: Option<String>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    load(&state, &caller, &id).await?;
    reject_unknown(&body.unknown, READ_ONLY)?;
    if let Some(url) = &body.url {
        guard(url, state.webhook_allow_private).await?;
    }
    let command = WebhookCommand::Update {
        organization_id: caller.organization_id().to_owned(),
        url: body.url,
        events: body.events,
        secret: body.secret,
    };
    let execution = Execution { expected_version: if_match(&headers)?, ..Execution::default() };
    let committed =
        state.commands.execute::<Webhook>(id.as_str(), command, &caller.command_context(), execution).await?;
    state.visibility.wait(&committed).await?;
    Ok(respond(StatusCode::OK, &load(&state, &caller, &id).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    load(&state, &caller, &id).await?;
    let command = WebhookCommand::Delete { organization_id: caller.organization_id().to_owned() };
    let committed = state
        .commands
        .execute::<Webhook>(id.as_str(), command, &caller.command_context(), Execution::default())
        .await?;
    state.visibility.wait(&committed).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /webhooks/{id}/deliveries`: the newest `limit` attempts, oldest first.
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    mut params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let limit = params
        .take("limit")
        .map(|v| {
            v.parse::<i64>().ok().filter(|n| (1..=MAX_DELIVERIES).contains(n)).ok_or_else(|| {
                ApiError::BadRequest(format!("limit must be an integer from 1 to {MAX_DELIVERIES}"))
            })
        })
        .transpose()?
        .unwrap_or(DEFAULT_DELIVERIES);
    params.finish()?;
    let id = parse_id(&id)?;
    load(&state, &caller, &id).await?;
    let rows = sqlx::query(
        "SELECT delivery_id, event_id, event_type, position, attempt, status_code, error, duration_ms, attempted_at \
         FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY position DESC, attempt DESC LIMIT $2",
    )
    .bind(id.as_str())
    .bind(limit)
    .fetch_all(state.store.pool())
    .await?;
    let mut data = rows
        .iter()
        .map(|row| {
            let status: Option<i64> = row.try_get("status_code")?;
            Ok(json!({
                "id": row.try_get::<String, _>("delivery_id")?,
                "eventId": row.try_get::<String, _>("event_id")?,
                "eventType": row.try_get::<String, _>("event_type")?,
                "position": row.try_get::<i64, _>("position")?,
                "attempt": row.try_get::<i64, _>("attempt")?,
                "statusCode": status,
                "success": status.is_some_and(|s| (200..300).contains(&s)),
                "error": row.try_get::<Option<String>, _>("error")?,
                "durationMs": row.try_get::<i64, _>("duration_ms")?,
                "attemptedAt": format_millis(row.try_get("attempted_at")?),
            }))
        })
        .collect::<Result<Vec<Value>, sqlx::Error>>()?;
    data.reverse();
    Ok(Json(json!({ "data": data, "meta": { "limit": limit } })))
}
