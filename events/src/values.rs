//! Multi-row `VALUES` lists with the placeholders each backend binds fastest.

use crate::Backend;

/// `(…), (…)` for `rows` rows of one parameter per column. SQLite gets anonymous `?`: sqlx looks
/// each numbered SQLite parameter up by name, a scan of the parameter list, so binding the
/// thousands of a multi-row INSERT would be quadratic. PostgreSQL gets `$n`, wrapped in the
/// column's template (`{}` for the bare placeholder, e.g. `CAST({} AS json)` for JSON text).
pub(crate) fn values(backend: Backend, rows: usize, columns: &[&str]) -> String {
    let mut sql = String::new();
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for (column, template) in columns.iter().enumerate() {
            if column > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push_str(&template.replace("{}", &format!("${}", row * columns.len() + column + 1)))
                }
            }
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_across_rows_on_postgres_and_anonymous_on_sqlite() {
        let columns = ["{}", "CAST({} AS json)"];
        assert_eq!(values(Backend::Postgres, 2, &columns), "($1, CAST($2 AS json)), ($3, CAST($4 AS json))");
        assert_eq!(values(Backend::Sqlite, 2, &columns), "(?, ?), (?, ?)");
        assert_eq!(values(Backend::Sqlite, 0, &columns), "");
    }
}
