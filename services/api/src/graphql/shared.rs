//! What the resource modules share: history and time travel through `routes::history`, nested
//! connections through the loaders, and mutation inputs as the REST bodies.

use std::any::TypeId;
use std::collections::HashMap;
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
use crate::graphql::loaders::{ChildKind, ChildPage, Children, LoadKey, Node, Siblings};
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

/// A nested connection of an engagement's children. The first engagement of a group to ask
/// loads the page of every engagement of the group (one `load_many`, so one statement and one
/// count), and all those children become one group in turn.
pub async fn children<C: ChildKind, T: OutputType>(
    ctx: &Context<'_>,
    session: &Session,
    engagement: &Node,
    args: ListArgs,
    wrap: impl Fn(Node) -> T,
) -> Result<Connection<T>> {
    // Bad arguments fail here, on this field, before anything is read.
    let request = args.request(C::SORTS, C::FILTERS, C::accepts)?;
    let (args, total) = (Arc::new(args), wants_total(ctx));
    let siblings = engagement.siblings();
    let key = LoadKey::Children(TypeId::of::<C>(), args.clone(), total);
    let pages = siblings
        .once(key, || async {
            let parents = siblings.all(|view| vec![view.str("id").to_owned()]);
            let keys = parents.iter().map(|parent| Children::<C>::new(parent.clone(), args.clone(), total));
            let found = session.loader.load_many(keys).await?;
            let mut rows: Vec<(String, C::Row)> = Vec::new();
            let mut pages: HashMap<String, ChildPage<(C::Row, Node)>> = HashMap::new();
            for (key, page) in found {
                rows.extend(page.rows.into_iter().map(|row| (key.engagement_id.clone(), row)));
                pages.insert(key.engagement_id, ChildPage { rows: Vec::new(), total: page.total });
            }
            let nodes = Siblings::group(rows.iter().map(|(_, row)| C::view_of(row)).collect());
            for ((parent, row), node) in rows.into_iter().zip(nodes) {
                if let Some(page) = pages.get_mut(&parent) {
                    page.rows.push((row, node));
                }
            }
            Ok(pages)
        })
        .await?;
    let (items, total) = match pages.get(engagement.str("id")) {
        Some(page) => (page.rows.clone(), page.total),
        None => (Vec::new(), total.then_some(0)),
    };
    let sort = request.sort;
    Ok(connect(&request, items, total, |(row, _)| C::key_of(sort, row), |(_, node)| wrap(node)))
}

/// A field of one object read for its whole group: `ids_of` names what each member needs,
/// `load` reads them all at once and gives each one's node by id.
pub async fn related<F, Fut>(
    node: &Node,
    field: &'static str,
    ids_of: impl Fn(&View) -> Vec<String>,
    load: F,
) -> Result<Arc<HashMap<String, Node>>>
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<(String, View)>>>,
{
    let siblings = node.siblings();
    siblings
        .once(LoadKey::Field(field), || async {
            let found = load(siblings.all(ids_of)).await?;
            let (ids, views): (Vec<String>, Vec<View>) = found.into_iter().unzip();
            Ok(ids.into_iter().zip(Siblings::group(views)).collect::<HashMap<String, Node>>())
        })
        .await
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
