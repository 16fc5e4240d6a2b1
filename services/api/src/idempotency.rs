//! `Idempotency-Key` on POST: the first response for a (key, Idempotency-Key) pair is stored and
//! replayed for 24 hours, so a retried request performs nothing twice.
//!
//! A record is claimed (inserted without a response) before the request runs, so concurrent
//! repeats get 409 instead of running twice. A claim whose request never finished (the process
//! died) is taken over after five minutes.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::auth::principal_of;
use crate::error::{ApiError, NothingSaved, OutcomeUnknown};
use crate::state::AppState;
use crate::time::now_millis;

const HEADER: &str = "idempotency-key";
const RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
const ABANDONED_MS: i64 = 5 * 60 * 1000;

/// The secrets a response shows once, wherever they sit (a GraphQL answer's, under any field
/// name or alias): the stored body has null in their place. A response without it is REST's,
/// whose `data.key` or `data.secret` is left out instead.
#[derive(Clone)]
pub struct Revealed(pub Vec<String>);

impl Revealed {
    fn scrub(&self, body: &[u8]) -> String {
        fn scrub(value: &mut serde_json::Value, secrets: &[String]) {
            match value {
                serde_json::Value::String(text) if secrets.contains(text) => *value = serde_json::Value::Null,
                serde_json::Value::Array(items) => items.iter_mut().for_each(|item| scrub(item, secrets)),
                serde_json::Value::Object(fields) => {
                    fields.values_mut().for_each(|field| scrub(field, secrets))
                }
                _ => {}
            }
        }
        if self.0.is_empty() {
            return String::from_utf8_lossy(body).into_owned();
        }
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(mut json) => {
                scrub(&mut json, &self.0);
                json.to_string()
            }
            // Every answer that shows a secret is JSON; were one not, nothing is stored of it.
            Err(_) => String::new(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    etag: Option<String>,
    location: Option<String>,
    /// GraphQL answers `application/graphql-response+json` when asked; records without it
    /// (older ones) are JSON.
    #[serde(default)]
    content_type: Option<String>,
    body: String,
}

/// The request's `Idempotency-Key`, as the commands record it in their events' metadata.
pub fn key_of(headers: &HeaderMap) -> Option<String> {
    headers.get(HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match run(&state, request, next).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn run(state: &AppState, request: Request, next: Next) -> Result<Response, ApiError> {
    if request.method() != Method::POST {
        return Ok(next.run(request).await);
    }
    let Some(key) = request.headers().get(HEADER) else { return Ok(next.run(request).await) };
    let key = key
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".to_owned())
        })?
        .to_owned();
    let Some(key_id) = principal_of(&request).map(|p| p.key_id.clone()) else {
        return Ok(next.run(request).await);
    };
    let (parts, body) = request.into_parts();
    let bytes =
        to_bytes(body, state.body_limit).await.map_err(|_| ApiError::PayloadTooLarge(state.body_limit))?;
    let fingerprints = Fingerprints::of(parts.method.as_str(), parts.uri.path(), &bytes);
    let claimed_at = match claim(state, &key_id, &key, &fingerprints).await? {
        Claim::Ours(claimed_at) => claimed_at,
        Claim::Answered(response) => return Ok(response),
    };
    // The request runs to completion, and its response is recorded, even if the client goes away
    // mid-way: otherwise a command could commit with nothing recorded, and a retry after the
    // claim lapses would run it a second time.
    let request = Request::from_parts(parts, Body::from(bytes));
    let (state, request_id) = (state.clone(), crate::request_id::current());
    let finished = tokio::spawn(crate::request_id::within(request_id, async move {
        let response = next.run(request).await;
        record(&state, &key_id, &key, claimed_at, response).await
    }));
    finished.await.map_err(|e| ApiError::Internal(e.to_string()))?
}

/// Stores `response` for replay (without any secret it carries) and returns it. Only the claim
/// made at `claimed_at` is this request's: one taken over since (this request outlived
/// `ABANDONED_MS`) belongs to the request that took it.
async fn record(
    state: &AppState,
    key_id: &str,
    key: &str,
    claimed_at: i64,
    response: Response,
) -> Result<Response, ApiError> {
    if response.status() == StatusCode::INTERNAL_SERVER_ERROR
        || response.extensions().get::<NothingSaved>().is_some()
        || response.extensions().get::<OutcomeUnknown>().is_some()
    {
        // A store that could not take the write saved nothing, and a failure before any command
        // committed left nothing behind (one after a commit is a 503 "saved" by now, see
        // `after_commit`): let a retry run again.
        sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE key_id = $1 AND idempotency_key = $2 AND status IS NULL AND created_at = $3",
        )
        .bind(key_id)
        .bind(key)
        .bind(claimed_at)
        .execute(state.store.pool())
        .await?;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    let header_text =
        |name| parts.headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_owned);
    let stored = Stored {
        etag: header_text(header::ETAG),
        location: header_text(header::LOCATION),
        content_type: header_text(header::CONTENT_TYPE),
        body: match parts.extensions.get::<Revealed>() {
            Some(revealed) => revealed.scrub(&bytes),
            None => without_secrets(&bytes),
        },
    };
    sqlx::query(
        "UPDATE idempotency_keys SET status = $1, body = $2 \
         WHERE key_id = $3 AND idempotency_key = $4 AND status IS NULL AND created_at = $5",
    )
    .bind(i64::from(parts.status.as_u16()))
    .bind(serde_json::to_string(&stored).map_err(|e| ApiError::Internal(e.to_string()))?)
    .bind(key_id)
    .bind(key)
    .bind(claimed_at)
    .execute(state.store.pool())
    .await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// The body to store: an API key's or a webhook's secret is shown once, in the first response,
/// and never stored; a replay carries the object without it.
fn without_secrets(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut json) => {
            if let Some(data) = json.get_mut("data").and_then(serde_json::Value::as_object_mut) {
                data.remove("key");
                data.remove("secret");
            }
            json.to_string()
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

/// What `claim` found.
enum Claim {
    /// The key is this request's, claimed at this time.
    Ours(i64),
    /// The stored response, or a refusal.
    Answered(Response),
}

/// What tells one request from another under the same key.
struct Fingerprints {
    /// Method, path and body, a JSON body in canonical form (keys sorted, no whitespace): a retry
    /// that serializes the same JSON differently is the same request.
    canonical: String,
    /// The same over the body's bytes as sent, as records made before the canonical form hold.
    as_sent: String,
}

impl Fingerprints {
    fn of(method: &str, path: &str, body: &[u8]) -> Self {
        let hash = |body: &[u8]| {
            let mut hasher = Sha256::new();
            hasher.update(method);
            hasher.update(b" ");
            hasher.update(path);
            hasher.update(b"\n");
            hasher.update(body);
            hex::encode(hasher.finalize())
        };
        let as_sent = hash(body);
        let canonical = match serde_json::from_slice::<Value>(body) {
            Ok(value) => {
                let mut text = String::with_capacity(body.len());
                canonical_json(&value, &mut text);
                hash(text.as_bytes())
            }
            Err(_) => as_sent.clone(),
        };
        Self { canonical, as_sent }
    }

    fn matches(&self, stored: &str) -> bool {
        stored == self.canonical || stored == self.as_sent
    }
}

/// `value` as compact JSON with every object's keys in sorted order.
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(fields) => {
            let mut fields: Vec<(&String, &Value)> = fields.iter().collect();
            fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (name, field)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(name.clone()).to_string());
                out.push(':');
                canonical_json(field, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Claims the key for this request, or answers with the stored response (or a refusal).
async fn claim(
    state: &AppState,
    key_id: &str,
    key: &str,
    fingerprints: &Fingerprints,
) -> Result<Claim, ApiError> {
    let pool = state.store.pool();
    let now = now_millis();
    // Records live 24 hours; expired ones (of any key) go here, through the created_at index.
    sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
        .bind(now - RETENTION_MS)
        .execute(pool)
        .await?;
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (key_id, idempotency_key, fingerprint, status, body, created_at) \
         VALUES ($1, $2, $3, NULL, NULL, $4) ON CONFLICT (key_id, idempotency_key) DO NOTHING",
    )
    .bind(key_id)
    .bind(key)
    .bind(fingerprints.canonical.as_str())
    .bind(now)
    .execute(pool)
    .await?;
    if claimed.rows_affected() == 1 {
        return Ok(Claim::Ours(now));
    }
    let row = sqlx::query(
        "SELECT fingerprint, status, body, created_at FROM idempotency_keys WHERE key_id = $1 AND idempotency_key = $2",
    )
    .bind(key_id)
    .bind(key)
    .fetch_one(pool)
    .await?;
    let stored_fingerprint: String = row.try_get("fingerprint")?;
    if !fingerprints.matches(&stored_fingerprint) {
        return Err(ApiError::Conflict(
            "this Idempotency-Key was already used for a different request".to_owned(),
        ));
    }
    let status: Option<i64> = row.try_get("status")?;
    let created_at: i64 = row.try_get("created_at")?;
    let Some(status) = status else {
        let taken_over = sqlx::query(
            "UPDATE idempotency_keys SET created_at = $1 \
             WHERE key_id = $2 AND idempotency_key = $3 AND status IS NULL AND created_at = $4 AND created_at < $5",
        )
        .bind(now)
        .bind(key_id)
        .bind(key)
        .bind(created_at)
        .bind(now - ABANDONED_MS)
        .execute(pool)
        .await?;
        if taken_over.rows_affected() == 1 {
            return Ok(Claim::Ours(now));
        }
        return Err(ApiError::Conflict(
            "a request with this Idempotency-Key is still in progress".to_owned(),
        ));
    };
    let body: Option<String> = row.try_get("body")?;
    let stored: Stored =
        serde_json::from_str(&body.unwrap_or_default()).map_err(|e| ApiError::Internal(e.to_string()))?;
    let status = StatusCode::from_u16(u16::try_from(status).unwrap_or(500))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    let content_type = stored.content_type.and_then(|v| HeaderValue::from_str(&v).ok());
    headers
        .insert(header::CONTENT_TYPE, content_type.unwrap_or(HeaderValue::from_static("application/json")));
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    for (name, value) in [(header::ETAG, stored.etag), (header::LOCATION, stored.location)] {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(name, value);
        }
    }
    Ok(Claim::Answered(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_json_serialized_differently_is_the_same_request() {
        let fingerprint = |body: &str| Fingerprints::of("POST", "/api/v1/engagements", body.as_bytes());
        let first = fingerprint(r#"{"name": "x", "tags": ["b", "a"], "nested": {"z": 1, "y": null}}"#);
        let again = fingerprint(r#"{"nested":{"y":null,"z":1},"tags":["b","a"],"name":"x"}"#);
        assert_eq!(first.canonical, again.canonical);
        assert_ne!(first.as_sent, again.as_sent);
        assert!(first.matches(&again.canonical));
        assert_ne!(
            first.canonical,
            fingerprint(r#"{"name": "x", "tags": ["a", "b"]}"#).canonical,
            "order in a list counts"
        );
        assert_ne!(first.canonical, Fingerprints::of("POST", "/api/v1/webhooks", b"{}").canonical);
        let not_json = fingerprint("name=x");
        assert_eq!(not_json.canonical, not_json.as_sent);
        assert!(first.matches(&first.as_sent), "a record made before the canonical form still matches");
    }
}
