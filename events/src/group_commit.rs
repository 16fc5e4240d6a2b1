//! Group commit: appends that arrive while another is being written go to the database together,
//! in one transaction with multi-row INSERTs, so concurrent commands share one commit (one WAL
//! flush, one fsync on SQLite) instead of queueing for the write lock one by one.
//!
//! Each command's events stay all-or-nothing: when a batch fails (a concurrent append to the
//! same aggregate, a name already taken, a refused engagement, all of which abort the whole
//! transaction), its commands are retried one transaction each, so only the offending one fails.
//!
//! The batch is written by a spawned task holding the write slot: a caller that goes away (its
//! client disconnected) cannot abandon a transaction that carries other callers' events.

use std::sync::{Arc, Mutex};

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use serde_json::Value;
use sqlx::{Postgres, QueryBuilder, Sqlite};
use tokio::sync::oneshot;

use crate::EsPool;

/// Rows per INSERT statement: 7 parameters each stays far below both backends' limits.
const INSERT_CHUNK: usize = 500;

/// One event as stored in `events`.
struct Row {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
}

/// One caller's append: its events and where to send the outcome.
struct Append {
    rows: Vec<Row>,
    reply: oneshot::Sender<Result<(), PersistenceError>>,
}

/// The appends waiting for the write slot, shared by every clone of the store.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    queue: Mutex<Vec<AppendSlot>>,
    slot: Arc<tokio::sync::Mutex<()>>,
}

/// `Append` behind a `Debug` the store can derive.
struct AppendSlot(Append);

impl std::fmt::Debug for AppendSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Append").field("events", &self.0.rows.len()).finish()
    }
}

impl GroupCommit {
    /// Appends `events` in one transaction, possibly shared with concurrent appends.
    pub(crate) async fn append(
        &self,
        pool: &EsPool,
        events: &[SerializedEvent],
    ) -> Result<(), PersistenceError> {
        let rows = events
            .iter()
            .map(|event| Row {
                aggregate_type: event.aggregate_type.clone(),
                aggregate_id: event.aggregate_id.clone(),
                sequence: event.sequence as i64,
                event_type: event.event_type.clone(),
                event_version: event.event_version.clone(),
                payload: event.payload.clone(),
                metadata: event.metadata.clone(),
            })
            .collect();
        let (reply, outcome) = oneshot::channel();
        self.lock_queue().push(AppendSlot(Append { rows, reply }));
        // Whoever holds the slot writes everything queued so far; those queued behind it wait
        // for the slot and take everything that arrived meanwhile as the next batch.
        let slot = Arc::clone(&self.slot).lock_owned().await;
        let batch: Vec<Append> = std::mem::take(&mut *self.lock_queue()).into_iter().map(|a| a.0).collect();
        if batch.is_empty() {
            drop(slot);
        } else {
            let pool = pool.clone();
            tokio::spawn(async move {
                write(&pool, batch).await;
                drop(slot);
            });
        }
        outcome.await.map_err(|_| PersistenceError::UnknownError("the append was abandoned".into()))?
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<AppendSlot>> {
        // The queue is only pushed to and taken from, so a poisoned one is still consistent.
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Writes the batch in one transaction; if that fails, each append in its own.
async fn write(pool: &EsPool, batch: Vec<Append>) {
    if batch.len() > 1 {
        let rows: Vec<&Row> = batch.iter().flat_map(|append| &append.rows).collect();
        if insert(pool, &rows).await.is_ok() {
            for append in batch {
                let _ = append.reply.send(Ok(()));
            }
            return;
        }
    }
    for append in batch {
        let rows: Vec<&Row> = append.rows.iter().collect();
        let _ = append.reply.send(insert(pool, &rows).await.map_err(|e| persistence_error(pool, e)));
    }
}

async fn insert(pool: &EsPool, rows: &[&Row]) -> Result<(), sqlx::Error> {
    match pool {
        EsPool::Sqlite(pool) => {
            let mut tx = pool.begin().await?;
            for chunk in rows.chunks(INSERT_CHUNK) {
                insert_statement::<Sqlite>(chunk).build().execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        EsPool::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            for chunk in rows.chunks(INSERT_CHUNK) {
                insert_statement::<Postgres>(chunk).build().execute(&mut *tx).await?;
            }
            tx.commit().await
        }
    }
}

fn insert_statement<'a, DB>(rows: &'a [&'a Row]) -> QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a Value: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut query = QueryBuilder::new(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) ",
    );
    query.push_values(rows, |mut values, row| {
        values
            .push_bind(row.aggregate_type.as_str())
            .push_bind(row.aggregate_id.as_str())
            .push_bind(row.sequence)
            .push_bind(row.event_type.as_str())
            .push_bind(row.event_version.as_str())
            .push_bind(&row.payload)
            .push_bind(&row.metadata);
    });
    query
}

/// The error as the cqrs-es repositories report it: a clash on a unique key (a concurrent
/// append, a taken name, a refused engagement, see the migrations) is an optimistic-lock conflict.
fn persistence_error(pool: &EsPool, error: sqlx::Error) -> PersistenceError {
    let conflict_code = match pool {
        EsPool::Sqlite(_) => "1555",
        EsPool::Postgres(_) => "23505",
    };
    match &error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some(conflict_code) => {
            PersistenceError::OptimisticLockError
        }
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            PersistenceError::ConnectionError(Box::new(error))
        }
        _ => PersistenceError::UnknownError(Box::new(error)),
    }
}
