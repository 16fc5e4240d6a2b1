//! Failures as GraphQL errors: the REST error code, mapped once. Every error a resolver returns
//! comes from an `ApiError`, so `extensions.code` is the code REST answers for the same failure
//! (`VALIDATION_ERROR`, `CONFLICT`, `NOT_FOUND`, `FORBIDDEN`, …), with `statusCode`, the
//! validation `details` and the `requestId`. Errors of the GraphQL layer itself (a query that
//! does not parse or validate, or is too deep or too complex) get `BAD_REQUEST`.

use async_graphql::{ErrorExtensionValues, Response, ServerError, Value};

use crate::error::ApiError;

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        // `detail` logs an internal error's cause; the client sees the generic message.
        let detail = error.detail();
        let mut extensions = ErrorExtensionValues::default();
        extensions.set("code", detail.code);
        extensions.set("statusCode", i32::from(detail.status_code));
        if let Some(details) = detail.details {
            if let Ok(details) = Value::from_json(serde_json::to_value(details).unwrap_or_default()) {
                extensions.set("details", details);
            }
        }
        extensions.set("requestId", detail.request_id);
        Self { message: detail.message, source: None, extensions: Some(extensions) }
    }
}

/// Shorthand for resolvers.
pub type Result<T> = std::result::Result<T, async_graphql::Error>;

/// Gives every error without a code (parse and validation errors, depth and complexity limits)
/// the code `BAD_REQUEST` and the request id.
pub fn with_codes(mut response: Response) -> Response {
    for error in &mut response.errors {
        add_code(error);
    }
    response
}

pub fn add_code(error: &mut ServerError) {
    let extensions = error.extensions.get_or_insert_with(ErrorExtensionValues::default);
    if extensions.get("code").is_none() {
        extensions.set("code", "BAD_REQUEST");
        extensions.set("statusCode", 400);
        if let Some(id) = crate::request_id::current() {
            extensions.set("requestId", id);
        }
    }
}
