//! Opening the store: one SQLite file or one PostgreSQL database, chosen by the URL scheme.
//!
//! Two pools share the database: the concrete one that the cqrs-es repositories need, and an
//! `Any` pool through which all of Pwnbook's own tables are read and written with one SQL text.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::persist::{PersistenceError, SerializedEvent};

use sqlx::any::AnyPoolOptions;
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AnyPool, Connection as _, Executor};

use crate::group_commit::GroupCommit;
use crate::StoreError;

const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

// Pools do not ping a connection before lending it (sqlx's default): the ping is one more round
// trip per statement, half the database work of a short query. A connection broken since its
// last use (the database restarted) fails that one statement as the database out of reach
// (`crate::unreachable`) and is dropped from the pool; the next one gets a fresh connection.
// Only a PostgreSQL connection idle for `PING_AFTER_IDLE` is pinged first: the sessions a server
// or a firewall ends are the idle ones, and after that long a round trip costs nothing that shows.
const PING_AFTER_IDLE: Duration = Duration::from_secs(30);

/// `options`, pinging a connection idle for `PING_AFTER_IDLE` before lending it (a failed ping
/// drops it and the pool lends another).
fn ping_if_idle<DB: sqlx::Database>(options: PoolOptions<DB>) -> PoolOptions<DB> {
    options.before_acquire(|conn, meta| {
        Box::pin(async move { Ok(meta.idle_for < PING_AFTER_IDLE || conn.ping().await.is_ok()) })
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The pool the cqrs-es repositories write through.
#[derive(Debug, Clone)]
pub enum EsPool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    pool: AnyPool,
    es: EsPool,
    appends: Arc<GroupCommit>,
    write_turn: Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Connects to `url` (`sqlite://<file>`, created if missing, or `postgres://…`) and runs the
    /// event-store migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let store = if url.starts_with("sqlite:") {
            Self::open_sqlite(url).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::open_postgres(url).await?
        } else {
            return Err(StoreError::UnsupportedUrl(format!("{:?}", redact(url))));
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn open_sqlite(url: &str) -> Result<Self, StoreError> {
        if sqlite_path(url).is_empty() {
            return Err(StoreError::UnsupportedUrl(format!("{url:?}: a SQLite URL names a file")));
        }
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(StoreError::UnsupportedUrl(
                "in-memory SQLite cannot be shared between the store's pools; use a file".to_owned(),
            ));
        }
        // An audit store must not lose acknowledged writes: WAL with synchronous=FULL.
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true);
        let es = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        let options = AnyPoolOptions::new().test_before_acquire(false).after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = FULL").await?;
                conn.execute("PRAGMA busy_timeout = 30000").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                Ok(())
            })
        });
        let pool = options.clone().max_connections(8).connect(url).await?;
        Self::with_pools(Backend::Sqlite, pool, options, EsPool::Sqlite(es))
    }

    async fn open_postgres(url: &str) -> Result<Self, StoreError> {
        let es = ping_if_idle(PgPoolOptions::new().max_connections(8).test_before_acquire(false))
            .connect(url)
            .await?;
        let options = ping_if_idle(AnyPoolOptions::new().test_before_acquire(false));
        let pool = options.clone().max_connections(12).connect(url).await?;
        Self::with_pools(Backend::Postgres, pool, options, EsPool::Postgres(es))
    }

    /// The store on its pools, with a group commit writer whose connection is made like `pool`'s.
    fn with_pools(
        backend: Backend,
        pool: AnyPool,
        options: AnyPoolOptions,
        es: EsPool,
    ) -> Result<Self, StoreError> {
        let write_turn = Arc::default();
        let connect = (*pool.connect_options()).clone();
        let appends = GroupCommit::start(backend, options, connect, Arc::clone(&write_turn))
            .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        Ok(Self { backend, pool, es, appends: Arc::new(appends), write_turn })
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // Each crate that owns tables has its own migrations in the one `_sqlx_migrations` table;
        // their version ranges differ, so each migrator ignores the others' versions.
        match &self.es {
            EsPool::Sqlite(pool) => {
                let mut migrator = sqlx::migrate!("./migrations/sqlite");
                migrator.set_ignore_missing(true);
                migrator.run(pool).await?;
            }
            EsPool::Postgres(pool) => {
                let mut migrator = sqlx::migrate!("./migrations/postgres");
                migrator.set_ignore_missing(true);
                migrator.run(pool).await?;
            }
        }
        Ok(())
    }

    /// Runs another crate's migrations (the read tables) on this store.
    pub async fn run_migrations(
        &self,
        sqlite: &sqlx::migrate::Migrator,
        postgres: &sqlx::migrate::Migrator,
    ) -> Result<(), StoreError> {
        match &self.es {
            EsPool::Sqlite(pool) => sqlite.run(pool).await?,
            EsPool::Postgres(pool) => postgres.run(pool).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool for Pwnbook's own tables.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The pool for the cqrs-es repositories.
    pub fn es_pool(&self) -> &EsPool {
        &self.es
    }

    /// Appends one command's events to `events` atomically, in a transaction it may share with
    /// concurrent appends of this process.
    pub(crate) async fn append(&self, events: &[SerializedEvent]) -> Result<(), PersistenceError> {
        self.appends.append(events).await
    }

    /// On SQLite, this process's writers take turns here before they begin: queued on an async
    /// lock they never meet in SQLite's busy handler, which sleeps for milliseconds at a time.
    /// (Other processes still meet it.) PostgreSQL needs no turn.
    pub async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match self.backend {
            Backend::Sqlite => Some(Arc::clone(&self.write_turn).lock_owned().await),
            Backend::Postgres => None,
        }
    }

    pub(crate) fn group_commit(&self) -> &GroupCommit {
        &self.appends
    }

    pub async fn close(&self) {
        self.appends.close();
        self.pool.close().await;
        match &self.es {
            EsPool::Sqlite(pool) => pool.close().await,
            EsPool::Postgres(pool) => pool.close().await,
        }
    }
}

/// The URL without its password, for error messages.
/// The file a `sqlite:` URL names (empty when it names none).
pub fn sqlite_path(url: &str) -> &str {
    let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
    path.split('?').next().unwrap_or_default()
}

/// `url` without what may be a password (everything before an `@`), for messages.
pub fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://…@{host}"),
        (None, Some((_, host))) => format!("…@{host}"),
        (_, None) => url.to_owned(),
    }
}
