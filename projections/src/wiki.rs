//! The `wiki_pages` read table and its list query.

use async_trait::async_trait;
use pwnbook_events::wiki::WikiPageEvent;
use pwnbook_events::LogEvent;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::list::{self, Order, SortValue, Window};
use crate::sql::{deletes_engagement, purge_engagement, Reads, Sql};
use crate::{ProjectionError, Projector};

/// What this projector's `apply` reads (see `Reads`).
const READS: Reads = Reads { aggregate_type: "wiki_page", purges: true };

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WikiPageRow {
    pub id: String,
    pub organization_id: String,
    pub engagement_id: String,
    pub title: String,
    pub slug: String,
    pub content: String,
    pub parent_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

impl WikiPageRow {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, ProjectionError> {
        Ok(Self {
            id: row.try_get("id")?,
            organization_id: row.try_get("organization_id")?,
            engagement_id: row.try_get("engagement_id")?,
            title: row.try_get("title")?,
            slug: row.try_get("slug")?,
            content: row.try_get("content")?,
            parent_id: row.try_get("parent_id")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            version: row.try_get("version")?,
        })
    }
}

pub(crate) const COLUMNS: &str =
    "id, organization_id, engagement_id, title, slug, content, parent_id, created_at, updated_at, version";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WikiSort {
    CreatedAt,
    UpdatedAt,
    Title,
    Slug,
}

impl WikiSort {
    pub(crate) fn column(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
            Self::Title => "title_key",
            Self::Slug => "slug",
        }
    }

    pub fn value_of(self, row: &WikiPageRow) -> SortValue {
        match self {
            Self::CreatedAt => SortValue::Int(row.created_at),
            Self::UpdatedAt => SortValue::Int(row.updated_at),
            Self::Title => SortValue::Text(row.title.to_lowercase()),
            Self::Slug => SortValue::Text(row.slug.clone()),
        }
    }

    pub fn accepts(self, value: &SortValue) -> bool {
        matches!(
            (self, value),
            (Self::CreatedAt | Self::UpdatedAt, SortValue::Int(_))
                | (Self::Title | Self::Slug, SortValue::Text(_))
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WikiFilter {
    pub engagement_id: String,
    pub parent_ids: Vec<String>,
    pub slugs: Vec<String>,
    pub q: Option<String>,
}

fn push_filter(query: &mut Sql, filter: &WikiFilter) {
    query.push(" AND engagement_id = ").bind(filter.engagement_id.as_str());
    push_conditions(query, filter);
}

/// The conditions other than the engagement scope, shared with GraphQL's batched reads of many engagements.
pub(crate) fn push_conditions(query: &mut Sql, filter: &WikiFilter) {
    list::push_in(query, "parent_id", &filter.parent_ids);
    list::push_in(query, "slug", &filter.slugs);
    if let Some(q) = &filter.q {
        list::push_contains(query, "title_key", q);
    }
}

pub async fn list(
    pool: &AnyPool,
    organization_id: &str,
    filter: &WikiFilter,
    sort: WikiSort,
    order: Order,
    window: &Window,
) -> Result<Vec<WikiPageRow>, ProjectionError> {
    let mut query = list::select(&format!("SELECT {COLUMNS} FROM wiki_pages"), organization_id);
    push_filter(&mut query, filter);
    list::push_window(&mut query, sort.column(), order, window);
    let rows = query.query().fetch_all(pool).await?;
    rows.iter().map(WikiPageRow::from_row).collect()
}

pub async fn count(
    pool: &AnyPool,
    organization_id: &str,
    filter: &WikiFilter,
) -> Result<i64, ProjectionError> {
    let mut query = list::select("SELECT COUNT(*) FROM wiki_pages", organization_id);
    push_filter(&mut query, filter);
    Ok(query.query().fetch_one(pool).await?.try_get(0)?)
}

pub async fn get(
    pool: &AnyPool,
    organization_id: &str,
    id: &str,
) -> Result<Option<WikiPageRow>, ProjectionError> {
    let row = crate::by_id::owned_row(
        pool,
        &format!("SELECT {COLUMNS} FROM wiki_pages WHERE id = $1"),
        id,
        organization_id,
    )
    .await?;
    row.as_ref().map(WikiPageRow::from_row).transpose()
}

/// Whether any live page has `id` as its parent.
pub async fn has_children(pool: &AnyPool, organization_id: &str, id: &str) -> Result<bool, ProjectionError> {
    let row = sqlx::query("SELECT 1 FROM wiki_pages WHERE parent_id = $1 AND organization_id = $2 LIMIT 1")
        .bind(id)
        .bind(organization_id)
        .fetch_optional(pool)
        .await?;
    Ok(row.is_some())
}

pub struct WikiProjector;

#[async_trait]
impl Projector for WikiProjector {
    fn name(&self) -> &'static str {
        "wiki_pages"
    }

    fn schema_version(&self) -> i64 {
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &["wiki_pages"]
    }

    fn inline_statements(&self, events: &[LogEvent]) -> Option<Vec<Sql>> {
        READS.untouched(events)
    }

    async fn apply(&self, tx: &mut Transaction<'_, Any>, events: &[LogEvent]) -> Result<(), ProjectionError> {
        for event in events.iter().filter(|e| READS.event(e)) {
            if deletes_engagement(event) {
                purge_engagement(tx, event, "wiki_pages", &[]).await?;
                continue;
            }
            let id = event.aggregate_id.as_str();
            match serde_json::from_str::<WikiPageEvent>(&event.payload)? {
                WikiPageEvent::Created(c) => {
                    sqlx::query(&format!(
                        "INSERT INTO wiki_pages ({COLUMNS}, title_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10) \
                         ON CONFLICT (id) DO NOTHING"
                    ))
                    .bind(id)
                    .bind(&c.organization_id)
                    .bind(&c.engagement_id)
                    .bind(&c.title)
                    .bind(&c.slug)
                    .bind(&c.content)
                    .bind(&c.parent_id)
                    .bind(event.recorded_at)
                    .bind(event.sequence)
                    .bind(c.title.to_lowercase())
                    .execute(&mut **tx)
                    .await?;
                }
                WikiPageEvent::Updated(u) => {
                    let mut query = Sql::new("UPDATE wiki_pages SET updated_at = ");
                    query.bind(event.recorded_at).push(", version = ").bind(event.sequence);
                    if let Some(title) = &u.title {
                        query
                            .push(", title = ")
                            .bind(title.as_str())
                            .push(", title_key = ")
                            .bind(title.to_lowercase());
                    }
                    if let Some(slug) = u.slug {
                        query.push(", slug = ").bind(slug);
                    }
                    if let Some(content) = u.content {
                        query.push(", content = ").bind(content);
                    }
                    if let Some(parent_id) = u.parent_id {
                        query.push(", parent_id = ").bind(parent_id);
                    }
                    query.push(" WHERE id = ").bind(id).push(" AND version < ").bind(event.sequence);
                    query.query().execute(&mut **tx).await?;
                }
                WikiPageEvent::Deleted(_) => {
                    sqlx::query("DELETE FROM wiki_pages WHERE id = $1").bind(id).execute(&mut **tx).await?;
                }
            }
        }
        Ok(())
    }
}

/// The row as of the end of `events` (one page's stream, in order), folded the way the
/// projector applies them: time travel. `None` before the creation and after the deletion.
pub fn fold(events: &[LogEvent]) -> Result<Option<WikiPageRow>, ProjectionError> {
    let mut row: Option<WikiPageRow> = None;
    for event in events {
        match serde_json::from_str::<WikiPageEvent>(&event.payload)? {
            WikiPageEvent::Created(c) => {
                row = Some(WikiPageRow {
                    id: event.aggregate_id.clone(),
                    organization_id: c.organization_id,
                    engagement_id: c.engagement_id,
                    title: c.title,
                    slug: c.slug,
                    content: c.content,
                    parent_id: c.parent_id,
                    created_at: event.recorded_at,
                    updated_at: event.recorded_at,
                    version: event.sequence,
                });
            }
            WikiPageEvent::Updated(u) => {
                if let Some(row) = row.as_mut() {
                    if let Some(title) = u.title {
                        row.title = title;
                    }
                    if let Some(slug) = u.slug {
                        row.slug = slug;
                    }
                    if let Some(content) = u.content {
                        row.content = content;
                    }
                    if let Some(parent_id) = u.parent_id {
                        row.parent_id = parent_id;
                    }
                    row.updated_at = event.recorded_at;
                    row.version = event.sequence;
                }
            }
            WikiPageEvent::Deleted(_) => row = None,
        }
    }
    Ok(row)
}
