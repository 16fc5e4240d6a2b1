//! The command service: load → check `If-Match` → handle → commit (where triggers refuse a taken
//! name, a read-only parent engagement or a revoked key), retried on a concurrent write or a
//! refusal, which the retry names; returns what was committed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, AggregateError};
use pwnbook_events::{Actor, AggregateStore, EventMetadata, NameClaim, Store};

use crate::{CommandError, DomainError, FieldError};

/// A command loses a race at most this often before the caller is told to retry.
const MAX_ATTEMPTS: usize = 8;

/// A unique-name claim and the message for the client when the name is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub claim: NameClaim,
    pub conflict: String,
}

/// Who is acting, on behalf of which organization, and why (for the event metadata).
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub organization_id: String,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// Set when a command run with this context commits.
    pub commit_proof: Option<CommitProof>,
    /// Fields the request carried that its endpoint refuses (unknown or read-only ones): the
    /// command is validated but never committed, and its 422 names these with its own.
    pub refused: Vec<FieldError>,
}

/// Set once a command commits: the commit's guards accepted its actor then (an event of a revoked
/// key is refused, see the events migration 1008).
#[derive(Debug, Clone, Default)]
pub struct CommitProof(Arc<AtomicBool>);

impl CommitProof {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// How to run one command.
#[derive(Debug, Clone, Default)]
pub struct Execution {
    /// The version the client last saw (`If-Match`), checked atomically with the write.
    pub expected_version: Option<i64>,
    pub claim: Option<Claim>,
    pub engagement_id: Option<String>,
    /// The id was just generated, so the aggregate cannot have events yet: the first attempt
    /// starts from the empty aggregate instead of reading its (empty) stream. Should the id be
    /// taken after all, the commit conflicts and the retry loads it.
    pub fresh: bool,
}

/// What a command did: the aggregate's version after it and whether it appended events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub version: i64,
    pub changed: bool,
    /// The JSON of each event it appended, in order (as stored: the event enum).
    pub payloads: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct CommandService {
    store: Store,
}

impl CommandService {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs one command; counts it by aggregate, command and outcome.
    pub async fn execute<A>(
        &self,
        aggregate_id: &str,
        command: A::Command,
        context: &CommandContext,
        execution: Execution,
    ) -> Result<Committed, CommandError>
    where
        A: Aggregate<Error = DomainError, Services = ()>,
        A::Command: Clone + std::fmt::Debug,
    {
        // The variant name of the command enum, e.g. `Create`.
        let debug = format!("{command:?}");
        let name = debug.split(|c: char| !c.is_alphanumeric()).next().unwrap_or_default().to_owned();
        let result = self.run::<A>(aggregate_id, command, context, execution).await;
        let outcome = match &result {
            Ok(committed) if committed.changed => "committed",
            Ok(_) => "unchanged",
            Err(CommandError::Domain(DomainError::Validation(_))) => "invalid",
            Err(CommandError::Domain(DomainError::Conflict(_))) => "conflict",
            Err(CommandError::Domain(DomainError::Forbidden(_))) => "forbidden",
            Err(CommandError::Domain(DomainError::NotFound)) => "not_found",
            Err(CommandError::PreconditionFailed { .. }) => "precondition_failed",
            Err(CommandError::KeyRevoked) => "key_revoked",
            Err(CommandError::Contention) => "contention",
            Err(CommandError::Unavailable(_)) => "unavailable",
            Err(CommandError::Store(_)) => "error",
        };
        metrics::counter!("pwnbook_commands_total", "aggregate" => A::TYPE, "command" => name, "outcome" => outcome)
            .increment(1);
        result
    }

    async fn run<A>(
        &self,
        aggregate_id: &str,
        command: A::Command,
        context: &CommandContext,
        execution: Execution,
    ) -> Result<Committed, CommandError>
    where
        A: Aggregate<Error = DomainError, Services = ()>,
        A::Command: Clone,
    {
        let events = AggregateStore::<A>::new(&self.store);
        // A name must be free, a child resource's engagement writable and the acting key not
        // revoked. Triggers enforce all three atomically with the commit (a refusal is a
        // conflict), so they are only looked up to name the reason: after a refusal, or (names
        // and engagements) when the command would not commit at all.
        let engagement_id = execution.engagement_id.as_deref().filter(|_| A::TYPE != "engagement");
        let mut refused = false;
        for attempt in 0..MAX_ATTEMPTS {
            let mut loaded = if attempt == 0 && execution.fresh {
                AggregateStore::<A>::fresh(aggregate_id)
            } else {
                events.load(aggregate_id).await.map_err(store_error)?
            };
            let current = loaded.current_sequence as i64;
            if let Some(expected) = execution.expected_version {
                if expected != current {
                    // A read-only or deleted engagement answers before a stale version (the
                    // route may not have read it).
                    if let Some(engagement_id) = engagement_id {
                        self.check_engagement(engagement_id).await?;
                    }
                    return Err(CommandError::PreconditionFailed { expected, current });
                }
            }
            if refused {
                self.check_key(&context.actor).await?;
                self.check_unique(context, aggregate_id, &execution, engagement_id).await?;
            }
            let sink = EventSink::default();
            let handled = loaded.aggregate.handle(command.clone(), &(), &sink).await;
            let new_events = sink.collect().await;
            // No commit, no trigger: a taken name or a read-only engagement still takes
            // precedence over the command's own verdict (and over the fields a request may not
            // send, which are named with the command's own invalid fields).
            let fields_refused = !context.refused.is_empty();
            if !refused && (handled.is_err() || new_events.is_empty() || fields_refused) {
                self.check_unique(context, aggregate_id, &execution, engagement_id).await?;
            }
            if fields_refused {
                let mut details = context.refused.clone();
                match handled {
                    // A field the route already found invalid is named once.
                    Err(DomainError::Validation(own)) => details.extend(
                        own.into_iter().filter(|e| !context.refused.iter().any(|r| r.field == e.field)),
                    ),
                    Err(other) => return Err(other.into()),
                    Ok(()) => {}
                }
                return Err(DomainError::Validation(details).into());
            }
            handled?;
            if new_events.is_empty() {
                return Ok(Committed {
                    aggregate_type: A::TYPE,
                    aggregate_id: aggregate_id.to_owned(),
                    version: current,
                    changed: false,
                    payloads: Vec::new(),
                });
            }
            let metadata = EventMetadata {
                organization_id: context.organization_id.clone(),
                engagement_id: execution.engagement_id.clone(),
                actor: context.actor.clone(),
                request_id: context.request_id.clone(),
                idempotency_key: context.idempotency_key.clone(),
                claim: execution.claim.as_ref().map(|c| c.claim.clone()),
            };
            match events.commit(new_events, loaded, metadata.into_map()).await {
                Ok(committed) => {
                    if let Some(proof) = &context.commit_proof {
                        proof.set();
                    }
                    let version = committed.last().map_or(current, |e| e.sequence as i64);
                    let payloads = committed
                        .iter()
                        .map(|e| serde_json::to_string(&e.payload))
                        .collect::<Result<_, _>>()
                        .map_err(|e| CommandError::Store(e.to_string()))?;
                    return Ok(Committed {
                        aggregate_type: A::TYPE,
                        aggregate_id: aggregate_id.to_owned(),
                        version,
                        changed: true,
                        payloads,
                    });
                }
                // Another writer got there first (same aggregate, or the same name), or the
                // engagement is not writable: reload, and the checks above tell a stale If-Match,
                // a taken name or the engagement's state from a plain race.
                Err(AggregateError::AggregateConflict) => refused = true,
                Err(other) => return Err(store_error(other)),
            }
        }
        Err(CommandError::Contention)
    }

    async fn check_unique(
        &self,
        context: &CommandContext,
        aggregate_id: &str,
        execution: &Execution,
        engagement_id: Option<&str>,
    ) -> Result<(), CommandError> {
        if let Some(claim) = &execution.claim {
            self.check_claim(&context.organization_id, aggregate_id, claim).await?;
        }
        if let Some(engagement_id) = engagement_id {
            self.check_engagement(engagement_id).await?;
        }
        Ok(())
    }

    /// The acting key's revocation, which the commit's guard refuses (migration 1008); looked
    /// up only after a refusal, since the server may have authenticated the key from memory.
    async fn check_key(&self, actor: &Actor) -> Result<(), CommandError> {
        let Some(key_id) = actor.id.as_deref().filter(|_| actor.kind == "api_key") else { return Ok(()) };
        if pwnbook_events::api_key::revoked(self.store.pool(), key_id).await.map_err(read_error)? {
            return Err(CommandError::KeyRevoked);
        }
        Ok(())
    }

    async fn check_claim(
        &self,
        organization_id: &str,
        aggregate_id: &str,
        claim: &Claim,
    ) -> Result<(), CommandError> {
        let NameClaim::Reserve { scope, key } = &claim.claim else { return Ok(()) };
        let owner: Option<String> = sqlx::query_scalar(
            "SELECT owner_id FROM unique_names WHERE organization_id = $1 AND scope = $2 AND name_key = $3",
        )
        .bind(organization_id)
        .bind(scope)
        .bind(key)
        .fetch_optional(self.store.pool())
        .await
        .map_err(read_error)?;
        match owner {
            Some(owner) if owner != aggregate_id => Err(DomainError::Conflict(claim.conflict.clone()).into()),
            _ => Ok(()),
        }
    }

    async fn check_engagement(&self, engagement_id: &str) -> Result<(), CommandError> {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM engagement_states WHERE engagement_id = $1")
                .bind(engagement_id)
                .fetch_optional(self.store.pool())
                .await
                .map_err(read_error)?;
        match state.as_deref() {
            Some("active") => Ok(()),
            Some("archived") => {
                Err(DomainError::Conflict("the engagement is archived and read-only".to_owned()).into())
            }
            _ => Err(DomainError::NotFound.into()),
        }
    }
}

/// A check's read failed: nothing is written yet, so a database out of reach is retryable.
fn read_error(error: sqlx::Error) -> CommandError {
    if pwnbook_events::unreachable(&error) {
        CommandError::Unavailable(error.to_string())
    } else {
        CommandError::Store(error.to_string())
    }
}

fn store_error(error: AggregateError<DomainError>) -> CommandError {
    match error {
        AggregateError::UserError(domain) => CommandError::Domain(domain),
        AggregateError::AggregateConflict => CommandError::Contention,
        AggregateError::DatabaseConnectionError(cause) => CommandError::Unavailable(cause.to_string()),
        other => CommandError::Store(other.to_string()),
    }
}
