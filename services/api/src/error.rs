//! The one place where failures become HTTP responses:
//! `{"error": {"code", "message", "statusCode", "details"?, "requestId"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pwnbook_commands::{CommandError, DomainError, FieldError};
use pwnbook_events::StoreError;
use pwnbook_projections::ProjectionError;

use crate::openapi::{ErrorBody, ErrorDetail};
use crate::request_id;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the resource does not exist")]
    NotFound,
    #[error("the method is not allowed on this resource")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("the request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request is not valid: {}", describe(.0))]
    Validation(Vec<FieldError>),
    #[error("rate limit exceeded; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("{0}")]
    Unavailable(String),
    /// The store could not take a write (logged with its cause): nothing was saved, so, unlike
    /// the other 503s, the idempotency record lets a retry with the same key run again.
    #[error("the store cannot take the change now; nothing was saved, retry")]
    StoreUnavailable(String),
    /// The database could not be reached (logged with its cause): a retry may succeed. What a
    /// POST had done before is not known, so, as after a 500, its idempotency key is not kept.
    #[error("the database cannot be reached now; retry")]
    Unreachable(String),
    /// Logged with its cause; the client sees a generic message.
    #[error("internal error")]
    Internal(String),
}

fn describe(details: &[FieldError]) -> String {
    details.iter().map(|d| format!("{} {}", d.field, d.message)).collect::<Vec<_>>().join("; ")
}

impl ApiError {
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::StoreUnavailable(_) | Self::Unreachable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "BAD_REQUEST",
            Self::Unauthorized(_) => "UNAUTHORIZED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::Conflict(_) => "CONFLICT",
            Self::PreconditionFailed(_) => "PRECONDITION_FAILED",
            Self::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            Self::Validation(_) => "VALIDATION_ERROR",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::Unavailable(_) | Self::StoreUnavailable(_) | Self::Unreachable(_) => "SERVICE_UNAVAILABLE",
            Self::Internal(_) => "INTERNAL_ERROR",
        }
    }
}

/// The envelope for a status that did not come from an `ApiError` (axum's own rejections,
/// tower layers, panics).
pub fn for_status(status: StatusCode) -> ApiError {
    match status {
        StatusCode::BAD_REQUEST => ApiError::BadRequest("the request is malformed".to_owned()),
        StatusCode::UNAUTHORIZED => ApiError::Unauthorized("authentication required".to_owned()),
        StatusCode::FORBIDDEN => ApiError::Forbidden("forbidden".to_owned()),
        StatusCode::NOT_FOUND => ApiError::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(0),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::UnsupportedMediaType("the request body must be application/json".to_owned())
        }
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => {
            ApiError::Unavailable("the server could not answer in time; retry".to_owned())
        }
        _ => ApiError::Internal(format!("unexpected status {status}")),
    }
}

impl ApiError {
    /// The body of the error envelope (also used per item by bulk operations).
    pub fn detail(&self) -> ErrorDetail {
        let message = match self {
            Self::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                "an unexpected error occurred".to_owned()
            }
            Self::StoreUnavailable(cause) => {
                tracing::warn!(%cause, "the store could not take a write");
                self.to_string()
            }
            Self::Unreachable(cause) => {
                tracing::warn!(%cause, "the database could not be reached");
                self.to_string()
            }
            Self::PayloadTooLarge(0) => "the request body is larger than the limit".to_owned(),
            other => other.to_string(),
        };
        ErrorDetail {
            code: self.code().to_owned(),
            message,
            status_code: self.status().as_u16(),
            details: match self {
                Self::Validation(details) => Some(details.clone()),
                _ => None,
            },
            request_id: request_id::current().unwrap_or_default(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(ErrorBody { error: self.detail() })).into_response();
        match self {
            Self::Unauthorized(_) => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::RateLimited { retry_after } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            Self::StoreUnavailable(_) => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
                response.extensions_mut().insert(NothingSaved);
            }
            Self::Unreachable(_) => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
                response.extensions_mut().insert(OutcomeUnknown);
            }
            _ => {}
        }
        response
    }
}

/// Marks a response whose request saved nothing, whatever its status (see `idempotency`).
#[derive(Debug, Clone, Copy)]
pub struct NothingSaved;

/// Marks a response that cannot tell what its request saved, whatever its status (see
/// `idempotency`).
#[derive(Debug, Clone, Copy)]
pub struct OutcomeUnknown;

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Domain(DomainError::Validation(details)) => Self::Validation(details),
            CommandError::Domain(DomainError::Conflict(message)) => Self::Conflict(message),
            CommandError::Domain(DomainError::Forbidden(message)) => Self::Forbidden(message),
            CommandError::Domain(DomainError::NotFound) => Self::NotFound,
            error @ CommandError::PreconditionFailed { .. } => Self::PreconditionFailed(error.to_string()),
            error @ CommandError::KeyRevoked => Self::Unauthorized(error.to_string()),
            error @ CommandError::Contention => Self::Conflict(error.to_string()),
            CommandError::Unavailable(cause) => Self::StoreUnavailable(cause),
            CommandError::Store(cause) => Self::Internal(cause),
        }
    }
}

impl ApiError {
    /// A failure of the database: out of reach (503, retry) or unexpected (500).
    fn store_failure(unreachable: bool, error: &dyn std::fmt::Display) -> Self {
        if unreachable {
            Self::Unreachable(error.to_string())
        } else {
            Self::Internal(error.to_string())
        }
    }
}

impl From<ProjectionError> for ApiError {
    fn from(error: ProjectionError) -> Self {
        Self::store_failure(error.unreachable(), &error)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self::store_failure(error.unreachable(), &error)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::store_failure(pwnbook_events::unreachable(&error), &error)
    }
}
