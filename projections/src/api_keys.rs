//! The `api_keys` read table: what authentication looks keys up in (by secret hash).

use async_trait::async_trait;
use pwnbook_events::api_key::ApiKeyEvent;
use pwnbook_events::LogEvent;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::list::{self, Order, SortValue, Window};
use crate::sql::{Reads, Sql};
use crate::{ProjectionError, Projector};

/// What this projector's `apply` reads (see `Reads`).
const READS: Reads = Reads { aggregate_type: "api_key", purges: false };

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
    pub last_used_at: Option<i64>,
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
            last_used_at: row.try_get("last_used_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            version: row.try_get("version")?,
        })
    }
}

const COLUMNS: &str = "id, organization_id, name, prefix, last_four, secret_hash, permissions, environment, \
     expires_at, revoked_at, created_at, updated_at, version";
/// Keys with their usage (operational data kept beside the projection, see `record_use`).
const SELECT: &str =
    "SELECT id, organization_id, name, prefix, last_four, secret_hash, permissions, environment, \
     expires_at, revoked_at, created_at, updated_at, version, u.last_used_at AS last_used_at \
     FROM api_keys LEFT JOIN api_key_usage u ON u.key_id = api_keys.id";

/// Sort fields of `GET /api-keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeySort {
    CreatedAt,
    Name,
    LastUsedAt,
}

impl ApiKeySort {
    fn column(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::Name => "name_key",
            // Never-used keys sort as the oldest use.
            Self::LastUsedAt => "COALESCE(u.last_used_at, 0)",
        }
    }

    pub fn value_of(self, row: &ApiKeyRow) -> SortValue {
        match self {
            Self::CreatedAt => SortValue::Int(row.created_at),
            Self::Name => SortValue::Text(row.name.to_lowercase()),
            Self::LastUsedAt => SortValue::Int(row.last_used_at.unwrap_or(0)),
        }
    }

    pub fn accepts(self, value: &SortValue) -> bool {
        matches!(
            (self, value),
            (Self::CreatedAt | Self::LastUsedAt, SortValue::Int(_)) | (Self::Name, SortValue::Text(_))
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiKeyFilter {
    pub environment: Vec<String>,
    pub revoked: Option<bool>,
}

fn push_filter(sql: &mut Sql, filter: &ApiKeyFilter) {
    list::push_in(sql, "environment", &filter.environment);
    match filter.revoked {
        Some(true) => sql.push(" AND revoked_at IS NOT NULL"),
        Some(false) => sql.push(" AND revoked_at IS NULL"),
        None => sql,
    };
}

pub async fn list(
    pool: &AnyPool,
    organization_id: &str,
    filter: &ApiKeyFilter,
    sort: ApiKeySort,
    order: Order,
    window: &Window,
) -> Result<Vec<ApiKeyRow>, ProjectionError> {
    let mut sql = list::select(SELECT, organization_id);
    push_filter(&mut sql, filter);
    list::push_window(&mut sql, sort.column(), order, window);
    let rows = sql.query().fetch_all(pool).await?;
    rows.iter().map(ApiKeyRow::from_row).collect()
}

pub async fn count(
    pool: &AnyPool,
    organization_id: &str,
    filter: &ApiKeyFilter,
) -> Result<i64, ProjectionError> {
    let mut sql = list::select("SELECT COUNT(*) FROM api_keys", organization_id);
    push_filter(&mut sql, filter);
    Ok(sql.query().fetch_one(pool).await?.try_get(0)?)
}

pub async fn get(
    pool: &AnyPool,
    organization_id: &str,
    id: &str,
) -> Result<Option<ApiKeyRow>, ProjectionError> {
    let row = crate::by_id::owned_row(pool, &format!("{SELECT} WHERE id = $1"), id, organization_id).await?;
    row.as_ref().map(ApiKeyRow::from_row).transpose()
}

pub async fn find_by_secret_hash(
    pool: &AnyPool,
    secret_hash: &str,
) -> Result<Option<ApiKeyRow>, ProjectionError> {
    let row = sqlx::query(&format!("{SELECT} WHERE secret_hash = $1"))
        .bind(secret_hash)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(ApiKeyRow::from_row).transpose()
}

/// Records that a key was used at `at` (operational data: no event, not rebuilt).
pub async fn record_use(pool: &AnyPool, key_id: &str, at: i64) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO api_key_usage (key_id, last_used_at) VALUES ($1, $2) \
         ON CONFLICT (key_id) DO UPDATE SET last_used_at = excluded.last_used_at",
    )
    .bind(key_id)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
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

    fn inline_statements(&self, events: &[LogEvent]) -> Option<Vec<Sql>> {
        READS.untouched(events)
    }

    async fn apply(&self, tx: &mut Transaction<'_, Any>, events: &[LogEvent]) -> Result<(), ProjectionError> {
        for event in events.iter().filter(|e| READS.event(e)) {
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

/// The row as of the end of `events` (one key's stream, in order): time travel. Usage
/// (`last_used_at`) is operational data outside the log, so it is `None` here.
pub fn fold(events: &[LogEvent]) -> Result<Option<ApiKeyRow>, ProjectionError> {
    let mut row: Option<ApiKeyRow> = None;
    for event in events {
        match serde_json::from_str::<ApiKeyEvent>(&event.payload)? {
            ApiKeyEvent::Created(created) => {
                row = Some(ApiKeyRow {
                    id: event.aggregate_id.clone(),
                    organization_id: created.organization_id,
                    name: created.name,
                    prefix: created.prefix,
                    last_four: created.last_four,
                    secret_hash: created.secret_hash,
                    permissions: created.permissions,
                    environment: created.environment,
                    expires_at: created
                        .expires_at
                        .as_deref()
                        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                        .map(|at| at.timestamp_millis()),
                    revoked_at: None,
                    last_used_at: None,
                    created_at: event.recorded_at,
                    updated_at: event.recorded_at,
                    version: event.sequence,
                });
            }
            ApiKeyEvent::Revoked(_) => {
                if let Some(row) = row.as_mut() {
                    row.revoked_at = Some(event.recorded_at);
                    row.updated_at = event.recorded_at;
                    row.version = event.sequence;
                }
            }
        }
    }
    Ok(row)
}
