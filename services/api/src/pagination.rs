//! `page`/`perPage`, `sort`/`order` and opaque cursors for every list, and the list envelope.
//!
//! A cursor carries the sort, the order, the filters, the last row's `(sort value, id)` and, from
//! REST, the list's path, so `?cursor=…` alone continues the same list; filters or a sort sent
//! beside it must match it, and so must the list.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pwnbook_projections::list::{Keyset, Order, SortValue, Window};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::extract::QueryParams;

const DEFAULT_PER_PAGE: i64 = 20;
const MAX_PER_PAGE: i64 = 100;

#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    /// sort field
    s: String,
    /// order
    o: String,
    /// filters, as the query parameters that set them
    f: Vec<(String, String)>,
    /// last row's sort value
    v: SortValue,
    /// last row's id
    i: String,
    /// the list's path, when it was a REST list's (cursors made before had none)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    l: Option<String>,
}

/// A parsed list request.
#[derive(Debug)]
pub struct ListRequest<S> {
    pub sort: S,
    sort_name: String,
    pub order: Order,
    pub window: Window,
    pub per_page: i64,
    page: Option<i64>,
    filters: Vec<(String, String)>,
    /// The REST list's path, which its cursors carry.
    path: Option<String>,
}

/// Reads the paging and sorting parameters from `params`, leaving the filters in it. With a
/// cursor, the cursor's filters are put back into `params` for the caller to parse.
pub fn parse<S: Copy>(
    params: &mut QueryParams,
    sorts: &[(&str, S)],
    filter_names: &[&str],
) -> Result<ListRequest<S>, ApiError> {
    let per_page = match params.take("perPage") {
        None => DEFAULT_PER_PAGE,
        Some(v) => v.parse::<i64>().ok().filter(|n| (1..=MAX_PER_PAGE).contains(n)).ok_or_else(|| {
            ApiError::BadRequest(format!("perPage must be an integer from 1 to {MAX_PER_PAGE}"))
        })?,
    };
    let page = params
        .take("page")
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| ApiError::BadRequest("page must be an integer of at least 1".to_owned()))
        })
        .transpose()?;
    let sort_param = params.take("sort");
    let order_param = params.take("order");
    let filters: Vec<(String, String)> =
        filter_names.iter().filter_map(|name| params.take(name).map(|v| ((*name).to_owned(), v))).collect();

    let (sort_name, order_name, filters, after) = match params.take("cursor") {
        Some(token) => {
            if page.is_some() {
                return Err(ApiError::BadRequest("page and cursor cannot be combined".to_owned()));
            }
            let cursor = decode(&token)?;
            // A cursor continues the list it came from, not another engagement's or the flat one.
            if let (Some(list), Some(path)) = (&cursor.l, params.path()) {
                if !list.eq_ignore_ascii_case(path) {
                    return Err(ApiError::BadRequest("the cursor belongs to another list".to_owned()));
                }
            }
            let mismatch = sort_param.as_ref().is_some_and(|s| *s != cursor.s)
                || order_param.as_ref().is_some_and(|o| *o != cursor.o)
                || (!filters.is_empty() && filters != cursor.f);
            if mismatch {
                return Err(ApiError::BadRequest(
                    "the cursor belongs to a list with other filters or sort".to_owned(),
                ));
            }
            (cursor.s, cursor.o, cursor.f, Some(Keyset { value: cursor.v, id: cursor.i }))
        }
        None => (
            sort_param.unwrap_or_else(|| "createdAt".to_owned()),
            order_param.unwrap_or_else(|| "desc".to_owned()),
            filters,
            None,
        ),
    };
    let sort = sorts.iter().find(|(name, _)| *name == sort_name).map(|(_, s)| *s).ok_or_else(|| {
        let names: Vec<&str> = sorts.iter().map(|(n, _)| *n).collect();
        ApiError::BadRequest(format!("sort must be one of {}", names.join(", ")))
    })?;
    let order = match order_name.as_str() {
        "asc" => Order::Asc,
        "desc" => Order::Desc,
        _ => return Err(ApiError::BadRequest("order must be asc or desc".to_owned())),
    };
    let window = match after {
        // One row more than asked tells whether there is a next page.
        Some(key) => Window::After { key, limit: per_page + 1 },
        None => {
            let page = page.unwrap_or(1);
            let offset = (page - 1)
                .checked_mul(per_page)
                .ok_or_else(|| ApiError::BadRequest("page is too large".to_owned()))?;
            Window::Offset { offset, limit: per_page }
        }
    };
    let path = params.path().map(str::to_owned);
    let request = ListRequest { sort, sort_name, order, window, per_page, page, filters, path };
    Ok(request)
}

impl<S: Copy> ListRequest<S> {
    /// The filters in force (from the query string or the cursor), to be parsed by the caller.
    pub fn filters(&self) -> QueryParams {
        QueryParams::from_pairs(&self.filters)
    }

    /// The cursor's keyset value must have the sort column's type.
    pub fn check_cursor(&self, accepts: impl Fn(S, &SortValue) -> bool) -> Result<(), ApiError> {
        match &self.window {
            Window::After { key, .. } if !accepts(self.sort, &key.value) => Err(bad_cursor()),
            _ => Ok(()),
        }
    }

    /// `{"data": [...], "meta": {...}}` for a page of rows; `total` is required in page mode.
    pub fn envelope<R, V: Serialize>(
        &self,
        mut rows: Vec<R>,
        total: Option<i64>,
        key_of: impl Fn(&R) -> (SortValue, String),
        render: impl Fn(&R) -> V,
    ) -> Value {
        let (more, cursor_mode) = match (&self.window, total) {
            (Window::After { .. }, _) => {
                let more = rows.len() as i64 > self.per_page;
                rows.truncate(self.per_page as usize);
                (more, true)
            }
            (Window::Offset { offset, .. }, Some(total)) => (offset + (rows.len() as i64) < total, false),
            (Window::Offset { .. }, None) => (false, false),
        };
        let next_cursor = rows.last().filter(|_| more).map(|row| {
            let (v, i) = key_of(row);
            self.cursor(v, i)
        });
        let data: Vec<Value> =
            rows.iter().map(|row| serde_json::to_value(render(row)).unwrap_or_default()).collect();
        let meta = if cursor_mode {
            json!({ "perPage": self.per_page, "nextCursor": next_cursor })
        } else {
            let total = total.unwrap_or(0);
            json!({
                "total": total,
                "page": self.page.unwrap_or(1),
                "perPage": self.per_page,
                "totalPages": (total + self.per_page - 1) / self.per_page,
                "nextCursor": next_cursor,
            })
        };
        json!({ "data": data, "meta": meta })
    }

    /// The opaque cursor that continues this list after the row whose sort value is `value`.
    pub fn cursor(&self, value: SortValue, id: String) -> String {
        let order = match self.order {
            Order::Asc => "asc",
            Order::Desc => "desc",
        };
        encode(&Cursor {
            s: self.sort_name.clone(),
            o: order.to_owned(),
            f: self.filters.clone(),
            v: value,
            i: id,
            l: self.path.clone(),
        })
    }

    /// The window with one row more than a page, which tells whether a next page exists (in
    /// both modes; GraphQL connections always need to know).
    pub fn probe_window(&self) -> Window {
        match &self.window {
            Window::Offset { offset, .. } => Window::Offset { offset: *offset, limit: self.per_page + 1 },
            after @ Window::After { .. } => after.clone(),
        }
    }

    /// The last row of the previous page, in cursor mode.
    pub fn after(&self) -> Option<&Keyset> {
        match &self.window {
            Window::After { key, .. } => Some(key),
            Window::Offset { .. } => None,
        }
    }

    /// Whether the response needs the total (page mode).
    pub fn needs_total(&self) -> bool {
        matches!(self.window, Window::Offset { .. })
    }
}

fn encode(cursor: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
}

/// A cursor this server could have made: its filters and values hold no NUL, which no stored
/// text can (a cursor is only encoded, so a client can write one).
fn decode(token: &str) -> Result<Cursor, ApiError> {
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad_cursor())?;
    let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| bad_cursor())?;
    let value = match &cursor.v {
        SortValue::Text(text) => text.as_str(),
        SortValue::Int(_) => "",
    };
    let texts =
        cursor.f.iter().flat_map(|(name, value)| [name, value]).chain([&cursor.s, &cursor.o, &cursor.i]);
    if texts.map(String::as_str).chain([value]).any(|text| text.contains('\0')) {
        return Err(bad_cursor());
    }
    Ok(cursor)
}

fn bad_cursor() -> ApiError {
    ApiError::BadRequest("the cursor is not valid".to_owned())
}
