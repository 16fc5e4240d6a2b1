//! Who is asking and what they may read: the session of a request (or of a WebSocket
//! connection), and per-field permission checks with the permissions of the REST route table.
//!
//! A field is guarded by the REST route that serves the same data (`engagement.findings` by
//! `GET /api/v1/engagements/{id}/findings`, `createEngagement` by `POST /api/v1/engagements`),
//! and the permission comes from `routes::ROUTES`, so the two facades cannot drift apart. A key
//! without it gets a `FORBIDDEN` error on that field (and `null` there); the rest of the query
//! is answered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use async_graphql::Context;
use futures::future::BoxFuture;
use pwnbook_commands::permissions::grants;
use pwnbook_commands::Permission;
use tracing::Instrument;

use crate::auth::{self, Caller, Principal};
use crate::error::ApiError;
use crate::graphql::effects::Effects;
use crate::graphql::errors::Result;
use crate::graphql::loaders::Batch;
use crate::routes::ROUTES;
use crate::state::AppState;

/// What a resolver works with: the server's state and the authenticated caller.
pub struct Session {
    pub state: AppState,
    pub caller: Caller,
    /// Batches the nested reads of one request (or of one subscription event) per kind.
    pub loader: DataLoader<Batch>,
    /// The WebSocket the session belongs to (`None` over HTTP).
    pub socket: Option<Arc<Socket>>,
    /// What the request did, for `Idempotency-Key`.
    pub effects: Arc<Effects>,
}

impl Session {
    pub fn new(state: AppState, principal: Principal) -> Self {
        let batch = Batch::new(state.clone(), principal.organization_id.clone());
        // The loader's batches run as tasks of their own: they keep the request's span (the
        // request log, and the statement count of the N+1 test).
        let loader = DataLoader::new(batch, |task: BoxFuture<'static, ()>| {
            tokio::spawn(task.instrument(tracing::Span::current()))
        });
        let effects = Arc::new(Effects::default());
        let proof = Some(effects.committed.clone());
        Self { state, caller: Caller::new(principal, None, proof), loader, socket: None, effects }
    }

    pub fn on_socket(mut self, socket: Arc<Socket>) -> Self {
        self.socket = Some(socket);
        self
    }

    pub fn organization_id(&self) -> &str {
        self.caller.organization_id()
    }
}

/// The most subscriptions one WebSocket may run at once.
pub const MAX_SUBSCRIPTIONS: usize = 16;

/// A WebSocket's hold on its key: a key revoked or expired after `connection_init` must stop
/// working on the open socket too, so the key is checked again at each `subscribe`, at each
/// event and on a timer, and a failed check closes the connection (4403).
pub struct Socket {
    secret: String,
    active: AtomicUsize,
    closing: tokio::sync::watch::Sender<Option<String>>,
}

impl Socket {
    pub fn new(secret: String, closing: tokio::sync::watch::Sender<Option<String>>) -> Self {
        Self { secret, active: AtomicUsize::new(0), closing }
    }

    /// Checks the key again; when it no longer works, the connection is closed.
    pub async fn check_key(&self, state: &AppState) -> std::result::Result<(), ApiError> {
        match auth::principal_for_secret(state, &self.secret).await {
            Ok(_) => Ok(()),
            Err(ApiError::Unauthorized(reason)) => {
                self.close(&reason);
                Err(ApiError::Unauthorized(reason))
            }
            Err(other) => Err(other),
        }
    }

    /// Closes the connection (4403) for `reason`.
    pub fn close(&self, reason: &str) {
        self.closing.send_replace(Some(reason.to_owned()));
    }

    /// A place for one more subscription, given back when the slot is dropped.
    pub fn slot(self: &Arc<Self>) -> std::result::Result<Slot, ApiError> {
        let taken = self
            .active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < MAX_SUBSCRIPTIONS).then_some(n + 1));
        match taken {
            Ok(_) => Ok(Slot(self.clone())),
            Err(_) => Err(ApiError::BadRequest(format!(
                "a WebSocket runs at most {MAX_SUBSCRIPTIONS} subscriptions at once; complete one first"
            ))),
        }
    }
}

/// One running operation of a WebSocket.
pub struct Slot(Arc<Socket>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A REST route, `(method, path)` as in the route table.
pub type Route = (&'static str, &'static str);

/// The permission the route table requires for `route` (`None` for a route it lacks).
pub fn permission(route: Route) -> Option<Permission> {
    ROUTES.iter().find(|r| r.method == route.0 && r.path == route.1).map(|r| r.permission)
}

/// The session, when the caller's key holds the permission of `route`; `FORBIDDEN` otherwise.
pub fn allowed<'a>(ctx: &Context<'a>, route: Route) -> Result<&'a Session> {
    let session = ctx.data::<Session>()?;
    let Some(needed) = permission(route) else {
        return Err(ApiError::Internal(format!("GraphQL names a route the table lacks: {route:?}")).into());
    };
    if grants(&session.caller.principal.permissions, needed) {
        Ok(session)
    } else {
        Err(ApiError::Forbidden(format!("the API key lacks the permission {needed}")).into())
    }
}

/// The REST routes whose permissions guard GraphQL fields.
pub mod route {
    use super::Route;

    pub const ENGAGEMENTS: Route = ("GET", "/api/v1/engagements");
    pub const ENGAGEMENT: Route = ("GET", "/api/v1/engagements/{id}");
    pub const CREATE_ENGAGEMENT: Route = ("POST", "/api/v1/engagements");
    pub const UPDATE_ENGAGEMENT: Route = ("PATCH", "/api/v1/engagements/{id}");
    pub const DELETE_ENGAGEMENT: Route = ("DELETE", "/api/v1/engagements/{id}");
    pub const ARCHIVE_ENGAGEMENT: Route = ("POST", "/api/v1/engagements/{id}/archive");
    pub const UNARCHIVE_ENGAGEMENT: Route = ("POST", "/api/v1/engagements/{id}/unarchive");
    pub const ENGAGEMENT_HISTORY: Route = ("GET", "/api/v1/engagements/{id}/history");

    pub const ENGAGEMENT_TARGETS: Route = ("GET", "/api/v1/engagements/{id}/targets");
    pub const TARGET: Route = ("GET", "/api/v1/targets/{id}");
    pub const CREATE_TARGET: Route = ("POST", "/api/v1/engagements/{id}/targets");
    pub const UPDATE_TARGET: Route = ("PATCH", "/api/v1/targets/{id}");
    pub const DELETE_TARGET: Route = ("DELETE", "/api/v1/targets/{id}");
    pub const TARGET_HISTORY: Route = ("GET", "/api/v1/targets/{id}/history");

    pub const ENGAGEMENT_FINDINGS: Route = ("GET", "/api/v1/engagements/{id}/findings");
    pub const FINDINGS: Route = ("GET", "/api/v1/findings");
    pub const FINDING: Route = ("GET", "/api/v1/findings/{id}");
    pub const CREATE_FINDING: Route = ("POST", "/api/v1/engagements/{id}/findings");
    pub const BULK_FINDINGS: Route = ("PATCH", "/api/v1/engagements/{id}/findings/bulk");
    pub const UPDATE_FINDING: Route = ("PATCH", "/api/v1/findings/{id}");
    pub const DELETE_FINDING: Route = ("DELETE", "/api/v1/findings/{id}");
    pub const TRANSITION_FINDING: Route = ("POST", "/api/v1/findings/{id}/transition");
    pub const FINDING_HISTORY: Route = ("GET", "/api/v1/findings/{id}/history");

    pub const ENGAGEMENT_TASKS: Route = ("GET", "/api/v1/engagements/{id}/tasks");
    pub const TASKS: Route = ("GET", "/api/v1/tasks");
    pub const TASK: Route = ("GET", "/api/v1/tasks/{id}");
    pub const CREATE_TASK: Route = ("POST", "/api/v1/engagements/{id}/tasks");
    pub const UPDATE_TASK: Route = ("PATCH", "/api/v1/tasks/{id}");
    pub const DELETE_TASK: Route = ("DELETE", "/api/v1/tasks/{id}");
    pub const CLOSE_TASK: Route = ("POST", "/api/v1/tasks/{id}/close");
    pub const TASK_HISTORY: Route = ("GET", "/api/v1/tasks/{id}/history");

    pub const ENGAGEMENT_WIKI: Route = ("GET", "/api/v1/engagements/{id}/wiki");
    pub const WIKI_PAGE: Route = ("GET", "/api/v1/wiki/{id}");
    pub const CREATE_WIKI_PAGE: Route = ("POST", "/api/v1/engagements/{id}/wiki");
    pub const UPDATE_WIKI_PAGE: Route = ("PATCH", "/api/v1/wiki/{id}");
    pub const DELETE_WIKI_PAGE: Route = ("DELETE", "/api/v1/wiki/{id}");
    pub const WIKI_HISTORY: Route = ("GET", "/api/v1/wiki/{id}/history");

    pub const ENGAGEMENT_REPORTS: Route = ("GET", "/api/v1/engagements/{id}/reports");
    pub const REPORTS: Route = ("GET", "/api/v1/reports");
    pub const REPORT: Route = ("GET", "/api/v1/reports/{id}");
    pub const REPORT_CONTENT: Route = ("GET", "/api/v1/reports/{id}/content");
    pub const CREATE_REPORT: Route = ("POST", "/api/v1/engagements/{id}/reports");
    pub const UPDATE_REPORT: Route = ("PATCH", "/api/v1/reports/{id}");
    pub const DELETE_REPORT: Route = ("DELETE", "/api/v1/reports/{id}");
    pub const GENERATE_REPORT: Route = ("POST", "/api/v1/reports/{id}/generate");
    pub const REPORT_HISTORY: Route = ("GET", "/api/v1/reports/{id}/history");

    pub const ORGANIZATION: Route = ("GET", "/api/v1/organizations/current");
    pub const UPDATE_ORGANIZATION: Route = ("PATCH", "/api/v1/organizations/current");
    pub const ORGANIZATION_HISTORY: Route = ("GET", "/api/v1/organizations/current/history");

    pub const API_KEYS: Route = ("GET", "/api/v1/api-keys");
    pub const API_KEY: Route = ("GET", "/api/v1/api-keys/{id}");
    pub const CREATE_API_KEY: Route = ("POST", "/api/v1/api-keys");
    pub const REVOKE_API_KEY: Route = ("DELETE", "/api/v1/api-keys/{id}");
    pub const API_KEY_HISTORY: Route = ("GET", "/api/v1/api-keys/{id}/history");

    pub const EVENTS: Route = ("GET", "/api/v1/events");
    pub const EVENT_STREAM: Route = ("GET", "/api/v1/events/stream");
    pub const VERIFY_EVENTS: Route = ("GET", "/api/v1/events/verify");

    pub const WEBHOOKS: Route = ("GET", "/api/v1/webhooks");
    pub const WEBHOOK: Route = ("GET", "/api/v1/webhooks/{id}");
    pub const CREATE_WEBHOOK: Route = ("POST", "/api/v1/webhooks");
    pub const UPDATE_WEBHOOK: Route = ("PATCH", "/api/v1/webhooks/{id}");
    pub const DELETE_WEBHOOK: Route = ("DELETE", "/api/v1/webhooks/{id}");
    pub const WEBHOOK_DELIVERIES: Route = ("GET", "/api/v1/webhooks/{id}/deliveries");
    pub const WEBHOOK_HISTORY: Route = ("GET", "/api/v1/webhooks/{id}/history");

    /// Every route above, for the test that each one is in the route table.
    #[cfg(test)]
    pub const ALL: &[Route] = &[
        ENGAGEMENTS,
        ENGAGEMENT,
        CREATE_ENGAGEMENT,
        UPDATE_ENGAGEMENT,
        DELETE_ENGAGEMENT,
        ARCHIVE_ENGAGEMENT,
        UNARCHIVE_ENGAGEMENT,
        ENGAGEMENT_HISTORY,
        ENGAGEMENT_TARGETS,
        TARGET,
        CREATE_TARGET,
        UPDATE_TARGET,
        DELETE_TARGET,
        TARGET_HISTORY,
        ENGAGEMENT_FINDINGS,
        FINDINGS,
        FINDING,
        CREATE_FINDING,
        BULK_FINDINGS,
        UPDATE_FINDING,
        DELETE_FINDING,
        TRANSITION_FINDING,
        FINDING_HISTORY,
        ENGAGEMENT_TASKS,
        TASKS,
        TASK,
        CREATE_TASK,
        UPDATE_TASK,
        DELETE_TASK,
        CLOSE_TASK,
        TASK_HISTORY,
        ENGAGEMENT_WIKI,
        WIKI_PAGE,
        CREATE_WIKI_PAGE,
        UPDATE_WIKI_PAGE,
        DELETE_WIKI_PAGE,
        WIKI_HISTORY,
        ENGAGEMENT_REPORTS,
        REPORTS,
        REPORT,
        REPORT_CONTENT,
        CREATE_REPORT,
        UPDATE_REPORT,
        DELETE_REPORT,
        GENERATE_REPORT,
        REPORT_HISTORY,
        ORGANIZATION,
        UPDATE_ORGANIZATION,
        ORGANIZATION_HISTORY,
        API_KEYS,
        API_KEY,
        CREATE_API_KEY,
        REVOKE_API_KEY,
        API_KEY_HISTORY,
        EVENTS,
        EVENT_STREAM,
        VERIFY_EVENTS,
        WEBHOOKS,
        WEBHOOK,
        CREATE_WEBHOOK,
        UPDATE_WEBHOOK,
        DELETE_WEBHOOK,
        WEBHOOK_DELIVERIES,
        WEBHOOK_HISTORY,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_guarding_route_is_in_the_route_table() {
        for route in route::ALL {
            assert!(permission(*route).is_some(), "{route:?} is not in routes::ROUTES");
        }
    }
}
