//! The decision engine: one answer for a presented credential, whichever
//! way it arrived (`/v1/verify` now; forward-auth and the proxy reuse it).
//! Order: shape (no lookup), lookup (cached), revocation, expiry,
//! environment, scopes.

use std::sync::Arc;

use latchkey_core::{Code, keyfmt};
use latchkey_store::ApiKey;

use crate::app::{App, Cached, Use};
use crate::config::ROOT_PREFIX;
use crate::error::ApiError;
use crate::views::rfc3339;

/// A credential that passed every check.
#[derive(Debug, Clone)]
pub struct Grant {
    pub key: Arc<Cached<ApiKey>>,
}

/// Decides on `credential` for `required_scopes` in `environment`.
pub async fn decide(
    app: &App,
    credential: &str,
    required_scopes: &[String],
    environment: &str,
) -> Result<Grant, ApiError> {
    let started = std::time::Instant::now();
    let res = decide_inner(app, credential, required_scopes, environment).await;
    let code = match &res {
        Ok(_) => Code::Valid,
        Err(e) => e.code,
    };
    metrics::counter!("latchkey_decisions_total", "code" => code.as_str()).increment(1);
    metrics::histogram!("latchkey_decision_duration_seconds", "code" => code.as_str())
        .record(started.elapsed().as_secs_f64());
    res
}

async fn decide_inner(
    app: &App,
    credential: &str,
    required_scopes: &[String],
    environment: &str,
) -> Result<Grant, ApiError> {
    if credential.is_empty() {
        return Err(ApiError::new(Code::MissingKey, "No credential was given."));
    }
    let prefixes = app.config.key_kinds.iter().map(|k| k.prefix.as_str());
    let Some(kind) =
        keyfmt::match_prefix(credential, prefixes).and_then(|i| app.config.key_kinds.get(i))
    else {
        let detail = if credential.starts_with(ROOT_PREFIX) {
            "This is a root key: it authenticates management calls, not API requests."
        } else if credential.split('.').count() == 3 {
            "This looks like a JWT, but no token issuer or JWT client is configured on this instance."
        } else {
            keyfmt::FormatError::UnknownPrefix.describe()
        };
        let code = if credential.split('.').count() == 3 {
            Code::InvalidToken
        } else {
            Code::InvalidFormat
        };
        return Err(ApiError::new(code, detail).presented());
    };
    keyfmt::check(credential, &kind.prefix)
        .map_err(|e| ApiError::new(Code::InvalidFormat, e.describe()).presented())?;
    let digest = keyfmt::digest(credential);
    let Some(key) = app.api_key(digest).await? else {
        return Err(ApiError::new(Code::InvalidKey, "This API key does not exist.").presented());
    };
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
    if key.environment != environment {
        return Err(ApiError::new(
            Code::WrongEnvironment,
            format!("This is a {} key: {} keys only work in the {} environment, and this request is for {environment}.", key.environment, key.environment, key.environment),
        )
        .presented());
    }
    let missing = app.scopes.missing(&key.scopes, required_scopes);
    if !missing.is_empty() {
        return Err(ApiError::insufficient_scope(missing));
    }
    Ok(Grant { key })
}
