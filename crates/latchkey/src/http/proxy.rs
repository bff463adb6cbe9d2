//! The built-in reverse proxy (SPEC §6, `[proxy] upstream`): every request
//! outside latchkey's own paths is matched to a `[[routes]]` entry, decided,
//! and forwarded to the upstream with the identity headers and without the
//! credential. Bodies stream both ways; nothing is buffered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::uri::{Authority, Scheme};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use latchkey_core::Code;
use latchkey_core::route::NormalizedPath;

use super::gate;
use super::problem::{RequestId, X_REQUEST_ID};
use crate::app::App;
use crate::config::{Credentials, ProxyConfig};
use crate::error::ApiError;

/// latchkey's own first path segments: never proxied (SPEC §9).
pub const OWN_SEGMENTS: &[&str] = &[
    "v1",
    "oauth",
    ".well-known",
    "console",
    "errors",
    "healthz",
    "readyz",
    "metrics",
    "openapi.json",
];

/// Marks a response that came from the upstream, so that the error
/// middleware passes it on as it is rather than as a latchkey refusal.
#[derive(Debug, Clone, Copy)]
pub struct FromUpstream;

pub struct Proxy {
    client: Client<HttpConnector, Body>,
    scheme: Scheme,
    authority: Authority,
    /// The upstream's base path, without a trailing slash (may be empty).
    base: String,
    timeout: Duration,
}

impl Proxy {
    /// `None` when no upstream is configured. The URL was validated with
    /// the config.
    pub fn new(cfg: &ProxyConfig) -> Option<Proxy> {
        if cfg.upstream.is_empty() {
            return None;
        }
        let uri: Uri = cfg.upstream.parse().ok()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(cfg.timeout.0));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Some(Proxy {
            client,
            scheme: uri.scheme().cloned().unwrap_or(Scheme::HTTP),
            authority: uri.authority()?.clone(),
            base: uri.path().trim_end_matches('/').to_owned(),
            timeout: cfg.timeout.0,
        })
    }
}

/// Whether `path` (normalized) is one of latchkey's own.
pub fn is_own(path: &NormalizedPath) -> bool {
    path.segments()
        .next()
        .is_some_and(|s| OWN_SEGMENTS.iter().any(|o| s.eq_ignore_ascii_case(o)))
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
}

/// Removes every place a credential may have been presented (SPEC §4):
/// the upstream never sees it.
fn strip_credentials(h: &mut HeaderMap, cfg: &Credentials) {
    let reads_authorization = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start().split(' ').next().unwrap_or_default())
        .is_some_and(|scheme| super::extract::reads_scheme(scheme, cfg));
    if reads_authorization {
        h.remove(header::AUTHORIZATION);
    }
    for name in &cfg.headers {
        h.remove(name.as_str());
    }
    let own: Vec<HeaderName> = h
        .keys()
        .filter(|n| n.as_str().starts_with(gate::IDENTITY_PREFIX))
        .cloned()
        .collect();
    for n in own {
        h.remove(n);
    }
}

/// The raw query without the credential parameter, if one is configured.
fn forward_query(query: Option<&str>, param: &str) -> Option<String> {
    let q = query?;
    if param.is_empty() {
        return Some(q.to_owned());
    }
    let kept: Vec<&str> = q
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            crate::http::form::decode(name.as_bytes()) != param
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// The router's fallback: proxies when an upstream is configured, else 404.
pub async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    match forward(&app, peer, req).await {
        Ok(res) => res,
        Err(r) => (r.headers, r.error).into_response(),
    }
}

async fn forward(
    app: &App,
    peer: Option<SocketAddr>,
    req: Request,
) -> Result<Response, gate::Refusal> {
    let Some(proxy) = app.proxy.as_ref() else {
        return Err(ApiError::new(Code::NotFound, "No such route.").into());
    };
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        return Err(ApiError::invalid_request(
            "Send the request in origin form (a path), not as an absolute URI.",
        )
        .into());
    }
    let raw = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let target = NormalizedPath::parse(raw)
        .map_err(|e| ApiError::invalid_request(format!("The URI is refused: {e}")))?;
    if is_own(&target) {
        return Err(ApiError::new(Code::NotFound, "No such route.").into());
    }
    let method = req.method().as_str().to_owned();
    let ip = gate::client_ip(app, peer, req.headers());
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    let passed = gate::decide(
        app,
        gate::Original {
            method: &method,
            target: &target,
            headers: req.headers(),
            ip,
            request_id: request_id.as_deref(),
        },
    )
    .await?;

    let (mut parts, body) = req.into_parts();
    let original_host = parts.headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut parts.headers);
    strip_credentials(&mut parts.headers, &app.config.credentials);
    parts.headers.extend(passed.identity_headers());

    let mut path_and_query = format!("{}{}", proxy.base, target.forward_path());
    if let Some(q) = forward_query(target.query(), &app.config.credentials.query_param) {
        path_and_query.push('?');
        path_and_query.push_str(&q);
    }
    parts.uri = Uri::builder()
        .scheme(proxy.scheme.clone())
        .authority(proxy.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| ApiError::invalid_request("The URI cannot be forwarded."))?;
    if let Ok(v) = HeaderValue::from_str(proxy.authority.as_str()) {
        parts.headers.insert(header::HOST, v);
    }
    if let Some(h) = original_host {
        parts
            .headers
            .insert(HeaderName::from_static("x-forwarded-host"), h);
    }
    if let Some(peer) = peer {
        let xff = HeaderName::from_static("x-forwarded-for");
        let chain = match parts.headers.get(&xff).and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&chain) {
            parts.headers.insert(xff, v);
        }
    }
    parts.headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        parts.headers.insert(X_REQUEST_ID.clone(), id);
    }
    parts.version = axum::http::Version::HTTP_11;

    let upstream = Request::from_parts(parts, body);
    let res = match tokio::time::timeout(proxy.timeout, proxy.client.request(upstream)).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, upstream = %proxy.authority, "upstream request failed");
            metrics::counter!("latchkey_proxy_errors_total", "kind" => "unreachable").increment(1);
            return Err(ApiError::new(
                Code::BadGateway,
                "The upstream API could not be reached or broke off the connection.",
            )
            .into());
        }
        Err(_) => {
            tracing::warn!(upstream = %proxy.authority, timeout_ms = proxy.timeout.as_millis() as u64, "upstream timed out");
            metrics::counter!("latchkey_proxy_errors_total", "kind" => "timeout").increment(1);
            return Err(ApiError::new(
                Code::GatewayTimeout,
                format!(
                    "The upstream API did not answer within {} ms.",
                    proxy.timeout.as_millis()
                ),
            )
            .into());
        }
    };
    let (mut parts, body) = res.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.extend(passed.ratelimit_headers());
    parts.extensions.insert(FromUpstream);
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_parameter_leaves_the_query() {
        assert_eq!(forward_query(None, "api_key"), None);
        assert_eq!(
            forward_query(Some("a=1&api_key=sk&b=%20"), "api_key").as_deref(),
            Some("a=1&b=%20")
        );
        assert_eq!(forward_query(Some("api%5Fkey=sk"), "api_key"), None);
        assert_eq!(forward_query(Some("api_key"), "api_key"), None);
        assert_eq!(
            forward_query(Some("x=api_key"), "api_key").as_deref(),
            Some("x=api_key")
        );
        assert_eq!(forward_query(Some("a=1"), "").as_deref(), Some("a=1"));
    }

    #[test]
    fn credentials_and_identity_headers_are_stripped() {
        let cfg = Credentials::default();
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer sk"));
        h.insert("x-api-key", HeaderValue::from_static("sk"));
        h.insert("api_key", HeaderValue::from_static("sk"));
        h.insert("x-latchkey-org", HeaderValue::from_static("forged"));
        h.insert("X-Latchkey-Anything", HeaderValue::from_static("forged"));
        h.insert("x-other", HeaderValue::from_static("kept"));
        strip_credentials(&mut h, &cfg);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-other"], "kept");

        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXM6cHc="),
        );
        strip_credentials(&mut h, &cfg);
        assert!(
            h.contains_key(header::AUTHORIZATION),
            "not a latchkey scheme"
        );
    }

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }
}
