//! The GraphQL subscription `events` over WebSocket (graphql-transport-ws): the key in the
//! `connection_init` payload, REST's filters, replay from a position then live from the log
//! without loss or duplicate, resume after the last position received, and a clean end when
//! the server shuts down.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pwnbook_api::server;
use pwnbook_events::backend_tests;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::harness::{settings, TestApp};

const WAIT: Duration = Duration::from_secs(30);

/// What the server sent.
#[derive(Debug)]
enum Frame {
    Json(Value),
    Closed(Option<u16>),
}

struct Ws(WebSocketStream<MaybeTlsStream<TcpStream>>);

impl Ws {
    async fn open(base: &str, protocol: &str) -> Self {
        let url = format!("{}/api/v1/graphql", base.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", protocol.parse().unwrap());
        let (stream, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
        Self(stream)
    }

    /// A connection whose `connection_init` carried `payload`, acknowledged.
    async fn init(base: &str, payload: Value) -> Self {
        let mut ws = Self::open(base, "graphql-transport-ws").await;
        ws.send(json!({"type": "connection_init", "payload": payload})).await;
        match ws.next().await {
            Frame::Json(message) => assert_eq!(message["type"], "connection_ack", "{message}"),
            other => panic!("not acknowledged: {other:?}"),
        }
        ws
    }

    async fn send(&mut self, message: Value) {
        self.0.send(Message::Text(message.to_string().into())).await.unwrap();
    }

    async fn next(&mut self) -> Frame {
        loop {
            let message = tokio::time::timeout(WAIT, self.0.next()).await.expect("the socket stalled");
            match message {
                Some(Ok(Message::Text(text))) => return Frame::Json(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(frame))) => return Frame::Closed(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Frame::Closed(None),
            }
        }
    }

    async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(
            json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}}),
        )
        .await;
    }

    /// The next event of subscription `id`: `(position, resourceId)`.
    async fn event(&mut self, id: &str) -> (i64, String) {
        match self.next().await {
            Frame::Json(message) => {
                assert_eq!(
                    (message["type"].as_str(), message["id"].as_str()),
                    (Some("next"), Some(id)),
                    "{message}"
                );
                let event = &message["payload"]["data"]["events"];
                (event["position"].as_i64().unwrap(), event["resourceId"].as_str().unwrap().to_owned())
            }
            other => panic!("expected an event: {other:?}"),
        }
    }
}

const EVENTS: &str = "subscription($after: Int, $filter: EventFilterInput) {
    events(after: $after, filter: $filter) { position type resourceId } }";

async fn create(app: &TestApp, name: String) -> String {
    app.create_engagement(json!({ "name": name })).await["id"].as_str().unwrap().to_owned()
}

backend_tests! {
    async fn the_events_subscription_replays_then_follows_the_log(db) {
        let app = Arc::new(TestApp::spawn(db).await);
        let mut expected = HashSet::new();
        for i in 0..10 {
            expected.insert(create(&app, format!("Early {i}")).await);
        }
        // Writers keep writing while the subscription replays and crosses into live.
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
        let mut ws = Ws::init(&app.base, json!({"apiKey": app.key})).await;
        ws.subscribe("1", EVENTS, json!({"after": 0, "filter": {"type": ["engagement.created"]}})).await;
        let mut received = Vec::new();
        while received.len() < 40 {
            received.push(ws.event("1").await);
        }
        for writer in writers {
            expected.extend(writer.await.unwrap());
        }
        let positions: Vec<i64> = received.iter().map(|(p, _)| *p).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        let ids: HashSet<String> = received.iter().map(|(_, id)| id.clone()).collect();
        assert_eq!(ids.len(), received.len(), "no duplicates");
        assert_eq!(ids, expected, "no gap");

        // Resuming after the last position received gives exactly the rest (the key may also
        // come as an Authorization header value), then goes live.
        let mut resumed = Ws::init(&app.base, json!({"Authorization": format!("Bearer {}", app.key)})).await;
        resumed.subscribe("r", EVENTS, json!({"after": positions[19], "filter": {"type": ["engagement.created"]}})).await;
        let mut rest = Vec::new();
        while rest.len() < 20 {
            rest.push(resumed.event("r").await.0);
        }
        assert_eq!(rest, positions[20..].to_vec());
        let late = create(&app, "Late".to_owned()).await;
        assert_eq!(resumed.event("r").await.1, late);
        assert_eq!(ws.event("1").await.1, late, "the first subscription is live too");

        // Without a position it starts at the head; REST's filters apply.
        let mut tail = Ws::init(&app.base, json!({"apiKey": app.key})).await;
        tail.subscribe("t", EVENTS, json!({"filter": {"resourceId": [late]}})).await;
        app.create_engagement(json!({"name": "Unrelated"})).await;
        app.patch(&format!("/api/v1/engagements/{late}"), &json!({"description": "d"})).send().await.unwrap();
        match tail.next().await {
            Frame::Json(message) => assert_eq!(message["payload"]["data"]["events"]["type"], "engagement.updated", "{message}"),
            other => panic!("{other:?}"),
        }
        // Completing a subscription is acknowledged.
        tail.send(json!({"id": "t", "type": "complete"})).await;
    }

    async fn subscriptions_need_a_key_with_audit_read(db) {
        let app = TestApp::spawn(db).await;
        // No key, a bad key, a revoked one: the connection is refused with 4403.
        let revoked = app.key_with(&["*"]).await;
        let keys: Vec<Value> = app.get("/api/v1/api-keys").send().await.unwrap().json::<Value>().await.unwrap()["data"].as_array().unwrap().clone();
        let id = keys.iter().find(|k| revoked.ends_with(k["lastFour"].as_str().unwrap())).unwrap()["id"].as_str().unwrap().to_owned();
        app.delete(&format!("/api/v1/api-keys/{id}")).send().await.unwrap();
        for payload in [json!({}), json!({"apiKey": "pwbk_live_notakeynotakeynotakeynotakeynotakey"}), json!({"apiKey": revoked}), json!({"Authorization": "Basic x"})] {
            let mut ws = Ws::open(&app.base, "graphql-transport-ws").await;
            ws.send(json!({"type": "connection_init", "payload": payload})).await;
            match ws.next().await {
                Frame::Closed(code) => assert_eq!(code, Some(4403), "{payload}"),
                other => panic!("{payload}: {other:?}"),
            }
        }
        // A socket that never says connection_init is closed with 4408 (after 10 s).
        let mut silent = Ws::open(&app.base, "graphql-transport-ws").await;
        let waiting = tokio::spawn(async move { silent.next().await });
        // Subscribing before the handshake is refused.
        let mut early = Ws::open(&app.base, "graphql-transport-ws").await;
        early.subscribe("1", EVENTS, json!({})).await;
        assert!(matches!(early.next().await, Frame::Closed(Some(code)) if code != 1000));

        // A key without audit:read: the subscription fails with FORBIDDEN (the connection stays).
        let reader = app.key_with(&["engagements:read"]).await;
        let mut ws = Ws::init(&app.base, json!({"apiKey": reader})).await;
        ws.subscribe("1", EVENTS, json!({})).await;
        match ws.next().await {
            Frame::Json(message) => {
                assert_eq!(message["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN", "{message}");
                assert_eq!(message["payload"]["errors"][0]["path"], json!(["events"]));
            }
            other => panic!("{other:?}"),
        }
        // Bad filters are REST's 400s.
        let mut admin = Ws::init(&app.base, json!({"apiKey": app.key})).await;
        admin.subscribe("2", EVENTS, json!({"after": -1})).await;
        match admin.next().await {
            Frame::Json(message) => assert_eq!(message["payload"]["errors"][0]["extensions"]["code"], "BAD_REQUEST", "{message}"),
            other => panic!("{other:?}"),
        }
        admin.subscribe("3", EVENTS, json!({"filter": {"type": ["Bad"]}})).await;
        let mut seen = Vec::new();
        while seen.len() < 3 {
            match admin.next().await {
                Frame::Json(message) => seen.push(message),
                other => panic!("{other:?}"),
            }
        }
        assert!(seen.iter().any(|m| m["id"] == "3" && m["payload"]["errors"][0]["extensions"]["code"] == "BAD_REQUEST"), "{seen:?}");
        match waiting.await.unwrap() {
            Frame::Closed(code) => assert_eq!(code, Some(4408)),
            other => panic!("{other:?}"),
        }
        // An unknown protocol is not upgraded.
        let url = format!("{}/api/v1/graphql", app.base.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", "chat".parse().unwrap());
        assert!(tokio_tungstenite::connect_async(request).await.is_err());
    }

    async fn subscriptions_end_when_the_server_shuts_down(db) {
        let settings = settings(&db);
        let key = settings.bootstrap_api_key.clone().unwrap();
        let running = server::start(&settings).await.unwrap();
        let base = format!("http://{}", running.local_addr);
        let mut ws = Ws::init(&base, json!({"apiKey": key})).await;
        ws.subscribe("1", EVENTS, json!({})).await;
        let stopping = tokio::spawn(running.shutdown());
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match ws.next().await {
                    Frame::Closed(code) => return code,
                    Frame::Json(message) => assert_eq!(message["type"], "complete", "{message}"),
                }
            }
        })
        .await;
        assert_eq!(ended.expect("the connection did not end on shutdown"), Some(u16::from(CloseCode::Away)));
        tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("shutdown hung").unwrap().unwrap();
    }
}
