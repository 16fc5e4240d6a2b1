//! Writes authenticated from memory. A key is looked up in the database on every request, since
//! another server process must refuse a revoked key at once; for the routes below that lookup is
//! left to the commit instead: the events' write guard refuses an event of a revoked key
//! atomically with the write (events migration 1008), and the command service then answers 401.
//! Any answer of such a request that did not come from a committed command (an error, a no-op, a
//! replay) is given only once the database vouches for the key again (`auth::authenticate`), so
//! a revoked key learns nothing and changes nothing.

use axum::http::Method;

use crate::auth::Principal;
use crate::bounded_map::BoundedMap;

/// Routes whose only effect is commands committed under the caller's key. Besides, a revoked key
/// sent here may still claim an `Idempotency-Key` (a row only that key could replay, and which
/// then answers 401 like everything else); its use is recorded only once the key is vouched for.
const CHECKED_AT_COMMIT: [(Method, &str); 10] = [
    (Method::POST, "/api/v1/engagements/{id}/findings"),
    (Method::PATCH, "/api/v1/findings/{id}"),
    (Method::POST, "/api/v1/findings/{id}/transition"),
    (Method::POST, "/api/v1/engagements/{id}/targets"),
    (Method::PATCH, "/api/v1/targets/{id}"),
    (Method::POST, "/api/v1/engagements/{id}/tasks"),
    (Method::PATCH, "/api/v1/tasks/{id}"),
    (Method::POST, "/api/v1/tasks/{id}/close"),
    (Method::POST, "/api/v1/engagements/{id}/wiki"),
    (Method::PATCH, "/api/v1/wiki/{id}"),
];

/// Whether a request to `path` may authenticate its key from memory.
pub fn checked_at_commit(method: &Method, path: &str) -> bool {
    CHECKED_AT_COMMIT.iter().any(|(m, pattern)| m == method && matches(pattern, path))
}

fn matches(pattern: &str, path: &str) -> bool {
    let (mut pattern, mut path) = (pattern.split('/'), path.split('/'));
    loop {
        match (pattern.next(), path.next()) {
            (None, None) => return true,
            (Some(p), Some(s)) if p == s || (p.starts_with('{') && !s.is_empty()) => {}
            _ => return false,
        }
    }
}

/// Beyond this many keys the memory starts over.
const CAPACITY: usize = 10_000;

#[derive(Clone)]
struct Remembered {
    principal: Principal,
    expires_at: Option<i64>,
}

/// Principals the database vouched for, by secret hash.
pub struct KeyCache {
    entries: BoundedMap<Remembered>,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self { entries: BoundedMap::new(CAPACITY) }
    }
}

impl KeyCache {
    /// The principal of `hash` unless it is unknown here or expired at `now`.
    pub fn get(&self, hash: &str, now: i64) -> Option<Principal> {
        let remembered = self.entries.get(hash)?;
        match remembered.expires_at {
            Some(at) if at <= now => None,
            _ => Some(remembered.principal),
        }
    }

    pub fn remember(&self, hash: &str, principal: &Principal, expires_at: Option<i64>) {
        self.entries.insert(hash, Remembered { principal: principal.clone(), expires_at });
    }

    pub fn forget(&self, hash: &str) {
        self.entries.remove(hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_writes_are_checked_at_commit() {
        assert!(checked_at_commit(&Method::POST, "/api/v1/engagements/eng_1/findings"));
        assert!(checked_at_commit(&Method::PATCH, "/api/v1/findings/fnd_1"));
        assert!(checked_at_commit(&Method::POST, "/api/v1/findings/fnd_1/transition"));
        assert!(checked_at_commit(&Method::POST, "/api/v1/tasks/tsk_1/close"));
        assert!(checked_at_commit(&Method::POST, "/api/v1/engagements/eng_1/targets"));
        assert!(checked_at_commit(&Method::PATCH, "/api/v1/targets/tgt_1"));
        assert!(checked_at_commit(&Method::POST, "/api/v1/engagements/eng_1/wiki"));
        assert!(checked_at_commit(&Method::PATCH, "/api/v1/wiki/wik_1"));
        assert!(!checked_at_commit(&Method::DELETE, "/api/v1/wiki/wik_1"));
        assert!(!checked_at_commit(&Method::GET, "/api/v1/engagements/eng_1/findings"));
        assert!(!checked_at_commit(&Method::PATCH, "/api/v1/engagements/eng_1/findings/bulk"));
        assert!(!checked_at_commit(&Method::POST, "/api/v1/engagements//findings"));
        assert!(!checked_at_commit(&Method::DELETE, "/api/v1/findings/fnd_1"));
        assert!(!checked_at_commit(&Method::POST, "/api/v1/findings/fnd_1/transition/x"));
        assert!(!checked_at_commit(&Method::POST, "/api/v1/api-keys"));
        assert!(!checked_at_commit(&Method::POST, "/api/v1/reports/rpt_1/generate"));
    }

    #[test]
    fn an_expired_key_is_not_remembered() {
        let cache = KeyCache::default();
        let principal = Principal {
            key_id: "key_1".to_owned(),
            key_name: "k".to_owned(),
            organization_id: "org_1".to_owned(),
            permissions: Vec::new(),
        };
        cache.remember("h", &principal, Some(100));
        assert!(cache.get("h", 99).is_some());
        assert!(cache.get("h", 100).is_none());
        cache.forget("h");
        assert!(cache.get("h", 0).is_none());
    }
}
