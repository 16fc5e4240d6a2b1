//! Starting the server: store, background sequencer and projectors, the router with its
//! middleware, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::{middleware, Router};
use pwnbook_commands::CommandService;
use pwnbook_events::sequencer;
use pwnbook_projections::runner::ProjectionHandle;
use pwnbook_projections::{all_projectors, runner, ProjectionRunner};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;

use crate::auth::{self, UsageTracker};
use crate::bootstrap::{first_start, open_store, sync_read_side, StartLock};
use crate::config::Settings;
use crate::key_cache::KeyCache;
use crate::rate_limit::RateLimits;
use crate::routes::scope::EngagementOwners;
use crate::state::{AppState, Shared};
use crate::visibility::Visibility;
use crate::webhooks::{self, DeliveryPolicy};
use crate::{envelope, metrics, oversize, request_id, routes, unread_body, StartError};

/// How often background workers look for work done by other processes.
const POLL: Duration = Duration::from_millis(100);

pub struct RunningServer {
    pub local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    /// The webhook dispatcher; it ends after releasing its leases.
    webhooks: JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting requests, finishes those in flight, and stops the workers.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        let served = self.task.await.map_err(std::io::Error::other)?;
        self.webhooks.await.map_err(std::io::Error::other)?;
        served
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> std::io::Result<()> {
        wait_for_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

pub async fn start(settings: &Settings) -> Result<RunningServer, StartError> {
    let start_lock = StartLock::take(&settings.database_url).await?;
    let store = open_store(&settings.database_url).await?;
    let projection_runner = ProjectionRunner::new(store.clone(), all_projectors());
    projection_runner.prepare().await?;
    // Whatever was committed before a crash is sequenced and projected before serving.
    sync_read_side(&store, &projection_runner).await?;
    first_start(&store, &projection_runner, settings.bootstrap_api_key.as_deref()).await?;
    drop(start_lock);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // This process's projectors run inside its sequencer's batches; the runner task catches up
    // whenever they could not (batches of other processes, a rebuild in progress).
    let projections = ProjectionHandle::default();
    let inline = projections.inline(projection_runner.clone());
    let sequencer = sequencer::spawn(store.clone(), Some(inline), POLL, shutdown_rx.clone());
    runner::spawn(projection_runner.clone(), &projections, sequencer.head(), POLL, shutdown_rx.clone());
    let rate_limits = Arc::new(RateLimits::new(settings.rate_limit_per_minute));
    spawn_rate_limit_cleanup(rate_limits.clone(), shutdown_rx.clone());
    metrics::handle();
    let state = AppState::new(Shared {
        store: store.clone(),
        commands: CommandService::new(store.clone()),
        visibility: Visibility::new(store, sequencer, projections, projection_runner.clone()),
        projections: projection_runner,
        rate_limits,
        usage: UsageTracker::default(),
        keys: KeyCache::default(),
        engagements: EngagementOwners::default(),
        body_limit: settings.body_limit,
        shutdown: shutdown_rx.clone(),
        sse_heartbeat: Duration::from_secs(settings.sse_heartbeat_seconds.get().into()),
        webhook_allow_private: settings.webhook_allow_private,
    });
    let policy = DeliveryPolicy {
        allow_private: settings.webhook_allow_private,
        retry_base: Duration::from_millis(settings.webhook_retry_base_ms),
        retry_cap: Duration::from_millis(settings.webhook_retry_cap_ms),
    };
    let webhooks = webhooks::spawn(state.store.clone(), policy, state.visibility.head(), shutdown_rx.clone())
        .map_err(|e| StartError::Usage(e.to_string()))?;
    let app = app(state, settings.body_limit);

    let listener = tokio::net::TcpListener::bind(settings.bind).await?;
    let local_addr = listener.local_addr()?;
    let mut shutdown = shutdown_rx;
    let task = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            })
            .await
    });
    tracing::info!(%local_addr, "listening");
    Ok(RunningServer { local_addr, shutdown: shutdown_tx, task, webhooks })
}

fn app(state: AppState, body_limit: usize) -> Router {
    routes::router(state.clone())
        .fallback(envelope::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(body_limit, oversize::refuse_declared_oversize))
        .layer(middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(middleware::from_fn(envelope::ensure))
        .layer(middleware::from_fn(metrics::track))
        .layer(CatchPanicLayer::custom(envelope::panic_response))
        .layer(middleware::from_fn(request_id::middleware))
        .layer(middleware::from_fn(unread_body::close_if_unread))
        .with_state(state)
}

fn spawn_rate_limit_cleanup(limits: Arc<RateLimits>, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(60)) => limits.forget_idle(),
                _ = shutdown.changed() => return,
            }
        }
    });
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
