//! What every operation goes through beside the schema's depth and complexity limits:
//!
//! - errors of the GraphQL layer get a code and the request id (`errors::with_codes`);
//! - a mutation runs at most `MAX_MUTATION_FIELDS` root fields, a query `MAX_QUERY_FIELDS`, and
//!   each one after the first is charged to the key's rate limit (the HTTP request paid for the
//!   first), so aliases cannot multiply the writes or list queries a request may make; no
//!   selection set selects one field more than `MAX_SAME_FIELD` times (aliases of a nested list
//!   each run a query of their own, which the complexity limit, counting rows, lets through);
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
use async_graphql::parser::types::{ExecutableDocument, Field, OperationType, Selection, SelectionSet};
use async_graphql::{Pos, Request, Response, ServerError, ServerResult, Value, Variables};
use futures::StreamExt;

use crate::auth;
use crate::error::ApiError;
use crate::graphql::context::{Session, Slot};
use crate::graphql::errors;

/// The most root fields a mutation may run.
pub const MAX_MUTATION_FIELDS: usize = 20;
/// The most root fields a query may run (`__typename` and introspection not counted).
pub const MAX_QUERY_FIELDS: usize = 50;
/// The most times one selection set may select the same field (under aliases).
pub const MAX_SAME_FIELD: usize = 20;

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
    /// The root response keys of each operation of the document, in selection order.
    root_keys: Mutex<Vec<Vec<String>>>,
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
        let mut response = next.run(ctx).await;
        errors::null_failed_fields(&mut response);
        if let (Value::Object(data), Ok(operations)) = (&response.data, self.root_keys.lock()) {
            // The operation that ran is the one whose root fields `data` holds.
            let ran =
                operations.iter().find(|keys| data.keys().all(|key| keys.iter().any(|k| k == key.as_str())));
            if let Some(keys) = ran.cloned() {
                errors::in_selection_order(&mut response, &keys);
            }
        }
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
        let keys = document
            .operations
            .iter()
            .map(|(_, operation)| {
                fields(&document, &operation.node.selection_set.node, &mut HashSet::new())
                    .iter()
                    .map(|field| field.response_key().node.to_string())
                    .collect()
            })
            .collect();
        if let Ok(mut root_keys) = self.root_keys.lock() {
            *root_keys = keys;
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
    let mut charged = 0;
    for (_, operation) in document.operations.iter() {
        let set = &operation.node.selection_set.node;
        let (limit, kind) = match operation.node.ty {
            OperationType::Mutation => (MAX_MUTATION_FIELDS, "a mutation"),
            OperationType::Query => (MAX_QUERY_FIELDS, "a query"),
            OperationType::Subscription => (usize::MAX, "a subscription"),
        };
        let roots = fields(document, set, &mut HashSet::new())
            .iter()
            .filter(|field| !field.name.node.starts_with("__"))
            .count();
        if roots > limit {
            return Err(ApiError::BadRequest(format!(
                "{kind} may run at most {limit} fields; send the others in another request"
            )));
        }
        if operation.node.ty != OperationType::Subscription {
            charged = charged.max(roots.saturating_sub(1));
        }
        if let Some(name) = repeated_field(document, set, &mut HashSet::new()) {
            return Err(ApiError::BadRequest(format!(
                "a selection selects {name} more than {MAX_SAME_FIELD} times; ask for it in fewer aliases"
            )));
        }
    }
    auth::charge(&session.state, &session.caller.principal, charged)
}

/// A field some selection set of `set`'s tree selects more than `MAX_SAME_FIELD` times.
fn repeated_field<'d>(
    document: &'d ExecutableDocument,
    set: &'d SelectionSet,
    seen: &mut HashSet<&'d str>,
) -> Option<&'d str> {
    let selected = fields(document, set, seen);
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for field in &selected {
        let count = counts.entry(field.name.node.as_str()).or_default();
        *count += 1;
        if *count > MAX_SAME_FIELD {
            return Some(field.name.node.as_str());
        }
    }
    selected.iter().find_map(|field| repeated_field(document, &field.selection_set.node, seen))
}

/// The fields a selection set runs, through its fragments (each fragment once: the document
/// is not validated yet, so a fragment may spread itself).
fn fields<'d>(
    document: &'d ExecutableDocument,
    set: &'d SelectionSet,
    seen: &mut HashSet<&'d str>,
) -> Vec<&'d Field> {
    let mut found = Vec::new();
    for selection in &set.items {
        match &selection.node {
            Selection::Field(field) => found.push(&field.node),
            Selection::InlineFragment(fragment) => {
                found.extend(fields(document, &fragment.node.selection_set.node, seen));
            }
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.as_str();
                if let Some(fragment) = document.fragments.get(&spread.node.fragment_name.node) {
                    if seen.insert(name) {
                        found.extend(fields(document, &fragment.node.selection_set.node, seen));
                    }
                }
            }
        }
    }
    found
}
