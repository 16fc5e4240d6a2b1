//! The `reports` read table (with the last generated document) and its list query.

use async_trait::async_trait;
use pwnbook_events::report::{ReportEvent, ReportGenerated};
use pwnbook_events::LogEvent;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::list::{self, Order, SortValue, Window};
use crate::sql::{deletes_engagement, purge_engagement, Reads, Sql};
use crate::{ProjectionError, Projector};

/// What this projector's `apply` reads (see `Reads`).
const READS: Reads = Reads { aggregate_type: "report", purges: true };

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    pub id: String,
    pub organization_id: String,
    pub engagement_id: String,
    pub title: String,
    pub format: String,
    pub status: String,
    pub content_format: Option<String>,
    pub finding_count: Option<i64>,
    pub generated_at: Option<i64>,
    pub published_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

impl ReportRow {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, ProjectionError> {
        Ok(Self {
            id: row.try_get("id")?,
            organization_id: row.try_get("organization_id")?,
            engagement_id: row.try_get("engagement_id")?,
            title: row.try_get("title")?,
            format: row.try_get("format")?,
            status: row.try_get("status")?,
            content_format: row.try_get("content_format")?,
            finding_count: row.try_get("finding_count")?,
            generated_at: row.try_get("generated_at")?,
            published_at: row.try_get("published_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            version: row.try_get("version")?,
        })
    }
}

pub(crate) const COLUMNS: &str =
    "id, organization_id, engagement_id, title, format, status, content_format, finding_count, \
                       generated_at, published_at, created_at, updated_at, version";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportSort {
    CreatedAt,
    UpdatedAt,
    Title,
}

impl ReportSort {
    pub(crate) fn column(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
            Self::Title => "title_key",
        }
    }

    pub fn value_of(self, row: &ReportRow) -> SortValue {
        match self {
            Self::CreatedAt => SortValue::Int(row.created_at),
            Self::UpdatedAt => SortValue::Int(row.updated_at),
            Self::Title => SortValue::Text(row.title.to_lowercase()),
        }
    }

    pub fn accepts(self, value: &SortValue) -> bool {
        matches!(
            (self, value),
            (Self::CreatedAt | Self::UpdatedAt, SortValue::Int(_)) | (Self::Title, SortValue::Text(_))
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportFilter {
    pub engagement_ids: Vec<String>,
    pub status: Vec<String>,
    pub format: Vec<String>,
    pub q: Option<String>,
}

fn push_filter(query: &mut Sql, filter: &ReportFilter) {
    list::push_in(query, "engagement_id", &filter.engagement_ids);
    push_conditions(query, filter);
}

/// The conditions other than the engagement scope, shared with GraphQL's batched reads of many engagements.
pub(crate) fn push_conditions(query: &mut Sql, filter: &ReportFilter) {
    list::push_in(query, "status", &filter.status);
    list::push_in(query, "format", &filter.format);
    if let Some(q) = &filter.q {
        list::push_contains(query, "title_key", q);
    }
}

pub async fn list(
    pool: &AnyPool,
    organization_id: &str,
    filter: &ReportFilter,
    sort: ReportSort,
    order: Order,
    window: &Window,
) -> Result<Vec<ReportRow>, ProjectionError> {
    let mut query = list::select(&format!("SELECT {COLUMNS} FROM reports"), organization_id);
    push_filter(&mut query, filter);
    list::push_window(&mut query, sort.column(), order, window);
    let rows = query.query().fetch_all(pool).await?;
    rows.iter().map(ReportRow::from_row).collect()
}

pub async fn count(
    pool: &AnyPool,
    organization_id: &str,
    filter: &ReportFilter,
) -> Result<i64, ProjectionError> {
    let mut query = list::select("SELECT COUNT(*) FROM reports", organization_id);
    push_filter(&mut query, filter);
    Ok(query.query().fetch_one(pool).await?.try_get(0)?)
}

pub async fn get(
    pool: &AnyPool,
    organization_id: &str,
    id: &str,
) -> Result<Option<ReportRow>, ProjectionError> {
    let row = crate::by_id::owned_row(
        pool,
        &format!("SELECT {COLUMNS} FROM reports WHERE id = $1"),
        id,
        organization_id,
    )
    .await?;
    row.as_ref().map(ReportRow::from_row).transpose()
}

/// The last generated document and its format, if the report was generated.
pub async fn content(
    pool: &AnyPool,
    organization_id: &str,
    id: &str,
) -> Result<Option<(String, String)>, ProjectionError> {
    let select =
        "SELECT organization_id, content_format, content FROM reports WHERE id = $1 AND content IS NOT NULL";
    let row = crate::by_id::owned_row(pool, select, id, organization_id).await?;
    row.map(|r| Ok((r.try_get("content_format")?, r.try_get("content")?))).transpose()
}

pub struct ReportsProjector;

#[async_trait]
impl Projector for ReportsProjector {
    fn name(&self) -> &'static str {
        "reports"
    }

    fn schema_version(&self) -> i64 {
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &["reports"]
    }

    fn inline_statements(&self, events: &[LogEvent]) -> Option<Vec<Sql>> {
        READS.untouched(events)
    }

    async fn apply(&self, tx: &mut Transaction<'_, Any>, events: &[LogEvent]) -> Result<(), ProjectionError> {
        for event in events.iter().filter(|e| READS.event(e)) {
            if deletes_engagement(event) {
                purge_engagement(tx, event, "reports", &[]).await?;
                continue;
            }
            let id = event.aggregate_id.as_str();
            let mut query = Sql::new("UPDATE reports SET updated_at = ");
            query.bind(event.recorded_at).push(", version = ").bind(event.sequence);
            match serde_json::from_str::<ReportEvent>(&event.payload)? {
                ReportEvent::Created(c) => {
                    sqlx::query(&format!(
                        "INSERT INTO reports ({COLUMNS}, title_key) \
                         VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, NULL, NULL, $7, $7, $8, $9) \
                         ON CONFLICT (id) DO NOTHING"
                    ))
                    .bind(id)
                    .bind(&c.organization_id)
                    .bind(&c.engagement_id)
                    .bind(&c.title)
                    .bind(&c.format)
                    .bind(&c.status)
                    .bind(event.recorded_at)
                    .bind(event.sequence)
                    .bind(c.title.to_lowercase())
                    .execute(&mut **tx)
                    .await?;
                    continue;
                }
                ReportEvent::Deleted(_) => {
                    sqlx::query("DELETE FROM reports WHERE id = $1").bind(id).execute(&mut **tx).await?;
                    continue;
                }
                ReportEvent::Updated(u) => {
                    if let Some(title) = &u.title {
                        query
                            .push(", title = ")
                            .bind(title.as_str())
                            .push(", title_key = ")
                            .bind(title.to_lowercase());
                    }
                    if let Some(format) = u.format {
                        query.push(", format = ").bind(format);
                    }
                }
                ReportEvent::Generated(g) => {
                    let at = generated_at(&g, event.recorded_at);
                    query.push(", content = ").bind(g.content).push(", content_format = ").bind(g.format);
                    query.push(", finding_count = ").bind(g.finding_ids.len() as i64);
                    query.push(", generated_at = ").bind(at);
                }
                ReportEvent::StatusChanged(c) => {
                    if c.to == "published" {
                        query.push(", published_at = ").bind(event.recorded_at);
                    }
                    query.push(", status = ").bind(c.to);
                }
            }
            query.push(" WHERE id = ").bind(id).push(" AND version < ").bind(event.sequence);
            query.query().execute(&mut **tx).await?;
        }
        Ok(())
    }
}

/// The row as of the end of `events` (one report's stream, in order), folded the way the
/// projector applies them: time travel. `None` before the creation and after the deletion.
pub fn fold(events: &[LogEvent]) -> Result<Option<ReportRow>, ProjectionError> {
    let mut row: Option<ReportRow> = None;
    for event in events {
        let change = match serde_json::from_str::<ReportEvent>(&event.payload)? {
            ReportEvent::Created(c) => {
                row = Some(ReportRow {
                    id: event.aggregate_id.clone(),
                    organization_id: c.organization_id,
                    engagement_id: c.engagement_id,
                    title: c.title,
                    format: c.format,
                    status: c.status,
                    content_format: None,
                    finding_count: None,
                    generated_at: None,
                    published_at: None,
                    created_at: event.recorded_at,
                    updated_at: event.recorded_at,
                    version: event.sequence,
                });
                continue;
            }
            ReportEvent::Deleted(_) => {
                row = None;
                continue;
            }
            other => other,
        };
        let Some(row) = row.as_mut() else { continue };
        match change {
            ReportEvent::Updated(u) => {
                if let Some(title) = u.title {
                    row.title = title;
                }
                if let Some(format) = u.format {
                    row.format = format;
                }
            }
            ReportEvent::Generated(g) => {
                row.generated_at = Some(generated_at(&g, event.recorded_at));
                row.content_format = Some(g.format);
                row.finding_count = Some(g.finding_ids.len() as i64);
            }
            ReportEvent::StatusChanged(c) => {
                if c.to == "published" {
                    row.published_at = Some(event.recorded_at);
                }
                row.status = c.to;
            }
            ReportEvent::Created(_) | ReportEvent::Deleted(_) => {}
        }
        row.updated_at = event.recorded_at;
        row.version = event.sequence;
    }
    Ok(row)
}

/// When the document was generated: the moment it names (an older event's, without one, is
/// its recording).
fn generated_at(generated: &ReportGenerated, recorded_at: i64) -> i64 {
    generated
        .generated_at
        .as_deref()
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .map_or(recorded_at, |at| at.timestamp_millis())
}
