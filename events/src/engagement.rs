//! Events of the `engagement` stream.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::{Empty, StatusChange};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EngagementEvent {
    #[serde(rename = "engagement.created")]
    Created(EngagementCreated),
    #[serde(rename = "engagement.updated")]
    Updated(EngagementUpdated),
    #[serde(rename = "engagement.archived")]
    Archived(StatusChange),
    #[serde(rename = "engagement.unarchived")]
    Unarchived(StatusChange),
    #[serde(rename = "engagement.deleted")]
    Deleted(Empty),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngagementCreated {
    pub organization_id: String,
    pub name: String,
    pub description: Option<String>,
    pub client_name: Option<String>,
    /// `YYYY-MM-DD`.
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub tags: Vec<String>,
    pub status: String,
}

/// Only the fields that changed; `null` clears a field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngagementUpdated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::patch")]
    pub description: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::patch")]
    pub client_name: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::patch")]
    pub start_date: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::patch")]
    pub end_date: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

impl EngagementUpdated {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl DomainEvent for EngagementEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Created(_) => "engagement.created",
            Self::Updated(_) => "engagement.updated",
            Self::Archived(_) => "engagement.archived",
            Self::Unarchived(_) => "engagement.unarchived",
            Self::Deleted(_) => "engagement.deleted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}
