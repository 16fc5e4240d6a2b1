//! The `findings` read table (with child tables for the tag, CWE, CVE and target filters) and
//! its list query.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use pwnbook_events::finding::{self, Cvss, FindingCreated, FindingEvent};
use pwnbook_events::LogEvent;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::bulk::{BulkLoad, CopyRows};
use crate::list::{self, Order, SortValue, Window};
use crate::sql::{self, deletes_engagement, purge_engagement, replace_set, Sql};
use crate::{ProjectionError, Projector};
use changes::{ChangeWave, Patch};

mod changes;

#[derive(Debug, Clone, PartialEq)]
pub struct FindingRow {
    pub id: String,
    pub organization_id: String,
    pub engagement_id: String,
    pub title: String,
    pub severity: String,
    pub cvss: Option<Cvss>,
    pub cwe: Vec<String>,
    pub cve: Vec<String>,
    pub description: Option<String>,
    pub impact: Option<String>,
    pub remediation: Option<String>,
    pub steps_to_reproduce: Option<String>,
    pub references: Vec<String>,
    pub affected_target_ids: Vec<String>,
    pub status: String,
    pub review_status: String,
    pub retest_notes: Option<String>,
    pub tags: Vec<String>,
    pub opened_at: Option<i64>,
    pub remediated_at: Option<i64>,
    pub closed_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

fn json_list(row: &AnyRow, column: &str) -> Result<Vec<String>, ProjectionError> {
    let text: String = row.try_get(column)?;
    Ok(serde_json::from_str(&text)?)
}

impl FindingRow {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, ProjectionError> {
        let vector: Option<String> = row.try_get("cvss_vector")?;
        let version: Option<String> = row.try_get("cvss_version")?;
        let score: i64 = row.try_get("cvss_score")?;
        Ok(Self {
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
}

pub(crate) const COLUMNS: &str = "id, organization_id, engagement_id, title, severity, cvss_vector, cvss_version, cvss_score, \
                       cwe, cve, description, impact, remediation, steps_to_reproduce, refs, affected_target_ids, \
                       status, review_status, retest_notes, tags, opened_at, remediated_at, closed_at, \
                       created_at, updated_at, version";

/// critical 4 … info 0, so severity sorts by rank.
pub fn severity_rank(severity: &str) -> i64 {
    match severity {
        "critical" => 4,
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    }
}

/// The score in tenths (scores have one decimal), -1 without a vector.
fn score_key(cvss: Option<&Cvss>) -> i64 {
    cvss.map_or(-1, |c| (c.score * 10.0).round() as i64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingSort {
    CreatedAt,
    UpdatedAt,
    Severity,
    CvssScore,
    Title,
    Status,
}

impl FindingSort {
    pub(crate) fn column(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
            Self::Severity => "severity_rank",
            Self::CvssScore => "cvss_score",
            Self::Title => "title_key",
            Self::Status => "status",
        }
    }

    pub fn value_of(self, row: &FindingRow) -> SortValue {
        match self {
            Self::CreatedAt => SortValue::Int(row.created_at),
            Self::UpdatedAt => SortValue::Int(row.updated_at),
            Self::Severity => SortValue::Int(severity_rank(&row.severity)),
            Self::CvssScore => SortValue::Int(score_key(row.cvss.as_ref())),
            Self::Title => SortValue::Text(row.title.to_lowercase()),
            Self::Status => SortValue::Text(row.status.clone()),
        }
    }

    pub fn accepts(self, value: &SortValue) -> bool {
        matches!(
            (self, value),
            (Self::CreatedAt | Self::UpdatedAt | Self::Severity | Self::CvssScore, SortValue::Int(_))
                | (Self::Title | Self::Status, SortValue::Text(_))
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindingFilter {
    pub engagement_ids: Vec<String>,
    pub status: Vec<String>,
    pub severity: Vec<String>,
    pub review_status: Vec<String>,
    pub target_ids: Vec<String>,
    pub cwe: Vec<String>,
    pub cve: Vec<String>,
    pub tags: Vec<String>,
    pub q: Option<String>,
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
}

fn push_child(query: &mut Sql, table: &str, column: &str, values: &[String]) {
    if values.is_empty() {
        return;
    }
    query.push(" AND EXISTS (SELECT 1 FROM ").push(table).push(" c WHERE c.finding_id = findings.id");
    list::push_in(query, &format!("c.{column}"), values);
    query.push(")");
}

fn push_filter(query: &mut Sql, filter: &FindingFilter) {
    list::push_in(query, "engagement_id", &filter.engagement_ids);
    push_conditions(query, filter);
}

/// The conditions other than the engagement scope, shared with GraphQL's batched reads of many engagements.
pub(crate) fn push_conditions(query: &mut Sql, filter: &FindingFilter) {
    list::push_in(query, "status", &filter.status);
    list::push_in(query, "severity", &filter.severity);
    list::push_in(query, "review_status", &filter.review_status);
    if let Some(q) = &filter.q {
        list::push_contains(query, "title_key", q);
    }
    push_child(query, "finding_tags", "tag", &filter.tags);
    push_child(query, "finding_cwes", "cwe", &filter.cwe);
    push_child(query, "finding_cves", "cve", &filter.cve);
    push_child(query, "finding_targets", "target_id", &filter.target_ids);
    list::push_range(query, "created_at", filter.created_after, filter.created_before);
}

/// The list query for a filter, sort and window (public so the query plan can be checked).
pub fn list_query(
    organization_id: &str,
    filter: &FindingFilter,
    sort: FindingSort,
    order: Order,
    window: &Window,
) -> Sql {
    let mut query = list::select(&format!("SELECT {COLUMNS} FROM findings"), organization_id);
    push_filter(&mut query, filter);
    list::push_window(&mut query, sort.column(), order, window);
    query
}

pub async fn list(
    pool: &AnyPool,
    organization_id: &str,
    filter: &FindingFilter,
    sort: FindingSort,
    order: Order,
    window: &Window,
) -> Result<Vec<FindingRow>, ProjectionError> {
    let query = list_query(organization_id, filter, sort, order, window);
    let rows = query.query().fetch_all(pool).await?;
    rows.iter().map(FindingRow::from_row).collect()
}

pub async fn count(
    pool: &AnyPool,
    organization_id: &str,
    filter: &FindingFilter,
) -> Result<i64, ProjectionError> {
    let query =
        counter_query(organization_id, filter).unwrap_or_else(|| count_query(organization_id, filter));
    Ok(query.query().fetch_one(pool).await?.try_get(0)?)
}

/// The total from the projector's counters when the filter only names counted columns: a sum
/// over a few rows per engagement instead of a count of every matching finding.
pub fn counter_query(organization_id: &str, filter: &FindingFilter) -> Option<Sql> {
    let FindingFilter {
        engagement_ids,
        status,
        severity,
        review_status,
        target_ids,
        cwe,
        cve,
        tags,
        q,
        created_after,
        created_before,
    } = filter;
    let counted = target_ids.is_empty()
        && cwe.is_empty()
        && cve.is_empty()
        && tags.is_empty()
        && q.is_none()
        && created_after.is_none()
        && created_before.is_none();
    if !counted {
        return None;
    }
    // PostgreSQL sums BIGINT into NUMERIC, which the Any driver does not decode.
    let mut query =
        list::select("SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM finding_counts", organization_id);
    list::push_in(&mut query, "engagement_id", engagement_ids);
    list::push_in(&mut query, "status", status);
    list::push_in(&mut query, "severity", severity);
    list::push_in(&mut query, "review_status", review_status);
    Some(query)
}

/// The total of a filter, which page mode reports next to the rows.
pub fn count_query(organization_id: &str, filter: &FindingFilter) -> Sql {
    let mut query = list::select("SELECT COUNT(*) FROM findings", organization_id);
    push_filter(&mut query, filter);
    query
}

pub async fn get(
    pool: &AnyPool,
    organization_id: &str,
    id: &str,
) -> Result<Option<FindingRow>, ProjectionError> {
    let row = crate::by_id::owned_row(
        pool,
        &format!("SELECT {COLUMNS} FROM findings WHERE id = $1"),
        id,
        organization_id,
    )
    .await?;
    row.as_ref().map(FindingRow::from_row).transpose()
}

/// Whether a live finding lists `target_id` among its affected targets.
pub async fn reference_target(
    pool: &AnyPool,
    organization_id: &str,
    target_id: &str,
) -> Result<bool, ProjectionError> {
    let row = sqlx::query(
        "SELECT 1 FROM findings WHERE organization_id = $1 \
         AND EXISTS (SELECT 1 FROM finding_targets c WHERE c.finding_id = findings.id AND c.target_id = $2) LIMIT 1",
    )
    .bind(organization_id)
    .bind(target_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}

/// Every live finding of an engagement, most severe first, then by CVSS score (for reports).
pub async fn for_report(
    pool: &AnyPool,
    organization_id: &str,
    engagement_id: &str,
) -> Result<Vec<FindingRow>, ProjectionError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM findings WHERE organization_id = $1 AND engagement_id = $2 \
         ORDER BY severity_rank DESC, cvss_score DESC, id ASC"
    ))
    .bind(organization_id)
    .bind(engagement_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(FindingRow::from_row).collect()
}

pub struct FindingsProjector;

/// Counter rows per multi-row upsert: 6 parameters each stays under SQLite's 32 766.
const INSERT_ROWS: usize = 400;

/// `rows` in chunks of `size` (at least 10), then of its lower powers of ten down to 10, then of
/// 8, 4, 2 and 1 rows: multi-row statements of a few fixed shapes per table, which stay in the
/// connection's prepared statement cache instead of being parsed and planned anew for every
/// batch size, and a small batch (a group commit's few creations) still takes at most three
/// statements below ten rows.
fn fixed_chunks<T>(rows: &[T], size: usize) -> impl Iterator<Item = &[T]> {
    let mut shapes: Vec<usize> = std::iter::successors(Some(size), |shape| Some(shape / 10))
        .take_while(|shape| *shape >= 10)
        .collect();
    shapes.extend([8, 4, 2, 1]);
    let mut rest = rows;
    std::iter::from_fn(move || {
        let shape = shapes.iter().copied().find(|shape| *shape <= rest.len())?;
        let (chunk, tail) = rest.split_at(shape);
        rest = tail;
        Some(chunk)
    })
}

/// The facet a finding is counted under in `finding_counts`: page mode's exact total for the
/// filters on these columns is a sum over a few counter rows instead of a count of every match.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bucket {
    organization_id: String,
    engagement_id: String,
    severity: String,
    status: String,
    review_status: String,
}

const BUCKET_COLUMNS: &str = "organization_id, engagement_id, severity, status, review_status";

impl Bucket {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            organization_id: row.try_get("organization_id")?,
            engagement_id: row.try_get("engagement_id")?,
            severity: row.try_get("severity")?,
            status: row.try_get("status")?,
            review_status: row.try_get("review_status")?,
        })
    }

    fn of(c: &FindingCreated) -> Self {
        Self {
            organization_id: c.organization_id.clone(),
            engagement_id: c.engagement_id.clone(),
            severity: c.severity.clone(),
            status: c.status.clone(),
            review_status: c.review_status.clone(),
        }
    }
}

/// Changes to the counters, added up over a batch and written once: one multi-row upsert
/// instead of a statement per finding.
type Counts = HashMap<Bucket, i64>;

/// One count per created finding, in its bucket.
fn counted_once<'a>(created: impl Iterator<Item = &'a FindingCreated>) -> Counts {
    let mut counts = Counts::new();
    for c in created {
        *counts.entry(Bucket::of(c)).or_default() += 1;
    }
    counts
}

/// A finding that went from bucket `before` to `after`: one count moves (none if they are equal).
fn count_move(counts: &mut Counts, before: Bucket, after: Bucket) {
    if after != before {
        *counts.entry(before).or_default() -= 1;
        *counts.entry(after).or_default() += 1;
    }
}

/// Writes the counted changes (each bucket once per statement, as PostgreSQL requires); emptied
/// counter rows are removed, so the table is the same whether built live or by a rebuild.
async fn flush_counts(tx: &mut Transaction<'_, Any>, counts: &mut Counts) -> Result<(), ProjectionError> {
    counts.retain(|_, n| *n != 0);
    let changes: Vec<(Bucket, i64)> = counts.drain().collect();
    for chunk in changes.chunks(INSERT_ROWS) {
        let mut upsert = Sql::new(&format!("INSERT INTO finding_counts ({BUCKET_COLUMNS}, n) VALUES "));
        for (i, (bucket, n)) in chunk.iter().enumerate() {
            upsert.push(if i == 0 { "(" } else { ", (" });
            upsert.bind(bucket.organization_id.as_str()).push(", ");
            upsert.bind(bucket.engagement_id.as_str()).push(", ");
            upsert.bind(bucket.severity.as_str()).push(", ");
            upsert.bind(bucket.status.as_str()).push(", ");
            upsert.bind(bucket.review_status.as_str()).push(", ").bind(*n).push(")");
        }
        upsert.push(&format!(
            " ON CONFLICT ({BUCKET_COLUMNS}) DO UPDATE SET n = finding_counts.n + excluded.n"
        ));
        upsert.query_on(tx.backend_name()).execute(&mut **tx).await?;
        if chunk.iter().any(|(_, n)| *n < 0) {
            let mut keys =
                Sql::new(&format!("DELETE FROM finding_counts WHERE n = 0 AND ({BUCKET_COLUMNS}) IN ("));
            for (i, (bucket, _)) in chunk.iter().enumerate() {
                keys.push(if i == 0 { "(" } else { ", (" });
                keys.bind(bucket.organization_id.as_str()).push(", ");
                keys.bind(bucket.engagement_id.as_str()).push(", ");
                keys.bind(bucket.severity.as_str()).push(", ");
                keys.bind(bucket.status.as_str()).push(", ");
                keys.bind(bucket.review_status.as_str()).push(")");
            }
            keys.push(")");
            keys.query_on(tx.backend_name()).execute(&mut **tx).await?;
        }
    }
    Ok(())
}

/// `(finding, value)` rows of a child table in multi-row INSERTs.
async fn insert_set(
    tx: &mut Transaction<'_, Any>,
    table: &str,
    value_column: &str,
    rows: &[(&str, &str)],
) -> Result<(), ProjectionError> {
    for chunk in fixed_chunks(rows, 1_000) {
        let mut query = Sql::new(&format!("INSERT INTO {table} (finding_id, {value_column}) VALUES "));
        push_pairs(&mut query, chunk);
        query.push(" ON CONFLICT DO NOTHING");
        query.query_on(tx.backend_name()).execute(&mut **tx).await?;
    }
    Ok(())
}

/// `(owner, value), …` as bound placeholders.
fn push_pairs(query: &mut Sql, rows: &[(&str, &str)]) {
    for (i, (owner, value)) in rows.iter().enumerate() {
        query.push(if i == 0 { "(" } else { ", (" });
        query.bind(*owner).push(", ").bind(*value).push(")");
    }
}

/// A child table mirroring one list of a finding, one row per value, for the list filters.
struct ChildSet {
    table: &'static str,
    /// The child table's value column.
    column: &'static str,
    /// The finding's column holding the list (as JSON).
    list: &'static str,
    /// The values a creation gives it.
    created: fn(&FindingCreated) -> &[String],
}

/// The `(finding id, value)` rows of one child table for `created`.
fn child_rows<'a>(
    created: impl IntoIterator<Item = &'a Created<'a>>,
    values: fn(&FindingCreated) -> &[String],
) -> Vec<(&'a str, &'a str)> {
    created
        .into_iter()
        .flat_map(|(event, c)| values(c).iter().map(|v| (event.aggregate_id.as_str(), v.as_str())))
        .collect()
}

const CHILD_SETS: [ChildSet; 4] = [
    ChildSet { table: "finding_tags", column: "tag", list: "tags", created: |c| &c.tags },
    ChildSet { table: "finding_cwes", column: "cwe", list: "cwe", created: |c| &c.cwe },
    ChildSet { table: "finding_cves", column: "cve", list: "cve", created: |c| &c.cve },
    ChildSet {
        table: "finding_targets",
        column: "target_id",
        list: "affected_target_ids",
        created: |c| &c.affected_target_ids,
    },
];

/// Findings per multi-row INSERT: SQLite's statement has a placeholder per value (28 per
/// finding, under its limit of 32 766), PostgreSQL's one per column, so its chunks are larger
/// (fewer round trips in a rebuild: 500 rows took 10 % less time than 100).
const SQLITE_CHUNK: usize = 100;
const POSTGRES_CHUNK: usize = 500;

/// A creation event with its parsed payload.
type Created<'e> = (&'e LogEvent, FindingCreated);

/// Parses creation events (an event whose type says creation but whose payload does not is
/// refused, as any payload that does not match its type).
fn parse_created<'e>(events: &[&'e LogEvent]) -> Result<Vec<Created<'e>>, ProjectionError> {
    events
        .iter()
        .map(|event| match serde_json::from_str::<FindingEvent>(&event.payload)? {
            FindingEvent::Created(c) => Ok((*event, c)),
            _ => Err(ProjectionError::Json(serde::de::Error::custom(format!(
                "event {} is a {} but its payload is not",
                event.event_id, event.event_type
            )))),
        })
        .collect()
}

/// Inserts created findings with multi-row INSERTs (a rebuild is mostly creations), with their
/// child rows and counters. A finding already present is left as it is.
async fn insert_created(
    tx: &mut Transaction<'_, Any>,
    created: &[&LogEvent],
    counts: &mut Counts,
) -> Result<(), ProjectionError> {
    let backend = tx.backend_name().to_owned();
    let sqlite = sql::is_sqlite(&backend);
    // SQLite's statement has a placeholder per value, so a few fixed chunk sizes keep it cached;
    // PostgreSQL's is the same text for any chunk.
    let chunks: Vec<&[&LogEvent]> = if sqlite {
        fixed_chunks(created, SQLITE_CHUNK).collect()
    } else {
        created.chunks(POSTGRES_CHUNK).collect()
    };
    // A live batch's creations (a few chunks at most) upsert their counters in the statement
    // that inserts them (PostgreSQL); a rebuild's thousands are counted here and flushed once,
    // not chunk by chunk.
    let counters_inline = !sqlite && created.len() <= POSTGRES_CHUNK;
    let build = |chunk| created_statement(chunk, sqlite, counters_inline);
    let mut next = chunks.first().map(|chunk| build(chunk)).transpose()?;
    let mut done = None;
    for i in 0..chunks.len() {
        let Some(CreatedChunk { statement, parsed, counted }) = next.take() else { break };
        // While the server runs this chunk's statement, the next chunk is parsed, its statement
        // built and its counters counted, and the chunk before is dropped: in a rebuild the
        // client's share would otherwise leave the server idle.
        let (rows, following) = tokio::join!(statement.query_on(&backend).fetch_all(&mut **tx), async {
            drop(done.take());
            chunks.get(i + 1).map(|chunk| build(chunk)).transpose()
        });
        next = following?;
        let rows = rows?;
        // Every finding of the chunk is new unless the log repeats one (the insert skips it);
        // then only the inserted ones count.
        let all_new = rows.len() == parsed.len();
        let fresh: Vec<&Created<'_>> = if all_new {
            parsed.iter().collect()
        } else {
            let inserted =
                rows.iter().map(|row| row.try_get::<String, _>("id")).collect::<Result<HashSet<_>, _>>()?;
            parsed.iter().filter(|(event, _)| inserted.contains(&event.aggregate_id)).collect()
        };
        if !counters_inline {
            let counted = if all_new { counted } else { counted_once(fresh.iter().map(|(_, c)| c)) };
            for (bucket, n) in counted {
                *counts.entry(bucket).or_default() += n;
            }
        }
        if sqlite {
            for set in CHILD_SETS {
                insert_set(tx, set.table, set.column, &child_rows(fresh.iter().copied(), set.created))
                    .await?;
            }
        }
        done = Some((rows, parsed));
    }
    Ok(())
}

/// Loads created findings and their child rows by COPY (their counters are `finish_bulk`'s),
/// the findings a chunk at a time (the server inserts one while the next is parsed and built);
/// returns false, with nothing loaded, when a finding is already there.
async fn copy_created(bulk: &mut BulkLoad, created: &[&LogEvent]) -> Result<bool, ProjectionError> {
    let mut load = bulk.begin().await?;
    let mut copy = load.copy("findings", &created_columns()).await?;
    let mut parsed = Vec::with_capacity(created.len());
    for chunk in created.chunks(POSTGRES_CHUNK) {
        let chunk = parse_created(chunk)?;
        let mut rows = CopyRows::default();
        for (e, c) in &chunk {
            let values =
                CREATED_VALUES.iter().map(|(_, column)| column(e, c)).collect::<Result<Vec<_>, _>>()?;
            let ints: Vec<String> = CREATED_INTS.iter().map(|(_, column)| column(e, c).to_string()).collect();
            let updated_at = e.recorded_at.to_string();
            rows.row(
                CREATED_TEXTS
                    .iter()
                    .map(|(_, column)| column(e, c))
                    .chain(values.iter().map(Option::as_deref))
                    .chain(ints.iter().map(|int| Some(int.as_str())))
                    .chain([Some(updated_at.as_str())]),
            );
        }
        copy.send(rows).await?;
        parsed.extend(chunk);
    }
    if !copy.finish().await? {
        return Ok(false);
    }
    for set in CHILD_SETS {
        // A list may name a value twice; its child table holds it once.
        let mut pairs = child_rows(&parsed, set.created);
        pairs.sort_unstable();
        pairs.dedup();
        let mut rows = CopyRows::default();
        for (owner, value) in pairs {
            rows.row([Some(owner), Some(value)]);
        }
        if rows.is_empty() {
            continue;
        }
        let mut copy = load.copy(set.table, &format!("finding_id, {}", set.column)).await?;
        copy.send(rows).await?;
        if !copy.finish().await? {
            return Ok(false);
        }
    }
    load.commit().await?;
    Ok(true)
}

/// A chunk of creations ready to insert.
struct CreatedChunk<'e> {
    statement: Sql,
    parsed: Vec<Created<'e>>,
    /// The counters the chunk adds if every finding in it is new (unless the statement counts them).
    counted: Counts,
}

/// `chunk` parsed, the statement that inserts it, and (unless the statement counts them,
/// `counters_inline`) its counters.
fn created_statement<'e>(
    chunk: &[&'e LogEvent],
    sqlite: bool,
    counters_inline: bool,
) -> Result<CreatedChunk<'e>, ProjectionError> {
    let parsed = parse_created(chunk)?;
    let statement = if sqlite { created_values(&parsed)? } else { created_unnest(&parsed, counters_inline)? };
    let counted = if counters_inline { Counts::new() } else { counted_once(parsed.iter().map(|(_, c)| c)) };
    Ok(CreatedChunk { statement, parsed, counted })
}

/// SQLite: the multi-row INSERT of `chunk`'s findings, returning the ids it inserted.
fn created_values(chunk: &[Created<'_>]) -> Result<Sql, ProjectionError> {
    let mut query = Sql::new(&format!("INSERT INTO findings ({}) VALUES ", created_columns()));
    for (i, (e, c)) in chunk.iter().enumerate() {
        query.push(if i == 0 { "(" } else { ", (" });
        for (_, column) in CREATED_TEXTS {
            query.bind(column(e, c).map(str::to_owned)).push(", ");
        }
        for (_, column) in CREATED_VALUES {
            query.bind(column(e, c)?).push(", ");
        }
        for (_, column) in CREATED_INTS {
            query.bind(column(e, c)).push(", ");
        }
        query.bind(e.recorded_at).push(")");
    }
    query.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
    Ok(query)
}

/// The columns a creation sets, in the order of `CREATED_TEXTS`, `CREATED_VALUES` and
/// `CREATED_INTS`, then `updated_at` (its creation time); only transitions set the opened,
/// remediated and closed times, which stay NULL.
fn created_columns() -> String {
    format!("{}, updated_at", created_names())
}

/// The columns of `CREATED_TEXTS`, `CREATED_VALUES` and `CREATED_INTS`, in order.
fn created_names() -> String {
    let names: Vec<&str> = CREATED_TEXTS
        .iter()
        .map(|(name, _)| *name)
        .chain(CREATED_VALUES.iter().map(|(name, _)| *name))
        .chain(CREATED_INTS.iter().map(|(name, _)| *name))
        .collect();
    names.join(", ")
}

/// A column of created findings: the text of each, `None` for NULL.
type TextColumn = for<'a> fn(&'a LogEvent, &'a FindingCreated) -> Option<&'a str>;
/// A column of created findings whose values are computed.
type ValueColumn = fn(&LogEvent, &FindingCreated) -> Result<Option<String>, serde_json::Error>;

/// The text columns of a created finding, in `unnest` order.
const CREATED_TEXTS: [(&str, TextColumn); 13] = [
    ("id", |e, _| Some(&e.aggregate_id)),
    ("organization_id", |_, c| Some(&c.organization_id)),
    ("engagement_id", |_, c| Some(&c.engagement_id)),
    ("title", |_, c| Some(&c.title)),
    ("severity", |_, c| Some(&c.severity)),
    ("cvss_vector", |_, c| c.cvss.as_ref().map(|v| v.vector.as_str())),
    ("cvss_version", |_, c| c.cvss.as_ref().map(|v| v.version.as_str())),
    ("description", |_, c| c.description.as_deref()),
    ("impact", |_, c| c.impact.as_deref()),
    ("remediation", |_, c| c.remediation.as_deref()),
    ("steps_to_reproduce", |_, c| c.steps_to_reproduce.as_deref()),
    ("status", |_, c| Some(&c.status)),
    ("review_status", |_, c| Some(&c.review_status)),
];

/// The computed text columns (the lists as the JSON their columns hold), after the texts.
const CREATED_VALUES: [(&str, ValueColumn); 7] = [
    ("retest_notes", |_, c| Ok(c.retest_notes.clone())),
    ("cwe", |_, c| serde_json::to_string(&c.cwe).map(Some)),
    ("cve", |_, c| serde_json::to_string(&c.cve).map(Some)),
    ("refs", |_, c| serde_json::to_string(&c.references).map(Some)),
    ("affected_target_ids", |_, c| serde_json::to_string(&c.affected_target_ids).map(Some)),
    ("tags", |_, c| serde_json::to_string(&c.tags).map(Some)),
    ("title_key", |_, c| Ok(Some(c.title.to_lowercase()))),
];

/// An integer column of created findings.
type IntColumn = fn(&LogEvent, &FindingCreated) -> i64;

/// The integer columns, after the computed ones.
const CREATED_INTS: [(&str, IntColumn); 4] = [
    ("cvss_score", |_, c| score_key(c.cvss.as_ref())),
    ("severity_rank", |_, c| severity_rank(&c.severity)),
    ("created_at", |e, _| e.recorded_at),
    ("version", |e, _| e.sequence),
];

/// PostgreSQL: `chunk`'s findings as one array parameter per column, unnested into rows, with
/// the child rows of the findings it inserted and, with `counters`, their counters
/// (data-modifying CTEs): one round trip, far less for the server to parse and plan than a
/// placeholder per value, and one statement text per set of child tables the chunk has rows for
/// (so each stays prepared). A child table without rows gets no CTE: each is an INSERT the
/// executor sets up (its table and indexes opened) at every run: for 13 creations with tags only,
/// the three empty ones were ~9 % of the statement's time. Returns the ids it inserted.
fn created_unnest(chunk: &[Created<'_>], counters: bool) -> Result<Sql, ProjectionError> {
    let columns = created_columns();
    let mut query = Sql::new(&format!(
        "WITH inserted AS (INSERT INTO findings ({columns}) SELECT *, created_at FROM unnest("
    ));
    let mut arrays = Vec::new();
    for (_, column) in CREATED_TEXTS {
        arrays.push((sql::text_array(chunk.iter().map(|(e, c)| column(e, c))), "TEXT"));
    }
    for (_, column) in CREATED_VALUES {
        let values = chunk.iter().map(|(e, c)| column(e, c)).collect::<Result<Vec<_>, _>>()?;
        arrays.push((sql::text_array(values.iter().map(Option::as_deref)), "TEXT"));
    }
    for (_, column) in CREATED_INTS {
        arrays.push((sql::int_array(chunk.iter().map(|(e, c)| column(e, c))), "BIGINT"));
    }
    for (i, (literal, ty)) in arrays.into_iter().enumerate() {
        if i > 0 {
            query.push(", ");
        }
        sql::push_array(&mut query, literal, ty);
    }
    query.push(&format!(") AS u ({}) ON CONFLICT (id) DO NOTHING RETURNING id", created_names()));
    if counters {
        query.push(&format!(", {BUCKET_COLUMNS}"));
    }
    query.push(")");
    if counters {
        query.push(&format!(
            ", counted AS (INSERT INTO finding_counts ({BUCKET_COLUMNS}, n) \
             SELECT {BUCKET_COLUMNS}, count(*) FROM inserted GROUP BY {BUCKET_COLUMNS} \
             ON CONFLICT ({BUCKET_COLUMNS}) DO UPDATE SET n = finding_counts.n + excluded.n)"
        ));
    }
    for (n, set) in CHILD_SETS.iter().enumerate() {
        let rows = child_rows(chunk, set.created);
        if rows.is_empty() {
            continue;
        }
        query.push(&format!(
            ", child{n} AS (INSERT INTO {} (finding_id, {}) SELECT v.owner, v.value FROM unnest(",
            set.table, set.column
        ));
        sql::push_array(&mut query, sql::text_array(rows.iter().map(|(owner, _)| Some(*owner))), "TEXT");
        query.push(", ");
        sql::push_array(&mut query, sql::text_array(rows.iter().map(|(_, value)| Some(*value))), "TEXT");
        query
            .push(") AS v (owner, value) WHERE v.owner IN (SELECT id FROM inserted) ON CONFLICT DO NOTHING)");
    }
    query.push(" SELECT id FROM inserted");
    Ok(query)
}

async fn purge(tx: &mut Transaction<'_, Any>, event: &LogEvent) -> Result<(), ProjectionError> {
    let children = CHILD_SETS.map(|set| (set.table, "finding_id"));
    purge_engagement(tx, event, "findings", &children).await?;
    sqlx::query("DELETE FROM finding_counts WHERE organization_id = $1 AND engagement_id = $2")
        .bind(&event.organization_id)
        .bind(&event.aggregate_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Applies one event of a finding on its own: its creation (inserted alone), its deletion, or one
/// change of a wave too small for the wave's statement, which sets the columns of the same
/// `Patch`.
async fn apply_change(
    tx: &mut Transaction<'_, Any>,
    event: &LogEvent,
    change: FindingEvent,
    counts: &mut Counts,
) -> Result<(), ProjectionError> {
    let id = event.aggregate_id.as_str();
    match change {
        FindingEvent::Created(_) => return insert_created(tx, &[event], counts).await,
        FindingEvent::Deleted(_) => {
            for set in CHILD_SETS {
                replace_set(tx, set.table, "finding_id", set.column, id, &[]).await?;
            }
            let gone = sqlx::query(&format!("DELETE FROM findings WHERE id = $1 RETURNING {BUCKET_COLUMNS}"))
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
            if let Some(row) = gone {
                *counts.entry(Bucket::from_row(&row)?).or_default() -= 1;
            }
            return Ok(());
        }
        FindingEvent::Updated(_) | FindingEvent::StatusChanged(_) | FindingEvent::ReviewStatusChanged(_) => {}
    }
    let patch = Patch::of(change)?;
    let mut query = Sql::new("UPDATE findings SET updated_at = ");
    query.bind(event.recorded_at).push(", version = ").bind(event.sequence);
    for (column, value) in patch.texts() {
        query.push(", ").push(column).push(" = ").bind(value.map(str::to_owned));
    }
    for (column, value) in patch.ints() {
        query.push(", ").push(column).push(" = ").bind(value);
    }
    // openedAt is the first opening; reopening clears remediatedAt and closedAt.
    match patch.value("status") {
        Some("open") => {
            query.push(", opened_at = COALESCE(findings.opened_at, ").bind(event.recorded_at).push(")");
            query.push(", remediated_at = NULL, closed_at = NULL");
        }
        Some("remediated") => {
            query.push(", remediated_at = ").bind(event.recorded_at);
        }
        Some("closed") => {
            query.push(", closed_at = ").bind(event.recorded_at);
        }
        _ => {}
    }
    // A change that may move the finding to another counter needs the bucket it leaves. PostgreSQL
    // returns it from the update itself: a self-join reads the row as it was before this
    // statement, so no SELECT goes first (one round trip less on the writer's connection).
    // SQLite's RETURNING sees only the new row.
    let moves = patch.moves_counter();
    let (updated, before) = if moves && !sql::is_sqlite(tx.backend_name()) {
        query.push(" FROM findings AS before WHERE findings.id = ").bind(id);
        query.push(" AND findings.version < ").bind(event.sequence).push(" AND before.id = findings.id");
        let returned: Vec<String> = BUCKET_COLUMNS.split(", ").map(|c| format!("before.{c}")).collect();
        query.push(" RETURNING ").push(&returned.join(", "));
        let before =
            query.query().fetch_optional(&mut **tx).await?.map(|row| Bucket::from_row(&row)).transpose()?;
        (before.is_some(), before)
    } else {
        let before = if moves {
            sqlx::query(&format!("SELECT {BUCKET_COLUMNS} FROM findings WHERE id = $1 AND version < $2"))
                .bind(id)
                .bind(event.sequence)
                .fetch_optional(&mut **tx)
                .await?
                .map(|row| Bucket::from_row(&row))
                .transpose()?
        } else {
            None
        };
        query.push(" WHERE id = ").bind(id).push(" AND version < ").bind(event.sequence);
        (query.query().execute(&mut **tx).await?.rows_affected() == 1, before)
    };
    if updated {
        for (table, column, values) in patch.children() {
            replace_set(tx, table, "finding_id", column, id, values).await?;
        }
        if let Some(before) = before {
            let after = Bucket {
                severity: patch.value("severity").map_or_else(|| before.severity.clone(), str::to_owned),
                status: patch.value("status").map_or_else(|| before.status.clone(), str::to_owned),
                review_status: patch
                    .value("review_status")
                    .map_or_else(|| before.review_status.clone(), str::to_owned),
                ..before.clone()
            };
            count_move(counts, before, after);
        }
    }
    Ok(())
}

#[async_trait]
impl Projector for FindingsProjector {
    fn name(&self) -> &'static str {
        "findings"
    }

    fn schema_version(&self) -> i64 {
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &["finding_tags", "finding_cwes", "finding_cves", "finding_targets", "finding_counts", "findings"]
    }

    async fn apply(&self, tx: &mut Transaction<'_, Any>, events: &[LogEvent]) -> Result<(), ProjectionError> {
        apply_events(tx, None, events).await
    }

    async fn apply_bulk(
        &self,
        tx: &mut Transaction<'_, Any>,
        bulk: &mut BulkLoad,
        events: &[LogEvent],
    ) -> Result<(), ProjectionError> {
        apply_events(tx, Some(bulk), events).await
    }

    /// A batch whose finding events are all creations (the commonest live batch) is one
    /// statement, as `insert_created` sends it: the findings, their child rows and counters.
    fn inline_statements(&self, events: &[LogEvent]) -> Option<Vec<Sql>> {
        let mut created = Vec::new();
        for event in events {
            if deletes_engagement(event) {
                return None;
            }
            if event.aggregate_type == "finding" {
                if event.event_type != finding::CREATED {
                    return None;
                }
                created.push(event);
            }
        }
        match created.len() {
            0 => Some(Vec::new()),
            n if n <= POSTGRES_CHUNK => {
                created_statement(&created, false, true).ok().map(|chunk| vec![chunk.statement])
            }
            _ => None,
        }
    }

    /// The counters, recounted from the findings the bulk replay left (they always equal that
    /// count): one aggregate instead of an upsert of every bucket at every batch.
    async fn finish_bulk(&self, tx: &mut Transaction<'_, Any>) -> Result<(), ProjectionError> {
        sqlx::query("DELETE FROM finding_counts").execute(&mut **tx).await?;
        sqlx::query(&format!(
            "INSERT INTO finding_counts ({BUCKET_COLUMNS}, n) \
             SELECT {BUCKET_COLUMNS}, count(*) FROM findings GROUP BY {BUCKET_COLUMNS}"
        ))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// Applies `events` in log order; with `bulk` (a PostgreSQL rebuild's replay), creations are
/// loaded by COPY.
async fn apply_events(
    tx: &mut Transaction<'_, Any>,
    mut bulk: Option<&mut BulkLoad>,
    events: &[LogEvent],
) -> Result<(), ProjectionError> {
    // Creations are held back and inserted together. A change to another finding cannot
    // touch them and counters only add up, so only a change to a finding held back, or an
    // engagement's deletion (which purges its findings), inserts them first: the updates
    // interleaved with creations (a live batch, a rebuild of a busy log) no longer split
    // them into a statement per run.
    let mut held = HeldCreations::default();
    // Changes wait in waves of distinct findings (see `changes`).
    let mut wave = ChangeWave::default();
    let mut counts = Counts::new();
    // A bulk replay's counters are counted once at its end (`finish_bulk`), not batch by batch.
    let count = bulk.is_none();
    for event in events {
        if deletes_engagement(event) {
            held.insert(tx, &mut bulk, &mut counts).await?;
            wave.apply(tx, &mut counts).await?;
            // The purge drops the engagement's counters: what is pending goes first.
            if count {
                flush_counts(tx, &mut counts).await?;
            }
            purge(tx, event).await?;
            // Its rows stay locked by this uncommitted transaction: see `HeldCreations::insert`.
            bulk = None;
            continue;
        }
        if event.aggregate_type != "finding" {
            continue;
        }
        // Told apart without parsing, so that creations are parsed chunk by chunk while
        // the database inserts the chunk before.
        if event.event_type == finding::CREATED {
            held.hold(event);
            continue;
        }
        let change = serde_json::from_str::<FindingEvent>(&event.payload)?;
        if held.holds(&event.aggregate_id) {
            held.insert(tx, &mut bulk, &mut counts).await?;
        }
        match change {
            FindingEvent::Updated(_)
            | FindingEvent::StatusChanged(_)
            | FindingEvent::ReviewStatusChanged(_) => {
                if wave.holds(&event.aggregate_id) || wave.is_full() {
                    wave.apply(tx, &mut counts).await?;
                }
                wave.add(event, change);
            }
            FindingEvent::Created(_) | FindingEvent::Deleted(_) => {
                if wave.holds(&event.aggregate_id) {
                    wave.apply(tx, &mut counts).await?;
                }
                apply_change(tx, event, change, &mut counts).await?;
                // A deleted row stays locked by this uncommitted transaction: see
                // `HeldCreations::insert`.
                bulk = None;
            }
        }
    }
    held.insert(tx, &mut bulk, &mut counts).await?;
    wave.apply(tx, &mut counts).await?;
    if !count {
        return Ok(());
    }
    flush_counts(tx, &mut counts).await
}

/// Creation events not inserted yet, and the findings they create.
#[derive(Default)]
struct HeldCreations<'e> {
    events: Vec<&'e LogEvent>,
    ids: HashSet<&'e str>,
}

impl<'e> HeldCreations<'e> {
    fn hold(&mut self, event: &'e LogEvent) {
        self.events.push(event);
        self.ids.insert(&event.aggregate_id);
    }

    fn holds(&self, finding_id: &str) -> bool {
        self.ids.contains(finding_id)
    }

    /// Inserts every held creation, leaving none held: by COPY over `bulk` when given, else (or
    /// when the COPY is refused because some are not new) by INSERT in `tx`. Once `tx` has
    /// written a finding row (an INSERT, a deletion), `bulk` is dropped for the rest of the
    /// batch: a COPY of the same id would wait for `tx` to end, which waits for the COPY.
    async fn insert(
        &mut self,
        tx: &mut Transaction<'_, Any>,
        bulk: &mut Option<&mut BulkLoad>,
        counts: &mut Counts,
    ) -> Result<(), ProjectionError> {
        if self.events.is_empty() {
            return Ok(());
        }
        let loaded = match bulk.as_deref_mut() {
            Some(load) => copy_created(load, &self.events).await?,
            None => false,
        };
        if !loaded {
            *bulk = None;
            insert_created(tx, &self.events, counts).await?;
        }
        self.events.clear();
        self.ids.clear();
        Ok(())
    }
}

/// One event of a finding's stream, as folding needs it.
#[derive(Debug, Clone, Copy)]
pub struct StreamEvent<'a> {
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub recorded_at: i64,
    /// The JSON of the event enum.
    pub payload: &'a str,
}

impl<'a> From<&'a LogEvent> for StreamEvent<'a> {
    fn from(event: &'a LogEvent) -> Self {
        Self {
            aggregate_id: &event.aggregate_id,
            sequence: event.sequence,
            recorded_at: event.recorded_at,
            payload: &event.payload,
        }
    }
}

/// The row as of the end of `events` (one finding's stream, in order), folded the way the
/// projector applies them: time travel. `None` before the creation and after the deletion.
pub fn fold(events: &[LogEvent]) -> Result<Option<FindingRow>, ProjectionError> {
    fold_onto(None, events.iter().map(StreamEvent::from))
}

/// `row` (the finding as of some version, `None` before its creation) with the stream's next
/// `events` applied.
pub fn fold_onto<'a>(
    mut row: Option<FindingRow>,
    events: impl IntoIterator<Item = StreamEvent<'a>>,
) -> Result<Option<FindingRow>, ProjectionError> {
    for event in events {
        let change = match serde_json::from_str::<FindingEvent>(event.payload)? {
            FindingEvent::Created(c) => {
                row = Some(FindingRow {
                    id: event.aggregate_id.to_owned(),
                    organization_id: c.organization_id,
                    engagement_id: c.engagement_id,
                    title: c.title,
                    severity: c.severity,
                    cvss: c.cvss.map(stored_cvss),
                    cwe: c.cwe,
                    cve: c.cve,
                    description: c.description,
                    impact: c.impact,
                    remediation: c.remediation,
                    steps_to_reproduce: c.steps_to_reproduce,
                    references: c.references,
                    affected_target_ids: c.affected_target_ids,
                    status: c.status,
                    review_status: c.review_status,
                    retest_notes: c.retest_notes,
                    tags: c.tags,
                    // The projector inserts these empty: only transitions set them.
                    opened_at: None,
                    remediated_at: None,
                    closed_at: None,
                    created_at: event.recorded_at,
                    updated_at: event.recorded_at,
                    version: event.sequence,
                });
                continue;
            }
            FindingEvent::Deleted(_) => {
                row = None;
                continue;
            }
            other => other,
        };
        let Some(row) = row.as_mut() else { continue };
        match change {
            FindingEvent::Updated(u) => {
                let texts = [
                    (&mut row.description, u.description),
                    (&mut row.impact, u.impact),
                    (&mut row.remediation, u.remediation),
                    (&mut row.steps_to_reproduce, u.steps_to_reproduce),
                    (&mut row.retest_notes, u.retest_notes),
                ];
                for (field, value) in texts {
                    if let Some(value) = value {
                        *field = value;
                    }
                }
                if let Some(title) = u.title {
                    row.title = title;
                }
                if let Some(severity) = u.severity {
                    row.severity = severity;
                }
                if let Some(cvss) = u.cvss {
                    row.cvss = cvss.map(stored_cvss);
                }
                let lists = [
                    (&mut row.cwe, u.cwe),
                    (&mut row.cve, u.cve),
                    (&mut row.references, u.references),
                    (&mut row.affected_target_ids, u.affected_target_ids),
                    (&mut row.tags, u.tags),
                ];
                for (field, value) in lists {
                    if let Some(value) = value {
                        *field = value;
                    }
                }
            }
            FindingEvent::StatusChanged(t) => {
                // As in the projector: openedAt is the first opening; reopening clears
                // remediatedAt and closedAt.
                match t.change.to.as_str() {
                    "open" => {
                        row.opened_at = row.opened_at.or(Some(event.recorded_at));
                        row.remediated_at = None;
                        row.closed_at = None;
                    }
                    "remediated" => row.remediated_at = Some(event.recorded_at),
                    "closed" => row.closed_at = Some(event.recorded_at),
                    _ => {}
                }
                row.status = t.change.to;
            }
            FindingEvent::ReviewStatusChanged(t) => row.review_status = t.change.to,
            FindingEvent::Created(_) | FindingEvent::Deleted(_) => {}
        }
        row.updated_at = event.recorded_at;
        row.version = event.sequence;
    }
    Ok(row)
}

/// The CVSS as the table gives it back: the score is stored in tenths.
fn stored_cvss(cvss: Cvss) -> Cvss {
    Cvss { score: score_key(Some(&cvss)) as f64 / 10.0, ..cvss }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_chunks_cover_every_row_in_order_with_few_sizes() {
        let rows: Vec<usize> = (0..1_239).collect();
        let chunks: Vec<&[usize]> = fixed_chunks(&rows, 100).collect();
        assert_eq!(chunks.concat(), rows);
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [vec![100; 12], vec![10; 3], vec![8, 1]].concat());
        assert_eq!(fixed_chunks(&rows[..0], 100).count(), 0);
        for len in 0..300 {
            let chunks: Vec<&[usize]> = fixed_chunks(&rows[..len], 100).collect();
            assert_eq!(chunks.concat(), &rows[..len]);
            assert!(chunks.iter().all(|c| [100, 10, 8, 4, 2, 1].contains(&c.len())), "{len}");
            assert!(chunks.iter().filter(|c| c.len() < 10).count() <= 3, "{len}");
        }
    }
}
