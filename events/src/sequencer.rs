//! The sequencer: gives every committed event a dense global position and its place in its
//! organization's hash chain, appending it to the insert-only `event_log`.
//!
//! Any number of sequencers (server processes, the CLI) may run against one database: each batch
//! runs in one transaction that holds the sequencer lock (an advisory transaction lock on
//! PostgreSQL, the write lock on SQLite), so batches never interleave. In a server, the group
//! commit also sequences its own batch in the batch's transaction, after its INSERTs: it only
//! tries the lock, and leaves the batch to the sequencer task when another batch holds it.
//!
//! PostgreSQL assigns transaction ids (and identity values) before commit, and transactions
//! commit in any order. A row is therefore only sequenced once its transaction id is below that
//! of every other open transaction that writes `events`: those finish before anything can appear
//! before the sequencer's cursor. Writers announce themselves with a shared advisory lock taken
//! before their first row (migration 1006), so transactions that never write events (in this or
//! another database) hold nothing back. SQLite has one writer at a time, so its rowid order is
//! commit order.
//!
//! A batch costs a handful of statements whatever its size: the state row holds the cursor
//! and the log head together, the chain heads of the organizations seen by the previous batch are
//! kept in memory (valid while the stored head is the one that batch wrote, i.e. no other
//! sequencer appended since), and the batch's rows go in with the state's update as one statement
//! on PostgreSQL (a text array per column), as multi-row INSERTs of power-of-two sizes on SQLite
//! (one per set bit of the batch's size, each prepared once per connection). On PostgreSQL the
//! group commit's batch usually skips the claim's round trip: it computes the log rows from those
//! kept heads and sends them with the append, and the database checks the guess (migration 1010).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Connection as _, Executor as _, Row as _, Transaction};
use tokio::sync::{watch, Notify};

use crate::group_commit::Row;
use crate::hash::{chain_hash, GENESIS};
use crate::ids::{Id, IdKind};
use crate::log::LogEvent;
use crate::values::{int_array, power_of_two_chunks, sqlite_values, string_literal, text_array};
use crate::{Backend, Store, StoreError};

/// Key of the PostgreSQL advisory lock that serializes sequencer batches.
const SEQUENCER_LOCK: i64 = 0x7077_6e62_6f6f_6b01;
/// The two keys of the shared advisory lock every writer of `events` holds (migration 1006).
const WRITERS_LOCK: (i64, i64) = (0x7077_6e62, 0x6f6f_6b02);
const DEFAULT_BATCH: i64 = 1_000;
/// Most rows per SQLite INSERT statement (a power of two): 14 parameters each stays far below
/// its limit.
const INSERT_CHUNK: usize = 256;
/// Organizations per chain-head lookup (SQLite allows 500 terms in one compound SELECT).
const LOOKUP_CHUNK: usize = 200;
/// First retry delay while committed events wait behind an older open transaction; it doubles
/// up to the poll interval.
const HELD_BACK_RETRY: Duration = Duration::from_millis(1);
/// How long the group commit waits for this process's sequencer task to finish its batch (a few
/// milliseconds, unless it waits for another process's) before leaving its own to the task.
const LOCAL_TURN_WAIT: Duration = Duration::from_millis(20);

/// Work done inside a batch's transaction once its rows are appended (the in-process
/// projectors): the work commits with the batch, so it adds no commit of its own.
pub trait BatchHook: Send + Sync {
    /// Runs in the batch's transaction. In the sequencer task's batches it runs inside a
    /// savepoint: an error undoes only the hook's own writes and the batch still commits. In the
    /// group commit's, an error fails the transaction, which the group commit then writes again
    /// without sequencing it (no savepoint round trips on the path of every write). `head` is the
    /// log head before the batch. Returns whether it did its work (it may decline, e.g. when its
    /// checkpoints are elsewhere). `claimed`: the hook's `claim_sql` already ran in this
    /// transaction (its checkpoints, say, are taken).
    fn apply<'a, 'c>(
        &'a self,
        tx: &'a mut Transaction<'c, Any>,
        head: i64,
        appended: &'a [LogEvent],
        claimed: bool,
    ) -> HookFuture<'a>;

    /// SQL that the group commit's one-round-trip batch on PostgreSQL (see
    /// `Sequencer::append_sequenced`) sends right after `appended`'s log rows, so that the hook
    /// saves round trips of its own (taking its checkpoints, say). It must raise SQLSTATE
    /// PWB01 when the hook cannot do its work in this batch, which then goes the usual way.
    /// `head` is the log head before the batch. When the SQL does all of the hook's work for
    /// the batch (`HookSql::complete`), the batch commits in the same round trip and `apply` is
    /// not called.
    fn claim_sql(&self, _head: i64, _appended: &[LogEvent]) -> Option<HookSql> {
        None
    }

    /// Called after the batch committed, when `apply` did its work; `head` is the new log head.
    fn committed(&self, head: i64);
}

/// A hook's SQL for the one-round-trip batch (see `BatchHook::claim_sql`): statements separated
/// by `;`, every value a literal (a simple query takes no parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSql {
    /// The hook's claim on the batch (its checkpoints, say).
    pub claim: String,
    /// All the rest the hook's `apply` would do for the batch, when the hook can tell.
    pub work: Option<HookWork>,
}

/// The rest of a hook's work for a batch, as SQL (see `HookSql`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookWork {
    pub sql: String,
    /// The statements `sql` runs by `EXECUTE`: their names and `PREPARE` statements, each run
    /// once per connection in a round trip of its own (a simple query's statements are planned
    /// at every run; prepared ones keep their plan, as sqlx's do).
    pub prepare: Vec<(String, String)>,
}

pub type HookFuture<'a> =
    Pin<Box<dyn Future<Output = Result<bool, Box<dyn std::error::Error + Send + Sync>>> + Send + 'a>>;

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
    /// A row the group commit is about to append (no cursor yet: the fast path's function
    /// reads it in the database).
    fn new(row: &Row, recorded_at: i64) -> Self {
        Self {
            cursor_tx: String::new(),
            cursor_no: 0,
            aggregate_type: row.aggregate_type.clone(),
            aggregate_id: row.aggregate_id.clone(),
            sequence: row.sequence,
            event_type: row.event_type.clone(),
            event_version: row.event_version.clone(),
            payload: row.payload.clone(),
            metadata: row.metadata.clone(),
            recorded_at,
        }
    }

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

/// The sequencer state row as a batch found it, with the events it may sequence.
struct Claimed {
    head: i64,
    pending: Vec<Pending>,
    /// Committed events after `pending` that must wait for an older open transaction.
    held_back: bool,
}

/// What one batch did.
#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    /// The rows appended, in log order.
    pub appended: Vec<LogEvent>,
    /// The log head after the batch.
    pub head: i64,
    /// Committed events are waiting behind an older writer that is still open (PostgreSQL).
    pub held_back: bool,
}

/// The hash chain heads as of log head `head`.
#[derive(Debug, Default)]
struct ChainCache {
    head: Option<i64>,
    hashes: HashMap<String, String>,
}

#[derive(Clone)]
pub struct Sequencer {
    store: Store,
    batch: i64,
    chains: Arc<Mutex<ChainCache>>,
    hook: Option<Arc<dyn BatchHook>>,
    published: Arc<Published>,
    /// This process's sequencer task and group commit take turns here, so that the group
    /// commit's try of the sequencer lock fails only when another process holds it (failing
    /// whenever the task runs would hand every batch to the task, which the waiters kick).
    local_turn: Arc<tokio::sync::Mutex<()>>,
}

/// What committed batches tell this process's waiters: the log head and where recent streams got to.
#[derive(Debug)]
struct Published {
    head: watch::Sender<i64>,
    recent: Mutex<RecentPositions>,
}

impl Default for Published {
    fn default() -> Self {
        Self { head: watch::channel(0).0, recent: Mutex::default() }
    }
}

impl Published {
    /// Batches of the group commit and of the sequencer task publish in any order; the head only
    /// grows.
    fn head(&self, head: i64) {
        self.head.send_if_modified(|current| {
            let moved = head > *current;
            if moved {
                *current = head;
            }
            moved
        });
    }
}

/// A batch sequenced in a transaction that has not committed yet.
pub(crate) struct Sequenced {
    appended: Vec<LogEvent>,
    head: i64,
    held_back: bool,
    chains: HashMap<String, String>,
    hooked: bool,
}

impl std::fmt::Debug for Sequencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequencer").field("batch", &self.batch).finish_non_exhaustive()
    }
}

impl Sequencer {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            batch: DEFAULT_BATCH,
            chains: Arc::default(),
            hook: None,
            published: Arc::default(),
            local_turn: Arc::default(),
        }
    }

    /// A sequencer that runs `hook` in every batch's transaction.
    pub fn with_hook(store: Store, hook: Arc<dyn BatchHook>) -> Self {
        Self { hook: Some(hook), ..Self::new(store) }
    }

    /// Sequences everything that is committed and sequenceable now; returns the log head.
    pub async fn catch_up(&self) -> Result<i64, StoreError> {
        Ok(self.catch_up_held().await?.0)
    }

    /// `catch_up`; also tells whether committed events were held back.
    async fn catch_up_held(&self) -> Result<(i64, bool), StoreError> {
        loop {
            let outcome = self.run_batch().await?;
            if outcome.appended.len() < self.batch as usize {
                return Ok((outcome.head, outcome.held_back));
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
        let outcome = self.run_batch().await?;
        Ok((outcome.appended.len(), outcome.head))
    }

    /// Sequences one batch.
    pub async fn run_batch(&self) -> Result<BatchOutcome, StoreError> {
        let _turn = self.store.write_turn().await;
        let _local = self.local_turn.lock().await;
        let mut tx = self.store.pool().begin().await?;
        let claimed = claim(&mut tx, self.store.backend(), self.batch, LockWait::Wait).await?;
        let sequenced = match claimed {
            Some(claimed) => self.sequence_claimed(&mut tx, claimed, HookFailure::Skip).await?,
            None => return Err(StoreError::Timeout("taking the sequencer lock")),
        };
        if sequenced.appended.is_empty() {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(self.committed(sequenced))
    }

    /// Sequences what is sequenceable in `tx`, which also holds the caller's own appends to
    /// `events` (the group commit's): they are sequenced with it unless an older writer is open.
    /// `None` when another batch holds the sequencer lock: the caller's appends must not wait for
    /// it (it may be another process's, as slow as it likes), the sequencer task takes them.
    /// An error leaves `tx` unusable (there is no savepoint): the caller rolls back and writes its
    /// appends again unsequenced. `committed` must follow the transaction's commit.
    pub(crate) async fn try_sequence_in(
        &self,
        tx: &mut Transaction<'_, Any>,
    ) -> Result<Option<Sequenced>, StoreError> {
        let Ok(_local) = tokio::time::timeout(LOCAL_TURN_WAIT, self.local_turn.lock()).await else {
            return Ok(None);
        };
        match claim(tx, self.store.backend(), self.batch, LockWait::Try).await? {
            Some(claimed) => Ok(Some(self.sequence_claimed(tx, claimed, HookFailure::Fail).await?)),
            None => Ok(None),
        }
    }

    /// The group commit's batch on PostgreSQL in one round trip: BEGIN, then appended and
    /// sequenced by `pwnbook_append_sequenced` (migration 1010), whose log rows are computed
    /// here from the head and chain heads this process's last batch left, then the hook's
    /// `claim_sql`, and COMMIT too when that SQL is all of the hook's work (`Appended::Committed`);
    /// otherwise the hook's `apply` runs in the open transaction, which the caller commits.
    /// `None` when that guess cannot be made, `AppendError::Guess` when the database finds it
    /// wrong (another process appended, or holds the lock): nothing is written, and the caller
    /// appends and claims as usual. After an `AppendError::Guess` or `Append` the caller must
    /// roll back: the failed statement leaves the session in a transaction sqlx does not know
    /// it began.
    pub(crate) async fn append_sequenced<'c>(
        &self,
        conn: &'c mut AnyConnection,
        prepared: &mut HashSet<String>,
        rows: &[&Row],
    ) -> Result<Option<Appended<'c>>, AppendError> {
        if rows.is_empty() || rows.len() as i64 >= self.batch {
            return Ok(None);
        }
        let Ok(_local) = tokio::time::timeout(LOCAL_TURN_WAIT, self.local_turn.lock()).await else {
            return Ok(None);
        };
        let Some((head, mut chains)) = self.take_chains() else { return Ok(None) };
        let recorded_at = now_millis();
        let pending: Vec<Pending> = rows.iter().map(|row| Pending::new(row, recorded_at)).collect();
        let scoped = scopes(&pending).map_err(AppendError::Sequencing)?;
        if scoped.iter().any(|(organization, _)| !chains.contains_key(organization)) {
            self.keep_chains(head, chains);
            return Ok(None);
        }
        let appended = link(&mut chains, head, pending, scoped);
        let new_head = head + appended.len() as i64;
        let hook_sql = self.hook.as_ref().and_then(|hook| hook.claim_sql(head, &appended));
        let mut statement = append_sequenced_sql(head, &appended);
        if let Some(hook_sql) = &hook_sql {
            statement.push_str("; ");
            statement.push_str(&hook_sql.claim);
        }
        let refused = |error| match error {
            sqlx::Error::Database(db) if db.code().as_deref() == Some(GUESS_REFUSED) => AppendError::Guess,
            // The server ended the session: whether a COMMIT it was sent was reached is unknown.
            error if crate::group_commit::ended_by_server(&error) => AppendError::Unknown(error),
            error => AppendError::Append(error),
        };
        let work = match hook_sql.as_ref().and_then(|hook_sql| hook_sql.work.as_ref()) {
            Some(work) if prepare(conn, prepared, &work.prepare).await => Some(work),
            _ => None,
        };
        if let Some(work) = work {
            if !work.sql.is_empty() {
                statement.push_str("; ");
                statement.push_str(&work.sql);
            }
            statement.push_str("; COMMIT");
            return match conn.execute(statement.as_str()).await {
                Ok(_) => Ok(Some(Appended::Committed(Sequenced {
                    appended,
                    head: new_head,
                    held_back: false,
                    chains,
                    hooked: true,
                }))),
                // A prepared statement gone from the session (`DISCARD ALL` by a pooler, say):
                // prepared again at the next batch, this one goes the usual way.
                Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some(STATEMENT_GONE) => {
                    prepared.clear();
                    Err(AppendError::Guess)
                }
                // A statement's error (the COMMIT's included) rolls the transaction back.
                Err(error @ sqlx::Error::Database(_)) => Err(refused(error)),
                // Lost with the connection: whether the COMMIT was reached is unknown.
                Err(error) => Err(AppendError::Unknown(error)),
            };
        }
        let mut tx = conn.begin_with(statement).await.map_err(refused)?;
        let hooked = match &self.hook {
            Some(hook) => hook
                .apply(&mut tx, head, &appended, hook_sql.is_some())
                .await
                .map_err(|error| AppendError::Sequencing(StoreError::Hook(error)))?,
            None => false,
        };
        Ok(Some(Appended::Open(tx, Sequenced { appended, head: new_head, held_back: false, chains, hooked })))
    }

    async fn sequence_claimed(
        &self,
        tx: &mut Transaction<'_, Any>,
        claimed: Claimed,
        hook_failure: HookFailure,
    ) -> Result<Sequenced, StoreError> {
        let Claimed { head, pending, held_back } = claimed;
        let Some(last) = pending.last() else {
            return Ok(Sequenced {
                appended: Vec::new(),
                head,
                held_back,
                chains: HashMap::new(),
                hooked: false,
            });
        };
        let (cursor_tx, cursor_no) = (last.cursor_tx.clone(), last.cursor_no);
        let mut chains = self.cached_chains(head);
        let appended = chain(tx, &mut chains, head, pending).await?;
        let new_head = head + appended.len() as i64;
        let state = State { last_tx: cursor_tx, last_no: cursor_no, head: new_head };
        insert(tx, self.store.backend(), &appended, &state).await?;
        let hooked = match (&self.hook, hook_failure) {
            (Some(hook), HookFailure::Skip) => run_hook(tx, hook.as_ref(), head, &appended).await?,
            (Some(hook), HookFailure::Fail) => {
                hook.apply(tx, head, &appended, false).await.map_err(StoreError::Hook)?
            }
            (None, _) => false,
        };
        Ok(Sequenced { appended, head: new_head, held_back, chains, hooked })
    }

    /// After the transaction of `sequenced` committed (or rolled back with nothing appended):
    /// keeps the chain heads and tells this process's waiters.
    pub(crate) fn committed(&self, sequenced: Sequenced) -> BatchOutcome {
        let Sequenced { appended, head, held_back, chains, hooked } = sequenced;
        if !appended.is_empty() {
            if let Ok(mut cache) = self.chains.lock() {
                *cache = ChainCache { head: Some(head), hashes: chains };
            }
            if let Ok(mut recent) = self.published.recent.lock() {
                recent.record(&appended);
            }
        }
        // The hook first: the projection runner wakes on the head and would otherwise find the
        // batch not yet projected, and spend a transaction (holding the checkpoints' locks that
        // the next batch's hook needs) on finding nothing to do.
        if let (true, Some(hook)) = (hooked, &self.hook) {
            hook.committed(head);
        }
        self.published.head(head);
        BatchOutcome { appended, head, held_back }
    }

    /// The cached log head and chain heads, taken out of the cache (see `cached_chains`).
    fn take_chains(&self) -> Option<(i64, HashMap<String, String>)> {
        let mut cache = self.chains.lock().ok()?;
        let cache = std::mem::take(&mut *cache);
        Some((cache.head?, cache.hashes))
    }

    /// Puts back what `take_chains` took, unused.
    fn keep_chains(&self, head: i64, hashes: HashMap<String, String>) {
        if let Ok(mut cache) = self.chains.lock() {
            *cache = ChainCache { head: Some(head), hashes };
        }
    }

    /// The cached chain heads if they are those of log head `head`; taken out of the cache so
    /// that a batch that fails leaves it empty.
    fn cached_chains(&self, head: i64) -> HashMap<String, String> {
        let Ok(mut cache) = self.chains.lock() else { return HashMap::new() };
        let cache = std::mem::take(&mut *cache);
        if cache.head == Some(head) {
            cache.hashes
        } else {
            HashMap::new()
        }
    }
}

/// What a failing hook does to its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HookFailure {
    /// The batch commits without the hook's writes (a savepoint).
    Skip,
    /// The batch fails.
    Fail,
}

/// The sequencer's cursor and the log head after a batch.
struct State {
    last_tx: String,
    last_no: i64,
    head: i64,
}

/// Runs the hook inside a savepoint (left open on success: the commit releases it, one round
/// trip fewer); on error only the hook's writes are undone.
async fn run_hook(
    tx: &mut Transaction<'_, Any>,
    hook: &dyn BatchHook,
    head: i64,
    appended: &[LogEvent],
) -> Result<bool, StoreError> {
    sqlx::query("SAVEPOINT sequencer_hook").execute(&mut **tx).await?;
    match hook.apply(tx, head, appended, false).await {
        Ok(done) => Ok(done),
        Err(error) => {
            tracing::warn!(%error, "in-batch work failed; the batch commits without it");
            sqlx::query("ROLLBACK TO SAVEPOINT sequencer_hook").execute(&mut **tx).await?;
            Ok(false)
        }
    }
}

/// How `claim` takes the sequencer lock on PostgreSQL (on SQLite the transaction's first write
/// takes the write lock, waiting for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockWait {
    Wait,
    Try,
}

/// Takes the sequencer lock and reads the state row and the sequenceable events after its
/// cursor; `None` if the lock was only tried and is held elsewhere.
async fn claim(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    limit: i64,
    lock: LockWait,
) -> Result<Option<Claimed>, StoreError> {
    match backend {
        Backend::Postgres => {
            // One call: the lock, the bound (the oldest open writer of `events`) and the events
            // after the cursor, in statements of their own (see migration 1007).
            let rows = sqlx::query("SELECT * FROM pwnbook_sequencer_claim($1, $2, $3, $4, $5)")
                .bind(SEQUENCER_LOCK)
                .bind(WRITERS_LOCK.0)
                .bind(WRITERS_LOCK.1)
                .bind(lock == LockWait::Wait)
                .bind(limit)
                .fetch_all(&mut **tx)
                .await?;
            if !rows.first().map(|row| row.try_get::<bool, _>("locked")).transpose()?.unwrap_or(false) {
                return Ok(None);
            }
            let mut claimed = Claimed { head: 0, pending: Vec::with_capacity(rows.len()), held_back: false };
            for row in &rows {
                claimed.head = row.try_get("head")?;
                match row.try_get::<Option<bool>, _>("ready")? {
                    None => {}
                    Some(true) if !claimed.held_back => claimed.pending.push(Pending::from_row(row)?),
                    // Ready rows come first (the bound is on the leading sort key).
                    Some(_) => claimed.held_back = true,
                }
            }
            Ok(Some(claimed))
        }
        Backend::Sqlite => {
            // A write first, so the transaction holds SQLite's write lock from its first statement.
            let state = sqlx::query(
                "UPDATE sequencer_state SET last_no = last_no WHERE id = 1 RETURNING last_no, head",
            )
            .fetch_one(&mut **tx)
            .await?;
            let last_no: i64 = state.try_get("last_no")?;
            let rows = sqlx::query(
                "SELECT '0' AS cursor_tx, rowid AS cursor_no, aggregate_type, aggregate_id, sequence, \
                        event_type, event_version, payload, metadata, recorded_at \
                   FROM events WHERE rowid > $1 ORDER BY rowid LIMIT $2",
            )
            .bind(last_no)
            .bind(limit)
            .fetch_all(&mut **tx)
            .await?;
            Ok(Some(Claimed {
                head: state.try_get("head")?,
                pending: rows.iter().map(Pending::from_row).collect::<Result<_, _>>()?,
                held_back: false,
            }))
        }
    }
}

/// Gives the pending events their positions after `head` and their chain hashes; `chains` holds
/// known chain heads and is brought up to date.
async fn chain(
    tx: &mut Transaction<'_, Any>,
    chains: &mut HashMap<String, String>,
    head: i64,
    pending: Vec<Pending>,
) -> Result<Vec<LogEvent>, StoreError> {
    let scoped = scopes(&pending)?;
    let mut unknown: Vec<&str> = scoped
        .iter()
        .map(|(organization, _)| organization.as_str())
        .filter(|organization| !chains.contains_key(*organization))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    for organizations in unknown.chunks(LOOKUP_CHUNK) {
        for (organization, hash) in chain_heads(tx, organizations).await? {
            chains.insert(organization, hash.unwrap_or_else(|| GENESIS.to_owned()));
        }
    }
    Ok(link(chains, head, pending, scoped))
}

/// Each event's organization and engagement, from its metadata.
fn scopes(pending: &[Pending]) -> Result<Vec<(String, Option<String>)>, StoreError> {
    pending
        .iter()
        .map(|event| {
            let metadata: Value = serde_json::from_str(&event.metadata)?;
            let field = |name: &str| metadata.get(name).and_then(Value::as_str).map(str::to_owned);
            Ok((field("organizationId").unwrap_or_default(), field("engagementId")))
        })
        .collect()
}

/// The log rows of `pending` (moved into them) after `head`, each linked to its organization's
/// chain head in `chains`, which moves along.
fn link(
    chains: &mut HashMap<String, String>,
    head: i64,
    pending: Vec<Pending>,
    scoped: Vec<(String, Option<String>)>,
) -> Vec<LogEvent> {
    let mut appended = Vec::with_capacity(pending.len());
    for ((event, (organization_id, engagement_id)), position) in
        pending.into_iter().zip(scoped).zip(head + 1..)
    {
        let prev_hash = chains.get(&organization_id).cloned().unwrap_or_else(|| GENESIS.to_owned());
        let mut row = LogEvent {
            position,
            event_id: Id::generate_at(IdKind::Event, event.recorded_at).into_string(),
            organization_id,
            engagement_id,
            aggregate_type: event.aggregate_type,
            aggregate_id: event.aggregate_id,
            sequence: event.sequence,
            event_type: event.event_type,
            event_version: event.event_version,
            payload: event.payload,
            metadata: event.metadata,
            recorded_at: event.recorded_at,
            prev_hash,
            hash: String::new(),
        };
        row.hash = chain_hash(&row.prev_hash, &row.chained_fields());
        chains.insert(row.organization_id.clone(), row.hash.clone());
        appended.push(row);
    }
    appended
}

/// The newest hash of each organization's chain (`None`: no event yet), in one statement.
async fn chain_heads(
    tx: &mut Transaction<'_, Any>,
    organizations: &[&str],
) -> Result<Vec<(String, Option<String>)>, StoreError> {
    let sql = (1..=organizations.len())
        .map(|n| {
            format!(
                "SELECT ${n} AS organization_id, (SELECT hash FROM event_log WHERE organization_id = ${n} \
                 ORDER BY position DESC LIMIT 1) AS hash"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    // Prepared and kept only in its commonest shape: every size is a statement of its own.
    let mut query = sqlx::query(&sql).persistent(organizations.len() == 1);
    for organization in organizations {
        query = query.bind(*organization);
    }
    let rows = query.fetch_all(&mut **tx).await?;
    Ok(rows
        .iter()
        .map(|row| Ok((row.try_get("organization_id")?, row.try_get("hash")?)))
        .collect::<Result<_, sqlx::Error>>()?)
}

/// The SQLSTATE by which `pwnbook_append_sequenced` refuses the server's guess (migration 1010).
const GUESS_REFUSED: &str = "PWB01";
/// PostgreSQL's `invalid_sql_statement_name`: `EXECUTE` of a statement the session does not have.
const STATEMENT_GONE: &str = "26000";

/// Runs the `PREPARE` statements of `statements` not yet run on `conn`; false if one failed (the
/// batch then leaves the hook's work to its `apply`).
async fn prepare(
    conn: &mut AnyConnection,
    prepared: &mut HashSet<String>,
    statements: &[(String, String)],
) -> bool {
    for (name, statement) in statements {
        if prepared.contains(name) {
            continue;
        }
        if let Err(error) = conn.execute(statement.as_str()).await {
            tracing::warn!(%error, name, "preparing a statement of the in-batch work failed");
            return false;
        }
        prepared.insert(name.clone());
    }
    true
}

/// A batch `Sequencer::append_sequenced` wrote.
pub(crate) enum Appended<'c> {
    /// In this transaction, still open.
    Open(Transaction<'c, Any>, Sequenced),
    /// Committed in the same round trip.
    Committed(Sequenced),
}

/// What failed in `Sequencer::append_sequenced`.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The database found the head or the pending events other than assumed.
    Guess,
    /// Appending: the events themselves may be at fault (a conflict, a refusal), as with an
    /// INSERT of the batch.
    Append(sqlx::Error),
    /// Sequencing or the hook, after the events were appended in the transaction.
    Sequencing(StoreError),
    /// The connection, in the round trip that ends with COMMIT: the outcome is unknown.
    Unknown(sqlx::Error),
}

/// Milliseconds since the epoch, as `events.recorded_at`'s default reads the clock.
fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}

/// `BEGIN` and the call of `pwnbook_append_sequenced` as one simple query (one round trip), the
/// arrays as escaped string literals since a simple query takes no parameters.
fn append_sequenced_sql(head: i64, rows: &[LogEvent]) -> String {
    let texts = |column: fn(&LogEvent) -> &str| {
        format!("{}::text[]", string_literal(&text_array(rows.iter().map(|row| Some(column(row))))))
    };
    let ints = |column: fn(&LogEvent) -> i64| format!("'{}'::bigint[]", int_array(rows.iter().map(column)));
    let engagements = text_array(rows.iter().map(|row| row.engagement_id.as_deref()));
    format!(
        "BEGIN; SELECT pwnbook_append_sequenced({SEQUENCER_LOCK}, {}, {}, {head}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}::text[], {}, {})",
        WRITERS_LOCK.0,
        WRITERS_LOCK.1,
        texts(|row| &row.aggregate_type),
        texts(|row| &row.aggregate_id),
        ints(|row| row.sequence),
        texts(|row| &row.event_type),
        texts(|row| &row.event_version),
        texts(|row| &row.payload),
        texts(|row| &row.metadata),
        ints(|row| row.recorded_at),
        texts(|row| &row.event_id),
        texts(|row| &row.organization_id),
        string_literal(&engagements),
        texts(|row| &row.prev_hash),
        texts(|row| &row.hash),
    )
}

const LOG_INSERT: &str = "INSERT INTO event_log (position, event_id, organization_id, engagement_id, \
     aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at, prev_hash, hash)";

/// Appends `rows` to the log and moves the sequencer's state to `state`. PostgreSQL takes the
/// rows as one array parameter per column and updates the state in the same statement (a
/// data-modifying CTE): one round trip whatever the batch. SQLite takes multi-row INSERTs in
/// power-of-two chunks (each size one statement text, prepared once per connection), then the state.
async fn insert(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    rows: &[LogEvent],
    state: &State,
) -> Result<(), StoreError> {
    match backend {
        Backend::Postgres => {
            let texts = |column: fn(&LogEvent) -> &str| text_array(rows.iter().map(|row| Some(column(row))));
            let ints = |column: fn(&LogEvent) -> i64| int_array(rows.iter().map(column));
            let sql = format!(
                "WITH state AS (UPDATE sequencer_state SET last_tx = $15, last_no = $16, head = $17 WHERE id = 1) \
                 {LOG_INSERT} SELECT * FROM unnest(CAST($1 AS BIGINT[]), CAST($2 AS TEXT[]), CAST($3 AS TEXT[]), \
                 CAST($4 AS TEXT[]), CAST($5 AS TEXT[]), CAST($6 AS TEXT[]), CAST($7 AS BIGINT[]), CAST($8 AS TEXT[]), \
                 CAST($9 AS TEXT[]), CAST($10 AS TEXT[]), CAST($11 AS TEXT[]), CAST($12 AS BIGINT[]), \
                 CAST($13 AS TEXT[]), CAST($14 AS TEXT[]))"
            );
            sqlx::query(&sql)
                .bind(ints(|row| row.position))
                .bind(texts(|row| &row.event_id))
                .bind(texts(|row| &row.organization_id))
                .bind(text_array(rows.iter().map(|row| row.engagement_id.as_deref())))
                .bind(texts(|row| &row.aggregate_type))
                .bind(texts(|row| &row.aggregate_id))
                .bind(ints(|row| row.sequence))
                .bind(texts(|row| &row.event_type))
                .bind(texts(|row| &row.event_version))
                .bind(texts(|row| &row.payload))
                .bind(texts(|row| &row.metadata))
                .bind(ints(|row| row.recorded_at))
                .bind(texts(|row| &row.prev_hash))
                .bind(texts(|row| &row.hash))
                .bind(&state.last_tx)
                .bind(state.last_no)
                .bind(state.head)
                .execute(&mut **tx)
                .await?;
        }
        Backend::Sqlite => {
            for chunk in power_of_two_chunks(rows, INSERT_CHUNK) {
                let sql = format!("{LOG_INSERT} VALUES {}", sqlite_values(chunk.len(), 14));
                let mut query = sqlx::query(&sql);
                for row in chunk {
                    query = query
                        .bind(row.position)
                        .bind(&row.event_id)
                        .bind(&row.organization_id)
                        .bind(&row.engagement_id)
                        .bind(&row.aggregate_type)
                        .bind(&row.aggregate_id)
                        .bind(row.sequence)
                        .bind(&row.event_type)
                        .bind(&row.event_version)
                        .bind(&row.payload)
                        .bind(&row.metadata)
                        .bind(row.recorded_at)
                        .bind(&row.prev_hash)
                        .bind(&row.hash);
                }
                query.execute(&mut **tx).await?;
            }
            sqlx::query("UPDATE sequencer_state SET last_tx = $1, last_no = $2, head = $3 WHERE id = 1")
                .bind(&state.last_tx)
                .bind(state.last_no)
                .bind(state.head)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

/// Where recently sequenced streams got to, so that a writer waiting for its own event finds its
/// position without a query. Two generations bound the memory: when the newer one is full it
/// replaces the older.
#[derive(Debug, Default)]
struct RecentPositions {
    current: HashMap<(String, String), Recent>,
    previous: HashMap<(String, String), Recent>,
}

/// A stream's newest sequenced event.
#[derive(Debug, Clone, Copy)]
struct Recent {
    sequence: i64,
    position: i64,
    recorded_at: i64,
}

const RECENT_GENERATION: usize = 50_000;

impl RecentPositions {
    fn record(&mut self, events: &[LogEvent]) {
        for event in events {
            if self.current.len() >= RECENT_GENERATION {
                self.previous = std::mem::take(&mut self.current);
            }
            // Batches may be recorded out of order (the group commit's and the task's).
            let recent =
                Recent { sequence: event.sequence, position: event.position, recorded_at: event.recorded_at };
            self.current
                .entry((event.aggregate_type.clone(), event.aggregate_id.clone()))
                .and_modify(|known| {
                    if event.sequence > known.sequence {
                        *known = recent;
                    }
                })
                .or_insert(recent);
        }
    }

    /// The stream's newest event known to either generation that satisfies `wanted`.
    fn find(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        wanted: impl Fn(&Recent) -> bool,
    ) -> Option<Recent> {
        let key = (aggregate_type.to_owned(), aggregate_id.to_owned());
        [&self.current, &self.previous]
            .into_iter()
            .filter_map(|generation| generation.get(&key))
            .find(|recent| wanted(recent))
            .copied()
    }

    fn position_of(&self, aggregate_type: &str, aggregate_id: &str, sequence: i64) -> Option<i64> {
        self.find(aggregate_type, aggregate_id, |newest| newest.sequence >= sequence).map(|r| r.position)
    }

    /// When the stream's event `sequence` was recorded, if either generation holds it as its
    /// stream's newest.
    fn recorded_at(&self, aggregate_type: &str, aggregate_id: &str, sequence: i64) -> Option<i64> {
        self.find(aggregate_type, aggregate_id, |newest| newest.sequence == sequence).map(|r| r.recorded_at)
    }
}

/// A running sequencer task: `kick` after a commit, watch `head` for the log head.
#[derive(Debug, Clone)]
pub struct SequencerHandle {
    kick: Arc<Notify>,
    published: Arc<Published>,
}

impl SequencerHandle {
    /// Asks the sequencer to look for new events now.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    pub fn head(&self) -> watch::Receiver<i64> {
        self.published.head.subscribe()
    }

    /// A log position at or after the event `sequence` of the stream, if this process's sequencer
    /// (or group commit) appended that event recently (`None` says nothing: another process may
    /// have). It is the position of the stream's newest event known here, so waiting for it
    /// covers the event.
    pub fn sequenced_at(&self, aggregate_type: &str, aggregate_id: &str, sequence: i64) -> Option<i64> {
        self.published.recent.lock().ok()?.position_of(aggregate_type, aggregate_id, sequence)
    }

    /// When the stream's event `sequence` was recorded, if this process sequenced it recently (it
    /// keeps the time of each stream's newest event only).
    pub fn recorded_at(&self, aggregate_type: &str, aggregate_id: &str, sequence: i64) -> Option<i64> {
        self.published.recent.lock().ok()?.recorded_at(aggregate_type, aggregate_id, sequence)
    }
}

/// Runs a sequencer (with `hook` in its batches) until `shutdown` fires, and has this process's
/// group commit sequence its own batches in their transactions. The task wakes on `kick`, for
/// events committed by other processes every `poll`, and sooner while committed events are held
/// back by an older transaction (whose commit may come from anywhere, so nothing kicks it).
pub fn spawn(
    store: Store,
    hook: Option<Arc<dyn BatchHook>>,
    poll: Duration,
    shutdown: watch::Receiver<bool>,
) -> SequencerHandle {
    let kick = Arc::new(Notify::new());
    let sequencer = Arc::new(match hook {
        Some(hook) => Sequencer::with_hook(store, hook),
        None => Sequencer::new(store),
    });
    // The group commit holds it weakly: the store must not keep its own sequencer alive.
    sequencer.store.group_commit().attach(Arc::downgrade(&sequencer));
    let handle = SequencerHandle { kick: kick.clone(), published: sequencer.published.clone() };
    tokio::spawn(async move {
        let mut shutdown = shutdown;
        let mut retry = HELD_BACK_RETRY;
        loop {
            let pause = match sequencer.catch_up_held().await {
                Ok((_, true)) => {
                    let pause = retry;
                    retry = (retry * 2).min(poll);
                    pause
                }
                Ok((_, false)) => {
                    retry = HELD_BACK_RETRY;
                    poll
                }
                Err(error) => {
                    tracing::error!(%error, "sequencer batch failed; retrying");
                    poll
                }
            };
            tokio::select! {
                () = kick.notified() => {}
                () = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
    handle
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, sequence: i64, position: i64) -> LogEvent {
        LogEvent {
            position,
            event_id: format!("evt_{position}"),
            organization_id: "org".to_owned(),
            engagement_id: None,
            aggregate_type: "finding".to_owned(),
            aggregate_id: id.to_owned(),
            sequence,
            event_type: "finding.created".to_owned(),
            event_version: "1".to_owned(),
            payload: "{}".to_owned(),
            metadata: "{}".to_owned(),
            recorded_at: 1_000 + position,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn recent_positions_answer_for_the_newest_event_of_a_stream() {
        let mut recent = RecentPositions::default();
        recent.record(&[event("a", 1, 10), event("b", 1, 11), event("a", 2, 12)]);
        assert_eq!(recent.position_of("finding", "a", 1), Some(12));
        assert_eq!(recent.position_of("finding", "a", 2), Some(12));
        assert_eq!(recent.position_of("finding", "a", 3), None);
        assert_eq!(recent.position_of("finding", "b", 1), Some(11));
        assert_eq!(recent.position_of("task", "a", 1), None);
        // Only the newest event's time is kept.
        assert_eq!(recent.recorded_at("finding", "a", 1), None);
        assert_eq!(recent.recorded_at("finding", "a", 2), Some(1_012));
        assert_eq!(recent.recorded_at("finding", "b", 1), Some(1_011));
    }

    #[test]
    fn recent_positions_forget_the_oldest_generation() {
        let mut recent = RecentPositions::default();
        recent.record(&[event("first", 1, 1)]);
        let filler: Vec<_> =
            (0..2 * RECENT_GENERATION as i64).map(|i| event(&format!("f{i}"), 1, i + 2)).collect();
        recent.record(&filler);
        assert_eq!(recent.position_of("finding", "first", 1), None);
        assert!(recent.position_of("finding", &format!("f{}", 2 * RECENT_GENERATION - 1), 1).is_some());
    }
}
