//! The event feed: one organization's `event_log` rows by position, filtered. `GET /events`, the
//! NDJSON export, the SSE stream, resource histories and webhooks all read through here.

use pwnbook_events::log::LOG_COLUMNS;
use pwnbook_events::{Backend, LogEvent, Store};

use crate::list::push_in;
use crate::sql::Sql;
use crate::ProjectionError;

/// At most this many positions are examined per page, so a sparse filter answers in bounded
/// time and reports how far it got instead of scanning the whole log.
pub const SCAN_WINDOW: i64 = 50_000;

/// Filters of the feed; empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Exact event types.
    pub types: Vec<String>,
    /// Type prefixes (`finding.` from `finding.*`); an event matches a type or a prefix.
    pub type_prefixes: Vec<String>,
    pub resource_types: Vec<String>,
    pub resource_ids: Vec<String>,
    pub engagement_ids: Vec<String>,
    pub actor_ids: Vec<String>,
    /// Inclusive bounds on `recorded_at`, in milliseconds.
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// One page of the feed and how far it looked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPage {
    pub events: Vec<LogEvent>,
    /// Every position up to here was examined: the next page starts after it.
    pub scanned_to: i64,
}

/// Up to `limit` events of `organization_id` after `after` that pass `filter`, examining at most
/// the positions up to `head` (a log head read before the call; the log is append-only with
/// dense positions committed in order, so everything up to a read head is final).
pub async fn page(
    store: &Store,
    organization_id: &str,
    filter: &EventFilter,
    after: i64,
    limit: i64,
    head: i64,
) -> Result<FeedPage, ProjectionError> {
    let upper = head.min(after.saturating_add(SCAN_WINDOW));
    if upper <= after {
        return Ok(FeedPage { events: Vec::new(), scanned_to: after });
    }
    let mut query = Sql::new(&format!("SELECT {LOG_COLUMNS} FROM event_log WHERE organization_id = "));
    query.bind(organization_id).push(" AND position > ").bind(after).push(" AND position <= ").bind(upper);
    push_filter(&mut query, filter, store.backend());
    query.push(" ORDER BY position LIMIT ").bind(limit);
    let rows = query.query().fetch_all(store.pool()).await?;
    let events = rows.iter().map(LogEvent::from_row).collect::<Result<Vec<_>, _>>()?;
    let scanned_to = match events.last() {
        Some(last) if events.len() as i64 >= limit => last.position,
        _ => upper,
    };
    Ok(FeedPage { events, scanned_to })
}

fn push_filter(query: &mut Sql, filter: &EventFilter, backend: Backend) {
    if !filter.types.is_empty() || !filter.type_prefixes.is_empty() {
        query.push(" AND (1 = 0");
        for event_type in &filter.types {
            query.push(" OR event_type = ").bind(event_type.as_str());
        }
        // substr rather than LIKE: `_` in `wiki_page.` would be a LIKE wildcard. The length is
        // a literal: PostgreSQL has no substr(text, int, bigint) for a bound i64.
        for prefix in &filter.type_prefixes {
            let length = prefix.chars().count();
            query.push(&format!(" OR substr(event_type, 1, {length}) = ")).bind(prefix.as_str());
        }
        query.push(")");
    }
    push_in(query, "aggregate_type", &filter.resource_types);
    push_in(query, "aggregate_id", &filter.resource_ids);
    push_in(query, "engagement_id", &filter.engagement_ids);
    let actor = match backend {
        Backend::Sqlite => "json_extract(metadata, '$.actorId')",
        Backend::Postgres => "(metadata::jsonb ->> 'actorId')",
    };
    push_in(query, actor, &filter.actor_ids);
    if let Some(since) = filter.since {
        query.push(" AND recorded_at >= ").bind(since);
    }
    if let Some(until) = filter.until {
        query.push(" AND recorded_at < ").bind(until);
    }
}
