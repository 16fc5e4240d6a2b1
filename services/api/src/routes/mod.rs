//! The route table: every route with the one permission it needs. The router and the permission
//! check are both generated from this table, so they cannot drift apart.

pub(crate) mod api_keys;
pub(crate) mod engagements;
pub mod events;
pub(crate) mod findings;
pub(crate) mod health;
pub mod history;
pub(crate) mod organizations;
mod report_document;
pub(crate) mod reports;
pub(crate) mod scope;
pub(crate) mod targets;
pub(crate) mod tasks;
pub(crate) mod webhooks;
pub(crate) mod wiki;

use axum::routing::{delete, get, patch, post};
use axum::{middleware, Router};
use pwnbook_commands::Permission;

use crate::state::AppState;
use crate::{auth, graphql, idempotency};

/// One route and the permission a key needs to call it.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub permission: Permission,
}

macro_rules! api_routes {
    ($($method:ident $path:literal => $handler:path, $permission:ident;)*) => {
        /// Every `/api/v1` route and its permission.
        pub const ROUTES: &[RouteSpec] = &[
            $(RouteSpec {
                method: api_routes!(@method $method),
                path: $path,
                permission: Permission::$permission,
            },)*
        ];

        fn api_router() -> Router<AppState> {
            Router::new()
                $(.route($path, $method($handler)))*
        }
    };
    (@method get) => { "GET" };
    (@method post) => { "POST" };
    (@method patch) => { "PATCH" };
    (@method delete) => { "DELETE" };
}

api_routes! {
    get "/api/v1/engagements" => engagements::list, EngagementsRead;
    post "/api/v1/engagements" => engagements::create, EngagementsWrite;
    get "/api/v1/engagements/{id}" => engagements::get, EngagementsRead;
    patch "/api/v1/engagements/{id}" => engagements::update, EngagementsWrite;
    delete "/api/v1/engagements/{id}" => engagements::delete, EngagementsDelete;
    post "/api/v1/engagements/{id}/archive" => engagements::archive, EngagementsWrite;
    post "/api/v1/engagements/{id}/unarchive" => engagements::unarchive, EngagementsWrite;
    get "/api/v1/engagements/{id}/targets" => targets::list, TargetsRead;
    post "/api/v1/engagements/{id}/targets" => targets::create, TargetsWrite;
    get "/api/v1/targets/{id}" => targets::get, TargetsRead;
    patch "/api/v1/targets/{id}" => targets::update, TargetsWrite;
    delete "/api/v1/targets/{id}" => targets::delete, TargetsWrite;
    get "/api/v1/engagements/{id}/findings" => findings::list, FindingsRead;
    post "/api/v1/engagements/{id}/findings" => findings::create, FindingsWrite;
    patch "/api/v1/engagements/{id}/findings/bulk" => findings::bulk, FindingsWrite;
    get "/api/v1/findings" => findings::list_all, FindingsRead;
    get "/api/v1/findings/{id}" => findings::get, FindingsRead;
    patch "/api/v1/findings/{id}" => findings::update, FindingsWrite;
    delete "/api/v1/findings/{id}" => findings::delete, FindingsDelete;
    post "/api/v1/findings/{id}/transition" => findings::transition, FindingsWrite;
    get "/api/v1/engagements/{id}/tasks" => tasks::list, TasksRead;
    post "/api/v1/engagements/{id}/tasks" => tasks::create, TasksWrite;
    get "/api/v1/tasks" => tasks::list_all, TasksRead;
    get "/api/v1/tasks/{id}" => tasks::get, TasksRead;
    patch "/api/v1/tasks/{id}" => tasks::update, TasksWrite;
    delete "/api/v1/tasks/{id}" => tasks::delete, TasksWrite;
    post "/api/v1/tasks/{id}/close" => tasks::close, TasksWrite;
    get "/api/v1/engagements/{id}/wiki" => wiki::list, WikiRead;
    post "/api/v1/engagements/{id}/wiki" => wiki::create, WikiWrite;
    get "/api/v1/wiki/{id}" => wiki::get, WikiRead;
    patch "/api/v1/wiki/{id}" => wiki::update, WikiWrite;
    delete "/api/v1/wiki/{id}" => wiki::delete, WikiWrite;
    get "/api/v1/engagements/{id}/reports" => reports::list, ReportsRead;
    post "/api/v1/engagements/{id}/reports" => reports::create, ReportsWrite;
    get "/api/v1/reports" => reports::list_all, ReportsRead;
    get "/api/v1/reports/{id}" => reports::get, ReportsRead;
    patch "/api/v1/reports/{id}" => reports::update, ReportsWrite;
    delete "/api/v1/reports/{id}" => reports::delete, ReportsWrite;
    post "/api/v1/reports/{id}/generate" => reports::generate, ReportsWrite;
    get "/api/v1/reports/{id}/content" => reports::content, ReportsRead;
    get "/api/v1/engagements/{id}/history" => engagements::history_page, AuditRead;
    get "/api/v1/targets/{id}/history" => targets::history_page, AuditRead;
    get "/api/v1/findings/{id}/history" => findings::history_page, AuditRead;
    get "/api/v1/tasks/{id}/history" => tasks::history_page, AuditRead;
    get "/api/v1/wiki/{id}/history" => wiki::history_page, AuditRead;
    get "/api/v1/reports/{id}/history" => reports::history_page, AuditRead;
    get "/api/v1/organizations/current" => organizations::get, OrganizationsRead;
    get "/api/v1/organizations/current/history" => organizations::history, AuditRead;
    patch "/api/v1/organizations/current" => organizations::update, OrganizationsWrite;
    get "/api/v1/api-keys" => api_keys::list, KeysManage;
    post "/api/v1/api-keys" => api_keys::create, KeysManage;
    get "/api/v1/api-keys/{id}" => api_keys::get, KeysManage;
    delete "/api/v1/api-keys/{id}" => api_keys::revoke, KeysManage;
    get "/api/v1/api-keys/{id}/history" => api_keys::history_page, AuditRead;
    get "/api/v1/events" => events::list, AuditRead;
    get "/api/v1/events/stream" => events::stream, AuditRead;
    get "/api/v1/events/verify" => events::verify, AuditRead;
    get "/api/v1/webhooks" => webhooks::list, WebhooksManage;
    post "/api/v1/webhooks" => webhooks::create, WebhooksManage;
    get "/api/v1/webhooks/{id}" => webhooks::get, WebhooksManage;
    patch "/api/v1/webhooks/{id}" => webhooks::update, WebhooksManage;
    delete "/api/v1/webhooks/{id}" => webhooks::delete, WebhooksManage;
    get "/api/v1/webhooks/{id}/deliveries" => webhooks::deliveries, WebhooksManage;
    get "/api/v1/webhooks/{id}/history" => webhooks::history_page, AuditRead;
}

/// The whole HTTP surface: authenticated `/api/v1` routes, GraphQL, and the open health
/// endpoints.
pub fn router(state: AppState) -> Router<AppState> {
    let idempotency = middleware::from_fn_with_state(state, idempotency::middleware);
    api_router()
        .route_layer(middleware::from_fn(crate::after_commit::answer))
        .route_layer(idempotency.clone())
        .route_layer(middleware::from_fn(auth::authorize))
        .merge(graphql_router().route_layer(idempotency))
        .merge(health::router())
}

/// GraphQL checks permissions per field (with this table's permissions), so its routes are
/// outside the table: `POST` answers 401 without a valid key like every route, the WebSocket
/// authenticates from its `connection_init` payload, and the SDL is open like the OpenAPI
/// document. `Idempotency-Key` on the `POST` works as on REST's: the first response is
/// replayed when it saved something or failed nowhere (`graphql::effects`).
fn graphql_router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/graphql", post(graphql::http::execute).get(graphql::http::subscribe))
        .route("/api/v1/graphql/schema.graphql", get(graphql::http::schema_sdl))
}
