//! The HTTP API end to end, on SQLite and PostgreSQL: every test runs the
//! real binary on a real port (see common/mod.rs).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

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
    let got = s
        .get(&format!("/v1/orgs/{}", org["id"].as_str().unwrap()))
        .await;
    assert_eq!(got.json(), org);
    for i in 0..4 {
        // Distinct creation times, so that "newest first" has one answer.
        tokio::time::sleep(Duration::from_millis(3)).await;
        s.post("/v1/orgs", json!({"name": format!("Org {i}")}))
            .await;
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
    assert_eq!(
        seen,
        ["Org 3", "Org 2", "Org 1", "Org 0", "Acme"],
        "newest first, each once"
    );
    s.get("/v1/orgs/org_doesnotexist0000000000")
        .await
        .problem(404, "NOT_FOUND");
    s.get("/v1/orgs/nonsense").await.problem(404, "NOT_FOUND");
    s.get("/v1/orgs?limit=0")
        .await
        .problem(422, "VALIDATION_FAILED");
    s.get("/v1/orgs?limit=abc")
        .await
        .problem(400, "INVALID_REQUEST");
    s.get("/v1/orgs?cursor=garbage")
        .await
        .problem(422, "VALIDATION_FAILED");
    s.post("/v1/orgs", json!({"name": ""}))
        .await
        .problem(422, "VALIDATION_FAILED");
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
    assert!(
        key.starts_with("sk_live_") && key.len() == "sk_live_".len() + 44,
        "{key}"
    );
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

    let v = s
        .verify(json!({"credential": key, "required_scopes": ["documents.read"]}))
        .await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["code"], "VALID");
    assert_eq!(v["credential_type"], "api_key");
    assert_eq!(v["key_id"], id.as_str());
    assert_eq!(v["org_id"], org.as_str());
    assert_eq!(v["subject"], "cust_42");
    assert_eq!(v["environment"], "live");
    assert_eq!(v["metadata"]["plan"], "pro");
    assert_eq!(v["expires_at"], Value::Null);

    let v = s
        .verify(json!({"credential": key, "required_scopes": ["documents.delete"]}))
        .await;
    assert_eq!(v["valid"], false);
    assert_eq!(v["code"], "INSUFFICIENT_SCOPE");
    assert_eq!(v["status"], 403);
    assert_eq!(v["required_scopes"], json!(["documents.delete"]));

    // A patch is in force at once on this node.
    let p = s
        .patch(
            &format!("/v1/keys/{id}"),
            json!({"name": "renamed", "scopes": ["documents.*"], "metadata": {"plan": "team"}}),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(p.json()["name"], "renamed");
    let v = s
        .verify(json!({"credential": key, "required_scopes": ["documents.delete"]}))
        .await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["metadata"], json!({"plan": "team"}));

    // Expiry set and cleared by patch.
    let p = s
        .patch(&format!("/v1/keys/{id}"), json!({"expires_in": "1h"}))
        .await
        .json();
    assert!(p["expires_at"].is_string());
    let p = s
        .patch(&format!("/v1/keys/{id}"), json!({"expires_at": null}))
        .await
        .json();
    assert_eq!(p["expires_at"], Value::Null);

    // Revoke, with a reason; twice is fine and changes nothing.
    let r1 = s
        .post(
            &format!("/v1/keys/{id}/revoke"),
            json!({"reason": "laptop lost"}),
        )
        .await;
    assert_eq!(r1.status, 200, "{}", r1.text);
    let r1 = r1.json();
    assert_eq!(r1["status"], "revoked");
    assert_eq!(r1["revoke_reason"], "laptop lost");
    let r2 = s
        .post(&format!("/v1/keys/{id}/revoke"), json!({}))
        .await
        .json();
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
    s.get(&format!("/v1/keys/{id}"))
        .await
        .problem(404, "NOT_FOUND");
    s.delete(&format!("/v1/keys/{id}"))
        .await
        .problem(404, "NOT_FOUND");
    assert_eq!(
        s.verify(json!({"credential": key})).await["code"],
        "INVALID_KEY"
    );
}
both!(key_lifecycle);

async fn rotation_with_grace(s: TestServer) {
    let org = s.org().await;
    let (id, old) = s
        .key(
            &org,
            json!({"name": "k", "kind": "test", "scopes": ["a.read"], "external_id": "c1"}),
        )
        .await;
    let r = s
        .post(
            &format!("/v1/keys/{id}/rotate"),
            json!({"grace_period": "2s"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let v = r.json();
    let new = v["key"].as_str().unwrap().to_owned();
    let new_id = v["id"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(v["rotated_from"], id.as_str());
    assert_eq!(
        v["scopes"],
        json!(["a.read"]),
        "the new key keeps the old one's attributes"
    );
    assert_eq!(v["external_id"], "c1");
    let old_view = s.get(&format!("/v1/keys/{id}")).await.json();
    assert_eq!(old_view["replaced_by"], new_id.as_str());
    assert_eq!(old_view["status"], "rotating");
    // Both work during the grace period.
    for k in [&old, &new] {
        let v = s
            .verify(json!({"credential": k, "environment": "test"}))
            .await;
        assert_eq!(v["valid"], true, "{v}");
    }
    // Rotating the old key again is a conflict: rotate its replacement.
    s.post(&format!("/v1/keys/{id}/rotate"), json!({}))
        .await
        .problem(409, "CONFLICT");
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let v = s
        .verify(json!({"credential": old, "environment": "test"}))
        .await;
    assert_eq!(v["code"], "KEY_REVOKED", "{v}");
    assert!(v["detail"].as_str().unwrap().contains("rotated"), "{v}");
    assert_eq!(
        s.verify(json!({"credential": new, "environment": "test"}))
            .await["valid"],
        true
    );
    // Without a grace period the old key stops at once; an empty body is fine.
    let r = s
        .send(
            s.http
                .post(s.at(&format!("/v1/keys/{new_id}/rotate")))
                .bearer_auth(&s.root_key),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        s.verify(json!({"credential": new, "environment": "test"}))
            .await["code"],
        "KEY_REVOKED"
    );
    s.post(&format!("/v1/keys/{new_id}/rotate"), json!({}))
        .await
        .problem(409, "CONFLICT");
    let (id3, _) = s.key(&org, json!({"name": "k3"})).await;
    s.post(
        &format!("/v1/keys/{id3}/rotate"),
        json!({"grace_period": -1}),
    )
    .await
    .problem(422, "VALIDATION_FAILED");
    s.post("/v1/keys/key_000000000000000000000A/rotate", json!({}))
        .await
        .problem(404, "NOT_FOUND");
}
both!(rotation_with_grace);

async fn expiry(s: TestServer) {
    let org = s.org().await;
    let (_, k) = s.key(&org, json!({"name": "short", "expires_in": 1})).await;
    let v = s.verify(json!({"credential": k})).await;
    assert_eq!(v["valid"], true);
    assert!(v["expires_at"].is_string());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let v = s.verify(json!({"credential": k})).await;
    assert_eq!(v["code"], "KEY_EXPIRED", "{v}");
    assert_eq!(v["status"], 401);
    let at = "2030-01-02T03:04:05Z";
    let r = s
        .post(
            &format!("/v1/orgs/{org}/keys"),
            json!({"name": "x", "expires_at": at}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["expires_at"], at);
    let list = s.get(&format!("/v1/orgs/{org}/keys")).await.json();
    let statuses: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["active", "expired"]);
}
both!(expiry);

const CATALOG: &str = r#"
[scopes.catalog]
"documents.read" = "List and retrieve documents"
"documents.write" = "Update documents"
"documents.delete" = "Delete documents"
"templates.read" = "List templates"
[scopes.implies]
"admin" = ["*"]
"editor" = ["documents.*"]
"#;

async fn scope_catalog(s: TestServer) {
    let org = s.org().await;
    let path = format!("/v1/orgs/{org}/keys");
    let r = s.post(&path, json!({"name": "x", "scopes": ["documents.read", "billing.read", "billing.*", "documents.*"]})).await;
    let p = r.problem(422, "VALIDATION_FAILED");
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["scopes[1]", "scopes[2]"], "{p}");
    // Wildcards, `*` and implied scopes within the catalog are fine.
    let (_, editor) = s
        .key(&org, json!({"name": "e", "scopes": ["editor"]}))
        .await;
    let (_, wild) = s
        .key(&org, json!({"name": "w", "scopes": ["documents.*"]}))
        .await;
    let (_, star) = s.key(&org, json!({"name": "s", "scopes": ["*"]})).await;
    let (_, admin) = s.key(&org, json!({"name": "a", "scopes": ["admin"]})).await;
    for (k, scope, ok) in [
        (&editor, "documents.delete", true),
        (&editor, "templates.read", false),
        (&wild, "documents.write", true),
        (&wild, "documents", false),
        (&star, "templates.read", true),
        (&admin, "templates.read", true),
    ] {
        let v = s
            .verify(json!({"credential": k, "required_scopes": [scope]}))
            .await;
        assert_eq!(v["valid"], ok, "{scope}: {v}");
    }
    // The restricted kind takes no wildcard, not even through `implies`.
    let r = s.post(&path, json!({"name": "r", "kind": "restricted", "scopes": ["documents.read", "documents.*", "admin"]})).await;
    let p = r.problem(422, "VALIDATION_FAILED");
    assert_eq!(p["errors"].as_array().unwrap().len(), 2, "{p}");
    let r = s
        .post(
            &path,
            json!({"name": "r", "kind": "restricted", "scopes": ["documents.read"]}),
        )
        .await;
    assert_eq!(r.status, 201);
    let rk = r.json();
    assert!(rk["key"].as_str().unwrap().starts_with("rk_"));
    assert_eq!(
        rk["environment"], "live",
        "restricted works in test and live; the instance's is the default"
    );
    let id = rk["id"].as_str().unwrap();
    s.patch(&format!("/v1/keys/{id}"), json!({"scopes": ["*"]}))
        .await
        .problem(422, "VALIDATION_FAILED");
    let r = s.post(&path, json!({"name": "r", "kind": "restricted", "environment": "test", "scopes": ["templates.read"]})).await;
    assert_eq!(r.json()["environment"], "test");
    s.post(
        &path,
        json!({"name": "r", "kind": "live", "environment": "test"}),
    )
    .await
    .problem(422, "VALIDATION_FAILED");
    s.post(&path, json!({"name": "r", "kind": "gold"}))
        .await
        .problem(422, "VALIDATION_FAILED");
}
both!(scope_catalog, CATALOG);

async fn environments(s: TestServer) {
    let org = s.org().await;
    let (_, test_key) = s.key(&org, json!({"name": "t", "kind": "test"})).await;
    let (_, live_key) = s.key(&org, json!({"name": "l", "kind": "live"})).await;
    let v = s.verify(json!({"credential": test_key})).await;
    assert_eq!(v["code"], "WRONG_ENVIRONMENT");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("test keys only work in the test environment"),
        "{v}"
    );
    assert_eq!(
        s.verify(json!({"credential": test_key, "environment": "test"}))
            .await["valid"],
        true
    );
    assert_eq!(
        s.verify(json!({"credential": live_key})).await["valid"],
        true
    );
    assert_eq!(
        s.verify(json!({"credential": live_key, "environment": "test"}))
            .await["code"],
        "WRONG_ENVIRONMENT"
    );
}
both!(environments);

async fn keys_by_owner_and_pages(s: TestServer) {
    let org = s.org().await;
    let other = s.org().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let owner = if i % 2 == 0 { "cust_a" } else { "cust_b" };
        ids.push(
            s.key(&org, json!({"name": format!("k{i}"), "external_id": owner}))
                .await
                .0,
        );
        // Distinct creation times, so that "newest first" has one answer.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    s.key(
        &other,
        json!({"name": "elsewhere", "external_id": "cust_a"}),
    )
    .await;
    let a = s
        .get(&format!("/v1/orgs/{org}/keys?external_id=cust_a"))
        .await
        .json();
    let names: Vec<&str> = a["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["k4", "k2", "k0"]);
    let mut seen = Vec::new();
    let mut path = format!("/v1/orgs/{org}/keys?limit=2");
    loop {
        let page = s.get(&path).await.json();
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/orgs/{org}/keys?limit=2&cursor={c}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "every key once, newest first");
    s.get("/v1/orgs/org_000000000000000000000A/keys")
        .await
        .problem(404, "NOT_FOUND");
    s.post(
        "/v1/orgs/org_000000000000000000000A/keys",
        json!({"name": "x"}),
    )
    .await
    .problem(404, "NOT_FOUND");
}
both!(keys_by_owner_and_pages);

async fn last_used_is_recorded_off_the_request_path(s: TestServer) {
    let org = s.org().await;
    let (id, k) = s.key(&org, json!({"name": "k"})).await;
    assert_eq!(
        s.get(&format!("/v1/keys/{id}")).await.json()["last_used_at"],
        Value::Null
    );
    assert_eq!(s.verify(json!({"credential": k})).await["valid"], true);
    let mut last = Value::Null;
    for _ in 0..50 {
        last = s.get(&format!("/v1/keys/{id}")).await.json()["last_used_at"].clone();
        if last.is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last.is_string(), "last_used_at was not recorded within 5 s");
    // Root keys' uses go in the same flush, just after the keys'.
    let mut roots = Value::Null;
    for _ in 0..50 {
        roots = s.get("/v1/root-keys").await.json();
        if roots["data"][0]["last_used_at"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(roots["data"][0]["last_used_at"].is_string(), "{roots}");
}
both!(last_used_is_recorded_off_the_request_path);

async fn root_keys_and_management_scopes(s: TestServer) {
    let r = s
        .post(
            "/v1/root-keys",
            json!({"name": "reader", "scopes": ["keys.read", "orgs.read"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let reader = r.json()["key"].as_str().unwrap().to_owned();
    let reader_id = r.json()["id"].as_str().unwrap().to_owned();
    assert!(reader.starts_with("lk_root_"));
    s.post(
        "/v1/root-keys",
        json!({"name": "bad", "scopes": ["keys.read", "documents.read"]}),
    )
    .await
    .problem(422, "VALIDATION_FAILED");
    s.post("/v1/root-keys", json!({"name": "bad", "scopes": []}))
        .await
        .problem(422, "VALIDATION_FAILED");
    let as_reader = |req: reqwest::RequestBuilder| req.bearer_auth(&reader);
    let r = s.send(as_reader(s.http.get(s.at("/v1/orgs")))).await;
    assert_eq!(r.status, 200);
    let r = s
        .send(as_reader(
            s.http.post(s.at("/v1/orgs")).json(&json!({"name": "x"})),
        ))
        .await;
    let p = r.problem(403, "INSUFFICIENT_SCOPE");
    assert_eq!(p["required_scopes"], json!(["orgs.create"]));
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        r#"Bearer realm="latchkey", error="insufficient_scope", scope="orgs.create""#
    );
    let r = s
        .send(as_reader(
            s.http
                .post(s.at("/v1/verify"))
                .json(&json!({"credential": "x"})),
        ))
        .await;
    r.problem(403, "INSUFFICIENT_SCOPE");
    // Instance info needs any root key.
    let r = s.send(as_reader(s.http.get(s.at("/v1/instance")))).await;
    assert_eq!(r.json()["environment"], "live");
    assert_eq!(r.json()["public_url"], PUBLIC_URL);
    assert!(r.json()["version"].is_string());
    // Revoked: refused at once, idempotently.
    let a = s
        .post(&format!("/v1/root-keys/{reader_id}/revoke"), json!({}))
        .await
        .json();
    let b = s
        .post(&format!("/v1/root-keys/{reader_id}/revoke"), json!({}))
        .await
        .json();
    assert_eq!(a["revoked_at"], b["revoked_at"]);
    let r = s.send(as_reader(s.http.get(s.at("/v1/orgs")))).await;
    r.problem(401, "KEY_REVOKED");
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains(r#"error="invalid_token""#)
    );
    let list = s.get("/v1/root-keys").await.json();
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("key").is_none() && k["start"].as_str().unwrap().len() == 12)
    );
    // No credential at all.
    let r = s.send(s.http.get(s.at("/v1/orgs"))).await;
    r.problem(401, "MISSING_KEY");
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        r#"Bearer realm="latchkey""#
    );
}
both!(root_keys_and_management_scopes);

async fn credential_places(s: TestServer) {
    let root = s.root_key.clone();
    let get = |f: &dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder| {
        f(s.http.get(s.at("/v1/instance")))
    };
    let ok = [
        get(&|r| r.header("authorization", format!("Bearer {root}"))),
        get(&|r| r.header("authorization", format!("bearer {root}"))),
        get(&|r| r.header("authorization", format!("ApiKey {root}"))),
        get(&|r| r.header("x-api-key", root.as_str())),
        get(&|r| r.header("api_key", root.as_str())),
        // The same credential in two places is one credential.
        get(&|r| r.header("x-api-key", root.as_str()).bearer_auth(&root)),
    ];
    for req in ok {
        let r = s.send(req).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // The query parameter is off by default: a key there is not read.
    let r = s
        .send(
            s.http
                .get(format!("{}?api_key={root}", s.at("/v1/instance"))),
        )
        .await;
    r.problem(401, "MISSING_KEY");
    let other = latchkey_core::keyfmt::generate("lk_root_");
    let r = s
        .send(get(&|r| {
            r.header("x-api-key", other.as_str()).bearer_auth(&root)
        }))
        .await;
    let p = r.problem(400, "INVALID_REQUEST");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("two different credentials")
    );
    s.send(get(&|r| r.header("authorization", format!("Basic {root}"))))
        .await
        .problem(400, "INVALID_REQUEST");
}
both!(credential_places);

async fn query_parameter_when_enabled(s: TestServer) {
    let root = s.root_key.clone();
    let r = s
        .send(
            s.http
                .get(format!("{}?api_key={root}", s.at("/v1/instance"))),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Headers that are not configured are not read; bearer is turned off here.
    let r = s
        .send(
            s.http
                .get(s.at("/v1/instance"))
                .header("x-api-key", root.as_str()),
        )
        .await;
    r.problem(401, "MISSING_KEY");
    let r = s
        .send(s.http.get(s.at("/v1/instance")).bearer_auth(&root))
        .await;
    r.problem(400, "INVALID_REQUEST");
    let r = s
        .send(
            s.http
                .get(s.at("/v1/instance"))
                .header("authorization", format!("ApiKey {root}")),
        )
        .await;
    assert_eq!(r.status, 200);
}
both!(
    query_parameter_when_enabled,
    "[credentials]\nbearer = false\nheaders = [\"x-custom-key\"]\nquery_param = \"api_key\"\n"
);

async fn framework_refusals_are_problems(s: TestServer) {
    s.get("/v1/nope").await.problem(404, "NOT_FOUND");
    s.get("/nope").await.problem(404, "NOT_FOUND");
    let r = s
        .send(s.http.put(s.at("/v1/orgs")).bearer_auth(&s.root_key))
        .await;
    r.problem(405, "METHOD_NOT_ALLOWED");
    assert!(r.header("allow").unwrap().contains("POST"));
    let post = |body: &'static str, ct: &'static str| {
        s.http
            .post(s.at("/v1/orgs"))
            .bearer_auth(&s.root_key)
            .header("content-type", ct)
            .body(body)
    };
    s.send(post("{", "application/json"))
        .await
        .problem(400, "INVALID_REQUEST");
    s.send(post("{\"name\": \"x\"}", "text/plain"))
        .await
        .problem(415, "UNSUPPORTED_MEDIA_TYPE");
    let big = "x".repeat(1024 * 1024 + 10);
    let r = s
        .send(
            s.http
                .post(s.at("/v1/orgs"))
                .bearer_auth(&s.root_key)
                .header("content-type", "application/json")
                .body(big),
        )
        .await;
    r.problem(413, "PAYLOAD_TOO_LARGE");
    // Nesting is refused before it can exhaust the stack: by type where a
    // string is expected, by serde_json's depth limit in free-form JSON.
    let nested = format!(
        "{{\"credential\": {}{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let r = s
        .send(
            s.http
                .post(s.at("/v1/verify"))
                .bearer_auth(&s.root_key)
                .header("content-type", "application/json")
                .body(nested),
        )
        .await;
    r.problem(422, "VALIDATION_FAILED");
    let org = s.org().await;
    let nested = format!(
        "{{\"name\": \"x\", \"metadata\": {}{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let r = s
        .send(
            s.http
                .post(s.at(&format!("/v1/orgs/{org}/keys")))
                .bearer_auth(&s.root_key)
                .header("content-type", "application/json")
                .body(nested),
        )
        .await;
    r.problem(400, "INVALID_REQUEST");
    let p = s
        .post("/v1/orgs", json!({"name": "x", "colour": "red"}))
        .await
        .problem(422, "VALIDATION_FAILED");
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{p}"
    );
}
both!(framework_refusals_are_problems);

async fn operations_endpoints(s: TestServer) {
    let r = s.send(s.http.get(s.at("/healthz"))).await;
    assert_eq!((r.status, r.text.as_str()), (200, "ok\n"));
    assert!(r.header("x-request-id").unwrap().starts_with("req_"));
    let r = s.send(s.http.get(s.at("/readyz"))).await;
    assert_eq!(r.status, 200);
    let org = s.org().await;
    let (_, k) = s.key(&org, json!({"name": "k"})).await;
    s.verify(json!({"credential": k})).await;
    s.verify(json!({"credential": "sk_live_nope"})).await;
    let m = s.send(s.http.get(s.at("/metrics"))).await;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    for needle in [
        "latchkey_http_requests_total{route=\"/v1/verify\",method=\"POST\",status=\"200\"}",
        "latchkey_http_request_duration_seconds_bucket{route=\"/v1/verify\"",
        "latchkey_decisions_total{code=\"VALID\"}",
        "latchkey_decisions_total{code=\"INVALID_FORMAT\"}",
        "latchkey_decision_duration_seconds_bucket{code=\"VALID\"",
    ] {
        assert!(m.text.contains(needle), "missing {needle} in\n{}", m.text);
    }
    // Error pages: one per code, linked from every problem's `type`.
    for slug in [
        "key-revoked",
        "invalid-format",
        "wrong-environment",
        "insufficient-scope",
        "validation-failed",
    ] {
        let r = s.send(s.http.get(s.at(&format!("/errors/{slug}")))).await;
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
        assert!(r.text.contains(&slug.to_uppercase().replace('-', "_")));
        assert!(r.text.contains("How to fix it"));
    }
    s.send(s.http.get(s.at("/errors/no-such-code")))
        .await
        .problem(404, "NOT_FOUND");
}
both!(operations_endpoints);

/// The document is valid OpenAPI 3.1, as `openapi-spec-validator` reads it
/// (installed by .ci/run; required under CI=true).
#[tokio::test]
async fn openapi_document_is_valid() {
    let have = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "openapi-spec-validator is required under CI=true"
        );
        eprintln!("SKIPPED: python3 -m openapi_spec_validator is not installed");
        return;
    }
    let Some(s) = TestServer::start(common::Backend::Sqlite).await else {
        return;
    };
    let doc = s.send(s.http.get(s.at("/openapi.json"))).await.text;
    let path = s.dir.path().join("openapi.json");
    std::fs::write(&path, doc).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn openapi_covers_every_v1_route() {
    let Some(s) = TestServer::start(common::Backend::Sqlite).await else {
        return;
    };
    let doc = s.send(s.http.get(s.at("/openapi.json"))).await.json();
    assert_eq!(doc["openapi"].as_str().unwrap(), "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/v1/orgs", vec!["get", "post"]),
        ("/v1/orgs/{org_id}", vec!["get"]),
        ("/v1/orgs/{org_id}/keys", vec!["get", "post"]),
        ("/v1/orgs/{org_id}/logs", vec!["get"]),
        ("/v1/keys/{key_id}", vec!["get", "patch", "delete"]),
        ("/v1/keys/{key_id}/revoke", vec!["post"]),
        ("/v1/keys/{key_id}/rotate", vec!["post"]),
        ("/v1/root-keys", vec!["get", "post"]),
        ("/v1/root-keys/{root_key_id}/revoke", vec!["post"]),
        ("/v1/verify", vec!["post"]),
        ("/v1/instance", vec!["get"]),
        ("/v1/orgs/{org_id}/clients", vec!["get", "post"]),
        ("/v1/clients/{client_id}", vec!["get", "patch", "delete"]),
        ("/v1/clients/{client_id}/rotate-secret", vec!["post"]),
        ("/v1/clients/{client_id}/consents", vec!["get"]),
        ("/v1/clients/{client_id}/consents/{user_id}", vec!["delete"]),
        ("/v1/orgs/{org_id}/users", vec!["get", "post"]),
        ("/v1/users/{user_id}", vec!["get", "delete"]),
        (
            "/v1/forward-auth",
            vec!["get", "post", "put", "patch", "delete", "head", "options"],
        ),
        ("/v1/forward-auth/nginx", vec!["get", "post", "delete"]),
        ("/v1/forward-auth/envoy", vec!["get", "post", "delete"]),
        (
            "/v1/forward-auth/envoy/{path}",
            vec!["get", "post", "delete"],
        ),
    ];
    assert_eq!(
        paths.len(),
        expected.len(),
        "{:?}",
        paths.keys().collect::<Vec<_>>()
    );
    for (path, methods) in expected {
        let item = &paths[path];
        for m in methods {
            let op = &item[m];
            assert!(op.is_object(), "{m} {path} missing");
            assert!(
                op["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .any(|k| k.starts_with('2')),
                "{m} {path}"
            );
            // nginx's flavour refuses with 401 and 403 only.
            let refusal = if path.ends_with("/nginx") {
                "401"
            } else {
                "4XX"
            };
            assert!(
                op["responses"][refusal]["content"]["application/problem+json"].is_object(),
                "{m} {path}"
            );
        }
    }
    for schema in [
        "Problem",
        "KeyView",
        "NewKeyView",
        "VerifyAnswer",
        "CreateKey",
        "CreateClient",
        "ClientView",
        "NewClientView",
        "CreateUser",
        "UserView",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}
