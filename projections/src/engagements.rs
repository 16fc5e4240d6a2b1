//! The `engagements` read table (with `engagement_tags` for the tag filter) and its list query.

use async_trait::async_trait;
use pwnbook_events::engagement::EngagementEvent;
use pwnbook_events::LogEvent;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::list::{self, Order, SortValue, Window};
use crate::sql::{Reads, Sql};
use crate::{ProjectionError, Projector};

/// What this projector's `apply` reads (see `Reads`).
const READS: Reads = Reads { aggregate_type: "engagement", purges: false };

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngagementRow {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub description: Option<String>,
    pub status: String,
    pub client_name: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub tags: Vec<String>,
    pub archived_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

impl EngagementRow {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, ProjectionError> {
        let tags: String = row.try_get("tags")?;
        Ok(Self {
            id: row.try_get("id")?,
            organization_id: row.try_get("organization_id")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            status: row.try_get("status")?,
            client_name: row.try_get("client_name")?,
            start_date: row.try_get("start_date")?,
            end_date: row.try_get("end_date")?,
            tags: serde_json::from_str(&tags)?,
            archived_at: row.try_get("archived_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            version: row.try_get("version")?,
        })
    }
}

pub(crate) const COLUMNS: &str =
    "id, organization_id, name, description, status, client_name, start_date, end_date, tags, \
     archived_at, created_at, updated_at, version";

/// Sort fields of `GET /engagements`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngagementSort {
    CreatedAt,
    UpdatedAt,
    Name,
    StartDate,
}

impl EngagementSort {
    fn column(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
            // Case-insensitive, like the uniqueness of names.
            Self::Name => "name_key",
            // Engagements without a start date sort first in ascending order.
            Self::StartDate => "start_date_key",
        }
    }

    /// The row's value of this sort column, for the next cursor.
    pub fn value_of(self, row: &EngagementRow) -> SortValue {
        match self {
            Self::CreatedAt => SortValue::Int(row.created_at),
            Self::UpdatedAt => SortValue::Int(row.updated_at),
            Self::Name => SortValue::Text(row.name.to_lowercase()),
            Self::StartDate => SortValue::Text(row.start_date.clone().unwrap_or_default()),
        }
    }

    /// Whether a cursor value has this column's type.
    pub fn accepts(self, value: &SortValue) -> bool {
        matches!(
            (self, value),
            (Self::CreatedAt | Self::UpdatedAt, SortValue::Int(_))
                | (Self::Name | Self::StartDate, SortValue::Text(_))
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngagementFilter {
    pub status: Vec<String>,
    pub q: Option<String>,
    pub tags: Vec<String>,
    pub client_names: Vec<String>,
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
}

fn push_filter(query: &mut Sql, filter: &EngagementFilter) {
    list::push_in(query, "status", &filter.status);
    list::push_in(query, "client_name", &filter.client_names);
    if let Some(q) = &filter.q {
        list::push_contains(query, "name_key", q);
    }
    if !filter.tags.is_empty() {
        query.push(" AND EXISTS (SELECT 1 FROM engagement_tags t WHERE t.engagement_id = engagements.id");
        list::push_in(query, "t.tag", &filter.tags);
        query.push(")");
    }
    list::push_range(query, "created_at", filter.created_after, filter.created_before);
}

pub async fn list(
    pool: &AnyPool,
    organization_id: &str,
    filter: &EngagementFilter,
    sort: EngagementSort,
    order: Order,
    window: &Window,
) -> Result<Vec<EngagementRow>, ProjectionError> {
    let mut query = list::select(&format!("SELECT {COLUMNS} FROM engagements"), organization_id);
    push_filter(&mut query, filter);
    list::push_window(&mut query, sort.column(), order, window);
    let rows = query.query().fetch_all(pool).await?;
    rows.iter().map(EngagementRow::from_row).collect()
}

pub async fn count(
    pool: &AnyPool,
    organization_id: &str,
    filter: &EngagementFilter,
) -> Result<i64, ProjectionError> {
    let mut query = list::select("SELECT COUNT(*) FROM engagements", organization_id);
    push_filter(&mut query, filter);
    Ok(query.query().fetch_one(pool).await?.try_get(0)?)
}

pub async fn get(
    pool: &AnyPool,
    organization_id: &str,
    id: &str,
) -> Result<Option<EngagementRow>, ProjectionError> {
    let row = crate::by_id::owned_row(
        pool,
        &format!("SELECT {COLUMNS} FROM engagements WHERE id = $1"),
        id,
        organization_id,
    )
    .await?;
    row.as_ref().map(EngagementRow::from_row).transpose()
}

pub struct EngagementsProjector;

#[async_trait]
impl Projector for EngagementsProjector {
    fn name(&self) -> &'static str {
        "engagements"
    }

    fn schema_version(&self) -> i64 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["engagement_tags", "engagements"]
    }

    fn inline_statements(&self, events: &[LogEvent]) -> Option<Vec<Sql>> {
        READS.untouched(events)
    }

    async fn apply(&self, tx: &mut Transaction<'_, Any>, events: &[LogEvent]) -> Result<(), ProjectionError> {
        for event in events.iter().filter(|e| READS.event(e)) {
            let id = event.aggregate_id.as_str();
            match serde_json::from_str::<EngagementEvent>(&event.payload)? {
                EngagementEvent::Created(created) => {
                    let inserted = sqlx::query(&format!(
                        "INSERT INTO engagements ({COLUMNS}, name_key, start_date_key) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, $10, $11, $12, $13) \
                         ON CONFLICT (id) DO NOTHING"
                    ))
                    .bind(id)
                    .bind(&created.organization_id)
                    .bind(&created.name)
                    .bind(&created.description)
                    .bind(&created.status)
                    .bind(&created.client_name)
                    .bind(&created.start_date)
                    .bind(&created.end_date)
                    .bind(serde_json::to_string(&created.tags)?)
                    .bind(event.recorded_at)
                    .bind(event.sequence)
                    .bind(created.name.to_lowercase())
                    .bind(created.start_date.clone().unwrap_or_default())
                    .execute(&mut **tx)
                    .await?;
                    if inserted.rows_affected() == 1 {
                        insert_tags(tx, id, &created.tags).await?;
                    }
                }
                EngagementEvent::Updated(changed) => {
                    let mut query = Sql::new("UPDATE engagements SET updated_at = ");
                    query.bind(event.recorded_at).push(", version = ").bind(event.sequence);
                    if let Some(name) = &changed.name {
                        query.push(", name = ").bind(name.clone());
                        query.push(", name_key = ").bind(name.to_lowercase());
                    }
                    if let Some(description) = &changed.description {
                        query.push(", description = ").bind(description.clone());
                    }
                    if let Some(client_name) = &changed.client_name {
                        query.push(", client_name = ").bind(client_name.clone());
                    }
                    if let Some(start_date) = &changed.start_date {
                        query.push(", start_date = ").bind(start_date.clone());
                        query.push(", start_date_key = ").bind(start_date.clone().unwrap_or_default());
                    }
                    if let Some(end_date) = &changed.end_date {
                        query.push(", end_date = ").bind(end_date.clone());
                    }
                    if let Some(tags) = &changed.tags {
                        query.push(", tags = ").bind(serde_json::to_string(tags)?);
                    }
                    query.push(" WHERE id = ").bind(id).push(" AND version < ").bind(event.sequence);
                    let updated = query.query().execute(&mut **tx).await?;
                    if let (1, Some(tags)) = (updated.rows_affected(), &changed.tags) {
                        replace_tags(tx, id, tags).await?;
                    }
                }
                EngagementEvent::Archived(change) | EngagementEvent::Unarchived(change) => {
                    let archived_at = (change.to == "archived").then_some(event.recorded_at);
                    sqlx::query(
                        "UPDATE engagements SET status = $1, archived_at = $2, updated_at = $3, version = $4 \
                         WHERE id = $5 AND version < $4",
                    )
                    .bind(&change.to)
                    .bind(archived_at)
                    .bind(event.recorded_at)
                    .bind(event.sequence)
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
                }
                EngagementEvent::Deleted(_) => {
                    sqlx::query("DELETE FROM engagement_tags WHERE engagement_id = $1")
                        .bind(id)
                        .execute(&mut **tx)
                        .await?;
                    sqlx::query("DELETE FROM engagements WHERE id = $1").bind(id).execute(&mut **tx).await?;
                }
            }
        }
        Ok(())
    }
}

/// A just-inserted engagement's tags in one statement: it cannot have any yet (a deletion takes
/// its tags along), so there is nothing to delete first.
async fn insert_tags(
    tx: &mut Transaction<'_, Any>,
    id: &str,
    tags: &[String],
) -> Result<(), ProjectionError> {
    if tags.is_empty() {
        return Ok(());
    }
    let mut query = Sql::new("INSERT INTO engagement_tags (engagement_id, tag) VALUES ");
    for (i, tag) in tags.iter().enumerate() {
        query.push(if i == 0 { "(" } else { ", (" });
        query.bind(id).push(", ").bind(tag.as_str()).push(")");
    }
    query.push(" ON CONFLICT DO NOTHING");
    query.query().execute(&mut **tx).await?;
    Ok(())
}

async fn replace_tags(
    tx: &mut Transaction<'_, Any>,
    id: &str,
    tags: &[String],
) -> Result<(), ProjectionError> {
    sqlx::query("DELETE FROM engagement_tags WHERE engagement_id = $1").bind(id).execute(&mut **tx).await?;
    for tag in tags {
        sqlx::query("INSERT INTO engagement_tags (engagement_id, tag) VALUES ($1, $2)")
            .bind(id)
            .bind(tag)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The row as of the end of `events` (one engagement's stream, in order), folded the way the
/// projector applies them: time travel. `None` before the creation and after the deletion.
pub fn fold(events: &[LogEvent]) -> Result<Option<EngagementRow>, ProjectionError> {
    let mut row: Option<EngagementRow> = None;
    for event in events {
        match serde_json::from_str::<EngagementEvent>(&event.payload)? {
            EngagementEvent::Created(created) => {
                row = Some(EngagementRow {
                    id: event.aggregate_id.clone(),
                    organization_id: created.organization_id,
                    name: created.name,
                    description: created.description,
                    status: created.status,
                    client_name: created.client_name,
                    start_date: created.start_date,
                    end_date: created.end_date,
                    tags: created.tags,
                    archived_at: None,
                    created_at: event.recorded_at,
                    updated_at: event.recorded_at,
                    version: event.sequence,
                });
            }
            EngagementEvent::Updated(changed) => {
                if let Some(row) = row.as_mut() {
                    if let Some(name) = changed.name {
                        row.name = name;
                    }
                    if let Some(description) = changed.description {
                        row.description = description;
                    }
                    if let Some(client_name) = changed.client_name {
                        row.client_name = client_name;
                    }
                    if let Some(start_date) = changed.start_date {
                        row.start_date = start_date;
                    }
                    if let Some(end_date) = changed.end_date {
                        row.end_date = end_date;
                    }
                    if let Some(tags) = changed.tags {
                        row.tags = tags;
                    }
                    row.updated_at = event.recorded_at;
                    row.version = event.sequence;
                }
            }
            EngagementEvent::Archived(change) | EngagementEvent::Unarchived(change) => {
                if let Some(row) = row.as_mut() {
                    row.archived_at = (change.to == "archived").then_some(event.recorded_at);
                    row.status = change.to;
                    row.updated_at = event.recorded_at;
                    row.version = event.sequence;
                }
            }
            EngagementEvent::Deleted(_) => row = None,
        }
    }
    Ok(row)
}
