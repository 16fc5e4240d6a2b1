//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use pwnbook_commands::CommandService;
use pwnbook_events::Store;
use pwnbook_projections::ProjectionRunner;
use tokio::sync::watch;

use crate::auth::UsageTracker;
use crate::key_cache::KeyCache;
use crate::rate_limit::RateLimits;
use crate::routes::scope::EngagementOwners;
use crate::visibility::Visibility;

/// Cloned for every handler and middleware of every request: one reference count, rather than
/// one per shared part (the store's pools, the command service, the caches…), which the cores
/// would otherwise bounce between them on each clone and drop.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub store: Store,
    pub commands: CommandService,
    pub visibility: Visibility,
    pub rate_limits: Arc<RateLimits>,
    pub usage: UsageTracker,
    pub keys: KeyCache,
    pub engagements: EngagementOwners,
    pub projections: ProjectionRunner,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Turns `true` when the server shuts down: readiness fails (so load balancers stop sending
    /// requests) and long-lived responses (SSE) end.
    pub shutdown: watch::Receiver<bool>,
    /// Interval of SSE heartbeat comments.
    pub sse_heartbeat: Duration,
    /// Whether webhook URLs may point to loopback, private and link-local addresses.
    pub webhook_allow_private: bool,
}
