//! Per-key rate limits (per client address when unauthenticated), GCRA via `governor`, with
//! the `X-RateLimit-*` headers on every response.

use std::num::NonZeroU32;

use axum::http::{HeaderMap, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

type Limiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

pub struct RateLimits {
    limiter: Limiter,
    per_minute: u32,
}

/// One request's standing against its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub limit: u32,
    pub remaining: u32,
    /// Unix seconds when the allowance is whole again.
    pub reset: u64,
    /// Set when the request is refused.
    pub retry_after: Option<u64>,
}

impl RateLimits {
    pub fn new(per_minute: NonZeroU32) -> Self {
        let limiter =
            RateLimiter::keyed(Quota::per_minute(per_minute)).with_middleware::<StateInformationMiddleware>();
        Self { limiter, per_minute: per_minute.get() }
    }

    pub fn check(&self, key: &str) -> Decision {
        let now_unix = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        // Each request's share of the minute, in milliseconds; the allowance refills one share at a time.
        let share_ms = 60_000 / u64::from(self.per_minute);
        match self.limiter.check_key(&key.to_owned()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = u64::from(self.per_minute.saturating_sub(remaining));
                Decision {
                    limit: self.per_minute,
                    remaining,
                    reset: now_unix + (used * share_ms).div_ceil(1000),
                    retry_after: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                let retry_after = wait.as_millis().div_ceil(1000).max(1) as u64;
                Decision {
                    limit: self.per_minute,
                    remaining: 0,
                    reset: now_unix + (u64::from(self.per_minute) * share_ms).div_ceil(1000),
                    retry_after: Some(retry_after),
                }
            }
        }
    }

    /// Forgets keys whose allowance is whole again (keeps memory bounded).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
    }
}

impl Decision {
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(self.reset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_per_key() {
        let limits = RateLimits::new(NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN));
        let first = limits.check("a");
        assert_eq!((first.limit, first.remaining, first.retry_after), (3, 2, None));
        limits.check("a");
        assert_eq!(limits.check("a").remaining, 0);
        let refused = limits.check("a");
        assert!(refused.retry_after.is_some_and(|s| (1..=20).contains(&s)));
        assert_eq!(limits.check("b").remaining, 2);
    }
}
