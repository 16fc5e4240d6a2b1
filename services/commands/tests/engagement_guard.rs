//! The parent-engagement rule holds in the store itself: a child event cannot commit once its
//! engagement is archived or deleted, even when a writer skips every check before the commit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cqrs_es::AggregateError;
use pwnbook_commands::engagement::{Engagement, EngagementCommand, NewEngagement};
use pwnbook_commands::finding::{Finding, FindingCommand, NewFinding};
use pwnbook_commands::{CommandContext, CommandError, CommandService, DomainError, Execution};
use pwnbook_events::finding::FindingEvent;
use pwnbook_events::testing::draft_finding;
use pwnbook_events::{backend_tests, Actor, AggregateStore, EventMetadata, Id, IdKind, Store};

const ORG: &str = "org_01j9k2m3n4p5q6r7s8t9";

fn context() -> CommandContext {
    CommandContext {
        organization_id: ORG.to_owned(),
        actor: Actor::system(),
        request_id: None,
        idempotency_key: None,
        commit_proof: None,
        refused: Vec::new(),
    }
}

async fn engagement(service: &CommandService, id: &str, command: EngagementCommand) {
    let execution =
        Execution { claim: command.claim(), engagement_id: Some(id.to_owned()), ..Execution::default() };
    service.execute::<Engagement>(id, command, &context(), execution).await.unwrap();
}

async fn create_finding(service: &CommandService, engagement_id: &str) -> Result<(), CommandError> {
    let command = FindingCommand::Create {
        organization_id: ORG.to_owned(),
        engagement_id: engagement_id.to_owned(),
        finding: NewFinding {
            title: "t".to_owned(),
            severity: Some("low".to_owned()),
            ..NewFinding::default()
        },
    };
    // Fresh, as the create routes run it: the refusals must not depend on loading the aggregate.
    let execution =
        Execution { engagement_id: Some(engagement_id.to_owned()), fresh: true, ..Execution::default() };
    let id = Id::generate(IdKind::Finding);
    service.execute::<Finding>(id.as_str(), command, &context(), execution).await.map(|_| ())
}

/// Commits a finding straight through the event store, as a writer that lost the race with the
/// archive would after its checks passed.
async fn commit_unchecked(store: &Store, engagement_id: &str) -> Result<(), AggregateError<DomainError>> {
    let events = AggregateStore::<Finding>::new(store);
    let id = Id::generate(IdKind::Finding);
    let loaded = events.load(id.as_str()).await?;
    let created = FindingEvent::Created(draft_finding(ORG, engagement_id, "late", "low"));
    let metadata = EventMetadata {
        organization_id: ORG.to_owned(),
        engagement_id: Some(engagement_id.to_owned()),
        actor: Actor::system(),
        request_id: None,
        idempotency_key: None,
        claim: None,
    };
    events.commit(vec![created], loaded, metadata.into_map()).await.map(|_| ())
}

backend_tests! {
    async fn child_events_cannot_commit_into_an_archived_or_deleted_engagement(db) {
        let store = Store::open(&db.url).await.unwrap();
        let service = CommandService::new(store.clone());
        let id = Id::generate(IdKind::Engagement).into_string();
        let new = NewEngagement { name: "Guarded".to_owned(), ..NewEngagement::default() };
        engagement(&service, &id, EngagementCommand::Create { organization_id: ORG.to_owned(), engagement: new }).await;
        create_finding(&service, &id).await.unwrap();
        commit_unchecked(&store, &id).await.unwrap();

        engagement(&service, &id, EngagementCommand::Archive { organization_id: ORG.to_owned() }).await;
        assert!(matches!(commit_unchecked(&store, &id).await, Err(AggregateError::AggregateConflict)));
        match create_finding(&service, &id).await {
            Err(CommandError::Domain(DomainError::Conflict(message))) => assert!(message.contains("archived")),
            other => panic!("expected a conflict, got {other:?}"),
        }

        engagement(&service, &id, EngagementCommand::Unarchive { organization_id: ORG.to_owned() }).await;
        create_finding(&service, &id).await.unwrap();
        engagement(&service, &id, EngagementCommand::Delete { organization_id: ORG.to_owned() }).await;
        assert!(matches!(commit_unchecked(&store, &id).await, Err(AggregateError::AggregateConflict)));
        assert!(matches!(create_finding(&service, &id).await, Err(CommandError::Domain(DomainError::NotFound))));
        // A child of an engagement that never existed is not found either.
        let unknown = Id::generate(IdKind::Engagement).into_string();
        assert!(matches!(create_finding(&service, &unknown).await, Err(CommandError::Domain(DomainError::NotFound))));
        store.close().await;
    }

    async fn a_fresh_create_of_a_taken_id_reloads_and_gets_the_domain_verdict(db) {
        let store = Store::open(&db.url).await.unwrap();
        let service = CommandService::new(store.clone());
        let id = Id::generate(IdKind::Engagement).into_string();
        let create = || EngagementCommand::Create {
            organization_id: ORG.to_owned(),
            engagement: NewEngagement { name: "Taken".to_owned(), ..NewEngagement::default() },
        };
        engagement(&service, &id, create()).await;
        let command = create();
        let execution =
            Execution { claim: command.claim(), engagement_id: Some(id.clone()), fresh: true, ..Execution::default() };
        match service.execute::<Engagement>(&id, command, &context(), execution).await {
            Err(CommandError::Domain(DomainError::Conflict(message))) => assert!(message.contains("already exists")),
            other => panic!("expected a conflict, got {other:?}"),
        }
        store.close().await;
    }
}
