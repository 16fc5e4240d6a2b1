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
        // A task or report reader may not follow it to its engagement; a report's content, a
        // page's parent and a webhook's deliveries need what their object needs.
        let worker = app.key_with(&["tasks:read", "reports:read", "wiki:read", "webhooks:manage"]).await;
        let query = "query($t: ID!, $r: ID!, $p: ID!, $w: ID!) { task(id: $t) { title engagement { id } } report(id: $r) { content engagement { id } }
            wikiPage(id: $p) { parent { id } } webhook(id: $w) { deliveries { id } } }";
        let variables = json!({"t": w.task, "r": w.report, "p": w.child_page, "w": w.webhook});
        let (_, body) = gql_with(&app, &worker, query, variables.clone()).await;
        assert_eq!(body["data"]["task"]["title"], "Scan the DMZ", "{body}");
        assert!(body["data"]["report"]["content"].as_str().is_some_and(|c| c.contains("Final")), "{body}");
        assert_eq!(body["data"]["wikiPage"]["parent"]["id"], w.page.as_str(), "{body}");
        assert!(body["data"]["webhook"]["deliveries"].is_array(), "{body}");
        let mut found = errors(&body);
        found.sort();
        assert_eq!(found, vec![
            ("report.engagement".to_owned(), "FORBIDDEN".to_owned()),
            ("task.engagement".to_owned(), "FORBIDDEN".to_owned()),
        ]);
        // Without those permissions, each nested field is refused on its own (reached here
        // through the engagement, which the key may read).
        let reader_query = "query($e: ID!) { engagement(id: $e) { reports { nodes { content } } wikiPages { nodes { parent { id } } } } webhooks { nodes { deliveries { id } } } }";
        let (_, body) = gql_with(&app, &reader, reader_query, json!({"e": w.engagement})).await;
        let mut found = errors(&body);
        found.sort();
        assert_eq!(found, vec![
            ("engagement.reports".to_owned(), "FORBIDDEN".to_owned()),
            ("engagement.wikiPages".to_owned(), "FORBIDDEN".to_owned()),
            ("webhooks".to_owned(), "FORBIDDEN".to_owned()),
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
        let own_key = gql(&app, "{ apiKeys(first: 1) { nodes { id } } }", json!({})).await["apiKeys"]["nodes"][0]["id"].clone();
        let (_, body) = gql_with(&app, &stranger, "query($id: ID!) { apiKey(id: $id) { id } }", json!({"id": own_key})).await;
        assert_eq!(only_code(&body), "NOT_FOUND", "apiKey");
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

    async fn amplification_by_aliases_is_refused_before_it_runs(db) {
        let app = TestApp::spawn(db).await;
        app.create_engagement(json!({"name": "One"})).await;
        // Lists of events and deliveries cost `limit` times an item; verifyEvents reads the
        // whole log, so one fits a request and two do not.
        gql(&app, "{ verifyEvents { valid } }", json!({})).await;
        let aliased = |count: usize, field: &str| format!("{{ {} }}", (0..count).map(|i| format!("a{i}: {field} ")).collect::<String>());
        for (what, query) in [
            ("verifyEvents", aliased(2, "verifyEvents { valid }")),
            ("events", aliased(20, "events(limit: 1000) { events { id type position occurredAt } }")),
            ("history", "{ engagements(first: 100) { nodes { history(limit: 1000) { events { id } } } } }".to_owned()),
            ("deliveries", "{ webhooks(first: 100) { nodes { deliveries(limit: 1000) { id } } } }".to_owned()),
        ] {
            let (status, body) = gql_with(&app, &app.key, &query, json!({})).await;
            assert_eq!(status, 200, "{what}: {body}");
            assert!(body["data"].is_null(), "{what}: {body}");
            assert_eq!(only_code(&body), "BAD_REQUEST", "{what}");
            assert!(body["errors"][0]["message"].as_str().unwrap().contains("complex"), "{what}: {body}");
        }
        gql(&app, &aliased(10, "events(limit: 1000) { events { id } }"), json!({})).await;

        // Aliases cannot multiply the list queries either: a query runs at most 50 root fields,
        // and no selection selects one field more than 20 times (each alias of a nested list is
        // a query of its own, while the complexity counts rows).
        let roots = |count: usize| {
            let lists = (0..count)
                .map(|i| format!("r{i}: {}(filter: {{q: \"x\"}}, first: 1) {{ totalCount }} ", ["engagements", "findings", "tasks"][i % 3]))
                .collect::<String>();
            format!("{{ {lists} }}")
        };
        gql(&app, &roots(50), json!({})).await;
        let nested = |count: usize| {
            let lists = (0..count).map(|i| format!("f{i}: findings(filter: {{q: \"{i}\"}}, first: 1) {{ totalCount }} ")).collect::<String>();
            format!("{{ engagements(first: 1) {{ nodes {{ {lists} }} }} }}")
        };
        gql(&app, &nested(20), json!({})).await;
        for (query, message) in [
            (roots(51), "at most 50"),
            (format!("{{ ...Q }} fragment Q on Query {}", roots(51)), "at most 50"),
            (aliased(21, "engagements(first: 1) { totalCount }"), "more than 20"),
            (nested(21), "more than 20"),
        ] {
            let (_, body) = gql_with(&app, &app.key, &query, json!({})).await;
            assert!(body["data"].is_null(), "{body}");
            assert_eq!(only_code(&body), "BAD_REQUEST");
            assert!(body["errors"][0]["message"].as_str().unwrap().contains(message), "{body}");
        }

        // A mutation runs at most 20 fields, fragments included.
        let creates = |count: usize| (0..count).map(|i| format!("m{i}: createEngagement(input: {{name: \"Alias {i}\"}}) {{ id }} ")).collect::<String>();
        for query in [format!("mutation {{ {} }}", creates(21)), format!("mutation {{ ...M }} fragment M on Mutation {{ {} }}", creates(21))] {
            let (_, body) = gql_with(&app, &app.key, &query, json!({})).await;
            assert!(body["data"].is_null(), "{body}");
            assert_eq!(only_code(&body), "BAD_REQUEST");
            assert!(body["errors"][0]["message"].as_str().unwrap().contains("at most 20"), "{body}");
        }
        let count = "{ engagements(filter: {q: \"alias\"}) { totalCount } }";
        assert_eq!(gql(&app, count, json!({})).await["engagements"]["totalCount"], 0);
        gql(&app, &format!("mutation {{ {} }}", creates(20)), json!({})).await;
        assert_eq!(gql(&app, count, json!({})).await["engagements"]["totalCount"], 20);
    }

    async fn each_mutation_field_is_charged_to_the_rate_limit(db) {
        let app = TestApp::spawn_with(db, |s| s.rate_limit_per_minute = NonZeroU32::new(5).unwrap()).await;
        let key = app.key_with(&["*"]).await;
        let creates: String = (0..6).map(|i| format!("m{i}: createEngagement(input: {{name: \"Charged {i}\"}}) {{ id }} ")).collect();
        let (status, body) = gql_with(&app, &key, &format!("mutation {{ {creates} }}"), json!({})).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["data"].is_null(), "{body}");
        assert_eq!(only_code(&body), "RATE_LIMITED");
        // Nothing ran, and the key's allowance is spent.
        let (status, _) = gql_with(&app, &key, "{ engagements { totalCount } }", json!({})).await;
        assert_eq!(status, 429);
        let other = app.key_with(&["*"]).await;
        let (_, body) = gql_with(&app, &other, "{ engagements(filter: {q: \"charged\"}) { totalCount } }", json!({})).await;
        assert_eq!(body["data"]["engagements"]["totalCount"], 0, "{body}");
        // A query's root fields are charged the same way (each is a REST request's worth).
        let reader = app.key_with(&["*"]).await;
        let lists: String = (0..6).map(|i| format!("q{i}: engagements {{ totalCount }} ")).collect();
        let (_, body) = gql_with(&app, &reader, &format!("{{ {lists} }}"), json!({})).await;
        assert!(body["data"].is_null(), "{body}");
        assert_eq!(only_code(&body), "RATE_LIMITED");
        // GraphQL over HTTP answers the refusal as REST does: 429 with Retry-After, no data.
        let third = app.key_with(&["*"]).await;
        let body = json!({ "query": format!("mutation {{ {creates} }}") });
        let response = app.request(Method::POST, "/api/v1/graphql", &third).header("accept", "application/graphql-response+json").json(&body).send().await.unwrap();
        let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        let (status, answer) = parts(response).await;
        assert_eq!(status, 429, "{answer}");
        assert!(answer.get("data").is_none(), "{answer}");
        assert_eq!(only_code(&answer), "RATE_LIMITED");
        assert_eq!(answer["errors"][0]["extensions"]["retryAfter"], retry_after, "{answer}");
    }

    async fn a_nested_cursor_belongs_to_a_single_parent(db) {
        let app = TestApp::spawn(db).await;
        let mut engagements = Vec::new();
        for name in ["A", "B"] {
            let id = app.create_engagement(json!({"name": name})).await["id"].as_str().unwrap().to_owned();
            for i in 0..3 {
                create_target(&app, &id, json!({"type": "domain", "value": format!("{name}{i}.example.com")})).await;
            }
            engagements.push(id);
        }
        let first = gql(&app, "query($id: ID!) { engagement(id: $id) { targets(first: 1) { pageInfo { endCursor } } } }", json!({"id": engagements[0]})).await;
        let cursor = first["engagement"]["targets"]["pageInfo"]["endCursor"].clone();
        // Under one parent the cursor continues that parent's list.
        let next = gql(&app, "query($id: ID!, $after: String) { engagement(id: $id) { targets(after: $after) { nodes { id } } } }", json!({"id": engagements[0], "after": cursor})).await;
        assert_eq!(next["engagement"]["targets"]["nodes"].as_array().unwrap().len(), 2, "{next}");
        // Under a group of parents it would skip rows of the others: refused, on each field.
        let (status, body) = gql_with(&app, &app.key, "query($after: String) { engagements { nodes { id targets(after: $after) { nodes { id } } } } }", json!({"after": cursor})).await;
        assert_eq!(status, 200);
        let codes = errors(&body);
        assert_eq!(codes.len(), 2, "{body}");
        assert!(codes.iter().all(|(path, code)| path.ends_with("targets") && code == "BAD_REQUEST"), "{body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("single parent"), "{body}");
        assert_eq!(body["data"]["engagements"]["nodes"][0]["targets"], Value::Null);
    }

    async fn graphql_over_http_answers_request_errors_with_a_4xx(db) {
        let app = TestApp::spawn(db).await;
        let costly = "{ engagements(first: 100) { nodes { findings(first: 100) { nodes { id affectedTargets { id } } } } } }";
        for query in ["{ engagements(", "{ nope }", costly] {
            let body = json!({ "query": query });
            let response = app.request(Method::POST, "/api/v1/graphql", &app.key).header("accept", "application/graphql-response+json").json(&body).send().await.unwrap();
            assert_eq!(response.headers()["content-type"], "application/graphql-response+json");
            let (status, answer) = parts(response).await;
            assert_eq!(status, 400, "{query}: {answer}");
            assert!(answer.get("data").is_none(), "{query}: {answer}");
            assert_eq!(only_code(&answer), "BAD_REQUEST", "{query}");
            // application/json keeps answering 200 with `data: null`.
            let (status, answer) = gql_with(&app, &app.key, query, json!({})).await;
            assert_eq!(status, 200, "{query}: {answer}");
            assert!(answer.get("data").is_some_and(Value::is_null), "{query}: {answer}");
        }
        // A field's error is no request error: 200 with data.
        let reader = app.key_with(&["engagements:read"]).await;
        let body = json!({ "query": "{ engagements { totalCount } events { limit } }" });
        let response = app.request(Method::POST, "/api/v1/graphql", &reader).header("accept", "application/graphql-response+json").json(&body).send().await.unwrap();
        let (status, answer) = parts(response).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["data"]["engagements"]["totalCount"], 0, "{answer}");
        assert_eq!(only_code(&answer), "FORBIDDEN");
    }
}
