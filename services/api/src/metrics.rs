//! Prometheus metrics and the per-request log line.
//!
//! HTTP requests are counted and timed by matched route and status; commands by aggregate and
//! outcome (in the command service); projection and sequencer lag are read from the store when
//! `/metrics` is scraped, so they are right even when another process does the work.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use pwnbook_events::log;

use crate::error::ApiError;
use crate::request_id;
use crate::state::AppState;

/// The key a request was made with, for the request log (set by authentication).
#[derive(Debug, Clone)]
pub struct KeyId(pub String);

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once (several servers in one test process share it).
pub fn handle() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::warn!(%error, "metrics recorder not installed");
                None
            }
        })
        .as_ref()
}

/// Counts, times and logs one request.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let labels = [("method", method.clone()), ("route", route.clone()), ("status", status.to_string())];
    metrics::counter!("pwnbook_http_requests_total", &labels).increment(1);
    metrics::histogram!("pwnbook_http_request_duration_seconds", &labels[..2]).record(elapsed.as_secs_f64());
    let key_id = response.extensions().get::<KeyId>().map(|k| k.0.as_str()).unwrap_or("-");
    tracing::info!(
        request_id = request_id::current().as_deref().unwrap_or("-"),
        key_id,
        method,
        route,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// How far the slowest projector is behind the log head, in events.
pub async fn projection_lag(state: &AppState) -> Result<i64, ApiError> {
    let head = log::head(&state.store).await?;
    Ok(head - state.projections.lowest_checkpoint().await?)
}

/// `GET /metrics` in the Prometheus text format. The store's gauges are read at each scrape;
/// when the store cannot be read, `pwnbook_store_up` is 0 and the rest (the requests and
/// commands counted in memory) is still served, since that is when an operator needs it.
pub async fn render(State(state): State<AppState>) -> Response {
    let up = match store_gauges(&state).await {
        Ok(()) => 1,
        Err(error) => {
            tracing::warn!(%error, "metrics: the store's gauges could not be read");
            0
        }
    };
    // Written per answer rather than kept as a gauge: the recorder is shared by every server of
    // the process (tests), and this is the answering server's own store.
    let mut text = handle().map(PrometheusHandle::render).unwrap_or_default();
    text.push_str(&format!("# TYPE pwnbook_store_up gauge\npwnbook_store_up {up}\n"));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn store_gauges(state: &AppState) -> Result<(), ApiError> {
    let head = log::head(&state.store).await?;
    let unsequenced = log::unsequenced(&state.store).await?;
    metrics::gauge!("pwnbook_event_log_head").set(head as f64);
    metrics::gauge!("pwnbook_sequencer_lag_events").set(unsequenced as f64);
    for (name, position) in state.projections.checkpoints().await? {
        metrics::gauge!("pwnbook_projection_lag_events", "projector" => name).set((head - position) as f64);
    }
    Ok(())
}
