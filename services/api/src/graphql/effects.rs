//! What one GraphQL request did, for `Idempotency-Key`: whether a command committed, whether a
//! write was tried, and the secrets its answer shows once. Its answer is stored for replay when
//! it saved something or is an error-free read; one that saved nothing is not (its retry runs
//! again, which cannot perform anything twice), and the stored answer never holds a secret.

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
    write_tried: AtomicBool,
    revealed: Mutex<Vec<String>>,
}

impl Effects {
    /// A field that writes got past its permission check.
    pub fn write_tried(&self) {
        self.write_tried.store(true, Ordering::Release);
    }

    /// Notes a secret the answer shows (a new key's, a new webhook's).
    pub fn reveal(&self, secret: &str) {
        self.revealed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(secret.to_owned());
    }

    /// Nothing committed, and the answer is not an error-free read: a failed or refused write
    /// (the store could not take it, an unexpected error, a refusal), or a request that did not
    /// run (a parse or validation error, a limit, the rate limit).
    pub fn saved_nothing(&self, response: &Response) -> bool {
        !self.committed.is_set() && (!response.errors.is_empty() || self.write_tried.load(Ordering::Acquire))
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
