//! A body declared larger than the limit is refused from its `Content-Length`, before any of it
//! is read: waiting for bytes that would be refused anyway holds the request, and a client that
//! sends the body only once told to continue would wait for nothing.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

pub async fn refuse_declared_oversize(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return ApiError::PayloadTooLarge(limit).into_response();
    }
    next.run(request).await
}
