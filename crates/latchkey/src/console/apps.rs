//! OAuth Apps: the list, registering an app (its secret shown once),
//! rotating its secret, deleting it, and the consents its users gave.
//! Every change is `oauth::manage`'s, as for the HTTP API.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use latchkey_core::ids::is_id;
use latchkey_store::oauth::Client;

use super::keys::{ScopeGroup, scope_groups};
use super::{
    AppState, Ctx, Fail, FieldErrors, FormData, Layout, Need, Rid, answer, ok, page_response,
    see_other, when,
};
use crate::http::authorize::base_path;
use crate::oauth::manage::{self, CreateClient, JwtAuth};

const PAGE: u32 = 25;

pub struct AppRow {
    pub id: String,
    pub href: String,
    pub name: String,
    pub kind: &'static str,
    pub grant_types: Vec<String>,
    pub redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    pub auth_method: String,
    pub jwt_alg: Option<String>,
    pub require_pkce: bool,
    pub created: String,
    pub secret_rotated: Option<String>,
}

fn row(c: &Ctx, a: &Client) -> AppRow {
    AppRow {
        id: a.id.clone(),
        href: c.href(&format!("/apps/{}", a.id)),
        name: a.name.clone(),
        kind: if a.public { "Public" } else { "Confidential" },
        grant_types: a.grant_types.clone(),
        redirect_uris: a.redirect_uris.clone(),
        scopes: a.scopes.clone(),
        auth_method: a.token_endpoint_auth_method.clone(),
        jwt_alg: a.jwt_auth_alg.clone(),
        require_pkce: a.require_pkce,
        created: when(a.created_at),
        secret_rotated: a.secret_rotated_at.map(when),
    }
}

#[derive(Template)]
#[template(path = "console/apps.html")]
struct AppsPage {
    layout: Layout,
    rows: Vec<AppRow>,
    next: Option<String>,
    first: Option<String>,
    can_manage: bool,
    new_href: String,
}

fn here(app: &crate::app::App, org: &str, rest: &str) -> String {
    format!(
        "{}/console/orgs/{org}/apps{rest}",
        base_path(app.config.public_url())
    )
}

/// `GET /console/orgs/{org}/apps?cursor=`.
pub async fn list(
    State(app): AppState,
    Path(org): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let c = Ctx::load(&app, &headers, &org, None, &here(&app, &org, "")).await?;
        c.need(Need::Read("clients.read"), "see the apps")?;
        let q = FormData::query(raw.as_deref());
        let cursor = q.one("cursor");
        let (rows, next) = manage::list_clients(&c.app, &c.org.id, Some(PAGE), cursor).await?;
        let list = c.href("/apps");
        Ok(ok(&AppsPage {
            layout: c.layout("OAuth apps", "apps"),
            rows: rows.iter().map(|a| row(&c, a)).collect(),
            next: next.map(|n| format!("{list}?cursor={n}")),
            first: cursor.map(|_| list.clone()),
            can_manage: c.who.may(Need::Admin("clients.create")),
            new_href: c.href("/apps/new"),
        }))
    }
    .await;
    answer(&app, r)
}

#[derive(Template)]
#[template(path = "console/app_new.html")]
struct NewAppPage {
    layout: Layout,
    action: String,
    cancel: String,
    name: String,
    redirect_uris: String,
    public: bool,
    grants: Vec<(String, &'static str, bool)>,
    groups: Vec<ScopeGroup>,
    free_scopes: Option<String>,
    jwt_alg: String,
    jwt_algs: &'static [&'static str],
    errors: FieldErrors,
}

const GRANT_LABELS: [(&str, &str); 3] = [
    (
        "authorization_code",
        "Authorization code, with PKCE: users sign in and consent",
    ),
    (
        "refresh_token",
        "Refresh tokens: stay signed in without asking again",
    ),
    (
        "client_credentials",
        "Client credentials: the app acts for itself (confidential apps)",
    ),
];

fn new_page(c: &Ctx, f: Option<&FormData>, errors: FieldErrors) -> NewAppPage {
    let get = |n: &str| f.and_then(|f| f.one(n)).unwrap_or("").to_owned();
    let chosen = f.map(|f| f.all("grant_types"));
    let scopes = f.map(|f| f.all("scopes")).unwrap_or_default();
    NewAppPage {
        layout: c.layout("Register an OAuth app", "apps"),
        action: c.href("/apps"),
        cancel: c.href("/apps"),
        name: get("name"),
        redirect_uris: get("redirect_uris"),
        public: f.is_some_and(|f| f.one("type") == Some("public")),
        grants: GRANT_LABELS
            .iter()
            .map(|(g, label)| {
                let on = match &chosen {
                    Some(ch) => ch.iter().any(|x| x == g),
                    None => *g != "client_credentials",
                };
                ((*g).to_owned(), *label, on)
            })
            .collect(),
        groups: scope_groups(&c.app, &scopes, "app-scope"),
        free_scopes: c
            .app
            .scopes
            .catalog()
            .is_empty()
            .then(|| get("scopes_text")),
        jwt_alg: get("jwt_alg"),
        jwt_algs: manage::JWT_ALGS,
        errors,
    }
}

/// `GET /console/orgs/{org}/apps/new`.
pub async fn new(State(app): AppState, Path(org): Path<String>, headers: HeaderMap) -> Response {
    let r = async {
        let c = Ctx::load(&app, &headers, &org, None, &here(&app, &org, "/new")).await?;
        c.need(Need::Admin("clients.create"), "register apps")?;
        Ok(ok(&new_page(&c, None, FieldErrors::default())))
    }
    .await;
    answer(&app, r)
}

fn split_list(s: Option<&str>) -> Vec<String> {
    s.unwrap_or("")
        .split([' ', ',', '\n', '\r', '\t'])
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

#[derive(Template)]
#[template(path = "console/app_secret.html")]
struct AppSecretPage {
    layout: Layout,
    heading: &'static str,
    app: AppRow,
    secret: Option<String>,
    done_href: String,
}

/// `POST /console/orgs/{org}/apps`: registers the app; shows its secret
/// once (a public app has none).
pub async fn create(
    State(app): AppState,
    Path(org): Path<String>,
    request_id: Rid,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let (c, f) = Ctx::posted(
            &app,
            &headers,
            &org,
            request_id,
            &here(&app, &org, "/new"),
            &body,
        )
        .await?;
        c.need(Need::Admin("clients.create"), "register apps")?;
        let public = f.one("type") == Some("public");
        let mut scopes = f.all("scopes");
        scopes.extend(split_list(f.one("scopes_text")));
        let req = CreateClient {
            name: f.one("name").unwrap_or("").to_owned(),
            redirect_uris: split_list(f.one("redirect_uris")),
            grant_types: Some(f.all("grant_types")),
            scopes,
            public,
            token_endpoint_auth_method: None,
            jwks: None,
            jwt_auth: f.one("jwt_alg").map(|alg| JwtAuth {
                alg: alg.to_owned(),
            }),
            require_pkce: None,
        };
        match manage::create_client(&c.app, &c.actor(), &c.org.id, req).await {
            Ok((client, secret)) => Ok(ok(&AppSecretPage {
                layout: c.layout("App registered", "apps"),
                heading: "App registered",
                app: row(&c, &client),
                secret,
                done_href: c.href(&format!("/apps/{}", client.id)),
            })),
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

async fn load_app(c: &Ctx, id: &str) -> Result<Client, Fail> {
    if !is_id(id, "cli_") {
        return Err(Fail::NotFound);
    }
    let a = c.app.store.get_client(id).await?;
    if a.org_id != c.org.id {
        return Err(Fail::NotFound);
    }
    Ok(a)
}

pub struct ConsentRow {
    pub user: String,
    pub scopes: Vec<String>,
    pub since: String,
    pub action: String,
}

#[derive(Template)]
#[template(path = "console/app.html")]
struct AppPage {
    layout: Layout,
    app: AppRow,
    consents: Vec<ConsentRow>,
    can_manage: bool,
    notice: Option<&'static str>,
    rotate_href: String,
    delete_href: String,
    logs_href: String,
    list_href: String,
}

/// `GET /console/orgs/{org}/apps/{id}`: the app and its users' consents.
pub async fn show(
    State(app): AppState,
    Path((org, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let c = Ctx::load(
            &app,
            &headers,
            &org,
            None,
            &here(&app, &org, &format!("/{id}")),
        )
        .await?;
        c.need(Need::Read("clients.read"), "see the apps")?;
        let a = load_app(&c, &id).await?;
        let can_manage = c.who.may(Need::Admin("clients.update"));
        let mut consents = Vec::new();
        for k in manage::list_consents(&c.app, &a.id).await? {
            let user = match c.app.store.get_user(&k.user_id).await {
                Ok(u) => u.email,
                Err(_) => k.user_id.clone(),
            };
            consents.push(ConsentRow {
                user,
                scopes: k.scopes.clone(),
                since: when(k.created_at),
                action: c.href(&format!("/apps/{}/consents/{}/revoke", a.id, k.user_id)),
            });
        }
        let q = FormData::query(raw.as_deref());
        let notice = match q.one("done") {
            Some("consent") => {
                Some("The consent was withdrawn: the app's tokens for that user stopped working.")
            }
            _ => None,
        };
        Ok(ok(&AppPage {
            layout: c.layout(format!("App {}", a.name), "apps"),
            rotate_href: c.href(&format!("/apps/{}/rotate-secret", a.id)),
            delete_href: c.href(&format!("/apps/{}/delete", a.id)),
            logs_href: format!("{}?client_id={}", c.href("/logs"), a.id),
            list_href: c.href("/apps"),
            app: row(&c, &a),
            consents,
            can_manage,
            notice,
        }))
    }
    .await;
    answer(&app, r)
}

#[derive(Template)]
#[template(path = "console/app_confirm.html")]
struct ConfirmPage {
    layout: Layout,
    app: AppRow,
    heading: String,
    warning: &'static str,
    button: &'static str,
    danger: bool,
    action: String,
    cancel: String,
}

async fn confirm(
    app: std::sync::Arc<crate::app::App>,
    org: String,
    id: String,
    headers: HeaderMap,
    delete: bool,
) -> Response {
    let r = async {
        let what = if delete { "delete" } else { "rotate-secret" };
        let c = Ctx::load(&app, &headers, &org, None, &here(&app, &org, &format!("/{id}/{what}")))
            .await?;
        let scope = if delete { "clients.delete" } else { "clients.update" };
        c.need(Need::Admin(scope), "change apps")?;
        let a = load_app(&c, &id).await?;
        if !delete && a.public {
            return Err(Fail::Bad("A public app has no secret to rotate.".into()));
        }
        Ok(ok(&ConfirmPage {
            layout: c.layout(a.name.clone(), "apps"),
            heading: if delete {
                format!("Delete {}?", a.name)
            } else {
                format!("Rotate the secret of {}?", a.name)
            },
            warning: if delete {
                "The app can no longer sign users in or get tokens, and every token it holds stops working now. This cannot be undone."
            } else {
                "The current secret stops working now: the app fails to get tokens until it is given the new one, shown once on the next page."
            },
            button: if delete { "Delete app" } else { "Rotate secret" },
            danger: delete,
            action: c.href(&format!("/apps/{}/{what}", a.id)),
            cancel: c.href(&format!("/apps/{}", a.id)),
            app: row(&c, &a),
        }))
    }
    .await;
    answer(&app, r)
}

/// `GET /console/orgs/{org}/apps/{id}/rotate-secret`: asks to confirm.
pub async fn rotate_page(
    State(app): AppState,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    confirm(app, org, id, headers, false).await
}

/// `GET /console/orgs/{org}/apps/{id}/delete`: asks to confirm.
pub async fn delete_page(
    State(app): AppState,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    confirm(app, org, id, headers, true).await
}

/// `POST /console/orgs/{org}/apps/{id}/rotate-secret`: the new secret, once.
pub async fn rotate_secret(
    State(app): AppState,
    Path((org, id)): Path<(String, String)>,
    request_id: Rid,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let (c, _) = Ctx::posted(
            &app,
            &headers,
            &org,
            request_id,
            &here(&app, &org, &format!("/{id}")),
            &body,
        )
        .await?;
        c.need(Need::Admin("clients.update"), "change apps")?;
        let a = load_app(&c, &id).await?;
        let (client, secret) = manage::rotate_client_secret(&c.app, &c.actor(), &a.id).await?;
        Ok(ok(&AppSecretPage {
            layout: c.layout("New app secret", "apps"),
            heading: "Secret rotated",
            app: row(&c, &client),
            secret: Some(secret),
            done_href: c.href(&format!("/apps/{}", client.id)),
        }))
    }
    .await;
    answer(&app, r)
}

/// `POST /console/orgs/{org}/apps/{id}/delete`.
pub async fn delete(
    State(app): AppState,
    Path((org, id)): Path<(String, String)>,
    request_id: Rid,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let (c, _) = Ctx::posted(
            &app,
            &headers,
            &org,
            request_id,
            &here(&app, &org, &format!("/{id}")),
            &body,
        )
        .await?;
        c.need(Need::Admin("clients.delete"), "delete apps")?;
        let a = load_app(&c, &id).await?;
        manage::delete_client(&c.app, &c.actor(), &a.id).await?;
        Ok(see_other(&c.href("/apps")))
    }
    .await;
    answer(&app, r)
}

/// `POST /console/orgs/{org}/apps/{id}/consents/{user}/revoke`.
pub async fn revoke_consent(
    State(app): AppState,
    Path((org, id, user)): Path<(String, String, String)>,
    request_id: Rid,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let (c, _) = Ctx::posted(
            &app,
            &headers,
            &org,
            request_id,
            &here(&app, &org, &format!("/{id}")),
            &body,
        )
        .await?;
        c.need(Need::Admin("clients.update"), "withdraw consents")?;
        let a = load_app(&c, &id).await?;
        if !is_id(&user, "usr_") {
            return Err(Fail::NotFound);
        }
        manage::revoke_consent(&c.app, &c.actor(), &a.id, &user).await?;
        Ok(see_other(&format!(
            "{}?done=consent",
            c.href(&format!("/apps/{}", a.id))
        )))
    }
    .await;
    answer(&app, r)
}
