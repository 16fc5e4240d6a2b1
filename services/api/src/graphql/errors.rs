//! Failures as GraphQL errors: the REST error code, mapped once. Every error a resolver returns
//! comes from an `ApiError`, so `extensions.code` is the code REST answers for the same failure
//! (`VALIDATION_ERROR`, `CONFLICT`, `NOT_FOUND`, `FORBIDDEN`, …), with `statusCode`, the
//! validation `details`, the `requestId` and, when over the rate limit, `retryAfter` (seconds). Errors of the GraphQL layer itself (a query that
//! does not parse or validate, or is too deep or too complex) get `BAD_REQUEST`.

use async_graphql::{ErrorExtensionValues, Name, PathSegment, Response, Value};

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
        if let ApiError::RateLimited { retry_after } = error {
            extensions.set("retryAfter", retry_after);
        }
        Self { message: detail.message, source: None, extensions: Some(extensions) }
    }
}

/// Shorthand for resolvers.
pub type Result<T> = std::result::Result<T, async_graphql::Error>;

/// Gives every error without a code (parse and validation errors, depth and complexity limits)
/// the code `BAD_REQUEST`, and every error without a request id the operation's.
pub fn with_codes(mut response: Response, request_id: &str) -> Response {
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(ErrorExtensionValues::default);
        if extensions.get("code").is_none() {
            extensions.set("code", "BAD_REQUEST");
            extensions.set("statusCode", 400);
        }
        let has_id = matches!(extensions.get("requestId"), Some(Value::String(id)) if !id.is_empty());
        if !has_id {
            extensions.set("requestId", request_id);
        }
    }
    response
}

/// async-graphql leaves a field whose resolver failed out of `data`, where GraphQL wants it
/// null beside its error (all of Pwnbook's fallible fields are nullable, the root fields
/// included). Each error's path is followed through `data`, and the first field missing on the
/// way is set to null; errors without a path (the request did not run) leave `data` alone.
pub fn null_failed_fields(response: &mut Response) {
    let paths: Vec<&[PathSegment]> =
        response.errors.iter().map(|error| error.path.as_slice()).filter(|path| !path.is_empty()).collect();
    if paths.is_empty() {
        return;
    }
    // Every root field failed: async-graphql answers `data: null`.
    if response.data == Value::Null {
        response.data = Value::Object(Default::default());
    }
    for path in paths {
        null_at(&mut response.data, path);
    }
}

fn null_at(value: &mut Value, path: &[PathSegment]) {
    let Some((first, rest)) = path.split_first() else { return };
    match (value, first) {
        (Value::Object(fields), PathSegment::Field(key)) => match fields.get_mut(key.as_str()) {
            Some(child) => null_at(child, rest),
            None => {
                fields.insert(Name::new(key), Value::Null);
            }
        },
        (Value::List(items), PathSegment::Index(index)) => {
            if let Some(item) = items.get_mut(*index) {
                null_at(item, rest);
            }
        }
        _ => {}
    }
}

/// Puts `data`'s root fields in the order the operation selected them (`keys`, response keys):
/// async-graphql runs a query's root fields concurrently and keeps the order they finished in.
pub fn in_selection_order(response: &mut Response, keys: &[String]) {
    let Value::Object(fields) = &mut response.data else { return };
    fields.sort_by_cached_key(|key, _| keys.iter().position(|k| k == key.as_str()).unwrap_or(usize::MAX));
}
