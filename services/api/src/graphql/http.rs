//! The HTTP side: `POST /api/v1/graphql`, the WebSocket of subscriptions on
//! `GET /api/v1/graphql`, and the SDL on `GET /api/v1/graphql/schema.graphql`.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use async_graphql::http::{WebSocketProtocols, WsMessage, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql::Data;
use async_graphql_axum::GraphQLResponse;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;
use utoipa::ToSchema;

use crate::error::{ApiError, NothingSaved};
use crate::extract::ApiJson;
use crate::graphql::context::{Session, Socket};
use crate::graphql::{schema, sdl};
use crate::idempotency;
use crate::state::AppState;
use crate::{auth, request_id};

/// Close code of a WebSocket whose `connection_init` carried no valid key, or whose key was
/// revoked or expired since (graphql-ws).
const FORBIDDEN_CLOSE: u16 = 4403;
/// The media type of GraphQL over HTTP.
const GRAPHQL_JSON: &str = "application/graphql-response+json";
/// Close code when the server shuts down.
const GOING_AWAY: u16 = 1001;
/// Close code of a WebSocket whose `connection_init` did not come in time (graphql-ws).
const INIT_TIMEOUT_CLOSE: u16 = 4408;
/// How often an open WebSocket checks its key again (besides at each `subscribe` and event).
const KEY_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a new WebSocket may wait before its `connection_init`.
const INIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A GraphQL request.
#[derive(Debug, ToSchema)]
#[schema(as = GraphQLRequest)]
#[allow(dead_code)]
pub struct RequestDoc {
    /// The query or mutation document.
    #[schema(example = "{ engagements(first: 10) { totalCount edges { node { id name } } } }")]
    query: String,
    /// Values of the document's variables.
    #[schema(value_type = Option<Object>)]
    variables: Option<Value>,
    #[schema(rename = "operationName")]
    operation_name: Option<String>,
}

/// A GraphQL response: `data` and, when something failed, `errors`, each with
/// `extensions.code` (the REST error code).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GraphQLResponse)]
pub struct ResponseDoc {
    #[schema(value_type = Option<Object>)]
    data: Value,
    #[schema(value_type = Option<Vec<Object>>)]
    errors: Option<Vec<Value>>,
}

/// Run a GraphQL query or mutation.
///
/// Fields need the permissions of the REST routes serving the same data; a field the key may
/// not read is an error on that field (`extensions.code` `FORBIDDEN`), not a failed request.
/// Queries deeper than 15 levels or costlier than 50 000, with more than 50 root fields (20 for
/// a mutation), or selecting one field more than 20 times under aliases are refused before they
/// run; each root field after the first counts against the rate limit as one more request. The
/// subscription `events` is served over a WebSocket on `GET /api/v1/graphql`
/// (`graphql-transport-ws`, the API key in the `connection_init` payload as `{"apiKey": …}`);
/// the schema is at `GET /api/v1/graphql/schema.graphql`. With `Idempotency-Key`, a retry runs
/// nothing twice: an answer that saved something or failed nowhere is replayed
/// (`Idempotent-Replayed: true`), one that failed and saved nothing (a refused or failed write,
/// a request that did not run) is not stored and the retry runs again.
#[utoipa::path(post, path = "/api/v1/graphql", tag = "graphql", operation_id = "post_graphql", request_body = RequestDoc,
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays for 24 h the first answer that saved something or failed nowhere")),
    responses(
        (status = 200, description = "The GraphQL response (errors included); `application/graphql-response+json` when the request's `Accept` names it",
            content((ResponseDoc = "application/json"), (ResponseDoc = "application/graphql-response+json"))),
        (status = 400, description = "Malformed request (not a JSON object with a `query`): the error envelope. With `Accept: application/graphql-response+json`, a request that did not run (parse or validation error, depth, complexity or mutation limits) also answers 4xx, with a GraphQL response that has `errors` and no `data`",
            content((crate::openapi::ErrorBody = "application/json"), (ResponseDoc = "application/graphql-response+json"))),
        (status = 401, description = "No key, or an unknown, revoked or expired key", body = crate::openapi::ErrorBody),
        (status = 409, description = "The Idempotency-Key was used for a different request, or its first request is still running", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is larger than the limit", body = crate::openapi::ErrorBody),
        (status = 415, description = "The body is not application/json", body = crate::openapi::ErrorBody),
        (status = 422, description = "A text of the body (the document or its variables) holds the NUL character, which no stored text can; `details` names it", body = crate::openapi::ErrorBody),
        (status = 429, description = "Over the key's rate limit; see `Retry-After`", body = crate::openapi::ErrorBody),
        (status = 500, description = "Unexpected error", body = crate::openapi::ErrorBody),
    ))]
pub async fn execute(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let principal = auth::authenticated(request.extensions())?.clone();
    let media_type = response_media_type(request.headers());
    let idempotency_key = idempotency::key_of(request.headers());
    // A body that is no GraphQL request ran nothing: its `Idempotency-Key` stays free for the
    // corrected one.
    let query = match ApiJson::<async_graphql::Request>::from_request(request, &state).await {
        // A string literal's `\u0000` would reach the store as a NUL, which no text can hold (the
        // variables' are refused with the body's other texts, by `ApiJson`).
        Ok(ApiJson(query)) if query.query.contains("\\u0000") => {
            let error = ApiError::Validation(vec![pwnbook_commands::FieldError::new(
                "query",
                "must not contain the NUL character (\\u0000)",
            )]);
            return Ok((axum::Extension(NothingSaved), error).into_response());
        }
        Ok(ApiJson(query)) if !query.query.trim().is_empty() => query,
        Ok(_) => {
            let error = ApiError::BadRequest("the body must be a GraphQL request: {\"query\": …}".to_owned());
            return Ok((axum::Extension(NothingSaved), error).into_response());
        }
        Err(error) => return Ok((axum::Extension(NothingSaved), error).into_response()),
    };
    let mut session = Session::new(state, principal);
    session.caller.idempotency_key = idempotency_key;
    let stored = session.caller.idempotency_key.is_some().then(|| Arc::clone(&session.effects));
    // One span per execution: the loaders' batches run inside it too.
    let span = tracing::info_span!("graphql", request_id = request_id::current().unwrap_or_default());
    let response = schema().execute(query.data(session)).instrument(span).await;
    // For `Idempotency-Key`: nothing stored when nothing was saved, else the answer without
    // the secrets it showed.
    let (nothing_saved, revealed) = match stored {
        Some(effects) if effects.saved_nothing(&response) => (true, None),
        Some(effects) => (false, Some(effects.revealed())),
        None => (false, None),
    };
    let mut response = if media_type == GRAPHQL_JSON && response.data == async_graphql::Value::Null {
        request_error(&response.errors)
    } else {
        GraphQLResponse::from(response).into_response()
    };
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    if nothing_saved {
        response.extensions_mut().insert(NothingSaved);
    }
    if let Some(revealed) = revealed {
        response.extensions_mut().insert(revealed);
    }
    Ok(response)
}

/// A request that did not run (it did not parse or validate, or was over a limit), for a
/// client of GraphQL over HTTP: a 4xx (the first error's status, 400 by default) and no `data`;
/// over the rate limit, with `Retry-After` as REST sends it.
fn request_error(errors: &[async_graphql::ServerError]) -> Response {
    let number = |name: &str| {
        errors.first().and_then(|e| e.extensions.as_ref()).and_then(|e| match e.get(name) {
            Some(async_graphql::Value::Number(n)) => n.as_u64(),
            _ => None,
        })
    };
    let status = number("statusCode")
        .and_then(|code| StatusCode::from_u16(u16::try_from(code).ok()?).ok())
        .filter(StatusCode::is_client_error)
        .unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, axum::Json(serde_json::json!({ "errors": errors }))).into_response();
    if let Some(seconds) = number("retryAfter").filter(|_| status == StatusCode::TOO_MANY_REQUESTS) {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// `application/graphql-response+json` for clients that ask for it (GraphQL over HTTP),
/// `application/json` for everyone else.
fn response_media_type(headers: &HeaderMap) -> &'static str {
    let asks = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|accept| {
        accept
            .split(',')
            .any(|item| item.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case(GRAPHQL_JSON))
    });
    if asks {
        GRAPHQL_JSON
    } else {
        "application/json"
    }
}

/// The schema in SDL (no key needed, like the OpenAPI document).
#[utoipa::path(get, path = "/api/v1/graphql/schema.graphql", tag = "graphql", operation_id = "get_graphql_schema_graphql",
    responses((status = 200, description = "The GraphQL schema (SDL)", content_type = "text/plain", body = String)))]
pub async fn schema_sdl() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], sdl()).into_response()
}

/// `GET /api/v1/graphql`: the WebSocket of subscriptions.
pub async fn subscribe(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|_| {
        ApiError::BadRequest(
            "GET /api/v1/graphql is the WebSocket of subscriptions (graphql-transport-ws); \
             send queries and mutations with POST"
                .to_owned(),
        )
    })?;
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|offered| offered.split(',').find_map(|p| WebSocketProtocols::from_str(p.trim()).ok()))
        .ok_or_else(|| {
            ApiError::BadRequest("Sec-WebSocket-Protocol must offer graphql-transport-ws".to_owned())
        })?;
    Ok(upgrade.protocols(ALL_WEBSOCKET_PROTOCOLS).on_upgrade(move |socket| serve(state, socket, protocol)))
}

/// The key of a `connection_init` payload: `{"apiKey": "…"}`, or `{"Authorization": "Bearer …"}`
/// (any case of `authorization`).
fn key_of(payload: &Value) -> Option<String> {
    let fields = payload.as_object()?;
    if let Some(key) = fields.get("apiKey").and_then(Value::as_str) {
        return Some(key.trim().to_owned());
    }
    let header = fields.iter().find(|(name, _)| name.eq_ignore_ascii_case("authorization"))?.1.as_str()?;
    header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).map(|k| k.trim().to_owned())
}

async fn serve(state: AppState, socket: WebSocket, protocol: WebSocketProtocols) {
    let (mut sink, stream) = socket.split();
    // The connection ends when the server shuts down (its subscriptions end with it).
    let mut shutdown = state.shutdown.clone();
    let stopping = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let input = stream
        .take_until(Box::pin(stopping))
        .take_while(|message| futures::future::ready(message.is_ok()))
        .filter_map(|message| {
            futures::future::ready(match message {
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => Some(message.into_data()),
                _ => None,
            })
        });
    let refused = Arc::new(AtomicBool::new(false));
    let initialized = Arc::new(AtomicBool::new(false));
    // The socket's key checks ask for the close through `closing`.
    let (closing, mut closed) = tokio::sync::watch::channel(None::<String>);
    let socket_of = Arc::new(OnceLock::<Arc<Socket>>::new());
    let (init_state, init_refused, init_done) = (state.clone(), refused.clone(), initialized.clone());
    let (init_closing, init_socket) = (closing.clone(), socket_of.clone());
    let on_init = move |payload: Value| async move {
        let Some(secret) = key_of(&payload) else {
            init_refused.store(true, Ordering::SeqCst);
            return Err(async_graphql::Error::new(
                "an API key is required: connection_init payload {\"apiKey\": \"<api key>\"}",
            ));
        };
        match auth::principal_for_secret(&init_state, &secret).await {
            Ok(principal) => {
                init_done.store(true, Ordering::SeqCst);
                let socket = init_socket.get_or_init(|| Arc::new(Socket::new(secret, init_closing))).clone();
                let mut data = Data::default();
                data.insert(Session::new(init_state, principal).on_socket(socket));
                Ok(data)
            }
            Err(error) => {
                init_refused.store(true, Ordering::SeqCst);
                Err(async_graphql::Error::new(error.to_string()))
            }
        }
    };
    let output =
        async_graphql::http::WebSocket::new(schema().clone(), input, protocol).on_connection_init(on_init);
    let mut output = std::pin::pin!(output);
    let init_deadline = tokio::time::sleep(INIT_TIMEOUT);
    let mut init_deadline = std::pin::pin!(init_deadline);
    let mut key_check = tokio::time::interval(KEY_CHECK_INTERVAL);
    loop {
        let message = tokio::select! {
            message = output.next() => message,
            _ = closed.changed() => {
                let reason = closed.borrow().clone().unwrap_or_default();
                let _ = sink.send(Message::Close(Some(CloseFrame { code: FORBIDDEN_CLOSE, reason: reason.into() }))).await;
                return;
            }
            _ = key_check.tick() => {
                if let Some(socket) = socket_of.get() {
                    if let Err(error) = socket.check_key(&state).await {
                        tracing::debug!(%error, "key check of a WebSocket");
                    }
                }
                continue;
            }
            () = &mut init_deadline, if !initialized.load(Ordering::SeqCst) => {
                let close = CloseFrame { code: INIT_TIMEOUT_CLOSE, reason: "connection_init did not come in time".into() };
                let _ = sink.send(Message::Close(Some(close))).await;
                return;
            }
        };
        let Some(message) = message else { break };
        let frame = match message {
            WsMessage::Text(text) => Message::Text(text.into()),
            WsMessage::Close(code, reason) => {
                let code = if refused.load(Ordering::SeqCst) { FORBIDDEN_CLOSE } else { code };
                Message::Close(Some(CloseFrame { code, reason: reason.into() }))
            }
        };
        if sink.send(frame).await.is_err() {
            return;
        }
    }
    if *state.shutdown.borrow() {
        let close = CloseFrame { code: GOING_AWAY, reason: "the server is shutting down".into() };
        let _ = sink.send(Message::Close(Some(close))).await;
    }
}
