//! Tasks (SPEC §3): lifecycle with close and reopen, validation, filters, sorts, pagination and
//! the parent engagement's rules.

use pwnbook_events::backend_tests;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{error_code, parts, TestApp};

pub async fn create_task(app: &TestApp, engagement: &str, body: Value) -> Value {
    let (status, json) =
        parts(app.post(&format!("/api/v1/engagements/{engagement}/tasks"), &body).send().await.unwrap())
            .await;
    assert_eq!(status, 201, "{body}: {json}");
    json["data"].clone()
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

async fn titles(app: &TestApp, path: &str) -> Vec<String> {
    let (status, body) = parts(app.get(path).send().await.unwrap()).await;
    assert_eq!(status, 200, "{path}: {body}");
    body["data"].as_array().unwrap().iter().map(|t| t["title"].as_str().unwrap().to_owned()).collect()
}

backend_tests! {
    async fn tasks_are_created_closed_reopened_and_deleted(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Tasks"})).await);
        let response = app.post(&format!("/api/v1/engagements/{engagement}/tasks"), &json!({"title": " Run nmap ", "dueDate": "2025-02-01"})).send().await.unwrap();
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let (status, created) = parts(response).await;
        assert_eq!(status, 201);
        let task = &created["data"];
        assert!(task["id"].as_str().unwrap().starts_with("tsk_"));
        assert_eq!((task["title"].clone(), task["status"].clone(), task["priority"].clone(), task["dueDate"].clone(), task["closedAt"].clone()), (json!("Run nmap"), json!("open"), json!("medium"), json!("2025-02-01"), Value::Null));
        assert_eq!((task["engagementId"].clone(), task["description"].clone(), task["version"].clone()), (json!(engagement), Value::Null, json!(1)));

        let (status, updated) = parts(app.patch(&location, &json!({"status": "in_progress", "priority": "high", "description": "full range"})).header("if-match", "\"1\"").send().await.unwrap()).await;
        assert_eq!(status, 200, "{updated}");
        assert_eq!((updated["data"]["status"].clone(), updated["data"]["priority"].clone(), updated["data"]["version"].clone()), (json!("in_progress"), json!("high"), json!(3)));
        let (status, closed) = parts(app.post(&format!("{location}/close"), &json!({})).send().await.unwrap()).await;
        assert_eq!((status, closed["data"]["status"].clone()), (200, json!("closed")));
        assert!(closed["data"]["closedAt"].is_string());
        let (status, body) = parts(app.post(&format!("{location}/close"), &json!({})).send().await.unwrap()).await;
        assert_eq!((status, error_code(status, &body)), (409, "CONFLICT".to_owned()));
        let (_, reopened) = parts(app.patch(&location, &json!({"status": "open"})).send().await.unwrap()).await;
        assert_eq!((reopened["data"]["status"].clone(), reopened["data"]["closedAt"].clone()), (json!("open"), Value::Null));
        let (status, _) = parts(app.patch(&location, &json!({"title": "x"})).header("if-match", "\"1\"").send().await.unwrap()).await;
        assert_eq!(status, 412);

        for body in [json!({"title": ""}), json!({"title": null}), json!({"priority": "urgent"}), json!({"status": "done"}), json!({"dueDate": "2025-13-01"}), json!({"closedAt": null}), json!({"owner": "x"})] {
            let (status, json) = parts(app.patch(&location, &body).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &json)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
        }
        for body in [json!({}), json!({"title": "t", "status": "closed"}), json!({"title": "t", "priority": "p0"})] {
            let (status, json) = parts(app.post(&format!("/api/v1/engagements/{engagement}/tasks"), &body).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &json)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
        }
        assert_eq!(app.delete(&location).send().await.unwrap().status(), 204);
        assert_eq!(parts(app.get(&location).send().await.unwrap()).await.0, 404);
        assert_eq!(parts(app.post(&format!("{location}/close"), &json!({})).send().await.unwrap()).await.0, 404);
    }

    async fn tasks_filter_sort_and_paginate(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Lists"})).await);
        let other = id_of(&app.create_engagement(json!({"name": "Other"})).await);
        create_task(&app, &engagement, json!({"title": "alpha", "priority": "low", "dueDate": "2025-03-01"})).await;
        let bravo = id_of(&create_task(&app, &engagement, json!({"title": "Bravo", "priority": "high"})).await);
        create_task(&app, &engagement, json!({"title": "charlie", "priority": "medium", "dueDate": "2025-01-01"})).await;
        create_task(&app, &other, json!({"title": "delta", "priority": "high"})).await;
        app.post(&format!("/api/v1/tasks/{bravo}/close"), &json!({})).send().await.unwrap();
        let list = format!("/api/v1/engagements/{engagement}/tasks");
        assert_eq!(titles(&app, &list).await, ["charlie", "Bravo", "alpha"]);
        assert_eq!(titles(&app, &format!("{list}?sort=title&order=asc")).await, ["alpha", "Bravo", "charlie"]);
        assert_eq!(titles(&app, &format!("{list}?sort=priority&order=desc")).await, ["Bravo", "charlie", "alpha"]);
        assert_eq!(titles(&app, &format!("{list}?sort=dueDate&order=asc")).await, ["Bravo", "charlie", "alpha"], "no due date first");
        assert_eq!(titles(&app, &format!("{list}?sort=updatedAt&order=desc&perPage=1")).await, ["Bravo"]);
        assert_eq!(titles(&app, &format!("{list}?status=closed")).await, ["Bravo"]);
        assert_eq!(titles(&app, &format!("{list}?status=open&priority=low,medium")).await, ["charlie", "alpha"]);
        assert_eq!(titles(&app, &format!("{list}?q=RAV")).await, ["Bravo"]);
        assert_eq!(titles(&app, "/api/v1/tasks?sort=title&order=asc").await, ["alpha", "Bravo", "charlie", "delta"]);
        assert_eq!(titles(&app, &format!("/api/v1/tasks?engagementId={other}")).await, ["delta"]);
        assert_eq!(titles(&app, &format!("{list}?createdAfter=2000-01-01T00:00:00Z&createdBefore=2000-01-02T00:00:00Z")).await, Vec::<String>::new());
        let (_, page) = parts(app.get(&format!("{list}?perPage=2&page=2")).send().await.unwrap()).await;
        assert_eq!(page["meta"], json!({"total": 3, "page": 2, "perPage": 2, "totalPages": 2, "nextCursor": null}));
        let (_, first) = parts(app.get(&format!("{list}?perPage=2&sort=priority&order=asc")).send().await.unwrap()).await;
        let cursor = first["meta"]["nextCursor"].as_str().unwrap();
        assert_eq!(titles(&app, &format!("{list}?cursor={cursor}&perPage=2")).await, ["Bravo"]);
        for query in ["status=done", "priority=p0", "sort=status", "engagementId=x", "createdAfter=soon"] {
            let (status, body) = parts(app.get(&format!("{list}?{query}")).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &body)), (400, "BAD_REQUEST".to_owned()), "{query}");
        }
    }

    async fn the_parent_engagement_governs_its_tasks(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Parent"})).await);
        let task = format!("/api/v1/tasks/{}", id_of(&create_task(&app, &engagement, json!({"title": "t"})).await));
        let list = format!("/api/v1/engagements/{engagement}/tasks");
        app.post(&format!("/api/v1/engagements/{engagement}/archive"), &json!({})).send().await.unwrap();
        assert_eq!(parts(app.get(&task).send().await.unwrap()).await.0, 200);
        for request in [app.post(&list, &json!({"title": "n"})), app.patch(&task, &json!({"title": "x"})), app.post(&format!("{task}/close"), &json!({})), app.delete(&task)] {
            let (status, body) = parts(request.send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &body)), (409, "CONFLICT".to_owned()));
        }
        app.post(&format!("/api/v1/engagements/{engagement}/unarchive"), &json!({})).send().await.unwrap();
        app.delete(&format!("/api/v1/engagements/{engagement}")).send().await.unwrap();
        for request in [app.get(&task), app.get(&list), app.patch(&task, &json!({"title": "x"})), app.post(&format!("{task}/close"), &json!({}))] {
            assert_eq!(parts(request.send().await.unwrap()).await.0, 404);
        }
        assert!(titles(&app, "/api/v1/tasks").await.is_empty());
        let stranger = app.org_with_key(&["*"]).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Mine"})).await);
        let task = id_of(&create_task(&app, &engagement, json!({"title": "mine"})).await);
        let (status, _) = parts(app.request(Method::GET, &format!("/api/v1/tasks/{task}"), &stranger).send().await.unwrap()).await;
        assert_eq!(status, 404);
    }
}
