//! The engagement a child resource lives in: a deleted engagement (or another organization's)
//! hides its children (404), an archived one makes them read-only (409).

use pwnbook_events::{Id, IdKind};
use pwnbook_projections::engagements::{self, EngagementRow};

use crate::auth::Caller;
use crate::bounded_map::BoundedMap;
use crate::error::ApiError;
use crate::state::AppState;

pub async fn readable(
    state: &AppState,
    caller: &Caller,
    engagement_id: &str,
) -> Result<EngagementRow, ApiError> {
    let id = Id::parse(IdKind::Engagement, engagement_id).ok_or(ApiError::NotFound)?;
    engagements::get(state.store.pool(), caller.organization_id(), id.as_str())
        .await?
        .ok_or(ApiError::NotFound)
}

pub async fn writable(
    state: &AppState,
    caller: &Caller,
    engagement_id: &str,
) -> Result<EngagementRow, ApiError> {
    let engagement = readable(state, caller, engagement_id).await?;
    if engagement.status == "archived" {
        return Err(ApiError::Conflict("the engagement is archived and read-only".to_owned()));
    }
    Ok(engagement)
}

/// The organization of each engagement this process has seen, which never changes once the
/// engagement exists; whether it is still writable changes, and is checked by the commit itself.
pub struct EngagementOwners {
    owners: BoundedMap<String>,
}

/// Engagements remembered at most (ids are 30 bytes, organizations too); beyond, it starts over.
const OWNERS_REMEMBERED: usize = 100_000;

impl Default for EngagementOwners {
    fn default() -> Self {
        Self { owners: BoundedMap::new(OWNERS_REMEMBERED) }
    }
}

/// The engagement of a write. An engagement of the caller's organization seen before is not read
/// again: the commit's trigger refuses a child event of an archived or deleted engagement
/// atomically, and the command service then answers 409 or 404 as `writable` would have.
pub struct WriteScope {
    pub id: String,
    /// Whether the engagement was read (and found writable) for this request.
    read: bool,
}

pub async fn write_scope(
    state: &AppState,
    caller: &Caller,
    engagement_id: &str,
) -> Result<WriteScope, ApiError> {
    if state.engagements.owners.get(engagement_id).as_deref() == Some(caller.organization_id()) {
        return Ok(WriteScope { id: engagement_id.to_owned(), read: false });
    }
    let engagement = writable(state, caller, engagement_id).await?;
    state.engagements.owners.insert(&engagement.id, engagement.organization_id.clone());
    Ok(WriteScope { id: engagement.id, read: true })
}

impl WriteScope {
    /// `prepared`, checked before the commit; a failure there answers what the engagement's own
    /// state would have answered first (404 or 409), as when it is read before anything else.
    pub async fn before_commit<T>(
        &self,
        state: &AppState,
        caller: &Caller,
        prepared: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        if prepared.is_err() && !self.read {
            writable(state, caller, &self.id).await?;
        }
        prepared
    }
}
