//! `/api/v1/organizations/current`: the caller's organization.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pwnbook_commands::organization::{Organization, OrganizationCommand};
use pwnbook_commands::{CommandError, Execution};
use pwnbook_events::{IdKind, LogEvent};
use pwnbook_projections::organizations::{self, OrganizationRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{etag, if_match, not_null, ApiJson, QueryParams};
use crate::openapi::{data, to_json, Data};
use crate::routes::history;
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

fn render(row: &OrganizationRow, engagement_count: i64) -> OrganizationView {
    OrganizationView {
        id: row.id.clone(),
        name: row.name.clone(),
        slug: row.slug.clone(),
        created_at: format_millis(row.created_at),
        updated_at: format_millis(row.updated_at),
        engagement_count,
    }
}

async fn respond(state: &AppState, row: &OrganizationRow) -> Result<Response, ApiError> {
    Ok(([(header::ETAG, etag(row.version))], data(view(state, row).await?)).into_response())
}

/// The organization as its GET renders it (REST and GraphQL).
pub(crate) async fn view(state: &AppState, row: &OrganizationRow) -> Result<Value, ApiError> {
    let engagement_count = organizations::engagement_count(state.store.pool(), &row.id).await?;
    Ok(to_json(render(row, engagement_count)))
}

/// The organization in history and time travel; its engagement count is counted from the log
/// at the requested moment.
pub struct Tracked;

impl history::Tracked for Tracked {
    const KIND: IdKind = IdKind::Organization;
    const AGGREGATE: &'static str = "organization";

    async fn fold(
        state: &AppState,
        events: &[LogEvent],
        as_of: Option<i64>,
    ) -> Result<Option<(Value, i64)>, ApiError> {
        let Some(row) = organizations::fold(events)? else { return Ok(None) };
        let at = as_of.unwrap_or(row.updated_at);
        let count = organizations::engagement_count_at(state.store.pool(), &row.id, at).await?;
        Ok(Some((to_json(render(&row, count)), row.version)))
    }
}

/// `GET /organizations/current/history`.
/// The organization's own events.
#[utoipa::path(get, path = "/api/v1/organizations/current/history", tag = "organizations", params(history::HistoryQuery),
    responses((status = 200, description = "Events in log order", body = crate::routes::events::FeedPage)))]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    params: QueryParams,
) -> Result<Json<crate::routes::events::FeedPage>, ApiError> {
    let id = caller.organization_id().to_owned();
    history::history::<Tracked>(&state, &caller, &id, params).await
}

/// The caller's organization.
pub(crate) async fn load(state: &AppState, caller: &Caller) -> Result<OrganizationRow, ApiError> {
    organizations::get(state.store.pool(), caller.organization_id()).await?.ok_or(ApiError::NotFound)
}

/// Get the caller's organization.
#[utoipa::path(get, path = "/api/v1/organizations/current", tag = "organizations", params(history::TimeTravelQuery),
    responses((status = 200, description = "The organization", body = Data<OrganizationView>)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    mut params: QueryParams,
) -> Result<Response, ApiError> {
    let id = caller.organization_id().to_owned();
    let past = history::time_travel::<Tracked>(&state, &caller, &id, &mut params).await;
    params.finish()?;
    if let Some(response) = past? {
        return Ok(response);
    }
    let row = load(&state, &caller).await?;
    // No 304 here: `engagementCount` changes without the organization's version changing.
    respond(&state, &row).await
}

/// The organization's new name.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = OrganizationPatch)]
pub struct PatchBody {
    #[serde(default, with = "pwnbook_events::patch")]
    name: Option<Option<String>>,
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
    let row = update_row(&state, &caller, body, if_match(&headers)).await?;
    respond(&state, &row).await
}

/// Renames the caller's organization (REST and GraphQL); without a name, changes nothing.
pub(crate) async fn update_row(
    state: &AppState,
    caller: &Caller,
    body: PatchBody,
    expected_version: Result<Option<i64>, ApiError>,
) -> Result<OrganizationRow, ApiError> {
    let current = load(state, caller).await?;
    let caller = &caller.refusing(&body.unknown, READ_ONLY);
    let expected_version = expected_version?;
    // The name cannot be cleared: `null` is named, with the command's own invalid fields.
    let mut errors = Vec::new();
    let name = not_null("name", body.name, &mut errors);
    let caller = &caller.refusing_errors(errors);
    let Some(name) = name else {
        // No command runs to refuse the fields it was sent with, or to check If-Match.
        if caller.refuses_fields() {
            return Err(caller.invalid(Vec::new()));
        }
        if let Some(expected) = expected_version.filter(|expected| *expected != current.version) {
            return Err(CommandError::PreconditionFailed { expected, current: current.version }.into());
        }
        return Ok(current);
    };
    let execution = Execution { expected_version, ..Execution::default() };
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
    load(state, caller).await
}
