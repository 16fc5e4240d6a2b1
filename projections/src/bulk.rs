//! A PostgreSQL rebuild's bulk loads: `COPY … FROM STDIN` into the rebuild's shadow tables over
//! a connection of its own. COPY is what PostgreSQL loads rows fastest with; an INSERT of the
//! same rows from array parameters spends most of its time parsing the arrays, materializing
//! their `unnest` and checking each row for a conflict before inserting it (measured on 100 000
//! findings: ~0.6 s by COPY against ~3.1 s by INSERT, PostgreSQL's time alone). sqlx's `Any`
//! connections cannot COPY, so
//! the loads go over a native connection whose search path starts with the shadow schema, as the
//! replay's own connection's does.

use sqlx::any::AnyConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgCopyIn, Postgres};
use sqlx::{ConnectOptions, Connection, Transaction};

use crate::ProjectionError;

/// Rows in PostgreSQL's COPY text format.
#[derive(Default)]
pub(crate) struct CopyRows {
    data: Vec<u8>,
}

impl CopyRows {
    /// Adds a row: each field's text, `None` for NULL.
    pub(crate) fn row<'a>(&mut self, fields: impl IntoIterator<Item = Option<&'a str>>) {
        for (i, field) in fields.into_iter().enumerate() {
            if i > 0 {
                self.data.push(b'\t');
            }
            match field {
                None => self.data.extend_from_slice(b"\\N"),
                Some(text) => push_escaped(&mut self.data, text),
            }
        }
        self.data.push(b'\n');
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// `text` as a field of the text format: backslash, tab, newline and carriage return escaped,
/// everything else as it is (UTF-8, the connection's encoding).
fn push_escaped(out: &mut Vec<u8>, text: &str) {
    let escaped = |byte: &u8| matches!(byte, b'\\' | b'\t' | b'\n' | b'\r');
    // Most texts have none of them: copied in one go.
    if !text.as_bytes().iter().any(escaped) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    for byte in text.bytes() {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(byte),
        }
    }
}

/// The rebuild's loading connection.
pub struct BulkLoad {
    conn: PgConnection,
    /// Rows loaded (committed) so far.
    loaded: u64,
}

impl BulkLoad {
    /// Connects with `options` (a PostgreSQL store's), with `search_path` as its search path.
    pub async fn connect(options: &AnyConnectOptions, search_path: &str) -> Result<Self, ProjectionError> {
        let options = PgConnectOptions::try_from(options)?;
        let mut conn = options.connect().await?;
        sqlx::query("SELECT set_config('search_path', $1, false)")
            .bind(search_path)
            .execute(&mut conn)
            .await?;
        // Nothing but the replay writes the shadows, so a COPY that waits for a lock waits for
        // the replay's own transaction, which waits for the COPY: an error, not a hang.
        sqlx::query("SET lock_timeout = '10s'").execute(&mut conn).await?;
        Ok(Self { conn, loaded: 0 })
    }

    /// Starts a load: COPYs in one transaction.
    pub(crate) async fn begin(&mut self) -> Result<Load<'_>, ProjectionError> {
        Ok(Load { tx: self.conn.begin().await?, loaded: &mut self.loaded, rows: 0 })
    }

    /// Rows loaded so far, every table's.
    pub fn rows_loaded(&self) -> u64 {
        self.loaded
    }

    pub(crate) async fn close(self) -> Result<(), ProjectionError> {
        Ok(self.conn.close().await?)
    }
}

/// COPYs in one transaction; dropped without `commit`, none of them is kept.
pub(crate) struct Load<'c> {
    tx: Transaction<'c, Postgres>,
    loaded: &'c mut u64,
    rows: u64,
}

impl Load<'_> {
    /// Starts a COPY into `table (columns)`.
    pub(crate) async fn copy(&mut self, table: &str, columns: &str) -> Result<CopyIn<'_>, ProjectionError> {
        let stream = self.tx.copy_in_raw(&format!("COPY {table} ({columns}) FROM STDIN")).await?;
        Ok(CopyIn { stream, rows: &mut self.rows })
    }

    pub(crate) async fn commit(self) -> Result<(), ProjectionError> {
        self.tx.commit().await?;
        *self.loaded += self.rows;
        Ok(())
    }
}

/// A COPY under way: its rows are sent piece by piece, so that the server inserts a piece while
/// the next is built.
pub(crate) struct CopyIn<'a> {
    stream: PgCopyIn<&'a mut PgConnection>,
    rows: &'a mut u64,
}

impl CopyIn<'_> {
    pub(crate) async fn send(&mut self, rows: CopyRows) -> Result<(), ProjectionError> {
        self.stream.send(rows.data).await?;
        Ok(())
    }

    /// Ends the COPY. False when the database refused a row (a constraint: the rows are not new,
    /// which the caller's INSERT path handles); the load must then be dropped. Any other
    /// failure is an error.
    pub(crate) async fn finish(self) -> Result<bool, ProjectionError> {
        match self.stream.finish().await {
            Ok(rows) => {
                *self.rows += rows;
                Ok(true)
            }
            Err(sqlx::Error::Database(error)) if error.code().is_some_and(|code| code.starts_with("23")) => {
                tracing::debug!(%error, "a bulk load was refused; inserting instead");
                Ok(false)
            }
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_escaped_for_the_text_format() {
        let mut rows = CopyRows::default();
        rows.row([Some("tab\there"), None, Some("back\\slash\nnew\rline é")]);
        rows.row([Some(""), Some("\\N"), Some("plain")]);
        assert_eq!(
            String::from_utf8(rows.data).unwrap(),
            "tab\\there\t\\N\tback\\\\slash\\nnew\\rline é\n\t\\\\N\tplain\n"
        );
    }
}
