//! GraphQL beside REST (issue 6): every query reads what the REST route reads, field for field,
//! and every list returns the same ids in the same order; the schema is served and committed.
//! Helpers shared by the other `graphql_*` modules live here.

use reqwest::Method;
use serde_json::{json, Value};

use pwnbook_events::backend_tests;

use crate::findings::create_finding;
use crate::harness::{error_code, parts, TestApp};
use crate::reports::create_report;
use crate::targets::create_target;
use crate::tasks::create_task;
use crate::wiki::create_page;

const COMMITTED_SDL: &str = include_str!("../../schema.graphql");

/// Runs a GraphQL document with `key`; the HTTP status and body.
pub async fn gql_with(app: &TestApp, key: &str, query: &str, variables: Value) -> (u16, Value) {
    let body = json!({ "query": query, "variables": variables });
    parts(app.request(Method::POST, "/api/v1/graphql", key).json(&body).send().await.unwrap()).await
}

/// Runs a document with the admin key and returns `data`, asserting there was no error.
pub async fn gql(app: &TestApp, query: &str, variables: Value) -> Value {
    let (status, body) = gql_with(app, &app.key, query, variables).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{query}: {body}");
    body["data"].clone()
}

/// `(path, code)` of every error of a GraphQL answer.
pub fn errors(body: &Value) -> Vec<(String, String)> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    let path: Vec<String> = e["path"]
                        .as_array()
                        .map(|p| {
                            p.iter()
                                .map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    (path.join("."), e["extensions"]["code"].as_str().unwrap_or("-").to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The single error code of an answer.
pub fn only_code(body: &Value) -> String {
    let all = errors(body);
    assert_eq!(all.len(), 1, "{body}");
    all[0].1.clone()
}

/// A REST GET's `data`.
pub async fn rest(app: &TestApp, path: &str) -> Value {
    let (status, body) = parts(app.get(path).send().await.unwrap()).await;
    assert_eq!(status, 200, "{path}: {body}");
    body["data"].clone()
}

/// The ids of a REST list, every page (cursor mode).
pub async fn rest_ids(app: &TestApp, path: &str) -> Vec<String> {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut ids = Vec::new();
    let mut next = format!("{path}{separator}perPage=7");
    loop {
        let (status, body) = parts(app.get(&next).send().await.unwrap()).await;
        assert_eq!(status, 200, "{next}: {body}");
        ids.extend(
            body["data"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_owned()),
        );
        match body["meta"]["nextCursor"].as_str() {
            Some(cursor) => next = format!("{}?perPage=7&cursor={cursor}", path.split('?').next().unwrap()),
            None => return ids,
        }
    }
}

/// The ids of a GraphQL connection at `path` (dot-separated from `data`), every page:
/// `query` takes `$after` and selects `edges { node { id } } pageInfo { hasNextPage endCursor }`.
pub async fn gql_ids(app: &TestApp, query: &str, path: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = gql(app, query, json!({ "after": after })).await;
        let connection = path.split('.').fold(&data, |value, key| &value[key]);
        ids.extend(
            connection["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"]["id"].as_str().unwrap().to_owned()),
        );
        if connection["pageInfo"]["hasNextPage"] != json!(true) {
            return ids;
        }
        after = connection["pageInfo"]["endCursor"].clone();
    }
}

/// A selection of exactly the fields of a REST object (nested objects by their own fields).
pub fn selection(object: &Value) -> String {
    object
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, value)| match value {
            Value::Object(_) => format!("{name} {{ {} }}", selection(value)),
            _ => name.clone(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_committed_schema_matches_the_code() {
    assert!(
        COMMITTED_SDL == pwnbook_api::graphql::sdl(),
        "services/api/schema.graphql is stale: run `cargo run --bin pwnbook -- graphql-schema > services/api/schema.graphql`"
    );
}

/// Everything of one engagement, created through REST.
pub struct World {
    pub engagement: String,
    pub target: String,
    pub finding: String,
    pub task: String,
    pub page: String,
    pub child_page: String,
    pub report: String,
    pub webhook: String,
}

pub async fn world(app: &TestApp) -> World {
    let engagement = app
        .create_engagement(json!({"name": "Acme external", "clientName": "Acme", "startDate": "2025-01-06",
            "endDate": "2025-01-31", "tags": ["web", "external"], "description": "Outside in"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = |v: Value| v["id"].as_str().unwrap().to_owned();
    let target = id(create_target(
        app,
        &engagement,
        json!({"type": "service", "value": "10.0.0.5", "port": 443, "protocol": "tcp", "tags": ["dmz"]}),
    )
    .await);
    let finding = id(create_finding(app, &engagement, json!({"title": "Reflected XSS", "cvss": {"vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N"},
        "cwe": ["CWE-79"], "affectedTargetIds": [target], "tags": ["web"], "references": ["https://owasp.org"]})).await);
    let task = id(create_task(
        app,
        &engagement,
        json!({"title": "Scan the DMZ", "priority": "high", "dueDate": "2025-01-10"}),
    )
    .await);
    let page = id(create_page(app, &engagement, json!({"title": "Notes", "content": "# Notes"})).await);
    let child_page =
        id(create_page(app, &engagement, json!({"title": "Child notes", "parentId": page})).await);
    let report = id(create_report(app, &engagement, json!({"title": "Final", "format": "markdown"})).await);
    let (status, _) =
        parts(app.post(&format!("/api/v1/reports/{report}/generate"), &json!({})).send().await.unwrap())
            .await;
    assert_eq!(status, 200);
    let (status, hook) = parts(
        app.post("/api/v1/webhooks", &json!({"url": "http://127.0.0.1:9/hook", "events": ["engagement.*"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    let webhook = id(hook["data"].clone());
    World { engagement, target, finding, task, page, child_page, report, webhook }
}

backend_tests! {
    async fn graphql_takes_the_same_keys_as_rest(db) {
        let app = TestApp::spawn(db).await;
        // No key, or a bad one: the same 401 envelope as REST, with the rate-limit headers.
        for key in ["", "pwbk_live_notakeynotakeynotakeynotakeynotakey"] {
            let response = app.request(Method::POST, "/api/v1/graphql", key).json(&json!({"query": "{ organization { id } }"})).send().await.unwrap();
            assert!(response.headers().contains_key("x-ratelimit-limit"));
            assert!(response.headers().contains_key("x-request-id"));
            let (status, body) = parts(response).await;
            assert_eq!((status, error_code(status, &body)), (401, "UNAUTHORIZED".to_owned()), "{key:?}");
        }
        let revoked = app.key_with(&["*"]).await;
        let key_id: String = gql(&app, "{ apiKeys(first: 100) { nodes { id lastFour } } }", json!({})).await["apiKeys"]["nodes"]
            .as_array().unwrap().iter().find(|k| revoked.ends_with(k["lastFour"].as_str().unwrap())).unwrap()["id"].as_str().unwrap().to_owned();
        let data = gql(&app, "mutation($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }", json!({"id": key_id})).await;
        assert!(data["revokeApiKey"]["revokedAt"].is_string());
        let (status, body) = gql_with(&app, &revoked, "{ organization { id } }", json!({})).await;
        assert_eq!((status, error_code(status, &body)), (401, "UNAUTHORIZED".to_owned()));

        // Not a GraphQL request: REST's envelope.
        let (status, body) = parts(app.request(Method::POST, "/api/v1/graphql", &app.key).body("{").header("content-type", "application/json").send().await.unwrap()).await;
        assert_eq!((status, error_code(status, &body)), (400, "BAD_REQUEST".to_owned()));
        let (status, body) = parts(app.request(Method::POST, "/api/v1/graphql", &app.key).body("{}").send().await.unwrap()).await;
        assert_eq!((status, error_code(status, &body)), (415, "UNSUPPORTED_MEDIA_TYPE".to_owned()));
        let (status, body) = parts(app.request(Method::POST, "/api/v1/graphql", &app.key).json(&json!({"variables": {}})).send().await.unwrap()).await;
        assert_eq!((status, error_code(status, &body)), (400, "BAD_REQUEST".to_owned()));
        let (status, body) = parts(app.get("/api/v1/graphql").send().await.unwrap()).await;
        assert_eq!((status, error_code(status, &body)), (400, "BAD_REQUEST".to_owned()), "GET without a WebSocket upgrade");
        // A document that does not validate: an error with a code, nothing run.
        let (status, body) = gql_with(&app, &app.key, "{ engagements { nope } }", json!({})).await;
        assert_eq!((status, only_code(&body)), (200, "BAD_REQUEST".to_owned()));
        assert!(body["data"].is_null());

        // The SDL is served without a key, as committed.
        let response = app.client.get(format!("{}/api/v1/graphql/schema.graphql", app.base)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        assert_eq!(response.text().await.unwrap(), COMMITTED_SDL);
        // JSON by default; the GraphQL-over-HTTP media type for clients that ask for it.
        let ask = |accept: &'static str| app.request(Method::POST, "/api/v1/graphql", &app.key).header("accept", accept).json(&json!({"query": "{ organization { id } }"}));
        let plain = ask("application/json").send().await.unwrap();
        assert_eq!(plain.headers()["content-type"], "application/json");
        let graphql = ask("application/graphql-response+json, application/json;q=0.9").send().await.unwrap();
        assert_eq!(graphql.headers()["content-type"], "application/graphql-response+json");
        // Introspection is on.
        let data = gql(&app, "{ __schema { queryType { name } mutationType { name } subscriptionType { name } } }", json!({})).await;
        assert_eq!(data["__schema"]["subscriptionType"]["name"], "Subscription");
    }

    async fn every_object_reads_the_same_as_its_rest_get(db) {
        let app = TestApp::spawn_with(db, |s| s.webhook_allow_private = true).await;
        let w = world(&app).await;
        // Each resource: the fields of its REST object, selected by name, give the same JSON.
        let singles = [
            ("engagement", format!("/api/v1/engagements/{}", w.engagement), w.engagement.clone()),
            ("target", format!("/api/v1/targets/{}", w.target), w.target.clone()),
            ("finding", format!("/api/v1/findings/{}", w.finding), w.finding.clone()),
            ("task", format!("/api/v1/tasks/{}", w.task), w.task.clone()),
            ("wikiPage", format!("/api/v1/wiki/{}", w.child_page), w.child_page.clone()),
            ("report", format!("/api/v1/reports/{}", w.report), w.report.clone()),
            ("webhook", format!("/api/v1/webhooks/{}", w.webhook), w.webhook.clone()),
        ];
        for (field, path, id) in &singles {
            let expected = rest(&app, path).await;
            let query = format!("query($id: ID!) {{ {field}(id: $id) {{ {} }} }}", selection(&expected));
            let data = gql(&app, &query, json!({"id": id})).await;
            assert_eq!(data[field], expected, "{field}");
        }
        let organization = rest(&app, "/api/v1/organizations/current").await;
        let data = gql(&app, &format!("{{ organization {{ {} }} }}", selection(&organization)), json!({})).await;
        assert_eq!(data["organization"], organization);
        let key = rest(&app, "/api/v1/api-keys").await[0].clone();
        let data = gql(&app, &format!("query($id: ID!) {{ apiKey(id: $id) {{ {} }} }}", selection(&key)), json!({"id": key["id"]})).await;
        assert_eq!(data["apiKey"], key);

        // Nested: children, a finding's targets, a child's engagement and parent, a report's document.
        let data = gql(&app, "query($id: ID!) { engagement(id: $id) {
            targets { totalCount nodes { id } } findings { totalCount nodes { id affectedTargets { id value } engagement { id } } }
            tasks { totalCount nodes { id } } wikiPages { totalCount nodes { id parent { id } } } reports { totalCount nodes { id content } } } }",
            json!({"id": w.engagement})).await;
        let e = &data["engagement"];
        assert_eq!(e["targets"], json!({"totalCount": 1, "nodes": [{"id": w.target}]}));
        assert_eq!(e["findings"]["nodes"][0]["affectedTargets"], json!([{"id": w.target, "value": "10.0.0.5"}]));
        assert_eq!(e["findings"]["nodes"][0]["engagement"]["id"], w.engagement.as_str());
        assert_eq!(e["tasks"]["nodes"], json!([{"id": w.task}]));
        let pages: Vec<&Value> = e["wikiPages"]["nodes"].as_array().unwrap().iter().collect();
        assert_eq!(e["wikiPages"]["totalCount"], 2);
        assert!(pages.contains(&&json!({"id": w.child_page, "parent": {"id": w.page}})));
        assert!(pages.contains(&&json!({"id": w.page, "parent": null})));
        let content = app.get(&format!("/api/v1/reports/{}/content", w.report)).send().await.unwrap().text().await.unwrap();
        assert_eq!(e["reports"]["nodes"][0]["content"], content.as_str());

        // The event feed, the chain check, a history and a delivery log: as REST has them.
        let events = rest(&app, "/api/v1/events?type=finding.*,engagement.created&limit=50").await;
        let event_fields = "id position type resourceType resourceId engagementId sequence occurredAt actor { type id name } requestId data";
        let data = gql(&app, &format!("{{ events(filter: {{type: [\"finding.*\", \"engagement.created\"]}}, limit: 50) {{ events {{ {event_fields} }} nextAfter hasMore }} }}"), json!({})).await;
        assert_eq!(data["events"]["events"], events);
        let verify = rest(&app, "/api/v1/events/verify").await;
        let data = gql(&app, "{ verifyEvents { valid checked firstBrokenPosition } }", json!({})).await;
        assert_eq!(data["verifyEvents"], verify);
        let history = rest(&app, &format!("/api/v1/engagements/{}/history?limit=5&after=1", w.engagement)).await;
        let data = gql(&app, &format!("query($id: ID!) {{ engagement(id: $id) {{ history(after: 1, limit: 5) {{ events {{ {event_fields} }} }} }} }}"), json!({"id": w.engagement})).await;
        assert_eq!(data["engagement"]["history"]["events"], history);
        // The webhook's deliveries: an engagement event makes an attempt (to a closed port).
        app.patch(&format!("/api/v1/engagements/{}", w.engagement), &json!({"description": "delivered"})).send().await.unwrap();
        let path = format!("/api/v1/webhooks/{}/deliveries?limit=100", w.webhook);
        let mut deliveries = rest(&app, &path).await;
        for _ in 0..300 {
            if deliveries.as_array().is_some_and(|d| !d.is_empty()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            deliveries = rest(&app, &path).await;
        }
        let first = deliveries[0].clone();
        assert!(first.is_object(), "no delivery attempt: {deliveries}");
        let query = format!("query($id: ID!) {{ webhook(id: $id) {{ deliveries(limit: 100) {{ {} }} }} }}", selection(&first));
        let data = gql(&app, &query, json!({"id": w.webhook})).await;
        // Later retries only add attempts after the first.
        assert_eq!(data["webhook"]["deliveries"][0], first);
    }

    async fn time_travel_answers_as_rest_does(db) {
        let app = TestApp::spawn(db).await;
        let created = app.create_engagement(json!({"name": "Before"})).await;
        let id = created["id"].as_str().unwrap().to_owned();
        app.patch(&format!("/api/v1/engagements/{id}"), &json!({"name": "After", "tags": ["x"]})).send().await.unwrap();
        let fields = selection(&created);
        let query = format!("query($id: ID!, $version: Int, $asOf: String) {{ engagement(id: $id, version: $version, asOf: $asOf) {{ {fields} }} }}");
        let data = gql(&app, &query, json!({"id": id, "version": 1})).await;
        assert_eq!(data["engagement"], rest(&app, &format!("/api/v1/engagements/{id}?version=1")).await);
        assert_eq!(data["engagement"]["name"], "Before");
        let at = created["createdAt"].as_str().unwrap();
        let data = gql(&app, &query, json!({"id": id, "asOf": at})).await;
        assert_eq!(data["engagement"], rest(&app, &format!("/api/v1/engagements/{id}?asOf={at}")).await);
        // Targets and findings travel the same way.
        let target = create_target(&app, &id, json!({"type": "service", "value": "10.0.0.5", "port": 443, "protocol": "tcp", "tags": ["dmz"]})).await;
        let finding = create_finding(&app, &id, json!({"title": "Old title", "cvss": {"vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N"}, "tags": ["web"]})).await;
        for (field, path, object, change) in [("target", "targets", target, json!({"tags": ["moved"]})), ("finding", "findings", finding, json!({"title": "New title"}))] {
            let child = object["id"].as_str().unwrap().to_owned();
            let (status, _) = parts(app.patch(&format!("/api/v1/{path}/{child}"), &change).send().await.unwrap()).await;
            assert_eq!(status, 200, "{path}");
            let query = format!("query($id: ID!, $version: Int, $asOf: String) {{ {field}(id: $id, version: $version, asOf: $asOf) {{ {} }} }}", selection(&object));
            let data = gql(&app, &query, json!({"id": child, "version": 1})).await;
            assert_eq!(data[field], rest(&app, &format!("/api/v1/{path}/{child}?version=1")).await, "{field}");
            assert_eq!(data[field], object, "{field} as created");
            let at = object["createdAt"].as_str().unwrap();
            let data = gql(&app, &query, json!({"id": child, "asOf": at})).await;
            assert_eq!(data[field], object, "{field} asOf");
            let now = gql(&app, &query, json!({"id": child})).await;
            assert_eq!(now[field]["version"], 2, "{field} now");
        }
        // The errors REST gives: a version that does not exist, bad or combined parameters.
        for (variables, code) in [
            (json!({"id": id, "version": 9}), "NOT_FOUND"),
            (json!({"id": id, "version": 0}), "BAD_REQUEST"),
            (json!({"id": id, "asOf": "yesterday"}), "BAD_REQUEST"),
            (json!({"id": id, "version": 1, "asOf": at}), "BAD_REQUEST"),
        ] {
            let (_, body) = gql_with(&app, &app.key, &query, variables.clone()).await;
            assert_eq!(only_code(&body), code, "{variables}");
        }
        // A deleted engagement's past needs audit:read.
        app.delete(&format!("/api/v1/engagements/{id}")).send().await.unwrap();
        let data = gql(&app, &query, json!({"id": id, "version": 2})).await;
        assert_eq!(data["engagement"]["name"], "After");
        let reader = app.key_with(&["engagements:read"]).await;
        let (_, body) = gql_with(&app, &reader, &query, json!({"id": id, "version": 2})).await;
        assert_eq!(only_code(&body), "NOT_FOUND");
        let (_, body) = gql_with(&app, &app.key, &query, json!({"id": id})).await;
        assert_eq!(only_code(&body), "NOT_FOUND");
    }

    async fn lists_give_the_same_ids_in_the_same_order_as_rest(db) {
        let app = TestApp::spawn(db).await;
        let mut engagements = Vec::new();
        for i in 0..17 {
            let status = if i % 4 == 0 { "archive" } else { "" };
            let (tag, client) = (["web", "cloud", "internal"][i % 3], ["Acme", "Globex"][i % 2]);
            let start = if i % 5 == 0 { Value::Null } else { json!(format!("2025-0{}-1{}", 1 + i % 9, i % 10)) };
            let body = json!({"name": format!("{} engagement {i}", ["alpha", "Bravo", "charlie"][i % 3]),
                "tags": [tag], "clientName": client, "startDate": start});
            let id = app.create_engagement(body).await["id"].as_str().unwrap().to_owned();
            engagements.push(id.clone());
            for f in 0..(i % 4) {
                let severity = ["critical", "high", "medium", "low", "info"][(i + f) % 5];
                let mut finding = json!({"title": format!("{} finding {f}", ["SQLi", "xss", "Open redirect"][(i + f) % 3]), "severity": severity});
                if (i + f) % 2 == 0 {
                    finding["cvss"] = json!({"vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"});
                }
                create_finding(&app, &id, finding).await;
            }
            if !status.is_empty() {
                app.post(&format!("/api/v1/engagements/{id}/archive"), &json!({})).send().await.unwrap();
            }
        }
        let query = |args: &str| format!("query($after: String) {{ engagements({args} first: 7, after: $after) {{ edges {{ node {{ id }} }} pageInfo {{ hasNextPage endCursor }} }} }}");
        for (rest_query, args) in [
            ("", ""),
            ("sort=name&order=asc", "sort: NAME, order: ASC,"),
            ("sort=name&order=desc", "sort: NAME, order: DESC,"),
            ("sort=startDate&order=asc", "sort: START_DATE, order: ASC,"),
            ("sort=updatedAt&order=desc", "sort: UPDATED_AT,"),
            ("sort=createdAt&order=asc", "order: ASC,"),
            ("status=archived", "filter: {status: [\"archived\"]},"),
            ("tag=web,cloud&sort=name&order=asc", "filter: {tag: [\"web\", \"cloud\"]}, sort: NAME, order: ASC,"),
            ("q=ALPHA&clientName=Acme", "filter: {q: \"ALPHA\", clientName: [\"Acme\"]},"),
        ] {
            let expected = rest_ids(&app, &format!("/api/v1/engagements?{rest_query}")).await;
            assert!(!expected.is_empty(), "{rest_query}");
            assert_eq!(gql_ids(&app, &query(args), "engagements").await, expected, "{rest_query}");
        }
        let findings_query = |args: &str| format!("query($after: String) {{ findings({args} first: 7, after: $after) {{ edges {{ node {{ id }} }} pageInfo {{ hasNextPage endCursor }} }} }}");
        for (rest_query, args) in [
            ("sort=severity&order=desc", "sort: SEVERITY,"),
            ("sort=cvssScore&order=asc", "sort: CVSS_SCORE, order: ASC,"),
            ("sort=title&order=asc&severity=critical,high", "sort: TITLE, order: ASC, filter: {severity: [\"critical\", \"high\"]},"),
            (&format!("engagementId={},{}", engagements[3], engagements[7]), &format!("engagementId: [\"{}\", \"{}\"],", engagements[3], engagements[7])),
        ] {
            let expected = rest_ids(&app, &format!("/api/v1/findings?{rest_query}")).await;
            assert_eq!(gql_ids(&app, &findings_query(args), "findings").await, expected, "{rest_query}");
        }
        // Nested lists, batched over every engagement, match each engagement's REST list.
        let data = gql(&app, "{ engagements(first: 100) { nodes { id
            bySeverity: findings(sort: SEVERITY, first: 2) { totalCount edges { node { id } } pageInfo { hasNextPage } }
            byTitle: findings(sort: TITLE, order: ASC, filter: {q: \"finding\"}) { totalCount nodes { id } } } } }", json!({})).await;
        for engagement in data["engagements"]["nodes"].as_array().unwrap() {
            let id = engagement["id"].as_str().unwrap();
            let by_severity = rest_ids(&app, &format!("/api/v1/engagements/{id}/findings?sort=severity")).await;
            let page: Vec<&str> = engagement["bySeverity"]["edges"].as_array().unwrap().iter().map(|e| e["node"]["id"].as_str().unwrap()).collect();
            assert_eq!(page, by_severity.iter().take(2).map(String::as_str).collect::<Vec<_>>());
            assert_eq!(engagement["bySeverity"]["totalCount"], by_severity.len());
            assert_eq!(engagement["bySeverity"]["pageInfo"]["hasNextPage"], by_severity.len() > 2);
            let by_title = rest_ids(&app, &format!("/api/v1/engagements/{id}/findings?sort=title&order=asc&q=finding")).await;
            let nodes: Vec<&str> = engagement["byTitle"]["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
            assert_eq!(nodes, by_title.iter().map(String::as_str).collect::<Vec<_>>());
        }
        // A nested connection pages on with its cursor; cursors work across the facades.
        let busy = &engagements[3];
        let nested = format!("query($after: String) {{ engagement(id: \"{busy}\") {{ findings(sort: TITLE, first: 1, after: $after) {{ edges {{ node {{ id }} }} pageInfo {{ hasNextPage endCursor }} }} }} }}");
        let expected = rest_ids(&app, &format!("/api/v1/engagements/{busy}/findings?sort=title")).await;
        assert_eq!(gql_ids(&app, &nested, "engagement.findings").await, expected);
        let first = gql(&app, &nested, json!({"after": null})).await;
        let cursor = first["engagement"]["findings"]["pageInfo"]["endCursor"].as_str().unwrap().to_owned();
        let rest_page = parts(app.get(&format!("/api/v1/engagements/{busy}/findings?cursor={cursor}")).send().await.unwrap()).await.1;
        assert_eq!(rest_page["data"][0]["id"], expected[1].as_str());
        // A cursor with other filters, a bad cursor, a page too large: REST's 400s, as BAD_REQUEST.
        for args in [format!("after: \"{cursor}\", sort: CREATED_AT"), "after: \"nope\"".to_owned(), "first: 101".to_owned(), "first: 0".to_owned()] {
            let (_, body) = gql_with(&app, &app.key, &format!("{{ engagement(id: \"{busy}\") {{ findings({args}) {{ totalCount }} }} }}"), json!({})).await;
            assert_eq!(only_code(&body), "BAD_REQUEST", "{args}");
        }
        let total = gql(&app, "{ engagements(first: 1) { totalCount } archived: engagements(filter: {status: [\"archived\"]}) { totalCount } }", json!({})).await;
        assert_eq!(total["engagements"]["totalCount"], 17);
        assert_eq!(total["archived"]["totalCount"], 5);
    }
}

backend_tests! {
    async fn a_failed_field_is_null_and_fields_keep_the_selection_order(db) {
        let app = TestApp::spawn(db).await;
        app.create_engagement(json!({"name": "Present"})).await;
        let missing = "eng_01j9k2m3n4p5q6r7s8t9";
        // The failing field first, a slower list after it: `data` holds both, in that order.
        let query = format!("{{ gone: engagement(id: \"{missing}\") {{ id }} all: engagements {{ totalCount }} typed: __typename }}");
        let response = app.request(Method::POST, "/api/v1/graphql", &app.key).json(&json!({"query": query})).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["data"]["gone"], Value::Null, "{body}");
        assert!(body["data"].as_object().unwrap().contains_key("gone"), "the failed field is there, as null: {body}");
        assert_eq!(body["data"]["all"]["totalCount"], 1, "{body}");
        assert_eq!(errors(&body), [("gone".to_owned(), "NOT_FOUND".to_owned())]);
        let (gone, all, typed) = (text.find("\"gone\":").unwrap(), text.find("\"all\":").unwrap(), text.find("\"typed\":").unwrap());
        assert!(gone < all && all < typed, "selection order: {text}");

        // Every root field failed: still a request that ran, so `data` names them as null, and
        // GraphQL over HTTP answers 200 (a 4xx without data is for a request that did not run).
        let query = format!("{{ engagement(id: \"{missing}\") {{ id }} }}");
        let response = app
            .request(Method::POST, "/api/v1/graphql", &app.key)
            .header("accept", "application/graphql-response+json")
            .json(&json!({"query": query}))
            .send()
            .await
            .unwrap();
        let (status, body) = parts(response).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"], json!({"engagement": null}), "{body}");
        assert_eq!(errors(&body), [("engagement".to_owned(), "NOT_FOUND".to_owned())]);
    }
}
