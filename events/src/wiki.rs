//! Events of the `wiki_page` stream.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::Empty;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WikiPageEvent {
    #[serde(rename = "wiki_page.created")]
    Created(WikiPageCreated),
    #[serde(rename = "wiki_page.updated")]
    Updated(WikiPageUpdated),
    #[serde(rename = "wiki_page.deleted")]
    Deleted(Empty),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WikiPageCreated {
    pub organization_id: String,
    pub engagement_id: String,
    pub title: String,
    pub slug: String,
    /// Markdown.
    pub content: String,
    pub parent_id: Option<String>,
}

/// Only the fields that changed; `null` clears a field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WikiPageUpdated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::patch")]
    pub parent_id: Option<Option<String>>,
}

impl WikiPageUpdated {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl DomainEvent for WikiPageEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Created(_) => "wiki_page.created",
            Self::Updated(_) => "wiki_page.updated",
            Self::Deleted(_) => "wiki_page.deleted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}
