//! A small SQL builder that numbers its placeholders `$1, $2, …`. sqlx's `QueryBuilder` writes
//! `?` for the `Any` driver, which PostgreSQL rejects; both backends accept `$n`.

use pwnbook_events::LogEvent;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::Any;

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
    params: Vec<Param>,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Self { text: text.to_owned(), params: Vec::new() }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends the next placeholder and records its value.
    pub fn bind(&mut self, value: impl Into<Param>) -> &mut Self {
        self.params.push(value.into());
        self.text.push('$');
        self.text.push_str(&self.params.len().to_string());
        self
    }

    /// This builder's parameters bound to another text with the same placeholders (e.g. the
    /// query under `EXPLAIN`).
    pub fn query_with_text<'q>(&'q self, text: &'q str) -> Query<'q, Any, AnyArguments<'q>> {
        let mut query = sqlx::query(text);
        for param in &self.params {
            query = match param {
                Param::Int(value) => query.bind(*value),
                Param::Text(value) => query.bind(value.clone()),
            };
        }
        query
    }

    /// Records the value of a placeholder the text already names (e.g. `$1` used twice).
    pub fn bind_value(&mut self, value: impl Into<Param>) -> &mut Self {
        self.params.push(value.into());
        self
    }

    pub fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        self.query_with_text(&self.text)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        let mut sql = Sql::new("SELECT 1 WHERE a = ");
        sql.bind(1_i64).push(" AND b IN (").bind("x").push(", ").bind(None::<String>).push(")");
        assert_eq!(sql.text(), "SELECT 1 WHERE a = $1 AND b IN ($2, $3)");
    }
}
