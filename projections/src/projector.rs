//! The projector contract: a read model is a function of the event log alone.

use async_trait::async_trait;
use pwnbook_events::LogEvent;
use sqlx::{Any, Transaction};

use crate::ProjectionError;

#[async_trait]
pub trait Projector: Send + Sync {
    /// Stable name, the key of the projector's checkpoint.
    fn name(&self) -> &'static str;

    /// Bumped when the tables' shape or meaning changes; a stored checkpoint of another
    /// version makes the runner rebuild this projector from the start.
    fn schema_version(&self) -> i64;

    /// The read tables this projector owns, children before parents. A rebuild replays into
    /// temporary copies of them and compares rows by primary key, so each needs one.
    fn tables(&self) -> &'static [&'static str];

    /// Applies a batch of events in log order inside the runner's transaction, which also
    /// advances the checkpoint: a batch is applied exactly once or not at all.
    async fn apply(&self, tx: &mut Transaction<'_, Any>, events: &[LogEvent]) -> Result<(), ProjectionError>;
}
