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

use crate::graphql::gql;
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

    /// The next event of subscription `id`: `(position, resourceId)` (the `complete` of an
    /// operation that ended before is skipped).
    async fn event(&mut self, id: &str) -> (i64, String) {
        let message = self.answer().await;
        assert_eq!((message["type"].as_str(), message["id"].as_str()), (Some("next"), Some(id)), "{message}");
        let event = &message["payload"]["data"]["events"];
        (event["position"].as_i64().unwrap(), event["resourceId"].as_str().unwrap().to_owned())
    }

    /// The next message that is not a `complete`.
    async fn answer(&mut self) -> Value {
        loop {
            match self.next().await {
                Frame::Json(message) if message["type"] == "complete" => {}
                Frame::Json(message) => return message,
                Frame::Closed(code) => panic!("closed: {code:?}"),
            }
        }
    }

    /// The next refusal of an operation: its id and error.
    async fn refusal(&mut self) -> (String, Value) {
        let message = self.answer().await;
        let errors =
            if message["type"] == "error" { &message["payload"] } else { &message["payload"]["errors"] };
        assert!(errors[0].is_object(), "{message}");
        (message["id"].as_str().unwrap().to_owned(), errors[0].clone())
    }
}

/// Revokes `key` with the admin key.
async fn revoke(app: &TestApp, key: &str) {
    let keys: Vec<Value> = app.get("/api/v1/api-keys").send().await.unwrap().json::<Value>().await.unwrap()
        ["data"]
        .as_array()
        .unwrap()
        .clone();
    let id = keys.iter().find(|k| key.ends_with(k["lastFour"].as_str().unwrap())).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = app.delete(&format!("/api/v1/api-keys/{id}")).send().await.unwrap();
    assert!(response.status().is_success());
}

/// The code the connection closes with; no event may come before (an operation's refusal may).
async fn closed(ws: &mut Ws) -> Option<u16> {
    loop {
        match ws.next().await {
            Frame::Closed(code) => return code,
            Frame::Json(message) => assert!(message["payload"]["data"]["events"].is_null(), "{message}"),
        }
    }
}

const EVENTS: &str = "subscription($after: Int, $filter: EventFilterInput) {
    events(after: $after, filter: $filter) { position type resourceId } }";

/// The log's head as the feed reports it: a subscription from there sees every later event,
/// whereas one without `after` starts wherever the head is when the server gets to it.
async fn head(app: &TestApp) -> i64 {
    let mut after = 0;
    loop {
        let page: Value = app
            .get(&format!("/api/v1/events?after={after}&limit=1000"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        after = page["meta"]["nextAfter"].as_i64().unwrap();
        if page["meta"]["hasMore"] == false {
            return after;
        }
    }
}

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
        // Writers start once the first replayed event arrived, and keep writing while the
        // subscription replays and crosses into live.
        let (go, started) = tokio::sync::watch::channel(false);
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let (app, mut started) = (app.clone(), started.clone());
                tokio::spawn(async move {
                    started.wait_for(|go| *go).await.unwrap();
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
        let mut received = vec![ws.event("1").await];
        go.send_replace(true);
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
        // The server may start the subscription after a write that follows the subscribe
        // message; a later one is seen, and never `late`'s creation.
        let mut first = None;
        for n in 0..20 {
            app.patch(&format!("/api/v1/engagements/{late}"), &json!({"description": format!("d{n}")})).send().await.unwrap();
            if let Ok(frame) = tokio::time::timeout(Duration::from_millis(500), tail.next()).await {
                first = Some(frame);
                break;
            }
        }
        match first {
            Some(Frame::Json(message)) => assert_eq!(message["payload"]["data"]["events"]["type"], "engagement.updated", "{message}"),
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
        // A NUL, which no stored text holds, is refused too (the socket's variables never pass
        // the HTTP body's check).
        admin.subscribe("4", EVENTS, json!({"filter": {"actorId": ["key_\u{0}"]}})).await;
        let (id, error) = admin.refusal().await;
        assert_eq!((id.as_str(), &error["extensions"]["code"]), ("4", &json!("BAD_REQUEST")), "{error}");
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

    async fn a_socket_runs_only_subscriptions_and_stops_with_its_key(db) {
        let app = TestApp::spawn(db).await;
        let key = app.key_with(&["*"]).await;
        let mut ws = Ws::init(&app.base, json!({"apiKey": key})).await;
        // Queries and mutations go over HTTP (where each is a request, with its rate limit and
        // its request id); every refusal carries a request id of its own.
        let mut request_ids = HashSet::new();
        for (id, document) in [("q", "{ engagements { totalCount } }"), ("m", "mutation { createEngagement(input: {name: \"Socket\"}) { id } }")] {
            ws.subscribe(id, document, json!({})).await;
            let (refused, error) = ws.refusal().await;
            assert_eq!(refused, id);
            let message = &error;
            assert_eq!(error["extensions"]["code"], "BAD_REQUEST", "{message}");
            assert!(error["message"].as_str().unwrap().contains("only subscriptions"), "{message}");
            let request_id = error["extensions"]["requestId"].as_str().unwrap().to_owned();
            assert!(request_id.starts_with("req_"), "{message}");
            request_ids.insert(request_id);
        }
        assert_eq!(request_ids.len(), 2, "one request id per operation");
        assert_eq!(gql(&app, "{ engagements(filter: {q: \"socket\"}) { totalCount } }", json!({})).await["engagements"]["totalCount"], 0);

        // A subscription runs until its key is revoked: the connection closes with 4403.
        ws.subscribe("1", EVENTS, json!({"after": head(&app).await})).await;
        let created = create(&app, "Seen".to_owned()).await;
        assert_eq!(ws.event("1").await.1, created);
        revoke(&app, &key).await;
        create(&app, "Not seen".to_owned()).await;
        assert_eq!(closed(&mut ws).await, Some(4403));

        // A `subscribe` checks the key again too (here no event would).
        let other = app.key_with(&["*"]).await;
        let mut idle = Ws::init(&app.base, json!({"apiKey": other})).await;
        revoke(&app, &other).await;
        idle.subscribe("2", EVENTS, json!({"filter": {"resourceId": ["eng_none"]}})).await;
        assert_eq!(closed(&mut idle).await, Some(4403));
    }

    async fn a_socket_runs_at_most_sixteen_subscriptions(db) {
        let app = TestApp::spawn(db).await;
        let mut ws = Ws::init(&app.base, json!({"apiKey": app.key})).await;
        for i in 1..=17 {
            ws.subscribe(&i.to_string(), EVENTS, json!({})).await;
        }
        // They start concurrently: one of them, whichever came last, is refused.
        let (refused, error) = ws.refusal().await;
        assert_eq!(error["extensions"]["code"], "BAD_REQUEST", "{error}");
        assert!(error["message"].as_str().unwrap().contains("at most 16"), "{error}");
        // Completing one gives its place back.
        let done = if refused == "1" { "2" } else { "1" };
        ws.send(json!({"id": done, "type": "complete"})).await;
        let created = create(&app, "After".to_owned()).await;
        ws.subscribe("18", EVENTS, json!({"after": 0, "filter": {"resourceId": [created]}})).await;
        loop {
            let message = ws.answer().await;
            assert_eq!(message["type"], "next", "{message}");
            assert!(message["id"] != done && message["id"] != refused.as_str(), "{message}");
            if message["id"] == "18" {
                assert_eq!(message["payload"]["data"]["events"]["resourceId"], created.as_str());
                break;
            }
        }
    }

    async fn a_socket_is_held_to_the_rate_limit(db) {
        // Each operation over the socket is charged to the key's bucket, as a request is.
        let limited = TestApp::spawn_with(db, |s| s.rate_limit_per_minute = std::num::NonZeroU32::new(3).unwrap()).await;
        let key = limited.key_with(&["*"]).await;
        let mut ws = Ws::init(&limited.base, json!({"apiKey": key})).await;
        for id in ["1", "2", "3", "4"] {
            ws.subscribe(id, EVENTS, json!({})).await;
        }
        // They start concurrently: one of them, whichever came last, is refused.
        let (_, error) = ws.refusal().await;
        assert_eq!(error["extensions"]["code"], "RATE_LIMITED", "{error}");
        assert_eq!(error["extensions"]["statusCode"], 429, "{error}");
    }

    async fn a_subscription_sees_only_its_organization(db) {
        let app = TestApp::spawn(db).await;
        let ours = create(&app, "Ours".to_owned()).await;
        let stranger = app.org_with_key(&["*"]).await;
        let mut ws = Ws::init(&app.base, json!({"apiKey": stranger})).await;
        // From the start of the log: replay and live show the stranger's events only.
        ws.subscribe("s", EVENTS, json!({"after": 0, "filter": {"type": ["engagement.created"]}})).await;
        create(&app, "Ours later".to_owned()).await;
        let (status, body) = crate::graphql::gql_with(&app, &stranger, "mutation { createEngagement(input: {name: \"Theirs\"}) { id } }", json!({})).await;
        assert_eq!(status, 200, "{body}");
        let theirs = body["data"]["createEngagement"]["id"].as_str().unwrap().to_owned();
        let (_, first) = ws.event("s").await;
        assert_ne!(first, ours);
        assert_eq!(first, theirs);
    }

    async fn a_subscription_ends_when_its_key_expires(db) {
        let app = TestApp::spawn(db).await;
        // Long enough for the first event to arrive before expiry on a loaded machine.
        let expires = chrono::Utc::now() + chrono::Duration::milliseconds(4000);
        let body = json!({"name": "short-lived", "permissions": ["audit:read"], "expiresAt": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)});
        let created: Value = app.post("/api/v1/api-keys", &body).send().await.unwrap().json().await.unwrap();
        let secret = created["data"]["key"].as_str().unwrap().to_owned();
        let mut ws = Ws::init(&app.base, json!({"apiKey": secret})).await;
        ws.subscribe("1", EVENTS, json!({"after": head(&app).await, "filter": {"type": ["engagement.created"]}})).await;
        let before = create(&app, "Before expiry".to_owned()).await;
        assert_eq!(ws.event("1").await.1, before);
        // Once the key has expired (REST refuses it), the next event closes the socket instead.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while app.request(reqwest::Method::GET, "/api/v1/events", &secret).send().await.unwrap().status() != 401 {
            assert!(tokio::time::Instant::now() < deadline, "the key never expired");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        create(&app, "After expiry".to_owned()).await;
        assert_eq!(closed(&mut ws).await, Some(4403));
    }
}
