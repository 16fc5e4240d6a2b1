//! GraphQL mutations (issue 6): one per REST write, through the same command service, with the
//! same validation errors (`extensions.code` is the REST code), `ifMatch` as `If-Match`, and
//! read-your-writes (REST sees the change at once).

use std::num::NonZeroU32;

use pwnbook_events::backend_tests;
use serde_json::{json, Value};

use crate::graphql::{gql, gql_with, only_code, rest};
use crate::harness::{error_code, parts, TestApp};

/// Runs a mutation that must fail; its one error's code and the error.
async fn refused(app: &TestApp, query: &str, variables: Value) -> (String, Value) {
    let (status, body) = gql_with(app, &app.key, query, variables).await;
    assert_eq!(status, 200, "{body}");
    (only_code(&body), body["errors"][0].clone())
}

backend_tests! {
    async fn engagement_mutations_are_the_rest_writes(db) {
        let app = TestApp::spawn(db).await;
        let fields = "id name description status clientName startDate endDate tags archivedAt createdAt updatedAt version";
        let data = gql(&app, &format!("mutation($input: CreateEngagementInput!) {{ createEngagement(input: $input) {{ {fields} }} }}"),
            json!({"input": {"name": "Acme", "description": "d", "startDate": "2025-01-06", "tags": ["web"]}})).await;
        let created = &data["createEngagement"];
        let id = created["id"].as_str().unwrap().to_owned();
        // Read-your-writes: REST sees it, identical.
        assert_eq!(rest(&app, &format!("/api/v1/engagements/{id}")).await, *created);

        // The same validation errors, with their details.
        let create = "mutation($input: CreateEngagementInput!) { createEngagement(input: $input) { id } }";
        let (code, error) = refused(&app, create, json!({"input": {"name": "", "endDate": "2024-12-31", "startDate": "2025-01-01"}})).await;
        assert_eq!(code, "VALIDATION_ERROR");
        assert_eq!(error["extensions"]["statusCode"], 422);
        let fields_named: Vec<&str> = error["extensions"]["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
        assert!(fields_named.contains(&"name"), "{error}");
        let (code, _) = refused(&app, create, json!({"input": {"name": "ACME"}})).await;
        assert_eq!(code, "CONFLICT", "names are unique case-insensitively");

        // Update: absent fields stay, null clears; ifMatch is If-Match.
        let update = "mutation($id: ID!, $input: UpdateEngagementInput!, $ifMatch: Int) { updateEngagement(id: $id, input: $input, ifMatch: $ifMatch) { name description tags version } }";
        let data = gql(&app, update, json!({"id": id, "input": {"description": null, "name": "Acme 2"}, "ifMatch": 1})).await;
        assert_eq!(data["updateEngagement"], json!({"name": "Acme 2", "description": null, "tags": ["web"], "version": 2}));
        let (code, _) = refused(&app, update, json!({"id": id, "input": {"name": "Stale"}, "ifMatch": 1})).await;
        assert_eq!(code, "PRECONDITION_FAILED");
        let (code, _) = refused(&app, update, json!({"id": id, "input": {"name": null}})).await;
        assert_eq!(code, "VALIDATION_ERROR");
        let (code, _) = refused(&app, update, json!({"id": id, "input": {"name": "x"}, "ifMatch": -1})).await;
        assert_eq!(code, "BAD_REQUEST");
        let (code, _) = refused(&app, update, json!({"id": "eng_00000000000000000000", "input": {"name": "x"}})).await;
        assert_eq!(code, "NOT_FOUND");

        // Archive makes it read-only; unarchive; delete.
        let data = gql(&app, "mutation($id: ID!) { archiveEngagement(id: $id) { status archivedAt } }", json!({"id": id})).await;
        assert_eq!(data["archiveEngagement"]["status"], "archived");
        let (code, _) = refused(&app, "mutation($id: ID!) { archiveEngagement(id: $id) { id } }", json!({"id": id})).await;
        assert_eq!(code, "CONFLICT");
        let (code, _) = refused(&app, "mutation($id: ID!) { createTask(engagementId: $id, input: {title: \"t\"}) { id } }", json!({"id": id})).await;
        assert_eq!(code, "CONFLICT", "an archived engagement is read-only");
        let data = gql(&app, "mutation($id: ID!) { unarchiveEngagement(id: $id, ifMatch: 3) { status version } }", json!({"id": id})).await;
        assert_eq!(data["unarchiveEngagement"], json!({"status": "active", "version": 4}));
        let data = gql(&app, "mutation($id: ID!) { deleteEngagement(id: $id) }", json!({"id": id})).await;
        assert_eq!(data["deleteEngagement"], id.as_str());
        assert_eq!(app.get(&format!("/api/v1/engagements/{id}")).send().await.unwrap().status(), 404);
        // The events name the key that acted, as REST writes do.
        let events = rest(&app, &format!("/api/v1/engagements/{id}/history")).await;
        let types: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["engagement.created", "engagement.updated", "engagement.archived", "engagement.unarchived", "engagement.deleted"]);
        assert_eq!(events[0]["actor"]["type"], "api_key");
    }

    async fn every_child_resource_is_written_through_graphql(db) {
        let app = TestApp::spawn(db).await;
        let engagement = app.create_engagement(json!({"name": "Scope"})).await["id"].as_str().unwrap().to_owned();
        let e = json!({"e": engagement});

        // Targets.
        let data = gql(&app, "mutation($e: ID!) { createTarget(engagementId: $e, input: {type: \"ip\", value: \"10.0.0.1\", tags: [\"dmz\"]}) { id type value inScope port } }", e.clone()).await;
        let target = data["createTarget"]["id"].as_str().unwrap().to_owned();
        assert_eq!(data["createTarget"]["value"], "10.0.0.1");
        let (code, _) = refused(&app, "mutation($e: ID!) { createTarget(engagementId: $e, input: {type: \"ip\", value: \"10.0.0.999\"}) { id } }", e.clone()).await;
        assert_eq!(code, "VALIDATION_ERROR");
        let (code, _) = refused(&app, "mutation($e: ID!) { createTarget(engagementId: $e, input: {type: \"ip\", value: \"10.0.0.1\"}) { id } }", e.clone()).await;
        assert_eq!(code, "CONFLICT");
        let data = gql(&app, "mutation($t: ID!) { updateTarget(id: $t, input: {inScope: false, notes: \"n\"}) { inScope notes version } }", json!({"t": target})).await;
        assert_eq!(data["updateTarget"], json!({"inScope": false, "notes": "n", "version": 2}));

        // Findings: create, update, transition, bulk, and delete (which needs findings:delete).
        let data = gql(&app, "mutation($e: ID!, $t: ID!) { createFinding(engagementId: $e, input: {title: \"SQLi\",
            cvss: {vector: \"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\"}, affectedTargetIds: [$t]}) { id severity cvss { score } status reviewStatus } }",
            json!({"e": engagement, "t": target})).await;
        let finding = data["createFinding"]["id"].as_str().unwrap().to_owned();
        assert_eq!(data["createFinding"]["severity"], "critical");
        assert_eq!(data["createFinding"]["cvss"]["score"], 9.8);
        let (code, error) = refused(&app, "mutation($e: ID!) { createFinding(engagementId: $e, input: {title: \"x\", cvss: {vector: \"CVSS:3.1/AV:X\"}}) { id } }", e.clone()).await;
        assert_eq!(code, "VALIDATION_ERROR", "{error}");
        let (code, _) = refused(&app, "mutation($t: ID!) { deleteTarget(id: $t) }", json!({"t": target})).await;
        assert_eq!(code, "CONFLICT", "a target findings list cannot be deleted");
        let data = gql(&app, "mutation($f: ID!) { updateFinding(id: $f, input: {cvss: null, severity: \"low\", tags: [\"a\"]}) { cvss { score } severity tags } }", json!({"f": finding})).await;
        assert_eq!(data["updateFinding"], json!({"cvss": null, "severity": "low", "tags": ["a"]}));
        let data = gql(&app, "mutation($f: ID!) { transitionFinding(id: $f, input: {status: \"open\"}) { status openedAt } }", json!({"f": finding})).await;
        assert_eq!(data["transitionFinding"]["status"], "open");
        assert!(data["transitionFinding"]["openedAt"].is_string());
        let (code, _) = refused(&app, "mutation($f: ID!) { transitionFinding(id: $f, input: {status: \"draft\"}) { status } }", json!({"f": finding})).await;
        assert_eq!(code, "CONFLICT", "not a legal transition");
        let data = gql(&app, "mutation($e: ID!, $f: ID!) { bulkUpdateFindings(engagementId: $e, input: {ids: [$f, \"fnd_00000000000000000000\"], set: {severity: \"high\"}}) {
            id status finding { severity } error { code statusCode } } }", json!({"e": engagement, "f": finding})).await;
        assert_eq!(data["bulkUpdateFindings"], json!([
            {"id": finding, "status": 200, "finding": {"severity": "high"}, "error": null},
            {"id": "fnd_00000000000000000000", "status": 404, "finding": null, "error": {"code": "NOT_FOUND", "statusCode": 404}},
        ]));
        let (code, _) = refused(&app, "mutation($e: ID!) { bulkUpdateFindings(engagementId: $e, input: {ids: [], set: {severity: \"high\"}}) { id } }", e.clone()).await;
        assert_eq!(code, "VALIDATION_ERROR");
        let writer = app.key_with(&["findings:write", "findings:read"]).await;
        let (_, body) = gql_with(&app, &writer, "mutation($f: ID!) { deleteFinding(id: $f) }", json!({"f": finding})).await;
        assert_eq!(only_code(&body), "FORBIDDEN");
        let data = gql(&app, "mutation($f: ID!) { updateFinding(id: $f, input: {affectedTargetIds: []}) { affectedTargetIds } }", json!({"f": finding})).await;
        assert_eq!(data["updateFinding"]["affectedTargetIds"], json!([]));
        assert_eq!(gql(&app, "mutation($t: ID!) { deleteTarget(id: $t) }", json!({"t": target})).await["deleteTarget"], target.as_str());

        // Tasks.
        let data = gql(&app, "mutation($e: ID!) { createTask(engagementId: $e, input: {title: \"Scan\", priority: \"high\"}) { id status priority } }", e.clone()).await;
        let task = data["createTask"]["id"].as_str().unwrap().to_owned();
        assert_eq!((data["createTask"]["status"].clone(), data["createTask"]["priority"].clone()), (json!("open"), json!("high")));
        let (code, _) = refused(&app, "mutation($e: ID!) { createTask(engagementId: $e, input: {title: \"x\", priority: \"urgent\"}) { id } }", e.clone()).await;
        assert_eq!(code, "VALIDATION_ERROR");
        let data = gql(&app, "mutation($t: ID!) { updateTask(id: $t, input: {status: \"in_progress\", dueDate: \"2025-02-01\"}) { status dueDate } }", json!({"t": task})).await;
        assert_eq!(data["updateTask"], json!({"status": "in_progress", "dueDate": "2025-02-01"}));
        let data = gql(&app, "mutation($t: ID!) { closeTask(id: $t) { status closedAt } }", json!({"t": task})).await;
        assert_eq!(data["closeTask"]["status"], "closed");
        let (code, _) = refused(&app, "mutation($t: ID!) { closeTask(id: $t) { status } }", json!({"t": task})).await;
        assert_eq!(code, "CONFLICT");
        assert_eq!(gql(&app, "mutation($t: ID!) { deleteTask(id: $t) }", json!({"t": task})).await["deleteTask"], task.as_str());

        // Wiki pages.
        let data = gql(&app, "mutation($e: ID!) { createWikiPage(engagementId: $e, input: {title: \"Active Directory\"}) { id slug content } }", e.clone()).await;
        let page = data["createWikiPage"]["id"].as_str().unwrap().to_owned();
        assert_eq!(data["createWikiPage"]["slug"], "active-directory");
        let data = gql(&app, "mutation($e: ID!, $p: ID!) { createWikiPage(engagementId: $e, input: {title: \"Child\", parentId: $p}) { id parentId } }", json!({"e": engagement, "p": page})).await;
        let child = data["createWikiPage"]["id"].as_str().unwrap().to_owned();
        let (code, _) = refused(&app, "mutation($p: ID!, $c: ID!) { updateWikiPage(id: $p, input: {parentId: $c}) { id } }", json!({"p": page, "c": child})).await;
        assert_eq!(code, "VALIDATION_ERROR", "a page cannot move under its own child");
        let (code, _) = refused(&app, "mutation($p: ID!) { deleteWikiPage(id: $p) }", json!({"p": page})).await;
        assert_eq!(code, "CONFLICT");
        let data = gql(&app, "mutation($c: ID!) { updateWikiPage(id: $c, input: {parentId: null, content: \"x\"}) { parentId content } }", json!({"c": child})).await;
        assert_eq!(data["updateWikiPage"], json!({"parentId": null, "content": "x"}));
        assert_eq!(gql(&app, "mutation($p: ID!) { deleteWikiPage(id: $p) }", json!({"p": page})).await["deleteWikiPage"], page.as_str());

        // Reports: create, generate, publish, and a published report is immutable.
        let data = gql(&app, "mutation($e: ID!) { createReport(engagementId: $e, input: {title: \"Final\", format: \"html\"}) { id status content } }", e.clone()).await;
        let report = data["createReport"]["id"].as_str().unwrap().to_owned();
        assert_eq!((data["createReport"]["status"].clone(), data["createReport"]["content"].clone()), (json!("draft"), Value::Null));
        let data = gql(&app, "mutation($r: ID!) { generateReport(id: $r) { findingCount generatedAt content } }", json!({"r": report})).await;
        assert_eq!(data["generateReport"]["findingCount"], 1);
        assert!(data["generateReport"]["content"].as_str().unwrap().contains("SQLi"));
        for status in ["in_review", "approved", "published"] {
            let data = gql(&app, "mutation($r: ID!, $s: String!) { updateReport(id: $r, input: {status: $s}) { status } }", json!({"r": report, "s": status})).await;
            assert_eq!(data["updateReport"]["status"], status);
        }
        let (code, _) = refused(&app, "mutation($r: ID!) { deleteReport(id: $r) }", json!({"r": report})).await;
        assert_eq!(code, "CONFLICT");
        let draft = gql(&app, "mutation($e: ID!) { createReport(engagementId: $e, input: {title: \"Draft\"}) { id format } }", e.clone()).await;
        assert_eq!(draft["createReport"]["format"], "markdown");
        let draft = draft["createReport"]["id"].as_str().unwrap().to_owned();
        assert_eq!(gql(&app, "mutation($r: ID!) { deleteReport(id: $r) }", json!({"r": draft})).await["deleteReport"], draft.as_str());
    }

    async fn organization_key_and_webhook_mutations(db) {
        let app = TestApp::spawn_with(db, |s| s.webhook_allow_private = true).await;
        let data = gql(&app, "mutation { updateOrganization(input: {name: \"Acme Red Team\"}, ifMatch: 1) { name slug engagementCount } }", json!({})).await;
        assert_eq!(data["updateOrganization"], json!({"name": "Acme Red Team", "slug": "default", "engagementCount": 0}));
        let (code, _) = refused(&app, "mutation { updateOrganization(input: {name: \"\"}) { name } }", json!({})).await;
        assert_eq!(code, "VALIDATION_ERROR");
        let (code, _) = refused(&app, "mutation { updateOrganization(input: {name: \"Late\"}, ifMatch: 1) { name } }", json!({})).await;
        assert_eq!(code, "PRECONDITION_FAILED");

        // A key's secret is shown once, works at once, and stops working once revoked.
        let data = gql(&app, "mutation { createApiKey(input: {name: \"ci\", permissions: [\"engagements:read\"], environment: \"test\"}) { id key prefix lastFour permissions } }", json!({})).await;
        let created = &data["createApiKey"];
        let secret = created["key"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("pwbk_test_") && secret.ends_with(created["lastFour"].as_str().unwrap()));
        let again = gql(&app, "query($id: ID!) { apiKey(id: $id) { key } }", json!({"id": created["id"]})).await;
        assert_eq!(again["apiKey"]["key"], Value::Null, "the secret is shown only at creation");
        let (_, body) = gql_with(&app, &secret, "{ engagements { totalCount } }", json!({})).await;
        assert_eq!(body["data"]["engagements"]["totalCount"], 0);
        let (code, _) = refused(&app, "mutation { createApiKey(input: {name: \"x\", permissions: [\"nope\"]}) { id } }", json!({})).await;
        assert_eq!(code, "VALIDATION_ERROR");
        let (_, body) = gql_with(&app, &secret, "mutation { createApiKey(input: {name: \"x\", permissions: [\"engagements:read\"]}) { id } }", json!({})).await;
        assert_eq!(only_code(&body), "FORBIDDEN");
        let (code, _) = refused(&app, "mutation($id: ID!) { revokeApiKey(id: $id, ifMatch: 9) { id } }", json!({"id": created["id"]})).await;
        assert_eq!(code, "PRECONDITION_FAILED");
        gql(&app, "mutation($id: ID!) { revokeApiKey(id: $id, ifMatch: 1) { id } }", json!({"id": created["id"]})).await;
        let (status, _) = gql_with(&app, &secret, "{ engagements { totalCount } }", json!({})).await;
        assert_eq!(status, 401);

        // Webhooks: the secret once, updates, URL checks as REST, delete.
        let data = gql(&app, "mutation { createWebhook(input: {url: \"http://127.0.0.1:9/hook\", events: [\"finding.*\"]}) { id secret events version } }", json!({})).await;
        let hook = data["createWebhook"]["id"].as_str().unwrap().to_owned();
        assert!(data["createWebhook"]["secret"].as_str().unwrap().starts_with("whsec_"));
        let data = gql(&app, "mutation($h: ID!) { updateWebhook(id: $h, input: {events: [\"task.*\"]}, ifMatch: 1) { events secret version } }", json!({"h": hook})).await;
        assert_eq!(data["updateWebhook"], json!({"events": ["task.*"], "secret": null, "version": 2}));
        let (code, _) = refused(&app, "mutation($h: ID!) { updateWebhook(id: $h, input: {url: \"ftp://example\"}) { id } }", json!({"h": hook})).await;
        assert_eq!(code, "VALIDATION_ERROR");
        let (code, _) = refused(&app, "mutation($h: ID!) { deleteWebhook(id: $h, ifMatch: 1) }", json!({"h": hook})).await;
        assert_eq!(code, "PRECONDITION_FAILED", "the webhook was updated since version 1");
        assert_eq!(gql(&app, "mutation($h: ID!) { deleteWebhook(id: $h) }", json!({"h": hook})).await["deleteWebhook"], hook.as_str());
        let (status, _) = parts(app.get(&format!("/api/v1/webhooks/{hook}")).send().await.unwrap()).await;
        assert_eq!(status, 404);
    }

    async fn missing_input_fields_are_the_rest_validation_errors(db) {
        let app = TestApp::spawn(db).await;
        let engagement = app.create_engagement(json!({"name": "Inputs"})).await["id"].as_str().unwrap().to_owned();
        let cases = [
            ("createEngagement(input: {}) { id }".to_owned(), "/api/v1/engagements".to_owned(), json!({})),
            (format!("createTarget(engagementId: \"{engagement}\", input: {{value: \"a.example.com\"}}) {{ id }}"), format!("/api/v1/engagements/{engagement}/targets"), json!({"value": "a.example.com"})),
            (format!("createTask(engagementId: \"{engagement}\", input: {{}}) {{ id }}"), format!("/api/v1/engagements/{engagement}/tasks"), json!({})),
            ("createApiKey(input: {name: \"k\"}) { id }".to_owned(), "/api/v1/api-keys".to_owned(), json!({"name": "k"})),
            ("createWebhook(input: {}) { id }".to_owned(), "/api/v1/webhooks".to_owned(), json!({})),
        ];
        for (mutation, path, rest_body) in cases {
            let (status, rest_answer) = parts(app.post(&path, &rest_body).send().await.unwrap()).await;
            assert_eq!(status, 422, "{path}: {rest_answer}");
            let (code, error) = refused(&app, &format!("mutation {{ {mutation} }}"), json!({})).await;
            assert_eq!(code, "VALIDATION_ERROR", "{mutation}: {error}");
            assert_eq!(error["message"], rest_answer["error"]["message"], "{mutation}");
            assert_eq!(error["extensions"]["details"], rest_answer["error"]["details"], "{mutation}");
            assert!(error["extensions"]["details"].as_array().is_some_and(|d| !d.is_empty()), "{error}");
        }
    }

    async fn idempotency_keys_replay_a_graphql_requests_first_response(db) {
        let app = TestApp::spawn(db).await;
        let send = |body: Value, key: &'static str| app.post("/api/v1/graphql", &body).header("idempotency-key", key).send();
        let create = |name: &str| json!({"query": "mutation($input: CreateEngagementInput!) { createEngagement(input: $input) { id name version } }", "variables": {"input": {"name": name}}});

        let first = send(create("Once"), "gql-1").await.unwrap();
        assert!(first.headers().get("idempotent-replayed").is_none());
        let (status, first) = parts(first).await;
        assert_eq!(status, 200, "{first}");
        assert!(first.get("errors").is_none(), "{first}");
        let again = send(create("Once"), "gql-1").await.unwrap();
        assert_eq!(again.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap().to_owned()), Some("true".to_owned()));
        let (status, again) = parts(again).await;
        assert_eq!((status, &again), (200, &first), "the first response, replayed");
        let (_, list) = parts(app.get("/api/v1/engagements").send().await.unwrap()).await;
        assert_eq!(list["meta"]["total"], 1, "performed once: {list}");
        // The key is in the event's metadata, as for REST.
        let store = pwnbook_events::Store::open(&app.db.url).await.unwrap();
        let tagged: i64 = sqlx::query_scalar("SELECT count(*) FROM event_log WHERE CAST(metadata AS TEXT) LIKE '%gql-1%'")
            .fetch_one(store.pool()).await.unwrap();
        assert_eq!(tagged, 1);
        store.close().await;

        // The key with a different request: 409 in the error envelope.
        let (status, body) = parts(send(create("Other"), "gql-1").await.unwrap()).await;
        assert_eq!((status, error_code(status, &body)), (409, "CONFLICT".to_owned()));

        // A request that saved nothing is not stored: a refused write (the name is taken) and
        // one that did not parse run again on retry, and the key stays free for the corrected
        // request.
        for refused in [create("ONCE"), json!({"query": "mutation { createEngagement("})] {
            for _ in 0..2 {
                let answer = send(refused.clone(), "gql-2").await.unwrap();
                assert!(answer.headers().get("idempotent-replayed").is_none());
                let (status, answer) = parts(answer).await;
                assert_eq!(status, 200, "{answer}");
                assert!(["CONFLICT", "BAD_REQUEST"].contains(&only_code(&answer).as_str()), "{answer}");
            }
        }
        let taken = send(create("Fixed"), "gql-2").await.unwrap();
        assert!(taken.headers().get("idempotent-replayed").is_none());
        assert_eq!(parts(taken).await.1["data"]["createEngagement"]["name"], "Fixed");

        // A body that is no GraphQL request ran nothing either.
        let garbled = app.post("/api/v1/graphql", &json!({"query": ""})).header("idempotency-key", "gql-5").send().await.unwrap();
        assert_eq!(garbled.status(), 400);
        let taken = send(create("Unfazed"), "gql-5").await.unwrap();
        assert!(taken.headers().get("idempotent-replayed").is_none());
        assert_eq!(parts(taken).await.1["data"]["createEngagement"]["name"], "Unfazed");

        // A write that changed nothing failed nowhere: it is stored, so its retry, after someone
        // else changed the engagement, replays instead of undoing that change.
        let id = first["data"]["createEngagement"]["id"].as_str().unwrap().to_owned();
        let unchanged = json!({"query": "mutation($id: ID!) { updateEngagement(id: $id, input: {name: \"Once\"}) { name version } }", "variables": {"id": id}});
        let (_, as_it_was) = parts(send(unchanged.clone(), "gql-6").await.unwrap()).await;
        assert_eq!(as_it_was["data"]["updateEngagement"], json!({"name": "Once", "version": 1}), "{as_it_was}");
        let (status, _) = parts(app.patch(&format!("/api/v1/engagements/{id}"), &json!({"name": "Renamed"})).send().await.unwrap()).await;
        assert_eq!(status, 200);
        let replay = send(unchanged, "gql-6").await.unwrap();
        assert!(replay.headers().get("idempotent-replayed").is_some());
        assert_eq!(parts(replay).await.1, as_it_was);
        assert_eq!(rest(&app, &format!("/api/v1/engagements/{id}")).await["name"], "Renamed");

        // A request that saved something is stored as it answered, errors included: one field
        // committed and one was refused; the retry replays both and creates nothing more.
        let mixed = json!({"query": "mutation { a: createEngagement(input: {name: \"Mixed\"}) { id } b: createEngagement(input: {name: \"mixed\"}) { id } }"});
        let (_, first_mixed) = parts(send(mixed.clone(), "gql-3").await.unwrap()).await;
        assert!(first_mixed["data"]["a"]["id"].is_string(), "{first_mixed}");
        assert_eq!(only_code(&first_mixed), "CONFLICT");
        let replay = send(mixed, "gql-3").await.unwrap();
        assert!(replay.headers().get("idempotent-replayed").is_some());
        assert_eq!(parts(replay).await.1, first_mixed);
        let (_, list) = parts(app.get("/api/v1/engagements").send().await.unwrap()).await;
        assert_eq!(list["meta"]["total"], 4, "Renamed, Fixed, Unfazed and Mixed: {list}");

        // The replay keeps the media type GraphQL over HTTP asked for.
        let over_http = || {
            app.post("/api/v1/graphql", &create("Typed"))
                .header("idempotency-key", "gql-4")
                .header("accept", "application/graphql-response+json")
                .send()
        };
        for replayed in [false, true] {
            let answer = over_http().await.unwrap();
            assert_eq!(answer.headers().get("idempotent-replayed").is_some(), replayed);
            assert_eq!(answer.headers()["content-type"], "application/graphql-response+json");
        }
    }

    async fn a_graphql_replay_never_shows_or_stores_the_secrets_the_first_answer_showed(db) {
        let app = TestApp::spawn_with(db, |s| s.webhook_allow_private = true).await;
        // Aliases rename the fields that carry secrets: the replay still leaves them out.
        let body = json!({"query": "mutation { k: createApiKey(input: {name: \"ci\", permissions: [\"engagements:read\"]}) { id s: key } \
                                    h: createWebhook(input: {url: \"http://127.0.0.1:9/hook\", events: [\"finding.*\"], secret: \"a \\\"quoted\\\" secret\"}) { id x: secret } }"});
        let send = || app.post("/api/v1/graphql", &body).header("idempotency-key", "secrets").send();
        let (status, first) = parts(send().await.unwrap()).await;
        assert_eq!(status, 200, "{first}");
        let key = first["data"]["k"]["s"].as_str().unwrap().to_owned();
        assert!(key.starts_with("pwbk_live_"), "{first}");
        assert_eq!(first["data"]["h"]["x"], "a \"quoted\" secret", "{first}");
        let replay = send().await.unwrap();
        assert!(replay.headers().get("idempotent-replayed").is_some());
        let (_, replay) = parts(replay).await;
        assert_eq!(replay["data"]["k"], json!({"id": first["data"]["k"]["id"], "s": null}));
        assert_eq!(replay["data"]["h"], json!({"id": first["data"]["h"]["id"], "x": null}));
        let store = pwnbook_events::Store::open(&app.db.url).await.unwrap();
        let stored: Vec<String> = sqlx::query_scalar("SELECT body FROM idempotency_keys").fetch_all(store.pool()).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert!(!stored[0].contains(&key) && !stored[0].contains("quoted"), "{}", stored[0]);
        store.close().await;
    }

    async fn a_graphql_request_over_the_rate_limit_leaves_its_idempotency_key_unspent(db) {
        let app = TestApp::spawn_with(db, |settings| settings.rate_limit_per_minute = NonZeroU32::new(5).unwrap()).await;
        // Six fields: the request pays for the first, the other five are charged before anything
        // runs, and the allowance runs out.
        let fields: Vec<String> = (0..6).map(|i| format!("e{i}: createEngagement(input: {{name: \"Limited {i}\"}}) {{ id }}")).collect();
        let body = json!({"query": format!("mutation {{ {} }}", fields.join(" "))});
        let (status, limited) = parts(app.post("/api/v1/graphql", &body).header("idempotency-key", "limited").send().await.unwrap()).await;
        assert_eq!((status, only_code(&limited)), (200, "RATE_LIMITED".to_owned()), "{limited}");
        let store = pwnbook_events::Store::open(&app.db.url).await.unwrap();
        let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE idempotency_key = 'limited'")
            .fetch_one(store.pool()).await.unwrap();
        assert_eq!(kept, 0, "nothing ran, so nothing is replayed: the retry after Retry-After runs");
        let created: i64 = sqlx::query_scalar("SELECT count(*) FROM engagements").fetch_one(store.pool()).await.unwrap();
        assert_eq!(created, 0);
        store.close().await;
    }
}
