//! SPEC §4 webhooks: CRUD with the SSRF guard, signed deliveries in log order, retries with
//! backoff against a receiver that fails first, the deliveries log, and resuming after a restart.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use pwnbook_api::bootstrap::open_store;
use pwnbook_api::secrets::Secret;
use pwnbook_api::server;
use pwnbook_commands::engagement::{Engagement, EngagementCommand, NewEngagement};
use pwnbook_commands::{CommandContext, CommandService, Execution};
use pwnbook_events::{backend_tests, Actor, Id, IdKind};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::harness::{error_code, parts, settings, spawn_binary_with, TestApp};
use crate::history::all_events;

const SECRET: &str = "s3cret-s3cret-s3cret";

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    headers: HeaderMap,
    body: Value,
    raw: Bytes,
    answered: u16,
}

/// An HTTP receiver on 127.0.0.1 that answers 500 to its first `fail_first` requests.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(AtomicUsize::new(fail_first));
        let log = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, raw: Bytes| {
                let (log, failures) = (log.clone(), failures.clone());
                async move {
                    let failing = failures
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    let status = if failing { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
                    let body = serde_json::from_slice(&raw).unwrap();
                    log.lock().unwrap().push(Received {
                        at: Instant::now(),
                        headers,
                        body,
                        raw,
                        answered: status.as_u16(),
                    });
                    status
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, received }
    }

    fn accepted(&self) -> Vec<Received> {
        self.received.lock().unwrap().iter().filter(|r| r.answered == 200).cloned().collect()
    }

    /// Waits (bounded) until `count` deliveries were accepted.
    async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let accepted = self.accepted();
            if accepted.len() >= count {
                return accepted;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {count} deliveries arrived",
                accepted.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn create_webhook(client: &reqwest::Client, base: &str, key: &str, url: &str) -> String {
    let response = client
        .post(format!("{base}/api/v1/webhooks"))
        .bearer_auth(key)
        .json(&json!({"url": url, "events": ["engagement.*"], "secret": SECRET}))
        .send()
        .await
        .unwrap();
    let (status, body) = parts(response).await;
    assert_eq!(status, 201, "{body}");
    body["data"]["id"].as_str().unwrap().to_owned()
}

async fn create_engagement_at(client: &reqwest::Client, base: &str, key: &str, name: &str) -> String {
    let response = client
        .post(format!("{base}/api/v1/engagements"))
        .bearer_auth(key)
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap();
    let (status, body) = parts(response).await;
    assert_eq!(status, 201, "{body}");
    body["data"]["id"].as_str().unwrap().to_owned()
}

backend_tests! {
    async fn webhooks_are_managed_and_internal_urls_are_refused(db) {
        let app = TestApp::spawn(db).await;
        for url in ["http://127.0.0.1:9/hook", "http://169.254.169.254/latest", "http://10.0.0.1/", "http://[::1]/", "http://localhost:1/"] {
            let (status, body) = parts(app.post("/api/v1/webhooks", &json!({"url": url, "events": ["*"]})).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &body)), (422, "VALIDATION_ERROR".to_owned()), "{url}");
            assert_eq!(body["error"]["details"][0]["field"], "url");
        }
        for body in [json!({"events": ["*"]}), json!({"url": "http://93.184.216.34/"}), json!({"url": "ftp://x", "events": ["*"]}),
                     json!({"url": "http://93.184.216.34/", "events": ["Bad Type"]}), json!({"url": "http://93.184.216.34/", "events": ["finding.bogus"]}), json!({"url": "http://93.184.216.34/", "events": ["typo.*"]}),
                     json!({"url": "http://93.184.216.34/", "events": ["*"], "secret": "short"}),
                     json!({"url": "http://93.184.216.34/", "events": ["*"], "id": "whk_x"})] {
            let (status, _) = parts(app.post("/api/v1/webhooks", &body).send().await.unwrap()).await;
            assert_eq!(status, 422, "{body}");
        }
        // An address literal needs no DNS; filtered to a type nothing in this test produces.
        let (status, created) = parts(app.post("/api/v1/webhooks", &json!({"url": "http://93.184.216.34/hook", "events": ["finding.*"]})).send().await.unwrap()).await;
        assert_eq!(status, 201, "{created}");
        let created = &created["data"];
        let id = created["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("whk_"));
        let secret = created["secret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("whsec_") && secret.len() > 30);
        assert_eq!((created["events"].clone(), created["version"].clone()), (json!(["finding.*"]), json!(1)));
        let path = format!("/api/v1/webhooks/{id}");
        let (_, fetched) = parts(app.get(&path).send().await.unwrap()).await;
        assert!(fetched["data"].get("secret").is_none());
        let (_, listed) = parts(app.get("/api/v1/webhooks").send().await.unwrap()).await;
        assert_eq!((listed["meta"]["total"].clone(), listed["data"][0]["id"].clone()), (json!(1), json!(id)));
        let unchanged = app.get(&path).header("if-none-match", "\"1\"").send().await.unwrap();
        assert_eq!((unchanged.status().as_u16(), unchanged.headers()["etag"].to_str().unwrap()), (304, "\"1\""));
        let (status, patched) = parts(app.patch(&path, &json!({"events": ["finding.*", "task.closed"]})).send().await.unwrap()).await;
        assert_eq!((status, patched["data"]["version"].clone()), (200, json!(2)));
        assert_eq!(app.get(&path).header("if-none-match", "\"1\"").send().await.unwrap().status(), 200, "a new version");
        let (status, _) = parts(app.patch(&path, &json!({"url": "http://192.168.0.10/"})).send().await.unwrap()).await;
        assert_eq!(status, 422);
        let (status, _) = parts(app.patch(&path, &json!({"secret": "rotated-secret-rotated"})).header("if-match", "\"1\"").send().await.unwrap()).await;
        assert_eq!(status, 412);
        let (_, past) = parts(app.get(&format!("{path}?version=1")).send().await.unwrap()).await;
        assert_eq!(past["data"]["events"], json!(["finding.*"]));
        let (_, deliveries) = parts(app.get(&format!("{path}/deliveries")).send().await.unwrap()).await;
        assert_eq!(deliveries["data"], json!([]));
        let (status, body) = parts(app.delete(&path).header("if-match", "\"1\"").send().await.unwrap()).await;
        assert_eq!((status, error_code(status, &body)), (412, "PRECONDITION_FAILED".to_owned()), "a stale If-Match deletes nothing");
        assert_eq!(app.delete(&path).header("if-match", "\"2\"").send().await.unwrap().status(), 204);
        assert_eq!(parts(app.get(&path).send().await.unwrap()).await.0, 404);
        let (_, history) = parts(app.get(&format!("{path}/history")).send().await.unwrap()).await;
        let types: Vec<&str> = history["data"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["webhook.created", "webhook.updated", "webhook.deleted"]);
        let everything = serde_json::to_string(&all_events(&app, "", &app.key).await).unwrap();
        assert!(!everything.contains(&secret), "the webhook secret leaked into the event feed");
        let stranger = app.org_with_key(&["*"]).await;
        assert_eq!(parts(app.request(Method::GET, "/api/v1/webhooks", &stranger).send().await.unwrap()).await.1["data"], json!([]));
    }

    async fn deliveries_are_signed_ordered_and_retried_with_backoff(db) {
        let app = Arc::new(TestApp::spawn_with(db, |s| s.webhook_allow_private = true).await);
        let receiver = Receiver::start(2).await;
        let hook = create_webhook(&app.client, &app.base, &app.key, &receiver.url).await;
        let writers: Vec<_> = (0..3).map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                for i in 0..4 {
                    let id = create_engagement_at(&app.client, &app.base, &app.key, &format!("Hooked {w}-{i}")).await;
                    app.patch(&format!("/api/v1/engagements/{id}"), &json!({"description": "d"})).send().await.unwrap();
                }
            })
        }).collect();
        for writer in writers {
            writer.await.unwrap();
        }
        app.org_with_key(&["*"]).await;
        let expected: Vec<Value> = all_events(&app, "type=engagement.*", &app.key).await;
        assert_eq!(expected.len(), 24);
        let accepted = receiver.wait_for(24).await;
        let bodies: Vec<Value> = accepted.iter().map(|r| r.body.clone()).collect();
        assert_eq!(bodies, expected, "every event once, in log order");
        for delivery in &accepted {
            assert_eq!(delivery.headers["x-pwnbook-signature"].to_str().unwrap(), sign(&delivery.raw));
            assert_eq!(delivery.headers["x-pwnbook-event"].to_str().unwrap(), delivery.body["type"].as_str().unwrap());
            let id = delivery.headers["x-pwnbook-delivery"].to_str().unwrap();
            let body = id.strip_prefix("dlv_").unwrap_or_default();
            assert!(body.len() == 20 && body.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()), "the ID shape: {id}");
            assert_eq!(delivery.headers["content-type"], "application/json");
        }

        // The first event failed twice and was retried with a growing delay, same delivery id.
        let all = receiver.received.lock().unwrap().clone();
        let first: Vec<&Received> = all.iter().filter(|r| r.body["id"] == expected[0]["id"]).collect();
        assert_eq!(first.iter().map(|r| r.answered).collect::<Vec<_>>(), [500, 500, 200]);
        assert!(first.windows(2).all(|w| w[0].headers["x-pwnbook-delivery"] == w[1].headers["x-pwnbook-delivery"]));
        assert!(first[1].at - first[0].at >= Duration::from_millis(50));
        assert!(first[2].at - first[1].at >= Duration::from_millis(100));

        let (_, log) = parts(app.get(&format!("/api/v1/webhooks/{hook}/deliveries?limit=1000")).send().await.unwrap()).await;
        let log = log["data"].as_array().unwrap().clone();
        assert_eq!(log.len(), 26);
        let head: Vec<(Value, Value, Value)> = log[..3].iter().map(|d| (d["attempt"].clone(), d["statusCode"].clone(), d["success"].clone())).collect();
        assert_eq!(head, [(json!(1), json!(500), json!(false)), (json!(2), json!(500), json!(false)), (json!(3), json!(200), json!(true))]);
        assert_eq!(log[0]["eventId"], expected[0]["id"]);
        let metrics = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
        for needle in [r#"pwnbook_webhook_deliveries_total{outcome="delivered"}"#, r#"pwnbook_webhook_deliveries_total{outcome="rejected"}"#] {
            assert!(metrics.contains(needle), "missing {needle}");
        }
    }

    async fn deliveries_resume_from_the_checkpoint_after_a_restart(db) {
        let receiver = Receiver::start(0).await;
        let mut config = settings(&db);
        config.webhook_allow_private = true;
        let key = config.bootstrap_api_key.clone().unwrap();
        let client = reqwest::Client::new();
        let first = server::start(&config).await.unwrap();
        let base = format!("http://{}", first.local_addr);
        create_webhook(&client, &base, &key, &receiver.url).await;
        create_engagement_at(&client, &base, &key, "Before 1").await;
        create_engagement_at(&client, &base, &key, "Before 2").await;
        receiver.wait_for(2).await;
        first.shutdown().await.unwrap();

        // Written while no server (and no dispatcher) runs.
        let store = open_store(&db.url).await.unwrap();
        let organization_id: String = sqlx::query_scalar("SELECT id FROM organizations LIMIT 1").fetch_one(store.pool()).await.unwrap();
        let commands = CommandService::new(store.clone());
        let context = CommandContext { organization_id: organization_id.clone(), actor: Actor::system(), request_id: None, idempotency_key: None, commit_proof: None, refused: Vec::new() };
        for name in ["While down 1", "While down 2"] {
            let id = Id::generate(IdKind::Engagement);
            let command = EngagementCommand::Create {
                organization_id: organization_id.clone(),
                engagement: NewEngagement { name: name.to_owned(), ..NewEngagement::default() },
            };
            let execution = Execution { claim: command.claim(), engagement_id: Some(id.to_string()), ..Execution::default() };
            commands.execute::<Engagement>(id.as_str(), command, &context, execution).await.unwrap();
        }
        store.close().await;

        let second = server::start(&config).await.unwrap();
        let accepted = receiver.wait_for(4).await;
        let names: Vec<&str> = accepted.iter().map(|r| r.body["data"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Before 1", "Before 2", "While down 1", "While down 2"]);
        // Nothing after the checkpoint is sent twice.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(receiver.accepted().len(), 4);
        second.shutdown().await.unwrap();
    }

    async fn two_server_processes_deliver_each_event_once_in_order(db) {
        let receiver = Receiver::start(0).await;
        let mut config = settings(&db);
        config.webhook_allow_private = true;
        let key = config.bootstrap_api_key.clone().unwrap();
        let client = reqwest::Client::new();
        let one = server::start(&config).await.unwrap();
        let two = server::start(&config).await.unwrap();
        let bases = [format!("http://{}", one.local_addr), format!("http://{}", two.local_addr)];
        create_webhook(&client, &bases[0], &key, &receiver.url).await;
        for i in 0..10 {
            create_engagement_at(&client, &bases[i % 2], &key, &format!("Shared {i}")).await;
        }
        let accepted = receiver.wait_for(10).await;
        let names: Vec<String> = accepted.iter().map(|r| r.body["data"]["name"].as_str().unwrap().to_owned()).collect();
        assert_eq!(names, (0..10).map(|i| format!("Shared {i}")).collect::<Vec<_>>());
        // Both dispatchers keep running; the one without the lease sends nothing.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(receiver.received.lock().unwrap().len(), 10, "an event went out twice");
        one.shutdown().await.unwrap();
        // The survivor takes over once the lease is released.
        create_engagement_at(&client, &bases[1], &key, "After handover").await;
        assert_eq!(receiver.wait_for(11).await[10].body["data"]["name"], "After handover");
        two.shutdown().await.unwrap();
    }

    async fn the_private_address_switch_takes_1_and_0_from_the_environment(db) {
        let key = Secret::generate("live").expose().to_owned();
        for (value, expected) in [("1", 201), ("0", 422)] {
            let mut server = spawn_binary_with(&db.url, &key, &[("PWNBOOK_WEBHOOK_ALLOW_PRIVATE", value)]).await;
            let response = reqwest::Client::new()
                .post(format!("{}/api/v1/webhooks", server.base))
                .bearer_auth(&key)
                .json(&json!({"url": "http://127.0.0.1:9/hook", "events": ["engagement.*"]}))
                .send()
                .await
                .unwrap();
            let (status, body) = parts(response).await;
            assert_eq!(status, expected, "PWNBOOK_WEBHOOK_ALLOW_PRIVATE={value}: {body}");
            server.child.start_kill().unwrap();
            server.child.wait().await.unwrap();
        }
    }
}
