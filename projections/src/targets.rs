//! The `targets` read table (with `target_tags` for the tag filter) and its list query.

use async_trait::async_trait;
use pwnbook_events::target::TargetEvent;
use pwnbook_events::LogEvent;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::list::{self, Order, SortValue, Window};
use crate::sql::{deletes_engagement, purge_engagement, replace_set, Reads, Sql};
use crate::{ProjectionError, Projector};

/// What this projector's `apply` reads (see `Reads`).
const READS: Reads = Reads { aggregate_type: "target", purges: true };

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRow {
    pub id: String,
    pub organization_id: String,
    pub engagement_id: String,
    pub kind: String,
    pub value: String,
    pub port: Option<i64>,
    pub protocol: Option<String>,
    pub in_scope: bool,
    pub tags: Vec<String>,
    pub notes: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

impl TargetRow {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, ProjectionError> {
        let tags: String = row.try_get("tags")?;
        let in_scope: i64 = row.try_get("in_scope")?;
        Ok(Self {
            id: row.try_get("id")?,
            organization_id: row.try_get("organization_id")?,
            engagement_id: row.try_get("engagement_id")?,
            kind: row.try_get("type")?,
            value: row.try_get("value")?,
            port: row.try_get("port")?,
            protocol: row.try_get("protocol")?,
            in_scope: in_scope != 0,
            tags: serde_json::from_str(&tags)?,
            notes: row.try_get("notes")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            version: row.try_get("version")?,
        })
    }
}

pub(crate) const COLUMNS: &str =
    "id, organization_id, engagement_id, type, value, port, protocol, in_scope, tags, notes, \
                       created_at, updated_at, version";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSort {
    CreatedAt,
    UpdatedAt,
    Value,
}

impl TargetSort {
    pub(crate) fn column(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
            Self::Value => "value_key",
        }
    }

    pub fn value_of(self, row: &TargetRow) -> SortValue {
        match self {
            Self::CreatedAt => SortValue::Int(row.created_at),
            Self::UpdatedAt => SortValue::Int(row.updated_at),
            Self::Value => SortValue::Text(row.value.to_lowercase()),
        }
    }

    pub fn accepts(self, value: &SortValue) -> bool {
        matches!(
            (self, value),
            (Self::CreatedAt | Self::UpdatedAt, SortValue::Int(_)) | (Self::Value, SortValue::Text(_))
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetFilter {
    pub engagement_id: String,
    pub kinds: Vec<String>,
    pub in_scope: Option<bool>,
    pub tags: Vec<String>,
    pub q: Option<String>,
}

fn push_filter(query: &mut Sql, filter: &TargetFilter) {
    query.push(" AND engagement_id = ").bind(filter.engagement_id.as_str());
    push_conditions(query, filter);
}

/// The conditions other than the engagement scope, shared with GraphQL's batched reads of many engagements.
pub(crate) fn push_conditions(query: &mut Sql, filter: &TargetFilter) {
    list::push_in(query, "type", &filter.kinds);
    if let Some(in_scope) = filter.in_scope {
        query.push(" AND in_scope = ").bind(i64::from(in_scope));
    }
    if let Some(q) = &filter.q {
        list::push_contains(query, "value_key", q);
    }
    if !filter.tags.is_empty() {
        query.push(" AND EXISTS (SELECT 1 FROM target_tags t WHERE t.target_id = targets.id");
        list::push_in(query, "t.tag", &filter.tags);
        query.push(")");
    }
}

pub async fn list(
    pool: &AnyPool,
    organization_id: &str,
    filter: &TargetFilter,
    sort: TargetSort,
    order: Order,
    window: &Window,
) -> Result<Vec<TargetRow>, ProjectionError> {
    let mut query = list::select(&format!("SELECT {COLUMNS} FROM targets"), organization_id);
    push_filter(&mut query, filter);
    list::push_window(&mut query, sort.column(), order, window);
    let rows = query.query().fetch_all(pool).await?;
    rows.iter().map(TargetRow::from_row).collect()
}

pub async fn count(
    pool: &AnyPool,
    organization_id: &str,
    filter: &TargetFilter,
) -> Result<i64, ProjectionError> {
    let mut query = list::select("SELECT COUNT(*) FROM targets", organization_id);
    push_filter(&mut query, filter);
    Ok(query.query().fetch_one(pool).await?.try_get(0)?)
}

pub async fn get(
    pool: &AnyPool,
    organization_id: &str,
    id: &str,
) -> Result<Option<TargetRow>, ProjectionError> {
    let row = crate::by_id::owned_row(
        pool,
        &format!("SELECT {COLUMNS} FROM targets WHERE id = $1"),
        id,
        organization_id,
    )
    .await?;
    row.as_ref().map(TargetRow::from_row).transpose()
}

/// Which of `ids` are live targets of `engagement_id`.
pub async fn existing_in_engagement(
    pool: &AnyPool,
    organization_id: &str,
    engagement_id: &str,
    ids: &[String],
) -> Result<Vec<String>, ProjectionError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = list::select("SELECT id FROM targets", organization_id);
    query.push(" AND engagement_id = ").bind(engagement_id);
    list::push_in(&mut query, "id", ids);
    let rows = query.query().fetch_all(pool).await?;
    rows.iter().map(|r| r.try_get("id").map_err(ProjectionError::from)).collect()
}

pub struct TargetsProjector;

#[async_trait]
impl Projector for TargetsProjector {
    fn name(&self) -> &'static str {
        "targets"
    }

    fn schema_version(&self) -> i64 {
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &["target_tags", "targets"]
    }

    fn inline_statements(&self, events: &[LogEvent]) -> Option<Vec<Sql>> {
        READS.untouched(events)
    }

    async fn apply(&self, tx: &mut Transaction<'_, Any>, events: &[LogEvent]) -> Result<(), ProjectionError> {
        for event in events.iter().filter(|e| READS.event(e)) {
            if deletes_engagement(event) {
                purge_engagement(tx, event, "targets", &[("target_tags", "target_id")]).await?;
                continue;
            }
            let id = event.aggregate_id.as_str();
            match serde_json::from_str::<TargetEvent>(&event.payload)? {
                TargetEvent::Created(c) => {
                    let inserted = sqlx::query(&format!(
                        "INSERT INTO targets ({COLUMNS}, value_key) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13) \
                         ON CONFLICT (id) DO NOTHING"
                    ))
                    .bind(id)
                    .bind(&c.organization_id)
                    .bind(&c.engagement_id)
                    .bind(&c.kind)
                    .bind(&c.value)
                    .bind(c.port.map(i64::from))
                    .bind(&c.protocol)
                    .bind(i64::from(c.in_scope))
                    .bind(serde_json::to_string(&c.tags)?)
                    .bind(&c.notes)
                    .bind(event.recorded_at)
                    .bind(event.sequence)
                    .bind(c.value.to_lowercase())
                    .execute(&mut **tx)
                    .await?;
                    if inserted.rows_affected() == 1 {
                        replace_set(tx, "target_tags", "target_id", "tag", id, &c.tags).await?;
                    }
                }
                TargetEvent::Updated(u) => {
                    let mut query = Sql::new("UPDATE targets SET updated_at = ");
                    query.bind(event.recorded_at).push(", version = ").bind(event.sequence);
                    if let Some(kind) = &u.kind {
                        query.push(", type = ").bind(kind.as_str());
                    }
                    if let Some(value) = &u.value {
                        query.push(", value = ").bind(value.as_str());
                        query.push(", value_key = ").bind(value.to_lowercase());
                    }
                    if let Some(port) = u.port {
                        query.push(", port = ").bind(port.map(i64::from));
                    }
                    if let Some(protocol) = &u.protocol {
                        query.push(", protocol = ").bind(protocol.clone());
                    }
                    if let Some(in_scope) = u.in_scope {
                        query.push(", in_scope = ").bind(i64::from(in_scope));
                    }
                    if let Some(tags) = &u.tags {
                        query.push(", tags = ").bind(serde_json::to_string(tags)?);
                    }
                    if let Some(notes) = &u.notes {
                        query.push(", notes = ").bind(notes.clone());
                    }
                    query.push(" WHERE id = ").bind(id).push(" AND version < ").bind(event.sequence);
                    let updated = query.query().execute(&mut **tx).await?;
                    if let (1, Some(tags)) = (updated.rows_affected(), &u.tags) {
                        replace_set(tx, "target_tags", "target_id", "tag", id, tags).await?;
                    }
                }
                TargetEvent::Deleted(_) => {
                    replace_set(tx, "target_tags", "target_id", "tag", id, &[]).await?;
                    sqlx::query("DELETE FROM targets WHERE id = $1").bind(id).execute(&mut **tx).await?;
                }
            }
        }
        Ok(())
    }
}

/// The row as of the end of `events` (one target's stream, in order), folded the way the
/// projector applies them: time travel. `None` before the creation and after the deletion.
pub fn fold(events: &[LogEvent]) -> Result<Option<TargetRow>, ProjectionError> {
    let mut row: Option<TargetRow> = None;
    for event in events {
        match serde_json::from_str::<TargetEvent>(&event.payload)? {
            TargetEvent::Created(c) => {
                row = Some(TargetRow {
                    id: event.aggregate_id.clone(),
                    organization_id: c.organization_id,
                    engagement_id: c.engagement_id,
                    kind: c.kind,
                    value: c.value,
                    port: c.port.map(i64::from),
                    protocol: c.protocol,
                    in_scope: c.in_scope,
                    tags: c.tags,
                    notes: c.notes,
                    created_at: event.recorded_at,
                    updated_at: event.recorded_at,
                    version: event.sequence,
                });
            }
            TargetEvent::Updated(u) => {
                if let Some(row) = row.as_mut() {
                    if let Some(kind) = u.kind {
                        row.kind = kind;
                    }
                    if let Some(value) = u.value {
                        row.value = value;
                    }
                    if let Some(port) = u.port {
                        row.port = port.map(i64::from);
                    }
                    if let Some(protocol) = u.protocol {
                        row.protocol = protocol;
                    }
                    if let Some(in_scope) = u.in_scope {
                        row.in_scope = in_scope;
                    }
                    if let Some(tags) = u.tags {
                        row.tags = tags;
                    }
                    if let Some(notes) = u.notes {
                        row.notes = notes;
                    }
                    row.updated_at = event.recorded_at;
                    row.version = event.sequence;
                }
            }
            TargetEvent::Deleted(_) => row = None,
        }
    }
    Ok(row)
}
