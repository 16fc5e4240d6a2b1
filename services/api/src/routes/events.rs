//! `/api/v1/events`: the organization's log as event objects (JSON pages or NDJSON), the SSE
//! stream that replays then follows it, and the hash-chain check.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use pwnbook_events::{log, LogEvent, Store};
use pwnbook_projections::feed::{self, EventFilter};
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::state::AppState;
use crate::time::format_millis;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1_000;
/// Events per database read when streaming (NDJSON, SSE): memory stays bounded by one page.
const STREAM_PAGE: i64 = 1_000;
/// How often a live stream looks at the log when no wake-up came (another process's writes).
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// The resource types of SPEC §4 (`resourceType` values).
const RESOURCE_TYPES: &[&str] =
    &["organization", "api_key", "engagement", "target", "finding", "task", "wiki_page", "report", "webhook"];
const NDJSON: &str = "application/x-ndjson";

/// The event object of SPEC §4 for one log row.
pub fn event_object(event: &LogEvent) -> Value {
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
    json!({
        "id": event.event_id,
        "position": event.position,
        "type": event.event_type,
        "resourceType": event.aggregate_type,
        "resourceId": event.aggregate_id,
        "engagementId": event.engagement_id,
        "sequence": event.sequence,
        "occurredAt": format_millis(event.recorded_at),
        "actor": { "type": meta("actorType"), "id": meta("actorId"), "name": meta("actorName") },
        "requestId": meta("requestId"),
        "data": data,
    })
}

/// The feed filters of SPEC §4 from the query string.
pub fn take_filter(params: &mut QueryParams) -> Result<EventFilter, ApiError> {
    let mut filter = EventFilter::default();
    for item in params.take_list("type") {
        let (name, wildcard) = match item.strip_suffix(".*") {
            Some(prefix) => (prefix, true),
            None => (item.as_str(), false),
        };
        let valid = !name.is_empty()
            && name
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        if !valid {
            return Err(ApiError::BadRequest(format!(
                "type must be event types such as engagement.created or a prefix such as finding.*; got {item:?}"
            )));
        }
        if wildcard {
            filter.type_prefixes.push(format!("{name}."));
        } else {
            filter.types.push(name.to_owned());
        }
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
) -> Result<Value, ApiError> {
    let head = log::head(store).await?;
    let page = feed::page(store, organization_id, filter, after, limit, head).await?;
    let data: Vec<Value> = page.events.iter().map(event_object).collect();
    Ok(json!({
        "data": data,
        "meta": {
            "after": after,
            "limit": limit,
            "nextAfter": page.scanned_to,
            "hasMore": page.scanned_to < head,
        }
    }))
}

/// `GET /events`: a page (`after`, `limit`), or with `Accept: application/x-ndjson` the whole
/// selection up to the current head, one event object per line, read a page at a time.
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
/// `limit` caps the number of events.
pub fn ndjson(
    store: Store,
    organization_id: String,
    filter: EventFilter,
    after: i64,
    head: i64,
    limit: Option<i64>,
) -> impl Stream<Item = Result<Bytes, ApiError>> + Send + 'static {
    struct Cursor {
        store: Store,
        organization_id: String,
        filter: EventFilter,
        after: i64,
        head: i64,
        remaining: i64,
    }
    let cursor = Cursor { store, organization_id, filter, after, head, remaining: limit.unwrap_or(i64::MAX) };
    futures::stream::try_unfold(cursor, |mut cursor| async move {
        loop {
            if cursor.after >= cursor.head || cursor.remaining == 0 {
                return Ok(None);
            }
            let page = feed::page(
                &cursor.store,
                &cursor.organization_id,
                &cursor.filter,
                cursor.after,
                STREAM_PAGE.min(cursor.remaining),
                cursor.head,
            )
            .await
            .inspect_err(|error| tracing::error!(%error, "NDJSON stream aborted"))?;
            cursor.after = page.scanned_to;
            if page.events.is_empty() {
                continue;
            }
            cursor.remaining -= page.events.len() as i64;
            let mut chunk = Vec::with_capacity(page.events.len() * 512);
            for event in &page.events {
                serde_json::to_writer(&mut chunk, &event_object(event))
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                chunk.push(b'\n');
            }
            return Ok(Some((Bytes::from(chunk), cursor)));
        }
    })
}

/// `GET /events/stream`: Server-Sent Events. Starts after `Last-Event-ID` (a reconnect), else
/// after `?after=`, else at the current head; replays from the log, then follows it. Both phases
/// read `event_log` by position, so the seam can neither drop nor repeat an event.
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
    let follow = Follow {
        store: state.store.clone(),
        organization_id: caller.organization_id().to_owned(),
        filter,
        after: start,
        buffer: VecDeque::new(),
        head: Some(state.visibility.head()),
        shutdown: state.shutdown.clone(),
    };
    let events = futures::stream::unfold(follow, |mut follow| async move {
        let event = follow.next().await?;
        let message = Event::default().id(event.position.to_string()).data(event_object(&event).to_string());
        Some((Ok(message), follow))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(state.sse_heartbeat).text("heartbeat")))
}

/// A reader that follows one organization's log from a position, forever (until shutdown).
struct Follow {
    store: Store,
    organization_id: String,
    filter: EventFilter,
    after: i64,
    buffer: VecDeque<LogEvent>,
    /// The local sequencer's head: wakes the reader as soon as new positions exist.
    head: Option<watch::Receiver<i64>>,
    shutdown: watch::Receiver<bool>,
}

impl Follow {
    /// The next matching event; `None` ends the stream (server shutdown or a database failure).
    async fn next(&mut self) -> Option<LogEvent> {
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            if let Some(event) = self.buffer.pop_front() {
                return Some(event);
            }
            let head = match log::head(&self.store).await {
                Ok(head) => head,
                Err(error) => {
                    tracing::error!(%error, "event stream ended");
                    return None;
                }
            };
            if head > self.after {
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
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    params.finish()?;
    let report = log::verify_chain(&state.store, Some(caller.organization_id())).await?;
    Ok(Json(json!({
        "data": {
            "valid": report.valid,
            "checked": report.checked,
            "firstBrokenPosition": report.first_broken_position,
        }
    })))
}
