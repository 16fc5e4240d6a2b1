//! SPEC §4 for the domain resources: the history of a target, finding, task, wiki page and
//! report, and time travel on their GETs, every version compared with the live GET captured
//! right after it was written.

use std::time::Duration;

use chrono::DateTime;
use pwnbook_events::backend_tests;
use reqwest::Method;
use serde_json::{json, Value};

use crate::findings::create_finding;
use crate::harness::{parts, TestApp};
use crate::reports::create_report;
use crate::targets::create_target;
use crate::tasks::create_task;
use crate::wiki::create_page;

/// One write: the method, the path after the resource's own path ("" or "/close"), the body.
type Write = (Method, &'static str, Value);

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

/// The live GET of `path`: its `data` and the version in its ETag.
async fn live(app: &TestApp, path: &str) -> (Value, i64) {
    let response = app.get(path).send().await.unwrap();
    let version = response.headers()["etag"].to_str().unwrap().trim_matches('"').parse().unwrap();
    let (status, body) = parts(response).await;
    assert_eq!(status, 200, "{path}: {body}");
    (body["data"].clone(), version)
}

/// Applies `writes` to the resource at `path` (just created), each a few milliseconds after the
/// last, and returns the live GET after the creation and after every write: version n at n - 1.
/// Every write must add exactly one event, so every version of the resource is captured.
async fn walk(app: &TestApp, path: &str, writes: Vec<Write>) -> Vec<Value> {
    let (created, version) = live(app, path).await;
    assert_eq!(version, 1);
    let mut versions = vec![created];
    for (method, suffix, body) in writes {
        // Distinct milliseconds, so an instant between two writes exists.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let target = format!("{path}{suffix}");
        let (status, written) =
            parts(app.request(method, &target, &app.key).json(&body).send().await.unwrap()).await;
        assert_eq!(status, 200, "{target} {body}: {written}");
        let (now, version) = live(app, path).await;
        assert_eq!(version as usize, versions.len() + 1, "{target} {body} added exactly one event");
        versions.push(now);
    }
    versions
}

/// `?version=n` for every version equals the live GET captured then, and `?asOf=` an instant
/// after version n and before version n + 1 gives version n.
async fn assert_time_travel(app: &TestApp, path: &str, versions: &[Value]) {
    for (i, expected) in versions.iter().enumerate() {
        let version = i + 1;
        let response = app.get(&format!("{path}?version={version}")).send().await.unwrap();
        assert_eq!(response.headers()["etag"], format!("\"{version}\"").as_str());
        let (status, past) = parts(response).await;
        assert_eq!((status, &past["data"]), (200, expected), "{path} version {version}");

        let written = DateTime::parse_from_rfc3339(expected["updatedAt"].as_str().unwrap()).unwrap();
        let between = (written + chrono::Duration::milliseconds(2)).to_rfc3339();
        if let Some(next) = versions.get(i + 1) {
            let next = DateTime::parse_from_rfc3339(next["updatedAt"].as_str().unwrap()).unwrap();
            assert!(written + chrono::Duration::milliseconds(2) < next, "the writes are apart");
        }
        let (status, past) =
            parts(app.get(&format!("{path}?asOf={}", between.replace('+', "%2B"))).send().await.unwrap())
                .await;
        assert_eq!((status, &past["data"]), (200, expected), "{path} asOf {between}");
    }
    let past_the_newest = versions.len() + 1;
    let (status, _) =
        parts(app.get(&format!("{path}?version={past_the_newest}")).send().await.unwrap()).await;
    assert_eq!(status, 404, "{path}: a version that does not exist");
    let (status, _) =
        parts(app.get(&format!("{path}?asOf=2001-01-01T00:00:00Z")).send().await.unwrap()).await;
    assert_eq!(status, 404, "{path}: before its creation");
}

/// The resource's whole history: exactly its own events, in order, sequences 1, 2, ….
async fn assert_history(app: &TestApp, path: &str, id: &str, expected: &[&str]) {
    let (status, body) = parts(app.get(&format!("{path}/history")).send().await.unwrap()).await;
    assert_eq!(status, 200, "{path}/history: {body}");
    let events = body["data"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, expected, "{path}/history");
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["resourceId"], id, "{path}/history holds only its events");
        assert_eq!(event["sequence"], json!(i + 1), "{path}/history in stream order");
    }
    let positions: Vec<i64> = events.iter().map(|e| e["position"].as_i64().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "log order: {positions:?}");
    assert_eq!(body["meta"]["hasMore"], false);
}

/// Deletes the resource at `path`: the live GET is 404, its past stays readable with
/// `audit:read` and is 404 without it (`reader` holds only the resource's read permission),
/// the deletion's own version and anything past it are 404, and the history ends with it.
async fn assert_deleted_past(app: &TestApp, path: &str, versions: &[Value], read_permission: &str) {
    let reader = app.key_with(&[read_permission]).await;
    let auditor = app.key_with(&[read_permission, "audit:read"]).await;
    let last = versions.len();
    // Before the deletion the reader sees the past too.
    let (status, _) =
        parts(app.request(Method::GET, &format!("{path}?version=1"), &reader).send().await.unwrap()).await;
    assert_eq!(status, 200, "{path}: a live resource's past needs no audit:read");

    assert_eq!(app.delete(path).send().await.unwrap().status(), 204, "{path}");
    assert_eq!(parts(app.get(path).send().await.unwrap()).await.0, 404, "{path} is gone");
    for (i, expected) in versions.iter().enumerate() {
        let version = i + 1;
        let query = format!("{path}?version={version}");
        let (status, past) = parts(app.request(Method::GET, &query, &auditor).send().await.unwrap()).await;
        assert_eq!((status, &past["data"]), (200, expected), "{query} after the deletion");
        let (status, _) = parts(app.request(Method::GET, &query, &reader).send().await.unwrap()).await;
        assert_eq!(status, 404, "{query} without audit:read");
    }
    for version in [last + 1, last + 2] {
        let (status, _) = parts(app.get(&format!("{path}?version={version}")).send().await.unwrap()).await;
        assert_eq!(status, 404, "{path}?version={version}: deleted or never written");
    }
    let (status, _) =
        parts(app.request(Method::GET, &format!("{path}/history"), &reader).send().await.unwrap()).await;
    assert_eq!(status, 403, "{path}/history needs audit:read");
    let (status, _) =
        parts(app.request(Method::GET, &format!("{path}/history"), &auditor).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let stranger = app.org_with_key(&["*"]).await;
    for query in [format!("{path}/history"), format!("{path}?version=1")] {
        let (status, _) = parts(app.request(Method::GET, &query, &stranger).send().await.unwrap()).await;
        assert_eq!(status, 404, "{query} from another organization");
    }
}

fn patch(body: Value) -> Write {
    (Method::PATCH, "", body)
}

fn post(suffix: &'static str, body: Value) -> Write {
    (Method::POST, suffix, body)
}

backend_tests! {
    async fn a_targets_history_and_every_past_version(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Targets travel"})).await);
        let target = create_target(&app, &engagement, json!({"type": "ip", "value": "10.0.0.1", "tags": ["a"], "notes": "first"})).await;
        let id = id_of(&target);
        let path = format!("/api/v1/targets/{id}");
        let versions = walk(&app, &path, vec![
            patch(json!({"port": 443, "protocol": "tcp", "tags": ["a", "b"]})),
            patch(json!({"inScope": false, "notes": null})),
            patch(json!({"type": "hostname", "value": "db.acme.test", "port": null})),
        ]).await;
        assert_eq!(versions[0], target, "the live GET after the creation is what POST returned");
        assert_eq!((versions[1]["port"].clone(), versions[2]["inScope"].clone(), versions[3]["port"].clone()), (json!(443), json!(false), Value::Null));
        assert_time_travel(&app, &path, &versions).await;
        assert_history(&app, &path, &id, &["target.created", "target.updated", "target.updated", "target.updated"]).await;
        assert_deleted_past(&app, &path, &versions, "targets:read").await;
        assert_history(&app, &path, &id, &["target.created", "target.updated", "target.updated", "target.updated", "target.deleted"]).await;
        assert_eq!(parts(app.get("/api/v1/targets/tgt_00000000000000000000/history").send().await.unwrap()).await.0, 404);
    }

    async fn a_findings_history_and_every_past_version_through_both_lifecycles(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Findings travel"})).await);
        let target = id_of(&create_target(&app, &engagement, json!({"type": "url", "value": "https://app.acme.test/"})).await);
        let finding = create_finding(&app, &engagement, json!({
            "title": "Stored XSS",
            "cvss": {"vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N"},
            "cwe": ["CWE-79"],
            "description": "first",
            "tags": ["web"],
        })).await;
        let id = id_of(&finding);
        let path = format!("/api/v1/findings/{id}");
        let versions = walk(&app, &path, vec![
            patch(json!({"impact": "session theft", "affectedTargetIds": [target], "references": ["https://owasp.org/"]})),
            post("/transition", json!({"status": "open"})),
            post("/transition", json!({"reviewStatus": "ready_for_review"})),
            patch(json!({"cvss": {"vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}, "description": null})),
            post("/transition", json!({"status": "remediated"})),
            post("/transition", json!({"status": "closed"})),
            post("/transition", json!({"status": "open", "comment": "regressed"})),
            patch(json!({"cvss": null, "severity": "low", "tags": []})),
        ]).await;
        assert_eq!(versions[0], finding);
        assert!(versions[6]["closedAt"].is_string() && versions[7]["closedAt"].is_null());
        assert_eq!(versions[7]["openedAt"], versions[2]["openedAt"], "openedAt is the first opening");
        assert_time_travel(&app, &path, &versions).await;
        let mut expected = vec!["finding.created", "finding.updated", "finding.status_changed", "finding.review_status_changed", "finding.updated", "finding.status_changed", "finding.status_changed", "finding.status_changed", "finding.updated"];
        assert_history(&app, &path, &id, &expected).await;
        assert_deleted_past(&app, &path, &versions, "findings:read").await;
        expected.push("finding.deleted");
        assert_history(&app, &path, &id, &expected).await;
    }

    async fn a_tasks_history_and_every_past_version_through_close_and_reopen(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Tasks travel"})).await);
        let task = create_task(&app, &engagement, json!({"title": "Run nmap", "dueDate": "2025-02-01"})).await;
        let id = id_of(&task);
        let path = format!("/api/v1/tasks/{id}");
        let versions = walk(&app, &path, vec![
            patch(json!({"priority": "high", "description": "full range"})),
            patch(json!({"status": "in_progress"})),
            post("/close", json!({})),
            patch(json!({"status": "open"})),
            patch(json!({"dueDate": null, "title": "Run nmap -p-"})),
        ]).await;
        assert_eq!(versions[0], task);
        assert!(versions[3]["closedAt"].is_string() && versions[4]["closedAt"].is_null());
        assert_time_travel(&app, &path, &versions).await;
        let mut expected = vec!["task.created", "task.updated", "task.status_changed", "task.closed", "task.reopened", "task.updated"];
        assert_history(&app, &path, &id, &expected).await;
        assert_deleted_past(&app, &path, &versions, "tasks:read").await;
        expected.push("task.deleted");
        assert_history(&app, &path, &id, &expected).await;
    }

    async fn a_wiki_pages_history_and_every_past_version(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Wiki travel"})).await);
        let parent = id_of(&create_page(&app, &engagement, json!({"title": "Parent"})).await);
        let page = create_page(&app, &engagement, json!({"title": "Loot", "content": "# v1"})).await;
        let id = id_of(&page);
        let path = format!("/api/v1/wiki/{id}");
        let versions = walk(&app, &path, vec![
            patch(json!({"content": "# v2", "parentId": parent})),
            patch(json!({"title": "Loot and creds", "slug": "loot-creds"})),
            patch(json!({"parentId": null, "content": ""})),
        ]).await;
        assert_eq!(versions[0], page);
        assert_time_travel(&app, &path, &versions).await;
        let mut expected = vec!["wiki_page.created", "wiki_page.updated", "wiki_page.updated", "wiki_page.updated"];
        assert_history(&app, &path, &id, &expected).await;
        assert_deleted_past(&app, &path, &versions, "wiki:read").await;
        expected.push("wiki_page.deleted");
        assert_history(&app, &path, &id, &expected).await;
    }

    async fn a_reports_history_and_every_past_version_through_publication(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Reports travel"})).await);
        create_finding(&app, &engagement, json!({"title": "One", "severity": "high"})).await;
        let report = create_report(&app, &engagement, json!({"title": "Final"})).await;
        let id = id_of(&report);
        let path = format!("/api/v1/reports/{id}");
        let versions = walk(&app, &path, vec![
            patch(json!({"title": "Final report"})),
            post("/generate", json!({})),
            patch(json!({"status": "in_review"})),
            patch(json!({"status": "approved"})),
            patch(json!({"status": "published"})),
        ]).await;
        assert_eq!(versions[0], report);
        assert!(versions[1]["generatedAt"].is_null() && versions[2]["generatedAt"].is_string());
        assert!(versions[4]["publishedAt"].is_null() && versions[5]["publishedAt"].is_string());
        assert_time_travel(&app, &path, &versions).await;
        assert_history(&app, &path, &id, &["report.created", "report.updated", "report.generated", "report.status_changed", "report.status_changed", "report.status_changed"]).await;

        // A published report cannot be deleted: another one goes through a deletion.
        let draft = create_report(&app, &engagement, json!({"title": "Draft"})).await;
        let draft_id = id_of(&draft);
        let draft_path = format!("/api/v1/reports/{draft_id}");
        let versions = walk(&app, &draft_path, vec![post("/generate", json!({})), patch(json!({"status": "in_review"}))]).await;
        assert_eq!(versions[0], draft);
        assert_deleted_past(&app, &draft_path, &versions, "reports:read").await;
        assert_history(&app, &draft_path, &draft_id, &["report.created", "report.generated", "report.status_changed", "report.deleted"]).await;
    }

    async fn an_engagements_history_holds_its_childrens_events(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Parent"})).await);
        let other = id_of(&app.create_engagement(json!({"name": "Unrelated"})).await);
        let target = id_of(&create_target(&app, &engagement, json!({"type": "ip", "value": "10.0.0.2"})).await);
        let finding = id_of(&create_finding(&app, &engagement, json!({"title": "Weak TLS", "severity": "low"})).await);
        app.patch(&format!("/api/v1/targets/{target}"), &json!({"notes": "seen"})).send().await.unwrap();
        create_target(&app, &other, json!({"type": "ip", "value": "10.0.0.3"})).await;
        let (status, body) = parts(app.get(&format!("/api/v1/engagements/{engagement}/history")).send().await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        let events: Vec<(String, String)> = body["data"].as_array().unwrap().iter()
            .map(|e| (e["type"].as_str().unwrap().to_owned(), e["resourceId"].as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(events, vec![
            ("engagement.created".to_owned(), engagement.clone()),
            ("target.created".to_owned(), target.clone()),
            ("finding.created".to_owned(), finding),
            ("target.updated".to_owned(), target.clone()),
        ]);

        // Deleting the engagement hides its children: their pasts then need audit:read too.
        let reader = app.key_with(&["targets:read"]).await;
        let auditor = app.key_with(&["targets:read", "audit:read"]).await;
        let past = format!("/api/v1/targets/{target}?version=1");
        assert_eq!(parts(app.request(Method::GET, &past, &reader).send().await.unwrap()).await.0, 200);
        assert_eq!(app.delete(&format!("/api/v1/engagements/{engagement}")).send().await.unwrap().status(), 204);
        assert_eq!(parts(app.get(&format!("/api/v1/targets/{target}")).send().await.unwrap()).await.0, 404);
        assert_eq!(parts(app.request(Method::GET, &past, &reader).send().await.unwrap()).await.0, 404, "{past} without audit:read");
        let (status, body) = parts(app.request(Method::GET, &past, &auditor).send().await.unwrap()).await;
        assert_eq!((status, body["data"]["id"].as_str()), (200, Some(target.as_str())), "{past} with audit:read");
    }
}
