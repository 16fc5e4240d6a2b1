//! Projector runner tests on both backends: exactly-once across a crash between (and inside)
//! batches, and rebuilds identical to the live tables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_es::DomainEvent;
use pwnbook_events::engagement::{EngagementCreated, EngagementEvent, EngagementUpdated};
use pwnbook_events::finding::{self, Cvss, FindingCreated, FindingEvent, FindingUpdated, Transition};
use pwnbook_events::sequencer::Sequencer;
use pwnbook_events::testing::draft_finding;
use pwnbook_events::{backend_tests, log, Backend, Empty, LogEvent, StatusChange, Store};
use pwnbook_projections::bulk::BulkLoad;
use pwnbook_projections::findings::{self, FindingsProjector};
use pwnbook_projections::{all_projectors, ProjectionError, ProjectionRunner, Projector};
use sqlx::{Any, Row, Transaction};

const ORG: &str = "org_01j9k2m3n4p5q6r7s8t9";

async fn open(url: &str) -> Store {
    let store = Store::open(url).await.unwrap();
    pwnbook_projections::migrate(&store).await.unwrap();
    store
}

/// Appends one event the way the command service's repositories store it.
async fn append(store: &Store, id: &str, sequence: i64, event: EngagementEvent) {
    append_to(store, "engagement", id, id, sequence, &event).await;
}

async fn append_to<E: DomainEvent>(
    store: &Store,
    aggregate_type: &str,
    id: &str,
    engagement: &str,
    sequence: i64,
    event: &E,
) {
    let metadata = format!(
        r#"{{"organizationId":"{ORG}","engagementId":"{engagement}","actorType":"system","actorName":"system"}}"#
    );
    let json = if store.backend() == Backend::Postgres { "::json" } else { "" };
    sqlx::query(&format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ($1, $2, $3, $4, '1', $5{json}, $6{json})"
    ))
    .bind(aggregate_type)
    .bind(id)
    .bind(sequence)
    .bind(event.event_type())
    .bind(serde_json::to_string(event).unwrap())
    .bind(metadata)
    .execute(store.pool())
    .await
    .unwrap();
}

fn created(name: &str, tags: &[&str]) -> EngagementEvent {
    EngagementEvent::Created(EngagementCreated {
        organization_id: ORG.to_owned(),
        name: name.to_owned(),
        description: Some("scope".to_owned()),
        client_name: Some("Acme".to_owned()),
        start_date: Some("2025-01-01".to_owned()),
        end_date: None,
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        status: "active".to_owned(),
    })
}

/// A varied history: creates, renames, tag changes, archive/unarchive, deletes.
async fn write_history(store: &Store, engagements: usize) {
    for i in 0..engagements {
        let id = format!("eng_{i:020}");
        append(store, &id, 1, created(&format!("Engagement {i}"), &["web", "internal"])).await;
        let rename = EngagementUpdated {
            name: Some(format!("Renamed {i}")),
            description: Some(None),
            tags: Some(vec!["web".to_owned(), format!("t{}", i % 3)]),
            ..EngagementUpdated::default()
        };
        append(store, &id, 2, EngagementEvent::Updated(rename)).await;
        let archived = StatusChange { from: "active".to_owned(), to: "archived".to_owned() };
        append(store, &id, 3, EngagementEvent::Archived(archived)).await;
        if i.is_multiple_of(2) {
            let back = StatusChange { from: "archived".to_owned(), to: "active".to_owned() };
            append(store, &id, 4, EngagementEvent::Unarchived(back)).await;
        }
        if i % 5 == 0 {
            let next = if i.is_multiple_of(2) { 5 } else { 4 };
            append(store, &id, next, EngagementEvent::Deleted(Empty {})).await;
        }
    }
    Sequencer::new(store.clone()).settle(Duration::from_secs(10)).await.unwrap();
}

/// Every row of the read tables, as text, in a fixed order.
async fn dump(store: &Store) -> Vec<Vec<Option<String>>> {
    let tables = [
        ("engagements", "id"),
        ("engagement_tags", "engagement_id, tag"),
        ("organizations", "id"),
        ("api_keys", "id"),
    ];
    let mut out = Vec::new();
    for (table, order) in tables {
        out.extend(rows_of(store, table, order).await);
    }
    out
}

/// Every row of `table` in `order`, as text, each led by the table's name.
async fn rows_of(store: &Store, table: &str, order: &str) -> Vec<Vec<Option<String>>> {
    let rows = sqlx::query(&format!("SELECT * FROM {table} ORDER BY {order}"))
        .fetch_all(store.pool())
        .await
        .unwrap();
    rows.iter()
        .map(|row| {
            let mut values = vec![Some(table.to_owned())];
            for i in 0..row.len() {
                let text = row
                    .try_get::<Option<String>, _>(i)
                    .or_else(|_| row.try_get::<Option<i64>, _>(i).map(|v| v.map(|v| v.to_string())))
                    .unwrap();
                values.push(text);
            }
            values
        })
        .collect()
}

/// Records every position it sees in a table whose primary key refuses a second delivery, and
/// fails (once) halfway through a batch when asked to.
struct Recorder {
    name: &'static str,
    crash_at: i64,
    crashed: AtomicBool,
}

impl Recorder {
    fn new(name: &'static str, crash_at: i64) -> Arc<Self> {
        Arc::new(Self { name, crash_at, crashed: AtomicBool::new(false) })
    }
}

#[async_trait]
impl Projector for Recorder {
    fn name(&self) -> &'static str {
        self.name
    }
    fn schema_version(&self) -> i64 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &[]
    }
    async fn apply(&self, tx: &mut Transaction<'_, Any>, events: &[LogEvent]) -> Result<(), ProjectionError> {
        for event in events {
            if event.position == self.crash_at && !self.crashed.swap(true, Ordering::SeqCst) {
                return Err(ProjectionError::UnknownProjector("simulated crash".to_owned()));
            }
            sqlx::query(&format!("INSERT INTO {} (position) VALUES ($1)", self.name))
                .bind(event.position)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

backend_tests! {
    async fn a_crash_between_or_inside_batches_neither_loses_nor_duplicates(db) {
        let store = open(&db.url).await;
        sqlx::query("CREATE TABLE recorded (position BIGINT PRIMARY KEY)").execute(store.pool()).await.unwrap();
        sqlx::query("CREATE TABLE recorded_too (position BIGINT PRIMARY KEY)").execute(store.pool()).await.unwrap();
        write_history(&store, 20).await;
        let head = log::head(&store).await.unwrap();
        assert!(head > 60);

        let recorder = Recorder::new("recorded", 25);
        let runner = ProjectionRunner::new(store.clone(), vec![recorder.clone()]);
        runner.prepare().await.unwrap();
        // Two whole batches land, then the process "dies" in the middle of the third.
        assert_eq!(runner.run_batch(recorder.as_ref(), 10).await.unwrap(), (10, 10));
        assert_eq!(runner.run_batch(recorder.as_ref(), 10).await.unwrap(), (10, 20));
        assert!(runner.run_batch(recorder.as_ref(), 10).await.is_err());
        let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM recorded").fetch_one(store.pool()).await.unwrap();
        assert_eq!(recorded, 20, "the failed batch must leave nothing behind");

        // A fresh runner (a restarted process) resumes from the checkpoint.
        let restarted = ProjectionRunner::new(store.clone(), vec![recorder]);
        assert_eq!(restarted.catch_up().await.unwrap(), head);
        let (count, max): (i64, i64) = {
            let row = sqlx::query("SELECT COUNT(*) AS n, MAX(position) AS m FROM recorded").fetch_one(store.pool()).await.unwrap();
            (row.get("n"), row.get("m"))
        };
        assert_eq!((count, max), (head, head));

        // All projectors in one transaction: one failing rolls back the batch for every one.
        let behind = Recorder::new("recorded_too", 15);
        let together = ProjectionRunner::new(store.clone(), vec![behind.clone()]);
        together.prepare().await.unwrap();
        let all = ProjectionRunner::new(store.clone(), vec![Recorder::new("recorded", 0), behind]);
        all.run_all_batch(10).await.unwrap();
        assert!(all.run_all_batch(10).await.is_err(), "the batch with position 15 fails");
        let too: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM recorded_too").fetch_one(store.pool()).await.unwrap();
        assert_eq!(too, 10);
        assert_eq!(all.catch_up().await.unwrap(), head);
        let too: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM recorded_too").fetch_one(store.pool()).await.unwrap();
        assert_eq!(too, head);
    }

    async fn findings_created_twice_are_inserted_and_counted_once(db) {
        let store = open(&db.url).await;
        let engagement = "eng_00000000000000000001";
        append(&store, engagement, 1, created("Scope", &[])).await;
        for i in 0..3 {
            let finding = FindingEvent::Created(FindingCreated {
                cwe: vec!["CWE-79".to_owned()],
                tags: vec!["a".to_owned(), "b".to_owned()],
                ..draft_finding(ORG, engagement, &format!("Finding {i}"), "high")
            });
            append_to(&store, "finding", &format!("fnd_{i:020}"), engagement, 1, &finding).await;
        }
        Sequencer::new(store.clone()).settle(Duration::from_secs(10)).await.unwrap();
        let events = log::read_after(store.pool(), 0, 100).await.unwrap();
        assert_eq!(events.len(), 4);
        // The same creations twice, then once more with one new in the chunk: what is there stays.
        let mut tx = store.pool().begin().await.unwrap();
        FindingsProjector.apply(&mut tx, &events).await.unwrap();
        FindingsProjector.apply(&mut tx, &events).await.unwrap();
        sqlx::query("DELETE FROM findings WHERE id = 'fnd_00000000000000000001'").execute(&mut *tx).await.unwrap();
        sqlx::query("DELETE FROM finding_tags WHERE finding_id = 'fnd_00000000000000000001'").execute(&mut *tx).await.unwrap();
        sqlx::query("UPDATE finding_counts SET n = n - 1").execute(&mut *tx).await.unwrap();
        FindingsProjector.apply(&mut tx, &events).await.unwrap();
        tx.commit().await.unwrap();
        let count = |sql: &'static str| {
            let pool = store.pool().clone();
            async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() }
        };
        assert_eq!(count("SELECT COUNT(*) FROM findings").await, 3);
        assert_eq!(count("SELECT COUNT(*) FROM finding_tags").await, 6);
        assert_eq!(count("SELECT COUNT(*) FROM finding_cwes").await, 3);
        assert_eq!(count("SELECT CAST(SUM(n) AS BIGINT) FROM finding_counts").await, 3);

        // A rebuild's bulk replay (PostgreSQL): a COPY refused for a repeated creation falls back
        // to INSERTs in the replay's transaction, after which no COPY may touch those rows (it
        // would wait for that transaction, which waits for it).
        if store.backend() == Backend::Postgres {
            let second = FindingEvent::Updated(FindingUpdated { title: Some("Renamed".to_owned()), ..FindingUpdated::default() });
            append_to(&store, "finding", "fnd_00000000000000000001", engagement, 2, &second).await;
            Sequencer::new(store.clone()).settle(Duration::from_secs(10)).await.unwrap();
            let events = log::read_after(store.pool(), 0, 100).await.unwrap();
            let (zero, one, renamed) = (&events[1], &events[2], &events[4]);
            assert_eq!((zero.sequence, one.sequence, renamed.sequence), (1, 1, 2));
            // Held {0, 0, 1}, refused; the rename of 1 inserts them; then 1 again.
            let batch = [zero, zero, one, renamed, one].map(Clone::clone);
            sqlx::query("TRUNCATE findings, finding_tags, finding_cwes, finding_cves, finding_targets, finding_counts")
                .execute(store.pool())
                .await
                .unwrap();
            let path: String =
                sqlx::query_scalar("SELECT current_setting('search_path')").fetch_one(store.pool()).await.unwrap();
            let mut bulk = BulkLoad::connect(&store.pool().connect_options(), &path).await.unwrap();
            let mut tx = store.pool().begin().await.unwrap();
            let applied = tokio::time::timeout(Duration::from_secs(30), FindingsProjector.apply_bulk(&mut tx, &mut bulk, &batch));
            applied.await.expect("the bulk replay waits for itself").unwrap();
            FindingsProjector.finish_bulk(&mut tx).await.unwrap();
            tx.commit().await.unwrap();
            assert_eq!(bulk.rows_loaded(), 0);
            assert_eq!(count("SELECT COUNT(*) FROM findings").await, 2);
            assert_eq!(count("SELECT COUNT(*) FROM finding_tags").await, 4);
            assert_eq!(count("SELECT CAST(SUM(n) AS BIGINT) FROM finding_counts").await, 2);
            let title: String = sqlx::query_scalar("SELECT title FROM findings WHERE id = 'fnd_00000000000000000001'")
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!(title, "Renamed");
        }
    }

    async fn creations_held_back_past_other_changes_give_the_same_tables(db) {
        let store = open(&db.url).await;
        let (first, second) = ("eng_00000000000000000001", "eng_00000000000000000002");
        append(&store, first, 1, created("First", &[])).await;
        append(&store, second, 1, created("Second", &[])).await;
        let create = |engagement: &str, title: &str| {
            FindingEvent::Created(FindingCreated {
                tags: vec!["web".to_owned()],
                ..draft_finding(ORG, engagement, title, "high")
            })
        };
        let transition = |from: &str, to: &str| {
            FindingEvent::StatusChanged(Transition {
                change: StatusChange { from: from.to_owned(), to: to.to_owned() },
                comment: None,
            })
        };
        let renamed = FindingEvent::Updated(FindingUpdated {
            title: Some("A renamed".to_owned()),
            severity: Some("low".to_owned()),
            tags: Some(vec!["api".to_owned()]),
            ..FindingUpdated::default()
        });
        // Changes to findings created earlier in the same batch, between creations of others,
        // a deletion, and an engagement's deletion that must purge what was created before it.
        let history: Vec<(&str, &str, i64, FindingEvent)> = vec![
            ("fnd_a", first, 1, create(first, "A")),
            ("fnd_b", first, 1, create(first, "B")),
            ("fnd_a", first, 2, renamed),
            ("fnd_c", second, 1, create(second, "C")),
            ("fnd_b", first, 2, transition("draft", "open")),
            ("fnd_d", first, 1, create(first, "D")),
            ("fnd_c", second, 2, FindingEvent::Deleted(Empty {})),
            ("fnd_e", second, 1, create(second, "E")),
            ("fnd_b", first, 3, transition("open", "remediated")),
        ];
        for (id, engagement, sequence, event) in &history {
            append_to(&store, "finding", id, engagement, *sequence, event).await;
        }
        append(&store, second, 2, EngagementEvent::Deleted(Empty {})).await;
        append_to(&store, "finding", "fnd_f", first, 1, &create(first, "F")).await;
        Sequencer::new(store.clone()).settle(Duration::from_secs(10)).await.unwrap();
        let events = log::read_after(store.pool(), 0, 100).await.unwrap();
        assert_eq!(events.len(), 13);

        let findings = |store: Store| async move {
            let mut out = Vec::new();
            for (table, order) in [
                ("findings", "id"),
                ("finding_tags", "finding_id, tag"),
                ("finding_counts", "engagement_id, severity, status"),
            ] {
                out.extend(rows_of(&store, table, order).await);
            }
            out
        };
        // One event per apply: nothing is ever held back.
        let mut tx = store.pool().begin().await.unwrap();
        for event in &events {
            FindingsProjector.apply(&mut tx, std::slice::from_ref(event)).await.unwrap();
        }
        tx.commit().await.unwrap();
        // The counters agree with the rows they count, whichever way they were written.
        let counters_match_rows = |store: Store| async move {
            let order = "ORDER BY engagement_id, severity, status, review_status";
            let counted: Vec<(String, String, String, String, i64)> = sqlx::query_as(&format!(
                "SELECT engagement_id, severity, status, review_status, n FROM finding_counts {order}"
            ))
            .fetch_all(store.pool())
            .await
            .unwrap();
            let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(&format!(
                "SELECT engagement_id, severity, status, review_status, CAST(COUNT(*) AS BIGINT) FROM findings \
                 GROUP BY engagement_id, severity, status, review_status {order}"
            ))
            .fetch_all(store.pool())
            .await
            .unwrap();
            assert_eq!(counted, rows);
            assert!(rows.iter().any(|(_, severity, status, _, _)| severity == "low" && status == "draft"));
            assert!(rows.iter().any(|(_, _, status, _, _)| status == "remediated"));
        };
        let one_by_one = findings(store.clone()).await;
        counters_match_rows(store.clone()).await;
        let ids: Vec<&str> = one_by_one.iter().filter(|r| r[0].as_deref() == Some("findings")).filter_map(|r| r[1].as_deref()).collect();
        assert_eq!(ids, ["fnd_a", "fnd_b", "fnd_d", "fnd_f"]);
        for table in ["finding_tags", "finding_counts", "findings"] {
            sqlx::query(&format!("DELETE FROM {table}")).execute(store.pool()).await.unwrap();
        }
        let mut tx = store.pool().begin().await.unwrap();
        FindingsProjector.apply(&mut tx, &events).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(findings(store.clone()).await, one_by_one);
        counters_match_rows(store.clone()).await;
    }

    async fn changes_applied_in_waves_give_the_rows_their_streams_fold_to(db) {
        let store = open(&db.url).await;
        let engagement = "eng_00000000000000000001";
        append(&store, engagement, 1, created("First", &[])).await;
        let transition = |from: &str, to: &str| {
            FindingEvent::StatusChanged(Transition {
                change: StatusChange { from: from.to_owned(), to: to.to_owned() },
                comment: None,
            })
        };
        let update = |u: FindingUpdated| FindingEvent::Updated(u);
        let cvss = Cvss { vector: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H".to_owned(), score: 9.8, version: "3.1".to_owned() };
        let list = |values: &[&str]| Some(values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>());
        let create = |title: &str| {
            FindingEvent::Created(FindingCreated {
                tags: vec!["web".to_owned()],
                cwe: vec!["CWE-89".to_owned()],
                // Every character COPY's text format escapes.
                description: Some("first\tline\\ \"two\"\nthree\r é".to_owned()),
                ..draft_finding(ORG, engagement, title, "high")
            })
        };
        // Waves of several findings, a finding changed twice in a row (the next wave), texts and
        // the CVSS set and cleared, child sets that overlap their old ones, a reopening.
        let history: Vec<(&str, i64, FindingEvent)> = vec![
            ("fnd_a", 1, create("A")),
            ("fnd_b", 1, create("B")),
            ("fnd_c", 1, create("C")),
            ("fnd_a", 2, update(FindingUpdated { description: Some(Some("d1".to_owned())), tags: list(&["x", "y"]), cwe: list(&["CWE-79"]), ..FindingUpdated::default() })),
            ("fnd_b", 2, transition("draft", "open")),
            ("fnd_c", 2, update(FindingUpdated { cvss: Some(Some(cvss.clone())), severity: Some("critical".to_owned()), ..FindingUpdated::default() })),
            ("fnd_a", 3, update(FindingUpdated { description: Some(None), tags: list(&["y", "z"]), title: Some("A Renamed".to_owned()), ..FindingUpdated::default() })),
            ("fnd_b", 3, transition("open", "remediated")),
            ("fnd_b", 4, transition("remediated", "open")),
            ("fnd_c", 3, FindingEvent::ReviewStatusChanged(Transition { change: StatusChange { from: "in_progress".to_owned(), to: "ready_for_review".to_owned() }, comment: None })),
            ("fnd_c", 4, update(FindingUpdated { cvss: Some(None), affected_target_ids: list(&["tgt_1", "tgt_2"]), cve: list(&["CVE-2024-1"]), retest_notes: Some(Some("retested".to_owned())), ..FindingUpdated::default() })),
            ("fnd_a", 4, transition("draft", "open")),
            ("fnd_b", 5, transition("open", "closed")),
            ("fnd_d", 1, create("D")),
            ("fnd_d", 2, update(FindingUpdated { impact: Some(Some("i".to_owned())), references: list(&["https://example.com"]), tags: list(&[]), ..FindingUpdated::default() })),
            ("fnd_a", 5, transition("open", "remediated")),
        ];
        for (id, sequence, event) in &history {
            append_to(&store, "finding", id, engagement, *sequence, event).await;
        }
        // Waves large enough for PostgreSQL's one statement (eight changes or more): twenty
        // findings changed one after the other, four times, each kind of change in every wave
        // (the small waves above go one change at a time).
        let many: Vec<String> = (0..20).map(|i| format!("fnd_w{i:02}")).collect();
        for id in &many {
            append_to(&store, "finding", id, engagement, 1, &create(id)).await;
        }
        let review = |to: &str| {
            FindingEvent::ReviewStatusChanged(Transition {
                change: StatusChange { from: "in_progress".to_owned(), to: to.to_owned() },
                comment: None,
            })
        };
        let first = |i: usize| match i % 4 {
            0 => update(FindingUpdated { tags: list(&["a"]), cwe: list(&["CWE-89", "CWE-20"]), ..FindingUpdated::default() }),
            1 => update(FindingUpdated { severity: Some("low".to_owned()), title: Some(format!("Renamed {i}")), ..FindingUpdated::default() }),
            2 => update(FindingUpdated { cvss: Some(Some(cvss.clone())), cve: list(&["CVE-2024-2"]), affected_target_ids: list(&["tgt_9"]), ..FindingUpdated::default() }),
            _ => update(FindingUpdated { description: Some(None), impact: Some(Some("impact".to_owned())), tags: list(&[]), cwe: list(&[]), ..FindingUpdated::default() }),
        };
        let third = |i: usize| if i.is_multiple_of(2) { transition("open", "remediated") } else { review("ready_for_review") };
        let fourth = |i: usize| {
            if i.is_multiple_of(2) {
                transition("remediated", "open")
            } else {
                update(FindingUpdated { cvss: Some(None), severity: Some("critical".to_owned()), affected_target_ids: list(&[]), ..FindingUpdated::default() })
            }
        };
        for sequence in 2..=5 {
            for (i, id) in many.iter().enumerate() {
                let event = match sequence {
                    2 => first(i),
                    3 => transition("draft", "open"),
                    4 => third(i),
                    _ => fourth(i),
                };
                append_to(&store, "finding", id, engagement, sequence, &event).await;
            }
        }
        Sequencer::new(store.clone()).settle(Duration::from_secs(10)).await.unwrap();
        let events = log::read_after(store.pool(), 0, 200).await.unwrap();
        assert_eq!(events.len(), 117);
        let mut tx = store.pool().begin().await.unwrap();
        FindingsProjector.apply(&mut tx, &events).await.unwrap();
        tx.commit().await.unwrap();

        let child = |table: &'static str, column: &'static str, id: String| {
            let store = store.clone();
            async move {
                let values: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT {column} FROM {table} WHERE finding_id = $1 ORDER BY {column}"))
                        .bind(id)
                        .fetch_all(store.pool())
                        .await
                        .unwrap();
                values
            }
        };
        let check = || async {
            for id in ["fnd_a", "fnd_b", "fnd_c", "fnd_d"].into_iter().map(str::to_owned).chain(many.iter().cloned()) {
                let stream: Vec<LogEvent> = events.iter().filter(|e| e.aggregate_id == id).cloned().collect();
                let folded = findings::fold(&stream).unwrap().unwrap();
                let row = findings::get(store.pool(), ORG, &id).await.unwrap().unwrap();
                assert_eq!(row, folded, "{id}");
                let sorted = |mut v: Vec<String>| {
                    v.sort();
                    v
                };
                assert_eq!(child("finding_tags", "tag", id.clone()).await, sorted(row.tags.clone()), "{id}");
                assert_eq!(child("finding_cwes", "cwe", id.clone()).await, sorted(row.cwe.clone()), "{id}");
                assert_eq!(child("finding_cves", "cve", id.clone()).await, sorted(row.cve.clone()), "{id}");
                assert_eq!(child("finding_targets", "target_id", id.clone()).await, sorted(row.affected_target_ids.clone()), "{id}");
            }
            let counted: Vec<(String, String, String, i64)> = sqlx::query_as(
                "SELECT severity, status, review_status, n FROM finding_counts ORDER BY severity, status, review_status",
            )
            .fetch_all(store.pool())
            .await
            .unwrap();
            let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
                "SELECT severity, status, review_status, CAST(COUNT(*) AS BIGINT) FROM findings \
                 GROUP BY severity, status, review_status ORDER BY severity, status, review_status",
            )
            .fetch_all(store.pool())
            .await
            .unwrap();
            assert_eq!(counted, rows);
        };
        check().await;
        let b = findings::get(store.pool(), ORG, "fnd_b").await.unwrap().unwrap();
        assert_eq!((b.status.as_str(), b.remediated_at.is_none(), b.opened_at.is_some(), b.closed_at.is_some()), ("closed", true, true, true));
        let c = findings::get(store.pool(), ORG, "fnd_c").await.unwrap().unwrap();
        assert_eq!((c.cvss.is_none(), c.severity.as_str(), c.review_status.as_str()), (true, "critical", "ready_for_review"));
        // Applied again from an earlier point (a replay), every change is older than its
        // finding: nothing moves, though the events stop halfway through the findings' streams.
        let tables = || async {
            let mut out = Vec::new();
            for (table, order) in [
                ("findings", "id"),
                ("finding_tags", "finding_id, tag"),
                ("finding_cwes", "finding_id, cwe"),
                ("finding_cves", "finding_id, cve"),
                ("finding_targets", "finding_id, target_id"),
                ("finding_counts", "engagement_id, severity, status, review_status"),
            ] {
                out.extend(rows_of(&store, table, order).await);
            }
            out
        };
        let before = tables().await;
        let mut tx = store.pool().begin().await.unwrap();
        FindingsProjector.apply(&mut tx, &events[..77]).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(tables().await, before);
        check().await;

        // A PostgreSQL rebuild's replay loads the creations by COPY over a second connection and
        // counts the counters at its end: into emptied tables it gives the same rows. When some of the findings a COPY would load
        // are there already (a replay from an earlier point), it is refused and the creations go
        // by INSERT, which adds the others and leaves the rest.
        if store.backend() == Backend::Postgres {
            let path: String =
                sqlx::query_scalar("SELECT current_setting('search_path')").fetch_one(store.pool()).await.unwrap();
            let mut bulk = BulkLoad::connect(&store.pool().connect_options(), &path).await.unwrap();
            sqlx::query("TRUNCATE findings, finding_tags, finding_cwes, finding_cves, finding_targets, finding_counts")
                .execute(store.pool())
                .await
                .unwrap();
            let mut tx = store.pool().begin().await.unwrap();
            FindingsProjector.apply_bulk(&mut tx, &mut bulk, &events[..25]).await.unwrap();
            FindingsProjector.finish_bulk(&mut tx).await.unwrap();
            tx.commit().await.unwrap();
            // Each finding created so far, with a tag and a CWE.
            let created = events[..25].iter().filter(|e| e.event_type == finding::CREATED).count();
            let loaded = 3 * created as u64;
            assert_eq!(bulk.rows_loaded(), loaded);
            for part in [&events[..], &events[..77]] {
                let mut tx = store.pool().begin().await.unwrap();
                FindingsProjector.apply_bulk(&mut tx, &mut bulk, part).await.unwrap();
                FindingsProjector.finish_bulk(&mut tx).await.unwrap();
                tx.commit().await.unwrap();
                assert_eq!(tables().await, before);
                check().await;
                assert_eq!(bulk.rows_loaded(), loaded);
            }
        }
    }

    async fn a_rebuild_from_zero_equals_the_live_tables(db) {
        let store = open(&db.url).await;
        let runner = ProjectionRunner::new(store.clone(), all_projectors());
        runner.prepare().await.unwrap();
        // Live: project while history is being written, in several catch-ups.
        write_history(&store, 10).await;
        runner.catch_up().await.unwrap();
        write_history_more(&store).await;
        assert_eq!(runner.catch_up().await.unwrap(), log::head(&store).await.unwrap());
        let live = dump(&store).await;
        assert!(live.len() > 20);
        // A rebuild repairs whatever the tables hold: rows lost, changed or left over.
        for statement in [
            "DELETE FROM engagement_tags WHERE tag = 'x'",
            "UPDATE engagements SET name = 'tampered', version = version + 100 WHERE name LIKE '%1%'",
            "DELETE FROM organizations",
            "INSERT INTO engagement_tags (engagement_id, tag) VALUES ('eng_stray', 'stray')",
        ] {
            sqlx::query(statement).execute(store.pool()).await.unwrap();
        }
        assert_ne!(dump(&store).await, live);
        // The shadow schema of a PostgreSQL rebuild that died (no server process has its id).
        let shadow_schemas = || async {
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(nspname AS TEXT) FROM pg_namespace WHERE nspname LIKE 'pwnbook_rebuild_%' ORDER BY 1",
            )
            .fetch_all(store.pool())
            .await
            .unwrap();
            names
        };
        if store.backend() == Backend::Postgres {
            for statement in ["CREATE SCHEMA pwnbook_rebuild_0", "CREATE TABLE pwnbook_rebuild_0.findings (id TEXT)"] {
                sqlx::query(statement).execute(store.pool()).await.unwrap();
            }
            assert_eq!(shadow_schemas().await, ["pwnbook_rebuild_0"]);
        }

        for projector in runner.projectors() {
            runner.rebuild(projector.as_ref()).await.unwrap();
        }
        assert_eq!(dump(&store).await, live);
        if store.backend() == Backend::Postgres {
            assert!(shadow_schemas().await.is_empty());
        }
        let engagements: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM engagements").fetch_one(store.pool()).await.unwrap();
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM engagements ORDER BY id").fetch_all(store.pool()).await.unwrap();
        assert_eq!(engagements, 9, "11 created, 2 deleted: {ids:?}");

        // A role without CREATE on the database rebuilds into temporary shadows instead.
        if store.backend() == Backend::Postgres {
            let role = format!("pwnbook_no_create_{}", std::process::id());
            let database: String =
                sqlx::query_scalar("SELECT CAST(current_database() AS TEXT)").fetch_one(store.pool()).await.unwrap();
            for statement in [
                format!("CREATE ROLE {role} LOGIN"),
                format!("REVOKE CREATE ON DATABASE \"{database}\" FROM PUBLIC"),
                format!("GRANT USAGE, CREATE ON SCHEMA public TO {role}"),
                format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"),
                format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"),
                "DELETE FROM engagement_tags".to_owned(),
            ] {
                sqlx::query(&statement).execute(store.pool()).await.unwrap();
            }
            let limited = Store::open(&db.url.replacen("postgres@", &format!("{role}@"), 1)).await.unwrap();
            let created: bool = sqlx::query_scalar("SELECT has_database_privilege(current_database(), 'CREATE')")
                .fetch_one(limited.pool())
                .await
                .unwrap();
            assert!(!created);
            let runner = ProjectionRunner::new(limited.clone(), all_projectors());
            let rebuilt = async {
                for projector in runner.projectors() {
                    runner.rebuild(projector.as_ref()).await?;
                }
                Ok::<_, ProjectionError>(())
            }
            .await;
            limited.close().await;
            for statement in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
                sqlx::query(&statement).execute(store.pool()).await.unwrap();
            }
            rebuilt.unwrap();
            assert_eq!(dump(&store).await, live);
            assert!(shadow_schemas().await.is_empty());
        }
    }
}

async fn write_history_more(store: &Store) {
    let id = "eng_99999999999999999999";
    append(store, id, 1, created("Late", &["x"])).await;
    let patch = EngagementUpdated {
        tags: Some(vec![]),
        end_date: Some(Some("2025-02-01".to_owned())),
        ..EngagementUpdated::default()
    };
    append(store, id, 2, EngagementEvent::Updated(patch)).await;
    Sequencer::new(store.clone()).settle(Duration::from_secs(10)).await.unwrap();
}

/// A stream as the command service appends it (through the group commit), for committing
/// ready-made events.
macro_rules! stream {
    ($name:ident, $type:literal, $event:ty) => {
        #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
        struct $name;

        impl cqrs_es::Aggregate for $name {
            const TYPE: &'static str = $type;
            type Command = ();
            type Event = $event;
            type Error = std::io::Error;
            type Services = ();

            async fn handle(
                &mut self,
                (): (),
                (): &(),
                _: &cqrs_es::event_sink::EventSink<Self>,
            ) -> Result<(), Self::Error> {
                Ok(())
            }

            fn apply(&mut self, _: $event) {}
        }
    };
}

stream!(EngagementStream, "engagement", EngagementEvent);
stream!(FindingStream, "finding", FindingEvent);

/// Commits `event` as the first of stream `id` in engagement `engagement`.
async fn commit_first<A: cqrs_es::Aggregate>(store: &Store, id: &str, engagement: &str, event: A::Event) {
    let metadata = pwnbook_events::EventMetadata {
        organization_id: ORG.to_owned(),
        engagement_id: Some(engagement.to_owned()),
        actor: pwnbook_events::Actor::system(),
        request_id: None,
        idempotency_key: None,
        claim: None,
    };
    pwnbook_events::AggregateStore::<A>::new(store)
        .commit(vec![event], pwnbook_events::AggregateStore::fresh(id), metadata.into_map())
        .await
        .unwrap();
}

/// A store whose sequencer projects each batch in its transaction, as a server's does (without
/// the runner task that catches up what it declines), with the runner, the sequencer and the
/// sender that stops it.
async fn inline_projected(
    url: &str,
) -> (Store, ProjectionRunner, pwnbook_events::sequencer::SequencerHandle, tokio::sync::watch::Sender<bool>) {
    let store = open(url).await;
    let runner = ProjectionRunner::new(store.clone(), all_projectors());
    runner.prepare().await.unwrap();
    let projections = pwnbook_projections::runner::ProjectionHandle::default();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let sequencer = pwnbook_events::sequencer::spawn(
        store.clone(),
        Some(projections.inline(runner.clone())),
        Duration::from_secs(3600),
        shutdown,
    );
    (store, runner, sequencer, stop)
}

async fn commit_created(store: &Store, id: &str) {
    commit_first::<EngagementStream>(store, id, id, created(id, &[])).await;
}

async fn engagement_names(store: &Store) -> Vec<String> {
    sqlx::query_scalar("SELECT name FROM engagements ORDER BY name").fetch_all(store.pool()).await.unwrap()
}

/// PostgreSQL only: the group commit's batch takes the inline projection's checkpoints in its
/// one round trip (projections migration 2051), and only when every checkpoint is at the
/// batch's start and none is held elsewhere. A batch the projection declined (a checkpoint held
/// by another transaction, as by a rebuild) leaves the checkpoints behind the head; the next
/// batch must not move them past it, or the declined batch would never be projected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_inline_projection_takes_only_batches_that_start_at_its_checkpoints_postgres() {
    let Some(db) = pwnbook_events::testing::TestDb::postgres().await else { return };
    let (store, runner, sequencer, _stop) = inline_projected(&db.url).await;
    commit_created(&store, "a").await;
    commit_created(&store, "b").await;
    assert_eq!(sequencer.sequenced_at("engagement", "b", 1), Some(2));
    assert_eq!(engagement_names(&store).await, ["a", "b"], "projected in their own commits");

    let mut holder = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT 1 FROM projector_checkpoints WHERE name = 'engagements' FOR UPDATE")
        .execute(&mut holder)
        .await
        .unwrap();
    commit_created(&store, "c").await;
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    assert_eq!(sequencer.sequenced_at("engagement", "c", 1), Some(3));
    assert_eq!(engagement_names(&store).await, ["a", "b"], "declined while a checkpoint was held");

    commit_created(&store, "d").await;
    assert_eq!(sequencer.sequenced_at("engagement", "d", 1), Some(4));
    assert_eq!(engagement_names(&store).await, ["a", "b"], "its checkpoints were behind the head");
    let checkpoints: Vec<i64> = sqlx::query_scalar("SELECT DISTINCT position FROM projector_checkpoints")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(checkpoints, [2]);

    assert_eq!(runner.catch_up().await.unwrap(), 4);
    assert_eq!(engagement_names(&store).await, ["a", "b", "c", "d"]);
    commit_created(&store, "e").await;
    assert_eq!(engagement_names(&store).await, ["a", "b", "c", "d", "e"], "inline again");
}

/// PostgreSQL only: a batch of finding creations is projected in the group commit's one round
/// trip, its COMMIT included (the findings statement prepared on the writer's connection, run by
/// `EXECUTE` with literal values). Its rows, child rows and counters must be what the projectors
/// give when they replay the log, texts that need escaping included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creations_projected_in_the_batchs_round_trip_equal_a_rebuild_postgres() {
    let Some(db) = pwnbook_events::testing::TestDb::postgres().await else { return };
    let (store, runner, sequencer, _stop) = inline_projected(&db.url).await;
    commit_created(&store, "eng").await;
    let create = |i: usize| {
        let store = store.clone();
        tokio::spawn(async move {
            let id = format!("fnd_{i:03}");
            let created = FindingCreated {
                description: Some(format!("it's a \\ back'slash {i}")),
                tags: vec!["web".to_owned(), format!("tag '{}'", i % 3)],
                cwe: vec![format!("CWE-{}", 79 + i % 2)],
                cve: if i.is_multiple_of(4) { vec!["CVE-2024-0001".to_owned()] } else { vec![] },
                ..draft_finding(ORG, "eng", &format!("Finding {i} \"quoted\""), ["high", "low"][i % 2])
            };
            commit_first::<FindingStream>(&store, &id, "eng", FindingEvent::Created(created)).await;
            id
        })
    };
    // Several rounds of concurrent creates: batches of one and of several.
    for round in 0..4 {
        let creates: Vec<_> = (round * 8..round * 8 + 8).map(create).collect();
        for created in creates {
            let id = created.await.unwrap();
            assert!(sequencer.sequenced_at("finding", &id, 1).is_some(), "{id} sequenced in its commit");
        }
    }
    let findings: i64 =
        sqlx::query_scalar("SELECT count(*) FROM findings").fetch_one(store.pool()).await.unwrap();
    assert_eq!(findings, 32, "projected in their own commits");
    let counted: i64 = sqlx::query_scalar("SELECT CAST(sum(n) AS BIGINT) FROM finding_counts")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(counted, 32);
    let tables = [
        ("findings", "id"),
        ("finding_tags", "finding_id, tag"),
        ("finding_cwes", "finding_id, cwe"),
        ("finding_cves", "finding_id, cve"),
        ("finding_counts", "organization_id, engagement_id, severity, status, review_status"),
    ];
    let mut live = Vec::new();
    for (table, order) in tables {
        live.push(rows_of(&store, table, order).await);
    }
    let findings = all_projectors().into_iter().find(|p| p.name() == "findings").unwrap();
    runner.rebuild(findings.as_ref()).await.unwrap();
    for ((table, order), before) in tables.into_iter().zip(live) {
        assert!(!before.is_empty(), "{table} has rows");
        assert_eq!(rows_of(&store, table, order).await, before, "{table}");
    }
}
