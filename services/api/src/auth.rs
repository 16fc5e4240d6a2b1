//! Authentication (bearer key → principal), rate limiting, and the per-route permission check.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Extensions};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pwnbook_commands::permissions::grants;
use pwnbook_commands::{CommandContext, CommitProof, FieldError, Permission};
use pwnbook_events::{Actor, Store};
use pwnbook_projections::api_keys;

use serde_json::Value;

use crate::error::ApiError;
use crate::extract::unknown_fields;
use crate::key_cache::checked_at_commit;
use crate::metrics::KeyId;
use crate::routes::ROUTES;
use crate::secrets::{hash_secret, hashes_match};
use crate::state::AppState;
use crate::{request_id, time};

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    pub key_name: String,
    pub organization_id: String,
    pub permissions: Vec<Permission>,
}

/// What authentication concluded; the route layer turns anything but `Valid` into 401.
#[derive(Debug, Clone)]
enum AuthOutcome {
    Valid(Principal),
    Invalid(&'static str),
    Missing,
}

/// Looks the key with `hash` up in the database, remembering a valid one for the writes that
/// may take it from memory, forgetting an invalid one.
async fn authenticate_hash(state: &AppState, hash: &str, remember: bool) -> Result<AuthOutcome, ApiError> {
    let (outcome, expires_at) = lookup(&state.store, hash).await?;
    match &outcome {
        AuthOutcome::Valid(principal) if remember => state.keys.remember(hash, principal, expires_at),
        AuthOutcome::Valid(_) => {}
        _ => state.keys.forget(hash),
    }
    Ok(outcome)
}

/// What the database says of the key with `hash`, and when it expires.
async fn lookup(store: &Store, hash: &str) -> Result<(AuthOutcome, Option<i64>), ApiError> {
    let Some(key) = api_keys::find_by_secret_hash(store.pool(), hash).await? else {
        return Ok((AuthOutcome::Invalid("the API key is not valid"), None));
    };
    if !hashes_match(&key.secret_hash, hash) {
        return Ok((AuthOutcome::Invalid("the API key is not valid"), None));
    }
    if key.revoked_at.is_some() {
        return Ok((AuthOutcome::Invalid("the API key has been revoked"), None));
    }
    if key.expires_at.is_some_and(|at| at <= time::now_millis()) {
        return Ok((AuthOutcome::Invalid("the API key has expired"), None));
    }
    let permissions = key.permissions.iter().filter_map(|p| p.parse().ok()).collect();
    let principal =
        Principal { key_id: key.id, key_name: key.name, organization_id: key.organization_id, permissions };
    Ok((AuthOutcome::Valid(principal), key.expires_at))
}

/// Outer middleware: resolves the key, applies the rate limit (per key, else per address), and
/// puts the `X-RateLimit-*` headers on every response, errors included. A write that may leave
/// the key's check to its commit (`key_cache`) takes the key from memory when it can; unless one
/// of its commands then committed, its answer (a 429 included) waits for the database to vouch
/// for the key, and is a 401 charged to the address if it does not.
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let bearer = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(|v| {
        // The scheme's name is case-insensitive (RFC 9110 §11.1).
        v.split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim().to_owned())
    });
    let address = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
    let address_key = format!("ip:{}", address.unwrap_or_default());
    let from_memory_allowed = checked_at_commit(request.method(), request.uri().path());
    let mut remembered = None;
    let outcome = match &bearer {
        None => Ok(AuthOutcome::Missing),
        Some(None) => Ok(AuthOutcome::Invalid("the Authorization header must be Bearer <api key>")),
        Some(Some(secret)) => {
            let hash = hash_secret(secret);
            match from_memory_allowed.then(|| state.keys.get(&hash, time::now_millis())).flatten() {
                Some(principal) => {
                    remembered = Some((hash, CommitProof::default(), principal.key_id.clone()));
                    Ok(AuthOutcome::Valid(principal))
                }
                None => authenticate_hash(&state, &hash, from_memory_allowed).await,
            }
        }
    };
    let rate_key = match &outcome {
        Ok(AuthOutcome::Valid(principal)) => rate_key(principal),
        _ => address_key.clone(),
    };
    let mut decision = state.rate_limits.check(&rate_key);
    let mut response = match (decision.retry_after, outcome) {
        (Some(retry_after), _) => ApiError::RateLimited { retry_after }.into_response(),
        (None, Err(error)) => error.into_response(),
        (None, Ok(outcome)) => {
            let key_id = match &outcome {
                AuthOutcome::Valid(principal) => {
                    if remembered.is_none() {
                        state.usage.touch(&state.store, &principal.key_id).await;
                    }
                    Some(KeyId(principal.key_id.clone()))
                }
                _ => None,
            };
            request.extensions_mut().insert(outcome);
            if let Some((_, proof, _)) = &remembered {
                request.extensions_mut().insert(proof.clone());
            }
            let mut response = next.run(request).await;
            if let Some(key_id) = key_id {
                response.extensions_mut().insert(key_id);
            }
            response
        }
    };
    if let Some((hash, proof, key_id)) = &remembered {
        let verdict = if proof.is_set() { Ok(None) } else { revoked_since(&state, hash).await };
        match verdict {
            Ok(None) => state.usage.touch(&state.store, key_id).await,
            Ok(Some(reason)) => {
                response = ApiError::Unauthorized(reason.to_owned()).into_response();
                decision = state.rate_limits.check(&address_key);
            }
            Err(error) => response = error.into_response(),
        }
    }
    decision.apply(response.headers_mut());
    response
}

/// Why the database no longer vouches for the key with `hash`, if it does not.
async fn revoked_since(state: &AppState, hash: &str) -> Result<Option<&'static str>, ApiError> {
    match authenticate_hash(state, hash, false).await? {
        AuthOutcome::Valid(_) => Ok(None),
        AuthOutcome::Invalid(reason) => Ok(Some(reason)),
        AuthOutcome::Missing => Ok(Some("an API key is required")),
    }
}

fn rate_key(principal: &Principal) -> String {
    format!("key:{}", principal.key_id)
}

/// Charges `count` more requests to the key's rate-limit bucket: what one HTTP request does
/// beyond the one `authenticate` charged (GraphQL's operations over a WebSocket, its extra
/// mutation fields).
pub fn charge(state: &AppState, principal: &Principal, count: usize) -> Result<(), ApiError> {
    for _ in 0..count {
        if let Some(retry_after) = state.rate_limits.check(&rate_key(principal)).retry_after {
            return Err(ApiError::RateLimited { retry_after });
        }
    }
    Ok(())
}

/// The authenticated principal of a request, once `authenticate` ran.
pub fn principal_of(request: &Request) -> Option<&Principal> {
    match request.extensions().get::<AuthOutcome>() {
        Some(AuthOutcome::Valid(principal)) => Some(principal),
        _ => None,
    }
}

/// Route layer: the permission the route table names for the matched route.
pub async fn authorize(request: Request, next: Next) -> Response {
    let path = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let method = request.method().as_str().to_owned();
    // The router is generated from ROUTES, so a method missing here is missing there too: axum
    // answers 405 (with `Allow`), which the envelope layer wraps.
    let Some(route) = ROUTES.iter().find(|r| r.method == method && r.path == path) else {
        return next.run(request).await;
    };
    let verdict = match authenticated(request.extensions()) {
        Ok(principal) if grants(&principal.permissions, route.permission) => Ok(()),
        Ok(_) => Err(ApiError::Forbidden(format!("the API key lacks the permission {}", route.permission))),
        Err(error) => Err(error),
    };
    match verdict {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// The principal `authenticate` found for a request, or the 401 that the route layer answers
/// without one (also for handlers outside the route table, such as GraphQL's).
pub fn authenticated(extensions: &Extensions) -> Result<&Principal, ApiError> {
    match extensions.get::<AuthOutcome>() {
        Some(AuthOutcome::Valid(principal)) => Ok(principal),
        Some(AuthOutcome::Invalid(reason)) => Err(ApiError::Unauthorized((*reason).to_owned())),
        Some(AuthOutcome::Missing) | None => {
            Err(ApiError::Unauthorized("an API key is required: Authorization: Bearer <api key>".to_owned()))
        }
    }
}

/// Authenticates a key sent outside the `Authorization` header (the `connection_init` payload
/// of a GraphQL WebSocket), with the same checks and the same 401 reasons; records its use.
pub async fn principal_for_secret(state: &AppState, secret: &str) -> Result<Principal, ApiError> {
    match authenticate_hash(state, &hash_secret(secret), false).await? {
        AuthOutcome::Valid(principal) => {
            state.usage.touch(&state.store, &principal.key_id).await;
            Ok(principal)
        }
        AuthOutcome::Invalid(reason) => Err(ApiError::Unauthorized(reason.to_owned())),
        AuthOutcome::Missing => Err(ApiError::Unauthorized("an API key is required".to_owned())),
    }
}

/// The caller of a handler behind `authorize`, with the request's id and idempotency key.
#[derive(Clone)]
pub struct Caller {
    pub principal: Principal,
    pub idempotency_key: Option<String>,
    /// Present when the key was taken from memory: a command that commits with this caller's
    /// context sets it, and the key then needs no other check.
    pub proof: Option<CommitProof>,
    /// Fields of the request's body that its endpoint refuses (`refusing`).
    refused: Vec<FieldError>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(AuthOutcome::Valid(principal)) = parts.extensions.get::<AuthOutcome>() else {
            return Err(ApiError::Unauthorized("an API key is required".to_owned()));
        };
        let idempotency_key = crate::idempotency::key_of(&parts.headers);
        let proof = parts.extensions.get::<CommitProof>().cloned();
        Ok(Self { principal: principal.clone(), idempotency_key, proof, refused: Vec::new() })
    }
}

impl Caller {
    pub fn new(principal: Principal, idempotency_key: Option<String>, proof: Option<CommitProof>) -> Self {
        Self { principal, idempotency_key, proof, refused: Vec::new() }
    }

    pub fn organization_id(&self) -> &str {
        &self.principal.organization_id
    }

    pub fn command_context(&self) -> CommandContext {
        CommandContext {
            organization_id: self.principal.organization_id.clone(),
            actor: Actor::api_key(&self.principal.key_id, &self.principal.key_name),
            request_id: request_id::current(),
            idempotency_key: self.idempotency_key.clone(),
            commit_proof: self.proof.clone(),
            refused: self.refused.clone(),
        }
    }

    /// This caller with the body's fields its endpoint does not accept (`unknown`; those in
    /// `read_only` named as such) refused: a command run with it is validated but not committed,
    /// so one 422 names them and every other invalid field (see `invalid`).
    pub fn refusing(&self, unknown: &BTreeMap<String, Value>, read_only: &[&str]) -> Self {
        self.refusing_errors(unknown_fields(unknown, read_only))
    }

    /// This caller with `errors` (found by a route before its command ran) refused as well.
    pub fn refusing_errors(&self, errors: Vec<FieldError>) -> Self {
        let mut caller = self.clone();
        caller.refused.extend(errors);
        caller
    }

    /// Whether the body had fields its endpoint refuses.
    pub fn refuses_fields(&self) -> bool {
        !self.refused.is_empty()
    }

    /// `error`, with the refused fields when it is a 422.
    pub fn with_refused(&self, error: ApiError) -> ApiError {
        match error {
            ApiError::Validation(errors) => self.invalid(errors),
            other => other,
        }
    }

    /// A 422 of `errors` found before any command ran, with the refused fields.
    pub fn invalid(&self, errors: Vec<FieldError>) -> ApiError {
        ApiError::Validation(self.refused.iter().cloned().chain(errors).collect())
    }
}

/// Keeps `lastUsedAt` fresh to within a minute without an event (or a write) per request.
#[derive(Default)]
pub struct UsageTracker {
    last_written: Mutex<HashMap<String, Instant>>,
}

const USAGE_RESOLUTION: Duration = Duration::from_secs(60);

impl UsageTracker {
    /// Records a use of `key_id` unless one was recorded less than a minute ago. The write is
    /// awaited so that `lastUsedAt` is set by the time the first request answers.
    pub async fn touch(&self, store: &Store, key_id: &str) {
        let now = Instant::now();
        {
            let Ok(mut last) = self.last_written.lock() else { return };
            if last.get(key_id).is_some_and(|at| now.duration_since(*at) < USAGE_RESOLUTION) {
                return;
            }
            last.insert(key_id.to_owned(), now);
        }
        if let Err(error) = api_keys::record_use(store.pool(), key_id, time::now_millis()).await {
            tracing::warn!(%error, key_id, "could not record key usage");
        }
    }
}
