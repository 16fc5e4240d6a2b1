//! The engagement a child resource lives in: a deleted engagement (or another organization's)
//! hides its children (404), an archived one makes them read-only (409).

use pwnbook_events::{Id, IdKind};
use pwnbook_projections::engagements::{self, EngagementRow};

use crate::auth::Caller;
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
