//! `/api/v1/organizations/current`: the caller's organization.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pwnbook_commands::organization::{Organization, OrganizationCommand};
use pwnbook_commands::Execution;
use pwnbook_projections::organizations::{self, OrganizationRow};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{etag, if_match, if_none_match, reject_unknown, ApiJson, QueryParams};
use crate::state::AppState;
use crate::time::format_millis;

const READ_ONLY: &[&str] = &["id", "slug", "createdAt", "updatedAt", "engagementCount"];

async fn respond(state: &AppState, row: &OrganizationRow) -> Result<Response, ApiError> {
    let engagement_count = organizations::engagement_count(state.store.pool(), &row.id).await?;
    let body = json!({
        "data": {
            "id": row.id,
            "name": row.name,
            "slug": row.slug,
            "createdAt": format_millis(row.created_at),
            "updatedAt": format_millis(row.updated_at),
            "engagementCount": engagement_count,
        }
    });
    Ok(([(header::ETAG, etag(row.version))], Json(body)).into_response())
}

async fn load(state: &AppState, caller: &Caller) -> Result<OrganizationRow, ApiError> {
    organizations::get(state.store.pool(), caller.organization_id()).await?.ok_or(ApiError::NotFound)
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    params: QueryParams,
) -> Result<Response, ApiError> {
    params.finish()?;
    let row = load(&state, &caller).await?;
    if if_none_match(&headers, row.version) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag(row.version))]).into_response());
    }
    respond(&state, &row).await
}

#[derive(Debug, Deserialize)]
pub struct PatchBody {
    name: Option<String>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Response, ApiError> {
    load(&state, &caller).await?;
    reject_unknown(&body.unknown, READ_ONLY)?;
    let Some(name) = body.name else {
        return respond(&state, &load(&state, &caller).await?).await;
    };
    let execution = Execution { expected_version: if_match(&headers)?, ..Execution::default() };
    let committed = state
        .commands
        .execute::<Organization>(
            caller.organization_id(),
            OrganizationCommand::Rename { name },
            &caller.command_context(),
            execution,
        )
        .await?;
    state.visibility.wait(&committed).await?;
    respond(&state, &load(&state, &caller).await?).await
}
