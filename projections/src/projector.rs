//! The projector contract: a read model is a function of the event log alone.

use async_trait::async_trait;
use pwnbook_events::LogEvent;
use sqlx::{Any, Transaction};

use crate::bulk::BulkLoad;
use crate::sql::Sql;
use crate::ProjectionError;

#[async_trait]
pub trait Projector: Send + Sync {
    /// Stable name, the key of the projector's checkpoint.
    fn name(&self) -> &'static str;

    /// Bumped when the tables' shape or meaning changes; a stored checkpoint of another
    /// version makes the runner rebuild this projector from the start.
    fn schema_version(&self) -> i64;

    /// The read tables this projector owns, children before parents. A rebuild replays into
    /// shadow copies of them and compares rows by primary key, so each needs one.
    fn tables(&self) -> &'static [&'static str];

    /// Applies a batch of events in log order inside the runner's transaction, which also
    /// advances the checkpoint: a batch is applied exactly once or not at all.
    async fn apply(&self, tx: &mut Transaction<'_, Any>, events: &[LogEvent]) -> Result<(), ProjectionError>;

    /// `apply` for a batch of a PostgreSQL rebuild's replay into its shadow tables, which may load
    /// rows in bulk over `bulk` first (they commit on their own: the shadows need no atomicity,
    /// a failed rebuild drops them), and leave derived rows to `finish_bulk`. A projector whose
    /// batches are small keeps this default.
    async fn apply_bulk(
        &self,
        tx: &mut Transaction<'_, Any>,
        _bulk: &mut BulkLoad,
        events: &[LogEvent],
    ) -> Result<(), ProjectionError> {
        self.apply(tx, events).await
    }

    /// Completes the shadow tables after the last `apply_bulk` batch, before the replay of the
    /// events that came meanwhile: what `apply_bulk` left to be derived once at the end.
    async fn finish_bulk(&self, _tx: &mut Transaction<'_, Any>) -> Result<(), ProjectionError> {
        Ok(())
    }

    /// All that `apply` would do for a live batch on PostgreSQL, as statements that need no
    /// result of their own (the group commit then sends them with the batch and its COMMIT in
    /// one round trip), or `None` when the projector cannot tell without running `apply`.
    fn inline_statements(&self, _events: &[LogEvent]) -> Option<Vec<Sql>> {
        None
    }
}
