//! Changes to findings (updates, status and review transitions) applied in waves: consecutive
//! changes to distinct findings wait together, and another event of a finding of the wave (a
//! second change, its deletion) or an engagement's deletion applies the wave first, so each
//! change still lands on top of the one before it.
//!
//! On PostgreSQL a wave is ONE statement: an UPDATE from one array parameter per column, with a
//! bit per column saying which ones each change sets. Its self-join returns the counter bucket
//! each finding leaves, and data-modifying CTEs replace the child sets (tags, CWEs, CVEs,
//! targets) the changes set. That replaces a statement per event plus a DELETE and an INSERT per
//! child row, the round trips that dominated a live mix of updates and a rebuild of a busy log.
//! A small wave (a live batch's few changes) goes one by one as well, as does SQLite's, which has
//! no round trips and whose RETURNING sees only the new row.

use std::collections::HashSet;

use pwnbook_events::finding::{FindingEvent, FindingUpdated};
use pwnbook_events::LogEvent;
use sqlx::{Any, Row, Transaction};

use super::{apply_change, count_move, score_key, severity_rank, Bucket, Counts, CHILD_SETS};
use crate::sql::{self, Sql};
use crate::ProjectionError;

/// Fewer changes than this go one by one: the wave's statement is planned for its parameters at
/// each run (the plan depends on how many findings it touches), which costs more than the round
/// trips it saves on a few changes (measured: ~0.7 ms of planning, against ~0.4 ms per change).
const WAVE_STATEMENT_MIN: usize = 8;
/// Most changes per wave.
const WAVE_STATEMENT_MAX: usize = 500;

/// The text columns a change may set; each is bit `1 << index` of a change's mask.
const TEXTS: [&str; 17] = [
    "title",
    "title_key",
    "severity",
    "cvss_vector",
    "cvss_version",
    "description",
    "impact",
    "remediation",
    "steps_to_reproduce",
    "retest_notes",
    "cwe",
    "cve",
    "refs",
    "affected_target_ids",
    "tags",
    "status",
    "review_status",
];

/// The integer columns a change may set; bit `1 << (TEXTS.len() + index)`.
const INTS: [&str; 2] = ["severity_rank", "cvss_score"];

fn text_bit(column: &str) -> i64 {
    let i = TEXTS.iter().position(|c| *c == column);
    debug_assert!(i.is_some(), "no text column {column}");
    i.map_or(0, |i| 1 << i)
}

/// The columns one change sets: which (`mask`) and to what (a NULL where it sets NULL or does not
/// set the column), with the new child sets. Both ways of applying a change set these columns.
#[derive(Default)]
pub(super) struct Patch {
    mask: i64,
    texts: [Option<String>; TEXTS.len()],
    ints: [Option<i64>; INTS.len()],
    /// The new values of each of `CHILD_SETS` it replaces.
    children: [Option<Vec<String>>; CHILD_SETS.len()],
}

impl Patch {
    fn set_text(&mut self, column: &str, value: Option<String>) {
        let i = TEXTS.iter().position(|c| *c == column);
        debug_assert!(i.is_some(), "no text column {column}");
        if let Some(i) = i {
            self.mask |= 1 << i;
            self.texts[i] = value;
        }
    }

    fn set_int(&mut self, column: &str, value: i64) {
        let i = INTS.iter().position(|c| *c == column);
        debug_assert!(i.is_some(), "no integer column {column}");
        if let Some(i) = i {
            self.mask |= 1 << (TEXTS.len() + i);
            self.ints[i] = Some(value);
        }
    }

    fn set_list(&mut self, column: &str, values: Vec<String>) -> Result<(), serde_json::Error> {
        self.set_text(column, Some(serde_json::to_string(&values)?));
        if let Some(i) = CHILD_SETS.iter().position(|set| set.list == column) {
            self.children[i] = Some(values);
        }
        Ok(())
    }

    /// What an update or a transition sets (nothing for a creation or a deletion).
    pub(super) fn of(change: FindingEvent) -> Result<Self, serde_json::Error> {
        let mut patch = Self::default();
        match change {
            FindingEvent::Updated(u) => patch.updated(u)?,
            FindingEvent::StatusChanged(t) => patch.set_text("status", Some(t.change.to)),
            FindingEvent::ReviewStatusChanged(t) => patch.set_text("review_status", Some(t.change.to)),
            FindingEvent::Created(_) | FindingEvent::Deleted(_) => {}
        }
        Ok(patch)
    }

    fn updated(&mut self, u: FindingUpdated) -> Result<(), serde_json::Error> {
        if let Some(title) = u.title {
            self.set_text("title_key", Some(title.to_lowercase()));
            self.set_text("title", Some(title));
        }
        if let Some(severity) = u.severity {
            self.set_int("severity_rank", severity_rank(&severity));
            self.set_text("severity", Some(severity));
        }
        if let Some(cvss) = u.cvss {
            self.set_int("cvss_score", score_key(cvss.as_ref()));
            self.set_text("cvss_vector", cvss.as_ref().map(|c| c.vector.clone()));
            self.set_text("cvss_version", cvss.map(|c| c.version));
        }
        let texts = [
            ("description", u.description),
            ("impact", u.impact),
            ("remediation", u.remediation),
            ("steps_to_reproduce", u.steps_to_reproduce),
            ("retest_notes", u.retest_notes),
        ];
        for (column, value) in texts {
            if let Some(value) = value {
                self.set_text(column, value);
            }
        }
        let lists = [
            ("cwe", u.cwe),
            ("cve", u.cve),
            ("refs", u.references),
            ("affected_target_ids", u.affected_target_ids),
            ("tags", u.tags),
        ];
        for (column, values) in lists {
            if let Some(values) = values {
                self.set_list(column, values)?;
            }
        }
        Ok(())
    }

    /// The text columns it sets, with their new values (`None`: NULL).
    pub(super) fn texts(&self) -> impl Iterator<Item = (&'static str, Option<&str>)> + '_ {
        TEXTS
            .iter()
            .zip(&self.texts)
            .enumerate()
            .filter(|(i, _)| self.mask & (1 << i) != 0)
            .map(|(_, (column, value))| (*column, value.as_deref()))
    }

    /// The integer columns it sets, with their new values.
    pub(super) fn ints(&self) -> impl Iterator<Item = (&'static str, i64)> + '_ {
        INTS.iter().zip(&self.ints).filter_map(|(column, value)| value.map(|value| (*column, value)))
    }

    /// The new value of a text column it sets to a value.
    pub(super) fn value(&self, column: &str) -> Option<&str> {
        self.texts().find(|(c, _)| *c == column).and_then(|(_, value)| value)
    }

    /// Whether it sets a column a finding is counted by (severity, status, review status).
    pub(super) fn moves_counter(&self) -> bool {
        ["severity", "status", "review_status"].into_iter().any(|column| self.value(column).is_some())
    }

    /// The child sets it replaces: table, value column, new values.
    pub(super) fn children(&self) -> impl Iterator<Item = (&'static str, &'static str, &[String])> + '_ {
        CHILD_SETS
            .iter()
            .zip(&self.children)
            .filter_map(|(set, values)| values.as_deref().map(|values| (set.table, set.column, values)))
    }
}

/// Changes waiting to be applied together, to distinct findings.
#[derive(Default)]
pub(super) struct ChangeWave<'e> {
    changes: Vec<(&'e LogEvent, FindingEvent)>,
    ids: HashSet<&'e str>,
}

impl<'e> ChangeWave<'e> {
    pub(super) fn holds(&self, finding_id: &str) -> bool {
        self.ids.contains(finding_id)
    }

    /// Whether the wave is as large as one statement should carry (a rebuild's batch holds
    /// thousands of events), like a chunk of creations.
    pub(super) fn is_full(&self) -> bool {
        self.changes.len() >= WAVE_STATEMENT_MAX
    }

    /// Adds an update or a transition (the caller applies the wave first if it holds the finding).
    pub(super) fn add(&mut self, event: &'e LogEvent, change: FindingEvent) {
        self.ids.insert(&event.aggregate_id);
        self.changes.push((event, change));
    }

    /// Applies every change of the wave, leaving it empty; the counters they move go to `counts`.
    pub(super) async fn apply(
        &mut self,
        tx: &mut Transaction<'_, Any>,
        counts: &mut Counts,
    ) -> Result<(), ProjectionError> {
        self.ids.clear();
        let changes = std::mem::take(&mut self.changes);
        if changes.is_empty() {
            return Ok(());
        }
        if sql::is_sqlite(tx.backend_name()) || changes.len() < WAVE_STATEMENT_MIN {
            for (event, change) in changes {
                apply_change(tx, event, change, counts).await?;
            }
            return Ok(());
        }
        let (events, changes): (Vec<&LogEvent>, Vec<FindingEvent>) = changes.into_iter().unzip();
        let patches = changes.into_iter().map(Patch::of).collect::<Result<Vec<_>, _>>()?;
        let rows = wave_statement(&events, &patches).query().fetch_all(&mut **tx).await?;
        for row in &rows {
            let before = Bucket {
                organization_id: row.try_get("organization_id")?,
                engagement_id: row.try_get("engagement_id")?,
                severity: row.try_get("before_severity")?,
                status: row.try_get("before_status")?,
                review_status: row.try_get("before_review_status")?,
            };
            let after = Bucket {
                severity: row.try_get("severity")?,
                status: row.try_get("status")?,
                review_status: row.try_get("review_status")?,
                ..before.clone()
            };
            count_move(counts, before, after);
        }
        Ok(())
    }
}

/// PostgreSQL: the UPDATE of a wave (`events[i]` changed by `patches[i]`, distinct findings),
/// with the child sets it replaces; returns each updated finding's bucket before and after. A
/// change whose version the finding already has (a replay) updates nothing.
fn wave_statement(events: &[&LogEvent], patches: &[Patch]) -> Sql {
    let mut names = vec!["id", "version", "recorded_at", "mask"];
    names.extend(TEXTS);
    names.extend(INTS);
    let mut query = Sql::new("WITH u AS (SELECT * FROM unnest(");
    sql::push_array(
        &mut query,
        sql::text_array(events.iter().map(|e| Some(e.aggregate_id.as_str()))),
        "TEXT",
    );
    for column in [
        sql::int_array(events.iter().map(|e| e.sequence)),
        sql::int_array(events.iter().map(|e| e.recorded_at)),
        sql::int_array(patches.iter().map(|p| p.mask)),
    ] {
        query.push(", ");
        sql::push_array(&mut query, column, "BIGINT");
    }
    for i in 0..TEXTS.len() {
        query.push(", ");
        sql::push_array(&mut query, sql::text_array(patches.iter().map(|p| p.texts[i].as_deref())), "TEXT");
    }
    for i in 0..INTS.len() {
        query.push(", ");
        sql::push_array(&mut query, sql::int_or_null_array(patches.iter().map(|p| p.ints[i])), "BIGINT");
    }
    query.push(&format!(") AS u ({}))", names.join(", ")));
    let sets: Vec<String> = TEXTS
        .iter()
        .chain(INTS.iter())
        .enumerate()
        .map(|(bit, c)| {
            format!("{c} = CASE WHEN (u.mask & {}) <> 0 THEN u.{c} ELSE findings.{c} END", 1_i64 << bit)
        })
        .collect();
    // A transition to open sets the first opening and clears the later times; to remediated or
    // closed, it records that time (`u.status` is NULL unless the change sets it).
    query.push(&format!(
        ", changed AS (UPDATE findings SET updated_at = u.recorded_at, version = u.version, {}, \
         opened_at = CASE u.status WHEN 'open' THEN COALESCE(findings.opened_at, u.recorded_at) \
         ELSE findings.opened_at END, \
         remediated_at = CASE u.status WHEN 'open' THEN NULL WHEN 'remediated' THEN u.recorded_at \
         ELSE findings.remediated_at END, \
         closed_at = CASE u.status WHEN 'open' THEN NULL WHEN 'closed' THEN u.recorded_at \
         ELSE findings.closed_at END \
         FROM u, findings AS before \
         WHERE findings.id = u.id AND findings.version < u.version AND before.id = findings.id \
         RETURNING findings.id, u.mask, before.organization_id, before.engagement_id, \
         before.severity AS before_severity, before.status AS before_status, \
         before.review_status AS before_review_status, findings.severity, findings.status, \
         findings.review_status)",
        sets.join(", ")
    ));
    // Each child set a change of the wave sets: the rows no longer in it go, the new ones come
    // (two disjoint sets of rows, so the two CTEs cannot clash). Only the child tables the wave
    // touches get their CTEs, which are most of the statement's planning (one text per
    // combination, each prepared).
    for (n, set) in CHILD_SETS.iter().enumerate() {
        let (table, value) = (set.table, set.column);
        if patches.iter().all(|patch| patch.children[n].is_none()) {
            continue;
        }
        let rows: Vec<(&str, &str)> = events
            .iter()
            .zip(patches)
            .flat_map(|(event, patch)| {
                patch.children[n].iter().flatten().map(|v| (event.aggregate_id.as_str(), v.as_str()))
            })
            .collect();
        query.push(&format!(", set{n} AS (SELECT * FROM unnest("));
        sql::push_array(&mut query, sql::text_array(rows.iter().map(|(owner, _)| Some(*owner))), "TEXT");
        query.push(", ");
        sql::push_array(&mut query, sql::text_array(rows.iter().map(|(_, v)| Some(*v))), "TEXT");
        query.push(&format!(
            ") AS s (owner, value)), \
             gone{n} AS (DELETE FROM {table} AS t USING changed \
             WHERE t.finding_id = changed.id AND (changed.mask & {bit}) <> 0 \
             AND NOT EXISTS (SELECT 1 FROM set{n} WHERE set{n}.owner = t.finding_id AND set{n}.value = t.{value})), \
             added{n} AS (INSERT INTO {table} (finding_id, {value}) SELECT owner, value FROM set{n} \
             WHERE owner IN (SELECT id FROM changed) ON CONFLICT DO NOTHING)",
            bit = text_bit(set.list)
        ));
    }
    query.push(" SELECT * FROM changed");
    query
}
