//! The management API and `/v1/verify`: thin handlers over `service` and
//! `decision`, each documented for `/openapi.json`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use latchkey_core::ids::is_id;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{JsonBody, OptionalJson};
use super::problem::Problem;
use crate::app::App;
use crate::decision;
use crate::error::{ApiError, FieldError};
use crate::logs::{self, DecisionLog, LogFilter};
use crate::service::{
    self, CreateKey, CreateOrg, CreateRootKey, PatchKey, Principal, RevokeKey, RotateKey,
};
use crate::views::{
    KeyView, ListPage, LogView, NewKeyView, NewRootKeyView, OrgView, RootKeyView, rfc3339,
};

type AppState = State<Arc<App>>;

pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(create_org, list_orgs))
        .routes(routes!(get_org))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(get_key, patch_key, delete_key))
        .routes(routes!(revoke_key))
        .routes(routes!(rotate_key))
        .routes(routes!(list_logs))
        .routes(routes!(create_root_key, list_root_keys))
        .routes(routes!(revoke_root_key))
        .routes(routes!(verify))
        .routes(routes!(instance))
}

pub(crate) fn known(id: &str, prefix: &str, what: &str) -> Result<(), ApiError> {
    if is_id(id, prefix) {
        Ok(())
    } else {
        Err(ApiError::not_found(what))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1 to 200, default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyListParams {
    /// 1 to 200, default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only the keys of this owner.
    external_id: Option<String>,
}

/// Create an organization.
#[utoipa::path(post, path = "/v1/orgs", tag = "orgs", request_body = CreateOrg, security(("root_key" = [])),
    responses((status = 201, body = OrgView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn create_org(
    State(app): AppState,
    p: Principal,
    JsonBody(req): JsonBody<CreateOrg>,
) -> Result<impl IntoResponse, ApiError> {
    p.require("orgs.create")?;
    let org = service::create_org(&app, &p.actor(), req).await?;
    Ok((StatusCode::CREATED, Json(OrgView::from(&org))))
}

/// List organizations, newest first.
#[utoipa::path(get, path = "/v1/orgs", tag = "orgs", params(ListParams), security(("root_key" = [])),
    responses((status = 200, body = ListPage<OrgView>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn list_orgs(
    State(app): AppState,
    p: Principal,
    Query(q): Query<ListParams>,
) -> Result<Json<ListPage<OrgView>>, ApiError> {
    p.require("orgs.read")?;
    let (page, limit) = service::page(q.limit, q.cursor.as_deref())?;
    let mut rows = app.store.list_orgs(&page).await?;
    let next_cursor = service::next_cursor(&mut rows, limit, |o| (o.created_at, o.id.as_str()));
    Ok(Json(ListPage {
        data: rows.iter().map(OrgView::from).collect(),
        next_cursor,
    }))
}

/// Get an organization.
#[utoipa::path(get, path = "/v1/orgs/{org_id}", tag = "orgs", params(("org_id" = String, Path)), security(("root_key" = [])),
    responses((status = 200, body = OrgView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn get_org(
    State(app): AppState,
    p: Principal,
    Path(org_id): Path<String>,
) -> Result<Json<OrgView>, ApiError> {
    p.require("orgs.read")?;
    known(&org_id, "org_", "organization")?;
    let org = app
        .store
        .get_org(&org_id)
        .await
        .map_err(|e| ApiError::from_store(e, "organization"))?;
    Ok(Json(OrgView::from(&org)))
}

/// Create an API key. The key is in the answer this once.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/keys", tag = "keys", params(("org_id" = String, Path)), request_body = CreateKey,
    security(("root_key" = [])),
    responses((status = 201, body = NewKeyView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn create_key(
    State(app): AppState,
    p: Principal,
    Path(org_id): Path<String>,
    JsonBody(req): JsonBody<CreateKey>,
) -> Result<impl IntoResponse, ApiError> {
    p.require("keys.create")?;
    known(&org_id, "org_", "organization")?;
    let (key, secret) = service::create_key(&app, &p.actor(), &org_id, req).await?;
    Ok((
        StatusCode::CREATED,
        no_store(),
        Json(NewKeyView {
            key: secret,
            record: KeyView::new(&key, app.now_ms()),
        }),
    ))
}

pub(crate) fn no_store() -> [(axum::http::HeaderName, &'static str); 1] {
    [(axum::http::header::CACHE_CONTROL, "no-store")]
}

/// List an organization's keys, newest first; `external_id` lists one owner's.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/keys", tag = "keys", params(("org_id" = String, Path), KeyListParams),
    security(("root_key" = [])),
    responses((status = 200, body = ListPage<KeyView>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn list_keys(
    State(app): AppState,
    p: Principal,
    Path(org_id): Path<String>,
    Query(q): Query<KeyListParams>,
) -> Result<Json<ListPage<KeyView>>, ApiError> {
    p.require("keys.read")?;
    known(&org_id, "org_", "organization")?;
    let (rows, next_cursor) = service::list_keys(
        &app,
        &org_id,
        service::KeyListQuery {
            external_id: q.external_id,
            limit: q.limit,
            cursor: q.cursor,
        },
    )
    .await?;
    let now = app.now_ms();
    Ok(Json(ListPage {
        data: rows.iter().map(|k| KeyView::new(k, now)).collect(),
        next_cursor,
    }))
}

/// Get a key (never its secret).
#[utoipa::path(get, path = "/v1/keys/{key_id}", tag = "keys", params(("key_id" = String, Path)), security(("root_key" = [])),
    responses((status = 200, body = KeyView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn get_key(
    State(app): AppState,
    p: Principal,
    Path(key_id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    p.require("keys.read")?;
    known(&key_id, "key_", "key")?;
    let key = service::get_key(&app, &key_id).await?;
    Ok(Json(KeyView::new(&key, app.now_ms())))
}

/// Change a key's name, scopes, metadata, expiry or external id.
#[utoipa::path(patch, path = "/v1/keys/{key_id}", tag = "keys", params(("key_id" = String, Path)), request_body = PatchKey,
    security(("root_key" = [])),
    responses((status = 200, body = KeyView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn patch_key(
    State(app): AppState,
    p: Principal,
    Path(key_id): Path<String>,
    JsonBody(req): JsonBody<PatchKey>,
) -> Result<Json<KeyView>, ApiError> {
    p.require("keys.update")?;
    known(&key_id, "key_", "key")?;
    let key = service::patch_key(&app, &p.actor(), &key_id, req).await?;
    Ok(Json(KeyView::new(&key, app.now_ms())))
}

/// Delete a key: it stops working at once and is gone from lists.
#[utoipa::path(delete, path = "/v1/keys/{key_id}", tag = "keys", params(("key_id" = String, Path)), security(("root_key" = [])),
    responses((status = 204), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn delete_key(
    State(app): AppState,
    p: Principal,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.require("keys.delete")?;
    known(&key_id, "key_", "key")?;
    service::delete_key(&app, &p.actor(), &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revoke a key, with an optional reason. Revoking twice is not an error.
#[utoipa::path(post, path = "/v1/keys/{key_id}/revoke", tag = "keys", params(("key_id" = String, Path)), request_body(content = RevokeKey, description = "Optional"),
    security(("root_key" = [])),
    responses((status = 200, body = KeyView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn revoke_key(
    State(app): AppState,
    p: Principal,
    Path(key_id): Path<String>,
    OptionalJson(req): OptionalJson<RevokeKey>,
) -> Result<Json<KeyView>, ApiError> {
    p.require("keys.revoke")?;
    known(&key_id, "key_", "key")?;
    let key = service::revoke_key(&app, &p.actor(), &key_id, req).await?;
    Ok(Json(KeyView::new(&key, app.now_ms())))
}

/// Rotate a key: a new key (shown once) replaces it; the old one works until the grace period ends.
#[utoipa::path(post, path = "/v1/keys/{key_id}/rotate", tag = "keys", params(("key_id" = String, Path)), request_body(content = RotateKey, description = "Optional"),
    security(("root_key" = [])),
    responses((status = 201, body = NewKeyView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn rotate_key(
    State(app): AppState,
    p: Principal,
    Path(key_id): Path<String>,
    OptionalJson(req): OptionalJson<RotateKey>,
) -> Result<impl IntoResponse, ApiError> {
    p.require("keys.rotate")?;
    known(&key_id, "key_", "key")?;
    let (new, secret, _old) = service::rotate_key(&app, &p.actor(), &key_id, req).await?;
    Ok((
        StatusCode::CREATED,
        no_store(),
        Json(NewKeyView {
            key: secret,
            record: KeyView::new(&new, app.now_ms()),
        }),
    ))
}

/// An organization's usage log, newest first: decisions and management actions.
///
/// Every decision on the organization's keys (code, status, key, IP,
/// latency...) and every management action in it (actor, action, target).
/// Never a secret: paths are logged without their query.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/logs", tag = "logs", params(("org_id" = String, Path), LogFilter),
    security(("root_key" = [])),
    responses((status = 200, body = ListPage<LogView>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn list_logs(
    State(app): AppState,
    p: Principal,
    Path(org_id): Path<String>,
    Query(f): Query<LogFilter>,
) -> Result<Json<ListPage<LogView>>, ApiError> {
    p.require("logs.read")?;
    known(&org_id, "org_", "organization")?;
    let (rows, next_cursor) = logs::list(&app, &org_id, f).await?;
    Ok(Json(ListPage {
        data: rows.iter().map(LogView::from).collect(),
        next_cursor,
    }))
}

/// Create a root key (needs `*` or `root_keys.create`). The key is in the answer this once.
#[utoipa::path(post, path = "/v1/root-keys", tag = "root-keys", request_body = CreateRootKey, security(("root_key" = [])),
    responses((status = 201, body = NewRootKeyView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn create_root_key(
    State(app): AppState,
    p: Principal,
    JsonBody(req): JsonBody<CreateRootKey>,
) -> Result<impl IntoResponse, ApiError> {
    p.require("root_keys.create")?;
    let (key, secret) = service::create_root_key(&app, &p.actor(), req).await?;
    Ok((
        StatusCode::CREATED,
        no_store(),
        Json(NewRootKeyView {
            key: secret,
            record: RootKeyView::from(&key),
        }),
    ))
}

/// List root keys, newest first.
#[utoipa::path(get, path = "/v1/root-keys", tag = "root-keys", params(ListParams), security(("root_key" = [])),
    responses((status = 200, body = ListPage<RootKeyView>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn list_root_keys(
    State(app): AppState,
    p: Principal,
    Query(q): Query<ListParams>,
) -> Result<Json<ListPage<RootKeyView>>, ApiError> {
    p.require("root_keys.read")?;
    let (page, limit) = service::page(q.limit, q.cursor.as_deref())?;
    let mut rows = app.store.list_root_keys(&page).await?;
    let next_cursor = service::next_cursor(&mut rows, limit, |k| (k.created_at, k.id.as_str()));
    Ok(Json(ListPage {
        data: rows.iter().map(RootKeyView::from).collect(),
        next_cursor,
    }))
}

/// Revoke a root key. Revoking twice is not an error.
#[utoipa::path(post, path = "/v1/root-keys/{root_key_id}/revoke", tag = "root-keys", params(("root_key_id" = String, Path)),
    security(("root_key" = [])),
    responses((status = 200, body = RootKeyView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn revoke_root_key(
    State(app): AppState,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<RootKeyView>, ApiError> {
    p.require("root_keys.revoke")?;
    known(&id, "rtk_", "root key")?;
    let key = service::revoke_root_key(&app, &p.actor(), &id).await?;
    Ok(Json(RootKeyView::from(&key)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The credential the caller presented to your API.
    pub credential: String,
    /// Scopes the request needs; all must be granted.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// The environment the request is for (default: the instance's).
    pub environment: Option<String>,
    /// The client's IP address, for logs and IP allowlists.
    pub ip: Option<String>,
}

/// The answer to a verify: 200 whether or not the credential is valid.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyAnswer {
    pub valid: bool,
    /// `VALID` or a refusal code of SPEC §5.
    pub code: &'static str,
    /// The HTTP status your API should answer (on refusals).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_scopes: Option<Vec<String>>,
    /// `api_key`, `access_token` or `client_jwt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// The key's `external_id` if set, else its id; a token's or client
    /// JWT's `sub`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// For an access token: the OAuth client it was issued to; for a
    /// client JWT: the client that signed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Present (possibly null) on valid answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// The credential's rate limit after this request, when one applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratelimit: Option<RateLimitAnswer>,
    /// Usage credits left, when the key has credits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitAnswer {
    pub limit: u32,
    pub remaining: u32,
    /// Whole seconds until the limit is fully available again.
    pub reset: u64,
}

impl From<crate::ratelimit::Outcome> for RateLimitAnswer {
    fn from(o: crate::ratelimit::Outcome) -> Self {
        Self {
            limit: o.limit,
            remaining: o.remaining,
            reset: o.reset_secs(),
        }
    }
}

/// Verify a credential for some scopes (needs a root key with `verify`).
#[utoipa::path(post, path = "/v1/verify", tag = "verify", request_body = VerifyRequest, security(("root_key" = [])),
    responses((status = 200, body = VerifyAnswer), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn verify(
    State(app): AppState,
    p: Principal,
    JsonBody(req): JsonBody<VerifyRequest>,
) -> Result<Json<VerifyAnswer>, ApiError> {
    p.require("verify")?;
    let mut errors = Vec::new();
    if req.required_scopes.len() > latchkey_core::scope::MAX_SCOPES {
        errors.push(FieldError {
            field: "required_scopes".into(),
            message: format!("At most {} scopes.", latchkey_core::scope::MAX_SCOPES),
        });
    }
    for (i, s) in req.required_scopes.iter().enumerate() {
        if !latchkey_core::scope::is_scope_token(s) {
            errors.push(FieldError {
                field: format!("required_scopes[{i}]"),
                message: "Not a valid scope.".into(),
            });
        }
    }
    if let Some(ip) = &req.ip
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        errors.push(FieldError {
            field: "ip".into(),
            message: "Not an IP address.".into(),
        });
    }
    if let Some(e) = &req.environment
        && (e.is_empty() || e.len() > 64)
    {
        errors.push(FieldError {
            field: "environment".into(),
            message: "Must be 1 to 64 bytes.".into(),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let env = req
        .environment
        .as_deref()
        .unwrap_or(&app.config.environment);
    let credential = req.credential.trim();
    let ip = req.ip.as_deref().and_then(|ip| ip.parse().ok());
    let started = std::time::Instant::now();
    let res = decision::decide(
        &app,
        decision::Ask {
            credential,
            required_scopes: &req.required_scopes,
            environment: env,
            ip,
        },
    )
    .await;
    // The caller's own request (method, path, user agent) is not known here.
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    app.log_decision(DecisionLog {
        request_id: p.request_id.clone(),
        ip: req.ip,
        latency_ms,
        ..DecisionLog::of_credential(&app, credential, &res)
    });
    VerifyAnswer::from_decision(res).map(Json)
}

impl VerifyAnswer {
    /// The verify answer for a decision; a server failure stays an error.
    pub fn from_decision(res: Result<decision::Grant, ApiError>) -> Result<VerifyAnswer, ApiError> {
        Ok(match res {
            Ok(g) => VerifyAnswer {
                valid: true,
                code: "VALID",
                status: None,
                detail: None,
                required_scopes: None,
                credential_type: Some(g.credential_type()),
                org_id: Some(g.org_id().to_owned()),
                subject: Some(g.subject().to_owned()),
                key_id: g.key().map(|k| k.id.clone()),
                client_id: g.client_id().map(str::to_owned),
                name: g.key().map(|k| k.name.clone()),
                scopes: Some(g.scopes().to_vec()),
                environment: Some(g.environment().to_owned()),
                expires_at: Some(g.expires_at().map(rfc3339)),
                metadata: g.key().map(|k| k.metadata.clone()),
                ratelimit: g.ratelimit.map(Into::into),
                remaining: g.remaining,
            },
            Err(e) if e.code.status() >= 500 => return Err(e),
            Err(e) => VerifyAnswer {
                valid: false,
                code: e.code.as_str(),
                status: Some(e.code.status()),
                detail: Some(e.detail),
                required_scopes: (!e.required_scopes.is_empty()).then_some(e.required_scopes),
                credential_type: None,
                org_id: None,
                subject: None,
                key_id: None,
                client_id: None,
                name: None,
                scopes: None,
                environment: None,
                expires_at: None,
                metadata: None,
                ratelimit: e.ratelimit.map(|o| (*o).into()),
                remaining: None,
            },
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Instance {
    pub version: &'static str,
    pub region: String,
    pub environment: String,
    pub public_url: String,
}

/// This instance's version, region, environment and public URL (any root key).
#[utoipa::path(get, path = "/v1/instance", tag = "instance", security(("root_key" = [])),
    responses((status = 200, body = Instance), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn instance(State(app): AppState, _p: Principal) -> Json<Instance> {
    Json(Instance {
        version: env!("CARGO_PKG_VERSION"),
        region: app.config.region.clone(),
        environment: app.config.environment.clone(),
        public_url: app.config.public_url().to_owned(),
    })
}
