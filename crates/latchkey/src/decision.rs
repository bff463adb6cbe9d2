//! The decision engine: one answer for a presented credential, whichever
//! way it arrived (`/v1/verify`, forward-auth, the proxy).
//! Order: client IP not blocked for failed authentications; shape (no
//! lookup); lookup (cached); revocation; expiry; IP allowlist; the
//! credential's rate limit (every decision from here on counts);
//! environment; scopes; usage credits (only a request that passed
//! everything else spends one).

use std::net::IpAddr;
use std::sync::Arc;

use latchkey_core::{Code, keyfmt};
use latchkey_store::{ApiKey, Spend};

use crate::app::{App, Cached, Use};
use crate::client_jwt;
use crate::config::{ACCESS_PREFIX, ROOT_PREFIX};
use crate::error::ApiError;
use crate::oauth::token::{TokenInfo, TokenKind, TokenRefusal};
use crate::ratelimit::{Outcome, Quota, fallback};
use crate::views::rfc3339;

/// What is asked.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub credential: &'a str,
    pub required_scopes: &'a [String],
    pub environment: &'a str,
    /// The client's address, for `ip_allowlist` and `failed_auth_per_ip`.
    pub ip: Option<IpAddr>,
}

/// Who a credential that passed stands for.
#[derive(Debug, Clone)]
pub enum Holder {
    Key(Arc<Cached<ApiKey>>),
    /// An OAuth access token latchkey issued, and the environment of
    /// this instance (tokens are not bound to one).
    Token(Arc<TokenInfo>, String),
    /// A JWT an OAuth client signed itself (SPEC §7), and the environment
    /// of this instance.
    ClientJwt(Arc<TokenInfo>, String),
}

/// A credential that passed every check.
#[derive(Debug, Clone)]
pub struct Grant {
    pub holder: Holder,
    /// The rate limit counted, if one applies.
    pub ratelimit: Option<Outcome>,
    /// Usage credits left, if the key has credits.
    pub remaining: Option<i64>,
}

impl Grant {
    /// `api_key`, `access_token` or `client_jwt` (SPEC §6).
    pub fn credential_type(&self) -> &'static str {
        match &self.holder {
            Holder::Key(_) => "api_key",
            Holder::Token(..) => "access_token",
            Holder::ClientJwt(..) => "client_jwt",
        }
    }

    pub fn org_id(&self) -> &str {
        match &self.holder {
            Holder::Key(k) => &k.org_id,
            Holder::Token(t, _) | Holder::ClientJwt(t, _) => &t.org_id,
        }
    }

    /// A key's `external_id` if set, else its id; a token's or client
    /// JWT's `sub`.
    pub fn subject(&self) -> &str {
        match &self.holder {
            Holder::Key(k) => k.external_id.as_deref().unwrap_or(&k.id),
            Holder::Token(t, _) | Holder::ClientJwt(t, _) => &t.subject,
        }
    }

    pub fn scopes(&self) -> &[String] {
        match &self.holder {
            Holder::Key(k) => &k.scopes,
            Holder::Token(t, _) | Holder::ClientJwt(t, _) => &t.scopes,
        }
    }

    pub fn environment(&self) -> &str {
        match &self.holder {
            Holder::Key(k) => &k.environment,
            Holder::Token(_, env) | Holder::ClientJwt(_, env) => env,
        }
    }

    pub fn key(&self) -> Option<&ApiKey> {
        match &self.holder {
            Holder::Key(k) => Some(k),
            Holder::Token(..) | Holder::ClientJwt(..) => None,
        }
    }

    pub fn client_id(&self) -> Option<&str> {
        match &self.holder {
            Holder::Key(_) => None,
            Holder::Token(t, _) | Holder::ClientJwt(t, _) => Some(&t.client_id),
        }
    }

    /// When the credential stops working by itself (ms), if it does.
    pub fn expires_at(&self) -> Option<i64> {
        match &self.holder {
            Holder::Key(k) => k.expires_at,
            Holder::Token(t, _) | Holder::ClientJwt(t, _) => Some(t.exp.saturating_mul(1000)),
        }
    }
}

/// Decides on `ask`.
pub async fn decide(app: &App, ask: Ask<'_>) -> Result<Grant, ApiError> {
    let started = std::time::Instant::now();
    if let Some(e) = blocked(app, ask.ip) {
        metrics::counter!("latchkey_decisions_total", "code" => e.code.as_str()).increment(1);
        return Err(e);
    }
    let res = decide_inner(app, ask).await;
    if let Err(e) = &res
        && e.code.is_bad_credential()
    {
        count_failure(app, ask.ip).await;
    }
    let code = match &res {
        Ok(_) => Code::Valid,
        Err(e) => e.code,
    };
    metrics::counter!("latchkey_decisions_total", "code" => code.as_str()).increment(1);
    metrics::histogram!("latchkey_decision_duration_seconds", "code" => code.as_str())
        .record(started.elapsed().as_secs_f64());
    res
}

/// A refusal for an address over `failed_auth_per_ip`, known to this node.
fn blocked(app: &App, ip: Option<IpAddr>) -> Option<ApiError> {
    let quota = app.config.ratelimit.failed_auth_per_ip?.quota();
    let until = app.blocked_ips.get(&ip?)?;
    let left = until - app.now_ms();
    if left <= 0 {
        return None;
    }
    let wait = std::time::Duration::from_millis(u64::try_from(left).unwrap_or(0));
    Some(ApiError::rate_limited(
        Outcome {
            allowed: false,
            limit: quota.limit,
            remaining: 0,
            reset: wait,
            retry_after: Some(wait),
        },
        "Too many failed authentications from this address; retry later.",
    ))
}

/// Counts a failed authentication against the client's address.
async fn count_failure(app: &App, ip: Option<IpAddr>) {
    let (Some(q), Some(ip)) = (app.config.ratelimit.failed_auth_per_ip, ip) else {
        return;
    };
    let outcome = limit(app, &format!("ip:{ip}"), q.quota()).await;
    if !outcome.allowed {
        let wait = outcome.retry_after.unwrap_or(outcome.reset);
        let until = app.now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        app.blocked_ips.insert(ip, until);
    }
}

/// Spends one unit of `quota` for `key`; a backend failure gives the
/// configured fallback (`on_redis_failure`).
async fn limit(app: &App, key: &str, quota: Quota) -> Outcome {
    match app.limiter.check(key, quota, 1).await {
        Ok(o) => o,
        Err(_) => {
            metrics::counter!("latchkey_ratelimit_fallbacks_total").increment(1);
            fallback(quota, app.config.ratelimit.on_redis_failure)
        }
    }
}

async fn decide_inner(app: &App, ask: Ask<'_>) -> Result<Grant, ApiError> {
    let credential = ask.credential;
    if credential.is_empty() {
        return Err(ApiError::new(Code::MissingKey, "No credential was given."));
    }
    if credential.starts_with(ACCESS_PREFIX) {
        return decide_token(app, ask).await;
    }
    let prefixes = app.config.key_kinds.iter().map(|k| k.prefix.as_str());
    let Some(kind) =
        keyfmt::match_prefix(credential, prefixes).and_then(|i| app.config.key_kinds.get(i))
    else {
        // No key prefix has a dot: this is a JWT, or garbage meant as one.
        if credential.contains('.') {
            return decide_jwt(app, ask).await;
        }
        let detail = if credential.starts_with(ROOT_PREFIX) {
            "This is a root key: it authenticates management calls, not API requests."
        } else {
            keyfmt::FormatError::UnknownPrefix.describe()
        };
        return Err(ApiError::new(Code::InvalidFormat, detail).presented());
    };
    keyfmt::check(credential, &kind.prefix)
        .map_err(|e| ApiError::new(Code::InvalidFormat, e.describe()).presented())?;
    let digest = keyfmt::digest(credential);
    let Some(key) = app.api_key(digest).await? else {
        return Err(ApiError::new(Code::InvalidKey, "This API key does not exist.").presented());
    };
    // From here on a refusal names the key it was taken on (for the log).
    check(app, key.clone(), ask)
        .await
        .map_err(|e| e.on_key(&key.org_id, &key.id))
}

/// What kind of credential a JWS is, told by its `iss` (SPEC §4):
/// `access_token` when this server issued it, `client_jwt` when a client
/// did; `None` when it is no readable JWS.
pub fn jwt_kind(app: &App, credential: &str) -> Option<&'static str> {
    let jws = client_jwt::parse(credential).ok()?;
    Some(if jws.issuer() == Some(app.config.public_url()) {
        "access_token"
    } else {
        "client_jwt"
    })
}

fn invalid_token(detail: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidToken, detail).presented()
}

fn jwt_refusal(r: client_jwt::Refusal) -> ApiError {
    match r {
        client_jwt::Refusal::Invalid(why) => invalid_token(why),
        client_jwt::Refusal::Expired(exp) => ApiError::new(
            Code::TokenExpired,
            format!(
                "This token expired on {}.",
                rfc3339(exp.saturating_mul(1000))
            ),
        )
        .presented(),
    }
}

/// A JWS: an access token of this server's, or a client-signed JWT,
/// told apart by its `iss` before any key is chosen.
async fn decide_jwt(app: &App, ask: Ask<'_>) -> Result<Grant, ApiError> {
    // A client JWT this node verified before: its signature held for the
    // client record it still has (a changed record is a new one).
    let digest = keyfmt::digest(ask.credential);
    if let Some(hit) = app.verified_client_jwt(&digest)
        && let Some(client) = app.client(&hit.client.id).await?
        && Arc::ptr_eq(&client, &hit.client)
    {
        return client_jwt_grant(app, ask, &client, &hit.claims).await;
    }
    let jws = client_jwt::parse(ask.credential).map_err(jwt_refusal)?;
    match jws.issuer() {
        Some(iss) if iss == app.config.public_url() => decide_token(app, ask).await,
        Some(iss) if latchkey_core::ids::is_id(iss, "cli_") => {
            let Some(client) = app.client(iss).await? else {
                return Err(invalid_token(
                    "The token's iss is not the id of a registered client.",
                ));
            };
            let keys = app.client_jwt_keys(&client).map_err(|e| {
                tracing::error!(error = %e, client_id = %client.id, "cannot open a client's secret");
                ApiError::internal()
            })?;
            let Some(keys) = &keys.keys else {
                return Err(invalid_token(
                    "This client is not set up for client-signed JWTs (jwt_auth).",
                ));
            };
            // Until the signature holds, the token may be anyone's: its
            // refusal names no client (and writes nothing to its log).
            let audience = app.config.jwt_audience();
            jws.verify_signature(keys, &jwt_policy(app, &audience))
                .map_err(jwt_refusal)?;
            let claims = jws.into_claims();
            if app.config.jwt_auth.require_jti {
                // One-time tokens: nothing to gain from remembering them.
                client_jwt_grant(app, ask, &client, &claims).await
            } else {
                let grant = client_jwt_grant(app, ask, &client, &claims).await;
                app.remember_client_jwt(digest, || {
                    Arc::new(crate::app::VerifiedJwt {
                        client: client.clone(),
                        claims,
                    })
                });
                grant
            }
        }
        Some(_) => Err(invalid_token(
            "The token's iss is neither this server nor the id of a registered client.",
        )),
        None => Err(invalid_token(
            "The token has no iss (a string naming its issuer).",
        )),
    }
}

/// The rules of `[jwt_auth]`, for tokens of `audience`.
fn jwt_policy<'a>(app: &'a App, audience: &'a str) -> client_jwt::Policy<'a> {
    let j = &app.config.jwt_auth;
    client_jwt::Policy {
        audience,
        max_lifetime_s: i64::try_from(j.max_lifetime.0.as_secs()).unwrap_or(0),
        leeway_s: i64::try_from(j.leeway.0.as_secs()).unwrap_or(0),
        require_jti: j.require_jti,
        typ: j.typ.as_deref(),
    }
}

/// A JWT `client` signed (SPEC §7), its signature checked: the claims
/// under `[jwt_auth]`, the scopes narrowed by `scope`; then the client's
/// rate limit and the required scopes; a `jti` spent last, when
/// `require_jti` is on (so a token refused for its rate limit can be sent
/// again).
async fn client_jwt_grant(
    app: &App,
    ask: Ask<'_>,
    client: &Arc<latchkey_store::oauth::Client>,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<Grant, ApiError> {
    let audience = app.config.jwt_audience();
    let policy = jwt_policy(app, &audience);
    let on = |e: ApiError| e.on_key(&client.org_id, &client.id);
    let claims = client_jwt::check_claims(claims, &client.id, &policy, app.now_ms() / 1000)
        .map_err(|r| on(jwt_refusal(r)))?;
    let scopes = match claims.scope {
        None => client.scopes.clone(),
        Some(asked) => {
            let outside = app.scopes.missing(&client.scopes, &asked);
            if !outside.is_empty() {
                return Err(on(invalid_token(format!(
                    "The token's scope names {}, which this client may not be granted.",
                    outside.join(" ")
                ))));
            }
            asked
        }
    };
    let info = TokenInfo {
        kind: TokenKind::Access,
        jti: claims.jti.clone(),
        client_id: client.id.clone(),
        org_id: client.org_id.clone(),
        subject: claims.sub,
        scopes,
        exp: claims.exp,
        iat: claims.iat,
        grant_id: None,
    };
    let grant = client_grant(app, info, true, ask).await?;
    if let (true, Some(jti)) = (policy.require_jti, &claims.jti) {
        let until = claims
            .exp
            .saturating_add(policy.leeway_s)
            .saturating_mul(1000);
        let id = format!("jwt:{}:{jti}", client.id);
        if !app.store.use_once(&id, until, app.now_ms()).await? {
            return Err(on(invalid_token(
                "This token was used before (its jti): sign a new one for each request.",
            ))
            .with_ratelimit(grant.ratelimit));
        }
    }
    Ok(grant)
}

/// An OAuth access token: signature and claims (JWT) or lookup (opaque),
/// revocation of it, its grant and its client; then the client's rate
/// limit and the scopes.
async fn decide_token(app: &App, ask: Ask<'_>) -> Result<Grant, ApiError> {
    let info = match crate::oauth::token::check_access_token(app, ask.credential).await? {
        Ok(info) => info,
        Err(TokenRefusal::Invalid(why)) => {
            return Err(ApiError::new(Code::InvalidToken, why).presented());
        }
        Err(TokenRefusal::Expired(at)) => {
            return Err(ApiError::new(
                Code::TokenExpired,
                format!("This access token expired on {}.", rfc3339(at)),
            )
            .presented());
        }
        Err(TokenRefusal::Revoked(why)) => {
            return Err(ApiError::new(Code::TokenRevoked, why).presented());
        }
    };
    client_grant(app, info, false, ask).await
}

/// What an OAuth client's credential (access token or client JWT) goes
/// through once it holds: the client's rate limit, then the scopes.
async fn client_grant(
    app: &App,
    info: TokenInfo,
    client_jwt: bool,
    ask: Ask<'_>,
) -> Result<Grant, ApiError> {
    let quota = app.config.ratelimit.default.map(|q| q.quota());
    let ratelimit = match quota {
        Some(q) => Some(limit(app, &format!("client:{}", info.client_id), q).await),
        None => None,
    };
    let on = |e: ApiError| e.on_key(&info.org_id, &info.client_id);
    if let Some(o) = ratelimit
        && !o.allowed
    {
        return Err(on(ApiError::rate_limited(
            o,
            format!(
                "This client is over its rate limit of {} requests per {} s.",
                o.limit,
                quota.map_or(0, |q| q.window.as_secs())
            ),
        )));
    }
    let missing = app.scopes.missing(&info.scopes, ask.required_scopes);
    if !missing.is_empty() {
        return Err(on(
            ApiError::insufficient_scope(missing).with_ratelimit(ratelimit)
        ));
    }
    let env = app.config.environment.clone();
    Ok(Grant {
        holder: if client_jwt {
            Holder::ClientJwt(Arc::new(info), env)
        } else {
            Holder::Token(Arc::new(info), env)
        },
        ratelimit,
        remaining: None,
    })
}

/// The checks on a key that exists.
async fn check(app: &App, key: Arc<Cached<ApiKey>>, ask: Ask<'_>) -> Result<Grant, ApiError> {
    let Ask {
        required_scopes,
        environment,
        ip,
        ..
    } = ask;
    let now = app.now_ms();
    if let Some(at) = key.revoked_at
        && at <= now
    {
        let detail = if key.replaced_by.is_some() && key.revoke_reason.as_deref() == Some("rotated")
        {
            format!(
                "This API key was rotated; its grace period ended on {}.",
                rfc3339(at)
            )
        } else {
            format!("This API key was revoked on {}.", rfc3339(at))
        };
        return Err(ApiError::new(Code::KeyRevoked, detail).presented());
    }
    if let Some(at) = key.expires_at
        && at <= now
    {
        return Err(ApiError::new(
            Code::KeyExpired,
            format!("This API key expired on {}.", rfc3339(at)),
        )
        .presented());
    }
    // The key exists and is in force: this counts as a use, whatever follows.
    if key.should_send_use(now) {
        app.record_use(Use::Key(key.id.clone(), now));
    }
    if !crate::limits::allowed_from(&key.ip_allowlist, ip) {
        let detail = match ip {
            Some(ip) => format!("This API key cannot be used from {ip}."),
            None => {
                "This API key is limited to some addresses, and the client's address is unknown."
                    .to_owned()
            }
        };
        return Err(ApiError::new(Code::ForbiddenIp, detail).presented());
    }
    let quota = key
        .ratelimit
        .map(|r| Quota {
            limit: u32::try_from(r.limit).unwrap_or(u32::MAX),
            window: std::time::Duration::from_millis(u64::try_from(r.window_ms).unwrap_or(0)),
        })
        .or_else(|| app.config.ratelimit.default.map(|q| q.quota()));
    let ratelimit = match quota {
        Some(q) => Some(limit(app, &format!("key:{}", key.id), q).await),
        None => None,
    };
    if let Some(o) = ratelimit
        && !o.allowed
    {
        return Err(ApiError::rate_limited(
            o,
            format!(
                "This API key is over its rate limit of {} requests per {} s.",
                o.limit,
                quota.map_or(0, |q| q.window.as_secs())
            ),
        ));
    }
    let refuse = |e: ApiError| e.with_ratelimit(ratelimit);
    if key.environment != environment {
        return Err(refuse(ApiError::new(
            Code::WrongEnvironment,
            format!("This is a {} key: {} keys only work in the {} environment, and this request is for {environment}.", key.environment, key.environment, key.environment),
        )
        .presented()));
    }
    let missing = app.scopes.missing(&key.scopes, required_scopes);
    if !missing.is_empty() {
        return Err(refuse(ApiError::insufficient_scope(missing)));
    }
    let remaining = match key.credits {
        None => None,
        Some(_) => match app.store.spend_credit(&key.id, now).await {
            Ok(Spend::Spent(n)) => Some(n),
            Ok(Spend::Unlimited) => None,
            Ok(Spend::Exhausted) => {
                return Err(refuse(ApiError::new(
                    Code::UsageExceeded,
                    "This API key has used all its credits.",
                )));
            }
            Err(latchkey_store::StoreError::NotFound) => {
                return Err(refuse(
                    ApiError::new(Code::InvalidKey, "This API key does not exist.").presented(),
                ));
            }
            Err(e) => return Err(e.into()),
        },
    };
    Ok(Grant {
        holder: Holder::Key(key),
        ratelimit,
        remaining,
    })
}
