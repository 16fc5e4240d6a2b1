//! Targets (SPEC §3): validation by type, normalized uniqueness, filters, sorts, pagination and
//! the rules of the parent engagement.

use pwnbook_events::backend_tests;
use serde_json::{json, Value};

use crate::harness::{error_code, parts, TestApp};

pub async fn create_target(app: &TestApp, engagement: &str, body: Value) -> Value {
    let (status, json) =
        parts(app.post(&format!("/api/v1/engagements/{engagement}/targets"), &body).send().await.unwrap())
            .await;
    assert_eq!(status, 201, "{body}: {json}");
    json["data"].clone()
}

async fn values(app: &TestApp, engagement: &str, query: &str) -> Vec<String> {
    let (status, body) =
        parts(app.get(&format!("/api/v1/engagements/{engagement}/targets?{query}")).send().await.unwrap())
            .await;
    assert_eq!(status, 200, "{query}: {body}");
    body["data"].as_array().unwrap().iter().map(|t| t["value"].as_str().unwrap().to_owned()).collect()
}

backend_tests! {
    async fn targets_are_created_read_updated_and_deleted(db) {
        let app = TestApp::spawn(db).await;
        let engagement = app.create_engagement(json!({"name": "Scope"})).await["id"].as_str().unwrap().to_owned();
        let response = app.post(&format!("/api/v1/engagements/{engagement}/targets"), &json!({
            "type": "ip", "value": " 2001:DB8:0:0::1 ", "port": 443, "protocol": "tcp", "tags": ["dmz"], "notes": "edge"
        })).send().await.unwrap();
        assert_eq!(response.headers()["etag"], "\"1\"");
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let (status, created) = parts(response).await;
        assert_eq!(status, 201);
        let target = &created["data"];
        assert!(target["id"].as_str().unwrap().starts_with("tgt_"));
        assert_eq!(location, format!("/api/v1/targets/{}", target["id"].as_str().unwrap()));
        assert_eq!((target["value"].clone(), target["inScope"].clone(), target["engagementId"].clone()), (json!("2001:db8::1"), json!(true), json!(engagement)));
        assert_eq!((target["port"].clone(), target["protocol"].clone(), target["tags"].clone(), target["notes"].clone()), (json!(443), json!("tcp"), json!(["dmz"]), json!("edge")));
        assert_eq!(target["createdAt"], target["updatedAt"]);
        let (status, fetched) = parts(app.get(&location).send().await.unwrap()).await;
        assert_eq!((status, &fetched["data"]), (200, target));

        let (status, updated) = parts(app.patch(&location, &json!({"inScope": false, "notes": null, "port": null})).header("if-match", "\"1\"").send().await.unwrap()).await;
        assert_eq!(status, 200, "{updated}");
        let updated = &updated["data"];
        assert_eq!((updated["inScope"].clone(), updated["notes"].clone(), updated["port"].clone(), updated["version"].clone()), (json!(false), Value::Null, Value::Null, json!(2)));
        let (status, _) = parts(app.patch(&location, &json!({"inScope": true})).header("if-match", "\"1\"").send().await.unwrap()).await;
        assert_eq!(status, 412);
        let (status, body) = parts(app.patch(&location, &json!({"type": "cidr"})).send().await.unwrap()).await;
        assert_eq!((status, body["error"]["details"][0]["field"].clone()), (422, json!("value")), "a new type re-validates the value");
        for body in [json!({"id": "tgt_x"}), json!({"engagementId": "eng_x"}), json!({"value": null}), json!({"color": "red"})] {
            let (status, json) = parts(app.patch(&location, &body).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &json)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
        }

        assert_eq!(app.delete(&location).send().await.unwrap().status(), 204);
        assert_eq!(parts(app.get(&location).send().await.unwrap()).await.0, 404);
        assert_eq!(parts(app.delete(&location).send().await.unwrap()).await.0, 404);
        // The identity is free again once deleted.
        create_target(&app, &engagement, json!({"type": "ip", "value": "2001:db8::1", "port": 443})).await;
        for bad in ["tgt_nope", "eng_01j9k2m3n4p5q6r7s8t9", "tgt_00000000000000000000"] {
            assert_eq!(parts(app.get(&format!("/api/v1/targets/{bad}")).send().await.unwrap()).await.0, 404, "{bad}");
        }
    }

    async fn values_are_validated_by_type(db) {
        let app = TestApp::spawn(db).await;
        let engagement = app.create_engagement(json!({"name": "Validation"})).await["id"].as_str().unwrap().to_owned();
        let path = format!("/api/v1/engagements/{engagement}/targets");
        for (body, field) in [
            (json!({"type": "ip", "value": "10.0.0.256"}), "value"),
            (json!({"type": "ip", "value": "fe80::1::2"}), "value"),
            (json!({"type": "cidr", "value": "10.0.0.0/33"}), "value"),
            (json!({"type": "cidr", "value": "10.0.0.1/24"}), "value"),
            (json!({"type": "domain", "value": "localhost"}), "value"),
            (json!({"type": "domain", "value": "bad_name.test"}), "value"),
            (json!({"type": "hostname", "value": "-dc01"}), "value"),
            (json!({"type": "url", "value": "/relative/path"}), "value"),
            (json!({"type": "service", "value": "10.0.0.1"}), "port"),
            (json!({"type": "ip", "value": "10.0.0.1", "port": 0}), "port"),
            (json!({"type": "ip", "value": "10.0.0.1", "port": 70000}), "port"),
            (json!({"type": "ip", "value": "10.0.0.1", "protocol": "icmp"}), "protocol"),
            (json!({"type": "router", "value": "10.0.0.1"}), "type"),
            (json!({"value": "10.0.0.1"}), "type"),
            (json!({"type": "ip"}), "value"),
            (json!({"type": "ip", "value": "10.0.0.1", "id": "tgt_x"}), "id"),
        ] {
            let (status, json) = parts(app.post(&path, &body).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &json)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
            assert_eq!(json["error"]["details"][0]["field"], field, "{body}: {json}");
        }
        let (status, _) = parts(app.post(&path, &json!({"type": "ip", "value": 10})).send().await.unwrap()).await;
        assert_eq!(status, 400, "a wrong JSON type is a bad request");
        for (kind, value, normalized) in [
            ("ip", "192.168.1.10", "192.168.1.10"),
            ("cidr", "2001:DB8::/32", "2001:db8::/32"),
            ("domain", "*.Acme.TEST.", "*.acme.test"),
            ("hostname", "DC01", "dc01"),
            ("url", "HTTPS://Acme.test:443/Login?x=1", "https://acme.test/Login?x=1"),
            ("service", "Mail.acme.test", "mail.acme.test"),
        ] {
            let port = (kind == "service").then_some(25);
            let target = create_target(&app, &engagement, json!({"type": kind, "value": value, "port": port})).await;
            assert_eq!(target["value"], normalized, "{kind} {value}");
        }
    }

    async fn type_normalized_value_and_port_are_unique_per_engagement(db) {
        let app = TestApp::spawn(db).await;
        let engagement = app.create_engagement(json!({"name": "Unique"})).await["id"].as_str().unwrap().to_owned();
        let other = app.create_engagement(json!({"name": "Other"})).await["id"].as_str().unwrap().to_owned();
        let path = format!("/api/v1/engagements/{engagement}/targets");
        create_target(&app, &engagement, json!({"type": "domain", "value": "acme.test"})).await;
        let (status, body) = parts(app.post(&path, &json!({"type": "domain", "value": "ACME.test."})).send().await.unwrap()).await;
        assert_eq!((status, error_code(status, &body)), (409, "CONFLICT".to_owned()));
        // Another port, another type or another engagement is another target.
        create_target(&app, &engagement, json!({"type": "domain", "value": "acme.test", "port": 443})).await;
        create_target(&app, &engagement, json!({"type": "hostname", "value": "acme.test"})).await;
        create_target(&app, &other, json!({"type": "domain", "value": "acme.test"})).await;
        // An update into a taken identity conflicts too.
        let moved = create_target(&app, &engagement, json!({"type": "domain", "value": "www.acme.test"})).await;
        let (status, _) = parts(app.patch(&format!("/api/v1/targets/{}", moved["id"].as_str().unwrap()), &json!({"value": "Acme.Test"})).send().await.unwrap()).await;
        assert_eq!(status, 409);
        // Concurrent creates of one identity: exactly one wins.
        let requests = (0..6).map(|_| app.post(&path, &json!({"type": "ip", "value": "10.9.9.9"})).send());
        let statuses: Vec<u16> = futures::future::join_all(requests).await.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
        assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
        assert!(statuses.iter().all(|s| *s == 201 || *s == 409), "{statuses:?}");
    }

    async fn targets_filter_sort_and_paginate(db) {
        let app = TestApp::spawn(db).await;
        let engagement = app.create_engagement(json!({"name": "Lists"})).await["id"].as_str().unwrap().to_owned();
        let other = app.create_engagement(json!({"name": "Elsewhere"})).await["id"].as_str().unwrap().to_owned();
        create_target(&app, &other, json!({"type": "ip", "value": "10.0.0.99"})).await;
        create_target(&app, &engagement, json!({"type": "ip", "value": "10.0.0.2", "tags": ["dmz"]})).await;
        create_target(&app, &engagement, json!({"type": "domain", "value": "Bravo.acme.test", "inScope": false})).await;
        create_target(&app, &engagement, json!({"type": "domain", "value": "alpha.acme.test", "tags": ["dmz", "web"]})).await;
        create_target(&app, &engagement, json!({"type": "url", "value": "https://charlie.acme.test/"})).await;
        assert_eq!(values(&app, &engagement, "").await, ["https://charlie.acme.test/", "alpha.acme.test", "bravo.acme.test", "10.0.0.2"]);
        assert_eq!(values(&app, &engagement, "sort=value&order=asc").await, ["10.0.0.2", "alpha.acme.test", "bravo.acme.test", "https://charlie.acme.test/"]);
        assert_eq!(values(&app, &engagement, "sort=createdAt&order=asc&type=domain").await, ["bravo.acme.test", "alpha.acme.test"]);
        assert_eq!(values(&app, &engagement, "type=ip,url&sort=value&order=asc").await, ["10.0.0.2", "https://charlie.acme.test/"]);
        assert_eq!(values(&app, &engagement, "inScope=false").await, ["bravo.acme.test"]);
        assert_eq!(values(&app, &engagement, "inScope=true&tag=dmz&sort=value&order=asc").await, ["10.0.0.2", "alpha.acme.test"]);
        assert_eq!(values(&app, &engagement, "tag=web").await, ["alpha.acme.test"]);
        assert_eq!(values(&app, &engagement, "q=ACME&sort=value&order=desc").await, ["https://charlie.acme.test/", "bravo.acme.test", "alpha.acme.test"]);
        let updated = values(&app, &engagement, "sort=updatedAt&order=asc").await;
        assert_eq!(updated.len(), 4);

        let (_, page) = parts(app.get(&format!("/api/v1/engagements/{engagement}/targets?perPage=3&page=2&sort=value&order=asc")).send().await.unwrap()).await;
        assert_eq!(page["meta"], json!({"total": 4, "page": 2, "perPage": 3, "totalPages": 2, "nextCursor": null}));
        assert_eq!(page["data"][0]["value"], "https://charlie.acme.test/");
        let (_, first) = parts(app.get(&format!("/api/v1/engagements/{engagement}/targets?perPage=3&sort=value&order=asc")).send().await.unwrap()).await;
        let cursor = first["meta"]["nextCursor"].as_str().unwrap();
        let (_, rest) = parts(app.get(&format!("/api/v1/engagements/{engagement}/targets?perPage=3&cursor={cursor}")).send().await.unwrap()).await;
        assert_eq!(rest["data"].as_array().unwrap().len(), 1);
        assert_eq!(rest["meta"], json!({"perPage": 3, "nextCursor": null}));

        for query in ["type=router", "inScope=yes", "sort=port", "order=up", "perPage=0", "page=0", "color=red", "cursor=garbage"] {
            let (status, body) = parts(app.get(&format!("/api/v1/engagements/{engagement}/targets?{query}")).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &body)), (400, "BAD_REQUEST".to_owned()), "{query}");
        }
    }

    async fn the_parent_engagement_governs_its_targets(db) {
        let app = TestApp::spawn(db).await;
        let engagement = app.create_engagement(json!({"name": "Parent"})).await["id"].as_str().unwrap().to_owned();
        let target = create_target(&app, &engagement, json!({"type": "ip", "value": "10.0.0.1"})).await;
        let target_path = format!("/api/v1/targets/{}", target["id"].as_str().unwrap());
        let list_path = format!("/api/v1/engagements/{engagement}/targets");

        assert_eq!(app.post(&format!("/api/v1/engagements/{engagement}/archive"), &json!({})).send().await.unwrap().status(), 200);
        assert_eq!(parts(app.get(&target_path).send().await.unwrap()).await.0, 200, "archived is still readable");
        assert_eq!(parts(app.get(&list_path).send().await.unwrap()).await.0, 200);
        for request in [
            app.post(&list_path, &json!({"type": "ip", "value": "10.0.0.2"})),
            app.patch(&target_path, &json!({"notes": "x"})),
            app.delete(&target_path),
        ] {
            let (status, body) = parts(request.send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &body)), (409, "CONFLICT".to_owned()));
        }
        assert_eq!(app.post(&format!("/api/v1/engagements/{engagement}/unarchive"), &json!({})).send().await.unwrap().status(), 200);
        assert_eq!(app.delete(&format!("/api/v1/engagements/{engagement}")).send().await.unwrap().status(), 204);
        for request in [
            app.get(&target_path),
            app.get(&list_path),
            app.post(&list_path, &json!({"type": "ip", "value": "10.0.0.2"})),
            app.patch(&target_path, &json!({"notes": "x"})),
            app.delete(&target_path),
        ] {
            let (status, body) = parts(request.send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &body)), (404, "NOT_FOUND".to_owned()));
        }
        // Another organization sees nothing.
        let engagement = app.create_engagement(json!({"name": "Mine"})).await["id"].as_str().unwrap().to_owned();
        let target = create_target(&app, &engagement, json!({"type": "ip", "value": "10.0.0.1"})).await;
        let stranger = app.org_with_key(&["*"]).await;
        for path in [format!("/api/v1/targets/{}", target["id"].as_str().unwrap()), format!("/api/v1/engagements/{engagement}/targets")] {
            let (status, _) = parts(app.request(reqwest::Method::GET, &path, &stranger).send().await.unwrap()).await;
            assert_eq!(status, 404, "{path}");
        }
    }
}
