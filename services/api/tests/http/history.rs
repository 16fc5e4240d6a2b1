//! SPEC §4: event objects, `GET /events` (pages, filters, NDJSON), the hash-chain check through
//! the API and the CLI, resource histories, time travel, export and projection rebuilds.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pwnbook_events::event_types::EVENT_TYPES;
use pwnbook_events::{backend_tests, Store};
use pwnbook_projections::all_projectors;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::{Column, Row};

use crate::harness::{error_code, parts, run_cli, TestApp};

/// Every event of a feed query, paging with `after` = `nextAfter` until nothing is left.
pub async fn all_events(app: &TestApp, query: &str, key: &str) -> Vec<Value> {
    let mut after = 0;
    let mut events = Vec::new();
    loop {
        let path = format!("/api/v1/events?after={after}&{query}");
        let (status, body) = parts(app.request(Method::GET, &path, key).send().await.unwrap()).await;
        assert_eq!(status, 200, "{path}: {body}");
        events.extend(body["data"].as_array().unwrap().iter().cloned());
        // Every type the log holds is one a filter may name.
        for event in body["data"].as_array().unwrap() {
            assert!(EVENT_TYPES.contains(&event["type"].as_str().unwrap()), "{event}");
        }
        let next = body["meta"]["nextAfter"].as_i64().unwrap();
        assert!(next >= after, "nextAfter never goes back: {body}");
        after = next;
        if !body["meta"]["hasMore"].as_bool().unwrap() {
            return events;
        }
    }
}

fn positions(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["position"].as_i64().unwrap()).collect()
}

fn types(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
}

fn assert_strictly_increasing(events: &[Value]) {
    let positions = positions(events);
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions are not strictly increasing: {positions:?}"
    );
}

async fn ndjson(app: &TestApp, query: &str) -> (String, Vec<Value>) {
    let response = app
        .get(&format!("/api/v1/events?{query}"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    let text = response.text().await.unwrap();
    assert!(text.is_empty() || text.ends_with('\n'));
    (content_type, text.lines().map(|line| serde_json::from_str(line).unwrap()).collect())
}

/// Tampers with one stored event the way an attacker with database access would: removes the
/// insert-only guard, then rewrites the payload.
async fn tamper(url: &str, is_postgres: bool, position: i64) {
    let store = Store::open(url).await.unwrap();
    let unguard = if is_postgres {
        "ALTER TABLE event_log DISABLE TRIGGER event_log_insert_only"
    } else {
        "DROP TRIGGER event_log_no_update"
    };
    sqlx::query(unguard).execute(store.pool()).await.unwrap();
    sqlx::query(r#"UPDATE event_log SET payload = '{"engagement.deleted":{}}' WHERE position = $1"#)
        .bind(position)
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;
}

/// A checksum of every read table: all rows, every column, in a canonical order.
async fn read_table_checksums(url: &str) -> Vec<(String, Vec<String>)> {
    let store = Store::open(url).await.unwrap();
    let mut sums = Vec::new();
    for projector in all_projectors() {
        for table in projector.tables() {
            let rows = sqlx::query(&format!("SELECT * FROM {table}")).fetch_all(store.pool()).await.unwrap();
            let mut lines: Vec<String> = rows
                .iter()
                .map(|row| {
                    (0..row.columns().len())
                        .map(|i| {
                            let name = row.columns()[i].name().to_owned();
                            let value = row
                                .try_get::<Option<i64>, _>(i)
                                .map(|v| format!("{v:?}"))
                                .or_else(|_| row.try_get::<Option<i32>, _>(i).map(|v| format!("{v:?}")))
                                .or_else(|_| row.try_get::<Option<String>, _>(i).map(|v| format!("{v:?}")))
                                .or_else(|_| row.try_get::<Option<f64>, _>(i).map(|v| format!("{v:?}")))
                                .or_else(|_| row.try_get::<Option<bool>, _>(i).map(|v| format!("{v:?}")))
                                .unwrap();
                            format!("{name}={value}")
                        })
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect();
            lines.sort();
            sums.push(((*table).to_owned(), lines));
        }
    }
    store.close().await;
    sums
}

backend_tests! {
    async fn the_feed_holds_every_acknowledged_write_exactly_once_in_log_order(db) {
        let app = Arc::new(TestApp::spawn(db).await);
        let stranger = app.org_with_key(&["*"]).await;
        let (status, elsewhere) = parts(app.request(Method::POST, "/api/v1/engagements", &stranger).json(&json!({"name": "Elsewhere"})).send().await.unwrap()).await;
        assert_eq!(status, 201);
        let elsewhere = elsewhere["data"]["id"].as_str().unwrap().to_owned();

        // A reader pages through the feed while four writers write.
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (app, done) = (app.clone(), done.clone());
            tokio::spawn(async move {
                let (mut after, mut seen) = (0, Vec::new());
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let (_, body) = parts(app.get(&format!("/api/v1/events?after={after}&limit=3")).send().await.unwrap()).await;
                    seen.extend(body["data"].as_array().unwrap().iter().cloned());
                    after = body["meta"]["nextAfter"].as_i64().unwrap();
                    if finished && !body["meta"]["hasMore"].as_bool().unwrap() {
                        return seen;
                    }
                }
            })
        };
        let mut writers = Vec::new();
        for writer in 0..4 {
            let app = app.clone();
            writers.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..5 {
                    let (status, created) = parts(app.post("/api/v1/engagements", &json!({"name": format!("w{writer}-{i}")})).send().await.unwrap()).await;
                    assert_eq!(status, 201, "{created}");
                    let id = created["data"]["id"].as_str().unwrap().to_owned();
                    acknowledged.push((id.clone(), 1));
                    let (status, _) = parts(app.patch(&format!("/api/v1/engagements/{id}"), &json!({"description": "changed"})).send().await.unwrap()).await;
                    assert_eq!(status, 200);
                    acknowledged.push((id, 2));
                }
                acknowledged
            }));
        }
        let mut expected = HashSet::new();
        for writer in writers {
            expected.extend(writer.await.unwrap());
        }
        done.store(true, Ordering::SeqCst);
        let during = reader.await.unwrap();
        let after = all_events(&app, "limit=7", &app.key).await;
        for events in [&during, &after] {
            assert_strictly_increasing(events);
            let engagement_events: Vec<(String, i64)> = events
                .iter()
                .filter(|e| e["resourceType"] == "engagement")
                .map(|e| (e["resourceId"].as_str().unwrap().to_owned(), e["sequence"].as_i64().unwrap()))
                .collect();
            assert_eq!(engagement_events.len(), expected.len(), "every acknowledged write exactly once");
            assert_eq!(engagement_events.into_iter().collect::<HashSet<_>>(), expected);
            assert!(!events.iter().any(|e| e["resourceId"] == elsewhere.as_str()), "another organization's event leaked");
        }
        assert_eq!(positions(&during), positions(&after), "paging during the writes saw the same feed");
    }

    async fn event_objects_have_the_documented_shape_and_filters_work(db) {
        let app = TestApp::spawn(db).await;
        let response = app.post("/api/v1/engagements", &json!({"name": "Shape"})).header("x-request-id", "req-shape-1").send().await.unwrap();
        let (_, created) = parts(response).await;
        let created = &created["data"];
        let id = created["id"].as_str().unwrap().to_owned();
        // A later millisecond, so `since` can tell the two events apart.
        tokio::time::sleep(Duration::from_millis(3)).await;
        app.post(&format!("/api/v1/engagements/{id}/archive"), &json!({})).send().await.unwrap();
        let events = all_events(&app, &format!("resourceId={id}"), &app.key).await;
        assert_eq!(types(&events), ["engagement.created", "engagement.archived"]);
        let first = &events[0];
        let keys: Vec<&str> = first.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["id", "position", "type", "resourceType", "resourceId", "engagementId", "sequence", "occurredAt", "actor", "requestId", "data"]);
        assert!(first["id"].as_str().unwrap().starts_with("evt_") && first["id"].as_str().unwrap().len() == 24);
        assert_eq!((first["resourceType"].clone(), first["engagementId"].clone(), first["sequence"].clone()), (json!("engagement"), json!(id), json!(1)));
        assert_eq!(first["occurredAt"], created["createdAt"]);
        assert_eq!(first["actor"]["type"], "api_key");
        assert!(first["actor"]["id"].as_str().unwrap().starts_with("key_"));
        assert_eq!(first["actor"]["name"], "Bootstrap admin");
        assert_eq!(first["requestId"], "req-shape-1");
        assert_eq!((first["data"]["name"].clone(), first["data"]["status"].clone()), (json!("Shape"), json!("active")));
        assert_eq!(events[1]["data"], json!({"from": "active", "to": "archived"}));
        let everything = all_events(&app, "", &app.key).await;
        let text = serde_json::to_string(&everything).unwrap();
        for internal in ["reserveScope", "reserveKey", "idempotencyKey", "secretHash"] {
            assert!(!text.contains(internal), "{internal} leaked into event objects");
        }
        let key_created = everything.iter().find(|e| e["type"] == "api_key.created").unwrap();
        assert_eq!(key_created["actor"], json!({"type": "system", "id": null, "name": "system"}));
        assert!(key_created["data"]["permissions"].is_array());

        // Filters.
        let actor = first["actor"]["id"].as_str().unwrap().to_owned();
        let occurred = events[1]["occurredAt"].as_str().unwrap().to_owned();
        for (query, expected) in [
            ("type=engagement.archived".to_owned(), vec!["engagement.archived"]),
            ("type=engagement.*".to_owned(), vec!["engagement.created", "engagement.archived"]),
            ("type=organization.created,api_key.*".to_owned(), vec!["organization.created", "api_key.created"]),
            ("resourceType=api_key".to_owned(), vec!["api_key.created"]),
            (format!("engagementId={id}"), vec!["engagement.created", "engagement.archived"]),
            (format!("actorId={actor}"), vec!["engagement.created", "engagement.archived"]),
            ("actorId=key_00000000000000000000".to_owned(), vec![]),
            (format!("since={occurred}&type=engagement.*"), vec!["engagement.archived"]),
            // `since` is inclusive, `until` exclusive: back-to-back windows never share an event.
            (format!("since={occurred}&until={occurred}"), vec![]),
            ("until=2001-01-01T00:00:00Z".to_owned(), vec![]),
        ] {
            assert_eq!(types(&all_events(&app, &query, &app.key).await), expected, "{query}");
        }
        assert_eq!(all_events(&app, "type=*", &app.key).await, everything, "* selects every type");

        // A sparse filter still says how far it looked: a client never rescans.
        for i in 0..5 {
            app.create_engagement(json!({"name": format!("Filler {i}")})).await;
        }
        let head = *positions(&all_events(&app, "", &app.key).await).last().unwrap();
        let archived_at = events[1]["position"].as_i64().unwrap();
        let (_, page) = parts(app.get("/api/v1/events?type=engagement.archived&limit=1").send().await.unwrap()).await;
        assert_eq!((page["meta"]["nextAfter"].clone(), page["meta"]["hasMore"].clone()), (json!(archived_at), json!(true)));
        let (_, page) = parts(app.get(&format!("/api/v1/events?type=engagement.archived&after={archived_at}")).send().await.unwrap()).await;
        assert_eq!(page["data"], json!([]));
        assert_eq!((page["meta"]["nextAfter"].clone(), page["meta"]["hasMore"].clone()), (json!(head), json!(false)));

        for query in ["limit=0", "limit=1001", "after=-1", "type=Engagement.Created", "type=engagement.", "type=bogus", "type=finding.bogus", "type=bogus.*", "type=engagement.created,typo.created", "resourceType=nope", "since=yesterday", "page=2"] {
            let (status, body) = parts(app.get(&format!("/api/v1/events?{query}")).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &body)), (400, "BAD_REQUEST".to_owned()), "{query}");
        }
        let (status, _) = parts(app.request(Method::GET, "/api/v1/events", &app.key_with(&["engagements:read"]).await).send().await.unwrap()).await;
        assert_eq!(status, 403);
    }

    async fn ndjson_streams_the_whole_selection(db) {
        let app = TestApp::spawn(db).await;
        for i in 0..12 {
            app.create_engagement(json!({"name": format!("N{i}")})).await;
        }
        let paged = all_events(&app, "limit=5", &app.key).await;
        let (content_type, streamed) = ndjson(&app, "").await;
        assert_eq!(content_type, "application/x-ndjson");
        assert_eq!(streamed, paged);
        let third = paged[2]["position"].as_i64().unwrap();
        let (_, filtered) = ndjson(&app, &format!("type=engagement.created&after={third}")).await;
        assert_eq!(filtered, all_events(&app, "type=engagement.created", &app.key).await
            .into_iter().filter(|e| e["position"].as_i64().unwrap() > third).collect::<Vec<_>>());
        assert!(filtered.iter().all(|e| e["type"] == "engagement.created") && !filtered.is_empty());
        let (_, capped) = ndjson(&app, "limit=3").await;
        assert_eq!(capped, paged[..3].to_vec());
    }

    async fn tampering_is_caught_by_the_api_and_the_cli(db) {
        let app = TestApp::spawn(db).await;
        let created = app.create_engagement(json!({"name": "Evidence"})).await;
        app.patch(&format!("/api/v1/engagements/{}", created["id"].as_str().unwrap()), &json!({"description": "x"})).send().await.unwrap();
        let stranger = app.org_with_key(&["*"]).await;
        let total = all_events(&app, "", &app.key).await.len();
        let (status, report) = parts(app.get("/api/v1/events/verify").send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(report["data"], json!({"valid": true, "checked": total, "firstBrokenPosition": null}));
        let (ok, stdout, _) = run_cli(&app.db.url, &["events", "verify"]).await;
        assert!(ok && stdout.starts_with("valid"), "{stdout}");

        let victim = all_events(&app, &format!("resourceId={}", created["id"].as_str().unwrap()), &app.key).await[0]["position"].as_i64().unwrap();
        tamper(&app.db.url, app.db.is_postgres(), victim).await;
        let (_, report) = parts(app.get("/api/v1/events/verify").send().await.unwrap()).await;
        assert_eq!((report["data"]["valid"].clone(), report["data"]["firstBrokenPosition"].clone()), (json!(false), json!(victim)));
        let (ok, _, stderr) = run_cli(&app.db.url, &["events", "verify"]).await;
        assert!(!ok, "the CLI exits non-zero on a broken chain");
        assert!(stderr.contains(&format!("position {victim}")), "{stderr}");
        // Another organization's chain is intact.
        let (_, theirs) = parts(app.request(Method::GET, "/api/v1/events/verify", &stranger).send().await.unwrap()).await;
        assert_eq!(theirs["data"]["valid"], true);
    }

    async fn histories_list_a_resources_events_and_time_travel_rebuilds_every_version(db) {
        let app = TestApp::spawn(db).await;
        let created = app.create_engagement(json!({"name": "Travel", "tags": ["a"]})).await;
        let id = created["id"].as_str().unwrap().to_owned();
        let path = format!("/api/v1/engagements/{id}");
        let mut versions = vec![created];
        let steps: Vec<(&str, Value)> = vec![
            ("PATCH", json!({"description": "first", "tags": ["a", "b"]})),
            ("PATCH", json!({"name": "Travel renamed", "clientName": "Acme"})),
            ("POST", json!("/archive")),
            ("POST", json!("/unarchive")),
            ("PATCH", json!({"description": null})),
        ];
        for (method, body) in steps {
            // Distinct milliseconds, so every version has its own asOf instant.
            tokio::time::sleep(Duration::from_millis(3)).await;
            let request = match method {
                "PATCH" => app.patch(&path, &body),
                _ => app.post(&format!("{path}{}", body.as_str().unwrap()), &json!({})),
            };
            let (status, live) = parts(request.send().await.unwrap()).await;
            assert_eq!(status, 200, "{live}");
            versions.push(live["data"].clone());
        }
        for (i, live) in versions.iter().enumerate() {
            let version = i + 1;
            let response = app.get(&format!("{path}?version={version}")).send().await.unwrap();
            assert_eq!(response.headers()["etag"], format!("\"{version}\"").as_str());
            let (status, past) = parts(response).await;
            assert_eq!((status, &past["data"]), (200, live), "version {version}");
            let at = live["updatedAt"].as_str().unwrap();
            let (status, past) = parts(app.get(&format!("{path}?asOf={}", at.replace('+', "%2B"))).send().await.unwrap()).await;
            assert_eq!((status, &past["data"]), (200, live), "asOf {at}");
        }
        let (_, current) = parts(app.get(&path).send().await.unwrap()).await;
        assert_eq!(&current["data"], versions.last().unwrap());
        for query in ["version=7", "asOf=2001-01-01T00:00:00Z"] {
            assert_eq!(parts(app.get(&format!("{path}?{query}")).send().await.unwrap()).await.0, 404, "{query}");
        }
        for query in ["version=0", "version=x", "asOf=yesterday", "version=1&asOf=2001-01-01T00:00:00Z"] {
            assert_eq!(parts(app.get(&format!("{path}?{query}")).send().await.unwrap()).await.0, 400, "{query}");
        }

        // Deleted: the past stays readable with audit:read, and only with it.
        assert_eq!(app.delete(&path).send().await.unwrap().status(), 204);
        assert_eq!(parts(app.get(&path).send().await.unwrap()).await.0, 404);
        let (status, past) = parts(app.get(&format!("{path}?version=3")).send().await.unwrap()).await;
        assert_eq!((status, &past["data"]), (200, &versions[2]));
        assert_eq!(parts(app.get(&format!("{path}?version=7")).send().await.unwrap()).await.0, 404, "the deleted version");
        let reader = app.key_with(&["engagements:read"]).await;
        assert_eq!(parts(app.request(Method::GET, &format!("{path}?version=3"), &reader).send().await.unwrap()).await.0, 404);
        let stranger = app.org_with_key(&["*"]).await;
        assert_eq!(parts(app.request(Method::GET, &format!("{path}?version=1"), &stranger).send().await.unwrap()).await.0, 404);

        // Its history, deletion included.
        let (status, history) = parts(app.get(&format!("{path}/history")).send().await.unwrap()).await;
        assert_eq!(status, 200);
        let history = history["data"].as_array().unwrap().clone();
        assert_eq!(types(&history), ["engagement.created", "engagement.updated", "engagement.updated", "engagement.archived", "engagement.unarchived", "engagement.updated", "engagement.deleted"]);
        assert_strictly_increasing(&history);
        assert_eq!(history[1]["data"], json!({"description": "first", "tags": ["a", "b"]}));
        let (_, limited) = parts(app.get(&format!("{path}/history?limit=2")).send().await.unwrap()).await;
        assert_eq!(limited["data"].as_array().unwrap().len(), 2);
        assert_eq!(limited["meta"]["hasMore"], true);
        for (with, status) in [(&stranger, 404), (&reader, 403)] {
            assert_eq!(parts(app.request(Method::GET, &format!("{path}/history"), with).send().await.unwrap()).await.0, status);
        }
        assert_eq!(parts(app.get("/api/v1/engagements/eng_00000000000000000000/history").send().await.unwrap()).await.0, 404);

        // API keys and the organization.
        let (_, key) = parts(app.post("/api/v1/api-keys", &json!({"name": "short", "permissions": ["engagements:read"]})).send().await.unwrap()).await;
        let key_id = key["data"]["id"].as_str().unwrap().to_owned();
        app.delete(&format!("/api/v1/api-keys/{key_id}")).send().await.unwrap();
        let (_, history) = parts(app.get(&format!("/api/v1/api-keys/{key_id}/history")).send().await.unwrap()).await;
        assert_eq!(types(history["data"].as_array().unwrap()), ["api_key.created", "api_key.revoked"]);
        let (_, first) = parts(app.get(&format!("/api/v1/api-keys/{key_id}?version=1")).send().await.unwrap()).await;
        let mut expected = key["data"].clone();
        expected.as_object_mut().unwrap().remove("key");
        assert_eq!(first["data"], expected);
        let (_, revoked) = parts(app.get(&format!("/api/v1/api-keys/{key_id}?version=2")).send().await.unwrap()).await;
        assert!(revoked["data"]["revokedAt"].is_string());

        let (_, org_before) = parts(app.get("/api/v1/organizations/current").send().await.unwrap()).await;
        app.patch("/api/v1/organizations/current", &json!({"name": "Renamed org"})).send().await.unwrap();
        let (_, history) = parts(app.get("/api/v1/organizations/current/history").send().await.unwrap()).await;
        assert_eq!(types(history["data"].as_array().unwrap()), ["organization.created", "organization.updated"]);
        let (_, org_past) = parts(app.get("/api/v1/organizations/current?version=1").send().await.unwrap()).await;
        assert_eq!(org_past["data"]["name"], "Default");
        assert_eq!(org_past["data"]["createdAt"], org_before["data"]["createdAt"]);
        let (_, org_now) = parts(app.get("/api/v1/organizations/current?version=2").send().await.unwrap()).await;
        let (_, live) = parts(app.get("/api/v1/organizations/current").send().await.unwrap()).await;
        assert_eq!(org_now["data"], live["data"]);
    }

    async fn export_writes_the_organizations_events_as_ndjson(db) {
        let app = TestApp::spawn(db).await;
        for i in 0..3 {
            app.create_engagement(json!({"name": format!("E{i}")})).await;
        }
        app.org_with_key(&["*"]).await;
        let expected = all_events(&app, "", &app.key).await;
        let (_, org) = parts(app.get("/api/v1/organizations/current").send().await.unwrap()).await;
        let (ok, stdout, stderr) = run_cli(&app.db.url, &["events", "export", "--org", org["data"]["id"].as_str().unwrap()]).await;
        assert!(ok, "{stderr}");
        let exported: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(exported, expected);
        let (ok, _, stderr) = run_cli(&app.db.url, &["events", "export", "--org", "org_00000000000000000000"]).await;
        assert!(!ok && stderr.contains("no organization"), "{stderr}");
    }

    async fn a_rebuild_while_serving_reproduces_every_read_table(db) {
        let app = TestApp::spawn(db).await;
        for i in 0..8 {
            let created = app.create_engagement(json!({"name": format!("R{i}"), "tags": ["t", format!("n{i}")]})).await;
            let path = format!("/api/v1/engagements/{}", created["id"].as_str().unwrap());
            match i % 3 {
                0 => { app.patch(&path, &json!({"clientName": "C", "tags": ["x"]})).send().await.unwrap(); }
                1 => { app.post(&format!("{path}/archive"), &json!({})).send().await.unwrap(); }
                _ => { app.delete(&path).send().await.unwrap(); }
            }
        }
        app.post("/api/v1/api-keys", &json!({"name": "k", "permissions": ["audit:read"]})).send().await.unwrap();
        app.patch("/api/v1/organizations/current", &json!({"name": "Rebuilt org"})).send().await.unwrap();
        let before = read_table_checksums(&app.db.url).await;
        assert!(before.iter().any(|(table, rows)| table == "engagements" && rows.len() == 6), "{before:?}");

        let (ok, _, stderr) = run_cli(&app.db.url, &["projections", "rebuild"]).await;
        assert!(ok, "{stderr}");
        for projector in all_projectors() {
            assert!(stderr.contains(&format!("rebuilt {}", projector.name())), "{stderr}");
        }
        assert_eq!(read_table_checksums(&app.db.url).await, before);
        let (ok, _, _) = run_cli(&app.db.url, &["projections", "rebuild", "--projection", "engagements"]).await;
        assert!(ok);
        assert_eq!(read_table_checksums(&app.db.url).await, before);
        let (ok, _, stderr) = run_cli(&app.db.url, &["projections", "rebuild", "--projection", "nope"]).await;
        assert!(!ok && stderr.contains("--projection must be one of"), "{stderr}");

        // The server keeps projecting after the swap: nothing lost, nothing applied twice.
        let after = app.create_engagement(json!({"name": "After rebuild"})).await;
        let (_, listed) = parts(app.get("/api/v1/engagements?perPage=100").send().await.unwrap()).await;
        assert_eq!(listed["meta"]["total"], 7);
        assert_eq!(listed["data"][0]["id"], after["id"]);
    }
}

/// The resident set size of this process (client and in-process server), in KiB.
fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// NDJSON streams a million events in constant memory: the process's resident set grows by far
/// less than the ~400 MB the selection takes as text. Slow (a minute or more), so it is not part
/// of the default suite: `cargo test -p pwnbook-api --test http -- --ignored ndjson_memory`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: streams a million events"]
async fn ndjson_memory_stays_flat_over_a_million_events() {
    const EVENTS: i64 = 1_000_000;
    let app = TestApp::spawn(pwnbook_events::testing::TestDb::sqlite()).await;
    let store = Store::open(&app.db.url).await.unwrap();
    let (org, head): (String, i64) =
        sqlx::query_as("SELECT organization_id, MAX(position) FROM event_log GROUP BY organization_id")
            .fetch_one(store.pool())
            .await
            .unwrap();
    // Bulk rows of a type no projector reads, appended after the head (nothing else writes now),
    // and read back as the events after the head.
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         INSERT INTO event_log (position, event_id, organization_id, engagement_id, aggregate_type, \
         aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at, prev_hash, hash) \
         SELECT $2 + i, 'evt_bulk' || i, $3, NULL, 'bulk', 'blk_' || i, 1, 'bulk.created', '1', \
         '{\"bulk.created\":{\"note\":\"' || hex(randomblob(100)) || '\"}}', \
         '{\"actorType\":\"system\",\"actorName\":\"system\"}', 0, '', '' FROM n",
    )
    .bind(EVENTS)
    .bind(head)
    .bind(&org)
    .execute(store.pool())
    .await
    .unwrap();
    store.close().await;

    let baseline = resident_kib();
    let mut response = app
        .get(&format!("/api/v1/events?after={head}"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    let (mut lines, mut bytes, mut peak) = (0_i64, 0_u64, baseline);
    while let Some(chunk) = response.chunk().await.unwrap() {
        lines += chunk.iter().filter(|b| **b == b'\n').count() as i64;
        bytes += chunk.len() as u64;
        peak = peak.max(resident_kib());
    }
    assert_eq!(lines, EVENTS);
    assert!(bytes > 300 * 1024 * 1024, "the selection is large: {bytes} bytes");
    let growth_mib = (peak - baseline) / 1024;
    eprintln!("streamed {bytes} bytes; resident set grew by {growth_mib} MiB");
    assert!(growth_mib < 64, "memory grew by {growth_mib} MiB while streaming");
}
