//! Protecting an API (SPEC §6): the `[[routes]]` gate shared by
//! `/v1/forward-auth` (nginx `auth_request`, Traefik ForwardAuth, Envoy
//! `ext_authz`) and the built-in proxy. A request is matched to a route on
//! its normalized path (latchkey_core::route), then its credential goes
//! through the one decision engine with the route's scopes.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use latchkey_core::Code;
use latchkey_core::route::{Lookup, NormalizedPath};

use super::extract::credential;
use crate::app::App;
use crate::decision::{self, Grant};
use crate::error::ApiError;
use crate::logs::DecisionLog;

/// Headers latchkey sets for the upstream; a client may never send them.
pub const IDENTITY_PREFIX: &str = "x-latchkey-";

pub static X_LATCHKEY_ORG: HeaderName = HeaderName::from_static("x-latchkey-org");
pub static X_LATCHKEY_SUBJECT: HeaderName = HeaderName::from_static("x-latchkey-subject");
pub static X_LATCHKEY_SCOPES: HeaderName = HeaderName::from_static("x-latchkey-scopes");
pub static X_LATCHKEY_CREDENTIAL_TYPE: HeaderName =
    HeaderName::from_static("x-latchkey-credential-type");
pub static X_LATCHKEY_KEY_ID: HeaderName = HeaderName::from_static("x-latchkey-key-id");
pub static X_LATCHKEY_CLIENT_ID: HeaderName = HeaderName::from_static("x-latchkey-client-id");
pub static X_LATCHKEY_ENVIRONMENT: HeaderName = HeaderName::from_static("x-latchkey-environment");

/// A refusal with the headers that go with it (`Allow` on a 405).
#[derive(Debug)]
pub struct Refusal {
    pub error: ApiError,
    pub headers: HeaderMap,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal {
            error,
            headers: HeaderMap::new(),
        }
    }
}

/// What the gate let through.
#[derive(Debug)]
pub enum Passed {
    /// A `public = true` route: no credential was looked at.
    Public,
    Granted(Grant),
}

impl Passed {
    /// The `RateLimit-*` headers for the client, when a limit applied.
    pub fn ratelimit_headers(&self) -> HeaderMap {
        match self {
            Passed::Granted(Grant {
                ratelimit: Some(o), ..
            }) => super::problem::ratelimit_headers(o),
            _ => HeaderMap::new(),
        }
    }

    /// The identity headers for the upstream (none on a public route).
    pub fn identity_headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        let Passed::Granted(g) = self else {
            return h;
        };
        let (id_header, id) = match (g.key(), g.client_id()) {
            (Some(k), _) => (&X_LATCHKEY_KEY_ID, k.id.as_str()),
            (None, Some(c)) => (&X_LATCHKEY_CLIENT_ID, c),
            (None, None) => (&X_LATCHKEY_KEY_ID, ""),
        };
        for (name, value) in [
            (&X_LATCHKEY_ORG, g.org_id()),
            (&X_LATCHKEY_SUBJECT, g.subject()),
            (&X_LATCHKEY_SCOPES, &g.scopes().join(" ")),
            (&X_LATCHKEY_CREDENTIAL_TYPE, g.credential_type()),
            (id_header, id),
            (&X_LATCHKEY_ENVIRONMENT, g.environment()),
        ] {
            // Values are ids, scope tokens and names checked at creation;
            // one that is not a valid header value is left out, not sent raw.
            if let Ok(v) = HeaderValue::from_bytes(value.as_bytes()) {
                h.insert(name.clone(), v);
            }
        }
        h
    }
}

/// Refuses a request that carries its own `X-Latchkey-*` header: behind
/// forward-auth, a proxy that copies only the headers latchkey answers
/// with would pass such a header on to the upstream as if latchkey had set it.
pub fn refuse_identity_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers
        .keys()
        .find(|n| n.as_str().starts_with(IDENTITY_PREFIX))
    {
        Some(name) => Err(ApiError::invalid_request(format!(
            "The request carries a `{name}` header; X-Latchkey-* headers are set by latchkey only."
        ))),
        None => Ok(()),
    }
}

/// The client's address (SPEC §9): the peer, or, when the peer is a
/// trusted proxy, the right-most `X-Forwarded-For` address that is not a
/// trusted proxy itself. An unreadable `X-Forwarded-For` is not believed.
pub fn client_ip(app: &App, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = crate::limits::canonical(peer?.ip());
    let trusted = |ip: &IpAddr| app.trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return Some(peer);
    }
    let mut chain: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let Ok(v) = v.to_str() else {
            return Some(peer);
        };
        for part in v.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => chain.push(crate::limits::canonical(ip)),
                Err(_) => return Some(peer),
            }
        }
    }
    let mut client = peer;
    for ip in chain.into_iter().rev() {
        client = ip;
        if !trusted(&ip) {
            break;
        }
    }
    Some(client)
}

/// The request being decided on: the original method and target, its
/// headers (credential, user agent), the client's address, and this
/// request's id.
pub struct Original<'a> {
    pub method: &'a str,
    pub target: &'a NormalizedPath,
    pub headers: &'a HeaderMap,
    pub ip: Option<IpAddr>,
    pub request_id: Option<&'a str>,
}

/// Decides on a request to the protected API, and logs the decision when
/// one was taken on a credential (not on public routes, nor on requests
/// refused before: unknown route, wrong method).
pub async fn decide(app: &App, o: Original<'_>) -> Result<Passed, Refusal> {
    let Original {
        method,
        target,
        headers,
        ip,
        request_id,
    } = o;
    let route = match app.routes.find(method, target) {
        Lookup::Found(m) => m.route,
        Lookup::MethodNotAllowed { allowed } => {
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                headers.insert(header::ALLOW, v);
            }
            return Err(Refusal {
                error: ApiError::new(
                    Code::MethodNotAllowed,
                    format!(
                        "{method} is not allowed on this path; it accepts {}.",
                        allowed.join(", ")
                    ),
                ),
                headers,
            });
        }
        Lookup::NotFound => {
            return Err(ApiError::new(Code::NotFound, "No route matches this path.").into());
        }
        Lookup::Ambiguous { .. } => {
            return Err(ApiError::invalid_request(
                "This path reaches different routes depending on letter case or percent-encoding; spell it as the API does.",
            )
            .into());
        }
    };
    if route.public {
        return Ok(Passed::Public);
    }
    let cred = credential(headers, target.query(), &app.config.credentials)?.unwrap_or_default();
    let started = std::time::Instant::now();
    let res = decision::decide(
        app,
        decision::Ask {
            credential: &cred,
            required_scopes: &route.scopes,
            environment: &app.config.environment,
            ip,
        },
    )
    .await;
    app.log_decision(DecisionLog {
        request_id: request_id.map(str::to_owned),
        method: Some(method.to_owned()),
        path: Some(target.forward_path()),
        ip: ip.map(|ip| ip.to_string()),
        // A client may echo its key anywhere, even in its user agent.
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| {
                if cred.len() >= 8 {
                    ua.replace(cred.as_str(), "[REDACTED]")
                } else {
                    ua.to_owned()
                }
            }),
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        ..DecisionLog::of_credential(app, &cred, &res)
    });
    Ok(Passed::Granted(res?))
}
