//! A body declared larger than the limit is refused from its `Content-Length`, before any of it
//! is read: waiting for bytes that would be refused anyway holds the request, and a client that
//! sends the body only once told to continue would wait for nothing.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::extract::declared_length;

pub async fn refuse_declared_oversize(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let declared = declared_length(request.headers());
    if declared.is_some_and(|length| length > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return ApiError::PayloadTooLarge(limit).into_response();
    }
    next.run(request).await
}
