//! `GET /oauth/authorize` end to end, on SQLite and PostgreSQL: a browser
//! (a reqwest client keeping cookies, following no redirects) goes through
//! the sign-in and consent pages by reading their forms.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{PUBLIC_URL, TestServer};
use reqwest::Url;
use serde_json::{Value, json};

const CATALOG: &str = r#"
[scopes.catalog]
"documents.read" = "Read your documents"
"documents.write" = "Create and change your documents"
"profile" = "See your name & email"
"#;

const REDIRECT: &str = "https://app.example/cb";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const EMAIL: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery staple";
const WRONG_LOGIN: &str = "The email or password is incorrect.";

struct Fixture {
    org: String,
    client_id: String,
}

/// An organization "Acme" with a client and the user Alice.
async fn setup(s: &TestServer, client: Value) -> Fixture {
    let org = s.org().await;
    let mut body = json!({
        "name": "Docs <App>",
        "redirect_uris": [REDIRECT, "https://app.example/cb2?tenant=1", "http://127.0.0.1:8765/cb"],
        "scopes": ["documents.read", "documents.write", "profile"],
        "public": true,
    });
    if let (Some(b), Some(extra)) = (body.as_object_mut(), client.as_object()) {
        for (k, v) in extra {
            b.insert(k.clone(), v.clone());
        }
    }
    let r = s.post(&format!("/v1/orgs/{org}/clients"), body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let client_id = r.json()["client_id"].as_str().unwrap().to_owned();
    let r = s
        .post(
            &format!("/v1/orgs/{org}/users"),
            json!({"email": "Alice@Example.com", "password": PASSWORD, "role": "member"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    s.remember(PASSWORD);
    Fixture { org, client_id }
}

/// A browser: keeps cookies, follows no redirect.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

/// The standard request's parameters, `changes` replacing or adding some
/// (an empty value removes one).
fn params<'a>(client_id: &'a str, changes: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut p: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", "documents.read profile"),
        ("state", "st<&>ate 1"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in changes {
        p.retain(|(pk, _)| pk != k);
        if !v.is_empty() {
            p.push((k, v));
        }
    }
    p
}

#[derive(Debug)]
struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Page {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// The value of the hidden field `name` of the page's form.
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

    /// The page's form's action, as a path.
    fn action(&self) -> String {
        let marker = "action=\"";
        let start = self.text.find(marker).unwrap() + marker.len();
        let end = self.text[start..].find('"').unwrap() + start;
        self.text[start..end].to_owned()
    }

    /// Asserts an HTML page with the pages' security headers.
    fn html(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("text/html; charset=utf-8")
        );
        self.secured();
        assert!(self.text.starts_with("<!doctype html>"), "{}", self.text);
        self
    }

    fn secured(&self) {
        let csp = self.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("form-action"), "{csp}");
        assert_eq!(self.header("x-frame-options").as_deref(), Some("DENY"));
        assert_eq!(self.header("cache-control").as_deref(), Some("no-store"));
        assert_eq!(
            self.header("referrer-policy").as_deref(),
            Some("no-referrer")
        );
    }

    /// Asserts a 303 and answers its location, parsed.
    fn redirect(&self) -> Url {
        assert_eq!(self.status, 303, "{}", self.text);
        self.secured();
        Url::parse(&self.header("location").unwrap()).unwrap()
    }

    /// Asserts an error page (never a redirect) with this status.
    fn error_page(&self, status: u16) -> &Self {
        self.html(status);
        assert!(self.header("location").is_none());
        self
    }
}

fn param(url: &Url, name: &str) -> Option<String> {
    let all: Vec<String> = url
        .query_pairs()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect();
    assert!(all.len() <= 1, "{name} repeated in {url}");
    all.into_iter().next()
}

async fn send(s: &TestServer, req: reqwest::RequestBuilder) -> Page {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    assert!(status < 500, "a {status}: {text}");
    s.check_no_secret_in(&text, "a page");
    Page {
        status,
        headers,
        text,
    }
}

async fn authorize(s: &TestServer, b: &reqwest::Client, q: &[(&str, &str)]) -> Page {
    send(s, b.get(s.at(&format!("/oauth/authorize?{}", query(q))))).await
}

async fn authorize_raw(s: &TestServer, b: &reqwest::Client, raw_query: &str) -> Page {
    send(s, b.get(s.at(&format!("/oauth/authorize?{raw_query}")))).await
}

async fn submit(s: &TestServer, b: &reqwest::Client, page: &Page, fields: &[(&str, &str)]) -> Page {
    send(
        s,
        b.post(s.at(&page.action()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(query(fields)),
    )
    .await
}

async fn sign_in(
    s: &TestServer,
    b: &reqwest::Client,
    login: &Page,
    email: &str,
    password: &str,
) -> Page {
    let flow = login.field("flow");
    submit(
        s,
        b,
        login,
        &[("flow", &flow), ("email", email), ("password", password)],
    )
    .await
}

async fn decide(s: &TestServer, b: &reqwest::Client, consent: &Page, decision: &str) -> Page {
    let flow = consent.field("flow");
    submit(s, b, consent, &[("flow", &flow), ("decision", decision)]).await
}

/// Asserts a successful answer on `REDIRECT`, and answers the code.
fn code_of(s: &TestServer, url: &Url, state: Option<&str>) -> String {
    assert_eq!(
        format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap(),
            url.path()
        ),
        REDIRECT
    );
    assert_eq!(param(url, "error"), None, "{url}");
    assert_eq!(param(url, "state").as_deref(), state);
    assert_eq!(param(url, "iss").as_deref(), Some(PUBLIC_URL));
    let code = param(url, "code").unwrap();
    assert!(code.starts_with("lk_ac_"), "{code}");
    assert_eq!(code.len(), "lk_ac_".len() + 44);
    s.remember(&code);
    code
}

fn error_of(url: &Url, error: &str, state: Option<&str>) {
    assert!(url.as_str().starts_with(REDIRECT), "{url}");
    assert_eq!(param(url, "error").as_deref(), Some(error), "{url}");
    assert!(param(url, "error_description").is_some_and(|d| !d.is_empty()));
    assert_eq!(param(url, "state").as_deref(), state);
    assert_eq!(param(url, "iss").as_deref(), Some(PUBLIC_URL));
    assert_eq!(param(url, "code"), None);
}

async fn consents(s: &TestServer, client_id: &str) -> Vec<Value> {
    let r = s.get(&format!("/v1/clients/{client_id}/consents")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["data"].as_array().unwrap().clone()
}

async fn full_flow(s: TestServer) {
    let f = setup(&s, json!({})).await;
    let b = browser();
    let login = authorize(&s, &b, &params(&f.client_id, &[])).await;
    login.html(200);
    let cookie = login.header("set-cookie").unwrap();
    assert!(cookie.starts_with("lk_oauth_csrf="), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/oauth"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "public_url is http: {cookie}");
    assert!(login.text.contains("Docs &#60;App&#62;") || login.text.contains("Docs &lt;App&gt;"));
    assert!(!login.text.contains("Docs <App>"));
    assert!(login.text.contains("Acme"));
    assert!(login.text.contains("<label for=\"email\">"));
    assert!(login.text.contains("<label for=\"password\">"));
    assert!(!login.text.contains("<script"));
    assert_eq!(login.action(), "/oauth/authorize/login");

    // The stylesheet the pages link to.
    let css = send(&s, b.get(s.at("/oauth/assets/style.css"))).await;
    assert_eq!(css.status, 200);
    assert_eq!(
        css.header("content-type").as_deref(),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(
        css.header("cache-control").as_deref(),
        Some("public, max-age=3600")
    );
    assert!(login.text.contains("href=\"/oauth/assets/style.css\""));

    // The email is case-insensitive.
    let consent = sign_in(&s, &b, &login, "ALICE@example.com", PASSWORD).await;
    consent.html(200);
    assert_eq!(consent.action(), "/oauth/authorize/consent");
    assert!(consent.text.contains("Read your documents"));
    assert!(consent.text.contains("documents.read"));
    assert!(
        consent.text.contains("See your name &#38; email")
            || consent.text.contains("See your name &amp; email")
    );
    assert!(!consent.text.contains("Create and change"), "not requested");
    assert!(consent.text.contains(EMAIL));
    assert!(consent.text.contains("app.example"));
    assert!(consent.text.contains("value=\"allow\"") && consent.text.contains("value=\"deny\""));
    let done = decide(&s, &b, &consent, "allow").await;
    let url = done.redirect();
    let code = code_of(&s, &url, Some("st<&>ate 1"));
    let c = consents(&s, &f.client_id).await;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["scopes"], json!(["documents.read", "profile"]));

    // The code is not in the log (the harness also checks every
    // remembered secret when the server stops).
    assert!(!s.log().contains(&code));

    // A second authorization, in another browser: consent remembered,
    // the code comes right after sign-in.
    let b2 = browser();
    let login = authorize(&s, &b2, &params(&f.client_id, &[("state", "second")])).await;
    login.html(200);
    let done = sign_in(&s, &b2, &login, EMAIL, PASSWORD).await;
    let code2 = code_of(&s, &done.redirect(), Some("second"));
    assert_ne!(code, code2);

    // A subset of what was consented to: skipped too.
    let login = authorize(
        &s,
        &b2,
        &params(&f.client_id, &[("scope", "profile"), ("state", "")]),
    )
    .await;
    let done = sign_in(&s, &b2, &login, EMAIL, PASSWORD).await;
    code_of(&s, &done.redirect(), None);

    // prompt=consent asks again.
    let login = authorize(&s, &b2, &params(&f.client_id, &[("prompt", "consent")])).await;
    let consent = sign_in(&s, &b2, &login, EMAIL, PASSWORD).await;
    consent.html(200);
    assert!(consent.text.contains("Read your documents"));
    code_of(
        &s,
        &decide(&s, &b2, &consent, "allow").await.redirect(),
        Some("st<&>ate 1"),
    );

    // More scopes than consented: asked again; consent is the union.
    let login = authorize(
        &s,
        &b2,
        &params(&f.client_id, &[("scope", "documents.write")]),
    )
    .await;
    let consent = sign_in(&s, &b2, &login, EMAIL, PASSWORD).await;
    consent.html(200);
    assert!(consent.text.contains("Create and change your documents"));
    code_of(
        &s,
        &decide(&s, &b2, &consent, "allow").await.redirect(),
        Some("st<&>ate 1"),
    );
    let c = consents(&s, &f.client_id).await;
    assert_eq!(
        c[0]["scopes"],
        json!(["documents.read", "profile", "documents.write"])
    );

    // No scope parameter: the client's registered scopes, all consented now.
    let login = authorize(&s, &b2, &params(&f.client_id, &[("scope", "")])).await;
    let done = sign_in(&s, &b2, &login, EMAIL, PASSWORD).await;
    code_of(&s, &done.redirect(), Some("st<&>ate 1"));

    // A redirect URI with a query keeps it; the answer follows with `&`.
    let login = authorize(
        &s,
        &b2,
        &params(
            &f.client_id,
            &[("redirect_uri", "https://app.example/cb2?tenant=1")],
        ),
    )
    .await;
    let done = sign_in(&s, &b2, &login, EMAIL, PASSWORD).await;
    let loc = done.header("location").unwrap();
    assert!(
        loc.starts_with("https://app.example/cb2?tenant=1&code=lk_ac_"),
        "{loc}"
    );
    s.remember(&param(&done.redirect(), "code").unwrap());
    let _ = f.org;
}
both!(full_flow, CATALOG);

async fn deny(s: TestServer) {
    let f = setup(&s, json!({})).await;
    let b = browser();
    let login = authorize(&s, &b, &params(&f.client_id, &[])).await;
    let consent = sign_in(&s, &b, &login, EMAIL, PASSWORD).await;
    consent.html(200);
    let url = decide(&s, &b, &consent, "deny").await.redirect();
    error_of(&url, "access_denied", Some("st<&>ate 1"));
    assert!(consents(&s, &f.client_id).await.is_empty());
    // Neither allow nor deny: refused on the page.
    let flow = consent.field("flow");
    submit(&s, &b, &consent, &[("flow", &flow), ("decision", "maybe")])
        .await
        .error_page(400);
}
both!(deny, CATALOG);

async fn wrong_credentials(s: TestServer) {
    let f = setup(&s, json!({})).await;
    let b = browser();
    let login = authorize(&s, &b, &params(&f.client_id, &[])).await;
    let wrong_password = sign_in(&s, &b, &login, EMAIL, "not the password").await;
    let unknown_email = sign_in(&s, &b, &login, "bob@example.com", PASSWORD).await;
    let bad_email = sign_in(&s, &b, &login, "not an email", PASSWORD).await;
    for page in [&wrong_password, &unknown_email, &bad_email] {
        page.html(400);
        assert!(page.text.contains(WRONG_LOGIN), "{}", page.text);
        // The form is shown again, ready for another try.
        assert_eq!(page.action(), "/oauth/authorize/login");
    }
    assert!(
        wrong_password.text.contains(&format!("value=\"{EMAIL}\"")),
        "the email is kept"
    );
    // Both pages say the same, apart from the email typed.
    assert_eq!(
        wrong_password.text.replace(EMAIL, "X"),
        unknown_email.text.replace("bob@example.com", "X")
    );
    // A user of another organization cannot sign in to this client.
    let other = s.org().await;
    let r = s
        .post(
            &format!("/v1/orgs/{other}/users"),
            json!({"email": "carol@example.com", "password": PASSWORD, "role": "member"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let page = sign_in(&s, &b, &login, "carol@example.com", PASSWORD).await;
    page.html(400);
    assert!(page.text.contains(WRONG_LOGIN));
    // The form still works after failures.
    sign_in(&s, &b, &wrong_password, EMAIL, PASSWORD)
        .await
        .html(200);
}
both!(wrong_credentials, CATALOG);

async fn login_rate_limit(s: TestServer) {
    let f = setup(&s, json!({})).await;
    let b = browser();
    let login = authorize(&s, &b, &params(&f.client_id, &[])).await;
    for _ in 0..10 {
        sign_in(&s, &b, &login, EMAIL, "wrong password!")
            .await
            .html(400);
    }
    // The 11th attempt on the account is refused, even with the right
    // password, before any password check.
    let page = sign_in(&s, &b, &login, EMAIL, PASSWORD).await;
    page.html(429);
    assert!(
        page.text.contains("Too many sign-in attempts"),
        "{}",
        page.text
    );
    assert!(!page.text.contains(WRONG_LOGIN));
    // Per address: 50 attempts, whatever the account (these 11 counted).
    for i in 0..39 {
        let email = format!("nobody{i}@example.com");
        sign_in(&s, &b, &login, &email, "x").await.html(400);
    }
    sign_in(&s, &b, &login, "someone@example.com", "x")
        .await
        .html(429);
}
both!(login_rate_limit, CATALOG);

async fn client_and_redirect_errors_are_shown(s: TestServer) {
    let f = setup(&s, json!({})).await;
    let b = browser();
    let id = f.client_id.as_str();
    for uri in [
        "https://app.example/cb/extra",
        "https://app.example/cb?x=1",
        "https://app.example/cb#frag",
        "https://App.Example/cb",
        "HTTPS://app.example/cb",
        "https://app.example/CB",
        "https://user@app.example/cb",
        "https://app.example:8443/cb",
        "https://app.example:443/cb",
        "http://127.0.0.1:8766/cb",
        "https://evil.example/cb",
        "https://app.example/cb2",
        "https://app.example.evil.example/cb",
        "https://app.example/cb ",
    ] {
        let page = authorize(&s, &b, &params(id, &[("redirect_uri", uri)])).await;
        page.error_page(400);
        assert!(page.text.contains("not registered"), "{uri}: {}", page.text);
    }
    // Missing redirect_uri, even though the client has one it could mean.
    authorize(&s, &b, &params(id, &[("redirect_uri", "")]))
        .await
        .error_page(400);
    // Unknown, malformed or missing client.
    for cid in ["cli_AAAAAAAAAAAAAAAAAAAAAA", "nope", "cli_<script>", ""] {
        let page = authorize(&s, &b, &params(id, &[("client_id", cid)])).await;
        page.error_page(400);
        assert!(!page.text.contains("<script>"));
    }
    // Repeated client_id or redirect_uri, even with equal values.
    let q = query(&params(id, &[]));
    authorize_raw(&s, &b, &format!("{q}&client_id={id}"))
        .await
        .error_page(400);
    authorize_raw(
        &s,
        &b,
        &format!("{q}&redirect_uri=https%3A%2F%2Fapp.example%2Fcb"),
    )
    .await
    .error_page(400);
    // A client that may not use the authorization code grant.
    let r = s
        .post(
            &format!("/v1/orgs/{}/clients", f.org),
            json!({"name": "Backend", "redirect_uris": [REDIRECT], "grant_types": ["client_credentials"], "scopes": ["profile"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let backend = r.json()["client_id"].as_str().unwrap().to_owned();
    authorize(&s, &b, &params(&backend, &[("scope", "profile")]))
        .await
        .error_page(400);
    // Even a bad response_type is shown, not redirected, when the
    // redirect URI is not the client's.
    authorize(
        &s,
        &b,
        &params(
            id,
            &[
                ("redirect_uri", "https://evil.example/cb"),
                ("response_type", "token"),
            ],
        ),
    )
    .await
    .error_page(400);
}
both!(client_and_redirect_errors_are_shown, CATALOG);

async fn other_errors_are_redirected(s: TestServer) {
    let f = setup(&s, json!({})).await;
    let b = browser();
    let id = f.client_id.as_str();
    let state = Some("st<&>ate 1");
    for (changes, error) in [
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge_method", "")], "invalid_request"),
        (
            vec![("code_challenge", ""), ("code_challenge_method", "")],
            "invalid_request",
        ),
        (vec![("code_challenge", "tooshort")], "invalid_request"),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (
            vec![("response_type", "code token")],
            "unsupported_response_type",
        ),
        (vec![("response_type", "")], "invalid_request"),
        (vec![("scope", "documents.read admin")], "invalid_scope"),
        (vec![("scope", "documents.*")], "invalid_scope"),
        (vec![("prompt", "none")], "login_required"),
    ] {
        let page = authorize(&s, &b, &params(id, &changes)).await;
        error_of(&page.redirect(), error, state);
    }
    // A repeated scope (or any other parameter).
    let q = query(&params(id, &[]));
    let page = authorize_raw(&s, &b, &format!("{q}&scope=profile")).await;
    error_of(&page.redirect(), "invalid_request", state);
    let page = authorize_raw(&s, &b, &format!("{q}&code_challenge_method=S256")).await;
    error_of(&page.redirect(), "invalid_request", state);
    // No state: none returned.
    let page = authorize(
        &s,
        &b,
        &params(id, &[("state", ""), ("response_type", "token")]),
    )
    .await;
    error_of(&page.redirect(), "unsupported_response_type", None);
}
both!(other_errors_are_redirected, CATALOG);

async fn pkce_optional_for_some_confidential_clients(s: TestServer) {
    let f = setup(&s, json!({"public": false, "require_pkce": false})).await;
    let b = browser();
    let id = f.client_id.as_str();
    let no_pkce = [("code_challenge", ""), ("code_challenge_method", "")];
    let login = authorize(&s, &b, &params(id, &no_pkce)).await;
    login.html(200);
    let consent = sign_in(&s, &b, &login, EMAIL, PASSWORD).await;
    consent.html(200);
    let url = decide(&s, &b, &consent, "allow").await.redirect();
    code_of(&s, &url, Some("st<&>ate 1"));
    // plain is refused all the same.
    let page = authorize(&s, &b, &params(id, &[("code_challenge_method", "plain")])).await;
    error_of(&page.redirect(), "invalid_request", Some("st<&>ate 1"));
}
both!(pkce_optional_for_some_confidential_clients, CATALOG);

async fn forms_are_bound_to_the_browser(s: TestServer) {
    let f = setup(&s, json!({})).await;
    let b = browser();
    let login = authorize(&s, &b, &params(&f.client_id, &[])).await;
    login.html(200);
    let flow = login.field("flow");

    // No cookie at all: 403.
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    submit(
        &s,
        &bare,
        &login,
        &[("flow", &flow), ("email", EMAIL), ("password", PASSWORD)],
    )
    .await
    .error_page(403);

    // Another browser's cookie: 403.
    let other = browser();
    authorize(&s, &other, &params(&f.client_id, &[]))
        .await
        .html(200);
    submit(
        &s,
        &other,
        &login,
        &[("flow", &flow), ("email", EMAIL), ("password", PASSWORD)],
    )
    .await
    .error_page(403);

    // A tampered flow token: refused.
    let (payload, tag) = flow.split_once('.').unwrap();
    for bad in [
        format!("{payload}.{}", tag.replace(&tag[..2], "AA")),
        format!("{}x.{tag}", payload),
        "garbage".to_owned(),
        String::new(),
    ] {
        let page = submit(
            &s,
            &b,
            &login,
            &[("flow", &bad), ("email", EMAIL), ("password", PASSWORD)],
        )
        .await;
        assert!(matches!(page.status, 400 | 403), "{}", page.text);
        page.html(page.status);
    }
    // A repeated field: refused.
    submit(
        &s,
        &b,
        &login,
        &[
            ("flow", &flow),
            ("email", EMAIL),
            ("email", EMAIL),
            ("password", PASSWORD),
        ],
    )
    .await
    .error_page(400);

    // The sign-in form's token cannot be posted as a consent.
    send(
        &s,
        b.post(s.at("/oauth/authorize/consent"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(query(&[("flow", &flow), ("decision", "allow")])),
    )
    .await
    .error_page(400);

    // The consent form: no cookie, or another browser's, is refused too.
    let consent = sign_in(&s, &b, &login, EMAIL, PASSWORD).await;
    consent.html(200);
    let cflow = consent.field("flow");
    for client in [&bare, &other] {
        let page = submit(
            &s,
            client,
            &consent,
            &[("flow", &cflow), ("decision", "allow")],
        )
        .await;
        page.error_page(403);
    }
    assert!(consents(&s, &f.client_id).await.is_empty());
    // The right browser still gets its code.
    code_of(
        &s,
        &decide(&s, &b, &consent, "allow").await.redirect(),
        Some("st<&>ate 1"),
    );
}
both!(forms_are_bound_to_the_browser, CATALOG);

async fn deleted_client_or_user_mid_flow(s: TestServer) {
    let f = setup(&s, json!({})).await;
    let b = browser();
    let login = authorize(&s, &b, &params(&f.client_id, &[])).await;
    let consent = sign_in(&s, &b, &login, EMAIL, PASSWORD).await;
    consent.html(200);
    // The user is deleted before allowing: no code.
    let users = s.get(&format!("/v1/orgs/{}/users", f.org)).await.json();
    let uid = users["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(s.delete(&format!("/v1/users/{uid}")).await.status, 204);
    decide(&s, &b, &consent, "allow").await.error_page(400);
    // The client is deleted: its flows end on an error page.
    let login = authorize(&s, &b, &params(&f.client_id, &[])).await;
    login.html(200);
    assert_eq!(
        s.delete(&format!("/v1/clients/{}", f.client_id))
            .await
            .status,
        204
    );
    sign_in(&s, &b, &login, EMAIL, PASSWORD)
        .await
        .error_page(400);
}
both!(deleted_client_or_user_mid_flow, CATALOG);
