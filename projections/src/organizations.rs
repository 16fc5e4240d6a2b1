//! The `organizations` read table.

use async_trait::async_trait;
use pwnbook_events::organization::OrganizationEvent;
use pwnbook_events::LogEvent;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::{ProjectionError, Projector};

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

    async fn apply(&self, tx: &mut Transaction<'_, Any>, events: &[LogEvent]) -> Result<(), ProjectionError> {
        for event in events.iter().filter(|e| e.aggregate_type == "organization") {
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
