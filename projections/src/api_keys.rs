//! The `api_keys` read table: what authentication looks keys up in (by secret hash).

use async_trait::async_trait;
use pwnbook_events::api_key::ApiKeyEvent;
use pwnbook_events::LogEvent;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::{ProjectionError, Projector};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub prefix: String,
    pub last_four: String,
    pub secret_hash: String,
    pub permissions: Vec<String>,
    pub environment: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

impl ApiKeyRow {
    fn from_row(row: &AnyRow) -> Result<Self, ProjectionError> {
        let permissions: String = row.try_get("permissions")?;
        Ok(Self {
            id: row.try_get("id")?,
            organization_id: row.try_get("organization_id")?,
            name: row.try_get("name")?,
            prefix: row.try_get("prefix")?,
            last_four: row.try_get("last_four")?,
            secret_hash: row.try_get("secret_hash")?,
            permissions: serde_json::from_str(&permissions)?,
            environment: row.try_get("environment")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            version: row.try_get("version")?,
        })
    }
}

const COLUMNS: &str = "id, organization_id, name, prefix, last_four, secret_hash, permissions, environment, \
     expires_at, revoked_at, created_at, updated_at, version";

pub async fn find_by_secret_hash(
    pool: &AnyPool,
    secret_hash: &str,
) -> Result<Option<ApiKeyRow>, ProjectionError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE secret_hash = $1"))
        .bind(secret_hash)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(ApiKeyRow::from_row).transpose()
}

pub struct ApiKeysProjector;

#[async_trait]
impl Projector for ApiKeysProjector {
    fn name(&self) -> &'static str {
        "api_keys"
    }

    fn schema_version(&self) -> i64 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["api_keys"]
    }

    async fn apply(&self, tx: &mut Transaction<'_, Any>, events: &[LogEvent]) -> Result<(), ProjectionError> {
        for event in events.iter().filter(|e| e.aggregate_type == "api_key") {
            match serde_json::from_str::<ApiKeyEvent>(&event.payload)? {
                ApiKeyEvent::Created(created) => {
                    let expires_at = created
                        .expires_at
                        .as_deref()
                        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                        .map(|at| at.timestamp_millis());
                    sqlx::query(&format!(
                        "INSERT INTO api_keys ({COLUMNS}, name_key) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, $10, $11, $12) \
                         ON CONFLICT (id) DO NOTHING"
                    ))
                    .bind(&event.aggregate_id)
                    .bind(&created.organization_id)
                    .bind(&created.name)
                    .bind(&created.prefix)
                    .bind(&created.last_four)
                    .bind(&created.secret_hash)
                    .bind(serde_json::to_string(&created.permissions)?)
                    .bind(&created.environment)
                    .bind(expires_at)
                    .bind(event.recorded_at)
                    .bind(event.sequence)
                    .bind(created.name.to_lowercase())
                    .execute(&mut **tx)
                    .await?;
                }
                ApiKeyEvent::Revoked(_) => {
                    sqlx::query(
                        "UPDATE api_keys SET revoked_at = $1, updated_at = $1, version = $2 WHERE id = $3 AND version < $2",
                    )
                    .bind(event.recorded_at)
                    .bind(event.sequence)
                    .bind(&event.aggregate_id)
                    .execute(&mut **tx)
                    .await?;
                }
            }
        }
        Ok(())
    }
}
