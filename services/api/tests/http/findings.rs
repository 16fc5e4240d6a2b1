//! Findings (SPEC §3): CVSS scoring, validation, both lifecycles with their timestamps,
//! transitions, bulk updates, filters, sorts, pagination and the parent engagement's rules.

use pwnbook_events::backend_tests;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{error_code, parts, TestApp};
use crate::targets::create_target;

const XSS: &str = "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N";
const RCE_V4: &str = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:P";

pub async fn create_finding(app: &TestApp, engagement: &str, body: Value) -> Value {
    let (status, json) =
        parts(app.post(&format!("/api/v1/engagements/{engagement}/findings"), &body).send().await.unwrap())
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
    body["data"].as_array().unwrap().iter().map(|f| f["title"].as_str().unwrap().to_owned()).collect()
}

async fn transition(app: &TestApp, id: &str, body: Value) -> (u16, Value) {
    parts(app.post(&format!("/api/v1/findings/{id}/transition"), &body).send().await.unwrap()).await
}

/// The response of a write, then a read of the same finding: the write's answer (built without
/// reading the row back when the server sequenced it) must be what a read gives.
async fn answered_as_read(app: &TestApp, response: reqwest::Response) -> Value {
    let etag = response.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
    let (status, written) = parts(response).await;
    assert!(status == 200 || status == 201, "{written}");
    let data =
        if written["data"].is_array() { written["data"][0]["data"].clone() } else { written["data"].clone() };
    let read = app.get(&format!("/api/v1/findings/{}", data["id"].as_str().unwrap())).send().await.unwrap();
    if etag.is_some() {
        assert_eq!(read.headers().get("etag").map(|v| v.to_str().unwrap().to_owned()), etag);
    }
    let (_, read) = parts(read).await;
    assert_eq!(data, read["data"]);
    data
}

backend_tests! {
    async fn every_write_answers_what_a_read_then_gives(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Echo"})).await);
        let target = id_of(&create_target(&app, &engagement, json!({"type": "url", "value": "https://echo.test/"})).await);
        let list = format!("/api/v1/engagements/{engagement}/findings");
        let created = answered_as_read(&app, app.post(&list, &json!({
            "title": "Echo", "cvss": {"vector": RCE_V4}, "cwe": ["cwe-79", "CWE-80"], "cve": ["cve-2024-12345"],
            "description": "d", "impact": "i", "remediation": "r", "stepsToReproduce": "s",
            "references": ["https://a.test"], "affectedTargetIds": [target], "retestNotes": "n", "tags": ["b", "a"]
        })).send().await.unwrap()).await;
        let finding = format!("/api/v1/findings/{}", id_of(&created));
        for request in [
            app.patch(&finding, &json!({"title": "Echo 2", "cvss": null, "severity": "low", "description": null, "tags": ["z"], "affectedTargetIds": []})),
            app.patch(&finding, &json!({"cvss": {"vector": XSS}, "cwe": null, "references": ["https://b.test"]})),
            app.post(&format!("{finding}/transition"), &json!({"status": "open"})),
            app.post(&format!("{finding}/transition"), &json!({"status": "remediated", "comment": "fixed"})),
            app.post(&format!("{finding}/transition"), &json!({"reviewStatus": "ready_for_review"})),
            app.post(&format!("{finding}/transition"), &json!({"status": "open"})),
            app.patch(&format!("{list}/bulk"), &json!({"ids": [id_of(&created)], "set": {"severity": "critical", "tags": ["bulk"]}})),
        ] {
            answered_as_read(&app, request.send().await.unwrap()).await;
        }
    }

    async fn any_text_is_stored_as_written(db) {
        // PostgreSQL's creations travel as array literals: quotes, backslashes, braces, commas
        // and the word NULL must come back as they were sent.
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Texts"})).await);
        let awkward = "q\"u\\o{t,e} NULL \u{fc} \u{1f3af}\nline\ttab";
        let reference = "https://a.test/a,b?q=NULL";
        let list = format!("/api/v1/engagements/{engagement}/findings");
        let mut created = Vec::new();
        for (i, tag) in ["NULL", "a,b", "{x}", "\"q\"", "back\\slash"].into_iter().enumerate() {
            let title = format!("{awkward} {i}");
            let finding = answered_as_read(&app, app.post(&list, &json!({
                "title": title, "severity": "low", "description": awkward, "impact": "NULL", "remediation": "{}",
                "stepsToReproduce": "\\", "references": [reference], "retestNotes": "\"", "tags": [tag]
            })).send().await.unwrap()).await;
            assert_eq!(
                (&finding["title"], &finding["description"], &finding["impact"], &finding["remediation"]),
                (&json!(title), &json!(awkward), &json!("NULL"), &json!("{}"))
            );
            assert_eq!((&finding["stepsToReproduce"], &finding["retestNotes"]), (&json!("\\"), &json!("\"")));
            assert_eq!((&finding["references"], &finding["tags"]), (&json!([reference]), &json!([tag])));
            created.push(finding);
        }
        let (status, page) = parts(app.get(&format!("{list}?sort=createdAt&order=asc")).send().await.unwrap()).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["data"], json!(created));
    }

    async fn findings_are_scored_created_updated_and_deleted(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Web app"})).await);
        let target = id_of(&create_target(&app, &engagement, json!({"type": "url", "value": "https://app.acme.test/"})).await);
        let response = app.post(&format!("/api/v1/engagements/{engagement}/findings"), &json!({
            "title": "  Reflected XSS in search ", "cvss": {"vector": XSS, "score": 1.0},
            "cwe": ["cwe-79"], "cve": ["CVE-2024-12345"], "description": "d", "impact": "i",
            "remediation": "r", "stepsToReproduce": "s", "references": ["https://owasp.org/xss"],
            "affectedTargetIds": [target], "retestNotes": "n", "tags": ["web"]
        })).send().await.unwrap();
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let (status, created) = parts(response).await;
        assert_eq!(status, 201, "{created}");
        let finding = &created["data"];
        assert!(finding["id"].as_str().unwrap().starts_with("fnd_"));
        let (status, body) = parts(app.delete(&format!("/api/v1/targets/{target}")).send().await.unwrap()).await;
        assert_eq!((status, error_code(status, &body)), (409, "CONFLICT".to_owned()), "a target a finding lists stays");
        assert_eq!(finding["title"], "Reflected XSS in search");
        assert_eq!(finding["cvss"], json!({"vector": XSS, "score": 6.1, "version": "3.1"}), "the client's score is ignored");
        assert_eq!(finding["severity"], "medium", "severity follows the score's rating");
        assert_eq!((finding["cwe"].clone(), finding["cve"].clone()), (json!(["CWE-79"]), json!(["CVE-2024-12345"])));
        assert_eq!((finding["status"].clone(), finding["reviewStatus"].clone()), (json!("draft"), json!("in_progress")));
        assert_eq!(finding["affectedTargetIds"], json!([target]));
        assert_eq!((finding["openedAt"].clone(), finding["remediatedAt"].clone(), finding["closedAt"].clone()), (Value::Null, Value::Null, Value::Null));
        for field in ["description", "impact", "remediation", "stepsToReproduce", "retestNotes"] {
            assert!(finding[field].is_string(), "{field}");
        }
        let (status, fetched) = parts(app.get(&location).send().await.unwrap()).await;
        assert_eq!((status, &fetched["data"]), (200, finding));

        // A v4 vector with threat metrics; an explicit severity wins over the rating.
        let (status, updated) = parts(app.patch(&location, &json!({"cvss": {"vector": RCE_V4}, "description": null})).header("if-match", "\"1\"").send().await.unwrap()).await;
        assert_eq!(status, 200, "{updated}");
        assert_eq!((updated["data"]["cvss"]["score"].clone(), updated["data"]["severity"].clone(), updated["data"]["description"].clone()), (json!(8.9), json!("high"), Value::Null));
        let (_, updated) = parts(app.patch(&location, &json!({"severity": "critical", "cvss": null})).send().await.unwrap()).await;
        assert_eq!((updated["data"]["severity"].clone(), updated["data"]["cvss"].clone(), updated["data"]["version"].clone()), (json!("critical"), Value::Null, json!(3)));
        let (status, _) = parts(app.patch(&location, &json!({"title": "x"})).header("if-match", "\"1\"").send().await.unwrap()).await;
        assert_eq!(status, 412);
        let (_, same) = parts(app.patch(&location, &json!({"tags": ["web"]})).send().await.unwrap()).await;
        assert_eq!(same["data"]["version"], 3, "a patch that changes nothing keeps the version");

        assert_eq!(app.delete(&location).send().await.unwrap().status(), 204);
        assert_eq!(parts(app.get(&location).send().await.unwrap()).await.0, 404);
        assert_eq!(parts(app.delete(&location).send().await.unwrap()).await.0, 404);
        assert!(titles(&app, "/api/v1/findings").await.is_empty());
        assert_eq!(app.delete(&format!("/api/v1/targets/{target}")).send().await.unwrap().status(), 204, "free once the finding is gone");
    }

    async fn finding_fields_are_validated(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Validation"})).await);
        let other = id_of(&app.create_engagement(json!({"name": "Other"})).await);
        let foreign = id_of(&create_target(&app, &other, json!({"type": "ip", "value": "10.0.0.1"})).await);
        let path = format!("/api/v1/engagements/{engagement}/findings");
        for (body, field) in [
            (json!({"severity": "high"}), "title"),
            (json!({"title": "", "severity": "high"}), "title"),
            (json!({"title": "x".repeat(301), "severity": "high"}), "title"),
            (json!({"title": "t"}), "severity"),
            (json!({"title": "t", "severity": "urgent"}), "severity"),
            (json!({"title": "t", "cvss": {"vector": "CVSS:3.1/AV:N/AC:L"}}), "cvss.vector"),
            (json!({"title": "t", "cvss": {"vector": "AV:N/AC:L/Au:N/C:P/I:P/A:P"}}), "cvss.vector"),
            (json!({"title": "t", "cvss": {"vector": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:Z"}}), "cvss.vector"),
            (json!({"title": "t", "cvss": {}}), "cvss.vector"),
            (json!({"title": "t", "severity": "low", "cwe": ["79"]}), "cwe"),
            (json!({"title": "t", "severity": "low", "cve": ["CVE-2024-1"]}), "cve"),
            (json!({"title": "t", "severity": "low", "references": ["ftp://x"]}), "references"),
            (json!({"title": "t", "severity": "low", "affectedTargetIds": [foreign]}), "affectedTargetIds"),
            (json!({"title": "t", "severity": "low", "affectedTargetIds": ["tgt_nope"]}), "affectedTargetIds"),
            (json!({"title": "t", "severity": "low", "status": "open"}), "status"),
            (json!({"title": "t", "severity": "low", "openedAt": "2025-01-01T00:00:00.000Z"}), "openedAt"),
            (json!({"title": "t", "severity": "low", "tags": [""]}), "tags"),
        ] {
            let (status, json) = parts(app.post(&path, &body).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &json)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
            assert_eq!(json["error"]["details"][0]["field"], field, "{body}: {json}");
        }
        // One answer names every invalid field, those checked against the engagement included.
        for (body, expected) in [
            (json!({"title": "", "severity": "urgent", "cwe": ["79"], "affectedTargetIds": ["tgt_nope"]}), vec!["affectedTargetIds", "cwe", "severity", "title"]),
            (json!({"cvss": {}, "tags": [""], "affectedTargetIds": [foreign.clone()]}), vec!["affectedTargetIds", "cvss.vector", "tags", "title"]),
        ] {
            let (status, json) = parts(app.post(&path, &body).send().await.unwrap()).await;
            let mut fields: Vec<&str> = json["error"]["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
            fields.sort_unstable();
            assert_eq!((status, fields), (422, expected), "{body}: {json}");
        }
        let none = create_finding(&app, &engagement, json!({"title": "No impact", "cvss": {"vector": "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N"}})).await;
        assert_eq!((none["severity"].clone(), none["cvss"]["score"].clone(), none["cvss"]["version"].clone()), (json!("info"), json!(0.0), json!("3.0")));
        let finding = create_finding(&app, &engagement, json!({"title": "t", "severity": "low"})).await;
        let finding_path = format!("/api/v1/findings/{}", id_of(&finding));
        for (body, field) in [
            (json!({"title": null}), "title"),
            (json!({"severity": null}), "severity"),
            (json!({"cvss": {"vector": "CVSS:3.1/nope"}}), "cvss.vector"),
            (json!({"affectedTargetIds": [foreign]}), "affectedTargetIds"),
            (json!({"openedAt": null}), "openedAt"),
            (json!({"status": "fixed"}), "status"),
        ] {
            let (status, json) = parts(app.patch(&finding_path, &body).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &json)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
            assert_eq!(json["error"]["details"][0]["field"], field, "{body}: {json}");
        }
    }

    async fn the_remediation_lifecycle_sets_its_timestamps(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Lifecycle"})).await);
        let id = id_of(&create_finding(&app, &engagement, json!({"title": "SQLi", "severity": "high"})).await);
        let (status, body) = transition(&app, &id, json!({"status": "closed"})).await;
        assert_eq!((status, error_code(status, &body)), (409, "CONFLICT".to_owned()), "draft cannot close");
        let (status, opened) = transition(&app, &id, json!({"status": "open", "comment": "confirmed"})).await;
        assert_eq!(status, 200, "{opened}");
        let opened_at = opened["data"]["openedAt"].as_str().unwrap().to_owned();
        let (_, remediated) = transition(&app, &id, json!({"status": "remediated"})).await;
        assert!(remediated["data"]["remediatedAt"].is_string());
        let (_, closed) = transition(&app, &id, json!({"status": "closed"})).await;
        assert!(closed["data"]["closedAt"].is_string());
        assert_eq!(closed["data"]["remediatedAt"], remediated["data"]["remediatedAt"]);
        let (status, _) = transition(&app, &id, json!({"status": "remediated"})).await;
        assert_eq!(status, 409, "closed only reopens");
        let (_, reopened) = parts(app.patch(&format!("/api/v1/findings/{id}"), &json!({"status": "open"})).send().await.unwrap()).await;
        let reopened = &reopened["data"];
        assert_eq!((reopened["status"].clone(), reopened["openedAt"].clone()), (json!("open"), json!(opened_at)), "openedAt is the first opening");
        assert_eq!((reopened["remediatedAt"].clone(), reopened["closedAt"].clone()), (Value::Null, Value::Null));
        for terminal in ["accepted_risk", "false_positive"] {
            let (status, _) = transition(&app, &id, json!({"status": terminal})).await;
            assert_eq!(status, 200, "{terminal}");
            let (status, _) = transition(&app, &id, json!({"status": "closed"})).await;
            assert_eq!(status, 409, "{terminal} only reopens");
            let (status, _) = transition(&app, &id, json!({"status": "open"})).await;
            assert_eq!(status, 200);
        }
        let draft = id_of(&create_finding(&app, &engagement, json!({"title": "FP", "severity": "low"})).await);
        let (status, fp) = transition(&app, &draft, json!({"status": "false_positive"})).await;
        assert_eq!((status, fp["data"]["openedAt"].clone()), (200, Value::Null));
        for body in [json!({}), json!({"status": "fixed"}), json!({"comment": ""}), json!({"status": "open", "note": "x"})] {
            let (status, json) = transition(&app, &id, body.clone()).await;
            assert_eq!((status, error_code(status, &json)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
        }
        let (status, _) = parts(app.post(&format!("/api/v1/findings/{id}/transition"), &json!({"status": "closed"})).header("if-match", "\"1\"").send().await.unwrap()).await;
        assert_eq!(status, 412);
    }

    async fn the_review_lifecycle_follows_its_table(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Review"})).await);
        let id = id_of(&create_finding(&app, &engagement, json!({"title": "IDOR", "severity": "high"})).await);
        for (to, expected) in [
            ("approved", 409),
            ("ready_for_review", 200),
            ("in_progress", 409),
            ("needs_improvement", 200),
            ("approved", 409),
            ("in_progress", 200),
            ("ready_for_review", 200),
            ("approved", 200),
            ("needs_improvement", 409),
            ("in_progress", 200),
        ] {
            let (status, body) = transition(&app, &id, json!({"reviewStatus": to})).await;
            assert_eq!(status, expected, "to {to}: {body}");
            if status == 200 {
                assert_eq!(body["data"]["reviewStatus"], to);
            }
        }
        // Both at once, in one request.
        let (status, both) = transition(&app, &id, json!({"status": "open", "reviewStatus": "ready_for_review"})).await;
        assert_eq!((status, both["data"]["status"].clone(), both["data"]["reviewStatus"].clone()), (200, json!("open"), json!("ready_for_review")));
    }

    async fn bulk_updates_report_each_item(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Bulk"})).await);
        let other = id_of(&app.create_engagement(json!({"name": "Other"})).await);
        let draft = id_of(&create_finding(&app, &engagement, json!({"title": "a", "severity": "low"})).await);
        let open = id_of(&create_finding(&app, &engagement, json!({"title": "b", "severity": "low"})).await);
        transition(&app, &open, json!({"status": "open"})).await;
        transition(&app, &open, json!({"status": "remediated"})).await;
        let elsewhere = id_of(&create_finding(&app, &other, json!({"title": "c", "severity": "low"})).await);
        let path = format!("/api/v1/engagements/{engagement}/findings/bulk");
        let ids = json!([draft, open, elsewhere, "fnd_nope"]);
        let (status, body) = parts(app.patch(&path, &json!({"ids": ids, "set": {"status": "open", "severity": "high", "tags": ["q1"]}})).send().await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        let items = body["data"].as_array().unwrap();
        let statuses: Vec<(String, u64)> = items.iter().map(|i| (i["id"].as_str().unwrap().to_owned(), i["status"].as_u64().unwrap())).collect();
        assert_eq!(statuses, [(draft.clone(), 200), (open.clone(), 200), (elsewhere.clone(), 404), ("fnd_nope".to_owned(), 404)]);
        assert_eq!(items[2]["error"]["code"], "NOT_FOUND");
        assert!(items[0].get("error").is_none());
        let (_, fetched) = parts(app.get(&format!("/api/v1/findings/{draft}")).send().await.unwrap()).await;
        assert_eq!((fetched["data"]["status"].clone(), fetched["data"]["severity"].clone(), fetched["data"]["tags"].clone()), (json!("open"), json!("high"), json!(["q1"])));
        // One item's illegal transition fails alone.
        let fresh = id_of(&create_finding(&app, &engagement, json!({"title": "d", "severity": "low"})).await);
        let (_, body) = parts(app.patch(&path, &json!({"ids": [draft, fresh], "set": {"status": "closed"}})).send().await.unwrap()).await;
        assert_eq!((body["data"][0]["status"].clone(), body["data"][1]["status"].clone()), (json!(200), json!(409)));
        assert_eq!(body["data"][1]["error"]["code"], "CONFLICT");
        // A value no finding could take is the request's 422, with every other invalid field.
        let (status, body) = parts(app.patch(&path, &json!({"ids": [fresh], "set": {"severity": "urgent", "status": "nope", "title": "x"}, "bogus": 1})).send().await.unwrap()).await;
        assert_eq!((status, error_code(status, &body)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
        let mut fields: Vec<&str> = body["error"]["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["bogus", "set.severity", "set.status", "set.title"], "{body}");
        let (status, body) = parts(app.patch(&path, &json!({})).send().await.unwrap()).await;
        assert_eq!(status, 422);
        assert_eq!(body["error"]["details"], json!([{"field": "ids", "message": "is required"}, {"field": "set", "message": "is required"}]), "{body}");
        // One If-Match cannot name every finding's version: refused rather than ignored.
        let (status, _) = parts(app.patch(&path, &json!({"ids": [fresh], "set": {"severity": "high"}})).header("if-match", "\"1\"").send().await.unwrap()).await;
        assert_eq!(status, 400);
        for body in [
            json!({"ids": [], "set": {"status": "open"}}),
            json!({"ids": [fresh], "set": {}}),
            json!({"ids": [fresh]}),
            json!({"ids": [fresh, fresh], "set": {"status": "open"}}),
            json!({"ids": [fresh], "set": {"title": "x"}}),
            json!({"ids": vec![fresh.clone(); 101], "set": {"status": "open"}}),
        ] {
            let (status, json) = parts(app.patch(&path, &body).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &json)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
        }
    }

    async fn findings_filter_sort_and_paginate(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Lists"})).await);
        let other = id_of(&app.create_engagement(json!({"name": "Other"})).await);
        let web = id_of(&create_target(&app, &engagement, json!({"type": "domain", "value": "app.acme.test"})).await);
        let a = create_finding(&app, &engagement, json!({"title": "Alpha low", "severity": "low", "cwe": ["CWE-200"], "tags": ["info-leak"]})).await;
        let b = create_finding(&app, &engagement, json!({"title": "bravo critical", "cvss": {"vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"}, "affectedTargetIds": [web]})).await;
        let c = create_finding(&app, &engagement, json!({"title": "Charlie medium", "cvss": {"vector": XSS}, "cwe": ["CWE-79"], "cve": ["CVE-2024-12345"], "tags": ["web"]})).await;
        let d = create_finding(&app, &engagement, json!({"title": "Delta critical", "cvss": {"vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}, "affectedTargetIds": [web], "tags": ["web"]})).await;
        create_finding(&app, &other, json!({"title": "Echo info", "severity": "info"})).await;
        transition(&app, &id_of(&c), json!({"status": "open", "reviewStatus": "ready_for_review"})).await;
        transition(&app, &id_of(&d), json!({"status": "open"})).await;
        let list = format!("/api/v1/engagements/{engagement}/findings");
        assert_eq!(titles(&app, &list).await, ["Delta critical", "Charlie medium", "bravo critical", "Alpha low"]);
        assert_eq!(titles(&app, &format!("{list}?sort=severity&order=desc")).await, ["Delta critical", "bravo critical", "Charlie medium", "Alpha low"], "rank, then id desc");
        assert_eq!(titles(&app, &format!("{list}?sort=severity&order=asc")).await, ["Alpha low", "Charlie medium", "bravo critical", "Delta critical"]);
        assert_eq!(titles(&app, &format!("{list}?sort=cvssScore&order=desc")).await, ["bravo critical", "Delta critical", "Charlie medium", "Alpha low"], "10.0, 9.8, 6.1, none");
        assert_eq!(titles(&app, &format!("{list}?sort=title&order=asc")).await, ["Alpha low", "bravo critical", "Charlie medium", "Delta critical"]);
        assert_eq!(titles(&app, &format!("{list}?sort=status&order=asc&perPage=2")).await, ["Alpha low", "bravo critical"], "draft before open, ties by id asc");
        assert_eq!(titles(&app, &format!("{list}?sort=updatedAt&order=desc&perPage=1")).await, ["Delta critical"]);
        assert_eq!(titles(&app, &format!("{list}?severity=critical&sort=cvssScore&order=asc")).await, ["Delta critical", "bravo critical"]);
        assert_eq!(titles(&app, &format!("{list}?severity=low,medium&sort=title&order=asc")).await, ["Alpha low", "Charlie medium"]);
        assert_eq!(titles(&app, &format!("{list}?status=open")).await, ["Delta critical", "Charlie medium"]);
        assert_eq!(titles(&app, &format!("{list}?reviewStatus=ready_for_review")).await, ["Charlie medium"]);
        assert_eq!(titles(&app, &format!("{list}?targetId={web}")).await, ["Delta critical", "bravo critical"]);
        assert_eq!(titles(&app, &format!("{list}?cwe=cwe-79,CWE-200")).await, ["Charlie medium", "Alpha low"]);
        assert_eq!(titles(&app, &format!("{list}?cve=CVE-2024-12345")).await, ["Charlie medium"]);
        assert_eq!(titles(&app, &format!("{list}?tag=web&status=open")).await, ["Delta critical", "Charlie medium"]);
        assert_eq!(titles(&app, &format!("{list}?q=CRITICAL")).await, ["Delta critical", "bravo critical"]);
        let created_b = b["createdAt"].as_str().unwrap();
        assert_eq!(titles(&app, &format!("{list}?createdAfter={created_b}&createdBefore={}", d["createdAt"].as_str().unwrap())).await, ["Charlie medium", "bravo critical"]);
        assert_eq!(titles(&app, &format!("{list}?createdBefore={}", a["createdAt"].as_str().unwrap())).await, Vec::<String>::new());

        // The flat list spans engagements and filters by engagementId.
        assert_eq!(titles(&app, "/api/v1/findings?sort=title&order=asc").await.len(), 5);
        assert_eq!(titles(&app, &format!("/api/v1/findings?engagementId={other}")).await, ["Echo info"]);
        assert_eq!(titles(&app, &format!("/api/v1/findings?engagementId={other},{engagement}&severity=info,low")).await, ["Echo info", "Alpha low"]);

        // Pages and cursors.
        let (_, page) = parts(app.get(&format!("{list}?perPage=3&page=2&sort=cvssScore&order=desc")).send().await.unwrap()).await;
        assert_eq!(page["meta"], json!({"total": 4, "page": 2, "perPage": 3, "totalPages": 2, "nextCursor": null}));
        assert_eq!(page["data"][0]["title"], "Alpha low");
        let mut seen = Vec::new();
        let mut query = "perPage=1&sort=severity&order=desc".to_owned();
        loop {
            let (status, page) = parts(app.get(&format!("{list}?{query}")).send().await.unwrap()).await;
            assert_eq!(status, 200, "{page}");
            seen.extend(page["data"].as_array().unwrap().iter().map(|f| f["title"].as_str().unwrap().to_owned()));
            match page["meta"]["nextCursor"].as_str() {
                Some(next) => query = format!("cursor={next}"),
                None => break,
            }
        }
        assert_eq!(seen, ["Delta critical", "bravo critical", "Charlie medium", "Alpha low"]);
        // A cursor continues its own list only: not another engagement's, nor the flat one.
        let (_, first) = parts(app.get(&format!("{list}?perPage=1")).send().await.unwrap()).await;
        let cursor = first["meta"]["nextCursor"].as_str().unwrap().to_owned();
        for path in [format!("/api/v1/engagements/{other}/findings"), "/api/v1/findings".to_owned()] {
            let (status, body) = parts(app.get(&format!("{path}?cursor={cursor}")).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &body)), (400, "BAD_REQUEST".to_owned()), "{path}: {body}");
        }
        assert_eq!(parts(app.get(&format!("{list}?cursor={cursor}")).send().await.unwrap()).await.0, 200);

        for query in ["severity=urgent", "status=fixed", "reviewStatus=done", "sort=cvss", "order=sideways", "perPage=101", "engagementId=x", "createdAfter=yesterday"] {
            let (status, body) = parts(app.get(&format!("{list}?{query}")).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &body)), (400, "BAD_REQUEST".to_owned()), "{query}");
        }
        let (status, _) = parts(app.get("/api/v1/findings?engagement=x").send().await.unwrap()).await;
        assert_eq!(status, 400);
    }

    async fn the_parent_engagement_governs_its_findings(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Parent"})).await);
        let id = id_of(&create_finding(&app, &engagement, json!({"title": "Kept", "severity": "low"})).await);
        let finding = format!("/api/v1/findings/{id}");
        let list = format!("/api/v1/engagements/{engagement}/findings");
        assert_eq!(app.post(&format!("/api/v1/engagements/{engagement}/archive"), &json!({})).send().await.unwrap().status(), 200);
        assert_eq!(parts(app.get(&finding).send().await.unwrap()).await.0, 200);
        assert_eq!(titles(&app, &list).await, ["Kept"]);
        // This server has written to the engagement before, so it knows the engagement without
        // reading it; the engagement's state still answers before the body's errors.
        for request in [
            app.post(&list, &json!({"title": "New", "severity": "low"})),
            app.post(&list, &json!({"severity": "low"})),
            app.post(&list, &json!({"title": "New", "affectedTargetIds": ["tgt_01j9k2m3n4p5q6r7s8t9v0w1x2"]})),
            app.patch(&finding, &json!({"title": "x"})),
            app.patch(&finding, &json!({"title": null})),
            app.patch(&finding, &json!({"title": "x"})).header("if-match", "\"7\""),
            app.post(&format!("{finding}/transition"), &json!({"status": "open"})).header("if-match", "\"7\""),
            app.post(&format!("{finding}/transition"), &json!({"status": "open"})),
            app.post(&format!("{finding}/transition"), &json!({"status": "open", "colour": "red"})),
            app.patch(&format!("{list}/bulk"), &json!({"ids": [id], "set": {"status": "open"}})),
            app.delete(&finding),
        ] {
            let (status, body) = parts(request.send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &body)), (409, "CONFLICT".to_owned()), "{body}");
        }
        app.post(&format!("/api/v1/engagements/{engagement}/unarchive"), &json!({})).send().await.unwrap();
        assert_eq!(app.delete(&format!("/api/v1/engagements/{engagement}")).send().await.unwrap().status(), 204);
        for request in [
            app.get(&finding),
            app.get(&list),
            app.post(&list, &json!({"title": "New", "severity": "low"})),
            app.post(&list, &json!({"severity": "low"})),
            app.patch(&finding, &json!({"title": "x"})),
            app.post(&format!("{finding}/transition"), &json!({"status": "open"})),
            app.delete(&finding),
        ] {
            let (status, body) = parts(request.send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &body)), (404, "NOT_FOUND".to_owned()), "{body}");
        }
        assert!(titles(&app, "/api/v1/findings").await.is_empty(), "the flat list hides them too");
        // Another organization sees nothing, and a findings:write key cannot delete.
        let engagement = id_of(&app.create_engagement(json!({"name": "Mine"})).await);
        let id = id_of(&create_finding(&app, &engagement, json!({"title": "Mine", "severity": "low"})).await);
        let stranger = app.org_with_key(&["*"]).await;
        let (status, body) = parts(app.request(Method::GET, "/api/v1/findings", &stranger).send().await.unwrap()).await;
        assert_eq!((status, body["data"].as_array().unwrap().len()), (200, 0));
        let (status, _) = parts(app.request(Method::GET, &format!("/api/v1/findings/{id}"), &stranger).send().await.unwrap()).await;
        assert_eq!(status, 404);
        let writer = app.key_with(&["findings:read", "findings:write"]).await;
        let (status, _) = parts(app.request(Method::DELETE, &format!("/api/v1/findings/{id}"), &writer).send().await.unwrap()).await;
        assert_eq!(status, 403);
    }
}
