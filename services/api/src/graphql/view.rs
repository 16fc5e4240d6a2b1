//! GraphQL objects are the REST objects: each wraps the JSON that the REST route renders for the
//! same row (or the same past, for `version`/`asOf`, or the same event), so a field's name and
//! value cannot differ between the two facades. The GraphQL types only declare the fields'
//! types; the values come from here.

use async_graphql::ID;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::openapi::to_json;

#[derive(Debug, Clone, Default)]
pub struct View(Map<String, Value>);

impl View {
    /// The JSON object of a REST view.
    pub fn of<T: Serialize>(view: T) -> Self {
        Self::from_value(to_json(view))
    }

    pub fn from_value(value: Value) -> Self {
        match value {
            Value::Object(fields) => Self(fields),
            _ => Self::default(),
        }
    }

    pub fn id(&self) -> ID {
        ID(self.str("id").to_owned())
    }

    pub fn str(&self, key: &str) -> &str {
        self.0.get(key).and_then(Value::as_str).unwrap_or_default()
    }

    pub fn opt_str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    pub fn opt_id(&self, key: &str) -> Option<ID> {
        self.opt_str(key).map(|id| ID(id.to_owned()))
    }

    pub fn int(&self, key: &str) -> i64 {
        self.opt_int(key).unwrap_or_default()
    }

    pub fn opt_int(&self, key: &str) -> Option<i64> {
        self.0.get(key).and_then(Value::as_i64)
    }

    pub fn float(&self, key: &str) -> f64 {
        self.0.get(key).and_then(Value::as_f64).unwrap_or_default()
    }

    pub fn boolean(&self, key: &str) -> bool {
        self.0.get(key).and_then(Value::as_bool).unwrap_or_default()
    }

    pub fn strings(&self, key: &str) -> Vec<String> {
        self.0
            .get(key)
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    pub fn ids(&self, key: &str) -> Vec<ID> {
        self.strings(key).into_iter().map(ID).collect()
    }

    /// A nested object (`cvss`, `actor`), if present and not null.
    pub fn object(&self, key: &str) -> Option<View> {
        match self.0.get(key) {
            Some(Value::Object(fields)) => Some(Self(fields.clone())),
            _ => None,
        }
    }

    /// The items of a list of objects.
    pub fn objects(&self, key: &str) -> Vec<View> {
        self.0
            .get(key)
            .and_then(Value::as_array)
            .map(|items| items.iter().cloned().map(View::from_value).collect())
            .unwrap_or_default()
    }

    pub fn value(&self, key: &str) -> Value {
        self.0.get(key).cloned().unwrap_or(Value::Null)
    }
}
