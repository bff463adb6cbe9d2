//! Signing in to the console, its sessions, signing out.
//!
//! A session is a row of `console_sessions`, found by the SHA-256 of a
//! random token the browser holds in the `lk_console` cookie (`HttpOnly`,
//! `SameSite=Strict`, `Secure` when `public_url` is https, scoped to the
//! console's path). It ends `[console] session_ttl` (12 h) after sign-in,
//! after `idle_timeout` (2 h) without a request, at sign-out (the row is
//! deleted), when
//! its root key is revoked, or, for an account, when the account is
//! deleted. Nothing the browser holds says who it is: the server looks
//! the session up on every request.
//!
//! The CSRF token of a session is an HMAC of its digest under a key
//! derived from the master key: not stored, the same on every node, and
//! useless in another session. The sign-in form has its own, bound to a
//! random `lk_console_pre` cookie (also `SameSite=Strict`), so that no
//! other site can sign a browser in.
//!
//! Sign-in attempts are limited as the OAuth sign-in page's are (per
//! client address, shared by both pages, and per account), and an email
//! with no account costs the same password work as a wrong password.

use std::net::SocketAddr;

use askama::Template;
use aws_lc_rs::hmac;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_core::keyfmt;
use latchkey_store::console::Session;
use latchkey_store::oauth::User;
use latchkey_store::{Org, Page};
use subtle::ConstantTimeEq;

use super::{AppState, Fail, FormData, Layout, PREFIX, answer, ok, page_response, see_other};
use crate::app::App;
use crate::http::authorize::{base_path, random_token, read_token_cookie};
use crate::service::Principal;

pub const SESSION_COOKIE: &str = "lk_console";
const PRE_COOKIE: &str = "lk_console_pre";
/// Activity is written at most this often per session (or a quarter of
/// the idle timeout, if shorter).
const TOUCH_EVERY_MS: i64 = 60 * 1000;
/// Most accounts one email signs in to at once.
const MAX_ACCOUNTS: u32 = 20;
const KEY_LABEL: &str = "latchkey/console/v1";

const WRONG_LOGIN: &str = "The email or password is incorrect.";
const WRONG_ROOT_KEY: &str = "This root key is not valid (mistyped, revoked or unknown).";
const TOO_MANY: &str = "Too many sign-in attempts. Wait a few minutes, then try again.";

type Peer = Option<axum::Extension<ConnectInfo<SocketAddr>>>;

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn key(app: &App) -> [u8; 32] {
    app.master_key.derive(KEY_LABEL)
}

fn mac(app: &App, what: &str, value: &[u8]) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA256, &key(app));
    let mut ctx = hmac::Context::with_key(&k);
    ctx.update(what.as_bytes());
    ctx.update(b"\n");
    ctx.update(value);
    URL_SAFE_NO_PAD.encode(ctx.sign())
}

fn same(a: &str, b: Option<&str>) -> bool {
    b.is_some_and(|b| bool::from(a.as_bytes().ct_eq(b.as_bytes())))
}

/// The signed-in session of a request.
pub struct Current {
    pub digest: Vec<u8>,
    /// The session's accounts that still exist, in sign-in order (none
    /// for a root key's session).
    pub accounts: Vec<User>,
    /// Set for a session opened with a root key (checked on this request).
    pub root: Option<Principal>,
    /// The CSRF token of every form of this session.
    pub csrf: String,
}

impl Current {
    pub fn csrf_ok(&self, sent: Option<&str>) -> bool {
        same(&self.csrf, sent)
    }
}

/// The accounts of `ids` that still exist, in order.
async fn accounts(app: &App, ids: &[String]) -> Result<Vec<User>, Fail> {
    let mut out = Vec::new();
    for id in ids {
        match app.store.get_user(id).await {
            Ok(u) => out.push(u),
            Err(latchkey_store::StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// The session a request carries, if it is still good. An ended one is
/// deleted on the way.
pub async fn current(app: &App, headers: &HeaderMap) -> Result<Option<Current>, Fail> {
    let Some(token) = read_token_cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let digest = keyfmt::digest(&token).to_vec();
    let Some(s) = app.store.get_session(&digest).await? else {
        return Ok(None);
    };
    let now = app.now_ms();
    let end = || async {
        app.store.delete_session(&digest).await?;
        Ok::<_, Fail>(None)
    };
    let idle = ms(app.config.console.idle_timeout.0);
    if s.expires_at <= now || s.seen_at.saturating_add(idle) <= now {
        return end().await;
    }
    let root = match &s.root_key_digest {
        None => None,
        Some(d) => {
            let Ok(d) = <[u8; 32]>::try_from(d.as_slice()) else {
                return end().await;
            };
            match app.root_key(d).await? {
                Some(k) if k.revoked_at.is_none_or(|at| at > now) => Some(Principal {
                    root_key: k,
                    request_id: None,
                }),
                _ => return end().await,
            }
        }
    };
    let accounts = accounts(app, &s.user_ids).await?;
    if root.is_none() && accounts.is_empty() {
        // Every account it signed in to was deleted.
        return end().await;
    }
    if now.saturating_sub(s.seen_at) >= TOUCH_EVERY_MS.min(idle / 4) {
        app.store.touch_session(&digest, now).await?;
    }
    let csrf = mac(app, "csrf", &digest);
    Ok(Some(Current {
        digest,
        accounts,
        root,
        csrf,
    }))
}

/// Why a request has no session: signed out (to the sign-in page, then
/// back to `here`), or, on a navigation from another site without the
/// session cookie, maybe only held back by `SameSite=Strict` (a link to
/// the console from the API's own site): then the page loads `here`
/// again from this site, where the browser sends it.
pub fn signed_out(headers: &HeaderMap, here: &str) -> Fail {
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site");
    if cross_site && read_token_cookie(headers, SESSION_COOKIE).is_none() {
        Fail::Reload(here.to_owned())
    } else {
        Fail::SignIn(here.to_owned())
    }
}

fn cookie(app: &App, name: &str, value: &str, max_age: Option<i64>) -> Option<HeaderValue> {
    let url = app.config.public_url();
    let secure = if url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let age = max_age
        .map(|a| format!("; Max-Age={a}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={}{PREFIX}; HttpOnly; SameSite=Strict{secure}{age}",
        base_path(url)
    ))
    .ok()
}

// ---- Pages ----------------------------------------------------------------

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage<'a> {
    layout: Layout,
    csrf: String,
    next: &'a str,
    email: &'a str,
    /// `password` or `root_key`: which form was used last.
    method: &'a str,
    error: Option<&'a str>,
}

fn bare_layout(app: &App, title: &str) -> Layout {
    Layout {
        base: base_path(app.config.public_url()).to_owned(),
        title: title.to_owned(),
        org: None,
        tab: "",
        who: None,
        csrf: String::new(),
    }
}

/// The sign-in page, with a fresh pre-session cookie when the browser has
/// none.
fn sign_in_response(
    app: &App,
    headers: &HeaderMap,
    status: StatusCode,
    next: &str,
    email: &str,
    method: &str,
    error: Option<&str>,
) -> Response {
    let (pre, fresh) = match read_token_cookie(headers, PRE_COOKIE) {
        Some(c) => (c, false),
        None => match random_token() {
            Some(c) => (c, true),
            None => return Fail::Internal.respond(app),
        },
    };
    let base = base_path(app.config.public_url());
    let next = if super::safe_next(base, next) {
        next
    } else {
        ""
    };
    let page = SignInPage {
        layout: bare_layout(app, "Sign in"),
        csrf: mac(app, "sign-in", pre.as_bytes()),
        next,
        email,
        method,
        error,
    };
    let mut res = page_response(status, &page);
    if fresh && let Some(v) = cookie(app, PRE_COOKIE, &pre, None) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// `GET /console`: to the organization's keys (or the list of
/// organizations), or to sign-in.
pub async fn home(State(app): AppState, headers: HeaderMap) -> Response {
    let r = async {
        let base = base_path(app.config.public_url());
        let Some(c) = current(&app, &headers).await? else {
            return match signed_out(&headers, &format!("{base}{PREFIX}")) {
                Fail::Reload(here) => Err(Fail::Reload(here)),
                _ => Ok(see_other(&format!("{base}{PREFIX}/sign-in"))),
            };
        };
        if c.root.is_none()
            && let [one] = c.accounts.as_slice()
        {
            return Ok(see_other(&format!(
                "{base}{PREFIX}/orgs/{}/keys",
                one.org_id
            )));
        }
        Ok(see_other(&format!("{base}{PREFIX}/orgs")))
    }
    .await;
    answer(&app, r)
}

/// `GET /console/sign-in`.
pub async fn sign_in_page(
    State(app): AppState,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = FormData::query(q.as_deref());
    if let Ok(Some(_)) = current(&app, &headers).await {
        let base = base_path(app.config.public_url());
        let next = q.one("next").filter(|n| super::safe_next(base, n));
        return see_other(next.unwrap_or(&format!("{base}{PREFIX}")));
    }
    sign_in_response(
        &app,
        &headers,
        StatusCode::OK,
        q.one("next").unwrap_or(""),
        "",
        "password",
        None,
    )
}

/// `POST /console/sign-in`: email and password, or a root key.
pub async fn sign_in(
    State(app): AppState,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = FormData::parse(&body);
    let next = form.one("next").unwrap_or("");
    let method = if form.one("method") == Some("root_key") {
        "root_key"
    } else {
        "password"
    };
    let email = form.one("email").unwrap_or("").trim();
    let page =
        |status, error| sign_in_response(&app, &headers, status, next, email, method, Some(error));
    let pre = read_token_cookie(&headers, PRE_COOKIE);
    let Some(pre) = pre else {
        return page(
            StatusCode::FORBIDDEN,
            "Your browser did not send the cookie this page needs. Allow cookies for this site and try again.",
        );
    };
    if !same(&mac(&app, "sign-in", pre.as_bytes()), form.one("csrf")) {
        return page(
            StatusCode::FORBIDDEN,
            "This form expired. Try again on this page.",
        );
    }
    let ip = crate::http::gate::client_ip(&app, peer.map(|p| (p.0).0), &headers);
    let now = app.now_ms();
    let mut session = Session {
        digest: Vec::new(),
        user_ids: Vec::new(),
        root_key_digest: None,
        created_at: now,
        seen_at: now,
        expires_at: now.saturating_add(ms(app.config.console.session_ttl.0)),
    };
    if method == "root_key" {
        let ip_text = ip.map(|i| i.to_string()).unwrap_or_default();
        if !crate::oauth::authorize::attempt_allowed(&app, "console:root-key", &ip_text, ip).await {
            return page(StatusCode::TOO_MANY_REQUESTS, TOO_MANY);
        }
        let cred = form.one("root_key").unwrap_or("").trim();
        match crate::http::extract::authenticate_root(&app, cred).await {
            Ok(p) if p.require("orgs.read").is_ok() => {
                session.root_key_digest = Some(p.root_key.digest.clone());
                tracing::info!(root_key_id = %p.root_key.id, "console: signed in with a root key");
            }
            Ok(_) => {
                return page(
                    StatusCode::FORBIDDEN,
                    "This root key cannot list organizations: the console needs one with the orgs.read scope.",
                );
            }
            Err(e) if e.code == latchkey_core::Code::Internal => {
                return Fail::Internal.respond(&app);
            }
            Err(_) => return page(StatusCode::BAD_REQUEST, WRONG_ROOT_KEY),
        }
    } else {
        let normalized = crate::oauth::manage::normalize_email(email);
        let account = normalized.as_deref().unwrap_or("");
        if !crate::oauth::authorize::attempt_allowed(&app, "console", account, ip).await {
            return page(StatusCode::TOO_MANY_REQUESTS, TOO_MANY);
        }
        let password = form.one("password").unwrap_or("");
        let users = match &normalized {
            Some(e) if password.len() <= crate::oauth::password::MAX_LEN => {
                match app.store.users_by_email_any_org(e, MAX_ACCOUNTS).await {
                    Ok(u) => u,
                    Err(e) => return Fail::from(e).respond(&app),
                }
            }
            _ => Vec::new(),
        };
        if users.is_empty() {
            // The same work as a wrong password.
            crate::oauth::password::verify(password.to_owned(), None).await;
        }
        for u in users {
            if crate::oauth::password::verify(password.to_owned(), Some(u.password_hash.clone()))
                .await
            {
                session.user_ids.push(u.id);
            }
        }
        if session.user_ids.is_empty() {
            return page(StatusCode::BAD_REQUEST, WRONG_LOGIN);
        }
        tracing::info!(user_ids = %session.user_ids.join(" "), "console: signed in");
    }
    let Some(token) = random_token() else {
        return Fail::Internal.respond(&app);
    };
    session.digest = keyfmt::digest(&token).to_vec();
    let store = &app.store;
    if let Err(e) = store.prune_sessions(now).await {
        tracing::warn!(error = %e, "console: could not prune ended sessions");
    }
    if let Err(e) = store.create_session(&session).await {
        return Fail::from(e).respond(&app);
    }
    let base = base_path(app.config.public_url());
    let to = if super::safe_next(base, next) {
        next.to_owned()
    } else {
        format!("{base}{PREFIX}")
    };
    let mut res = see_other(&to);
    let h = res.headers_mut();
    if let Some(v) = cookie(&app, SESSION_COOKIE, &token, None) {
        h.append(header::SET_COOKIE, v);
    }
    if let Some(v) = cookie(&app, PRE_COOKIE, "", Some(0)) {
        h.append(header::SET_COOKIE, v);
    }
    res
}

/// `POST /console/sign-out`: ends the session here and now.
pub async fn sign_out(State(app): AppState, headers: HeaderMap, body: Bytes) -> Response {
    let form = FormData::parse(&body);
    let r = async {
        if let Some(c) = current(&app, &headers).await? {
            if !c.csrf_ok(form.one("csrf")) {
                return Err(Fail::Csrf);
            }
            app.store.delete_session(&c.digest).await?;
        }
        let base = base_path(app.config.public_url());
        let mut res = see_other(&format!("{base}{PREFIX}/sign-in"));
        if let Some(v) = cookie(&app, SESSION_COOKIE, "", Some(0)) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
        Ok(res)
    }
    .await;
    answer(&app, r)
}

// ---- Choosing an organization -------------------------------------------------

pub struct OrgLine {
    pub name: String,
    pub id: String,
    pub href: String,
    pub role: &'static str,
}

#[derive(Template)]
#[template(path = "console/orgs.html")]
struct OrgsPage {
    layout: Layout,
    orgs: Vec<OrgLine>,
    next: Option<String>,
    root: bool,
}

/// `GET /console/orgs`: the organizations this session can open (a root
/// key: every one, by pages; an email: its accounts').
pub async fn orgs(State(app): AppState, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    let q = FormData::query(q.as_deref());
    let r = async {
        let base = base_path(app.config.public_url()).to_owned();
        let Some(c) = current(&app, &headers).await? else {
            return Err(Fail::SignIn(format!("{base}{PREFIX}/orgs")));
        };
        let line = |o: &Org, role: &'static str| OrgLine {
            name: o.name.clone(),
            id: o.id.clone(),
            href: format!("{base}{PREFIX}/orgs/{}/keys", o.id),
            role,
        };
        let mut lines = Vec::new();
        let mut next = None;
        let label;
        let role;
        if let Some(p) = &c.root {
            label = format!("Root key {}", p.root_key.name);
            role = "Root key";
            let (page, limit) = crate::service::page(Some(50), q.one("cursor"))?;
            let mut rows = app.store.list_orgs(&Page { ..page }).await?;
            next = crate::service::next_cursor(&mut rows, limit, |o| (o.created_at, o.id.as_str()))
                .map(|c| format!("{base}{PREFIX}/orgs?cursor={c}"));
            lines.extend(rows.iter().map(|o| line(o, "Root key")));
        } else {
            label = c
                .accounts
                .first()
                .map(|u| u.email.clone())
                .unwrap_or_default();
            role = "";
            for u in &c.accounts {
                let o = app.store.get_org(&u.org_id).await?;
                lines.push(line(&o, if u.role == "admin" { "Admin" } else { "Member" }));
            }
        }
        let mut layout = bare_layout(&app, "Organizations");
        layout.who = Some(super::WhoNav {
            label,
            role,
            switch: false,
        });
        layout.csrf = c.csrf.clone();
        Ok(ok(&OrgsPage {
            layout,
            orgs: lines,
            next,
            root: c.root.is_some(),
        }))
    }
    .await;
    answer(&app, r)
}
