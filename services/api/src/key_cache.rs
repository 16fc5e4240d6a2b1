//! Authenticated API keys kept in memory for a moment, so that a request costs no key lookup.
//!
//! How long a change to a key (a revocation) can go unseen — expiry is checked on every use:
//! - made through this process: not at all. An entry is only used if it was read after this
//!   process had projected the newest API-key event its own sequencer appended, and a revocation
//!   is answered only once it is sequenced and projected.
//! - made through another process on the same database: at most [`TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pwnbook_events::Store;
use pwnbook_projections::api_keys::{self, ApiKeyRow};
use pwnbook_projections::ProjectionError;

use crate::visibility::Visibility;

/// The longest an entry is used without reading the key again.
pub const TTL: Duration = Duration::from_secs(2);
/// Entries kept at most; beyond it the stale ones go, and if none is stale, all of them.
const CAPACITY: usize = 10_000;
/// The aggregate whose events change keys.
const API_KEY: &str = "api_key";

struct Entry {
    key: ApiKeyRow,
    read_at: Instant,
    /// The local projection checkpoint when the key was read: the row reflects at least that.
    projected: i64,
}

/// Keys by secret hash (never by secret); only keys that exist are kept.
#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, Entry>>,
}

impl KeyCache {
    /// The key with this secret hash, from memory when the copy there is still current.
    pub async fn find(
        &self,
        store: &Store,
        visibility: &Visibility,
        secret_hash: &str,
    ) -> Result<Option<ApiKeyRow>, ProjectionError> {
        let changed = visibility.newest_of(API_KEY);
        if let Some(key) = self.current(secret_hash, changed) {
            return Ok(Some(key));
        }
        // Taken before the read, so the entry claims no more than the row can reflect.
        let projected = visibility.projected();
        let key = api_keys::find_by_secret_hash(store.pool(), secret_hash).await?;
        if let (Some(key), Ok(mut entries)) = (&key, self.entries.lock()) {
            if entries.len() >= CAPACITY {
                entries.retain(|_, entry| entry.read_at.elapsed() < TTL);
                if entries.len() >= CAPACITY {
                    entries.clear();
                }
            }
            entries.insert(
                secret_hash.to_owned(),
                Entry { key: key.clone(), read_at: Instant::now(), projected },
            );
        }
        Ok(key)
    }

    fn current(&self, secret_hash: &str, changed: i64) -> Option<ApiKeyRow> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(secret_hash)?;
        (entry.projected >= changed && entry.read_at.elapsed() < TTL).then(|| entry.key.clone())
    }
}
