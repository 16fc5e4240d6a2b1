//! Building list queries: filters, total order `(sort column, id)`, and page (LIMIT/OFFSET) or
//! keyset (`(sort, id) > cursor`) windows.

use serde::{Deserialize, Serialize};

use crate::sql::Sql;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// The value of a row's sort column, as carried by a cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SortValue {
    Int(i64),
    Text(String),
}

/// The last row a client saw: continue strictly after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyset {
    pub value: SortValue,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// Page mode, as the documentation promises.
    Offset { offset: i64, limit: i64 },
    /// Cursor mode: keyset, never OFFSET, stable under concurrent inserts.
    After { key: Keyset, limit: i64 },
}

/// Starts `SELECT … FROM … WHERE organization_id = $1`; filters follow as `AND …`.
pub fn select(select_from: &str, organization_id: &str) -> Sql {
    let mut sql = Sql::new(select_from);
    sql.push(" WHERE organization_id = ").bind(organization_id);
    sql
}

/// `AND column IN (…)` when `values` is not empty.
pub fn push_in(sql: &mut Sql, column: &str, values: &[String]) {
    if values.is_empty() {
        return;
    }
    sql.push(" AND ").push(column).push(" IN (");
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(value.as_str());
    }
    sql.push(")");
}

/// `AND column LIKE '%needle%'`, with the needle's own wildcards escaped. The column must hold
/// lowercase text; the needle is lowercased here.
pub fn push_contains(sql: &mut Sql, column: &str, needle: &str) {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for c in needle.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    sql.push(" AND ").push(column).push(" LIKE ").bind(pattern).push(" ESCAPE '\\'");
}

/// `AND column >= since` and `AND column < until` for the bounds given.
pub fn push_range(sql: &mut Sql, column: &str, since: Option<i64>, until: Option<i64>) {
    if let Some(since) = since {
        sql.push(" AND ").push(column).push(" >= ").bind(since);
    }
    if let Some(until) = until {
        sql.push(" AND ").push(column).push(" < ").bind(until);
    }
}

/// The keyset condition, ORDER BY with `id` as tie-breaker, and LIMIT/OFFSET.
pub fn push_window(sql: &mut Sql, column: &str, order: Order, window: &Window) {
    let (cmp, dir) = match order {
        Order::Asc => (">", "ASC"),
        Order::Desc => ("<", "DESC"),
    };
    if let Window::After { key, .. } = window {
        sql.push(" AND (").push(column).push(", id) ").push(cmp).push(" (");
        match &key.value {
            SortValue::Int(v) => sql.bind(*v),
            SortValue::Text(v) => sql.bind(v.as_str()),
        };
        sql.push(", ").bind(key.id.as_str()).push(")");
    }
    sql.push(" ORDER BY ").push(column).push(" ").push(dir).push(", id ").push(dir);
    match window {
        Window::Offset { offset, limit } => {
            sql.push(" LIMIT ").bind(*limit).push(" OFFSET ").bind(*offset);
        }
        Window::After { limit, .. } => {
            sql.push(" LIMIT ").bind(*limit);
        }
    }
}
