//! Pwnbook's read side: the projector contract and runner, one module per read table with its
//! typed list query, and rebuilds. A read model is a function of the event log alone.

pub mod api_keys;
pub mod batch;
pub mod bulk;
mod by_id;
pub mod engagements;
pub mod feed;
pub mod findings;
pub mod list;
pub mod organizations;
mod projector;
pub mod reports;
pub mod runner;
pub mod sql;
pub mod targets;
pub mod tasks;
pub mod webhooks;
pub mod wiki;

use std::sync::Arc;

use pwnbook_events::{Store, StoreError};

pub use projector::Projector;
pub use runner::ProjectionRunner;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event payload does not match its type: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no checkpoint registered for projector {0}")]
    UnknownProjector(String),
    #[error("read table {0} has no primary key, which a rebuild needs to compare rows")]
    NoPrimaryKey(String),
    #[error("the rebuild's log reader stopped: {0}")]
    Reader(String),
}

impl ProjectionError {
    /// Whether the database could not be reached (`pwnbook_events::unreachable`).
    pub fn unreachable(&self) -> bool {
        match self {
            Self::Database(error) => pwnbook_events::unreachable(error),
            Self::Store(error) => error.unreachable(),
            _ => false,
        }
    }
}

/// Creates or updates the read tables of this crate on `store`.
pub async fn migrate(store: &Store) -> Result<(), StoreError> {
    let mut sqlite = sqlx::migrate!("./migrations/sqlite");
    sqlite.set_ignore_missing(true);
    let mut postgres = sqlx::migrate!("./migrations/postgres");
    postgres.set_ignore_missing(true);
    store.run_migrations(&sqlite, &postgres).await
}

/// Every projector of Pwnbook, in the order they run.
pub fn all_projectors() -> Vec<Arc<dyn Projector>> {
    vec![
        Arc::new(organizations::OrganizationsProjector),
        Arc::new(api_keys::ApiKeysProjector),
        Arc::new(engagements::EngagementsProjector),
        Arc::new(targets::TargetsProjector),
        Arc::new(findings::FindingsProjector),
        Arc::new(tasks::TasksProjector),
        Arc::new(wiki::WikiProjector),
        Arc::new(reports::ReportsProjector),
        Arc::new(webhooks::WebhooksProjector),
    ]
}
