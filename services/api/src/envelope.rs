//! Makes sure no error leaves the server without our envelope: axum's own rejections (405,
//! unmatched routes), tower layers and panics all end up as `{"error": {...}}`.

use axum::extract::Request;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{for_status, ApiError};

pub async fn ensure(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        // GraphQL over HTTP answers its request errors as a 4xx in its own JSON media type.
        .is_some_and(|v| {
            v.starts_with("application/json") || v.starts_with("application/graphql-response+json")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let mut replaced = for_status(status).into_response();
    keep_headers(&mut replaced, response.headers());
    replaced
}

/// Gives `replaced` what the answer it replaces said beyond its body (Allow on 405, the request
/// id, rate-limit headers, ...).
pub fn keep_headers(replaced: &mut Response, original: &HeaderMap) {
    for (name, value) in original {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            replaced.headers_mut().insert(name.clone(), value.clone());
        }
    }
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal("a request handler panicked".to_owned()).into_response()
}
