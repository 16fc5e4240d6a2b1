//! The real binary: acknowledged writes survive `kill -9`, and the CLI works beside a running
//! server on the same database.

use std::sync::Arc;

use pwnbook_api::secrets::Secret;
use pwnbook_events::backend_tests;
use serde_json::{json, Value};

use crate::harness::{error_code, parts, run_cli, spawn_binary, TestApp};

backend_tests! {
    async fn acknowledged_writes_survive_kill_9(db) {
        let key = Secret::generate("live").expose().to_owned();
        let mut server = spawn_binary(&db.url, &key).await;
        let client = Arc::new(reqwest::Client::new());
        let mut writers = Vec::new();
        for w in 0..4 {
            let (client, base, key) = (client.clone(), server.base.clone(), key.clone());
            writers.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..8 {
                    let response = client
                        .post(format!("{base}/api/v1/engagements"))
                        .bearer_auth(&key)
                        .json(&json!({"name": format!("Durable {w}-{i}")}))
                        .send()
                        .await
                        .unwrap();
                    let (status, body) = parts(response).await;
                    assert_eq!(status, 201, "{body}");
                    acknowledged.push(body["data"]["id"].as_str().unwrap().to_owned());
                }
                acknowledged
            }));
        }
        let mut acknowledged = Vec::new();
        for writer in writers {
            acknowledged.extend(writer.await.unwrap());
        }
        // No graceful anything: SIGKILL right after the last acknowledgement.
        server.child.start_kill().unwrap();
        server.child.wait().await.unwrap();

        let server = spawn_binary(&db.url, &key).await;
        let response = client.get(format!("{}/api/v1/engagements?perPage=100", server.base)).bearer_auth(&key).send().await.unwrap();
        let (status, body) = parts(response).await;
        assert_eq!(status, 200);
        let listed: Vec<&str> = body["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(listed.len(), 32);
        for id in &acknowledged {
            assert!(listed.contains(&id.as_str()), "{id} lost");
        }
    }

    async fn the_cli_creates_organizations_and_keys_beside_a_running_server(db) {
        let key = Secret::generate("live").expose().to_owned();
        let server = spawn_binary(&db.url, &key).await;
        let (ok, org, stderr) = run_cli(&db.url, &["orgs", "create", "--name", "Initech"]).await;
        assert!(ok, "{stderr}");
        let org = org.trim().to_owned();
        assert!(org.starts_with("org_") && org.len() == 24, "{org}");
        let (ok, stdout, stderr) = run_cli(
            &db.url,
            &["keys", "create", "--org", &org, "--name", "ci", "--permission", "engagements:read", "--permission", "engagements:write", "--environment", "test"],
        )
        .await;
        assert!(ok, "{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "only the secret goes to stdout: {stdout}");
        let secret = lines[0];
        assert!(secret.starts_with("pwbk_test_") && secret.len() >= 42);
        assert!(!stderr.contains(secret));
        // The running server accepts the key as soon as the command has exited.
        let client = reqwest::Client::new();
        let response = client.post(format!("{}/api/v1/engagements", server.base)).bearer_auth(secret).json(&json!({"name": "From CI"})).send().await.unwrap();
        assert_eq!(response.status(), 201);
        let (_, mine) = parts(client.get(format!("{}/api/v1/engagements", server.base)).bearer_auth(secret).send().await.unwrap()).await;
        assert_eq!(mine["meta"]["total"], 1);
        let (_, admin) = parts(client.get(format!("{}/api/v1/engagements", server.base)).bearer_auth(&key).send().await.unwrap()).await;
        assert_eq!(admin["meta"]["total"], 0, "the new key's engagement is in its own organization");
        let response = client.delete(format!("{}/api/v1/engagements/{}", server.base, Value::Null)).bearer_auth(secret).send().await.unwrap();
        assert_eq!(response.status(), 403, "engagements:delete was not granted");

        let (ok, _, stderr) = run_cli(&db.url, &["keys", "create", "--org", &org, "--name", "x", "--permission", "engagements:admin"]).await;
        assert!(!ok && stderr.contains("unknown permission"), "{stderr}");
        let (ok, _, stderr) = run_cli(&db.url, &["keys", "create", "--org", "org_00000000000000000000", "--name", "x", "--permission", "*"]).await;
        assert!(!ok && stderr.contains("no organization"), "{stderr}");
    }
}

backend_tests! {
    // Servers started together on a new database (replicas of one deployment) make one
    // organization and one bootstrap key between them, and all of them serve.
    async fn servers_started_together_on_a_new_database_bootstrap_it_once(db) {
        let key = Secret::generate("live").expose().to_owned();
        let (a, b, c) = tokio::join!(spawn_binary(&db.url, &key), spawn_binary(&db.url, &key), spawn_binary(&db.url, &key));
        let client = reqwest::Client::new();
        for server in [&a, &b, &c] {
            let response = client.get(format!("{}/api/v1/organizations/current", server.base)).bearer_auth(&key).send().await.unwrap();
            assert_eq!(response.status(), 200);
        }
        let store = pwnbook_events::Store::open(&db.url).await.unwrap();
        let created: Vec<String> = sqlx::query_scalar("SELECT event_type FROM events WHERE event_type IN ('organization.created', 'api_key.created')")
            .fetch_all(store.pool())
            .await
            .unwrap();
        let mut created = created;
        created.sort();
        assert_eq!(created, ["api_key.created", "organization.created"]);
        store.close().await;
    }

    async fn two_server_processes_share_one_database_correctly(db) {
        let key = Secret::generate("live").expose().to_owned();
        let first = spawn_binary(&db.url, &key).await;
        let second = spawn_binary(&db.url, &key).await;
        let client = Arc::new(reqwest::Client::new());
        let mut writers = Vec::new();
        for w in 0..6 {
            let base = if w % 2 == 0 { first.base.clone() } else { second.base.clone() };
            let (client, key) = (client.clone(), key.clone());
            writers.push(tokio::spawn(async move {
                let mut written = Vec::new();
                for i in 0..6 {
                    let (status, created) = parts(
                        client.post(format!("{base}/api/v1/engagements")).bearer_auth(&key)
                            .json(&json!({"name": format!("Shared {w}-{i}")})).send().await.unwrap(),
                    ).await;
                    assert_eq!(status, 201, "{created}");
                    let id = created["data"]["id"].as_str().unwrap().to_owned();
                    let path = format!("{base}/api/v1/engagements/{id}");
                    let (status, _) = parts(
                        client.patch(&path).bearer_auth(&key).json(&json!({"description": format!("v2 {w}-{i}")})).send().await.unwrap(),
                    ).await;
                    assert_eq!(status, 200);
                    // Read-your-writes on the server that took the write, single and list.
                    let (_, fresh) = parts(client.get(&path).bearer_auth(&key).send().await.unwrap()).await;
                    assert_eq!(fresh["data"]["description"], format!("v2 {w}-{i}"));
                    let (_, listed) = parts(
                        client.get(format!("{base}/api/v1/engagements?q=shared {w}-{i}")).bearer_auth(&key).send().await.unwrap(),
                    ).await;
                    assert_eq!(listed["data"][0]["id"], id.as_str());
                    written.push(id);
                }
                written
            }));
        }
        let mut written = Vec::new();
        for writer in writers {
            written.extend(writer.await.unwrap());
        }
        // Every acknowledged write is in the log exactly once, in per-stream order, and the
        // positions are dense.
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let (_, page) = parts(
                client.get(format!("{}/api/v1/events?after={after}&limit=1000", first.base)).bearer_auth(&key).send().await.unwrap(),
            ).await;
            events.extend(page["data"].as_array().unwrap().iter().cloned());
            after = page["meta"]["nextAfter"].as_i64().unwrap();
            if !page["meta"]["hasMore"].as_bool().unwrap() {
                break;
            }
        }
        let positions: Vec<i64> = events.iter().map(|e| e["position"].as_i64().unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[1] == w[0] + 1), "positions are dense and increasing");
        for id in &written {
            let stream: Vec<(String, i64)> = events
                .iter()
                .filter(|e| e["resourceId"] == id.as_str())
                .map(|e| (e["type"].as_str().unwrap().to_owned(), e["sequence"].as_i64().unwrap()))
                .collect();
            assert_eq!(stream, [("engagement.created".to_owned(), 1), ("engagement.updated".to_owned(), 2)], "{id}");
        }
        let (_, verified) = parts(client.get(format!("{}/api/v1/events/verify", second.base)).bearer_auth(&key).send().await.unwrap()).await;
        assert_eq!(verified["data"]["valid"], true);
    }
}

/// An engagement, and a store that rolls back every write to `events` (a trigger failing with
/// `40P01`, as PostgreSQL does to one of two deadlocked transactions) until the trigger
/// `always_deadlocked` is dropped.
async fn always_deadlocked(app: &TestApp) -> (String, pwnbook_events::Store) {
    let engagement =
        app.create_engagement(json!({"name": "Deadlocks"})).await["id"].as_str().unwrap().to_owned();
    let store = pwnbook_events::Store::open(&app.db.url).await.unwrap();
    for statement in [
        "CREATE FUNCTION always_deadlocked() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$",
        "CREATE TRIGGER always_deadlocked BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION always_deadlocked()",
    ] {
        sqlx::query(statement).execute(store.pool()).await.unwrap();
    }
    (engagement, store)
}

/// PostgreSQL only: a write the store keeps rolling back (a trigger fails every attempt with
/// `40P01`, as PostgreSQL does to one of two deadlocked transactions) is a 503 with
/// `Retry-After` that saved nothing, and its Idempotency-Key is not spent: the same request runs
/// again, and commits, once the store takes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_the_store_keeps_rolling_back_is_a_503_that_saves_nothing_postgres() {
    let Some(db) = pwnbook_events::testing::TestDb::postgres().await else { return };
    let app = TestApp::spawn(db).await;
    let (engagement, store) = always_deadlocked(&app).await;
    let findings = format!("/api/v1/engagements/{engagement}/findings");
    let send = || {
        app.post(&findings, &json!({"title": "Held", "severity": "low"}))
            .header("idempotency-key", "deadlocked")
            .send()
    };
    let response = send().await.unwrap();
    assert_eq!(
        response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned()),
        Some("1".to_owned())
    );
    let (status, body) = parts(response).await;
    assert_eq!((status, error_code(status, &body)), (503, "SERVICE_UNAVAILABLE".to_owned()));
    sqlx::query("DROP TRIGGER always_deadlocked ON events").execute(store.pool()).await.unwrap();
    let response = send().await.unwrap();
    assert!(response.headers().get("idempotent-replayed").is_none(), "the 503 was not recorded");
    let (status, body) = parts(response).await;
    assert_eq!(status, 201, "{body}");
    let (_, list) = parts(app.get(&findings).send().await.unwrap()).await;
    assert_eq!(list["meta"]["total"], 1, "{list}");
    store.close().await;
}

/// PostgreSQL only: a client's retry after the store's connection was cut at COMMIT does not
/// write twice. When the COMMIT reached the database the write is a 201, which its
/// Idempotency-Key replays; when it did not, a 503 that leaves the key unspent, and the retry
/// writes it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_cut_off_at_commit_answers_what_the_database_did_postgres() {
    use pwnbook_events::testing::{CommitCutter, Cut};
    let Some(db) = pwnbook_events::testing::TestDb::postgres().await else { return };
    let cutter = CommitCutter::start(&db.url).await;
    let app = TestApp::spawn_with(db, |settings| settings.database_url = cutter.url.clone()).await;
    let engagement =
        app.create_engagement(json!({"name": "Cut off"})).await["id"].as_str().unwrap().to_owned();
    let findings = format!("/api/v1/engagements/{engagement}/findings");
    let send = |key: &'static str, title: &'static str| {
        app.post(&findings, &json!({"title": title, "severity": "low"})).header("idempotency-key", key).send()
    };
    cutter.arm(Cut::AnswerLost);
    let (status, stored) = parts(send("answer-lost", "Stored").await.unwrap()).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(cutter.cuts(), 1, "the COMMIT's answer was cut off");
    let replay = send("answer-lost", "Stored").await.unwrap();
    assert!(replay.headers().get("idempotent-replayed").is_some(), "the 201 was recorded");
    assert_eq!(parts(replay).await, (201, stored));
    cutter.arm(Cut::RequestLost);
    let (status, body) = parts(send("request-lost", "Retried").await.unwrap()).await;
    assert_eq!((status, error_code(status, &body)), (503, "SERVICE_UNAVAILABLE".to_owned()), "{body}");
    assert_eq!(cutter.cuts(), 2, "the COMMIT never reached the database");
    let retry = send("request-lost", "Retried").await.unwrap();
    assert!(retry.headers().get("idempotent-replayed").is_none(), "the 503 was not recorded");
    assert_eq!(parts(retry).await.0, 201);
    let (_, list) = parts(app.get(&format!("{findings}?sort=title&order=asc")).send().await.unwrap()).await;
    let titles: Vec<&str> =
        list["data"].as_array().unwrap().iter().map(|f| f["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["Retried", "Stored"], "{list}");
}

/// PostgreSQL only: the same through GraphQL. A mutation whose write the store keeps rolling
/// back answers `SERVICE_UNAVAILABLE` on its field, saved nothing, and leaves its
/// Idempotency-Key unspent: the retry runs, and commits, once the store takes writes. So does a
/// bulk update whose every item the store refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graphql_write_the_store_keeps_rolling_back_leaves_its_idempotency_key_unspent_postgres() {
    let Some(db) = pwnbook_events::testing::TestDb::postgres().await else { return };
    let app = TestApp::spawn(db).await;
    let (engagement, store) = always_deadlocked(&app).await;
    let mutation = json!({
        "query": "mutation($e: ID!) { createFinding(engagementId: $e, input: {title: \"Held\", severity: \"low\"}) { id } }",
        "variables": {"e": engagement},
    });
    let send = || app.post("/api/v1/graphql", &mutation).header("idempotency-key", "deadlocked").send();
    let (status, body) = parts(send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "SERVICE_UNAVAILABLE", "{body}");
    assert_eq!(body["data"]["createFinding"], Value::Null, "{body}");
    sqlx::query("DROP TRIGGER always_deadlocked ON events").execute(store.pool()).await.unwrap();
    let response = send().await.unwrap();
    assert!(response.headers().get("idempotent-replayed").is_none(), "the failure was not recorded");
    let (status, body) = parts(response).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["createFinding"]["id"].is_string(), "{body}");
    let (_, list) =
        parts(app.get(&format!("/api/v1/engagements/{engagement}/findings")).send().await.unwrap()).await;
    assert_eq!(list["meta"]["total"], 1, "{list}");

    // A bulk update whose every item the store refused saved nothing either (its items answer
    // 503, the field itself succeeds): not stored, so the retry updates.
    let finding = body["data"]["createFinding"]["id"].as_str().unwrap().to_owned();
    sqlx::query("CREATE TRIGGER always_deadlocked BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION always_deadlocked()")
        .execute(store.pool())
        .await
        .unwrap();
    let bulk = json!({
        "query": "mutation($e: ID!, $f: ID!) { bulkUpdateFindings(engagementId: $e, input: {ids: [$f], set: {severity: \"high\"}}) { status finding { severity } } }",
        "variables": {"e": engagement, "f": finding},
    });
    let send_bulk = || app.post("/api/v1/graphql", &bulk).header("idempotency-key", "bulk-deadlocked").send();
    let (_, body) = parts(send_bulk().await.unwrap()).await;
    assert_eq!(body["data"]["bulkUpdateFindings"][0]["status"], 503, "{body}");
    sqlx::query("DROP TRIGGER always_deadlocked ON events").execute(store.pool()).await.unwrap();
    let response = send_bulk().await.unwrap();
    assert!(response.headers().get("idempotent-replayed").is_none(), "the failed bulk was not recorded");
    let (_, body) = parts(response).await;
    assert_eq!(
        body["data"]["bulkUpdateFindings"][0],
        json!({"status": 200, "finding": {"severity": "high"}})
    );
    store.close().await;
}

/// PostgreSQL only: a restart ends every session the server's pools hold. The first request on
/// each such connection is a 503 with `Retry-After` (the database out of reach), never a 500;
/// the pools then drop those connections, and every write answered 201 is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_the_database_ends_are_a_503_then_replaced_postgres() {
    let Some(db) = pwnbook_events::testing::TestDb::postgres().await else { return };
    let app = Arc::new(TestApp::spawn(db).await);
    let round = |name: &'static str| {
        let app = app.clone();
        async move {
            let mut requests = Vec::new();
            for i in 0..24 {
                let app = app.clone();
                requests.push(tokio::spawn(async move {
                    let response = if i % 2 == 0 {
                        app.post("/api/v1/engagements", &json!({"name": format!("{name} {i}")})).send().await
                    } else {
                        app.get(&format!("/api/v1/engagements?q={name}")).send().await
                    };
                    let response = response.unwrap();
                    let retry_after = response.headers().contains_key("retry-after");
                    let (status, body) = parts(response).await;
                    (i, status, retry_after, body)
                }));
            }
            let mut outcomes = Vec::new();
            for request in requests {
                outcomes.push(request.await.unwrap());
            }
            outcomes
        }
    };
    // Fills the pools with connections.
    for (_, status, _, body) in round("Warm").await {
        assert!(status == 200 || status == 201, "{status} {body}");
    }
    let store = pwnbook_events::Store::open(&app.db.url).await.unwrap();
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(ended > 2, "the server's sessions were ended ({ended})");
    let mut created = Vec::new();
    for name in ["Restart", "After"] {
        for (i, status, retry_after, body) in round(name).await {
            match status {
                200 => {}
                201 => created.push(body["data"]["id"].as_str().unwrap().to_owned()),
                503 => {
                    assert_eq!(error_code(status, &body), "SERVICE_UNAVAILABLE", "{body}");
                    assert!(retry_after, "a 503 says when to retry: {body}");
                }
                _ => panic!("request {i} of {name}: {status} {body}"),
            }
        }
    }
    for (_, status, _, body) in round("Settled").await {
        assert!(status == 200 || status == 201, "every connection was replaced: {status} {body}");
    }
    for id in created {
        let (status, body) = parts(app.get(&format!("/api/v1/engagements/{id}")).send().await.unwrap()).await;
        assert_eq!(status, 200, "an acknowledged write is there: {body}");
    }
    store.close().await;
}

/// SQLite only: a write whose command committed and whose answer then failed (here the task's
/// row cannot be read back) says the change is saved, and an Idempotency-Key keeps that
/// answer: the retry replays it instead of making the change again. (The failure needs a row
/// that a trigger spoils while the commit writes it; PostgreSQL's typed columns leave no such
/// value, SQLite's do. The middleware under test is the same on both.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_that_fails_after_the_commit_keeps_its_idempotency_key() {
    let app = TestApp::spawn(pwnbook_events::testing::TestDb::sqlite()).await;
    let engagement = app.create_engagement(json!({"name": "Saved"})).await["id"].as_str().unwrap().to_owned();
    let id = crate::tasks::create_task(&app, &engagement, json!({"title": "Read back"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Closing the task writes a text where its `closed_at` number is read.
    let store = pwnbook_events::Store::open(&app.db.url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER spoil AFTER UPDATE OF status ON tasks \
         BEGIN UPDATE tasks SET closed_at = 'not a time' WHERE id = NEW.id; END",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let send = || {
        app.post(&format!("/api/v1/tasks/{id}/close"), &json!({}))
            .header("idempotency-key", "after-commit")
            .send()
    };
    let first = send().await.unwrap();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let (status, body) = parts(first).await;
    assert_eq!((status, error_code(status, &body)), (503, "SERVICE_UNAVAILABLE".to_owned()), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("saved"), "{body}");
    let retry = send().await.unwrap();
    assert_eq!(retry.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    assert_eq!(parts(retry).await, (503, body));
    let (_, history) = parts(app.get(&format!("/api/v1/tasks/{id}/history")).send().await.unwrap()).await;
    let closes = history["data"].as_array().unwrap().iter().filter(|e| e["type"] == "task.closed").count();
    assert_eq!(closes, 1, "the task was closed once: {history}");
    // Without a key the answer says the same (a 500 would leave the client to guess).
    let other = crate::tasks::create_task(&app, &engagement, json!({"title": "Other"})).await;
    let path = format!("/api/v1/tasks/{}/close", other["id"].as_str().unwrap());
    let (status, body) = parts(app.post(&path, &json!({})).send().await.unwrap()).await;
    assert_eq!((status, error_code(status, &body)), (503, "SERVICE_UNAVAILABLE".to_owned()), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("saved"), "{body}");
    store.close().await;
}
