//! A small SQL builder that numbers its placeholders `$1, $2, …`. sqlx's `QueryBuilder` writes
//! `?` for the `Any` driver, which PostgreSQL rejects; both backends accept `$n`.

pub use pwnbook_events::values::{int_array, int_or_null_array, text_array};
use pwnbook_events::LogEvent;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::Any;

/// `AnyConnection::backend_name` of a SQLite connection.
const SQLITE: &str = "SQLite";

/// Whether `backend` (`AnyConnection::backend_name`) is SQLite.
pub fn is_sqlite(backend: &str) -> bool {
    backend == SQLITE
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Param {
    fn from(value: i64) -> Self {
        Self::Int(Some(value))
    }
}

impl From<Option<i64>> for Param {
    fn from(value: Option<i64>) -> Self {
        Self::Int(value)
    }
}

impl From<String> for Param {
    fn from(value: String) -> Self {
        Self::Text(Some(value))
    }
}

impl From<&str> for Param {
    fn from(value: &str) -> Self {
        Self::Text(Some(value.to_owned()))
    }
}

impl From<Option<String>> for Param {
    fn from(value: Option<String>) -> Self {
        Self::Text(value)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Sql {
    text: String,
    /// The same statement with anonymous `?` placeholders, kept while every value has a
    /// placeholder of its own, in order. sqlx looks each numbered SQLite parameter up by name,
    /// a scan of the statement's parameter list, so binding n of them costs n²: 80 % of a SQLite
    /// rebuild went there with 2 800 parameters per multi-row INSERT.
    anonymous: Option<String>,
    params: Vec<Param>,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Self { text: text.to_owned(), anonymous: Some(text.to_owned()), params: Vec::new() }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        if let Some(anonymous) = &mut self.anonymous {
            anonymous.push_str(text);
        }
        self
    }

    /// Appends the next placeholder and records its value.
    pub fn bind(&mut self, value: impl Into<Param>) -> &mut Self {
        self.params.push(value.into());
        self.text.push('$');
        self.text.push_str(&self.params.len().to_string());
        if let Some(anonymous) = &mut self.anonymous {
            anonymous.push('?');
        }
        self
    }

    /// This builder's parameters bound to another text with the same placeholders (e.g. the
    /// query under `EXPLAIN`).
    pub fn query_with_text<'q>(&'q self, text: &'q str) -> Query<'q, Any, AnyArguments<'q>> {
        let mut query = sqlx::query(text);
        for param in &self.params {
            query = match param {
                Param::Int(value) => query.bind(*value),
                // Borrowed, so the text is copied once, into the driver's own buffer.
                Param::Text(value) => query.bind(value.as_deref()),
            };
        }
        query
    }

    /// Records the value of a placeholder the text already names (e.g. `$1` used twice).
    pub fn bind_value(&mut self, value: impl Into<Param>) -> &mut Self {
        self.params.push(value.into());
        self.anonymous = None;
        self
    }

    pub fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        self.query_with_text(&self.text)
    }

    /// The query for a connection of `backend` (`AnyConnection::backend_name`): on SQLite with
    /// anonymous placeholders where it can, for statements with many parameters.
    pub fn query_on(&self, backend: &str) -> Query<'_, Any, AnyArguments<'_>> {
        match &self.anonymous {
            Some(anonymous) if is_sqlite(backend) => self.query_with_text(anonymous),
            _ => self.query(),
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Replaces the rows `(owner, value)` of a child table that backs a multi-valued filter.
pub async fn replace_set(
    tx: &mut sqlx::Transaction<'_, Any>,
    table: &str,
    owner_column: &str,
    value_column: &str,
    owner: &str,
    values: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("DELETE FROM {table} WHERE {owner_column} = $1"))
        .bind(owner)
        .execute(&mut **tx)
        .await?;
    for value in values {
        sqlx::query(&format!("INSERT INTO {table} ({owner_column}, {value_column}) VALUES ($1, $2)"))
            .bind(owner)
            .bind(value)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Whether `event` deletes an engagement. Its children leave the read tables with it, so reads
/// need no per-row check that the engagement still exists.
pub fn deletes_engagement(event: &LogEvent) -> bool {
    event.aggregate_type == "engagement" && event.event_type == "engagement.deleted"
}

/// Deletes the rows of `table` that belong to the engagement `event` deletes, with their rows in
/// the `children` tables (`(table, column naming the owner)`).
pub async fn purge_engagement(
    tx: &mut sqlx::Transaction<'_, Any>,
    event: &LogEvent,
    table: &str,
    children: &[(&str, &str)],
) -> Result<(), sqlx::Error> {
    let scope = "organization_id = $1 AND engagement_id = $2";
    for (child, owner) in children {
        sqlx::query(&format!("DELETE FROM {child} WHERE {owner} IN (SELECT id FROM {table} WHERE {scope})"))
            .bind(&event.organization_id)
            .bind(&event.aggregate_id)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query(&format!("DELETE FROM {table} WHERE {scope}"))
        .bind(&event.organization_id)
        .bind(&event.aggregate_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// `CAST($n AS <ty>[])` binding a PostgreSQL array literal: a column of a multi-row statement
/// as one parameter.
pub fn push_array(query: &mut Sql, literal: String, ty: &str) {
    query.push("CAST(").bind(literal).push(" AS ").push(ty).push("[])");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        let mut sql = Sql::new("SELECT 1 WHERE a = ");
        sql.bind(1_i64).push(" AND b IN (").bind("x").push(", ").bind(None::<String>).push(")");
        assert_eq!(sql.text(), "SELECT 1 WHERE a = $1 AND b IN ($2, $3)");
        assert_eq!(sql.anonymous.as_deref(), Some("SELECT 1 WHERE a = ? AND b IN (?, ?)"));
    }

    #[test]
    fn a_placeholder_used_twice_keeps_its_number_on_sqlite() {
        let mut sql = Sql::new("UPDATE t SET a = $1 WHERE b < $1 AND c IN (");
        sql.bind_value(5_i64);
        sql.bind("x").push(")");
        assert_eq!(sql.text(), "UPDATE t SET a = $1 WHERE b < $1 AND c IN ($2)");
        assert_eq!(sql.anonymous, None, "anonymous placeholders cannot name one value twice");
    }
}
