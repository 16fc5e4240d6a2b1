//! Liveness, readiness, metrics and the API documentation; no key needed.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::ApiError;
use crate::openapi::{data, Data};
use crate::state::AppState;

/// Readiness gives up when projections are further behind the log than this.
const MAX_PROJECTION_LAG: i64 = 10_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::render))
        .merge(
            SwaggerUi::new("/docs")
                .url("/api/v1/openapi.json", crate::openapi::document())
                // Swagger UI's default sends the document's URL to validator.swagger.io: nothing
                // leaves the server's own origin.
                .config(utoipa_swagger_ui::Config::default().validator_url("none")),
        )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    status: String,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Data<Status>)))]
pub async fn healthz() -> Response {
    data(Status { status: "ok".to_owned() }).into_response()
}

/// Readiness: the store answers, projections are within bounds, and the server is not stopping.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Data<Status>), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    if *state.shutdown.borrow() {
        return Err(ApiError::Unavailable("the server is shutting down".to_owned()));
    }
    let lag = crate::metrics::projection_lag(&state)
        .await
        .map_err(|_| ApiError::Unavailable("the store is not reachable".to_owned()))?;
    if lag > MAX_PROJECTION_LAG {
        return Err(ApiError::Unavailable(format!("projections are {lag} events behind")));
    }
    Ok(data(Status { status: "ready".to_owned() }).into_response())
}
