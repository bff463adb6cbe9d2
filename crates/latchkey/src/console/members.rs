//! Members: the organization's accounts, adding one with a role, removing
//! one. `oauth::manage`'s users, as for the HTTP API.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use latchkey_core::ids::is_id;
use latchkey_store::oauth::User;

use super::{
    AppState, Ctx, Fail, FieldErrors, FormData, Layout, Need, Rid, answer, ok, page_response,
    see_other, when,
};
use crate::http::authorize::base_path;
use crate::oauth::manage::{self, CreateUser};

const PAGE: u32 = 50;

pub struct MemberRow {
    pub email: String,
    pub role: &'static str,
    pub since: String,
    pub you: bool,
    pub remove_href: String,
}

fn row(c: &Ctx, u: &User) -> MemberRow {
    MemberRow {
        email: u.email.clone(),
        role: if u.role == "admin" { "Admin" } else { "Member" },
        since: when(u.created_at),
        you: u.id == c.who.id(),
        remove_href: c.href(&format!("/members/{}/remove", u.id)),
    }
}

#[derive(Template)]
#[template(path = "console/members.html")]
struct MembersPage {
    layout: Layout,
    rows: Vec<MemberRow>,
    next: Option<String>,
    first: Option<String>,
    can_manage: bool,
    action: String,
    email: String,
    role: String,
    errors: FieldErrors,
    notice: Option<&'static str>,
}

fn here(app: &crate::app::App, org: &str, rest: &str) -> String {
    format!(
        "{}/console/orgs/{org}/members{rest}",
        base_path(app.config.public_url())
    )
}

async fn page(
    c: &Ctx,
    cursor: Option<&str>,
    form: Option<&FormData>,
    errors: FieldErrors,
    notice: Option<&'static str>,
) -> Result<MembersPage, Fail> {
    let (rows, next) = manage::list_users(&c.app, &c.org.id, Some(PAGE), cursor).await?;
    let list = c.href("/members");
    Ok(MembersPage {
        layout: c.layout("Members", "members"),
        rows: rows.iter().map(|u| row(c, u)).collect(),
        next: next.map(|n| format!("{list}?cursor={n}")),
        first: cursor.map(|_| list.clone()),
        can_manage: c.who.may(Need::Admin("users.create")),
        action: list,
        email: form.and_then(|f| f.one("email")).unwrap_or("").to_owned(),
        role: form
            .and_then(|f| f.one("role"))
            .unwrap_or("member")
            .to_owned(),
        errors,
        notice,
    })
}

/// `GET /console/orgs/{org}/members?cursor=`.
pub async fn list(
    State(app): AppState,
    Path(org): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let c = Ctx::load(&app, &headers, &org, None, &here(&app, &org, "")).await?;
        c.need(Need::Read("users.read"), "see the members")?;
        let q = FormData::query(raw.as_deref());
        let notice = match q.one("done") {
            Some("added") => Some("Member added. They can sign in to the console with their email and the password you set."),
            Some("removed") => Some("Member removed. Their sessions ended and what they authorized apps to do was revoked."),
            _ => None,
        };
        Ok(ok(&page(&c, q.one("cursor"), None, FieldErrors::default(), notice).await?))
    }
    .await;
    answer(&app, r)
}

/// `POST /console/orgs/{org}/members` `email, password, role`.
pub async fn add(
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
            &here(&app, &org, ""),
            &body,
        )
        .await?;
        c.need(Need::Admin("users.create"), "add members")?;
        let req = CreateUser {
            email: f.one("email").unwrap_or("").to_owned(),
            password: f.one("password").unwrap_or("").to_owned(),
            role: f.one("role").map(str::to_owned),
        };
        match manage::create_user(&c.app, &c.actor(), &c.org.id, req).await {
            Ok(_) => Ok(see_other(&format!("{}?done=added", c.href("/members")))),
            Err(e)
                if matches!(
                    e.code,
                    latchkey_core::Code::ValidationFailed | latchkey_core::Code::Conflict
                ) =>
            {
                let mut errors = FieldErrors::from_api(&e);
                if e.code == latchkey_core::Code::Conflict {
                    errors.general.clear();
                    errors.by_field.insert("email".into(), e.detail.clone());
                }
                Ok(page_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &page(&c, None, Some(&f), errors, None).await?,
                ))
            }
            Err(e) => Err(e.into()),
        }
    }
    .await;
    answer(&app, r)
}

async fn load_member(c: &Ctx, id: &str) -> Result<User, Fail> {
    if !is_id(id, "usr_") {
        return Err(Fail::NotFound);
    }
    let u = c.app.store.get_user(id).await?;
    if u.org_id != c.org.id {
        return Err(Fail::NotFound);
    }
    Ok(u)
}

#[derive(Template)]
#[template(path = "console/member_remove.html")]
struct RemovePage {
    layout: Layout,
    member: MemberRow,
    action: String,
    cancel: String,
}

/// `GET /console/orgs/{org}/members/{id}/remove`: asks to confirm.
pub async fn remove_page(
    State(app): AppState,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let c = Ctx::load(&app, &headers, &org, None, &here(&app, &org, "")).await?;
        c.need(Need::Admin("users.delete"), "remove members")?;
        let u = load_member(&c, &id).await?;
        if u.id == c.who.id() {
            return Err(Fail::Bad(
                "You cannot remove yourself; ask another admin.".into(),
            ));
        }
        Ok(ok(&RemovePage {
            layout: c.layout(format!("Remove {}", u.email), "members"),
            action: c.href(&format!("/members/{}/remove", u.id)),
            cancel: c.href("/members"),
            member: row(&c, &u),
        }))
    }
    .await;
    answer(&app, r)
}

/// `POST /console/orgs/{org}/members/{id}/remove`.
pub async fn remove(
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
            &here(&app, &org, ""),
            &body,
        )
        .await?;
        c.need(Need::Admin("users.delete"), "remove members")?;
        let u = load_member(&c, &id).await?;
        if u.id == c.who.id() {
            return Err(Fail::Bad(
                "You cannot remove yourself; ask another admin.".into(),
            ));
        }
        manage::delete_user(&c.app, &c.actor(), &u.id).await?;
        Ok(see_other(&format!("{}?done=removed", c.href("/members"))))
    }
    .await;
    answer(&app, r)
}
