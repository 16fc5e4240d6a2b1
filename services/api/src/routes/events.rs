//! `/api/v1/events`: the organization's log as event objects (JSON pages or NDJSON), the SSE
//! stream that replays then follows it, and the hash-chain check.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{Stream, StreamExt};
use pwnbook_events::event_types::{type_selector, TypeSelector};
use pwnbook_events::{log, LogEvent, Store};
use pwnbook_projections::feed::{self, EventFilter};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::watch;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::openapi::{data, to_json, Data};
use crate::state::AppState;
use crate::time::{format_millis, now_millis};

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1_000;
/// Events per database read when streaming (NDJSON, SSE): memory stays bounded by one page.
const STREAM_PAGE: i64 = 1_000;
/// Events per database read of an NDJSON export: fewer round trips than a live stream's page.
const NDJSON_PAGE: i64 = 2_000;
/// NDJSON chunks rendered ahead of the client.
const PREFETCH: usize = 2;
/// How often a live stream looks at the log when no wake-up came (another process's writes).
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// The resource types of SPEC §4 (`resourceType` values).
const RESOURCE_TYPES: &[&str] =
    &["organization", "api_key", "engagement", "target", "finding", "task", "wiki_page", "report", "webhook"];
const NDJSON: &str = "application/x-ndjson";

/// Who caused an event.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActorView {
    /// `api_key` or `system`.
    #[serde(rename = "type")]
    kind: Value,
    id: Value,
    name: Value,
}

/// An event of the organization's log (SPEC §4).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Event)]
pub struct EventView {
    #[schema(example = "evt_01j9k2m3n4p5q6r7s8t9")]
    id: String,
    /// Place in the global log: dense, strictly increasing.
    position: i64,
    #[serde(rename = "type")]
    #[schema(example = "finding.status_changed")]
    kind: String,
    resource_type: String,
    resource_id: String,
    engagement_id: Option<String>,
    /// Place in the resource's own stream (its version after this event).
    sequence: i64,
    occurred_at: String,
    actor: ActorView,
    request_id: Value,
    /// What changed: the fields as created, the changed fields, or `{from, to}`.
    #[schema(value_type = Object)]
    data: Value,
}

/// The event object of SPEC §4 for one log row.
pub fn event_view(event: &LogEvent) -> EventView {
    let metadata: Map<String, Value> = serde_json::from_str(&event.metadata).unwrap_or_default();
    // Only the actor and request id are part of the event object; the rest of the metadata
    // (name claims, idempotency keys) is internal bookkeeping.
    let meta = |key: &str| metadata.get(key).cloned().unwrap_or(Value::Null);
    // Payloads are stored externally tagged (`{"engagement.created": {...}}`): the inner object
    // is what changed.
    let mut data = match serde_json::from_str::<Value>(&event.payload) {
        Ok(Value::Object(tagged)) if tagged.len() == 1 => {
            tagged.into_iter().next().map(|(_, inner)| inner).unwrap_or(Value::Null)
        }
        Ok(other) => other,
        Err(_) => Value::Null,
    };
    if let Some(fields) = data.as_object_mut() {
        // A key's secret hash authenticates requests and a webhook's secret signs deliveries:
        // neither leaves the server.
        fields.remove("secretHash");
        fields.remove("secret");
    }
    EventView {
        id: event.event_id.clone(),
        position: event.position,
        kind: event.event_type.clone(),
        resource_type: event.aggregate_type.clone(),
        resource_id: event.aggregate_id.clone(),
        engagement_id: event.engagement_id.clone(),
        sequence: event.sequence,
        occurred_at: format_millis(event.recorded_at),
        actor: ActorView { kind: meta("actorType"), id: meta("actorId"), name: meta("actorName") },
        request_id: meta("requestId"),
        data,
    }
}

/// The event object as JSON (deliveries, streams, history).
pub fn event_object(event: &LogEvent) -> Value {
    to_json(event_view(event))
}

/// The parts of an event's metadata that are part of the event object, as stored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredMeta<'a> {
    #[serde(borrow)]
    actor_type: Option<&'a RawValue>,
    #[serde(borrow)]
    actor_id: Option<&'a RawValue>,
    #[serde(borrow)]
    actor_name: Option<&'a RawValue>,
    #[serde(borrow)]
    request_id: Option<&'a RawValue>,
}

/// Appends `json` (one valid JSON value) to `out` as serde_json writes it after parsing it into a
/// `Value`, without building one: whitespace dropped, plain strings and integers copied, any other
/// string or number parsed and written back by serde_json. Stored payloads come back from
/// PostgreSQL with spaces (`{"a": 1}`), from SQLite compact.
fn write_compact(out: &mut Vec<u8>, json: &str) -> Result<(), serde_json::Error> {
    let bytes = json.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'"' => {
                let start = i;
                let mut escaped = false;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        escaped = true;
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                let token = json.get(start..i).unwrap_or_default();
                if escaped {
                    serde_json::to_writer(&mut *out, &serde_json::from_str::<Cow<'_, str>>(token)?)?;
                } else {
                    out.extend_from_slice(token.as_bytes());
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len() && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                let token = json.get(start..i).unwrap_or_default();
                if token.len() < 19 && token.bytes().all(|b| b.is_ascii_digit()) {
                    out.extend_from_slice(token.as_bytes());
                } else {
                    serde_json::to_writer(&mut *out, &serde_json::from_str::<serde_json::Number>(token)?)?;
                }
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    Ok(())
}

/// Appends the event object's JSON to `out`, byte for byte what serializing `event_object` gives,
/// without building it: the stored payload's and metadata's values are re-written compactly
/// (`write_compact`). Anything unusual (a payload that is not one tagged object, a field that may
/// hold a secret, metadata that does not parse) goes through `event_object`.
pub fn write_event_object(out: &mut Vec<u8>, event: &LogEvent) -> Result<(), serde_json::Error> {
    let parts = serde_json::from_str::<HashMap<Cow<'_, str>, &RawValue>>(&event.payload)
        .ok()
        .filter(|tagged| tagged.len() == 1)
        .and_then(|tagged| tagged.into_values().next())
        .filter(|data| data.get().starts_with('{') && !data.get().contains("\"secret"))
        .zip(serde_json::from_str::<StoredMeta<'_>>(&event.metadata).ok());
    let Some((data, meta)) = parts else {
        return serde_json::to_writer(&mut *out, &event_object(event));
    };
    let raw = |out: &mut Vec<u8>, value: Option<&RawValue>| match value {
        Some(value) => write_compact(out, value.get()),
        None => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    };
    out.extend_from_slice(b"{\"id\":");
    serde_json::to_writer(&mut *out, &event.event_id)?;
    out.extend_from_slice(format!(",\"position\":{},\"type\":", event.position).as_bytes());
    serde_json::to_writer(&mut *out, &event.event_type)?;
    out.extend_from_slice(b",\"resourceType\":");
    serde_json::to_writer(&mut *out, &event.aggregate_type)?;
    out.extend_from_slice(b",\"resourceId\":");
    serde_json::to_writer(&mut *out, &event.aggregate_id)?;
    out.extend_from_slice(b",\"engagementId\":");
    serde_json::to_writer(&mut *out, &event.engagement_id)?;
    out.extend_from_slice(format!(",\"sequence\":{},\"occurredAt\":", event.sequence).as_bytes());
    serde_json::to_writer(&mut *out, &format_millis(event.recorded_at))?;
    out.extend_from_slice(b",\"actor\":{\"type\":");
    raw(out, meta.actor_type)?;
    out.extend_from_slice(b",\"id\":");
    raw(out, meta.actor_id)?;
    out.extend_from_slice(b",\"name\":");
    raw(out, meta.actor_name)?;
    out.extend_from_slice(b"},\"requestId\":");
    raw(out, meta.request_id)?;
    out.extend_from_slice(b",\"data\":");
    write_compact(out, data.get())?;
    out.push(b'}');
    Ok(())
}

/// Where a feed page stopped.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedMeta {
    after: i64,
    limit: i64,
    /// The highest position this page examined: pass it as `after` to continue.
    next_after: i64,
    /// Whether the log goes further than `nextAfter`.
    has_more: bool,
}

/// A page of the event feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedPage {
    data: Vec<EventView>,
    meta: FeedMeta,
}

/// Paging of `GET /events`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct FeedQuery {
    /// Start after this position.
    after: Option<i64>,
    /// 1 to 1000 (default 100); with NDJSON, caps the whole selection.
    limit: Option<i64>,
}

/// Filters of `GET /events` and `GET /events/stream`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct FeedFilters {
    /// Event types, comma-separated; `finding.*` matches a prefix, `*` every type.
    r#type: Option<String>,
    resourceType: Option<String>,
    resourceId: Option<String>,
    engagementId: Option<String>,
    actorId: Option<String>,
    /// Occurred at or after (RFC 3339).
    since: Option<String>,
    /// Occurred before (RFC 3339): with `since`, a half-open window.
    until: Option<String>,
}

/// The result of recomputing the hash chain.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainReportView {
    valid: bool,
    checked: u64,
    first_broken_position: Option<i64>,
}

/// The feed filters of SPEC §4 from the query string.
pub fn take_filter(params: &mut QueryParams) -> Result<EventFilter, ApiError> {
    let mut filter = EventFilter::default();
    let mut every_type = false;
    for item in params.take_list("type") {
        // `*` selects every type, as in a webhook's `events`.
        if item == "*" {
            every_type = true;
            continue;
        }
        match type_selector(&item) {
            Some(TypeSelector::Type(name)) => filter.types.push(name.to_owned()),
            Some(TypeSelector::Prefix(prefix)) => filter.type_prefixes.push(prefix.to_owned()),
            None => {
                return Err(ApiError::BadRequest(format!(
                    "type must be event types such as engagement.created, a resource's prefix such as \
                     finding.*, or *; {item:?} is none of them"
                )))
            }
        }
    }
    if every_type {
        filter.types.clear();
        filter.type_prefixes.clear();
    }
    filter.resource_types = params.take_enum_list("resourceType", RESOURCE_TYPES)?;
    filter.resource_ids = params.take_list("resourceId");
    filter.engagement_ids = params.take_list("engagementId");
    filter.actor_ids = params.take_list("actorId");
    filter.since = params.take_timestamp("since")?;
    filter.until = params.take_timestamp("until")?;
    Ok(filter)
}

/// A position parameter (`after`): a non-negative integer.
pub fn take_position(params: &mut QueryParams, name: &str) -> Result<Option<i64>, ApiError> {
    params
        .take(name)
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::BadRequest(format!("{name} must be a non-negative integer")))
        })
        .transpose()
}

pub fn take_limit(params: &mut QueryParams) -> Result<Option<i64>, ApiError> {
    params
        .take("limit")
        .map(|v| {
            v.parse::<i64>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                ApiError::BadRequest(format!("limit must be an integer from 1 to {MAX_LIMIT}"))
            })
        })
        .transpose()
}

fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| {
        accept.split(',').any(|t| t.split(';').next().unwrap_or_default().trim() == NDJSON)
    })
}

/// A page of the feed as `{"data": [...], "meta": {...}}`. `nextAfter` is the highest position
/// examined (not just the last one returned), so a sparse filter never makes a client rescan.
pub async fn feed_page(
    store: &Store,
    organization_id: &str,
    filter: &EventFilter,
    after: i64,
    limit: i64,
) -> Result<FeedPage, ApiError> {
    let head = log::head(store).await?;
    let page = feed::page(store, organization_id, filter, after, limit, head).await?;
    Ok(FeedPage {
        data: page.events.iter().map(event_view).collect(),
        meta: FeedMeta { after, limit, next_after: page.scanned_to, has_more: page.scanned_to < head },
    })
}

/// `GET /events`: a page (`after`, `limit`), or with `Accept: application/x-ndjson` the whole
/// selection up to the current head, one event object per line, read a page at a time.
/// The organization's events in log order; `Accept: application/x-ndjson` streams the whole selection.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(FeedQuery, FeedFilters),
    responses((status = 200, description = "A page of events, or NDJSON event objects one per line",
        content((FeedPage = "application/json"), (String = "application/x-ndjson")))))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    mut params: QueryParams,
) -> Result<Response, ApiError> {
    let after = take_position(&mut params, "after")?.unwrap_or(0);
    let limit = take_limit(&mut params)?;
    let filter = take_filter(&mut params)?;
    params.finish()?;
    let organization_id = caller.organization_id().to_owned();
    if wants_ndjson(&headers) {
        let head = log::head(&state.store).await?;
        let lines = ndjson(state.store.clone(), organization_id, filter, after, head, limit);
        return Ok(([(header::CONTENT_TYPE, NDJSON)], Body::from_stream(lines)).into_response());
    }
    let page =
        feed_page(&state.store, &organization_id, &filter, after, limit.unwrap_or(DEFAULT_LIMIT)).await?;
    Ok(Json(page).into_response())
}

/// The selection after `after` up to `head` as NDJSON chunks, one database page per chunk;
/// `limit` caps the number of events. A task reads and renders the next page while the previous
/// one is being sent (at most `PREFETCH` chunks ahead, so memory stays bounded); it stops when
/// the response is dropped.
pub fn ndjson(
    store: Store,
    organization_id: String,
    filter: EventFilter,
    after: i64,
    head: i64,
    limit: Option<i64>,
) -> impl Stream<Item = Result<Bytes, ApiError>> + Send + 'static {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, ApiError>>(PREFETCH);
    tokio::spawn(async move {
        let mut after = after;
        let mut remaining = limit.unwrap_or(i64::MAX);
        while after < head && remaining > 0 {
            let page =
                match feed::page(&store, &organization_id, &filter, after, NDJSON_PAGE.min(remaining), head)
                    .await
                {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::error!(%error, "NDJSON stream aborted");
                        let _ = sender.send(Err(error.into())).await;
                        return;
                    }
                };
            after = page.scanned_to;
            if page.events.is_empty() {
                continue;
            }
            remaining -= page.events.len() as i64;
            let mut chunk = Vec::with_capacity(page.events.len() * 640);
            for event in &page.events {
                if let Err(error) = write_event_object(&mut chunk, event) {
                    let _ = sender.send(Err(ApiError::Internal(error.to_string()))).await;
                    return;
                }
                chunk.push(b'\n');
            }
            if sender.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
        }
    });
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    })
}

/// `GET /events/stream`: Server-Sent Events. Starts after `Last-Event-ID` (a reconnect), else
/// after `?after=`, else at the current head; replays from the log, then follows it. Both phases
/// read `event_log` by position, so the seam can neither drop nor repeat an event.
/// Server-Sent Events: replays after `Last-Event-ID` or `after`, then follows the log live.
#[utoipa::path(get, path = "/api/v1/events/stream", tag = "events",
    params(("after" = Option<i64>, Query, description = "Start after this position"), FeedFilters,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this position")),
    responses((status = 200, description = "An event stream; each `data:` is one event object, each `id:` its position. When the key is revoked or expires the stream ends with an `event: error` block whose `data:` is the error object (UNAUTHORIZED)",
        content_type = "text/event-stream", body = String)))]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    mut params: QueryParams,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = take_position(&mut params, "after")?;
    let filter = take_filter(&mut params)?;
    params.finish()?;
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str().ok().and_then(|t| t.trim().parse::<i64>().ok()).filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::BadRequest("Last-Event-ID must be the position of an event".to_owned())
            })
        })
        .transpose()?;
    let start = match last_event_id.or(after) {
        Some(position) => position,
        None => log::head(&state.store).await?,
    };
    // The stream ends as soon as a request with its key would be a 401: its revocation or expiry
    // is the last thing it sends, as an `error` event with the error object.
    let key_id = caller.principal.key_id.clone();
    let expires_at =
        pwnbook_projections::api_keys::get(state.store.pool(), caller.organization_id(), &key_id)
            .await?
            .and_then(|key| key.expires_at);
    let request_id = crate::request_id::current().unwrap_or_default();
    let follow = Follow::new(&state, caller.organization_id().to_owned(), filter, start)
        .until_key_ends(KeyGate { key_id, expires_at });
    let events = follow.into_followed().map(move |followed| {
        Ok(match followed {
            Followed::Event(event) => {
                Event::default().id(event.position.to_string()).data(event_object(&event).to_string())
            }
            Followed::KeyEnded(reason) => {
                let mut error = ApiError::Unauthorized(reason.to_owned()).detail();
                error.request_id = request_id.clone();
                Event::default().event("error").data(to_json(crate::openapi::ErrorBody { error }).to_string())
            }
        })
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(state.sse_heartbeat).text("heartbeat")))
}

/// The key a stream was opened with (`Follow::until_key_ends`).
pub(crate) struct KeyGate {
    key_id: String,
    expires_at: Option<i64>,
}

/// What a gated `Follow` yields: events, then perhaps the end of its key, after which nothing.
pub(crate) enum Followed {
    Event(Box<LogEvent>),
    KeyEnded(&'static str),
}

/// A reader that follows one organization's log from a position, forever (until shutdown): the
/// SSE stream and GraphQL's `events` subscription.
pub(crate) struct Follow {
    store: Store,
    organization_id: String,
    filter: EventFilter,
    after: i64,
    buffer: VecDeque<LogEvent>,
    /// The local sequencer's head: wakes the reader as soon as new positions exist.
    head: Option<watch::Receiver<i64>>,
    shutdown: watch::Receiver<bool>,
    gate: Option<KeyGate>,
}

impl Follow {
    /// Follows the events of `organization_id` that pass `filter`, after the position `after`.
    pub(crate) fn new(state: &AppState, organization_id: String, filter: EventFilter, after: i64) -> Self {
        Self {
            store: state.store.clone(),
            organization_id,
            filter,
            after,
            buffer: VecDeque::new(),
            head: Some(state.visibility.head()),
            shutdown: state.shutdown.clone(),
            gate: None,
        }
    }

    /// Ends the stream when `gate`'s key is revoked or expires. The revocation is looked up
    /// before each read of new positions: an event after it in the log is read after it
    /// committed, so none is sent. Expiry is checked at least every `FOLLOW_POLL`.
    pub(crate) fn until_key_ends(mut self, gate: KeyGate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The events, then `Followed::KeyEnded` if the key ends (see `until_key_ends`).
    pub(crate) fn into_followed(self) -> impl Stream<Item = Followed> + Send + 'static {
        futures::stream::unfold(Some(self), |follow| async move {
            let mut follow = follow?;
            match follow.next().await? {
                ended @ Followed::KeyEnded(_) => Some((ended, None)),
                event => Some((event, Some(follow))),
            }
        })
    }

    /// The matching events in log order; the stream ends on server shutdown (or a database
    /// failure, logged).
    pub(crate) fn into_stream(self) -> impl Stream<Item = LogEvent> + Send + 'static {
        futures::stream::unfold(self, |mut follow| async move {
            match follow.next().await? {
                Followed::Event(event) => Some((*event, follow)),
                Followed::KeyEnded(_) => None,
            }
        })
    }

    /// The next matching event, or the end of the gate's key; `None` ends the stream (server
    /// shutdown or a database failure).
    async fn next(&mut self) -> Option<Followed> {
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            if self.gate.as_ref().and_then(|gate| gate.expires_at).is_some_and(|at| at <= now_millis()) {
                return Some(Followed::KeyEnded("the API key has expired"));
            }
            if let Some(event) = self.buffer.pop_front() {
                return Some(Followed::Event(Box::new(event)));
            }
            let head = match log::head(&self.store).await {
                Ok(head) => head,
                Err(error) => {
                    tracing::error!(%error, "event stream ended");
                    return None;
                }
            };
            if head > self.after {
                if let Some(gate) = &self.gate {
                    match pwnbook_events::api_key::revoked(self.store.pool(), &gate.key_id).await {
                        Ok(false) => {}
                        Ok(true) => return Some(Followed::KeyEnded("the API key has been revoked")),
                        Err(error) => {
                            tracing::error!(%error, "event stream ended");
                            return None;
                        }
                    }
                }
                match feed::page(
                    &self.store,
                    &self.organization_id,
                    &self.filter,
                    self.after,
                    STREAM_PAGE,
                    head,
                )
                .await
                {
                    Ok(page) => {
                        self.after = page.scanned_to;
                        self.buffer = page.events.into();
                    }
                    Err(error) => {
                        tracing::error!(%error, "event stream ended");
                        return None;
                    }
                }
                continue;
            }
            let head = &mut self.head;
            let woken = async {
                match head.as_mut() {
                    Some(receiver) => {
                        if receiver.changed().await.is_err() {
                            // The local sequencer is gone; the poll still finds new events.
                            *head = None;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(FOLLOW_POLL) => {}
                changed = self.shutdown.changed() => if changed.is_err() { return None },
            }
        }
    }
}

/// `GET /events/verify`: recomputes the organization's hash chain.
#[utoipa::path(get, path = "/api/v1/events/verify", tag = "events",
    responses((status = 200, description = "Whether the chain is intact", body = Data<ChainReportView>)))]
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    params: QueryParams,
) -> Result<Json<Data<ChainReportView>>, ApiError> {
    params.finish()?;
    let report = log::verify_chain(&state.store, Some(caller.organization_id())).await?;
    Ok(data(ChainReportView {
        valid: report.valid,
        checked: report.checked,
        first_broken_position: report.first_broken_position,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn event(aggregate_type: &str, payload: &str, metadata: &str) -> LogEvent {
        LogEvent {
            position: 42,
            event_id: "evt_01j9k2m3n4p5q6r7s8t9".to_owned(),
            organization_id: "org_01j9k2m3n4p5q6r7s8t9".to_owned(),
            engagement_id: Some("eng_01j9k2m3n4p5q6r7s8t9".to_owned()),
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: "fnd_01j9k2m3n4p5q6r7s8t9".to_owned(),
            sequence: 3,
            event_type: "finding.updated".to_owned(),
            event_version: "1".to_owned(),
            payload: payload.to_owned(),
            metadata: metadata.to_owned(),
            recorded_at: 1_700_000_000_123,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn the_written_event_object_is_the_serialized_one() {
        let meta = r#"{"actorType":"api_key","actorId":"key_1","actorName":"Ci \"bot\" é","requestId":"req_1","claims":[1]}"#;
        let cases = [
            event(
                "finding",
                r#"{"finding.updated":{"title":"XSS \u0001 é","cvss":{"score":7.5},"tags":[]}}"#,
                meta,
            ),
            event("finding", r#"{"finding.deleted":{}}"#, r#"{"actorType":"system","actorId":null}"#),
            event("api_key", r#"{"api_key.created":{"name":"k","secretHash":"abc"}}"#, meta),
            event("webhook", r#"{"webhook.created":{"url":"https://x.test","secret":"s"}}"#, meta),
            event("finding", r#"{"a":{},"b":{}}"#, meta),
            event("finding", r#""finding.touched""#, "not json"),
            event("finding", r#"{"finding.updated":[1,2]}"#, "{}"),
            // As PostgreSQL returns them: spaces, escapes, numbers in other spellings.
            event(
                "finding",
                r#"{"finding.updated": {"title": "a \"b\" \\ \n \u00e9 \/", "n": [1e20, -0, 1.0, 7.50, 12345678901234567890, -3], "x": {"y": [true, false, null]}}}"#,
                r#"{"actorId": "key_1", "actorName": "\u00e9\t", "actorType": "api_key", "requestId": null}"#,
            ),
        ];
        for case in &cases {
            let mut written = Vec::new();
            write_event_object(&mut written, case).unwrap();
            let serialized = serde_json::to_vec(&event_object(case)).unwrap();
            assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(serialized).unwrap());
        }
    }
}
