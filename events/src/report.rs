//! Events of the `report` stream.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::{Empty, StatusChange};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReportEvent {
    #[serde(rename = "report.created")]
    Created(ReportCreated),
    #[serde(rename = "report.updated")]
    Updated(ReportUpdated),
    #[serde(rename = "report.generated")]
    Generated(ReportGenerated),
    #[serde(rename = "report.status_changed")]
    StatusChanged(StatusChange),
    #[serde(rename = "report.deleted")]
    Deleted(Empty),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportCreated {
    pub organization_id: String,
    pub engagement_id: String,
    pub title: String,
    pub format: String,
    pub status: String,
}

/// Only the fields that changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportUpdated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

impl ReportUpdated {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The rendered document as it was generated: the log keeps every version a client saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportGenerated {
    pub format: String,
    pub content: String,
    pub finding_ids: Vec<String>,
    /// When the document says it was generated (RFC 3339), so that the report's `generatedAt`
    /// is that moment rather than the event's, a few milliseconds later. Older events have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_at: Option<String>,
}

impl DomainEvent for ReportEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Created(_) => "report.created",
            Self::Updated(_) => "report.updated",
            Self::Generated(_) => "report.generated",
            Self::StatusChanged(_) => "report.status_changed",
            Self::Deleted(_) => "report.deleted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}
