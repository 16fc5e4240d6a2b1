//! SPEC §2: the organization, API key management, least privilege, revocation and expiry,
//! secrets kept out of logs, and the walk of every route's declared permission.

use std::collections::HashMap;
use std::time::Duration;

use pwnbook_api::routes::ROUTES;
use pwnbook_api::secrets::Secret;
use pwnbook_commands::Permission;
use pwnbook_events::backend_tests;
use reqwest::Method;
use serde_json::{json, Value};

use crate::findings::create_finding;
use crate::harness::{error_code, parts, spawn_binary, TestApp};
use crate::reports::create_report;
use crate::targets::create_target;
use crate::tasks::create_task;
use crate::wiki::create_page;

async fn create_key(app: &TestApp, with: &str, body: Value) -> (u16, Value) {
    parts(app.request(Method::POST, "/api/v1/api-keys", with).json(&body).send().await.unwrap()).await
}

backend_tests! {
    async fn the_current_organization_can_be_read_and_renamed(db) {
        let app = TestApp::spawn(db).await;
        let (status, org) = parts(app.get("/api/v1/organizations/current").send().await.unwrap()).await;
        assert_eq!(status, 200);
        let org = &org["data"];
        assert!(org["id"].as_str().unwrap().starts_with("org_"));
        assert_eq!((org["name"].clone(), org["slug"].clone(), org["engagementCount"].clone()), (json!("Default"), json!("default"), json!(0)));
        assert_eq!(org["createdAt"], org["updatedAt"]);
        let first = app.create_engagement(json!({"name": "One"})).await;
        app.create_engagement(json!({"name": "Two"})).await;
        app.delete(&format!("/api/v1/engagements/{}", first["id"].as_str().unwrap())).send().await.unwrap();
        let (_, counted) = parts(app.get("/api/v1/organizations/current").send().await.unwrap()).await;
        assert_eq!(counted["data"]["engagementCount"], 1);

        let (status, renamed) = parts(app.patch("/api/v1/organizations/current", &json!({"name": "Acme Red Team"})).send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!((renamed["data"]["name"].clone(), renamed["data"]["slug"].clone()), (json!("Acme Red Team"), json!("default")));
        assert!(renamed["data"]["updatedAt"].as_str() > org["updatedAt"].as_str());
        for body in [json!({"slug": "x"}), json!({"name": ""}), json!({"engagementCount": 3})] {
            let (status, json) = parts(app.patch("/api/v1/organizations/current", &body).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &json)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
        }
        let (status, _) = parts(app.patch("/api/v1/organizations/current", &json!({"name": "x"})).header("if-match", "\"1\"").send().await.unwrap()).await;
        assert_eq!(status, 412);
    }

    async fn keys_are_created_once_listed_without_secrets_and_revoked(db) {
        let app = TestApp::spawn(db).await;
        let (status, created) = create_key(&app, &app.key, json!({"name": "CI runner", "permissions": ["engagements:read"], "environment": "test"})).await;
        assert_eq!(status, 201, "{created}");
        let created = &created["data"];
        let secret = created["key"].as_str().unwrap().to_owned();
        let random = secret.strip_prefix("pwbk_test_").unwrap();
        assert!(random.len() >= 32 && random.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!((created["prefix"].clone(), created["lastFour"].clone()), (json!("pwbk_test_"), json!(&secret[secret.len() - 4..])));
        assert_eq!(created["permissions"], json!(["engagements:read"]));
        assert_eq!((created["lastUsedAt"].clone(), created["revokedAt"].clone(), created["expiresAt"].clone()), (Value::Null, Value::Null, Value::Null));
        let id = created["id"].as_str().unwrap().to_owned();
        let (_, live) = create_key(&app, &app.key, json!({"name": "alpha", "permissions": ["*"]})).await;
        assert!(live["data"]["key"].as_str().unwrap().starts_with("pwbk_live_"));

        // Never the secret again.
        let (_, fetched) = parts(app.get(&format!("/api/v1/api-keys/{id}")).send().await.unwrap()).await;
        assert!(fetched["data"].get("key").is_none());
        let (_, listed) = parts(app.get("/api/v1/api-keys?sort=name&order=asc").send().await.unwrap()).await;
        assert!(!listed.to_string().contains(&secret));
        let names: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["alpha", "Bootstrap admin", "CI runner"]);
        let (_, tests) = parts(app.get("/api/v1/api-keys?environment=test").send().await.unwrap()).await;
        assert_eq!(tests["meta"]["total"], 2, "the test harness's bootstrap key is a test key too");

        // First use sets lastUsedAt.
        let used = app.request(Method::GET, "/api/v1/engagements", &secret).send().await.unwrap();
        assert_eq!(used.status(), 200);
        let (_, fetched) = parts(app.get(&format!("/api/v1/api-keys/{id}")).send().await.unwrap()).await;
        assert!(fetched["data"]["lastUsedAt"].is_string(), "{fetched}");
        let (_, by_use) = parts(app.get("/api/v1/api-keys?sort=lastUsedAt&order=desc&perPage=1").send().await.unwrap()).await;
        assert!(by_use["data"][0]["lastUsedAt"].is_string());

        // If-Match is checked as on every other write: a stale version revokes nothing.
        let stale = app.delete(&format!("/api/v1/api-keys/{id}")).header("if-match", "\"9\"").send().await.unwrap();
        let (status, body) = parts(stale).await;
        assert_eq!((status, error_code(status, &body)), (412, "PRECONDITION_FAILED".to_owned()));
        assert_eq!(app.request(Method::GET, "/api/v1/engagements", &secret).send().await.unwrap().status(), 200);
        let current = app.get(&format!("/api/v1/api-keys/{id}")).send().await.unwrap().headers()["etag"].clone();
        let revoked = app.delete(&format!("/api/v1/api-keys/{id}")).header("if-match", current).send().await.unwrap();
        assert_eq!(revoked.status(), 204);
        let refused = app.request(Method::GET, "/api/v1/engagements", &secret).send().await.unwrap();
        assert_eq!(refused.headers()["www-authenticate"], "Bearer");
        let (status, body) = parts(refused).await;
        assert_eq!((status, error_code(status, &body)), (401, "UNAUTHORIZED".to_owned()));
        assert!(!body.to_string().contains(&secret));
        let (status, _) = parts(app.delete(&format!("/api/v1/api-keys/{id}")).send().await.unwrap()).await;
        assert_eq!(status, 409);
        let (_, revoked_list) = parts(app.get("/api/v1/api-keys?revoked=true").send().await.unwrap()).await;
        assert_eq!(revoked_list["data"][0]["id"], id.as_str());
        assert!(revoked_list["data"][0]["revokedAt"].is_string());
        let (status, _) = parts(app.get("/api/v1/api-keys?revoked=maybe").send().await.unwrap()).await;
        assert_eq!(status, 400);
    }

    async fn a_revoked_key_writes_nothing_even_where_the_server_remembers_it(db) {
        // Writes of findings, targets, tasks and wiki pages take a key the server already vouched
        // for from memory and leave the revocation check to the commit; every answer must still
        // be 401 once it is revoked.
        let app = TestApp::spawn(db).await;
        let engagement = app.create_engagement(json!({"name": "Remembered"})).await;
        let findings = format!("/api/v1/engagements/{}/findings", engagement["id"].as_str().unwrap());
        let (_, created) = create_key(&app, &app.key, json!({"name": "writer", "permissions": ["*"]})).await;
        let (secret, key_id) = (created["data"]["key"].as_str().unwrap().to_owned(), created["data"]["id"].as_str().unwrap().to_owned());
        let write = |method: Method, path: String, body: Value| app.request(method, &path, &secret).json(&body).send();
        let mut ids = Vec::new();
        for title in ["first", "second", "third"] {
            let (status, body) = parts(write(Method::POST, findings.clone(), json!({"title": title, "severity": "low"})).await.unwrap()).await;
            assert_eq!(status, 201, "{body}");
            ids.push(body["data"]["id"].as_str().unwrap().to_owned());
        }
        let (status, _) = parts(write(Method::PATCH, format!("/api/v1/findings/{}", ids[0]), json!({"title": "renamed"})).await.unwrap()).await;
        assert_eq!(status, 200);
        let engagement_path = format!("/api/v1/engagements/{}", engagement["id"].as_str().unwrap());
        let (status, task) = parts(write(Method::POST, format!("{engagement_path}/tasks"), json!({"title": "before"})).await.unwrap()).await;
        assert_eq!(status, 201, "{task}");
        let task = task["data"]["id"].as_str().unwrap().to_owned();
        let (status, target) = parts(write(Method::POST, format!("{engagement_path}/targets"), json!({"type": "ip", "value": "10.0.0.1"})).await.unwrap()).await;
        assert_eq!(status, 201, "{target}");
        let target = target["data"]["id"].as_str().unwrap().to_owned();
        let (status, page) = parts(write(Method::POST, format!("{engagement_path}/wiki"), json!({"title": "Before"})).await.unwrap()).await;
        assert_eq!(status, 201, "{page}");
        let page = page["data"]["id"].as_str().unwrap().to_owned();
        let replayed = || app.request(Method::POST, &findings, &secret).header("idempotency-key", "before-revocation").json(&json!({"title": "once", "severity": "low"})).send();
        let (status, _) = parts(replayed().await.unwrap()).await;
        assert_eq!(status, 201);
        let (status, _) = parts(app.delete(&format!("/api/v1/api-keys/{key_id}")).send().await.unwrap()).await;
        assert_eq!(status, 204);

        let refused = vec![
            // Would commit: refused by the commit's guard.
            (Method::POST, findings.clone(), json!({"title": "after", "severity": "low"})),
            (Method::PATCH, format!("/api/v1/findings/{}", ids[1]), json!({"title": "after"})),
            (Method::POST, format!("/api/v1/findings/{}/transition", ids[2]), json!({"status": "open"})),
            // Would not commit: the answer waits for the database to vouch for the key.
            (Method::POST, findings.clone(), json!({"severity": "low"})),
            (Method::PATCH, "/api/v1/findings/fnd_doesnotexist".to_owned(), json!({"title": "x"})),
            (Method::PATCH, format!("/api/v1/findings/{}", ids[0]), json!({"title": "renamed"})),
            (Method::POST, format!("/api/v1/findings/{}/transition", ids[2]), json!({"status": "no-such-status"})),
            // The other child resources' writes.
            (Method::POST, format!("{engagement_path}/targets"), json!({"type": "ip", "value": "10.0.0.9"})),
            (Method::POST, format!("{engagement_path}/tasks"), json!({"title": "after"})),
            (Method::POST, format!("/api/v1/tasks/{task}/close"), json!({})),
            (Method::PATCH, format!("/api/v1/tasks/{task}"), json!({"title": 5})),
            (Method::POST, format!("{engagement_path}/wiki"), json!({"title": "after"})),
            (Method::PATCH, format!("/api/v1/targets/{target}"), json!({"value": "10.0.0.2"})),
            (Method::PATCH, format!("/api/v1/wiki/{page}"), json!({"title": "After"})),
        ];
        for (method, path, body) in refused {
            let (status, answer) = parts(write(method.clone(), path.clone(), body.clone()).await.unwrap()).await;
            assert_eq!((status, error_code(status, &answer)), (401, "UNAUTHORIZED".to_owned()), "{method} {path} {body}: {answer}");
            assert!(answer.to_string().contains("revoked"), "{answer}");
        }
        // A response stored before the revocation is not replayed to the revoked key.
        let (status, answer) = parts(replayed().await.unwrap()).await;
        assert_eq!((status, error_code(status, &answer)), (401, "UNAUTHORIZED".to_owned()), "{answer}");
        let (_, listed) = parts(app.get(&format!("{findings}?sort=title&order=asc")).send().await.unwrap()).await;
        let titles: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|f| f["title"].as_str().unwrap()).collect();
        assert_eq!(titles, ["once", "renamed", "second", "third"]);
        let (_, third) = parts(app.get(&format!("/api/v1/findings/{}", ids[2])).send().await.unwrap()).await;
        assert_eq!(third["data"]["version"], 1, "{third}");
        for path in ["targets", "tasks", "wiki"] {
            let (_, listed) = parts(app.get(&format!("{engagement_path}/{path}")).send().await.unwrap()).await;
            assert_eq!(listed["meta"]["total"], 1, "{path}: {listed}");
        }
        for path in [format!("tasks/{task}"), format!("targets/{target}"), format!("wiki/{page}")] {
            let (_, unchanged) = parts(app.get(&format!("/api/v1/{path}")).send().await.unwrap()).await;
            assert_eq!(unchanged["data"]["version"], 1, "{unchanged}");
        }

        // A key may still revoke itself, and is refused from then on.
        let (_, own) = create_key(&app, &app.key, json!({"name": "self", "permissions": ["*"]})).await;
        let (own_secret, own_id) = (own["data"]["key"].as_str().unwrap(), own["data"]["id"].as_str().unwrap());
        let (status, _) = parts(app.request(Method::POST, &findings, own_secret).json(&json!({"title": "mine", "severity": "low"})).send().await.unwrap()).await;
        assert_eq!(status, 201);
        let (status, _) = parts(app.request(Method::DELETE, &format!("/api/v1/api-keys/{own_id}"), own_secret).send().await.unwrap()).await;
        assert_eq!(status, 204);
        let (status, answer) = parts(app.request(Method::POST, &findings, own_secret).json(&json!({"title": "later", "severity": "low"})).send().await.unwrap()).await;
        assert_eq!(status, 401);
        assert!(answer.to_string().contains("revoked"), "{answer}");
        let (_, listed) = parts(app.get(&format!("{findings}?sort=title&order=asc")).send().await.unwrap()).await;
        let titles: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|f| f["title"].as_str().unwrap()).collect();
        assert_eq!(titles, ["mine", "once", "renamed", "second", "third"]);
    }

    async fn a_revoked_remembered_key_past_its_rate_limit_still_gets_401(db) {
        // A 429 would tell a revoked key from an unknown one; it is confirmed like any answer.
        let app = TestApp::spawn_with(db, |s| s.rate_limit_per_minute = std::num::NonZeroU32::new(3).unwrap()).await;
        let engagement = app.create_engagement(json!({"name": "Limited"})).await;
        let findings = format!("/api/v1/engagements/{}/findings", engagement["id"].as_str().unwrap());
        let (_, created) = create_key(&app, &app.key, json!({"name": "writer", "permissions": ["*"]})).await;
        let (secret, key_id) = (created["data"]["key"].as_str().unwrap(), created["data"]["id"].as_str().unwrap());
        let create = || app.request(Method::POST, &findings, secret).json(&json!({"title": "t", "severity": "low"})).send();
        // The key's own bucket is spent; the client address's is not.
        for _ in 0..3 {
            assert_eq!(create().await.unwrap().status(), 201);
        }
        let (status, _) = parts(app.delete(&format!("/api/v1/api-keys/{key_id}")).send().await.unwrap()).await;
        assert_eq!(status, 204);
        for attempt in 0..2 {
            let response = create().await.unwrap();
            assert_eq!(response.status(), 401, "attempt {attempt}");
        }
    }

    async fn a_remembered_key_is_checked_by_the_commit_not_by_a_read(db) {
        // Shows which path answers: the key's read row is marked revoked behind the server's
        // back (no event, so the commit's guard still knows it as active). A write that commits
        // takes the key from memory and is let through by the guard; any other answer, and any
        // request that reads the key, goes to the read row and is refused.
        let app = TestApp::spawn(db).await;
        let engagement = app.create_engagement(json!({"name": "Paths"})).await;
        let findings = format!("/api/v1/engagements/{}/findings", engagement["id"].as_str().unwrap());
        let (_, created) = create_key(&app, &app.key, json!({"name": "writer", "permissions": ["*"]})).await;
        let (secret, key_id) = (created["data"]["key"].as_str().unwrap(), created["data"]["id"].as_str().unwrap());
        let create = |body: Value| app.request(Method::POST, &findings, secret).json(&body).send();
        let (status, _) = parts(create(json!({"title": "first", "severity": "low"})).await.unwrap()).await;
        assert_eq!(status, 201);
        let store = pwnbook_events::Store::open(&app.db.url).await.unwrap();
        sqlx::query("UPDATE api_keys SET revoked_at = 1 WHERE id = $1").bind(key_id).execute(store.pool()).await.unwrap();
        store.close().await;
        let (status, _) = parts(create(json!({"title": "from memory", "severity": "low"})).await.unwrap()).await;
        assert_eq!(status, 201, "a remembered key's write is checked by the commit");
        let (status, _) = parts(create(json!({"severity": "low"})).await.unwrap()).await;
        assert_eq!(status, 401, "an answer that committed nothing waits for the read row");
        let (status, _) = parts(create(json!({"title": "forgotten", "severity": "low"})).await.unwrap()).await;
        assert_eq!(status, 401, "a key the database refused is no longer remembered");
        let (status, _) = parts(app.request(Method::GET, &findings, secret).send().await.unwrap()).await;
        assert_eq!(status, 401);
    }

    async fn an_idempotent_key_creation_never_stores_the_secret(db) {
        let app = TestApp::spawn(db).await;
        let body = json!({"name": "once", "permissions": ["engagements:read"]});
        let send = || app.request(Method::POST, "/api/v1/api-keys", &app.key).header("idempotency-key", "k-1").json(&body).send();
        let (status, first) = parts(send().await.unwrap()).await;
        assert_eq!(status, 201);
        let secret = first["data"]["key"].as_str().unwrap().to_owned();
        let replay = send().await.unwrap();
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
        let (status, replayed) = parts(replay).await;
        assert_eq!((status, replayed["data"]["id"].clone()), (201, first["data"]["id"].clone()));
        assert!(replayed["data"].get("key").is_none(), "the secret is shown once");
        let store = pwnbook_events::Store::open(&app.db.url).await.unwrap();
        let stored: Vec<String> = sqlx::query_scalar("SELECT body FROM idempotency_keys").fetch_all(store.pool()).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert!(!stored[0].contains(&secret[10..]), "a secret was stored for replay");
    }

    async fn keys_cannot_escalate_or_name_unknown_permissions(db) {
        let app = TestApp::spawn(db).await;
        let manager = app.key_with(&["keys:manage", "engagements:read"]).await;
        let (status, body) = create_key(&app, &manager, json!({"name": "x", "permissions": ["engagements:write"]})).await;
        assert_eq!((status, error_code(status, &body)), (403, "FORBIDDEN".to_owned()));
        let (status, _) = create_key(&app, &manager, json!({"name": "x", "permissions": ["*"]})).await;
        assert_eq!(status, 403);
        let (status, _) = create_key(&app, &manager, json!({"name": "x", "permissions": ["engagements:read"]})).await;
        assert_eq!(status, 201);
        for (body, field) in [
            (json!({"name": "x", "permissions": ["engagements:admin"]}), "permissions"),
            (json!({"name": "x", "permissions": []}), "permissions"),
            (json!({"name": "x"}), "permissions"),
            (json!({"permissions": ["*"]}), "name"),
            (json!({"name": "x", "permissions": ["*"], "environment": "prod"}), "environment"),
            (json!({"name": "x", "permissions": ["*"], "expiresAt": "2001-01-01T00:00:00Z"}), "expiresAt"),
            (json!({"name": "x", "permissions": ["*"], "key": "pwbk_live_mine"}), "key"),
        ] {
            let (status, json) = create_key(&app, &app.key, body.clone()).await;
            assert_eq!((status, error_code(status, &json)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
            assert_eq!(json["error"]["details"][0]["field"], field, "{json}");
        }
    }

    async fn expired_keys_are_refused(db) {
        let app = TestApp::spawn(db).await;
        let expires = chrono::Utc::now() + chrono::Duration::milliseconds(3000);
        let (status, created) = create_key(&app, &app.key, json!({
            "name": "short-lived", "permissions": ["engagements:read"],
            "expiresAt": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })).await;
        assert_eq!(status, 201);
        assert!(created["data"]["expiresAt"].is_string());
        let secret = created["data"]["key"].as_str().unwrap();
        assert_eq!(app.request(Method::GET, "/api/v1/engagements", secret).send().await.unwrap().status(), 200);
        // Wait for the expiry itself (a functional wait, bounded), then the key is refused.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = parts(app.request(Method::GET, "/api/v1/engagements", secret).send().await.unwrap()).await;
            if status == 401 {
                assert!(body["error"]["message"].as_str().unwrap().contains("expired"));
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the key never expired");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn revocation_is_seen_by_another_server_process(db) {
        let app = TestApp::spawn(db).await;
        // The real binary: another OS process with its own pools, caches and workers.
        let mut second = spawn_binary(&app.db.url, &app.key).await;
        let second_base = second.base.clone();
        let (_, created) = create_key(&app, &app.key, json!({"name": "shared", "permissions": ["engagements:read"]})).await;
        let secret = created["data"]["key"].as_str().unwrap().to_owned();
        let id = created["data"]["id"].as_str().unwrap().to_owned();
        let via_second = || app.client.get(format!("{second_base}/api/v1/engagements")).bearer_auth(&secret).send();
        assert_eq!(via_second().await.unwrap().status(), 200);
        assert_eq!(app.delete(&format!("/api/v1/api-keys/{id}")).send().await.unwrap().status(), 204);
        assert_eq!(via_second().await.unwrap().status(), 401);
        second.child.start_kill().unwrap();
        second.child.wait().await.unwrap();
    }

    async fn every_route_checks_its_permission_and_the_organization(db) {
        let app = TestApp::spawn(db).await;
        let engagement = app.create_engagement(json!({"name": "Walked"})).await["id"].as_str().unwrap().to_owned();
        let (_, key) = create_key(&app, &app.key, json!({"name": "walked", "permissions": ["engagements:read"]})).await;
        let target = create_target(&app, &engagement, json!({"type": "ip", "value": "10.0.0.1"})).await["id"].as_str().unwrap().to_owned();
        let finding = create_finding(&app, &engagement, json!({"title": "Walked", "severity": "low"})).await["id"].as_str().unwrap().to_owned();
        let task = create_task(&app, &engagement, json!({"title": "Walked"})).await["id"].as_str().unwrap().to_owned();
        let page = create_page(&app, &engagement, json!({"title": "Walked"})).await["id"].as_str().unwrap().to_owned();
        let report = create_report(&app, &engagement, json!({"title": "Walked"})).await["id"].as_str().unwrap().to_owned();
        // An address literal needs no DNS and passes the SSRF guard; nothing here emits findings.
        let (status, webhook) = parts(app.post("/api/v1/webhooks", &json!({"url": "http://93.184.216.34/hook", "events": ["finding.*"]})).send().await.unwrap()).await;
        assert_eq!(status, 201, "{webhook}");
        let fixtures: HashMap<&str, String> = HashMap::from([
            ("/api/v1/engagements/{id}", engagement),
            ("/api/v1/tasks/{id}", task),
            ("/api/v1/wiki/{id}", page),
            ("/api/v1/reports/{id}", report),
            ("/api/v1/targets/{id}", target),
            ("/api/v1/findings/{id}", finding),
            ("/api/v1/api-keys/{id}", key["data"]["id"].as_str().unwrap().to_owned()),
            ("/api/v1/webhooks/{id}", webhook["data"]["id"].as_str().unwrap().to_owned()),
        ]);
        let stranger = app.org_with_key(&["*"]).await;
        let mut lacking: HashMap<Permission, String> = HashMap::new();
        for route in ROUTES {
            if let std::collections::hash_map::Entry::Vacant(slot) = lacking.entry(route.permission) {
                let others: Vec<&str> = Permission::ALL
                    .iter()
                    .filter(|p| **p != route.permission && **p != Permission::All)
                    .map(|p| p.as_str())
                    .collect();
                slot.insert(app.key_with(&others).await);
            }
            let fixture = fixtures.iter().find(|(prefix, _)| route.path.starts_with(*prefix));
            let path = match (route.path.contains("{id}"), fixture) {
                (false, _) => route.path.to_owned(),
                (true, Some((prefix, id))) => route.path.replacen(prefix, &prefix.replace("{id}", id), 1),
                (true, None) => panic!("no fixture for {} {}: add one", route.method, route.path),
            };
            let method = Method::from_bytes(route.method.as_bytes()).unwrap();
            let with = |key: &str| app.request(method.clone(), &path, key).json(&json!({}));
            let (status, body) = parts(with(&lacking[&route.permission]).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &body)), (403, "FORBIDDEN".to_owned()), "{} {path}", route.method);
            if route.path.contains("{id}") {
                let (status, body) = parts(with(&stranger).send().await.unwrap()).await;
                assert_eq!((status, error_code(status, &body)), (404, "NOT_FOUND".to_owned()), "{} {path}", route.method);
            }
            let (status, _) = parts(app.request(method.clone(), &path, "").send().await.unwrap()).await;
            assert_eq!(status, 401, "{} {path} without a key", route.method);
        }
    }

    async fn secrets_never_reach_the_logs(db) {
        let bootstrap = Secret::generate("live").expose().to_owned();
        let mut server = spawn_binary(&db.url, &bootstrap).await;
        let client = reqwest::Client::new();
        let created: Value = client
            .post(format!("{}/api/v1/api-keys", server.base))
            .bearer_auth(&bootstrap)
            .json(&json!({"name": "logged?", "permissions": ["engagements:read"]}))
            .send().await.unwrap().json().await.unwrap();
        let secret = created["data"]["key"].as_str().unwrap().to_owned();
        for key in [&secret, &bootstrap, &"pwbk_live_notakeynotakeynotakeynotakeynotakey".to_owned()] {
            client.get(format!("{}/api/v1/engagements", server.base)).bearer_auth(key).send().await.unwrap();
        }
        server.child.start_kill().unwrap();
        server.child.wait().await.unwrap();
        let logs = server.stderr.lock().unwrap().clone();
        assert!(logs.contains("listening"), "the log was captured: {logs}");
        assert!(!logs.contains(&secret[10..]), "a key secret was logged");
        assert!(!logs.contains(&bootstrap[10..]), "the bootstrap secret was logged");
        assert!(!logs.contains("notakeynotakey"), "a presented secret was logged");
    }
}
