//! The `tasks` read table and its list query.

use async_trait::async_trait;
use pwnbook_events::task::TaskEvent;
use pwnbook_events::LogEvent;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::list::{self, Order, SortValue, Window};
use crate::sql::{deletes_engagement, purge_engagement, Reads, Sql};
use crate::{ProjectionError, Projector};

/// What this projector's `apply` reads (see `Reads`).
const READS: Reads = Reads { aggregate_type: "task", purges: true };

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub id: String,
    pub organization_id: String,
    pub engagement_id: String,
    pub title: String,
    pub description: Option<String>,
    pub status: String,
    pub priority: String,
    pub due_date: Option<String>,
    pub closed_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

impl TaskRow {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, ProjectionError> {
        Ok(Self {
            id: row.try_get("id")?,
            organization_id: row.try_get("organization_id")?,
            engagement_id: row.try_get("engagement_id")?,
            title: row.try_get("title")?,
            description: row.try_get("description")?,
            status: row.try_get("status")?,
            priority: row.try_get("priority")?,
            due_date: row.try_get("due_date")?,
            closed_at: row.try_get("closed_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            version: row.try_get("version")?,
        })
    }
}

pub(crate) const COLUMNS: &str =
    "id, organization_id, engagement_id, title, description, status, priority, due_date, \
                       closed_at, created_at, updated_at, version";

/// low 0, medium 1, high 2.
pub fn priority_rank(priority: &str) -> i64 {
    match priority {
        "high" => 2,
        "medium" => 1,
        _ => 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskSort {
    CreatedAt,
    UpdatedAt,
    DueDate,
    Priority,
    Title,
}

impl TaskSort {
    pub(crate) fn column(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
            // Tasks without a due date sort first in ascending order.
            Self::DueDate => "due_date_key",
            Self::Priority => "priority_rank",
            Self::Title => "title_key",
        }
    }

    pub fn value_of(self, row: &TaskRow) -> SortValue {
        match self {
            Self::CreatedAt => SortValue::Int(row.created_at),
            Self::UpdatedAt => SortValue::Int(row.updated_at),
            Self::DueDate => SortValue::Text(row.due_date.clone().unwrap_or_default()),
            Self::Priority => SortValue::Int(priority_rank(&row.priority)),
            Self::Title => SortValue::Text(row.title.to_lowercase()),
        }
    }

    pub fn accepts(self, value: &SortValue) -> bool {
        matches!(
            (self, value),
            (Self::CreatedAt | Self::UpdatedAt | Self::Priority, SortValue::Int(_))
                | (Self::DueDate | Self::Title, SortValue::Text(_))
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub engagement_ids: Vec<String>,
    pub status: Vec<String>,
    pub priority: Vec<String>,
    pub q: Option<String>,
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
}

fn push_filter(query: &mut Sql, filter: &TaskFilter) {
    list::push_in(query, "engagement_id", &filter.engagement_ids);
    push_conditions(query, filter);
}

/// The conditions other than the engagement scope, shared with GraphQL's batched reads of many engagements.
pub(crate) fn push_conditions(query: &mut Sql, filter: &TaskFilter) {
    list::push_in(query, "status", &filter.status);
    list::push_in(query, "priority", &filter.priority);
    if let Some(q) = &filter.q {
        list::push_contains(query, "title_key", q);
    }
    list::push_range(query, "created_at", filter.created_after, filter.created_before);
}

pub async fn list(
    pool: &AnyPool,
    organization_id: &str,
    filter: &TaskFilter,
    sort: TaskSort,
    order: Order,
    window: &Window,
) -> Result<Vec<TaskRow>, ProjectionError> {
    let mut query = list::select(&format!("SELECT {COLUMNS} FROM tasks"), organization_id);
    push_filter(&mut query, filter);
    list::push_window(&mut query, sort.column(), order, window);
    let rows = query.query().fetch_all(pool).await?;
    rows.iter().map(TaskRow::from_row).collect()
}

pub async fn count(
    pool: &AnyPool,
    organization_id: &str,
    filter: &TaskFilter,
) -> Result<i64, ProjectionError> {
    let mut query = list::select("SELECT COUNT(*) FROM tasks", organization_id);
    push_filter(&mut query, filter);
    Ok(query.query().fetch_one(pool).await?.try_get(0)?)
}

pub async fn get(
    pool: &AnyPool,
    organization_id: &str,
    id: &str,
) -> Result<Option<TaskRow>, ProjectionError> {
    let row = crate::by_id::owned_row(
        pool,
        &format!("SELECT {COLUMNS} FROM tasks WHERE id = $1"),
        id,
        organization_id,
    )
    .await?;
    row.as_ref().map(TaskRow::from_row).transpose()
}

pub struct TasksProjector;

#[async_trait]
impl Projector for TasksProjector {
    fn name(&self) -> &'static str {
        "tasks"
    }

    fn schema_version(&self) -> i64 {
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &["tasks"]
    }

    fn inline_statements(&self, events: &[LogEvent]) -> Option<Vec<Sql>> {
        READS.untouched(events)
    }

    async fn apply(&self, tx: &mut Transaction<'_, Any>, events: &[LogEvent]) -> Result<(), ProjectionError> {
        for event in events.iter().filter(|e| READS.event(e)) {
            if deletes_engagement(event) {
                purge_engagement(tx, event, "tasks", &[]).await?;
                continue;
            }
            let id = event.aggregate_id.as_str();
            let mut query = Sql::new("UPDATE tasks SET updated_at = ");
            query.bind(event.recorded_at).push(", version = ").bind(event.sequence);
            match serde_json::from_str::<TaskEvent>(&event.payload)? {
                TaskEvent::Created(c) => {
                    sqlx::query(&format!(
                        "INSERT INTO tasks ({COLUMNS}, title_key, priority_rank, due_date_key) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $9, $10, $11, $12, $13) \
                         ON CONFLICT (id) DO NOTHING"
                    ))
                    .bind(id)
                    .bind(&c.organization_id)
                    .bind(&c.engagement_id)
                    .bind(&c.title)
                    .bind(&c.description)
                    .bind(&c.status)
                    .bind(&c.priority)
                    .bind(&c.due_date)
                    .bind(event.recorded_at)
                    .bind(event.sequence)
                    .bind(c.title.to_lowercase())
                    .bind(priority_rank(&c.priority))
                    .bind(c.due_date.clone().unwrap_or_default())
                    .execute(&mut **tx)
                    .await?;
                    continue;
                }
                TaskEvent::Deleted(_) => {
                    sqlx::query("DELETE FROM tasks WHERE id = $1").bind(id).execute(&mut **tx).await?;
                    continue;
                }
                TaskEvent::Updated(u) => {
                    if let Some(title) = &u.title {
                        query
                            .push(", title = ")
                            .bind(title.as_str())
                            .push(", title_key = ")
                            .bind(title.to_lowercase());
                    }
                    if let Some(description) = u.description {
                        query.push(", description = ").bind(description);
                    }
                    if let Some(priority) = &u.priority {
                        query.push(", priority = ").bind(priority.as_str());
                        query.push(", priority_rank = ").bind(priority_rank(priority));
                    }
                    if let Some(due_date) = u.due_date {
                        query.push(", due_date_key = ").bind(due_date.clone().unwrap_or_default());
                        query.push(", due_date = ").bind(due_date);
                    }
                }
                TaskEvent::StatusChanged(c) | TaskEvent::Reopened(c) => {
                    query.push(", status = ").bind(c.to).push(", closed_at = NULL");
                }
                TaskEvent::Closed(c) => {
                    query.push(", status = ").bind(c.to).push(", closed_at = ").bind(event.recorded_at);
                }
            }
            query.push(" WHERE id = ").bind(id).push(" AND version < ").bind(event.sequence);
            query.query().execute(&mut **tx).await?;
        }
        Ok(())
    }
}

/// The row as of the end of `events` (one task's stream, in order), folded the way the
/// projector applies them: time travel. `None` before the creation and after the deletion.
pub fn fold(events: &[LogEvent]) -> Result<Option<TaskRow>, ProjectionError> {
    let mut row: Option<TaskRow> = None;
    for event in events {
        let change = match serde_json::from_str::<TaskEvent>(&event.payload)? {
            TaskEvent::Created(c) => {
                row = Some(TaskRow {
                    id: event.aggregate_id.clone(),
                    organization_id: c.organization_id,
                    engagement_id: c.engagement_id,
                    title: c.title,
                    description: c.description,
                    status: c.status,
                    priority: c.priority,
                    due_date: c.due_date,
                    closed_at: None,
                    created_at: event.recorded_at,
                    updated_at: event.recorded_at,
                    version: event.sequence,
                });
                continue;
            }
            TaskEvent::Deleted(_) => {
                row = None;
                continue;
            }
            other => other,
        };
        let Some(row) = row.as_mut() else { continue };
        match change {
            TaskEvent::Updated(u) => {
                if let Some(title) = u.title {
                    row.title = title;
                }
                if let Some(description) = u.description {
                    row.description = description;
                }
                if let Some(priority) = u.priority {
                    row.priority = priority;
                }
                if let Some(due_date) = u.due_date {
                    row.due_date = due_date;
                }
            }
            TaskEvent::StatusChanged(c) | TaskEvent::Reopened(c) => {
                row.status = c.to;
                row.closed_at = None;
            }
            TaskEvent::Closed(c) => {
                row.status = c.to;
                row.closed_at = Some(event.recorded_at);
            }
            TaskEvent::Created(_) | TaskEvent::Deleted(_) => {}
        }
        row.updated_at = event.recorded_at;
        row.version = event.sequence;
    }
    Ok(row)
}
