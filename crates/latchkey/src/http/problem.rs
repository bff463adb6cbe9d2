//! problem+json (RFC 9457) for every refusal, from our handlers and from
//! the framework alike, plus `X-Request-Id`, `WWW-Authenticate` (RFC 6750),
//! the request log line and the request metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use latchkey_core::Code;
use latchkey_core::ids::new_id;
use serde::Serialize;
use tracing::Instrument;
use utoipa::ToSchema;

use crate::app::App;
use crate::error::{ApiError, FieldError};

pub const PROBLEM_JSON: &str = "application/problem+json";
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Marks a response whose body is final in a format of its own (the
/// OAuth login and consent pages): [`finish`] passes it on as it is,
/// whatever its status, rather than as problem+json.
#[derive(Debug, Clone, Copy)]
pub struct OwnBody;

/// The request id of the request being handled.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The body of every refusal.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `{public_url}/errors/{code-in-kebab-case}`: a page explaining the error.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// One of SPEC §5's codes, e.g. `KEY_REVOKED`.
    pub code: &'static str,
    /// The lower-case family: `unauthorized`, `forbidden`, ...
    pub error: &'static str,
    /// Repeats `detail`.
    pub message: String,
    pub request_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,
}

impl Problem {
    /// The body for `e`: what the HTTP API answers and the CLI prints with `--json`.
    pub fn new(e: &ApiError, public_url: &str, request_id: &str) -> Problem {
        Problem {
            type_: format!("{public_url}/errors/{}", e.code.slug()),
            title: e.code.title(),
            status: e.code.status(),
            detail: e.detail.clone(),
            code: e.code.as_str(),
            error: e.code.family(),
            message: e.detail.clone(),
            request_id: request_id.to_owned(),
            errors: e.errors.clone(),
            required_scopes: e.required_scopes.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = status.into_response();
        res.extensions_mut().insert(self);
        res
    }
}

/// Makes an RFC 6750 quoted-string safe: no quotes, backslashes or controls.
fn quotable(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

fn challenge(e: &ApiError) -> Option<String> {
    match e.code.status() {
        401 if e.credential_presented => Some(format!(
            "Bearer realm=\"latchkey\", error=\"invalid_token\", error_description=\"{}\"",
            quotable(&e.detail)
        )),
        401 => Some("Bearer realm=\"latchkey\"".to_owned()),
        403 if e.code == Code::InsufficientScope => Some(format!(
            "Bearer realm=\"latchkey\", error=\"insufficient_scope\", scope=\"{}\"",
            quotable(&e.required_scopes.join(" "))
        )),
        _ => None,
    }
}

/// Writes the final problem+json response for `e`.
pub fn render(e: &ApiError, public_url: &str, request_id: &str, keep: &HeaderMap) -> Response {
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = serde_json::to_vec(&Problem::new(e, public_url, request_id)).unwrap_or_default();
    let mut res = Response::new(Body::from(bytes));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(c) = challenge(e).and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::WWW_AUTHENTICATE, c);
    }
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = keep.get(&name) {
            h.insert(name, v.clone());
        }
    }
    if let Some(o) = e.ratelimit.as_deref() {
        h.extend(ratelimit_headers(o));
        if let Some(secs) = o.retry_after_secs() {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
    }
    res
}

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (SPEC §9),
/// sent on every decided request that a limit applied to.
pub fn ratelimit_headers(o: &crate::ratelimit::Outcome) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        HeaderName::from_static("ratelimit-limit"),
        HeaderValue::from(o.limit),
    );
    h.insert(
        HeaderName::from_static("ratelimit-remaining"),
        HeaderValue::from(o.remaining),
    );
    h.insert(
        HeaderName::from_static("ratelimit-reset"),
        HeaderValue::from(o.reset_secs()),
    );
    h
}

/// Turns a refusal the framework produced (no route, wrong method, body
/// too large, unreadable path or query) into our error.
async fn from_framework(res: Response) -> (ApiError, HeaderMap) {
    let status = res.status();
    let (parts, body) = res.into_parts();
    let text = match axum::body::to_bytes(body, 2048).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => String::new(),
    };
    let text = text.trim();
    let (code, fallback) = match status.as_u16() {
        404 => (Code::NotFound, "No such route."),
        405 => (
            Code::MethodNotAllowed,
            "This path does not accept this method; see the Allow header.",
        ),
        413 => (
            Code::PayloadTooLarge,
            "The request body is larger than 1 MiB.",
        ),
        415 => (
            Code::UnsupportedMediaType,
            "Send JSON with Content-Type: application/json.",
        ),
        422 => (Code::ValidationFailed, "The request has invalid values."),
        s if s >= 500 => (Code::Internal, "The server failed to handle the request."),
        _ => (Code::InvalidRequest, "The request is malformed."),
    };
    let detail = if code == Code::Internal || text.is_empty() || text.len() > 500 {
        fallback.to_owned()
    } else {
        text.to_owned()
    };
    (ApiError::new(code, detail), parts.headers)
}

/// Outermost middleware: request id, problem bodies, the log line, metrics.
pub async fn finish(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = new_id("req_");
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let span = tracing::debug_span!("request", request_id = %request_id);
    let mut res = next.run(req).instrument(span).await;
    let mut code = None;
    if let Some(e) = res.extensions_mut().remove::<ApiError>() {
        code = Some(e.code);
        let keep = res.headers().clone();
        res = render(&e, app.config.public_url(), &request_id, &keep);
    } else if res.status().as_u16() >= 400
        && !is_problem(res.headers())
        && res
            .extensions()
            .get::<super::proxy::FromUpstream>()
            .is_none()
        && res.extensions().get::<OwnBody>().is_none()
    {
        let (e, keep) = from_framework(res).await;
        code = Some(e.code);
        res = render(&e, app.config.public_url(), &request_id, &keep);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    let route_label = route.unwrap_or_else(|| "unmatched".to_owned());
    metrics::counter!("latchkey_http_requests_total", "route" => route_label.clone(), "method" => method.to_string(), "status" => status.to_string()).increment(1);
    metrics::histogram!("latchkey_http_request_duration_seconds", "route" => route_label)
        .record(elapsed.as_secs_f64());
    let code = code.map_or("", Code::as_str);
    if status >= 500 {
        tracing::error!(request_id = %request_id, %method, path = %path, status, code, latency_ms = elapsed.as_secs_f64() * 1000.0, "request");
    } else {
        tracing::debug!(request_id = %request_id, %method, path = %path, status, code, latency_ms = elapsed.as_secs_f64() * 1000.0, "request");
    }
    res
}

fn is_problem(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()))
}
