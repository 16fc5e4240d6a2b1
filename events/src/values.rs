//! Multi-row statements: SQLite's `VALUES` lists, and PostgreSQL array literals that carry a
//! whole column as one parameter.

/// SQLite: `(?, ?), (?, ?)` for `rows` rows of `columns` parameters. Anonymous `?`, because sqlx
/// looks each numbered SQLite parameter up by name, a scan of the parameter list, so binding the
/// thousands of a multi-row INSERT would be quadratic.
pub(crate) fn sqlite_values(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// `rows` in chunks whose sizes are powers of two, largest first, none above `max` (a power of
/// two): a multi-row statement then has one text per size, which stays prepared, so no batch
/// size costs a parse; a batch takes one statement per set bit of its size.
pub(crate) fn power_of_two_chunks<T>(mut rows: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let len = rows.len().checked_ilog2()?;
        let (chunk, rest) = rows.split_at(max.min(1 << len));
        rows = rest;
        Some(chunk)
    })
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

/// A PostgreSQL string literal of `text` in the escape syntax (`E'…'`), which reads the same
/// whatever `standard_conforming_strings` says: every backslash and quote doubled.
pub fn string_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str("E'");
    for ch in text.chars() {
        if ch == '\\' || ch == '\'' {
            out.push(ch);
        }
        out.push(ch);
    }
    out.push('\'');
    out
}

/// A PostgreSQL array literal of integers.
pub fn int_array(values: impl Iterator<Item = i64>) -> String {
    int_or_null_array(values.map(Some))
}

/// A PostgreSQL array literal of integers, `NULL` for `None`.
pub fn int_or_null_array(values: impl Iterator<Item = Option<i64>>) -> String {
    let values: Vec<String> =
        values.map(|v| v.map_or_else(|| "NULL".to_owned(), |v| v.to_string())).collect();
    format!("{{{}}}", values.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_placeholders_are_anonymous() {
        assert_eq!(sqlite_values(2, 2), "(?, ?), (?, ?)");
        assert_eq!(sqlite_values(1, 3), "(?, ?, ?)");
        assert_eq!(sqlite_values(0, 2), "");
    }

    #[test]
    fn chunks_are_powers_of_two_largest_first() {
        let rows: Vec<usize> = (0..1100).collect();
        let sizes = |n: usize| power_of_two_chunks(&rows[..n], 512).map(<[usize]>::len).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(11), [8, 2, 1]);
        assert_eq!(sizes(64), [64]);
        assert_eq!(sizes(1100), [512, 512, 64, 8, 4]);
        let joined: Vec<usize> = power_of_two_chunks(&rows, 512).flatten().copied().collect();
        assert_eq!(joined, rows);
    }

    #[test]
    fn string_literals_double_every_quote_and_backslash() {
        assert_eq!(string_literal(""), "E''");
        assert_eq!(string_literal(r"it's"), r"E'it''s'");
        assert_eq!(string_literal(r"a\'b"), r"E'a\\''b'");
        assert_eq!(string_literal(r#"{"x\"y"}"#), r#"E'{"x\\"y"}'"#);
    }

    #[test]
    fn array_literals_quote_every_text() {
        let texts = [Some("a"), None, Some("NULL"), Some(r#"q"u\o{t,e} "#)];
        assert_eq!(text_array(texts.into_iter()), r#"{"a",NULL,"NULL","q\"u\\o{t,e} "}"#);
        assert_eq!(text_array(std::iter::empty()), "{}");
        assert_eq!(int_array([-1, 0, 42].into_iter()), "{-1,0,42}");
        assert_eq!(int_or_null_array([Some(7), None].into_iter()), "{7,NULL}");
    }
}
