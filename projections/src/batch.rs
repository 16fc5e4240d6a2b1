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
//! The resource modules keep their column lists, row decoding and filter clauses private; the
//! copies here follow them column for column (the GraphQL parity tests compare every list and
//! field with the REST answer, which those modules serve).

use std::collections::HashMap;

use pwnbook_events::finding::Cvss;
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

const ENGAGEMENT_COLUMNS: &str =
    "id, organization_id, name, description, status, client_name, start_date, end_date, tags, \
     archived_at, created_at, updated_at, version";
const TARGET_COLUMNS: &str =
    "id, organization_id, engagement_id, type, value, port, protocol, in_scope, tags, \
                              notes, created_at, updated_at, version";
const FINDING_COLUMNS: &str = "id, organization_id, engagement_id, title, severity, cvss_vector, cvss_version, \
                               cvss_score, cwe, cve, description, impact, remediation, steps_to_reproduce, refs, \
                               affected_target_ids, status, review_status, retest_notes, tags, opened_at, \
                               remediated_at, closed_at, created_at, updated_at, version";
const TASK_COLUMNS: &str =
    "id, organization_id, engagement_id, title, description, status, priority, due_date, \
                            closed_at, created_at, updated_at, version";
const WIKI_COLUMNS: &str =
    "id, organization_id, engagement_id, title, slug, content, parent_id, created_at, updated_at, version";
const REPORT_COLUMNS: &str = "id, organization_id, engagement_id, title, format, status, content_format, \
                              finding_count, generated_at, published_at, created_at, updated_at, version";

/// One child table: its name and columns, for the shared page and count builders.
struct Child {
    table: &'static str,
    columns: &'static str,
}

const TARGETS: Child = Child { table: "targets", columns: TARGET_COLUMNS };
const FINDINGS: Child = Child { table: "findings", columns: FINDING_COLUMNS };
const TASKS: Child = Child { table: "tasks", columns: TASK_COLUMNS };
const WIKI_PAGES: Child = Child { table: "wiki_pages", columns: WIKI_COLUMNS };
const REPORTS: Child = Child { table: "reports", columns: REPORT_COLUMNS };

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
    /// `… WHERE organization_id = $1 AND engagement_id IN (…)` and the engagement still exists
    /// (children of a deleted engagement are hidden, as in every list).
    fn scope(&self, sql: &mut Sql, organization_id: &str, engagement_ids: &[String]) {
        sql.push(" WHERE organization_id = ").bind(organization_id);
        list::push_in(sql, "engagement_id", engagement_ids);
        sql.push(" AND EXISTS (SELECT 1 FROM engagements e WHERE e.id = ")
            .push(self.table)
            .push(".engagement_id)");
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

fn target_column(sort: TargetSort) -> &'static str {
    match sort {
        TargetSort::CreatedAt => "created_at",
        TargetSort::UpdatedAt => "updated_at",
        TargetSort::Value => "value_key",
    }
}

/// The filter of `GET /engagements/{id}/targets`, but for the engagements of the batch.
fn target_filter(sql: &mut Sql, filter: &TargetFilter) {
    list::push_in(sql, "type", &filter.kinds);
    if let Some(in_scope) = filter.in_scope {
        sql.push(" AND in_scope = ").bind(i64::from(in_scope));
    }
    if let Some(q) = &filter.q {
        list::push_contains(sql, "value_key", q);
    }
    if !filter.tags.is_empty() {
        sql.push(" AND EXISTS (SELECT 1 FROM target_tags t WHERE t.target_id = targets.id");
        list::push_in(sql, "t.tag", &filter.tags);
        sql.push(")");
    }
}

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
        |s| target_filter(s, filter),
        target_column(sort),
        page,
    );
    fetch(pool, sql, target_row).await
}

/// How many targets of each engagement pass `filter` (engagements with none are absent).
pub async fn targets_count(
    pool: &AnyPool,
    organization_id: &str,
    engagement_ids: &[String],
    filter: &TargetFilter,
) -> Result<HashMap<String, i64>, ProjectionError> {
    TARGETS.counts(pool, organization_id, engagement_ids, |s| target_filter(s, filter)).await
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
    let mut sql = Sql::new(&format!("SELECT {TARGET_COLUMNS} FROM targets"));
    TARGETS.scope(&mut sql, organization_id, &[]);
    list::push_in(&mut sql, "id", ids);
    fetch(pool, sql, target_row).await
}

// Findings.

fn finding_column(sort: FindingSort) -> &'static str {
    match sort {
        FindingSort::CreatedAt => "created_at",
        FindingSort::UpdatedAt => "updated_at",
        FindingSort::Severity => "severity_rank",
        FindingSort::CvssScore => "cvss_score",
        FindingSort::Title => "title_key",
        FindingSort::Status => "status",
    }
}

fn finding_child(sql: &mut Sql, table: &str, column: &str, values: &[String]) {
    if values.is_empty() {
        return;
    }
    sql.push(" AND EXISTS (SELECT 1 FROM ").push(table).push(" c WHERE c.finding_id = findings.id");
    list::push_in(sql, &format!("c.{column}"), values);
    sql.push(")");
}

/// The filter of `GET /engagements/{id}/findings`, but for the engagements of the batch.
fn finding_filter(sql: &mut Sql, filter: &FindingFilter) {
    list::push_in(sql, "status", &filter.status);
    list::push_in(sql, "severity", &filter.severity);
    list::push_in(sql, "review_status", &filter.review_status);
    if let Some(q) = &filter.q {
        list::push_contains(sql, "title_key", q);
    }
    finding_child(sql, "finding_tags", "tag", &filter.tags);
    finding_child(sql, "finding_cwes", "cwe", &filter.cwe);
    finding_child(sql, "finding_cves", "cve", &filter.cve);
    finding_child(sql, "finding_targets", "target_id", &filter.target_ids);
    list::push_range(sql, "created_at", filter.created_after, filter.created_before);
}

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
        |s| finding_filter(s, filter),
        finding_column(sort),
        page,
    );
    fetch(pool, sql, finding_row).await
}

/// How many findings of each engagement pass `filter` (engagements with none are absent).
pub async fn findings_count(
    pool: &AnyPool,
    organization_id: &str,
    engagement_ids: &[String],
    filter: &FindingFilter,
) -> Result<HashMap<String, i64>, ProjectionError> {
    FINDINGS.counts(pool, organization_id, engagement_ids, |s| finding_filter(s, filter)).await
}

// Tasks.

fn task_column(sort: TaskSort) -> &'static str {
    match sort {
        TaskSort::CreatedAt => "created_at",
        TaskSort::UpdatedAt => "updated_at",
        TaskSort::DueDate => "due_date_key",
        TaskSort::Priority => "priority_rank",
        TaskSort::Title => "title_key",
    }
}

fn task_filter(sql: &mut Sql, filter: &TaskFilter) {
    list::push_in(sql, "status", &filter.status);
    list::push_in(sql, "priority", &filter.priority);
    if let Some(q) = &filter.q {
        list::push_contains(sql, "title_key", q);
    }
    list::push_range(sql, "created_at", filter.created_after, filter.created_before);
}

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
    let sql =
        TASKS.page(organization_id, engagement_ids, |s| task_filter(s, filter), task_column(sort), page);
    fetch(pool, sql, task_row).await
}

pub async fn tasks_count(
    pool: &AnyPool,
    organization_id: &str,
    engagement_ids: &[String],
    filter: &TaskFilter,
) -> Result<HashMap<String, i64>, ProjectionError> {
    TASKS.counts(pool, organization_id, engagement_ids, |s| task_filter(s, filter)).await
}

// Wiki pages.

fn wiki_column(sort: WikiSort) -> &'static str {
    match sort {
        WikiSort::CreatedAt => "created_at",
        WikiSort::UpdatedAt => "updated_at",
        WikiSort::Title => "title_key",
        WikiSort::Slug => "slug",
    }
}

fn wiki_filter(sql: &mut Sql, filter: &WikiFilter) {
    list::push_in(sql, "parent_id", &filter.parent_ids);
    list::push_in(sql, "slug", &filter.slugs);
    if let Some(q) = &filter.q {
        list::push_contains(sql, "title_key", q);
    }
}

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
    let sql =
        WIKI_PAGES.page(organization_id, engagement_ids, |s| wiki_filter(s, filter), wiki_column(sort), page);
    fetch(pool, sql, wiki_row).await
}

pub async fn wiki_pages_count(
    pool: &AnyPool,
    organization_id: &str,
    engagement_ids: &[String],
    filter: &WikiFilter,
) -> Result<HashMap<String, i64>, ProjectionError> {
    WIKI_PAGES.counts(pool, organization_id, engagement_ids, |s| wiki_filter(s, filter)).await
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
    let mut sql = Sql::new(&format!("SELECT {WIKI_COLUMNS} FROM wiki_pages"));
    WIKI_PAGES.scope(&mut sql, organization_id, &[]);
    list::push_in(&mut sql, "id", ids);
    fetch(pool, sql, wiki_row).await
}

// Reports.

fn report_column(sort: ReportSort) -> &'static str {
    match sort {
        ReportSort::CreatedAt => "created_at",
        ReportSort::UpdatedAt => "updated_at",
        ReportSort::Title => "title_key",
    }
}

fn report_filter(sql: &mut Sql, filter: &ReportFilter) {
    list::push_in(sql, "status", &filter.status);
    list::push_in(sql, "format", &filter.format);
    if let Some(q) = &filter.q {
        list::push_contains(sql, "title_key", q);
    }
}

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
        |s| report_filter(s, filter),
        report_column(sort),
        page,
    );
    fetch(pool, sql, report_row).await
}

pub async fn reports_count(
    pool: &AnyPool,
    organization_id: &str,
    engagement_ids: &[String],
    filter: &ReportFilter,
) -> Result<HashMap<String, i64>, ProjectionError> {
    REPORTS.counts(pool, organization_id, engagement_ids, |s| report_filter(s, filter)).await
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
    let mut sql = list::select(&format!("SELECT {ENGAGEMENT_COLUMNS} FROM engagements"), organization_id);
    list::push_in(&mut sql, "id", ids);
    fetch(pool, sql, engagement_row).await
}

// Row decoding, column for column as in the resource modules.

fn json_list(row: &AnyRow, column: &str) -> Result<Vec<String>, ProjectionError> {
    let text: String = row.try_get(column)?;
    Ok(serde_json::from_str(&text)?)
}

fn engagement_row(row: &AnyRow) -> Result<EngagementRow, ProjectionError> {
    Ok(EngagementRow {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        status: row.try_get("status")?,
        client_name: row.try_get("client_name")?,
        start_date: row.try_get("start_date")?,
        end_date: row.try_get("end_date")?,
        tags: json_list(row, "tags")?,
        archived_at: row.try_get("archived_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
    })
}

fn target_row(row: &AnyRow) -> Result<TargetRow, ProjectionError> {
    let in_scope: i64 = row.try_get("in_scope")?;
    Ok(TargetRow {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        engagement_id: row.try_get("engagement_id")?,
        kind: row.try_get("type")?,
        value: row.try_get("value")?,
        port: row.try_get("port")?,
        protocol: row.try_get("protocol")?,
        in_scope: in_scope != 0,
        tags: json_list(row, "tags")?,
        notes: row.try_get("notes")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
    })
}

fn finding_row(row: &AnyRow) -> Result<FindingRow, ProjectionError> {
    let vector: Option<String> = row.try_get("cvss_vector")?;
    let version: Option<String> = row.try_get("cvss_version")?;
    let score: i64 = row.try_get("cvss_score")?;
    Ok(FindingRow {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        engagement_id: row.try_get("engagement_id")?,
        title: row.try_get("title")?,
        severity: row.try_get("severity")?,
        cvss: vector.zip(version).map(|(vector, version)| Cvss {
            vector,
            score: score as f64 / 10.0,
            version,
        }),
        cwe: json_list(row, "cwe")?,
        cve: json_list(row, "cve")?,
        description: row.try_get("description")?,
        impact: row.try_get("impact")?,
        remediation: row.try_get("remediation")?,
        steps_to_reproduce: row.try_get("steps_to_reproduce")?,
        references: json_list(row, "refs")?,
        affected_target_ids: json_list(row, "affected_target_ids")?,
        status: row.try_get("status")?,
        review_status: row.try_get("review_status")?,
        retest_notes: row.try_get("retest_notes")?,
        tags: json_list(row, "tags")?,
        opened_at: row.try_get("opened_at")?,
        remediated_at: row.try_get("remediated_at")?,
        closed_at: row.try_get("closed_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
    })
}

fn task_row(row: &AnyRow) -> Result<TaskRow, ProjectionError> {
    Ok(TaskRow {
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

fn wiki_row(row: &AnyRow) -> Result<WikiPageRow, ProjectionError> {
    Ok(WikiPageRow {
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

fn report_row(row: &AnyRow) -> Result<ReportRow, ProjectionError> {
    Ok(ReportRow {
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
