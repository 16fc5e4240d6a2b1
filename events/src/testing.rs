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
