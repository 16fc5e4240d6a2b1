//! History and time travel for every resource type, from the event log.
//!
//! A resource type opts in by implementing `Tracked` (its id kind, its stream's aggregate type
//! and a fold of its stream into the JSON of its live GET). Then
//! `get "/api/v1/<resources>/{id}/history" => history::of::<the type>, AuditRead;` in the route
//! table gives its history, and `history::time_travel::<the type>` at the top of its GET handler
//! gives `?version=` and `?asOf=`.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pwnbook_commands::permissions::grants;
use pwnbook_commands::Permission;
use pwnbook_events::{log, Id, IdKind, LogEvent};
use pwnbook_projections::engagements;
use pwnbook_projections::feed::EventFilter;
use serde_json::{json, Value};
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{etag, QueryParams};
use crate::routes::events::{feed_page, take_limit, take_position, FeedPage};
use crate::state::AppState;

const DEFAULT_LIMIT: i64 = 100;

/// A resource type whose history and past states come from its event stream.
pub trait Tracked {
    /// The kind of id in its path.
    const KIND: IdKind;
    /// The `aggregate_type` (and `resourceType`) of its events.
    const AGGREGATE: &'static str;
    /// Whether its history also holds the events of the resources inside it (those whose
    /// `engagementId` is its id): true for engagements.
    const ENCLOSES: bool = false;

    /// The resource as its GET renders it after `events` (a prefix of its stream, in order), and
    /// its version; `None` when it does not exist at that point (not yet created, or deleted).
    /// `as_of` is the requested moment, for fields counted from other streams.
    fn fold(
        state: &AppState,
        events: &[LogEvent],
        as_of: Option<i64>,
    ) -> impl std::future::Future<Output = Result<Option<(Value, i64)>, ApiError>> + Send;

    /// Whether the resource is gone now, `events` being its whole stream: its past is then only
    /// shown to keys with `audit:read`. Gone means deleted, or inside an engagement (its events'
    /// `engagementId`) that is deleted.
    fn gone(
        state: &AppState,
        organization_id: &str,
        events: &[LogEvent],
    ) -> impl std::future::Future<Output = Result<bool, ApiError>> + Send {
        async move {
            if Self::fold(state, events, None).await?.is_none() {
                return Ok(true);
            }
            let first = events.first();
            let parent = first
                .and_then(|e| e.engagement_id.as_deref())
                .filter(|engagement| first.is_some_and(|e| e.aggregate_id != *engagement));
            match parent {
                Some(engagement) => engagement_gone(state, organization_id, engagement).await,
                None => Ok(false),
            }
        }
    }
}

/// Whether the engagement `id` is gone (deleted, or never existed), from its stream.
async fn engagement_gone(state: &AppState, organization_id: &str, id: &str) -> Result<bool, ApiError> {
    let events = log::read_stream(&state.store, organization_id, "engagement", id).await?;
    Ok(engagements::fold(&events)?.is_none())
}

/// Paging of a history (`after`, `limit`), as in `GET /events`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct HistoryQuery {
    /// Start after this position.
    after: Option<i64>,
    /// 1 to 1000 (default 100).
    limit: Option<i64>,
}

/// Time travel on a single-resource GET.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct TimeTravelQuery {
    /// The resource as it was at this version.
    version: Option<i64>,
    /// The resource as it was at this moment (RFC 3339).
    asOf: Option<String>,
}

/// `GET /<resources>/{id}/history`: the resource's events in log order (`after`, `limit`).
pub async fn of<R: Tracked>(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    params: QueryParams,
) -> Result<Json<FeedPage>, ApiError> {
    let id = Id::parse(R::KIND, &id).ok_or(ApiError::NotFound)?;
    history::<R>(&state, &caller, id.as_str(), params).await
}

/// The history of the resource `id` of the caller's organization.
pub async fn history<R: Tracked>(
    state: &AppState,
    caller: &Caller,
    id: &str,
    mut params: QueryParams,
) -> Result<Json<FeedPage>, ApiError> {
    let after = take_position(&mut params, "after")?.unwrap_or(0);
    let limit = take_limit(&mut params)?.unwrap_or(DEFAULT_LIMIT);
    params.finish()?;
    // Another organization's resource, like one that never existed, is a 404.
    if !log::stream_exists(&state.store, caller.organization_id(), R::AGGREGATE, id).await? {
        return Err(ApiError::NotFound);
    }
    let filter = if R::ENCLOSES {
        EventFilter { engagement_ids: vec![id.to_owned()], ..EventFilter::default() }
    } else {
        EventFilter {
            resource_types: vec![R::AGGREGATE.to_owned()],
            resource_ids: vec![id.to_owned()],
            ..EventFilter::default()
        }
    };
    Ok(Json(feed_page(&state.store, caller.organization_id(), &filter, after, limit).await?))
}

/// A point in a resource's past: its version, or a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    Version(i64),
    AsOf(i64),
}

/// `version` and `asOf` from `params`; `None` when neither is given.
pub fn take_moment(params: &mut QueryParams) -> Result<Option<Moment>, ApiError> {
    let version = params
        .take("version")
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| ApiError::BadRequest("version must be a positive integer".to_owned()))
        })
        .transpose()?;
    let as_of = params.take_timestamp("asOf")?;
    match (version, as_of) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ApiError::BadRequest("version and asOf cannot be combined".to_owned())),
        (Some(version), None) => Ok(Some(Moment::Version(version))),
        (None, Some(at)) => Ok(Some(Moment::AsOf(at))),
    }
}

/// `?version=<n>` or `?asOf=<RFC 3339>` on a single-resource GET: the resource folded from its
/// events up to that point. `None` when neither is given (the handler serves the live row). A
/// resource deleted since is only shown to keys with `audit:read`.
pub async fn time_travel<R: Tracked>(
    state: &AppState,
    caller: &Caller,
    id: &str,
    params: &mut QueryParams,
) -> Result<Option<Response>, ApiError> {
    let Some(moment) = take_moment(params)? else { return Ok(None) };
    let (resource, version) = past::<R>(state, caller, id, moment).await?;
    Ok(Some(([(header::ETAG, etag(version))], Json(json!({ "data": resource }))).into_response()))
}

/// The resource `id` of the caller's organization as it was at `moment` (the JSON of its GET)
/// and its version then; 404 when it did not exist then, or when it is gone now and the key
/// lacks `audit:read`.
pub async fn past<R: Tracked>(
    state: &AppState,
    caller: &Caller,
    id: &str,
    moment: Moment,
) -> Result<(Value, i64), ApiError> {
    let events = log::read_stream(&state.store, caller.organization_id(), R::AGGREGATE, id).await?;
    if events.is_empty() {
        return Err(ApiError::NotFound);
    }
    if R::gone(state, caller.organization_id(), &events).await?
        && !grants(&caller.principal.permissions, Permission::AuditRead)
    {
        return Err(ApiError::NotFound);
    }
    let (upto, as_of) = match moment {
        Moment::Version(version) => (events.iter().take_while(|e| e.sequence <= version).count(), None),
        Moment::AsOf(at) => (events.iter().take_while(|e| e.recorded_at <= at).count(), Some(at)),
    };
    // A version past the newest does not exist (yet).
    if let Moment::Version(version) = moment {
        if events.last().is_some_and(|last| version > last.sequence) {
            return Err(ApiError::NotFound);
        }
    }
    R::fold(state, &events[..upto], as_of).await?.ok_or(ApiError::NotFound)
}
