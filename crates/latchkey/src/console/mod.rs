//! The console (SPEC §11): the pages an organization's people use to
//! create, see and revoke their API keys and OAuth apps, read their API
//! logs and manage who may do so. Server-rendered (askama, every value
//! escaped), enhanced by htmx (vendored, one file) where a list is
//! searched or paged; every page works without script. docs/console.md.
//!
//! Every action goes through the same services as the HTTP API and the
//! CLI (`service`, `oauth::manage`, `logs`); this module only decides who
//! may do what ([`Who`]) and draws the pages.
//!
//! Security: server-side sessions ([`session`]), a CSRF token on every
//! form that changes anything, a Content-Security-Policy that allows
//! scripts and styles from this server only (no inline script or style)
//! and no framing, `Cache-Control: no-store` on every page (some show a
//! secret, once), `Referrer-Policy: no-referrer`.

mod apps;
mod chart;
mod keys;
mod logs;
mod members;
pub mod session;

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use latchkey_store::oauth::User;
use latchkey_store::{Org, StoreError};

use crate::app::App;
use crate::error::ApiError;
use crate::http::authorize::{base_path, html_page, redirect_page};
use crate::service::{Actor, Principal};

/// Scripts and styles from this server only (htmx and the console's own
/// file; no inline script, no inline style), no framing, forms posted here
/// only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub const PREFIX: &str = "/console";

type AppState = State<Arc<App>>;
/// The id of the request being answered (for the usage log's actions).
type Rid = Option<axum::Extension<crate::http::problem::RequestId>>;

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/console", get(session::home))
        .route("/console/", get(session::home))
        .route(
            "/console/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/orgs", get(session::orgs))
        .route("/console/orgs/{org}", get(org_home))
        .route(
            "/console/orgs/{org}/keys",
            get(keys::list).post(keys::create),
        )
        .route("/console/orgs/{org}/keys/new", get(keys::new))
        .route("/console/orgs/{org}/keys/{id}", get(keys::show))
        .route(
            "/console/orgs/{org}/keys/{id}/revoke",
            get(keys::revoke_page).post(keys::revoke),
        )
        .route(
            "/console/orgs/{org}/keys/{id}/rotate",
            get(keys::rotate_page).post(keys::rotate),
        )
        .route(
            "/console/orgs/{org}/apps",
            get(apps::list).post(apps::create),
        )
        .route("/console/orgs/{org}/apps/new", get(apps::new))
        .route("/console/orgs/{org}/apps/{id}", get(apps::show))
        .route(
            "/console/orgs/{org}/apps/{id}/rotate-secret",
            get(apps::rotate_page).post(apps::rotate_secret),
        )
        .route(
            "/console/orgs/{org}/apps/{id}/delete",
            get(apps::delete_page).post(apps::delete),
        )
        .route(
            "/console/orgs/{org}/apps/{id}/consents/{user}/revoke",
            post(apps::revoke_consent),
        )
        .route("/console/orgs/{org}/logs", get(logs::page))
        .route(
            "/console/orgs/{org}/members",
            get(members::list).post(members::add),
        )
        .route(
            "/console/orgs/{org}/members/{id}/remove",
            get(members::remove_page).post(members::remove),
        )
        .route("/console/assets/{file}", get(asset))
}

// ---- Who may do what ------------------------------------------------------

/// The person (or root key) behind a page, in the organization it shows.
pub enum Who {
    /// An account of this organization.
    User(User),
    /// A root key: every organization, as far as its scopes go.
    Root(Principal),
}

/// What a page or an action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Seeing keys, apps, logs, members: any account of the organization;
    /// a root key with the scope.
    Read(&'static str),
    /// Creating a key: any account (a member manages the keys it made); a
    /// root key with `keys.create`.
    CreateKey,
    /// Anything else that changes the organization: an admin; a root key
    /// with the scope.
    Admin(&'static str),
}

impl Who {
    pub fn may(&self, need: Need) -> bool {
        match (self, need) {
            (Who::User(_), Need::Read(_) | Need::CreateKey) => true,
            (Who::User(u), Need::Admin(_)) => u.role == "admin",
            (Who::Root(p), Need::Read(s) | Need::Admin(s)) => p.require(s).is_ok(),
            (Who::Root(p), Need::CreateKey) => p.require("keys.create").is_ok(),
        }
    }

    /// Whether this person may revoke or rotate `key` (`scope`: the root
    /// key scope it takes): an admin any key, a member the keys it created.
    pub fn may_manage_key(&self, key: &latchkey_store::ApiKey, scope: &'static str) -> bool {
        match self {
            Who::User(u) if u.role == "admin" => true,
            Who::User(u) => key.created_by.as_deref() == Some(u.id.as_str()),
            Who::Root(p) => p.require(scope).is_ok(),
        }
    }

    pub fn is_admin(&self) -> bool {
        match self {
            Who::User(u) => u.role == "admin",
            Who::Root(_) => true,
        }
    }

    /// The author of a change, for the usage log: the user's id or the
    /// root key's.
    pub fn actor(&self, request_id: Option<String>) -> Actor {
        match self {
            Who::User(u) => Actor {
                id: u.id.clone(),
                request_id,
            },
            Who::Root(p) => Actor {
                id: p.root_key.id.clone(),
                request_id,
            },
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Who::User(u) => &u.id,
            Who::Root(p) => &p.root_key.id,
        }
    }

    /// How the header names this person.
    pub fn label(&self) -> String {
        match self {
            Who::User(u) => u.email.clone(),
            Who::Root(p) => format!("Root key {}", p.root_key.name),
        }
    }

    pub fn role(&self) -> &'static str {
        match self {
            Who::User(u) if u.role == "admin" => "Admin",
            Who::User(_) => "Member",
            Who::Root(_) => "Root key",
        }
    }
}

/// A page of one organization, for one signed-in session.
pub struct Ctx {
    pub app: Arc<App>,
    pub session: session::Current,
    pub org: Org,
    pub who: Who,
    pub request_id: Option<String>,
}

impl Ctx {
    /// The context of a page of `org_id`, or the answer instead: the
    /// sign-in page when there is no session, 404 when this session has no
    /// business in that organization (whether it exists or not).
    pub async fn load(
        app: &Arc<App>,
        headers: &HeaderMap,
        org_id: &str,
        request_id: Option<String>,
        here: &str,
    ) -> Result<Ctx, Fail> {
        let Some(current) = session::current(app, headers).await? else {
            return Err(session::signed_out(headers, here));
        };
        let who = match &current.root {
            Some(p) => Who::Root(p.clone()),
            None => Who::User(
                current
                    .accounts
                    .iter()
                    .find(|u| u.org_id == org_id)
                    .cloned()
                    .ok_or(Fail::NotFound)?,
            ),
        };
        let org = match app.store.get_org(org_id).await {
            Ok(o) => o,
            Err(StoreError::NotFound) => return Err(Fail::NotFound),
            Err(e) => return Err(e.into()),
        };
        Ok(Ctx {
            app: app.clone(),
            session: current,
            org,
            who,
            request_id,
        })
    }

    /// The context of a form posted to a page of `org_id`, and its fields:
    /// [`Ctx::load`], then the form's CSRF token checked.
    pub async fn posted(
        app: &Arc<App>,
        headers: &HeaderMap,
        org_id: &str,
        request_id: Rid,
        here: &str,
        body: &[u8],
    ) -> Result<(Ctx, FormData), Fail> {
        let c = Ctx::load(app, headers, org_id, request_id.map(|r| r.0.0), here).await?;
        let f = FormData::parse(body);
        c.check_csrf(&f)?;
        Ok((c, f))
    }

    /// [`Fail::Forbidden`] unless the person may do `need`.
    pub fn need(&self, need: Need, what: &'static str) -> Result<(), Fail> {
        if self.who.may(need) {
            Ok(())
        } else {
            Err(self.framed(Fail::Forbidden(what)))
        }
    }

    /// Checks the CSRF token of a posted form.
    pub fn check_csrf(&self, form: &FormData) -> Result<(), Fail> {
        if self.session.csrf_ok(form.one("csrf")) {
            Ok(())
        } else {
            Err(self.framed(Fail::Csrf))
        }
    }

    /// `f`, shown inside this organization's pages.
    pub fn framed(&self, f: Fail) -> Fail {
        Fail::Framed(Box::new(self.layout("Not allowed", "")), Box::new(f))
    }

    pub fn actor(&self) -> Actor {
        self.who.actor(self.request_id.clone())
    }

    pub fn base(&self) -> &str {
        base_path(self.app.config.public_url())
    }

    /// The path of a page of this organization: `{base}/console/orgs/{org}{rest}`.
    pub fn href(&self, rest: &str) -> String {
        format!("{}{PREFIX}/orgs/{}{rest}", self.base(), self.org.id)
    }

    /// What every page's frame shows.
    pub fn layout(&self, title: impl Into<String>, tab: &'static str) -> Layout {
        Layout {
            base: self.base().to_owned(),
            title: title.into(),
            org: Some(OrgNav {
                id: self.org.id.clone(),
                name: self.org.name.clone(),
                href: self.href(""),
            }),
            tab,
            who: Some(WhoNav {
                label: self.who.label(),
                role: self.who.role(),
                switch: self.session.root.is_some() || self.session.accounts.len() > 1,
            }),
            csrf: self.session.csrf.clone(),
        }
    }
}

// ---- The frame of every page ----------------------------------------------

#[derive(Debug)]
pub struct OrgNav {
    pub id: String,
    pub name: String,
    pub href: String,
}

#[derive(Debug)]
pub struct WhoNav {
    pub label: String,
    pub role: &'static str,
    /// Whether there is another organization to switch to.
    pub switch: bool,
}

/// What `console/base.html` shows around a page.
#[derive(Debug)]
pub struct Layout {
    pub base: String,
    pub title: String,
    pub org: Option<OrgNav>,
    /// The current tab: `keys`, `apps`, `logs`, `members` or `""`.
    pub tab: &'static str,
    pub who: Option<WhoNav>,
    pub csrf: String,
}

impl Layout {
    /// `aria-current` for a tab.
    pub fn current(&self, tab: &str) -> &'static str {
        if self.tab == tab { "page" } else { "false" }
    }
}

// ---- Answers ----------------------------------------------------------------

/// Why a page is not shown.
#[derive(Debug)]
pub enum Fail {
    /// No session: to the sign-in page, then back to this path.
    SignIn(String),
    /// No session cookie on a navigation from another site: the
    /// `SameSite=Strict` cookie was held back. Load this path again from
    /// here, where the browser sends it.
    Reload(String),
    /// Not there, or not this session's to see (the same answer).
    NotFound,
    /// Seen, but not this person's to change.
    Forbidden(&'static str),
    /// A form without this session's CSRF token.
    Csrf,
    /// A form that does not make sense (not one a page of ours sent).
    Bad(String),
    Internal,
    /// A failure shown inside the pages of the organization (the person
    /// is signed in and belongs there).
    Framed(Box<Layout>, Box<Fail>),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Fail::NotFound,
            e => {
                tracing::error!(error = %e, "console: store error");
                Fail::Internal
            }
        }
    }
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Self {
        match e.code {
            latchkey_core::Code::NotFound => Fail::NotFound,
            latchkey_core::Code::Internal | latchkey_core::Code::Unavailable => Fail::Internal,
            _ => Fail::Bad(e.detail),
        }
    }
}

#[derive(Template)]
#[template(path = "console/reload.html")]
struct ReloadPage {
    layout: Layout,
    here: String,
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    layout: Layout,
    heading: &'static str,
    message: String,
    back: String,
    back_label: String,
}

impl Fail {
    pub fn respond(self, app: &App) -> Response {
        let base = base_path(app.config.public_url()).to_owned();
        let (frame, fail) = match self {
            Fail::Framed(layout, inner) => (Some(*layout), *inner),
            f => (None, f),
        };
        let (status, heading, message) = match fail {
            Fail::SignIn(next) => {
                let mut to = format!("{base}{PREFIX}/sign-in");
                if safe_next(&base, &next) {
                    let q = form_urlencoded::Serializer::new(String::new())
                        .append_pair("next", &next)
                        .finish();
                    to = format!("{to}?{q}");
                }
                return see_other(&to);
            }
            Fail::Reload(here) => {
                let page = ReloadPage {
                    layout: Layout {
                        base: base.clone(),
                        title: "Opening the console".to_owned(),
                        org: None,
                        tab: "",
                        who: None,
                        csrf: String::new(),
                    },
                    here,
                };
                return page_response(StatusCode::OK, &page);
            }
            Fail::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here, or it is not yours to see. Check the address, or go back to your organization.".to_owned(),
            ),
            Fail::Forbidden(what) => (
                StatusCode::FORBIDDEN,
                "Not allowed",
                format!("Your role does not allow you to {what}. Ask an admin of this organization."),
            ),
            Fail::Csrf => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form was not sent from a page of this session (or the session changed). Go back, reload the page and try again.".to_owned(),
            ),
            Fail::Bad(m) => (StatusCode::BAD_REQUEST, "That did not work", m),
            Fail::Internal | Fail::Framed(..) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The server could not handle this request. Try again in a moment.".to_owned(),
            ),
        };
        let (back, back_label) = match frame.as_ref().and_then(|l| l.org.as_ref()) {
            Some(o) => (format!("{}/keys", o.href), format!("Back to {}", o.name)),
            None => (format!("{base}{PREFIX}"), "Back to the console".to_owned()),
        };
        let layout = match frame {
            Some(mut l) => {
                l.title = heading.to_owned();
                l
            }
            None => Layout {
                base: base.clone(),
                title: heading.to_owned(),
                org: None,
                tab: "",
                who: None,
                csrf: String::new(),
            },
        };
        let page = ErrorPage {
            layout,
            heading,
            message,
            back,
            back_label,
        };
        page_response(status, &page)
    }
}

/// Whether `next` is a console path of this server to return to after
/// signing in (never another site: no `//`, no scheme, no backslash).
pub fn safe_next(base: &str, next: &str) -> bool {
    next.strip_prefix(base)
        .is_some_and(|rest| rest.starts_with("/console/") || rest == "/console")
        && !next.contains("//")
        && !next.contains('\\')
        && next.chars().all(|c| !c.is_control())
}

/// Renders a page; a template that fails is a 500 without detail.
pub fn page_response(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => html_page(status, body, CSP),
        Err(e) => {
            tracing::error!(error = %e, "console: a page failed to render");
            html_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong.".to_owned(),
                CSP,
            )
        }
    }
}

pub fn ok(t: &impl Template) -> Response {
    page_response(StatusCode::OK, t)
}

/// 303 to `location` (after a form, so that reloading does not post again).
pub fn see_other(location: &str) -> Response {
    redirect_page(location, CSP)
        .unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `Ok(response)` or the page of the failure.
pub fn answer(app: &App, r: Result<Response, Fail>) -> Response {
    r.unwrap_or_else(|f| f.respond(app))
}

/// `GET /console/orgs/{org}`: the organization's first page.
async fn org_home(State(app): AppState, Path(org): Path<String>, headers: HeaderMap) -> Response {
    let here = format!("{}{PREFIX}/orgs/{org}", base_path(app.config.public_url()));
    let r = Ctx::load(&app, &headers, &org, None, &here)
        .await
        .map(|c| see_other(&c.href("/keys")));
    answer(&app, r)
}

/// A time as the pages show it: `2026-01-02 03:04 UTC`.
pub fn when(ms: i64) -> String {
    let t = crate::views::rfc3339(ms);
    let date = t.get(..10).unwrap_or("");
    let hm = t.get(11..16).unwrap_or("");
    format!("{date} {hm} UTC")
}

/// A time as an HTML `datetime` attribute (RFC 3339).
pub fn iso(ms: i64) -> String {
    crate::views::rfc3339(ms)
}

// ---- Forms and queries ------------------------------------------------------

/// A form or a query string: every value of every field, in order.
#[derive(Debug, Default)]
pub struct FormData {
    fields: Vec<(String, String)>,
}

impl FormData {
    pub fn parse(raw: &[u8]) -> FormData {
        FormData {
            fields: crate::http::form::parse(raw)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    pub fn query(q: Option<&str>) -> FormData {
        FormData::parse(q.unwrap_or("").as_bytes())
    }

    /// The value of a field given exactly once (empty counts as absent).
    pub fn one(&self, name: &str) -> Option<&str> {
        let mut it = self.fields.iter().filter(|(k, _)| k == name);
        match (it.next(), it.next()) {
            (Some((_, v)), None) if !v.trim().is_empty() => Some(v.as_str()),
            _ => None,
        }
    }

    /// Every non-empty value of a field (checkboxes, repeated inputs).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// What went wrong in a form, by field, for showing next to each input.
#[derive(Debug, Default)]
pub struct FieldErrors {
    pub by_field: BTreeMap<String, String>,
    pub general: Vec<String>,
}

impl FieldErrors {
    /// From a service's refusal: 422 `errors[]` by field (`scopes[2]`
    /// counts as `scopes`), anything else as a general message.
    pub fn from_api(e: &ApiError) -> FieldErrors {
        let mut out = FieldErrors::default();
        if e.errors.is_empty() {
            out.general.push(e.detail.clone());
        }
        for f in &e.errors {
            let field = f.field.split(['[', '.']).next().unwrap_or("").to_owned();
            out.by_field
                .entry(field)
                .and_modify(|m| {
                    m.push(' ');
                    m.push_str(&f.message)
                })
                .or_insert_with(|| f.message.clone());
        }
        out
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.by_field.get(field).map(String::as_str)
    }

    pub fn any(&self) -> bool {
        !self.by_field.is_empty() || !self.general.is_empty()
    }
}

// ---- Assets -----------------------------------------------------------------

const STYLESHEET: &str = include_str!("../../templates/console/console.css");
const SCRIPT: &str = include_str!("../../templates/console/console.js");
/// htmx 2.0.11 (npm `htmx.org`, BSD-0-Clause), as published.
const HTMX: &str = include_str!("../../templates/console/htmx.min.js");

/// `GET /console/assets/{file}`: the stylesheet and the two scripts.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (STYLESHEET, "text/css; charset=utf-8"),
        "console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "htmx.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        _ => return Fail::NotFound.respond_bare(),
    };
    crate::http::authorize::static_asset(body, kind)
}

impl Fail {
    /// A plain 404 (for assets: no page around it).
    fn respond_bare(self) -> Response {
        let mut res = html_page(StatusCode::NOT_FOUND, "Not found".to_owned(), CSP);
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_paths_stay_in_the_console() {
        assert!(safe_next("", "/console/orgs/org_1/keys"));
        assert!(safe_next("/lk", "/lk/console"));
        for bad in [
            "https://evil.example/console/",
            "//evil.example/console/",
            "/console//evil",
            "/consolex",
            "/v1/orgs",
            "/console/\\evil",
            "/lk/v1",
        ] {
            assert!(!safe_next("", bad) || bad.starts_with("/lk"), "{bad}");
            assert!(!safe_next("/lk", bad), "{bad}");
        }
    }

    #[test]
    fn form_fields_once_or_many() {
        let f = FormData::parse(b"a=1&b=2&b=3&c=&d=+&s=x&s=&s=y");
        assert_eq!(f.one("a"), Some("1"));
        assert_eq!(f.one("b"), None, "given twice");
        assert_eq!(f.one("c"), None, "empty");
        assert_eq!(f.one("d"), None, "blank");
        assert_eq!(f.all("s"), ["x", "y"]);
        assert!(f.all("zz").is_empty());
    }
}
