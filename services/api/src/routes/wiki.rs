//! Wiki pages: `GET|POST /engagements/{id}/wiki`, `GET|PATCH|DELETE /wiki/{id}`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pwnbook_commands::wiki::{field_errors, NewWikiPage, WikiPage, WikiPageCommand, WikiPagePatch};
use pwnbook_commands::{Execution, FieldError};
use pwnbook_events::{Id, IdKind, LogEvent};
use pwnbook_projections::wiki::{self, WikiFilter, WikiPageRow, WikiSort};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{etag, if_match, if_none_match, ApiJson, QueryParams};
use crate::openapi::{data, to_json, Data, Page};
use crate::pagination::{self, ListRequest};
use crate::routes::events::FeedPage;
use crate::routes::{history, scope};
use crate::state::AppState;
use crate::time::format_millis;

pub(crate) const SORTS: &[(&str, WikiSort)] = &[
    ("createdAt", WikiSort::CreatedAt),
    ("updatedAt", WikiSort::UpdatedAt),
    ("title", WikiSort::Title),
    ("slug", WikiSort::Slug),
];
pub(crate) const FILTERS: &[&str] = &["parentId", "slug", "q"];
const READ_ONLY: &[&str] = &["id", "engagementId", "createdAt", "updatedAt", "version"];
/// Deeper trees are refused rather than walked forever.
const MAX_DEPTH: usize = 50;

/// A wiki page of an engagement.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WikiPage)]
pub struct WikiPageView {
    #[schema(example = "wik_01j9k2m3n4p5q6r7s8t9")]
    id: String,
    engagement_id: String,
    title: String,
    /// Unique in the engagement; derived from the title when not given.
    #[schema(example = "active-directory-notes")]
    slug: String,
    /// Markdown.
    content: String,
    parent_id: Option<String>,
    created_at: String,
    updated_at: String,
    version: i64,
}

pub fn render(row: &WikiPageRow) -> WikiPageView {
    WikiPageView {
        id: row.id.clone(),
        engagement_id: row.engagement_id.clone(),
        title: row.title.clone(),
        slug: row.slug.clone(),
        content: row.content.clone(),
        parent_id: row.parent_id.clone(),
        created_at: format_millis(row.created_at),
        updated_at: format_millis(row.updated_at),
        version: row.version,
    }
}

fn respond(status: StatusCode, row: &WikiPageRow) -> Response {
    (status, [(header::ETAG, etag(row.version))], data(render(row))).into_response()
}

/// Query parameters of `GET /engagements/{id}/wiki`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct ListQuery {
    page: Option<i64>,
    perPage: Option<i64>,
    cursor: Option<String>,
    /// `createdAt` (default), `updatedAt`, `title` or `slug`.
    sort: Option<String>,
    order: Option<String>,
    /// Parent page ids, comma-separated.
    parentId: Option<String>,
    slug: Option<String>,
    /// Case-insensitive substring of the title.
    q: Option<String>,
}

/// The live wiki page `id` of the caller's organization (404 otherwise).
pub(crate) async fn load(state: &AppState, caller: &Caller, id: &str) -> Result<WikiPageRow, ApiError> {
    let id = Id::parse(IdKind::WikiPage, id).ok_or(ApiError::NotFound)?;
    wiki::get(state.store.pool(), caller.organization_id(), id.as_str()).await?.ok_or(ApiError::NotFound)
}

/// A parent must be a page of the same engagement and, for an existing page, outside its subtree.
async fn check_parent(
    state: &AppState,
    caller: &Caller,
    engagement_id: &str,
    parent_id: &str,
    page_id: Option<&str>,
) -> Result<(), ApiError> {
    let invalid = |message: &str| ApiError::validation("parentId", message);
    let parent = match load(state, caller, parent_id).await {
        Ok(parent) if parent.engagement_id == engagement_id => parent,
        Ok(_) | Err(ApiError::NotFound) => return Err(invalid("is not a wiki page of this engagement")),
        Err(other) => return Err(other),
    };
    let Some(page_id) = page_id else { return Ok(()) };
    let mut ancestor = Some(parent);
    for _ in 0..MAX_DEPTH {
        match ancestor {
            None => return Ok(()),
            Some(row) if row.id == page_id => {
                return Err(invalid("cannot be the page itself or one of its descendants"))
            }
            Some(row) => {
                ancestor = match row.parent_id {
                    Some(next) => wiki::get(state.store.pool(), caller.organization_id(), &next).await?,
                    None => None,
                };
            }
        }
    }
    Err(invalid(&format!("would nest pages deeper than {MAX_DEPTH} levels")))
}

/// The filter of a wiki page list request of the engagement `engagement_id`.
pub(crate) fn filter_of(
    request: &ListRequest<WikiSort>,
    engagement_id: String,
) -> Result<WikiFilter, ApiError> {
    let mut filters = request.filters();
    let filter = WikiFilter {
        engagement_id,
        parent_ids: filters.take_list("parentId"),
        slugs: filters.take_list("slug"),
        q: filters.take("q").filter(|q| !q.is_empty()),
    };
    filters.finish()?;
    Ok(filter)
}

/// List an engagement's wiki pages.
#[utoipa::path(get, path = "/api/v1/engagements/{id}/wiki", tag = "wiki", params(("id" = String, Path), ListQuery),
    responses((status = 200, description = "A page of wiki pages", body = Page<WikiPageView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(engagement_id): Path<String>,
    mut params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let engagement = scope::readable(&state, &caller, &engagement_id).await?;
    let request = pagination::parse(&mut params, SORTS, FILTERS)?;
    params.finish()?;
    request.check_cursor(WikiSort::accepts)?;
    let filter = filter_of(&request, engagement.id)?;
    let pool = state.store.pool();
    let org = caller.organization_id();
    let rows = wiki::list(pool, org, &filter, request.sort, request.order, &request.window).await?;
    let total = if request.needs_total() { Some(wiki::count(pool, org, &filter).await?) } else { None };
    let sort = request.sort;
    Ok(Json(request.envelope(rows, total, |row| (sort.value_of(row), row.id.clone()), render)))
}

/// A new wiki page.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = NewWikiPage)]
pub struct CreateBody {
    #[schema(required = true)]
    title: Option<String>,
    slug: Option<String>,
    content: Option<String>,
    parent_id: Option<String>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

/// Add a wiki page to an engagement.
#[utoipa::path(post, path = "/api/v1/engagements/{id}/wiki", tag = "wiki", request_body = CreateBody,
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, description = "Created", body = Data<WikiPageView>)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(engagement_id): Path<String>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let row = create_row(&state, &caller, &engagement_id, body).await?;
    let mut response = respond(StatusCode::CREATED, &row);
    if let Ok(location) = format!("/api/v1/wiki/{}", row.id).parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Adds a wiki page to the engagement `engagement_id` (REST and GraphQL).
pub(crate) async fn create_row(
    state: &AppState,
    caller: &Caller,
    engagement_id: &str,
    body: CreateBody,
) -> Result<WikiPageRow, ApiError> {
    let engagement = scope::writable(state, caller, engagement_id).await?;
    let caller = &caller.refusing(&body.unknown, READ_ONLY);
    // A missing title and the parent are checked here; when either fails, the command's own
    // checks join them, so that one answer names every invalid field.
    let mut errors = Vec::new();
    let title_given = body.title.is_some();
    if !title_given {
        errors.push(FieldError::new("title", "is required"));
    }
    if let Some(parent) = &body.parent_id {
        match check_parent(state, caller, &engagement.id, parent, None).await {
            Err(ApiError::Validation(found)) => errors.extend(found),
            other => other?,
        }
    }
    let page = NewWikiPage {
        title: body.title.unwrap_or_default(),
        slug: body.slug,
        content: body.content.unwrap_or_default(),
        parent_id: body.parent_id,
    };
    if !errors.is_empty() {
        errors.extend(field_errors(&page).into_iter().filter(|e| title_given || e.field != "title"));
        return Err(caller.invalid(errors));
    }
    let id = Id::generate(IdKind::WikiPage);
    let command = WikiPageCommand::Create {
        organization_id: caller.organization_id().to_owned(),
        engagement_id: engagement.id.clone(),
        page,
    };
    run(state, caller, id.as_str(), &engagement.id, command, None).await
}

/// Wiki pages in history and time travel.
pub struct Tracked;

impl history::Tracked for Tracked {
    const KIND: IdKind = IdKind::WikiPage;
    const AGGREGATE: &'static str = "wiki_page";

    async fn fold(
        _: &AppState,
        events: &[LogEvent],
        _: Option<i64>,
    ) -> Result<Option<(Value, i64)>, ApiError> {
        Ok(wiki::fold(events)?.map(|row| (to_json(render(&row)), row.version)))
    }
}

/// The events of a wiki page.
#[utoipa::path(get, path = "/api/v1/wiki/{id}/history", tag = "wiki", params(("id" = String, Path), history::HistoryQuery),
    responses((status = 200, description = "Events in log order", body = FeedPage)))]
pub async fn history_page(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    params: QueryParams,
) -> Result<Json<FeedPage>, ApiError> {
    history::of::<Tracked>(state, caller, id, params).await
}

/// Get a wiki page.
#[utoipa::path(get, path = "/api/v1/wiki/{id}", tag = "wiki",
    params(("id" = String, Path), history::TimeTravelQuery, ("If-None-Match" = Option<String>, Header)),
    responses((status = 200, description = "The wiki page (as it was, with version or asOf)", body = Data<WikiPageView>)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    mut params: QueryParams,
) -> Result<Response, ApiError> {
    let id = Id::parse(IdKind::WikiPage, &id).ok_or(ApiError::NotFound)?;
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

/// Changed fields only; `"parentId": null` moves the page to the top.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WikiPagePatch)]
pub struct PatchBody {
    #[serde(default, with = "pwnbook_events::patch")]
    title: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    slug: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    content: Option<Option<String>>,
    #[serde(default, with = "pwnbook_events::patch")]
    parent_id: Option<Option<String>>,
    #[serde(flatten)]
    #[schema(ignore)]
    unknown: BTreeMap<String, Value>,
}

/// Update a wiki page.
#[utoipa::path(patch, path = "/api/v1/wiki/{id}", tag = "wiki", request_body = PatchBody,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "The updated wiki page", body = Data<WikiPageView>)))]
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

/// Updates a wiki page; `expected_version` (`If-Match`) is checked where REST checks it.
pub(crate) async fn update_row(
    state: &AppState,
    caller: &Caller,
    id: &str,
    body: PatchBody,
    expected_version: Result<Option<i64>, ApiError>,
) -> Result<WikiPageRow, ApiError> {
    let current = load(state, caller, id).await?;
    scope::writable(state, caller, &current.engagement_id).await?;
    let caller = &caller.refusing(&body.unknown, READ_ONLY);
    let nulls: Vec<FieldError> = [
        ("title", body.title.as_ref().is_some_and(Option::is_none)),
        ("slug", body.slug.as_ref().is_some_and(Option::is_none)),
    ]
    .into_iter()
    .filter(|(_, null)| *null)
    .map(|(field, _)| FieldError::new(field, "cannot be null"))
    .collect();
    let mut errors = nulls;
    if let Some(Some(parent)) = &body.parent_id {
        match check_parent(state, caller, &current.engagement_id, parent, Some(&current.id)).await {
            Err(ApiError::Validation(found)) => errors.extend(found),
            other => other?,
        }
    }
    let caller = &caller.refusing_errors(errors);
    let patch = WikiPagePatch {
        title: body.title.flatten(),
        slug: body.slug.flatten(),
        // `"content": null` empties the page.
        content: body.content.map(Option::unwrap_or_default),
        parent_id: body.parent_id,
    };
    let command = WikiPageCommand::Update { organization_id: caller.organization_id().to_owned(), patch };
    run(state, caller, &current.id, &current.engagement_id, command, expected_version?).await
}

/// Delete a wiki page (409 while it has child pages).
#[utoipa::path(delete, path = "/api/v1/wiki/{id}", tag = "wiki",
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
    if wiki::has_children(state.store.pool(), caller.organization_id(), &current.id).await? {
        return Err(ApiError::Conflict("the page has child pages; move or delete them first".to_owned()));
    }
    let command = WikiPageCommand::Delete { organization_id: caller.organization_id().to_owned() };
    let execution = Execution {
        expected_version: expected_version?,
        claim: command.claim(&current.engagement_id),
        engagement_id: Some(current.engagement_id.clone()),
        fresh: false,
    };
    let committed = state
        .commands
        .execute::<WikiPage>(&current.id, command, &caller.command_context(), execution)
        .await?;
    state.visibility.wait(&committed).await
}

/// Runs `command` with its slug claim, waits until the read table shows it, and returns the row.
async fn run(
    state: &AppState,
    caller: &Caller,
    id: &str,
    engagement_id: &str,
    command: WikiPageCommand,
    expected_version: Option<i64>,
) -> Result<WikiPageRow, ApiError> {
    let execution = Execution {
        expected_version,
        claim: command.claim(engagement_id),
        engagement_id: Some(engagement_id.to_owned()),
        fresh: matches!(command, WikiPageCommand::Create { .. }),
    };
    let committed =
        state.commands.execute::<WikiPage>(id, command, &caller.command_context(), execution).await?;
    state.visibility.wait(&committed).await?;
    load(state, caller, id).await
}
