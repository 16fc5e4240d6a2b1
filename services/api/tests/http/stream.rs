//! SPEC §4: `GET /events/stream` (Server-Sent Events): tail from the head, replay then live
//! without gap or duplicate at the seam, resume with `Last-Event-ID`, heartbeats, and a clean
//! end on server shutdown.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use pwnbook_api::server;
use pwnbook_events::backend_tests;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{parts, settings, TestApp};

const WAIT: Duration = Duration::from_secs(30);

/// What one SSE block carried.
#[derive(Debug)]
enum Message {
    Event {
        id: i64,
        data: Value,
    },
    Comment(String),
    /// An `event: error` block: its data is the error object.
    Error(Value),
}

struct SseClient {
    response: reqwest::Response,
    buffer: String,
}

impl SseClient {
    async fn open(
        client: &reqwest::Client,
        base: &str,
        key: &str,
        query: &str,
        last_event_id: Option<i64>,
    ) -> Self {
        let mut request = client
            .request(Method::GET, format!("{base}/api/v1/events/stream?{query}"))
            .bearer_auth(key)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        Self { response, buffer: String::new() }
    }

    /// The next block; `None` when the server ended the stream.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut data, mut comment, mut error) = (None, None, None, false);
                for line in block.lines() {
                    if line.strip_prefix("event:").is_some_and(|name| name.trim() == "error") {
                        error = true;
                    } else if let Some(value) = line.strip_prefix("id:") {
                        id = Some(value.trim().parse().unwrap());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data = Some(serde_json::from_str(value.trim()).unwrap());
                    } else if let Some(value) = line.strip_prefix(':') {
                        comment = Some(value.trim().to_owned());
                    }
                }
                return Some(match (id, data, comment) {
                    (None, Some(data), _) if error => Message::Error(data),
                    (Some(id), Some(data), _) if !error => Message::Event { id, data },
                    (_, _, Some(comment)) => Message::Comment(comment),
                    _ => panic!("unexpected SSE block {block:?}"),
                });
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk()).await.expect("the stream stalled");
            match chunk {
                Ok(Some(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next event, skipping heartbeats.
    async fn next_event(&mut self) -> (i64, Value) {
        loop {
            match self.next().await.expect("the stream ended") {
                Message::Event { id, data } => {
                    assert_eq!(data["position"], id, "the SSE id is the position");
                    return (id, data);
                }
                Message::Comment(_) => {}
                Message::Error(error) => panic!("the stream failed: {error}"),
            }
        }
    }

    /// The error the stream ended with (skipping heartbeats), after which it must end.
    async fn ends_with_error(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "the stream went on");
            match self.next().await.expect("the stream ended without an error") {
                Message::Error(error) => {
                    assert!(self.next().await.is_none(), "nothing follows the error");
                    return error;
                }
                Message::Event { data, .. } => panic!("an event after the key ended: {data}"),
                Message::Comment(_) => {}
            }
        }
    }
}

async fn create(app: &TestApp, name: String) -> String {
    app.create_engagement(json!({ "name": name })).await["id"].as_str().unwrap().to_owned()
}

backend_tests! {
    async fn without_a_start_the_stream_tails_the_log_and_sends_heartbeats(db) {
        let app = TestApp::spawn(db).await;
        create(&app, "Before".to_owned()).await;
        let mut stream = SseClient::open(&app.client, &app.base, &app.key, "type=engagement.*", None).await;
        // Heartbeats (every second in tests) while nothing happens.
        match stream.next().await.unwrap() {
            Message::Comment(text) => assert_eq!(text, "heartbeat"),
            other => panic!("not a heartbeat: {other:?}"),
        }
        let id = create(&app, "After".to_owned()).await;
        let (_, event) = stream.next_event().await;
        assert_eq!((event["type"].clone(), event["resourceId"].clone()), (json!("engagement.created"), json!(id)));
        app.patch(&format!("/api/v1/engagements/{id}"), &json!({"description": "live"})).send().await.unwrap();
        let (_, event) = stream.next_event().await;
        assert_eq!((event["type"].clone(), event["data"].clone()), (json!("engagement.updated"), json!({"description": "live"})));

        for (query, header) in [("after=-1", None), ("type=Bad", None), ("", Some("x"))] {
            let mut request = app.get(&format!("/api/v1/events/stream?{query}"));
            if let Some(value) = header {
                request = request.header("last-event-id", value);
            }
            assert_eq!(request.send().await.unwrap().status(), 400, "{query} {header:?}");
        }
    }

    async fn replay_then_live_has_no_gap_or_duplicate_at_the_seam(db) {
        let app = Arc::new(TestApp::spawn(db).await);
        let mut expected = HashSet::new();
        for i in 0..10 {
            expected.insert(create(&app, format!("Early {i}")).await);
        }
        // Writers keep writing while the stream replays and crosses into live.
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let app = app.clone();
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for i in 0..10 {
                        ids.push(create(&app, format!("Live {w}-{i}")).await);
                    }
                    ids
                })
            })
            .collect();
        let mut stream = SseClient::open(&app.client, &app.base, &app.key, "after=0&type=engagement.created", None).await;
        // Ten early events plus thirty from the writers: read exactly that many.
        let mut received = Vec::new();
        while received.len() < 40 {
            received.push(stream.next_event().await);
        }
        for writer in writers {
            expected.extend(writer.await.unwrap());
        }
        let positions: Vec<i64> = received.iter().map(|(id, _)| *id).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        let ids: HashSet<String> = received.iter().map(|(_, e)| e["resourceId"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids.len(), received.len(), "no duplicates");
        assert_eq!(ids, expected, "no gap");

        // A reconnect with Last-Event-ID (which wins over the URL's after) resumes right after it.
        let resume_at = positions[19];
        let mut resumed = SseClient::open(&app.client, &app.base, &app.key, "after=0&type=engagement.created", Some(resume_at)).await;
        let mut rest = Vec::new();
        while rest.len() < positions.len() - 20 {
            rest.push(resumed.next_event().await.0);
        }
        assert_eq!(rest, positions[20..].to_vec());
        let late = create(&app, "Late".to_owned()).await;
        assert_eq!(resumed.next_event().await.1["resourceId"], late.as_str());
    }

    async fn streams_end_cleanly_when_the_server_shuts_down(db) {
        let settings = settings(&db);
        let key = settings.bootstrap_api_key.clone().unwrap();
        let running = server::start(&settings).await.unwrap();
        let base = format!("http://{}", running.local_addr);
        let client = reqwest::Client::new();
        let mut stream = SseClient::open(&client, &base, &key, "", None).await;
        let stopping = tokio::spawn(running.shutdown());
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(message) = stream.next().await {
                assert!(matches!(message, Message::Comment(_)), "{message:?}");
            }
        })
        .await;
        assert!(ended.is_ok(), "the stream did not end on shutdown");
        tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("shutdown hung").unwrap().unwrap();
    }

    async fn a_stream_ends_when_its_key_is_revoked_or_expires(db) {
        let app = TestApp::spawn(db).await;
        let (_, created) =
            parts(app.post("/api/v1/api-keys", &json!({"name": "watcher", "permissions": ["audit:read"]})).send().await.unwrap()).await;
        let (key_id, secret) = (created["data"]["id"].as_str().unwrap(), created["data"]["key"].as_str().unwrap());
        let mut stream = SseClient::open(&app.client, &app.base, secret, "type=engagement.created", None).await;
        let before = create(&app, "Before revocation".to_owned()).await;
        assert_eq!(stream.next_event().await.1["resourceId"], before.as_str());
        let revoked = app.delete(&format!("/api/v1/api-keys/{key_id}")).send().await.unwrap();
        assert_eq!(revoked.status(), 204);
        create(&app, "After revocation".to_owned()).await;
        let error = stream.ends_with_error().await;
        assert_eq!((error["error"]["code"].as_str(), error["error"]["statusCode"].as_i64()), (Some("UNAUTHORIZED"), Some(401)), "{error}");
        assert_eq!(error["error"]["message"], "the API key has been revoked", "{error}");

        // Expiry ends an idle stream too, with no event to carry it.
        let expires = chrono::Utc::now() + chrono::Duration::milliseconds(3000);
        let body = json!({"name": "short-lived", "permissions": ["audit:read"], "expiresAt": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)});
        let created: Value = app.post("/api/v1/api-keys", &body).send().await.unwrap().json().await.unwrap();
        let mut stream = SseClient::open(&app.client, &app.base, created["data"]["key"].as_str().unwrap(), "", None).await;
        let error = stream.ends_with_error().await;
        assert_eq!(error["error"]["message"], "the API key has expired", "{error}");
        assert!(chrono::Utc::now() >= expires, "not before the expiry");
    }
}
