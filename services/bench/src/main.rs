//! `pwnbook-bench`: starts `pwnbook` on a fresh database, seeds it through the API, drives load
//! over real HTTP on loopback (bounded in requests and time), and prints one table with the
//! baselines of the same run. See services/bench/README.md.

mod baselines;
mod cpu;
mod load;
mod server;

use std::sync::{Arc, Mutex};
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
    /// Operations per workload and concurrency.
    #[arg(long, default_value = "2000")]
    requests: u64,
    /// Findings seeded (over 100 engagements) for the list workloads.
    #[arg(long, default_value = "100000")]
    findings: u64,
    /// Upper bound on each workload's duration, in seconds.
    #[arg(long, default_value = "60")]
    max_seconds: u64,
    /// Print the table as JSON.
    #[arg(long)]
    json: bool,
    /// Run only the command workloads (for profiling the write path).
    #[arg(long)]
    commands_only: bool,
    /// The command workloads' concurrencies (repeatable; default 1, 16 and 64), e.g. to A/B one
    /// of them; the mix runs at those of 16 and 64 given.
    #[arg(long = "concurrency")]
    concurrencies: Vec<usize>,
    /// Keep the database at the end (its URL is printed), e.g. to profile a rebuild.
    #[arg(long)]
    keep_database: bool,
}

const ENGAGEMENTS: usize = 100;
const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "info"];

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let binary = server::pwnbook_binary()?;
    let database = server::fresh_database(args.postgres.as_deref()).await?;
    let server = server::start(&database.url, &binary).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().map_err(|e| e.to_string())?;
    let http = Arc::new(Http { client, base: server.base.clone(), key: server.key.clone() });
    let max_time = Duration::from_secs(args.max_seconds);
    let mut rows: Vec<Measurement> = Vec::new();

    let mut engagements = Vec::with_capacity(ENGAGEMENTS);
    for i in 0..ENGAGEMENTS {
        let created = http.post("/api/v1/engagements", &json!({"name": format!("Engagement {i:03}")})).await;
        engagements.push(
            created
                .and_then(|v| v["data"]["id"].as_str().map(str::to_owned))
                .ok_or("seeding engagements failed")?,
        );
    }
    let engagements = Arc::new(engagements);
    let findings: Arc<Mutex<Vec<(String, &'static str)>>> = Arc::default();

    // 1. Commands.
    let concurrencies =
        if args.concurrencies.is_empty() { vec![1, 16, 64] } else { args.concurrencies.clone() };
    for &concurrency in &concurrencies {
        rows.push(baselines::raw_inserts(&database.url, concurrency, args.requests, max_time).await?);
        let (http, engagements, findings) = (http.clone(), engagements.clone(), findings.clone());
        rows.push(
            load::run(
                &format!("create finding c{concurrency}"),
                concurrency,
                args.requests,
                max_time,
                move |i| {
                    let (http, engagements, findings) = (http.clone(), engagements.clone(), findings.clone());
                    async move { create_finding(&http, &engagements, &findings, i).await }
                },
            )
            .await,
        );
    }
    for concurrency in [16, 64].into_iter().filter(|c| concurrencies.contains(c)) {
        let (http, engagements, findings) = (http.clone(), engagements.clone(), findings.clone());
        rows.push(
            load::run(
                &format!("mix 70/20/10 c{concurrency}"),
                concurrency,
                args.requests,
                max_time,
                move |i| {
                    let (http, engagements, findings) = (http.clone(), engagements.clone(), findings.clone());
                    async move {
                        match i % 10 {
                            0..=6 => create_finding(&http, &engagements, &findings, i).await,
                            7 | 8 => update_finding(&http, &findings, i).await,
                            _ => transition_finding(&http, &findings, i).await,
                        }
                    }
                },
            )
            .await,
        );
    }

    if args.commands_only {
        let peak = server.peak_rss_mib();
        server.stop().await;
        report(&rows, -1, peak, args.json);
        return finish(database, args.keep_database).await;
    }

    // 2. Lists over `--findings` findings.
    let started = Instant::now();
    let have = findings.lock().map(|f| f.len() as u64).unwrap_or(0);
    let seed = {
        let (http, engagements, findings) = (http.clone(), engagements.clone(), findings.clone());
        load::run("seed findings c64", 64, args.findings.saturating_sub(have), max_time * 20, move |i| {
            let (http, engagements, findings) = (http.clone(), engagements.clone(), findings.clone());
            async move { create_finding(&http, &engagements, &findings, i + 1_000_000).await }
        })
        .await
    };
    eprintln!("seeded {} findings in {:.0} s", seed.requests - seed.errors, started.elapsed().as_secs_f64());
    rows.push(seed);
    let organization_id = http
        .get("/api/v1/organizations/current")
        .await
        .and_then(|v| v["data"]["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let total_high = http
        .get("/api/v1/findings?severity=high&perPage=1")
        .await
        .and_then(|v| v["meta"]["total"].as_i64())
        .unwrap_or(-1);
    rows.push(
        baselines::naive_read(
            &database.url,
            baselines::NaiveRead {
                label: "high by CVSS page 2 + count(*)",
                page_sql: "SELECT * FROM findings WHERE organization_id = $1 AND severity = 'high' \
                           ORDER BY cvss_score DESC, id DESC LIMIT 20 OFFSET 20",
                count_sql: "SELECT COUNT(*) FROM findings WHERE organization_id = $1 AND severity = 'high'",
                organization_id,
            },
            16,
            args.requests,
            max_time,
        )
        .await?,
    );
    let lists: [(&str, String); 3] = [
        (
            "list high by CVSS page 2",
            "/api/v1/findings?severity=high&sort=cvssScore&order=desc&page=2".to_owned(),
        ),
        ("list deep cursor page", deep_cursor(&http).await.unwrap_or_else(|| "/api/v1/findings".to_owned())),
        (
            "list engagement by severity",
            format!("/api/v1/engagements/{}/findings?sort=severity&order=desc", engagements[0]),
        ),
    ];
    for (label, path) in lists {
        let http = http.clone();
        let path = Arc::new(path);
        rows.push(
            load::run(&format!("{label} c16"), 16, args.requests, max_time, move |_| {
                let (http, path) = (http.clone(), path.clone());
                async move { http.get(&path).await.is_some() }
            })
            .await,
        );
    }
    let health = http.clone();
    rows.push(
        load::run("baseline (c): GET /healthz c16", 16, args.requests * 5, max_time, move |_| {
            let http = health.clone();
            async move {
                http.client
                    .get(format!("{}/healthz", http.base))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await,
    );

    // 3. The event feed, whole.
    rows.push(read_feed(&http, false).await);
    rows.push(read_feed(&http, true).await);
    let peak = server.peak_rss_mib();
    server.stop().await;

    // 4. Rebuild of the whole store (server stopped: the CLI has the database to itself).
    let events = rows.iter().find(|r| r.operation == "feed JSON pages").map_or(0, |r| r.requests);
    let job = load::Job::start();
    let rebuilt = tokio::process::Command::new(&binary)
        .args(["projections", "rebuild"])
        .env("DATABASE_URL", &database.url)
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| e.to_string())?;
    if rebuilt.success() {
        rows.push(job.done("projections rebuild (events/s)", events));
    }
    report(&rows, total_high, peak, args.json);
    finish(database, args.keep_database).await
}

/// Drops the run's database unless it is to be kept.
async fn finish(database: server::Database, keep: bool) -> Result<(), String> {
    if keep {
        eprintln!("kept the database: {}", database.keep());
        return Ok(());
    }
    database.drop_database().await
}

struct Http {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl Http {
    async fn send(&self, request: reqwest::RequestBuilder) -> Option<Value> {
        let response = request.bearer_auth(&self.key).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    async fn post(&self, path: &str, body: &Value) -> Option<Value> {
        self.send(self.client.post(format!("{}{path}", self.base)).json(body)).await
    }

    async fn get(&self, path: &str) -> Option<Value> {
        self.send(self.client.get(format!("{}{path}", self.base))).await
    }
}

/// A finding with a CVSS vector (the server scores it) in one of the engagements.
async fn create_finding(
    http: &Http,
    engagements: &[String],
    findings: &Mutex<Vec<(String, &'static str)>>,
    i: u64,
) -> bool {
    let engagement = &engagements[(i as usize) % engagements.len()];
    let severity = SEVERITIES[(i as usize / 7) % SEVERITIES.len()];
    let vector = format!(
        "CVSS:3.1/AV:N/AC:{}/PR:N/UI:N/S:U/C:H/I:{}/A:N",
        if i.is_multiple_of(2) { "L" } else { "H" },
        if i.is_multiple_of(3) { "H" } else { "L" }
    );
    let body = json!({"title": format!("Finding {i}"), "severity": severity, "cvss": {"vector": vector}, "tags": ["bench"]});
    let created = http.post(&format!("/api/v1/engagements/{engagement}/findings"), &body).await;
    match created.and_then(|v| v["data"]["id"].as_str().map(str::to_owned)) {
        Some(id) => {
            if let Ok(mut findings) = findings.lock() {
                findings.push((id, "draft"));
            }
            true
        }
        None => false,
    }
}

fn pick(findings: &Mutex<Vec<(String, &'static str)>>, i: u64) -> Option<(usize, String, &'static str)> {
    let findings = findings.lock().ok()?;
    let index = (i as usize).wrapping_mul(2_654_435_761) % findings.len().max(1);
    findings.get(index).map(|(id, status)| (index, id.clone(), *status))
}

async fn update_finding(http: &Http, findings: &Mutex<Vec<(String, &'static str)>>, i: u64) -> bool {
    let Some((_, id, _)) = pick(findings, i) else { return false };
    let request = http
        .client
        .patch(format!("{}/api/v1/findings/{id}", http.base))
        .json(&json!({"description": format!("Updated {i}")}));
    http.send(request).await.is_some()
}

/// draft → open → remediated → open …, following the documented lifecycle.
async fn transition_finding(http: &Http, findings: &Mutex<Vec<(String, &'static str)>>, i: u64) -> bool {
    let Some((index, id, status)) = pick(findings, i) else { return false };
    let next = if status == "open" { "remediated" } else { "open" };
    let moved =
        http.post(&format!("/api/v1/findings/{id}/transition"), &json!({"status": next})).await.is_some();
    if moved {
        if let Ok(mut findings) = findings.lock() {
            if let Some(entry) = findings.get_mut(index) {
                entry.1 = next;
            }
        }
    }
    moved
}

/// A cursor half way through the whole finding list.
async fn deep_cursor(http: &Http) -> Option<String> {
    let total = http.get("/api/v1/findings?perPage=1").await?["meta"]["total"].as_i64()?;
    let page = (total / 2 / 100).max(1);
    let cursor = http.get(&format!("/api/v1/findings?perPage=100&page={page}")).await?["meta"]["nextCursor"]
        .as_str()?
        .to_owned();
    Some(format!("/api/v1/findings?cursor={cursor}"))
}

/// Reads the organization's whole log through `GET /events` (JSON pages or NDJSON).
async fn read_feed(http: &Http, ndjson: bool) -> Measurement {
    let job = load::Job::start();
    let mut events = 0_u64;
    if ndjson {
        let request = http
            .client
            .get(format!("{}/api/v1/events", http.base))
            .bearer_auth(&http.key)
            .header("accept", "application/x-ndjson");
        if let Ok(mut response) = request.send().await {
            while let Ok(Some(chunk)) = response.chunk().await {
                events += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            }
        }
    } else {
        let mut after = 0;
        while let Some(page) = http.get(&format!("/api/v1/events?after={after}&limit=1000")).await {
            events += page["data"].as_array().map_or(0, |d| d.len() as u64);
            after = page["meta"]["nextAfter"].as_i64().unwrap_or(after);
            if !page["meta"]["hasMore"].as_bool().unwrap_or(false) {
                break;
            }
        }
    }
    job.done(if ndjson { "feed NDJSON (events/s)" } else { "feed JSON pages" }, events)
}

fn report(rows: &[Measurement], total_high: i64, peak_rss_mib: f64, as_json: bool) {
    let row = |name: &str| rows.iter().find(|r| r.operation == name);
    let throughput = |name: &str| row(name).map(|r| r.throughput);
    let mut ratios = Vec::new();
    // What a create costs the machine in CPU time against what a raw INSERT costs: with every
    // core busy, the throughput ratio could not exceed its inverse.
    let mut costs = Vec::new();
    for c in [1, 16, 64] {
        let (ours, raw) =
            (row(&format!("create finding c{c}")), row(&format!("baseline (a): raw INSERT c{c}")));
        let name = format!("create finding c{c} / raw INSERT c{c}");
        if let (Some(ours), Some(raw)) = (ours, raw) {
            ratios.push((name.clone(), ours.throughput / raw.throughput));
            if let (Some(ours), Some(raw)) = (ours.cpu_us_per_op, raw.cpu_us_per_op) {
                costs.push((name, ours / raw));
            }
        }
    }
    if let (Some(ours), Some(raw)) =
        (throughput("mix 70/20/10 c64"), throughput("baseline (a): raw INSERT c64"))
    {
        ratios.push(("mix c64 / raw INSERT c64".to_owned(), ours / raw));
    }
    if let (Some(ours), Some(naive)) = (
        throughput("list high by CVSS page 2 c16"),
        throughput("baseline (b): high by CVSS page 2 + count(*) c16"),
    ) {
        ratios.push(("list c16 / naive read c16".to_owned(), ours / naive));
    }
    if as_json {
        let body = json!({
            "rows": rows,
            "ratios": ratios.iter().map(|(name, value)| json!({"ratio": name, "value": value})).collect::<Vec<_>>(),
            "cpuCostRatios": costs.iter().map(|(name, value)| json!({"ratio": name, "value": value})).collect::<Vec<_>>(),
            "highFindingsTotal": total_high,
            "peakRssMiB": peak_rss_mib,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        });
        println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
        return;
    }
    println!(
        "| operation | concurrency | requests | errors | throughput/s | p50 ms | p95 ms | p99 ms | CPU busy % | CPU µs/op |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let or_dash = |value: Option<f64>| value.map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"));
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
            row.operation,
            row.concurrency,
            row.requests,
            row.errors,
            row.throughput,
            row.p50_ms,
            row.p95_ms,
            row.p99_ms,
            or_dash(row.cpu_busy_pct),
            or_dash(row.cpu_us_per_op),
        );
    }
    println!("\nhigh findings (meta.total): {total_high}; server peak RSS: {peak_rss_mib:.1} MiB");
    for (name, value) in ratios {
        println!("ratio {name}: {value:.2}");
    }
    for (name, value) in costs {
        println!("CPU per operation {name}: {value:.2}");
    }
}
