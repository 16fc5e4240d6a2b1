//! Errors of the write side.

use serde::Serialize;

/// One invalid field of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self { field: field.to_owned(), message: message.into() }
    }
}

/// A command the domain refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("validation failed: {}", describe(.0))]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
}

fn describe(errors: &[FieldError]) -> String {
    errors.iter().map(|e| format!("{} {}", e.field, e.message)).collect::<Vec<_>>().join("; ")
}

impl DomainError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}

/// The outcome of running a command through the command service.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// `If-Match` named a version that is no longer current.
    #[error("version {expected} is not current (current version is {current})")]
    PreconditionFailed { expected: i64, current: i64 },
    /// The acting API key was revoked before the commit (the commit's guard refused it).
    #[error("the API key has been revoked")]
    KeyRevoked,
    /// Too many concurrent writers to one resource; the caller may retry.
    #[error("the resource is being changed concurrently; retry")]
    Contention,
    /// The store could not take the write now (unreachable, or it kept rolling the batch back
    /// to break deadlocks); nothing says the write failed for good, so the caller may retry.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Store(String),
}
