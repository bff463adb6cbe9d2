//! `GET /oauth/authorize` and its pages (SPEC §8): sign-in, consent and
//! error pages rendered on the server (askama, auto-escaped; no script at
//! all), and the stylesheet they use. The logic is `oauth::authorize`.
//!
//! Every page is sent with a strict CSP (no `form-action`: browsers would
//! apply it to the redirect that follows the consent POST), `X-Frame-Options:
//! DENY` and `frame-ancestors 'none'` against clickjacking (RFC 9700
//! §4.16), `Cache-Control: no-store` and `Referrer-Policy: no-referrer`.
//! Redirects to the client are 303, so the browser never re-posts the
//! password there (RFC 9700 §4.12).
//!
//! CSRF: the first page sets a random value in an `HttpOnly; SameSite=Lax`
//! cookie scoped to `/oauth`; every form's flow token is bound to it, and
//! a POST without that cookie, or with another, is refused (403).

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_store::StoreError;
use latchkey_store::oauth::Client;

use super::problem::Verbatim;
use crate::app::App;
use crate::oauth::authorize::{
    self as authz, AuthzRequest, Flow, FlowError, Login, Params, Refusal, Shown,
};

pub const AUTHORIZE_PATH: &str = "/oauth/authorize";
const LOGIN_PATH: &str = "/oauth/authorize/login";
const CONSENT_PATH: &str = "/oauth/authorize/consent";
const STYLE_PATH: &str = "/oauth/assets/style.css";

/// The CSRF cookie: 32 random bytes, base64url.
pub const CSRF_COOKIE: &str = "lk_oauth_csrf";
const CSRF_COOKIE_LEN: usize = 43;

const WRONG_LOGIN: &str = "The email or password is incorrect.";
const TOO_MANY_LOGINS: &str = "Too many sign-in attempts. Wait a few minutes, then try again.";

const CSP: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLESHEET: &str = include_str!("../../templates/oauth/style.css");

type AppState = State<Arc<App>>;
type Peer = Option<axum::Extension<ConnectInfo<SocketAddr>>>;

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route(AUTHORIZE_PATH, get(authorize))
        .route(LOGIN_PATH, post(login))
        .route(CONSENT_PATH, post(consent))
        .route(STYLE_PATH, get(stylesheet))
}

// ---- Pages ----------------------------------------------------------------

#[derive(Template)]
#[template(path = "oauth/login.html")]
struct LoginPage<'a> {
    base: &'a str,
    client: &'a str,
    org: &'a str,
    flow: &'a str,
    email: &'a str,
    error: Option<&'a str>,
}

struct ScopeLine {
    name: String,
    description: Option<String>,
}

#[derive(Template)]
#[template(path = "oauth/consent.html")]
struct ConsentPage<'a> {
    base: &'a str,
    client: &'a str,
    org: &'a str,
    email: &'a str,
    flow: &'a str,
    scopes: Vec<ScopeLine>,
    return_to: &'a str,
}

#[derive(Template)]
#[template(path = "oauth/error.html")]
struct ErrorPage<'a> {
    base: &'a str,
    title: &'a str,
    message: &'a str,
}

/// The path latchkey is served under, from `public_url` (`""` at the root).
pub(crate) fn base_path(public_url: &str) -> &str {
    let rest = public_url.split_once("://").map_or("", |(_, r)| r);
    rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("")
}

/// Where the user goes back to, for the consent page: the redirect URI's
/// host (or its scheme, for a native app's private-use scheme).
fn return_to(redirect_uri: &str) -> &str {
    match redirect_uri.split_once("://") {
        Some((_, rest)) => rest.split(['/', '?']).next().unwrap_or(rest),
        None => redirect_uri.split(':').next().unwrap_or(redirect_uri),
    }
}

fn render(t: &impl Template) -> Result<String, Refusal> {
    t.render().map_err(|e| {
        tracing::error!(error = %e, "authorize: a page failed to render");
        Refusal::Show(Shown::internal())
    })
}

/// The headers of every server-rendered page (the OAuth pages', the
/// console's): `csp`, no framing, no caching, no referrer, no sniffing.
pub(crate) fn page_headers(h: &mut HeaderMap, csp: &'static str) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// An HTML page, passed on as it is by the problem+json middleware.
fn html(status: StatusCode, body: String) -> Response {
    html_page(status, body, CSP)
}

/// An HTML page under `csp` (see [`page_headers`]), marked [`Verbatim`]
/// so that the problem+json middleware passes a refusal page on as it is.
pub(crate) fn html_page(status: StatusCode, body: String, csp: &'static str) -> Response {
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    page_headers(h, csp);
    res.extensions_mut().insert(Verbatim);
    res
}

/// A 303 to `location` with the page headers, marked [`Verbatim`].
pub(crate) fn redirect_page(location: &str, csp: &'static str) -> Option<Response> {
    let v = HeaderValue::from_str(location).ok()?;
    let mut res = StatusCode::SEE_OTHER.into_response();
    let h = res.headers_mut();
    h.insert(header::LOCATION, v);
    page_headers(h, csp);
    res.extensions_mut().insert(Verbatim);
    Some(res)
}

/// 303 to `location`: the browser follows with a GET, never re-posting
/// the form (RFC 9700 §4.12).
fn see_other(app: &App, location: &str) -> Response {
    redirect_page(location, CSP).unwrap_or_else(|| {
        shown(
            app,
            &Shown {
                status: 400,
                title: "Invalid redirect URI",
                message: "The application's redirect URI cannot be used.".into(),
            },
        )
    })
}

fn shown(app: &App, s: &Shown) -> Response {
    let page = ErrorPage {
        base: base_path(app.config.public_url()),
        title: s.title,
        message: &s.message,
    };
    let body = page.render().unwrap_or_else(|_| s.message.clone());
    html(
        StatusCode::from_u16(s.status).unwrap_or(StatusCode::BAD_REQUEST),
        body,
    )
}

fn respond(app: &App, r: Result<Response, Refusal>) -> Response {
    match r {
        Ok(res) => res,
        Err(Refusal::Show(s)) => shown(app, &s),
        Err(Refusal::Redirect(r)) => see_other(app, &r.location(app.config.public_url())),
    }
}

fn internal(e: StoreError) -> Refusal {
    tracing::error!(error = %e, "authorize: store error");
    Refusal::Show(Shown::internal())
}

async fn org_name(app: &App, client: &Client) -> Result<String, Refusal> {
    app.store
        .get_org(&client.org_id)
        .await
        .map(|o| o.name)
        .map_err(internal)
}

fn login_page(
    app: &App,
    status: StatusCode,
    client: &Client,
    org: &str,
    flow: &Flow,
    email: &str,
    error: Option<&str>,
) -> Result<Response, Refusal> {
    let token = authz::seal(&authz::flow_key(app), flow);
    let body = render(&LoginPage {
        base: base_path(app.config.public_url()),
        client: &client.name,
        org,
        flow: &token,
        email,
        error,
    })?;
    Ok(html(status, body))
}

fn consent_page(
    app: &App,
    client: &Client,
    org: &str,
    email: &str,
    flow: &Flow,
) -> Result<Response, Refusal> {
    let token = authz::seal(&authz::flow_key(app), flow);
    let catalog = app.scopes.catalog();
    let scopes = flow
        .scopes
        .iter()
        .map(|s| ScopeLine {
            name: s.clone(),
            description: catalog.get(s).cloned().filter(|d| !d.is_empty()),
        })
        .collect();
    let body = render(&ConsentPage {
        base: base_path(app.config.public_url()),
        client: &client.name,
        org,
        email,
        flow: &token,
        scopes,
        return_to: return_to(&flow.redirect_uri),
    })?;
    Ok(html(StatusCode::OK, body))
}

// ---- The CSRF cookie --------------------------------------------------------

/// The CSRF cookie's value, if the browser sent a well-formed one.
fn read_cookie(headers: &HeaderMap) -> Option<String> {
    read_token_cookie(headers, CSRF_COOKIE)
}

/// The value of cookie `name` if the browser sent one that looks like a
/// [`random_token`] (43 base64url characters).
pub(crate) fn read_token_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, value)| {
            *n == name
                && value.len() == CSRF_COOKIE_LEN
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(|(_, value)| value.to_owned())
}

/// 32 random bytes, base64url: a cookie's value.
pub(crate) fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

fn new_cookie() -> Result<String, Refusal> {
    random_token().ok_or(Refusal::Show(Shown::internal()))
}

fn set_cookie(app: &App, value: &str) -> Option<HeaderValue> {
    let url = app.config.public_url();
    let secure = if url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{CSRF_COOKIE}={value}; Path={}/oauth; HttpOnly; SameSite=Lax{secure}",
        base_path(url)
    ))
    .ok()
}

/// A posted form: its fields, once each, and its flow, signed here, not
/// expired, bound to this browser's cookie, and at the expected step.
fn posted(
    app: &App,
    headers: &HeaderMap,
    body: &[u8],
    signed_in: bool,
) -> Result<(Params, Flow), Refusal> {
    let p = Params::parse(body);
    let broken = || {
        Refusal::Show(Shown {
            status: 400,
            title: "Invalid request",
            message: "This form was not sent as this server made it. Go back to the application and start again.".into(),
        })
    };
    if p.first_repeated().is_some() {
        return Err(broken());
    }
    let Some(cookie) = read_cookie(headers) else {
        return Err(Refusal::Show(Shown {
            status: 403,
            title: "Cookies needed",
            message: "Your browser did not send the cookie this sign-in needs. Allow cookies for this site, go back to the application and start again.".into(),
        }));
    };
    let token = p.get("flow").ok_or_else(broken)?;
    let flow = match authz::open(&authz::flow_key(app), token, app.now_ms()) {
        Ok(f) => f,
        Err(FlowError::Expired) => {
            return Err(Refusal::Show(Shown {
                status: 400,
                title: "Page expired",
                message: "This page was open too long. Go back to the application and start again."
                    .into(),
            }));
        }
        Err(FlowError::Invalid) => return Err(broken()),
    };
    if !flow.is_bound_to(&cookie) {
        return Err(Refusal::Show(Shown {
            status: 403,
            title: "Request refused",
            message: "This form belongs to another browser session. Go back to the application and start again.".into(),
        }));
    }
    if flow.user_id.is_some() != signed_in {
        return Err(broken());
    }
    Ok((p, flow))
}

// ---- Handlers ---------------------------------------------------------------

/// `GET /oauth/authorize`: validates the request and shows the sign-in page.
async fn authorize(State(app): AppState, uri: Uri, headers: HeaderMap) -> Response {
    let r = authorize_inner(&app, uri.query().unwrap_or(""), &headers).await;
    respond(&app, r)
}

async fn authorize_inner(app: &App, query: &str, headers: &HeaderMap) -> Result<Response, Refusal> {
    let (client, req) = authz::start(app, query).await?;
    let (cookie, fresh) = match read_cookie(headers) {
        Some(c) => (c, false),
        None => (new_cookie()?, true),
    };
    let flow = Flow::new(&req, &cookie, app.now_ms());
    let org = org_name(app, &client).await?;
    let mut res = login_page(app, StatusCode::OK, &client, &org, &flow, "", None)?;
    if fresh && let Some(v) = set_cookie(app, &cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(res)
}

/// `POST /oauth/authorize/login`: checks the password; then issues a code
/// at once if the user consented to these scopes before, else shows the
/// consent page.
async fn login(State(app): AppState, peer: Peer, headers: HeaderMap, body: Bytes) -> Response {
    let ip = super::gate::client_ip(&app, peer.map(|p| (p.0).0), &headers);
    let r = login_inner(&app, ip, &headers, &body).await;
    respond(&app, r)
}

async fn login_inner(
    app: &App,
    ip: Option<std::net::IpAddr>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Refusal> {
    let (p, flow) = posted(app, headers, body, false)?;
    let req = flow.request();
    let client = authz::load_client(app, &flow.client_id).await?;
    authz::recheck(app, &client, &req)?;
    let org = org_name(app, &client).await?;
    let email = p.get("email").unwrap_or("");
    let password = p.get("password").unwrap_or("");
    let user = match authz::login(app, &client, email, password, ip)
        .await
        .map_err(internal)?
    {
        Login::Ok(u) => u,
        Login::Wrong => {
            return login_page(
                app,
                StatusCode::BAD_REQUEST,
                &client,
                &org,
                &flow,
                email,
                Some(WRONG_LOGIN),
            );
        }
        Login::Limited => {
            return login_page(
                app,
                StatusCode::TOO_MANY_REQUESTS,
                &client,
                &org,
                &flow,
                email,
                Some(TOO_MANY_LOGINS),
            );
        }
    };
    let consent = app
        .store
        .get_consent(&user.id, &client.id)
        .await
        .map_err(internal)?;
    if !req.force_consent && authz::consent_covers(consent.as_ref(), &req.scopes) {
        return issue(app, &client, &req, &user.id).await;
    }
    let flow = flow.signed_in(&user.id, app.now_ms());
    consent_page(app, &client, &org, &user.email, &flow)
}

/// `POST /oauth/authorize/consent`: Allow records the consent and issues
/// a code; Deny sends `access_denied` back to the client.
async fn consent(State(app): AppState, headers: HeaderMap, body: Bytes) -> Response {
    let r = consent_inner(&app, &headers, &body).await;
    respond(&app, r)
}

async fn consent_inner(app: &App, headers: &HeaderMap, body: &[u8]) -> Result<Response, Refusal> {
    let (p, flow) = posted(app, headers, body, true)?;
    let user_id = flow.user_id.clone().unwrap_or_default();
    let req = flow.request();
    let client = authz::load_client(app, &flow.client_id).await?;
    match p.get("decision") {
        Some("deny") => {
            authz::check_redirect(&client, &req.redirect_uri)?;
            Err(authz::denied(&req).into())
        }
        Some("allow") => {
            authz::recheck(app, &client, &req)?;
            let gone = || {
                Refusal::Show(Shown {
                    status: 400,
                    title: "Account unavailable",
                    message: "This account can no longer sign in to this application. Go back to the application and start again.".into(),
                })
            };
            let user = match app.store.get_user(&user_id).await {
                Ok(u) => u,
                Err(StoreError::NotFound) => return Err(gone()),
                Err(e) => return Err(internal(e)),
            };
            if user.org_id != client.org_id {
                return Err(gone());
            }
            authz::remember_consent(app, &user.id, &client.id, &req.scopes)
                .await
                .map_err(internal)?;
            issue(app, &client, &req, &user.id).await
        }
        _ => Err(Refusal::Show(Shown {
            status: 400,
            title: "Invalid request",
            message: "Choose Allow or Deny.".into(),
        })),
    }
}

async fn issue(
    app: &App,
    client: &Client,
    req: &AuthzRequest,
    user_id: &str,
) -> Result<Response, Refusal> {
    let location = authz::issue_code(app, client, req, user_id)
        .await
        .map_err(internal)?;
    Ok(see_other(app, &location))
}

/// `GET /oauth/assets/style.css`.
async fn stylesheet() -> Response {
    static_asset(STYLESHEET, "text/css; charset=utf-8")
}

/// A file compiled into the binary (a stylesheet, a script), cached for an
/// hour, never sniffed as another type.
pub(crate) fn static_asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_path_and_return_to() {
        assert_eq!(base_path("https://auth.example"), "");
        assert_eq!(base_path("https://auth.example/lk"), "/lk");
        assert_eq!(
            return_to("https://app.example:8443/cb?x=1"),
            "app.example:8443"
        );
        assert_eq!(return_to("com.example.app:/cb"), "com.example.app");
    }

    #[test]
    fn the_csrf_cookie_is_read_only_when_well_formed() {
        let good = "a".repeat(CSRF_COOKIE_LEN);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {CSRF_COOKIE}={good}")).unwrap(),
        );
        assert_eq!(read_cookie(&h), Some(good));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{CSRF_COOKIE}=short")).unwrap(),
        );
        assert_eq!(read_cookie(&h), None);
        assert_eq!(read_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn pages_escape_what_they_show() {
        let page = LoginPage {
            base: "",
            client: "<script>alert(1)</script>",
            org: "A & B",
            flow: "f\"x",
            email: "\"><img>",
            error: Some(WRONG_LOGIN),
        }
        .render()
        .unwrap();
        assert!(!page.contains("<script>"));
        assert!(!page.contains("<img>"));
        assert!(!page.contains("f\"x"));
        assert!(
            page.contains("A &#38; B") || page.contains("A &amp; B"),
            "{page}"
        );
        assert!(page.contains("<label for=\"email\">"));
        assert!(page.contains("<label for=\"password\">"));
    }
}
