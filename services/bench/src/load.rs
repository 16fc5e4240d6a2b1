//! A bounded closed-loop load driver: `concurrency` workers share `requests` operations and stop
//! early at `max_time`. Latencies are kept whole (the counts are bounded) for exact percentiles.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cpu::{CpuClock, CpuUse};

/// One measured row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub operation: String,
    pub concurrency: usize,
    pub requests: u64,
    pub errors: u64,
    /// Operations per second (or events per second for whole-log workloads).
    pub throughput: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Share of the machine's cores busy during the workload (every process), in percent.
    pub cpu_busy_pct: Option<f64>,
    /// The machine's CPU time per operation (or per event), in microseconds.
    pub cpu_us_per_op: Option<f64>,
}

impl Measurement {
    /// `operations` done in `elapsed` (per second, and the CPU time each), with the latencies
    /// (sorted) for the percentiles.
    fn new(
        operation: &str,
        concurrency: usize,
        operations: u64,
        latencies: &[Duration],
        elapsed: Duration,
        cpu: Option<CpuUse>,
    ) -> Self {
        let pct = |p: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[index].as_secs_f64() * 1000.0
        };
        Self {
            operation: operation.to_owned(),
            concurrency,
            requests: operations,
            errors: 0,
            throughput: operations as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_ms: pct(0.50),
            p95_ms: pct(0.95),
            p99_ms: pct(0.99),
            cpu_busy_pct: cpu.map(|cpu| cpu.busy_pct),
            cpu_us_per_op: cpu
                .filter(|_| operations > 0)
                .map(|cpu| cpu.busy_seconds * 1_000_000.0 / operations as f64),
        }
    }
}

pub async fn run<F, Fut>(
    operation: &str,
    concurrency: usize,
    requests: u64,
    max_time: Duration,
    op: F,
) -> Measurement
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu = CpuClock::now();
    let started = Instant::now();
    let deadline = started + max_time;
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (op, next, errors) = (op.clone(), next.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests || Instant::now() >= deadline {
                    return latencies;
                }
                let t = Instant::now();
                if !op(i).await {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap_or_default());
    }
    let elapsed = started.elapsed();
    let used = cpu.and_then(|cpu| cpu.used());
    latencies.sort_unstable();
    let row = Measurement::new(operation, concurrency, latencies.len() as u64, &latencies, elapsed, used);
    Measurement { errors: errors.load(Ordering::Relaxed), ..row }
}

/// A single timed whole job (rebuild, full feed read): started now, `items` per second when
/// `Job::done`.
pub struct Job {
    started: Instant,
    cpu: Option<CpuClock>,
}

impl Job {
    pub fn start() -> Self {
        Self { cpu: CpuClock::now(), started: Instant::now() }
    }

    pub fn done(self, operation: &str, items: u64) -> Measurement {
        let elapsed = self.started.elapsed();
        let used = self.cpu.and_then(|cpu| cpu.used());
        // One latency, the job's; the throughput and CPU time are per item.
        Measurement::new(operation, 1, items, &[elapsed], elapsed, used)
    }
}
