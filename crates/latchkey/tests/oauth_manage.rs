//! The management API of OAuth clients and organization users (SPEC §9)
//! end to end, on SQLite and PostgreSQL: registration and its defaults,
//! every validation refusal with the field it names, pages, patches,
//! secret rotation, deletion, management scopes, users, and the usage
//! log. Client secrets and passwords are remembered by the harness: any
//! later response or server log line holding one fails the test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::{Resp, TestServer};
use latchkey::jose::{SigningAlg, generate};
use serde_json::{Value, json};

const CATALOG: &str = r#"
[scopes.catalog]
"documents.read" = "Read documents"
"documents.write" = "Write documents"
"#;

const CB: &str = "https://app.example.com/callback";
/// Well-formed ids of nothing.
const NO_CLIENT: &str = "cli_0000000000000000000000";
const NO_USER: &str = "usr_0000000000000000000000";
const NO_ORG: &str = "org_0000000000000000000000";

/// A fresh public JWK for `alg`, with its own `kid`.
fn jwk(alg: SigningAlg) -> Value {
    generate(alg).unwrap().public_jwk
}

/// Lets the clock move on, so that "newest first" has one answer.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

/// The `field`s of a 422 refusal, in order.
fn fields(r: &Resp) -> Vec<String> {
    let p = r.problem(422, "VALIDATION_FAILED");
    p["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors[]: {p}"))
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{p}");
            e["field"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Registers a client (asserting 201) and answers its view, with the
/// secret (if any) remembered as one.
async fn client(s: &TestServer, org: &str, body: Value) -> Value {
    let r = s.post(&format!("/v1/orgs/{org}/clients"), body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v = r.json();
    if let Some(secret) = v["client_secret"].as_str() {
        s.remember(secret);
    }
    v
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

async fn registration_and_defaults(s: TestServer) {
    let org = s.org().await;
    let r = s
        .post(
            &format!("/v1/orgs/{org}/clients"),
            json!({"name": "  Web app  ", "redirect_uris": [CB, "http://127.0.0.1:5000/cb"],
                   "scopes": ["documents.read", "documents.read", "documents.write"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let c = r.json();
    let secret = c["client_secret"].as_str().unwrap().to_owned();
    let cid = id(&c);
    assert!(cid.starts_with("cli_"), "{cid}");
    assert_eq!(c["client_id"], cid.as_str());
    assert!(
        latchkey_core::keyfmt::check(&secret, "lk_cs_").is_ok(),
        "{secret}"
    );
    assert_eq!(c["org_id"], org.as_str());
    assert_eq!(c["name"], "Web app", "trimmed");
    assert_eq!(c["public"], false);
    assert_eq!(c["redirect_uris"], json!([CB, "http://127.0.0.1:5000/cb"]));
    assert_eq!(
        c["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(
        c["scopes"],
        json!(["documents.read", "documents.write"]),
        "deduplicated"
    );
    assert_eq!(c["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(c["require_pkce"], true);
    assert_eq!(c["jwks"], Value::Null);
    assert_eq!(c["jwt_auth"], Value::Null);
    assert_eq!(c["secret_rotated_at"], Value::Null);
    assert!(c["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(c["updated_at"], c["created_at"]);
    s.remember(&secret);

    // The secret is never answered again (the harness also searches
    // every later answer and the server log for it).
    let got = s.get(&format!("/v1/clients/{cid}")).await;
    assert_eq!(got.status, 200, "{}", got.text);
    let mut view = got.json();
    assert!(view.get("client_secret").is_none(), "{view}");
    assert!(view.get("client_id").is_none(), "{view}");
    let mut created = c.clone();
    let created = created.as_object_mut().unwrap();
    created.remove("client_id");
    created.remove("client_secret");
    assert_eq!(&view.take(), &Value::Object(created.clone()));
    let list = s.get(&format!("/v1/orgs/{org}/clients")).await.json();
    assert_eq!(list["data"][0]["id"], cid.as_str());
    assert!(list["data"][0].get("client_secret").is_none());
    assert!(!list.to_string().contains("secret_digest"));

    // Without redirect URIs the default grant is client_credentials.
    let m2m = client(&s, &org, json!({"name": "worker"})).await;
    assert_eq!(m2m["grant_types"], json!(["client_credentials"]));
    assert_eq!(m2m["redirect_uris"], json!([]));
    assert!(m2m["client_secret"].as_str().unwrap().starts_with("lk_cs_"));
    assert_ne!(m2m["client_secret"].as_str(), Some(secret.as_str()));

    // A public client: no secret, authenticates with `none`, PKCE on.
    let r = s
        .post(
            &format!("/v1/orgs/{org}/clients"),
            json!({"name": "SPA", "public": true, "redirect_uris": [CB]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let p = r.json();
    assert!(id(&p).starts_with("cli_"));
    assert_eq!(p["client_id"], id(&p).as_str());
    assert!(p.get("client_secret").is_none(), "{p}");
    assert_eq!(p["public"], true);
    assert_eq!(p["token_endpoint_auth_method"], "none");
    assert_eq!(p["require_pkce"], true);
    assert_eq!(
        p["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );

    // A native app's private-use scheme; explicit settings are kept.
    let native = client(
        &s,
        &org,
        json!({"name": "Mobile", "public": true, "redirect_uris": ["com.example.app:/oauth2redirect"],
               "grant_types": ["authorization_code"], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(native["grant_types"], json!(["authorization_code"]));

    // Confidential options: private_key_jwt with keys, jwt_auth,
    // require_pkce false, client_secret_post, HS256.
    let ec = jwk(SigningAlg::ES256);
    let ed = jwk(SigningAlg::EdDSA);
    let rsa = jwk(SigningAlg::RS256);
    let k = client(
        &s,
        &org,
        json!({"name": "signed", "grant_types": ["client_credentials"],
               "token_endpoint_auth_method": "private_key_jwt",
               "jwks": {"keys": [ec, ed, rsa]}, "jwt_auth": {"alg": "EdDSA"}}),
    )
    .await;
    assert_eq!(k["token_endpoint_auth_method"], "private_key_jwt");
    assert_eq!(k["jwks"], json!({"keys": [ec, ed, rsa]}));
    assert_eq!(k["jwt_auth"], json!({"alg": "EdDSA"}));
    let plain = client(
        &s,
        &org,
        json!({"name": "legacy", "redirect_uris": [CB], "require_pkce": false,
               "token_endpoint_auth_method": "client_secret_post", "jwt_auth": {"alg": "HS256"}}),
    )
    .await;
    assert_eq!(plain["require_pkce"], false);
    assert_eq!(plain["token_endpoint_auth_method"], "client_secret_post");
    assert_eq!(plain["jwt_auth"], json!({"alg": "HS256"}));

    let list = s.get(&format!("/v1/orgs/{org}/clients")).await.json();
    assert_eq!(list["data"].as_array().unwrap().len(), 6);
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c.get("client_secret").is_none())
    );
}
both!(registration_and_defaults);

async fn every_refusal_names_its_field(s: TestServer) {
    let org = s.org().await;
    let path = format!("/v1/orgs/{org}/clients");
    let web = |extra: Value| {
        let mut body = json!({"name": "app", "redirect_uris": [CB]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let m2m = |extra: Value| {
        let mut body = json!({"name": "svc", "grant_types": ["client_credentials"]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let ec = jwk(SigningAlg::ES256);
    let ed = jwk(SigningAlg::EdDSA);
    let mut private = ec.clone();
    private["d"] = json!("c2VjcmV0LXNjYWxhci1vZi10aGUtcHJpdmF0ZS1rZXk");
    let mut no_kid = ec.clone();
    no_kid.as_object_mut().unwrap().remove("kid");
    let mut twin_a = jwk(SigningAlg::ES256);
    twin_a["kid"] = json!("k1");
    let mut twin_b = jwk(SigningAlg::ES256);
    twin_b["kid"] = json!("k1");
    let oct = json!({"kty": "oct", "kid": "s", "k": "c2hhcmVkLXNlY3JldC1zaGFyZWQtc2VjcmV0"});
    let cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "http on a non-loopback host",
            web(json!({"redirect_uris": ["http://app.example.com/cb"]})),
            &["redirect_uris[0]"],
        ),
        (
            "a fragment",
            web(json!({"redirect_uris": [CB, "https://app.example.com/cb#top"]})),
            &["redirect_uris[1]"],
        ),
        (
            "a wildcard",
            web(json!({"redirect_uris": ["https://*.example.com/cb"]})),
            &["redirect_uris[0]"],
        ),
        (
            "user information",
            web(json!({"redirect_uris": ["https://user:pw@app.example.com/cb"]})),
            &["redirect_uris[0]"],
        ),
        (
            "javascript:",
            web(json!({"redirect_uris": ["javascript:alert(1)"]})),
            &["redirect_uris[0]"],
        ),
        (
            "a relative URI",
            web(json!({"redirect_uris": ["/callback"]})),
            &["redirect_uris[0]"],
        ),
        (
            "authorization_code without redirect URIs",
            json!({"name": "app", "grant_types": ["authorization_code"]}),
            &["redirect_uris"],
        ),
        (
            "an unknown grant type",
            m2m(json!({"grant_types": ["client_credentials", "password"]})),
            &["grant_types[1]"],
        ),
        (
            "an unknown grant type after a repeated one",
            m2m(json!({"grant_types": ["client_credentials", "client_credentials", "password"]})),
            &["grant_types[2]"],
        ),
        (
            "no grant type",
            m2m(json!({"grant_types": []})),
            &["grant_types"],
        ),
        (
            "refresh_token without authorization_code",
            m2m(json!({"grant_types": ["client_credentials", "refresh_token"]})),
            &["grant_types"],
        ),
        (
            "public with client_credentials",
            m2m(json!({"public": true})),
            &["grant_types"],
        ),
        (
            "public without PKCE",
            web(json!({"public": true, "require_pkce": false})),
            &["require_pkce"],
        ),
        (
            "public with client_secret_basic",
            web(json!({"public": true, "token_endpoint_auth_method": "client_secret_basic"})),
            &["token_endpoint_auth_method"],
        ),
        (
            "confidential with none",
            web(json!({"token_endpoint_auth_method": "none"})),
            &["token_endpoint_auth_method"],
        ),
        (
            "an unknown auth method",
            web(json!({"token_endpoint_auth_method": "tls_client_auth"})),
            &["token_endpoint_auth_method"],
        ),
        (
            "private_key_jwt without jwks",
            m2m(json!({"token_endpoint_auth_method": "private_key_jwt"})),
            &["jwks"],
        ),
        (
            "jwks that is not {keys: [...]}",
            m2m(json!({"jwks": [ec]})),
            &["jwks"],
        ),
        (
            "jwks with no key",
            m2m(json!({"jwks": {"keys": []}})),
            &["jwks.keys"],
        ),
        (
            "a private key in jwks",
            m2m(json!({"jwks": {"keys": [ec, private]}})),
            &["jwks.keys[1]"],
        ),
        (
            "a key without kid",
            m2m(json!({"jwks": {"keys": [no_kid]}})),
            &["jwks.keys[0].kid"],
        ),
        (
            "two keys with one kid",
            m2m(json!({"jwks": {"keys": [twin_a, twin_b]}})),
            &["jwks.keys[1].kid"],
        ),
        (
            "a symmetric key in jwks",
            m2m(json!({"jwks": {"keys": [oct]}})),
            &["jwks.keys[0]"],
        ),
        (
            "jwt_auth ES256 with only an Ed25519 key",
            m2m(json!({"jwks": {"keys": [ed]}, "jwt_auth": {"alg": "ES256"}})),
            &["jwt_auth.alg"],
        ),
        (
            "jwt_auth RS256 without jwks",
            m2m(json!({"jwt_auth": {"alg": "RS256"}})),
            &["jwt_auth.alg"],
        ),
        (
            "jwt_auth none",
            m2m(json!({"jwt_auth": {"alg": "none"}})),
            &["jwt_auth.alg"],
        ),
        (
            "jwt_auth HS256 on a public client",
            web(json!({"public": true, "jwt_auth": {"alg": "HS256"}})),
            &["jwt_auth.alg"],
        ),
        (
            "a scope outside the catalog",
            m2m(json!({"scopes": ["documents.read", "billing.read"]})),
            &["scopes[1]"],
        ),
        (
            "a scope outside the catalog after a repeated one",
            m2m(json!({"scopes": ["documents.read", "documents.read", "billing.read"]})),
            &["scopes[2]"],
        ),
        (
            "a wildcard matching nothing in the catalog",
            m2m(json!({"scopes": ["billing.*"]})),
            &["scopes[0]"],
        ),
        ("an empty name", m2m(json!({"name": " "})), &["name"]),
        (
            "several mistakes at once",
            json!({"name": "", "public": true, "redirect_uris": ["http://evil.example/cb"],
                   "grant_types": ["authorization_code", "implicit"]}),
            &["name", "redirect_uris[0]", "grant_types[1]"],
        ),
        (
            "a missing name",
            json!({"grant_types": ["client_credentials"]}),
            &["name"],
        ),
        (
            "a wrong type",
            m2m(json!({"redirect_uris": "https://app.example.com/cb"})),
            &["redirect_uris"],
        ),
    ];
    for (what, body, expected) in cases {
        let r = s.post(&path, body.clone()).await;
        assert_eq!(r.status, 422, "{what}: {}", r.text);
        assert_eq!(fields(&r), expected, "{what}: {body}");
    }
    // An unknown member is refused too (it may be a misspelt setting).
    s.post(&path, m2m(json!({"secret": "mine"})))
        .await
        .problem(422, "VALIDATION_FAILED");
    // Nothing was registered.
    let list = s.get(&format!("/v1/orgs/{org}/clients")).await.json();
    assert_eq!(list["data"], json!([]), "{list}");
    // The same settings within the catalog pass.
    client(
        &s,
        &org,
        m2m(json!({"scopes": ["documents.read", "documents.*"]})),
    )
    .await;
}
both!(every_refusal_names_its_field, CATALOG);

async fn list_get_patch_rotate_delete(s: TestServer) {
    let org = s.org().await;
    let other = s.org().await;
    client(&s, &other, json!({"name": "not mine"})).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        tick().await;
        ids.push(id(&client(&s, &org, json!({"name": format!("c{i}")})).await));
    }
    // Pages of two, newest first, each once, only this org's.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/orgs/{org}/clients?limit=2&cursor={c}"),
            None => format!("/v1/orgs/{org}/clients?limit=2"),
        };
        let page = s.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let page = page.json();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        pages += 1;
        for c in data {
            assert_eq!(c["org_id"], org.as_str());
            seen.push(id(c));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);
    s.get(&format!("/v1/orgs/{org}/clients?limit=0"))
        .await
        .problem(422, "VALIDATION_FAILED");
    s.get(&format!("/v1/orgs/{org}/clients?limit=201"))
        .await
        .problem(422, "VALIDATION_FAILED");
    s.get(&format!("/v1/orgs/{org}/clients?cursor=garbage"))
        .await
        .problem(422, "VALIDATION_FAILED");

    // Patch: name and redirect URIs.
    let ec = jwk(SigningAlg::ES256);
    let c = client(
        &s,
        &org,
        json!({"name": "web", "redirect_uris": [CB], "jwks": {"keys": [ec]}}),
    )
    .await;
    let cid = id(&c);
    let secret = c["client_secret"].as_str().unwrap().to_owned();
    tick().await;
    let r = s
        .patch(
            &format!("/v1/clients/{cid}"),
            json!({"name": "Web 2", "redirect_uris": [CB, "https://app.example.com/cb2"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let p = r.json();
    assert_eq!(p["name"], "Web 2");
    assert_eq!(
        p["redirect_uris"],
        json!([CB, "https://app.example.com/cb2"])
    );
    assert_eq!(p["grant_types"], c["grant_types"], "untouched");
    assert_eq!(p["jwks"], c["jwks"], "untouched");
    assert_eq!(p["created_at"], c["created_at"]);
    assert_ne!(p["updated_at"], c["updated_at"]);
    assert!(p.get("client_secret").is_none());
    assert_eq!(s.get(&format!("/v1/clients/{cid}")).await.json(), p);

    // jwt_auth set (it needs a matching key), then null.
    let p = s
        .patch(
            &format!("/v1/clients/{cid}"),
            json!({"jwt_auth": {"alg": "ES256"}}),
        )
        .await
        .json();
    assert_eq!(p["jwt_auth"], json!({"alg": "ES256"}));
    // Removing the key it needs is refused while jwt_auth uses it.
    let r = s
        .patch(&format!("/v1/clients/{cid}"), json!({"jwks": null}))
        .await;
    assert_eq!(fields(&r), ["jwt_auth.alg"]);
    let p = s
        .patch(&format!("/v1/clients/{cid}"), json!({"jwt_auth": null}))
        .await
        .json();
    assert_eq!(p["jwt_auth"], Value::Null);
    assert_eq!(p["jwks"], json!({"keys": [ec]}));
    let p = s
        .patch(&format!("/v1/clients/{cid}"), json!({"jwks": null}))
        .await
        .json();
    assert_eq!(p["jwks"], Value::Null);
    // Both in one patch.
    let p = s
        .patch(
            &format!("/v1/clients/{cid}"),
            json!({"jwks": {"keys": [ec]}, "jwt_auth": {"alg": "ES256"},
                   "token_endpoint_auth_method": "private_key_jwt"}),
        )
        .await
        .json();
    assert_eq!(p["jwt_auth"], json!({"alg": "ES256"}));
    assert_eq!(p["token_endpoint_auth_method"], "private_key_jwt");

    // A patch that would make the settings invalid changes nothing.
    let before = s.get(&format!("/v1/clients/{cid}")).await.json();
    for (body, expected) in [
        (
            json!({"name": "renamed", "redirect_uris": []}),
            &["redirect_uris"][..],
        ),
        (
            json!({"name": "renamed", "redirect_uris": ["http://app.example.com/cb"]}),
            &["redirect_uris[0]"],
        ),
        (
            json!({"name": "renamed", "token_endpoint_auth_method": "none"}),
            &["token_endpoint_auth_method"],
        ),
        (
            json!({"name": "renamed", "jwks": null}),
            &["jwks", "jwt_auth.alg"],
        ),
        (json!({"name": ""}), &["name"]),
        (
            json!({"name": "renamed", "grant_types": ["refresh_token"]}),
            &["grant_types"],
        ),
        (json!({"jwt_auth": {"alg": "RS256"}}), &["jwt_auth.alg"]),
    ] {
        let r = s.patch(&format!("/v1/clients/{cid}"), body.clone()).await;
        assert_eq!(fields(&r), expected, "{body}");
    }
    // `public` is fixed at registration.
    s.patch(&format!("/v1/clients/{cid}"), json!({"public": true}))
        .await
        .problem(422, "VALIDATION_FAILED");
    assert_eq!(s.get(&format!("/v1/clients/{cid}")).await.json(), before);

    // Rotate the secret: a new one, once, and the time of it.
    tick().await;
    let r = s
        .post(&format!("/v1/clients/{cid}/rotate-secret"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let rotated = r.json();
    let new_secret = rotated["client_secret"].as_str().unwrap().to_owned();
    s.remember(&new_secret);
    assert!(latchkey_core::keyfmt::check(&new_secret, "lk_cs_").is_ok());
    assert_ne!(new_secret, secret);
    assert_eq!(rotated["client_id"], cid.as_str());
    assert_eq!(rotated["id"], cid.as_str());
    let at = rotated["secret_rotated_at"].as_str().unwrap();
    assert!(at.ends_with('Z'));
    assert_eq!(rotated["updated_at"], at);
    let got = s.get(&format!("/v1/clients/{cid}")).await.json();
    assert_eq!(got["secret_rotated_at"], at);
    assert!(got.get("client_secret").is_none());
    // A public client has no secret to rotate.
    let public = client(
        &s,
        &org,
        json!({"name": "spa", "public": true, "redirect_uris": [CB]}),
    )
    .await;
    s.post(
        &format!("/v1/clients/{}/rotate-secret", id(&public)),
        json!({}),
    )
    .await
    .problem(409, "CONFLICT");
    // Nor can a public client be given a confidential method.
    let r = s
        .patch(
            &format!("/v1/clients/{}", id(&public)),
            json!({"token_endpoint_auth_method": "client_secret_basic"}),
        )
        .await;
    assert_eq!(fields(&r), ["token_endpoint_auth_method"]);

    // Consents: none given yet; revoking one that is not there is a 404.
    let r = s.get(&format!("/v1/clients/{cid}/consents")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json(), json!({"data": [], "next_cursor": null}));
    s.delete(&format!("/v1/clients/{cid}/consents/{NO_USER}"))
        .await
        .problem(404, "NOT_FOUND");
    s.delete(&format!("/v1/clients/{cid}/consents/nonsense"))
        .await
        .problem(404, "NOT_FOUND");

    // Delete: 204, then gone everywhere.
    let d = s.delete(&format!("/v1/clients/{cid}")).await;
    assert_eq!(d.status, 204, "{}", d.text);
    assert!(d.text.is_empty());
    s.get(&format!("/v1/clients/{cid}"))
        .await
        .problem(404, "NOT_FOUND");
    s.delete(&format!("/v1/clients/{cid}"))
        .await
        .problem(404, "NOT_FOUND");
    s.patch(&format!("/v1/clients/{cid}"), json!({"name": "x"}))
        .await
        .problem(404, "NOT_FOUND");
    s.post(&format!("/v1/clients/{cid}/rotate-secret"), json!({}))
        .await
        .problem(404, "NOT_FOUND");
    s.get(&format!("/v1/clients/{cid}/consents"))
        .await
        .problem(404, "NOT_FOUND");
    let list = s.get(&format!("/v1/orgs/{org}/clients")).await.json();
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != cid.as_str())
    );

    // Malformed and unknown ids, unknown orgs: 404.
    for bad in [
        "nonsense",
        "key_0000000000000000000000",
        "cli_short",
        NO_CLIENT,
    ] {
        s.get(&format!("/v1/clients/{bad}"))
            .await
            .problem(404, "NOT_FOUND");
        s.patch(&format!("/v1/clients/{bad}"), json!({"name": "x"}))
            .await
            .problem(404, "NOT_FOUND");
        s.delete(&format!("/v1/clients/{bad}"))
            .await
            .problem(404, "NOT_FOUND");
        s.post(&format!("/v1/clients/{bad}/rotate-secret"), json!({}))
            .await
            .problem(404, "NOT_FOUND");
    }
    for bad in ["nonsense", NO_ORG] {
        s.get(&format!("/v1/orgs/{bad}/clients"))
            .await
            .problem(404, "NOT_FOUND");
        s.post(&format!("/v1/orgs/{bad}/clients"), json!({"name": "x"}))
            .await
            .problem(404, "NOT_FOUND");
    }
}
both!(list_get_patch_rotate_delete);

/// A root key with these scopes (the harness remembers it).
async fn root_key(s: &TestServer, scopes: Value) -> String {
    let r = s
        .post(
            "/v1/root-keys",
            json!({"name": "limited", "scopes": scopes}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["key"].as_str().unwrap().to_owned()
}

async fn management_scopes_are_enforced(s: TestServer) {
    let org = s.org().await;
    let c = client(&s, &org, json!({"name": "svc"})).await;
    let cid = id(&c);
    let u = s
        .post(
            &format!("/v1/orgs/{org}/users"),
            json!({"email": "ada@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(u.status, 201, "{}", u.text);
    s.remember("correct horse battery");
    let uid = id(&u.json());
    let keys_only = root_key(&s, json!(["keys.*"])).await;
    let calls: Vec<(&str, String, Option<Value>, &str)> = vec![
        (
            "POST",
            format!("/v1/orgs/{org}/clients"),
            Some(json!({"name": "x"})),
            "clients.create",
        ),
        (
            "GET",
            format!("/v1/orgs/{org}/clients"),
            None,
            "clients.read",
        ),
        ("GET", format!("/v1/clients/{cid}"), None, "clients.read"),
        (
            "PATCH",
            format!("/v1/clients/{cid}"),
            Some(json!({"name": "taken over"})),
            "clients.update",
        ),
        (
            "DELETE",
            format!("/v1/clients/{cid}"),
            None,
            "clients.delete",
        ),
        (
            "POST",
            format!("/v1/clients/{cid}/rotate-secret"),
            None,
            "clients.update",
        ),
        (
            "GET",
            format!("/v1/clients/{cid}/consents"),
            None,
            "clients.read",
        ),
        (
            "DELETE",
            format!("/v1/clients/{cid}/consents/{uid}"),
            None,
            "clients.update",
        ),
        (
            "POST",
            format!("/v1/orgs/{org}/users"),
            Some(json!({"email": "eve@example.com", "password": "0123456789abcdef"})),
            "users.create",
        ),
        ("GET", format!("/v1/orgs/{org}/users"), None, "users.read"),
        ("GET", format!("/v1/users/{uid}"), None, "users.read"),
        ("DELETE", format!("/v1/users/{uid}"), None, "users.delete"),
    ];
    let call = |key: &str, method: &str, path: &str, body: &Option<Value>| {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = s.http.request(m, s.at(path)).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(b);
        }
        req
    };
    for (method, path, body, scope) in &calls {
        let r = s.send(call(&keys_only, method, path, body)).await;
        let p = r.problem(403, "INSUFFICIENT_SCOPE");
        assert_eq!(p["required_scopes"], json!([scope]), "{method} {path}");
        assert_eq!(
            r.header("www-authenticate").unwrap(),
            format!(r#"Bearer realm="latchkey", error="insufficient_scope", scope="{scope}""#),
            "{method} {path}"
        );
    }
    // Nothing was done.
    let got = s.get(&format!("/v1/clients/{cid}")).await.json();
    assert_eq!(got["name"], "svc");
    assert_eq!(got["secret_rotated_at"], Value::Null);
    assert_eq!(s.get(&format!("/v1/users/{uid}")).await.status, 200);
    let users = s.get(&format!("/v1/orgs/{org}/users")).await.json();
    assert_eq!(users["data"].as_array().unwrap().len(), 1);

    // Read-only keys read and nothing else; `users.*` does not reach clients.
    let reader = root_key(&s, json!(["clients.read", "users.read"])).await;
    for (method, path, body, scope) in &calls {
        let r = s.send(call(&reader, method, path, body)).await;
        if scope.ends_with(".read") {
            assert_eq!(r.status, 200, "{method} {path}: {}", r.text);
        } else {
            r.problem(403, "INSUFFICIENT_SCOPE");
        }
    }
    let users_admin = root_key(&s, json!(["users.*"])).await;
    let r = s
        .send(call(
            &users_admin,
            "GET",
            &format!("/v1/users/{uid}"),
            &None,
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.send(call(
        &users_admin,
        "GET",
        &format!("/v1/clients/{cid}"),
        &None,
    ))
    .await
    .problem(403, "INSUFFICIENT_SCOPE");
    // And `clients.*` does all of the clients' calls.
    let clients_admin = root_key(&s, json!(["clients.*"])).await;
    let r = s
        .send(call(
            &clients_admin,
            "POST",
            &format!("/v1/clients/{cid}/rotate-secret"),
            &None,
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.remember(r.json()["client_secret"].as_str().unwrap());
    let r = s
        .send(call(
            &clients_admin,
            "DELETE",
            &format!("/v1/clients/{cid}"),
            &None,
        ))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
}
both!(management_scopes_are_enforced);

/// No trace of a password hash in `text`.
fn no_hash(text: &str) {
    assert!(!text.contains("argon2"), "a password hash: {text}");
    assert!(!text.contains("password"), "a password member: {text}");
}

async fn users(s: TestServer) {
    let org = s.org().await;
    let other = s.org().await;
    let path = format!("/v1/orgs/{org}/users");
    let pw = "Tr0ub4dor&3-but-longer";
    let r = s
        .post(
            &path,
            json!({"email": "  Ada@Example.COM ", "password": pw}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    s.remember(pw);
    no_hash(&r.text);
    let ada = r.json();
    let ada_id = id(&ada);
    assert!(ada_id.starts_with("usr_"), "{ada_id}");
    assert_eq!(ada["email"], "ada@example.com");
    assert_eq!(ada["role"], "member");
    assert_eq!(ada["org_id"], org.as_str());
    assert!(ada["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        ada.as_object().unwrap().len(),
        5,
        "id, org_id, email, role, created_at: {ada}"
    );

    // One account per address in an organization, whatever its case.
    for email in ["ada@example.com", "ADA@EXAMPLE.COM", " ada@example.com"] {
        s.post(
            &path,
            json!({"email": email, "password": "another password"}),
        )
        .await
        .problem(409, "CONFLICT");
    }
    s.remember("another password");
    // The same address in another organization is another account.
    let r = s
        .post(
            &format!("/v1/orgs/{other}/users"),
            json!({"email": "ada@example.com", "password": "a third password", "role": "admin"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    s.remember("a third password");
    assert_eq!(r.json()["role"], "admin");
    assert_ne!(id(&r.json()), ada_id);

    // Refusals name their fields.
    for (body, expected) in [
        (
            json!({"email": "ada", "password": "long enough"}),
            &["email"][..],
        ),
        (
            json!({"email": "ada@example", "password": "long enough"}),
            &["email"],
        ),
        (
            json!({"email": "b@example.com", "password": "short"}),
            &["password"],
        ),
        (
            json!({"email": "b@example.com", "password": "long enough", "role": "owner"}),
            &["role"],
        ),
        (
            json!({"email": "nope", "password": "", "role": "root"}),
            &["email", "password", "role"],
        ),
        (json!({"email": "b@example.com"}), &["password"]),
        (json!({"password": "long enough"}), &["email"]),
        (
            json!({"email": "b@example.com", "password": "long enough", "name": "B"}),
            &["name"],
        ),
    ] {
        let r = s.post(&path, body.clone()).await;
        let got = fields(&r);
        // serde names an unknown member at the body; the rest exactly.
        if body.get("name").is_some() {
            assert_eq!(got.len(), 1, "{body}: {got:?}");
        } else {
            assert_eq!(got, expected, "{body}");
        }
    }

    // Admins and members; pages of two, newest first, only this org's.
    let mut ids = vec![ada_id.clone()];
    for (i, role) in ["admin", "member", "admin"].iter().enumerate() {
        tick().await;
        let pw = format!("password number {i}");
        let r = s
            .post(
                &path,
                json!({"email": format!("user{i}@example.com"), "password": pw, "role": role}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        s.remember(&pw);
        assert_eq!(r.json()["role"], *role);
        ids.push(id(&r.json()));
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let p = match &cursor {
            Some(c) => format!("{path}?limit=2&cursor={c}"),
            None => format!("{path}?limit=2"),
        };
        let r = s.get(&p).await;
        assert_eq!(r.status, 200, "{}", r.text);
        no_hash(&r.text);
        let page = r.json();
        for u in page["data"].as_array().unwrap() {
            assert_eq!(u["org_id"], org.as_str());
            seen.push(id(u));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);

    // Get, delete, gone; the address is free again.
    let r = s.get(&format!("/v1/users/{ada_id}")).await;
    assert_eq!(r.status, 200);
    no_hash(&r.text);
    assert_eq!(r.json(), ada);
    let d = s.delete(&format!("/v1/users/{ada_id}")).await;
    assert_eq!(d.status, 204, "{}", d.text);
    assert!(d.text.is_empty());
    s.get(&format!("/v1/users/{ada_id}"))
        .await
        .problem(404, "NOT_FOUND");
    s.delete(&format!("/v1/users/{ada_id}"))
        .await
        .problem(404, "NOT_FOUND");
    let r = s
        .post(
            &path,
            json!({"email": "ada@example.com", "password": "her new password"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    s.remember("her new password");
    assert_ne!(id(&r.json()), ada_id);

    for bad in ["nonsense", "cli_0000000000000000000000", NO_USER] {
        s.get(&format!("/v1/users/{bad}"))
            .await
            .problem(404, "NOT_FOUND");
        s.delete(&format!("/v1/users/{bad}"))
            .await
            .problem(404, "NOT_FOUND");
    }
    for bad in ["nonsense", NO_ORG] {
        s.get(&format!("/v1/orgs/{bad}/users"))
            .await
            .problem(404, "NOT_FOUND");
        s.post(
            &format!("/v1/orgs/{bad}/users"),
            json!({"email": "x@example.com", "password": "long enough"}),
        )
        .await
        .problem(404, "NOT_FOUND");
    }
    // Neither passwords (remembered above) nor their hashes in the log.
    assert!(!s.log().contains("$argon2"), "a password hash in the log");
}
both!(users);

/// Polls the org's log until it holds every `(action, target)` pair of
/// `wanted`, and answers its action entries.
async fn actions_until(s: &TestServer, org: &str, wanted: &[(&str, &str)]) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let r = s.get(&format!("/v1/orgs/{org}/logs?limit=200")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let entries: Vec<Value> = r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "action")
            .cloned()
            .collect();
        let has = |a: &str, t: &str| entries.iter().any(|e| e["action"] == a && e["target"] == t);
        if wanted.iter().all(|(a, t)| has(a, t)) {
            return entries;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{wanted:?} not all in {entries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn management_actions_are_logged(s: TestServer) {
    let roots = s.get("/v1/root-keys").await.json();
    let root_id = id(&roots["data"][0]);
    let org = s.org().await;
    tick().await;
    let c = client(&s, &org, json!({"name": "svc"})).await;
    let cid = id(&c);
    tick().await;
    s.patch(&format!("/v1/clients/{cid}"), json!({"name": "svc2"}))
        .await;
    tick().await;
    let r = s
        .post(&format!("/v1/clients/{cid}/rotate-secret"), json!({}))
        .await;
    assert_eq!(r.status, 200);
    let rotate_request = r.header("x-request-id").unwrap();
    s.remember(r.json()["client_secret"].as_str().unwrap());
    tick().await;
    assert_eq!(s.delete(&format!("/v1/clients/{cid}")).await.status, 204);
    tick().await;
    let pw = "a password for the log test";
    let u = s
        .post(
            &format!("/v1/orgs/{org}/users"),
            json!({"email": "log@example.com", "password": pw}),
        )
        .await;
    s.remember(pw);
    let uid = id(&u.json());
    tick().await;
    assert_eq!(s.delete(&format!("/v1/users/{uid}")).await.status, 204);
    let wanted = [
        ("client.created", cid.as_str()),
        ("client.updated", cid.as_str()),
        ("client.secret_rotated", cid.as_str()),
        ("client.deleted", cid.as_str()),
        ("user.created", uid.as_str()),
        ("user.deleted", uid.as_str()),
    ];
    let entries = actions_until(&s, &org, &wanted).await;
    for e in &entries {
        assert_eq!(e["actor"], root_id.as_str(), "{e}");
        assert!(e["request_id"].as_str().unwrap().starts_with("req_"));
    }
    let rotated = entries
        .iter()
        .find(|e| e["action"] == "client.secret_rotated")
        .unwrap();
    assert_eq!(rotated["request_id"], rotate_request.as_str());
    // Newest first: the actions in the reverse order of their making.
    let order: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .filter(|a| *a != "org.created")
        .collect();
    assert_eq!(
        order,
        [
            "user.deleted",
            "user.created",
            "client.deleted",
            "client.secret_rotated",
            "client.updated",
            "client.created"
        ]
    );
    // Another organization's log does not show them.
    let other = s.org().await;
    let r = s.get(&format!("/v1/orgs/{other}/logs?limit=200")).await;
    assert!(
        !r.text.contains(&cid) && !r.text.contains(&uid),
        "{}",
        r.text
    );
}
both!(management_actions_are_logged);
