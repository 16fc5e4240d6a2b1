//! What the database and the HTTP stack can do on their own, measured in the same run so that
//! Pwnbook's figures can be read as ratios on this shared, noisy machine.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::load::{self, Measurement};

const PAYLOAD: &str = r#"{"finding.created":{"organizationId":"org_01j9k2m3n4p5q6r7s8t9","engagementId":"eng_01j9k2m3n4p5q6r7s8t9","title":"SQL injection in login form","severity":"high","description":"The username parameter is concatenated into a query."}}"#;
const METADATA: &str = r#"{"organizationId":"org_01j9k2m3n4p5q6r7s8t9","actorType":"api_key","actorId":"key_01j9k2m3n4p5q6r7s8t9","actorName":"bench"}"#;

/// (a) The physical write limit: one single-row INSERT transaction of an event-sized row per
/// operation, with the server's durability settings, at `concurrency`.
pub async fn raw_inserts(
    url: &str,
    concurrency: usize,
    requests: u64,
    max_time: Duration,
) -> Result<Measurement, String> {
    let create = "CREATE TABLE IF NOT EXISTS bench_events (aggregate_type TEXT NOT NULL, aggregate_id TEXT NOT NULL, \
                  sequence BIGINT NOT NULL, event_type TEXT NOT NULL, event_version TEXT NOT NULL, payload TEXT NOT NULL, \
                  metadata TEXT NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id, sequence))";
    let insert = "INSERT INTO bench_events VALUES ('finding', $1, 1, 'finding.created', '1', $2, $3)";
    let run_id: u32 = rand::random();
    let operation = format!("baseline (a): raw INSERT c{concurrency}");
    if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| e.to_string())?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(concurrency as u32)
            .connect_with(options)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query(create).execute(&pool).await.map_err(|e| e.to_string())?;
        Ok(load::run(&operation, concurrency, requests, max_time, move |i| {
            let pool = pool.clone();
            async move {
                sqlx::query(insert)
                    .bind(format!("fnd_{run_id}_{i}"))
                    .bind(PAYLOAD)
                    .bind(METADATA)
                    .execute(&pool)
                    .await
                    .is_ok()
            }
        })
        .await)
    } else {
        let pool = PgPoolOptions::new()
            .max_connections(concurrency as u32)
            .connect(url)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query(create).execute(&pool).await.map_err(|e| e.to_string())?;
        Ok(load::run(&operation, concurrency, requests, max_time, move |i| {
            let pool = pool.clone();
            async move {
                sqlx::query(insert)
                    .bind(format!("fnd_{run_id}_{i}"))
                    .bind(PAYLOAD)
                    .bind(METADATA)
                    .execute(&pool)
                    .await
                    .is_ok()
            }
        })
        .await)
    }
}

/// A list read as the naive implementation would do it.
pub struct NaiveRead {
    pub label: &'static str,
    /// The page query; `$1` is the organization id.
    pub page_sql: &'static str,
    /// `count(*)` with the same filter.
    pub count_sql: &'static str,
    pub organization_id: String,
}

/// (b) The naive read: the list's page query plus `count(*)`, issued directly.
pub async fn naive_read(
    url: &str,
    read: NaiveRead,
    concurrency: usize,
    requests: u64,
    max_time: Duration,
) -> Result<Measurement, String> {
    let NaiveRead { label, page_sql, count_sql, organization_id } = read;
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(concurrency as u32)
        .connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let operation = format!("baseline (b): {label} c{concurrency}");
    Ok(load::run(&operation, concurrency, requests, max_time, move |_| {
        let (pool, organization_id) = (pool.clone(), organization_id.clone());
        async move {
            let page = sqlx::query(page_sql).bind(&organization_id).fetch_all(&pool).await;
            let count = sqlx::query(count_sql).bind(&organization_id).fetch_one(&pool).await;
            page.is_ok() && count.is_ok()
        }
    })
    .await)
}
