//! The authorization code and refresh grants end to end, on SQLite and
//! PostgreSQL (SPEC §8, RFC 9700): codes are obtained through the real
//! sign-in and consent pages (a reqwest "browser" reading their forms),
//! then exchanged, replayed, refreshed, downgraded and stolen; every
//! refusal is RFC 6749's `invalid_grant` (or `invalid_scope`), never a
//! 5xx, and what a replay or reuse taints is revoked at `/v1/verify`.
//! Then real client libraries (Authlib, openid-client) go through the same
//! HTML flow. No code, token or secret reaches the server log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Backend, PUBLIC_URL, Resp, TestServer, clients_dir, runs, tool_or_skip};
use reqwest::Url;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

const CATALOG: &str = r#"
[scopes.catalog]
"documents.read" = "Read your documents"
"documents.write" = "Create and change your documents"
"profile" = "See your name and email"
"#;

const OFFLINE_CATALOG: &str = r#"
[scopes.catalog]
"documents.read" = "Read your documents"
"documents.write" = "Create and change your documents"
"profile" = "See your name and email"
"offline_access" = "Stay connected when you are away"
"#;

const REDIRECT: &str = "https://app.example/cb";
const VERIFIER: &str = "pkce-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
const EMAIL: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery staple";
const FORM: &str = "application/x-www-form-urlencoded";
const SCOPE: &str = "documents.read profile";

// ------------------------------------------------------------ fixtures

/// An OAuth client: its id, and its secret when confidential.
#[derive(Clone)]
struct Cl {
    id: String,
    secret: Option<String>,
}

struct Fixture {
    org: String,
    user: String,
    client: Cl,
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()))
}

/// Registers a client on `REDIRECT` with `documents.*` and `profile`,
/// `extra` replacing or adding fields.
async fn register(s: &TestServer, org: &str, extra: Value) -> Cl {
    let mut body = json!({
        "name": "Docs App",
        "redirect_uris": [REDIRECT],
        "scopes": ["documents.read", "documents.write", "profile"],
    });
    if let (Some(b), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            b.insert(k.clone(), v.clone());
        }
    }
    let r = s.post(&format!("/v1/orgs/{org}/clients"), body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v = r.json();
    let secret = v["client_secret"].as_str().map(str::to_owned);
    if let Some(secret) = &secret {
        s.remember(secret);
    }
    Cl {
        id: v["client_id"].as_str().unwrap().to_owned(),
        secret,
    }
}

/// An organization with Alice and a confidential client.
async fn setup(s: &TestServer, client: Value) -> Fixture {
    let org = s.org().await;
    let r = s
        .post(
            &format!("/v1/orgs/{org}/users"),
            json!({"email": EMAIL, "password": PASSWORD, "role": "member"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    s.remember(PASSWORD);
    let user = r.json()["id"].as_str().unwrap().to_owned();
    let client = register(s, &org, client).await;
    Fixture { org, user, client }
}

// ------------------------------------------------------------ the browser

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn encode(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

struct Page {
    status: u16,
    location: Option<String>,
    text: String,
}

impl Page {
    fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .text
            .find(&marker)
            .unwrap_or_else(|| panic!("no field {name} in {}", self.text))
            + marker.len();
        let end = self.text[start..].find('"').unwrap() + start;
        self.text[start..end].to_owned()
    }

    fn action(&self) -> String {
        let marker = "action=\"";
        let start = self.text.find(marker).unwrap() + marker.len();
        let end = self.text[start..].find('"').unwrap() + start;
        self.text[start..end].to_owned()
    }
}

async fn page(s: &TestServer, req: reqwest::RequestBuilder) -> Page {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = res.text().await.unwrap();
    assert!(status < 500, "a {status}: {text}");
    s.check_no_secret_in(&text, "a page");
    Page {
        status,
        location,
        text,
    }
}

async fn submit(s: &TestServer, b: &reqwest::Client, p: &Page, fields: &[(&str, &str)]) -> Page {
    page(
        s,
        b.post(s.at(&p.action()))
            .header(CONTENT_TYPE, FORM)
            .body(encode(fields)),
    )
    .await
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Goes through `/oauth/authorize` as Alice in a fresh browser (signing in,
/// allowing when asked) and answers the code. `changes` replace or add
/// request parameters (an empty value removes one).
async fn authorize(s: &TestServer, client: &Cl, changes: &[(&str, &str)]) -> String {
    let ch = challenge(VERIFIER);
    let mut p: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &client.id),
        ("redirect_uri", REDIRECT),
        ("scope", SCOPE),
        ("state", "xyz"),
        ("code_challenge", &ch),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in changes {
        p.retain(|(pk, _)| pk != k);
        if !v.is_empty() {
            p.push((k, v));
        }
    }
    let b = browser();
    let login = page(s, b.get(s.at(&format!("/oauth/authorize?{}", encode(&p))))).await;
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(login.action(), "/oauth/authorize/login");
    let flow = login.field("flow");
    let mut next = submit(
        s,
        &b,
        &login,
        &[("flow", &flow), ("email", EMAIL), ("password", PASSWORD)],
    )
    .await;
    if next.status == 200 {
        assert_eq!(next.action(), "/oauth/authorize/consent", "{}", next.text);
        let flow = next.field("flow");
        next = submit(s, &b, &next, &[("flow", &flow), ("decision", "allow")]).await;
    }
    assert_eq!(next.status, 303, "{}", next.text);
    let url = Url::parse(next.location.as_deref().unwrap()).unwrap();
    assert!(url.as_str().starts_with(REDIRECT), "{url}");
    assert_eq!(param(&url, "state").as_deref(), Some("xyz"));
    assert_eq!(param(&url, "iss").as_deref(), Some(PUBLIC_URL));
    let code = param(&url, "code").unwrap_or_else(|| panic!("no code: {url}"));
    s.remember(&code);
    code
}

// ------------------------------------------------------------ the token endpoint

/// POSTs to a token endpoint as `client` (HTTP Basic when confidential,
/// `client_id` in the form when public); never a 5xx.
async fn post_as(s: &TestServer, path: &str, client: &Cl, params: &[(&str, &str)]) -> Resp {
    let mut params = params.to_vec();
    let mut req = s.http.post(s.at(path)).header(CONTENT_TYPE, FORM);
    match &client.secret {
        Some(secret) => req = req.basic_auth(&client.id, Some(secret)),
        None => params.push(("client_id", &client.id)),
    }
    let r = s.send(req.body(encode(&params))).await;
    assert!(r.status < 500, "a {}: {}", r.status, r.text);
    r
}

async fn exchange(
    s: &TestServer,
    client: &Cl,
    code: &str,
    redirect_uri: &str,
    verifier: Option<&str>,
) -> Resp {
    let mut p = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
    ];
    if let Some(v) = verifier {
        p.push(("code_verifier", v));
    }
    post_as(s, "/oauth/token", client, &p).await
}

async fn refresh(s: &TestServer, client: &Cl, rt: &str, scope: Option<&str>) -> Resp {
    let mut p = vec![("grant_type", "refresh_token"), ("refresh_token", rt)];
    if let Some(sc) = scope {
        p.push(("scope", sc));
    }
    post_as(s, "/oauth/token", client, &p).await
}

/// A successful token answer: (access token, refresh token), remembered.
struct Tokens {
    at: String,
    rt: Option<String>,
    scope: String,
}

fn tokens(s: &TestServer, r: &Resp) -> Tokens {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let v = r.json();
    assert_eq!(v["token_type"], "Bearer", "{v}");
    assert_eq!(v["expires_in"], 3600, "{v}");
    let at = v["access_token"].as_str().unwrap().to_owned();
    s.remember(&at);
    let rt = v["refresh_token"].as_str().map(str::to_owned);
    if let Some(rt) = &rt {
        assert!(rt.starts_with("lk_rt_"), "{rt}");
        s.remember(rt);
    }
    Tokens {
        at,
        rt,
        scope: v["scope"].as_str().unwrap().to_owned(),
    }
}

/// The full flow: a code, exchanged with the right verifier.
async fn grant(s: &TestServer, client: &Cl, changes: &[(&str, &str)]) -> Tokens {
    let code = authorize(s, client, changes).await;
    tokens(
        s,
        &exchange(s, client, &code, REDIRECT, Some(VERIFIER)).await,
    )
}

fn oauth_error(r: &Resp, status: u16, error: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.json()["error"], error, "{}", r.text);
    assert!(
        r.json()["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{}",
        r.text
    );
}

fn invalid_grant(r: &Resp) {
    oauth_error(r, 400, "invalid_grant");
}

fn claims(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWS");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

async fn accepted(s: &TestServer, at: &str) -> Value {
    let v = s.verify(json!({"credential": at})).await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["credential_type"], "access_token", "{v}");
    v
}

async fn revoked(s: &TestServer, at: &str) {
    let v = s.verify(json!({"credential": at})).await;
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["code"], "TOKEN_REVOKED", "{v}");
}

/// The log holds none of the remembered secrets (checked again at stop).
fn log_is_clean(s: &TestServer) {
    s.check_no_secret_in(&s.log(), "the server log");
}

// ------------------------------------------------------------ the tests

async fn full_flow(s: TestServer) {
    let f = setup(&s, json!({})).await;
    let code = authorize(&s, &f.client, &[]).await;
    let r = exchange(&s, &f.client, &code, REDIRECT, Some(VERIFIER)).await;
    let mut keys: Vec<String> = r.json().as_object().unwrap().keys().cloned().collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_token",
            "expires_in",
            "refresh_token",
            "scope",
            "token_type"
        ],
        "{}",
        r.text
    );
    let t = tokens(&s, &r);
    assert_eq!(t.scope, SCOPE);
    let c = claims(&t.at);
    assert_eq!(c["sub"], f.user.as_str(), "{c}");
    assert_eq!(c["client_id"], f.client.id.as_str(), "{c}");
    assert_eq!(c["org_id"], f.org.as_str(), "{c}");
    assert_eq!(c["scope"], SCOPE, "{c}");
    assert_eq!(c["iss"], PUBLIC_URL, "{c}");
    assert!(
        c["gid"].as_str().is_some_and(|g| g.starts_with("grt_")),
        "{c}"
    );
    let v = accepted(&s, &t.at).await;
    assert_eq!(v["subject"], f.user.as_str(), "{v}");
    assert_eq!(v["client_id"], f.client.id.as_str(), "{v}");
    assert_eq!(v["scopes"], json!(["documents.read", "profile"]), "{v}");

    // A public client (PKCE, no secret) gets the same.
    let public = register(&s, &f.org, json!({"name": "SPA", "public": true})).await;
    let t = grant(&s, &public, &[("scope", "documents.read")]).await;
    assert_eq!(t.scope, "documents.read");
    assert!(t.rt.is_some());
    assert_eq!(claims(&t.at)["sub"], f.user.as_str());
    accepted(&s, &t.at).await;
    let t2 = tokens(&s, &refresh(&s, &public, &t.rt.unwrap(), None).await);
    accepted(&s, &t2.at).await;
    log_is_clean(&s);
}
both!(full_flow, CATALOG);

async fn code_replay(s: TestServer) {
    let f = setup(&s, json!({})).await;
    let code = authorize(&s, &f.client, &[]).await;
    let first = tokens(
        &s,
        &exchange(&s, &f.client, &code, REDIRECT, Some(VERIFIER)).await,
    );
    accepted(&s, &first.at).await;
    invalid_grant(&exchange(&s, &f.client, &code, REDIRECT, Some(VERIFIER)).await);
    // What the first exchange issued is revoked.
    revoked(&s, &first.at).await;
    invalid_grant(&refresh(&s, &f.client, first.rt.as_deref().unwrap(), None).await);
    // A third try too.
    invalid_grant(&exchange(&s, &f.client, &code, REDIRECT, Some(VERIFIER)).await);
    // Unknown or malformed codes.
    for bad in ["lk_ac_AAAA", "nope", ""] {
        let r = exchange(&s, &f.client, bad, REDIRECT, Some(VERIFIER)).await;
        assert!(matches!(r.status, 400), "{}", r.text);
    }
    log_is_clean(&s);
}
both!(code_replay, CATALOG);

async fn refresh_rotation(s: TestServer) {
    let f = setup(&s, json!({})).await;
    let t1 = grant(&s, &f.client, &[]).await;
    let rt1 = t1.rt.clone().unwrap();
    let t2 = tokens(&s, &refresh(&s, &f.client, &rt1, None).await);
    let rt2 = t2.rt.clone().unwrap();
    assert_ne!(rt1, rt2);
    assert_eq!(t2.scope, SCOPE);
    assert_eq!(claims(&t2.at)["gid"], claims(&t1.at)["gid"]);
    let t3 = tokens(&s, &refresh(&s, &f.client, &rt2, None).await);
    let rt3 = t3.rt.clone().unwrap();
    assert!(rt3 != rt1 && rt3 != rt2);
    for at in [&t1.at, &t2.at, &t3.at] {
        accepted(&s, at).await;
    }
    // A spent refresh token presented again: the whole family ends.
    invalid_grant(&refresh(&s, &f.client, &rt1, None).await);
    invalid_grant(&refresh(&s, &f.client, &rt3, None).await);
    for at in [&t1.at, &t2.at, &t3.at] {
        revoked(&s, at).await;
    }
    // Another grant of the same user and client is untouched.
    let other = grant(&s, &f.client, &[]).await;
    accepted(&s, &other.at).await;
    tokens(
        &s,
        &refresh(&s, &f.client, other.rt.as_deref().unwrap(), None).await,
    );
    log_is_clean(&s);
}
both!(refresh_rotation, CATALOG);

async fn pkce(s: TestServer) {
    let f = setup(&s, json!({})).await;
    // A wrong verifier, well formed or not.
    for wrong in [
        "pkce-verifier-0123456789-abcdefghijklmnopqrstuvwxyZ",
        "short",
        VERIFIER.to_uppercase().as_str(),
    ] {
        let code = authorize(&s, &f.client, &[]).await;
        invalid_grant(&exchange(&s, &f.client, &code, REDIRECT, Some(wrong)).await);
        // The code is spent all the same.
        invalid_grant(&exchange(&s, &f.client, &code, REDIRECT, Some(VERIFIER)).await);
    }
    // No verifier.
    let code = authorize(&s, &f.client, &[]).await;
    invalid_grant(&exchange(&s, &f.client, &code, REDIRECT, None).await);
    invalid_grant(&exchange(&s, &f.client, &code, REDIRECT, Some(VERIFIER)).await);

    // A confidential client that may skip PKCE: a verifier sent for a code
    // issued without a challenge is a downgrade.
    let lax = register(&s, &f.org, json!({"name": "Lax", "require_pkce": false})).await;
    let no_pkce = [("code_challenge", ""), ("code_challenge_method", "")];
    let code = authorize(&s, &lax, &no_pkce).await;
    invalid_grant(&exchange(&s, &lax, &code, REDIRECT, Some(VERIFIER)).await);
    invalid_grant(&exchange(&s, &lax, &code, REDIRECT, None).await);
    // Without a verifier it works, and with PKCE too.
    let code = authorize(&s, &lax, &no_pkce).await;
    tokens(&s, &exchange(&s, &lax, &code, REDIRECT, None).await);
    let code = authorize(&s, &lax, &[]).await;
    invalid_grant(&exchange(&s, &lax, &code, REDIRECT, None).await);
    let code = authorize(&s, &lax, &[]).await;
    tokens(
        &s,
        &exchange(&s, &lax, &code, REDIRECT, Some(VERIFIER)).await,
    );
    log_is_clean(&s);
}
both!(pkce, CATALOG);

async fn redirect_uri_must_match(s: TestServer) {
    let f = setup(&s, json!({})).await;
    for uri in [
        "https://app.example/cb/extra",
        "https://app.example/cb?x=1",
        "https://App.Example/cb",
        "https://app.example/CB",
        "https://app.example/cb/",
        "https://app.example:443/cb",
    ] {
        let code = authorize(&s, &f.client, &[]).await;
        invalid_grant(&exchange(&s, &f.client, &code, uri, Some(VERIFIER)).await);
        // Spent.
        invalid_grant(&exchange(&s, &f.client, &code, REDIRECT, Some(VERIFIER)).await);
    }
    // Missing: refused.
    let code = authorize(&s, &f.client, &[]).await;
    let r = post_as(
        &s,
        "/oauth/token",
        &f.client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    log_is_clean(&s);
}
both!(redirect_uri_must_match, CATALOG);

async fn another_clients_code_or_refresh_token(s: TestServer) {
    let f = setup(&s, json!({})).await;
    let thief = register(&s, &f.org, json!({"name": "Thief"})).await;
    let code = authorize(&s, &f.client, &[]).await;
    invalid_grant(&exchange(&s, &thief, &code, REDIRECT, Some(VERIFIER)).await);
    // The code is spent: its own client cannot use it any more.
    invalid_grant(&exchange(&s, &f.client, &code, REDIRECT, Some(VERIFIER)).await);

    // A refresh token presented by another client: refused, and the
    // grant it belongs to is revoked (it leaked).
    let t = grant(&s, &f.client, &[]).await;
    let rt = t.rt.clone().unwrap();
    invalid_grant(&refresh(&s, &thief, &rt, None).await);
    invalid_grant(&refresh(&s, &f.client, &rt, None).await);
    revoked(&s, &t.at).await;

    // A public client too.
    let spa = register(&s, &f.org, json!({"name": "SPA", "public": true})).await;
    let code = authorize(&s, &f.client, &[]).await;
    invalid_grant(&exchange(&s, &spa, &code, REDIRECT, Some(VERIFIER)).await);
    invalid_grant(&exchange(&s, &f.client, &code, REDIRECT, Some(VERIFIER)).await);
    log_is_clean(&s);
}
both!(another_clients_code_or_refresh_token, CATALOG);

async fn expired_code(s: TestServer) {
    let f = setup(&s, json!({})).await;
    let code = authorize(&s, &f.client, &[]).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    invalid_grant(&exchange(&s, &f.client, &code, REDIRECT, Some(VERIFIER)).await);
    log_is_clean(&s);
}
both!(
    expired_code,
    "[oauth]\ncode_ttl = \"10s\"\n[scopes.catalog]\n\"documents.read\" = \"Read\"\n\"documents.write\" = \"Write\"\n\"profile\" = \"Profile\"\n"
);

async fn offline_access(s: TestServer) {
    let f = setup(
        &s,
        json!({"scopes": ["documents.read", "documents.write", "profile", "offline_access"]}),
    )
    .await;
    let t = grant(&s, &f.client, &[("scope", "documents.read")]).await;
    assert_eq!(t.scope, "documents.read");
    assert!(t.rt.is_none(), "no offline_access, no refresh token");
    accepted(&s, &t.at).await;
    let t = grant(&s, &f.client, &[("scope", "documents.read offline_access")]).await;
    assert_eq!(t.scope, "documents.read offline_access");
    let rt = t.rt.unwrap();
    let t2 = tokens(&s, &refresh(&s, &f.client, &rt, None).await);
    assert!(t2.rt.is_some());
    log_is_clean(&s);
}
both!(offline_access, OFFLINE_CATALOG);

async fn refresh_scope(s: TestServer) {
    let f = setup(&s, json!({})).await;
    let t = grant(&s, &f.client, &[]).await;
    // Narrower: works, the token carries just that.
    let narrow = tokens(
        &s,
        &refresh(
            &s,
            &f.client,
            t.rt.as_deref().unwrap(),
            Some("documents.read"),
        )
        .await,
    );
    assert_eq!(narrow.scope, "documents.read");
    assert_eq!(claims(&narrow.at)["scope"], "documents.read");
    let v = accepted(&s, &narrow.at).await;
    assert_eq!(v["scopes"], json!(["documents.read"]));
    // Wider than granted (even if the client may have it): invalid_scope.
    let rt = narrow.rt.unwrap();
    for wider in ["documents.read documents.write", "documents.write", "admin"] {
        oauth_error(
            &refresh(&s, &f.client, &rt, Some(wider)).await,
            400,
            "invalid_scope",
        );
    }
    // The refresh token still works after a refused scope: back to the
    // whole grant.
    let again = tokens(&s, &refresh(&s, &f.client, &rt, None).await);
    assert_eq!(again.scope, SCOPE);
    accepted(&s, &again.at).await;
    log_is_clean(&s);
}
both!(refresh_scope, CATALOG);

async fn revoking_the_refresh_token(s: TestServer) {
    let f = setup(&s, json!({})).await;
    let t = grant(&s, &f.client, &[]).await;
    let rt = t.rt.clone().unwrap();
    let t2 = tokens(&s, &refresh(&s, &f.client, &rt, None).await);
    let rt2 = t2.rt.clone().unwrap();
    let other = grant(&s, &f.client, &[]).await;
    let r = post_as(
        &s,
        "/oauth/revoke",
        &f.client,
        &[("token", &rt2), ("token_type_hint", "refresh_token")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    revoked(&s, &t.at).await;
    revoked(&s, &t2.at).await;
    invalid_grant(&refresh(&s, &f.client, &rt2, None).await);
    // The other grant stands.
    accepted(&s, &other.at).await;
    // Another client cannot revoke it (and is told nothing).
    let thief = register(&s, &f.org, json!({"name": "Thief"})).await;
    let ort = other.rt.clone().unwrap();
    let r = post_as(&s, "/oauth/revoke", &thief, &[("token", &ort)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    accepted(&s, &other.at).await;
    log_is_clean(&s);
}
both!(revoking_the_refresh_token, CATALOG);

async fn withdrawing_consent(s: TestServer) {
    let f = setup(&s, json!({})).await;
    let t = grant(&s, &f.client, &[]).await;
    let t2 = tokens(
        &s,
        &refresh(&s, &f.client, t.rt.as_deref().unwrap(), None).await,
    );
    accepted(&s, &t2.at).await;
    let r = s
        .delete(&format!("/v1/clients/{}/consents/{}", f.client.id, f.user))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    revoked(&s, &t.at).await;
    revoked(&s, &t2.at).await;
    invalid_grant(&refresh(&s, &f.client, t2.rt.as_deref().unwrap(), None).await);
    // A new authorization asks for consent again and works.
    let t3 = grant(&s, &f.client, &[]).await;
    accepted(&s, &t3.at).await;
    // Deleting the user ends their tokens at once too.
    assert_eq!(s.delete(&format!("/v1/users/{}", f.user)).await.status, 204);
    revoked(&s, &t3.at).await;
    invalid_grant(&refresh(&s, &f.client, t3.rt.as_deref().unwrap(), None).await);
    log_is_clean(&s);
}
both!(withdrawing_consent, CATALOG);

// ------------------------------------------------------------ real client libraries

/// A server whose public URL is the address it listens on (the issuer is
/// the address the libraries reach).
async fn server_at_its_own_url(backend: Backend) -> Option<TestServer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let s = TestServer::start_with(
        backend,
        OFFLINE_CATALOG,
        &[
            ("LATCHKEY_LISTEN", &format!("127.0.0.1:{port}")),
            ("LATCHKEY_PUBLIC_URL", &url),
        ],
    )
    .await?;
    assert_eq!(s.url, url, "the server did not listen where it was told");
    Some(s)
}

const LIB_REDIRECT: &str = "http://127.0.0.1:8765/callback";

/// A client on `LIB_REDIRECT` and Alice; the script's environment.
async fn flow_env(s: &TestServer, name: &str) -> (Vec<(String, String)>, Fixture) {
    let f = setup(
        s,
        json!({"name": name, "redirect_uris": [LIB_REDIRECT],
               "scopes": ["documents.read", "profile", "offline_access"]}),
    )
    .await;
    let env = vec![
        ("LATCHKEY_ISSUER".to_owned(), s.url.clone()),
        ("FLOW_CLIENT_ID".to_owned(), f.client.id.clone()),
        (
            "FLOW_CLIENT_SECRET".to_owned(),
            f.client.secret.clone().unwrap(),
        ),
        ("FLOW_REDIRECT_URI".to_owned(), LIB_REDIRECT.to_owned()),
        ("FLOW_EMAIL".to_owned(), EMAIL.to_owned()),
        ("FLOW_PASSWORD".to_owned(), PASSWORD.to_owned()),
    ];
    (env, f)
}

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

/// What both scripts report of the code flow.
fn check_flow_run(v: &Value, s: &TestServer, f: &Fixture) {
    let issuer = s.url.as_str();
    assert_eq!(v["state_matches"], true, "{v}");
    assert_eq!(v["iss"], issuer, "{v}");
    let t = &v["token"];
    assert_eq!(t["scope"], "documents.read profile offline_access", "{v}");
    assert_eq!(t["expires_in"], 3600, "{v}");
    assert_eq!(t["has_refresh_token"], true, "{v}");
    for c in [&v["claims"], &v["refreshed_claims"]] {
        assert_eq!(c["alg"], "EdDSA", "{v}");
        assert_eq!(c["typ"], "at+jwt", "{v}");
        assert_eq!(c["iss"], issuer, "{v}");
        assert_eq!(c["aud"], issuer, "{v}");
        assert_eq!(c["sub"], f.user.as_str(), "{v}");
        assert_eq!(c["client_id"], f.client.id.as_str(), "{v}");
        assert_eq!(c["org_id"], f.org.as_str(), "{v}");
        assert!(
            c["gid"].as_str().is_some_and(|g| g.starts_with("grt_")),
            "{v}"
        );
    }
    assert_eq!(v["refreshed_claims"]["gid"], v["claims"]["gid"], "{v}");
    assert_eq!(v["refresh_rotated"], true, "{v}");
    let i = &v["introspection"];
    assert_eq!(i["active"], true, "{v}");
    assert_eq!(i["client_id"], f.client.id.as_str(), "{v}");
    assert_eq!(i["sub"], f.user.as_str(), "{v}");
    assert_eq!(i["scope"], "documents.read profile offline_access", "{v}");
    assert_eq!(v["after_revoke"], json!({"active": false}), "{v}");
    assert_eq!(v["access_after_revoke"], json!({"active": false}), "{v}");
}

async fn python_authlib_code_flow(backend: Backend) {
    let script = clients_dir().join("python/authlib_code_flow.py");
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
    let (env, f) = flow_env(&s, "Authlib app").await;
    let v = run_script(&s, "python3", &[&script], &env).await;
    check_flow_run(&v, &s, &f);
    log_is_clean(&s);
}

async fn node_openid_client_code_flow(backend: Backend) {
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
    let (env, f) = flow_env(&s, "openid-client app").await;
    let v = run_script(
        &s,
        "node",
        &[&dir.join("openid_client_code_flow.mjs")],
        &env,
    )
    .await;
    check_flow_run(&v, &s, &f);
    log_is_clean(&s);
}

mod python_authlib_code_flow {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        python_authlib_code_flow(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        python_authlib_code_flow(Backend::Postgres).await;
    }
}

mod node_openid_client_code_flow {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        node_openid_client_code_flow(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        node_openid_client_code_flow(Backend::Postgres).await;
    }
}
