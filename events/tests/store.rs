//! Store tests on both backends: optimistic concurrency, the sequencer's dense positions (and on
//! PostgreSQL, the gap case), and tamper evidence of the hash chain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, AggregateError, DomainEvent};
use pwnbook_events::sequencer::Sequencer;
use pwnbook_events::{backend_tests, log, Actor, AggregateStore, EventMetadata, Store};
use serde::{Deserialize, Serialize};

/// A minimal aggregate: every command appends one `counter.incremented` event.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    value: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Incremented {
    by: u64,
}

impl DomainEvent for Incremented {
    fn event_type(&self) -> String {
        "counter.incremented".to_owned()
    }
    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = u64;
    type Event = Incremented;
    type Error = Never;
    type Services = ();

    async fn handle(&mut self, by: u64, _: &(), sink: &EventSink<Self>) -> Result<(), Never> {
        sink.write(Incremented { by }, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Incremented) {
        self.value += event.by;
    }
}

const SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

fn metadata(org: &str) -> HashMap<String, String> {
    EventMetadata {
        organization_id: org.to_owned(),
        engagement_id: None,
        actor: Actor::system(),
        request_id: None,
        idempotency_key: None,
        claim: None,
    }
    .into_map()
}

async fn increment(store: &Store, id: &str, org: &str) -> Result<usize, AggregateError<Never>> {
    let events = AggregateStore::<Counter>::new(store);
    let mut context = events.load(id).await?;
    let sink = EventSink::default();
    context.aggregate.handle(1, &(), &sink).await.map_err(AggregateError::UserError)?;
    let committed = events.commit(sink.collect().await, context, metadata(org)).await?;
    Ok(committed.last().map_or(0, |e| e.sequence))
}

backend_tests! {
    async fn concurrent_appends_to_one_aggregate_have_one_winner(db) {
        let store = Store::open(&db.url).await.unwrap();
        let events = AggregateStore::<Counter>::new(&store);
        // Every writer loads the same (empty) aggregate, then all race to append sequence 1.
        let mut contexts = Vec::new();
        for _ in 0..16 {
            contexts.push(events.load("c1").await.unwrap());
        }
        let mut tasks = Vec::new();
        for context in contexts {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                AggregateStore::<Counter>::new(&store)
                    .commit(vec![Incremented { by: 1 }], context, metadata("org_a"))
                    .await
            }));
        }
        let (mut won, mut conflicted) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                Ok(committed) => {
                    assert_eq!(committed[0].sequence, 1);
                    won += 1;
                }
                Err(AggregateError::AggregateConflict) => conflicted += 1,
                Err(other) => panic!("unexpected error {other}"),
            }
        }
        assert_eq!((won, conflicted), (1, 15));
        assert_eq!(events.load("c1").await.unwrap().aggregate.value, 1);
    }

    async fn concurrent_appends_share_transactions_and_all_commit(db) {
        let store = Store::open(&db.url).await.unwrap();
        // 16 clients, each appending as soon as its previous append returned.
        let tasks: Vec<_> = (0..16)
            .map(|client| {
                let store = store.clone();
                tokio::spawn(async move {
                    for n in 0..25 {
                        let committed = AggregateStore::<Counter>::new(&store)
                            .commit(
                                vec![Incremented { by: 1 }, Incremented { by: 1 }],
                                AggregateStore::<Counter>::fresh(&format!("c{client}_{n}")),
                                metadata("org_a"),
                            )
                            .await
                            .unwrap();
                        assert_eq!(committed.len(), 2);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let events = AggregateStore::<Counter>::new(&store);
        for client in 0..16 {
            for n in 0..25 {
                assert_eq!(events.load(&format!("c{client}_{n}")).await.unwrap().aggregate.value, 2);
            }
        }
        if let pwnbook_events::EsPool::Postgres(pool) = store.es_pool() {
            // A caller returns as soon as its own batch is written, while the appends queued
            // meanwhile go in the next transaction together.
            let transactions: i64 =
                sqlx::query_scalar("SELECT COUNT(DISTINCT tx_id) FROM events").fetch_one(pool).await.unwrap();
            assert!(transactions <= 200, "{transactions} transactions for 400 appends by 16 clients");
        }
    }

    async fn a_conflict_in_a_shared_commit_fails_only_its_own_append(db) {
        let store = Store::open(&db.url).await.unwrap();
        let events = AggregateStore::<Counter>::new(&store);
        // Appends that arrive together go to the database in one transaction; the racers on
        // "shared" make that transaction fail, and every other append must still commit.
        let mut tasks = Vec::new();
        for i in 0..24 {
            let store = store.clone();
            let id = if i % 3 == 0 { "shared".to_owned() } else { format!("own{i}") };
            let context = AggregateStore::<Counter>::fresh(&id);
            tasks.push(tokio::spawn(async move {
                AggregateStore::<Counter>::new(&store)
                    .commit(vec![Incremented { by: 1 }, Incremented { by: 2 }], context, metadata("org_a"))
                    .await
            }));
        }
        let mut conflicted = 0;
        for (i, task) in tasks.into_iter().enumerate() {
            match task.await.unwrap() {
                Ok(committed) => assert_eq!(committed.len(), 2),
                Err(AggregateError::AggregateConflict) if i % 3 == 0 => conflicted += 1,
                Err(other) => panic!("append {i}: {other}"),
            }
        }
        assert_eq!(conflicted, 7, "one racer on the shared aggregate wins");
        assert_eq!(events.load("shared").await.unwrap().aggregate.value, 3);
        for i in (0..24).filter(|i| i % 3 != 0) {
            let own = events.load(&format!("own{i}")).await.unwrap();
            assert_eq!((own.aggregate.value, own.current_sequence), (3, 2), "own{i} has both its events");
        }
    }

    async fn the_log_is_dense_complete_and_ordered_per_stream(db) {
        let store = Store::open(&db.url).await.unwrap();
        let sequencer = Sequencer::new(store.clone());
        let mut writers = Vec::new();
        for w in 0..6 {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                let mut done = 0;
                while done < 15 {
                    match increment(&store, &format!("c{}", w % 3), if w % 2 == 0 { "org_a" } else { "org_b" }).await {
                        Ok(_) => done += 1,
                        Err(AggregateError::AggregateConflict) => {}
                        Err(other) => panic!("{other}"),
                    }
                }
            }));
        }
        // Sequence while the writers run, so batches interleave with commits.
        let sequencing = {
            let sequencer = sequencer.clone();
            tokio::spawn(async move {
                for _ in 0..30 {
                    sequencer.catch_up().await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            })
        };
        for writer in writers {
            writer.await.unwrap();
        }
        sequencing.await.unwrap();
        let head = sequencer.settle(SETTLE).await.unwrap();
        assert_eq!(head, 90);
        let log = log::read_after(store.pool(), 0, 1_000).await.unwrap();
        let positions: Vec<i64> = log.iter().map(|e| e.position).collect();
        assert_eq!(positions, (1..=90).collect::<Vec<_>>());
        let mut last_sequence: HashMap<&str, i64> = HashMap::new();
        for event in &log {
            let last = last_sequence.entry(event.aggregate_id.as_str()).or_insert(0);
            assert_eq!(event.sequence, *last + 1, "stream {} out of order", event.aggregate_id);
            *last = event.sequence;
        }
        let report = log::verify_chain(&store, None).await.unwrap();
        assert!(report.valid);
        assert_eq!(report.checked, 90);
    }

    async fn texts_of_any_kind_are_stored_and_logged_as_written(db) {
        // PostgreSQL takes a batch as array literals: quotes, backslashes, braces, commas, the
        // word NULL and JSON escapes must all come back as they went in.
        let store = Store::open(&db.url).await.unwrap();
        let tricky = [r#"c "q" \ {a,b} NULL é"#, "c\n\\\"", r#"org {"x":"y\"z"}"#];
        // Concurrent, so that they may share a batch (several rows per array).
        for _ in 0..2 {
            let (a, b, c) = tokio::join!(
                increment(&store, tricky[0], tricky[2]),
                increment(&store, tricky[1], tricky[2]),
                increment(&store, tricky[2], tricky[2]),
            );
            for outcome in [a, b, c] {
                outcome.unwrap();
            }
        }
        Sequencer::new(store.clone()).settle(SETTLE).await.unwrap();
        let log = log::read_after(store.pool(), 0, 100).await.unwrap();
        let mut logged: Vec<(&str, &str, i64)> =
            log.iter().map(|e| (e.aggregate_id.as_str(), e.organization_id.as_str(), e.sequence)).collect();
        logged.sort_unstable();
        let mut written: Vec<(&str, &str, i64)> =
            tricky.iter().flat_map(|id| [(*id, tricky[2], 1), (*id, tricky[2], 2)]).collect();
        written.sort_unstable();
        assert_eq!(logged, written);
        for id in tricky {
            assert_eq!(AggregateStore::<Counter>::new(&store).load(id).await.unwrap().aggregate.value, 2);
        }
        assert!(log::verify_chain(&store, None).await.unwrap().valid);
    }

    async fn the_hash_chain_detects_a_row_changed_behind_the_stores_back(db) {
        let store = Store::open(&db.url).await.unwrap();
        for i in 0..5 {
            increment(&store, &format!("c{i}"), "org_a").await.unwrap();
            increment(&store, &format!("d{i}"), "org_b").await.unwrap();
        }
        Sequencer::new(store.clone()).settle(SETTLE).await.unwrap();
        assert_eq!(log::verify_chain(&store, Some("org_a")).await.unwrap().checked, 5);
        assert!(log::verify_chain(&store, None).await.unwrap().valid);

        // The log refuses updates through SQL...
        let refused = sqlx::query("UPDATE event_log SET payload = '{}' WHERE position = 4")
            .execute(store.pool())
            .await;
        assert!(refused.is_err());
        // ...so a tamperer first removes the guard, then rewrites one event.
        let unguard = if db.is_postgres() {
            "ALTER TABLE event_log DISABLE TRIGGER event_log_insert_only"
        } else {
            "DROP TRIGGER event_log_no_update"
        };
        sqlx::query(unguard).execute(store.pool()).await.unwrap();
        sqlx::query(r#"UPDATE event_log SET payload = '{"by":1000}' WHERE position = 4"#)
            .execute(store.pool())
            .await
            .unwrap();
        let report = log::verify_chain(&store, None).await.unwrap();
        assert!(!report.valid);
        assert_eq!(report.first_broken_position, Some(4));
        assert_eq!(report.checked, 4);
    }
}

/// SQLite only: an audit store must not lose acknowledged writes, on every connection of both
/// pools (the cqrs-es one and Pwnbook's own).
#[tokio::test]
async fn sqlite_runs_wal_with_synchronous_full() {
    let db = pwnbook_events::testing::TestDb::sqlite();
    let store = Store::open(&db.url).await.unwrap();
    let pwnbook_events::EsPool::Sqlite(es) = store.es_pool() else { unreachable!() };
    for _ in 0..3 {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(store.pool()).await.unwrap();
        let synchronous: i64 =
            sqlx::query_scalar("PRAGMA synchronous").fetch_one(store.pool()).await.unwrap();
        assert_eq!((mode.as_str(), synchronous), ("wal", 2));
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(es).await.unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(es).await.unwrap();
        assert_eq!((mode.as_str(), synchronous), ("wal", 2));
    }
}

/// A store at `url` with its sequencer task running (it polls only when kicked); the sender
/// stops the task when dropped.
async fn sequenced_store(
    url: &str,
) -> (Store, pwnbook_events::sequencer::SequencerHandle, tokio::sync::watch::Sender<bool>) {
    let store = Store::open(url).await.unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let handle =
        pwnbook_events::sequencer::spawn(store.clone(), None, std::time::Duration::from_secs(3600), shutdown);
    (store, handle, stop)
}

/// PostgreSQL only: the group commit's writer keeps its connection between batches; when the
/// server ends that session (a restart, an idle timeout), the next append is written on a new
/// connection instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_go_on_after_the_writers_session_was_ended_postgres() {
    let Some(db) = pwnbook_events::testing::TestDb::postgres().await else { return };
    let store = Store::open(&db.url).await.unwrap();
    let append = |id: &'static str| {
        let store = store.clone();
        async move {
            AggregateStore::<Counter>::new(&store)
                .commit(vec![Incremented { by: 1 }], AggregateStore::<Counter>::fresh(id), metadata("org_a"))
                .await
        }
    };
    append("before").await.unwrap();
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!ended.is_empty() && ended.iter().all(|ended| *ended));
    // The ended sessions are gone once the server says so.
    for _ in 0..100 {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    append("after").await.unwrap();
    let stored: Vec<String> = sqlx::query_scalar("SELECT aggregate_id FROM events ORDER BY aggregate_id")
        .fetch_all(&mut admin)
        .await
        .unwrap();
    assert_eq!(stored, ["after", "before"]);
}

/// PostgreSQL only: a transaction that appended and is still open holds back every position after
/// it, so a reader that checkpoints never skips its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gap_case_postgres() {
    let Some(db) = pwnbook_events::testing::TestDb::postgres().await else { return };
    let store = Store::open(&db.url).await.unwrap();
    let sequencer = Sequencer::new(store.clone());
    increment(&store, "first", "org_a").await.unwrap();
    assert_eq!(sequencer.settle(SETTLE).await.unwrap(), 1);

    // Transaction A appends and stays open.
    let a = open_slow_append(&store).await;

    // B appends after A and commits first.
    increment(&store, "fast", "org_a").await.unwrap();
    assert_eq!(sequencer.catch_up().await.unwrap(), 1, "B must wait for A");
    assert_eq!(log::position_of(&store, "counter", "fast", 1).await.unwrap(), None);

    a.commit().await.unwrap();
    assert_slow_then_fast(&store).await;
}

/// PostgreSQL only: the group commit sequences its own batch in its transaction, but not past an
/// older writer that is still open, even one whose id is past the snapshot's xmax (it took its id
/// after the last commit, so the snapshot's list of running ids omits it). That case needs no
/// other transaction of the cluster to end between A's insert and B's (tests running beside this
/// one may hide it; `two_server_processes_share_one_database_correctly` meets it too).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gap_case_in_the_group_commit_postgres() {
    let Some(db) = pwnbook_events::testing::TestDb::postgres().await else { return };
    let (store, handle, _stop) = sequenced_store(&db.url).await;
    increment(&store, "first", "org_a").await.unwrap();
    assert_eq!(handle.sequenced_at("counter", "first", 1), Some(1), "sequenced in its own commit");

    let a = open_slow_append(&store).await;
    increment(&store, "fast", "org_a").await.unwrap();
    assert_eq!(handle.sequenced_at("counter", "fast", 1), None, "B must wait for A");
    assert_eq!(log::position_of(&store, "counter", "fast", 1).await.unwrap(), None);

    a.commit().await.unwrap();
    assert_slow_then_fast(&store).await;
}

/// PostgreSQL only: the group commit sends its batch's log rows with the append, computed from
/// the head and chain heads its previous batch left (migration 1010). When another sequencer
/// moved the head, or another process's event waits to be sequenced, the database refuses that
/// guess and the batch is appended and claimed as usual: dense, chained, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_guess_of_the_head_falls_back_to_the_claim_postgres() {
    let Some(db) = pwnbook_events::testing::TestDb::postgres().await else { return };
    let (store, handle, _stop) = sequenced_store(&db.url).await;
    increment(&store, "a", "org_a").await.unwrap();
    increment(&store, "b", "org_a").await.unwrap();
    assert_eq!(handle.sequenced_at("counter", "b", 1), Some(2));

    // Another process appends and its sequencer logs the event: this process's head is stale.
    let other = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                 VALUES ('counter', $1, 1, 'counter.incremented', '1', '{\"by\":1}', '{\"organizationId\":\"org_a\"}')";
    sqlx::query(other).bind("elsewhere").execute(store.pool()).await.unwrap();
    assert_eq!(Sequencer::new(store.clone()).catch_up().await.unwrap(), 3);
    increment(&store, "c", "org_a").await.unwrap();
    assert_eq!(handle.sequenced_at("counter", "c", 1), Some(4));

    // Another process's event is committed but not yet logged: it goes first.
    sqlx::query(other).bind("pending").execute(store.pool()).await.unwrap();
    increment(&store, "d", "org_a").await.unwrap();
    assert_eq!(log::position_of(&store, "counter", "pending", 1).await.unwrap(), Some(5));
    assert_eq!(handle.sequenced_at("counter", "d", 1), Some(6));

    // And the next batch guesses right again.
    increment(&store, "e", "org_b").await.unwrap();
    increment(&store, "f", "org_b").await.unwrap();
    assert_eq!(handle.sequenced_at("counter", "f", 1), Some(8));
    let log = log::read_after(store.pool(), 0, 100).await.unwrap();
    assert_eq!(log.iter().map(|e| e.position).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    let report = log::verify_chain(&store, None).await.unwrap();
    assert!(report.valid);
    assert_eq!(report.checked, 8);
}

/// PostgreSQL only: the batch whose log rows go with the append (migration 1010) carries its
/// texts as escaped literals in one simple query: quotes, backslashes and what looks like SQL
/// must come back as written, in `events` and in the log, and chain as they were hashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn texts_of_any_kind_survive_the_one_round_trip_append_postgres() {
    let Some(db) = pwnbook_events::testing::TestDb::postgres().await else { return };
    let (store, handle, _stop) = sequenced_store(&db.url).await;
    let org = r"org ' \' E'\x41' ''";
    increment(&store, "warm-up", org).await.unwrap();
    let tricky = [r"it's", r"back\slash\", r"'); DROP TABLE events; --", r"E'\n\'", "new\nline é {a,\"b\"}"];
    for round in 1..=2 {
        let appends: Vec<_> = tricky
            .iter()
            .map(|&id| {
                let store = store.clone();
                tokio::spawn(async move { increment(&store, id, org).await })
            })
            .collect();
        for append in appends {
            assert_eq!(append.await.unwrap().unwrap(), round);
        }
    }
    for id in tricky {
        assert!(handle.sequenced_at("counter", id, 2).is_some(), "{id} was sequenced with its append");
        assert_eq!(AggregateStore::<Counter>::new(&store).load(id).await.unwrap().aggregate.value, 2);
    }
    let log = log::read_after(store.pool(), 0, 100).await.unwrap();
    assert_eq!(log.len(), 11);
    let mut logged: Vec<&str> = log.iter().skip(1).map(|e| e.aggregate_id.as_str()).collect();
    logged.sort_unstable();
    let mut written: Vec<&str> = tricky.iter().flat_map(|id| [*id, *id]).collect();
    written.sort_unstable();
    assert_eq!(logged, written);
    assert!(log.iter().all(|e| e.organization_id == org));
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT payload::text, metadata::text FROM events ORDER BY seq_no")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let mut in_log: Vec<(String, String)> =
        log.iter().map(|e| (e.payload.clone(), e.metadata.clone())).collect();
    let mut in_events = stored;
    in_log.sort();
    in_events.sort();
    assert_eq!(in_log, in_events);
    let report = log::verify_chain(&store, None).await.unwrap();
    assert!(report.valid);
    assert_eq!(report.checked, 11);
}

/// PostgreSQL only: the group commit only tries the sequencer lock. While another session holds
/// it (another process's long batch), appends still commit at once and the sequencer task
/// sequences them once the lock is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_do_not_wait_for_a_held_sequencer_lock_postgres() {
    let Some(db) = pwnbook_events::testing::TestDb::postgres().await else { return };
    let store = Store::open(&db.url).await.unwrap();
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let poll = std::time::Duration::from_millis(50);
    let handle = pwnbook_events::sequencer::spawn(store.clone(), None, poll, shutdown);
    let mut holder = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    // The sequencer's advisory lock key (sequencer.rs).
    sqlx::query("SELECT pg_advisory_lock(8104067423531920129)").execute(&mut holder).await.unwrap();
    let appended = tokio::time::timeout(SETTLE / 2, increment(&store, "while_held", "org_a")).await;
    assert_eq!(appended.expect("the append waited for the sequencer lock").unwrap(), 1);
    assert_eq!(log::position_of(&store, "counter", "while_held", 1).await.unwrap(), None);
    sqlx::query("SELECT pg_advisory_unlock(8104067423531920129)").execute(&mut holder).await.unwrap();
    let mut head = handle.head();
    tokio::time::timeout(SETTLE, head.wait_for(|head| *head >= 1)).await.unwrap().unwrap();
    assert_eq!(log::position_of(&store, "counter", "while_held", 1).await.unwrap(), Some(1));
}

/// A hook for the failure tests: while armed, its next batch panics or fails; it counts the
/// batches it applied.
struct Tripwire {
    panics: bool,
    armed: std::sync::atomic::AtomicBool,
    applied: std::sync::atomic::AtomicUsize,
}

impl Tripwire {
    fn new(panics: bool, armed: bool) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self { panics, armed: armed.into(), applied: 0.into() })
    }
}

impl pwnbook_events::sequencer::BatchHook for Tripwire {
    fn apply<'a, 'c>(
        &'a self,
        _: &'a mut sqlx::Transaction<'c, sqlx::Any>,
        _: i64,
        _: &'a [pwnbook_events::LogEvent],
        _: bool,
    ) -> pwnbook_events::sequencer::HookFuture<'a> {
        Box::pin(async move {
            if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                assert!(!self.panics, "a projector bug");
                return Err("a projector failed".into());
            }
            self.applied.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(true)
        })
    }

    fn committed(&self, _: i64) {}
}

backend_tests! {
    async fn a_panic_in_a_batch_fails_that_batch_only(db) {
        let store = Store::open(&db.url).await.unwrap();
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let hook = Tripwire::new(true, true);
        let handle = pwnbook_events::sequencer::spawn(store.clone(), Some(hook), std::time::Duration::from_secs(3600), shutdown);
        // The panic comes before the commit: the append fails and nothing of it is stored.
        assert!(increment(&store, "unlucky", "org_a").await.is_err());
        assert_eq!(increment(&store, "next", "org_a").await.unwrap(), 1);
        assert_eq!(handle.sequenced_at("counter", "next", 1), Some(1));
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(store.pool()).await.unwrap();
        assert_eq!(stored, 1);
    }
}

backend_tests! {
    async fn a_failure_sequencing_in_the_group_commit_still_stores_the_append(db) {
        let store = Store::open(&db.url).await.unwrap();
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let hook = Tripwire::new(false, false);
        let handle = pwnbook_events::sequencer::spawn(store.clone(), Some(hook.clone()), std::time::Duration::from_secs(3600), shutdown);
        let mut head = handle.head();
        assert_eq!(increment(&store, "first", "org_a").await.unwrap(), 1);
        handle.kick();
        tokio::time::timeout(SETTLE, head.wait_for(|head| *head >= 1)).await.unwrap().unwrap();
        hook.armed.store(true, std::sync::atomic::Ordering::SeqCst);
        // The in-commit sequencing fails with the hook: the append is written again unsequenced,
        // and the sequencer task sequences it (and runs the hook) when kicked.
        assert_eq!(increment(&store, "unlucky", "org_a").await.unwrap(), 1);
        handle.kick();
        tokio::time::timeout(SETTLE, head.wait_for(|head| *head >= 2)).await.unwrap().unwrap();
        assert_eq!(log::position_of(&store, "counter", "unlucky", 1).await.unwrap(), Some(2));
        assert_eq!(hook.applied.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(increment(&store, "next", "org_a").await.unwrap(), 1);
        assert_eq!(handle.sequenced_at("counter", "next", 1), Some(3));
        assert_eq!(hook.applied.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(log::verify_chain(&store, None).await.unwrap().valid);
    }
}

/// PostgreSQL only: a batch the database rolls back to break a deadlock (here a trigger that
/// fails the first two attempts with `40P01`, as PostgreSQL does to one of two deadlocked
/// transactions) is written again: the append succeeds once, sequenced, and nothing is doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_rolled_back_by_a_deadlock_is_written_again_postgres() {
    let Some(db) = pwnbook_events::testing::TestDb::postgres().await else { return };
    let store = Store::open(&db.url).await.unwrap();
    for statement in [
        "CREATE SEQUENCE deadlocks",
        "CREATE FUNCTION deadlock_twice() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF nextval('deadlocks') <= 2 THEN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END IF; \
         RETURN NEW; END $$",
        "CREATE TRIGGER deadlock_twice BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION deadlock_twice()",
    ] {
        sqlx::query(statement).execute(store.pool()).await.unwrap();
    }
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let handle =
        pwnbook_events::sequencer::spawn(store.clone(), None, std::time::Duration::from_secs(3600), shutdown);
    assert_eq!(increment(&store, "deadlocked", "org_a").await.unwrap(), 1);
    let attempts: i64 =
        sqlx::query_scalar("SELECT last_value FROM deadlocks").fetch_one(store.pool()).await.unwrap();
    assert_eq!(attempts, 3, "two rolled-back attempts, then the one that committed");
    assert_eq!(handle.sequenced_at("counter", "deadlocked", 1), Some(1));
    let stored: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(store.pool()).await.unwrap();
    assert_eq!(stored, 1);
    assert!(log::verify_chain(&store, None).await.unwrap().valid);
}

/// PostgreSQL only: a connection lost with COMMIT on its way leaves the writer unsure whether its
/// batch was stored. It finds out, once the lost session has ended, instead of reporting an
/// unknown outcome (after which a retry could append twice): an append whose COMMIT reached the
/// database succeeds, one whose COMMIT never did fails as not saved, so its retry stores it
/// once. The first cut append takes the one-round-trip path (the warm-up left the chain heads
/// cached), the next two the usual path (a lost batch leaves no cache behind), the last the
/// one-round-trip path again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_cut_off_at_commit_reports_what_the_database_did_postgres() {
    use pwnbook_events::testing::{CommitCutter, Cut};
    let Some(db) = pwnbook_events::testing::TestDb::postgres().await else { return };
    let cutter = CommitCutter::start(&db.url).await;
    let (store, _handle, _stop) = sequenced_store(&cutter.url).await;
    increment(&store, "warm-up", "org_a").await.unwrap();
    for (cuts, id) in [(1, "answer-lost-in-one-round-trip"), (2, "answer-lost")] {
        cutter.arm(Cut::AnswerLost);
        assert_eq!(increment(&store, id, "org_a").await.unwrap(), 1, "{id} is reported stored");
        assert_eq!(cutter.cuts(), cuts, "{id}'s answer was cut off");
    }
    cutter.arm(Cut::RequestLost);
    let error = increment(&store, "request-lost", "org_a").await.unwrap_err();
    assert!(matches!(error, AggregateError::DatabaseConnectionError(_)), "a retryable error: {error:?}");
    assert_eq!(cutter.cuts(), 3);
    assert_eq!(increment(&store, "request-lost", "org_a").await.unwrap(), 1, "the retry stores it");
    // That retry left the chain heads cached again: the same on the one-round-trip path.
    cutter.arm(Cut::RequestLost);
    let error = increment(&store, "request-lost-in-one-round-trip", "org_a").await.unwrap_err();
    assert!(matches!(error, AggregateError::DatabaseConnectionError(_)), "a retryable error: {error:?}");
    assert_eq!(cutter.cuts(), 4);
    assert_eq!(increment(&store, "request-lost-in-one-round-trip", "org_a").await.unwrap(), 1);
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, count(*) FROM events GROUP BY aggregate_id ORDER BY aggregate_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let once = |id: &str| (id.to_owned(), 1);
    assert_eq!(
        stored,
        [
            once("answer-lost"),
            once("answer-lost-in-one-round-trip"),
            once("request-lost"),
            once("request-lost-in-one-round-trip"),
            once("warm-up")
        ]
    );
    assert_eq!(Sequencer::new(store.clone()).settle(SETTLE).await.unwrap(), 5);
    assert!(log::verify_chain(&store, None).await.unwrap().valid);
}

/// PostgreSQL only: a batch whose session the server ends mid-way (an administrator's
/// `pg_terminate_backend`, a shutdown: SQLSTATE 57P01) is settled like a lost connection: it
/// was not stored, so the append fails as retryable and its retry stores it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_whose_session_the_server_ends_is_settled_postgres() {
    let Some(db) = pwnbook_events::testing::TestDb::postgres().await else { return };
    let (store, _handle, _stop) = sequenced_store(&db.url).await;
    increment(&store, "warm-up", "org_a").await.unwrap();
    for statement in [
        "CREATE FUNCTION slow_append() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         PERFORM pg_sleep(2); RETURN NEW; END $$",
        "CREATE TRIGGER slow_append BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION slow_append()",
    ] {
        sqlx::query(statement).execute(store.pool()).await.unwrap();
    }
    let append = {
        let store = store.clone();
        tokio::spawn(async move { increment(&store, "ended", "org_a").await })
    };
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    let mut ended = false;
    for _ in 0..200 {
        ended = sqlx::query_scalar::<_, bool>(
            "SELECT count(*) > 0 FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND query LIKE '%pwnbook_append_sequenced%' AND state = 'active') t",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        if ended {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(ended, "the batch's session was found and ended");
    let error = append.await.unwrap().unwrap_err();
    assert!(matches!(error, AggregateError::DatabaseConnectionError(_)), "a retryable error: {error:?}");
    sqlx::query("DROP TRIGGER slow_append ON events").execute(&mut admin).await.unwrap();
    assert_eq!(increment(&store, "ended", "org_a").await.unwrap(), 1, "the retry stores it");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = 'ended'")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    assert_eq!(Sequencer::new(store.clone()).settle(SETTLE).await.unwrap(), 2);
}

/// Transaction A of the gap cases: it appends `slow` and stays open.
async fn open_slow_append(store: &Store) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let pool = match store.es_pool() {
        pwnbook_events::EsPool::Postgres(pool) => pool.clone(),
        pwnbook_events::EsPool::Sqlite(_) => unreachable!(),
    };
    let mut a = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('counter', 'slow', 1, 'counter.incremented', '1', '{\"by\":1}', '{\"organizationId\":\"org_a\"}')",
    )
    .execute(&mut *a)
    .await
    .unwrap();
    a
}

/// After A committed: `slow` before `fast` (appended after A, committed first), dense, chained.
async fn assert_slow_then_fast(store: &Store) {
    assert_eq!(Sequencer::new(store.clone()).settle(SETTLE).await.unwrap(), 3);
    let slow = log::position_of(store, "counter", "slow", 1).await.unwrap().unwrap();
    let fast = log::position_of(store, "counter", "fast", 1).await.unwrap().unwrap();
    assert_eq!((slow, fast), (2, 3));
    assert!(log::verify_chain(store, None).await.unwrap().valid);
}

backend_tests! {
    async fn a_closed_store_refuses_appends(db) {
        let store = Store::open(&db.url).await.unwrap();
        assert_eq!(increment(&store, "before", "org_a").await.unwrap(), 1);
        // Loaded before the close, so that only the append meets the closed store.
        let events = AggregateStore::<Counter>::new(&store);
        let mut context = events.load("after").await.unwrap();
        let sink = EventSink::default();
        context.aggregate.handle(1, &(), &sink).await.unwrap();
        store.close().await;
        let refused = tokio::time::timeout(SETTLE, events.commit(sink.collect().await, context, metadata("org_a"))).await;
        assert!(refused.expect("an append to a closed store hung").is_err());
    }
}
