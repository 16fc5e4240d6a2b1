//! `/api/v1/organizations/current`: the caller's organization.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pwnbook_commands::organization::{Organization, OrganizationCommand};
use pwnbook_commands::Execution;
use pwnbook_projections::organizations::{self, OrganizationRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{etag, if_match, if_none_match, reject_unknown, ApiJson, QueryParams};
use crate::openapi::{data, Data};
use crate::state::AppState;
use crate::time::format_millis;

const READ_ONLY: &[&str] = &["id", "slug", "createdAt", "updatedAt", "engagementCount"];

/// The caller's organization.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Organization)]
pub struct OrganizationView {
    #[schema(example = "org_01j9k2m3n4p5q6r7s8t9")]
    id: String,
    name: String,
    slug: String,
    created_at: String,
    updated_at: String,
    /// Live (not deleted) engagements.
    engagement_count: i64,
}

async fn respond(state: &AppState, row: &OrganizationRow) -> Result<Response, ApiError> {
    let view = OrganizationView {
        id: row.id.clone(),
        name: row.name.clone(),
        slug: row.slug.clone(),
        created_at: format_millis(row.created_at),
        updated_at: format_millis(row.updated_at),
        engagement_count: organizations::engagement_count(state.store.pool(), &row.id).await?,
    };
    Ok(([(header::ETAG, etag(row.version))], data(view)).into_response())
}

async fn load(state: &AppState, caller: &Caller) -> Result<OrganizationRow, ApiError> {
    organizations::get(state.store.pool(), caller.organization_id()).await?.ok_or(ApiError::NotFound)
}

/// Get the caller's organization.
#[utoipa::path(get, path = "/api/v1/organizations/current", tag = "organizations",
    responses((status = 200, description = "The organization", body = Data<OrganizationView>)))]
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

/// The organization's new name.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = OrganizationPatch)]
pub struct PatchBody {
    name: Option<String>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

/// Rename the caller's organization.
#[utoipa::path(patch, path = "/api/v1/organizations/current", tag = "organizations", request_body = PatchBody,
    params(("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "The organization", body = Data<OrganizationView>)))]
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
