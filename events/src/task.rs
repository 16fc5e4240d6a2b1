//! Events of the `task` stream.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::{Empty, StatusChange};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskEvent {
    #[serde(rename = "task.created")]
    Created(TaskCreated),
    #[serde(rename = "task.updated")]
    Updated(TaskUpdated),
    /// `open` ↔ `in_progress`.
    #[serde(rename = "task.status_changed")]
    StatusChanged(StatusChange),
    #[serde(rename = "task.closed")]
    Closed(StatusChange),
    #[serde(rename = "task.reopened")]
    Reopened(StatusChange),
    #[serde(rename = "task.deleted")]
    Deleted(Empty),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskCreated {
    pub organization_id: String,
    pub engagement_id: String,
    pub title: String,
    pub description: Option<String>,
    pub status: String,
    pub priority: String,
    /// `YYYY-MM-DD`.
    pub due_date: Option<String>,
}

/// Only the fields that changed; `null` clears a field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskUpdated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::patch")]
    pub description: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::patch")]
    pub due_date: Option<Option<String>>,
}

impl TaskUpdated {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl DomainEvent for TaskEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Created(_) => "task.created",
            Self::Updated(_) => "task.updated",
            Self::StatusChanged(_) => "task.status_changed",
            Self::Closed(_) => "task.closed",
            Self::Reopened(_) => "task.reopened",
            Self::Deleted(_) => "task.deleted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}
