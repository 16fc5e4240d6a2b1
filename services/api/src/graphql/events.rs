//! The event log: `events` (a page of the feed, as `GET /events`), `verifyEvents` (as
//! `GET /events/verify`), every object's `history`, and the `events` subscription (as
//! `GET /events/stream`: replay after a position, then live, from the log itself).

use async_graphql::{Context, InputObject, Json, Object, Subscription, ID};
use futures::{Stream, StreamExt};
use pwnbook_events::log;
use pwnbook_projections::feed::EventFilter;

use crate::extract::QueryParams;
use crate::graphql::connection::{self, Filters};
use crate::graphql::context::{allowed, route};
use crate::graphql::errors::Result;
use crate::graphql::shared::id_strings;
use crate::graphql::view::View;
use crate::openapi::to_json;
use crate::routes::events::{event_object, feed_page, take_filter, take_limit, take_position, Follow};

/// Who caused an event.
pub struct Actor(View);

/// Who caused an event.
#[Object]
impl Actor {
    /// `api_key` or `system`.
    #[graphql(name = "type")]
    async fn kind(&self) -> Option<&str> {
        self.0.opt_str("type")
    }

    async fn id(&self) -> Option<&str> {
        self.0.opt_str("id")
    }

    async fn name(&self) -> Option<&str> {
        self.0.opt_str("name")
    }
}

/// An event of the organization's log (the event object of `GET /events`).
pub struct Event(pub View);

/// An event of the organization's log (the event object of `GET /events`).
#[Object]
impl Event {
    async fn id(&self) -> Result<ID> {
        self.0.id()
    }

    /// Place in the global log: dense, strictly increasing.
    async fn position(&self) -> Result<i64> {
        self.0.int("position")
    }

    /// `engagement.created`, `finding.status_changed`, …
    #[graphql(name = "type")]
    async fn kind(&self) -> Result<&str> {
        self.0.str("type")
    }

    async fn resource_type(&self) -> Result<&str> {
        self.0.str("resourceType")
    }

    async fn resource_id(&self) -> Result<ID> {
        Ok(ID(self.0.str("resourceId")?.to_owned()))
    }

    async fn engagement_id(&self) -> Option<ID> {
        self.0.opt_id("engagementId")
    }

    /// Place in the resource's own stream (its version after this event).
    async fn sequence(&self) -> Result<i64> {
        self.0.int("sequence")
    }

    async fn occurred_at(&self) -> Result<&str> {
        self.0.str("occurredAt")
    }

    async fn actor(&self) -> Result<Actor> {
        Ok(Actor(self.0.required_object("actor")?))
    }

    async fn request_id(&self) -> Option<&str> {
        self.0.opt_str("requestId")
    }

    /// What changed: the fields as created, the changed fields, or `{from, to}`.
    async fn data(&self) -> Json<serde_json::Value> {
        Json(self.0.value("data"))
    }
}

/// A page of events in log order.
pub struct EventFeed(pub View);

/// A page of events in log order.
#[Object]
impl EventFeed {
    async fn events(&self) -> Vec<Event> {
        self.0.objects("data").into_iter().map(Event).collect()
    }

    async fn after(&self) -> Result<i64> {
        self.meta()?.int("after")
    }

    async fn limit(&self) -> Result<i64> {
        self.meta()?.int("limit")
    }

    /// The highest position this page examined: pass it as `after` to continue.
    async fn next_after(&self) -> Result<i64> {
        self.meta()?.int("nextAfter")
    }

    /// Whether the log goes further than `nextAfter`.
    async fn has_more(&self) -> Result<bool> {
        self.meta()?.boolean("hasMore")
    }
}

impl EventFeed {
    fn meta(&self) -> Result<View> {
        self.0.required_object("meta")
    }
}

/// The result of recomputing the organization's hash chain.
pub struct ChainReport(View);

/// The result of recomputing the organization's hash chain.
#[Object]
impl ChainReport {
    async fn valid(&self) -> Result<bool> {
        self.0.boolean("valid")
    }

    /// Events checked.
    async fn checked(&self) -> Result<i64> {
        self.0.int("checked")
    }

    async fn first_broken_position(&self) -> Option<i64> {
        self.0.opt_int("firstBrokenPosition")
    }
}

/// The filters of `GET /events` and `GET /events/stream`.
#[derive(InputObject, Default)]
pub struct EventFilterInput {
    /// Event types; `finding.*` matches a prefix.
    #[graphql(name = "type")]
    pub kind: Option<Vec<String>>,
    pub resource_type: Option<Vec<String>>,
    pub resource_id: Option<Vec<ID>>,
    pub engagement_id: Option<Vec<ID>>,
    pub actor_id: Option<Vec<String>>,
    /// Occurred at or after (RFC 3339).
    pub since: Option<String>,
    /// Occurred before (RFC 3339): with `since`, a half-open window.
    pub until: Option<String>,
}

impl EventFilterInput {
    /// The filter REST parses from the same parameters.
    fn parse(self) -> Result<EventFilter> {
        let pairs = Filters::default()
            .list("type", self.kind)
            .list("resourceType", self.resource_type)
            .list("resourceId", id_strings(self.resource_id))
            .list("engagementId", id_strings(self.engagement_id))
            .list("actorId", self.actor_id)
            .one("since", self.since)
            .one("until", self.until)
            .done();
        let mut params = QueryParams::from_pairs(&pairs);
        params.refuse_nul()?;
        let filter = take_filter(&mut params)?;
        params.finish()?;
        Ok(filter)
    }
}

/// The query string of a page of events.
pub fn history_params(after: Option<i64>, limit: Option<i64>) -> QueryParams {
    let pairs = Filters::default()
        .one("after", after.map(|a| a.to_string()))
        .one("limit", limit.map(|l| l.to_string()))
        .done();
    QueryParams::from_pairs(&pairs)
}

/// `after`/`limit` as REST parses them (`None` when not given).
pub fn paging(after: Option<i64>, limit: Option<i64>) -> Result<(Option<i64>, Option<i64>)> {
    let mut params = history_params(after, limit);
    let after = take_position(&mut params, "after")?;
    let limit = take_limit(&mut params)?;
    Ok((after, limit))
}

#[derive(Default)]
pub struct EventQuery;

#[Object]
impl EventQuery {
    /// The organization's events in log order (`GET /events`; audit:read): after the position
    /// `after` (default 0), at most `limit` (1 to 1000, default 100).
    #[graphql(complexity = "connection::per_item(limit, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        filter: Option<EventFilterInput>,
        after: Option<i64>,
        limit: Option<i64>,
    ) -> Result<Option<EventFeed>> {
        let session = allowed(ctx, route::EVENTS)?;
        let (after, limit) = paging(after, limit)?;
        let filter = filter.unwrap_or_default().parse()?;
        let page = feed_page(
            &session.state.store,
            session.organization_id(),
            &filter,
            after.unwrap_or(0),
            limit.unwrap_or(100),
        )
        .await?;
        Ok(Some(EventFeed(View::of(page))))
    }

    /// Recomputes the organization's hash chain (`GET /events/verify`; audit:read). It reads
    /// the whole log, so it costs more than half the limit: one per request.
    #[graphql(complexity = "crate::graphql::VERIFY_EVENTS_COST")]
    async fn verify_events(&self, ctx: &Context<'_>) -> Result<Option<ChainReport>> {
        let session = allowed(ctx, route::VERIFY_EVENTS)?;
        let report = log::verify_chain(&session.state.store, Some(session.organization_id()))
            .await
            .map_err(crate::error::ApiError::from)?;
        Ok(Some(ChainReport(View::from_value(serde_json::json!({
            "valid": report.valid,
            "checked": report.checked,
            "firstBrokenPosition": report.first_broken_position,
        })))))
    }
}

#[derive(Default)]
pub struct Subscription;

#[Subscription]
impl Subscription {
    /// The organization's events as they are logged (`GET /events/stream`; audit:read): with
    /// `after`, first every matching event after that position, then live; without it, from
    /// the current head. Both phases read the log by position, so resuming after the last
    /// position received neither loses nor repeats an event. The stream completes when the
    /// server shuts down.
    async fn events(
        &self,
        ctx: &Context<'_>,
        filter: Option<EventFilterInput>,
        after: Option<i64>,
    ) -> Result<impl Stream<Item = Event>> {
        let session = allowed(ctx, route::EVENT_STREAM)?;
        let (after, _) = paging(after, None)?;
        let filter = filter.unwrap_or_default().parse()?;
        let start = match after {
            Some(position) => position,
            None => log::head(&session.state.store).await.map_err(crate::error::ApiError::from)?,
        };
        let follow = Follow::new(&session.state, session.organization_id().to_owned(), filter, start);
        // Over a WebSocket the key is checked again before each event: a revoked or expired key
        // ends the stream (and the connection, with 4403).
        let (state, socket) = (session.state.clone(), session.socket.clone());
        let key_id = session.caller.principal.key_id.clone();
        let checked = follow.into_stream().then(move |event| {
            let (state, socket, key_id) = (state.clone(), socket.clone(), key_id.clone());
            async move {
                let object = event_object(&event);
                let Some(socket) = socket else { return Some(object) };
                // The log may show the revocation before the key table does.
                if object["type"] == "api_key.revoked" && object["resourceId"] == key_id.as_str() {
                    socket.close("the API key has been revoked");
                    return None;
                }
                socket.check_key(&state).await.ok().map(|()| object)
            }
        });
        Ok(checked
            .take_while(|object| futures::future::ready(object.is_some()))
            .filter_map(futures::future::ready)
            .map(|object| Event(View::from_value(object))))
    }
}

/// A history page as an `EventFeed`.
pub fn feed(page: crate::routes::events::FeedPage) -> EventFeed {
    EventFeed(View::from_value(to_json(page)))
}
