//! The Pwnbook event log: event types, typed IDs, the store (SQLite and PostgreSQL), the
//! sequencer and the hash chain. No HTTP.

mod aggregate_store;
pub mod api_key;
mod db;
pub mod engagement;
pub mod event_types;
pub mod finding;
mod group_commit;
pub mod hash;
pub mod ids;
pub mod log;
pub mod metadata;
pub mod organization;
pub mod patch;
pub mod report;
pub mod sequencer;
pub mod target;
pub mod task;
#[cfg(feature = "testing")]
pub mod testing;
pub mod values;
pub mod webhook;
pub mod wiki;

use serde::{Deserialize, Serialize};

pub use aggregate_store::{AggregateContext, AggregateStore};
pub use db::{redact, sqlite_path, Backend, EsPool, Store};
pub use ids::{Id, IdKind};
pub use log::LogEvent;
pub use metadata::{Actor, EventMetadata, NameClaim};

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0} (expected sqlite://<file> or postgres://…)")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("stored event is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("in-batch work failed: {0}")]
    Hook(Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Whether the database could not be reached (see `unreachable`), so a retry may succeed.
    pub fn unreachable(&self) -> bool {
        matches!(self, Self::Database(error) if unreachable(error))
    }
}

/// Whether `error` is the database out of reach rather than a statement's failure: no
/// connection to be had, I/O or TLS trouble, or PostgreSQL ending the session (`57P`, e.g. a
/// restart; `08`, connection exceptions). A pooled connection that the server ended while it
/// was idle fails its next statement this way, and the pool then drops it.
pub fn unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        other => group_commit::ended_by_server(other),
    }
}

/// The payload of events that carry no data (`{}` on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// The payload of a status change: `{"from": "active", "to": "archived"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub from: String,
    pub to: String,
}
