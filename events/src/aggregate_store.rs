//! The cqrs-es event store: reads through the postgres-es or sqlite-es repository, appends through
//! the group commit shared by every command of this process.

use std::collections::HashMap;

use cqrs_es::persist::{
    EventStoreAggregateContext, PersistedEventRepository, PersistedEventStore, PersistenceError,
    ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::{Aggregate, AggregateError, EventEnvelope, EventStore};
use postgres_es::PostgresEventRepository;
use sqlite_es::SqliteEventRepository;

use crate::{EsPool, Store};

pub struct AggregateStore<A: Aggregate>(PersistedEventStore<Repository, A>);

pub type AggregateContext<A> = EventStoreAggregateContext<A>;

impl<A: Aggregate> AggregateStore<A> {
    /// An event-sourced store (never the snapshot or aggregate modes: in cqrs-es 0.5.0 they apply
    /// new events twice).
    pub fn new(store: &Store) -> Self {
        let reader = match store.es_pool() {
            EsPool::Sqlite(pool) => Reader::Sqlite(SqliteEventRepository::new(pool.clone())),
            EsPool::Postgres(pool) => Reader::Postgres(PostgresEventRepository::new(pool.clone())),
        };
        Self(PersistedEventStore::new_event_store(Repository { reader, store: store.clone() }))
    }

    /// The aggregate folded from all its events, with its current sequence.
    pub async fn load(&self, aggregate_id: &str) -> Result<AggregateContext<A>, AggregateError<A::Error>> {
        self.0.load_aggregate(aggregate_id).await
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
        self.0.load_events(aggregate_id).await
    }

    /// Appends `events` after the context's sequence in one transaction; a concurrent append to
    /// the same aggregate (or a clashing name claim) is `AggregateConflict`.
    pub async fn commit(
        &self,
        events: Vec<A::Event>,
        context: AggregateContext<A>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        self.0.commit(events, context, metadata).await
    }
}

enum Reader {
    Sqlite(SqliteEventRepository),
    Postgres(PostgresEventRepository),
}

/// The repository cqrs-es sees: the backend's own for reads, the group commit for appends.
pub(crate) struct Repository {
    reader: Reader,
    store: Store,
}

impl PersistedEventRepository for Repository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = match &self.reader {
            Reader::Sqlite(repo) => repo.get_events::<A>(aggregate_id).await,
            Reader::Postgres(repo) => repo.get_events::<A>(aggregate_id).await,
        };
        events.map_err(out_of_reach)
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = match &self.reader {
            Reader::Sqlite(repo) => repo.get_last_events::<A>(aggregate_id, last_sequence).await,
            Reader::Postgres(repo) => repo.get_last_events::<A>(aggregate_id, last_sequence).await,
        };
        events.map_err(out_of_reach)
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        match &self.reader {
            Reader::Sqlite(repo) => repo.get_snapshot::<A>(aggregate_id).await,
            Reader::Postgres(repo) => repo.get_snapshot::<A>(aggregate_id).await,
        }
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, serde_json::Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if snapshot_update.is_some() {
            return Err(PersistenceError::UnknownError("Pwnbook keeps no snapshots".into()));
        }
        self.store.append(events).await
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        match &self.reader {
            Reader::Sqlite(repo) => repo.stream_events::<A>(aggregate_id).await,
            Reader::Postgres(repo) => repo.stream_events::<A>(aggregate_id).await,
        }
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        match &self.reader {
            Reader::Sqlite(repo) => repo.stream_all_events::<A>().await,
            Reader::Postgres(repo) => repo.stream_all_events::<A>().await,
        }
    }
}

/// The backends' repositories report only I/O and TLS failures as connection errors; a session
/// that PostgreSQL ended (a restart) is as much the database out of reach, which the command
/// service answers as retryable instead of as an internal error.
fn out_of_reach(error: PersistenceError) -> PersistenceError {
    match error {
        PersistenceError::UnknownError(cause)
            if cause.downcast_ref::<sqlx::Error>().is_some_and(crate::unreachable) =>
        {
            PersistenceError::ConnectionError(cause)
        }
        other => other,
    }
}
