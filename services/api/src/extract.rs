//! Extractors that turn every malformed input into our error envelope (never axum's plain-text
//! rejections): JSON bodies, strict query strings, and the `If-Match` header.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use pwnbook_commands::FieldError;
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
            return Err(not_json());
        }
        let value = json_object(parse_json(&read_body(request, state).await?)?)?;
        T::deserialize(value).map(ApiJson).map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))
    }
}

/// The body of an action that takes none (`POST /engagements/{id}/archive`, …): absent, `null`
/// or the empty object. Not JSON is 415 and malformed JSON 400, as for any other route; fields
/// are kept for the handler to refuse through its caller (`Caller::refusing`), so that a 404,
/// 409 or 412 of the same request comes first, as for any other body.
#[derive(utoipa::ToSchema)]
#[schema(as = NoFields, max_properties = 0)]
pub struct NoBody {
    #[schema(ignore)]
    fields: BTreeMap<String, Value>,
}

impl NoBody {
    /// The fields the body carried, none of which the action takes.
    pub fn fields(&self) -> &BTreeMap<String, Value> {
        &self.fields
    }
}

impl<S: Send + Sync> FromRequest<S> for NoBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(request.headers());
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self { fields: BTreeMap::new() });
        }
        if !json {
            return Err(not_json());
        }
        let value = parse_json(&bytes)?;
        if value.is_null() {
            return Ok(Self { fields: BTreeMap::new() });
        }
        let fields = match json_object(value)? {
            Value::Object(fields) => fields.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        Ok(Self { fields })
    }
}

fn not_json() -> ApiError {
    ApiError::UnsupportedMediaType("the request body must be application/json".to_owned())
}

async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(0)
        } else {
            ApiError::BadRequest("the request body could not be read".to_owned())
        }
    })
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))
}

/// `value` if it is a JSON object without a NUL in any text: another JSON type → 400, a NUL → 422.
fn json_object(value: Value) -> Result<Value, ApiError> {
    if !value.is_object() {
        return Err(ApiError::BadRequest("the request body must be a JSON object".to_owned()));
    }
    if let Some(field) = nul_in(&value) {
        return Err(ApiError::Validation(vec![pwnbook_commands::FieldError::new(
            field.as_str(),
            "must not contain the NUL character (U+0000)",
        )]));
    }
    Ok(value)
}

/// Where `value` holds a text with U+0000, which no stored text can (PostgreSQL refuses it in
/// `text`, SQLite cuts comparisons short at it): the field's path, `""` for the body itself.
fn nul_in(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => text.contains('\0').then(String::new),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_in(item).map(|rest| join(&format!("[{i}]"), &rest))),
        Value::Object(fields) => fields.iter().find_map(|(name, field)| {
            if name.contains('\0') {
                Some(name.replace('\0', "\\u0000"))
            } else {
                nul_in(field).map(|rest| join(name, &rest))
            }
        }),
        _ => None,
    }
}

/// `head` followed by the path `rest` below it: `a` and `b` give `a.b`, `a` and `[0]` give `a[0]`.
fn join(head: &str, rest: &str) -> String {
    if rest.is_empty() || rest.starts_with('[') {
        format!("{head}{rest}")
    } else {
        format!("{head}.{rest}")
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
    let refused = unknown_fields(unknown, read_only);
    if refused.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(refused))
    }
}

/// An error for each field of `unknown` (those in `read_only` "cannot be set here").
pub fn unknown_fields(unknown: &BTreeMap<String, Value>, read_only: &[&str]) -> Vec<FieldError> {
    unknown
        .keys()
        .map(|field| {
            let message = if read_only.contains(&field.as_str()) {
                "cannot be set here"
            } else {
                "is not a known field"
            };
            FieldError::new(field, message)
        })
        .collect()
}

/// The body length a request declares (`Content-Length`), when it declares a valid one.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
}

/// A PATCH field that may be left out but not set to null: its value, or an error in `errors`.
pub fn not_null<T>(field: &str, value: Option<Option<T>>, errors: &mut Vec<FieldError>) -> Option<T> {
    match value {
        Some(None) => {
            errors.push(FieldError::new(field, "cannot be null"));
            None
        }
        other => other.flatten(),
    }
}

/// An "is required" error for each `(field, given)` not given.
pub fn required(fields: &[(&str, bool)]) -> Vec<FieldError> {
    fields
        .iter()
        .filter(|(_, given)| !given)
        .map(|(field, _)| FieldError::new(field, "is required"))
        .collect()
}

/// The query string as a map. Handlers `take` what they know, then `finish` refuses the rest,
/// so a misspelt filter is a 400 instead of a silently unfiltered list.
#[derive(Debug, Default)]
pub struct QueryParams {
    params: BTreeMap<String, String>,
    /// The request's path, when the parameters came with one (a list's cursor names its list).
    path: Option<String>,
}

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
        let params = Self { params: map, path: Some(parts.uri.path().to_owned()) };
        params.refuse_nul()?;
        Ok(params)
    }
}

impl QueryParams {
    pub fn from_pairs(pairs: &[(String, String)]) -> Self {
        Self { params: pairs.iter().cloned().collect(), path: None }
    }

    /// A 400 for a parameter that holds U+0000, which no stored text can (PostgreSQL refuses to
    /// compare with it, SQLite stops comparing at it).
    pub fn refuse_nul(&self) -> Result<(), ApiError> {
        match self.params.iter().find(|(name, value)| name.contains('\0') || value.contains('\0')) {
            Some((name, _)) => Err(ApiError::BadRequest(format!(
                "{:?} must not contain the NUL character (%00, U+0000)",
                name.replace('\0', "%00")
            ))),
            None => Ok(()),
        }
    }

    /// The request's path (REST), or none (parameters a facade built).
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    pub fn take(&mut self, name: &str) -> Option<String> {
        self.params.remove(name)
    }

    /// A comma-separated list; empty items are dropped. `\,` is a comma inside an item and `\\`
    /// a backslash (see `list_item`), so any value can be asked for.
    pub fn take_list(&mut self, name: &str) -> Vec<String> {
        let Some(text) = self.take(name) else { return Vec::new() };
        let mut items = Vec::new();
        let mut item = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(escaped @ (',' | '\\')) => item.push(escaped),
                    Some(other) => {
                        item.push('\\');
                        item.push(other);
                    }
                    None => item.push('\\'),
                },
                ',' => items.push(std::mem::take(&mut item)),
                c => item.push(c),
            }
        }
        items.push(item);
        items.into_iter().map(|item| item.trim().to_owned()).filter(|item| !item.is_empty()).collect()
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
        match self.params.keys().next() {
            None => Ok(()),
            Some(name) => Err(ApiError::BadRequest(format!("unknown query parameter {name:?}"))),
        }
    }
}

/// `If-Match: "<version>"`; `*` or no header means no precondition. If-Match compares strongly
/// (RFC 9110, 13.1.1): a weak tag (`W/"3"`) never matches, so a header of weak tags only fails
/// as a stale one would. Several strong tags cannot be checked in the one atomic step a write
/// has (it takes one expected version), so they are refused rather than half-checked.
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().map_err(|_| ApiError::BadRequest("If-Match is not valid".to_owned()))?.trim();
    if text == "*" {
        return Ok(None);
    }
    let malformed = || ApiError::BadRequest("If-Match must be an ETag such as \"3\"".to_owned());
    let mut strong = Vec::new();
    for tag in text.split(',').map(str::trim) {
        match tag.strip_prefix("W/") {
            Some(weak) => {
                parse_etag(weak).ok_or_else(malformed)?;
            }
            None => strong.push(parse_etag(tag).ok_or_else(malformed)?),
        }
    }
    match strong[..] {
        [] => Err(ApiError::PreconditionFailed(
            "If-Match compares strongly: a weak ETag (W/\"…\") never matches".to_owned(),
        )),
        [version] => Ok(Some(version)),
        _ => Err(ApiError::BadRequest("If-Match takes one ETag (the version the write expects)".to_owned())),
    }
}

/// Whether `If-None-Match` names `version` (or `*`); it compares weakly (RFC 9110, 13.1.2).
pub fn if_none_match(headers: &HeaderMap, version: i64) -> bool {
    let Some(text) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) else { return false };
    text.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || parse_etag(tag.strip_prefix("W/").unwrap_or(tag)) == Some(version))
}

fn parse_etag(text: &str) -> Option<i64> {
    text.strip_prefix('"')?.strip_suffix('"')?.parse().ok().filter(|v| *v >= 0)
}

pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// `value` as one item of a comma-separated list (`QueryParams::take_list`).
pub fn list_item(value: &str) -> String {
    value.replace('\\', "\\\\").replace(',', "\\,")
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn list_items_may_hold_commas_and_backslashes() {
        let values = ["Smith, Jones & Co", "a\\b", "trailing\\", "plain"];
        let joined = values.iter().map(|v| list_item(v)).collect::<Vec<_>>().join(",");
        let mut params = QueryParams::from_pairs(&[("tag".to_owned(), joined)]);
        assert_eq!(params.take_list("tag"), values);
        let mut params = QueryParams::from_pairs(&[("tag".to_owned(), r"a\x, b ,,c\".to_owned())]);
        assert_eq!(params.take_list("tag"), [r"a\x", "b", r"c\"], "other backslashes stay as sent");
    }

    #[test]
    fn a_nul_anywhere_in_a_body_is_found_with_its_path() {
        let body = serde_json::json!({"title": "fine", "set": {"tags": ["a", "b\u{0}c"]}});
        assert_eq!(nul_in(&body).as_deref(), Some("set.tags[1]"));
        assert_eq!(nul_in(&serde_json::json!({"a\u{0}": 1})).as_deref(), Some("a\\u0000"));
        assert_eq!(nul_in(&serde_json::json!({"items": [{"x": "\u{0}"}]})).as_deref(), Some("items[0].x"));
        assert_eq!(nul_in(&serde_json::json!({"title": "no NUL, only \\u0000 as text"})), None);
    }

    #[test]
    fn etags_parse_strictly() {
        let mut headers = HeaderMap::new();
        assert_eq!(if_match(&headers).ok(), Some(None));
        headers.insert(header::IF_MATCH, HeaderValue::from_static("\"3\""));
        assert_eq!(if_match(&headers).ok(), Some(Some(3)));
        headers.insert(header::IF_MATCH, HeaderValue::from_static("W/\"4\""));
        assert!(matches!(if_match(&headers), Err(ApiError::PreconditionFailed(_))), "weak never matches");
        headers.insert(header::IF_MATCH, HeaderValue::from_static("W/\"4\", \"5\""));
        assert_eq!(if_match(&headers).ok(), Some(Some(5)));
        headers.insert(header::IF_MATCH, HeaderValue::from_static("\"4\", \"5\""));
        assert!(matches!(if_match(&headers), Err(ApiError::BadRequest(_))));
        headers.insert(header::IF_MATCH, HeaderValue::from_static("W/4"));
        assert!(matches!(if_match(&headers), Err(ApiError::BadRequest(_))));
        headers.insert(header::IF_MATCH, HeaderValue::from_static("3"));
        assert!(if_match(&headers).is_err());
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"1\", W/\"2\""));
        assert!(if_none_match(&headers, 2));
        assert!(!if_none_match(&headers, 3));
    }
}
