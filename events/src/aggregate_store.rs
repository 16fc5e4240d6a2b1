//! The cqrs-es event store over whichever backend the store runs on. cqrs-es's `EventStore` is
//! not object-safe, so this enum delegates to the one concrete store in use.

use std::collections::HashMap;

use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateError, EventEnvelope, EventStore};
use postgres_es::PostgresEventRepository;
use sqlite_es::SqliteEventRepository;

use crate::{EsPool, Store};

pub enum AggregateStore<A: Aggregate> {
    Sqlite(PersistedEventStore<SqliteEventRepository, A>),
    Postgres(PersistedEventStore<PostgresEventRepository, A>),
}

pub type AggregateContext<A> = EventStoreAggregateContext<A>;

impl<A: Aggregate> AggregateStore<A> {
    /// An event-sourced store (never the snapshot or aggregate modes: in cqrs-es 0.5.0 they apply
    /// new events twice).
    pub fn new(store: &Store) -> Self {
        match store.es_pool() {
            EsPool::Sqlite(pool) => {
                Self::Sqlite(PersistedEventStore::new_event_store(SqliteEventRepository::new(pool.clone())))
            }
            EsPool::Postgres(pool) => Self::Postgres(PersistedEventStore::new_event_store(
                PostgresEventRepository::new(pool.clone()),
            )),
        }
    }

    /// The aggregate folded from all its events, with its current sequence.
    pub async fn load(&self, aggregate_id: &str) -> Result<AggregateContext<A>, AggregateError<A::Error>> {
        match self {
            Self::Sqlite(store) => store.load_aggregate(aggregate_id).await,
            Self::Postgres(store) => store.load_aggregate(aggregate_id).await,
        }
    }

    /// The aggregate before its first event, without a read: what `load` returns for an id that
    /// was just generated, so nothing can be stored under it yet.
    pub fn fresh(aggregate_id: &str) -> AggregateContext<A> {
        AggregateContext {
            aggregate_id: aggregate_id.to_owned(),
            aggregate: A::default(),
            current_sequence: 0,
            current_snapshot: None,
        }
    }

    pub async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        match self {
            Self::Sqlite(store) => store.load_events(aggregate_id).await,
            Self::Postgres(store) => store.load_events(aggregate_id).await,
        }
    }

    /// Appends `events` after the context's sequence in one transaction; a concurrent append to
    /// the same aggregate (or a clashing name claim) is `AggregateConflict`.
    pub async fn commit(
        &self,
        events: Vec<A::Event>,
        context: AggregateContext<A>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        match self {
            Self::Sqlite(store) => store.commit(events, context, metadata).await,
            Self::Postgres(store) => store.commit(events, context, metadata).await,
        }
    }
}
