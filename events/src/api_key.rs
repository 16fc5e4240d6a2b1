//! Events of the `api_key` stream. The secret itself never enters an event: only its SHA-256.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use sqlx::AnyPool;

use crate::Empty;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ApiKeyEvent {
    #[serde(rename = "api_key.created")]
    Created(ApiKeyCreated),
    #[serde(rename = "api_key.revoked")]
    Revoked(Empty),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyCreated {
    pub organization_id: String,
    pub name: String,
    /// `live` or `test`.
    pub environment: String,
    pub prefix: String,
    pub last_four: String,
    /// Hex SHA-256 of the whole secret; keys are high-entropy, so a fast hash is enough.
    pub secret_hash: String,
    pub permissions: Vec<String>,
    /// RFC 3339, when the key stops working.
    pub expires_at: Option<String>,
}

impl DomainEvent for ApiKeyEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Created(_) => "api_key.created",
            Self::Revoked(_) => "api_key.revoked",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// Whether the key's revocation has committed: the write guard's state row (migration 1008) is
/// written in the revocation's own transaction, so, unlike a read table, it never lags the log.
pub async fn revoked(pool: &AnyPool, key_id: &str) -> Result<bool, sqlx::Error> {
    let revoked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_key_states WHERE key_id = $1 AND revoked")
            .bind(key_id)
            .fetch_one(pool)
            .await?;
    Ok(revoked > 0)
}
