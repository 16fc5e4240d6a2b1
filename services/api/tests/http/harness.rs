//! Spawning the server (in-process, or as the real binary) on a fresh database, and clients.

use std::num::NonZeroU32;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pwnbook_api::config::{KeysCommand, LogFormat, OrgsCommand, Settings};
use pwnbook_api::server::{self, RunningServer};
use pwnbook_api::{cli, secrets::Secret};
use pwnbook_events::testing::TestDb;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct TestApp {
    pub base: String,
    /// The bootstrap admin key (`*`).
    pub key: String,
    pub client: reqwest::Client,
    pub db: TestDb,
    /// Keeps the server running for the test's lifetime.
    _server: RunningServer,
}

pub fn settings(db: &TestDb) -> Settings {
    Settings {
        database_url: db.url.clone(),
        bind: "127.0.0.1:0".parse().unwrap(),
        rate_limit_per_minute: NonZeroU32::new(100_000).unwrap(),
        body_limit: 1024 * 1024,
        bootstrap_api_key: Some(Secret::generate("test").expose().to_owned()),
        log_format: LogFormat::Text,
        sse_heartbeat_seconds: NonZeroU32::new(1).unwrap(),
        webhook_allow_private: false,
        webhook_retry_base_ms: 50,
        webhook_retry_cap_ms: 400,
    }
}

impl TestApp {
    pub async fn spawn(db: TestDb) -> Self {
        Self::spawn_with(db, |_| {}).await
    }

    pub async fn spawn_with(db: TestDb, adjust: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = settings(&db);
        adjust(&mut settings);
        let key = settings.bootstrap_api_key.clone().unwrap();
        let server = server::start(&settings).await.unwrap();
        Self {
            base: format!("http://{}", server.local_addr),
            key,
            client: reqwest::Client::new(),
            db,
            _server: server,
        }
    }

    pub fn request(&self, method: Method, path: &str, key: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base)).bearer_auth(key)
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path, &self.key)
    }

    pub fn post(&self, path: &str, body: &Value) -> RequestBuilder {
        self.request(Method::POST, path, &self.key).json(body)
    }

    pub fn patch(&self, path: &str, body: &Value) -> RequestBuilder {
        self.request(Method::PATCH, path, &self.key).json(body)
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path, &self.key)
    }

    /// Creates an engagement and returns its JSON (asserting 201).
    pub async fn create_engagement(&self, body: Value) -> Value {
        let response = self.post("/api/v1/engagements", &body).send().await.unwrap();
        let (status, json) = parts(response).await;
        assert_eq!(status, 201, "{json}");
        json["data"].clone()
    }

    /// A new organization with a key holding `permissions`, created through the CLI code path.
    pub async fn org_with_key(&self, permissions: &[&str]) -> String {
        let org =
            cli::orgs(&self.db.url, OrgsCommand::Create { name: "Other org".to_owned() }).await.unwrap();
        self.key_in(&org, permissions).await
    }

    /// A key in the bootstrap organization with `permissions`.
    pub async fn key_with(&self, permissions: &[&str]) -> String {
        let org = bootstrap_org(&self.db.url).await;
        self.key_in(&org, permissions).await
    }

    async fn key_in(&self, org: &str, permissions: &[&str]) -> String {
        cli::keys(
            &self.db.url,
            KeysCommand::Create {
                org: org.to_owned(),
                name: "test key".to_owned(),
                permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
                environment: "test".to_owned(),
            },
        )
        .await
        .unwrap()
    }
}

/// The id of the first organization (the bootstrap one).
async fn bootstrap_org(url: &str) -> String {
    let store = pwnbook_events::Store::open(url).await.unwrap();
    let id: String = sqlx::query_scalar("SELECT id FROM organizations ORDER BY created_at, id LIMIT 1")
        .fetch_one(store.pool())
        .await
        .unwrap();
    store.close().await;
    id
}

pub async fn parts(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, json)
}

/// Asserts the documented error envelope and returns its code.
pub fn error_code(status: u16, body: &Value) -> String {
    let error = &body["error"];
    assert_eq!(error["statusCode"], status, "{body}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(error["requestId"].as_str().is_some(), "{body}");
    error["code"].as_str().unwrap().to_owned()
}

/// The `pwnbook` binary serving `url` on a free port.
pub struct Binary {
    pub child: Child,
    pub base: String,
    /// Everything the server wrote to standard error so far.
    pub stderr: Arc<Mutex<String>>,
}

pub async fn spawn_binary(url: &str, bootstrap_key: &str) -> Binary {
    spawn_binary_with(url, bootstrap_key, &[]).await
}

pub async fn spawn_binary_with(url: &str, bootstrap_key: &str, env: &[(&str, &str)]) -> Binary {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pwnbook"))
        .arg("serve")
        .envs(env.iter().copied())
        .env("RUST_LOG", "debug")
        .env("DATABASE_URL", url)
        .env("PWNBOOK_BIND", "127.0.0.1:0")
        .env("PWNBOOK_BOOTSTRAP_API_KEY", bootstrap_key)
        .env("PWNBOOK_RATE_LIMIT_PER_MINUTE", "100000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let stderr = Arc::new(Mutex::new(String::new()));
    let base = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            stderr.lock().unwrap().push_str(&line);
            stderr.lock().unwrap().push('\n');
            if let Some(address) = line.strip_prefix("Pwnbook listening on ") {
                return address.to_owned();
            }
        }
        panic!("the server exited before listening");
    })
    .await
    .unwrap();
    // Keep reading stderr so the child never blocks on a full pipe.
    let collected = stderr.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut text = collected.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    Binary { child, base, stderr }
}

pub async fn run_cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_pwnbook"))
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
