//! What every handler shares.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use pwnbook_commands::CommandService;
use pwnbook_events::Store;
use pwnbook_projections::ProjectionRunner;

use crate::auth::UsageTracker;
use crate::rate_limit::RateLimits;
use crate::visibility::Visibility;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub commands: CommandService,
    pub visibility: Visibility,
    pub rate_limits: Arc<RateLimits>,
    pub usage: Arc<UsageTracker>,
    pub projections: ProjectionRunner,
    /// Set when shutdown begins: readiness fails so load balancers stop sending requests.
    pub shutting_down: Arc<AtomicBool>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
}
