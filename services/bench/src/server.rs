//! A fresh database and the real `pwnbook` server on it, with its peak memory watched.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct Database {
    pub url: String,
    dir: Option<tempfile::TempDir>,
    /// The admin URL and the name of a PostgreSQL database to drop at the end.
    postgres: Option<(String, String)>,
}

impl Database {
    /// Leaves the database in place (a SQLite file's directory is not removed).
    pub fn keep(self) -> String {
        if let Some(dir) = self.dir {
            let _ = dir.keep();
        }
        self.url
    }

    /// Drops the PostgreSQL database (SQLite files go with their temporary directory).
    pub async fn drop_database(self) -> Result<(), String> {
        let Some((admin, name)) = &self.postgres else { return Ok(()) };
        let mut connection = sqlx::PgConnection::connect(admin).await.map_err(|e| e.to_string())?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut connection)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// A new SQLite file, or a new database on the PostgreSQL server of `postgres_admin_url`.
pub async fn fresh_database(postgres_admin_url: Option<&str>) -> Result<Database, String> {
    match postgres_admin_url {
        None => {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            Ok(Database { url, dir: Some(dir), postgres: None })
        }
        Some(admin) => {
            let name = format!("pwnbook_bench_{}", rand::random::<u32>());
            let mut connection = sqlx::PgConnection::connect(admin).await.map_err(|e| e.to_string())?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut connection)
                .await
                .map_err(|e| e.to_string())?;
            // The admin URL's options (e.g. `?sslmode=disable`) apply to the bench database too.
            let (path, options) = admin.split_once('?').map_or((admin, ""), |(path, query)| (path, query));
            let base = path.rsplit_once('/').map_or(path, |(base, _)| base);
            let url = if options.is_empty() {
                format!("{base}/{name}")
            } else {
                format!("{base}/{name}?{options}")
            };
            Ok(Database { url, dir: None, postgres: Some((admin.to_owned(), name)) })
        }
    }
}

pub struct Server {
    pub base: String,
    pub key: String,
    child: Child,
    peak_rss_kib: Arc<AtomicU64>,
}

/// The `pwnbook` binary next to this one (both are built into the same target directory).
pub fn pwnbook_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = me.with_file_name("pwnbook");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} not found: build it with `cargo build --release --bin pwnbook`", path.display()))
    }
}

pub async fn start(database_url: &str, binary: &PathBuf) -> Result<Server, String> {
    let random: String = (0..40)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rand::random::<usize>() % 36]))
        .collect();
    let key = format!("pwbk_test_{random}");
    let mut child = Command::new(binary)
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("PWNBOOK_BIND", "127.0.0.1:0")
        .env("PWNBOOK_BOOTSTRAP_API_KEY", &key)
        .env("PWNBOOK_RATE_LIMIT_PER_MINUTE", "1000000000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| e.to_string())?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        match lines.next_line().await.map_err(|e| e.to_string())? {
            Some(line) => {
                if let Some(address) = line.strip_prefix("Pwnbook listening on ") {
                    break address.to_owned();
                }
            }
            None => return Err("the server exited before listening".to_owned()),
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let peak_rss_kib = Arc::new(AtomicU64::new(0));
    if let Some(pid) = child.id() {
        let peak = peak_rss_kib.clone();
        tokio::spawn(async move {
            while let Some(rss) = rss_kib(pid) {
                peak.fetch_max(rss, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    Ok(Server { base, key, child, peak_rss_kib })
}

/// Resident memory of `pid` in KiB, from /proc (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl Server {
    pub fn peak_rss_mib(&self) -> f64 {
        self.peak_rss_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
