//! What every operation goes through beside the schema's depth and complexity limits:
//!
//! - errors of the GraphQL layer get a code and the request id (`errors::with_codes`);
//! - a mutation runs at most `MAX_MUTATION_FIELDS` root fields, and each one after the first is
//!   charged to the key's rate limit (the HTTP request paid for the first), so aliases cannot
//!   multiply the writes a request may make;
//! - over a WebSocket, which has no HTTP request per operation: only subscriptions run, each
//!   one checks the key again, is charged to its rate limit, gets a request id of its own and
//!   takes one of the connection's `MAX_SUBSCRIPTIONS` places.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest,
    NextSubscribe,
};
use async_graphql::futures_util::stream::BoxStream;
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{Pos, Request, Response, ServerError, ServerResult, Variables};
use futures::StreamExt;

use crate::auth;
use crate::error::ApiError;
use crate::graphql::context::{Session, Slot};
use crate::graphql::errors;

/// The most root fields a mutation may run.
pub const MAX_MUTATION_FIELDS: usize = 20;

pub struct Guard;

impl ExtensionFactory for Guard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Operation::default())
    }
}

/// One operation (the factory makes one per request, and one per operation of a WebSocket).
#[derive(Default)]
struct Operation {
    request_id: OnceLock<String>,
    /// The WebSocket place this operation holds, until it ends.
    slot: Mutex<Option<Slot>>,
}

impl Operation {
    /// The HTTP request's id, or a new one (of the same form) for an operation of a WebSocket.
    fn request_id(&self) -> String {
        self.request_id
            .get_or_init(|| {
                crate::request_id::current()
                    .unwrap_or_else(|| format!("req_{}", ulid::Ulid::new().to_string().to_ascii_lowercase()))
            })
            .clone()
    }

    async fn admit(&self, session: &Session) -> Result<(), ApiError> {
        let Some(socket) = &session.socket else { return Ok(()) };
        socket.check_key(&session.state).await?;
        auth::charge(&session.state, &session.caller.principal, 1)?;
        let slot = socket.slot()?;
        let mut held =
            self.slot.lock().map_err(|_| ApiError::Internal("a slot lock was poisoned".to_owned()))?;
        *held = Some(slot);
        Ok(())
    }
}

fn server_error(error: ApiError) -> ServerError {
    async_graphql::Error::from(error).into_server_error(Pos::default())
}

#[async_trait::async_trait]
impl Extension for Operation {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let response = next.run(ctx).await;
        errors::with_codes(response, &self.request_id())
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let id = self.request_id();
        next.run(ctx, stream).map(move |response| errors::with_codes(response, &id)).boxed()
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        // Over HTTP the session comes with the request (not visible yet): only a WebSocket's
        // session is found here.
        if let Some(session) = ctx.data_opt::<Session>() {
            self.admit(session).await.map_err(server_error)?;
        }
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        if let Some(session) = ctx.data_opt::<Session>() {
            check(session, &document).map_err(server_error)?;
        }
        Ok(document)
    }
}

/// The operations a session may run, and the rate limit of a mutation's extra fields.
fn check(session: &Session, document: &ExecutableDocument) -> Result<(), ApiError> {
    let kinds: Vec<OperationType> = document.operations.iter().map(|(_, op)| op.node.ty).collect();
    if session.socket.is_some() && kinds.iter().any(|ty| *ty != OperationType::Subscription) {
        return Err(ApiError::BadRequest(
            "only subscriptions run over the WebSocket; send queries and mutations with POST /api/v1/graphql"
                .to_owned(),
        ));
    }
    let fields = document
        .operations
        .iter()
        .filter(|(_, op)| op.node.ty == OperationType::Mutation)
        .map(|(_, op)| root_fields(document, &op.node.selection_set.node, &mut HashSet::new()))
        .max()
        .unwrap_or(0);
    if fields > MAX_MUTATION_FIELDS {
        return Err(ApiError::BadRequest(format!(
            "a mutation may run at most {MAX_MUTATION_FIELDS} fields; send the others in another request"
        )));
    }
    auth::charge(&session.state, &session.caller.principal, fields.saturating_sub(1))
}

/// The fields a selection set runs, through its fragments (each fragment once: the document
/// is not validated yet, so a fragment may spread itself).
fn root_fields<'d>(
    document: &'d ExecutableDocument,
    set: &'d SelectionSet,
    seen: &mut HashSet<&'d str>,
) -> usize {
    set.items
        .iter()
        .map(|selection| match &selection.node {
            Selection::Field(_) => 1,
            Selection::InlineFragment(fragment) => {
                root_fields(document, &fragment.node.selection_set.node, seen)
            }
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.as_str();
                match document.fragments.get(&spread.node.fragment_name.node) {
                    Some(fragment) if seen.insert(name) => {
                        root_fields(document, &fragment.node.selection_set.node, seen)
                    }
                    _ => 0,
                }
            }
        })
        .sum()
}
