//! Findings: `GET|POST /engagements/{id}/findings`, `GET /findings`, `GET|PATCH|DELETE
//! /findings/{id}`, `POST /findings/{id}/transition`, `PATCH /engagements/{id}/findings/bulk`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pwnbook_commands::finding::{
    field_errors, Finding, FindingCommand, FindingPatch, NewFinding, REVIEW_STATUSES, SEVERITIES, STATUSES,
};
use pwnbook_commands::{Committed, Execution, FieldError};
use pwnbook_events::{Id, IdKind, LogEvent};
use pwnbook_projections::findings::{self, FindingFilter, FindingRow, FindingSort, StreamEvent};
use pwnbook_projections::targets;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{
    etag, if_match, if_none_match, not_null, reject_unknown, required, unknown_fields, ApiJson, QueryParams,
};
use crate::openapi::{data, to_json, Data, Page};
use crate::pagination::{self, ListRequest};
use crate::routes::events::FeedPage;
use crate::routes::{history, scope};
use crate::state::AppState;
use crate::time::format_millis;

pub(crate) const SORTS: &[(&str, FindingSort)] = &[
    ("createdAt", FindingSort::CreatedAt),
    ("updatedAt", FindingSort::UpdatedAt),
    ("severity", FindingSort::Severity),
    ("cvssScore", FindingSort::CvssScore),
    ("title", FindingSort::Title),
    ("status", FindingSort::Status),
];
pub(crate) const FILTERS: &[&str] = &[
    "status",
    "severity",
    "reviewStatus",
    "targetId",
    "cwe",
    "cve",
    "tag",
    "q",
    "createdAfter",
    "createdBefore",
];
pub(crate) const FLAT_FILTERS: &[&str] = &[
    "engagementId",
    "status",
    "severity",
    "reviewStatus",
    "targetId",
    "cwe",
    "cve",
    "tag",
    "q",
    "createdAfter",
    "createdBefore",
];
const READ_ONLY: &[&str] =
    &["id", "engagementId", "createdAt", "updatedAt", "openedAt", "remediatedAt", "closedAt", "version"];
const MAX_BULK: usize = 100;

/// A finding's CVSS vector and the score the server computed from it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Cvss)]
pub struct CvssView {
    #[schema(example = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H")]
    vector: String,
    #[schema(example = 9.8)]
    score: f64,
    /// `3.0`, `3.1` or `4.0`.
    version: String,
}

/// A finding.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Finding)]
pub struct FindingView {
    #[schema(example = "fnd_01j9k2m3n4p5q6r7s8t9")]
    id: String,
    engagement_id: String,
    title: String,
    /// `critical`, `high`, `medium`, `low` or `info`.
    severity: String,
    cvss: Option<CvssView>,
    cwe: Vec<String>,
    cve: Vec<String>,
    description: Option<String>,
    impact: Option<String>,
    remediation: Option<String>,
    steps_to_reproduce: Option<String>,
    references: Vec<String>,
    affected_target_ids: Vec<String>,
    /// `draft`, `open`, `remediated`, `accepted_risk`, `false_positive` or `closed`.
    status: String,
    /// `in_progress`, `ready_for_review`, `approved` or `needs_improvement`.
    review_status: String,
    retest_notes: Option<String>,
    tags: Vec<String>,
    created_at: String,
    updated_at: String,
    opened_at: Option<String>,
    remediated_at: Option<String>,
    closed_at: Option<String>,
    version: i64,
}

pub fn render(row: &FindingRow) -> FindingView {
    FindingView {
        id: row.id.clone(),
        engagement_id: row.engagement_id.clone(),
        title: row.title.clone(),
        severity: row.severity.clone(),
        cvss: row.cvss.as_ref().map(|c| CvssView {
            vector: c.vector.clone(),
            score: c.score,
            version: c.version.clone(),
        }),
        cwe: row.cwe.clone(),
        cve: row.cve.clone(),
        description: row.description.clone(),
        impact: row.impact.clone(),
        remediation: row.remediation.clone(),
        steps_to_reproduce: row.steps_to_reproduce.clone(),
        references: row.references.clone(),
        affected_target_ids: row.affected_target_ids.clone(),
        status: row.status.clone(),
        review_status: row.review_status.clone(),
        retest_notes: row.retest_notes.clone(),
        tags: row.tags.clone(),
        created_at: format_millis(row.created_at),
        updated_at: format_millis(row.updated_at),
        opened_at: row.opened_at.map(format_millis),
        remediated_at: row.remediated_at.map(format_millis),
        closed_at: row.closed_at.map(format_millis),
        version: row.version,
    }
}

fn respond(status: StatusCode, row: &FindingRow) -> Response {
    (status, [(header::ETAG, etag(row.version))], data(render(row))).into_response()
}

/// Query parameters of the finding lists (`engagementId` only on `GET /findings`).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct ListQuery {
    page: Option<i64>,
    perPage: Option<i64>,
    cursor: Option<String>,
    /// `createdAt` (default), `updatedAt`, `severity` (by rank), `cvssScore`, `title` or `status`.
    sort: Option<String>,
    order: Option<String>,
    status: Option<String>,
    severity: Option<String>,
    reviewStatus: Option<String>,
    targetId: Option<String>,
    cwe: Option<String>,
    cve: Option<String>,
    tag: Option<String>,
    /// Case-insensitive substring of the title.
    q: Option<String>,
    createdAfter: Option<String>,
    createdBefore: Option<String>,
}

/// `GET /findings` also filters by engagement.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct FlatQuery {
    /// Engagement ids, comma-separated.
    engagementId: Option<String>,
}

/// One item of a bulk update: its own status and, on success, the finding.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = BulkResult)]
pub struct BulkResultView {
    id: String,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<FindingView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<crate::openapi::ErrorDetail>,
}

impl BulkResultView {
    pub(crate) fn failed(&self) -> bool {
        self.error.is_some()
    }
}

/// The live finding `id` of the caller's organization (404 otherwise).
pub(crate) async fn load(state: &AppState, caller: &Caller, id: &str) -> Result<FindingRow, ApiError> {
    let id = Id::parse(IdKind::Finding, id).ok_or(ApiError::NotFound)?;
    findings::get(state.store.pool(), caller.organization_id(), id.as_str()).await?.ok_or(ApiError::NotFound)
}

/// The filter of a finding list request; `flat` lists (`GET /findings`) also filter by engagement.
pub(crate) fn filter_of(request: &ListRequest<FindingSort>, flat: bool) -> Result<FindingFilter, ApiError> {
    let mut filters = request.filters();
    let filter = FindingFilter {
        engagement_ids: if flat { filters.take_list("engagementId") } else { Vec::new() },
        status: filters.take_enum_list("status", STATUSES)?,
        severity: filters.take_enum_list("severity", SEVERITIES)?,
        review_status: filters.take_enum_list("reviewStatus", REVIEW_STATUSES)?,
        target_ids: filters.take_list("targetId"),
        cwe: filters.take_list("cwe").iter().map(|c| c.to_ascii_uppercase()).collect(),
        cve: filters.take_list("cve").iter().map(|c| c.to_ascii_uppercase()).collect(),
        tags: filters.take_list("tag"),
        q: filters.take("q").filter(|q| !q.is_empty()),
        created_after: filters.take_timestamp("createdAfter")?,
        created_before: filters.take_timestamp("createdBefore")?,
    };
    filters.finish()?;
    Ok(filter)
}

async fn respond_list(
    state: &AppState,
    caller: &Caller,
    request: ListRequest<FindingSort>,
    filter: FindingFilter,
) -> Result<Json<Value>, ApiError> {
    request.check_cursor(FindingSort::accepts)?;
    let pool = state.store.pool();
    let org = caller.organization_id();
    let rows = findings::list(pool, org, &filter, request.sort, request.order, &request.window).await?;
    let total = if request.needs_total() { Some(findings::count(pool, org, &filter).await?) } else { None };
    let sort = request.sort;
    Ok(Json(request.envelope(rows, total, |row| (sort.value_of(row), row.id.clone()), render)))
}

/// List an engagement's findings.
#[utoipa::path(get, path = "/api/v1/engagements/{id}/findings", tag = "findings", params(("id" = String, Path), ListQuery),
    responses((status = 200, description = "A page of findings", body = Page<FindingView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(engagement_id): Path<String>,
    mut params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let engagement = scope::readable(&state, &caller, &engagement_id).await?;
    let request = pagination::parse(&mut params, SORTS, FILTERS)?;
    params.finish()?;
    let filter = FindingFilter { engagement_ids: vec![engagement.id], ..filter_of(&request, false)? };
    respond_list(&state, &caller, request, filter).await
}

/// List findings across engagements.
#[utoipa::path(get, path = "/api/v1/findings", tag = "findings", params(ListQuery, FlatQuery),
    responses((status = 200, description = "A page of findings", body = Page<FindingView>)))]
pub async fn list_all(
    State(state): State<AppState>,
    caller: Caller,
    mut params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let request = pagination::parse(&mut params, SORTS, FLAT_FILTERS)?;
    params.finish()?;
    let filter = filter_of(&request, true)?;
    respond_list(&state, &caller, request, filter).await
}

/// Checks that every id names a live target of the engagement (422 otherwise).
async fn check_targets(
    state: &AppState,
    caller: &Caller,
    engagement_id: &str,
    ids: &[String],
) -> Result<(), ApiError> {
    let found =
        targets::existing_in_engagement(state.store.pool(), caller.organization_id(), engagement_id, ids)
            .await?;
    match ids.iter().find(|id| !found.contains(id)) {
        Some(bad) => Err(ApiError::validation(
            "affectedTargetIds",
            format!("{bad:?} is not a target of this engagement"),
        )),
        None => Ok(()),
    }
}

/// A CVSS vector (v3.0, v3.1 or v4.0); the server computes the score.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CvssInput)]
pub struct CvssBody {
    #[schema(required = true)]
    vector: Option<String>,
    /// Ignored: the server computes the score.
    #[serde(rename = "score")]
    #[schema(value_type = Option<f64>)]
    _score: Option<Value>,
    #[serde(rename = "version")]
    #[schema(value_type = Option<String>)]
    _version: Option<Value>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

fn cvss_vector(body: CvssBody) -> Result<String, ApiError> {
    reject_unknown(&body.unknown, &[]).map_err(|_| ApiError::validation("cvss", "has unknown fields"))?;
    body.vector.ok_or_else(|| ApiError::validation("cvss.vector", "is required"))
}

/// A new finding.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = NewFinding)]
pub struct CreateBody {
    #[schema(required = true)]
    title: Option<String>,
    severity: Option<String>,
    cvss: Option<CvssBody>,
    cwe: Option<Vec<String>>,
    cve: Option<Vec<String>>,
    description: Option<String>,
    impact: Option<String>,
    remediation: Option<String>,
    steps_to_reproduce: Option<String>,
    references: Option<Vec<String>>,
    affected_target_ids: Option<Vec<String>>,
    retest_notes: Option<String>,
    tags: Option<Vec<String>>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

/// Create a finding.
#[utoipa::path(post, path = "/api/v1/engagements/{id}/findings", tag = "findings", request_body = CreateBody,
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, description = "Created", body = Data<FindingView>)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(engagement_id): Path<String>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let row = create_row(&state, &caller, &engagement_id, body).await?;
    let mut response = respond(StatusCode::CREATED, &row);
    if let Ok(location) = format!("/api/v1/findings/{}", row.id).parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Adds a finding to the engagement `engagement_id` (REST and GraphQL).
pub(crate) async fn create_row(
    state: &AppState,
    caller: &Caller,
    engagement_id: &str,
    body: CreateBody,
) -> Result<FindingRow, ApiError> {
    let engagement = scope::write_scope(state, caller, engagement_id).await?;
    // A new finding starts as a draft in review; its lifecycle moves only through transitions.
    let caller = &caller.refusing(&body.unknown, &[READ_ONLY, &["status", "reviewStatus"]].concat());
    let command = engagement
        .before_commit(state, caller, create_command(state, caller, &engagement.id, body).await)
        .await?;
    let id = Id::generate(IdKind::Finding);
    run(state, caller, id.as_str(), &engagement.id, None, command, None).await
}

async fn create_command(
    state: &AppState,
    caller: &Caller,
    engagement_id: &str,
    body: CreateBody,
) -> Result<FindingCommand, ApiError> {
    // What the command cannot check itself (a title left out, the shape of `cvss`, targets of
    // the engagement) is gathered first; when any of it fails, the command's own checks join
    // it, so that one answer names every invalid field.
    let mut errors = Vec::new();
    let title_given = body.title.is_some();
    if !title_given {
        errors.push(FieldError::new("title", "is required"));
    }
    let cvss_vector = match body.cvss.map(cvss_vector).transpose() {
        Ok(vector) => vector,
        Err(error) => {
            gather(Err(error), &mut errors)?;
            None
        }
    };
    let affected = body.affected_target_ids.unwrap_or_default();
    gather(check_targets(state, caller, engagement_id, &affected).await, &mut errors)?;
    let finding = NewFinding {
        title: body.title.unwrap_or_default(),
        severity: body.severity,
        cvss_vector,
        cwe: body.cwe.unwrap_or_default(),
        cve: body.cve.unwrap_or_default(),
        description: body.description,
        impact: body.impact,
        remediation: body.remediation,
        steps_to_reproduce: body.steps_to_reproduce,
        references: body.references.unwrap_or_default(),
        affected_target_ids: affected,
        retest_notes: body.retest_notes,
        tags: body.tags.unwrap_or_default(),
    };
    if !errors.is_empty() {
        // A missing title and a refused `cvss` are reported as such, not again as the empty
        // title and the missing severity the command would see in their place.
        let cvss_refused = errors.iter().any(|e| e.field.starts_with("cvss"));
        let severity_given = finding.severity.is_some();
        let own = field_errors(&finding).into_iter().filter(|e| match e.field.as_str() {
            "title" => title_given,
            "severity" => severity_given || !cvss_refused,
            _ => true,
        });
        errors.extend(own);
        return Err(caller.invalid(errors));
    }
    Ok(FindingCommand::Create {
        organization_id: caller.organization_id().to_owned(),
        engagement_id: engagement_id.to_owned(),
        finding,
    })
}

/// Findings in history and time travel.
pub struct Tracked;

impl history::Tracked for Tracked {
    const KIND: IdKind = IdKind::Finding;
    const AGGREGATE: &'static str = "finding";

    async fn fold(
        _: &AppState,
        events: &[LogEvent],
        _: Option<i64>,
    ) -> Result<Option<(Value, i64)>, ApiError> {
        Ok(findings::fold(events)?.map(|row| (to_json(render(&row)), row.version)))
    }
}

/// The events of a finding.
#[utoipa::path(get, path = "/api/v1/findings/{id}/history", tag = "findings", params(("id" = String, Path), history::HistoryQuery),
    responses((status = 200, description = "Events in log order", body = FeedPage)))]
pub async fn history_page(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    params: QueryParams,
) -> Result<Json<FeedPage>, ApiError> {
    history::of::<Tracked>(state, caller, id, params).await
}

/// Get a finding.
#[utoipa::path(get, path = "/api/v1/findings/{id}", tag = "findings",
    params(("id" = String, Path), history::TimeTravelQuery, ("If-None-Match" = Option<String>, Header)),
    responses((status = 200, description = "The finding (as it was, with version or asOf)", body = Data<FindingView>)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    mut params: QueryParams,
) -> Result<Response, ApiError> {
    let id = Id::parse(IdKind::Finding, &id).ok_or(ApiError::NotFound)?;
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

/// Changed fields only; `null` clears an optional field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = FindingPatch)]
pub struct PatchBody {
    #[serde(default, with = "pwnbook_events::patch")]
    title: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    severity: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    cvss: Option<Option<CvssBody>>,
    #[serde(default, with = "pwnbook_events::patch")]
    cwe: Option<Option<Vec<String>>>,
    #[serde(default, with = "pwnbook_events::patch")]
    cve: Option<Option<Vec<String>>>,
    #[serde(default, with = "pwnbook_events::patch")]
    description: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    impact: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    remediation: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    steps_to_reproduce: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    references: Option<Option<Vec<String>>>,
    #[serde(default, with = "pwnbook_events::patch")]
    affected_target_ids: Option<Option<Vec<String>>>,
    #[serde(default, with = "pwnbook_events::patch")]
    retest_notes: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    tags: Option<Option<Vec<String>>>,
    #[serde(default, with = "pwnbook_events::patch")]
    status: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    review_status: Option<Option<String>>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

/// Update a finding (status and reviewStatus follow their transition tables).
#[utoipa::path(patch, path = "/api/v1/findings/{id}", tag = "findings", request_body = PatchBody,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "The updated finding", body = Data<FindingView>)))]
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

/// Updates a finding; `expected_version` (`If-Match`) is checked where REST checks it.
pub(crate) async fn update_row(
    state: &AppState,
    caller: &Caller,
    id: &str,
    body: PatchBody,
    expected_version: Result<Option<i64>, ApiError>,
) -> Result<FindingRow, ApiError> {
    let current = load(state, caller, id).await?;
    let engagement = scope::write_scope(state, caller, &current.engagement_id).await?;
    let caller = &caller.refusing(&body.unknown, READ_ONLY);
    let prepared = update_command(state, caller, &engagement.id, body, expected_version).await;
    let (command, expected_version, invalid) = engagement.before_commit(state, caller, prepared).await?;
    // What this route found invalid is named with what the command finds (it validates, and
    // does not commit).
    let caller = &caller.refusing_errors(invalid);
    run(state, caller, &current.id, &engagement.id, Some(&current), command, expected_version).await
}

/// The update of a finding, and the fields found invalid without the aggregate (left out of the
/// patch).
async fn update_command(
    state: &AppState,
    caller: &Caller,
    engagement_id: &str,
    body: PatchBody,
    expected_version: Result<Option<i64>, ApiError>,
) -> Result<(FindingCommand, Option<i64>, Vec<FieldError>), ApiError> {
    let mut errors = Vec::new();
    let title = not_null("title", body.title, &mut errors);
    let severity = not_null("severity", body.severity, &mut errors);
    let status = not_null("status", body.status, &mut errors);
    let review_status = not_null("reviewStatus", body.review_status, &mut errors);
    // `null` empties a list.
    let mut affected = body.affected_target_ids.map(Option::unwrap_or_default);
    if let Some(ids) = &affected {
        if gather(check_targets(state, caller, engagement_id, ids).await, &mut errors)? {
            affected = None;
        }
    }
    let cvss_vector = match body.cvss.map(|c| c.map(cvss_vector).transpose()).transpose() {
        Ok(vector) => vector,
        Err(error) => {
            gather(Err(error), &mut errors)?;
            None
        }
    };
    let patch = FindingPatch {
        title,
        severity,
        cvss_vector,
        cwe: body.cwe.map(Option::unwrap_or_default),
        cve: body.cve.map(Option::unwrap_or_default),
        description: body.description,
        impact: body.impact,
        remediation: body.remediation,
        steps_to_reproduce: body.steps_to_reproduce,
        references: body.references.map(Option::unwrap_or_default),
        affected_target_ids: affected,
        retest_notes: body.retest_notes,
        tags: body.tags.map(Option::unwrap_or_default),
        status,
        review_status,
    };
    let command = FindingCommand::Update { organization_id: caller.organization_id().to_owned(), patch };
    Ok((command, expected_version?, errors))
}

/// A check's validation errors joined to `errors` (true when there were some); any other
/// failure is the answer.
fn gather(result: Result<(), ApiError>, errors: &mut Vec<FieldError>) -> Result<bool, ApiError> {
    match result {
        Ok(()) => Ok(false),
        Err(ApiError::Validation(found)) => {
            errors.extend(found);
            Ok(true)
        }
        Err(other) => Err(other),
    }
}

/// A transition of either lifecycle.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = FindingTransition)]
pub struct TransitionBody {
    status: Option<String>,
    review_status: Option<String>,
    comment: Option<String>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

/// Move a finding along its remediation or review lifecycle.
#[utoipa::path(post, path = "/api/v1/findings/{id}/transition", tag = "findings", request_body = TransitionBody,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "The finding", body = Data<FindingView>)))]
pub async fn transition(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<TransitionBody>,
) -> Result<Response, ApiError> {
    let row = transition_row(&state, &caller, &id, body, if_match(&headers)).await?;
    Ok(respond(StatusCode::OK, &row))
}

pub(crate) async fn transition_row(
    state: &AppState,
    caller: &Caller,
    id: &str,
    body: TransitionBody,
    expected_version: Result<Option<i64>, ApiError>,
) -> Result<FindingRow, ApiError> {
    let current = load(state, caller, id).await?;
    let engagement = scope::write_scope(state, caller, &current.engagement_id).await?;
    let caller = &caller.refusing(&body.unknown, &[]);
    let expected_version = engagement.before_commit(state, caller, expected_version).await?;
    let command = FindingCommand::Transition {
        organization_id: caller.organization_id().to_owned(),
        status: body.status,
        review_status: body.review_status,
        comment: body.comment,
    };
    run(state, caller, &current.id, &engagement.id, Some(&current), command, expected_version).await
}

/// Delete a finding.
#[utoipa::path(delete, path = "/api/v1/findings/{id}", tag = "findings",
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
    let command = FindingCommand::Delete { organization_id: caller.organization_id().to_owned() };
    let execution = Execution {
        expected_version: expected_version?,
        claim: None,
        engagement_id: Some(current.engagement_id.clone()),
        fresh: false,
    };
    let committed =
        state.commands.execute::<Finding>(&current.id, command, &caller.command_context(), execution).await?;
    state.visibility.wait(&committed).await
}

/// What a bulk update sets on every finding.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = BulkSet)]
pub struct BulkSet {
    status: Option<String>,
    severity: Option<String>,
    tags: Option<Vec<String>>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

/// Up to 100 finding ids and what to set on each.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = BulkUpdate)]
pub struct BulkBody {
    #[schema(required = true)]
    ids: Option<Vec<String>>,
    #[schema(required = true)]
    set: Option<BulkSet>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

/// Applies `set` to each finding as its own command; one item failing does not stop the others.
#[utoipa::path(patch, path = "/api/v1/engagements/{id}/findings/bulk", tag = "findings", request_body = BulkBody,
    params(("id" = String, Path)),
    responses((status = 200, description = "One result per id", body = Data<Vec<BulkResultView>>)))]
pub async fn bulk(
    State(state): State<AppState>,
    caller: Caller,
    Path(engagement_id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<BulkBody>,
) -> Result<Json<Data<Vec<BulkResultView>>>, ApiError> {
    // Each finding has its own version; one header cannot name them (it would be ignored).
    if headers.contains_key(header::IF_MATCH) {
        return Err(ApiError::BadRequest(
            "If-Match does not apply to a bulk update; send PATCH /findings/{id} with it".to_owned(),
        ));
    }
    Ok(data(bulk_results(&state, &caller, &engagement_id, body).await?))
}

/// Applies a bulk update (REST and GraphQL): one result per id, in the order given.
pub(crate) async fn bulk_results(
    state: &AppState,
    caller: &Caller,
    engagement_id: &str,
    body: BulkBody,
) -> Result<Vec<BulkResultView>, ApiError> {
    let engagement = scope::writable(state, caller, engagement_id).await?;
    // Every invalid field at once; what depends on each finding (its status's transitions) is
    // that finding's result.
    let mut errors = unknown_fields(&body.unknown, &[]);
    errors.extend(required(&[("ids", body.ids.is_some()), ("set", body.set.is_some())]));
    if let Some(ids) = &body.ids {
        if ids.is_empty() || ids.len() > MAX_BULK {
            errors.push(FieldError::new("ids", format!("must have 1 to {MAX_BULK} items")));
        } else if (1..ids.len()).any(|i| ids[..i].contains(&ids[i])) {
            errors.push(FieldError::new("ids", "must not repeat an id"));
        }
    }
    if let Some(set) = &body.set {
        errors.extend(
            set.unknown.keys().map(|k| FieldError::new(&format!("set.{k}"), "cannot be set in bulk")),
        );
        if set.status.is_none() && set.severity.is_none() && set.tags.is_none() {
            errors.push(FieldError::new("set", "must set status, severity or tags"));
        }
        if let Some(severity) = set.severity.as_deref().filter(|s| !SEVERITIES.contains(s)) {
            errors.push(FieldError::new(
                "set.severity",
                format!("{severity:?} is not one of {}", SEVERITIES.join(", ")),
            ));
        }
        if let Some(status) = set.status.as_deref().filter(|s| !STATUSES.contains(s)) {
            errors.push(FieldError::new(
                "set.status",
                format!("{status:?} is not one of {}", STATUSES.join(", ")),
            ));
        }
    }
    let (Some(ids), Some(set), true) = (body.ids, body.set, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let mut results = Vec::with_capacity(ids.len());
    for id in ids {
        let patch = FindingPatch {
            status: set.status.clone(),
            severity: set.severity.clone(),
            tags: set.tags.clone(),
            ..FindingPatch::default()
        };
        let outcome = async {
            let current = load(state, caller, &id).await?;
            if current.engagement_id != engagement.id {
                return Err(ApiError::NotFound);
            }
            let command =
                FindingCommand::Update { organization_id: caller.organization_id().to_owned(), patch };
            run(state, caller, &current.id, &current.engagement_id, Some(&current), command, None).await
        }
        .await;
        results.push(match outcome {
            Ok(row) => BulkResultView { id, status: 200, data: Some(render(&row)), error: None },
            Err(error) => BulkResultView {
                id,
                status: error.status().as_u16(),
                data: None,
                error: Some(error.detail()),
            },
        });
    }
    Ok(results)
}

/// Runs `command` on the finding `id`, which is `before` (`None` for a creation), and answers
/// the finding after it.
async fn run(
    state: &AppState,
    caller: &Caller,
    id: &str,
    engagement_id: &str,
    before: Option<&FindingRow>,
    command: FindingCommand,
    expected_version: Option<i64>,
) -> Result<FindingRow, ApiError> {
    let execution = Execution {
        expected_version,
        claim: None,
        engagement_id: Some(engagement_id.to_owned()),
        fresh: matches!(command, FindingCommand::Create { .. }),
    };
    let committed =
        state.commands.execute::<Finding>(id, command, &caller.command_context(), execution).await?;
    state.visibility.wait(&committed).await?;
    match folded(state, &committed, before) {
        Some(row) => Ok(row),
        None => load(state, caller, id).await,
    }
}

/// The finding after `committed` without reading it back: `before` with the command's event
/// applied the way the projector applies it, when the command appended one event right after
/// `before`'s version and this process sequenced it (so it knows when it was recorded).
fn folded(state: &AppState, committed: &Committed, before: Option<&FindingRow>) -> Option<FindingRow> {
    let [payload] = committed.payloads.as_slice() else { return None };
    if before.map_or(0, |row| row.version) != committed.version - 1 {
        return None;
    }
    let event = StreamEvent {
        aggregate_id: &committed.aggregate_id,
        sequence: committed.version,
        recorded_at: state.visibility.recorded_at(committed)?,
        payload,
    };
    findings::fold_onto(before.cloned(), [event]).ok().flatten()
}
