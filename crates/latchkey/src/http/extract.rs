//! Extractors: JSON bodies with problem+json refusals, the credential of
//! a request (SPEC §4), and the root key of a management call.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use latchkey_core::{Code, keyfmt};
use serde::de::DeserializeOwned;

use crate::app::{App, Use};
use crate::config::{Credentials, ROOT_PREFIX};
use crate::error::{ApiError, FieldError};
use crate::service::Principal;

/// A JSON body. Wrong content type → 415, unreadable JSON → 400, wrong
/// types, missing or unknown fields → 422 with the field's path, over
/// 1 MiB → 413. An empty body reads as `T::default()` when `T` allows it
/// (see [`OptionalJson`]).
pub struct JsonBody<T>(pub T);

/// Like [`JsonBody`] but an empty body (with or without a content type)
/// is `T::default()`: for actions whose body is optional.
pub struct OptionalJson<T>(pub T);

fn is_json(ct: &str) -> bool {
    let essence = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Reads a JSON object body into `T`. Only an object is accepted (serde
/// would otherwise read an array as the fields in order), and nothing may
/// follow it but whitespace.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Tell unreadable JSON (400) from well-formed JSON of the wrong shape (422).
        return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Err(ApiError::field("(body)", "The body must be a JSON object.")),
            Err(e) => Err(ApiError::invalid_request(format!(
                "The body is not valid JSON: {e}."
            ))),
        };
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.classify() != serde_json::error::Category::Data {
            return ApiError::invalid_request(format!("The body is not valid JSON: {inner}."));
        }
        let message = inner.to_string();
        // serde's message ends with " at line L column C"; keep the sentence.
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        // A missing field is reported at its parent: name the field itself.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
            .map(str::to_owned);
        let field = match (path.as_str(), missing) {
            (".", Some(m)) => m,
            (p, Some(m)) => format!("{p}.{m}"),
            (".", None) => "(body)".to_owned(),
            (p, None) => p.to_owned(),
        };
        ApiError::validation(vec![FieldError { field, message }])
    })?;
    de.end().map_err(|e| {
        ApiError::invalid_request(format!("The body has data after its JSON object: {e}."))
    })?;
    Ok(value)
}

async fn body_bytes<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<(Option<String>, Bytes), ApiError> {
    let ct = match req.headers().get(header::CONTENT_TYPE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::invalid_request("The Content-Type header is not readable."))?
                .to_owned(),
        ),
    };
    let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
        if rej.status().as_u16() == 413 {
            ApiError::new(
                Code::PayloadTooLarge,
                "The request body is larger than 1 MiB.",
            )
        } else {
            ApiError::invalid_request("The request body could not be read.")
        }
    })?;
    Ok((ct, bytes))
}

fn require_json(ct: Option<&str>) -> Result<(), ApiError> {
    match ct {
        Some(ct) if is_json(ct) => Ok(()),
        _ => Err(ApiError::new(
            Code::UnsupportedMediaType,
            "Send the body as JSON with Content-Type: application/json.",
        )),
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (ct, bytes) = body_bytes(req, state).await?;
        require_json(ct.as_deref())?;
        parse(&bytes).map(JsonBody)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (ct, bytes) = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        require_json(ct.as_deref())?;
        parse(&bytes).map(OptionalJson)
    }
}

/// Whether `scheme` is an `Authorization` scheme latchkey reads a
/// credential from (`Bearer`, `ApiKey`, as `cfg` enables them).
pub fn reads_scheme(scheme: &str, cfg: &Credentials) -> bool {
    (cfg.bearer && scheme.eq_ignore_ascii_case("bearer"))
        || (cfg.apikey_scheme && scheme.eq_ignore_ascii_case("apikey"))
}

/// Finds the one credential of a request in the places `cfg` enables
/// (SPEC §4), from its headers and raw query (for forward-auth, the query
/// of the original URI). `Ok(None)`: none presented. Two different
/// credentials, an unreadable header, an empty or unsupported
/// `Authorization` → 400.
pub fn credential(
    headers: &HeaderMap,
    query: Option<&str>,
    cfg: &Credentials,
) -> Result<Option<String>, ApiError> {
    let mut found: Vec<String> = Vec::new();
    let mut auth = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(v) = auth.next() {
        if auth.next().is_some() {
            return Err(ApiError::invalid_request(
                "The request has more than one Authorization header.",
            ));
        }
        let v = v.to_str().map_err(|_| {
            ApiError::invalid_request(
                "The Authorization header contains characters that are not visible ASCII.",
            )
        })?;
        let (scheme, value) = v.trim().split_once(' ').unwrap_or((v.trim(), ""));
        let value = value.trim();
        if !reads_scheme(scheme, cfg) {
            let accepted: Vec<&str> = [(cfg.bearer, "Bearer"), (cfg.apikey_scheme, "ApiKey")]
                .into_iter()
                .filter(|(on, _)| *on)
                .map(|(_, s)| s)
                .collect();
            return Err(ApiError::invalid_request(format!(
                "The Authorization scheme is not supported here; use {}.",
                if accepted.is_empty() {
                    "another place for the credential".to_owned()
                } else {
                    accepted.join(" or ")
                }
            )));
        }
        if value.is_empty() || value.contains(char::is_whitespace) {
            return Err(ApiError::invalid_request(
                "The Authorization header must be `<scheme> <credential>` with one credential.",
            ));
        }
        found.push(value.to_owned());
    }
    for name in &cfg.headers {
        let mut values = headers.get_all(name.as_str()).iter();
        if let Some(v) = values.next() {
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
            let v = v.trim();
            if v.is_empty() {
                return Err(ApiError::invalid_request(format!(
                    "The `{name}` header is empty."
                )));
            }
            found.push(v.to_owned());
        }
    }
    if !cfg.query_param.is_empty()
        && let Some(q) = query
    {
        for (k, v) in crate::http::form::parse(q.as_bytes()) {
            if k == cfg.query_param {
                if v.is_empty() {
                    return Err(ApiError::invalid_request(format!(
                        "The `{k}` query parameter is empty."
                    )));
                }
                found.push(v.into_owned());
            }
        }
    }
    let mut it = found.into_iter();
    let Some(first) = it.next() else {
        return Ok(None);
    };
    if it.any(|v| v != first) {
        return Err(ApiError::invalid_request(
            "The request carries two different credentials; send exactly one.",
        ));
    }
    Ok(Some(first))
}

impl FromRequestParts<Arc<App>> for Principal {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let Some(cred) = credential(&parts.headers, parts.uri.query(), &app.config.credentials)?
        else {
            return Err(ApiError::new(
                Code::MissingKey,
                "This endpoint needs a root key: `Authorization: Bearer lk_root_...`.",
            ));
        };
        let mut p = authenticate_root(app, &cred).await?;
        p.request_id = parts
            .extensions
            .get::<super::problem::RequestId>()
            .map(|r| r.0.clone());
        Ok(p)
    }
}

/// Checks a root key: shape first (no lookup), then the cached record.
pub async fn authenticate_root(app: &App, cred: &str) -> Result<Principal, ApiError> {
    if !cred.starts_with(ROOT_PREFIX) {
        let detail =
            if keyfmt::match_prefix(cred, app.config.key_kinds.iter().map(|k| k.prefix.as_str()))
                .is_some()
            {
                "This is an API key; the management API needs a root key (lk_root_...)."
            } else {
                "The management API needs a root key (lk_root_...)."
            };
        return Err(ApiError::new(Code::InvalidFormat, detail).presented());
    }
    keyfmt::check(cred, ROOT_PREFIX)
        .map_err(|e| ApiError::new(Code::InvalidFormat, e.describe()).presented())?;
    let digest = keyfmt::digest(cred);
    let Some(key) = app.root_key(digest).await? else {
        return Err(ApiError::new(Code::InvalidKey, "This root key does not exist.").presented());
    };
    let now = app.now_ms();
    if let Some(at) = key.revoked_at
        && at <= now
    {
        return Err(ApiError::new(
            Code::KeyRevoked,
            format!(
                "This root key was revoked on {}.",
                crate::views::rfc3339(at)
            ),
        )
        .presented());
    }
    if key.should_send_use(now) {
        app.record_use(Use::Root(key.id.clone(), now));
    }
    Ok(Principal {
        root_key: key,
        request_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
    }
}
