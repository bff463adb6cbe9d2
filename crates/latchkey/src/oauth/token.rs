//! The token endpoint and its companions (RFC 6749, 7662, 7009): client
//! authentication, the three grants, introspection and revocation. Every
//! refusal is in RFC 6749's own error format (`{error, error_description}`).

use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey_core::ids::new_id;
use latchkey_core::keyfmt;
use latchkey_store::StoreError;
use latchkey_store::oauth::{AccessToken, Client, Grant, Redeem, RefreshToken, SpendRefresh};
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::config::{ACCESS_PREFIX, CLIENT_SECRET_PREFIX, REFRESH_PREFIX};
use crate::error::ApiError;
use crate::jose::AccessClaims;

/// Longest parameter value read (a scope string, a token, an assertion).
const MAX_PARAM: usize = 16 * 1024;
/// Most parameters in one form body (a token request has about ten; a
/// longer list is refused rather than searched).
const MAX_PARAMS: usize = 64;
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An RFC 6749 §5.2 error.
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    pub fn new(error: &'static str, description: impl Into<String>) -> Self {
        let status = match error {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            status,
            error,
            description: description.into(),
        }
    }

    /// The same error answered with another status (a body the
    /// framework refused: 413).
    pub fn with_status(self, status: StatusCode) -> Self {
        Self { status, ..self }
    }

    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new("invalid_request", d)
    }

    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new("invalid_grant", d)
    }

    fn invalid_client(d: impl Into<String>) -> Self {
        Self::new("invalid_client", d)
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<ApiError> for OAuthError {
    fn from(e: ApiError) -> Self {
        if e.code.status() >= 500 {
            OAuthError::new("server_error", "The server failed; retry later.")
        } else {
            OAuthError::invalid_request(e.detail)
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        headers.insert(header::PRAGMA, header::HeaderValue::from_static("no-cache"));
        if self.status == StatusCode::UNAUTHORIZED {
            // These endpoints authenticate clients with HTTP Basic (or
            // form fields): the challenge names Basic (RFC 6749 §5.2).
            let challenge = "Basic realm=\"latchkey\"";
            headers.insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(challenge),
            );
        }
        let body = serde_json::json!({
            "error": self.error,
            "error_description": self.description,
        });
        let mut res = (self.status, headers, axum::Json(body)).into_response();
        res.extensions_mut().insert(crate::http::problem::Verbatim);
        res
    }
}

/// The parameters of a form body: each at most once (RFC 6749 §3.2), an
/// empty value is as if absent (§3.1). A handful of them: a list.
#[derive(Debug, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Form, OAuthError> {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "The body must be application/x-www-form-urlencoded.",
            ));
        }
        let mut fields: Vec<(String, String)> = Vec::new();
        for (k, v) in crate::http::form::parse(body) {
            if v.len() > MAX_PARAM || k.len() > 256 {
                return Err(OAuthError::invalid_request(format!(
                    "The parameter `{}` is too long.",
                    k.chars().take(64).collect::<String>()
                )));
            }
            if v.is_empty() {
                continue;
            }
            if fields.iter().any(|(name, _)| *name == k) {
                return Err(OAuthError::invalid_request(format!(
                    "The parameter `{k}` is given more than once."
                )));
            }
            if fields.len() == MAX_PARAMS {
                return Err(OAuthError::invalid_request(format!(
                    "The body has more than {MAX_PARAMS} parameters."
                )));
            }
            fields.push((k.into_owned(), v.into_owned()));
        }
        Ok(Form(fields))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| {
            OAuthError::invalid_request(format!("The parameter `{name}` is missing."))
        })
    }
}

fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || OAuthError::invalid_client("The Authorization header is not valid HTTP Basic.");
    let text = value.to_str().map_err(|_| bad())?;
    let Some((scheme, rest)) = text.split_once(' ') else {
        return Err(bad());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "Client authentication takes HTTP Basic here.",
        ));
    }
    let decoded = STANDARD.decode(rest.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    // RFC 6749 §2.3.1: both are form-urlencoded before encoding.
    let unescape = |s: &str| crate::http::form::decode(s.as_bytes()).into_owned();
    Ok(Some((unescape(id), unescape(secret))))
}

/// Authenticates the client of a token, introspection or revocation
/// request, by the one method it is registered with.
pub async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    form: &Form,
) -> Result<Arc<Client>, OAuthError> {
    let basic = basic_credentials(headers)?;
    let methods = [
        basic.is_some(),
        form.get("client_secret").is_some(),
        form.get("client_assertion").is_some(),
    ];
    if methods.iter().filter(|m| **m).count() > 1 {
        return Err(OAuthError::invalid_request(
            "Use one client authentication method per request.",
        ));
    }
    let (client_id, method, secret) = if let Some((id, secret)) = basic {
        if form.get("client_id").is_some_and(|f| f != id) {
            return Err(OAuthError::invalid_request(
                "client_id differs from the one authenticated.",
            ));
        }
        (id, "client_secret_basic", Some(secret))
    } else if let Some(secret) = form.get("client_secret") {
        (
            form.require("client_id")?.to_owned(),
            "client_secret_post",
            Some(secret.to_owned()),
        )
    } else if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type") != Some(ASSERTION_TYPE) {
            return Err(OAuthError::invalid_request(format!(
                "client_assertion_type must be {ASSERTION_TYPE}."
            )));
        }
        let id = assertion_issuer(assertion)?;
        if form.get("client_id").is_some_and(|f| f != id) {
            return Err(OAuthError::invalid_request(
                "client_id differs from the assertion's.",
            ));
        }
        (id, "private_key_jwt", None)
    } else {
        match form.get("client_id") {
            Some(id) => (id.to_owned(), "none", None),
            None => {
                return Err(OAuthError::invalid_client(
                    "Client authentication is required.",
                ));
            }
        }
    };
    let unknown = || OAuthError::invalid_client("Client authentication failed.");
    if !latchkey_core::ids::is_id(&client_id, "cli_") {
        return Err(unknown());
    }
    let Some(client) = app.client(&client_id).await? else {
        return Err(unknown());
    };
    if client.token_endpoint_auth_method != method {
        return Err(OAuthError::invalid_client(format!(
            "This client authenticates with {}, not {method}.",
            client.token_endpoint_auth_method
        )));
    }
    match method {
        "client_secret_basic" | "client_secret_post" => {
            let secret = secret.unwrap_or_default();
            let ok = keyfmt::check(&secret, CLIENT_SECRET_PREFIX).is_ok()
                && client
                    .secret_digest
                    .as_deref()
                    .is_some_and(|d| bool::from(d.ct_eq(keyfmt::digest(&secret).as_slice())));
            if !ok {
                return Err(unknown());
            }
        }
        "private_key_jwt" => {
            check_assertion(app, &client, form.get("client_assertion").unwrap_or("")).await?;
        }
        _ => {
            if !client.public {
                return Err(unknown());
            }
        }
    }
    Ok(client)
}

/// The `iss` of a client assertion, read before any key is chosen (the
/// key is then the client's own, by `kid`).
fn assertion_issuer(assertion: &str) -> Result<String, OAuthError> {
    let bad = || OAuthError::invalid_client("The client assertion is not a readable JWT.");
    if assertion.len() > crate::jose::MAX_TOKEN_LEN {
        return Err(bad());
    }
    let payload = assertion.split('.').nth(1).ok_or_else(bad)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| bad())?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    claims
        .get("iss")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(bad)
}

/// RFC 7523 §3 client authentication: signed by a key of the client's
/// `jwks` (picked by `kid`, its alg fixed by the key), `iss` = `sub` =
/// client id, `aud` the token endpoint or the issuer, unexpired, lasting
/// at most an hour, its `jti` used once.
async fn check_assertion(app: &App, client: &Client, assertion: &str) -> Result<(), OAuthError> {
    let bad = |why: &str| {
        OAuthError::invalid_client(format!("The client assertion is not valid: {why}."))
    };
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| bad("unreadable header"))?;
    let kid = header.kid.as_deref().ok_or_else(|| bad("no kid"))?;
    let jwk = client
        .jwks
        .as_ref()
        .and_then(|j| j.get("keys"))
        .and_then(|k| k.as_array())
        .and_then(|keys| {
            keys.iter()
                .find(|k| k.get("kid").and_then(|v| v.as_str()) == Some(kid))
        })
        .ok_or_else(|| bad("unknown kid"))?;
    let (alg, key) = crate::jose::decoding_key(jwk).ok_or_else(|| bad("unusable key"))?;
    if header.alg != alg.algorithm() {
        return Err(bad("alg is not the key's"));
    }
    let issuer = app.config.public_url().to_owned();
    let mut v = jsonwebtoken::Validation::new(alg.algorithm());
    v.set_audience(&[format!("{issuer}/oauth/token"), issuer]);
    v.set_issuer(&[client.id.as_str()]);
    v.sub = Some(client.id.clone());
    v.validate_exp = false;
    v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: i64,
        iat: Option<i64>,
        jti: String,
    }
    let data = jsonwebtoken::decode::<Claims>(assertion, &key, &v)
        .map_err(|_| bad("signature or claims"))?;
    let now = app.now_ms() / 1000;
    let c = data.claims;
    if c.exp <= now - 60 {
        return Err(bad("expired"));
    }
    if c.exp - c.iat.unwrap_or(now) > 3600 || c.exp > now + 3660 {
        return Err(bad("lasts more than an hour"));
    }
    if c.jti.is_empty() || c.jti.len() > 200 {
        return Err(bad("no jti"));
    }
    // Atomic: of two requests carrying one assertion, one is first.
    let seen = format!("assertion:{}:{}", client.id, c.jti);
    if !app
        .store
        .use_once(&seen, (c.exp + 60) * 1000, app.now_ms())
        .await?
    {
        return Err(bad("already used"));
    }
    Ok(())
}

/// A token answer (RFC 6749 §5.1).
#[derive(Debug, Serialize)]
pub struct TokenAnswer {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
}

/// The scopes asked for (`scope`), each within `allowed`; none asked: all.
fn scopes_within(
    app: &App,
    asked: Option<&str>,
    allowed: &[String],
) -> Result<Vec<String>, OAuthError> {
    let Some(asked) = asked else {
        return Ok(allowed.to_vec());
    };
    let scopes: Vec<String> = crate::service::dedup(
        asked
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    );
    if scopes.len() > latchkey_core::scope::MAX_SCOPES
        || scopes
            .iter()
            .any(|s| !latchkey_core::scope::is_scope_token(s))
    {
        return Err(OAuthError::new(
            "invalid_scope",
            "The scope parameter is not a list of scope tokens.",
        ));
    }
    let missing = app.scopes.missing(allowed, &scopes);
    if !missing.is_empty() {
        return Err(OAuthError::new(
            "invalid_scope",
            format!("Not allowed for this client: {}.", missing.join(" ")),
        ));
    }
    Ok(scopes)
}

/// Whether a grant of `scopes` to `client` comes with a refresh token
/// (SPEC §8: with `offline_access` in the catalog, only when granted).
fn gets_refresh(app: &App, client: &Client, scopes: &[String]) -> bool {
    client.grant_types.iter().any(|g| g == "refresh_token")
        && (!app.scopes.catalog().contains_key("offline_access")
            || scopes.iter().any(|s| s == "offline_access"))
}

fn ttl_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Issues an access token: an RFC 9068 JWT, or an opaque one (stored).
async fn access_token(
    app: &App,
    client: &Client,
    subject: &str,
    scopes: &[String],
    grant_id: Option<&str>,
) -> Result<(String, i64), OAuthError> {
    let now = app.now_ms();
    let ttl = ttl_ms(app.config.oauth.access_token_ttl.0);
    let jti = new_id("atk_");
    if app.config.oauth.access_token_format == "opaque" {
        let token = keyfmt::generate(ACCESS_PREFIX);
        app.store
            .create_access_token(&AccessToken {
                digest: keyfmt::digest(&token).to_vec(),
                jti,
                grant_id: grant_id.map(str::to_owned),
                client_id: client.id.clone(),
                org_id: client.org_id.clone(),
                subject: subject.to_owned(),
                scopes: scopes.to_vec(),
                created_at: now,
                expires_at: now + ttl,
                revoked_at: None,
            })
            .await?;
        return Ok((token, ttl / 1000));
    }
    let keys = app.keys.get(app).await?;
    let claims = AccessClaims {
        iss: app.config.public_url().to_owned(),
        sub: subject.to_owned(),
        aud: app.config.token_audience(),
        exp: (now + ttl) / 1000,
        iat: now / 1000,
        jti,
        client_id: client.id.clone(),
        scope: scopes.join(" "),
        org_id: client.org_id.clone(),
        gid: grant_id.map(str::to_owned),
    };
    let token = keys.signer.sign_access_token(&claims).map_err(|e| {
        tracing::error!(error = %e, "signing an access token failed");
        OAuthError::new("server_error", "The server failed; retry later.")
    })?;
    Ok((token, ttl / 1000))
}

async fn refresh_token(app: &App, client: &Client, grant_id: &str) -> Result<String, OAuthError> {
    let now = app.now_ms();
    let token = keyfmt::generate(REFRESH_PREFIX);
    app.store
        .create_refresh_token(&RefreshToken {
            digest: keyfmt::digest(&token).to_vec(),
            grant_id: grant_id.to_owned(),
            client_id: client.id.clone(),
            created_at: now,
            expires_at: now + ttl_ms(app.config.oauth.refresh_token_ttl.0),
            spent_at: None,
        })
        .await?;
    Ok(token)
}

fn allows(client: &Client, grant_type: &str) -> Result<(), OAuthError> {
    if client.grant_types.iter().any(|g| g == grant_type) {
        Ok(())
    } else {
        Err(OAuthError::new(
            "unauthorized_client",
            format!("This client may not use the {grant_type} grant."),
        ))
    }
}

/// `POST /oauth/token`.
pub async fn token(app: &App, headers: &HeaderMap, form: &Form) -> Result<TokenAnswer, OAuthError> {
    let grant_type = form.require("grant_type")?.to_owned();
    if !matches!(
        grant_type.as_str(),
        "client_credentials" | "authorization_code" | "refresh_token"
    ) {
        return Err(OAuthError::new(
            "unsupported_grant_type",
            "Supported: authorization_code, refresh_token, client_credentials.",
        ));
    }
    let client = authenticate(app, headers, form).await?;
    allows(&client, &grant_type)?;
    let answer = match grant_type.as_str() {
        "client_credentials" => client_credentials(app, &client, form).await,
        "authorization_code" => authorization_code(app, &client, form).await,
        _ => refresh(app, &client, form).await,
    };
    let outcome = match &answer {
        Ok(_) => "issued",
        Err(e) => e.error,
    };
    metrics::counter!("latchkey_oauth_tokens_total", "grant_type" => grant_type, "outcome" => outcome).increment(1);
    answer
}

async fn client_credentials(
    app: &App,
    client: &Client,
    form: &Form,
) -> Result<TokenAnswer, OAuthError> {
    if client.public {
        return Err(OAuthError::new(
            "unauthorized_client",
            "A public client cannot use client_credentials.",
        ));
    }
    let scopes = scopes_within(app, form.get("scope"), &client.scopes)?;
    let (access_token, expires_in) = access_token(app, client, &client.id, &scopes, None).await?;
    Ok(TokenAnswer {
        access_token,
        token_type: "Bearer",
        expires_in,
        refresh_token: None,
        scope: scopes.join(" "),
    })
}

/// RFC 7636 §4.6: BASE64URL(SHA256(verifier)) == challenge, in constant time.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let computed = URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()));
    well_formed && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

async fn authorization_code(
    app: &App,
    client: &Client,
    form: &Form,
) -> Result<TokenAnswer, OAuthError> {
    let code = form.require("code")?;
    let redirect_uri = form.require("redirect_uri")?;
    let unknown =
        || OAuthError::invalid_grant("The code is not valid (unknown, expired or already used).");
    if keyfmt::check(code, crate::config::CODE_PREFIX).is_err() {
        return Err(unknown());
    }
    let now = app.now_ms();
    let grant = Grant {
        id: new_id("grt_"),
        org_id: client.org_id.clone(),
        client_id: client.id.clone(),
        user_id: None,
        scopes: Vec::new(),
        created_at: now,
        revoked_at: None,
    };
    let code = match app
        .store
        .redeem_code(&keyfmt::digest(code), now, &grant)
        .await?
    {
        Redeem::Fresh(c) => c,
        Redeem::Replayed(c) => {
            // RFC 6749 §4.1.2, RFC 9700 §4.5: a code used twice revokes
            // what its first use issued.
            if let Some(g) = &c.grant_id {
                app.store.revoke_grant(g, now).await?;
                app.forget_grant(g);
                tracing::warn!(grant_id = %g, client_id = %c.client_id, "authorization code replayed: its grant is revoked");
            }
            return Err(unknown());
        }
        Redeem::Unknown => return Err(unknown()),
    };
    let grant_id = grant.id.as_str();
    let refuse = |why: &'static str| async move {
        // The code is spent; what it created is revoked before refusing.
        app.store.revoke_grant(grant_id, now).await.ok();
        app.forget_grant(grant_id);
        Err::<TokenAnswer, _>(OAuthError::invalid_grant(why))
    };
    if code.client_id != client.id {
        return refuse("The code was issued to another client.").await;
    }
    if code.redirect_uri != redirect_uri {
        return refuse("redirect_uri differs from the authorization request's.").await;
    }
    match (&code.code_challenge, form.get("code_verifier")) {
        (Some(challenge), Some(verifier)) if pkce_matches(verifier, challenge) => {}
        (Some(_), Some(_)) => {
            return refuse("The code_verifier does not match the code_challenge.").await;
        }
        (Some(_), None) => return refuse("The code_verifier is missing.").await,
        // RFC 9700 §2.1.1: a verifier without a challenge is a downgrade.
        (None, Some(_)) => {
            return refuse("A code_verifier was sent for a code without a challenge.").await;
        }
        // Defence in depth: the authorization endpoint already refuses a
        // request without a challenge from a client that needs PKCE.
        (None, None) if client.require_pkce => return refuse("This client must use PKCE.").await,
        (None, None) => {}
    }
    let (access_token, expires_in) =
        access_token(app, client, &code.user_id, &code.scopes, Some(&grant.id)).await?;
    let refresh_token = if gets_refresh(app, client, &code.scopes) {
        Some(refresh_token(app, client, &grant.id).await?)
    } else {
        None
    };
    Ok(TokenAnswer {
        access_token,
        token_type: "Bearer",
        expires_in,
        refresh_token,
        scope: code.scopes.join(" "),
    })
}

async fn refresh(app: &App, client: &Client, form: &Form) -> Result<TokenAnswer, OAuthError> {
    let presented = form.require("refresh_token")?;
    let unknown = || OAuthError::invalid_grant("The refresh token is not valid.");
    if keyfmt::check(presented, REFRESH_PREFIX).is_err() {
        return Err(unknown());
    }
    let now = app.now_ms();
    let digest = keyfmt::digest(presented);
    if let Some(asked) = form.get("scope") {
        // A refused scope must not cost the client its refresh token (nor,
        // on its retry, the whole grant as a "reuse"): checked before the
        // token is spent, when it is this client's and still fresh. The
        // check after spending stays, for a grant changed meanwhile.
        if let Some(t) = app.store.refresh_token_by_digest(&digest).await?
            && t.client_id == client.id
            && t.spent_at.is_none()
            && let Ok(grant) = app.store.get_grant(&t.grant_id).await
        {
            scopes_within(app, Some(asked), &grant.scopes)?;
        }
    }
    let spent = app.store.spend_refresh_token(&digest, now).await?;
    let token = match spent {
        SpendRefresh::Fresh(t) => t,
        SpendRefresh::Reused(t) => {
            // RFC 9700 §4.14.2: reuse of a rotated refresh token revokes
            // its whole family.
            app.store.revoke_grant(&t.grant_id, now).await?;
            app.forget_grant(&t.grant_id);
            tracing::warn!(grant_id = %t.grant_id, client_id = %t.client_id, "refresh token reused: its grant is revoked");
            return Err(OAuthError::invalid_grant(
                "The refresh token was already used; the grant is revoked.",
            ));
        }
        SpendRefresh::Unknown => return Err(unknown()),
    };
    if token.client_id != client.id {
        app.store.revoke_grant(&token.grant_id, now).await?;
        app.forget_grant(&token.grant_id);
        return Err(OAuthError::invalid_grant(
            "The refresh token was issued to another client.",
        ));
    }
    if token.expires_at <= now {
        return Err(OAuthError::invalid_grant("The refresh token has expired."));
    }
    let grant = app.store.get_grant(&token.grant_id).await?;
    if grant.revoked_at.is_some_and(|r| r <= now) {
        return Err(OAuthError::invalid_grant("The grant was revoked."));
    }
    let scopes = scopes_within(app, form.get("scope"), &grant.scopes)?;
    let subject = grant.user_id.clone().unwrap_or_else(|| client.id.clone());
    let (access_token, expires_in) =
        access_token(app, client, &subject, &scopes, Some(&grant.id)).await?;
    let refresh_token = refresh_token(app, client, &grant.id).await?;
    Ok(TokenAnswer {
        access_token,
        token_type: "Bearer",
        expires_in,
        refresh_token: Some(refresh_token),
        scope: scopes.join(" "),
    })
}

/// What latchkey knows of a token it issued and that still holds.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub kind: TokenKind,
    pub jti: Option<String>,
    pub client_id: String,
    pub org_id: String,
    pub subject: String,
    pub scopes: Vec<String>,
    /// Seconds since the epoch.
    pub exp: i64,
    pub iat: i64,
    pub grant_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

/// Why an access token does not hold.
#[derive(Debug, Clone)]
pub enum TokenRefusal {
    /// Not one of ours (shape, signature, issuer, audience): `INVALID_TOKEN`.
    Invalid(String),
    Expired(i64),
    Revoked(&'static str),
}

/// Checks an access token latchkey issued (JWT or opaque): signature and
/// claims, then that it, its grant and its client still stand.
pub async fn check_access_token(
    app: &App,
    token: &str,
) -> Result<Result<TokenInfo, TokenRefusal>, ApiError> {
    let now = app.now_ms();
    if token.starts_with(ACCESS_PREFIX) {
        if keyfmt::check(token, ACCESS_PREFIX).is_err() {
            return Ok(Err(TokenRefusal::Invalid(
                "This is not an access token latchkey issued.".into(),
            )));
        }
        let Some(t) = app.access_token(keyfmt::digest(token)).await? else {
            return Ok(Err(TokenRefusal::Invalid(
                "This access token does not exist.".into(),
            )));
        };
        if t.expires_at <= now {
            return Ok(Err(TokenRefusal::Expired(t.expires_at)));
        }
        if t.revoked_at.is_some_and(|r| r <= now) {
            return Ok(Err(TokenRefusal::Revoked("This access token was revoked.")));
        }
        let info = TokenInfo {
            kind: TokenKind::Access,
            jti: Some(t.jti.clone()),
            client_id: t.client_id.clone(),
            org_id: t.org_id.clone(),
            subject: t.subject.clone(),
            scopes: t.scopes.clone(),
            exp: t.expires_at / 1000,
            iat: t.created_at / 1000,
            grant_id: t.grant_id.clone(),
        };
        return still_stands(app, info, now).await;
    }
    let digest = keyfmt::digest(token);
    let claims = match app.verified_token(&digest) {
        // Verified before: its signature and claims hold; only time moves.
        Some(c) if c.exp.saturating_mul(1000) <= now => {
            return Ok(Err(TokenRefusal::Expired(c.exp.saturating_mul(1000))));
        }
        Some(c) => c,
        None => {
            let keys = app.keys.get(app).await?;
            match keys.verifier.verify_access_token(
                token,
                app.config.public_url(),
                &app.config.token_audience(),
                now / 1000,
                0,
            ) {
                Ok(c) => {
                    let c = Arc::new(c);
                    app.remember_verified(digest, c.clone());
                    c
                }
                Err(crate::jose::TokenError::Expired { exp }) => {
                    return Ok(Err(TokenRefusal::Expired(exp * 1000)));
                }
                Err(e) => {
                    return Ok(Err(TokenRefusal::Invalid(format!(
                        "This access token is not valid: {}.",
                        e.describe()
                    ))));
                }
            }
        }
    };
    if app.jti_revoked(&claims.jti).await? {
        return Ok(Err(TokenRefusal::Revoked("This access token was revoked.")));
    }
    let info = TokenInfo {
        kind: TokenKind::Access,
        jti: Some(claims.jti.clone()),
        client_id: claims.client_id.clone(),
        org_id: claims.org_id.clone(),
        subject: claims.sub.clone(),
        scopes: claims
            .scope
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        exp: claims.exp,
        iat: claims.iat,
        grant_id: claims.gid.clone(),
    };
    still_stands(app, info, now).await
}

/// A token holds only while its grant is unrevoked and its client exists.
async fn still_stands(
    app: &App,
    info: TokenInfo,
    now: i64,
) -> Result<Result<TokenInfo, TokenRefusal>, ApiError> {
    if let Some(g) = &info.grant_id {
        match app.grant(g).await? {
            Some(grant) if grant.revoked_at.is_none_or(|r| r > now) => {}
            _ => {
                return Ok(Err(TokenRefusal::Revoked(
                    "The grant this access token came from was revoked.",
                )));
            }
        }
    }
    match app.client(&info.client_id).await? {
        Some(c) if c.org_id == info.org_id => Ok(Ok(info)),
        _ => Ok(Err(TokenRefusal::Revoked(
            "The client this access token was issued to was deleted.",
        ))),
    }
}

/// `POST /oauth/introspect` (RFC 7662): for confidential clients only;
/// only the client's own tokens are described, anything else is
/// `{"active": false}`.
pub async fn introspect(
    app: &App,
    headers: &HeaderMap,
    form: &Form,
) -> Result<Introspection, OAuthError> {
    let client = authenticate(app, headers, form).await?;
    if client.public {
        // RFC 7662 §2.1: the endpoint requires client authentication; a
        // public client has none (the metadata does not offer `none`).
        return Err(OAuthError::invalid_client(
            "Introspection needs client authentication; a public client has none.",
        ));
    }
    let token = form.require("token")?;
    let info = if token.starts_with(REFRESH_PREFIX) {
        match refresh_info(app, token).await? {
            Some(i) => i,
            None => return Ok(Introspection::default()),
        }
    } else {
        match check_access_token(app, token).await? {
            Ok(i) => i,
            Err(_) => return Ok(Introspection::default()),
        }
    };
    if info.client_id != client.id {
        return Ok(Introspection::default());
    }
    let access = info.kind == TokenKind::Access;
    Ok(Introspection {
        active: true,
        aud: access.then(|| app.config.token_audience()),
        scope: Some(info.scopes.join(" ")),
        iss: Some(app.config.public_url().to_owned()),
        token_type: Some(if access { "Bearer" } else { "refresh_token" }),
        jti: if access { info.jti } else { None },
        exp: Some(info.exp),
        iat: Some(info.iat),
        client_id: Some(info.client_id),
        org_id: Some(info.org_id),
        sub: Some(info.subject),
    })
}

/// An RFC 7662 answer: `{"active": false}` alone (the default), or the
/// token's members, in name order.
#[derive(Debug, Default, serde::Serialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
}

async fn refresh_info(app: &App, token: &str) -> Result<Option<TokenInfo>, OAuthError> {
    if keyfmt::check(token, REFRESH_PREFIX).is_err() {
        return Ok(None);
    }
    let now = app.now_ms();
    let Some(t) = app
        .store
        .refresh_token_by_digest(&keyfmt::digest(token))
        .await?
    else {
        return Ok(None);
    };
    if t.spent_at.is_some() || t.expires_at <= now {
        return Ok(None);
    }
    let grant = match app.store.get_grant(&t.grant_id).await {
        Ok(g) => g,
        Err(StoreError::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if grant.revoked_at.is_some_and(|r| r <= now) {
        return Ok(None);
    }
    Ok(Some(TokenInfo {
        kind: TokenKind::Refresh,
        jti: None,
        client_id: t.client_id.clone(),
        org_id: grant.org_id.clone(),
        subject: grant.user_id.clone().unwrap_or_else(|| t.client_id.clone()),
        scopes: grant.scopes.clone(),
        exp: t.expires_at / 1000,
        iat: t.created_at / 1000,
        grant_id: Some(grant.id),
    }))
}

/// `POST /oauth/revoke` (RFC 7009): always 200 for an authenticated
/// client; a token that is unknown, invalid or another client's is left
/// alone without saying so (§2.2). A refresh token revokes its grant.
pub async fn revoke(app: &App, headers: &HeaderMap, form: &Form) -> Result<(), OAuthError> {
    let client = authenticate(app, headers, form).await?;
    let token = form.require("token")?;
    let now = app.now_ms();
    if token.starts_with(REFRESH_PREFIX) {
        if let Some(info) = refresh_info(app, token).await?
            && info.client_id == client.id
            && let Some(g) = &info.grant_id
        {
            app.store.revoke_grant(g, now).await?;
            app.forget_grant(g);
        }
        return Ok(());
    }
    let Ok(info) = check_access_token(app, token).await? else {
        return Ok(());
    };
    if info.client_id != client.id {
        return Ok(());
    }
    if token.starts_with(ACCESS_PREFIX) {
        let digest = keyfmt::digest(token);
        app.store.revoke_access_token(&digest, now).await?;
        app.forget_access_token(digest);
    } else if let Some(jti) = &info.jti {
        app.store.revoke_jti(jti, info.exp * 1000).await?;
        app.note_revoked_jti(jti, info.exp * 1000);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &str) -> Result<Form, OAuthError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        Form::parse(&headers, body.as_bytes())
    }

    #[test]
    fn form_parameters_once_each_and_at_most_64() {
        let f = form("grant_type=client_credentials&scope=a+b&empty=&x=%41").unwrap();
        assert_eq!(f.get("scope"), Some("a b"));
        assert_eq!(f.get("x"), Some("A"));
        assert_eq!(f.get("empty"), None);
        let e = form("scope=a&scope=b").unwrap_err();
        assert!(
            e.description.contains("more than once"),
            "{}",
            e.description
        );
        let body = |n: usize| {
            (0..n)
                .map(|i| format!("p{i}=v"))
                .collect::<Vec<_>>()
                .join("&")
        };
        assert_eq!(form(&body(MAX_PARAMS)).unwrap().0.len(), MAX_PARAMS);
        let e = form(&body(MAX_PARAMS + 1)).unwrap_err();
        assert!(e.description.contains("more than 64"), "{}", e.description);
    }

    #[test]
    fn pkce_s256() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
        assert!(!pkce_matches("short", challenge));
        assert!(!pkce_matches(challenge, challenge));
    }

    #[test]
    fn forms_refuse_duplicates_and_ignore_empty_values() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=UTF-8"
                .parse()
                .unwrap(),
        );
        let f = Form::parse(&h, b"grant_type=client_credentials&scope=&x=%20y").unwrap();
        assert_eq!(f.get("grant_type"), Some("client_credentials"));
        assert_eq!(f.get("scope"), None);
        assert_eq!(f.get("x"), Some(" y"));
        let e = Form::parse(&h, b"scope=a&scope=b").unwrap_err();
        assert_eq!(e.error, "invalid_request");
        let mut json = HeaderMap::new();
        json.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert_eq!(
            Form::parse(&json, b"{}").unwrap_err().error,
            "invalid_request"
        );
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", STANDARD.encode("cli%3Ax:s%2Bt"));
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        assert_eq!(
            basic_credentials(&h).unwrap(),
            Some(("cli:x".to_owned(), "s+t".to_owned()))
        );
        h.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(basic_credentials(&h).unwrap_err().error, "invalid_client");
    }
}
