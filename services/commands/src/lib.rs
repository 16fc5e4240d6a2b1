//! Pwnbook's write side: aggregates (one per resource), their commands and invariants, and the
//! command service that loads, handles and commits through the cqrs-es event store.

pub mod api_key;
pub mod engagement;
mod error;
pub mod finding;
pub mod organization;
pub mod permissions;
pub mod report;
mod service;
pub mod target;
pub mod task;
mod validate;
pub mod webhook;
pub mod wiki;

pub use error::{CommandError, DomainError, FieldError};
pub use permissions::Permission;
pub use service::{Claim, CommandContext, CommandService, CommitProof, Committed, Execution};
