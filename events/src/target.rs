//! Events of the `target` stream.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::Empty;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TargetEvent {
    #[serde(rename = "target.created")]
    Created(TargetCreated),
    #[serde(rename = "target.updated")]
    Updated(TargetUpdated),
    #[serde(rename = "target.deleted")]
    Deleted(Empty),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetCreated {
    pub organization_id: String,
    pub engagement_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Normalized for its type (lowercase hosts, canonical IPs and networks).
    pub value: String,
    pub port: Option<u16>,
    pub protocol: Option<String>,
    pub in_scope: bool,
    pub tags: Vec<String>,
    pub notes: Option<String>,
}

/// Only the fields that changed; `null` clears a field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetUpdated {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::patch")]
    pub port: Option<Option<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::patch")]
    pub protocol: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_scope: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::patch")]
    pub notes: Option<Option<String>>,
}

impl TargetUpdated {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl DomainEvent for TargetEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Created(_) => "target.created",
            Self::Updated(_) => "target.updated",
            Self::Deleted(_) => "target.deleted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}
