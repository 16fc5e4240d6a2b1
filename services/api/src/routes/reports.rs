//! Reports: `GET|POST /engagements/{id}/reports`, `GET /reports`, `GET|PATCH|DELETE /reports/{id}`,
//! `POST /reports/{id}/generate`, `GET /reports/{id}/content`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pwnbook_commands::report::{Report, ReportCommand, ReportPatch, FORMATS, STATUSES};
use pwnbook_commands::{Execution, FieldError};
use pwnbook_events::{Id, IdKind, LogEvent};
use pwnbook_projections::findings;
use pwnbook_projections::reports::{self, ReportFilter, ReportRow, ReportSort};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{etag, if_match, if_none_match, required, ApiJson, NoBody, QueryParams};
use crate::openapi::{data, to_json, Data, Page};
use crate::pagination::{self, ListRequest};
use crate::routes::events::FeedPage;
use crate::routes::report_document::{self, Document};
use crate::routes::{history, scope};
use crate::state::AppState;
use crate::time::{format_millis, now_millis};

pub(crate) const SORTS: &[(&str, ReportSort)] = &[
    ("createdAt", ReportSort::CreatedAt),
    ("updatedAt", ReportSort::UpdatedAt),
    ("title", ReportSort::Title),
];
pub(crate) const FILTERS: &[&str] = &["status", "format", "q"];
pub(crate) const FLAT_FILTERS: &[&str] = &["engagementId", "status", "format", "q"];
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

/// A report of an engagement's findings.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Report)]
pub struct ReportView {
    #[schema(example = "rpt_01j9k2m3n4p5q6r7s8t9")]
    id: String,
    engagement_id: String,
    title: String,
    /// `markdown`, `html` or `json`.
    format: String,
    /// `draft`, `in_review`, `approved` or `published` (immutable).
    status: String,
    /// Findings in the last generated document.
    finding_count: Option<i64>,
    generated_at: Option<String>,
    published_at: Option<String>,
    created_at: String,
    updated_at: String,
    version: i64,
}

pub fn render(row: &ReportRow) -> ReportView {
    ReportView {
        id: row.id.clone(),
        engagement_id: row.engagement_id.clone(),
        title: row.title.clone(),
        format: row.format.clone(),
        status: row.status.clone(),
        finding_count: row.finding_count,
        generated_at: row.generated_at.map(format_millis),
        published_at: row.published_at.map(format_millis),
        created_at: format_millis(row.created_at),
        updated_at: format_millis(row.updated_at),
        version: row.version,
    }
}

fn respond(status: StatusCode, row: &ReportRow) -> Response {
    (status, [(header::ETAG, etag(row.version))], data(render(row))).into_response()
}

/// Query parameters of the report lists (`engagementId` only on `GET /reports`).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct ListQuery {
    page: Option<i64>,
    perPage: Option<i64>,
    cursor: Option<String>,
    /// `createdAt` (default), `updatedAt` or `title`.
    sort: Option<String>,
    order: Option<String>,
    status: Option<String>,
    format: Option<String>,
    /// Case-insensitive substring of the title.
    q: Option<String>,
}

/// `GET /reports` also filters by engagement.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct FlatQuery {
    /// Engagement ids, comma-separated.
    engagementId: Option<String>,
}

/// The live report `id` of the caller's organization (404 otherwise).
pub(crate) async fn load(state: &AppState, caller: &Caller, id: &str) -> Result<ReportRow, ApiError> {
    let id = Id::parse(IdKind::Report, id).ok_or(ApiError::NotFound)?;
    reports::get(state.store.pool(), caller.organization_id(), id.as_str()).await?.ok_or(ApiError::NotFound)
}

/// The filter of a report list request: of the engagements `engagement_ids`, or (`None`, the
/// flat list) of those its `engagementId` names.
pub(crate) fn filter_of(
    request: &ListRequest<ReportSort>,
    engagement_ids: Option<Vec<String>>,
) -> Result<ReportFilter, ApiError> {
    let mut filters = request.filters();
    let filter = ReportFilter {
        engagement_ids: engagement_ids.unwrap_or_else(|| filters.take_list("engagementId")),
        status: filters.take_enum_list("status", STATUSES)?,
        format: filters.take_enum_list("format", FORMATS)?,
        q: filters.take("q").filter(|q| !q.is_empty()),
    };
    filters.finish()?;
    Ok(filter)
}

async fn respond_list(
    state: &AppState,
    caller: &Caller,
    request: ListRequest<ReportSort>,
    engagement_ids: Option<Vec<String>>,
) -> Result<Json<Value>, ApiError> {
    request.check_cursor(ReportSort::accepts)?;
    let filter = filter_of(&request, engagement_ids)?;
    let pool = state.store.pool();
    let org = caller.organization_id();
    let rows = reports::list(pool, org, &filter, request.sort, request.order, &request.window).await?;
    let total = if request.needs_total() { Some(reports::count(pool, org, &filter).await?) } else { None };
    let sort = request.sort;
    Ok(Json(request.envelope(rows, total, |row| (sort.value_of(row), row.id.clone()), render)))
}

/// List an engagement's reports.
#[utoipa::path(get, path = "/api/v1/engagements/{id}/reports", tag = "reports", params(("id" = String, Path), ListQuery),
    responses((status = 200, description = "A page of reports", body = Page<ReportView>)))]
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

/// List the reports of every engagement.
#[utoipa::path(get, path = "/api/v1/reports", tag = "reports", params(ListQuery, FlatQuery),
    responses((status = 200, description = "A page of reports", body = Page<ReportView>)))]
pub async fn list_all(
    State(state): State<AppState>,
    caller: Caller,
    mut params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let request = pagination::parse(&mut params, SORTS, FLAT_FILTERS)?;
    params.finish()?;
    respond_list(&state, &caller, request, None).await
}

/// A new report (always a `draft`; `format` defaults to `markdown`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = NewReport)]
pub struct CreateBody {
    #[schema(required = true)]
    title: Option<String>,
    format: Option<String>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

/// Add a report to an engagement.
#[utoipa::path(post, path = "/api/v1/engagements/{id}/reports", tag = "reports", request_body = CreateBody,
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, description = "Created", body = Data<ReportView>)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(engagement_id): Path<String>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let row = create_row(&state, &caller, &engagement_id, body).await?;
    let mut response = respond(StatusCode::CREATED, &row);
    if let Ok(location) = format!("/api/v1/reports/{}", row.id).parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Adds a report to the engagement `engagement_id` (REST and GraphQL).
pub(crate) async fn create_row(
    state: &AppState,
    caller: &Caller,
    engagement_id: &str,
    body: CreateBody,
) -> Result<ReportRow, ApiError> {
    let engagement = scope::writable(state, caller, engagement_id).await?;
    // A new report is a draft; its status moves through PATCH.
    let caller = &caller.refusing(&body.unknown, &[READ_ONLY, &["status"]].concat());
    // A missing title is named with what the command finds invalid (it validates, and does not
    // commit).
    let caller = &caller.refusing_errors(required(&[("title", body.title.is_some())]));
    let title = body.title.unwrap_or_default();
    let id = Id::generate(IdKind::Report);
    let command = ReportCommand::Create {
        organization_id: caller.organization_id().to_owned(),
        engagement_id: engagement.id.clone(),
        title,
        format: body.format,
    };
    run(state, caller, id.as_str(), &engagement.id, command, None).await
}

/// Reports in history and time travel.
pub struct Tracked;

impl history::Tracked for Tracked {
    const KIND: IdKind = IdKind::Report;
    const AGGREGATE: &'static str = "report";

    async fn fold(
        _: &AppState,
        events: &[LogEvent],
        _: Option<i64>,
    ) -> Result<Option<(Value, i64)>, ApiError> {
        Ok(reports::fold(events)?.map(|row| (to_json(render(&row)), row.version)))
    }
}

/// The events of a report.
#[utoipa::path(get, path = "/api/v1/reports/{id}/history", tag = "reports", params(("id" = String, Path), history::HistoryQuery),
    responses((status = 200, description = "Events in log order", body = FeedPage)))]
pub async fn history_page(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    params: QueryParams,
) -> Result<Json<FeedPage>, ApiError> {
    history::of::<Tracked>(state, caller, id, params).await
}

/// Get a report.
#[utoipa::path(get, path = "/api/v1/reports/{id}", tag = "reports",
    params(("id" = String, Path), history::TimeTravelQuery, ("If-None-Match" = Option<String>, Header)),
    responses((status = 200, description = "The report (as it was, with version or asOf)", body = Data<ReportView>)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    mut params: QueryParams,
) -> Result<Response, ApiError> {
    let id = Id::parse(IdKind::Report, &id).ok_or(ApiError::NotFound)?;
    let past = history::time_travel::<Tracked>(&state, &caller, id.as_str(), &mut params).await;
    params.finish()?;
    if let Some(response) = past? {
        return Ok(response);
    }
    let row = load(&state, &caller, id.as_str()).await?;
    if if_none_match(&headers, row.version) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag(row.version))]).into_response());
    }
    Ok(respond(StatusCode::OK, &row))
}

/// The last generated document, with its format's `Content-Type` (404 before the first generation).
#[utoipa::path(get, path = "/api/v1/reports/{id}/content", tag = "reports", params(("id" = String, Path)),
    responses((status = 200, description = "The document", content(
        (String = "text/markdown"), (String = "text/html"), (Value = "application/json")))))]
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

/// Changed fields only; `status` moves along `draft` ⇄ `in_review` ⇄ `approved` → `published`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ReportPatch)]
pub struct PatchBody {
    #[serde(default, with = "pwnbook_events::patch")]
    title: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    format: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    status: Option<Option<String>>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

/// Update a report (409 once published).
#[utoipa::path(patch, path = "/api/v1/reports/{id}", tag = "reports", request_body = PatchBody,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "The updated report", body = Data<ReportView>)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Response, ApiError> {
    let row = update_row(&state, &caller, &id, body, if_match(&headers)).await?;
    Ok(respond(StatusCode::OK, &row))
}

/// Updates a report; `expected_version` (`If-Match`) is checked where REST checks it.
pub(crate) async fn update_row(
    state: &AppState,
    caller: &Caller,
    id: &str,
    body: PatchBody,
    expected_version: Result<Option<i64>, ApiError>,
) -> Result<ReportRow, ApiError> {
    let current = load(state, caller, id).await?;
    scope::writable(state, caller, &current.engagement_id).await?;
    let caller = &caller.refusing(&body.unknown, READ_ONLY);
    let nulls: Vec<FieldError> = [("title", &body.title), ("format", &body.format), ("status", &body.status)]
        .into_iter()
        .filter(|(_, value)| matches!(value, Some(None)))
        .map(|(field, _)| FieldError::new(field, "cannot be null"))
        .collect();
    let caller = &caller.refusing_errors(nulls);
    let patch = ReportPatch {
        title: body.title.flatten(),
        format: body.format.flatten(),
        status: body.status.flatten(),
    };
    let command = ReportCommand::Update { organization_id: caller.organization_id().to_owned(), patch };
    run(state, caller, &current.id, &current.engagement_id, command, expected_version?).await
}

/// Render the engagement's findings, most severe first, into the report's format.
#[utoipa::path(post, path = "/api/v1/reports/{id}/generate", tag = "reports", request_body = Option<crate::extract::NoBody>,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "The report with its new document", body = Data<ReportView>)))]
pub async fn generate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: NoBody,
) -> Result<Response, ApiError> {
    let caller = caller.refusing(body.fields(), &[]);
    let row = generate_row(&state, &caller, &id, if_match(&headers)).await?;
    Ok(respond(StatusCode::OK, &row))
}

pub(crate) async fn generate_row(
    state: &AppState,
    caller: &Caller,
    id: &str,
    expected_version: Result<Option<i64>, ApiError>,
) -> Result<ReportRow, ApiError> {
    let current = load(state, caller, id).await?;
    let engagement = scope::writable(state, caller, &current.engagement_id).await?;
    let findings = findings::for_report(state.store.pool(), caller.organization_id(), &engagement.id).await?;
    let generated_at = now_millis();
    let document =
        Document { title: &current.title, engagement: &engagement, findings: &findings, generated_at };
    let command = ReportCommand::Generate {
        organization_id: caller.organization_id().to_owned(),
        format: current.format.clone(),
        content: report_document::render(&current.format, &document),
        finding_ids: findings.iter().map(|f| f.id.clone()).collect(),
        generated_at: format_millis(generated_at),
    };
    run(state, caller, &current.id, &current.engagement_id, command, expected_version?).await
}

/// Delete a report (409 once published).
#[utoipa::path(delete, path = "/api/v1/reports/{id}", tag = "reports",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    delete_row(&state, &caller, &id, if_match(&headers)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn delete_row(
    state: &AppState,
    caller: &Caller,
    id: &str,
    expected_version: Result<Option<i64>, ApiError>,
) -> Result<(), ApiError> {
    let current = load(state, caller, id).await?;
    scope::writable(state, caller, &current.engagement_id).await?;
    let command = ReportCommand::Delete { organization_id: caller.organization_id().to_owned() };
    let execution = Execution {
        expected_version: expected_version?,
        claim: None,
        engagement_id: Some(current.engagement_id.clone()),
        fresh: false,
    };
    let committed =
        state.commands.execute::<Report>(&current.id, command, &caller.command_context(), execution).await?;
    state.visibility.wait(&committed).await
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
    let execution = Execution {
        expected_version,
        claim: None,
        engagement_id: Some(engagement_id.to_owned()),
        fresh: matches!(command, ReportCommand::Create { .. }),
    };
    let committed =
        state.commands.execute::<Report>(id, command, &caller.command_context(), execution).await?;
    state.visibility.wait(&committed).await?;
    load(state, caller, id).await
}
