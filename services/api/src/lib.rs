//! The Pwnbook API server and CLI: configuration, authentication and rate limits, the REST
//! routers, and the `orgs`/`keys` commands. The only crate that knows HTTP.

mod after_commit;
pub mod auth;
pub mod bootstrap;
mod bounded_map;
pub mod cli;
pub mod config;
mod envelope;
pub mod error;
mod extract;
pub mod graphql;
mod idempotency;
mod key_cache;
mod metrics;
pub mod openapi;
mod oversize;
mod pagination;
mod rate_limit;
mod request_id;
pub mod routes;
pub mod secrets;
pub mod server;
mod state;
mod time;
mod unread_body;
mod visibility;
mod webhooks;

use pwnbook_commands::CommandError;
use pwnbook_events::StoreError;
use pwnbook_projections::ProjectionError;

/// Failures of start-up and of the CLI commands.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("the bootstrap API key (--bootstrap-api-key, PWNBOOK_BOOTSTRAP_API_KEY) must be pwbk_live_ or pwbk_test_ followed by at least 32 letters or digits")]
    BadBootstrapKey,
    #[error("{0}")]
    Usage(String),
}
