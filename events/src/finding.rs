//! Events of the `finding` stream.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::{Empty, StatusChange};

/// The `event_type` of a creation (also its serde tag below), which readers of the log may match
/// without parsing the payload.
pub const CREATED: &str = "finding.created";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FindingEvent {
    #[serde(rename = "finding.created")]
    Created(FindingCreated),
    #[serde(rename = "finding.updated")]
    Updated(FindingUpdated),
    #[serde(rename = "finding.status_changed")]
    StatusChanged(Transition),
    #[serde(rename = "finding.review_status_changed")]
    ReviewStatusChanged(Transition),
    #[serde(rename = "finding.deleted")]
    Deleted(Empty),
}

/// A CVSS vector with the score the server computed for it when the event was recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cvss {
    pub vector: String,
    pub score: f64,
    /// `3.0`, `3.1` or `4.0`.
    pub version: String,
}

/// A lifecycle step `{from, to}` with the optional comment the client gave for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    #[serde(flatten)]
    pub change: StatusChange,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingCreated {
    pub organization_id: String,
    pub engagement_id: String,
    pub title: String,
    pub severity: String,
    pub cvss: Option<Cvss>,
    pub cwe: Vec<String>,
    pub cve: Vec<String>,
    pub description: Option<String>,
    pub impact: Option<String>,
    pub remediation: Option<String>,
    pub steps_to_reproduce: Option<String>,
    pub references: Vec<String>,
    pub affected_target_ids: Vec<String>,
    pub status: String,
    pub review_status: String,
    pub retest_notes: Option<String>,
    pub tags: Vec<String>,
}

/// Only the fields that changed; `null` clears a field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingUpdated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::patch")]
    pub cvss: Option<Option<Cvss>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwe: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cve: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::patch")]
    pub description: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::patch")]
    pub impact: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::patch")]
    pub remediation: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::patch")]
    pub steps_to_reproduce: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affected_target_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::patch")]
    pub retest_notes: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

impl FindingUpdated {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl DomainEvent for FindingEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Created(_) => CREATED,
            Self::Updated(_) => "finding.updated",
            Self::StatusChanged(_) => "finding.status_changed",
            Self::ReviewStatusChanged(_) => "finding.review_status_changed",
            Self::Deleted(_) => "finding.deleted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creation_is_tagged_with_its_event_type() {
        let created = FindingEvent::Created(crate::testing::draft_finding("org_a", "eng_a", "t", "low"));
        let json: serde_json::Value = serde_json::to_value(&created).unwrap_or_default();
        assert!(json.get(CREATED).is_some(), "{json}");
        assert_eq!(created.event_type(), CREATED);
    }
}
