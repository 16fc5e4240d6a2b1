//! Reports (SPEC §3): generation in each format ordered by severity then CVSS score, HTML that
//! escapes all user text, the status lifecycle and the immutability of a published report.

use pwnbook_events::backend_tests;
use serde_json::{json, Value};

use crate::findings::create_finding;
use crate::harness::{error_code, parts, TestApp};

pub async fn create_report(app: &TestApp, engagement: &str, body: Value) -> Value {
    let (status, json) =
        parts(app.post(&format!("/api/v1/engagements/{engagement}/reports"), &body).send().await.unwrap())
            .await;
    assert_eq!(status, 201, "{body}: {json}");
    json["data"].clone()
}

async fn titles(app: &TestApp, path: String) -> Vec<String> {
    let (status, body) = parts(app.get(&path).send().await.unwrap()).await;
    assert_eq!(status, 200, "{path}: {body}");
    body["data"].as_array().unwrap().iter().map(|r| r["title"].as_str().unwrap().to_owned()).collect()
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

async fn content(app: &TestApp, report: &str) -> (String, String) {
    let response = app.get(&format!("/api/v1/reports/{report}/content")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    (content_type, response.text().await.unwrap())
}

async fn seed(app: &TestApp) -> String {
    let engagement =
        id_of(&app.create_engagement(json!({"name": "Acme <web>", "clientName": "Acme & Co"})).await);
    create_finding(app, &engagement, json!({"title": "Low one", "severity": "low"})).await;
    create_finding(
        app,
        &engagement,
        json!({"title": "Critical 9.8", "cvss": {"vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}}),
    )
    .await;
    create_finding(
        app,
        &engagement,
        json!({"title": "Critical 10", "cvss": {"vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"}}),
    )
    .await;
    create_finding(
        app,
        &engagement,
        json!({
            "title": "<script>alert(1)</script>", "severity": "medium",
            "description": "<img src=x onerror=alert(2)> & \"quotes\" 'single'",
            "references": ["https://example.test/?a=1&b=<2>"]
        }),
    )
    .await;
    engagement
}

backend_tests! {
    async fn reports_render_findings_by_severity_then_score(db) {
        let app = TestApp::spawn(db).await;
        let engagement = seed(&app).await;
        let markdown = id_of(&create_report(&app, &engagement, json!({"title": "Final"})).await);
        let (status, generated) = parts(app.post(&format!("/api/v1/reports/{markdown}/generate"), &json!({})).send().await.unwrap()).await;
        assert_eq!(status, 200, "{generated}");
        assert_eq!((generated["data"]["format"].clone(), generated["data"]["findingCount"].clone()), (json!("markdown"), json!(4)));
        assert!(generated["data"]["generatedAt"].is_string());
        let (content_type, text) = content(&app, &markdown).await;
        assert!(content_type.starts_with("text/markdown"), "{content_type}");
        let order: Vec<usize> = ["Critical 10", "Critical 9.8", "<script>alert(1)</script>", "Low one"].iter().map(|t| text.find(t).unwrap()).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.contains("| critical | 2 |"), "{text}");
        // The document names the moment the report says it was generated.
        let at = generated["data"]["generatedAt"].as_str().unwrap();
        assert!(text.contains(&format!("Generated: {at}")), "{at}: {text}");

        let json_report = id_of(&create_report(&app, &engagement, json!({"title": "Data", "format": "json"})).await);
        let (_, generated) = parts(app.post(&format!("/api/v1/reports/{json_report}/generate"), &json!({})).send().await.unwrap()).await;
        let (content_type, text) = content(&app, &json_report).await;
        assert_eq!(content_type, "application/json");
        let document: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(document["generatedAt"], generated["data"]["generatedAt"]);
        let (_, fetched) = parts(app.get(&format!("/api/v1/reports/{json_report}")).send().await.unwrap()).await;
        assert_eq!(fetched["data"]["generatedAt"], generated["data"]["generatedAt"], "the read model agrees");
        let listed: Vec<&str> = document["findings"].as_array().unwrap().iter().map(|f| f["title"].as_str().unwrap()).collect();
        assert_eq!(listed, ["Critical 10", "Critical 9.8", "<script>alert(1)</script>", "Low one"]);
        assert_eq!((document["summary"]["critical"].clone(), document["engagement"]["name"].clone()), (json!(2), json!("Acme <web>")));

        // A finding added later appears only after the next generation.
        create_finding(&app, &engagement, json!({"title": "Late high", "severity": "high"})).await;
        assert!(!content(&app, &json_report).await.1.contains("Late high"));
        app.post(&format!("/api/v1/reports/{json_report}/generate"), &json!({})).send().await.unwrap();
        assert!(content(&app, &json_report).await.1.contains("Late high"));

        let fresh = id_of(&create_report(&app, &engagement, json!({"title": "Never generated"})).await);
        assert_eq!(parts(app.get(&format!("/api/v1/reports/{fresh}/content")).send().await.unwrap()).await.0, 404);
    }

    async fn html_reports_are_well_formed_and_escape_user_text(db) {
        let app = TestApp::spawn(db).await;
        let engagement = seed(&app).await;
        let report = id_of(&create_report(&app, &engagement, json!({"title": "<b>Q1</b> report", "format": "html"})).await);
        app.post(&format!("/api/v1/reports/{report}/generate"), &json!({})).send().await.unwrap();
        let (content_type, html) = content(&app, &report).await;
        assert_eq!(content_type, "text/html; charset=utf-8");
        assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
        for raw in ["<script>", "<img", "<b>Q1", "Acme <web>", "Acme & Co", "&b=<2>"] {
            assert!(!html.contains(raw), "{raw} reached the document unescaped");
        }
        for escaped in ["&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;img src=x onerror=alert(2)&gt; &amp; &quot;quotes&quot; &#39;single&#39;", "&lt;b&gt;Q1&lt;/b&gt; report", "Acme &amp; Co"] {
            assert!(html.contains(escaped), "{escaped} missing in {html}");
        }
        // Every opened element is closed, in order.
        let mut stack: Vec<String> = Vec::new();
        for tag in html.split('<').skip(1).map(|t| t.split(['>', ' ']).next().unwrap()) {
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "{html}");
            } else if !tag.starts_with('!') && tag != "meta" {
                stack.push(tag.to_owned());
            }
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
    }

    async fn the_report_lifecycle_ends_in_an_immutable_publication(db) {
        let app = TestApp::spawn(db).await;
        let engagement = seed(&app).await;
        let id = id_of(&create_report(&app, &engagement, json!({"title": "Final"})).await);
        let path = format!("/api/v1/reports/{id}");
        let to = |status: &str| app.patch(&path, &json!({"status": status})).send();
        assert_eq!(parts(to("approved").await.unwrap()).await.0, 409, "draft cannot skip review");
        assert_eq!(parts(to("in_review").await.unwrap()).await.0, 200);
        assert_eq!(parts(to("approved").await.unwrap()).await.0, 200);
        let (status, body) = parts(to("published").await.unwrap()).await;
        assert_eq!((status, body["error"]["message"].clone()), (409, json!("generate the report before publishing it")));
        let (status, _) = parts(app.post(&format!("{path}/generate"), &json!({})).send().await.unwrap()).await;
        assert_eq!(status, 409, "an approved report is not regenerated");
        assert_eq!(parts(to("in_review").await.unwrap()).await.0, 200);
        assert_eq!(parts(app.post(&format!("{path}/generate"), &json!({})).send().await.unwrap()).await.0, 200);
        assert_eq!(parts(to("approved").await.unwrap()).await.0, 200);
        let (status, published) = parts(to("published").await.unwrap()).await;
        assert_eq!((status, published["data"]["status"].clone()), (200, json!("published")));
        assert!(published["data"]["publishedAt"].is_string());
        let before = content(&app, &id).await.1;
        for request in [
            app.patch(&path, &json!({"title": "Changed"})),
            app.patch(&path, &json!({"status": "approved"})),
            app.post(&format!("{path}/generate"), &json!({})),
            app.delete(&path),
        ] {
            let (status, body) = parts(request.send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &body)), (409, "CONFLICT".to_owned()));
        }
        assert_eq!(content(&app, &id).await.1, before);

        for body in [json!({"format": "pdf"}), json!({"status": "done"}), json!({"title": null}), json!({"generatedAt": null})] {
            let other = id_of(&create_report(&app, &engagement, json!({"title": "Other"})).await);
            let (status, json) = parts(app.patch(&format!("/api/v1/reports/{other}"), &body).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &json)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
        }
        for body in [json!({}), json!({"title": "x", "format": "docx"}), json!({"title": "x", "status": "published"})] {
            let (status, json) = parts(app.post(&format!("/api/v1/engagements/{engagement}/reports"), &body).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &json)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
        }
    }

    async fn reports_list_and_follow_their_engagement(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Lists"})).await);
        let other = id_of(&app.create_engagement(json!({"name": "Other"})).await);
        create_report(&app, &engagement, json!({"title": "bravo", "format": "html"})).await;
        let alpha = id_of(&create_report(&app, &engagement, json!({"title": "Alpha"})).await);
        create_report(&app, &other, json!({"title": "charlie", "format": "json"})).await;
        app.patch(&format!("/api/v1/reports/{alpha}"), &json!({"status": "in_review"})).send().await.unwrap();
        let list = format!("/api/v1/engagements/{engagement}/reports");
        assert_eq!(titles(&app, list.clone()).await, ["Alpha", "bravo"]);
        assert_eq!(titles(&app, format!("{list}?sort=title&order=asc")).await, ["Alpha", "bravo"]);
        assert_eq!(titles(&app, format!("{list}?sort=updatedAt&order=asc")).await, ["bravo", "Alpha"]);
        assert_eq!(titles(&app, format!("{list}?status=in_review")).await, ["Alpha"]);
        assert_eq!(titles(&app, format!("{list}?format=html")).await, ["bravo"]);
        assert_eq!(titles(&app, format!("{list}?q=BRA")).await, ["bravo"]);
        assert_eq!(titles(&app, "/api/v1/reports?sort=title&order=desc".to_owned()).await, ["charlie", "bravo", "Alpha"]);
        assert_eq!(titles(&app, format!("/api/v1/reports?engagementId={other}")).await, ["charlie"]);
        let (_, page) = parts(app.get("/api/v1/reports?perPage=2").send().await.unwrap()).await;
        let cursor = page["meta"]["nextCursor"].as_str().unwrap().to_owned();
        assert_eq!(titles(&app, format!("/api/v1/reports?cursor={cursor}")).await.len(), 1);
        for query in ["status=final", "format=pdf", "sort=status"] {
            assert_eq!(parts(app.get(&format!("{list}?{query}")).send().await.unwrap()).await.0, 400, "{query}");
        }

        app.post(&format!("/api/v1/engagements/{engagement}/archive"), &json!({})).send().await.unwrap();
        let (status, _) = parts(app.post(&format!("/api/v1/reports/{alpha}/generate"), &json!({})).send().await.unwrap()).await;
        assert_eq!(status, 409);
        let (status, _) = parts(app.post(&list, &json!({"title": "x"})).send().await.unwrap()).await;
        assert_eq!(status, 409);
        app.post(&format!("/api/v1/engagements/{engagement}/unarchive"), &json!({})).send().await.unwrap();
        app.delete(&format!("/api/v1/engagements/{engagement}")).send().await.unwrap();
        assert_eq!(parts(app.get(&format!("/api/v1/reports/{alpha}")).send().await.unwrap()).await.0, 404);
        assert_eq!(parts(app.get(&format!("/api/v1/reports/{alpha}/content")).send().await.unwrap()).await.0, 404);
        assert_eq!(titles(&app, "/api/v1/reports".to_owned()).await, ["charlie"]);
    }
}
