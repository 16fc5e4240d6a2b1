//! A small SQL builder that numbers its placeholders `$1, $2, …`. sqlx's `QueryBuilder` writes
//! `?` for the `Any` driver, which PostgreSQL rejects; both backends accept `$n`.

pub use pwnbook_events::values::{int_array, int_or_null_array, string_literal, text_array};
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

    /// The statement as a server-side prepared statement (PostgreSQL): its name (from its text
    /// and parameter types), its `PREPARE`, and its `EXECUTE` with every parameter a literal
    /// (for a simple query, which takes no parameters).
    pub fn prepared(&self) -> (String, String, String) {
        let types: Vec<&str> = self
            .params
            .iter()
            .map(|param| match param {
                Param::Int(_) => "BIGINT",
                Param::Text(_) => "TEXT",
            })
            .collect();
        let types = types.join(", ");
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&(&self.text, &types), &mut hasher);
        let name = format!("pwnbook_{:016x}", std::hash::Hasher::finish(&hasher));
        let values: Vec<String> = self
            .params
            .iter()
            .map(|param| match param {
                Param::Int(Some(value)) => value.to_string(),
                Param::Text(Some(value)) => string_literal(value),
                Param::Int(None) | Param::Text(None) => "NULL".to_owned(),
            })
            .collect();
        let in_parentheses = |list: String| if list.is_empty() { list } else { format!(" ({list})") };
        let prepare = format!("PREPARE {name}{} AS {}", in_parentheses(types), self.text);
        let execute = format!("EXECUTE {name}{}", in_parentheses(values.join(", ")));
        (name, prepare, execute)
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

/// The events a projector reads: those of its aggregate type and, when it `purges`, engagement
/// deletions (its rows leave with their engagement). Its `apply` filters by it and its
/// `inline_statements` asks `untouched`, so what a batch may skip cannot drift from what
/// `apply` would have done.
#[derive(Debug, Clone, Copy)]
pub struct Reads {
    pub aggregate_type: &'static str,
    pub purges: bool,
}

impl Reads {
    pub fn event(self, event: &LogEvent) -> bool {
        event.aggregate_type == self.aggregate_type || (self.purges && deletes_engagement(event))
    }

    /// `Projector::inline_statements` of a projector whose `apply` reads only these events:
    /// nothing to do when the batch has none of them, else `None`.
    pub fn untouched(self, events: &[LogEvent]) -> Option<Vec<Sql>> {
        (!events.iter().any(|event| self.event(event))).then(Vec::new)
    }
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

    fn event(aggregate_type: &str, event_type: &str) -> LogEvent {
        LogEvent {
            position: 1,
            event_id: "evt_1".to_owned(),
            organization_id: "org_1".to_owned(),
            engagement_id: None,
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: "id_1".to_owned(),
            sequence: 1,
            event_type: event_type.to_owned(),
            event_version: "1".to_owned(),
            payload: "{}".to_owned(),
            metadata: "{}".to_owned(),
            recorded_at: 0,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_batch_is_untouched_only_without_the_events_a_projector_reads() {
        let tasks = Reads { aggregate_type: "task", purges: true };
        let keys = Reads { aggregate_type: "api_key", purges: false };
        let deletion = event("engagement", "engagement.deleted");
        let archive = event("engagement", "engagement.archived");
        let task = event("task", "task.created");
        let finding = event("finding", "finding.created");
        assert!(tasks.event(&task) && tasks.event(&deletion));
        assert!(!tasks.event(&archive) && !tasks.event(&finding));
        assert!(!keys.event(&deletion));
        assert_eq!(tasks.untouched(&[finding.clone(), archive.clone()]).map(|s| s.len()), Some(0));
        assert!(tasks.untouched(&[finding.clone(), task]).is_none());
        assert!(tasks.untouched(std::slice::from_ref(&deletion)).is_none());
        assert_eq!(keys.untouched(&[finding, deletion]).map(|s| s.len()), Some(0));
    }

    #[test]
    fn a_prepared_statement_takes_its_values_as_typed_literals() {
        let mut sql = Sql::new("UPDATE t SET a = ");
        sql.bind("it's \\ x")
            .push(", b = ")
            .bind(7_i64)
            .push(", c = ")
            .bind(None::<String>)
            .push(" WHERE d = 'x$1'");
        let (name, prepare, execute) = sql.prepared();
        assert!(name.starts_with("pwnbook_"));
        assert_eq!(
            prepare,
            format!(
                "PREPARE {name} (TEXT, BIGINT, TEXT) AS UPDATE t SET a = $1, b = $2, c = $3 WHERE d = 'x$1'"
            )
        );
        assert_eq!(execute, format!(r"EXECUTE {name} (E'it''s \\ x', 7, NULL)"));
        let mut other = Sql::new("UPDATE t SET a = ");
        other
            .bind("another")
            .push(", b = ")
            .bind(8_i64)
            .push(", c = ")
            .bind(Some("c".to_owned()))
            .push(" WHERE d = 'x$1'");
        assert_eq!(other.prepared().0, name, "the same statement whatever its values");
        let plain = Sql::new("SELECT 1");
        assert_eq!(plain.prepared().2, format!("EXECUTE {}", plain.prepared().0));
        assert_ne!(plain.prepared().0, name);
    }

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
