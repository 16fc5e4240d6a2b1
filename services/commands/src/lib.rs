//! Pwnbook's write side: aggregates (one per resource), their commands and invariants, and the
//! command service that loads, handles and commits through the cqrs-es event store.

pub mod api_key;
pub mod engagement;
mod error;
pub mod organization;
pub mod permissions;
mod service;
mod validate;
pub mod webhook;

pub use error::{CommandError, DomainError, FieldError};
pub use permissions::Permission;
pub use service::{Claim, CommandContext, CommandService, Committed, Execution};
