//! Reading the global event log.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::hash::{chain_hash, ChainedFields, GENESIS};
use crate::{Backend, Store, StoreError};

/// One row of `event_log`: an event with its global position and chain hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    pub position: i64,
    pub event_id: String,
    pub organization_id: String,
    pub engagement_id: Option<String>,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The payload exactly as stored (the JSON of the event enum).
    pub payload: String,
    pub metadata: String,
    pub recorded_at: i64,
    pub prev_hash: String,
    pub hash: String,
}

impl LogEvent {
    pub fn chained_fields(&self) -> ChainedFields<'_> {
        ChainedFields {
            position: self.position,
            event_id: &self.event_id,
            organization_id: &self.organization_id,
            engagement_id: self.engagement_id.as_deref(),
            aggregate_type: &self.aggregate_type,
            aggregate_id: &self.aggregate_id,
            sequence: self.sequence,
            event_type: &self.event_type,
            event_version: &self.event_version,
            payload: &self.payload,
            metadata: &self.metadata,
            recorded_at: self.recorded_at,
        }
    }

    pub fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            position: row.try_get("position")?,
            event_id: row.try_get("event_id")?,
            organization_id: row.try_get("organization_id")?,
            engagement_id: row.try_get("engagement_id")?,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: row.try_get("payload")?,
            metadata: row.try_get("metadata")?,
            recorded_at: row.try_get("recorded_at")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        })
    }
}

/// The columns `LogEvent::from_row` reads, for queries written elsewhere.
pub const LOG_COLUMNS: &str = "position, event_id, organization_id, engagement_id, aggregate_type, \
     aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at, prev_hash, hash";

/// Up to `limit` events after `after`, in log order.
pub async fn read_after<'e, E>(executor: E, after: i64, limit: i64) -> Result<Vec<LogEvent>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = format!("SELECT {LOG_COLUMNS} FROM event_log WHERE position > $1 ORDER BY position LIMIT $2");
    let rows = sqlx::query(&sql).bind(after).bind(limit).fetch_all(executor).await?;
    Ok(rows.iter().map(LogEvent::from_row).collect::<Result<_, _>>()?)
}

/// Every sequenced event of one stream of one organization, in stream order.
pub async fn read_stream(
    store: &Store,
    organization_id: &str,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<LogEvent>, StoreError> {
    let sql = format!(
        "SELECT {LOG_COLUMNS} FROM event_log WHERE aggregate_type = $1 AND aggregate_id = $2 \
         AND organization_id = $3 ORDER BY sequence"
    );
    let rows = sqlx::query(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(organization_id)
        .fetch_all(store.pool())
        .await?;
    Ok(rows.iter().map(LogEvent::from_row).collect::<Result<_, _>>()?)
}

/// Whether the organization's log holds any event of the stream.
pub async fn stream_exists(
    store: &Store,
    organization_id: &str,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<bool, StoreError> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT position FROM event_log WHERE aggregate_type = $1 AND aggregate_id = $2 \
         AND organization_id = $3 LIMIT 1",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(organization_id)
    .fetch_optional(store.pool())
    .await?;
    Ok(found.is_some())
}

/// The position of the newest event in the log (0 when empty).
pub async fn head(store: &Store) -> Result<i64, StoreError> {
    let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM event_log")
        .fetch_one(store.pool())
        .await?;
    Ok(head)
}

/// Events committed to `events` but not yet given a position: those after the sequencer's
/// cursor, counted along the order it reads them in (an index range, not the whole table).
pub async fn unsequenced(store: &Store) -> Result<i64, StoreError> {
    let sql = match store.backend() {
        Backend::Postgres => {
            "SELECT count(*) FROM events e, sequencer_state s \
              WHERE s.id = 1 AND (e.tx_id, e.seq_no) > (s.last_tx::xid8, s.last_no)"
        }
        Backend::Sqlite => {
            "SELECT count(*) FROM events WHERE rowid > (SELECT last_no FROM sequencer_state WHERE id = 1)"
        }
    };
    Ok(sqlx::query_scalar(sql).fetch_one(store.pool()).await?)
}

/// The position the sequencer gave to one event of one stream, once it has.
pub async fn position_of(
    store: &Store,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
) -> Result<Option<i64>, StoreError> {
    let position = sqlx::query_scalar(
        "SELECT position FROM event_log WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(sequence)
    .fetch_optional(store.pool())
    .await?;
    Ok(position)
}

/// The outcome of re-computing the hash chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub valid: bool,
    pub checked: u64,
    pub first_broken_position: Option<i64>,
}

/// Recomputes the hash chain of one organization (or of all of them) from the stored rows and
/// names the first position whose stored hashes do not match.
pub async fn verify_chain(store: &Store, organization_id: Option<&str>) -> Result<ChainReport, StoreError> {
    const PAGE: i64 = 5_000;
    let mut last_hash: HashMap<String, String> = HashMap::new();
    let mut checked = 0_u64;
    let mut after = 0_i64;
    loop {
        let page = match organization_id {
            Some(org) => {
                let sql = format!(
                    "SELECT {LOG_COLUMNS} FROM event_log WHERE organization_id = $1 AND position > $2 \
                     ORDER BY position LIMIT $3"
                );
                let rows = sqlx::query(&sql).bind(org).bind(after).bind(PAGE).fetch_all(store.pool()).await?;
                rows.iter().map(LogEvent::from_row).collect::<Result<Vec<_>, _>>()?
            }
            None => read_after(store.pool(), after, PAGE).await?,
        };
        for event in &page {
            checked += 1;
            let expected_prev = last_hash.get(&event.organization_id).map_or(GENESIS, String::as_str);
            let recomputed = chain_hash(expected_prev, &event.chained_fields());
            if event.prev_hash != expected_prev || event.hash != recomputed {
                return Ok(ChainReport {
                    valid: false,
                    checked,
                    first_broken_position: Some(event.position),
                });
            }
            last_hash.insert(event.organization_id.clone(), event.hash.clone());
        }
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => after = last.position,
            _ => break,
        }
    }
    Ok(ChainReport { valid: true, checked, first_broken_position: None })
}
