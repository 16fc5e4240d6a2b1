//! Extractors that turn every malformed input into our error envelope (never axum's plain-text
//! rejections): JSON bodies, strict query strings, and the `If-Match` header.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// A JSON object body. Not JSON → 415; malformed JSON or a wrong JSON type → 400; fields the
/// endpoint does not know are reported by the DTO's `unknown` map (422).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "the request body must be application/json".to_owned(),
            ));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(0)
            } else {
                ApiError::BadRequest("the request body could not be read".to_owned())
            }
        })?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
        if !value.is_object() {
            return Err(ApiError::BadRequest("the request body must be a JSON object".to_owned()));
        }
        T::deserialize(value).map(ApiJson).map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Fields a body carried that its endpoint does not accept, as a 422 naming each one.
pub fn reject_unknown(unknown: &BTreeMap<String, Value>, read_only: &[&str]) -> Result<(), ApiError> {
    if unknown.is_empty() {
        return Ok(());
    }
    Err(ApiError::Validation(
        unknown
            .keys()
            .map(|field| {
                let message = if read_only.contains(&field.as_str()) {
                    "cannot be set here"
                } else {
                    "is not a known field"
                };
                pwnbook_commands::FieldError::new(field, message)
            })
            .collect(),
    ))
}

/// The query string as a map. Handlers `take` what they know, then `finish` refuses the rest,
/// so a misspelt filter is a 400 instead of a silently unfiltered list.
#[derive(Debug, Default)]
pub struct QueryParams(BTreeMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(parts.uri.query().unwrap_or_default())
            .map_err(|_| ApiError::BadRequest("the query string is malformed".to_owned()))?;
        let mut map = BTreeMap::new();
        for (name, value) in pairs {
            if map.insert(name.clone(), value).is_some() {
                return Err(ApiError::BadRequest(format!(
                    "query parameter {name} is given twice; use a comma-separated list"
                )));
            }
        }
        Ok(Self(map))
    }
}

impl QueryParams {
    pub fn from_pairs(pairs: &[(String, String)]) -> Self {
        Self(pairs.iter().cloned().collect())
    }

    pub fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    /// A comma-separated list; empty items are dropped.
    pub fn take_list(&mut self, name: &str) -> Vec<String> {
        self.take(name)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// A list whose every item must be one of `allowed` (an unknown enum value is a 400).
    pub fn take_enum_list(&mut self, name: &str, allowed: &[&str]) -> Result<Vec<String>, ApiError> {
        let values = self.take_list(name);
        if let Some(bad) = values.iter().find(|v| !allowed.contains(&v.as_str())) {
            return Err(ApiError::BadRequest(format!(
                "{name} must be one of {}; got {bad:?}",
                allowed.join(", ")
            )));
        }
        Ok(values)
    }

    /// An RFC 3339 timestamp, as milliseconds.
    pub fn take_timestamp(&mut self, name: &str) -> Result<Option<i64>, ApiError> {
        self.take(name)
            .map(|v| {
                crate::time::parse_rfc3339_millis(&v)
                    .ok_or_else(|| ApiError::BadRequest(format!("{name} must be an RFC 3339 timestamp")))
            })
            .transpose()
    }

    pub fn finish(self) -> Result<(), ApiError> {
        match self.0.keys().next() {
            None => Ok(()),
            Some(name) => Err(ApiError::BadRequest(format!("unknown query parameter {name:?}"))),
        }
    }
}

/// `If-Match: "<version>"` (or `W/"<version>"`); `*` or no header means no precondition.
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().map_err(|_| ApiError::BadRequest("If-Match is not valid".to_owned()))?.trim();
    if text == "*" {
        return Ok(None);
    }
    parse_etag(text)
        .map(Some)
        .ok_or_else(|| ApiError::BadRequest("If-Match must be an ETag such as \"3\"".to_owned()))
}

/// Whether `If-None-Match` names `version` (or `*`).
pub fn if_none_match(headers: &HeaderMap, version: i64) -> bool {
    let Some(text) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) else { return false };
    text.split(',').map(str::trim).any(|tag| tag == "*" || parse_etag(tag) == Some(version))
}

fn parse_etag(text: &str) -> Option<i64> {
    let text = text.strip_prefix("W/").unwrap_or(text);
    text.strip_prefix('"')?.strip_suffix('"')?.parse().ok().filter(|v| *v >= 0)
}

pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn etags_parse_strictly() {
        let mut headers = HeaderMap::new();
        assert_eq!(if_match(&headers).ok(), Some(None));
        headers.insert(header::IF_MATCH, HeaderValue::from_static("\"3\""));
        assert_eq!(if_match(&headers).ok(), Some(Some(3)));
        headers.insert(header::IF_MATCH, HeaderValue::from_static("W/\"4\""));
        assert_eq!(if_match(&headers).ok(), Some(Some(4)));
        headers.insert(header::IF_MATCH, HeaderValue::from_static("3"));
        assert!(if_match(&headers).is_err());
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"1\", \"2\""));
        assert!(if_none_match(&headers, 2));
        assert!(!if_none_match(&headers, 3));
    }
}
