//! Many rows in one statement: SQLite's multi-row `VALUES` lists, and PostgreSQL's array literals
//! (one parameter per column, `unnest`ed into rows: one statement text whatever the row count).

/// SQLite's `(?, ?), (?, ?)` for `rows` rows of `columns` parameters. Anonymous `?`: sqlx looks
/// each numbered SQLite parameter up by name, a scan of the parameter list, so binding the
/// thousands of a multi-row INSERT would be quadratic.
pub(crate) fn sqlite_rows(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// A PostgreSQL array literal of texts (`{"a","b",NULL}`): every element quoted, `"` and `\`
/// escaped, so any text (braces, commas, spaces, the word NULL) comes back as it was.
pub fn text_array<'a>(values: impl Iterator<Item = Option<&'a str>>) -> String {
    let mut out = String::from("{");
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        match value {
            None => out.push_str("NULL"),
            Some(value) => {
                out.push('"');
                for ch in value.chars() {
                    if ch == '"' || ch == '\\' {
                        out.push('\\');
                    }
                    out.push(ch);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
    out
}

/// A PostgreSQL array literal of integers.
pub fn int_array(values: impl Iterator<Item = i64>) -> String {
    let mut out = String::from("{");
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&value.to_string());
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_rows_are_anonymous_placeholders() {
        assert_eq!(sqlite_rows(2, 2), "(?, ?), (?, ?)");
        assert_eq!(sqlite_rows(1, 3), "(?, ?, ?)");
        assert_eq!(sqlite_rows(0, 2), "");
    }

    #[test]
    fn array_literals_quote_every_text() {
        let texts = [Some("a"), None, Some("NULL"), Some(r#"q"u\o{t,e} "#)];
        assert_eq!(text_array(texts.into_iter()), r#"{"a",NULL,"NULL","q\"u\\o{t,e} "}"#);
        assert_eq!(text_array(std::iter::empty()), "{}");
        assert_eq!(int_array([-1, 0, 42].into_iter()), "{-1,0,42}");
    }
}
