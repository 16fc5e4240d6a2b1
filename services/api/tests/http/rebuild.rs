//! The domain read tables are a function of the log: after a varied history through the API,
//! rebuilding every projector from zero gives exactly the live rows. Also the conventions every
//! domain resource shares: conditional GETs and idempotent creates.

use pwnbook_events::{backend_tests, Store};
use pwnbook_projections::{all_projectors, ProjectionRunner};
use serde_json::{json, Value};
use sqlx::Row;

use crate::findings::create_finding;
use crate::harness::{parts, TestApp};
use crate::reports::create_report;
use crate::targets::create_target;
use crate::tasks::create_task;
use crate::wiki::create_page;

const TABLES: &[(&str, &str)] = &[
    ("targets", "id"),
    ("target_tags", "target_id, tag"),
    ("findings", "id"),
    ("finding_tags", "finding_id, tag"),
    ("finding_cwes", "finding_id, cwe"),
    ("finding_cves", "finding_id, cve"),
    ("finding_targets", "finding_id, target_id"),
    ("finding_counts", "organization_id, engagement_id, severity, status, review_status"),
    ("tasks", "id"),
    ("wiki_pages", "id"),
    ("reports", "id"),
];

async fn dump(store: &Store) -> Vec<Vec<Option<String>>> {
    let mut out = Vec::new();
    for (table, order) in TABLES {
        let rows = sqlx::query(&format!("SELECT * FROM {table} ORDER BY {order}"))
            .fetch_all(store.pool())
            .await
            .unwrap();
        for row in rows {
            let mut values = vec![Some((*table).to_owned())];
            for i in 0..row.len() {
                let text = row
                    .try_get::<Option<String>, _>(i)
                    .or_else(|_| row.try_get::<Option<i64>, _>(i).map(|v| v.map(|v| v.to_string())))
                    .unwrap();
                values.push(text);
            }
            out.push(values);
        }
    }
    out
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

backend_tests! {
    async fn rebuilt_domain_tables_equal_the_live_ones(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "History"})).await);
        let doomed = id_of(&app.create_engagement(json!({"name": "Doomed"})).await);
        let target = id_of(&create_target(&app, &engagement, json!({"type": "domain", "value": "acme.test", "tags": ["a", "b"]})).await);
        let gone = id_of(&create_target(&app, &engagement, json!({"type": "ip", "value": "10.0.0.1"})).await);
        app.patch(&format!("/api/v1/targets/{target}"), &json!({"tags": ["b"], "port": 443})).send().await.unwrap();
        app.delete(&format!("/api/v1/targets/{gone}")).send().await.unwrap();
        let finding = id_of(&create_finding(&app, &engagement, json!({
            "title": "XSS", "cvss": {"vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N"},
            "cwe": ["CWE-79"], "cve": ["CVE-2024-12345"], "affectedTargetIds": [target], "tags": ["web"]
        })).await);
        for status in ["open", "remediated", "open", "closed"] {
            let (code, _) = parts(app.post(&format!("/api/v1/findings/{finding}/transition"), &json!({"status": status})).send().await.unwrap()).await;
            assert_eq!(code, 200);
        }
        app.patch(&format!("/api/v1/findings/{finding}"), &json!({"cwe": ["CWE-80"], "tags": [], "cvss": null, "reviewStatus": "ready_for_review"})).send().await.unwrap();
        let dropped = id_of(&create_finding(&app, &engagement, json!({"title": "Dropped", "severity": "low", "tags": ["x"]})).await);
        app.delete(&format!("/api/v1/findings/{dropped}")).send().await.unwrap();
        let task = id_of(&create_task(&app, &engagement, json!({"title": "Scan", "dueDate": "2025-01-01"})).await);
        app.post(&format!("/api/v1/tasks/{task}/close"), &json!({})).send().await.unwrap();
        app.patch(&format!("/api/v1/tasks/{task}"), &json!({"status": "in_progress", "dueDate": null})).send().await.unwrap();
        let root = id_of(&create_page(&app, &engagement, json!({"title": "Root", "content": "# r"})).await);
        let page = id_of(&create_page(&app, &engagement, json!({"title": "Child", "parentId": root})).await);
        app.patch(&format!("/api/v1/wiki/{page}"), &json!({"slug": "moved", "parentId": null})).send().await.unwrap();
        let report = id_of(&create_report(&app, &engagement, json!({"title": "Final", "format": "html"})).await);
        app.post(&format!("/api/v1/reports/{report}/generate"), &json!({})).send().await.unwrap();
        for status in ["in_review", "approved", "published"] {
            app.patch(&format!("/api/v1/reports/{report}"), &json!({"status": status})).send().await.unwrap();
        }
        create_finding(&app, &doomed, json!({"title": "Hidden", "severity": "info"})).await;
        create_task(&app, &doomed, json!({"title": "Hidden"})).await;
        app.delete(&format!("/api/v1/engagements/{doomed}")).send().await.unwrap();

        // A PostgreSQL rebuild copies rows over a second connection while its replay's
        // transactions go on: the replay reads at READ COMMITTED whatever the database's default.
        if app.db.url.starts_with("postgres") {
            let admin = Store::open(&app.db.url).await.unwrap();
            let database: String = sqlx::query_scalar("SELECT CAST(current_database() AS TEXT)").fetch_one(admin.pool()).await.unwrap();
            sqlx::query(&format!("ALTER DATABASE \"{database}\" SET default_transaction_isolation = 'repeatable read'"))
                .execute(admin.pool())
                .await
                .unwrap();
            admin.close().await;
        }
        let store = Store::open(&app.db.url).await.unwrap();
        let live = dump(&store).await;
        assert!(live.iter().any(|row| row[0].as_deref() == Some("reports")));
        // A rebuild repairs whatever the tables hold: rows lost, changed or left over.
        for statement in [
            "DELETE FROM finding_tags",
            "UPDATE findings SET title = 'tampered', version = version + 100",
            "DELETE FROM finding_counts",
            "DELETE FROM targets",
            "UPDATE tasks SET status = 'tampered'",
            "INSERT INTO target_tags (target_id, tag) VALUES ('tgt_stray', 'stray')",
        ] {
            sqlx::query(statement).execute(store.pool()).await.unwrap();
        }
        assert_ne!(dump(&store).await, live);
        let runner = ProjectionRunner::new(store.clone(), all_projectors());
        for projector in runner.projectors() {
            runner.rebuild(projector.as_ref()).await.unwrap();
        }
        assert_eq!(dump(&store).await, live);
        store.close().await;
    }

    async fn domain_resources_answer_conditional_gets_and_replay_idempotent_creates(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Conventions"})).await);
        let resources = [
            ("targets", id_of(&create_target(&app, &engagement, json!({"type": "ip", "value": "10.0.0.1"})).await)),
            ("findings", id_of(&create_finding(&app, &engagement, json!({"title": "f", "severity": "low"})).await)),
            ("tasks", id_of(&create_task(&app, &engagement, json!({"title": "t"})).await)),
            ("wiki", id_of(&create_page(&app, &engagement, json!({"title": "w"})).await)),
            ("reports", id_of(&create_report(&app, &engagement, json!({"title": "r"})).await)),
        ];
        for (collection, id) in &resources {
            let path = format!("/api/v1/{collection}/{id}");
            let response = app.get(&path).header("if-none-match", "\"1\"").send().await.unwrap();
            assert_eq!((response.status().as_u16(), response.headers()["etag"].to_str().unwrap()), (304, "\"1\""), "{path}");
            assert_eq!(app.get(&path).header("if-none-match", "\"7\"").send().await.unwrap().status(), 200, "{path}");
            let (status, _) = parts(app.get(&format!("{path}?expand=all")).send().await.unwrap()).await;
            assert_eq!(status, 400, "{path}: unknown query parameter");
        }
        let body = json!({"title": "Once", "severity": "high"});
        let path = format!("/api/v1/engagements/{engagement}/findings");
        let first = app.post(&path, &body).header("idempotency-key", "finding-once").send().await.unwrap();
        assert_eq!(first.status(), 201);
        let (_, first) = parts(first).await;
        let again = app.post(&path, &body).header("idempotency-key", "finding-once").send().await.unwrap();
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        let (status, again) = parts(again).await;
        assert_eq!((status, &again), (201, &first));
        let (_, listed) = parts(app.get(&format!("{path}?q=once")).send().await.unwrap()).await;
        assert_eq!(listed["meta"]["total"], 1, "performed once");
    }
}
