//! The real binary: acknowledged writes survive `kill -9`, and the CLI works beside a running
//! server on the same database.

use std::sync::Arc;

use pwnbook_api::secrets::Secret;
use pwnbook_events::backend_tests;
use serde_json::{json, Value};

use crate::harness::{parts, run_cli, spawn_binary};

backend_tests! {
    async fn acknowledged_writes_survive_kill_9(db) {
        let key = Secret::generate("live").expose().to_owned();
        let mut server = spawn_binary(&db.url, &key).await;
        let client = Arc::new(reqwest::Client::new());
        let mut writers = Vec::new();
        for w in 0..4 {
            let (client, base, key) = (client.clone(), server.base.clone(), key.clone());
            writers.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..8 {
                    let response = client
                        .post(format!("{base}/api/v1/engagements"))
                        .bearer_auth(&key)
                        .json(&json!({"name": format!("Durable {w}-{i}")}))
                        .send()
                        .await
                        .unwrap();
                    let (status, body) = parts(response).await;
                    assert_eq!(status, 201, "{body}");
                    acknowledged.push(body["data"]["id"].as_str().unwrap().to_owned());
                }
                acknowledged
            }));
        }
        let mut acknowledged = Vec::new();
        for writer in writers {
            acknowledged.extend(writer.await.unwrap());
        }
        // No graceful anything: SIGKILL right after the last acknowledgement.
        server.child.start_kill().unwrap();
        server.child.wait().await.unwrap();

        let server = spawn_binary(&db.url, &key).await;
        let response = client.get(format!("{}/api/v1/engagements?perPage=100", server.base)).bearer_auth(&key).send().await.unwrap();
        let (status, body) = parts(response).await;
        assert_eq!(status, 200);
        let listed: Vec<&str> = body["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(listed.len(), 32);
        for id in &acknowledged {
            assert!(listed.contains(&id.as_str()), "{id} lost");
        }
    }

    async fn the_cli_creates_organizations_and_keys_beside_a_running_server(db) {
        let key = Secret::generate("live").expose().to_owned();
        let server = spawn_binary(&db.url, &key).await;
        let (ok, org, stderr) = run_cli(&db.url, &["orgs", "create", "--name", "Initech"]).await;
        assert!(ok, "{stderr}");
        let org = org.trim().to_owned();
        assert!(org.starts_with("org_") && org.len() == 24, "{org}");
        let (ok, stdout, stderr) = run_cli(
            &db.url,
            &["keys", "create", "--org", &org, "--name", "ci", "--permission", "engagements:read", "--permission", "engagements:write", "--environment", "test"],
        )
        .await;
        assert!(ok, "{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "only the secret goes to stdout: {stdout}");
        let secret = lines[0];
        assert!(secret.starts_with("pwbk_test_") && secret.len() >= 42);
        assert!(!stderr.contains(secret));
        // The running server accepts the key as soon as the command has exited.
        let client = reqwest::Client::new();
        let response = client.post(format!("{}/api/v1/engagements", server.base)).bearer_auth(secret).json(&json!({"name": "From CI"})).send().await.unwrap();
        assert_eq!(response.status(), 201);
        let (_, mine) = parts(client.get(format!("{}/api/v1/engagements", server.base)).bearer_auth(secret).send().await.unwrap()).await;
        assert_eq!(mine["meta"]["total"], 1);
        let (_, admin) = parts(client.get(format!("{}/api/v1/engagements", server.base)).bearer_auth(&key).send().await.unwrap()).await;
        assert_eq!(admin["meta"]["total"], 0, "the new key's engagement is in its own organization");
        let response = client.delete(format!("{}/api/v1/engagements/{}", server.base, Value::Null)).bearer_auth(secret).send().await.unwrap();
        assert_eq!(response.status(), 403, "engagements:delete was not granted");

        let (ok, _, stderr) = run_cli(&db.url, &["keys", "create", "--org", &org, "--name", "x", "--permission", "engagements:admin"]).await;
        assert!(!ok && stderr.contains("unknown permission"), "{stderr}");
        let (ok, _, stderr) = run_cli(&db.url, &["keys", "create", "--org", "org_00000000000000000000", "--name", "x", "--permission", "*"]).await;
        assert!(!ok && stderr.contains("no organization"), "{stderr}");
    }
}
