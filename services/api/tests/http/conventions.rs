//! SPEC §1 conventions: envelopes, IDs, timestamps, errors and their statuses, request ids,
//! authentication, permissions, organization scoping, rate limits.

use pwnbook_events::backend_tests;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{error_code, parts, TestApp};

fn is_id(value: &Value, prefix: &str) -> bool {
    value.as_str().is_some_and(|id| {
        id.len() == prefix.len() + 21
            && id.starts_with(prefix)
            && id[prefix.len() + 1..].bytes().all(|b| b"0123456789abcdefghjkmnpqrstvwxyz".contains(&b))
    })
}

fn is_timestamp(value: &Value) -> bool {
    value.as_str().is_some_and(|t| {
        t.len() == 24
            && t.ends_with('Z')
            && t.as_bytes()[19] == b'.'
            && chrono::DateTime::parse_from_rfc3339(t).is_ok()
    })
}

backend_tests! {
    async fn resources_have_the_documented_shape(db) {
        let app = TestApp::spawn(db).await;
        let created = app.create_engagement(json!({"name": "Shape", "tags": ["web"]})).await;
        assert!(is_id(&created["id"], "eng"), "{created}");
        assert!(is_timestamp(&created["createdAt"]));
        assert_eq!(created["createdAt"], created["updatedAt"]);
        assert_eq!(created["status"], "active");
        assert_eq!(created["version"], 1);
        assert_eq!(created["archivedAt"], Value::Null);
        let keys: Vec<&str> = created.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["id", "name", "description", "status", "clientName", "startDate", "endDate", "tags", "archivedAt", "createdAt", "updatedAt", "version"]
        );
        let response = app.get(&format!("/api/v1/engagements/{}", created["id"].as_str().unwrap())).send().await.unwrap();
        assert_eq!(response.headers()["etag"], "\"1\"");
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
        let (status, body) = parts(response).await;
        assert_eq!(status, 200);
        assert_eq!(body["data"], created);
    }

    async fn request_ids_are_echoed_or_generated(db) {
        let app = TestApp::spawn(db).await;
        let response = app.get("/api/v1/engagements").header("x-request-id", "client-chosen-42").send().await.unwrap();
        assert_eq!(response.headers()["x-request-id"], "client-chosen-42");
        let response = app.get("/api/v1/engagements/eng_00000000000000000000").send().await.unwrap();
        let generated = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(!generated.is_empty());
        let (status, body) = parts(response).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["requestId"], generated.as_str());
        let response = app.get("/healthz").send().await.unwrap();
        assert!(response.headers().contains_key("x-request-id"));
    }

    async fn authentication_failures_are_401_with_a_bearer_challenge(db) {
        let app = TestApp::spawn(db).await;
        let url = format!("{}/api/v1/engagements", app.base);
        let attempts = [
            app.client.get(&url),
            app.client.get(&url).bearer_auth("pwbk_live_wrongwrongwrongwrongwrongwrongwrong"),
            app.client.get(&url).header("authorization", "Basic dXNlcjpwYXNz"),
        ];
        for attempt in attempts {
            let response = attempt.send().await.unwrap();
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            assert!(response.headers().contains_key("x-ratelimit-limit"));
            let (status, body) = parts(response).await;
            assert_eq!(status, 401);
            assert_eq!(error_code(status, &body), "UNAUTHORIZED");
        }
        // The scheme's name is case-insensitive.
        for scheme in ["bearer", "BEARER", "bEaReR"] {
            let response = app.client.get(&url).header("authorization", format!("{scheme} {}", app.key)).send().await.unwrap();
            assert_eq!(response.status(), 200, "{scheme}");
        }
    }

    async fn permissions_are_enforced_per_route(db) {
        let app = TestApp::spawn(db).await;
        let id = app.create_engagement(json!({"name": "Perm"})).await["id"].as_str().unwrap().to_owned();
        let reader = app.key_with(&["engagements:read"]).await;
        let writer = app.key_with(&["engagements:write"]).await;
        let path = format!("/api/v1/engagements/{id}");
        let cases: Vec<(&str, Method, String, Option<Value>, u16)> = vec![
            (&reader, Method::GET, "/api/v1/engagements".to_owned(), None, 200),
            (&reader, Method::GET, path.clone(), None, 200),
            (&reader, Method::POST, "/api/v1/engagements".to_owned(), Some(json!({"name": "x"})), 403),
            (&reader, Method::PATCH, path.clone(), Some(json!({"name": "x"})), 403),
            (&reader, Method::POST, format!("{path}/archive"), None, 403),
            (&writer, Method::GET, path.clone(), None, 403),
            (&writer, Method::DELETE, path.clone(), None, 403),
            (&writer, Method::PATCH, path.clone(), Some(json!({"description": "ok"})), 200),
        ];
        for (key, method, path, body, expected) in cases {
            let mut request = app.request(method.clone(), &path, key);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let (status, body) = parts(request.send().await.unwrap()).await;
            assert_eq!(status, expected, "{method} {path}: {body}");
            if expected == 403 {
                assert_eq!(error_code(status, &body), "FORBIDDEN");
            }
        }
    }

    async fn another_organizations_resources_are_404(db) {
        let app = TestApp::spawn(db).await;
        let id = app.create_engagement(json!({"name": "Private"})).await["id"].as_str().unwrap().to_owned();
        let stranger = app.org_with_key(&["*"]).await;
        let path = format!("/api/v1/engagements/{id}");
        for (method, path, body) in [
            (Method::GET, path.clone(), None),
            (Method::PATCH, path.clone(), Some(json!({"name": "Mine now"}))),
            (Method::DELETE, path.clone(), None),
            (Method::POST, format!("{path}/archive"), None),
            (Method::POST, format!("{path}/unarchive"), None),
        ] {
            let mut request = app.request(method.clone(), &path, &stranger);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let (status, body) = parts(request.send().await.unwrap()).await;
            assert_eq!(status, 404, "{method} {path}");
            assert_eq!(error_code(status, &body), "NOT_FOUND");
        }
        let (_, list) = parts(app.request(Method::GET, "/api/v1/engagements", &stranger).send().await.unwrap()).await;
        assert_eq!(list["meta"]["total"], 0);
        // The same name is free in another organization.
        let response = app.request(Method::POST, "/api/v1/engagements", &stranger).json(&json!({"name": "Private"})).send().await.unwrap();
        assert_eq!(response.status(), 201);
    }

    async fn malformed_requests_are_400(db) {
        let app = TestApp::spawn(db).await;
        let url = format!("{}/api/v1/engagements", app.base);
        let bodies = ["{\"name\": ", "[1, 2]", "{\"name\": 5}", "{\"tags\": \"web\"}", "\"text\""];
        for body in bodies {
            let response = app.client.post(&url).bearer_auth(&app.key).header("content-type", "application/json").body(body).send().await.unwrap();
            let (status, json) = parts(response).await;
            assert_eq!((status, error_code(status, &json)), (400, "BAD_REQUEST".to_owned()), "{body}");
        }
        for query in [
            "page=0", "page=x", "perPage=0", "perPage=101", "sort=color", "order=up", "cursor=bm9wZQ", "status=open",
            "createdAfter=yesterday", "colour=red", "status=active&status=archived",
        ] {
            let (status, json) = parts(app.get(&format!("/api/v1/engagements?{query}")).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &json)), (400, "BAD_REQUEST".to_owned()), "{query}");
        }
    }

    async fn validation_failures_are_422_with_details(db) {
        let app = TestApp::spawn(db).await;
        let cases = [
            (json!({}), "name"),
            (json!({"name": "   "}), "name"),
            (json!({"name": "x".repeat(201)}), "name"),
            (json!({"name": "ok", "description": "d".repeat(10_001)}), "description"),
            (json!({"name": "ok", "startDate": "2025-02-30"}), "startDate"),
            (json!({"name": "ok", "startDate": "2025-02-01", "endDate": "2025-01-01"}), "endDate"),
            (json!({"name": "ok", "tags": vec!["t"; 51]}), "tags"),
            (json!({"name": "ok", "tags": ["x".repeat(51)]}), "tags"),
            (json!({"name": "ok", "status": "archived"}), "status"),
            (json!({"name": "ok", "owner": "me"}), "owner"),
        ];
        for (body, field) in cases {
            let (status, json) = parts(app.post("/api/v1/engagements", &body).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &json)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
            let fields: Vec<&str> = json["error"]["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
            assert!(fields.contains(&field), "{body} → {json}");
        }
        let id = app.create_engagement(json!({"name": "Patchable"})).await["id"].as_str().unwrap().to_owned();
        for body in [json!({"status": "archived"}), json!({"name": null}), json!({"name": ""})] {
            let (status, json) = parts(app.patch(&format!("/api/v1/engagements/{id}"), &body).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &json)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
        }
    }

    // No stored text can hold U+0000 (PostgreSQL refuses it, SQLite stops comparing at it): a
    // body's NUL is a 422 naming the field, a query string's a 400, a GraphQL document's or
    // variables' a 422, on both backends, and nothing is written.
    async fn texts_with_a_nul_character_are_refused_with_the_field(db) {
        let app = TestApp::spawn(db).await;
        let engagement = app.create_engagement(json!({"name": "Clean"})).await["id"].as_str().unwrap().to_owned();
        let findings = format!("/api/v1/engagements/{engagement}/findings");
        for (path, body, field) in [
            ("/api/v1/engagements".to_owned(), json!({"name": "a\u{0}b"}), "name"),
            ("/api/v1/engagements".to_owned(), json!({"name": "ok", "tags": ["x", "y\u{0}"]}), "tags[1]"),
            (findings.clone(), json!({"title": "t", "severity": "low", "references": ["\u{0}"]}), "references[0]"),
            (findings.clone(), json!({"title": "t\u{0}", "severity": "low"}), "title"),
        ] {
            let (status, json) = parts(app.post(&path, &body).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &json)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
            assert_eq!(json["error"]["details"][0]["field"], field, "{json}");
        }
        // A cursor is only encoded: one a client wrote with a NUL in it is refused too.
        use base64::Engine;
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({"s": "createdAt", "o": "desc", "f": [["q", "\u{0}"]], "v": 1, "i": "eng_x"}).to_string());
        let honest = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({"s": "createdAt", "o": "desc", "f": [["q", "x"]], "v": 1, "i": "eng_x"}).to_string());
        assert_eq!(parts(app.get(&format!("/api/v1/engagements?cursor={honest}")).send().await.unwrap()).await.0, 200);
        let forged_cursor = format!("/api/v1/engagements?cursor={forged}");
        for query in ["/api/v1/findings?q=%00x", "/api/v1/engagements?clientName=%00", "/api/v1/events?resourceId=a%00", forged_cursor.as_str()] {
            let (status, json) = parts(app.get(query).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &json)), (400, "BAD_REQUEST".to_owned()), "{query}: {json}");
        }
        let mutation = format!(
            "mutation($title: String!) {{ createFinding(engagementId: \"{engagement}\", input: {{title: $title, severity: \"low\"}}) {{ id }} }}"
        );
        let (status, json) = parts(app.post("/api/v1/graphql", &json!({"query": mutation, "variables": {"title": "t\u{0}"}})).send().await.unwrap()).await;
        assert_eq!((status, json["error"]["details"][0]["field"].as_str()), (422, Some("variables.title")), "{json}");
        let inline = format!("mutation {{ createFinding(engagementId: \"{engagement}\", input: {{title: \"t\\u0000\", severity: \"low\"}}) {{ id }} }}");
        let (status, json) = parts(app.post("/api/v1/graphql", &json!({"query": inline})).send().await.unwrap()).await;
        assert_eq!((status, json["error"]["details"][0]["field"].as_str()), (422, Some("query")), "{json}");
        let (_, list) = parts(app.get(&findings).send().await.unwrap()).await;
        assert_eq!(list["meta"]["total"], 0, "{list}");
    }

    // The actions take no body: none or `{}`. Anything else is refused as any body is (415,
    // 400, or 422 naming the field) and the action does not run.
    async fn actions_take_no_body_or_the_empty_object(db) {
        let app = TestApp::spawn(db).await;
        let engagement = app.create_engagement(json!({"name": "Acts"})).await["id"].as_str().unwrap().to_owned();
        let task = crate::tasks::create_task(&app, &engagement, json!({"title": "t"})).await["id"].as_str().unwrap().to_owned();
        let report = crate::reports::create_report(&app, &engagement, json!({"title": "r", "format": "markdown"})).await["id"].as_str().unwrap().to_owned();
        let send = |path: &str, content_type: Option<&str>, body: &'static str| {
            let mut request = app.request(Method::POST, path, &app.key);
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            request.body(body).send()
        };
        let actions = [
            format!("/api/v1/engagements/{engagement}/archive"),
            format!("/api/v1/engagements/{engagement}/unarchive"),
            format!("/api/v1/tasks/{task}/close"),
            format!("/api/v1/reports/{report}/generate"),
        ];
        for action in &actions {
            // A field is a 422, after what the action would meet anyway: the engagement is not
            // archived, so unarchiving it is a 409 first.
            let field = if action.ends_with("/unarchive") { (409, "CONFLICT") } else { (422, "VALIDATION_ERROR") };
            for (content_type, body, expected) in [
                (Some("application/json"), "{bad", (400, "BAD_REQUEST")),
                (Some("application/json"), "[]", (400, "BAD_REQUEST")),
                (Some("text/plain"), "close it", (415, "UNSUPPORTED_MEDIA_TYPE")),
                (None, "close it", (415, "UNSUPPORTED_MEDIA_TYPE")),
                (Some("application/json"), "{\"comment\": \"why\"}", field),
            ] {
                let (status, json) = parts(send(action, content_type, body).await.unwrap()).await;
                assert_eq!((status, error_code(status, &json).as_str()), expected, "{action} {body}: {json}");
            }
        }
        for (action, body) in actions.iter().zip(["", "{}", "null", "{ }"]) {
            let (status, json) = parts(send(action, Some("application/json"), body).await.unwrap()).await;
            assert_eq!(status, 200, "{action} {body:?}: {json}");
        }
        // A missing resource and a stale If-Match come before the field too.
        let (status, _) = parts(send("/api/v1/tasks/tsk_00000000000000000000/close", Some("application/json"), "{\"x\": 1}").await.unwrap()).await;
        assert_eq!(status, 404);
        let stale = app.request(Method::POST, &actions[0], &app.key).header("content-type", "application/json").header("if-match", "\"99\"").body("{\"x\": 1}").send().await.unwrap();
        assert_eq!(stale.status(), 412);
    }

    async fn bodies_must_be_json_and_within_the_limit(db) {
        let app = TestApp::spawn(db).await;
        let url = format!("{}/api/v1/engagements", app.base);
        let response = app.client.post(&url).bearer_auth(&app.key).header("content-type", "text/plain").body("{\"name\":\"x\"}").send().await.unwrap();
        let (status, json) = parts(response).await;
        assert_eq!((status, error_code(status, &json)), (415, "UNSUPPORTED_MEDIA_TYPE".to_owned()));
        let response = app.client.post(&url).bearer_auth(&app.key).body("{\"name\":\"x\"}").send().await.unwrap();
        assert_eq!(response.status(), 415);
        let huge = json!({"name": "big", "description": "x".repeat(1_100_000)});
        let (status, json) = parts(app.post("/api/v1/engagements", &huge).send().await.unwrap()).await;
        assert_eq!((status, error_code(status, &json)), (413, "PAYLOAD_TOO_LARGE".to_owned()));
    }

    async fn unknown_routes_and_methods_use_the_envelope(db) {
        let app = TestApp::spawn(db).await;
        let (status, json) = parts(app.get("/api/v1/nothing-here").send().await.unwrap()).await;
        assert_eq!((status, error_code(status, &json)), (404, "NOT_FOUND".to_owned()));
        let response = app.request(Method::PUT, "/api/v1/engagements", &app.key).send().await.unwrap();
        assert!(response.headers().contains_key("allow"));
        let (status, json) = parts(response).await;
        assert_eq!((status, error_code(status, &json)), (405, "METHOD_NOT_ALLOWED".to_owned()));
        for malformed in ["nope", "eng_short", "fnd_01j9k2m3n4p5q6r7s8t9", "eng_01J9K2M3N4P5Q6R7S8T9"] {
            let (status, _) = parts(app.get(&format!("/api/v1/engagements/{malformed}")).send().await.unwrap()).await;
            assert_eq!(status, 404, "{malformed}");
        }
    }

    async fn rate_limits_apply_per_key_with_headers_on_every_response(db) {
        let app = TestApp::spawn_with(db, |s| s.rate_limit_per_minute = std::num::NonZeroU32::new(5).unwrap()).await;
        let mut remaining = Vec::new();
        for _ in 0..5 {
            let response = app.get("/api/v1/engagements").send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["x-ratelimit-limit"], "5");
            let reset: u64 = response.headers()["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
            let now = chrono::Utc::now().timestamp() as u64;
            assert!(reset >= now && reset <= now + 61, "reset {reset} now {now}");
            remaining.push(response.headers()["x-ratelimit-remaining"].to_str().unwrap().to_owned());
        }
        assert_eq!(remaining, ["4", "3", "2", "1", "0"]);
        let response = app.get("/api/v1/engagements").send().await.unwrap();
        let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry_after));
        assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
        let (status, json) = parts(response).await;
        assert_eq!((status, error_code(status, &json)), (429, "RATE_LIMITED".to_owned()));
        // Another key has its own allowance; unauthenticated callers are limited by address.
        let other = app.key_with(&["engagements:read"]).await;
        let response = app.request(Method::GET, "/api/v1/engagements", &other).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-ratelimit-remaining"], "4");
        let response = app.client.get(format!("{}/api/v1/engagements", app.base)).send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["x-ratelimit-remaining"], "4");
    }
}

/// One keep-alive connection to the server, spoken to in raw HTTP/1.1.
struct RawConnection(tokio::net::TcpStream);

impl RawConnection {
    async fn open(base: &str) -> Self {
        Self(tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.unwrap())
    }

    async fn send(&mut self, text: &str) {
        use tokio::io::AsyncWriteExt;
        self.0.write_all(text.as_bytes()).await.unwrap();
    }

    /// The next answer's head and body, lower-cased; empty when the server closed the
    /// connection, `None` when nothing came within `wait`.
    async fn answer(&mut self, wait: std::time::Duration) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let mut answer = vec![0; 8192];
        let n = tokio::time::timeout(wait, self.0.read(&mut answer)).await.ok()?.unwrap_or(0);
        Some(String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase())
    }
}

backend_tests! {
    async fn an_unread_body_is_drained_or_the_connection_closed(db) {
        let app = TestApp::spawn(db).await;
        let host = app.base.trim_start_matches("http://").to_owned();
        let body = r#"{"name":"x"}"#;
        let head = |method: &str, path: &str, key: &str, length: usize| {
            format!(
                "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\
                 Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
            )
        };
        let bad_key = "pwbk_live_notakeynotakeynotakeynotakeyxx";
        let long = std::time::Duration::from_secs(10);
        // A key refused from the headers alone, the body sent just after them (as clients that
        // write headers and body apart do): the body is read and dropped, and the connection
        // serves the next request.
        let mut connection = RawConnection::open(&app.base).await;
        connection.send(&head("POST", "/api/v1/engagements", bad_key, body.len())).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        connection.send(body).await;
        let refused = connection.answer(long).await.unwrap();
        assert!(refused.starts_with("http/1.1 401") && !refused.contains("connection: close"), "{refused}");
        connection.send(&format!("{}{body}", head("POST", "/api/v1/engagements", &app.key, body.len()))).await;
        let created = connection.answer(long).await.unwrap();
        assert!(created.starts_with("http/1.1 201"), "the connection still serves: {created}");
        // A body the answer does not read (a DELETE's) is drained as well.
        let id = created.split("\"id\":\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        connection.send(&format!("{}{{}}", head("DELETE", &format!("/api/v1/engagements/{id}"), &app.key, 2))).await;
        let deleted = connection.answer(long).await.unwrap();
        assert!(deleted.starts_with("http/1.1 204") && !deleted.contains("connection: close"), "{deleted}");

        // A body declared over the limit is refused from its length, before any of it comes.
        let mut connection = RawConnection::open(&app.base).await;
        connection.send(&head("POST", "/api/v1/engagements", &app.key, 2_000_000)).await;
        let refused = connection.answer(long).await.expect("answered without the body");
        assert!(refused.starts_with("http/1.1 413"), "{refused}");
        assert!(refused.contains("\r\nconnection: close\r\n") && refused.contains("x-request-id"), "{refused}");

        // A body that does not come, or is too large to drain: the answer closes the connection.
        for length in [body.len(), 1024 * 1024] {
            let mut connection = RawConnection::open(&app.base).await;
            connection.send(&head("POST", "/api/v1/engagements", bad_key, length)).await;
            let refused = connection.answer(long).await.unwrap();
            assert!(refused.starts_with("http/1.1 401"), "{refused}");
            assert!(refused.contains("\r\nconnection: close\r\n"), "{length}: {refused}");
            assert_eq!(connection.answer(long).await.as_deref(), Some(""), "the server closed it");
        }
    }
}

/// The fields a 422 names, in order.
fn invalid_fields(status: u16, body: &Value) -> Vec<String> {
    assert_eq!((status, error_code(status, body)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
    body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap().to_owned())
        .collect()
}

backend_tests! {
    async fn an_unknown_field_is_named_with_every_other_invalid_field(db) {
        let app = TestApp::spawn(db).await;
        let engagement = app.create_engagement(json!({"name": "Fields"})).await["id"].as_str().unwrap().to_owned();
        let child = |kind: &str| format!("/api/v1/engagements/{engagement}/{kind}");
        let mut created = Vec::new();
        for (path, valid, invalid, expected) in [
            ("/api/v1/engagements".to_owned(), json!({"name": "Valid"}), json!({"name": "", "status": "archived", "bogus": 1}), vec!["bogus", "status", "name"]),
            (child("targets"), json!({"type": "domain", "value": "example.com"}), json!({"type": "nope", "value": "example.org", "bogus": 1}), vec!["bogus", "type"]),
            (child("findings"), json!({"title": "Valid", "severity": "low"}), json!({"title": "", "severity": "nope", "status": "closed", "bogus": 1}), vec!["bogus", "status", "title", "severity"]),
            (child("tasks"), json!({"title": "Valid"}), json!({"title": "", "priority": "x", "dueDate": "2025-13-01", "bogus": 1}), vec!["bogus", "title", "priority", "dueDate"]),
            (child("wiki"), json!({"title": "Valid"}), json!({"title": "", "bogus": 1}), vec!["bogus", "title"]),
            (child("reports"), json!({"title": "Valid"}), json!({"title": "", "format": "nope", "bogus": 1}), vec!["bogus", "title", "format"]),
        ] {
            let (status, body) = parts(app.post(&path, &invalid).send().await.unwrap()).await;
            let mut fields = invalid_fields(status, &body);
            let mut expected: Vec<String> = expected.into_iter().map(str::to_owned).collect();
            fields.sort();
            expected.sort();
            assert_eq!(fields, expected, "POST {path}: {body}");
            let (status, body) = parts(app.post(&path, &valid).send().await.unwrap()).await;
            assert_eq!(status, 201, "{body}");
            created.push(body["data"]["id"].as_str().unwrap().to_owned());
        }
        let resources = ["engagements", "targets", "findings", "tasks", "wiki", "reports"];
        for (resource, id) in resources.iter().zip(&created) {
            let path = format!("/api/v1/{resource}/{id}");
            // Alone, an unknown field is still a 422 (not a change of nothing), and writes nothing.
            let (status, body) = parts(app.patch(&path, &json!({"bogus": 1})).send().await.unwrap()).await;
            assert_eq!(invalid_fields(status, &body), ["bogus"], "PATCH {path}");
            let invalid = if *resource == "targets" { json!({"type": "nope", "createdAt": 1}) } else { json!({"title": "", "createdAt": 1}) };
            let wanted = if *resource == "engagements" { "name" } else if *resource == "targets" { "type" } else { "title" };
            let invalid = if *resource == "engagements" { json!({"name": "", "createdAt": 1}) } else { invalid };
            let (status, body) = parts(app.patch(&path, &invalid).send().await.unwrap()).await;
            let fields = invalid_fields(status, &body);
            assert!(fields.contains(&"createdAt".to_owned()) && fields.contains(&wanted.to_owned()), "PATCH {path}: {body}");
            let (_, current) = parts(app.get(&path).send().await.unwrap()).await;
            assert_eq!(current["data"]["version"], 1, "nothing was written: {current}");
        }
        // A required field left out is named with the others too.
        for (path, body, expected) in [
            (child("tasks"), json!({"priority": "x", "dueDate": "2025-13-01"}), vec!["dueDate", "priority", "title"]),
            (child("targets"), json!({"value": "example.net", "port": 70000}), vec!["port", "type"]),
            (child("targets"), json!({"type": "ip", "value": "999.1.1.1", "port": 0}), vec!["port", "value"]),
            (child("wiki"), json!({"title": "", "slug": "Bad Slug!"}), vec!["slug", "title"]),
            (format!("/api/v1/tasks/{}", created[3]), json!({"title": null, "priority": "x"}), vec!["priority", "title"]),
            (format!("/api/v1/reports/{}", created[5]), json!({"title": null, "format": "nope"}), vec!["format", "title"]),
        ] {
            let created_here = path.ends_with("tasks") || path.ends_with("targets") || path.ends_with("wiki");
            let request = if created_here { app.post(&path, &body) } else { app.patch(&path, &body) };
            let (status, answer) = parts(request.send().await.unwrap()).await;
            let mut fields = invalid_fields(status, &answer);
            fields.sort();
            assert_eq!(fields, expected, "{path}: {answer}");
        }
        // What the route checks (the targets exist, `cvss` is an object) and what the command
        // checks (the severity) are named together.
        let finding = format!("/api/v1/findings/{}", created[2]);
        let patch = json!({"affectedTargetIds": ["tgt_01j9k2m3n4p5q6r7s8t9"], "severity": "nope", "title": null, "bogus": 1});
        let (status, body) = parts(app.patch(&finding, &patch).send().await.unwrap()).await;
        let mut fields = invalid_fields(status, &body);
        fields.sort();
        assert_eq!(fields, ["affectedTargetIds", "bogus", "severity", "title"], "{body}");
        let (status, body) = parts(app.patch(&finding, &json!({"cvss": {}, "severity": "nope"})).send().await.unwrap()).await;
        let mut fields = invalid_fields(status, &body);
        fields.sort();
        assert_eq!(fields, ["cvss.vector", "severity"], "{body}");
        // The resources outside engagements: an otherwise valid body with an unknown field.
        let hook = json!({"url": "https://93.184.216.34/hook", "events": ["finding.*"]});
        let (status, body) = parts(app.post("/api/v1/webhooks", &hook).send().await.unwrap()).await;
        assert_eq!(status, 201, "{body}");
        let webhook = format!("/api/v1/webhooks/{}", body["data"]["id"].as_str().unwrap());
        let (status, body) = parts(app.post("/api/v1/webhooks", &json!({"url": "https://93.184.216.34/other", "events": ["finding.*"], "bogus": 1})).send().await.unwrap()).await;
        assert_eq!(invalid_fields(status, &body), ["bogus"]);
        let (status, body) = parts(app.patch(&webhook, &json!({"events": ["task.*"], "bogus": 1})).send().await.unwrap()).await;
        assert_eq!(invalid_fields(status, &body), ["bogus"]);
        // A field that cannot be cleared is named when sent as null (not ignored).
        let (status, body) = parts(app.patch(&webhook, &json!({"url": null, "events": null, "secret": null})).send().await.unwrap()).await;
        assert_eq!(invalid_fields(status, &body), ["url", "events", "secret"]);
        let (status, body) = parts(app.patch("/api/v1/organizations/current", &json!({"name": null})).send().await.unwrap()).await;
        assert_eq!(invalid_fields(status, &body), ["name"]);
        let (_, answer) = crate::graphql::gql_with(&app, &app.key, &format!("mutation {{ updateWebhook(id: \"{}\", input: {{url: null}}) {{ id }} }}", webhook.rsplit('/').next().unwrap()), json!({})).await;
        assert_eq!(answer["errors"][0]["extensions"]["details"][0]["field"], "url", "{answer}");
        let (status, body) = parts(app.post("/api/v1/api-keys", &json!({"name": "k", "permissions": ["audit:read"], "bogus": 1})).send().await.unwrap()).await;
        assert_eq!(invalid_fields(status, &body), ["bogus"]);
        let (status, body) = parts(app.patch("/api/v1/organizations/current", &json!({"name": "Renamed", "bogus": 1})).send().await.unwrap()).await;
        assert_eq!(invalid_fields(status, &body), ["bogus"]);
        let (_, keys) = parts(app.get("/api/v1/api-keys").send().await.unwrap()).await;
        assert_eq!(keys["meta"]["total"], 1, "no key was created: {keys}");
        let (_, organization) = parts(app.get("/api/v1/organizations/current").send().await.unwrap()).await;
        assert_ne!(organization["data"]["name"], "Renamed", "{organization}");
        // A PATCH of nothing still checks If-Match: strongly, so a weak tag is a 412.
        let (status, _) = parts(app.patch("/api/v1/organizations/current", &json!({})).header("if-match", "W/\"1\"").send().await.unwrap()).await;
        assert_eq!(status, 412);
        let (status, _) = parts(app.patch("/api/v1/organizations/current", &json!({})).header("if-match", "\"9\"").send().await.unwrap()).await;
        assert_eq!(status, 412);

        // What a request with a refused field would also have met comes first: a taken name,
        // an archived engagement.
        let (status, body) = parts(app.post("/api/v1/engagements", &json!({"name": "Valid", "bogus": 1})).send().await.unwrap()).await;
        assert_eq!((status, error_code(status, &body)), (409, "CONFLICT".to_owned()), "{body}");
        let (status, body) = parts(app.post(&format!("/api/v1/engagements/{engagement}/archive"), &json!({})).send().await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        for (path, body) in [
            (child("findings"), json!({"title": "Late", "severity": "low", "bogus": 1})),
            (format!("/api/v1/findings/{}", created[2]), json!({"title": "Late", "bogus": 1})),
            (child("tasks"), json!({"title": "Late", "bogus": 1})),
        ] {
            let request = if path.contains("/engagements/") { app.post(&path, &body) } else { app.patch(&path, &body) };
            let (status, answer) = parts(request.send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &answer)), (409, "CONFLICT".to_owned()), "{path}: {answer}");
        }
    }
}
