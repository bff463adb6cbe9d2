//! The OAuth 2.0 token endpoint and its companions end to end, on SQLite
//! and PostgreSQL (SPEC §3, §8): client authentication, client_credentials,
//! RFC 9068 access tokens, introspection (RFC 7662), revocation (RFC 7009),
//! RFC 8414 metadata and private_key_jwt (RFC 7523); then real client
//! libraries (Python's Authlib with joserfc, Node's openid-client with
//! jose) driven against the real server. Every refusal is in RFC 6749's
//! own error format, never a 5xx, and no secret reaches the server log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{Backend, PUBLIC_URL, Resp, TestServer, clients_dir, now, runs, tool_or_skip};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};

const FORM: &str = "application/x-www-form-urlencoded";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const READ_WRITE: &str = "documents.read documents.write";

// ------------------------------------------------------------ helpers

/// Registers a client; answers its id and secret (remembered: it must
/// never appear in the log).
async fn register(s: &TestServer, org: &str, body: Value) -> (String, Option<String>) {
    let r = s.post(&format!("/v1/orgs/{org}/clients"), body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v = r.json();
    let secret = v["client_secret"].as_str().map(str::to_owned);
    if let Some(secret) = &secret {
        assert!(secret.starts_with("lk_cs_"), "{secret}");
        s.remember(secret);
    }
    (v["client_id"].as_str().unwrap().to_owned(), secret)
}

/// A confidential client_credentials client with `documents.read` and
/// `documents.write`, authenticating by `method`.
async fn service_client(s: &TestServer, org: &str, method: &str) -> (String, String) {
    let (id, secret) = register(
        s,
        org,
        json!({"name": format!("svc {method}"), "grant_types": ["client_credentials"],
               "scopes": ["documents.read", "documents.write"],
               "token_endpoint_auth_method": method}),
    )
    .await;
    (id, secret.unwrap())
}

fn encode(params: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

/// POSTs a form to `path`, with HTTP Basic when `basic` is given.
async fn form(
    s: &TestServer,
    path: &str,
    basic: Option<(&str, &str)>,
    params: &[(&str, &str)],
) -> Resp {
    let mut req = s
        .http
        .post(s.at(path))
        .header(CONTENT_TYPE, FORM)
        .body(encode(params));
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    s.send(req).await
}

/// Asserts a successful token answer of `scope` and answers the token
/// (remembered).
fn issued(s: &TestServer, r: &Resp, scope: &str) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    let v = r.json();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["access_token", "expires_in", "scope", "token_type"],
        "{}",
        r.text
    );
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    assert_eq!(v["scope"], scope);
    let token = v["access_token"].as_str().unwrap().to_owned();
    s.remember(&token);
    token
}

/// Asserts an RFC 6749 §5.2 error: this status and `error`, a
/// description, nothing else, not problem+json, not cached.
fn oauth_error(r: &Resp, status: u16, error: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json"),
        "{}",
        r.text
    );
    let v = r.json();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 2, "only error and error_description: {}", r.text);
    assert_eq!(v["error"], error, "{}", r.text);
    assert!(
        v["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty() && d.len() < 300),
        "{}",
        r.text
    );
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert!(r.header("x-request-id").is_some());
    v
}

/// A 401 `invalid_client`.
fn invalid_client(r: &Resp) {
    oauth_error(r, 401, "invalid_client");
    // Always a Basic challenge: the scheme these endpoints take
    // (RFC 6749 §5.2), whichever method the client tried.
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert_eq!(challenge, "Basic realm=\"latchkey\"");
}

/// The header and claims of a compact JWS, decoded (not verified).
fn jwt_parts(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWS: {token}");
    let decode =
        |p: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap() };
    (decode(parts[0]), decode(parts[1]))
}

async fn jwks(s: &TestServer) -> Value {
    let r = s.send(s.http.get(s.at("/.well-known/jwks.json"))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

/// Verifies an access token's signature with the key its `kid` names in
/// the JWKS (jsonwebtoken, the key's own alg), and its iss and aud.
async fn verify_signature(s: &TestServer, token: &str, alg: Algorithm) -> Value {
    let (header, _) = jwt_parts(token);
    let set = jwks(s).await;
    let jwk = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap_or_else(|| panic!("kid {} is not in the JWKS: {set}", header["kid"]));
    assert_eq!(jwk["alg"], header["alg"], "{jwk}");
    assert_eq!(jwk["use"], "sig", "{jwk}");
    for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        assert!(jwk.get(private).is_none(), "the JWKS publishes {private}");
    }
    let jwk: Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let key = DecodingKey::from_jwk(&jwk).unwrap();
    let mut v = Validation::new(alg);
    v.set_issuer(&[PUBLIC_URL]);
    v.set_audience(&[PUBLIC_URL]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub", "jti"]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .unwrap_or_else(|e| panic!("the access token does not verify: {e}"))
        .claims
}

/// Introspects `token` as the client (`id`, `secret`) by HTTP Basic.
async fn introspect(s: &TestServer, id: &str, secret: &str, token: &str) -> Value {
    let r = form(
        s,
        "/oauth/introspect",
        Some((id, secret)),
        &[("token", token)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    r.json()
}

/// POSTs a form of `size` bytes over a raw socket, and reads the answer.
/// The server answers a body over its limit before reading all of it and
/// then closes; an HTTP client that stops at the first failed write (as
/// reqwest does) would miss the answer, so the writing goes on in a task
/// of its own, its errors ignored, while the answer is read.
async fn post_huge_form(s: &TestServer, path: &str, size: usize) -> Resp {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.url.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {FORM}\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        let mut body = b"grant_type=client_credentials&x=".to_vec();
        body.resize(size, b'a');
        if wr.write_all(head.as_bytes()).await.is_ok() {
            let _ = wr.write_all(&body).await;
        }
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let read = async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("no answer to a huge body");
    writer.abort();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    let mut headers = reqwest::header::HeaderMap::new();
    for line in lines {
        let (k, v) = line.split_once(':').unwrap();
        headers.append(
            reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
            v.trim().parse().unwrap(),
        );
    }
    Resp {
        status,
        headers,
        text: body.to_owned(),
    }
}

// ------------------------------------------------------------ client_credentials

async fn client_credentials(s: TestServer) {
    let org = s.org().await;
    let (basic_id, basic_secret) = service_client(&s, &org, "client_secret_basic").await;
    let (post_id, post_secret) = service_client(&s, &org, "client_secret_post").await;

    // client_secret_basic, no scope asked: all the client's scopes.
    let r = form(
        &s,
        "/oauth/token",
        Some((&basic_id, &basic_secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    let t = issued(&s, &r, READ_WRITE);
    assert_eq!(r.header("pragma").as_deref(), Some("no-cache"));
    assert_eq!(jwt_parts(&t).1["scope"], READ_WRITE);

    // client_secret_post, narrowed to one scope.
    let r = form(
        &s,
        "/oauth/token",
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &post_id),
            ("client_secret", &post_secret),
            ("scope", "documents.read"),
        ],
    )
    .await;
    let t = issued(&s, &r, "documents.read");
    let (_, claims) = jwt_parts(&t);
    assert_eq!(claims["scope"], "documents.read");
    assert_eq!(claims["client_id"], post_id.as_str());

    // Both asked explicitly, repeated, in another order.
    let r = form(
        &s,
        "/oauth/token",
        Some((&basic_id, &basic_secret)),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "documents.write documents.read documents.write"),
        ],
    )
    .await;
    issued(&s, &r, "documents.write documents.read");

    // A scope outside the client's: refused, not silently dropped.
    for scope in [
        "admin",
        "documents.read admin",
        "documents.*",
        "*",
        "documents",
    ] {
        let r = form(
            &s,
            "/oauth/token",
            Some((&basic_id, &basic_secret)),
            &[("grant_type", "client_credentials"), ("scope", scope)],
        )
        .await;
        oauth_error(&r, 400, "invalid_scope");
    }
    // Not a list of scope tokens (RFC 6749 §3.3: no `"` or `\`).
    let r = form(
        &s,
        "/oauth/token",
        Some((&basic_id, &basic_secret)),
        &[("grant_type", "client_credentials"), ("scope", "a\"b")],
    )
    .await;
    oauth_error(&r, 400, "invalid_scope");

    // A client granted a wildcard is issued what it matches.
    let (wild_id, wild_secret) = register(
        &s,
        &org,
        json!({"name": "wild", "grant_types": ["client_credentials"], "scopes": ["documents.*"]}),
    )
    .await;
    let wild_secret = wild_secret.unwrap();
    let r = form(
        &s,
        "/oauth/token",
        Some((&wild_id, &wild_secret)),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "documents.read documents.x.y"),
        ],
    )
    .await;
    issued(&s, &r, "documents.read documents.x.y");
    let r = form(
        &s,
        "/oauth/token",
        Some((&wild_id, &wild_secret)),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "billing.read"),
        ],
    )
    .await;
    oauth_error(&r, 400, "invalid_scope");
}
both!(client_credentials);

// ------------------------------------------------------------ the JWT

async fn access_token_jwt(s: TestServer) {
    let org = s.org().await;
    let (id, secret) = service_client(&s, &org, "client_secret_basic").await;
    let before = now();
    let r = form(
        &s,
        "/oauth/token",
        Some((&id, &secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    let token = issued(&s, &r, READ_WRITE);
    let (header, claims) = jwt_parts(&token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");
    assert!(header["kid"].as_str().is_some_and(|k| !k.is_empty()));
    let verified = verify_signature(&s, &token, Algorithm::EdDSA).await;
    assert_eq!(verified, claims);
    assert_eq!(claims["iss"], PUBLIC_URL);
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["aud"], PUBLIC_URL);
    assert_eq!(claims["client_id"], id.as_str());
    assert_eq!(claims["org_id"], org.as_str());
    assert_eq!(claims["scope"], READ_WRITE);
    let iat = claims["iat"].as_i64().unwrap();
    assert!((before - 2..=now() + 2).contains(&iat), "iat {iat}");
    assert_eq!(claims["exp"].as_i64().unwrap() - iat, 3600);
    let jti = claims["jti"].as_str().unwrap();
    assert!(!jti.is_empty());

    // Another token: another jti, the same key.
    let r = form(
        &s,
        "/oauth/token",
        Some((&id, &secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    let (header2, claims2) = jwt_parts(&issued(&s, &r, READ_WRITE));
    assert_ne!(claims2["jti"], claims["jti"]);
    assert_eq!(header2["kid"], header["kid"]);

    // The JWKS: one Ed25519 key, cacheable briefly.
    let r = s.send(s.http.get(s.at("/.well-known/jwks.json"))).await;
    assert!(
        r.header("cache-control")
            .is_some_and(|c| c.contains("max-age")),
        "{:?}",
        r.headers
    );
    let set = r.json();
    let keys = set["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{set}");
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["kid"], header["kid"]);

    // A tampered token does not verify.
    let mut forged = claims.clone();
    forged["scope"] = json!("admin");
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(forged.to_string()),
        parts[2]
    );
    let jwk: Jwk = serde_json::from_value(keys[0].clone()).unwrap();
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&[PUBLIC_URL]);
    assert!(
        jsonwebtoken::decode::<Value>(&tampered, &DecodingKey::from_jwk(&jwk).unwrap(), &v)
            .is_err()
    );

    // The same key survives a restart (it is stored, sealed).
    let mut s = s;
    s.restart();
    let r = form(
        &s,
        "/oauth/token",
        Some((&id, &secret)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    let (header3, _) = jwt_parts(&issued(&s, &r, READ_WRITE));
    assert_eq!(header3["kid"], header["kid"]);
    verify_signature(&s, &token, Algorithm::EdDSA).await;
}
both!(access_token_jwt);

/// A fresh server signing with `alg`: its tokens carry that alg, and the
/// JWKS key that verifies them is of the matching kind.
async fn signs_with(s: TestServer, alg: Algorithm, kty: &str, crv: Option<&str>) {
    let org = s.org().await;
    let (id, secret) = service_client(&s, &org, "client_secret_basic").await;
    let r = form(
        &s,
        "/oauth/token",
        Some((&id, &secret)),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "documents.read"),
        ],
    )
    .await;
    let token = issued(&s, &r, "documents.read");
    let (header, claims) = jwt_parts(&token);
    assert_eq!(header["alg"], format!("{alg:?}"));
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(verify_signature(&s, &token, alg).await, claims);
    let set = jwks(&s).await;
    let key = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap();
    assert_eq!(key["kty"], kty);
    if let Some(crv) = crv {
        assert_eq!(key["crv"], crv);
    }
    if kty == "RSA" {
        // 2048 bits at least: a 256-byte modulus.
        let n = URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
        assert!(n.len() >= 256, "{} bytes", n.len());
    }
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
}

async fn signing_alg_es256(s: TestServer) {
    signs_with(s, Algorithm::ES256, "EC", Some("P-256")).await;
}
both!(signing_alg_es256, "[oauth]\nsigning_alg = \"ES256\"\n");

async fn signing_alg_rs256(s: TestServer) {
    signs_with(s, Algorithm::RS256, "RSA", None).await;
}
both!(signing_alg_rs256, "[oauth]\nsigning_alg = \"RS256\"\n");

async fn opaque_tokens(s: TestServer) {
    let org = s.org().await;
    let (id, secret) = service_client(&s, &org, "client_secret_basic").await;
    let (other_id, other_secret) = service_client(&s, &org, "client_secret_basic").await;
    let r = form(
        &s,
        "/oauth/token",
        Some((&id, &secret)),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "documents.read"),
        ],
    )
    .await;
    let token = issued(&s, &r, "documents.read");
    assert!(token.starts_with("lk_at_"), "{token}");
    assert!(!token.contains('.'), "an opaque token is not a JWS");

    let v = introspect(&s, &id, &secret, &token).await;
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["client_id"], id.as_str());
    assert_eq!(v["sub"], id.as_str());
    assert_eq!(v["scope"], "documents.read");
    assert_eq!(v["org_id"], org.as_str());
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["iss"], PUBLIC_URL);
    assert_eq!(v["aud"], PUBLIC_URL);
    assert_eq!(
        v["exp"].as_i64().unwrap() - v["iat"].as_i64().unwrap(),
        3600
    );
    assert!(v["jti"].as_str().is_some_and(|j| !j.is_empty()));

    // Another client sees nothing; a made-up one is inactive.
    let v = introspect(&s, &other_id, &other_secret, &token).await;
    assert_eq!(v, json!({"active": false}));
    let forged = format!("lk_at_{}", "A".repeat(44));
    let v = introspect(&s, &id, &secret, &forged).await;
    assert_eq!(v, json!({"active": false}));

    // Another client's revocation leaves it; the owner's ends it.
    let r = form(
        &s,
        "/oauth/revoke",
        Some((&other_id, &other_secret)),
        &[("token", &token)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(introspect(&s, &id, &secret, &token).await["active"], true);
    let r = form(
        &s,
        "/oauth/revoke",
        Some((&id, &secret)),
        &[("token", &token)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        introspect(&s, &id, &secret, &token).await,
        json!({"active": false})
    );
    // Twice is still 200.
    let r = form(
        &s,
        "/oauth/revoke",
        Some((&id, &secret)),
        &[("token", &token)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // The JWKS is still served (empty of use, but valid).
    let set = jwks(&s).await;
    assert!(set["keys"].is_array());
}
both!(opaque_tokens, "[oauth]\naccess_token_format = \"opaque\"\n");

// ------------------------------------------------------------ refusals

async fn client_authentication_refusals(s: TestServer) {
    let org = s.org().await;
    let (basic_id, basic_secret) = service_client(&s, &org, "client_secret_basic").await;
    let (post_id, post_secret) = service_client(&s, &org, "client_secret_post").await;
    let cc = ("grant_type", "client_credentials");

    // Wrong secret, each way.
    let wrong = format!("lk_cs_{}", "A".repeat(44));
    let r = form(&s, "/oauth/token", Some((&basic_id, &wrong)), &[cc]).await;
    invalid_client(&r);
    let r = form(&s, "/oauth/token", Some((&basic_id, "nonsense")), &[cc]).await;
    invalid_client(&r);
    let r = form(
        &s,
        "/oauth/token",
        None,
        &[cc, ("client_id", &post_id), ("client_secret", &wrong)],
    )
    .await;
    invalid_client(&r);
    // Another client's secret.
    let r = form(&s, "/oauth/token", Some((&basic_id, &post_secret)), &[cc]).await;
    invalid_client(&r);

    // Unknown clients: well-formed and not.
    for unknown in ["cli_0000000000000000000000", "nobody", "cli_"] {
        let r = form(&s, "/oauth/token", Some((unknown, &basic_secret)), &[cc]).await;
        invalid_client(&r);
        let r = form(
            &s,
            "/oauth/token",
            None,
            &[cc, ("client_id", unknown), ("client_secret", &basic_secret)],
        )
        .await;
        invalid_client(&r);
    }

    // Malformed Basic.
    let no_colon = format!("Basic {}", STANDARD.encode(&basic_id));
    let not_utf8 = format!("Basic {}", STANDARD.encode([0xff, 0xfe, b':', b'x']));
    for header in [
        "Basic !!!",
        "Basic",
        "Basic ",
        no_colon.as_str(),
        not_utf8.as_str(),
    ] {
        let r = s
            .send(
                s.http
                    .post(s.at("/oauth/token"))
                    .header(CONTENT_TYPE, FORM)
                    .header(AUTHORIZATION, header)
                    .body(encode(&[cc])),
            )
            .await;
        invalid_client(&r);
    }
    // Another scheme at the token endpoint.
    let r = s
        .send(
            s.http
                .post(s.at("/oauth/token"))
                .header(CONTENT_TYPE, FORM)
                .bearer_auth(&basic_secret)
                .body(encode(&[cc])),
        )
        .await;
    invalid_client(&r);

    // The wrong method for the client: each is registered for one.
    let r = form(&s, "/oauth/token", Some((&post_id, &post_secret)), &[cc]).await;
    invalid_client(&r);
    let r = form(
        &s,
        "/oauth/token",
        None,
        &[
            cc,
            ("client_id", &basic_id),
            ("client_secret", &basic_secret),
        ],
    )
    .await;
    invalid_client(&r);

    // Two methods at once.
    let r = form(
        &s,
        "/oauth/token",
        Some((&basic_id, &basic_secret)),
        &[
            cc,
            ("client_id", &basic_id),
            ("client_secret", &basic_secret),
        ],
    )
    .await;
    oauth_error(&r, 400, "invalid_request");
    let r = form(
        &s,
        "/oauth/token",
        None,
        &[
            cc,
            ("client_id", &post_id),
            ("client_secret", &post_secret),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", "a.b.c"),
        ],
    )
    .await;
    oauth_error(&r, 400, "invalid_request");
    // Basic for one client, client_id of another.
    let r = form(
        &s,
        "/oauth/token",
        Some((&basic_id, &basic_secret)),
        &[cc, ("client_id", &post_id)],
    )
    .await;
    oauth_error(&r, 400, "invalid_request");

    // No authentication at all; a confidential client's id alone.
    let r = form(&s, "/oauth/token", None, &[cc]).await;
    invalid_client(&r);
    let r = form(&s, "/oauth/token", None, &[cc, ("client_id", &basic_id)]).await;
    invalid_client(&r);

    // A public client (no credentials) may not use client_credentials.
    let (public_id, public_secret) = register(
        &s,
        &org,
        json!({"name": "spa", "public": true, "redirect_uris": ["http://127.0.0.1:7777/cb"],
               "scopes": ["documents.read"]}),
    )
    .await;
    assert!(public_secret.is_none());
    let r = form(&s, "/oauth/token", None, &[cc, ("client_id", &public_id)]).await;
    oauth_error(&r, 400, "unauthorized_client");

    // A confidential client registered without the grant.
    let (web_id, web_secret) = register(
        &s,
        &org,
        json!({"name": "web", "redirect_uris": ["https://app.example/cb"],
               "grant_types": ["authorization_code"], "scopes": ["documents.read"]}),
    )
    .await;
    let web_secret = web_secret.unwrap();
    let r = form(&s, "/oauth/token", Some((&web_id, &web_secret)), &[cc]).await;
    oauth_error(&r, 400, "unauthorized_client");

    // A deleted client authenticates no more.
    let r = s.delete(&format!("/v1/clients/{basic_id}")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = form(&s, "/oauth/token", Some((&basic_id, &basic_secret)), &[cc]).await;
    invalid_client(&r);

    // A rotated secret: the old one stops, the new one works.
    let r = s
        .post(&format!("/v1/clients/{post_id}/rotate-secret"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new_secret = r.json()["client_secret"].as_str().unwrap().to_owned();
    s.remember(&new_secret);
    let r = form(
        &s,
        "/oauth/token",
        None,
        &[cc, ("client_id", &post_id), ("client_secret", &post_secret)],
    )
    .await;
    invalid_client(&r);
    let r = form(
        &s,
        "/oauth/token",
        None,
        &[cc, ("client_id", &post_id), ("client_secret", &new_secret)],
    )
    .await;
    issued(&s, &r, READ_WRITE);
}
both!(client_authentication_refusals);

async fn request_refusals(s: TestServer) {
    let org = s.org().await;
    let (id, secret) = service_client(&s, &org, "client_secret_basic").await;
    let basic = Some((id.as_str(), secret.as_str()));

    // grant_type: missing, unknown, not ours.
    let r = form(&s, "/oauth/token", basic, &[("scope", "documents.read")]).await;
    oauth_error(&r, 400, "invalid_request");
    for grant in [
        "password",
        "implicit",
        "urn:ietf:params:oauth:grant-type:device_code",
        "CLIENT_CREDENTIALS",
    ] {
        let r = form(&s, "/oauth/token", basic, &[("grant_type", grant)]).await;
        oauth_error(&r, 400, "unsupported_grant_type");
    }

    // A parameter given twice (RFC 6749 §3.2).
    let r = s
        .send(
            s.http
                .post(s.at("/oauth/token"))
                .basic_auth(&id, Some(&secret))
                .header(CONTENT_TYPE, FORM)
                .body("grant_type=client_credentials&scope=documents.read&scope=documents.write"),
        )
        .await;
    oauth_error(&r, 400, "invalid_request");
    let r = s
        .send(
            s.http
                .post(s.at("/oauth/token"))
                .basic_auth(&id, Some(&secret))
                .header(CONTENT_TYPE, FORM)
                .body("grant_type=client_credentials&grant_type=client_credentials"),
        )
        .await;
    oauth_error(&r, 400, "invalid_request");

    // JSON, or no content type, instead of a form.
    let r = s
        .send(
            s.http
                .post(s.at("/oauth/token"))
                .basic_auth(&id, Some(&secret))
                .json(&json!({"grant_type": "client_credentials"})),
        )
        .await;
    oauth_error(&r, 400, "invalid_request");
    let r = s
        .send(
            s.http
                .post(s.at("/oauth/token"))
                .basic_auth(&id, Some(&secret))
                .body("grant_type=client_credentials"),
        )
        .await;
    oauth_error(&r, 400, "invalid_request");
    // A charset parameter is fine.
    let r = s
        .send(
            s.http
                .post(s.at("/oauth/token"))
                .basic_auth(&id, Some(&secret))
                .header(
                    CONTENT_TYPE,
                    "application/x-www-form-urlencoded; charset=UTF-8",
                )
                .body("grant_type=client_credentials"),
        )
        .await;
    issued(&s, &r, READ_WRITE);

    // A 2 MiB body: 413, in OAuth's format.
    for path in ["/oauth/token", "/oauth/introspect", "/oauth/revoke"] {
        let r = post_huge_form(&s, path, 2 << 20).await;
        oauth_error(&r, 413, "invalid_request");
    }
    // A 20 KiB scope: 400.
    let long_scope = "documents.read ".repeat(20 * 1024 / 15);
    let r = form(
        &s,
        "/oauth/token",
        basic,
        &[("grant_type", "client_credentials"), ("scope", &long_scope)],
    )
    .await;
    oauth_error(&r, 400, "invalid_request");
    // Many scopes within the length limit: refused, not a 5xx.
    let many: Vec<String> = (0..2000).map(|i| format!("s{i}")).collect();
    let r = form(
        &s,
        "/oauth/token",
        basic,
        &[
            ("grant_type", "client_credentials"),
            ("scope", &many.join(" ")),
        ],
    )
    .await;
    oauth_error(&r, 400, "invalid_scope");

    // The authorization_code and refresh_token grants' refusals that need
    // no code: a client with those grants.
    let (web_id, web_secret) = register(
        &s,
        &org,
        json!({"name": "web", "redirect_uris": ["https://app.example/cb"],
               "grant_types": ["authorization_code", "refresh_token"], "scopes": ["documents.read"]}),
    )
    .await;
    let web_secret = web_secret.unwrap();
    let web = Some((web_id.as_str(), web_secret.as_str()));
    let made_up_code = format!("lk_ac_{}", "A".repeat(44));
    for code in ["nonsense", made_up_code.as_str()] {
        let r = form(
            &s,
            "/oauth/token",
            web,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", "https://app.example/cb"),
                ("code_verifier", &"v".repeat(43)),
            ],
        )
        .await;
        oauth_error(&r, 400, "invalid_grant");
    }
    let r = form(
        &s,
        "/oauth/token",
        web,
        &[
            ("grant_type", "authorization_code"),
            ("redirect_uri", "https://app.example/cb"),
        ],
    )
    .await;
    oauth_error(&r, 400, "invalid_request");
    let made_up_refresh = format!("lk_rt_{}", "A".repeat(44));
    for refresh in ["nonsense", made_up_refresh.as_str()] {
        let r = form(
            &s,
            "/oauth/token",
            web,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
        oauth_error(&r, 400, "invalid_grant");
    }
    let r = form(&s, "/oauth/token", web, &[("grant_type", "refresh_token")]).await;
    oauth_error(&r, 400, "invalid_request");
    // The service client has neither grant.
    let r = form(
        &s,
        "/oauth/token",
        basic,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &made_up_refresh),
        ],
    )
    .await;
    oauth_error(&r, 400, "unauthorized_client");

    // Introspection and revocation read forms the same way.
    for path in ["/oauth/introspect", "/oauth/revoke"] {
        let r = s
            .send(
                s.http
                    .post(s.at(path))
                    .basic_auth(&id, Some(&secret))
                    .json(&json!({"token": "x"})),
            )
            .await;
        oauth_error(&r, 400, "invalid_request");
        let r = s
            .send(
                s.http
                    .post(s.at(path))
                    .basic_auth(&id, Some(&secret))
                    .header(CONTENT_TYPE, FORM)
                    .body("token=a&token=b"),
            )
            .await;
        oauth_error(&r, 400, "invalid_request");
        let r = form(&s, path, basic, &[]).await;
        oauth_error(&r, 400, "invalid_request");
    }

    // Still healthy.
    let r = s.send(s.http.get(s.at("/healthz"))).await;
    assert_eq!(r.status, 200);
}
both!(request_refusals);

// ------------------------------------------------------------ introspection, revocation

async fn introspection(s: TestServer) {
    let org = s.org().await;
    let (id, secret) = service_client(&s, &org, "client_secret_basic").await;
    let (post_id, post_secret) = service_client(&s, &org, "client_secret_post").await;
    let (gone_id, gone_secret) = service_client(&s, &org, "client_secret_basic").await;
    let cc = ("grant_type", "client_credentials");

    let r = form(
        &s,
        "/oauth/token",
        Some((&id, &secret)),
        &[cc, ("scope", "documents.read")],
    )
    .await;
    let token = issued(&s, &r, "documents.read");
    let (_, claims) = jwt_parts(&token);

    let v = introspect(&s, &id, &secret, &token).await;
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["client_id"], id.as_str());
    assert_eq!(v["sub"], id.as_str());
    assert_eq!(v["scope"], "documents.read");
    assert_eq!(v["org_id"], org.as_str());
    assert_eq!(v["iss"], PUBLIC_URL);
    assert_eq!(v["aud"], PUBLIC_URL);
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["exp"], claims["exp"]);
    assert_eq!(v["iat"], claims["iat"]);
    assert_eq!(v["jti"], claims["jti"]);
    // With a token_type_hint, right or wrong (RFC 7662 §2.1: a hint only).
    for hint in ["access_token", "refresh_token"] {
        let r = form(
            &s,
            "/oauth/introspect",
            Some((&id, &secret)),
            &[("token", &token), ("token_type_hint", hint)],
        )
        .await;
        assert_eq!(r.json()["active"], true, "{hint}: {}", r.text);
    }

    // Another client's token, garbage, the client's own secret.
    let inactive = json!({"active": false});
    let r = form(
        &s,
        "/oauth/introspect",
        None,
        &[
            ("token", &token),
            ("client_id", &post_id),
            ("client_secret", &post_secret),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json(), inactive);
    let (h, c) = (
        token.split('.').next().unwrap(),
        token.split('.').nth(1).unwrap(),
    );
    for garbage in [
        "garbage".to_owned(),
        "a.b.c".to_owned(),
        format!("{h}.{c}.AAAA"),
        format!("lk_at_{}", "A".repeat(44)),
        format!("lk_rt_{}", "A".repeat(44)),
        secret.clone(),
        s.root_key.clone(),
        "x".repeat(10_000),
    ] {
        assert_eq!(introspect(&s, &id, &secret, &garbage).await, inactive);
    }

    // Client authentication is required.
    let r = form(&s, "/oauth/introspect", None, &[("token", &token)]).await;
    invalid_client(&r);
    let wrong = format!("lk_cs_{}", "A".repeat(44));
    let r = form(
        &s,
        "/oauth/introspect",
        Some((&id, &wrong)),
        &[("token", &token)],
    )
    .await;
    invalid_client(&r);
    let r = s
        .send(
            s.http
                .post(s.at("/oauth/introspect"))
                .header(CONTENT_TYPE, FORM)
                .bearer_auth(&token)
                .body(encode(&[("token", &token)])),
        )
        .await;
    invalid_client(&r);

    // A public client (an id, no credentials) may not introspect, even
    // its own tokens (RFC 7662 §2.1); it may revoke them.
    let (public_id, _) = register(
        &s,
        &org,
        json!({"name": "spa", "public": true, "redirect_uris": ["http://127.0.0.1:7777/cb"],
               "scopes": ["documents.read"]}),
    )
    .await;
    let r = form(
        &s,
        "/oauth/introspect",
        None,
        &[("token", &token), ("client_id", &public_id)],
    )
    .await;
    invalid_client(&r);
    let r = form(
        &s,
        "/oauth/revoke",
        None,
        &[("token", "garbage"), ("client_id", &public_id)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // A revoked token.
    let r = form(
        &s,
        "/oauth/revoke",
        Some((&id, &secret)),
        &[("token", &token)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(introspect(&s, &id, &secret, &token).await, inactive);

    // A deleted client's token: active for it until the deletion, then
    // for no one (its credentials are gone with it).
    let r = form(&s, "/oauth/token", Some((&gone_id, &gone_secret)), &[cc]).await;
    let gone_token = issued(&s, &r, READ_WRITE);
    assert_eq!(
        introspect(&s, &gone_id, &gone_secret, &gone_token).await["active"],
        true
    );
    let r = s.delete(&format!("/v1/clients/{gone_id}")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = form(
        &s,
        "/oauth/introspect",
        Some((&gone_id, &gone_secret)),
        &[("token", &gone_token)],
    )
    .await;
    invalid_client(&r);
    assert_eq!(introspect(&s, &id, &secret, &gone_token).await, inactive);
}
both!(introspection);

async fn revocation(s: TestServer) {
    let org = s.org().await;
    let (id, secret) = service_client(&s, &org, "client_secret_basic").await;
    let (post_id, post_secret) = service_client(&s, &org, "client_secret_post").await;
    let cc = ("grant_type", "client_credentials");
    let token_of = |r: &Resp| r.json()["access_token"].as_str().unwrap().to_owned();

    let r = form(&s, "/oauth/token", Some((&id, &secret)), &[cc]).await;
    issued(&s, &r, READ_WRITE);
    let mine = token_of(&r);
    let r = form(&s, "/oauth/token", Some((&id, &secret)), &[cc]).await;
    issued(&s, &r, READ_WRITE);
    let mine_too = token_of(&r);
    let r = form(
        &s,
        "/oauth/token",
        None,
        &[cc, ("client_id", &post_id), ("client_secret", &post_secret)],
    )
    .await;
    issued(&s, &r, READ_WRITE);
    let theirs = token_of(&r);

    // Revoking another client's token: 200 (RFC 7009 §2.2 says nothing),
    // and the token stays active.
    let r = form(
        &s,
        "/oauth/revoke",
        Some((&id, &secret)),
        &[("token", &theirs)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = form(
        &s,
        "/oauth/introspect",
        None,
        &[
            ("token", &theirs),
            ("client_id", &post_id),
            ("client_secret", &post_secret),
        ],
    )
    .await
    .json();
    assert_eq!(v["active"], true, "{v}");

    // Own token: 200, then inactive; the client's other token is untouched.
    assert_eq!(introspect(&s, &id, &secret, &mine).await["active"], true);
    let r = form(
        &s,
        "/oauth/revoke",
        Some((&id, &secret)),
        &[("token", &mine), ("token_type_hint", "access_token")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(
        introspect(&s, &id, &secret, &mine).await,
        json!({"active": false})
    );
    assert_eq!(
        introspect(&s, &id, &secret, &mine_too).await["active"],
        true
    );
    // Again: still 200.
    let r = form(
        &s,
        "/oauth/revoke",
        Some((&id, &secret)),
        &[("token", &mine)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // By client_secret_post, with the wrong hint.
    let r = form(
        &s,
        "/oauth/revoke",
        None,
        &[
            ("token", &theirs),
            ("token_type_hint", "refresh_token"),
            ("client_id", &post_id),
            ("client_secret", &post_secret),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = form(
        &s,
        "/oauth/introspect",
        None,
        &[
            ("token", &theirs),
            ("client_id", &post_id),
            ("client_secret", &post_secret),
        ],
    )
    .await
    .json();
    assert_eq!(v, json!({"active": false}));

    // Unknown tokens: 200.
    for unknown in [
        "garbage".to_owned(),
        format!("lk_at_{}", "A".repeat(44)),
        format!("lk_rt_{}", "A".repeat(44)),
        "eyJhbGciOiJub25lIn0.e30.".to_owned(),
    ] {
        let r = form(
            &s,
            "/oauth/revoke",
            Some((&id, &secret)),
            &[("token", &unknown)],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    // Revocation needs client authentication.
    let r = form(&s, "/oauth/revoke", None, &[("token", &mine_too)]).await;
    invalid_client(&r);
    let wrong = format!("lk_cs_{}", "A".repeat(44));
    let r = form(
        &s,
        "/oauth/revoke",
        Some((&id, &wrong)),
        &[("token", &mine_too)],
    )
    .await;
    invalid_client(&r);
    assert_eq!(
        introspect(&s, &id, &secret, &mine_too).await["active"],
        true
    );

    // A revocation holds across a restart (it is stored, not cached).
    let mut s = s;
    s.restart();
    assert_eq!(
        introspect(&s, &id, &secret, &mine).await,
        json!({"active": false})
    );
    assert_eq!(
        introspect(&s, &id, &secret, &mine_too).await["active"],
        true
    );
}
both!(revocation);

// ------------------------------------------------------------ metadata

async fn metadata(s: TestServer) {
    let r = s
        .send(s.http.get(s.at("/.well-known/oauth-authorization-server")))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    let m = r.json();
    assert_eq!(m["issuer"], PUBLIC_URL);
    assert_eq!(
        m["authorization_endpoint"],
        format!("{PUBLIC_URL}/oauth/authorize")
    );
    assert_eq!(m["token_endpoint"], format!("{PUBLIC_URL}/oauth/token"));
    assert_eq!(m["jwks_uri"], format!("{PUBLIC_URL}/.well-known/jwks.json"));
    assert_eq!(
        m["introspection_endpoint"],
        format!("{PUBLIC_URL}/oauth/introspect")
    );
    assert_eq!(
        m["revocation_endpoint"],
        format!("{PUBLIC_URL}/oauth/revoke")
    );
    assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    assert_eq!(m["response_types_supported"], json!(["code"]));
    let set = |k: &str| -> Vec<String> {
        let mut v: Vec<String> = m[k]
            .as_array()
            .unwrap_or_else(|| panic!("{k} is not a list: {m}"))
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        set("grant_types_supported"),
        ["authorization_code", "client_credentials", "refresh_token"]
    );
    assert_eq!(
        set("token_endpoint_auth_methods_supported"),
        [
            "client_secret_basic",
            "client_secret_post",
            "none",
            "private_key_jwt"
        ]
    );
    // private_key_jwt needs the algs listed (RFC 8414 §2); none of them
    // symmetric or `none`.
    let algs = set("token_endpoint_auth_signing_alg_values_supported");
    assert_eq!(algs, ["ES256", "EdDSA", "RS256"]);
    // Wherever private_key_jwt is offered, its algs are listed (RFC 8414 §2).
    assert_eq!(
        set("introspection_endpoint_auth_methods_supported"),
        [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt"
        ]
    );
    assert_eq!(
        set("introspection_endpoint_auth_signing_alg_values_supported"),
        algs
    );
    assert_eq!(
        set("revocation_endpoint_auth_methods_supported"),
        [
            "client_secret_basic",
            "client_secret_post",
            "none",
            "private_key_jwt"
        ]
    );
    assert_eq!(
        set("revocation_endpoint_auth_signing_alg_values_supported"),
        algs
    );
    // The JWKS it names is served.
    let jwks_path = m["jwks_uri"]
        .as_str()
        .unwrap()
        .strip_prefix(PUBLIC_URL)
        .unwrap();
    let r = s.send(s.http.get(s.at(jwks_path))).await;
    assert_eq!(r.status, 200);
    assert!(!r.json()["keys"].as_array().unwrap().is_empty());
}
both!(metadata);

async fn metadata_lists_the_catalog(s: TestServer) {
    let m = s
        .send(s.http.get(s.at("/.well-known/oauth-authorization-server")))
        .await
        .json();
    let mut scopes: Vec<&str> = m["scopes_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["documents.read", "documents.write"]);
}
both!(metadata_lists_the_catalog, common::ROUTES);

// ------------------------------------------------------------ private_key_jwt

/// An EC P-256 key pair made in the test: the signing key, its public JWK
/// (with `kid`), and the PKCS#8 PEM of the private key for the scripts.
struct ClientKey {
    key: EncodingKey,
    jwk: Value,
    kid: String,
    pem: String,
}

fn client_key(kid: &str) -> ClientKey {
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .unwrap();
    let key = EncodingKey::from_ec_der(der.as_ref());
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    assert_eq!(jwk["kty"], "EC");
    assert!(
        jwk.get("d").is_none(),
        "the public JWK holds the private key"
    );
    let b64 = STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    ClientKey {
        key,
        jwk,
        kid: kid.to_owned(),
        pem,
    }
}

static JTI: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn assertion(key: &ClientKey, kid: &str, claims: Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, &key.key).unwrap()
}

fn assertion_claims(client_id: &str, aud: &str, iat: i64, exp: i64) -> Value {
    let n = JTI.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    json!({"iss": client_id, "sub": client_id, "aud": aud, "iat": iat, "exp": exp,
           "jti": format!("jti-{n}-{}", now())})
}

async fn with_assertion(s: &TestServer, client_id: Option<&str>, assertion: &str) -> Resp {
    let mut params = vec![
        ("grant_type", "client_credentials"),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion),
    ];
    if let Some(id) = client_id {
        params.push(("client_id", id));
    }
    form(s, "/oauth/token", None, &params).await
}

async fn private_key_jwt(s: TestServer) {
    let org = s.org().await;
    let key = client_key("k1");
    let other_key = client_key("k2");
    let (id, secret) = register(
        &s,
        &org,
        json!({"name": "signed", "grant_types": ["client_credentials"],
               "scopes": ["documents.read"], "token_endpoint_auth_method": "private_key_jwt",
               "jwks": {"keys": [key.jwk.clone()]}}),
    )
    .await;
    let token_url = format!("{PUBLIC_URL}/oauth/token");
    let t = now();

    // A valid assertion: a token.
    let good = assertion(&key, "k1", assertion_claims(&id, &token_url, t, t + 60));
    s.remember(&good);
    let r = with_assertion(&s, Some(&id), &good).await;
    let token = issued(&s, &r, "documents.read");
    assert_eq!(jwt_parts(&token).1["sub"], id.as_str());
    // Replayed: refused.
    let r = with_assertion(&s, Some(&id), &good).await;
    invalid_client(&r);
    // client_id may be left out (the assertion's iss names the client).
    let a = assertion(&key, "k1", assertion_claims(&id, &token_url, t, t + 60));
    let r = with_assertion(&s, None, &a).await;
    issued(&s, &r, "documents.read");
    // aud may be the issuer itself (RFC 7523 §3, RFC 8414 §2).
    let a = assertion(&key, "k1", assertion_claims(&id, PUBLIC_URL, t, t + 60));
    let r = with_assertion(&s, Some(&id), &a).await;
    issued(&s, &r, "documents.read");

    let refused = [
        // Unknown kid.
        (
            "unknown kid",
            assertion(&key, "k9", assertion_claims(&id, &token_url, t, t + 60)),
        ),
        // The right kid, another key's signature.
        (
            "another key",
            assertion(
                &other_key,
                "k1",
                assertion_claims(&id, &token_url, t, t + 60),
            ),
        ),
        // Wrong audience.
        (
            "wrong aud",
            assertion(
                &key,
                "k1",
                assertion_claims(&id, "https://elsewhere.example/oauth/token", t, t + 60),
            ),
        ),
        // Expired.
        (
            "expired",
            assertion(
                &key,
                "k1",
                assertion_claims(&id, &token_url, t - 600, t - 300),
            ),
        ),
        // Lasting more than an hour.
        (
            "too long",
            assertion(&key, "k1", assertion_claims(&id, &token_url, t, t + 3700)),
        ),
        (
            "too far, no iat",
            assertion(&key, "k1", {
                let mut c = assertion_claims(&id, &token_url, t, t + 7200);
                c.as_object_mut().unwrap().remove("iat");
                c
            }),
        ),
        // iss or sub not the client.
        (
            "sub is another",
            assertion(&key, "k1", {
                let mut c = assertion_claims(&id, &token_url, t, t + 60);
                c["sub"] = json!("someone");
                c
            }),
        ),
        // No jti.
        (
            "no jti",
            assertion(&key, "k1", {
                let mut c = assertion_claims(&id, &token_url, t, t + 60);
                c.as_object_mut().unwrap().remove("jti");
                c
            }),
        ),
        // Not a JWT at all.
        ("garbage", "a.b.c".to_owned()),
    ];
    for (why, a) in &refused {
        let r = with_assertion(&s, Some(&id), a).await;
        assert_eq!(r.status, 401, "{why}: {}", r.text);
        invalid_client(&r);
    }
    // alg none, the header swapped: refused.
    let (_, claims) = jwt_parts(&good);
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let r = with_assertion(&s, Some(&id), &none).await;
    invalid_client(&r);
    // An assertion naming another client in client_id.
    let (svc_id, _svc_secret) = service_client(&s, &org, "client_secret_basic").await;
    let a = assertion(&key, "k1", assertion_claims(&id, &token_url, t, t + 60));
    let r = with_assertion(&s, Some(&svc_id), &a).await;
    oauth_error(&r, 400, "invalid_request");
    // The wrong assertion type.
    let a = assertion(&key, "k1", assertion_claims(&id, &token_url, t, t + 60));
    let r = form(
        &s,
        "/oauth/token",
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:example:other"),
            ("client_assertion", &a),
        ],
    )
    .await;
    oauth_error(&r, 400, "invalid_request");
    // A secret client cannot switch to an assertion, nor this one to a secret.
    let a = assertion(&key, "k1", assertion_claims(&svc_id, &token_url, t, t + 60));
    let r = with_assertion(&s, Some(&svc_id), &a).await;
    invalid_client(&r);
    assert!(secret.is_some(), "a confidential client gets a secret too");
    let r = form(
        &s,
        "/oauth/token",
        Some((&id, secret.as_deref().unwrap())),
        &[("grant_type", "client_credentials")],
    )
    .await;
    invalid_client(&r);

    // Introspection and revocation take the assertion too, each its own.
    let a = assertion(&key, "k1", assertion_claims(&id, &token_url, t, t + 60));
    let r = form(
        &s,
        "/oauth/introspect",
        None,
        &[
            ("token", &token),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &a),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["active"], true);
    let r = form(
        &s,
        "/oauth/revoke",
        None,
        &[
            ("token", &token),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &a),
        ],
    )
    .await;
    invalid_client(&r);
}
both!(private_key_jwt);

// ------------------------------------------------------------ real client libraries

/// A server whose public URL is the address it listens on, so that a
/// client library's discovery (issuer == the URL it fetched from) holds.
async fn server_at_its_own_url(backend: Backend) -> Option<TestServer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let s = TestServer::start_with(
        backend,
        "",
        &[
            ("LATCHKEY_LISTEN", &format!("127.0.0.1:{port}")),
            ("LATCHKEY_PUBLIC_URL", &url),
        ],
    )
    .await?;
    assert_eq!(s.url, url, "the server did not listen where it was told");
    Some(s)
}

/// The clients a script uses, and their environment.
async fn script_env(s: &TestServer) -> (Vec<(String, String)>, [String; 3], String) {
    let org = s.org().await;
    let (basic_id, basic_secret) = service_client(s, &org, "client_secret_basic").await;
    let (post_id, post_secret) = service_client(s, &org, "client_secret_post").await;
    let key = client_key("script-key");
    let (pk_id, _) = register(
        s,
        &org,
        json!({"name": "signed", "grant_types": ["client_credentials"],
               "scopes": ["documents.read", "documents.write"],
               "token_endpoint_auth_method": "private_key_jwt",
               "jwks": {"keys": [key.jwk.clone()]}}),
    )
    .await;
    let env = vec![
        ("LATCHKEY_ISSUER".to_owned(), s.url.clone()),
        ("BASIC_CLIENT_ID".to_owned(), basic_id.clone()),
        ("BASIC_CLIENT_SECRET".to_owned(), basic_secret),
        ("POST_CLIENT_ID".to_owned(), post_id.clone()),
        ("POST_CLIENT_SECRET".to_owned(), post_secret),
        ("PKJWT_CLIENT_ID".to_owned(), pk_id.clone()),
        ("PKJWT_KID".to_owned(), key.kid.clone()),
        ("PKJWT_PRIVATE_KEY_PEM".to_owned(), key.pem.clone()),
    ];
    (env, [basic_id, post_id, pk_id], org)
}

/// Runs a script and answers the JSON it printed; fails with its output
/// when it fails.
async fn run_script(
    s: &TestServer,
    program: &str,
    args: &[&Path],
    env: &[(String, String)],
) -> Value {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("AUTHLIB_INSECURE_TRANSPORT")
        .env("NO_PROXY", "127.0.0.1")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{program} took over 2 minutes"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{program} failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        out.status,
        s.log()
    );
    s.check_no_secret_in(&stdout, "the script's output");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{program} printed no JSON ({e}): {stdout}\n{stderr}"))
}

/// What both scripts report for one client: a token of `documents.read`,
/// verified offline, active in introspection, inactive once revoked.
fn check_client_run(v: &Value, issuer: &str, client_id: &str, org: &str) {
    // Case-insensitive (RFC 6749 §5.1); openid-client lower-cases it.
    assert!(
        v["token"]["token_type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("Bearer")),
        "{v}"
    );
    assert_eq!(v["token"]["expires_in"], 3600, "{v}");
    assert_eq!(v["token"]["scope"], "documents.read", "{v}");
    let c = &v["claims"];
    assert_eq!(c["alg"], "EdDSA", "{v}");
    assert_eq!(c["typ"], "at+jwt", "{v}");
    assert_eq!(c["iss"], issuer, "{v}");
    assert_eq!(c["aud"], issuer, "{v}");
    assert_eq!(c["sub"], client_id, "{v}");
    assert_eq!(c["client_id"], client_id, "{v}");
    assert_eq!(c["scope"], "documents.read", "{v}");
    assert_eq!(c["org_id"], org, "{v}");
    assert_eq!(c["lifetime"], 3600, "{v}");
    let i = &v["introspection"];
    assert_eq!(i["active"], true, "{v}");
    assert_eq!(i["client_id"], client_id, "{v}");
    assert_eq!(i["sub"], client_id, "{v}");
    assert_eq!(i["scope"], "documents.read", "{v}");
    assert_eq!(i["iss"], issuer, "{v}");
    assert_eq!(i["aud"], issuer, "{v}");
    assert_eq!(v["introspection_jti_matches"], true, "{v}");
    assert_eq!(v["after_revoke"], json!({"active": false}), "{v}");
}

async fn python_authlib(backend: Backend) {
    let script = clients_dir().join("python/authlib_client.py");
    let has = runs("python3")
        && std::process::Command::new("python3")
            .args(["-c", "import authlib, joserfc, requests"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if tool_or_skip(
        has,
        "python3 with authlib, joserfc and requests (tests/clients/python/requirements.txt)",
    )
    .is_none()
    {
        return;
    }
    let Some(s) = server_at_its_own_url(backend).await else {
        return;
    };
    let (env, [basic_id, post_id, pk_id], org) = script_env(&s).await;
    let v = run_script(&s, "python3", &[&script], &env).await;
    assert_eq!(v["metadata_issuer"], s.url.as_str(), "{v}");
    check_client_run(&v["basic"], &s.url, &basic_id, &org);
    check_client_run(&v["post"], &s.url, &post_id, &org);
    check_client_run(&v["pkjwt"], &s.url, &pk_id, &org);
    assert_eq!(v["basic"]["revoke_status"], 200, "{v}");
    assert_eq!(v["post"]["revoke_status"], 200, "{v}");
    assert_eq!(v["wrong_secret_error"], "invalid_client", "{v}");
}

async fn node_openid_client(backend: Backend) {
    let dir = clients_dir().join("node");
    let installed = dir.join("node_modules/openid-client/package.json").exists()
        && dir.join("node_modules/jose/package.json").exists();
    if tool_or_skip(
        runs("node") && installed,
        "node with openid-client and jose (npm ci --prefix crates/latchkey/tests/clients/node)",
    )
    .is_none()
    {
        return;
    }
    let Some(s) = server_at_its_own_url(backend).await else {
        return;
    };
    let (env, [basic_id, post_id, pk_id], org) = script_env(&s).await;
    let v = run_script(&s, "node", &[&dir.join("openid_client.mjs")], &env).await;
    assert_eq!(v["metadata_issuer"], s.url.as_str(), "{v}");
    check_client_run(&v["basic"], &s.url, &basic_id, &org);
    check_client_run(&v["post"], &s.url, &post_id, &org);
    check_client_run(&v["pkjwt"], &s.url, &pk_id, &org);
    assert_eq!(
        v["wrong_secret"],
        json!({"status": 401, "challenge_scheme": "basic", "challenge_realm": "latchkey",
               "error": "invalid_client"}),
        "{v}"
    );
}

mod python_authlib {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        python_authlib(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        python_authlib(Backend::Postgres).await;
    }
}

mod node_openid_client {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        node_openid_client(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        node_openid_client(Backend::Postgres).await;
    }
}
