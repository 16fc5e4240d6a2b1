//! Runs projectors over the event log: each batch is applied and the checkpoint advanced in one
//! transaction, so a crash between batches neither loses nor repeats an event.

use std::sync::Arc;
use std::time::Duration;

use pwnbook_events::sequencer::{BatchHook, HookFuture, HookSql, HookWork};
use pwnbook_events::values::{string_literal, text_array};
use pwnbook_events::{log, Backend, LogEvent, Store};
use sqlx::{Any, AnyConnection, Connection, Row, Transaction};
use tokio::sync::watch;

use crate::bulk::BulkLoad;
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
        let mut stale: Vec<&dyn Projector> = Vec::new();
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
                stale.push(projector.as_ref());
            }
        }
        if !stale.is_empty() {
            self.rebuild_all_with_progress(&stale, &mut |_| {}).await?;
        }
        Ok(())
    }

    /// Applies one batch to one projector; returns how many events it applied and its checkpoint.
    pub async fn run_batch(
        &self,
        projector: &dyn Projector,
        limit: i64,
    ) -> Result<(usize, i64), ProjectionError> {
        let _turn = self.store.write_turn().await;
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
        let _turn = self.store.write_turn().await;
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

    /// Moves every checkpoint from `head` to `end` in one statement if all of them are at `head`
    /// and none is locked by another transaction (PostgreSQL; SQLite's caller already has the
    /// write lock); returns whether it did.
    async fn try_advance_all_from(
        &self,
        tx: &mut Transaction<'_, Any>,
        head: i64,
        end: i64,
    ) -> Result<bool, ProjectionError> {
        let mut advance = Sql::new("UPDATE projector_checkpoints SET position = ");
        advance.bind(end).push(" WHERE name IN (");
        self.push_names(&mut advance);
        advance.push(" AND (SELECT count(*) FROM (SELECT name FROM projector_checkpoints WHERE position = ");
        advance.bind(head).push(" AND name IN (");
        self.push_names(&mut advance);
        if self.store.backend() == Backend::Postgres {
            advance.push(" FOR UPDATE SKIP LOCKED");
        }
        advance.push(") ready) = ").bind(self.projectors.len() as i64);
        let advanced = advance.query().execute(&mut **tx).await?.rows_affected();
        Ok(advanced == self.projectors.len() as u64)
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

    /// `rebuild`, calling `progress` with the position reached after each batch.
    pub async fn rebuild_with_progress(
        &self,
        projector: &dyn Projector,
        progress: &mut (dyn FnMut(i64) + Send),
    ) -> Result<i64, ProjectionError> {
        self.rebuild_all_with_progress(&[projector], progress).await
    }

    /// Rebuilds several projectors in one pass over the log (each batch is read once and applied
    /// to all of them). The replay writes into shadow copies of their tables (only their
    /// unique indexes, and no WAL: temporary tables on SQLite, unlogged tables in a schema of the
    /// rebuild's own on PostgreSQL, where creations are loaded by COPY over a second connection;
    /// unqualified names resolve to the shadows first), without any lock: readers and the live
    /// runner carry on. Then
    /// ONE transaction takes the projectors' checkpoint locks, replays the events written in the
    /// meantime, and makes each real table equal to its shadow by deleting the rows that differ
    /// and inserting the missing ones; readers see the old rows until that commit.
    pub async fn rebuild_all_with_progress(
        &self,
        projectors: &[&dyn Projector],
        progress: &mut (dyn FnMut(i64) + Send),
    ) -> Result<i64, ProjectionError> {
        // A connection of its own, never returned to the pool: the shadow tables shadow the real
        // ones for every query on it. SQLite's are temporary and vanish when it closes; on
        // PostgreSQL they are in a schema of the rebuild's own, since a second connection loads
        // them, dropped at the end (or, if that fails or the process dies, by the next rebuild).
        let mut conn = self.store.pool().acquire().await?.detach();
        let schema = match self.store.backend() {
            Backend::Postgres => Some(ShadowSchema::create(&mut conn).await?),
            Backend::Sqlite => None,
        };
        let rebuilt = self.replay(&mut conn, schema.as_ref(), projectors, progress).await;
        // Dropped on the rebuild's own connection, so that no other rebuild meanwhile takes it
        // for a dead one's; a failure is logged rather than returned (the rebuild's outcome is
        // what counts), and the next rebuild drops what is left.
        if let Some(schema) = schema {
            schema.drop(&mut conn).await;
        }
        let closed = conn.close().await;
        let position = rebuilt?;
        closed?;
        Ok(position)
    }

    /// The body of `rebuild_all_with_progress` on its connection (whose shadows on PostgreSQL
    /// are in `schema`).
    async fn replay(
        &self,
        conn: &mut AnyConnection,
        schema: Option<&ShadowSchema>,
        projectors: &[&dyn Projector],
        progress: &mut (dyn FnMut(i64) + Send),
    ) -> Result<i64, ProjectionError> {
        let tables: Vec<&str> = projectors.iter().flat_map(|p| p.tables().iter().copied()).collect();
        let mut shadows = Vec::with_capacity(tables.len());
        for table in &tables {
            shadows.push(Shadow::create(conn, schema, table).await?);
        }
        let mut bulk = match schema.and_then(|schema| schema.search_path.as_deref()) {
            Some(search_path) => {
                let options = self.store.pool().connect_options();
                Some(BulkLoad::connect(&options, search_path).await?)
            }
            None => None,
        };
        // The next batch is read (on another connection) while this one is applied, and decoded
        // by a task of its own, so on another core when there is one.
        let pool = self.store.pool();
        let mut position = 0;
        let mut events = log::read_after(pool, position, REBUILD_BATCH).await?;
        while let Some(last) = events.last() {
            position = last.position;
            let reader = pool.clone();
            let next = tokio::spawn(async move { log::read_after(&reader, position, REBUILD_BATCH).await });
            let applied = apply_shadow(conn, bulk.as_mut(), projectors, &events).await;
            let next = next.await.map_err(|e| ProjectionError::Reader(e.to_string()))?;
            applied?;
            progress(position);
            events = next?;
        }
        if let Some(bulk) = bulk {
            tracing::debug!(rows = bulk.rows_loaded(), "the rebuild's bulk loads");
            bulk.close().await?;
            let mut tx = conn.begin().await?;
            for projector in projectors {
                projector.finish_bulk(&mut tx).await?;
            }
            tx.commit().await?;
        }
        let mut tx = conn.begin().await?;
        lock_checkpoints(&mut tx, projectors).await?;
        loop {
            let events = log::read_after(&mut *tx, position, REBUILD_BATCH).await?;
            let Some(last) = events.last() else { break };
            position = last.position;
            for projector in projectors {
                projector.apply(&mut tx, &events).await?;
            }
            progress(position);
        }
        // The copies are anti-joins on the key, whose plans must not be nested loops: a real
        // table's statistics may still say empty (a fresh database) while it holds every row,
        // and a loop would scan it once per row. Their hash tables (~30 MB per 100 000 findings)
        // should stay in memory rather than spill in batches to disk.
        if self.store.backend() == Backend::Postgres {
            sqlx::query("SET LOCAL enable_nestloop = off").execute(&mut *tx).await?;
            sqlx::query("SET LOCAL work_mem = '128MB'").execute(&mut *tx).await?;
        }
        for shadow in &shadows {
            shadow.copy_changes(self.store.backend(), &mut tx).await?;
        }
        for projector in projectors {
            store_checkpoint(&mut tx, *projector, position).await?;
        }
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

/// Applies a batch to every projector in one transaction on the rebuild's connection.
async fn apply_shadow(
    conn: &mut AnyConnection,
    mut bulk: Option<&mut BulkLoad>,
    projectors: &[&dyn Projector],
    events: &[pwnbook_events::LogEvent],
) -> Result<(), ProjectionError> {
    let mut tx = conn.begin().await?;
    for projector in projectors {
        match bulk.as_deref_mut() {
            Some(bulk) => projector.apply_bulk(&mut tx, bulk, events).await?,
            None => projector.apply(&mut tx, events).await?,
        }
    }
    tx.commit().await?;
    Ok(())
}

/// A PostgreSQL rebuild's schema for its shadow tables (unlogged: nothing of them is worth a
/// WAL record), first in the search path of the rebuild's connections so that the projectors'
/// unqualified table names mean the shadows there. Without CREATE on the database it is the
/// session's `pg_temp` (first of any search path): the rebuild's connection alone sees the
/// shadows then, so nothing is loaded by COPY.
struct ShadowSchema {
    name: String,
    /// The schema of the real tables.
    real: String,
    /// The connections' search path (`name`, then the one they had), unless `name` is `pg_temp`.
    search_path: Option<String>,
}

/// Shadow schemas are named this and the id of the server process of the rebuild's connection,
/// so that one left by a rebuild that died is known by its process being gone.
const SHADOW_SCHEMA_PREFIX: &str = "pwnbook_rebuild_";

impl ShadowSchema {
    /// Drops the shadow schemas of rebuilds that died, creates this rebuild's and puts it first
    /// in `conn`'s search path.
    async fn create(conn: &mut AnyConnection) -> Result<Self, ProjectionError> {
        // The replay's batches must see what the loading connection committed during them,
        // whatever the database's default isolation.
        sqlx::query("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .execute(&mut *conn)
            .await?;
        let (real, path, pid): (String, String, i32) = sqlx::query_as(
            "SELECT CAST(current_schema() AS TEXT), current_setting('search_path'), pg_backend_pid()",
        )
        .fetch_one(&mut *conn)
        .await?;
        let orphans: Vec<String> = sqlx::query_scalar(
            "SELECT quote_ident(nspname) FROM pg_namespace WHERE nspname ~ ('^' || $1 || '[0-9]+$') \
             AND nspname NOT IN (SELECT $1 || pid FROM pg_stat_activity)",
        )
        .bind(SHADOW_SCHEMA_PREFIX)
        .fetch_all(&mut *conn)
        .await?;
        for orphan in &orphans {
            if let Err(error) =
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {orphan} CASCADE")).execute(&mut *conn).await
            {
                tracing::warn!(%error, schema = orphan, "could not drop a dead rebuild's shadow schema");
            }
        }
        let name = format!("{SHADOW_SCHEMA_PREFIX}{pid}");
        // A schema of this name left by a dead rebuild whose process id is this one's now.
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).execute(&mut *conn).await?;
        match sqlx::query(&format!("CREATE SCHEMA {name}")).execute(&mut *conn).await {
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42501") => {
                tracing::warn!(
                    %error,
                    "no CREATE on the database: the rebuild's shadows are temporary tables, without COPY"
                );
                return Ok(Self { name: "pg_temp".to_owned(), real, search_path: None });
            }
            created => created?,
        };
        let search_path = format!("{name}, {path}");
        sqlx::query("SELECT set_config('search_path', $1, false)")
            .bind(&search_path)
            .execute(&mut *conn)
            .await?;
        Ok(Self { name, real, search_path: Some(search_path) })
    }

    /// `CREATE … TABLE` for a shadow here.
    fn create_table(&self) -> &'static str {
        match self.search_path {
            Some(_) => "CREATE UNLOGGED TABLE",
            // A table created in `pg_temp` is a temporary table.
            None => "CREATE TABLE",
        }
    }

    async fn drop(self, conn: &mut AnyConnection) {
        // Temporary shadows vanish with the connection.
        if self.search_path.is_none() {
            return;
        }
        if let Err(error) =
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name)).execute(conn).await
        {
            tracing::warn!(%error, schema = self.name, "could not drop the rebuild's shadow schema");
        }
    }
}

/// A read table's copy (a shadow), filled by a rebuild's replay.
struct Shadow {
    /// The real table, schema-qualified (the bare name means the shadow on the rebuild's connection).
    real: String,
    shadow: String,
    /// The primary key's columns.
    key: Vec<String>,
    /// Every column, in table order.
    columns: Vec<String>,
}

impl Shadow {
    /// Creates the empty shadow of `table` with the same columns and unique indexes (what
    /// `ON CONFLICT` needs) but none of the list indexes, which would only slow the replay.
    async fn create(
        conn: &mut AnyConnection,
        shadows: Option<&ShadowSchema>,
        table: &str,
    ) -> Result<Self, ProjectionError> {
        let (real, shadow, key, columns, statements) = match shadows {
            Some(shadows @ ShadowSchema { name, real: schema, .. }) => {
                let real = format!("{schema}.{table}");
                let key: Vec<String> = sqlx::query_scalar(
                    "SELECT a.attname::text FROM pg_index i \
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                     WHERE i.indrelid = CAST($1 AS regclass) AND i.indisprimary ORDER BY a.attnum",
                )
                .bind(&real)
                .fetch_all(&mut *conn)
                .await?;
                let columns: Vec<String> = sqlx::query_scalar(
                    "SELECT attname::text FROM pg_attribute WHERE attrelid = CAST($1 AS regclass) \
                     AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                )
                .bind(&real)
                .fetch_all(&mut *conn)
                .await?;
                let unique: Vec<String> = sqlx::query_scalar(
                    "SELECT CAST(indexdef AS TEXT) FROM pg_indexes WHERE schemaname = CAST($1 AS name) AND tablename = CAST($2 AS name) \
                     AND indexdef LIKE 'CREATE UNIQUE INDEX %'",
                )
                .bind(schema)
                .bind(table)
                .fetch_all(&mut *conn)
                .await?;
                let shadow = format!("{name}.{table}");
                let mut statements =
                    vec![format!("{} {shadow} (LIKE {real} INCLUDING DEFAULTS)", shadows.create_table())];
                statements.extend(
                    unique
                        .iter()
                        .map(|def| def.replacen(&format!(" ON {real} "), &format!(" ON {shadow} "), 1)),
                );
                (real, shadow, key, columns, statements)
            }
            None => {
                let definition: String = sqlx::query_scalar(
                    "SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = $1",
                )
                .bind(table)
                .fetch_one(&mut *conn)
                .await?;
                let key: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM pragma_table_info($1, 'main') WHERE pk > 0 ORDER BY pk",
                )
                .bind(table)
                .fetch_all(&mut *conn)
                .await?;
                let columns: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM pragma_table_info($1, 'main') ORDER BY cid")
                        .bind(table)
                        .fetch_all(&mut *conn)
                        .await?;
                let unique: Vec<String> = sqlx::query_scalar(
                    "SELECT sql FROM main.sqlite_master WHERE type = 'index' AND tbl_name = $1 \
                     AND sql LIKE 'CREATE UNIQUE INDEX %'",
                )
                .bind(table)
                .fetch_all(&mut *conn)
                .await?;
                let mut statements = vec![definition.replacen("CREATE TABLE ", "CREATE TEMP TABLE ", 1)];
                statements.extend(
                    unique
                        .iter()
                        .map(|def| def.replacen("CREATE UNIQUE INDEX ", "CREATE UNIQUE INDEX temp.", 1)),
                );
                (format!("main.{table}"), format!("temp.{table}"), key, columns, statements)
            }
        };
        if key.is_empty() {
            return Err(ProjectionError::NoPrimaryKey(table.to_owned()));
        }
        for statement in statements {
            sqlx::query(&statement).execute(&mut *conn).await?;
        }
        Ok(Self { real, shadow, key, columns })
    }

    /// Makes the real table equal to the shadow, touching only the rows that differ: rows are
    /// matched on the primary key (a hash join), then compared column by column, NULLs equal.
    async fn copy_changes(
        &self,
        backend: Backend,
        tx: &mut Transaction<'_, Any>,
    ) -> Result<(), ProjectionError> {
        let Self { real, shadow, key, columns } = self;
        let same_key = key.iter().map(|c| format!("s.\"{c}\" = r.\"{c}\"")).collect::<Vec<_>>().join(" AND ");
        let equal = match backend {
            Backend::Postgres => "IS NOT DISTINCT FROM",
            Backend::Sqlite => "IS",
        };
        let same_row =
            columns.iter().map(|c| format!("s.\"{c}\" {equal} r.\"{c}\"")).collect::<Vec<_>>().join(" AND ");
        let differ = format!("NOT EXISTS (SELECT 1 FROM {shadow} AS s WHERE {same_key} AND {same_row})");
        // Counted first, by a read, which PostgreSQL spreads over its parallel workers (a DELETE
        // is never parallel; ~40 % less time on 100 000 findings): the rows usually all match.
        let differing: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {real} AS r WHERE {differ}"))
            .fetch_one(&mut **tx)
            .await?;
        let deleted = if differing == 0 {
            0
        } else {
            sqlx::query(&format!("DELETE FROM {real} AS r WHERE {differ}"))
                .execute(&mut **tx)
                .await?
                .rows_affected()
        };
        // What is left of the real table is in the shadow. When nothing was deleted, every real
        // row has its own shadow row (keys are unique), so equal counts mean equal tables: the
        // usual case of a rebuild that finds the tables right, and two counts cost less than the
        // anti-join.
        if deleted == 0 {
            let (real_rows, shadow_rows): (i64, i64) = sqlx::query_as(&format!(
                "SELECT (SELECT count(*) FROM {real}), (SELECT count(*) FROM {shadow})"
            ))
            .fetch_one(&mut **tx)
            .await?;
            if real_rows == shadow_rows {
                return Ok(());
            }
        }
        sqlx::query(&format!(
            "INSERT INTO {real} SELECT s.* FROM {shadow} AS s WHERE NOT EXISTS (SELECT 1 FROM {real} AS r WHERE {same_key})"
        ))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// Takes the checkpoint row locks of `projectors` in one statement, as the live runner does,
/// so the two never wait on each other in opposite orders.
async fn lock_checkpoints(
    tx: &mut Transaction<'_, Any>,
    projectors: &[&dyn Projector],
) -> Result<(), ProjectionError> {
    let mut lock = Sql::new("UPDATE projector_checkpoints SET position = position WHERE name IN (");
    for (i, projector) in projectors.iter().enumerate() {
        if i > 0 {
            lock.push(", ");
        }
        lock.bind(projector.name());
    }
    lock.push(") RETURNING name");
    let locked: Vec<String> = lock
        .query()
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|row| row.try_get("name"))
        .collect::<Result<_, _>>()?;
    match projectors.iter().find(|p| !locked.iter().any(|name| name == p.name())) {
        Some(missing) => Err(ProjectionError::UnknownProjector(missing.name().to_owned())),
        None => Ok(()),
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
    fn apply<'a, 'c>(
        &'a self,
        tx: &'a mut Transaction<'c, Any>,
        head: i64,
        appended: &'a [LogEvent],
        claimed: bool,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            let Some(last) = appended.last() else { return Ok(false) };
            // The checkpoints move first; the projectors' writes commit with them or not at all.
            if !claimed && !self.runner.try_advance_all_from(tx, head, last.position).await? {
                return Ok(false);
            }
            for projector in &self.runner.projectors {
                projector.apply(tx, appended).await?;
            }
            Ok(true)
        })
    }

    /// The checkpoints' move of `try_advance_all_from` (migration 2051), and when every
    /// projector can say so, all their statements for the batch.
    fn claim_sql(&self, head: i64, appended: &[LogEvent]) -> Option<HookSql> {
        let end = appended.last()?.position;
        let names = text_array(self.runner.projectors.iter().map(|projector| Some(projector.name())));
        let claim =
            format!("SELECT pwnbook_advance_checkpoints({}::text[], {head}, {end})", string_literal(&names));
        let statements = self
            .runner
            .projectors
            .iter()
            .map(|projector| projector.inline_statements(appended))
            .collect::<Option<Vec<_>>>();
        let work = statements.map(|statements| {
            let mut work = HookWork { sql: String::new(), prepare: Vec::new() };
            for (name, prepare, execute) in statements.iter().flatten().map(Sql::prepared) {
                if !work.sql.is_empty() {
                    work.sql.push_str("; ");
                }
                work.sql.push_str(&execute);
                if !work.prepare.iter().any(|(known, _)| *known == name) {
                    work.prepare.push((name, prepare));
                }
            }
            work
        });
        Some(HookSql { claim, work })
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
