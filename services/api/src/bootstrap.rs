//! Opening the store with every migration, bringing the read side up to date, and the first
//! start: organization "Default" with an admin key.

use std::str::FromStr;
use std::time::Duration;

use pwnbook_commands::api_key::{ApiKey, ApiKeyCommand, NewApiKey};
use pwnbook_commands::organization::{Organization, OrganizationCommand};
use pwnbook_commands::{CommandContext, CommandService, Execution};
use pwnbook_events::sequencer::Sequencer;
use pwnbook_events::{Actor, Id, IdKind, Store, StoreError};
use pwnbook_projections::{organizations, ProjectionRunner};

use crate::secrets::Secret;
use crate::time::now_millis;
use crate::StartError;

const SETTLE: Duration = Duration::from_secs(60);
/// The advisory lock that serializes the start-ups of processes on one PostgreSQL database.
const START_LOCK: i64 = 0x7077_6e62_6f6f_6b03;

/// Held while a process migrates the store and makes its first organization: servers started
/// together on a new database would otherwise each create "Default" and the same bootstrap key
/// (a unique key hash in the read model that no later start gets past), or race through the
/// migrations of a new SQLite file. On PostgreSQL an advisory lock on a connection of its own;
/// on SQLite an exclusive lock on a file beside the database. Released when dropped.
pub enum StartLock {
    Postgres(sqlx::PgConnection),
    Sqlite(std::fs::File),
}

impl StartLock {
    pub async fn take(url: &str) -> Result<Self, StartError> {
        if url.starts_with("sqlite:") {
            let path = pwnbook_events::sqlite_path(url);
            if path.is_empty() {
                return Err(StartError::Usage("a SQLite URL must name a file: sqlite://<file>".to_owned()));
            }
            let lock = format!("{path}-start.lock");
            let file =
                std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock).map_err(
                    |error| {
                        StartError::Usage(format!("cannot create {lock} beside the database {path}: {error}"))
                    },
                )?;
            // `lock` blocks until the other process's start is through.
            let file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                .await
                .map_err(std::io::Error::other)??;
            return Ok(Self::Sqlite(file));
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StartError::Store(StoreError::UnsupportedUrl(format!(
                "{:?}",
                pwnbook_events::redact(url)
            ))));
        }
        let options = sqlx::postgres::PgConnectOptions::from_str(url)
            .map_err(|error| StartError::Usage(format!("the database URL is not valid: {error}")))?;
        // Named without the URL, which may hold a password.
        let place = format!("{}:{}", options.get_host(), options.get_port());
        let mut conn =
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&options).await.map_err(|error| {
                StartError::Usage(format!("cannot connect to PostgreSQL at {place}: {error}"))
            })?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(START_LOCK)
            .execute(&mut conn)
            .await
            .map_err(|error| StartError::Store(error.into()))?;
        Ok(Self::Postgres(conn))
    }
}

/// Opens `url` and applies the migrations of every crate.
pub async fn open_store(url: &str) -> Result<Store, StartError> {
    let store = Store::open(url).await?;
    pwnbook_projections::migrate(&store).await?;
    let mut sqlite = sqlx::migrate!("./migrations/sqlite");
    sqlite.set_ignore_missing(true);
    let mut postgres = sqlx::migrate!("./migrations/postgres");
    postgres.set_ignore_missing(true);
    store.run_migrations(&sqlite, &postgres).await?;
    Ok(store)
}

/// Sequences everything committed so far and projects it (start-up and the CLI).
pub async fn sync_read_side(store: &Store, runner: &ProjectionRunner) -> Result<(), StartError> {
    Sequencer::new(store.clone()).settle(SETTLE).await?;
    runner.catch_up().await?;
    Ok(())
}

fn system_context(organization_id: &str) -> CommandContext {
    CommandContext {
        organization_id: organization_id.to_owned(),
        actor: Actor::system(),
        request_id: None,
        idempotency_key: None,
        commit_proof: None,
        refused: Vec::new(),
    }
}

pub async fn create_organization(commands: &CommandService, name: &str) -> Result<Id, StartError> {
    let id = Id::generate(IdKind::Organization);
    commands
        .execute::<Organization>(
            id.as_str(),
            OrganizationCommand::Create { name: name.to_owned() },
            &system_context(id.as_str()),
            Execution::default(),
        )
        .await?;
    Ok(id)
}

/// Creates a key in `organization_id` as the system (no escalation check).
pub async fn create_key(
    commands: &CommandService,
    organization_id: &str,
    name: &str,
    permissions: Vec<String>,
    secret: &Secret,
) -> Result<Id, StartError> {
    let id = Id::generate(IdKind::ApiKey);
    let key = NewApiKey {
        name: name.to_owned(),
        environment: secret.environment().to_owned(),
        permissions,
        expires_at: None,
        prefix: secret.prefix().to_owned(),
        last_four: secret.last_four(),
        secret_hash: secret.hash(),
    };
    let command = ApiKeyCommand::Create {
        organization_id: organization_id.to_owned(),
        key,
        granted_by: None,
        now_millis: now_millis(),
    };
    commands
        .execute::<ApiKey>(id.as_str(), command, &system_context(organization_id), Execution::default())
        .await?;
    Ok(id)
}

/// On a store without organizations: creates "Default" and an admin key, and prints the key
/// (when it was generated) to standard error, once.
pub async fn first_start(
    store: &Store,
    runner: &ProjectionRunner,
    bootstrap_key: Option<&str>,
) -> Result<(), StartError> {
    if organizations::count(store.pool()).await? > 0 {
        return Ok(());
    }
    let (secret, generated) = match bootstrap_key {
        Some(text) => (Secret::parse(text).ok_or(StartError::BadBootstrapKey)?, false),
        None => (Secret::generate("live"), true),
    };
    let commands = CommandService::new(store.clone());
    let organization = create_organization(&commands, "Default").await?;
    create_key(&commands, organization.as_str(), "Bootstrap admin", vec!["*".to_owned()], &secret).await?;
    sync_read_side(store, runner).await?;
    if generated {
        eprintln!("Bootstrap API key (shown once, keep it safe): {}", secret.expose());
    } else {
        eprintln!("Bootstrap API key taken from --bootstrap-api-key (PWNBOOK_BOOTSTRAP_API_KEY)");
    }
    Ok(())
}
