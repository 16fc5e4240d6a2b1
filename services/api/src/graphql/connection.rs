//! Relay-style connections over the REST lists: the same filters, sort and keyset cursors.
//!
//! A connection's arguments become the query string of the REST list (`first` is `perPage`,
//! `after` is `cursor`, the filter object's fields are the filter parameters with lists
//! comma-joined) and go through the same parser (`pagination::parse` and the resource's
//! `filter_of`), so the rules are REST's: a cursor carries its list's filters and sort, and
//! filters or a sort given beside it must be the same ones; an unknown enum value in a filter
//! is a `BAD_REQUEST`. Cursors are interchangeable between the facades (an edge's cursor is the
//! REST `nextCursor` that row would give). Pages go forward only (`first`/`after`).

use async_graphql::connection::{Edge, EmptyFields};
use async_graphql::{Enum, OutputType, SimpleObject};
use std::future::Future;

use pwnbook_projections::list::SortValue;
use pwnbook_projections::ProjectionError;

use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::graphql::loaders::{Node, Siblings};
use crate::graphql::view::View;
use crate::pagination::{self, ListRequest};

/// Page size when `first` is not given, and its largest value (REST's `perPage`).
pub const DEFAULT_FIRST: i32 = 20;
pub const MAX_FIRST: i32 = 100;

/// The complexity of a connection field: its page size times the cost of one edge.
pub fn complexity(first: Option<i32>, child: usize) -> usize {
    let first = first.unwrap_or(DEFAULT_FIRST).clamp(1, MAX_FIRST);
    usize::try_from(first).unwrap_or(1).saturating_mul(child).saturating_add(1)
}

/// The complexity of a field of up to `limit` items (1 to 1000, default 100): a page of events
/// (`events`, every `history`) or `webhook.deliveries`.
pub fn per_item(limit: Option<i64>, child: usize) -> usize {
    let limit = limit.unwrap_or(100).clamp(1, 1000);
    usize::try_from(limit).unwrap_or(1).saturating_mul(child.max(1)).saturating_add(1)
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum SortOrder {
    /// Ascending.
    Asc,
    /// Descending (the default).
    Desc,
}

impl SortOrder {
    fn name(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

/// The arguments of a connection, as REST query parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ListArgs {
    pub first: Option<i32>,
    pub after: Option<String>,
    /// The REST name of the sort field (`createdAt`, `name`, …).
    pub sort: Option<&'static str>,
    pub order: Option<SortOrder>,
    /// Filter parameters: `(REST name, value)`, lists comma-joined.
    pub filters: Vec<(String, String)>,
}

impl ListArgs {
    pub fn new(
        first: Option<i32>,
        after: Option<String>,
        sort: Option<&'static str>,
        order: Option<SortOrder>,
        filters: Vec<(String, String)>,
    ) -> Self {
        Self { first, after, sort, order, filters }
    }

    /// The list request REST would parse from the same query string.
    pub fn request<S: Copy>(
        &self,
        sorts: &[(&str, S)],
        filter_names: &[&str],
        accepts: impl Fn(S, &SortValue) -> bool,
    ) -> Result<ListRequest<S>, ApiError> {
        let mut pairs = self.filters.clone();
        if let Some(first) = self.first {
            if !(1..=MAX_FIRST).contains(&first) {
                return Err(ApiError::BadRequest(format!("first must be an integer from 1 to {MAX_FIRST}")));
            }
            pairs.push(("perPage".to_owned(), first.to_string()));
        }
        if let Some(after) = &self.after {
            pairs.push(("cursor".to_owned(), after.clone()));
        }
        if let Some(sort) = self.sort {
            pairs.push(("sort".to_owned(), sort.to_owned()));
        }
        if let Some(order) = self.order {
            pairs.push(("order".to_owned(), order.name().to_owned()));
        }
        let mut params = QueryParams::from_pairs(&pairs);
        let request = pagination::parse(&mut params, sorts, filter_names)?;
        params.finish()?;
        request.check_cursor(accepts)?;
        Ok(request)
    }
}

/// Filter parameters from a GraphQL filter object.
#[derive(Debug, Default)]
pub struct Filters(Vec<(String, String)>);

impl Filters {
    pub fn list(mut self, name: &str, values: Option<Vec<String>>) -> Self {
        if let Some(values) = values {
            let items: Vec<String> = values.iter().map(|value| crate::extract::list_item(value)).collect();
            self.0.push((name.to_owned(), items.join(",")));
        }
        self
    }

    pub fn one(mut self, name: &str, value: Option<String>) -> Self {
        if let Some(value) = value {
            self.0.push((name.to_owned(), value));
        }
        self
    }

    pub fn flag(self, name: &str, value: Option<bool>) -> Self {
        self.one(name, value.map(|v| v.to_string()))
    }

    pub fn done(self) -> Vec<(String, String)> {
        self.0
    }
}

/// What a connection has beside its edges.
#[derive(SimpleObject, Debug, Clone)]
pub struct TotalCount {
    /// Rows matching the filters, on every page (counted only when asked for).
    pub total_count: i64,
}

/// A page of a list: `totalCount`, `edges { cursor node }`, `nodes` and `pageInfo`
/// (`hasNextPage`, `endCursor`, …). Named after its node (`EngagementConnection`, …).
pub type Connection<T> = async_graphql::connection::Connection<String, T, TotalCount, EmptyFields>;

/// A connection from the items read with `request.probe_window()` (one more than a page).
pub fn connect<S: Copy, I, T: OutputType>(
    request: &ListRequest<S>,
    mut items: Vec<I>,
    total: Option<i64>,
    key_of: impl Fn(&I) -> (SortValue, String),
    node_of: impl Fn(I) -> T,
) -> Connection<T> {
    let per_page = usize::try_from(request.per_page).unwrap_or(usize::MAX);
    let has_next_page = items.len() > per_page;
    items.truncate(per_page);
    // `hasPreviousPage`: this page continues a list (pages only go forward).
    let mut connection = Connection::with_additional_fields(
        request.after().is_some(),
        has_next_page,
        TotalCount { total_count: total.unwrap_or_default() },
    );
    connection.edges.extend(items.into_iter().map(|item| {
        let (value, id) = key_of(&item);
        Edge::new(request.cursor(value, id), node_of(item))
    }));
    connection
}

/// A connection of a top-level list: the rows `rows` reads (with `request.probe_window()`)
/// and, when the query asks for it, the total `count` gives. The rows become one group of
/// siblings (their nested fields are loaded together).
pub async fn page<S: Copy, R, T: OutputType, C, Counted>(
    ctx: &async_graphql::Context<'_>,
    request: &ListRequest<S>,
    rows: impl Future<Output = Result<Vec<R>, ProjectionError>>,
    count: C,
    key_of: impl Fn(&R) -> (SortValue, String),
    view_of: impl Fn(&R) -> View,
    wrap: impl Fn(Node) -> T,
) -> Result<Connection<T>, ApiError>
where
    C: FnOnce() -> Counted,
    Counted: Future<Output = Result<i64, ProjectionError>>,
{
    let rows = rows.await?;
    let total = if wants_total(ctx) { Some(count().await?) } else { None };
    let nodes = Siblings::group(rows.iter().map(view_of).collect());
    let items: Vec<(R, Node)> = rows.into_iter().zip(nodes).collect();
    Ok(connect(request, items, total, |(row, _)| key_of(row), |(_, node)| wrap(node)))
}

/// Whether the query asks for `totalCount` of the connection being resolved.
pub fn wants_total(ctx: &async_graphql::Context<'_>) -> bool {
    ctx.look_ahead().field("totalCount").exists()
}
