//! What the resource modules share: history and time travel through `routes::history`, nested
//! connections through the loaders, and mutation inputs as the REST bodies.

use std::sync::Arc;

use async_graphql::{Context, OutputType};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::graphql::connection::{connect, wants_total, Connection, Filters, ListArgs};
use crate::graphql::context::{allowed, Route, Session};
use crate::graphql::errors::Result;
use crate::graphql::events::{feed, history_params, EventFeed};
use crate::graphql::loaders::{ChildKind, Children};
use crate::graphql::view::View;
use crate::routes::history::{self, take_moment, Tracked};

/// `history(after:, limit:)` of a resource (audit:read, as `GET /<resources>/{id}/history`).
pub async fn history_of<R: Tracked>(
    ctx: &Context<'_>,
    route: Route,
    id: &str,
    after: Option<i64>,
    limit: Option<i64>,
) -> Result<Option<EventFeed>> {
    let session = allowed(ctx, route)?;
    let page =
        history::history::<R>(&session.state, &session.caller, id, history_params(after, limit)).await?;
    Ok(Some(feed(page.0)))
}

/// `version`/`asOf` of a single-resource query: the resource as it was then (the JSON of the
/// REST GET with the same parameters), or `None` when neither is given.
pub async fn past<R: Tracked>(
    session: &Session,
    id: &str,
    version: Option<i64>,
    as_of: Option<String>,
) -> Result<Option<View>> {
    let pairs = Filters::default().one("version", version.map(|v| v.to_string())).one("asOf", as_of).done();
    let Some(moment) = take_moment(&mut QueryParams::from_pairs(&pairs))? else { return Ok(None) };
    let (resource, _) = history::past::<R>(&session.state, &session.caller, id, moment).await?;
    Ok(Some(View::from_value(resource)))
}

/// A nested connection of an engagement's children, read through the request's loader so all
/// the engagements of a query share one statement.
pub async fn children<C: ChildKind, T: OutputType>(
    ctx: &Context<'_>,
    session: &Session,
    engagement_id: &str,
    args: ListArgs,
    node_of: impl Fn(&C::Row) -> T,
) -> Result<Connection<T>> {
    // Bad arguments fail here, on this field, before anything is read.
    let request = args.request(C::SORTS, C::FILTERS, C::accepts)?;
    let key = Children::<C>::new(engagement_id.to_owned(), Arc::new(args), wants_total(ctx));
    let page = session
        .loader
        .load_one(key)
        .await?
        .unwrap_or(crate::graphql::loaders::ChildPage { rows: Vec::new(), total: Some(0) });
    let sort = request.sort;
    Ok(connect(&request, page.rows, page.total, |row| C::key_of(sort, row), node_of))
}

/// A mutation's input as the REST body of the same write, so both are parsed and validated by
/// the same code. Fields left out of the input are left out of the body; `null` stays `null`
/// (it clears a field where REST's PATCH clears it).
pub fn body<T: DeserializeOwned>(input: impl Serialize) -> std::result::Result<T, ApiError> {
    let value =
        serde_json::to_value(input).map_err(|e| ApiError::BadRequest(format!("invalid input: {e}")))?;
    serde_json::from_value(value).map_err(|e| ApiError::BadRequest(format!("invalid input: {e}")))
}

/// `ifMatch`: the version the change is based on (REST's `If-Match`), checked atomically with
/// the write (`PRECONDITION_FAILED` when stale).
pub fn if_match(version: Option<i64>) -> std::result::Result<Option<i64>, ApiError> {
    match version {
        Some(v) if v < 0 => {
            Err(ApiError::BadRequest("ifMatch must be a version (an integer of at least 0)".to_owned()))
        }
        other => Ok(other),
    }
}

/// IDs of an input as strings.
pub fn id_strings(ids: Option<Vec<async_graphql::ID>>) -> Option<Vec<String>> {
    ids.map(|ids| ids.into_iter().map(|id| id.0).collect())
}
