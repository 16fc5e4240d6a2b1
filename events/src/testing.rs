//! Fresh databases for tests: a SQLite file in a temporary directory, or a new PostgreSQL
//! database on the server named by `PWNBOOK_TEST_POSTGRES_URL`.
//!
//! Without that variable PostgreSQL tests are skipped (with a note on stderr), unless
//! `PWNBOOK_REQUIRE_POSTGRES=1`, as CI sets, which turns a missing server into a failure.

use sqlx::Connection;

use crate::finding::FindingCreated;

/// A draft finding with only a title and a severity, as a test's creation event carries it.
pub fn draft_finding(
    organization_id: &str,
    engagement_id: &str,
    title: &str,
    severity: &str,
) -> FindingCreated {
    FindingCreated {
        organization_id: organization_id.to_owned(),
        engagement_id: engagement_id.to_owned(),
        title: title.to_owned(),
        severity: severity.to_owned(),
        cvss: None,
        cwe: vec![],
        cve: vec![],
        description: None,
        impact: None,
        remediation: None,
        steps_to_reproduce: None,
        references: vec![],
        affected_target_ids: vec![],
        status: "draft".to_owned(),
        review_status: "in_progress".to_owned(),
        retest_notes: None,
        tags: vec![],
    }
}

pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
        let url = format!("sqlite://{}", dir.path().join("pwnbook.db").display());
        Self { url, _dir: Some(dir), postgres: None }
    }

    pub async fn postgres() -> Option<Self> {
        let Ok(admin_url) = std::env::var("PWNBOOK_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var("PWNBOOK_REQUIRE_POSTGRES").is_err(),
                "PWNBOOK_REQUIRE_POSTGRES is set but PWNBOOK_TEST_POSTGRES_URL is not"
            );
            eprintln!("PostgreSQL test skipped: PWNBOOK_TEST_POSTGRES_URL is not set");
            return None;
        };
        let name =
            format!("pwnbook_test_{}", crate::Id::generate(crate::IdKind::Event).as_str()[4..].to_owned());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at PWNBOOK_TEST_POSTGRES_URL: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("create test database: {e}"));
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        Some(Self { url, _dir: None, postgres: Some((admin_url, name)) })
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else { return };
        // Drop runs outside any runtime guarantee, so the clean-up gets a small runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// Declares each test twice, `<name>::sqlite` and `<name>::postgres`, running the same body
/// against a fresh database of each backend.
#[macro_export]
macro_rules! backend_tests {
    ($(async fn $name:ident($db:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn run($db: $crate::testing::TestDb) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    run($crate::testing::TestDb::sqlite()).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    if let Some(db) = $crate::testing::TestDb::postgres().await {
                        run(db).await
                    }
                }
            }
        )*
    };
}

/// What `CommitCutter` does to the next COMMIT of a connection that appended events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The COMMIT reaches the database, then the connection is cut before its answer returns.
    AnswerLost,
    /// The connection is cut instead of passing the COMMIT on: the database never sees it.
    RequestLost,
}

/// A TCP relay in front of PostgreSQL that can cut a connection at the COMMIT of an append, as
/// a network failure would: clients connect to `url` (TLS off, so that the relay reads the
/// statements), everything else passes through untouched.
pub struct CommitCutter {
    pub url: String,
    armed: std::sync::Arc<std::sync::Mutex<Option<Cut>>>,
    fired: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    relay: tokio::task::JoinHandle<()>,
}

impl CommitCutter {
    /// Relays to the PostgreSQL server of `url` (a test database's).
    pub async fn start(url: &str) -> Self {
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let after_at = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let upstream = after_at.split(['/', '?']).next().unwrap_or(after_at).to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("relay listener: {e}"));
        let local = listener.local_addr().unwrap_or_else(|e| panic!("relay address: {e}"));
        let proxied = url.replacen(&upstream, &local.to_string(), 1);
        let separator = if proxied.contains('?') { '&' } else { '?' };
        let armed = std::sync::Arc::new(std::sync::Mutex::new(None));
        let fired = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (relay_armed, relay_fired) = (armed.clone(), fired.clone());
        let relay = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { continue };
                tokio::spawn(relay_connection(client, server, relay_armed.clone(), relay_fired.clone()));
            }
        });
        Self { url: format!("{proxied}{separator}sslmode=disable"), armed, fired, relay }
    }

    /// Cuts the next COMMIT of an appending connection as `cut` says.
    pub fn arm(&self, cut: Cut) {
        *self.armed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(cut);
    }

    /// How many connections were cut so far.
    pub fn cuts(&self) -> usize {
        self.fired.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CommitCutter {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

/// Relays one connection until either side closes, or a cut ends it (dropping both sockets).
async fn relay_connection(
    mut client: tokio::net::TcpStream,
    mut server: tokio::net::TcpStream,
    armed: std::sync::Arc<std::sync::Mutex<Option<Cut>>>,
    fired: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let contains = |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    let (mut from_client, mut to_client) = client.split();
    let (mut from_server, mut to_server) = server.split();
    let (mut up, mut down) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let (mut appends, mut answer_lost) = (false, false);
    loop {
        tokio::select! {
            read = from_client.read(&mut up) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                let chunk = &up[..n];
                appends |= contains(chunk, b"INSERT INTO events") || contains(chunk, b"pwnbook_append_sequenced");
                if appends && contains(chunk, b"COMMIT") {
                    let cut = armed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                    match cut {
                        Some(Cut::RequestLost) => {
                            fired.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            return;
                        }
                        Some(Cut::AnswerLost) => answer_lost = true,
                        None => {}
                    }
                }
                if to_server.write_all(chunk).await.is_err() {
                    return;
                }
            }
            read = from_server.read(&mut down) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                if answer_lost {
                    fired.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
                if to_client.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
