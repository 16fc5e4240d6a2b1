//! GraphQL beside REST: another facade over the same command service and read tables, never a
//! second implementation.
//!
//! - `POST /api/v1/graphql` runs queries and mutations with the same API keys (`Authorization:
//!   Bearer …`; without a valid key the same 401 envelope as REST), the same permissions per
//!   field (`context`), the same organization scoping and the same rate limit (the outer
//!   layer).
//! - `GET /api/v1/graphql` upgrades to a WebSocket (`graphql-transport-ws`, or the older
//!   `graphql-ws`) for the `events` subscription; the key is in the `connection_init` payload.
//! - `GET /api/v1/graphql/schema.graphql` serves the SDL (committed as
//!   `services/api/schema.graphql`; `pwnbook graphql-schema` prints it).
//!
//! Objects are the REST objects (`view`), lists are the REST lists as Relay connections
//! (`connection`), mutations take the REST bodies (`shared::body`) and run the REST handlers'
//! code, errors carry the REST codes (`errors`), and nested fields are batched (`loaders`).

mod connection;
mod context;
mod engagements;
mod errors;
mod events;
mod findings;
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

use std::sync::{Arc, OnceLock};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextRequest, NextSubscribe};
use async_graphql::futures_util::stream::BoxStream;
use async_graphql::{MergedObject, Response, SDLExportOptions, Schema};
use futures::StreamExt;

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
/// its edge (default 20, at most 100), `affectedTargets` 10 times a target, `history` 20.
/// Fifty engagements with their findings (and those findings' targets), targets, tasks, wiki
/// pages and reports fit (about 24 000); a hundred engagements with a hundred findings each and
/// their targets do not (about 140 000). A query over either limit is refused before anything
/// runs.
pub const MAX_COMPLEXITY: usize = 50_000;

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
            .extension(ErrorCodes)
            .finish()
    })
}

/// The schema in SDL, as served and as committed in `services/api/schema.graphql`.
pub fn sdl() -> String {
    schema().sdl_with_options(SDLExportOptions::new())
}

/// Gives errors of the GraphQL layer itself a code (`errors::add_code`), in answers to
/// queries and in subscription streams alike.
struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodes)
    }
}

#[async_trait::async_trait]
impl Extension for ErrorCodes {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        errors::with_codes(next.run(ctx).await)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream).map(errors::with_codes).boxed()
    }
}
