//! API Keys: the list (search, pages), creating a key (shown once),
//! revoking and rotating. Every change is `service`'s, as for the HTTP
//! API and the CLI.

use std::collections::HashMap;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_core::ids::is_id;
use latchkey_store::ApiKey;
use latchkey_store::console::{KeySearch, KeySearchQuery};

use super::{
    AppState, Ctx, Fail, FieldErrors, FormData, Layout, Need, Rid, Who, answer, iso, ok,
    page_response, see_other, when,
};
use crate::limits::RateLimitInput;
use crate::service::{self, CreateKey, KeyListQuery, RevokeKey, RotateKey};
use crate::views::{DurationInput, KeyStatus, key_status};

/// Keys per page.
const PAGE: u32 = 25;

/// A key as a row of the list or the detail page.
pub struct KeyRow {
    pub id: String,
    pub href: String,
    pub name: String,
    pub start: String,
    /// `live`, or `restricted · test` when the kind's name is not its environment.
    pub kind_label: String,
    pub scopes: Vec<String>,
    pub created: String,
    pub created_iso: String,
    pub last_used: Option<String>,
    pub expires: Option<String>,
    pub status: &'static str,
    pub status_class: &'static str,
    pub revoked: Option<String>,
    pub revoke_reason: Option<String>,
    pub replaced_by: Option<String>,
    pub rotated_from: Option<String>,
    pub creator: String,
    pub ratelimit: Option<String>,
    pub ip_allowlist: Vec<String>,
    /// Whether the viewer may revoke / rotate it.
    pub can_revoke: bool,
    pub can_rotate: bool,
}

fn status_text(s: KeyStatus) -> (&'static str, &'static str) {
    match s {
        KeyStatus::Active => ("Active", "ok"),
        KeyStatus::Rotating => ("Rotating", "warn"),
        KeyStatus::Revoked => ("Revoked", "bad"),
        KeyStatus::Expired => ("Expired", "muted"),
    }
}

fn window_text(ms: i64) -> String {
    match ms {
        1000 => "second".into(),
        60_000 => "minute".into(),
        3_600_000 => "hour".into(),
        86_400_000 => "day".into(),
        ms => format!("{} s", ms / 1000),
    }
}

/// Who created a key, as the viewer reads it.
fn creator(c: &Ctx, by: Option<&str>, emails: &HashMap<String, String>) -> String {
    match by {
        None => "Unknown (created before this was recorded)".into(),
        Some(id) if id == c.who.id() => "You".into(),
        Some("cli") => "The command line".into(),
        Some(id) if id.starts_with("rtk_") => format!("Root key {id}"),
        Some(id) => emails
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("{id} (no longer a member)")),
    }
}

/// The emails of the users who created `keys` (one lookup per creator).
async fn creators(c: &Ctx, keys: &[ApiKey]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for id in keys.iter().filter_map(|k| k.created_by.as_deref()) {
        if id.starts_with("usr_")
            && !out.contains_key(id)
            && let Ok(u) = c.app.store.get_user(id).await
        {
            out.insert(id.to_owned(), u.email);
        }
    }
    out
}

pub fn row(c: &Ctx, k: &ApiKey, emails: &HashMap<String, String>) -> KeyRow {
    let now = c.app.now_ms();
    let status = key_status(k, now);
    let (text, class) = status_text(status);
    let live = matches!(status, KeyStatus::Active | KeyStatus::Rotating);
    KeyRow {
        id: k.id.clone(),
        href: c.href(&format!("/keys/{}", k.id)),
        name: k.name.clone(),
        start: k.start.clone(),
        kind_label: if k.kind == k.environment {
            k.kind.clone()
        } else {
            format!("{} \u{00b7} {}", k.kind, k.environment)
        },
        scopes: k.scopes.clone(),
        created: when(k.created_at),
        created_iso: iso(k.created_at),
        last_used: k.last_used_at.map(when),
        expires: k.expires_at.map(when),
        status: text,
        status_class: class,
        revoked: k.revoked_at.map(when),
        revoke_reason: k.revoke_reason.clone(),
        replaced_by: k.replaced_by.clone(),
        rotated_from: k.rotated_from.clone(),
        creator: creator(c, k.created_by.as_deref(), emails),
        ratelimit: k
            .ratelimit
            .map(|r| format!("{} per {}", r.limit, window_text(r.window_ms))),
        ip_allowlist: k.ip_allowlist.clone(),
        can_revoke: live && c.who.may_manage_key(k, "keys.revoke"),
        can_rotate: status == KeyStatus::Active
            && k.replaced_by.is_none()
            && c.who.may_manage_key(k, "keys.rotate"),
    }
}

// ---- The list ---------------------------------------------------------------

#[derive(Template)]
#[template(path = "console/keys.html")]
struct KeysPage {
    layout: Layout,
    results: KeyResults,
    can_create: bool,
    new_href: String,
    list_href: String,
}

#[derive(Template)]
#[template(path = "console/keys_results.html")]
struct KeyResults {
    rows: Vec<KeyRow>,
    q: String,
    /// How the search was read, for the line above the table.
    searched: Option<String>,
    next: Option<String>,
    first: Option<String>,
    new_href: String,
    can_create: bool,
}

fn search_cursor(value: &str, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{id}\n{value}"))
}

fn open_search_cursor(c: &str) -> Option<(String, String)> {
    let raw = URL_SAFE_NO_PAD.decode(c).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, value) = text.split_once('\n')?;
    is_id(id, "key_").then(|| (value.to_owned(), id.to_owned()))
}

/// How a search is read: a key id, a key's start (a pasted key is cut to
/// its start: the secret goes no further, not even back into the search
/// box), or the beginning of a name. Answers the search, the id, what the
/// page says it searched for, and the text to put back in the box.
fn read_search(c: &Ctx, q: &str) -> (Option<KeySearch>, Option<String>, String, String) {
    let q = q.trim();
    if is_id(q, "key_") {
        return (
            None,
            Some(q.to_owned()),
            format!("the key {q}"),
            q.to_owned(),
        );
    }
    let prefixes = c.app.config.key_kinds.iter().map(|k| k.prefix.as_str());
    if let Some(i) = latchkey_core::keyfmt::match_prefix(q, prefixes)
        && let Some(kind) = c.app.config.key_kinds.get(i)
    {
        let start: String = q.chars().take(kind.prefix.chars().count() + 4).collect();
        let shown = format!("keys starting {start}");
        return (
            Some(KeySearch::StartPrefix(start.clone())),
            None,
            shown,
            start,
        );
    }
    let name: String = q.chars().take(200).collect();
    let shown = format!("names starting with \u{201c}{name}\u{201d}");
    (Some(KeySearch::NamePrefix(name.clone())), None, shown, name)
}

async fn results(c: &Ctx, q: &FormData) -> Result<KeyResults, Fail> {
    let mut text = q.one("q").unwrap_or("").trim().to_owned();
    let cursor = q.one("cursor");
    let list = c.href("/keys");
    let mut searched = None;
    let (keys, next) = if text.is_empty() {
        let (rows, next) = service::list_keys(
            &c.app,
            &c.org.id,
            KeyListQuery {
                external_id: None,
                limit: Some(PAGE),
                cursor: cursor.map(str::to_owned),
            },
        )
        .await?;
        (rows, next.map(|n| format!("{list}?cursor={n}")))
    } else {
        let (search, id, shown, kept) = read_search(c, &text);
        searched = Some(shown);
        text = kept;
        match (search, id) {
            (_, Some(id)) => match c.app.store.get_key(&id).await {
                Ok(k) if k.org_id == c.org.id => (vec![k], None),
                Ok(_) | Err(latchkey_store::StoreError::NotFound) => (Vec::new(), None),
                Err(e) => return Err(e.into()),
            },
            (Some(search), None) => {
                let name_search = matches!(search, KeySearch::NamePrefix(_));
                let after = match cursor {
                    None => None,
                    Some(c) => Some(
                        open_search_cursor(c)
                            .ok_or_else(|| Fail::Bad("That page link is broken.".into()))?,
                    ),
                };
                let mut rows = c
                    .app
                    .store
                    .search_keys(&KeySearchQuery {
                        org_id: c.org.id.clone(),
                        search,
                        limit: PAGE + 1,
                        after,
                    })
                    .await?;
                let more = rows.len() > PAGE as usize;
                rows.truncate(PAGE as usize);
                let next = rows.last().filter(|_| more).map(|k| {
                    let value = if name_search { &k.name } else { &k.start };
                    let qs = form_urlencoded::Serializer::new(String::new())
                        .append_pair("q", &text)
                        .append_pair("cursor", &search_cursor(value, &k.id))
                        .finish();
                    format!("{list}?{qs}")
                });
                (rows, next)
            }
            (None, None) => (Vec::new(), None),
        }
    };
    let emails = creators(c, &keys).await;
    let first = cursor.map(|_| {
        if text.is_empty() {
            list.clone()
        } else {
            let qs = form_urlencoded::Serializer::new(String::new())
                .append_pair("q", &text)
                .finish();
            format!("{list}?{qs}")
        }
    });
    Ok(KeyResults {
        rows: keys.iter().map(|k| row(c, k, &emails)).collect(),
        q: text,
        searched,
        next,
        first,
        new_href: c.href("/keys/new"),
        can_create: c.who.may(Need::CreateKey),
    })
}

/// `GET /console/orgs/{org}/keys?q=&cursor=`; with `HX-Request`, the
/// results alone (htmx swaps them in place).
pub async fn list(
    State(app): AppState,
    Path(org): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let here = format!(
            "{}/console/orgs/{org}/keys",
            crate::http::authorize::base_path(app.config.public_url())
        );
        let c = Ctx::load(&app, &headers, &org, None, &here).await?;
        c.need(Need::Read("keys.read"), "see the keys")?;
        let q = FormData::query(raw.as_deref());
        let results = results(&c, &q).await?;
        if headers.contains_key("hx-request") {
            return Ok(ok(&results));
        }
        let can_create = results.can_create;
        Ok(ok(&KeysPage {
            layout: c.layout("API keys", "keys"),
            new_href: c.href("/keys/new"),
            list_href: c.href("/keys"),
            results,
            can_create,
        }))
    }
    .await;
    answer(&app, r)
}

// ---- Creating ---------------------------------------------------------------

pub struct KindChoice {
    pub value: String,
    pub label: String,
    pub hint: String,
    pub selected: bool,
}

pub struct ScopeChoice {
    pub name: String,
    pub description: String,
    pub checked: bool,
    pub input_id: String,
}

pub struct ScopeGroup {
    pub name: String,
    pub wildcard: String,
    pub wildcard_checked: bool,
    pub wildcard_id: String,
    pub scopes: Vec<ScopeChoice>,
}

#[derive(Template)]
#[template(path = "console/key_new.html")]
struct NewKeyPage {
    layout: Layout,
    action: String,
    cancel: String,
    name: String,
    kinds: Vec<KindChoice>,
    groups: Vec<ScopeGroup>,
    /// No catalog: scopes are typed.
    free_scopes: Option<String>,
    expires: String,
    expires_on: String,
    rl_limit: String,
    rl_window: String,
    ip_allowlist: String,
    errors: FieldErrors,
}

/// The scope catalog grouped by resource (the part before the first
/// separator), each group with its wildcard.
pub fn scope_groups(app: &crate::app::App, checked: &[String], id_prefix: &str) -> Vec<ScopeGroup> {
    let sep = app.scopes.separator();
    let mut groups: Vec<ScopeGroup> = Vec::new();
    for (name, description) in app.scopes.catalog() {
        let resource = name.split(sep).next().unwrap_or(name).to_owned();
        let n = groups.iter().map(|g| g.scopes.len()).sum::<usize>();
        let choice = ScopeChoice {
            name: name.clone(),
            description: description.clone(),
            checked: checked.contains(name),
            input_id: format!("{id_prefix}-{n}"),
        };
        match groups.iter_mut().find(|g| g.name == resource) {
            Some(g) => g.scopes.push(choice),
            None => {
                let wildcard = format!("{resource}{sep}*");
                groups.push(ScopeGroup {
                    wildcard_checked: checked.contains(&wildcard),
                    wildcard_id: format!("{id_prefix}-all-{}", groups.len()),
                    wildcard,
                    name: resource,
                    scopes: vec![choice],
                });
            }
        }
    }
    groups
}

fn kinds(c: &Ctx, selected: &str) -> Vec<KindChoice> {
    let mut out = Vec::new();
    let default_env = &c.app.config.environment;
    for k in &c.app.config.key_kinds {
        for env in &k.environments {
            let value = format!("{}:{env}", k.name);
            out.push(KindChoice {
                selected: if selected.is_empty() {
                    out.is_empty() && k.environments.contains(default_env)
                } else {
                    selected == value
                },
                label: if k.environments.len() > 1 {
                    format!("{} \u{00b7} {env}", k.name)
                } else {
                    k.name.clone()
                },
                hint: format!(
                    "{}\u{2026} keys, for the {env} environment{}",
                    k.prefix,
                    if k.requires_explicit_scopes {
                        "; named scopes only, no wildcards"
                    } else {
                        ""
                    }
                ),
                value,
            });
        }
    }
    if !out.iter().any(|k| k.selected)
        && let Some(first) = out.first_mut()
    {
        first.selected = true;
    }
    out
}

fn new_page(c: &Ctx, form: Option<&FormData>, errors: FieldErrors) -> NewKeyPage {
    let get = |n: &str| form.and_then(|f| f.one(n)).unwrap_or("").to_owned();
    let checked = form.map(|f| f.all("scopes")).unwrap_or_default();
    let catalog_empty = c.app.scopes.catalog().is_empty();
    NewKeyPage {
        layout: c.layout("Create an API key", "keys"),
        action: c.href("/keys"),
        cancel: c.href("/keys"),
        name: get("name"),
        kinds: kinds(c, &get("kind")),
        groups: scope_groups(&c.app, &checked, "scope"),
        free_scopes: catalog_empty.then(|| get("scopes_text")),
        expires: if form.is_some() {
            get("expires")
        } else {
            "never".into()
        },
        expires_on: get("expires_on"),
        rl_limit: get("rl_limit"),
        rl_window: if form.is_some() {
            get("rl_window")
        } else {
            "60".into()
        },
        ip_allowlist: get("ip_allowlist"),
        errors,
    }
}

/// `GET /console/orgs/{org}/keys/new`.
pub async fn new(State(app): AppState, Path(org): Path<String>, headers: HeaderMap) -> Response {
    let r = async {
        let here = format!(
            "{}/console/orgs/{org}/keys/new",
            crate::http::authorize::base_path(app.config.public_url())
        );
        let c = Ctx::load(&app, &headers, &org, None, &here).await?;
        c.need(Need::CreateKey, "create keys")?;
        Ok(ok(&new_page(&c, None, FieldErrors::default())))
    }
    .await;
    answer(&app, r)
}

/// The service's request from the form; fields that cannot be read are
/// named in `errors`.
fn create_request(c: &Ctx, f: &FormData, errors: &mut FieldErrors) -> CreateKey {
    let mut bad = |field: &str, m: &str| {
        errors.by_field.insert(field.to_owned(), m.to_owned());
    };
    let (kind, environment) = match f.one("kind").and_then(|k| k.split_once(':')) {
        Some((k, e)) => (Some(k.to_owned()), Some(e.to_owned())),
        None => (None, None),
    };
    let mut scopes = f.all("scopes");
    if let Some(text) = f.one("scopes_text") {
        scopes.extend(
            text.split([' ', ',', '\n', '\r', '\t'])
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
    }
    let (expires_at, expires_in) = match f.one("expires").unwrap_or("never") {
        "never" => (None, None),
        "date" => match f.one("expires_on") {
            Some(d) => (Some(format!("{d}T23:59:59Z")), None),
            None => {
                bad("expires_at", "Pick the date the key stops working.");
                (None, None)
            }
        },
        days => match days.parse::<i64>() {
            Ok(d) if d > 0 => (None, Some(DurationInput(d * 86_400))),
            _ => {
                bad("expires_in", "Pick an expiry from the list.");
                (None, None)
            }
        },
    };
    let ratelimit = match (f.one("rl_limit"), f.one("rl_window")) {
        (None, _) => None,
        (Some(l), w) => match (l.trim().parse::<i64>(), w.unwrap_or("60").parse::<i64>()) {
            (Ok(limit), Ok(secs)) => Some(RateLimitInput {
                limit,
                window: DurationInput(secs),
            }),
            _ => {
                bad(
                    "ratelimit",
                    "Give the number of requests as a whole number.",
                );
                None
            }
        },
    };
    let ip_allowlist = f.one("ip_allowlist").map(|t| {
        t.split([' ', ',', '\n', '\r', '\t'])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    let _ = c;
    CreateKey {
        name: f.one("name").unwrap_or("").to_owned(),
        kind,
        environment,
        scopes,
        expires_at,
        expires_in,
        ratelimit,
        ip_allowlist,
        ..CreateKey::default()
    }
}

#[derive(Template)]
#[template(path = "console/key_secret.html")]
struct SecretPage {
    layout: Layout,
    heading: &'static str,
    secret: String,
    key: KeyRow,
    /// For a rotation: until when the old key works.
    old_until: Option<String>,
    done_href: String,
}

/// `POST /console/orgs/{org}/keys`: creates the key and shows it, once.
pub async fn create(
    State(app): AppState,
    Path(org): Path<String>,
    request_id: Rid,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let here = format!(
            "{}/console/orgs/{org}/keys/new",
            crate::http::authorize::base_path(app.config.public_url())
        );
        let (c, f) = Ctx::posted(&app, &headers, &org, request_id, &here, &body).await?;
        c.need(Need::CreateKey, "create keys")?;
        let mut errors = FieldErrors::default();
        let req = create_request(&c, &f, &mut errors);
        if errors.any() {
            return Ok(page_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &new_page(&c, Some(&f), errors),
            ));
        }
        match service::create_key(&c.app, &c.actor(), &c.org.id, req).await {
            Ok((key, secret)) => {
                let emails = creators(&c, std::slice::from_ref(&key)).await;
                Ok(ok(&SecretPage {
                    layout: c.layout("Your new API key", "keys"),
                    heading: "Your new API key",
                    secret,
                    key: row(&c, &key, &emails),
                    old_until: None,
                    done_href: c.href(&format!("/keys/{}", key.id)),
                }))
            }
            Err(e) if e.code == latchkey_core::Code::ValidationFailed => Ok(page_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &new_page(&c, Some(&f), FieldErrors::from_api(&e)),
            )),
            Err(e) => Err(e.into()),
        }
    }
    .await;
    answer(&app, r)
}

// ---- One key ----------------------------------------------------------------

#[derive(Template)]
#[template(path = "console/key.html")]
struct KeyPage {
    layout: Layout,
    key: KeyRow,
    notice: Option<&'static str>,
    logs_href: String,
    revoke_href: String,
    rotate_href: String,
    list_href: String,
    replaced_href: Option<String>,
    from_href: Option<String>,
    member_note: bool,
}

/// The key `id` if it is this organization's and this person may revoke
/// or rotate it (`scope`: the root key scope that takes), else 404 or 403.
async fn managed_key(c: &Ctx, id: &str, scope: &'static str) -> Result<ApiKey, Fail> {
    let k = load_key(c, id).await?;
    if c.who.may_manage_key(&k, scope) {
        Ok(k)
    } else {
        Err(c.framed(Fail::Forbidden(if scope == "keys.revoke" {
            "revoke this key (members manage the keys they created)"
        } else {
            "rotate this key (members manage the keys they created)"
        })))
    }
}

/// The key `id` if it is this organization's (else 404, as for a key that
/// does not exist).
async fn load_key(c: &Ctx, id: &str) -> Result<ApiKey, Fail> {
    if !is_id(id, "key_") {
        return Err(Fail::NotFound);
    }
    let k = c.app.store.get_key(id).await?;
    if k.org_id != c.org.id {
        return Err(Fail::NotFound);
    }
    Ok(k)
}

/// `GET /console/orgs/{org}/keys/{id}`.
pub async fn show(
    State(app): AppState,
    Path((org, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let here = format!(
            "{}/console/orgs/{org}/keys/{id}",
            crate::http::authorize::base_path(app.config.public_url())
        );
        let c = Ctx::load(&app, &headers, &org, None, &here).await?;
        c.need(Need::Read("keys.read"), "see the keys")?;
        let k = load_key(&c, &id).await?;
        let emails = creators(&c, std::slice::from_ref(&k)).await;
        let q = FormData::query(raw.as_deref());
        let notice = match q.one("done") {
            Some("revoked") => Some("The key was revoked. Requests made with it are refused."),
            _ => None,
        };
        let key = row(&c, &k, &emails);
        let member_note = matches!(c.who, Who::User(_))
            && !c.who.is_admin()
            && !key.can_revoke
            && notice.is_none();
        Ok(ok(&KeyPage {
            layout: c.layout(format!("Key {}", k.name), "keys"),
            logs_href: format!("{}?key_id={}", c.href("/logs"), k.id),
            revoke_href: c.href(&format!("/keys/{}/revoke", k.id)),
            rotate_href: c.href(&format!("/keys/{}/rotate", k.id)),
            list_href: c.href("/keys"),
            replaced_href: k
                .replaced_by
                .as_ref()
                .map(|r| c.href(&format!("/keys/{r}"))),
            from_href: k
                .rotated_from
                .as_ref()
                .map(|r| c.href(&format!("/keys/{r}"))),
            member_note,
            key,
            notice,
        }))
    }
    .await;
    answer(&app, r)
}

#[derive(Template)]
#[template(path = "console/key_revoke.html")]
struct RevokePage {
    layout: Layout,
    key: KeyRow,
    action: String,
    cancel: String,
}

#[derive(Template)]
#[template(path = "console/key_rotate.html")]
struct RotatePage {
    layout: Layout,
    key: KeyRow,
    action: String,
    cancel: String,
}

/// `GET /console/orgs/{org}/keys/{id}/revoke`: asks to confirm, with a reason.
pub async fn revoke_page(
    State(app): AppState,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    confirm_page(app, org, id, headers, true).await
}

/// `GET /console/orgs/{org}/keys/{id}/rotate`: asks for a grace period.
pub async fn rotate_page(
    State(app): AppState,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    confirm_page(app, org, id, headers, false).await
}

async fn confirm_page(
    app: std::sync::Arc<crate::app::App>,
    org: String,
    id: String,
    headers: HeaderMap,
    revoke: bool,
) -> Response {
    let r = async {
        let what = if revoke { "revoke" } else { "rotate" };
        let here = format!(
            "{}/console/orgs/{org}/keys/{id}/{what}",
            crate::http::authorize::base_path(app.config.public_url())
        );
        let c = Ctx::load(&app, &headers, &org, None, &here).await?;
        let scope = if revoke { "keys.revoke" } else { "keys.rotate" };
        let k = managed_key(&c, &id, scope).await?;
        let key = row(&c, &k, &HashMap::new());
        let action = c.href(&format!("/keys/{}/{what}", k.id));
        let cancel = c.href(&format!("/keys/{}", k.id));
        Ok(if revoke {
            ok(&RevokePage {
                layout: c.layout(format!("Revoke {}", k.name), "keys"),
                key,
                action,
                cancel,
            })
        } else {
            ok(&RotatePage {
                layout: c.layout(format!("Rotate {}", k.name), "keys"),
                key,
                action,
                cancel,
            })
        })
    }
    .await;
    answer(&app, r)
}

/// `POST /console/orgs/{org}/keys/{id}/revoke` `reason`.
pub async fn revoke(
    State(app): AppState,
    Path((org, id)): Path<(String, String)>,
    request_id: Rid,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let here = format!(
            "{}/console/orgs/{org}/keys/{id}",
            crate::http::authorize::base_path(app.config.public_url())
        );
        let (c, f) = Ctx::posted(&app, &headers, &org, request_id, &here, &body).await?;
        let k = managed_key(&c, &id, "keys.revoke").await?;
        let req = RevokeKey {
            reason: f.one("reason").map(|r| r.trim().to_owned()),
        };
        service::revoke_key(&c.app, &c.actor(), &k.id, req).await?;
        Ok(see_other(&format!(
            "{}?done=revoked",
            c.href(&format!("/keys/{}", k.id))
        )))
    }
    .await;
    answer(&app, r)
}

/// `POST /console/orgs/{org}/keys/{id}/rotate` `grace_period` (seconds):
/// shows the new key, once.
pub async fn rotate(
    State(app): AppState,
    Path((org, id)): Path<(String, String)>,
    request_id: Rid,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let here = format!(
            "{}/console/orgs/{org}/keys/{id}",
            crate::http::authorize::base_path(app.config.public_url())
        );
        let (c, f) = Ctx::posted(&app, &headers, &org, request_id, &here, &body).await?;
        let k = managed_key(&c, &id, "keys.rotate").await?;
        let grace = match f.one("grace_period").unwrap_or("0").parse::<i64>() {
            Ok(g) => g,
            Err(_) => return Err(Fail::Bad("Pick a grace period from the list.".into())),
        };
        let req = RotateKey {
            grace_period: Some(DurationInput(grace)),
        };
        let (new, secret, old) = service::rotate_key(&c.app, &c.actor(), &k.id, req).await?;
        let emails = creators(&c, std::slice::from_ref(&new)).await;
        Ok(ok(&SecretPage {
            layout: c.layout("Your new API key", "keys"),
            heading: "Key rotated: your new API key",
            secret,
            key: row(&c, &new, &emails),
            old_until: old.revoked_at.map(when),
            done_href: c.href(&format!("/keys/{}", new.id)),
        }))
    }
    .await;
    answer(&app, r)
}
