//! What one GraphQL request did, for `Idempotency-Key`: whether a command committed, whether
//! something failed, and the secrets its answer shows once. Its answer is stored for replay
//! when it saved something or failed nowhere (a read, a write that changed nothing); one that
//! failed and saved nothing is not (its retry runs again, which cannot perform anything twice),
//! and the stored answer never holds a secret.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_graphql::Response;
use pwnbook_commands::CommitProof;

use crate::idempotency::Revealed;

#[derive(Debug, Default)]
pub struct Effects {
    /// Set by the command service when a command run with the request's caller commits.
    pub committed: CommitProof,
    /// A failure the answer reports outside its errors (a bulk update's items).
    failed: AtomicBool,
    revealed: Mutex<Vec<String>>,
}

impl Effects {
    /// Notes a failure the answer reports as data, not as an error.
    pub fn failed(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// Notes a secret the answer shows (a new key's, a new webhook's).
    pub fn reveal(&self, secret: &str) {
        self.revealed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(secret.to_owned());
    }

    /// Nothing committed and something failed: a refused write or one the store could not
    /// take, an unexpected error, or a request that did not run (a parse or validation error, a
    /// limit, the rate limit).
    pub fn saved_nothing(&self, response: &Response) -> bool {
        !self.committed.is_set() && (!response.errors.is_empty() || self.failed.load(Ordering::Acquire))
    }

    /// The secrets the answer showed, to keep out of what is stored for replay.
    pub fn revealed(&self) -> Revealed {
        Revealed(self.revealed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }
}
