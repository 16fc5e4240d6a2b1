//! Runs projectors over the event log: each batch is applied and the checkpoint advanced in one
//! transaction, so a crash between batches neither loses nor repeats an event.

use std::sync::Arc;
use std::time::Duration;

use pwnbook_events::sequencer::{BatchHook, HookFuture};
use pwnbook_events::{log, Backend, LogEvent, Store};
use sqlx::{Any, Row, Transaction};
use tokio::sync::watch;

use crate::sql::Sql;
use crate::{ProjectionError, Projector};

const LIVE_BATCH: i64 = 500;
const REBUILD_BATCH: i64 = 5_000;

#[derive(Clone)]
pub struct ProjectionRunner {
    store: Store,
    projectors: Vec<Arc<dyn Projector>>,
}

impl ProjectionRunner {
    pub fn new(store: Store, projectors: Vec<Arc<dyn Projector>>) -> Self {
        Self { store, projectors }
    }

    pub fn projectors(&self) -> &[Arc<dyn Projector>] {
        &self.projectors
    }

    /// Registers every projector's checkpoint and rebuilds those whose schema version changed.
    pub async fn prepare(&self) -> Result<(), ProjectionError> {
        for projector in &self.projectors {
            sqlx::query(
                "INSERT INTO projector_checkpoints (name, position, schema_version) VALUES ($1, 0, $2) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(projector.name())
            .bind(projector.schema_version())
            .execute(self.store.pool())
            .await?;
            let stored: i64 =
                sqlx::query_scalar("SELECT schema_version FROM projector_checkpoints WHERE name = $1")
                    .bind(projector.name())
                    .fetch_one(self.store.pool())
                    .await?;
            if stored != projector.schema_version() {
                tracing::info!(projector = projector.name(), "schema version changed; rebuilding");
                self.rebuild(projector.as_ref()).await?;
            }
        }
        Ok(())
    }

    /// Applies one batch to one projector; returns how many events it applied and its checkpoint.
    pub async fn run_batch(
        &self,
        projector: &dyn Projector,
        limit: i64,
    ) -> Result<(usize, i64), ProjectionError> {
        let mut tx = self.store.pool().begin().await?;
        let checkpoint = lock_checkpoint(&mut tx, projector.name()).await?;
        let events = log::read_after(&mut *tx, checkpoint, limit).await?;
        let Some(last) = events.last() else {
            tx.rollback().await?;
            return Ok((0, checkpoint));
        };
        let position = last.position;
        projector.apply(&mut tx, &events).await?;
        store_checkpoint(&mut tx, projector, position).await?;
        tx.commit().await?;
        Ok((events.len(), position))
    }

    /// Applies the next batch to every projector in ONE transaction: each projector gets the
    /// events after its own checkpoint, and every checkpoint moves in the same commit. One commit
    /// per batch instead of one per projector is what keeps write latency low. Returns how many
    /// events the batch read and the lowest checkpoint after it.
    pub async fn run_all_batch(&self, limit: i64) -> Result<(usize, i64), ProjectionError> {
        let mut tx = self.store.pool().begin().await?;
        let checkpoints = self.lock_all_checkpoints(&mut tx).await?;
        let from = checkpoints.iter().copied().min().unwrap_or(0);
        let events = log::read_after(&mut *tx, from, limit).await?;
        let Some(last) = events.last() else {
            tx.rollback().await?;
            return Ok((0, from));
        };
        let end = last.position;
        for (projector, checkpoint) in self.projectors.iter().zip(&checkpoints) {
            if *checkpoint < end {
                let unseen = events.partition_point(|event| event.position <= *checkpoint);
                projector.apply(&mut tx, &events[unseen..]).await?;
            }
        }
        self.advance_all(&mut tx, end).await?;
        tx.commit().await?;
        let lowest = checkpoints.iter().map(|checkpoint| (*checkpoint).max(end)).min().unwrap_or(end);
        Ok((events.len(), lowest))
    }

    /// Moves every checkpoint that is behind `end` to `end`, in one statement.
    async fn advance_all(&self, tx: &mut Transaction<'_, Any>, end: i64) -> Result<(), ProjectionError> {
        let mut advance = Sql::new(
            "UPDATE projector_checkpoints SET position = CASE WHEN position < $1 THEN $1 ELSE position END \
             WHERE name IN (",
        );
        advance.bind_value(end);
        self.push_names(&mut advance);
        advance.query().execute(&mut **tx).await?;
        Ok(())
    }

    /// Every projector's checkpoint in projector order, locked, or `None` when another
    /// transaction holds one of them (PostgreSQL; SQLite's caller already has the write lock).
    async fn try_lock_all_checkpoints(
        &self,
        tx: &mut Transaction<'_, Any>,
    ) -> Result<Option<Vec<i64>>, ProjectionError> {
        let mut lock = Sql::new("SELECT name, position FROM projector_checkpoints WHERE name IN (");
        self.push_names(&mut lock);
        if self.store.backend() == Backend::Postgres {
            lock.push(" FOR UPDATE SKIP LOCKED");
        }
        let rows = lock.query().fetch_all(&mut **tx).await?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            found.insert(row.try_get::<String, _>("name")?, row.try_get::<i64, _>("position")?);
        }
        Ok(self.projectors.iter().map(|p| found.get(p.name()).copied()).collect())
    }

    /// Takes every projector's checkpoint row lock in one statement (and on SQLite the write
    /// lock) and returns the checkpoints in projector order.
    async fn lock_all_checkpoints(&self, tx: &mut Transaction<'_, Any>) -> Result<Vec<i64>, ProjectionError> {
        let mut lock = Sql::new("UPDATE projector_checkpoints SET position = position WHERE name IN (");
        self.push_names(&mut lock);
        lock.push(" RETURNING name, position");
        let rows = lock.query().fetch_all(&mut **tx).await?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            found.insert(row.try_get::<String, _>("name")?, row.try_get::<i64, _>("position")?);
        }
        self.projectors
            .iter()
            .map(|p| {
                found
                    .get(p.name())
                    .copied()
                    .ok_or_else(|| ProjectionError::UnknownProjector(p.name().to_owned()))
            })
            .collect()
    }

    /// `$n, …)` with every projector's name.
    fn push_names(&self, sql: &mut Sql) {
        for (i, projector) in self.projectors.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(projector.name());
        }
        sql.push(")");
    }

    /// Brings every projector up to the log head; returns the lowest checkpoint.
    pub async fn catch_up(&self) -> Result<i64, ProjectionError> {
        loop {
            let (read, lowest) = self.run_all_batch(LIVE_BATCH).await?;
            if read < LIVE_BATCH as usize {
                return Ok(lowest);
            }
        }
    }

    /// Replays the whole log into the projector's emptied tables in ONE transaction: readers keep
    /// seeing the old rows until the new ones replace them at commit.
    pub async fn rebuild(&self, projector: &dyn Projector) -> Result<i64, ProjectionError> {
        self.rebuild_with_progress(projector, &mut |_| {}).await
    }

    /// `rebuild`, calling `progress` with the position reached after each batch. The swap is
    /// atomic: it is the commit of the one transaction, which also holds the projector's
    /// checkpoint lock, so the live runner (of any process) waits instead of racing it.
    pub async fn rebuild_with_progress(
        &self,
        projector: &dyn Projector,
        progress: &mut (dyn FnMut(i64) + Send),
    ) -> Result<i64, ProjectionError> {
        let mut tx = self.store.pool().begin().await?;
        lock_checkpoint(&mut tx, projector.name()).await?;
        for table in projector.tables() {
            sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *tx).await?;
        }
        let mut position = 0;
        loop {
            let events = log::read_after(&mut *tx, position, REBUILD_BATCH).await?;
            let Some(last) = events.last() else { break };
            position = last.position;
            projector.apply(&mut tx, &events).await?;
            progress(position);
            if events.len() < REBUILD_BATCH as usize {
                break;
            }
        }
        store_checkpoint(&mut tx, projector, position).await?;
        tx.commit().await?;
        Ok(position)
    }

    /// Every projector's stored checkpoint.
    pub async fn checkpoints(&self) -> Result<Vec<(&'static str, i64)>, ProjectionError> {
        let mut checkpoints = Vec::with_capacity(self.projectors.len());
        for projector in &self.projectors {
            let position: Option<i64> =
                sqlx::query_scalar("SELECT position FROM projector_checkpoints WHERE name = $1")
                    .bind(projector.name())
                    .fetch_optional(self.store.pool())
                    .await?;
            checkpoints.push((projector.name(), position.unwrap_or(0)));
        }
        Ok(checkpoints)
    }

    /// The lowest checkpoint of this runner's projectors, as stored.
    pub async fn lowest_checkpoint(&self) -> Result<i64, ProjectionError> {
        let mut lowest = i64::MAX;
        for projector in &self.projectors {
            let position: Option<i64> =
                sqlx::query_scalar("SELECT position FROM projector_checkpoints WHERE name = $1")
                    .bind(projector.name())
                    .fetch_optional(self.store.pool())
                    .await?;
            lowest = lowest.min(position.unwrap_or(0));
        }
        Ok(if lowest == i64::MAX { 0 } else { lowest })
    }
}

/// Takes the projector's checkpoint row lock (and on SQLite the write lock) before reading.
async fn lock_checkpoint(tx: &mut Transaction<'_, Any>, name: &str) -> Result<i64, ProjectionError> {
    let position: Option<i64> = sqlx::query_scalar(
        "UPDATE projector_checkpoints SET position = position WHERE name = $1 RETURNING position",
    )
    .bind(name)
    .fetch_optional(&mut **tx)
    .await?;
    position.ok_or_else(|| ProjectionError::UnknownProjector(name.to_owned()))
}

async fn store_checkpoint(
    tx: &mut Transaction<'_, Any>,
    projector: &dyn Projector,
    position: i64,
) -> Result<(), ProjectionError> {
    sqlx::query("UPDATE projector_checkpoints SET position = $1, schema_version = $2 WHERE name = $3")
        .bind(position)
        .bind(projector.schema_version())
        .bind(projector.name())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What this process knows of its projectors' progress: `checkpoint` is a lower bound of their
/// lowest checkpoint, moved by the inline hook and by the runner task.
#[derive(Debug, Clone)]
pub struct ProjectionHandle {
    checkpoint: watch::Receiver<i64>,
    publish: Arc<watch::Sender<i64>>,
}

impl Default for ProjectionHandle {
    fn default() -> Self {
        let (publish, checkpoint) = watch::channel(0);
        Self { checkpoint, publish: Arc::new(publish) }
    }
}

impl ProjectionHandle {
    pub fn checkpoint(&self) -> watch::Receiver<i64> {
        self.checkpoint.clone()
    }

    /// The hook that applies `runner`'s projectors inside the local sequencer's batches.
    pub fn inline(&self, runner: ProjectionRunner) -> Arc<dyn BatchHook> {
        Arc::new(InlineProjection { runner, publish: self.publish.clone() })
    }

    fn advance(&self, checkpoint: i64) {
        advance(&self.publish, checkpoint);
    }
}

/// Both writers publish lower bounds of a checkpoint that only grows, so the larger one wins.
fn advance(publish: &watch::Sender<i64>, checkpoint: i64) {
    publish.send_if_modified(|current| {
        let moved = checkpoint > *current;
        if moved {
            *current = checkpoint;
        }
        moved
    });
}

/// The in-process fast path: the batch the local sequencer just appended is projected in the
/// sequencer's own transaction, so a write becomes readable with one commit (not two) and
/// without reading the batch back from the log. It only runs when every checkpoint is exactly
/// at the batch's start and no one else holds a checkpoint (a rebuild, another process's runner);
/// otherwise it declines and the runner task catches up from the log.
struct InlineProjection {
    runner: ProjectionRunner,
    publish: Arc<watch::Sender<i64>>,
}

impl BatchHook for InlineProjection {
    fn apply<'a>(
        &'a self,
        tx: &'a mut Transaction<'static, Any>,
        head: i64,
        appended: &'a [LogEvent],
    ) -> HookFuture<'a> {
        Box::pin(async move {
            let Some(last) = appended.last() else { return Ok(false) };
            let Some(checkpoints) = self.runner.try_lock_all_checkpoints(tx).await? else {
                return Ok(false);
            };
            if checkpoints.iter().any(|checkpoint| *checkpoint != head) {
                return Ok(false);
            }
            for projector in &self.runner.projectors {
                projector.apply(tx, appended).await?;
            }
            self.runner.advance_all(tx, last.position).await?;
            Ok(true)
        })
    }

    fn committed(&self, head: i64) {
        advance(&self.publish, head);
    }
}

/// Runs `runner` until `shutdown` fires: whenever the log head moves past what `handle` knows
/// to be projected (the inline hook declined) and every `poll` (for checkpoints advanced by
/// other processes).
pub fn spawn(
    runner: ProjectionRunner,
    handle: &ProjectionHandle,
    mut head: watch::Receiver<i64>,
    poll: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let handle = handle.clone();
    tokio::spawn(async move {
        let mut run = true;
        loop {
            if run {
                match runner.catch_up().await {
                    Ok(checkpoint) => handle.advance(checkpoint),
                    Err(error) => tracing::error!(%error, "projection batch failed; retrying"),
                }
            }
            run = tokio::select! {
                changed = head.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    *head.borrow_and_update() > *handle.checkpoint.borrow()
                }
                () = tokio::time::sleep(poll) => true,
                _ = shutdown.changed() => return,
            };
        }
    });
}
