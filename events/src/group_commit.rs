//! Group commit: appends that arrive while another is being written go to the database together,
//! in one transaction with multi-row INSERTs, so concurrent commands share one commit (one WAL
//! flush, one fsync on SQLite) instead of queueing for the write lock one by one.
//!
//! Each command's events stay all-or-nothing: when an INSERT of a batch fails (a concurrent
//! append to the same aggregate, a name already taken, a refused engagement, all of which abort
//! the whole transaction), its appends are retried one transaction each, so only the offending
//! one fails. Any other failure (the connection, BEGIN or COMMIT) is every append's outcome: a
//! COMMIT that failed may still have committed, so retrying could report a stored append as a
//! conflict.
//!
//! One caller at a time holds the write slot and spawns the writer, which writes batch after
//! batch until the queue is empty; the others return as soon as their own batch is written. The
//! writer skips the append of a caller that went away before it was taken (it is never written,
//! as with an abandoned transaction); once taken, it is written with the rest of its batch
//! whatever happens to the caller.

use std::sync::{Arc, Mutex, Weak};

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use sqlx::{Any, Transaction};
use tokio::sync::{oneshot, OwnedMutexGuard};

use crate::sequencer::{Sequenced, Sequencer};
use crate::{Backend, Store};

/// Rows per INSERT statement: 7 parameters each stays far below both backends' limits.
const INSERT_CHUNK: usize = 500;

/// One event as stored in `events` (payload and metadata as JSON text).
struct Row {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
}

/// One caller's append: its events and where to send the outcome.
struct Append {
    rows: Vec<Row>,
    reply: oneshot::Sender<Result<(), PersistenceError>>,
}

/// The appends waiting for the writer, shared by every clone of the store.
#[derive(Default)]
pub(crate) struct GroupCommit {
    queue: Mutex<Vec<Append>>,
    slot: Arc<tokio::sync::Mutex<()>>,
    /// This process's running sequencer, which sequences each batch in the batch's own
    /// transaction: a write then needs one commit, not two, before it is readable.
    sequencer: Mutex<Weak<Sequencer>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").field("queued", &self.lock_queue().len()).finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Appends `events` in one transaction, possibly shared with concurrent appends.
    pub(crate) async fn append(
        &self,
        store: &Store,
        events: &[SerializedEvent],
    ) -> Result<(), PersistenceError> {
        let rows = events
            .iter()
            .map(|event| {
                Ok(Row {
                    aggregate_type: event.aggregate_type.clone(),
                    aggregate_id: event.aggregate_id.clone(),
                    sequence: i64::try_from(event.sequence)
                        .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?,
                    event_type: event.event_type.clone(),
                    event_version: event.event_version.clone(),
                    payload: event.payload.to_string(),
                    metadata: event.metadata.to_string(),
                })
            })
            .collect::<Result<_, PersistenceError>>()?;
        let (reply, mut outcome) = oneshot::channel();
        self.lock_queue().push(Append { rows, reply });
        let slot = tokio::select! {
            biased;
            done = &mut outcome => return finished(done),
            slot = Arc::clone(&self.slot).lock_owned() => slot,
        };
        tokio::spawn(drain(store.clone(), slot));
        finished(outcome.await)
    }

    /// Has `sequencer` sequence the batches (until it is dropped).
    pub(crate) fn attach(&self, sequencer: Weak<Sequencer>) {
        *self.sequencer.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = sequencer;
    }

    fn sequencer(&self) -> Option<Arc<Sequencer>> {
        self.sequencer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).upgrade()
    }

    /// What is queued, but for the appends whose callers went away.
    fn take_queue(&self) -> Vec<Append> {
        let queued = std::mem::take(&mut *self.lock_queue());
        queued.into_iter().filter(|append| !append.reply.is_closed()).collect()
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Append>> {
        // The queue is only pushed to and taken from, so a poisoned one is still consistent.
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn finished(
    done: Result<Result<(), PersistenceError>, oneshot::error::RecvError>,
) -> Result<(), PersistenceError> {
    done.map_err(|_| PersistenceError::UnknownError("the append's writer stopped".into()))?
}

/// The writer: writes what is queued, batch after batch, then gives the slot back.
async fn drain(store: Store, slot: OwnedMutexGuard<()>) {
    loop {
        let batch = store.group_commit().take_queue();
        if batch.is_empty() {
            break;
        }
        write(&store, batch).await;
    }
    drop(slot);
}

/// What failed in a batch's transaction.
enum Failure {
    /// An INSERT: the transaction did not commit, and one append may be to blame.
    Insert(sqlx::Error),
    /// BEGIN, COMMIT or the connection: nothing says which append, or whether it committed.
    Transaction(sqlx::Error),
}

/// Writes the batch in one transaction (sequenced in it when this process runs a sequencer);
/// after a failed INSERT, each append in its own.
async fn write(store: &Store, batch: Vec<Append>) {
    let rows: Vec<&Row> = batch.iter().flat_map(|append| &append.rows).collect();
    let failure = match insert(store, &rows, store.group_commit().sequencer()).await {
        Ok(()) => {
            for append in batch {
                let _ = append.reply.send(Ok(()));
            }
            return;
        }
        Err(failure) => failure,
    };
    let backend = store.backend();
    match failure {
        // Only a constraint or trigger refusal can be one append's fault; the others should not
        // wait for it (an I/O error would fail them one by one as well). The retries leave the
        // sequencing to the sequencer task, which their waiters kick.
        Failure::Insert(sqlx::Error::Database(error)) if batch.len() > 1 => {
            tracing::debug!(%error, appends = batch.len(), "a shared append failed; retrying them one by one");
            for append in batch {
                let rows: Vec<&Row> = append.rows.iter().collect();
                let outcome = insert(store, &rows, None).await.map_err(|failure| match failure {
                    Failure::Insert(error) | Failure::Transaction(error) => persistence_error(backend, error),
                });
                let _ = append.reply.send(outcome);
            }
        }
        // A single append's own failure, or one the whole batch shares.
        Failure::Insert(error) | Failure::Transaction(error) => {
            if batch.len() > 1 {
                tracing::warn!(%error, appends = batch.len(), "a shared append failed");
            }
            let message = error.to_string();
            let mut first = Some(persistence_error(backend, error));
            for append in batch {
                let outcome =
                    first.take().unwrap_or_else(|| PersistenceError::ConnectionError(message.clone().into()));
                let _ = append.reply.send(Err(outcome));
            }
        }
    }
}

/// One transaction of multi-row INSERTs, and the sequencing of what it wrote when `sequencer` is
/// given. Each batch size is a statement of its own: only the one-row INSERT is prepared and
/// kept, so that varying sizes do not evict the connection's other cached statements.
async fn insert(store: &Store, rows: &[&Row], sequencer: Option<Arc<Sequencer>>) -> Result<(), Failure> {
    let _turn = store.write_turn().await;
    let mut tx = store.pool().begin().await.map_err(Failure::Transaction)?;
    for chunk in rows.chunks(INSERT_CHUNK) {
        let sql = insert_sql(store.backend(), chunk.len());
        let mut query = sqlx::query(&sql).persistent(chunk.len() == 1);
        for row in chunk {
            query = query
                .bind(row.aggregate_type.as_str())
                .bind(row.aggregate_id.as_str())
                .bind(row.sequence)
                .bind(row.event_type.as_str())
                .bind(row.event_version.as_str())
                .bind(row.payload.as_str())
                .bind(row.metadata.as_str());
        }
        query.execute(&mut *tx).await.map_err(Failure::Insert)?;
    }
    let sequenced = match &sequencer {
        Some(sequencer) => sequence(sequencer, &mut tx).await.map_err(Failure::Transaction)?,
        None => None,
    };
    tx.commit().await.map_err(Failure::Transaction)?;
    if let (Some(sequencer), Some(sequenced)) = (sequencer, sequenced) {
        sequencer.committed(sequenced);
    }
    Ok(())
}

/// Sequences the batch in its transaction, inside a savepoint: if that fails, the appends still
/// commit and the sequencer task sequences them later.
async fn sequence(
    sequencer: &Sequencer,
    tx: &mut Transaction<'static, Any>,
) -> Result<Option<Sequenced>, sqlx::Error> {
    sqlx::query("SAVEPOINT group_commit_sequence").execute(&mut **tx).await?;
    match sequencer.sequence_in(tx).await {
        Ok(sequenced) => Ok(Some(sequenced)),
        Err(error) => {
            tracing::warn!(%error, "sequencing in the group commit failed; the sequencer task will");
            sqlx::query("ROLLBACK TO SAVEPOINT group_commit_sequence").execute(&mut **tx).await?;
            Ok(None)
        }
    }
}

/// `INSERT INTO events … VALUES` with `rows` rows of parameters. SQLite gets anonymous
/// placeholders (sqlx looks numbered ones up by name, a linear scan per parameter); PostgreSQL
/// casts the JSON text to the columns' type.
fn insert_sql(backend: Backend, rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        match backend {
            Backend::Sqlite => sql.push_str("(?, ?, ?, ?, ?, ?, ?)"),
            Backend::Postgres => {
                let n = row * 7;
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, CAST(${} AS json), CAST(${} AS json))",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 5,
                    n + 6,
                    n + 7
                ));
            }
        }
    }
    sql
}

/// The error as the cqrs-es repositories report it: a clash on a unique key (a concurrent
/// append, a taken name, a refused engagement, see the migrations) is an optimistic-lock conflict.
fn persistence_error(backend: Backend, error: sqlx::Error) -> PersistenceError {
    let conflict_code = match backend {
        Backend::Sqlite => "1555",
        Backend::Postgres => "23505",
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
