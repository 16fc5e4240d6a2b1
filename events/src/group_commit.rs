//! Group commit: appends that arrive while another is being written go to the database together,
//! in one transaction with multi-row INSERTs, so concurrent commands share one commit (one WAL
//! flush, one fsync on SQLite) instead of queueing for the write lock one by one.
//!
//! Each command's events stay all-or-nothing: when an INSERT of a batch is refused by a
//! constraint or trigger (a concurrent append to the same aggregate, a name already taken, a
//! refused engagement, all of which abort the whole transaction), its appends are retried one
//! transaction each, so only the offending one fails. Any other failure (the connection, a
//! timeout, BEGIN or COMMIT) is every append's outcome: a COMMIT that failed may still
//! have committed, so retrying could report a stored append as a conflict. When the connection
//! to PostgreSQL is lost with COMMIT on its way, the writer waits for that session to end and
//! looks the batch up, so its callers learn whether it was stored (`settle`) instead of an
//! unknown outcome, after which a client's retry could write it twice.
//!
//! The batches are written by a thread of their own, with its own runtime and connection: the
//! writer is the one serial step of every command, and on the server's runtime each of its
//! statements would wait behind the request tasks ready at that moment (on two cores, +15–50 %
//! throughput at 16 concurrent commands without that queueing, one thread hop more at one). The writer skips the append of a
//! caller that went away before it was taken (it is never written, as with an abandoned
//! transaction); once taken, it is written with the rest of its batch whatever happens to the
//! caller. The thread ends when the store is closed or its last clone dropped. A panic while
//! writing a batch fails that batch's appends (as an error whose outcome is unknown) and the
//! writer carries on.
//!
//! On PostgreSQL each statement of the batch is a round trip that waits for both the server and
//! this thread to be scheduled, ~0.3 ms each on two busy cores. So the batch goes in one round
//! trip when it can (`Sequencer::append_sequenced`): BEGIN, the append, the claim, the log rows,
//! the inline projection's checkpoints and, when every projector can tell its statements in
//! advance (a batch of finding creations, say), those statements and COMMIT; otherwise the
//! projectors run and COMMIT follows, as two more. That needs the head and chain heads the
//! previous batch left; when the database finds them stale it refuses, and the batch goes the
//! usual way (BEGIN, INSERT, then the sequencer's claim in the transaction).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, Connection as _, Executor as _, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::sequencer::{AppendError, Appended, Sequencer};
use crate::values::{int_array, power_of_two_chunks, sqlite_values, text_array};
use crate::Backend;

/// Most rows per SQLite INSERT statement (a power of two): 7 parameters each stays far below its
/// limit.
const INSERT_CHUNK: usize = 512;
/// Attempts of a batch that PostgreSQL rolled back of its own accord, and the pause before the
/// n-th retry (n × this).
const ROLLBACK_ATTEMPTS: u32 = 4;
const ROLLBACK_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// One event as stored in `events` (payload and metadata as JSON text).
pub(crate) struct Row {
    pub(crate) aggregate_type: String,
    pub(crate) aggregate_id: String,
    pub(crate) sequence: i64,
    pub(crate) event_type: String,
    pub(crate) event_version: String,
    pub(crate) payload: String,
    pub(crate) metadata: String,
}

/// One caller's append: its events and where to send the outcome.
struct Append {
    rows: Vec<Row>,
    reply: oneshot::Sender<Result<(), PersistenceError>>,
}

/// The way to this store's writer thread, shared by every clone of the store.
pub(crate) struct GroupCommit {
    appends: mpsc::UnboundedSender<Append>,
    sequencer: Arc<Mutex<Weak<Sequencer>>>,
    close: Arc<tokio::sync::Notify>,
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Starts the writer thread; it connects (with `pool`'s settings) when the first append comes.
    pub(crate) fn start(
        backend: Backend,
        pool: AnyPoolOptions,
        connect: AnyConnectOptions,
        write_turn: Arc<tokio::sync::Mutex<()>>,
    ) -> std::io::Result<Self> {
        let (appends, queue) = mpsc::unbounded_channel();
        let sequencer = Arc::new(Mutex::new(Weak::new()));
        let close = Arc::new(tokio::sync::Notify::new());
        let writer = Arc::new(Writer { backend, write_turn, sequencer: Arc::clone(&sequencer) });
        let closed = Arc::clone(&close);
        std::thread::Builder::new().name("pwnbook-group-commit".to_owned()).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(writer.run(pool.max_connections(1), connect, queue, closed)),
                // Dropping the queue fails every append with "the append's writer stopped".
                Err(error) => tracing::error!(%error, "the group commit's writer could not start"),
            }
        })?;
        Ok(Self { appends, sequencer, close, closed: std::sync::atomic::AtomicBool::new(false) })
    }

    /// Appends `events` in one transaction, possibly shared with concurrent appends.
    pub(crate) async fn append(&self, events: &[SerializedEvent]) -> Result<(), PersistenceError> {
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
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(stopped());
        }
        let (reply, outcome) = oneshot::channel();
        self.appends.send(Append { rows, reply }).map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    /// Stops the writer after the batch it is writing; later appends fail.
    pub(crate) fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.close.notify_one();
    }

    /// Has `sequencer` sequence the batches (until it is dropped).
    pub(crate) fn attach(&self, sequencer: Weak<Sequencer>) {
        *self.sequencer.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = sequencer;
    }
}

fn stopped() -> PersistenceError {
    PersistenceError::UnknownError("the append's writer stopped".into())
}

/// The writer thread's state.
struct Writer {
    backend: Backend,
    write_turn: Arc<tokio::sync::Mutex<()>>,
    sequencer: Arc<Mutex<Weak<Sequencer>>>,
}

impl Writer {
    /// Writes what is queued, batch after batch, until the store is closed or gone.
    async fn run(
        self: Arc<Self>,
        pool: AnyPoolOptions,
        connect: AnyConnectOptions,
        mut queue: mpsc::UnboundedReceiver<Append>,
        close: Arc<tokio::sync::Notify>,
    ) {
        let pool = pool.connect_lazy_with(connect);
        let mut connection = Connection::default();
        loop {
            let first = tokio::select! {
                biased;
                () = close.notified() => None,
                first = queue.recv() => first,
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while let Ok(next) = queue.try_recv() {
                batch.push(next);
            }
            batch.retain(|append| !append.reply.is_closed());
            if batch.is_empty() {
                continue;
            }
            // A task of its own, so that a panic (in a projector, say) fails this batch only: its
            // replies are dropped, which its callers see as an error, and its connection, in an
            // unknown state, is dropped with it.
            let (writer, batch_pool) = (Arc::clone(&self), pool.clone());
            connection = match tokio::spawn(async move {
                writer.write(&batch_pool, &mut connection, batch).await;
                connection
            })
            .await
            {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::error!(%error, "the group commit's writer failed in a batch");
                    Connection::default()
                }
            };
        }
        connection.close().await;
        pool.close().await;
    }

    fn sequencer(&self) -> Option<Arc<Sequencer>> {
        self.sequencer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).upgrade()
    }

    /// Writes the batch in one transaction (sequenced in it when this process runs a
    /// sequencer); after a failed INSERT, each append in its own.
    async fn write(&self, pool: &AnyPool, connection: &mut Connection, batch: Vec<Append>) {
        let rows: Vec<&Row> = batch.iter().flat_map(|append| &append.rows).collect();
        let failure = match self.insert_retrying(pool, connection, &rows, true).await {
            Ok(()) => {
                for append in batch {
                    let _ = append.reply.send(Ok(()));
                }
                return;
            }
            Err(failure) => failure,
        };
        let backend = self.backend;
        match failure {
            // Only a constraint or trigger refusal can be one append's fault; the others should
            // not wait for it (a timeout, a deadlock or an I/O error would fail them one by one
            // as well). The retries leave the sequencing to the sequencer task, which their
            // waiters kick.
            Failure::Insert(sqlx::Error::Database(error)) if batch.len() > 1 && refused(backend, &*error) => {
                tracing::debug!(%error, appends = batch.len(), "a shared append failed; retrying them one by one");
                for append in batch {
                    let rows: Vec<&Row> = append.rows.iter().collect();
                    let outcome =
                        self.insert_retrying(pool, connection, &rows, false).await.map_err(|failure| {
                            let fate = Fate::of(backend, &failure);
                            fate.error(failure.into_error().into())
                        });
                    let _ = append.reply.send(outcome);
                }
            }
            // A single append's own failure, or one the whole batch shares.
            failure => {
                let fate = Fate::of(backend, &failure);
                let error = failure.into_error();
                if batch.len() > 1 {
                    tracing::warn!(%error, appends = batch.len(), "a shared append failed");
                }
                let message = error.to_string();
                let mut first = Some(error);
                for append in batch {
                    let cause = first.take().map_or_else(|| message.clone().into(), Into::into);
                    let _ = append.reply.send(Err(fate.error(cause)));
                }
            }
        }
    }

    /// `insert` (sequenced in the transaction when `sequenced` and this process runs a
    /// sequencer), written again when PostgreSQL rolled it back to break a deadlock or a
    /// serialization failure (another process's transaction on the same rows, e.g. a key's
    /// revocation against the write guard's share lock): nothing of it was written, and the
    /// same writes succeed once the other transaction is through.
    async fn insert_retrying(
        &self,
        pool: &AnyPool,
        connection: &mut Connection,
        rows: &[&Row],
        sequenced: bool,
    ) -> Result<(), Failure> {
        let mut attempt = 1;
        let mut reconnected = false;
        loop {
            let sequencer = if sequenced { self.sequencer() } else { None };
            let reused = connection.is_open();
            let outcome = match connection.get(pool).await {
                Ok((conn, prepared)) => self.insert(conn, prepared, rows, sequencer).await,
                Err(error) => Err(Failure::Begin(error)),
            };
            // Only the database's refusal of a statement, or its rollback of the transaction,
            // leaves the connection known to be usable (the transaction rolled back); after
            // anything else (I/O, a session the server ended) a new one is made.
            let lost = match &outcome {
                Err(failure) if !keeps_connection(self.backend, failure.error()) => connection.drop_broken(),
                _ => None,
            };
            match outcome {
                // A connection that died while idle (a restarted server, a session timeout) fails
                // at BEGIN, before any row was sent: once more, on a new connection.
                Err(Failure::Begin(error)) if reused && !reconnected => {
                    tracing::info!(%error, "the writer's connection failed at BEGIN; reconnecting");
                    reconnected = true;
                }
                Err(Failure::Insert(error) | Failure::Transaction(error))
                    if attempt < ROLLBACK_ATTEMPTS && rolled_back(self.backend, &error) =>
                {
                    tracing::info!(%error, attempt, "the database rolled a batch back; writing it again");
                    tokio::time::sleep(ROLLBACK_PAUSE * attempt).await;
                    attempt += 1;
                }
                // The connection went with COMMIT on its way: what the lost session did is found
                // out rather than reported as unknown (which would leave a retry to write twice).
                Err(Failure::Transaction(error)) if connection_lost(&error) => {
                    return match lost {
                        Some(session) => self.settle(pool, connection, &session, rows, error).await,
                        None => Err(Failure::Transaction(error)),
                    };
                }
                outcome => return outcome,
            }
        }
    }

    /// After the connection was lost with a COMMIT sent (PostgreSQL): waits until the lost
    /// session has ended, so that its transaction has committed or rolled back for good, then
    /// looks for the batch's first event (its rows commit together). Stored: the batch succeeded.
    /// Not stored: `Failure::Lost`, which the caller may retry. Not found out in time: the
    /// outcome stays unknown.
    async fn settle(
        &self,
        pool: &AnyPool,
        connection: &mut Connection,
        lost: &Session,
        rows: &[&Row],
        error: sqlx::Error,
    ) -> Result<(), Failure> {
        match stored(pool, connection, lost, rows).await {
            Ok(Some(true)) => {
                tracing::warn!(%error, "the connection was lost at COMMIT; the batch was stored");
                Ok(())
            }
            Ok(Some(false)) => {
                tracing::warn!(%error, "the connection was lost at COMMIT; the batch was not stored");
                Err(Failure::Lost(error))
            }
            Ok(None) => {
                tracing::error!(%error, "the connection was lost at COMMIT and the session did not end in time");
                Err(Failure::Transaction(error))
            }
            Err(check) => {
                tracing::error!(%error, %check, "the connection was lost at COMMIT and the outcome could not be checked");
                connection.drop_broken();
                Err(Failure::Transaction(error))
            }
        }
    }

    /// One transaction of the batch's rows (see `insert_rows`), and the sequencing of what it
    /// wrote when `sequencer` is given; should the sequencing (or the in-batch projection) fail,
    /// nothing is committed and the rows are written again unsequenced, for the sequencer task.
    async fn insert(
        &self,
        conn: &mut AnyConnection,
        prepared: &mut HashSet<String>,
        rows: &[&Row],
        mut sequencer: Option<Arc<Sequencer>>,
    ) -> Result<(), Failure> {
        // On SQLite, this process's writers take turns (see `Store::write_turn`).
        let _turn = match self.backend {
            Backend::Sqlite => Some(self.write_turn.lock().await),
            Backend::Postgres => None,
        };
        if let Some(active) = sequencer.clone().filter(|_| self.backend == Backend::Postgres) {
            let failed = match active.append_sequenced(conn, prepared, rows).await {
                Ok(Some(Appended::Open(tx, sequenced))) => {
                    tx.commit().await.map_err(Failure::Transaction)?;
                    active.committed(sequenced);
                    return Ok(());
                }
                Ok(Some(Appended::Committed(sequenced))) => {
                    active.committed(sequenced);
                    return Ok(());
                }
                Ok(None) => None,
                Err(error) => Some(error),
            };
            if let Some(error) = failed {
                if matches!(error, AppendError::Guess | AppendError::Append(_)) {
                    // See `Sequencer::append_sequenced`.
                    let _ = conn.execute("ROLLBACK").await;
                }
                match error {
                    AppendError::Guess => {}
                    AppendError::Append(error) => return Err(Failure::Insert(error)),
                    AppendError::Unknown(error) => return Err(Failure::Transaction(error)),
                    AppendError::Sequencing(error) => {
                        tracing::warn!(%error, "sequencing in the group commit failed; the sequencer task will");
                        sequencer = None;
                    }
                }
            }
        }
        loop {
            let mut tx = conn.begin().await.map_err(Failure::Begin)?;
            if let Err(error) = self.insert_rows(&mut tx, rows).await {
                // Rolled back now rather than with the next batch's BEGIN, so that the session
                // does not wait in an aborted transaction.
                let _ = tx.rollback().await;
                return Err(Failure::Insert(error));
            }
            let sequenced = match &sequencer {
                Some(active) => match active.try_sequence_in(&mut tx).await {
                    Ok(sequenced) => sequenced,
                    Err(error) => {
                        tracing::warn!(%error, "sequencing in the group commit failed; the sequencer task will");
                        // Dropping the transaction rolls it back.
                        sequencer = None;
                        continue;
                    }
                },
                None => None,
            };
            tx.commit().await.map_err(Failure::Transaction)?;
            if let (Some(sequencer), Some(sequenced)) = (sequencer, sequenced) {
                sequencer.committed(sequenced);
            }
            return Ok(());
        }
    }

    /// The batch's rows: one statement on PostgreSQL whatever the batch (each one more would be
    /// a round trip); on SQLite multi-row INSERTs in power-of-two chunks, each size one statement
    /// text that stays prepared on the writer's connection.
    async fn insert_rows(&self, tx: &mut Transaction<'_, Any>, rows: &[&Row]) -> Result<(), sqlx::Error> {
        match self.backend {
            Backend::Postgres => insert_unnest(tx, rows).await,
            Backend::Sqlite => {
                for chunk in power_of_two_chunks(rows, INSERT_CHUNK) {
                    let sql = insert_values_sql(chunk.len());
                    let mut query = sqlx::query(&sql);
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
                    query.execute(&mut **tx).await?;
                }
                Ok(())
            }
        }
    }
}

/// The writer's connection, taken out of its pool for good: a pooled connection is pinged on
/// every release, a round trip and a task per batch on the one serial step of every command.
#[derive(Default)]
struct Connection {
    conn: Option<AnyConnection>,
    /// The statements prepared on it by name (`HookWork::prepare`).
    prepared: HashSet<String>,
    /// Its PostgreSQL session, when it could be read.
    session: Option<Session>,
}

/// A PostgreSQL session, told apart from a later one with the same process id by its start (in
/// microseconds since the epoch: a text form would depend on each session's settings).
struct Session {
    pid: i32,
    started: i64,
}

impl Session {
    async fn of(conn: &mut AnyConnection) -> Option<Self> {
        let row: Option<(i32, i64)> = sqlx::query_as(
            "SELECT pid, (extract(epoch FROM backend_start) * 1000000)::bigint FROM pg_stat_activity \
             WHERE pid = pg_backend_pid()",
        )
        .fetch_optional(&mut *conn)
        .await
        .ok()
        .flatten();
        row.map(|(pid, started)| Self { pid, started })
    }
}

impl Connection {
    /// The connection, made (with the pool's settings) if there is none, and what is prepared on it.
    async fn get(
        &mut self,
        pool: &AnyPool,
    ) -> Result<(&mut AnyConnection, &mut HashSet<String>), sqlx::Error> {
        match &mut self.conn {
            Some(conn) => Ok((conn, &mut self.prepared)),
            slot @ None => {
                self.prepared.clear();
                let mut conn = pool.acquire().await?.detach();
                self.session = match conn.backend_name() {
                    "PostgreSQL" => Session::of(&mut conn).await,
                    _ => None,
                };
                Ok((slot.insert(conn), &mut self.prepared))
            }
        }
    }

    fn is_open(&self) -> bool {
        self.conn.is_some()
    }

    /// Forgets a connection in an unknown state (the next batch makes another); returns its
    /// session.
    fn drop_broken(&mut self) -> Option<Session> {
        self.conn = None;
        self.prepared.clear();
        self.session.take()
    }

    async fn close(self) {
        if let Some(conn) = self.conn {
            let _ = conn.close().await;
        }
    }
}

/// What failed in a batch's transaction.
enum Failure {
    /// Making the connection or BEGIN: nothing was written.
    Begin(sqlx::Error),
    /// An INSERT: the transaction did not commit, and one append may be to blame.
    Insert(sqlx::Error),
    /// COMMIT or the connection after BEGIN: nothing says which append, or whether it committed.
    Transaction(sqlx::Error),
    /// The connection, lost with COMMIT on its way, and the batch found not stored.
    Lost(sqlx::Error),
}

impl Failure {
    fn error(&self) -> &sqlx::Error {
        match self {
            Self::Begin(error) | Self::Insert(error) | Self::Transaction(error) | Self::Lost(error) => error,
        }
    }

    fn into_error(self) -> sqlx::Error {
        match self {
            Self::Begin(error) | Self::Insert(error) | Self::Transaction(error) | Self::Lost(error) => error,
        }
    }
}

/// Whether `error` ended the session rather than a statement: I/O, TLS or protocol trouble, or
/// PostgreSQL's own end of it (`57P` operator intervention such as a shutdown, `08` connection
/// exceptions), after which a COMMIT that was sent may or may not have been carried out.
fn connection_lost(error: &sqlx::Error) -> bool {
    !matches!(error, sqlx::Error::Database(_)) || ended_by_server(error)
}

/// Whether PostgreSQL ended the session with `error` (`57P`, `08`): a COMMIT sent in it may have
/// been carried out before the end, so the error says nothing about the transaction.
pub(crate) fn ended_by_server(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|code| code.starts_with("57P") || code.starts_with("08"))
        }
        _ => false,
    }
}

/// Whether the writer's connection is known to be usable after `error`: a constraint or
/// trigger refusal, or a transaction the database rolled back (the transaction is gone, the
/// session is fine).
fn keeps_connection(backend: Backend, error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => refused(backend, &**db) || rolled_back(backend, error),
        _ => false,
    }
}

const INSERT_COLUMNS: &str =
    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)";

/// SQLite: `INSERT INTO events … VALUES` with `rows` rows of parameters.
fn insert_values_sql(rows: usize) -> String {
    format!("{INSERT_COLUMNS} VALUES {}", sqlite_values(rows, 7))
}

/// PostgreSQL: inserts the rows as one array parameter per column, unnested in their order (the
/// order the sequencer gives them positions in), the JSON texts cast to the columns' type.
async fn insert_unnest(tx: &mut Transaction<'_, Any>, rows: &[&Row]) -> Result<(), sqlx::Error> {
    let texts = |column: fn(&Row) -> &str| text_array(rows.iter().map(|row| Some(column(row))));
    let sql = format!(
        "{INSERT_COLUMNS} SELECT t, i, s, e, v, CAST(p AS json), CAST(m AS json) FROM unnest(CAST($1 AS TEXT[]), \
         CAST($2 AS TEXT[]), CAST($3 AS BIGINT[]), CAST($4 AS TEXT[]), CAST($5 AS TEXT[]), CAST($6 AS TEXT[]), \
         CAST($7 AS TEXT[])) WITH ORDINALITY AS u (t, i, s, e, v, p, m, n) ORDER BY n"
    );
    sqlx::query(&sql)
        .bind(texts(|row| &row.aggregate_type))
        .bind(texts(|row| &row.aggregate_id))
        .bind(int_array(rows.iter().map(|row| row.sequence)))
        .bind(texts(|row| &row.event_type))
        .bind(texts(|row| &row.event_version))
        .bind(texts(|row| &row.payload))
        .bind(texts(|row| &row.metadata))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Whether PostgreSQL rolled the transaction back to break a deadlock (`40P01`) or a
/// serialization failure (`40001`). SQLite has neither: this process's writers take turns, and
/// another process's write lock is waited for (`busy_timeout`).
fn rolled_back(backend: Backend, error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(error) = error else { return false };
    backend == Backend::Postgres && matches!(error.code().as_deref(), Some("40P01" | "40001"))
}

/// Whether `error` is a constraint or trigger refusal (PostgreSQL class 23, SQLite's
/// `SQLITE_CONSTRAINT` family, extended codes `19 + n × 256`), which one append can cause alone.
fn refused(backend: Backend, error: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = error.code() else { return false };
    match backend {
        Backend::Postgres => code.starts_with("23"),
        Backend::Sqlite => code.parse::<i64>().is_ok_and(|code| code % 256 == 19),
    }
}

/// How long a lost session may take to end before a batch's outcome is left unknown.
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);
const SETTLE_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Whether the first of `rows` is stored, once the `lost` session has ended; `None` if it is
/// still there after `SETTLE_LIMIT`. Only its end is final: while its process lives, the batch's
/// query may still wait in its socket unread (the session looks idle) and commit after a look.
/// A session that never learns its client has gone (a half-open connection, or a pooler that
/// keeps it) leaves the outcome unknown.
async fn stored(
    pool: &AnyPool,
    connection: &mut Connection,
    lost: &Session,
    rows: &[&Row],
) -> Result<Option<bool>, sqlx::Error> {
    let Some(first) = rows.first() else { return Ok(Some(true)) };
    let (conn, _) = connection.get(pool).await?;
    let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
    loop {
        let alive: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE pid = $1 AND (extract(epoch FROM backend_start) * 1000000)::bigint = $2",
        )
        .bind(lost.pid)
        .bind(lost.started)
        .fetch_one(&mut *conn)
        .await?;
        if alive == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
    let found: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3 \
         AND payload::text = $4 AND metadata::text = $5",
    )
    .bind(first.aggregate_type.as_str())
    .bind(first.aggregate_id.as_str())
    .bind(first.sequence)
    .bind(first.payload.as_str())
    .bind(first.metadata.as_str())
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some(found > 0))
}

/// What a failed batch tells its appends, as the cqrs-es repositories report it.
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// A clash on a unique key (a concurrent append, a taken name, a refused engagement, see the
    /// migrations): an optimistic-lock conflict.
    Conflict,
    /// Certainly not committed, through no fault of the append (the pool, the connection before
    /// COMMIT, a rollback PostgreSQL kept choosing): the caller may retry.
    NotSaved,
    /// Anything else: a COMMIT whose outcome could not be found out (SQLite, or a PostgreSQL
    /// session that did not end in time).
    Unknown,
}

impl Fate {
    fn of(backend: Backend, failure: &Failure) -> Self {
        let conflict_code = match backend {
            Backend::Sqlite => "1555",
            Backend::Postgres => "23505",
        };
        let (error, before_commit) = match failure {
            // Nothing was written, whatever the error.
            Failure::Begin(_) | Failure::Lost(_) => return Self::NotSaved,
            Failure::Insert(error) => (error, true),
            Failure::Transaction(error) => (error, false),
        };
        match error {
            sqlx::Error::Database(db) if db.code().as_deref() == Some(conflict_code) => Self::Conflict,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => Self::NotSaved,
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) if before_commit => Self::NotSaved,
            error if rolled_back(backend, error) => Self::NotSaved,
            _ => Self::Unknown,
        }
    }

    fn error(self, cause: Box<dyn std::error::Error + Send + Sync>) -> PersistenceError {
        match self {
            Self::Conflict => PersistenceError::OptimisticLockError,
            Self::NotSaved => PersistenceError::ConnectionError(cause),
            Self::Unknown => PersistenceError::UnknownError(cause),
        }
    }
}
