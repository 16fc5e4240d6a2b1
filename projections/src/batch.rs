//! Batched reads for GraphQL's nested fields: one statement for many parents, so a query over
//! fifty engagements and their findings costs the same handful of statements as one over five.
//!
//! - Children of many engagements: a keyset page per engagement with
//!   `ROW_NUMBER() OVER (PARTITION BY engagement_id ORDER BY <sort>, id)`, and a total per
//!   engagement with `GROUP BY engagement_id`. Filters, sort columns and the `(sort, id)` keyset
//!   are those of the single-engagement lists in the resource modules; the cursor a page hands
//!   out continues the REST list of that engagement and the other way round.
//! - Rows by many ids (a finding's affected targets, a child's engagement, a page's parent).
//!
//! Window functions and row values work on SQLite (3.25+) and PostgreSQL alike.
//!
//! Columns, row decoding, filter conditions and sort columns are the resource modules' own, so a
//! batch filters and sorts exactly as the REST list of one engagement does.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::engagements::EngagementRow;
use crate::findings::{FindingFilter, FindingRow, FindingSort};
use crate::list::{self, Keyset, Order, SortValue};
use crate::reports::{ReportFilter, ReportRow, ReportSort};
use crate::sql::Sql;
use crate::targets::{TargetFilter, TargetRow, TargetSort};
use crate::tasks::{TaskFilter, TaskRow, TaskSort};
use crate::wiki::{WikiFilter, WikiPageRow, WikiSort};
use crate::ProjectionError;

/// One child table: its name and columns, for the shared page and count builders.
struct Child {
    table: &'static str,
    columns: &'static str,
}

const TARGETS: Child = Child { table: "targets", columns: crate::targets::COLUMNS };
const FINDINGS: Child = Child { table: "findings", columns: crate::findings::COLUMNS };
const TASKS: Child = Child { table: "tasks", columns: crate::tasks::COLUMNS };
const WIKI_PAGES: Child = Child { table: "wiki_pages", columns: crate::wiki::COLUMNS };
const REPORTS: Child = Child { table: "reports", columns: crate::reports::COLUMNS };

/// How each engagement's page runs: its order, the keyset to continue after, and how many rows
/// per engagement.
#[derive(Debug, Clone, Copy)]
pub struct PerParent<'a> {
    pub order: Order,
    pub after: Option<&'a Keyset>,
    /// Rows per engagement (one more than a page tells whether a next page exists).
    pub limit: i64,
}

impl Child {
    /// `… WHERE organization_id = $1 AND engagement_id IN (…)`; children of a deleted engagement
    /// have already left the table with it.
    fn scope(&self, sql: &mut Sql, organization_id: &str, engagement_ids: &[String]) {
        sql.push(" WHERE organization_id = ").bind(organization_id);
        list::push_in(sql, "engagement_id", engagement_ids);
    }

    fn page(
        &self,
        organization_id: &str,
        engagement_ids: &[String],
        filter: impl FnOnce(&mut Sql),
        sort_column: &str,
        page: PerParent<'_>,
    ) -> Sql {
        let (cmp, dir) = match page.order {
            Order::Asc => (">", "ASC"),
            Order::Desc => ("<", "DESC"),
        };
        let mut sql = Sql::new(&format!(
            "SELECT * FROM (SELECT {}, ROW_NUMBER() OVER (PARTITION BY engagement_id ORDER BY {sort_column} {dir}, \
             id {dir}) AS batch_rank FROM {}",
            self.columns, self.table
        ));
        self.scope(&mut sql, organization_id, engagement_ids);
        filter(&mut sql);
        if let Some(key) = page.after {
            sql.push(" AND (").push(sort_column).push(", id) ").push(cmp).push(" (");
            match &key.value {
                SortValue::Int(v) => sql.bind(*v),
                SortValue::Text(v) => sql.bind(v.as_str()),
            };
            sql.push(", ").bind(key.id.as_str()).push(")");
        }
        sql.push(") paged WHERE batch_rank <= ").bind(page.limit).push(" ORDER BY engagement_id, batch_rank");
        sql
    }

    async fn counts(
        &self,
        pool: &AnyPool,
        organization_id: &str,
        engagement_ids: &[String],
        filter: impl FnOnce(&mut Sql),
    ) -> Result<HashMap<String, i64>, ProjectionError> {
        if engagement_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut sql = Sql::new(&format!("SELECT engagement_id, COUNT(*) AS total FROM {}", self.table));
        self.scope(&mut sql, organization_id, engagement_ids);
        filter(&mut sql);
        sql.push(" GROUP BY engagement_id");
        let rows = sql.query().fetch_all(pool).await?;
        rows.iter()
            .map(|row| Ok((row.try_get::<String, _>("engagement_id")?, row.try_get::<i64, _>("total")?)))
            .collect()
    }
}

async fn fetch<R>(
    pool: &AnyPool,
    sql: Sql,
    decode: fn(&AnyRow) -> Result<R, ProjectionError>,
) -> Result<Vec<R>, ProjectionError> {
    let rows = sql.query().fetch_all(pool).await?;
    rows.iter().map(decode).collect()
}

// Targets.

/// A page of targets per engagement (`filter.engagement_id` is ignored: the batch names them),
/// ordered by engagement, then in page order.
pub async fn targets_page(
    pool: &AnyPool,
    organization_id: &str,
    engagement_ids: &[String],
    filter: &TargetFilter,
    sort: TargetSort,
    page: PerParent<'_>,
) -> Result<Vec<TargetRow>, ProjectionError> {
    if engagement_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = TARGETS.page(
        organization_id,
        engagement_ids,
        |s| crate::targets::push_conditions(s, filter),
        sort.column(),
        page,
    );
    fetch(pool, sql, TargetRow::from_row).await
}

/// How many targets of each engagement pass `filter` (engagements with none are absent).
pub async fn targets_count(
    pool: &AnyPool,
    organization_id: &str,
    engagement_ids: &[String],
    filter: &TargetFilter,
) -> Result<HashMap<String, i64>, ProjectionError> {
    TARGETS
        .counts(pool, organization_id, engagement_ids, |s| crate::targets::push_conditions(s, filter))
        .await
}

/// The live targets among `ids` (any order; unknown, deleted or other organizations' ids are
/// absent).
pub async fn targets_by_ids(
    pool: &AnyPool,
    organization_id: &str,
    ids: &[String],
) -> Result<Vec<TargetRow>, ProjectionError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = Sql::new(&format!("SELECT {} FROM targets", TARGETS.columns));
    TARGETS.scope(&mut sql, organization_id, &[]);
    list::push_in(&mut sql, "id", ids);
    fetch(pool, sql, TargetRow::from_row).await
}

// Findings.

/// A page of findings per engagement (`filter.engagement_ids` is ignored: the batch names
/// them), ordered by engagement, then in page order.
pub async fn findings_page(
    pool: &AnyPool,
    organization_id: &str,
    engagement_ids: &[String],
    filter: &FindingFilter,
    sort: FindingSort,
    page: PerParent<'_>,
) -> Result<Vec<FindingRow>, ProjectionError> {
    if engagement_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = FINDINGS.page(
        organization_id,
        engagement_ids,
        |s| crate::findings::push_conditions(s, filter),
        sort.column(),
        page,
    );
    fetch(pool, sql, FindingRow::from_row).await
}

/// How many findings of each engagement pass `filter` (engagements with none are absent).
pub async fn findings_count(
    pool: &AnyPool,
    organization_id: &str,
    engagement_ids: &[String],
    filter: &FindingFilter,
) -> Result<HashMap<String, i64>, ProjectionError> {
    FINDINGS
        .counts(pool, organization_id, engagement_ids, |s| crate::findings::push_conditions(s, filter))
        .await
}

// Tasks.

/// A page of tasks per engagement (`filter.engagement_ids` is ignored).
pub async fn tasks_page(
    pool: &AnyPool,
    organization_id: &str,
    engagement_ids: &[String],
    filter: &TaskFilter,
    sort: TaskSort,
    page: PerParent<'_>,
) -> Result<Vec<TaskRow>, ProjectionError> {
    if engagement_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = TASKS.page(
        organization_id,
        engagement_ids,
        |s| crate::tasks::push_conditions(s, filter),
        sort.column(),
        page,
    );
    fetch(pool, sql, TaskRow::from_row).await
}

pub async fn tasks_count(
    pool: &AnyPool,
    organization_id: &str,
    engagement_ids: &[String],
    filter: &TaskFilter,
) -> Result<HashMap<String, i64>, ProjectionError> {
    TASKS.counts(pool, organization_id, engagement_ids, |s| crate::tasks::push_conditions(s, filter)).await
}

// Wiki pages.

/// A page of wiki pages per engagement (`filter.engagement_id` is ignored).
pub async fn wiki_pages_page(
    pool: &AnyPool,
    organization_id: &str,
    engagement_ids: &[String],
    filter: &WikiFilter,
    sort: WikiSort,
    page: PerParent<'_>,
) -> Result<Vec<WikiPageRow>, ProjectionError> {
    if engagement_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = WIKI_PAGES.page(
        organization_id,
        engagement_ids,
        |s| crate::wiki::push_conditions(s, filter),
        sort.column(),
        page,
    );
    fetch(pool, sql, WikiPageRow::from_row).await
}

pub async fn wiki_pages_count(
    pool: &AnyPool,
    organization_id: &str,
    engagement_ids: &[String],
    filter: &WikiFilter,
) -> Result<HashMap<String, i64>, ProjectionError> {
    WIKI_PAGES
        .counts(pool, organization_id, engagement_ids, |s| crate::wiki::push_conditions(s, filter))
        .await
}

/// The live wiki pages among `ids` (a page's parent).
pub async fn wiki_pages_by_ids(
    pool: &AnyPool,
    organization_id: &str,
    ids: &[String],
) -> Result<Vec<WikiPageRow>, ProjectionError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = Sql::new(&format!("SELECT {} FROM wiki_pages", WIKI_PAGES.columns));
    WIKI_PAGES.scope(&mut sql, organization_id, &[]);
    list::push_in(&mut sql, "id", ids);
    fetch(pool, sql, WikiPageRow::from_row).await
}

// Reports.

/// A page of reports per engagement (`filter.engagement_ids` is ignored).
pub async fn reports_page(
    pool: &AnyPool,
    organization_id: &str,
    engagement_ids: &[String],
    filter: &ReportFilter,
    sort: ReportSort,
    page: PerParent<'_>,
) -> Result<Vec<ReportRow>, ProjectionError> {
    if engagement_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = REPORTS.page(
        organization_id,
        engagement_ids,
        |s| crate::reports::push_conditions(s, filter),
        sort.column(),
        page,
    );
    fetch(pool, sql, ReportRow::from_row).await
}

pub async fn reports_count(
    pool: &AnyPool,
    organization_id: &str,
    engagement_ids: &[String],
    filter: &ReportFilter,
) -> Result<HashMap<String, i64>, ProjectionError> {
    REPORTS
        .counts(pool, organization_id, engagement_ids, |s| crate::reports::push_conditions(s, filter))
        .await
}

/// The last generated document of each report among `ids` that has one: `(format, content)`.
pub async fn report_contents(
    pool: &AnyPool,
    organization_id: &str,
    ids: &[String],
) -> Result<HashMap<String, (String, String)>, ProjectionError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut sql = Sql::new("SELECT id, content_format, content FROM reports");
    REPORTS.scope(&mut sql, organization_id, &[]);
    list::push_in(&mut sql, "id", ids);
    sql.push(" AND content IS NOT NULL");
    let rows = sql.query().fetch_all(pool).await?;
    rows.iter()
        .map(|row| Ok((row.try_get("id")?, (row.try_get("content_format")?, row.try_get("content")?))))
        .collect()
}

// Engagements.

/// The live engagements among `ids` (a child's engagement).
pub async fn engagements_by_ids(
    pool: &AnyPool,
    organization_id: &str,
    ids: &[String],
) -> Result<Vec<EngagementRow>, ProjectionError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql =
        list::select(&format!("SELECT {} FROM engagements", crate::engagements::COLUMNS), organization_id);
    list::push_in(&mut sql, "id", ids);
    fetch(pool, sql, EngagementRow::from_row).await
}

// Row decoding, column for column as in the resource modules.
