//! `pwnbook-bench`: starts `pwnbook` on a fresh database, seeds it through the API, drives load
//! over real HTTP on loopback (bounded in requests and time), and prints one table with the
//! baselines of the same run. See services/bench/README.md.

mod baselines;
mod load;
mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use load::Measurement;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(name = "pwnbook-bench", about = "Measure Pwnbook against baselines taken in the same run.")]
struct Args {
    /// Run on a fresh database of this PostgreSQL server (admin URL) instead of a SQLite file.
    #[arg(long, env = "PWNBOOK_BENCH_POSTGRES_URL")]
    postgres: Option<String>,
    /// Operations per command workload and concurrency.
    #[arg(long, default_value = "2000")]
    requests: u64,
    /// Rows seeded for the list workloads.
    #[arg(long, default_value = "100000")]
    rows: u64,
    /// Upper bound on each workload's duration, in seconds.
    #[arg(long, default_value = "60")]
    max_seconds: u64,
    /// Print the table as JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let binary = server::pwnbook_binary()?;
    let database = server::fresh_database(args.postgres.as_deref()).await?;
    let server = server::start(&database.url, &binary).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(128).build().map_err(|e| e.to_string())?;
    let http = Arc::new(Http { client, base: server.base.clone(), key: server.key.clone() });
    let max_time = Duration::from_secs(args.max_seconds);
    let mut rows: Vec<Measurement> = Vec::new();

    for concurrency in [1, 16, 64] {
        rows.push(baselines::raw_inserts(&database.url, concurrency, args.requests, max_time).await?);
        let http = http.clone();
        let run: u32 = rand::random();
        rows.push(
            load::run(
                &format!("create engagement c{concurrency}"),
                concurrency,
                args.requests,
                max_time,
                move |i| {
                    let http = http.clone();
                    async move {
                        http.post("/api/v1/engagements", &json!({"name": format!("bench {run} {i}")}))
                            .await
                            .is_some()
                    }
                },
            )
            .await,
        );
    }

    let seeded = seed(&http, args.rows, max_time * 10).await;
    let organization_id = http
        .get("/api/v1/organizations/current")
        .await
        .and_then(|v| v["data"]["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    for concurrency in [16] {
        rows.push(
            baselines::naive_read(
                &database.url,
                baselines::NaiveRead {
                    label: "page 2 by name + count(*)",
                    page_sql: "SELECT id, name, description, status, client_name, start_date, end_date, tags, archived_at, \
                               created_at, updated_at, version FROM engagements WHERE organization_id = $1 AND status = 'active' \
                               ORDER BY name_key ASC, id ASC LIMIT 20 OFFSET 20",
                    count_sql: "SELECT COUNT(*) FROM engagements WHERE organization_id = $1 AND status = 'active'",
                    organization_id: organization_id.clone(),
                },
                concurrency,
                args.requests,
                max_time,
            )
            .await?,
        );
        let http_list = http.clone();
        rows.push(
            load::run(
                &format!("list page 2 by name c{concurrency}"),
                concurrency,
                args.requests,
                max_time,
                move |_| {
                    let http = http_list.clone();
                    async move {
                        http.get("/api/v1/engagements?status=active&sort=name&order=asc&page=2")
                            .await
                            .is_some_and(|v| v["meta"]["total"].as_i64().is_some())
                    }
                },
            )
            .await,
        );
        let http_health = http.clone();
        rows.push(
            load::run(
                &format!("baseline (c): GET /healthz c{concurrency}"),
                concurrency,
                args.requests * 5,
                max_time,
                move |_| {
                    let http = http_health.clone();
                    async move {
                        http.client
                            .get(format!("{}/healthz", http.base))
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success())
                    }
                },
            )
            .await,
        );
    }
    let peak = server.peak_rss_mib();
    server.stop().await;
    report(&rows, seeded, peak, args.json);
    Ok(())
}

struct Http {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl Http {
    async fn post(&self, path: &str, body: &Value) -> Option<Value> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let response =
            self.client.get(format!("{}{path}", self.base)).bearer_auth(&self.key).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }
}

/// Seeds `rows` engagements through the API at concurrency 64; returns how many were created.
async fn seed(http: &Arc<Http>, rows: u64, max_time: Duration) -> u64 {
    let started = Instant::now();
    let http = http.clone();
    let measured = load::run("seed", 64, rows, max_time, move |i| {
        let http = http.clone();
        async move {
            http.post(
                "/api/v1/engagements",
                &json!({"name": format!("seeded {i:08}"), "tags": [format!("t{}", i % 100)]}),
            )
            .await
            .is_some()
        }
    })
    .await;
    eprintln!(
        "seeded {} rows in {:.1} s",
        measured.requests - measured.errors,
        started.elapsed().as_secs_f64()
    );
    measured.requests - measured.errors
}

fn report(rows: &[Measurement], seeded: u64, peak_rss_mib: f64, as_json: bool) {
    if as_json {
        let body = json!({ "rows": rows, "seededRows": seeded, "peakRssMiB": peak_rss_mib, "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) });
        println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
        return;
    }
    println!("| operation | concurrency | requests | errors | throughput/s | p50 ms | p95 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
            row.operation,
            row.concurrency,
            row.requests,
            row.errors,
            row.throughput,
            row.p50_ms,
            row.p95_ms,
            row.p99_ms
        );
    }
    println!("\nseeded rows: {seeded}; server peak RSS: {peak_rss_mib:.1} MiB");
    let find = |prefix: &str| rows.iter().find(|r| r.operation.starts_with(prefix)).map(|r| r.throughput);
    for c in [1, 16, 64] {
        if let (Some(ours), Some(raw)) =
            (find(&format!("create engagement c{c}")), find(&format!("baseline (a): raw INSERT c{c}")))
        {
            println!("ratio create c{c} / raw INSERT c{c}: {:.2}", ours / raw);
        }
    }
    if let (Some(ours), Some(naive)) = (find("list page 2 by name c16"), find("baseline (b)")) {
        println!("ratio list c16 / naive read c16: {:.2}", ours / naive);
    }
}
