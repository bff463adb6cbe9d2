//! `/v1/forward-auth` (SPEC §6): a reverse proxy asks latchkey about each
//! request before passing it on.
//!
//! - `/v1/forward-auth`: Traefik ForwardAuth and anything else that reads
//!   the original method and URI from `X-Forwarded-Method`/`X-Original-Method`
//!   and `X-Forwarded-Uri`/`X-Original-URI`. Refusals carry their true status.
//! - `/v1/forward-auth/nginx`: the same, but every refusal is 401 (no or bad
//!   credential) or 403 (anything else), because nginx `auth_request` treats
//!   any other status as an internal error. The true status and code are in
//!   `X-Latchkey-Status` and `X-Latchkey-Code`, the problem body in
//!   `X-Latchkey-Problem`, for the shipped nginx config to answer with.
//! - `/v1/forward-auth/envoy/...`: Envoy `ext_authz` (HTTP service with
//!   `path_prefix: /v1/forward-auth/envoy`) sends the original method, and
//!   the original path after the prefix.
//!
//! A 200 carries the identity headers (`X-Latchkey-Org`, ...).

use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey_core::route::NormalizedPath;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::gate::{self, Refusal};
use super::problem::{Problem, RequestId, render};
use crate::app::App;
use crate::error::ApiError;

pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(forward_auth))
        .routes(routes!(forward_auth_nginx))
        .routes(routes!(forward_auth_envoy_root))
        .routes(routes!(forward_auth_envoy))
}

static X_LATCHKEY_STATUS: HeaderName = HeaderName::from_static("x-latchkey-status");
static X_LATCHKEY_CODE: HeaderName = HeaderName::from_static("x-latchkey-code");
static X_LATCHKEY_PROBLEM: HeaderName = HeaderName::from_static("x-latchkey-problem");

pub const ENVOY_PREFIX: &str = "/v1/forward-auth/envoy";

/// One header of two accepted names: absent, or one value (the same if
/// both names are sent).
fn one_of(headers: &HeaderMap, names: [&str; 2]) -> Result<Option<String>, ApiError> {
    let mut found: Option<String> = None;
    for name in names {
        let mut values = headers.get_all(name).iter();
        let Some(v) = values.next() else { continue };
        if values.next().is_some() {
            return Err(ApiError::invalid_request(format!(
                "The request has more than one `{name}` header."
            )));
        }
        let v = v.to_str().map_err(|_| {
            ApiError::invalid_request(format!(
                "The `{name}` header contains characters that are not visible ASCII."
            ))
        })?;
        match &found {
            Some(prev) if prev != v => {
                return Err(ApiError::invalid_request(format!(
                    "`{}` and `{}` disagree; send the original request's value once.",
                    names[0], names[1]
                )));
            }
            _ => found = Some(v.to_owned()),
        }
    }
    Ok(found)
}

/// The original method and target named by the forwarded headers.
fn original(headers: &HeaderMap) -> Result<(String, NormalizedPath), ApiError> {
    let method = one_of(headers, ["x-forwarded-method", "x-original-method"])?.ok_or_else(|| {
        ApiError::invalid_request(
            "Forward-auth needs the original method in X-Forwarded-Method or X-Original-Method.",
        )
    })?;
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(ApiError::invalid_request(
            "The forwarded method is not an HTTP method.",
        ));
    }
    let uri = one_of(headers, ["x-forwarded-uri", "x-original-uri"])?.ok_or_else(|| {
        ApiError::invalid_request(
            "Forward-auth needs the original URI in X-Forwarded-Uri or X-Original-URI.",
        )
    })?;
    let target = parse_target(&uri)?;
    Ok((method.to_ascii_uppercase(), target))
}

fn parse_target(raw: &str) -> Result<NormalizedPath, ApiError> {
    NormalizedPath::parse(raw)
        .map_err(|e| ApiError::invalid_request(format!("The original URI is refused: {e}")))
}

type Peer = Option<axum::Extension<ConnectInfo<SocketAddr>>>;

/// Decides on the original request; a refusal keeps its true status. A 200
/// carries the identity and `RateLimit-*` headers.
async fn decide(
    app: &App,
    method: &str,
    target: &NormalizedPath,
    headers: &HeaderMap,
    peer: Peer,
    request_id: Option<&str>,
) -> Result<HeaderMap, Refusal> {
    gate::refuse_identity_headers(headers)?;
    let ip = gate::client_ip(app, peer.map(|p| p.0.0), headers);
    let passed = gate::decide(
        app,
        gate::Original {
            method,
            target,
            headers,
            ip,
            request_id,
        },
    )
    .await?;
    let mut h = passed.identity_headers();
    h.extend(passed.ratelimit_headers());
    Ok(h)
}

fn answer(res: Result<HeaderMap, Refusal>) -> Response {
    match res {
        Ok(identity) => (StatusCode::OK, identity).into_response(),
        Err(r) => (r.headers, r.error).into_response(),
    }
}

/// Forward-auth for Traefik and other proxies: refusals keep their true status.
#[utoipa::path(method(get, post, put, patch, delete, head, options), path = "/v1/forward-auth", tag = "protect",
    params(
        ("X-Forwarded-Method" = String, Header, description = "The original method (or X-Original-Method)."),
        ("X-Forwarded-Uri" = String, Header, description = "The original path and query (or X-Original-URI)."),
    ),
    responses(
        (status = 200, description = "Allowed; identity in X-Latchkey-Org, X-Latchkey-Subject, X-Latchkey-Scopes, X-Latchkey-Credential-Type, X-Latchkey-Key-Id."),
        (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn forward_auth(
    State(app): State<Arc<App>>,
    request_id: Option<axum::Extension<RequestId>>,
    peer: Peer,
    headers: HeaderMap,
) -> Response {
    let request_id = request_id.map(|e| e.0.0);
    let res = match original(&headers) {
        Ok((method, target)) => {
            decide(
                &app,
                &method,
                &target,
                &headers,
                peer,
                request_id.as_deref(),
            )
            .await
        }
        Err(e) => Err(e.into()),
    };
    answer(res)
}

/// Forward-auth for nginx `auth_request`: refusals are 401 or 403, the true
/// status and code in `X-Latchkey-Status` and `X-Latchkey-Code`.
#[utoipa::path(method(get, post, put, patch, delete, head, options), path = "/v1/forward-auth/nginx", tag = "protect",
    params(
        ("X-Original-Method" = String, Header, description = "The original method (or X-Forwarded-Method)."),
        ("X-Original-URI" = String, Header, description = "The original path and query (or X-Forwarded-Uri)."),
    ),
    responses(
        (status = 200, description = "Allowed; identity in the X-Latchkey-* headers."),
        (status = 401, body = Problem, content_type = "application/problem+json", description = "No or bad credential; true status in X-Latchkey-Status."),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "Any other refusal; true status in X-Latchkey-Status.")))]
async fn forward_auth_nginx(
    State(app): State<Arc<App>>,
    request_id: Option<axum::Extension<RequestId>>,
    peer: Peer,
    headers: HeaderMap,
) -> Response {
    let request_id = request_id.map(|e| e.0.0).unwrap_or_default();
    let res = match original(&headers) {
        Ok((method, target)) => {
            decide(&app, &method, &target, &headers, peer, Some(&request_id)).await
        }
        Err(e) => Err(e.into()),
    };
    let r = match res {
        Ok(identity) => return (StatusCode::OK, identity).into_response(),
        Err(r) => r,
    };
    if r.error.code.status() >= 500 {
        return (r.headers, r.error).into_response();
    }
    let public_url = app.config.public_url();
    let mut res = render(&r.error, public_url, &request_id, &r.headers);
    let true_status = r.error.code.status();
    *res.status_mut() = if true_status == 401 {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::FORBIDDEN
    };
    let problem = ascii_json(&Problem::new(&r.error, public_url, &request_id));
    let h = res.headers_mut();
    h.insert(X_LATCHKEY_STATUS.clone(), HeaderValue::from(true_status));
    if let Ok(v) = HeaderValue::from_str(r.error.code.as_str()) {
        h.insert(X_LATCHKEY_CODE.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(&problem) {
        h.insert(X_LATCHKEY_PROBLEM.clone(), v);
    }
    res
}

/// Envoy `ext_authz` at the root path of the protected API.
#[utoipa::path(method(get, post, put, patch, delete, head, options), path = "/v1/forward-auth/envoy", tag = "protect",
    responses((status = 200, description = "Allowed; identity in the X-Latchkey-* headers."),
        (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn forward_auth_envoy_root(State(app): State<Arc<App>>, req: Request) -> Response {
    envoy(&app, req).await
}

/// Envoy `ext_authz` (HTTP service, `path_prefix: /v1/forward-auth/envoy`):
/// the original method, and the original path after the prefix.
#[utoipa::path(method(get, post, put, patch, delete, head, options), path = "/v1/forward-auth/envoy/{*path}", tag = "protect",
    params(("path" = String, Path, description = "The original path, after the prefix.")),
    responses((status = 200, description = "Allowed; identity in the X-Latchkey-* headers."),
        (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn forward_auth_envoy(State(app): State<Arc<App>>, req: Request) -> Response {
    envoy(&app, req).await
}

async fn envoy(app: &App, req: Request) -> Response {
    let raw = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or_default();
    let rest = raw.strip_prefix(ENVOY_PREFIX).unwrap_or_default();
    let rest = if rest.is_empty() || rest.starts_with('?') {
        format!("/{rest}")
    } else {
        rest.to_owned()
    };
    let method = req.method().as_str().to_owned();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .cloned()
        .map(axum::Extension);
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    let res = match parse_target(&rest) {
        Ok(target) => {
            decide(
                app,
                &method,
                &target,
                req.headers(),
                peer,
                request_id.as_deref(),
            )
            .await
        }
        Err(e) => Err(e.into()),
    };
    answer(res)
}

/// JSON with every non-ASCII character escaped, so it fits a header value.
fn ascii_json(p: &Problem) -> String {
    let json = serde_json::to_string(p).unwrap_or_default();
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}
