//! The engagements surface of SPEC §3: lifecycle, versions, idempotency, uniqueness under
//! concurrency, pagination, sorting, filtering and read-your-writes.

use std::collections::HashSet;
use std::sync::Arc;

use pwnbook_events::backend_tests;
use serde_json::{json, Value};

use crate::harness::{error_code, parts, TestApp};

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

async fn ids(app: &TestApp, query: &str) -> Vec<String> {
    let (status, body) = parts(app.get(&format!("/api/v1/engagements?{query}")).send().await.unwrap()).await;
    assert_eq!(status, 200, "{query}: {body}");
    body["data"].as_array().unwrap().iter().map(id_of).collect()
}

backend_tests! {
    async fn lifecycle_create_update_archive_unarchive_delete(db) {
        let app = TestApp::spawn(db).await;
        let created = app.create_engagement(json!({
            "name": "  Acme external  ", "description": "Scope", "clientName": "Acme",
            "startDate": "2025-01-01", "endDate": "2025-01-31", "tags": ["web", "web", "external"]
        })).await;
        assert_eq!(created["name"], "Acme external");
        assert_eq!(created["tags"], json!(["web", "external"]));
        let path = format!("/api/v1/engagements/{}", id_of(&created));

        let response = app.patch(&path, &json!({"description": null, "clientName": "Acme Corp"})).send().await.unwrap();
        assert_eq!(response.headers()["etag"], "\"2\"");
        let (status, updated) = parts(response).await;
        assert_eq!(status, 200);
        let updated = &updated["data"];
        assert_eq!((updated["description"].clone(), updated["clientName"].clone()), (Value::Null, json!("Acme Corp")));
        assert_eq!(updated["version"], 2);
        assert!(updated["updatedAt"].as_str() >= created["updatedAt"].as_str());
        assert_eq!(updated["createdAt"], created["createdAt"]);

        // A patch that changes nothing keeps the version.
        let (_, same) = parts(app.patch(&path, &json!({"clientName": "Acme Corp"})).send().await.unwrap()).await;
        assert_eq!(same["data"]["version"], 2);

        let (status, archived) = parts(app.post(&format!("{path}/archive"), &json!({})).send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(archived["data"]["status"], "archived");
        assert!(archived["data"]["archivedAt"].is_string());
        for (method, suffix) in [("PATCH", ""), ("POST", "/archive"), ("DELETE", "")] {
            let request = match method {
                "PATCH" => app.patch(&path, &json!({"name": "Nope"})),
                "POST" => app.post(&format!("{path}{suffix}"), &json!({})),
                _ => app.delete(&path),
            };
            let (status, body) = parts(request.send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &body)), (409, "CONFLICT".to_owned()), "{method} {suffix}");
        }
        let (status, active) = parts(app.post(&format!("{path}/unarchive"), &json!({})).send().await.unwrap()).await;
        assert_eq!((status, active["data"]["status"].clone(), active["data"]["archivedAt"].clone()), (200, json!("active"), Value::Null));
        let (status, _) = parts(app.post(&format!("{path}/unarchive"), &json!({})).send().await.unwrap()).await;
        assert_eq!(status, 409);

        let response = app.delete(&path).send().await.unwrap();
        assert_eq!(response.status(), 204);
        assert_eq!(parts(app.get(&path).send().await.unwrap()).await.0, 404);
        assert_eq!(parts(app.patch(&path, &json!({"name": "x"})).send().await.unwrap()).await.0, 404);
        assert_eq!(parts(app.delete(&path).send().await.unwrap()).await.0, 404);
        assert!(ids(&app, "").await.is_empty());
        // The name is free again.
        app.create_engagement(json!({"name": "ACME EXTERNAL"})).await;
    }

    async fn if_match_is_checked_atomically_with_the_write(db) {
        let app = TestApp::spawn(db).await;
        let created = app.create_engagement(json!({"name": "Versioned"})).await;
        let path = format!("/api/v1/engagements/{}", id_of(&created));
        let (status, _) = parts(app.patch(&path, &json!({"description": "a"})).header("if-match", "\"1\"").send().await.unwrap()).await;
        assert_eq!(status, 200);
        let (status, body) = parts(app.patch(&path, &json!({"description": "b"})).header("if-match", "\"1\"").send().await.unwrap()).await;
        assert_eq!((status, error_code(status, &body)), (412, "PRECONDITION_FAILED".to_owned()));
        let (status, _) = parts(app.patch(&path, &json!({"description": "b"})).header("if-match", "2").send().await.unwrap()).await;
        assert_eq!(status, 400);
        // Strong comparison: the current version as a weak tag does not match, and writes nothing.
        let (status, body) = parts(app.patch(&path, &json!({"description": "b"})).header("if-match", "W/\"2\"").send().await.unwrap()).await;
        assert_eq!((status, error_code(status, &body)), (412, "PRECONDITION_FAILED".to_owned()));
        // Twelve writers holding version 2 race: exactly one wins.
        let app = Arc::new(app);
        let mut racers = Vec::new();
        for i in 0..12 {
            let app = app.clone();
            let path = path.clone();
            racers.push(tokio::spawn(async move {
                parts(app.patch(&path, &json!({"description": format!("racer {i}")})).header("if-match", "\"2\"").send().await.unwrap()).await.0
            }));
        }
        let mut statuses = Vec::new();
        for racer in racers {
            statuses.push(racer.await.unwrap());
        }
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 412, 412, 412, 412, 412, 412, 412, 412, 412, 412, 412]);
        let response = app.get(&path).header("if-none-match", "\"3\"").send().await.unwrap();
        assert_eq!(response.status(), 304);
        assert_eq!(app.get(&path).header("if-none-match", "\"2\"").send().await.unwrap().status(), 200);
    }

    async fn idempotency_keys_replay_the_first_response(db) {
        let app = TestApp::spawn(db).await;
        let body = json!({"name": "Once"});
        let first = app.post("/api/v1/engagements", &body).header("idempotency-key", "abc-1").send().await.unwrap();
        let (status, first) = parts(first).await;
        assert_eq!(status, 201);
        let again = app.post("/api/v1/engagements", &body).header("idempotency-key", "abc-1").send().await.unwrap();
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        let (status, again) = parts(again).await;
        assert_eq!((status, again), (201, first.clone()));
        assert_eq!(ids(&app, "").await, [id_of(&first["data"])]);
        let (status, other) = parts(app.post("/api/v1/engagements", &json!({"name": "Twice"})).header("idempotency-key", "abc-1").send().await.unwrap()).await;
        assert_eq!((status, error_code(status, &other)), (409, "CONFLICT".to_owned()));
        // The same JSON serialized differently (order of keys, whitespace) is the same request.
        let sent = |text: &'static str| {
            app.request(reqwest::Method::POST, "/api/v1/engagements", &app.key)
                .header("content-type", "application/json")
                .header("idempotency-key", "abc-3")
                .body(text)
                .send()
        };
        let (status, spaced) = parts(sent("{\"name\": \"Spaced\", \"tags\": [\"a\"]}").await.unwrap()).await;
        assert_eq!(status, 201, "{spaced}");
        let reordered = sent("{\n  \"tags\":[\"a\"],\"name\":\"Spaced\"\n}").await.unwrap();
        assert_eq!(reordered.headers()["idempotent-replayed"], "true");
        assert_eq!(parts(reordered).await, (201, spaced));
        // Errors are replayed too, without running the command again.
        let (status, _) = parts(app.post("/api/v1/engagements", &body).header("idempotency-key", "abc-2").send().await.unwrap()).await;
        assert_eq!(status, 409, "the name is taken");
        // Concurrent repeats of a new key create exactly one engagement.
        let app = Arc::new(app);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                parts(app.post("/api/v1/engagements", &json!({"name": "Burst"})).header("idempotency-key", "burst").send().await.unwrap()).await.0
            }));
        }
        for task in tasks {
            assert!([201, 409].contains(&task.await.unwrap()));
        }
        assert_eq!(ids(&app, "q=burst").await.len(), 1);
    }

    async fn names_are_unique_per_organization_even_under_concurrency(db) {
        let app = Arc::new(TestApp::spawn(db).await);
        let mut tasks = Vec::new();
        for i in 0..24 {
            let app = app.clone();
            let name = if i % 2 == 0 { "Red Team 2025" } else { " red team 2025 " };
            tasks.push(tokio::spawn(async move {
                parts(app.post("/api/v1/engagements", &json!({"name": name})).send().await.unwrap()).await
            }));
        }
        let mut created = 0;
        let mut conflicts = 0;
        for task in tasks {
            let (status, body) = task.await.unwrap();
            match status {
                201 => created += 1,
                409 => {
                    assert_eq!(error_code(status, &body), "CONFLICT");
                    conflicts += 1;
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!((created, conflicts), (1, 23));
        assert_eq!(ids(&app, "").await.len(), 1);
        let other = app.create_engagement(json!({"name": "Blue"})).await;
        let path = format!("/api/v1/engagements/{}", id_of(&other));
        let (status, _) = parts(app.patch(&path, &json!({"name": "RED TEAM 2025"})).send().await.unwrap()).await;
        assert_eq!(status, 409);
        let (status, renamed) = parts(app.patch(&path, &json!({"name": "BLUE"})).send().await.unwrap()).await;
        assert_eq!((status, renamed["data"]["name"].clone()), (200, json!("BLUE")), "its own name in another case");
        let (status, _) = parts(app.post("/api/v1/engagements", &json!({"name": "blue"})).send().await.unwrap()).await;
        assert_eq!(status, 409);
        let (status, _) = parts(app.patch(&path, &json!({"name": "Green"})).send().await.unwrap()).await;
        assert_eq!(status, 200);
        // The old name is released by the rename.
        app.create_engagement(json!({"name": "blue"})).await;
    }

    async fn page_and_cursor_pagination(db) {
        let app = TestApp::spawn(db).await;
        let mut created = Vec::new();
        for i in 0..25 {
            created.push(id_of(&app.create_engagement(json!({"name": format!("Engagement {i:02}")})).await));
        }
        let newest_first: Vec<String> = created.iter().rev().cloned().collect();
        let (_, page1) = parts(app.get("/api/v1/engagements?perPage=10").send().await.unwrap()).await;
        assert_eq!(page1["meta"]["total"], 25);
        assert_eq!(page1["meta"]["totalPages"], 3);
        assert_eq!(page1["meta"]["page"], 1);
        assert_eq!(page1["meta"]["perPage"], 10);
        let page3 = ids(&app, "perPage=10&page=3").await;
        assert_eq!(page3, newest_first[20..]);
        let (_, past) = parts(app.get("/api/v1/engagements?perPage=10&page=9").send().await.unwrap()).await;
        assert_eq!(past["data"], json!([]));
        assert_eq!((past["meta"]["total"].clone(), past["meta"]["page"].clone(), past["meta"]["nextCursor"].clone()), (json!(25), json!(9), Value::Null));
        let (_, default) = parts(app.get("/api/v1/engagements").send().await.unwrap()).await;
        assert_eq!(default["data"].as_array().unwrap().len(), 20);

        // Walk with cursors while new engagements arrive: nothing skipped, nothing repeated.
        let mut seen = Vec::new();
        let mut cursor = page1["meta"]["nextCursor"].as_str().unwrap().to_owned();
        seen.extend(page1["data"].as_array().unwrap().iter().map(id_of));
        let mut inserted = 0;
        loop {
            app.create_engagement(json!({"name": format!("Late {inserted}")})).await;
            inserted += 1;
            let (status, page) = parts(app.get(&format!("/api/v1/engagements?cursor={cursor}&perPage=7")).send().await.unwrap()).await;
            assert_eq!(status, 200, "{page}");
            assert_eq!(page["meta"].as_object().unwrap().len(), 2, "cursor meta is perPage and nextCursor: {page}");
            seen.extend(page["data"].as_array().unwrap().iter().map(id_of));
            match page["meta"]["nextCursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => break,
            }
        }
        assert_eq!(seen, newest_first);
        let (status, _) = parts(app.get(&format!("/api/v1/engagements?cursor={cursor}&sort=name")).send().await.unwrap()).await;
        assert_eq!(status, 400, "a cursor cannot change the sort");
    }

    async fn sorting_is_total_and_case_insensitive_by_name(db) {
        let app = TestApp::spawn(db).await;
        let b = id_of(&app.create_engagement(json!({"name": "bravo", "startDate": "2025-03-01"})).await);
        let a = id_of(&app.create_engagement(json!({"name": "Alpha", "startDate": "2025-05-01"})).await);
        let c = id_of(&app.create_engagement(json!({"name": "Charlie"})).await);
        assert_eq!(ids(&app, "sort=name&order=asc").await, [a.clone(), b.clone(), c.clone()]);
        assert_eq!(ids(&app, "sort=name&order=desc").await, [c.clone(), b.clone(), a.clone()]);
        assert_eq!(ids(&app, "sort=startDate&order=asc").await, [c.clone(), b.clone(), a.clone()]);
        assert_eq!(ids(&app, "sort=createdAt&order=asc").await, [b.clone(), a.clone(), c.clone()]);
        app.patch(&format!("/api/v1/engagements/{b}"), &json!({"description": "touched"})).send().await.unwrap();
        assert_eq!(ids(&app, "sort=updatedAt&order=desc").await[0], b);
        // Cursor walks honour the sort too, one row per page.
        let mut walked = Vec::new();
        let mut query = "sort=name&order=asc&perPage=1".to_owned();
        loop {
            let (_, page) = parts(app.get(&format!("/api/v1/engagements?{query}")).send().await.unwrap()).await;
            walked.extend(page["data"].as_array().unwrap().iter().map(id_of));
            match page["meta"]["nextCursor"].as_str() {
                Some(next) => query = format!("cursor={next}"),
                None => break,
            }
        }
        assert_eq!(walked, [a, b, c]);
    }

    async fn filters_narrow_the_list(db) {
        let app = TestApp::spawn(db).await;
        let web = id_of(&app.create_engagement(json!({"name": "Web app 100%", "tags": ["web"], "clientName": "Acme"})).await);
        let net = id_of(&app.create_engagement(json!({"name": "Internal network", "tags": ["internal", "ad"], "clientName": "Globex"})).await);
        let cloud = id_of(&app.create_engagement(json!({"name": "Cloud review", "tags": ["cloud"], "clientName": "Acme"})).await);
        app.post(&format!("/api/v1/engagements/{net}/archive"), &json!({})).send().await.unwrap();
        let set = |v: Vec<String>| v.into_iter().collect::<HashSet<_>>();
        assert_eq!(ids(&app, "status=archived").await, [net.as_str()]);
        assert_eq!(set(ids(&app, "status=active,archived").await).len(), 3);
        assert_eq!(ids(&app, "q=NETWORK").await, [net.as_str()]);
        assert_eq!(ids(&app, "q=100%25").await, [web.as_str()]);
        assert!(ids(&app, "q=%25%25").await.is_empty(), "% is literal");
        assert_eq!(set(ids(&app, "tag=web,cloud").await), set(vec![web.clone(), cloud.clone()]));
        assert_eq!(set(ids(&app, "clientName=Acme").await), set(vec![web.clone(), cloud.clone()]));
        assert_eq!(ids(&app, "clientName=Acme&tag=cloud").await, [cloud.as_str()]);
        // A value with a comma is asked for with `\,` (a backslash itself is `\\`).
        let firm = id_of(&app.create_engagement(json!({"name": "Firm", "tags": ["a,b", "a"], "clientName": "Smith, Jones & Co"})).await);
        let plain = id_of(&app.create_engagement(json!({"name": "Plain", "tags": ["b"]})).await);
        assert_eq!(ids(&app, "clientName=Smith%5C%2C%20Jones%20%26%20Co").await, [firm.as_str()]);
        assert_eq!(ids(&app, "clientName=Smith%2C%20Jones%20%26%20Co").await, Vec::<String>::new(), "two names, neither a client");
        assert_eq!(ids(&app, "tag=a%5C,b").await, [firm.as_str()]);
        assert_eq!(set(ids(&app, "tag=a,b").await), set(vec![firm.clone(), plain.clone()]));
        for id in [firm, plain] {
            app.delete(&format!("/api/v1/engagements/{id}")).send().await.unwrap();
        }
        let (_, all) = parts(app.get("/api/v1/engagements?sort=createdAt&order=asc").send().await.unwrap()).await;
        let second_created = all["data"][1]["createdAt"].as_str().unwrap().to_owned();
        let after = ids(&app, &format!("createdAfter={}&sort=createdAt&order=asc", second_created.replace('+', "%2B"))).await;
        assert_eq!(after, [net.clone(), cloud.clone()]);
        let before = ids(&app, &format!("createdBefore={second_created}")).await;
        assert_eq!(before, [web.as_str()]);
        let (_, counted) = parts(app.get("/api/v1/engagements?clientName=Acme&perPage=1").send().await.unwrap()).await;
        assert_eq!(counted["meta"]["total"], 2);
        assert_eq!(counted["meta"]["totalPages"], 2);
    }

    async fn reads_see_the_clients_own_writes_immediately(db) {
        let app = TestApp::spawn(db).await;
        for i in 0..15 {
            let created = app.create_engagement(json!({"name": format!("Fresh {i}"), "tags": [format!("t{i}")]})).await;
            let id = id_of(&created);
            assert_eq!(ids(&app, &format!("tag=t{i}")).await, [id.as_str()]);
            let path = format!("/api/v1/engagements/{id}");
            app.patch(&path, &json!({"name": format!("Renamed {i}")})).send().await.unwrap();
            let (_, fresh) = parts(app.get(&path).send().await.unwrap()).await;
            assert_eq!(fresh["data"]["name"], format!("Renamed {i}"));
            assert_eq!(ids(&app, &format!("q=renamed {i}")).await.len(), 1);
        }
    }
}
