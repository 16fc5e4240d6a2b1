//! The route table: every route with the one permission it needs. The router and the permission
//! check are both generated from this table, so they cannot drift apart.

mod api_keys;
mod engagements;
pub mod events;
mod health;
pub mod history;
mod organizations;
mod webhooks;

use axum::routing::{delete, get, patch, post};
use axum::{middleware, Router};
use pwnbook_commands::Permission;

use crate::state::AppState;
use crate::{auth, idempotency};

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
    get "/api/v1/engagements/{id}/history" => history::of::<engagements::Tracked>, AuditRead;
    get "/api/v1/organizations/current" => organizations::get, OrganizationsRead;
    get "/api/v1/organizations/current/history" => organizations::history, AuditRead;
    patch "/api/v1/organizations/current" => organizations::update, OrganizationsWrite;
    get "/api/v1/api-keys" => api_keys::list, KeysManage;
    post "/api/v1/api-keys" => api_keys::create, KeysManage;
    get "/api/v1/api-keys/{id}" => api_keys::get, KeysManage;
    delete "/api/v1/api-keys/{id}" => api_keys::revoke, KeysManage;
    get "/api/v1/api-keys/{id}/history" => history::of::<api_keys::Tracked>, AuditRead;
    get "/api/v1/events" => events::list, AuditRead;
    get "/api/v1/events/stream" => events::stream, AuditRead;
    get "/api/v1/events/verify" => events::verify, AuditRead;
    get "/api/v1/webhooks" => webhooks::list, WebhooksManage;
    post "/api/v1/webhooks" => webhooks::create, WebhooksManage;
    get "/api/v1/webhooks/{id}" => webhooks::get, WebhooksManage;
    patch "/api/v1/webhooks/{id}" => webhooks::update, WebhooksManage;
    delete "/api/v1/webhooks/{id}" => webhooks::delete, WebhooksManage;
    get "/api/v1/webhooks/{id}/deliveries" => webhooks::deliveries, WebhooksManage;
    get "/api/v1/webhooks/{id}/history" => history::of::<webhooks::Tracked>, AuditRead;
}

/// The whole HTTP surface: authenticated `/api/v1` routes plus the open health endpoints.
pub fn router(state: AppState) -> Router<AppState> {
    api_router()
        .route_layer(middleware::from_fn_with_state(state, idempotency::middleware))
        .route_layer(middleware::from_fn(auth::authorize))
        .merge(health::router())
}
