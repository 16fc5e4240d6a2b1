//! Events of the `webhook` stream. The signing secret is part of the stream (deliveries after a
//! rebuild must sign with it) but never of an event object shown to clients.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::Empty;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WebhookEvent {
    #[serde(rename = "webhook.created")]
    Created(WebhookCreated),
    #[serde(rename = "webhook.updated")]
    Updated(WebhookUpdated),
    #[serde(rename = "webhook.deleted")]
    Deleted(Empty),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookCreated {
    pub organization_id: String,
    pub url: String,
    /// Event types and `prefix.*` patterns (the `type` filter of `GET /events`).
    pub events: Vec<String>,
    pub secret: String,
}

/// Only the fields that changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookUpdated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl WebhookUpdated {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl DomainEvent for WebhookEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Created(_) => "webhook.created",
            Self::Updated(_) => "webhook.updated",
            Self::Deleted(_) => "webhook.deleted",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}
