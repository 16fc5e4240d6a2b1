//! Reports: `GET|POST /engagements/{id}/reports`, `GET /reports`, `GET|PATCH|DELETE /reports/{id}`,
//! `POST /reports/{id}/generate`, `GET /reports/{id}/content`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pwnbook_commands::report::{Report, ReportCommand, ReportPatch, FORMATS, STATUSES};
use pwnbook_commands::{Execution, FieldError};
use pwnbook_events::{Id, IdKind};
use pwnbook_projections::findings;
use pwnbook_projections::reports::{self, ReportFilter, ReportRow, ReportSort};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{etag, if_match, if_none_match, reject_unknown, ApiJson, QueryParams};
use crate::pagination::{self, ListRequest};
use crate::routes::report_document::{self, Document};
use crate::routes::scope;
use crate::state::AppState;
use crate::time::{format_millis, now_millis};

const SORTS: &[(&str, ReportSort)] = &[
    ("createdAt", ReportSort::CreatedAt),
    ("updatedAt", ReportSort::UpdatedAt),
    ("title", ReportSort::Title),
];
const FILTERS: &[&str] = &["status", "format", "q"];
const FLAT_FILTERS: &[&str] = &["engagementId", "status", "format", "q"];
const READ_ONLY: &[&str] = &[
    "id",
    "engagementId",
    "generatedAt",
    "publishedAt",
    "findingCount",
    "createdAt",
    "updatedAt",
    "version",
];

pub fn render(row: &ReportRow) -> Value {
    json!({
        "id": row.id,
        "engagementId": row.engagement_id,
        "title": row.title,
        "format": row.format,
        "status": row.status,
        "findingCount": row.finding_count,
        "generatedAt": row.generated_at.map(format_millis),
        "publishedAt": row.published_at.map(format_millis),
        "createdAt": format_millis(row.created_at),
        "updatedAt": format_millis(row.updated_at),
        "version": row.version,
    })
}

fn respond(status: StatusCode, row: &ReportRow) -> Response {
    (status, [(header::ETAG, etag(row.version))], Json(json!({ "data": render(row) }))).into_response()
}

async fn load(state: &AppState, caller: &Caller, id: &str) -> Result<ReportRow, ApiError> {
    let id = Id::parse(IdKind::Report, id).ok_or(ApiError::NotFound)?;
    reports::get(state.store.pool(), caller.organization_id(), id.as_str()).await?.ok_or(ApiError::NotFound)
}

async fn respond_list(
    state: &AppState,
    caller: &Caller,
    request: ListRequest<ReportSort>,
    engagement_ids: Option<Vec<String>>,
) -> Result<Json<Value>, ApiError> {
    request.check_cursor(ReportSort::accepts)?;
    let mut filters = request.filters();
    let filter = ReportFilter {
        engagement_ids: engagement_ids.unwrap_or_else(|| filters.take_list("engagementId")),
        status: filters.take_enum_list("status", STATUSES)?,
        format: filters.take_enum_list("format", FORMATS)?,
        q: filters.take("q").filter(|q| !q.is_empty()),
    };
    filters.finish()?;
    let pool = state.store.pool();
    let org = caller.organization_id();
    let rows = reports::list(pool, org, &filter, request.sort, request.order, &request.window).await?;
    let total = if request.needs_total() { Some(reports::count(pool, org, &filter).await?) } else { None };
    let sort = request.sort;
    Ok(Json(request.envelope(rows, total, |row| (sort.value_of(row), row.id.clone()), render)))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(engagement_id): Path<String>,
    mut params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let engagement = scope::readable(&state, &caller, &engagement_id).await?;
    let request = pagination::parse(&mut params, SORTS, FILTERS)?;
    params.finish()?;
    respond_list(&state, &caller, request, Some(vec![engagement.id])).await
}

pub async fn list_all(
    State(state): State<AppState>,
    caller: Caller,
    mut params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let request = pagination::parse(&mut params, SORTS, FLAT_FILTERS)?;
    params.finish()?;
    respond_list(&state, &caller, request, None).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBody {
    title: Option<String>,
    format: Option<String>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(engagement_id): Path<String>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let engagement = scope::writable(&state, &caller, &engagement_id).await?;
    // A new report is a draft; its status moves through PATCH.
    reject_unknown(&body.unknown, &[READ_ONLY, &["status"]].concat())?;
    let Some(title) = body.title else {
        return Err(ApiError::Validation(vec![FieldError::new("title", "is required")]));
    };
    let id = Id::generate(IdKind::Report);
    let command = ReportCommand::Create {
        organization_id: caller.organization_id().to_owned(),
        engagement_id: engagement.id.clone(),
        title,
        format: body.format,
    };
    let row = run(&state, &caller, id.as_str(), &engagement.id, command, None).await?;
    let mut response = respond(StatusCode::CREATED, &row);
    if let Ok(location) = format!("/api/v1/reports/{id}").parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    params: QueryParams,
) -> Result<Response, ApiError> {
    params.finish()?;
    let row = load(&state, &caller, &id).await?;
    if if_none_match(&headers, row.version) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag(row.version))]).into_response());
    }
    Ok(respond(StatusCode::OK, &row))
}

/// The last generated document, with its format's `Content-Type` (404 before the first generation).
pub async fn content(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    params: QueryParams,
) -> Result<Response, ApiError> {
    params.finish()?;
    let row = load(&state, &caller, &id).await?;
    let (format, content) = reports::content(state.store.pool(), caller.organization_id(), &row.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(([(header::CONTENT_TYPE, report_document::content_type(&format))], content).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatchBody {
    #[serde(default, with = "pwnbook_events::patch")]
    title: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    format: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    status: Option<Option<String>>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Response, ApiError> {
    let current = load(&state, &caller, &id).await?;
    scope::writable(&state, &caller, &current.engagement_id).await?;
    reject_unknown(&body.unknown, READ_ONLY)?;
    let nulls: Vec<FieldError> = [("title", &body.title), ("format", &body.format), ("status", &body.status)]
        .into_iter()
        .filter(|(_, value)| matches!(value, Some(None)))
        .map(|(field, _)| FieldError::new(field, "cannot be null"))
        .collect();
    if !nulls.is_empty() {
        return Err(ApiError::Validation(nulls));
    }
    let patch = ReportPatch {
        title: body.title.flatten(),
        format: body.format.flatten(),
        status: body.status.flatten(),
    };
    let command = ReportCommand::Update { organization_id: caller.organization_id().to_owned(), patch };
    let row = run(&state, &caller, &current.id, &current.engagement_id, command, if_match(&headers)?).await?;
    Ok(respond(StatusCode::OK, &row))
}

/// Renders the engagement's findings in the report's format and records the document.
pub async fn generate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let current = load(&state, &caller, &id).await?;
    let engagement = scope::writable(&state, &caller, &current.engagement_id).await?;
    let findings = findings::for_report(state.store.pool(), caller.organization_id(), &engagement.id).await?;
    let document = Document {
        title: &current.title,
        engagement: &engagement,
        findings: &findings,
        generated_at: now_millis(),
    };
    let command = ReportCommand::Generate {
        organization_id: caller.organization_id().to_owned(),
        format: current.format.clone(),
        content: report_document::render(&current.format, &document),
        finding_ids: findings.iter().map(|f| f.id.clone()).collect(),
    };
    let row = run(&state, &caller, &current.id, &current.engagement_id, command, if_match(&headers)?).await?;
    Ok(respond(StatusCode::OK, &row))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let current = load(&state, &caller, &id).await?;
    scope::writable(&state, &caller, &current.engagement_id).await?;
    let command = ReportCommand::Delete { organization_id: caller.organization_id().to_owned() };
    let execution = Execution {
        expected_version: if_match(&headers)?,
        claim: None,
        engagement_id: Some(current.engagement_id.clone()),
    };
    let committed =
        state.commands.execute::<Report>(&current.id, command, &caller.command_context(), execution).await?;
    state.visibility.wait(&committed).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs `command`, waits until the read table shows it, and returns the row.
async fn run(
    state: &AppState,
    caller: &Caller,
    id: &str,
    engagement_id: &str,
    command: ReportCommand,
    expected_version: Option<i64>,
) -> Result<ReportRow, ApiError> {
    let execution =
        Execution { expected_version, claim: None, engagement_id: Some(engagement_id.to_owned()) };
    let committed =
        state.commands.execute::<Report>(id, command, &caller.command_context(), execution).await?;
    state.visibility.wait(&committed).await?;
    load(state, caller, id).await
}
