//! The management API of OAuth clients, their consents, and organization
//! users (SPEC §9): thin handlers over `oauth::manage`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::JsonBody;
use super::problem::Problem;
use super::v1::{ListParams, known, no_store};
use crate::app::App;
use crate::error::ApiError;
use crate::oauth::manage::{
    self, ClientView, ConsentView, CreateClient, CreateUser, NewClientView, PatchClient, UserView,
};
use crate::service::Principal;
use crate::views::ListPage;

type AppState = State<Arc<App>>;

pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(create_client, list_clients))
        .routes(routes!(get_client, patch_client, delete_client))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_consents))
        .routes(routes!(revoke_consent))
        .routes(routes!(create_user, list_users))
        .routes(routes!(get_user, delete_user))
}

/// Register an OAuth client. Its secret is in the answer this once.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/clients", tag = "clients", params(("org_id" = String, Path)),
    request_body = CreateClient, security(("root_key" = [])),
    responses((status = 201, body = NewClientView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn create_client(
    State(app): AppState,
    p: Principal,
    Path(org_id): Path<String>,
    JsonBody(req): JsonBody<CreateClient>,
) -> Result<impl IntoResponse, ApiError> {
    p.require("clients.create")?;
    known(&org_id, "org_", "organization")?;
    let (client, secret) = manage::create_client(&app, &p.actor(), &org_id, req).await?;
    Ok((
        StatusCode::CREATED,
        no_store(),
        Json(NewClientView {
            client_id: client.id.clone(),
            client_secret: secret,
            client: ClientView::from(&client),
        }),
    ))
}

/// List an organization's clients, newest first.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/clients", tag = "clients", params(("org_id" = String, Path), ListParams),
    security(("root_key" = [])),
    responses((status = 200, body = ListPage<ClientView>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn list_clients(
    State(app): AppState,
    p: Principal,
    Path(org_id): Path<String>,
    Query(q): Query<ListParams>,
) -> Result<Json<ListPage<ClientView>>, ApiError> {
    p.require("clients.read")?;
    known(&org_id, "org_", "organization")?;
    let (rows, next_cursor) =
        manage::list_clients(&app, &org_id, q.limit, q.cursor.as_deref()).await?;
    Ok(Json(ListPage {
        data: rows.iter().map(ClientView::from).collect(),
        next_cursor,
    }))
}

/// Get a client (never its secret).
#[utoipa::path(get, path = "/v1/clients/{client_id}", tag = "clients", params(("client_id" = String, Path)),
    security(("root_key" = [])),
    responses((status = 200, body = ClientView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn get_client(
    State(app): AppState,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<ClientView>, ApiError> {
    p.require("clients.read")?;
    known(&id, "cli_", "client")?;
    Ok(Json(ClientView::from(
        &manage::get_client(&app, &id).await?,
    )))
}

/// Change a client's settings.
#[utoipa::path(patch, path = "/v1/clients/{client_id}", tag = "clients", params(("client_id" = String, Path)),
    request_body = PatchClient, security(("root_key" = [])),
    responses((status = 200, body = ClientView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn patch_client(
    State(app): AppState,
    p: Principal,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PatchClient>,
) -> Result<Json<ClientView>, ApiError> {
    p.require("clients.update")?;
    known(&id, "cli_", "client")?;
    let client = manage::patch_client(&app, &p.actor(), &id, req).await?;
    Ok(Json(ClientView::from(&client)))
}

/// Delete a client: every token and grant it holds ends at once.
#[utoipa::path(delete, path = "/v1/clients/{client_id}", tag = "clients", params(("client_id" = String, Path)),
    security(("root_key" = [])),
    responses((status = 204), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn delete_client(
    State(app): AppState,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.require("clients.delete")?;
    known(&id, "cli_", "client")?;
    manage::delete_client(&app, &p.actor(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace a confidential client's secret; the old one stops working at
/// once. The new secret is in the answer this once.
#[utoipa::path(post, path = "/v1/clients/{client_id}/rotate-secret", tag = "clients", params(("client_id" = String, Path)),
    security(("root_key" = [])),
    responses((status = 200, body = NewClientView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn rotate_secret(
    State(app): AppState,
    p: Principal,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    p.require("clients.update")?;
    known(&id, "cli_", "client")?;
    let (client, secret) = manage::rotate_client_secret(&app, &p.actor(), &id).await?;
    Ok((
        no_store(),
        Json(NewClientView {
            client_id: client.id.clone(),
            client_secret: Some(secret),
            client: ClientView::from(&client),
        }),
    ))
}

/// The consents users gave this client, newest first.
#[utoipa::path(get, path = "/v1/clients/{client_id}/consents", tag = "clients", params(("client_id" = String, Path)),
    security(("root_key" = [])),
    responses((status = 200, body = ListPage<ConsentView>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn list_consents(
    State(app): AppState,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<ListPage<ConsentView>>, ApiError> {
    p.require("clients.read")?;
    known(&id, "cli_", "client")?;
    let rows = manage::list_consents(&app, &id).await?;
    Ok(Json(ListPage {
        data: rows.iter().map(ConsentView::from).collect(),
        next_cursor: None,
    }))
}

/// Revoke a user's consent to this client, and every grant it made.
#[utoipa::path(delete, path = "/v1/clients/{client_id}/consents/{user_id}", tag = "clients",
    params(("client_id" = String, Path), ("user_id" = String, Path)), security(("root_key" = [])),
    responses((status = 204), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn revoke_consent(
    State(app): AppState,
    p: Principal,
    Path((client_id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    p.require("clients.update")?;
    known(&client_id, "cli_", "client")?;
    known(&user_id, "usr_", "consent")?;
    manage::revoke_consent(&app, &p.actor(), &client_id, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Add a user to an organization.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/users", tag = "users", params(("org_id" = String, Path)),
    request_body = CreateUser, security(("root_key" = [])),
    responses((status = 201, body = UserView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn create_user(
    State(app): AppState,
    p: Principal,
    Path(org_id): Path<String>,
    JsonBody(req): JsonBody<CreateUser>,
) -> Result<impl IntoResponse, ApiError> {
    p.require("users.create")?;
    known(&org_id, "org_", "organization")?;
    let user = manage::create_user(&app, &p.actor(), &org_id, req).await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

/// List an organization's users, newest first.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/users", tag = "users", params(("org_id" = String, Path), ListParams),
    security(("root_key" = [])),
    responses((status = 200, body = ListPage<UserView>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn list_users(
    State(app): AppState,
    p: Principal,
    Path(org_id): Path<String>,
    Query(q): Query<ListParams>,
) -> Result<Json<ListPage<UserView>>, ApiError> {
    p.require("users.read")?;
    known(&org_id, "org_", "organization")?;
    let (rows, next_cursor) =
        manage::list_users(&app, &org_id, q.limit, q.cursor.as_deref()).await?;
    Ok(Json(ListPage {
        data: rows.iter().map(UserView::from).collect(),
        next_cursor,
    }))
}

/// Get a user.
#[utoipa::path(get, path = "/v1/users/{user_id}", tag = "users", params(("user_id" = String, Path)),
    security(("root_key" = [])),
    responses((status = 200, body = UserView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn get_user(
    State(app): AppState,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    p.require("users.read")?;
    known(&id, "usr_", "user")?;
    Ok(Json(UserView::from(&manage::get_user(&app, &id).await?)))
}

/// Remove a user: their grants, consents and sessions end.
#[utoipa::path(delete, path = "/v1/users/{user_id}", tag = "users", params(("user_id" = String, Path)),
    security(("root_key" = [])),
    responses((status = 204), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn delete_user(
    State(app): AppState,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.require("users.delete")?;
    known(&id, "usr_", "user")?;
    manage::delete_user(&app, &p.actor(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
