//! The HTTP API end to end, on SQLite and PostgreSQL: every test runs the
//! real binary on a real port (see common/mod.rs).

mod common;

use std::time::Duration;

use common::{PUBLIC_URL, TestServer};
use serde_json::{Value, json};

async fn orgs(s: TestServer) {
    let r = s.post("/v1/orgs", json!({"name": "Acme"})).await;
    assert_eq!(r.status, 201);
    let org = r.json();
    assert!(org["id"].as_str().unwrap().starts_with("org_"));
    assert_eq!(org["name"], "Acme");
    assert!(org["created_at"].as_str().unwrap().ends_with('Z'));
    let got = s.get(&format!("/v1/orgs/{}", org["id"].as_str().unwrap())).await;
    assert_eq!(got.json(), org);
    for i in 0..4 {
        s.post("/v1/orgs", json!({"name": format!("Org {i}")})).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/orgs?limit=2&cursor={c}"),
            None => "/v1/orgs?limit=2".to_owned(),
        };
        let page = s.get(&path).await.json();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|o| o["name"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["Org 3", "Org 2", "Org 1", "Org 0", "Acme"], "newest first, each once");
    s.get("/v1/orgs/org_doesnotexist0000000000").await.problem(404, "NOT_FOUND");
    s.get("/v1/orgs/nonsense").await.problem(404, "NOT_FOUND");
    s.get("/v1/orgs?limit=0").await.problem(422, "VALIDATION_FAILED");
    s.get("/v1/orgs?limit=abc").await.problem(400, "INVALID_REQUEST");
    s.get("/v1/orgs?cursor=garbage").await.problem(422, "VALIDATION_FAILED");
    s.post("/v1/orgs", json!({"name": ""})).await.problem(422, "VALIDATION_FAILED");
}
both!(orgs);

async fn key_lifecycle(s: TestServer) {
    let org = s.org().await;
    let r = s
        .post(
            &format!("/v1/orgs/{org}/keys"),
            json!({"name": "backend", "kind": "live", "scopes": ["documents.read", "documents.write"],
                   "metadata": {"plan": "pro", "seats": 3}, "external_id": "cust_42"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let created = r.json();
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk_live_") && key.len() == "sk_live_".len() + 44, "{key}");
    assert!(latchkey_core::keyfmt::check(&key, "sk_live_").is_ok());
    assert_eq!(created["start"], &key[..12]);
    assert_eq!(created["status"], "active");
    assert_eq!(created["environment"], "live");
    assert_eq!(created["org_id"], org.as_str());

    // The secret is never answered again.
    let got = s.get(&format!("/v1/keys/{id}")).await;
    assert_eq!(got.status, 200);
    assert!(got.json().get("key").is_none());
    assert_eq!(got.json()["metadata"], json!({"plan": "pro", "seats": 3}));

    let v = s.verify(json!({"credential": key, "required_scopes": ["documents.read"]})).await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["code"], "VALID");
    assert_eq!(v["credential_type"], "api_key");
    assert_eq!(v["key_id"], id.as_str());
    assert_eq!(v["org_id"], org.as_str());
    assert_eq!(v["subject"], "cust_42");
    assert_eq!(v["environment"], "live");
    assert_eq!(v["metadata"]["plan"], "pro");
    assert_eq!(v["expires_at"], Value::Null);

    let v = s.verify(json!({"credential": key, "required_scopes": ["documents.delete"]})).await;
    assert_eq!(v["valid"], false);
    assert_eq!(v["code"], "INSUFFICIENT_SCOPE");
    assert_eq!(v["status"], 403);
    assert_eq!(v["required_scopes"], json!(["documents.delete"]));

    // A patch is in force at once on this node.
    let p = s.patch(&format!("/v1/keys/{id}"), json!({"name": "renamed", "scopes": ["documents.*"], "metadata": {"plan": "team"}})).await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(p.json()["name"], "renamed");
    let v = s.verify(json!({"credential": key, "required_scopes": ["documents.delete"]})).await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["metadata"], json!({"plan": "team"}));

    // Expiry set and cleared by patch.
    let p = s.patch(&format!("/v1/keys/{id}"), json!({"expires_in": "1h"})).await.json();
    assert!(p["expires_at"].is_string());
    let p = s.patch(&format!("/v1/keys/{id}"), json!({"expires_at": null})).await.json();
    assert_eq!(p["expires_at"], Value::Null);

    // Revoke, with a reason; twice is fine and changes nothing.
    let r1 = s.post(&format!("/v1/keys/{id}/revoke"), json!({"reason": "laptop lost"})).await;
    assert_eq!(r1.status, 200, "{}", r1.text);
    let r1 = r1.json();
    assert_eq!(r1["status"], "revoked");
    assert_eq!(r1["revoke_reason"], "laptop lost");
    let r2 = s.post(&format!("/v1/keys/{id}/revoke"), json!({})).await.json();
    assert_eq!(r2["revoked_at"], r1["revoked_at"]);
    assert_eq!(r2["revoke_reason"], "laptop lost");
    let v = s.verify(json!({"credential": key})).await;
    assert_eq!(v["code"], "KEY_REVOKED");
    assert_eq!(v["status"], 401);
    assert!(v["detail"].as_str().unwrap().contains("revoked on"));

    // Delete: gone.
    let d = s.delete(&format!("/v1/keys/{id}")).await;
    assert_eq!(d.status, 204);
    assert!(d.text.is_empty());
    s.get(&format!("/v1/keys/{id}")).await.problem(404, "NOT_FOUND");
    s.delete(&format!("/v1/keys/{id}")).await.problem(404, "NOT_FOUND");
    assert_eq!(s.verify(json!({"credential": key})).await["code"], "INVALID_KEY");
}
both!(key_lifecycle);
