//! OAuth access tokens through the one decision engine (SPEC §6, §8):
//! `/v1/verify` and forward-auth accept latchkey's JWT and opaque access
//! tokens with the same scope rules as keys, and refuse them once revoked,
//! once their client is deleted, or when forged; a revocation through one
//! node holds on another at once. Both backends, the real binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Resp, TestServer};
use serde_json::{Value, json};

/// Registers a client_credentials client with `scopes`: (id, secret).
async fn client(s: &TestServer, org: &str, scopes: &[&str]) -> (String, String) {
    let r = s
        .post(
            &format!("/v1/orgs/{org}/clients"),
            json!({"name": "svc", "scopes": scopes}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v = r.json();
    let secret = v["client_secret"].as_str().unwrap().to_owned();
    s.remember(&secret);
    (v["client_id"].as_str().unwrap().to_owned(), secret)
}

async fn form(s: &TestServer, path: &str, id: &str, secret: &str, body: &[(&str, &str)]) -> Resp {
    s.send(
        s.http
            .post(s.at(path))
            .basic_auth(id, Some(secret))
            .form(body),
    )
    .await
}

async fn token(s: &TestServer, id: &str, secret: &str, scope: Option<&str>) -> String {
    let mut body = vec![("grant_type", "client_credentials")];
    if let Some(sc) = scope {
        body.push(("scope", sc));
    }
    let r = form(s, "/oauth/token", id, secret, &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let t = r.json()["access_token"].as_str().unwrap().to_owned();
    s.remember(&t);
    t
}

fn assert_refused(v: &Value, code: &str) {
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["status"], 401, "{v}");
}

async fn jwt_tokens_are_verified_like_keys(s: TestServer) {
    let org = s.org().await;
    let (id, secret) = client(&s, &org, &["documents.read", "documents.write"]).await;
    let t = token(&s, &id, &secret, Some("documents.read")).await;

    let v = s
        .verify(json!({"credential": t, "required_scopes": ["documents.read"]}))
        .await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["credential_type"], "access_token");
    assert_eq!(v["client_id"], id.as_str());
    assert_eq!(v["subject"], id.as_str());
    assert_eq!(v["org_id"], org.as_str());
    assert_eq!(v["scopes"], json!(["documents.read"]));
    assert!(v.get("key_id").is_none(), "{v}");

    // The same scope rules as keys.
    let v = s
        .verify(json!({"credential": t, "required_scopes": ["documents.write"]}))
        .await;
    assert_eq!(v["code"], "INSUFFICIENT_SCOPE", "{v}");
    assert_eq!(v["status"], 403);

    // Forward-auth answers with the token's identity.
    let r = s
        .send(
            s.http
                .get(s.at("/v1/forward-auth"))
                .header("x-forwarded-method", "GET")
                .header("x-forwarded-uri", "/api/v1/documents")
                .bearer_auth(&t),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.header("x-latchkey-credential-type").as_deref(),
        Some("access_token")
    );
    assert_eq!(
        r.header("x-latchkey-client-id").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(r.header("x-latchkey-org").as_deref(), Some(org.as_str()));
    assert_eq!(
        r.header("x-latchkey-scopes").as_deref(),
        Some("documents.read")
    );
    assert_eq!(r.header("x-latchkey-key-id"), None);

    // Forged: another signature on the same claims, a flipped payload bit,
    // `alg: none`.
    let parts: Vec<&str> = t.split('.').collect();
    let other = token(&s, &id, &secret, None).await;
    let other_sig = other.split('.').nth(2).unwrap();
    let spliced = format!("{}.{}.{other_sig}", parts[0], parts[1]);
    assert_refused(
        &s.verify(json!({"credential": spliced})).await,
        "INVALID_TOKEN",
    );
    let none_header = base64url(br#"{"alg":"none","typ":"at+jwt"}"#);
    let unsigned = format!("{none_header}.{}.", parts[1]);
    assert_refused(
        &s.verify(json!({"credential": unsigned})).await,
        "INVALID_TOKEN",
    );
    let garbage = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
    assert_refused(
        &s.verify(json!({"credential": garbage})).await,
        "INVALID_TOKEN",
    );

    // Revoked through RFC 7009: refused at once, with TOKEN_REVOKED.
    let r = form(&s, "/oauth/revoke", &id, &secret, &[("token", &t)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_refused(&s.verify(json!({"credential": t})).await, "TOKEN_REVOKED");
    // The other token of the client still holds.
    let v = s.verify(json!({"credential": other})).await;
    assert_eq!(v["valid"], true, "{v}");

    // Deleting the client ends every token it holds.
    let r = s.delete(&format!("/v1/clients/{id}")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_refused(
        &s.verify(json!({"credential": other})).await,
        "TOKEN_REVOKED",
    );

    // Decisions on tokens are in the organization's log, with the client
    // (written in batches off the request path: wait for them).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let logs = s.get(&format!("/v1/orgs/{org}/logs?client_id={id}")).await;
        assert_eq!(logs.status, 200, "{}", logs.text);
        let codes: Vec<String> = logs.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "decision" && e["credential_type"] == "access_token")
            .map(|e| e["code"].as_str().unwrap().to_owned())
            .collect();
        if codes.contains(&"VALID".to_owned()) && codes.contains(&"INSUFFICIENT_SCOPE".to_owned()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{codes:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
both!(jwt_tokens_are_verified_like_keys, common::ROUTES);

fn base64url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

async fn opaque_tokens(s: TestServer) {
    let org = s.org().await;
    let (id, secret) = client(&s, &org, &["documents.read"]).await;
    let t = token(&s, &id, &secret, None).await;
    assert!(t.starts_with("lk_at_"), "{t}");
    let v = s.verify(json!({"credential": t})).await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["credential_type"], "access_token");
    // A made-up opaque token of the right shape but wrong checksum, and
    // one that was never issued.
    let mut bad = t.clone();
    bad.pop();
    bad.push(if t.ends_with('A') { 'B' } else { 'A' });
    assert_refused(&s.verify(json!({"credential": bad})).await, "INVALID_TOKEN");
    let r = form(&s, "/oauth/revoke", &id, &secret, &[("token", &t)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_refused(&s.verify(json!({"credential": t})).await, "TOKEN_REVOKED");
}
both!(
    opaque_tokens,
    "[oauth]\naccess_token_format = \"opaque\"\n[scopes.catalog]\n\"documents.read\" = \"Read\"\n"
);

async fn a_revocation_through_one_node_holds_on_another(s: TestServer) {
    let org = s.org().await;
    let (id, secret) = client(&s, &org, &["documents.read"]).await;
    let t = token(&s, &id, &secret, None).await;
    let b = s.second_node();
    // Node B verifies the token node A signed (one key ring, in the database).
    let v = b.verify(json!({"credential": t})).await;
    assert_eq!(v["valid"], true, "{v}");
    let r = form(&s, "/oauth/revoke", &id, &secret, &[("token", &t)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The change feed carries the revocation: PostgreSQL NOTIFY at once,
    // SQLite within its 100 ms poll.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let v = b.verify(json!({"credential": t})).await;
        if v["code"] == "TOKEN_REVOKED" {
            break;
        }
        assert_eq!(v["valid"], true, "{v}");
        assert!(
            std::time::Instant::now() < deadline,
            "node B still accepts a token revoked through node A"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
both!(
    a_revocation_through_one_node_holds_on_another,
    common::ROUTES
);

fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["kid"].as_str().unwrap().to_owned()
}

async fn signing_key_rotation_keeps_old_tokens_valid(s: TestServer) {
    let org = s.org().await;
    let (id, secret) = client(&s, &org, &["documents.read"]).await;
    let old = token(&s, &id, &secret, None).await;
    let old_kid = kid_of(&old);

    let out = s.cli(&["--json", "signing-keys", "rotate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_kid = serde_json::from_slice::<Value>(&out.stdout).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_kid, old_kid);

    // The server learns of the new key through the change feed; then the
    // JWKS publishes both, new tokens carry the new kid, and the old token
    // still verifies.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let kids = loop {
        let r = s.send(s.http.get(s.at("/.well-known/jwks.json"))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let kids: Vec<String> = r.json()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        if kids.len() == 2 {
            break kids;
        }
        assert!(std::time::Instant::now() < deadline, "{kids:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        kids.contains(&old_kid) && kids.contains(&new_kid),
        "{kids:?}"
    );
    let new = token(&s, &id, &secret, None).await;
    assert_eq!(kid_of(&new), new_kid);
    for t in [&old, &new] {
        let v = s.verify(json!({"credential": t})).await;
        assert_eq!(v["valid"], true, "{v}");
    }
}
both!(signing_key_rotation_keeps_old_tokens_valid, common::ROUTES);
