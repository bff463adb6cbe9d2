//! The console (SPEC §11) end to end, on SQLite and PostgreSQL: through
//! plain HTTP (a reqwest "browser" that keeps cookies and reads the
//! forms), for its security (cookies, CSRF, CSP, no-store, roles,
//! organizations, sessions), and in a real browser (Debian's headless
//! Chromium driven by playwright-core, axe-core on every page, screenshots
//! in `target/console-screenshots/`). No key, secret or session token
//! reaches the server log (the harness checks it when a server stops).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Backend, Resp, TestServer};
use serde_json::json;

const CATALOG: &str = r#"
[scopes.catalog]
"documents.read" = "List and retrieve documents"
"documents.write" = "Update documents, add fields/signers, upload files"
"documents.delete" = "Delete documents"
"templates.read" = "List templates"
"templates.write" = "Create and edit templates"
"#;

const ADMIN: &str = "ada@example.com";
const MEMBER: &str = "grace@example.com";
const PASSWORD: &str = "correct horse battery";

// ------------------------------------------------------------ a browser

/// A reqwest client with its own cookies, following no redirect.
struct Browser<'a> {
    s: &'a TestServer,
    http: reqwest::Client,
}

impl<'a> Browser<'a> {
    fn new(s: &'a TestServer) -> Self {
        Browser {
            s,
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Resp {
        self.s.send(self.http.get(self.s.at(path))).await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        self.s
            .send(self.http.post(self.s.at(path)).form(form))
            .await
    }

    /// Signs in with email and password: the sign-in page, then its form.
    async fn sign_in(&self, email: &str, password: &str) -> Resp {
        let page = self.get("/console/sign-in").await;
        assert_eq!(page.status, 200, "{}", page.text);
        let csrf = csrf(&page.text);
        self.post(
            "/console/sign-in",
            &[
                ("csrf", &csrf),
                ("method", "password"),
                ("email", email),
                ("password", password),
            ],
        )
        .await
    }

    /// The CSRF token of this session (from any page's sign-out form).
    async fn csrf(&self, org: &str) -> String {
        let page = self.get(&format!("/console/orgs/{org}/keys")).await;
        assert_eq!(page.status, 200, "{}", page.text);
        csrf(&page.text)
    }
}

/// The value of the first `csrf` field of a page.
fn csrf(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no csrf field in {html}"));
    let rest = &html[at + 19..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// The secret shown once in a page (`<input id="secret" ... value="...">`).
fn shown_secret(html: &str) -> String {
    let at = html.find("id=\"secret\"").expect("no secret on the page");
    let rest = &html[at..];
    let v = rest.find("value=\"").unwrap() + 7;
    rest[v..v + rest[v..].find('"').unwrap()].to_owned()
}

/// The path a 303 goes to.
fn location(r: &Resp) -> String {
    assert_eq!(r.status, 303, "{}", r.text);
    r.header("location").unwrap()
}

fn set_cookies(r: &Resp) -> Vec<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The value of cookie `name` in a `Set-Cookie` line.
fn cookie_value(line: &str, name: &str) -> Option<String> {
    line.strip_prefix(&format!("{name}="))
        .map(|rest| rest.split(';').next().unwrap().to_owned())
}

/// Every console page's headers: a strict CSP, no framing, no caching.
fn assert_page_headers(r: &Resp) {
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(!csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(r.header("referrer-policy").as_deref(), Some("no-referrer"));
    assert!(r.header("x-request-id").is_some());
}

async fn user(s: &TestServer, org: &str, email: &str, role: &str) -> String {
    let r = s
        .post(
            &format!("/v1/orgs/{org}/users"),
            json!({"email": email, "password": PASSWORD, "role": role}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["id"].as_str().unwrap().to_owned()
}

async fn org_named(s: &TestServer, name: &str) -> String {
    let r = s.post("/v1/orgs", json!({ "name": name })).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["id"].as_str().unwrap().to_owned()
}

/// Creates a key through the console's form and answers (id, secret).
async fn console_key(b: &Browser<'_>, org: &str, csrf_: &str, name: &str) -> (String, String) {
    let r = b
        .post(
            &format!("/console/orgs/{org}/keys"),
            &[
                ("csrf", csrf_),
                ("name", name),
                ("kind", "test:test"),
                ("scopes", "documents.read"),
                ("expires", "never"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_page_headers(&r);
    let secret = shown_secret(&r.text);
    b.s.remember(&secret);
    let at = r.text.find("<code>key_").unwrap() + 6;
    let id = r.text[at..at + 26].to_owned();
    (id, secret)
}

async fn key_status(s: &TestServer, id: &str) -> String {
    let r = s.get(&format!("/v1/keys/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["status"].as_str().unwrap().to_owned()
}

// ------------------------------------------------------------ sessions

async fn sessions_and_headers(s: TestServer) {
    let org = s.org().await;
    let admin = user(&s, &org, ADMIN, "admin").await;
    let b = Browser::new(&s);

    // Signed out: every page goes to sign-in, and comes back after.
    let r = b.get("/console").await;
    assert_eq!(location(&r), "/console/sign-in");
    assert_page_headers(&r);
    let r = b.get(&format!("/console/orgs/{org}/logs")).await;
    assert_eq!(
        location(&r),
        format!("/console/sign-in?next=%2Fconsole%2Forgs%2F{org}%2Flogs")
    );

    let page = b.get("/console/sign-in").await;
    assert_eq!(page.status, 200);
    assert_page_headers(&page);
    assert_eq!(
        page.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    let pre = set_cookies(&page);
    assert_eq!(pre.len(), 1, "{pre:?}");
    assert!(pre[0].starts_with("lk_console_pre="), "{pre:?}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(pre[0].contains(attr), "{attr} in {}", pre[0]);
    }
    assert!(!pre[0].contains("Secure"), "http public_url: no Secure");
    assert!(page.text.contains("<label for=\"email\">"));
    assert!(page.text.contains("<label for=\"password\">"));
    assert!(page.text.contains("<label for=\"root_key\">"));
    let token = csrf(&page.text);

    // The sign-in form's own CSRF token: missing, wrong, or without the
    // cookie it is bound to, the form is refused and nobody is signed in.
    let fields = |csrf: &'static str| {
        vec![
            ("csrf", csrf),
            ("method", "password"),
            ("email", ADMIN),
            ("password", PASSWORD),
        ]
    };
    let r = b.post("/console/sign-in", &fields("")[1..]).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(
        set_cookies(&r)
            .iter()
            .all(|c| !c.starts_with("lk_console="))
    );
    let r = b.post("/console/sign-in", &fields("forged")).await;
    assert_eq!(r.status, 403);
    let stranger = Browser::new(&s);
    let r = stranger
        .post(
            "/console/sign-in",
            &[
                ("csrf", token.as_str()),
                ("method", "password"),
                ("email", ADMIN),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "another browser's form");
    assert!(r.text.contains("cookie"), "{}", r.text);

    // Wrong password, unknown email: one answer.
    let wrong = b.sign_in(ADMIN, "not the password").await;
    assert_eq!(wrong.status, 400);
    assert!(wrong.text.contains("The email or password is incorrect."));
    assert!(wrong.text.contains("value=\"ada@example.com\""), "kept");
    let unknown = b.sign_in("nobody@example.com", PASSWORD).await;
    assert_eq!(unknown.status, 400);
    assert!(unknown.text.contains("The email or password is incorrect."));

    // Signed in: a session cookie, HttpOnly and SameSite=Strict.
    let r = b.sign_in(ADMIN, PASSWORD).await;
    assert_eq!(location(&r), "/console");
    let cookies = set_cookies(&r);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("lk_console="))
        .unwrap_or_else(|| panic!("{cookies:?}"));
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(session.contains(attr), "{attr} in {session}");
    }
    assert!(!session.contains("Max-Age"), "a browser-session cookie");
    let token = cookie_value(session, "lk_console").unwrap();
    assert_eq!(token.len(), 43);
    s.remember(&token);
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("lk_console_pre=;") && c.contains("Max-Age=0")),
        "the pre-session cookie is cleared: {cookies:?}"
    );
    let r = b.get("/console").await;
    assert_eq!(location(&r), format!("/console/orgs/{org}/keys"));
    let keys = b.get(&format!("/console/orgs/{org}/keys")).await;
    assert_eq!(keys.status, 200);
    assert_page_headers(&keys);
    assert!(keys.text.contains(ADMIN));
    assert!(keys.text.contains("No API keys yet."), "the empty state");
    // A link from another site: the browser holds the SameSite=Strict
    // cookie back, so the page loads itself again from here (where it
    // sends it) rather than asking to sign in.
    let cross = s
        .send(
            Browser::new(&s)
                .http
                .get(s.at(&format!("/console/orgs/{org}/keys")))
                .header("sec-fetch-site", "cross-site"),
        )
        .await;
    assert_eq!(cross.status, 200);
    assert_page_headers(&cross);
    assert!(
        cross.text.contains(&format!(
            "http-equiv=\"refresh\" content=\"0; url=/console/orgs/{org}/keys\""
        )),
        "{}",
        cross.text
    );
    let same = s
        .send(
            Browser::new(&s)
                .http
                .get(s.at(&format!("/console/orgs/{org}/keys")))
                .header("sec-fetch-site", "same-origin"),
        )
        .await;
    assert_eq!(same.status, 303, "from this site: to sign-in");
    // Signed in, the sign-in page sends to the console (or `next`).
    let r = b
        .get(&format!(
            "/console/sign-in?next=%2Fconsole%2Forgs%2F{org}%2Flogs"
        ))
        .await;
    assert_eq!(location(&r), format!("/console/orgs/{org}/logs"));
    let r = b
        .get("/console/sign-in?next=https%3A%2F%2Fevil.example%2F")
        .await;
    assert_eq!(location(&r), "/console", "never to another site");

    // The assets: the stylesheet and scripts the CSP allows.
    for (path, kind) in [
        ("/console/assets/console.css", "text/css"),
        ("/console/assets/console.js", "text/javascript"),
        ("/console/assets/htmx.min.js", "text/javascript"),
    ] {
        let r = b.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap().starts_with(kind));
        assert_eq!(
            r.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
    }
    assert_eq!(b.get("/console/assets/../../etc/passwd").await.status, 404);
    assert_eq!(b.get("/console/assets/nope.js").await.status, 404);

    // Sign-out needs this session's CSRF token; then the session is gone
    // on the server: the same cookie, sent again, opens nothing.
    let session_csrf = b.csrf(&org).await;
    let r = b.post("/console/sign-out", &[("csrf", "forged")]).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        b.get(&format!("/console/orgs/{org}/keys")).await.status,
        200
    );
    let r = b
        .post("/console/sign-out", &[("csrf", session_csrf.as_str())])
        .await;
    assert_eq!(location(&r), "/console/sign-in");
    assert!(
        set_cookies(&r)
            .iter()
            .any(|c| c.starts_with("lk_console=;") && c.contains("Max-Age=0"))
    );
    let replay = Browser::new(&s);
    let replay = s
        .send(
            replay
                .http
                .get(s.at(&format!("/console/orgs/{org}/keys")))
                .header("cookie", format!("lk_console={token}")),
        )
        .await;
    assert_eq!(replay.status, 303, "a signed-out session is dead");
    assert!(
        replay
            .header("location")
            .unwrap()
            .starts_with("/console/sign-in")
    );

    // Deleting the account ends its sessions.
    let r = b.sign_in(ADMIN, PASSWORD).await;
    assert_eq!(r.status, 303);
    assert_eq!(
        b.get(&format!("/console/orgs/{org}/keys")).await.status,
        200
    );
    assert_eq!(s.delete(&format!("/v1/users/{admin}")).await.status, 204);
    let r = b.get(&format!("/console/orgs/{org}/keys")).await;
    assert!(location(&r).starts_with("/console/sign-in"));
}
both!(sessions_and_headers);

async fn root_key_sessions(s: TestServer) {
    let acme = org_named(&s, "Acme").await;
    let globex = org_named(&s, "Globex <Corp>").await;
    // A root key that may read organizations and keys, nothing else.
    let r = s
        .post(
            "/v1/root-keys",
            json!({"name": "support", "scopes": ["orgs.read", "keys.read", "logs.read"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let root = r.json()["key"].as_str().unwrap().to_owned();
    let root_id = r.json()["id"].as_str().unwrap().to_owned();
    let b = Browser::new(&s);
    let page = b.get("/console/sign-in").await;
    let token = csrf(&page.text);
    let sign_in = |key: String| {
        let token = token.clone();
        let b = &b;
        async move {
            b.post(
                "/console/sign-in",
                &[
                    ("csrf", token.as_str()),
                    ("method", "root_key"),
                    ("root_key", key.as_str()),
                ],
            )
            .await
        }
    };
    // A made-up key, and a key without orgs.read, are refused.
    let r = sign_in("lk_root_notakey".into()).await;
    assert_eq!(r.status, 400);
    assert!(r.text.contains("This root key is not valid"));
    let r = s
        .post(
            "/v1/root-keys",
            json!({"name": "verify only", "scopes": ["verify"]}),
        )
        .await;
    let narrow = r.json()["key"].as_str().unwrap().to_owned();
    let r = sign_in(narrow).await;
    assert_eq!(r.status, 403);
    assert!(r.text.contains("orgs.read"));

    let r = sign_in(root.clone()).await;
    assert_eq!(location(&r), "/console");
    let r = b.get("/console").await;
    assert_eq!(location(&r), "/console/orgs", "the organization switcher");
    let orgs = b.get("/console/orgs").await;
    assert_eq!(orgs.status, 200);
    assert!(orgs.text.contains(&format!("/console/orgs/{acme}/keys")));
    assert!(
        orgs.text.contains("Globex &#60;Corp&#62;") || orgs.text.contains("Globex &lt;Corp&gt;")
    );
    // Any organization, as far as the key's scopes go.
    let keys = b.get(&format!("/console/orgs/{globex}/keys")).await;
    assert_eq!(keys.status, 200);
    assert!(keys.text.contains("Switch organization"));
    assert!(!keys.text.contains("Create key"), "no keys.create scope");
    assert_eq!(
        b.get(&format!("/console/orgs/{acme}/logs")).await.status,
        200
    );
    assert_eq!(
        b.get(&format!("/console/orgs/{acme}/apps")).await.status,
        403,
        "no clients.read scope"
    );
    let c = b.csrf(&acme).await;
    let r = b
        .post(
            &format!("/console/orgs/{acme}/keys"),
            &[("csrf", c.as_str()), ("name", "x"), ("kind", "test:test")],
        )
        .await;
    assert_eq!(r.status, 403, "no keys.create scope");
    assert_eq!(
        b.get("/console/orgs/org_0000000000000000000000/keys")
            .await
            .status,
        404
    );

    // Revoking the root key ends its sessions.
    let r = s
        .post(&format!("/v1/root-keys/{root_id}/revoke"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = b.get(&format!("/console/orgs/{acme}/keys")).await;
    assert!(location(&r).starts_with("/console/sign-in"));
}
both!(root_key_sessions);

/// `public_url` on https: every cookie is `Secure`. Sessions end at
/// `[console] session_ttl`, and after `idle_timeout` without a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_cookies_and_expiry() {
    let Some(s) = TestServer::start_with(
        Backend::Sqlite,
        "[console]\nsession_ttl = \"3s\"\nidle_timeout = \"2s\"\n",
        &[("LATCHKEY_PUBLIC_URL", "https://latchkey.test")],
    )
    .await
    else {
        return;
    };
    let org = s.org().await;
    user(&s, &org, ADMIN, "admin").await;
    // reqwest keeps Secure cookies for https only: send them by hand.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = s.send(http.get(s.at("/console/sign-in"))).await;
    let pre_line = set_cookies(&page).remove(0);
    assert!(pre_line.contains("; Secure"), "{pre_line}");
    let pre = cookie_value(&pre_line, "lk_console_pre").unwrap();
    let sign_in = || {
        s.send(
            http.post(s.at("/console/sign-in"))
                .header("cookie", format!("lk_console_pre={pre}"))
                .form(&[
                    ("csrf", csrf(&page.text).as_str()),
                    ("method", "password"),
                    ("email", ADMIN),
                    ("password", PASSWORD),
                ]),
        )
    };
    let r = sign_in().await;
    assert_eq!(r.status, 303, "{}", r.text);
    let line = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("lk_console="))
        .unwrap();
    assert!(
        line.contains("; Secure") && line.contains("HttpOnly"),
        "{line}"
    );
    let token = cookie_value(&line, "lk_console").unwrap();
    s.remember(&token);
    let open = |token: String| {
        s.send(
            http.get(s.at(&format!("/console/orgs/{org}/keys")))
                .header("cookie", format!("lk_console={token}")),
        )
    };
    assert_eq!(open(token.clone()).await.status, 200);
    // Idle for longer than idle_timeout: ended.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(open(token.clone()).await.status, 303, "idle session ended");

    // Busy, but past session_ttl: ended too.
    let r = sign_in().await;
    let token = cookie_value(
        &set_cookies(&r)
            .into_iter()
            .find(|c| c.starts_with("lk_console="))
            .unwrap(),
        "lk_console",
    )
    .unwrap();
    s.remember(&token);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(open(token.clone()).await.status, 200, "kept alive");
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(open(token).await.status, 303, "past session_ttl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_attempts_are_limited() {
    let Some(s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let org = s.org().await;
    user(&s, &org, ADMIN, "admin").await;
    let b = Browser::new(&s);
    for i in 0..10 {
        let r = b.sign_in(ADMIN, "wrong password").await;
        assert_eq!(r.status, 400, "attempt {i}");
    }
    let r = b.sign_in(ADMIN, PASSWORD).await;
    assert_eq!(r.status, 429, "even the right password, over the limit");
    assert!(r.text.contains("Too many sign-in attempts"));
    assert!(
        set_cookies(&r)
            .iter()
            .all(|c| !c.starts_with("lk_console="))
    );
    // Another account is not locked out by it.
    user(&s, &org, MEMBER, "member").await;
    assert_eq!(b.sign_in(MEMBER, PASSWORD).await.status, 303);
}

// ------------------------------------------------------------ roles and organizations

async fn roles_and_organizations(s: TestServer) {
    let org = s.org().await;
    let other = org_named(&s, "Other").await;
    user(&s, &org, ADMIN, "admin").await;
    let member_id = user(&s, &org, MEMBER, "member").await;
    let outsider_id = user(&s, &other, "olive@example.com", "admin").await;
    let (theirs, _) = s
        .key(&other, json!({"name": "theirs", "kind": "test"}))
        .await;

    let admin = Browser::new(&s);
    assert_eq!(admin.sign_in(ADMIN, PASSWORD).await.status, 303);
    let member = Browser::new(&s);
    assert_eq!(member.sign_in(MEMBER, PASSWORD).await.status, 303);
    let ac = admin.csrf(&org).await;
    let mc = member.csrf(&org).await;
    assert_ne!(ac, mc, "each session has its own CSRF token");

    let (admins_key, _) = console_key(&admin, &org, &ac, "admin's key").await;
    let (own_key, _) = console_key(&member, &org, &mc, "member's key").await;
    let r = s
        .post(
            &format!("/v1/orgs/{org}/clients"),
            json!({"name": "App", "redirect_uris": ["https://app.example/cb"]}),
        )
        .await;
    assert_eq!(r.status, 201);
    let app = r.json()["id"].as_str().unwrap().to_owned();
    let p = |rest: &str| format!("/console/orgs/{org}{rest}");

    // A member sees everything of the organization...
    for path in [
        "/keys",
        "/apps",
        "/logs",
        "/members",
        &format!("/keys/{admins_key}"),
        &format!("/apps/{app}"),
    ] {
        assert_eq!(member.get(&p(path)).await.status, 200, "{path}");
    }
    // ... and the admin's key page offers it no action.
    let page = member.get(&p(&format!("/keys/{admins_key}"))).await;
    assert!(!page.text.contains("/revoke\""));
    assert!(
        page.text
            .contains("Only an admin, or the member who created this key")
    );
    // Admin pages and actions are refused on the server, not only hidden.
    for path in [
        "/apps/new".to_owned(),
        format!("/apps/{app}/delete"),
        format!("/apps/{app}/rotate-secret"),
        format!("/members/{outsider_id}/remove"),
        format!("/keys/{admins_key}/revoke"),
        format!("/keys/{admins_key}/rotate"),
    ] {
        let r = member.get(&p(&path)).await;
        assert!(r.status == 403 || r.status == 404, "{path}: {}", r.status);
    }
    let forbidden: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            p("/apps"),
            vec![
                ("name", "Rogue"),
                ("redirect_uris", "https://rogue.example/cb"),
                ("grant_types", "authorization_code"),
            ],
        ),
        (p(&format!("/apps/{app}/rotate-secret")), vec![]),
        (p(&format!("/apps/{app}/delete")), vec![]),
        (
            p(&format!("/apps/{app}/consents/{member_id}/revoke")),
            vec![],
        ),
        (
            p("/members"),
            vec![
                ("email", "intruder@example.com"),
                ("password", "long enough"),
                ("role", "admin"),
            ],
        ),
        (p(&format!("/members/{member_id}/remove")), vec![]),
        (
            p(&format!("/keys/{admins_key}/revoke")),
            vec![("reason", "mine now")],
        ),
        (
            p(&format!("/keys/{admins_key}/rotate")),
            vec![("grace_period", "0")],
        ),
    ];
    for (path, fields) in &forbidden {
        let mut form = vec![("csrf", mc.as_str())];
        form.extend(fields.iter().copied());
        let r = member.post(path, &form).await;
        assert_eq!(r.status, 403, "member POST {path}: {}", r.text);
        assert!(r.text.contains("Not allowed"), "{}", r.text);
    }
    assert_eq!(key_status(&s, &admins_key).await, "active");
    assert_eq!(s.get(&format!("/v1/clients/{app}")).await.status, 200);
    let users = s.get(&format!("/v1/orgs/{org}/users")).await.json();
    assert_eq!(users["data"].as_array().unwrap().len(), 2, "nobody added");

    // Its own key, it may rotate and revoke.
    let r = member
        .post(
            &p(&format!("/keys/{own_key}/rotate")),
            &[("csrf", mc.as_str()), ("grace_period", "3600")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_page_headers(&r);
    let rotated = shown_secret(&r.text);
    s.remember(&rotated);
    assert!(r.text.contains("The old key keeps working until"));
    assert_eq!(key_status(&s, &own_key).await, "rotating");
    let r = member
        .post(
            &p(&format!("/keys/{own_key}/revoke")),
            &[("csrf", mc.as_str()), ("reason", "done with it")],
        )
        .await;
    assert_eq!(location(&r), p(&format!("/keys/{own_key}?done=revoked")));
    assert_eq!(key_status(&s, &own_key).await, "revoked");

    // Another organization: its pages, and its records through this
    // organization's pages, are not found (the same answer as for nothing).
    for path in ["/keys", "/logs", "/members", "/apps"] {
        let r = member.get(&format!("/console/orgs/{other}{path}")).await;
        assert_eq!(r.status, 404, "{path}");
    }
    assert_eq!(member.get(&p(&format!("/keys/{theirs}"))).await.status, 404);
    assert_eq!(admin.get(&p(&format!("/keys/{theirs}"))).await.status, 404);
    assert_eq!(
        admin
            .post(
                &p(&format!("/keys/{theirs}/revoke")),
                &[("csrf", ac.as_str())]
            )
            .await
            .status,
        404
    );
    assert_eq!(
        admin
            .post(
                &format!("/console/orgs/{other}/keys/{theirs}/revoke"),
                &[("csrf", ac.as_str())]
            )
            .await
            .status,
        404
    );
    assert_eq!(
        admin
            .post(
                &p(&format!("/members/{outsider_id}/remove")),
                &[("csrf", ac.as_str())]
            )
            .await
            .status,
        404
    );
    assert_eq!(key_status(&s, &theirs).await, "active");
    assert_eq!(s.get(&format!("/v1/users/{outsider_id}")).await.status, 200);
    assert_eq!(admin.get(&p("/keys/not-an-id")).await.status, 404);

    // Every form that changes something needs this session's CSRF token:
    // missing, another session's, or forged, it is refused (403) and
    // nothing changes.
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            p("/keys"),
            vec![("name", "csrf test"), ("kind", "test:test")],
        ),
        (p(&format!("/keys/{admins_key}/revoke")), vec![]),
        (
            p(&format!("/keys/{admins_key}/rotate")),
            vec![("grace_period", "0")],
        ),
        (
            p("/apps"),
            vec![
                ("name", "csrf app"),
                ("redirect_uris", "https://x.example/cb"),
            ],
        ),
        (p(&format!("/apps/{app}/rotate-secret")), vec![]),
        (p(&format!("/apps/{app}/delete")), vec![]),
        (
            p(&format!("/apps/{app}/consents/{member_id}/revoke")),
            vec![],
        ),
        (
            p("/members"),
            vec![
                ("email", "x@example.com"),
                ("password", "long enough"),
                ("role", "member"),
            ],
        ),
        (p(&format!("/members/{member_id}/remove")), vec![]),
        ("/console/sign-out".to_owned(), vec![]),
    ];
    for (path, fields) in &posts {
        for token in [None, Some(mc.as_str()), Some("forged")] {
            let mut form: Vec<(&str, &str)> = fields.clone();
            if let Some(t) = token {
                form.push(("csrf", t));
            }
            let r = admin.post(path, &form).await;
            assert_eq!(r.status, 403, "{path} with {token:?}: {}", r.text);
        }
    }
    assert_eq!(key_status(&s, &admins_key).await, "active");
    assert_eq!(s.get(&format!("/v1/clients/{app}")).await.status, 200);
    assert_eq!(s.get(&format!("/v1/users/{member_id}")).await.status, 200);
    assert_eq!(admin.get(&p("/keys")).await.status, 200, "still signed in");
    let keys = s.get(&format!("/v1/orgs/{org}/keys")).await.json();
    assert_eq!(keys["data"].as_array().unwrap().len(), 3, "no key made");

    // An admin does all of it; the log names who did it.
    let r = admin
        .post(
            &p(&format!("/members/{member_id}/remove")),
            &[("csrf", ac.as_str())],
        )
        .await;
    assert_eq!(location(&r), p("/members?done=removed"));
    assert_eq!(s.get(&format!("/v1/users/{member_id}")).await.status, 404);
    let r = member.get(&p("/keys")).await;
    assert!(
        location(&r).starts_with("/console/sign-in"),
        "the removed member is signed out"
    );
    let r = admin
        .post(&p(&format!("/apps/{app}/delete")), &[("csrf", ac.as_str())])
        .await;
    assert_eq!(location(&r), p("/apps"));
    assert_eq!(s.get(&format!("/v1/clients/{app}")).await.status, 404);
    let admin_id = s.get(&format!("/v1/orgs/{org}/users")).await.json()["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut actions = Vec::new();
    for _ in 0..40 {
        let log = s
            .get(&format!("/v1/orgs/{org}/logs?limit=200"))
            .await
            .json();
        actions = log["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "action")
            .map(|e| {
                (
                    e["actor"].as_str().unwrap().to_owned(),
                    e["action"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        if actions.iter().any(|(_, a)| a == "client.deleted") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        actions.contains(&(admin_id.clone(), "user.deleted".to_owned())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&(admin_id, "client.deleted".to_owned())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&(member_id.clone(), "key.revoked".to_owned())),
        "{actions:?}"
    );
}
both!(roles_and_organizations, CATALOG);

// ------------------------------------------------------------ keys, logs, apps

async fn keys_logs_and_apps(s: TestServer) {
    let org = s.org().await;
    user(&s, &org, ADMIN, "admin").await;
    let b = Browser::new(&s);
    assert_eq!(b.sign_in(ADMIN, PASSWORD).await.status, 303);
    let c = b.csrf(&org).await;
    let p = |rest: &str| format!("/console/orgs/{org}{rest}");

    // The form: the catalog's scopes grouped by resource, with their
    // descriptions; every control labelled.
    let form = b.get(&p("/keys/new")).await;
    assert_eq!(form.status, 200);
    for text in [
        "List and retrieve documents",
        "Create and edit templates",
        "value=\"documents.*\"",
        ">documents</p>",
        ">templates</p>",
        "value=\"test:test\"",
        "value=\"restricted:live\"",
    ] {
        assert!(form.text.contains(text), "{text}");
    }
    for id in [
        "name",
        "expires",
        "expires_on",
        "rl_limit",
        "rl_window",
        "ip_allowlist",
    ] {
        assert!(
            form.text.contains(&format!("for=\"{id}\"")),
            "label for {id}"
        );
    }
    // Refusals come back on the form, next to their field.
    let r = b
        .post(
            &p("/keys"),
            &[
                ("csrf", c.as_str()),
                ("name", ""),
                ("kind", "restricted:test"),
                ("scopes", "documents.*"),
                ("ip_allowlist", "not-an-ip"),
            ],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("field-error"));
    assert!(
        r.text.contains("value=\"documents.*\" checked"),
        "choices kept"
    );

    // A key, with every option; shown once, on a no-store page.
    let r = b
        .post(
            &p("/keys"),
            &[
                ("csrf", c.as_str()),
                ("name", "<script>alert(1)</script> & co"),
                ("kind", "test:test"),
                ("scopes", "documents.read"),
                ("scopes", "templates.read"),
                ("expires", "30"),
                ("rl_limit", "100"),
                ("rl_window", "60"),
                ("ip_allowlist", "203.0.113.0/24\n2001:db8::/32"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_page_headers(&r);
    let key = shown_secret(&r.text);
    s.remember(&key);
    assert!(key.starts_with("sk_test_"));
    assert!(r.text.contains("It will not be shown again"));
    assert!(!r.text.contains("<script>alert"), "escaped");
    assert!(r.text.contains("&#60;script&#62;") || r.text.contains("&lt;script&gt;"));
    let at = r.text.find("<code>key_").unwrap() + 6;
    let key_id = r.text[at..at + 26].to_owned();
    let record = s.get(&format!("/v1/keys/{key_id}")).await.json();
    assert_eq!(
        record["scopes"],
        json!(["documents.read", "templates.read"])
    );
    assert_eq!(record["ratelimit"], json!({"limit": 100, "window": 60}));
    assert_eq!(
        record["ip_allowlist"],
        json!(["203.0.113.0/24", "2001:db8::/32"])
    );
    assert!(record["expires_at"].is_string());
    // Never again: not on its page, not in the list.
    let page = b.get(&p(&format!("/keys/{key_id}"))).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("by You"));
    let list = b.get(&p("/keys")).await;
    assert!(
        list.text
            .contains(&record["start"].as_str().unwrap().to_string())
    );

    // Used: a valid call, one refused for its scope, then revoked.
    let v = s
        .verify(json!({"credential": key, "environment": "test", "required_scopes": ["documents.read"], "ip": "203.0.113.9"}))
        .await;
    assert_eq!(v["valid"], true, "{v}");
    let v = s
        .verify(json!({"credential": key, "environment": "test", "required_scopes": ["documents.write"], "ip": "203.0.113.9"}))
        .await;
    assert_eq!(v["code"], "INSUFFICIENT_SCOPE");
    let confirm = b.get(&p(&format!("/keys/{key_id}/revoke"))).await;
    assert!(confirm.text.contains("for=\"reason\""));
    let r = b
        .post(
            &p(&format!("/keys/{key_id}/revoke")),
            &[("csrf", c.as_str()), ("reason", "leaked in a ticket")],
        )
        .await;
    assert_eq!(location(&r), p(&format!("/keys/{key_id}?done=revoked")));
    let v = s
        .verify(json!({"credential": key, "environment": "test", "ip": "203.0.113.9"}))
        .await;
    assert_eq!(v["code"], "KEY_REVOKED");
    let page = b.get(&p(&format!("/keys/{key_id}?done=revoked"))).await;
    assert!(page.text.contains("leaked in a ticket"));
    assert!(page.text.contains("The key was revoked."));

    // The refused call in API Logs (written within a second), in the
    // chart, by filter.
    let mut logs = Resp {
        status: 0,
        headers: Default::default(),
        text: String::new(),
    };
    for _ in 0..40 {
        logs = b.get(&p(&format!("/logs?key_id={key_id}"))).await;
        if logs.text.contains("badge bad\">KEY_REVOKED") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(logs.status, 200);
    assert!(
        logs.text.contains("badge bad\">KEY_REVOKED"),
        "{}",
        logs.text
    );
    assert!(logs.text.contains("badge bad\">INSUFFICIENT_SCOPE"));
    assert!(logs.text.contains("badge ok\">VALID"));
    assert!(logs.text.contains("key.revoked"));
    assert!(logs.text.contains("203.0.113.9"));
    assert!(logs.text.contains("<svg"));
    assert!(logs.text.contains("class=\"s-valid\""), "a valid bar");
    assert!(
        logs.text.contains("KEY_REVOKED (hour from"),
        "a KEY_REVOKED bar"
    );
    let only = b
        .get(&p(&format!("/logs?key_id={key_id}&code=KEY_REVOKED")))
        .await;
    assert!(only.text.contains("badge bad\">KEY_REVOKED"));
    assert!(!only.text.contains("badge ok\">VALID"));
    assert!(!only.text.contains("key.revoked"), "actions have no code");
    let since = b
        .get(&p(
            "/logs?range=custom&since=2000-01-01T00:00&until=2000-01-02T00:00",
        ))
        .await;
    assert!(since.text.contains("Nothing logged in this time range."));
    let bad = b.get(&p("/logs?key_id=nope&code=NOPE")).await;
    assert_eq!(bad.status, 200);
    assert!(
        bad.text.contains("key_id: Must be a key id"),
        "{}",
        bad.text
    );

    // Search: by name prefix (any case), by start, by id; htmx gets the
    // results alone.
    let (_, _) = console_key(&b, &org, &c, "Reporting export").await;
    let found = b.get(&p("/keys?q=REPOR")).await;
    assert!(found.text.contains("Reporting export"));
    assert!(!found.text.contains("alert(1)"));
    let start = record["start"].as_str().unwrap();
    let by_start = b.get(&p(&format!("/keys?q={start}"))).await;
    assert!(by_start.text.contains("&#60;script&#62;") || by_start.text.contains("&lt;script&gt;"));
    assert!(!by_start.text.contains("Reporting export"));
    let by_id = b.get(&p(&format!("/keys?q={key_id}"))).await;
    assert!(by_id.text.contains(&key_id));
    let frag = s
        .send(
            b.http
                .get(s.at(&p("/keys?q=repor")))
                .header("hx-request", "true"),
        )
        .await;
    assert!(
        frag.text.starts_with("<div id=\"results\""),
        "{}",
        frag.text
    );
    assert!(!frag.text.contains("<html"));
    let none = b.get(&p("/keys?q=zzz")).await;
    assert!(none.text.contains("No key matches."));
    // A pasted key is searched by its start only, and not echoed back.
    let pasted = b.get(&p(&format!("/keys?q={key}"))).await;
    assert!(!pasted.text.contains(&key));

    // OAuth apps: register (confidential, HS256), the secret once; rotate.
    let r = b
        .post(
            &p("/apps"),
            &[
                ("csrf", c.as_str()),
                ("name", "Docs sync"),
                ("type", "confidential"),
                ("redirect_uris", "https://sync.example.com/cb"),
                ("grant_types", "authorization_code"),
                ("grant_types", "refresh_token"),
                ("scopes", "documents.read"),
                ("jwt_alg", "HS256"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_page_headers(&r);
    let secret = shown_secret(&r.text);
    s.remember(&secret);
    assert!(secret.starts_with("lk_cs_"));
    let at = r.text.find("<code>cli_").unwrap() + 6;
    let app = r.text[at..at + 26].to_owned();
    let rec = s.get(&format!("/v1/clients/{app}")).await.json();
    assert_eq!(rec["jwt_auth"], json!({"alg": "HS256"}));
    assert_eq!(rec["public"], false);
    let page = b.get(&p(&format!("/apps/{app}"))).await;
    assert!(page.text.contains("No user has authorized this app yet."));
    let r = b
        .post(
            &p(&format!("/apps/{app}/rotate-secret")),
            &[("csrf", c.as_str())],
        )
        .await;
    assert_eq!(r.status, 200);
    let rotated = shown_secret(&r.text);
    s.remember(&rotated);
    assert_ne!(rotated, secret);
    // A public app has no secret; a bad redirect URI is refused on the form.
    let r = b
        .post(
            &p("/apps"),
            &[
                ("csrf", c.as_str()),
                ("name", "SPA"),
                ("type", "public"),
                ("redirect_uris", "http://evil.example/cb"),
                ("grant_types", "authorization_code"),
            ],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.text.contains("must use https"), "{}", r.text);
    let r = b
        .post(
            &p("/apps"),
            &[
                ("csrf", c.as_str()),
                ("name", "SPA"),
                ("type", "public"),
                ("redirect_uris", "https://spa.example/cb"),
                ("grant_types", "authorization_code"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("A public app has no secret"));
    assert!(!r.text.contains("id=\"secret\""));
    let list = b.get(&p("/apps")).await;
    assert!(list.text.contains("Docs sync") && list.text.contains("SPA"));

    // Members: add one (escaped), refuse a duplicate.
    let r = b
        .post(
            &p("/members"),
            &[
                ("csrf", c.as_str()),
                ("email", "new@example.com"),
                ("password", "long enough pw"),
                ("role", "member"),
            ],
        )
        .await;
    assert_eq!(location(&r), p("/members?done=added"));
    let r = b
        .post(
            &p("/members"),
            &[
                ("csrf", c.as_str()),
                ("email", "NEW@example.com"),
                ("password", "long enough pw"),
                ("role", "member"),
            ],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.text.contains("already has a user with this email"));
    let members = b.get(&p("/members")).await;
    assert!(members.text.contains("new@example.com"));
    assert!(members.text.contains("Member"));
}
both!(keys_logs_and_apps, CATALOG);

// ------------------------------------------------------------ in a browser

fn screenshots_dir(backend: Backend) -> PathBuf {
    // tests/ -> crates/latchkey -> the workspace's target/.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    match backend {
        Backend::Sqlite => root,
        Backend::Postgres => root.join("postgres"),
    }
}

async fn browser(backend: Backend) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    let chromium =
        std::env::var("LATCHKEY_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let installed = dir
        .join("node_modules/playwright-core/package.json")
        .exists()
        && dir.join("node_modules/axe-core/package.json").exists();
    let chromium_ok = Path::new(&chromium).exists();
    if common::tool_or_skip(common::runs("node"), "node").is_none()
        || common::tool_or_skip(chromium_ok, "chromium (apt-get install chromium)").is_none()
        || common::tool_or_skip(
            installed,
            "playwright-core and axe-core (npm ci --prefix crates/latchkey/tests/console)",
        )
        .is_none()
    {
        return;
    }
    let Some(s) = TestServer::start_with(backend, CATALOG, &[]).await else {
        return;
    };
    let org = org_named(&s, "Acme Signatures").await;
    user(&s, &org, ADMIN, "admin").await;
    let other = org_named(&s, "Other").await;
    let (theirs, _) = s
        .key(&other, json!({"name": "theirs", "kind": "test"}))
        .await;
    let shots = screenshots_dir(backend);
    let out = tokio::process::Command::new("node")
        .arg(dir.join("console.mjs"))
        .current_dir(&dir)
        .env("LK_URL", &s.url)
        .env("LK_ROOT_KEY", &s.root_key)
        .env("LK_ORG", &org)
        .env("LK_ADMIN_EMAIL", ADMIN)
        .env("LK_ADMIN_PASSWORD", PASSWORD)
        .env("LK_MEMBER_EMAIL", MEMBER)
        .env("LK_MEMBER_PASSWORD", "member password 1")
        .env("LK_OTHER_KEY_ID", &theirs)
        .env("LK_SHOTS", &shots)
        .env("LK_CHROMIUM", &chromium)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or("");
    let report: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|_| panic!("the browser script failed:\n{stdout}\n{stderr}"));
    for secret in report["secrets"].as_array().unwrap() {
        s.remember(secret.as_str().unwrap());
    }
    let failures = report["failures"].as_array().unwrap();
    assert!(
        failures.is_empty() && out.status.success(),
        "browser checks failed:\n{}\n{stderr}",
        failures
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let checks = report["checks"].as_array().unwrap().len();
    let pages = report["pages_checked"].as_u64().unwrap();
    assert!(checks >= 60, "{checks} checks");
    assert!(pages >= 15, "{pages} pages");
    eprintln!(
        "browser: {checks} checks, {pages} pages checked with axe at 1280 and 360 px, screenshots in {}",
        shots.display()
    );
}

mod in_a_browser {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        browser(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        browser(Backend::Postgres).await;
    }
}
