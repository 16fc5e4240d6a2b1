//! Wiki pages (SPEC §3): slugs derived and unique per engagement, the page tree, filters, sorts
//! and the parent engagement's rules.

use pwnbook_events::backend_tests;
use serde_json::{json, Value};

use crate::harness::{error_code, parts, TestApp};

pub async fn create_page(app: &TestApp, engagement: &str, body: Value) -> Value {
    let (status, json) =
        parts(app.post(&format!("/api/v1/engagements/{engagement}/wiki"), &body).send().await.unwrap()).await;
    assert_eq!(status, 201, "{body}: {json}");
    json["data"].clone()
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

async fn slugs(app: &TestApp, path: &str) -> Vec<String> {
    let (status, body) = parts(app.get(path).send().await.unwrap()).await;
    assert_eq!(status, 200, "{path}: {body}");
    body["data"].as_array().unwrap().iter().map(|p| p["slug"].as_str().unwrap().to_owned()).collect()
}

backend_tests! {
    async fn wiki_pages_get_unique_slugs_and_keep_their_markdown(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Wiki"})).await);
        let other = id_of(&app.create_engagement(json!({"name": "Other"})).await);
        let content = "# Loot\n\n    indented code\n";
        let response = app.post(&format!("/api/v1/engagements/{engagement}/wiki"), &json!({"title": "AD: notes & loot", "content": content})).send().await.unwrap();
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let (status, created) = parts(response).await;
        assert_eq!(status, 201);
        let page = &created["data"];
        assert!(page["id"].as_str().unwrap().starts_with("wik_"));
        assert_eq!((page["slug"].clone(), page["content"].clone(), page["parentId"].clone()), (json!("ad-notes-loot"), json!(content), Value::Null));
        let (status, body) = parts(app.post(&format!("/api/v1/engagements/{engagement}/wiki"), &json!({"title": "AD notes loot"})).send().await.unwrap()).await;
        assert_eq!((status, error_code(status, &body)), (409, "CONFLICT".to_owned()), "the derived slug is taken");
        create_page(&app, &engagement, json!({"title": "AD notes loot", "slug": "ad-2"})).await;
        create_page(&app, &other, json!({"title": "AD: notes & loot"})).await;
        let (status, _) = parts(app.patch(&location, &json!({"slug": "ad-2"})).send().await.unwrap()).await;
        assert_eq!(status, 409);
        let (status, renamed) = parts(app.patch(&location, &json!({"slug": "active-directory", "title": "Active Directory", "content": null})).header("if-match", "\"1\"").send().await.unwrap()).await;
        assert_eq!(status, 200, "{renamed}");
        assert_eq!((renamed["data"]["slug"].clone(), renamed["data"]["content"].clone()), (json!("active-directory"), json!("")));
        create_page(&app, &engagement, json!({"title": "Reuse", "slug": "ad-notes-loot"})).await;
        for body in [json!({"title": "!!!"}), json!({"title": "x", "slug": "Not A Slug"}), json!({"slug": "x"}), json!({"title": "x", "version": 3})] {
            let (status, json) = parts(app.post(&format!("/api/v1/engagements/{engagement}/wiki"), &body).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &json)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
        }
        for body in [json!({"title": null}), json!({"slug": null}), json!({"slug": "a--b"})] {
            let (status, json) = parts(app.patch(&location, &body).send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &json)), (422, "VALIDATION_ERROR".to_owned()), "{body}");
        }
        assert_eq!(app.delete(&location).send().await.unwrap().status(), 204);
        assert_eq!(parts(app.get(&location).send().await.unwrap()).await.0, 404);
        create_page(&app, &engagement, json!({"title": "Active Directory"})).await;
    }

    async fn the_page_tree_stays_a_tree(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Tree"})).await);
        let other = id_of(&app.create_engagement(json!({"name": "Other"})).await);
        let root = id_of(&create_page(&app, &engagement, json!({"title": "Root"})).await);
        let child = id_of(&create_page(&app, &engagement, json!({"title": "Child", "parentId": root})).await);
        let grandchild = id_of(&create_page(&app, &engagement, json!({"title": "Grandchild", "parentId": child})).await);
        let foreign = id_of(&create_page(&app, &other, json!({"title": "Foreign"})).await);
        for (page, parent) in [(&root, &grandchild), (&root, &root), (&child, &foreign)] {
            let (status, body) = parts(app.patch(&format!("/api/v1/wiki/{page}"), &json!({"parentId": parent})).send().await.unwrap()).await;
            assert_eq!((status, body["error"]["details"][0]["field"].clone()), (422, json!("parentId")), "{body}");
        }
        let (status, _) = parts(app.post(&format!("/api/v1/engagements/{engagement}/wiki"), &json!({"title": "x", "parentId": "wik_nope"})).send().await.unwrap()).await;
        assert_eq!(status, 422);
        // An unknown parent does not hide the other invalid fields.
        for (body, expected) in [
            (json!({"title": "ok", "slug": "Bad Slug", "parentId": "wik_nope"}), vec!["parentId", "slug"]),
            (json!({"slug": "fine", "parentId": "wik_nope"}), vec!["parentId", "title"]),
        ] {
            let (status, json) = parts(app.post(&format!("/api/v1/engagements/{engagement}/wiki"), &body).send().await.unwrap()).await;
            let mut fields: Vec<&str> = json["error"]["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
            fields.sort_unstable();
            assert_eq!((status, fields), (422, expected), "{body}: {json}");
        }
        let (status, body) = parts(app.delete(&format!("/api/v1/wiki/{child}")).send().await.unwrap()).await;
        assert_eq!((status, error_code(status, &body)), (409, "CONFLICT".to_owned()), "a page with children stays");
        let (status, moved) = parts(app.patch(&format!("/api/v1/wiki/{grandchild}"), &json!({"parentId": null})).send().await.unwrap()).await;
        assert_eq!((status, moved["data"]["parentId"].clone()), (200, Value::Null));
        assert_eq!(app.delete(&format!("/api/v1/wiki/{child}")).send().await.unwrap().status(), 204);
        let list = format!("/api/v1/engagements/{engagement}/wiki");
        assert_eq!(slugs(&app, &format!("{list}?sort=slug&order=asc")).await, ["grandchild", "root"]);
        assert_eq!(slugs(&app, &format!("{list}?sort=title&order=desc")).await, ["root", "grandchild"]);
        assert_eq!(slugs(&app, &format!("{list}?sort=updatedAt&order=desc&perPage=1")).await, ["grandchild"]);
        let child_of_root = id_of(&create_page(&app, &engagement, json!({"title": "Second", "parentId": root})).await);
        assert_eq!(slugs(&app, &format!("{list}?parentId={root}")).await, ["second"]);
        assert_eq!(slugs(&app, &format!("{list}?slug=root,second&sort=createdAt&order=asc")).await, ["root", "second"]);
        assert_eq!(slugs(&app, &format!("{list}?q=GRAND")).await, ["grandchild"]);
        let (_, page) = parts(app.get(&format!("{list}?perPage=2&sort=slug&order=asc")).send().await.unwrap()).await;
        assert_eq!(page["meta"]["total"], 3);
        let cursor = page["meta"]["nextCursor"].as_str().unwrap();
        assert_eq!(slugs(&app, &format!("{list}?cursor={cursor}")).await, ["second"]);
        assert!(!child_of_root.is_empty());
        for query in ["sort=parentId", "title=x"] {
            let (status, _) = parts(app.get(&format!("{list}?{query}")).send().await.unwrap()).await;
            assert_eq!(status, 400, "{query}");
        }
    }

    async fn the_parent_engagement_governs_its_wiki(db) {
        let app = TestApp::spawn(db).await;
        let engagement = id_of(&app.create_engagement(json!({"name": "Parent"})).await);
        let page = format!("/api/v1/wiki/{}", id_of(&create_page(&app, &engagement, json!({"title": "Notes"})).await));
        let list = format!("/api/v1/engagements/{engagement}/wiki");
        app.post(&format!("/api/v1/engagements/{engagement}/archive"), &json!({})).send().await.unwrap();
        assert_eq!(parts(app.get(&page).send().await.unwrap()).await.0, 200);
        for request in [app.post(&list, &json!({"title": "n"})), app.patch(&page, &json!({"title": "x"})), app.delete(&page)] {
            let (status, body) = parts(request.send().await.unwrap()).await;
            assert_eq!((status, error_code(status, &body)), (409, "CONFLICT".to_owned()));
        }
        app.post(&format!("/api/v1/engagements/{engagement}/unarchive"), &json!({})).send().await.unwrap();
        app.delete(&format!("/api/v1/engagements/{engagement}")).send().await.unwrap();
        for request in [app.get(&page), app.get(&list), app.patch(&page, &json!({"title": "x"})), app.delete(&page)] {
            assert_eq!(parts(request.send().await.unwrap()).await.0, 404);
        }
    }
}
