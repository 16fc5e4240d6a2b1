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

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub commands: CommandService,
    pub visibility: Visibility,
    pub rate_limits: Arc<RateLimits>,
    pub usage: Arc<UsageTracker>,
    pub keys: Arc<KeyCache>,
    pub engagements: Arc<EngagementOwners>,
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
