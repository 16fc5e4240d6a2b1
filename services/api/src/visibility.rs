//! Read-your-writes: a write answers only once its events are sequenced and projected, so the
//! same client's next read (single or list) sees it. Waits are woken by the sequencer and the
//! projection runner, and need no query when this process did the work; the short poll covers
//! work done by another process on the same database.

use std::time::Duration;

use pwnbook_commands::Committed;
use pwnbook_events::log;
use pwnbook_events::sequencer::SequencerHandle;
use pwnbook_events::Store;
use pwnbook_projections::runner::ProjectionHandle;
use pwnbook_projections::ProjectionRunner;

use crate::error::ApiError;

const WAIT_LIMIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(25);

#[derive(Clone)]
pub struct Visibility {
    store: Store,
    sequencer: SequencerHandle,
    projections: ProjectionHandle,
    runner: ProjectionRunner,
}

impl Visibility {
    pub fn new(
        store: Store,
        sequencer: SequencerHandle,
        projections: ProjectionHandle,
        runner: ProjectionRunner,
    ) -> Self {
        Self { store, sequencer, projections, runner }
    }

    /// The local sequencer's log head, for readers that follow the log.
    pub fn head(&self) -> tokio::sync::watch::Receiver<i64> {
        self.sequencer.head()
    }

    /// When the last event of `committed` was recorded, if this process sequenced it recently
    /// (see `SequencerHandle::recorded_at`).
    pub fn recorded_at(&self, committed: &Committed) -> Option<i64> {
        self.sequencer.recorded_at(committed.aggregate_type, &committed.aggregate_id, committed.version)
    }

    pub async fn wait(&self, committed: &Committed) -> Result<(), ApiError> {
        if !committed.changed {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        let mut head = self.sequencer.head();
        let (kind, id, version) =
            (committed.aggregate_type, committed.aggregate_id.as_str(), committed.version);
        // The local sequencer (usually in the write's own commit) names the position of what it
        // appended; the log is only asked on a quiet poll, when another process's sequencer may
        // have appended it instead.
        let mut ask_log = false;
        let mut kicked = false;
        let position = loop {
            if let Some(position) = self.sequencer.sequenced_at(kind, id, version) {
                break position;
            }
            if !kicked {
                self.sequencer.kick();
                kicked = true;
            }
            if ask_log {
                if let Some(position) = log::position_of(&self.store, kind, id, version).await? {
                    break position;
                }
            }
            ask_log = !wait_change(&mut head, deadline).await?;
        };
        let mut checkpoint = self.projections.checkpoint();
        loop {
            if *checkpoint.borrow_and_update() >= position {
                return Ok(());
            }
            // On a quiet poll, another process may have projected it.
            if !wait_change(&mut checkpoint, deadline).await?
                && self.runner.lowest_checkpoint().await? >= position
            {
                return Ok(());
            }
        }
    }
}

/// Waits for `receiver` to change (`true`) or one poll interval (`false`).
async fn wait_change(
    receiver: &mut tokio::sync::watch::Receiver<i64>,
    deadline: tokio::time::Instant,
) -> Result<bool, ApiError> {
    if tokio::time::Instant::now() >= deadline {
        return Err(ApiError::Unavailable(
            "the change is saved but not yet visible to reads; read it again shortly".to_owned(),
        ));
    }
    tokio::select! {
        changed = receiver.changed() => Ok(changed.is_ok()),
        () = tokio::time::sleep(POLL) => Ok(false),
    }
}
