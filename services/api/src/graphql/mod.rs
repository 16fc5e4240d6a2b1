//! GraphQL beside REST: another facade over the same command service and read tables, never a
//! second implementation.
//!
//! - `POST /api/v1/graphql` runs queries and mutations with the same API keys (`Authorization:
//!   Bearer …`; without a valid key the same 401 envelope as REST), the same permissions per
//!   field (`context`), the same organization scoping and the same rate limit (the outer
//!   layer; `guard` charges what one request does beyond that: a mutation's extra fields).
//! - `GET /api/v1/graphql` upgrades to a WebSocket (`graphql-transport-ws`, or the older
//!   `graphql-ws`) for the `events` subscription; the key is in the `connection_init` payload
//!   and is checked again while the socket is open (`context::Socket`), and each operation is
//!   held to what a request is (`guard`).
//! - `GET /api/v1/graphql/schema.graphql` serves the SDL (committed as
//!   `services/api/schema.graphql`; `pwnbook graphql-schema` prints it).
//!
//! Objects are the REST objects (`view`), lists are the REST lists as Relay connections
//! (`connection`), mutations take the REST bodies (`shared::body`) and run the REST handlers'
//! code, errors carry the REST codes (`errors`), and nested fields are batched (`loaders`).

mod connection;
mod context;
mod effects;
mod engagements;
mod errors;
mod events;
mod findings;
mod guard;
pub mod http;
mod keys;
mod loaders;
mod organization;
mod reports;
mod shared;
mod targets;
mod tasks;
mod view;
mod webhooks;
mod wiki;

use std::sync::OnceLock;

use async_graphql::{MergedObject, SDLExportOptions, Schema};

use crate::graphql::engagements::{EngagementMutation, EngagementQuery};
use crate::graphql::events::{EventQuery, Subscription};
use crate::graphql::findings::{FindingMutation, FindingQuery};
use crate::graphql::keys::{ApiKeyMutation, ApiKeyQuery};
use crate::graphql::organization::{OrganizationMutation, OrganizationQuery};
use crate::graphql::reports::{ReportMutation, ReportQuery};
use crate::graphql::targets::{TargetMutation, TargetQuery};
use crate::graphql::tasks::{TaskMutation, TaskQuery};
use crate::graphql::webhooks::{WebhookMutation, WebhookQuery};
use crate::graphql::wiki::{WikiMutation, WikiQuery};

/// The deepest selection a query may nest (the standard introspection query fits).
pub const MAX_DEPTH: usize = 15;
/// The most a query may cost: a field costs 1 plus its children, a connection `first` times
/// its edge (default 20, at most 100), `affectedTargets` 10 times a target, a page of events
/// (`events`, every `history`) and `webhook.deliveries` `limit` times an item (default 100, at
/// most 1000), `verifyEvents` more than half the limit (one per request).
/// Fifty engagements with their findings (and those findings' targets), targets, tasks, wiki
/// pages and reports fit (about 24 000); a hundred engagements with a hundred findings each and
/// their targets do not (about 140 000). A query over either limit is refused before anything
/// runs.
pub const MAX_COMPLEXITY: usize = 50_000;
/// `verifyEvents` reads the organization's whole log: at most one fits a request.
pub const VERIFY_EVENTS_COST: usize = MAX_COMPLEXITY / 2 + 1;

#[derive(MergedObject, Default)]
pub struct Query(
    EngagementQuery,
    TargetQuery,
    FindingQuery,
    TaskQuery,
    WikiQuery,
    ReportQuery,
    OrganizationQuery,
    ApiKeyQuery,
    WebhookQuery,
    EventQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    EngagementMutation,
    TargetMutation,
    FindingMutation,
    TaskMutation,
    WikiMutation,
    ReportMutation,
    OrganizationMutation,
    ApiKeyMutation,
    WebhookMutation,
);

pub type PwnbookSchema = Schema<Query, Mutation, Subscription>;

/// The schema (the same for every server of the process; the state comes with each request).
pub fn schema() -> &'static PwnbookSchema {
    static SCHEMA: OnceLock<PwnbookSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::build(Query::default(), Mutation::default(), Subscription)
            .limit_depth(MAX_DEPTH)
            .limit_complexity(MAX_COMPLEXITY)
            .extension(guard::Guard)
            .finish()
    })
}

/// The schema in SDL, as served and as committed in `services/api/schema.graphql`.
pub fn sdl() -> String {
    schema().sdl_with_options(SDLExportOptions::new())
}
