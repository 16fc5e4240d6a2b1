//! The metadata stored with every event (cqrs-es keeps it as a string map).

use std::collections::HashMap;

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `api_key` or `system`.
    pub kind: String,
    pub id: Option<String>,
    pub name: String,
}

impl Actor {
    pub fn system() -> Self {
        Self { kind: "system".to_owned(), id: None, name: "system".to_owned() }
    }

    pub fn api_key(id: &str, name: &str) -> Self {
        Self { kind: "api_key".to_owned(), id: Some(id.to_owned()), name: name.to_owned() }
    }
}

/// A cross-aggregate uniqueness claim, enforced by the `unique_names` trigger in the same
/// transaction as the events (see the event-store migration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameClaim {
    /// Take `key` in `scope` for this aggregate, dropping the name it held before in that scope.
    Reserve { scope: String, key: String },
    /// Drop whatever this aggregate holds in `scope`.
    Release { scope: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMetadata {
    pub organization_id: String,
    pub engagement_id: Option<String>,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub claim: Option<NameClaim>,
}

impl EventMetadata {
    pub fn into_map(self) -> HashMap<String, String> {
        let mut map = HashMap::new();
        map.insert("organizationId".to_owned(), self.organization_id);
        map.insert("actorType".to_owned(), self.actor.kind);
        map.insert("actorName".to_owned(), self.actor.name);
        let optional = [
            ("engagementId", self.engagement_id),
            ("actorId", self.actor.id),
            ("requestId", self.request_id),
            ("idempotencyKey", self.idempotency_key),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                map.insert(key.to_owned(), value);
            }
        }
        match self.claim {
            Some(NameClaim::Reserve { scope, key }) => {
                map.insert("reserveScope".to_owned(), scope);
                map.insert("reserveKey".to_owned(), key);
            }
            Some(NameClaim::Release { scope }) => {
                map.insert("releaseScope".to_owned(), scope);
            }
            None => {}
        }
        map
    }
}
