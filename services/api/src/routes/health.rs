//! Liveness and readiness; no key needed.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "data": { "status": "ok" } }))
}

/// Ready when the store answers.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    sqlx::query("SELECT 1")
        .execute(state.store.pool())
        .await
        .map_err(|_| ApiError::Unavailable("the store is not reachable".to_owned()))?;
    Ok(Json(json!({ "data": { "status": "ready" } })))
}
