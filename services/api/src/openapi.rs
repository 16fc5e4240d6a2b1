//! The OpenAPI 3.1 document, generated from the code: `#[utoipa::path]` on each handler for its
//! parameters, bodies and success responses, and the route table for what every operation
//! shares (the bearer scheme, the permission it needs, the error responses it can give).

use axum::Json;
use serde::Serialize;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, ObjectBuilder, Ref, RefOr, Required, Type};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::routes::{self, ROUTES};

/// `{"data": …}`
#[derive(Debug, Serialize, ToSchema)]
pub struct Data<T> {
    pub data: T,
}

/// `{"data": [...], "meta": {...}}`
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub meta: PageMeta,
}

/// Page mode has every field; cursor mode (`?cursor=`) only `perPage` and `nextCursor`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageMeta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<i64>,
    pub per_page: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_pages: Option<i64>,
    /// Opaque; pass it as `?cursor=` to continue the same list. Null at the end.
    pub next_cursor: Option<String>,
}

/// The error envelope of every failure.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    #[schema(example = "VALIDATION_ERROR")]
    pub code: String,
    pub message: String,
    #[schema(example = 422)]
    pub status_code: u16,
    /// For 422: every invalid field.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<FieldErrorDoc>>)]
    pub details: Option<Vec<pwnbook_commands::FieldError>>,
    pub request_id: String,
}

/// One invalid field.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = FieldError)]
pub struct FieldErrorDoc {
    pub field: String,
    pub message: String,
}

/// Adds what the route table knows to every operation.
struct FromRouteTable;

const ERRORS: &[(u16, &str)] = &[
    (304, "Not modified (`If-None-Match` names the current version)"),
    (400, "Malformed request: bad JSON, unknown query parameter or value, bad paging, sort or cursor"),
    (401, "No key, or an unknown, revoked or expired key"),
    (403, "The key lacks the permission this operation needs"),
    (404, "Unknown or malformed id, deleted, or another organization's resource"),
    (409, "Conflict: duplicate name, illegal transition, archived engagement, Idempotency-Key reuse"),
    (412, "`If-Match` names a version that is no longer current (or only weak ETags, which never match)"),
    (413, "The body is larger than the limit"),
    (415, "The body is not application/json"),
    (422, "The data fails validation; `details` names each field"),
    (429, "Over the key's rate limit; see `Retry-After`"),
    (500, "Unexpected error"),
    (503, "The database cannot be reached (`Retry-After`), the change is saved but not yet visible, the store cannot take it now (nothing saved; `Retry-After`), or the server is shutting down"),
];

/// A unique, stable operation id from the route: `GET /api/v1/engagements/{id}/history` →
/// `get_engagements_id_history` (handler names repeat across resources).
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_ascii_lowercase();
    for part in path.trim_start_matches("/api/v1").split('/').filter(|p| !p.is_empty()) {
        id.push('_');
        id.extend(part.chars().filter_map(|c| match c {
            '-' => Some('_'),
            c if c.is_ascii_alphanumeric() => Some(c),
            _ => None,
        }));
    }
    id
}

/// Headers every response carries (declared on the successes).
const EVERY_RESPONSE: &[(&str, &str, Type)] = &[
    ("X-Request-Id", "The request's id: the client's own `X-Request-Id`, or a generated one", Type::String),
    (
        "X-RateLimit-Limit",
        "Requests allowed per window (per API key; per address without one)",
        Type::Integer,
    ),
    ("X-RateLimit-Remaining", "Requests left in the current window", Type::Integer),
    ("X-RateLimit-Reset", "Unix seconds when the window resets", Type::Integer),
];

/// A response header of `ty` described by `text`.
fn header(text: &str, ty: Type) -> utoipa::openapi::header::Header {
    HeaderBuilder::new().schema(ObjectBuilder::new().schema_type(ty)).description(Some(text)).build()
}

/// Whether the operation answers a single resource with its `ETag` (the list, history, content
/// and delivery pages have none).
fn sends_etag(method: &str, path: &str) -> bool {
    match method {
        "GET" => path.ends_with("{id}") || path.ends_with("/current"),
        "PATCH" => !path.ends_with("/bulk"),
        "POST" => !path.ends_with("/graphql"),
        _ => false,
    }
}

/// Which of `ERRORS` an operation can answer.
fn error_statuses(method: &str, path: &str, has_body: bool) -> Vec<u16> {
    // Any operation reads the database, which may be out of reach (503).
    let mut statuses = vec![400, 401, 403, 429, 500, 503];
    let has_id = path.contains('{');
    if has_id || path.ends_with("/current") {
        statuses.push(404);
    }
    // Single resources only, and not `/organizations/current` or an API key: their
    // engagementCount and lastUsedAt move without their version.
    if method == "GET" && path.ends_with("{id}") && !path.starts_with("/api/v1/api-keys") {
        statuses.push(304);
    }
    if method != "GET" {
        statuses.push(409);
        if has_id || path.ends_with("/current") {
            statuses.push(412);
        }
    }
    if has_body {
        statuses.extend([413, 415, 422]);
    }
    statuses.sort_unstable();
    statuses
}

impl Modify for FromRouteTable {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("pwbk_live_…").build(),
            ),
        );
        for route in ROUTES {
            let Some(item) = openapi.paths.paths.get_mut(route.path) else { continue };
            let operation: Option<&mut Operation> = match route.method {
                "GET" => item.get.as_mut(),
                "POST" => item.post.as_mut(),
                "PATCH" => item.patch.as_mut(),
                "DELETE" => item.delete.as_mut(),
                _ => None,
            };
            let Some(operation) = operation else { continue };
            operation.operation_id = Some(operation_id(route.method, route.path));
            operation.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
            let permission = route.permission.as_str();
            operation
                .extensions
                .get_or_insert_with(Default::default)
                .merge(ExtensionsBuilder::new().add("x-required-permission", permission).build());
            let note = format!("Requires the `{permission}` permission.");
            operation.description = Some(match operation.description.take() {
                Some(text) => format!("{text}\n\n{note}"),
                None => note,
            });
            let has_body = operation.request_body.is_some();
            for status in error_statuses(route.method, route.path, has_body) {
                let Some((_, text)) = ERRORS.iter().find(|(s, _)| *s == status) else { continue };
                let mut response = ResponseBuilder::new().description(*text);
                if status != 304 {
                    response = response
                        .content("application/json", Content::new(Some(Ref::from_schema_name("ErrorBody"))));
                }
                operation.responses.responses.entry(status.to_string()).or_insert(response.build().into());
            }
            if route.method == "POST"
                && !operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| p.name.eq_ignore_ascii_case("Idempotency-Key"))
            {
                operation.parameters.get_or_insert_with(Vec::new).push(
                    ParameterBuilder::new()
                        .name("Idempotency-Key")
                        .parameter_in(ParameterIn::Header)
                        .required(Required::False)
                        .description(Some("Replays the first response for 24 h; nothing runs twice"))
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .build(),
                );
            }
            let etag = sends_etag(route.method, route.path);
            for (status, response) in &mut operation.responses.responses {
                let RefOr::T(response) = response else { continue };
                let success = status.starts_with('2');
                // Errors carry them too (the document's description says so): declared on every
                // error response they would more than double the document.
                if success {
                    for (name, text, ty) in EVERY_RESPONSE {
                        response
                            .headers
                            .entry((*name).to_owned())
                            .or_insert_with(|| header(text, ty.clone()));
                    }
                }
                if etag && (success || status == "304") && status != "204" {
                    response
                        .headers
                        .entry("ETag".to_owned())
                        .or_insert_with(|| header("The resource's version, `\"<version>\"`", Type::String));
                }
                if status == "201" {
                    response
                        .headers
                        .entry("Location".to_owned())
                        .or_insert_with(|| header("The new resource's URL", Type::String));
                }
                if status == "429" || status == "503" {
                    response.headers.entry("Retry-After".to_owned()).or_insert_with(|| {
                        header(
                            "Seconds to wait before retrying (429, and a 503 of a database out of reach or a write that saved nothing)",
                            Type::Integer,
                        )
                    });
                }
                if success && route.method == "POST" {
                    response.headers.entry("Idempotent-Replayed".to_owned()).or_insert_with(|| {
                        header("`true` when this is the stored answer to an earlier request with the same Idempotency-Key", Type::String)
                    });
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Pwnbook API",
        description = "Event-sourced API for penetration-testing engagements. Every change is an immutable, hash-chained event.\n\nEvery response, errors included, carries `X-Request-Id` and `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`; a 429 also `Retry-After`.",
        license(name = "Apache-2.0")
    ),
    servers((url = "/", description = "This server")),
    paths(
        routes::health::healthz,
        routes::health::readyz,
        routes::engagements::list,
        routes::engagements::create,
        routes::engagements::get,
        routes::engagements::update,
        routes::engagements::delete,
        routes::engagements::archive,
        routes::engagements::unarchive,
        routes::engagements::history_page,
        routes::targets::list,
        routes::targets::create,
        routes::targets::get,
        routes::targets::history_page,
        routes::targets::update,
        routes::targets::delete,
        routes::findings::list,
        routes::findings::create,
        routes::findings::list_all,
        routes::findings::get,
        routes::findings::history_page,
        routes::findings::update,
        routes::findings::delete,
        routes::findings::transition,
        routes::findings::bulk,
        routes::tasks::list,
        routes::tasks::create,
        routes::tasks::list_all,
        routes::tasks::get,
        routes::tasks::history_page,
        routes::tasks::update,
        routes::tasks::close,
        routes::tasks::delete,
        routes::wiki::list,
        routes::wiki::create,
        routes::wiki::get,
        routes::wiki::history_page,
        routes::wiki::update,
        routes::wiki::delete,
        routes::reports::list,
        routes::reports::create,
        routes::reports::list_all,
        routes::reports::get,
        routes::reports::history_page,
        routes::reports::update,
        routes::reports::delete,
        routes::reports::generate,
        routes::reports::content,
        routes::organizations::get,
        routes::organizations::update,
        routes::organizations::history,
        routes::api_keys::list,
        routes::api_keys::create,
        routes::api_keys::get,
        routes::api_keys::revoke,
        routes::api_keys::history_page,
        routes::events::list,
        routes::events::stream,
        routes::events::verify,
        routes::webhooks::list,
        routes::webhooks::create,
        routes::webhooks::get,
        routes::webhooks::update,
        routes::webhooks::delete,
        routes::webhooks::deliveries,
        routes::webhooks::history_page,
        crate::graphql::http::execute,
        crate::graphql::http::schema_sdl,
    ),
    components(schemas(ErrorBody, ErrorDetail, FieldErrorDoc, PageMeta)),
    modifiers(&FromRouteTable),
    tags(
        (name = "engagements", description = "Engagements: the unit of work"),
        (name = "targets", description = "Scope: hosts, networks, URLs and services of an engagement"),
        (name = "findings", description = "Vulnerabilities with CVSS scores and their two lifecycles"),
        (name = "tasks", description = "To-dos of an engagement"),
        (name = "wiki", description = "Markdown notes of an engagement, in a tree"),
        (name = "reports", description = "Documents rendered from an engagement's findings"),
        (name = "organizations", description = "The caller's organization"),
        (name = "api-keys", description = "API keys and their permissions"),
        (name = "events", description = "The hash-chained event log: feed, live stream, verification"),
        (name = "webhooks", description = "Signed, ordered, at-least-once event deliveries"),
        (name = "graphql", description = "GraphQL over the same data, keys and permissions; subscriptions over WebSocket"),
        (name = "operations", description = "Health and readiness"),
    )
)]
pub struct ApiDoc;

/// The document as served and as committed in `openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub fn document_json() -> String {
    document().to_pretty_json().unwrap_or_default()
}

/// A view as a JSON value (views are plain data: serializing them cannot fail).
pub fn to_json<T: Serialize>(view: T) -> serde_json::Value {
    serde_json::to_value(view).unwrap_or_default()
}

/// JSON of a `Data`-wrapped view, for handlers.
pub fn data<T: Serialize>(view: T) -> Json<Data<T>> {
    Json(Data { data: view })
}
