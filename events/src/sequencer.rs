//! The sequencer: gives every committed event a dense global position and its place in its
//! organization's hash chain, appending it to the insert-only `event_log`.
//!
//! Any number of sequencers (server processes, the CLI) may run against one database: each batch
//! runs in one transaction that first takes the sequencer lock (an advisory transaction lock on
//! PostgreSQL, the write lock on SQLite), so batches never interleave.
//!
//! PostgreSQL assigns transaction ids (and identity values) before commit, and transactions
//! commit in any order. A row is therefore only sequenced once its transaction id is below
//! `pg_snapshot_xmin(pg_current_snapshot())`: every transaction below that bound has finished, so
//! no row can later appear before the sequencer's cursor. SQLite has one writer at a time, so its
//! rowid order is commit order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use tokio::sync::{watch, Notify};

use crate::hash::{chain_hash, ChainedFields, GENESIS};
use crate::ids::{Id, IdKind};
use crate::{Backend, Store, StoreError};

/// Key of the PostgreSQL advisory lock that serializes sequencer batches.
const SEQUENCER_LOCK: i64 = 0x7077_6e62_6f6f_6b01;
const DEFAULT_BATCH: i64 = 1_000;

/// An event committed to `events` but not yet in the log.
struct Pending {
    cursor_tx: String,
    cursor_no: i64,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
    recorded_at: i64,
}

impl Pending {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            cursor_tx: row.try_get("cursor_tx")?,
            cursor_no: row.try_get("cursor_no")?,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: row.try_get("payload")?,
            metadata: row.try_get("metadata")?,
            recorded_at: row.try_get("recorded_at")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Sequencer {
    store: Store,
    batch: i64,
}

impl Sequencer {
    pub fn new(store: Store) -> Self {
        Self { store, batch: DEFAULT_BATCH }
    }

    /// Sequences everything that is committed and sequenceable now; returns the log head.
    pub async fn catch_up(&self) -> Result<i64, StoreError> {
        loop {
            let (count, head) = self.sequence_batch().await?;
            if count < self.batch as usize {
                return Ok(head);
            }
        }
    }

    /// Waits until every event committed before the call is in the log; returns the log head.
    /// On PostgreSQL a pass can stop short while an older transaction (in any database of the
    /// cluster) is still open, so this repeats passes until the log holds every committed event.
    pub async fn settle(&self, timeout: Duration) -> Result<i64, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let committed: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(self.store.pool()).await?;
            let head = self.catch_up().await?;
            if head >= committed {
                return Ok(head);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Timeout("sequencing the committed events"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sequences one batch; returns how many events it appended and the log head after it.
    pub async fn sequence_batch(&self) -> Result<(usize, i64), StoreError> {
        let mut tx = self.store.pool().begin().await?;
        let (last_tx, last_no) = lock_and_read_cursor(&mut tx, self.store.backend()).await?;
        let pending = fetch_pending(&mut tx, self.store.backend(), &last_tx, last_no, self.batch).await?;
        let mut head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM event_log")
            .fetch_one(&mut *tx)
            .await?;
        let Some(last) = pending.last() else {
            tx.rollback().await?;
            return Ok((0, head));
        };
        let (cursor_tx, cursor_no) = (last.cursor_tx.clone(), last.cursor_no);
        let mut chain_heads: HashMap<String, String> = HashMap::new();
        for event in &pending {
            head += 1;
            append(&mut tx, &mut chain_heads, head, event).await?;
        }
        sqlx::query("UPDATE sequencer_state SET last_tx = $1, last_no = $2 WHERE id = 1")
            .bind(cursor_tx)
            .bind(cursor_no)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((pending.len(), head))
    }
}

async fn lock_and_read_cursor(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
) -> Result<(String, i64), StoreError> {
    let row = match backend {
        Backend::Postgres => {
            // An advisory lock takes no transaction id, so this transaction does not hold back
            // the xmin horizon it is about to read.
            sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                .bind(SEQUENCER_LOCK)
                .execute(&mut **tx)
                .await?;
            sqlx::query("SELECT last_tx, last_no FROM sequencer_state WHERE id = 1")
                .fetch_one(&mut **tx)
                .await?
        }
        // A write first, so the transaction holds SQLite's write lock from its first statement.
        Backend::Sqlite => {
            sqlx::query(
                "UPDATE sequencer_state SET last_no = last_no WHERE id = 1 RETURNING last_tx, last_no",
            )
            .fetch_one(&mut **tx)
            .await?
        }
    };
    Ok((row.try_get("last_tx")?, row.try_get("last_no")?))
}

async fn fetch_pending(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    last_tx: &str,
    last_no: i64,
    limit: i64,
) -> Result<Vec<Pending>, StoreError> {
    let rows = match backend {
        Backend::Postgres => {
            sqlx::query(
                "SELECT tx_id::text AS cursor_tx, seq_no AS cursor_no, aggregate_type, aggregate_id, \
                        sequence, event_type, event_version, payload::text AS payload, \
                        metadata::text AS metadata, recorded_at \
                   FROM events \
                  WHERE (tx_id, seq_no) > ($1::text::xid8, $2) \
                    AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
                  ORDER BY tx_id, seq_no \
                  LIMIT $3",
            )
            .bind(last_tx)
            .bind(last_no)
            .bind(limit)
            .fetch_all(&mut **tx)
            .await?
        }
        Backend::Sqlite => {
            sqlx::query(
                "SELECT '0' AS cursor_tx, rowid AS cursor_no, aggregate_type, aggregate_id, sequence, \
                        event_type, event_version, payload, metadata, recorded_at \
                   FROM events WHERE rowid > $1 ORDER BY rowid LIMIT $2",
            )
            .bind(last_no)
            .bind(limit)
            .fetch_all(&mut **tx)
            .await?
        }
    };
    Ok(rows.iter().map(Pending::from_row).collect::<Result<_, _>>()?)
}

async fn append(
    tx: &mut Transaction<'_, Any>,
    chain_heads: &mut HashMap<String, String>,
    position: i64,
    event: &Pending,
) -> Result<(), StoreError> {
    let metadata: Value = serde_json::from_str(&event.metadata)?;
    let field = |name: &str| metadata.get(name).and_then(Value::as_str).map(str::to_owned);
    let organization_id = field("organizationId").unwrap_or_default();
    let engagement_id = field("engagementId");
    let prev_hash = match chain_heads.get(&organization_id) {
        Some(hash) => hash.clone(),
        None => sqlx::query_scalar(
            "SELECT hash FROM event_log WHERE organization_id = $1 ORDER BY position DESC LIMIT 1",
        )
        .bind(&organization_id)
        .fetch_optional(&mut **tx)
        .await?
        .unwrap_or_else(|| GENESIS.to_owned()),
    };
    let event_id = Id::generate_at(IdKind::Event, event.recorded_at).into_string();
    let fields = ChainedFields {
        position,
        event_id: &event_id,
        organization_id: &organization_id,
        engagement_id: engagement_id.as_deref(),
        aggregate_type: &event.aggregate_type,
        aggregate_id: &event.aggregate_id,
        sequence: event.sequence,
        event_type: &event.event_type,
        event_version: &event.event_version,
        payload: &event.payload,
        metadata: &event.metadata,
        recorded_at: event.recorded_at,
    };
    let hash = chain_hash(&prev_hash, &fields);
    sqlx::query(
        "INSERT INTO event_log (position, event_id, organization_id, engagement_id, aggregate_type, \
             aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(position)
    .bind(&event_id)
    .bind(&organization_id)
    .bind(&engagement_id)
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(event.sequence)
    .bind(&event.event_type)
    .bind(&event.event_version)
    .bind(&event.payload)
    .bind(&event.metadata)
    .bind(event.recorded_at)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut **tx)
    .await?;
    chain_heads.insert(organization_id, hash);
    Ok(())
}

/// A running sequencer task: `kick` after a commit, watch `head` for the log head.
#[derive(Debug, Clone)]
pub struct SequencerHandle {
    kick: Arc<Notify>,
    head: watch::Receiver<i64>,
}

impl SequencerHandle {
    /// Asks the sequencer to look for new events now.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    pub fn head(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }
}

/// Runs a sequencer until `shutdown` fires. It wakes on `kick` and, for events committed by
/// other processes, every `poll`.
pub fn spawn(store: Store, poll: Duration, shutdown: watch::Receiver<bool>) -> SequencerHandle {
    let kick = Arc::new(Notify::new());
    let (head_tx, head_rx) = watch::channel(0);
    let sequencer = Sequencer::new(store);
    let wake = kick.clone();
    tokio::spawn(async move {
        let mut shutdown = shutdown;
        loop {
            match sequencer.catch_up().await {
                Ok(head) => {
                    head_tx.send_if_modified(|current| {
                        let moved = *current != head;
                        *current = head;
                        moved
                    });
                }
                Err(error) => tracing::error!(%error, "sequencer batch failed; retrying"),
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
    SequencerHandle { kick, head: head_rx }
}
