//! What one GraphQL request did, for `Idempotency-Key`: whether a command committed, whether
//! something failed, and the secrets its answer shows once. Its answer is stored for replay
//! when it saved something or failed nowhere (a read, a write that changed nothing); one that
//! failed and saved nothing is not (its retry runs again, which cannot perform anything twice),
//! and the stored answer never holds a secret.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_graphql::Response;
use pwnbook_commands::CommitProof;
use serde_json::Value;

use crate::idempotency::ReplayBody;

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

    /// The answer to store: each value that is a secret it showed becomes null, whatever the
    /// field's name or alias.
    pub fn replay_body(&self, response: &Response) -> ReplayBody {
        fn scrub(value: &mut Value, revealed: &[String]) {
            match value {
                Value::String(text) if revealed.contains(text) => *value = Value::Null,
                Value::Array(items) => items.iter_mut().for_each(|item| scrub(item, revealed)),
                Value::Object(fields) => fields.values_mut().for_each(|field| scrub(field, revealed)),
                _ => {}
            }
        }
        // A response always serializes; were it not to, nothing (rather than a secret) is stored.
        let mut body = serde_json::to_value(response).unwrap_or_default();
        scrub(&mut body, &self.revealed.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        ReplayBody(body.to_string())
    }
}
