//! The authorization endpoint (SPEC §8; RFC 6749 §4.1, RFC 7636 PKCE,
//! RFC 9207 `iss`, RFC 9700 §2.1 and §4): validating a request, the
//! signed flow token that carries it through the login and consent pages,
//! signing in, consent, and issuing codes. The pages are `http::authorize`.
//!
//! Errors come in two kinds. Those about the client or the redirect URI
//! ([`Shown`]) are shown to the user and never redirected: the redirect URI
//! is not known to be the client's (RFC 6749 §4.1.2.1, RFC 9700 §4.1).
//! The others ([`Redirected`]) go back to the client at its redirect URI,
//! with `error`, `error_description`, `state` and `iss`.
//!
//! Nothing is kept on the server between the steps: the validated request
//! travels in a flow token ([`Flow`], [`seal`], [`open`]): JSON, signed
//! with HMAC-SHA256 under a key derived from the master key, expiring 10
//! minutes after it was made, and bound to a random value in a cookie of
//! the browser that started the flow (the CSRF defence). After sign-in,
//! the token also names the user.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_core::ids::is_id;
use latchkey_core::keyfmt;
use latchkey_core::scope::{MAX_SCOPES, ScopePolicy, is_scope_token};
use latchkey_store::StoreError;
use latchkey_store::oauth::{AuthCode, Client, Consent, User};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::config::CODE_PREFIX;
use crate::ratelimit::{Quota, fallback};

/// How long a flow token holds: the time a user has for a page.
pub const FLOW_TTL_MS: i64 = 10 * 60 * 1000;
/// The label the flow token's key is derived under (see
/// [`crate::crypto::MasterKey::derive`]).
pub const FLOW_KEY_LABEL: &str = "latchkey/oauth/authorize/flow-token/v1";
/// Longest flow token read (a request's parameters fit well within it).
const MAX_FLOW_TOKEN: usize = 32 * 1024;
/// Longest `state` accepted.
pub const MAX_STATE: usize = 2048;
/// Shortest and longest PKCE code challenge (RFC 7636 §4.2).
const MIN_CHALLENGE: usize = 43;
const MAX_CHALLENGE: usize = 128;

/// Sign-in attempts allowed per account and per client address.
pub const LOGIN_PER_ACCOUNT: Quota = Quota {
    limit: 10,
    window: Duration::from_secs(300),
};
pub const LOGIN_PER_IP: Quota = Quota {
    limit: 50,
    window: Duration::from_secs(300),
};

// ---- Parameters -----------------------------------------------------------

/// The parameters of a query or a form. A parameter without a value counts
/// as absent (RFC 6749 §3.1); one given twice is remembered as repeated.
#[derive(Debug, Default)]
pub struct Params {
    values: BTreeMap<String, String>,
    repeated: BTreeSet<String>,
}

impl Params {
    pub fn parse(raw: &[u8]) -> Params {
        let mut p = Params::default();
        for (k, v) in crate::http::form::parse(raw) {
            if v.is_empty() {
                continue;
            }
            if p.values.contains_key(k.as_ref()) {
                p.repeated.insert(k.into_owned());
            } else {
                p.values.insert(k.into_owned(), v.into_owned());
            }
        }
        p
    }

    /// The value of `name`, unless absent or repeated.
    pub fn get(&self, name: &str) -> Option<&str> {
        if self.repeated.contains(name) {
            return None;
        }
        self.values.get(name).map(String::as_str)
    }

    pub fn is_repeated(&self, name: &str) -> bool {
        self.repeated.contains(name)
    }

    /// The first parameter given more than once, if any.
    pub fn first_repeated(&self) -> Option<&str> {
        self.repeated.iter().next().map(String::as_str)
    }
}

// ---- Errors ---------------------------------------------------------------

/// An error shown on a page, never redirected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub status: u16,
    pub title: &'static str,
    pub message: String,
}

impl Shown {
    fn bad(title: &'static str, message: impl Into<String>) -> Shown {
        Shown {
            status: 400,
            title,
            message: message.into(),
        }
    }

    /// The store failed: a 500 page that says nothing of the cause.
    pub fn internal() -> Shown {
        Shown {
            status: 500,
            title: "Something went wrong",
            message: "The server could not handle this request. Try again in a moment.".into(),
        }
    }
}

/// An error sent to the client at its (validated) redirect URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirected {
    pub redirect_uri: String,
    /// An RFC 6749 §4.1.2.1 error code.
    pub error: &'static str,
    /// ASCII, without `"` or `\` (RFC 6749 `error_description`).
    pub description: String,
    pub state: Option<String>,
}

impl Redirected {
    /// Where the browser goes: the redirect URI with the error parameters.
    pub fn location(&self, issuer: &str) -> String {
        let mut pairs = vec![
            ("error", self.error),
            ("error_description", self.description.as_str()),
        ];
        if let Some(s) = &self.state {
            pairs.push(("state", s));
        }
        pairs.push(("iss", issuer));
        with_query(&self.redirect_uri, &pairs)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Show(Shown),
    Redirect(Redirected),
}

impl From<Shown> for Refusal {
    fn from(s: Shown) -> Self {
        Refusal::Show(s)
    }
}

impl From<Redirected> for Refusal {
    fn from(r: Redirected) -> Self {
        Refusal::Redirect(r)
    }
}

/// `uri` with `pairs` appended to its query (form-encoded), after `?`, or
/// after `&` when it has a query already. Redirect URIs never have a
/// fragment (they are checked when registered).
pub fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let mut enc = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        enc.append_pair(k, v);
    }
    let query = enc.finish();
    let sep = match uri.find('?') {
        None => "?",
        Some(_) if uri.ends_with('?') || uri.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{uri}{sep}{query}")
}

// ---- Validating a request ---------------------------------------------------

/// A request that passed every check: what the flow carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzRequest {
    pub client_id: String,
    pub redirect_uri: String,
    /// Requested, or the client's own when none were.
    pub scopes: Vec<String>,
    pub state: Option<String>,
    /// PKCE S256 challenge; `None` only for a client with `require_pkce = false`.
    pub code_challenge: Option<String>,
    /// `prompt=consent`: ask again even if the user consented before.
    pub force_consent: bool,
}

/// The client id and redirect URI, checked for presence, repetition and
/// shape before any lookup. Every failure here is shown, never redirected.
pub fn client_params(p: &Params) -> Result<(String, String), Shown> {
    if p.is_repeated("client_id") {
        return Err(Shown::bad(
            "Invalid request",
            "The request names the client more than once (client_id is repeated).",
        ));
    }
    if p.is_repeated("redirect_uri") {
        return Err(Shown::bad(
            "Invalid request",
            "The request gives more than one redirect URI (redirect_uri is repeated).",
        ));
    }
    let Some(client_id) = p.get("client_id") else {
        return Err(Shown::bad(
            "Invalid request",
            "The request does not say which application it comes from (client_id is missing).",
        ));
    };
    if !is_id(client_id, "cli_") {
        return Err(unknown_client());
    }
    let Some(redirect_uri) = p.get("redirect_uri") else {
        return Err(Shown::bad(
            "Invalid request",
            "The request does not say where to return (redirect_uri is missing).",
        ));
    };
    Ok((client_id.to_owned(), redirect_uri.to_owned()))
}

pub fn unknown_client() -> Shown {
    Shown::bad(
        "Unknown application",
        "The application that sent you here is not registered. Contact the application's developer.",
    )
}

/// Whether `client` may send users here with `redirect_uri`: it uses the
/// authorization code grant and registered exactly this URI (simple string
/// comparison, RFC 9700 §4.1.3). Shown, never redirected.
pub fn check_redirect(client: &Client, redirect_uri: &str) -> Result<(), Shown> {
    if !client.grant_types.iter().any(|g| g == "authorization_code") {
        return Err(Shown::bad(
            "Application not allowed",
            "This application is not allowed to ask users for authorization (it does not use the authorization code grant).",
        ));
    }
    if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
        return Err(Shown::bad(
            "Invalid redirect URI",
            "The address this request asks to return to is not registered for the application, so you were not sent back to it. Contact the application's developer.",
        ));
    }
    Ok(())
}

/// Checks the rest of a request whose client and redirect URI are valid.
/// Every failure goes back to the client.
pub fn check_request(
    p: &Params,
    client: &Client,
    redirect_uri: &str,
    policy: &ScopePolicy,
) -> Result<AuthzRequest, Redirected> {
    let state = p.get("state").map(str::to_owned);
    let fail = |error: &'static str, description: String| Redirected {
        redirect_uri: redirect_uri.to_owned(),
        error,
        description,
        state: state.clone().filter(|s| s.len() <= MAX_STATE),
    };
    if let Some(name) = p.first_repeated() {
        let name = if is_scope_token(name) {
            name
        } else {
            "a parameter"
        };
        return Err(fail(
            "invalid_request",
            format!("Parameter {name} is repeated; each parameter may appear once."),
        ));
    }
    if state.as_ref().is_some_and(|s| s.len() > MAX_STATE) {
        return Err(fail(
            "invalid_request",
            format!("state is longer than {MAX_STATE} bytes."),
        ));
    }
    match p.get("response_type") {
        None => {
            return Err(fail(
                "invalid_request",
                "response_type is missing; it must be code.".into(),
            ));
        }
        Some("code") => {}
        Some(_) => {
            return Err(fail(
                "unsupported_response_type",
                "Only response_type=code is supported.".into(),
            ));
        }
    }
    let code_challenge = match (p.get("code_challenge"), p.get("code_challenge_method")) {
        (Some(c), Some("S256")) => {
            let shape_ok = (MIN_CHALLENGE..=MAX_CHALLENGE).contains(&c.len())
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !shape_ok {
                return Err(fail(
                    "invalid_request",
                    "code_challenge must be 43 to 128 base64url characters (BASE64URL(SHA256(code_verifier)), without padding).".into(),
                ));
            }
            Some(c.to_owned())
        }
        (Some(_), None) => {
            // RFC 7636 §4.3: no method means plain.
            return Err(fail(
                "invalid_request",
                "code_challenge_method is missing (it would mean plain); PKCE must use S256."
                    .into(),
            ));
        }
        (_, Some("plain")) => {
            return Err(fail(
                "invalid_request",
                "PKCE method plain is not allowed; use S256.".into(),
            ));
        }
        (_, Some(_)) => {
            return Err(fail(
                "invalid_request",
                "code_challenge_method must be S256.".into(),
            ));
        }
        (None, None) if client.require_pkce => {
            return Err(fail(
                "invalid_request",
                "PKCE is required: send code_challenge with code_challenge_method=S256.".into(),
            ));
        }
        (None, None) => None,
    };
    let scopes: Vec<String> = match p.get("scope") {
        None => client.scopes.clone(),
        Some(raw) => {
            let mut out: Vec<String> = Vec::new();
            for s in raw.split(' ') {
                if !is_scope_token(s) {
                    return Err(fail(
                        "invalid_scope",
                        "scope must be scope tokens separated by single spaces.".into(),
                    ));
                }
                if !out.iter().any(|o| o == s) {
                    out.push(s.to_owned());
                }
            }
            out
        }
    };
    if scopes.is_empty() {
        return Err(fail(
            "invalid_scope",
            "No scope was requested and the client has no default scopes.".into(),
        ));
    }
    if scopes.len() > MAX_SCOPES {
        return Err(fail(
            "invalid_scope",
            format!("At most {MAX_SCOPES} scopes may be requested."),
        ));
    }
    let missing = policy.missing(&client.scopes, &scopes);
    if !missing.is_empty() {
        return Err(fail(
            "invalid_scope",
            format!(
                "The client may not request these scopes: {}.",
                missing.join(" ")
            ),
        ));
    }
    let mut force_consent = false;
    if let Some(prompt) = p.get("prompt") {
        for v in prompt.split(' ') {
            match v {
                // Nothing is remembered of a user between authorizations:
                // without the login page there is no one to authorize.
                "none" => {
                    return Err(fail(
                        "login_required",
                        "prompt=none cannot be honoured: the user must sign in.".into(),
                    ));
                }
                "consent" => force_consent = true,
                _ => {}
            }
        }
    }
    Ok(AuthzRequest {
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        scopes,
        state,
        code_challenge,
        force_consent,
    })
}

/// Validates a request from its raw query: the client and redirect URI
/// first (shown), then the rest (redirected). Answers the client too.
pub async fn start(app: &App, raw_query: &str) -> Result<(Client, AuthzRequest), Refusal> {
    let p = Params::parse(raw_query.as_bytes());
    let (client_id, redirect_uri) = client_params(&p)?;
    let client = load_client(app, &client_id).await?;
    check_redirect(&client, &redirect_uri)?;
    let req = check_request(&p, &client, &redirect_uri, &app.scopes)?;
    Ok((client, req))
}

/// The client, read afresh (its settings may have changed since the flow
/// began); an unknown one is a [`Shown`] error.
pub async fn load_client(app: &App, client_id: &str) -> Result<Client, Shown> {
    match app.store.get_client(client_id).await {
        Ok(c) => Ok(c),
        Err(StoreError::NotFound) => Err(unknown_client()),
        Err(e) => {
            tracing::error!(error = %e, "authorize: cannot read the client");
            Err(Shown::internal())
        }
    }
}

/// Checks a flow against its client as it is now: the redirect URI still
/// registered (else shown), the scopes still the client's (else redirected).
pub fn recheck(app: &App, client: &Client, req: &AuthzRequest) -> Result<(), Refusal> {
    check_redirect(client, &req.redirect_uri)?;
    let missing = app.scopes.missing(&client.scopes, &req.scopes);
    if !missing.is_empty() {
        return Err(Redirected {
            redirect_uri: req.redirect_uri.clone(),
            error: "invalid_scope",
            description: format!(
                "The client may no longer request these scopes: {}.",
                missing.join(" ")
            ),
            state: req.state.clone(),
        }
        .into());
    }
    Ok(())
}

// ---- The flow token -------------------------------------------------------

/// What travels between the pages, signed. Short field names keep the
/// hidden form field small.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    #[serde(rename = "c")]
    pub client_id: String,
    #[serde(rename = "r")]
    pub redirect_uri: String,
    #[serde(rename = "s")]
    pub scopes: Vec<String>,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub code_challenge: Option<String>,
    #[serde(rename = "f", default)]
    pub force_consent: bool,
    /// The signed-in user, from the consent step on.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// SHA-256 (base64url) of the CSRF cookie of the browser the flow runs in.
    #[serde(rename = "b")]
    pub binding: String,
    /// Expiry, ms since the epoch.
    #[serde(rename = "x")]
    pub expires_at: i64,
}

impl Flow {
    pub fn new(req: &AuthzRequest, cookie: &str, now: i64) -> Flow {
        Flow {
            client_id: req.client_id.clone(),
            redirect_uri: req.redirect_uri.clone(),
            scopes: req.scopes.clone(),
            state: req.state.clone(),
            code_challenge: req.code_challenge.clone(),
            force_consent: req.force_consent,
            user_id: None,
            binding: binding(cookie),
            expires_at: now.saturating_add(FLOW_TTL_MS),
        }
    }

    pub fn request(&self) -> AuthzRequest {
        AuthzRequest {
            client_id: self.client_id.clone(),
            redirect_uri: self.redirect_uri.clone(),
            scopes: self.scopes.clone(),
            state: self.state.clone(),
            code_challenge: self.code_challenge.clone(),
            force_consent: self.force_consent,
        }
    }

    /// The same flow, signed in as `user_id`, for another [`FLOW_TTL_MS`].
    pub fn signed_in(&self, user_id: &str, now: i64) -> Flow {
        Flow {
            user_id: Some(user_id.to_owned()),
            expires_at: now.saturating_add(FLOW_TTL_MS),
            ..self.clone()
        }
    }

    /// Whether the flow belongs to the browser holding `cookie` (constant time).
    pub fn is_bound_to(&self, cookie: &str) -> bool {
        bool::from(self.binding.as_bytes().ct_eq(binding(cookie).as_bytes()))
    }
}

/// What ties a flow to a browser's CSRF cookie.
pub fn binding(cookie: &str) -> String {
    URL_SAFE_NO_PAD.encode(keyfmt::digest(cookie))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowError {
    /// Not a flow token, or not signed by this server.
    Invalid,
    Expired,
}

fn mac(key: &[u8; 32], payload: &str) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), payload.as_bytes())
}

/// `base64url(json).base64url(HMAC-SHA256(key, first part))`.
pub fn seal(key: &[u8; 32], flow: &Flow) -> String {
    let json = serde_json::to_vec(flow).unwrap_or_default();
    let payload = URL_SAFE_NO_PAD.encode(json);
    let tag = URL_SAFE_NO_PAD.encode(mac(key, &payload));
    format!("{payload}.{tag}")
}

/// The flow in `token` if this server signed it (MACs compared in
/// constant time) and it has not expired at `now`.
pub fn open(key: &[u8; 32], token: &str, now: i64) -> Result<Flow, FlowError> {
    if token.len() > MAX_FLOW_TOKEN {
        return Err(FlowError::Invalid);
    }
    let (payload, tag) = token.split_once('.').ok_or(FlowError::Invalid)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| FlowError::Invalid)?;
    let expect = mac(key, payload);
    if !bool::from(expect.as_ref().ct_eq(tag.as_slice())) {
        return Err(FlowError::Invalid);
    }
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| FlowError::Invalid)?;
    let flow: Flow = serde_json::from_slice(&json).map_err(|_| FlowError::Invalid)?;
    if now >= flow.expires_at {
        return Err(FlowError::Expired);
    }
    Ok(flow)
}

/// This server's flow-token key.
pub fn flow_key(app: &App) -> [u8; 32] {
    app.master_key.derive(FLOW_KEY_LABEL)
}

// ---- Signing in -------------------------------------------------------------

#[derive(Debug)]
pub enum Login {
    Ok(User),
    /// Wrong email or password: one answer for both.
    Wrong,
    /// Too many attempts for this account or from this address; no
    /// password was checked.
    Limited,
}

/// The rate-limit key of an account: a digest, so no email reaches the
/// limiter's backend.
fn account_key(org_id: &str, email: &str) -> String {
    let d = keyfmt::digest(&format!("{org_id}\n{email}"));
    let hex: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("oauth_login:acct:{hex}")
}

async fn spend(app: &App, key: &str, quota: Quota) -> bool {
    match app.limiter.check(key, quota, 1).await {
        Ok(o) => o.allowed,
        Err(_) => {
            metrics::counter!("latchkey_ratelimit_fallbacks_total").increment(1);
            fallback(quota, app.config.ratelimit.on_redis_failure).allowed
        }
    }
}

/// Spends one sign-in attempt for `email` (normalized; `""` when it is not
/// an address) in `scope` (an organization's id, or the console's own)
/// from `ip`, against the per-address limit (shared by every sign-in
/// page) and the per-account one. False: over a limit, do not check the
/// password.
pub async fn attempt_allowed(app: &App, scope: &str, email: &str, ip: Option<IpAddr>) -> bool {
    if let Some(ip) = ip
        && !spend(app, &format!("oauth_login:ip:{ip}"), LOGIN_PER_IP).await
    {
        return false;
    }
    spend(app, &account_key(scope, email), LOGIN_PER_ACCOUNT).await
}

/// Signs a user of `client`'s organization in with email and password,
/// after the per-address and per-account limits. An unknown email costs
/// the same password work as a wrong password.
pub async fn login(
    app: &App,
    client: &Client,
    email: &str,
    password: &str,
    ip: Option<IpAddr>,
) -> Result<Login, StoreError> {
    let email = crate::oauth::manage::normalize_email(email);
    let account = email.as_deref().unwrap_or("");
    if !attempt_allowed(app, &client.org_id, account, ip).await {
        return Ok(Login::Limited);
    }
    if password.len() > crate::oauth::password::MAX_LEN {
        return Ok(Login::Wrong);
    }
    let user = match &email {
        Some(e) => app.store.user_by_email(&client.org_id, e).await?,
        None => None,
    };
    let phc = user.as_ref().map(|u| u.password_hash.clone());
    let ok = crate::oauth::password::verify(password.to_owned(), phc).await;
    Ok(match user {
        Some(u) if ok => Login::Ok(u),
        _ => Login::Wrong,
    })
}

// ---- Consent and codes ------------------------------------------------------

/// Whether an earlier consent covers every requested scope (exactly).
pub fn consent_covers(consent: Option<&Consent>, requested: &[String]) -> bool {
    consent.is_some_and(|c| requested.iter().all(|r| c.scopes.contains(r)))
}

/// Records consent to `scopes`, added to what the user consented to before.
pub async fn remember_consent(
    app: &App,
    user_id: &str,
    client_id: &str,
    scopes: &[String],
) -> Result<(), StoreError> {
    let now = app.now_ms();
    let old = app.store.get_consent(user_id, client_id).await?;
    let (mut all, created_at) = match old {
        Some(c) => (c.scopes, c.created_at),
        None => (Vec::new(), now),
    };
    for s in scopes {
        if !all.contains(s) {
            all.push(s.clone());
        }
    }
    app.store
        .upsert_consent(&Consent {
            user_id: user_id.to_owned(),
            client_id: client_id.to_owned(),
            scopes: all,
            created_at,
            updated_at: now,
        })
        .await
}

/// Issues a code for `user_id` and answers where the browser goes: the
/// redirect URI with `code`, `state` and `iss`. The code is stored only as
/// its SHA-256 digest, and never logged.
pub async fn issue_code(
    app: &App,
    client: &Client,
    req: &AuthzRequest,
    user_id: &str,
) -> Result<String, StoreError> {
    let code = keyfmt::generate(CODE_PREFIX);
    let now = app.now_ms();
    let ttl = i64::try_from(app.config.oauth.code_ttl.0.as_millis()).unwrap_or(i64::MAX);
    app.store
        .create_code(&AuthCode {
            digest: keyfmt::digest(&code).to_vec(),
            client_id: client.id.clone(),
            org_id: client.org_id.clone(),
            user_id: user_id.to_owned(),
            redirect_uri: req.redirect_uri.clone(),
            scopes: req.scopes.clone(),
            code_challenge: req.code_challenge.clone(),
            created_at: now,
            expires_at: now.saturating_add(ttl),
            used_at: None,
            grant_id: None,
        })
        .await?;
    tracing::info!(client_id = %client.id, user_id = %user_id, "authorization code issued");
    let mut pairs = vec![("code", code.as_str())];
    if let Some(s) = &req.state {
        pairs.push(("state", s));
    }
    let issuer = app.config.public_url();
    pairs.push(("iss", issuer));
    Ok(with_query(&req.redirect_uri, &pairs))
}

/// Where the browser goes when the user denies.
pub fn denied(req: &AuthzRequest) -> Redirected {
    Redirected {
        redirect_uri: req.redirect_uri.clone(),
        error: "access_denied",
        description: "The user denied the request.".into(),
        state: req.state.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn client() -> Client {
        Client {
            id: "cli_AAAAAAAAAAAAAAAAAAAAAA".into(),
            org_id: "org_AAAAAAAAAAAAAAAAAAAAAA".into(),
            name: "Docs app".into(),
            public: true,
            secret_digest: None,
            secret_sealed: None,
            redirect_uris: vec![
                "https://app.example/cb".into(),
                "https://app.example/cb2?x=1".into(),
            ],
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            scopes: vec!["documents.read".into(), "files.*".into()],
            token_endpoint_auth_method: "none".into(),
            jwks: None,
            jwt_auth_alg: None,
            require_pkce: true,
            created_at: 0,
            updated_at: 0,
            secret_rotated_at: None,
        }
    }

    fn params(q: &str) -> Params {
        Params::parse(q.as_bytes())
    }

    fn good(extra: &str) -> String {
        format!(
            "response_type=code&client_id=cli_AAAAAAAAAAAAAAAAAAAAAA&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&code_challenge={CHALLENGE}&code_challenge_method=S256{extra}"
        )
    }

    fn check(q: &str) -> Result<AuthzRequest, Redirected> {
        check_with(q, &client())
    }

    fn check_with(q: &str, c: &Client) -> Result<AuthzRequest, Redirected> {
        let p = params(q);
        let (_, ru) = client_params(&p).unwrap();
        check_redirect(c, &ru).unwrap();
        check_request(&p, c, &ru, &ScopePolicy::default())
    }

    fn error_of(q: &str) -> &'static str {
        check(q).unwrap_err().error
    }

    #[test]
    fn a_good_request_defaults_to_the_clients_scopes() {
        let r = check(&good("&state=xyz")).unwrap();
        assert_eq!(r.scopes, ["documents.read", "files.*"]);
        assert_eq!(r.state.as_deref(), Some("xyz"));
        assert_eq!(r.code_challenge.as_deref(), Some(CHALLENGE));
        assert!(!r.force_consent);
        let r = check(&good(
            "&scope=files.upload+documents.read+files.upload&prompt=consent",
        ))
        .unwrap();
        assert_eq!(
            r.scopes,
            ["files.upload", "documents.read"],
            "wildcard, deduplicated"
        );
        assert!(r.force_consent);
    }

    #[test]
    fn client_and_redirect_errors_are_shown() {
        let ok = good("");
        for q in [
            ok.replace("client_id=cli_AAAAAAAAAAAAAAAAAAAAAA&", ""),
            ok.replace("client_id=cli_AAAAAAAAAAAAAAAAAAAAAA", "client_id=nope"),
            format!("{ok}&client_id=cli_BBBBBBBBBBBBBBBBBBBBBB"),
            ok.replace("&redirect_uri=https%3A%2F%2Fapp.example%2Fcb", ""),
            format!("{ok}&redirect_uri=https%3A%2F%2Fapp.example%2Fcb"),
        ] {
            assert!(client_params(&params(&q)).is_err(), "{q}");
        }
        let c = client();
        for uri in [
            "https://app.example/cb/",
            "https://app.example/cb?x=1",
            "https://app.example/cb#f",
            "https://APP.example/cb",
            "https://evil@app.example/cb",
            "https://app.example:444/cb",
            "https://app.example/cb2",
            "https://evil.example/cb",
        ] {
            assert_eq!(check_redirect(&c, uri).unwrap_err().status, 400, "{uri}");
        }
        check_redirect(&c, "https://app.example/cb2?x=1").unwrap();
        let mut cc = client();
        cc.grant_types = vec!["client_credentials".into()];
        assert!(check_redirect(&cc, "https://app.example/cb").is_err());
    }

    #[test]
    fn other_errors_are_redirected_with_the_state() {
        let e = check(&good("&state=s1&scope=admin")).unwrap_err();
        assert_eq!(e.error, "invalid_scope");
        assert_eq!(e.state.as_deref(), Some("s1"));
        assert_eq!(e.redirect_uri, "https://app.example/cb");
        assert_eq!(
            error_of(&good("").replace("response_type=code", "response_type=token")),
            "unsupported_response_type"
        );
        assert_eq!(
            error_of(&good("").replace("response_type=code&", "")),
            "invalid_request"
        );
        assert_eq!(
            error_of(&good("").replace("S256", "plain")),
            "invalid_request"
        );
        assert_eq!(
            error_of(&good("").replace("&code_challenge_method=S256", "")),
            "invalid_request"
        );
        let no_pkce = good("").replace(&format!("&code_challenge={CHALLENGE}"), "");
        let no_pkce = no_pkce.replace("&code_challenge_method=S256", "");
        assert_eq!(error_of(&no_pkce), "invalid_request");
        let mut relaxed = client();
        relaxed.require_pkce = false;
        assert_eq!(check_with(&no_pkce, &relaxed).unwrap().code_challenge, None);
        assert_eq!(
            check_with(&good("").replace("S256", "plain"), &relaxed)
                .unwrap_err()
                .error,
            "invalid_request",
            "plain is refused even when PKCE is optional"
        );
        for bad in ["short", &"a".repeat(129), &format!("{}+", &CHALLENGE[1..])] {
            assert_eq!(
                error_of(&good("").replace(CHALLENGE, bad)),
                "invalid_request",
                "{bad}"
            );
        }
        check(&good("").replace(CHALLENGE, &"a".repeat(128))).unwrap();
        assert_eq!(error_of(&good("&scope=a&scope=b")), "invalid_request");
        let e = check(&good("&state=s&state=t")).unwrap_err();
        assert_eq!((e.error, e.state), ("invalid_request", None));
        assert_eq!(error_of(&good("&scope=a%20%20b")), "invalid_scope");
        assert_eq!(error_of(&good("&scope=files")), "invalid_scope");
        assert_eq!(error_of(&good("&prompt=none")), "login_required");
        let mut empty = client();
        empty.scopes.clear();
        assert_eq!(
            check_with(&good(""), &empty).unwrap_err().error,
            "invalid_scope"
        );
        let long = format!("&state={}", "s".repeat(MAX_STATE + 1));
        let e = check(&good(&long)).unwrap_err();
        assert_eq!((e.error, e.state), ("invalid_request", None));
    }

    #[test]
    fn empty_parameters_count_as_absent() {
        let r = check(&good("&state=&scope=")).unwrap();
        assert_eq!(r.state, None);
        assert_eq!(r.scopes.len(), 2);
    }

    #[test]
    fn error_descriptions_are_plain_ascii() {
        let cases = [
            good("&scope=admin"),
            good("&scope=a&scope=b"),
            good("").replace("S256", "plain"),
            good("").replace("S256", "S512"),
            good("").replace("&code_challenge_method=S256", ""),
            good("").replace(CHALLENGE, "x"),
            good("").replace("response_type=code", "response_type=token"),
            good("&prompt=none"),
            good("&scope=a%20%20b"),
        ];
        for q in cases {
            let d = check(&q).unwrap_err().description;
            assert!(
                d.bytes().all(|b| b == 0x20
                    || b == 0x21
                    || (0x23..=0x5B).contains(&b)
                    || (0x5D..=0x7E).contains(&b)),
                "{d}"
            );
        }
    }

    #[test]
    fn query_is_appended_with_the_right_separator() {
        let p = [
            ("code", "lk_ac_1"),
            ("state", "a b&c"),
            ("iss", "https://lk.example"),
        ];
        assert_eq!(
            with_query("https://a.example/cb", &p),
            "https://a.example/cb?code=lk_ac_1&state=a+b%26c&iss=https%3A%2F%2Flk.example"
        );
        assert!(
            with_query("https://a.example/cb?x=1", &p)
                .starts_with("https://a.example/cb?x=1&code=")
        );
        assert!(with_query("https://a.example/cb?", &p).starts_with("https://a.example/cb?code="));
        let r = Redirected {
            redirect_uri: "https://a.example/cb".into(),
            error: "access_denied",
            description: "The user denied the request.".into(),
            state: Some("s".into()),
        };
        assert_eq!(
            r.location("https://lk.example"),
            "https://a.example/cb?error=access_denied&error_description=The+user+denied+the+request.&state=s&iss=https%3A%2F%2Flk.example"
        );
    }

    fn flow(now: i64) -> Flow {
        let req = check(&good("&state=st")).unwrap();
        Flow::new(&req, "cookie-value", now)
    }

    #[test]
    fn flow_token_round_trips_and_expires() {
        let key = [3u8; 32];
        let f = flow(1_000);
        let t = seal(&key, &f);
        assert_eq!(open(&key, &t, 1_000).unwrap(), f);
        assert_eq!(open(&key, &t, 1_000 + FLOW_TTL_MS - 1).unwrap(), f);
        assert_eq!(open(&key, &t, 1_000 + FLOW_TTL_MS), Err(FlowError::Expired));
        assert_eq!(
            open(&[4u8; 32], &t, 1_000),
            Err(FlowError::Invalid),
            "other key"
        );
        assert!(f.is_bound_to("cookie-value"));
        assert!(!f.is_bound_to("cookie-valuf"));
        assert_eq!(f.request().state.as_deref(), Some("st"));
    }

    #[test]
    fn tampered_flow_tokens_are_refused() {
        let key = [3u8; 32];
        let t = seal(&key, &flow(0));
        let (payload, tag) = t.split_once('.').unwrap();
        for bad in [
            String::new(),
            "x".into(),
            payload.to_owned(),
            format!("{payload}."),
            format!("{payload}.{tag}x"),
            format!("{payload}x.{tag}"),
            format!(".{tag}"),
            format!("{}.{tag}", &payload[1..]),
            "a".repeat(MAX_FLOW_TOKEN + 1),
        ] {
            assert_eq!(open(&key, &bad, 0), Err(FlowError::Invalid), "{bad}");
        }
        // A payload changed and signed by someone else: a later expiry.
        let mut late = flow(0);
        late.expires_at = i64::MAX;
        let (late_payload, _) = seal(&[9u8; 32], &late)
            .split_once('.')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .unwrap();
        assert_eq!(
            open(&key, &format!("{late_payload}.{tag}"), 0),
            Err(FlowError::Invalid)
        );
    }

    #[test]
    fn a_signed_in_flow_cannot_be_moved_to_another_user() {
        let key = [3u8; 32];
        let alice = flow(0).signed_in("usr_alice", 5);
        assert_eq!(alice.expires_at, 5 + FLOW_TTL_MS);
        let t = seal(&key, &alice);
        assert_eq!(
            open(&key, &t, 10).unwrap().user_id.as_deref(),
            Some("usr_alice")
        );
        // Swap the user in the payload, keep the tag.
        let (payload, tag) = t.split_once('.').unwrap();
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let forged = URL_SAFE_NO_PAD.encode(json.replace("usr_alice", "usr_bob"));
        assert_eq!(
            open(&key, &format!("{forged}.{tag}"), 10),
            Err(FlowError::Invalid)
        );
        // And another browser (another cookie) cannot use Alice's flow.
        assert!(!alice.is_bound_to("another-browser"));
    }

    #[test]
    fn consent_must_cover_every_scope_exactly() {
        let c = Consent {
            user_id: "u".into(),
            client_id: "c".into(),
            scopes: vec!["a".into(), "b".into()],
            created_at: 0,
            updated_at: 0,
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(consent_covers(Some(&c), &s(&["a"])));
        assert!(consent_covers(Some(&c), &s(&["b", "a"])));
        assert!(!consent_covers(Some(&c), &s(&["a", "c"])));
        assert!(!consent_covers(None, &s(&["a"])));
    }

    #[test]
    fn account_keys_hide_the_email() {
        let k = account_key("org_1", "alice@example.com");
        assert!(k.starts_with("oauth_login:acct:"));
        assert!(!k.contains("alice"));
        assert_ne!(k, account_key("org_2", "alice@example.com"));
    }
}
