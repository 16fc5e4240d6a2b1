//! GraphQL's guards (issue 6): permissions per field with the REST route table's permissions,
//! organization isolation, the shared rate limit, depth and complexity limits, and no N+1
//! queries for nested fields (statements counted through sqlx's tracing events).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Mutex, Once, OnceLock};

use pwnbook_events::backend_tests;
use reqwest::Method;
use serde_json::{json, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::findings::create_finding;
use crate::graphql::{errors, gql, gql_with, only_code, world};
use crate::harness::{error_code, parts, TestApp};
use crate::targets::create_target;

/// Statements sqlx ran inside each GraphQL execution, by request id (the `graphql` span of the
/// server carries it, and the loaders' batches run inside that span). The layer is installed
/// once as the test process's subscriber and only looks at sqlx's statement events and that
/// span, so tests running beside this one do not disturb the counts.
fn statements() -> &'static Mutex<HashMap<String, usize>> {
    static COUNTS: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    COUNTS.get_or_init(Default::default)
}

struct RequestId(String);

struct StatementCounter;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for StatementCounter {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        struct Visitor(Option<String>);
        impl Visit for Visitor {
            fn record_str(&mut self, field: &Field, value: &str) {
                if field.name() == "request_id" {
                    self.0 = Some(value.to_owned());
                }
            }
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "request_id" {
                    self.0 = Some(format!("{value:?}").trim_matches('"').to_owned());
                }
            }
        }
        if attrs.metadata().name() != "graphql" {
            return;
        }
        let mut visitor = Visitor(None);
        attrs.record(&mut visitor);
        if let (Some(request_id), Some(span)) = (visitor.0, ctx.span(id)) {
            span.extensions_mut().insert(RequestId(request_id));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else { return };
        struct Summary(String);
        impl Visit for Summary {
            fn record_str(&mut self, field: &Field, value: &str) {
                if field.name() == "summary" {
                    self.0 = value.to_owned();
                }
            }
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "summary" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut summary = Summary(String::new());
        event.record(&mut summary);
        // A connection the pool opens meanwhile sets itself up (SQLite's PRAGMAs): not a read.
        if summary.0.trim_start_matches('"').starts_with("PRAGMA") {
            return;
        }
        for span in scope {
            if let Some(RequestId(id)) = span.extensions().get::<RequestId>() {
                *statements().lock().unwrap().entry(id.clone()).or_default() += 1;
                return;
            }
        }
    }
}

fn count_statements() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let only =
            tracing_subscriber::filter::filter_fn(|m| m.target() == "sqlx::query" || m.name() == "graphql");
        let _ = tracing_subscriber::registry().with(StatementCounter.with_filter(only)).try_init();
    });
}

/// The statements a query ran on the server.
async fn statements_of(app: &TestApp, query: &str) -> (usize, Value) {
    let request_id = format!("req_count_{}", ulid::Ulid::new());
    let body = json!({ "query": query });
    let response = app
        .request(Method::POST, "/api/v1/graphql", &app.key)
        .header("x-request-id", &request_id)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, body) = parts(response).await;
    assert_eq!(status, 200);
    assert!(body.get("errors").is_none(), "{body}");
    let count = statements().lock().unwrap().get(&request_id).copied().unwrap_or_default();
    (count, body["data"].clone())
}

const NESTED: &str = "{ engagements(first: 100) { totalCount edges { node { id name
    findings(first: 10, sort: SEVERITY) { totalCount edges { node { id title affectedTargets { id value } engagement { id } } } }
    targets { totalCount nodes { id } } tasks { nodes { id } } wikiPages { nodes { id } } reports { nodes { id content } } } } } }";

backend_tests! {
    async fn nested_fields_are_batched_not_read_per_object(db) {
        count_statements();
        let app = TestApp::spawn(db).await;
        let mut counts = Vec::new();
        for total in [5, 50] {
            let existing = gql(&app, "{ engagements { totalCount } }", json!({})).await["engagements"]["totalCount"].as_u64().unwrap();
            for i in existing..total {
                let engagement = app.create_engagement(json!({"name": format!("Engagement {i}")})).await["id"].as_str().unwrap().to_owned();
                let target = create_target(&app, &engagement, json!({"type": "ip", "value": format!("10.0.0.{}", i + 1)})).await;
                for f in 0..3 {
                    create_finding(&app, &engagement, json!({"title": format!("Finding {f}"), "severity": "high", "affectedTargetIds": [target["id"]]})).await;
                }
            }
            let (count, data) = statements_of(&app, NESTED).await;
            let engagements = data["engagements"]["edges"].as_array().unwrap();
            assert_eq!(engagements.len() as u64, total);
            for edge in engagements {
                let findings = &edge["node"]["findings"];
                assert_eq!(findings["totalCount"], 3);
                assert_eq!(findings["edges"][0]["node"]["affectedTargets"].as_array().unwrap().len(), 1);
                assert_eq!(findings["edges"][0]["node"]["engagement"]["id"], edge["node"]["id"]);
            }
            counts.push(count);
        }
        // engagements + count, findings page + totals, targets by id, engagements by id,
        // targets page + totals, tasks, wiki pages, reports, report documents: one each.
        assert!(counts[0] > 0, "statements were counted");
        assert_eq!(counts[0], counts[1], "the statement count grows with the number of engagements: {counts:?}");
        assert!(counts[1] <= 12, "{counts:?}");
    }

    async fn fields_are_guarded_by_the_permissions_of_their_rest_routes(db) {
        let app = TestApp::spawn_with(db, |s| s.webhook_allow_private = true).await;
        let w = world(&app).await;
        let reader = app.key_with(&["engagements:read"]).await;
        let query = "query($id: ID!) { engagement(id: $id) { id name findings { totalCount } targets { totalCount } history { hasMore } } organization { name } }";
        let (status, body) = gql_with(&app, &reader, query, json!({"id": w.engagement})).await;
        assert_eq!(status, 200);
        // What the key may read is answered; each field it may not is an error on that field.
        assert_eq!(body["data"]["engagement"]["name"], "Acme external");
        assert!(body["data"]["engagement"]["findings"].is_null(), "no leak: {body}");
        let mut found = errors(&body);
        found.sort();
        assert_eq!(found, vec![
            ("engagement.findings".to_owned(), "FORBIDDEN".to_owned()),
            ("engagement.history".to_owned(), "FORBIDDEN".to_owned()),
            ("engagement.targets".to_owned(), "FORBIDDEN".to_owned()),
            ("organization".to_owned(), "FORBIDDEN".to_owned()),
        ]);
        // A finding reader may not follow a finding to its targets or engagement.
        let finder = app.key_with(&["findings:read"]).await;
        let (_, body) = gql_with(&app, &finder, "query($id: ID!) { finding(id: $id) { title affectedTargets { id } engagement { id } } engagements { totalCount } }", json!({"id": w.finding})).await;
        assert_eq!(body["data"]["finding"]["title"], "Reflected XSS");
        let mut found = errors(&body);
        found.sort();
        assert_eq!(found, vec![
            ("engagements".to_owned(), "FORBIDDEN".to_owned()),
            ("finding.affectedTargets".to_owned(), "FORBIDDEN".to_owned()),
            ("finding.engagement".to_owned(), "FORBIDDEN".to_owned()),
        ]);
        // Every root field and mutation needs its route's permission: a key without any gets
        // FORBIDDEN on each.
        let nobody = app.key_with(&["api-requests:read"]).await;
        let roots = [
            ("engagement", format!("engagement(id: \"{}\") {{ id }}", w.engagement)),
            ("engagements", "engagements { totalCount }".to_owned()),
            ("target", format!("target(id: \"{}\") {{ id }}", w.target)),
            ("finding", format!("finding(id: \"{}\") {{ id }}", w.finding)),
            ("findings", "findings { totalCount }".to_owned()),
            ("task", format!("task(id: \"{}\") {{ id }}", w.task)),
            ("tasks", "tasks { totalCount }".to_owned()),
            ("wikiPage", format!("wikiPage(id: \"{}\") {{ id }}", w.page)),
            ("report", format!("report(id: \"{}\") {{ id }}", w.report)),
            ("reports", "reports { totalCount }".to_owned()),
            ("organization", "organization { id }".to_owned()),
            ("apiKeys", "apiKeys { totalCount }".to_owned()),
            ("webhook", format!("webhook(id: \"{}\") {{ id }}", w.webhook)),
            ("webhooks", "webhooks { totalCount }".to_owned()),
            ("events", "events { hasMore }".to_owned()),
            ("verifyEvents", "verifyEvents { valid }".to_owned()),
        ];
        for (field, selection) in &roots {
            let (_, body) = gql_with(&app, &nobody, &format!("{{ {selection} }}"), json!({})).await;
            assert_eq!(errors(&body), vec![((*field).to_owned(), "FORBIDDEN".to_owned())], "{field}");
        }
        let (_, body) = gql_with(&app, &nobody, "mutation { createEngagement(input: {name: \"x\"}) { id } }", json!({})).await;
        assert_eq!(only_code(&body), "FORBIDDEN");
        let writer = app.key_with(&["engagements:write"]).await;
        let (_, body) = gql_with(&app, &writer, "mutation { createEngagement(input: {name: \"Written\"}) { id name } }", json!({})).await;
        assert_eq!(body["data"]["createEngagement"]["name"], "Written", "write does not need read to answer with the row: {body}");
        let (_, body) = gql_with(&app, &writer, &format!("mutation {{ deleteEngagement(id: \"{}\") }}", w.engagement), json!({})).await;
        assert_eq!(only_code(&body), "FORBIDDEN", "delete needs engagements:delete");
    }

    async fn organizations_see_only_their_own_data(db) {
        let app = TestApp::spawn_with(db, |s| s.webhook_allow_private = true).await;
        let w = world(&app).await;
        let stranger = app.org_with_key(&["*"]).await;
        for (field, id) in [("engagement", &w.engagement), ("target", &w.target), ("finding", &w.finding), ("task", &w.task),
                            ("wikiPage", &w.page), ("report", &w.report), ("webhook", &w.webhook)] {
            let (_, body) = gql_with(&app, &stranger, &format!("query($id: ID!) {{ {field}(id: $id) {{ id }} }}"), json!({"id": id})).await;
            assert_eq!(only_code(&body), "NOT_FOUND", "{field}");
        }
        let (_, body) = gql_with(&app, &stranger, "query($e: ID!) { engagements { totalCount } findings { totalCount } tasks { totalCount } reports { totalCount }
            webhooks { totalCount } organization { engagementCount } events(filter: {engagementId: [$e]}) { events { id } } }", json!({"e": w.engagement})).await;
        assert_eq!(body["data"], json!({"engagements": {"totalCount": 0}, "findings": {"totalCount": 0}, "tasks": {"totalCount": 0},
            "reports": {"totalCount": 0}, "webhooks": {"totalCount": 0}, "organization": {"engagementCount": 0}, "events": {"events": []}}));
        // Nor can it write to them, or filter its way into them.
        for mutation in [
            format!("mutation {{ updateEngagement(id: \"{}\", input: {{name: \"Mine\"}}) {{ id }} }}", w.engagement),
            format!("mutation {{ createFinding(engagementId: \"{}\", input: {{title: \"x\", severity: \"low\"}}) {{ id }} }}", w.engagement),
            format!("mutation {{ deleteTask(id: \"{}\") }}", w.task),
        ] {
            let (_, body) = gql_with(&app, &stranger, &mutation, json!({})).await;
            assert_eq!(only_code(&body), "NOT_FOUND", "{mutation}");
        }
        let (_, body) = gql_with(&app, &stranger, &format!("{{ findings(engagementId: [\"{}\"]) {{ totalCount }} }}", w.engagement), json!({})).await;
        assert_eq!(body["data"]["findings"]["totalCount"], 0);
        assert_eq!(gql(&app, "{ engagements { totalCount } }", json!({})).await["engagements"]["totalCount"], 1);
    }

    async fn graphql_and_rest_share_the_rate_limit(db) {
        let app = TestApp::spawn_with(db, |s| s.rate_limit_per_minute = NonZeroU32::new(4).unwrap()).await;
        for _ in 0..2 {
            assert_eq!(app.get("/api/v1/engagements").send().await.unwrap().status(), 200);
            let (status, _) = gql_with(&app, &app.key, "{ engagements { totalCount } }", json!({})).await;
            assert_eq!(status, 200);
        }
        let response = app.request(Method::POST, "/api/v1/graphql", &app.key).json(&json!({"query": "{ organization { id } }"})).send().await.unwrap();
        assert!(response.headers().contains_key("retry-after"));
        let (status, body) = parts(response).await;
        assert_eq!((status, error_code(status, &body)), (429, "RATE_LIMITED".to_owned()));
    }

    async fn hostile_queries_are_refused_before_they_run(db) {
        let app = TestApp::spawn(db).await;
        app.create_engagement(json!({"name": "Target"})).await;
        // Too deep: engagement → findings → engagement → findings → …
        let mut deep = "id".to_owned();
        for _ in 0..5 {
            deep = format!("findings(first: 1) {{ nodes {{ engagement {{ {deep} }} }} }}");
        }
        let (status, body) = gql_with(&app, &app.key, &format!("{{ engagements(first: 1) {{ nodes {{ {deep} }} }} }}"), json!({})).await;
        assert_eq!(status, 200);
        assert!(body["data"].is_null(), "{body}");
        assert_eq!(only_code(&body), "BAD_REQUEST");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("too deep"), "{body}");
        // Too costly: a hundred engagements with a hundred findings each with their targets.
        let costly = "{ engagements(first: 100) { nodes { findings(first: 100) { nodes { id title affectedTargets { id } } } } } }";
        let (_, body) = gql_with(&app, &app.key, costly, json!({})).await;
        assert!(body["data"].is_null(), "{body}");
        assert_eq!(only_code(&body), "BAD_REQUEST");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("complex"), "{body}");
        // Aliases multiply the cost too.
        let aliased: String = (0..200).map(|i| format!("a{i}: engagements(first: 100) {{ nodes {{ id name tags }} }} ")).collect();
        let (_, body) = gql_with(&app, &app.key, &format!("{{ {aliased} }}"), json!({})).await;
        assert_eq!(only_code(&body), "BAD_REQUEST");
        // A refused mutation did not run.
        let mut deep_result = "id".to_owned();
        for _ in 0..5 {
            deep_result = format!("findings(first: 1) {{ nodes {{ engagement {{ {deep_result} }} }} }}");
        }
        let (_, body) = gql_with(&app, &app.key, &format!("mutation {{ createEngagement(input: {{name: \"Never\"}}) {{ {deep_result} }} }}"), json!({})).await;
        assert_eq!(only_code(&body), "BAD_REQUEST");
        assert_eq!(gql(&app, "{ engagements(filter: {q: \"never\"}) { totalCount } }", json!({})).await["engagements"]["totalCount"], 0);
        // A sensible nested query is well within the limits, and so is introspection.
        gql(&app, "{ engagements(first: 50) { nodes { findings(first: 10) { nodes { id affectedTargets { id } } } } } }", json!({})).await;
        gql(&app, "{ __schema { types { name fields { name type { name kind ofType { name kind ofType { name kind ofType { name } } } } } } } }", json!({})).await;
    }
}
