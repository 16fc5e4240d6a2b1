//! The `organizations` read table.

use async_trait::async_trait;
use pwnbook_events::organization::OrganizationEvent;
use pwnbook_events::LogEvent;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::sql::{Reads, Sql};
use crate::{ProjectionError, Projector};

/// What this projector's `apply` reads (see `Reads`).
const READS: Reads = Reads { aggregate_type: "organization", purges: false };

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganizationRow {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

impl OrganizationRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            slug: row.try_get("slug")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            version: row.try_get("version")?,
        })
    }
}

pub async fn get(pool: &AnyPool, id: &str) -> Result<Option<OrganizationRow>, ProjectionError> {
    let row = sqlx::query(
        "SELECT id, name, slug, created_at, updated_at, version FROM organizations WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(OrganizationRow::from_row).transpose()?)
}

/// Live engagements of the organization.
pub async fn engagement_count(pool: &AnyPool, id: &str) -> Result<i64, ProjectionError> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM engagements WHERE organization_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await?)
}

pub async fn count(pool: &AnyPool) -> Result<i64, ProjectionError> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM organizations").fetch_one(pool).await?)
}

pub struct OrganizationsProjector;

#[async_trait]
impl Projector for OrganizationsProjector {
    fn name(&self) -> &'static str {
        "organizations"
    }

    fn schema_version(&self) -> i64 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["organizations"]
    }

    fn inline_statements(&self, events: &[LogEvent]) -> Option<Vec<Sql>> {
        READS.untouched(events)
    }

    async fn apply(&self, tx: &mut Transaction<'_, Any>, events: &[LogEvent]) -> Result<(), ProjectionError> {
        for event in events.iter().filter(|e| READS.event(e)) {
            match serde_json::from_str::<OrganizationEvent>(&event.payload)? {
                OrganizationEvent::Created(created) => {
                    sqlx::query(
                        "INSERT INTO organizations (id, name, slug, created_at, updated_at, version) \
                         VALUES ($1, $2, $3, $4, $4, $5) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(&event.aggregate_id)
                    .bind(&created.name)
                    .bind(&created.slug)
                    .bind(event.recorded_at)
                    .bind(event.sequence)
                    .execute(&mut **tx)
                    .await?;
                }
                OrganizationEvent::Updated(updated) => {
                    sqlx::query(
                        "UPDATE organizations SET name = $1, updated_at = $2, version = $3 \
                         WHERE id = $4 AND version < $3",
                    )
                    .bind(&updated.name)
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

/// The row as of the end of `events` (the organization's stream, in order): time travel.
pub fn fold(events: &[LogEvent]) -> Result<Option<OrganizationRow>, ProjectionError> {
    let mut row: Option<OrganizationRow> = None;
    for event in events {
        match serde_json::from_str::<OrganizationEvent>(&event.payload)? {
            OrganizationEvent::Created(created) => {
                row = Some(OrganizationRow {
                    id: event.aggregate_id.clone(),
                    name: created.name,
                    slug: created.slug,
                    created_at: event.recorded_at,
                    updated_at: event.recorded_at,
                    version: event.sequence,
                });
            }
            OrganizationEvent::Updated(updated) => {
                if let Some(row) = row.as_mut() {
                    row.name = updated.name;
                    row.updated_at = event.recorded_at;
                    row.version = event.sequence;
                }
            }
        }
    }
    Ok(row)
}

/// Live engagements of the organization at `millis`, counted from the log.
pub async fn engagement_count_at(pool: &AnyPool, id: &str, millis: i64) -> Result<i64, ProjectionError> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(SUM(CASE event_type WHEN 'engagement.created' THEN 1 ELSE -1 END), 0) \
         FROM event_log WHERE organization_id = $1 AND recorded_at <= $2 \
         AND event_type IN ('engagement.created', 'engagement.deleted')",
    )
    .bind(id)
    .bind(millis)
    .fetch_one(pool)
    .await?)
}
