//! The `webhooks` read table: the subscriptions the dispatcher delivers to.

use async_trait::async_trait;
use pwnbook_events::webhook::WebhookEvent;
use pwnbook_events::LogEvent;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::list::{self, Order, SortValue, Window};
use crate::sql::{Reads, Sql};
use crate::{ProjectionError, Projector};

/// What this projector's `apply` reads (see `Reads`).
const READS: Reads = Reads { aggregate_type: "webhook", purges: false };

#[derive(Clone, PartialEq, Eq)]
pub struct WebhookRow {
    pub id: String,
    pub organization_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

/// Debug output never shows the signing secret.
impl std::fmt::Debug for WebhookRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRow")
            .field("id", &self.id)
            .field("organization_id", &self.organization_id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("version", &self.version)
            .finish()
    }
}

impl WebhookRow {
    fn from_row(row: &AnyRow) -> Result<Self, ProjectionError> {
        let events: String = row.try_get("events")?;
        Ok(Self {
            id: row.try_get("id")?,
            organization_id: row.try_get("organization_id")?,
            url: row.try_get("url")?,
            events: serde_json::from_str(&events)?,
            secret: row.try_get("secret")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            version: row.try_get("version")?,
        })
    }

    /// The cursor value of the list's one sort (`createdAt`).
    pub fn sort_value(&self) -> SortValue {
        SortValue::Int(self.created_at)
    }
}

const COLUMNS: &str = "id, organization_id, url, events, secret, created_at, updated_at, version";

pub async fn list(
    pool: &AnyPool,
    organization_id: &str,
    order: Order,
    window: &Window,
) -> Result<Vec<WebhookRow>, ProjectionError> {
    let mut sql = list::select(&format!("SELECT {COLUMNS} FROM webhooks"), organization_id);
    list::push_window(&mut sql, "created_at", order, window);
    let rows = sql.query().fetch_all(pool).await?;
    rows.iter().map(WebhookRow::from_row).collect()
}

pub async fn count(pool: &AnyPool, organization_id: &str) -> Result<i64, ProjectionError> {
    Ok(list::select("SELECT COUNT(*) FROM webhooks", organization_id)
        .query()
        .fetch_one(pool)
        .await?
        .try_get(0)?)
}

pub async fn get(
    pool: &AnyPool,
    organization_id: &str,
    id: &str,
) -> Result<Option<WebhookRow>, ProjectionError> {
    let row = crate::by_id::owned_row(
        pool,
        &format!("SELECT {COLUMNS} FROM webhooks WHERE id = $1"),
        id,
        organization_id,
    )
    .await?;
    row.as_ref().map(WebhookRow::from_row).transpose()
}

/// Every webhook of every organization (the dispatcher's work list).
pub async fn all(pool: &AnyPool) -> Result<Vec<WebhookRow>, ProjectionError> {
    let rows =
        Sql::new(&format!("SELECT {COLUMNS} FROM webhooks ORDER BY id")).query().fetch_all(pool).await?;
    rows.iter().map(WebhookRow::from_row).collect()
}

/// The row as of the end of `events` (one webhook's stream, in order): time travel.
pub fn fold(events: &[LogEvent]) -> Result<Option<WebhookRow>, ProjectionError> {
    let mut row: Option<WebhookRow> = None;
    for event in events {
        match serde_json::from_str::<WebhookEvent>(&event.payload)? {
            WebhookEvent::Created(created) => {
                row = Some(WebhookRow {
                    id: event.aggregate_id.clone(),
                    organization_id: created.organization_id,
                    url: created.url,
                    events: created.events,
                    secret: created.secret,
                    created_at: event.recorded_at,
                    updated_at: event.recorded_at,
                    version: event.sequence,
                });
            }
            WebhookEvent::Updated(changed) => {
                if let Some(row) = row.as_mut() {
                    if let Some(url) = changed.url {
                        row.url = url;
                    }
                    if let Some(events) = changed.events {
                        row.events = events;
                    }
                    if let Some(secret) = changed.secret {
                        row.secret = secret;
                    }
                    row.updated_at = event.recorded_at;
                    row.version = event.sequence;
                }
            }
            WebhookEvent::Deleted(_) => row = None,
        }
    }
    Ok(row)
}

pub struct WebhooksProjector;

#[async_trait]
impl Projector for WebhooksProjector {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn schema_version(&self) -> i64 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["webhooks"]
    }

    fn inline_statements(&self, events: &[LogEvent]) -> Option<Vec<Sql>> {
        READS.untouched(events)
    }

    async fn apply(&self, tx: &mut Transaction<'_, Any>, events: &[LogEvent]) -> Result<(), ProjectionError> {
        for event in events.iter().filter(|e| READS.event(e)) {
            match serde_json::from_str::<WebhookEvent>(&event.payload)? {
                WebhookEvent::Created(created) => {
                    sqlx::query(&format!(
                        "INSERT INTO webhooks ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6, $7) \
                         ON CONFLICT (id) DO NOTHING"
                    ))
                    .bind(&event.aggregate_id)
                    .bind(&created.organization_id)
                    .bind(&created.url)
                    .bind(serde_json::to_string(&created.events)?)
                    .bind(&created.secret)
                    .bind(event.recorded_at)
                    .bind(event.sequence)
                    .execute(&mut **tx)
                    .await?;
                }
                WebhookEvent::Updated(changed) => {
                    let mut query = Sql::new("UPDATE webhooks SET updated_at = ");
                    query.bind(event.recorded_at).push(", version = ").bind(event.sequence);
                    if let Some(url) = &changed.url {
                        query.push(", url = ").bind(url.clone());
                    }
                    if let Some(events) = &changed.events {
                        query.push(", events = ").bind(serde_json::to_string(events)?);
                    }
                    if let Some(secret) = &changed.secret {
                        query.push(", secret = ").bind(secret.clone());
                    }
                    query.push(" WHERE id = ").bind(event.aggregate_id.as_str());
                    query.push(" AND version < ").bind(event.sequence);
                    query.query().execute(&mut **tx).await?;
                }
                WebhookEvent::Deleted(_) => {
                    sqlx::query("DELETE FROM webhooks WHERE id = $1")
                        .bind(&event.aggregate_id)
                        .execute(&mut **tx)
                        .await?;
                }
            }
        }
        Ok(())
    }
}
