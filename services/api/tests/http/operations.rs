//! Operability: the OpenAPI document (served, committed, complete), the docs page, health,
//! readiness, metrics, request logs, `--help`, and the compose file.

use pwnbook_api::openapi::document_json;
use pwnbook_api::routes::ROUTES;
use pwnbook_api::secrets::Secret;
use pwnbook_events::backend_tests;
use serde_json::{json, Value};

use crate::harness::{parts, run_cli, spawn_binary_with, TestApp};

const COMMITTED: &str = include_str!("../../openapi.json");

#[test]
fn the_committed_openapi_document_matches_the_code() {
    assert!(
        document_json().trim() == COMMITTED.trim(),
        "services/api/openapi.json is stale: run `cargo run --bin pwnbook -- openapi > services/api/openapi.json`"
    );
}

#[test]
fn every_route_is_documented_with_its_permission_and_errors() {
    let document: Value = serde_json::from_str(&document_json()).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let mut operation_ids = std::collections::HashSet::new();
    for route in ROUTES {
        let operation = &document["paths"][route.path][route.method.to_lowercase()];
        assert!(operation.is_object(), "{} {} is not documented", route.method, route.path);
        assert_eq!(
            operation["x-required-permission"],
            route.permission.as_str(),
            "{} {}",
            route.method,
            route.path
        );
        assert_eq!(operation["security"][0]["bearer"], json!([]));
        for status in ["400", "401", "403", "429", "500"] {
            assert_eq!(
                operation["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{} {} lacks {status}",
                route.method,
                route.path
            );
        }
        assert!(
            operation_ids.insert(operation["operationId"].as_str().unwrap().to_owned()),
            "duplicate operationId"
        );
        let success = operation["responses"].as_object().unwrap().keys().any(|s| s.starts_with('2'));
        assert!(success, "{} {} documents no success response", route.method, route.path);
    }
}

#[test]
fn help_documents_every_setting_with_its_default() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pwnbook")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for setting in [
        "DATABASE_URL",
        "PWNBOOK_BIND",
        "PWNBOOK_RATE_LIMIT_PER_MINUTE",
        "PWNBOOK_BODY_LIMIT",
        "PWNBOOK_BOOTSTRAP_API_KEY",
        "PWNBOOK_LOG_FORMAT",
    ] {
        assert!(help.contains(setting), "--help does not mention {setting}:\n{help}");
    }
    for default in ["sqlite://pwnbook.db", "127.0.0.1:8080", "600", "1048576"] {
        assert!(
            help.contains(&format!("[default: {default}]")),
            "--help lacks the default {default}:\n{help}"
        );
    }
}

#[test]
fn the_compose_file_runs_postgres_and_the_server_with_health_checks() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docker-compose.yml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
    let compose = &docs[0];
    let postgres = &compose["services"]["postgres"];
    let server = &compose["services"]["pwnbook"];
    assert!(postgres["image"].as_str().unwrap().starts_with("postgres"));
    assert!(!postgres["healthcheck"]["test"].is_badvalue());
    assert!(postgres["volumes"][0].as_str().unwrap().starts_with("pgdata:"));
    assert!(!compose["volumes"]["pgdata"].is_badvalue());
    assert_eq!(server["build"].as_str(), Some("."));
    assert_eq!(server["depends_on"]["postgres"]["condition"].as_str(), Some("service_healthy"));
    assert!(server["environment"]["DATABASE_URL"].as_str().unwrap().starts_with("postgres://"));
    assert_eq!(server["env_file"][0]["path"].as_str(), Some(".env"));
    assert!(!server["healthcheck"]["test"].is_badvalue());
    assert!(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Dockerfile")).exists());
}

backend_tests! {
    async fn documentation_health_and_readiness_need_no_key(db) {
        let app = TestApp::spawn(db).await;
        let served: Value = app.client.get(format!("{}/api/v1/openapi.json", app.base)).send().await.unwrap().json().await.unwrap();
        assert_eq!(served, serde_json::from_str::<Value>(&document_json()).unwrap());
        let docs = app.client.get(format!("{}/docs/", app.base)).send().await.unwrap();
        assert_eq!(docs.status(), 200);
        let html = docs.text().await.unwrap();
        assert!(html.contains("swagger"), "{html}");
        assert!(!html.contains("://"), "the docs page must not load anything from another host");
        // Nor does its script: no online validator is asked about the document.
        let script = app.client.get(format!("{}/docs/swagger-initializer.js", app.base)).send().await.unwrap().text().await.unwrap();
        assert!(script.contains("/api/v1/openapi.json"), "{script}");
        assert!(script.contains(r#""validatorUrl": "none""#) || script.contains(r#""validatorUrl":"none""#), "{script}");
        let (status, health) = parts(app.client.get(format!("{}/healthz", app.base)).send().await.unwrap()).await;
        assert_eq!((status, health["data"]["status"].clone()), (200, json!("ok")));
        let (status, ready) = parts(app.client.get(format!("{}/readyz", app.base)).send().await.unwrap()).await;
        assert_eq!((status, ready["data"]["status"].clone()), (200, json!("ready")));
    }

    async fn metrics_count_requests_commands_and_lag(db) {
        let app = TestApp::spawn(db).await;
        app.create_engagement(json!({"name": "Measured"})).await;
        app.post("/api/v1/engagements", &json!({"name": "Measured"})).send().await.unwrap();
        let response = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap();
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        let text = response.text().await.unwrap();
        for needle in [
            r#"pwnbook_http_requests_total{method="POST",route="/api/v1/engagements",status="201"}"#,
            r#"pwnbook_http_requests_total{method="POST",route="/api/v1/engagements",status="409"}"#,
            r#"pwnbook_commands_total{aggregate="engagement",command="Create",outcome="committed"}"#,
            r#"pwnbook_commands_total{aggregate="engagement",command="Create",outcome="conflict"}"#,
            r#"pwnbook_projection_lag_events{projector="engagements"}"#,
            "pwnbook_sequencer_lag_events",
            "pwnbook_http_request_duration_seconds",
            "\npwnbook_store_up 1\n",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        // A store that cannot be read still leaves the counters to scrape, and says so.
        let store = pwnbook_events::Store::open(&app.db.url).await.unwrap();
        sqlx::query("DROP TABLE projector_checkpoints").execute(store.pool()).await.unwrap();
        let response = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert!(text.contains("\npwnbook_store_up 0\n") && text.contains("pwnbook_http_requests_total"), "{text}");
        store.close().await;
    }

    async fn each_request_logs_one_structured_line_without_secrets(db) {
        let key = Secret::generate("live").expose().to_owned();
        let mut server = spawn_binary_with(&db.url, &key, &[("PWNBOOK_LOG_FORMAT", "json")]).await;
        let client = reqwest::Client::new();
        let response = client.get(format!("{}/api/v1/engagements", server.base)).bearer_auth(&key).header("x-request-id", "trace-me-1").send().await.unwrap();
        assert_eq!(response.status(), 200);
        server.child.start_kill().unwrap();
        server.child.wait().await.unwrap();
        let logs = server.stderr.lock().unwrap().clone();
        let line: Value = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["fields"]["request_id"] == "trace-me-1")
            .unwrap_or_else(|| panic!("no request line in\n{logs}"));
        let fields = &line["fields"];
        assert_eq!((fields["route"].clone(), fields["status"].clone(), fields["method"].clone()), (json!("/api/v1/engagements"), json!(200), json!("GET")));
        assert!(fields["key_id"].as_str().unwrap().starts_with("key_"));
        assert!(fields["latency_ms"].as_f64().is_some());
        assert!(!logs.contains(&key[10..]));
    }
}

backend_tests! {
    async fn sigterm_ends_open_streams_and_exits_promptly(db) {
        let key = Secret::generate("live").expose().to_owned();
        let mut server = spawn_binary_with(&db.url, &key, &[]).await;
        let client = reqwest::Client::new();
        let mut stream = client
            .get(format!("{}/api/v1/events/stream?after=0", server.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        // The stream is open and replaying; now ask the server to stop.
        let pid = server.child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let drained = tokio::time::timeout(std::time::Duration::from_secs(15), async {
            while let Ok(Some(_)) = stream.chunk().await {}
        })
        .await;
        assert!(drained.is_ok(), "the SSE stream did not end after SIGTERM");
        let status = tokio::time::timeout(std::time::Duration::from_secs(15), server.child.wait()).await;
        let status = status.expect("the server did not exit after SIGTERM").unwrap();
        assert!(status.success(), "graceful shutdown exits 0: {status}");
        assert!(server.stderr.lock().unwrap().contains("shutting down"));
    }
}

/// A database URL the server cannot use ends the start with a message that says which and why,
/// and a failing exit status (never a panic, never a misleading "cannot listen").
#[tokio::test]
async fn a_database_url_that_cannot_be_used_is_named_at_start() {
    for (url, expected) in [
        ("", "unsupported database URL \"\""),
        ("mysql://localhost/x", "unsupported database URL \"mysql://localhost/x\""),
        ("mysql://alice:hunter2@127.0.0.1:1/db", "unsupported database URL \"mysql://…@127.0.0.1:1/db\""),
        ("sqlite://", "a SQLite URL must name a file"),
        ("sqlite:///no/such/directory/pwnbook.db", "cannot create /no/such/directory/pwnbook.db-start.lock"),
        ("postgres://postgres:hunter2@127.0.0.1:1/x", "cannot connect to PostgreSQL at 127.0.0.1:1"),
    ] {
        let (ok, _, stderr) = run_cli(url, &["serve", "--bind", "127.0.0.1:0"]).await;
        assert!(!ok, "{url}: {stderr}");
        assert!(stderr.contains(expected), "{url}: {stderr}");
        assert!(!stderr.contains("hunter2") && !stderr.contains("panicked"), "{url}: {stderr}");
    }
}
