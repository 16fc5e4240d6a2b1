//! `/api/v1/webhooks`: create (the secret is shown once), list, get, update, delete, and the
//! deliveries log.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pwnbook_commands::webhook::{Webhook, WebhookCommand};
use pwnbook_commands::{Execution, FieldError};
use pwnbook_events::{Id, IdKind, LogEvent};
use pwnbook_projections::webhooks::{self, WebhookRow};
use rand::distributions::{Alphanumeric, DistString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{etag, if_match, if_none_match, not_null, ApiJson, QueryParams};
use crate::openapi::{data, to_json, Data, Page};
use crate::pagination;
use crate::routes::events::FeedPage;
use crate::routes::history;
use crate::state::AppState;
use crate::time::format_millis;
use crate::webhooks::guard;

pub(crate) const SORTS: &[(&str, ())] = &[("createdAt", ())];
const READ_ONLY: &[&str] = &["id", "createdAt", "updatedAt", "version"];
const DEFAULT_DELIVERIES: i64 = 100;
const MAX_DELIVERIES: i64 = 1_000;

/// A webhook: events matching `events` are POSTed to `url`, signed with its secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Webhook)]
pub struct WebhookView {
    #[schema(example = "whk_01j9k2m3n4p5q6r7s8t9")]
    id: String,
    url: String,
    /// Event types; `finding.*` matches a prefix.
    events: Vec<String>,
    created_at: String,
    updated_at: String,
    version: i64,
    /// The signing secret: only in the response to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

pub fn render(row: &WebhookRow) -> WebhookView {
    WebhookView {
        id: row.id.clone(),
        url: row.url.clone(),
        events: row.events.clone(),
        created_at: format_millis(row.created_at),
        updated_at: format_millis(row.updated_at),
        version: row.version,
        secret: None,
    }
}

fn respond(status: StatusCode, row: &WebhookRow) -> Response {
    (status, [(header::ETAG, etag(row.version))], data(render(row))).into_response()
}

/// One delivery attempt.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WebhookDelivery)]
pub struct DeliveryView {
    /// The same across the retries of one event (`X-Pwnbook-Delivery`).
    id: String,
    event_id: String,
    event_type: String,
    position: i64,
    attempt: i64,
    /// The receiver's HTTP status; null when it could not be reached.
    status_code: Option<i64>,
    success: bool,
    error: Option<String>,
    duration_ms: i64,
    attempted_at: String,
}

/// The newest delivery attempts, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveriesPage {
    data: Vec<DeliveryView>,
    meta: DeliveriesMeta,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveriesMeta {
    limit: i64,
}

fn parse_id(id: &str) -> Result<Id, ApiError> {
    Id::parse(IdKind::Webhook, id).ok_or(ApiError::NotFound)
}

async fn load(state: &AppState, caller: &Caller, id: &Id) -> Result<WebhookRow, ApiError> {
    webhooks::get(state.store.pool(), caller.organization_id(), id.as_str()).await?.ok_or(ApiError::NotFound)
}

/// The webhook `id` of the caller's organization (404 otherwise).
pub(crate) async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<WebhookRow, ApiError> {
    load(state, caller, &parse_id(id)?).await
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
        Ok(webhooks::fold(events)?.map(|row| (to_json(render(&row)), row.version)))
    }
}

/// List webhooks.
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", params(ListQuery),
    responses((status = 200, description = "A page of webhooks", body = Page<WebhookView>)))]
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

/// A new webhook.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = NewWebhook)]
pub struct CreateBody {
    /// http(s) URL; loopback, private and link-local addresses are refused.
    #[schema(required = true)]
    url: Option<String>,
    /// Event types (comma-free), `prefix.*` allowed.
    #[schema(required = true)]
    events: Option<Vec<String>>,
    /// The signing secret; generated (and returned once) when omitted.
    secret: Option<String>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

/// Query parameters of `GET /webhooks`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct ListQuery {
    page: Option<i64>,
    perPage: Option<i64>,
    cursor: Option<String>,
    /// `createdAt` only.
    sort: Option<String>,
    order: Option<String>,
}

/// Create a webhook; the response's `secret` is shown only here.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = CreateBody,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, description = "Created", body = Data<WebhookView>)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let (row, secret) = create_row(&state, &caller, body).await?;
    let view = render_created(&row, secret);
    let mut response = (StatusCode::CREATED, [(header::ETAG, etag(row.version))], data(view)).into_response();
    if let Ok(location) = format!("/api/v1/webhooks/{}", row.id).parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// The view of a webhook as created: with its signing secret.
pub(crate) fn render_created(row: &WebhookRow, secret: String) -> Value {
    to_json(WebhookView { secret: Some(secret), ..render(row) })
}

/// Creates a webhook (REST and GraphQL) and returns it with its secret.
pub(crate) async fn create_row(
    state: &AppState,
    caller: &Caller,
    body: CreateBody,
) -> Result<(WebhookRow, String), ApiError> {
    let caller = &caller.refusing(&body.unknown, READ_ONLY);
    let mut missing = Vec::new();
    if body.url.is_none() {
        missing.push(FieldError::new("url", "is required"));
    }
    if body.events.is_none() {
        missing.push(FieldError::new("events", "is required"));
    }
    if !missing.is_empty() {
        return Err(caller.invalid(missing));
    }
    let url = body.url.unwrap_or_default();
    guard(&url, state.webhook_allow_private).await.map_err(|e| caller.with_refused(e))?;
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
        .execute::<Webhook>(
            id.as_str(),
            command,
            &caller.command_context(),
            Execution { fresh: true, ..Execution::default() },
        )
        .await?;
    state.visibility.wait(&committed).await?;
    Ok((load(state, caller, &id).await?, secret))
}

/// A webhook's events.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/history", tag = "webhooks", params(("id" = String, Path), history::HistoryQuery),
    responses((status = 200, description = "Events in log order", body = FeedPage)))]
pub async fn history_page(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    params: QueryParams,
) -> Result<Json<FeedPage>, ApiError> {
    history::of::<Tracked>(state, caller, id, params).await
}

/// Get a webhook.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path), history::TimeTravelQuery, ("If-None-Match" = Option<String>, Header)),
    responses((status = 200, description = "The webhook", body = Data<WebhookView>),
        (status = 304, description = "Unchanged since the version named by If-None-Match")))]
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

/// Changed fields only.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = WebhookPatch)]
pub struct PatchBody {
    #[serde(default, with = "pwnbook_events::patch")]
    url: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    events: Option<Option<Vec<String>>>,
    #[serde(default, with = "pwnbook_events::patch")]
    secret: Option<Option<String>>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

/// Update a webhook.
#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", tag = "webhooks", request_body = PatchBody,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "The webhook", body = Data<WebhookView>)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Response, ApiError> {
    let row = update_row(&state, &caller, &id, body, if_match(&headers)).await?;
    Ok(respond(StatusCode::OK, &row))
}

/// Updates a webhook; `expected_version` (`If-Match`) is checked where REST checks it.
pub(crate) async fn update_row(
    state: &AppState,
    caller: &Caller,
    id: &str,
    body: PatchBody,
    expected_version: Result<Option<i64>, ApiError>,
) -> Result<WebhookRow, ApiError> {
    let id = parse_id(id)?;
    load(state, caller, &id).await?;
    let caller = &caller.refusing(&body.unknown, READ_ONLY);
    // None of them can be cleared: `null` is named, with the command's own invalid fields.
    let mut errors = Vec::new();
    let url = not_null("url", body.url, &mut errors);
    let events = not_null("events", body.events, &mut errors);
    let secret = not_null("secret", body.secret, &mut errors);
    if let Some(url) = &url {
        if let Err(error) = guard(url, state.webhook_allow_private).await {
            match error {
                ApiError::Validation(found) => errors.extend(found),
                other => return Err(other),
            }
        }
    }
    let caller = &caller.refusing_errors(errors);
    let command =
        WebhookCommand::Update { organization_id: caller.organization_id().to_owned(), url, events, secret };
    let execution = Execution { expected_version: expected_version?, ..Execution::default() };
    let committed =
        state.commands.execute::<Webhook>(id.as_str(), command, &caller.command_context(), execution).await?;
    state.visibility.wait(&committed).await?;
    load(state, caller, &id).await
}

/// Delete a webhook; deliveries stop.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<StatusCode, ApiError> {
    delete_row(&state, &caller, &id, if_match(&headers)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a webhook (REST and GraphQL); `expected_version` (`If-Match`) is checked with the
/// write.
pub(crate) async fn delete_row(
    state: &AppState,
    caller: &Caller,
    id: &str,
    expected_version: Result<Option<i64>, ApiError>,
) -> Result<(), ApiError> {
    let id = parse_id(id)?;
    load(state, caller, &id).await?;
    let command = WebhookCommand::Delete { organization_id: caller.organization_id().to_owned() };
    let execution = Execution { expected_version: expected_version?, ..Execution::default() };
    let committed =
        state.commands.execute::<Webhook>(id.as_str(), command, &caller.command_context(), execution).await?;
    state.visibility.wait(&committed).await
}

/// `GET /webhooks/{id}/deliveries`: the newest `limit` attempts, oldest first.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path), ("limit" = Option<i64>, Query, description = "1 to 1000 (default 100)")),
    responses((status = 200, description = "Delivery attempts", body = DeliveriesPage)))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    params: QueryParams,
) -> Result<Json<DeliveriesPage>, ApiError> {
    Ok(Json(deliveries_page(&state, &caller, &id, params).await?))
}

/// The newest `limit` delivery attempts of a webhook, oldest first (REST and GraphQL).
pub(crate) async fn deliveries_page(
    state: &AppState,
    caller: &Caller,
    id: &str,
    mut params: QueryParams,
) -> Result<DeliveriesPage, ApiError> {
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
    let id = parse_id(id)?;
    load(state, caller, &id).await?;
    let rows = sqlx::query(
        "SELECT delivery_id, event_id, event_type, position, attempt, status_code, error, duration_ms, attempted_at \
         FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY position DESC, attempt DESC LIMIT $2",
    )
    .bind(id.as_str())
    .bind(limit)
    .fetch_all(state.store.pool())
    .await?;
    let mut attempts = rows
        .iter()
        .map(|row| {
            let status: Option<i64> = row.try_get("status_code")?;
            Ok(DeliveryView {
                id: row.try_get("delivery_id")?,
                event_id: row.try_get("event_id")?,
                event_type: row.try_get("event_type")?,
                position: row.try_get("position")?,
                attempt: row.try_get("attempt")?,
                status_code: status,
                success: status.is_some_and(|s| (200..300).contains(&s)),
                error: row.try_get("error")?,
                duration_ms: row.try_get("duration_ms")?,
                attempted_at: format_millis(row.try_get("attempted_at")?),
            })
        })
        .collect::<Result<Vec<DeliveryView>, sqlx::Error>>()?;
    attempts.reverse();
    Ok(DeliveriesPage { data: attempts, meta: DeliveriesMeta { limit } })
}
