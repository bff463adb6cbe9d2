//! Managing OAuth clients and organization users (SPEC §9), for the HTTP
//! API and the CLI alike.

use latchkey_core::ids::new_id;
use latchkey_core::keyfmt;
use latchkey_store::Page;
use latchkey_store::oauth::{Client, ClientPatch, Consent, User};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::App;
use crate::config::CLIENT_SECRET_PREFIX;
use crate::error::{ApiError, FieldError};
use crate::service::{Actor, check_name, check_scopes, dedup, done};

pub const GRANT_TYPES: &[&str] = &["authorization_code", "refresh_token", "client_credentials"];
pub const AUTH_METHODS: &[&str] = &[
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "none",
];
pub const JWT_ALGS: &[&str] = &["HS256", "ES256", "EdDSA", "RS256"];
pub const ROLES: &[&str] = &["admin", "member"];

const MAX_REDIRECT_URIS: usize = 20;
const MAX_URI_LEN: usize = 2000;
const MAX_JWKS: usize = 10;
const MAX_EMAIL: usize = 254;

/// `jwt_auth` on a client: client-signed JWTs (SPEC §7).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JwtAuth {
    /// `HS256` (with the client secret), `ES256`, `EdDSA` or `RS256`
    /// (with a key of `jwks`).
    pub alg: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    pub name: String,
    /// Exact redirect URIs: `https://`, `http://` only for loopback hosts,
    /// or a private-use scheme (`com.example.app:/cb`) for native apps.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Default: `authorization_code` and `refresh_token` when there are
    /// redirect URIs or the client is public, else `client_credentials`.
    pub grant_types: Option<Vec<String>>,
    /// The scopes the client may be granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// A public client (a browser or native app) has no secret.
    #[serde(default)]
    pub public: bool,
    /// Default: `none` for public clients, else `client_secret_basic`.
    pub token_endpoint_auth_method: Option<String>,
    /// RFC 7591 `{"keys": [JWK, ...]}`: public keys for `private_key_jwt`
    /// and client-signed JWTs, each with a `kid`.
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
    pub jwt_auth: Option<JwtAuth>,
    /// Default true; false only for a confidential client.
    pub require_pkce: Option<bool>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchClient {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub token_endpoint_auth_method: Option<String>,
    /// `null` removes the keys.
    #[serde(default, deserialize_with = "crate::views::nullable")]
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<Option<serde_json::Value>>,
    /// `null` turns client-signed JWTs off.
    #[serde(default, deserialize_with = "crate::views::nullable")]
    pub jwt_auth: Option<Option<JwtAuth>>,
    pub require_pkce: Option<bool>,
}

/// A client as the API shows it (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientView {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub public: bool,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    pub token_endpoint_auth_method: String,
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
    pub jwt_auth: Option<JwtAuth>,
    pub require_pkce: bool,
    pub created_at: String,
    pub updated_at: String,
    pub secret_rotated_at: Option<String>,
}

impl From<&Client> for ClientView {
    fn from(c: &Client) -> Self {
        use crate::views::rfc3339;
        Self {
            id: c.id.clone(),
            org_id: c.org_id.clone(),
            name: c.name.clone(),
            public: c.public,
            redirect_uris: c.redirect_uris.clone(),
            grant_types: c.grant_types.clone(),
            scopes: c.scopes.clone(),
            token_endpoint_auth_method: c.token_endpoint_auth_method.clone(),
            jwks: c.jwks.clone(),
            jwt_auth: c.jwt_auth_alg.clone().map(|alg| JwtAuth { alg }),
            require_pkce: c.require_pkce,
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
            secret_rotated_at: c.secret_rotated_at.map(rfc3339),
        }
    }
}

/// A client with its secret: only in the answers that create one.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewClientView {
    /// The OAuth `client_id` (the same as `id`).
    pub client_id: String,
    /// Shown this once; absent for public clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(flatten)]
    pub client: ClientView,
}

/// Whether `uri` may be registered as a redirect URI (RFC 6749 §3.1.2,
/// RFC 8252 §7, RFC 9700 §4.1): absolute, no fragment, no wildcard,
/// `https`, `http` only on a loopback host, or a private-use scheme with
/// a dot (reverse domain name).
pub fn check_redirect_uri(uri: &str) -> Result<(), &'static str> {
    if uri.len() > MAX_URI_LEN {
        return Err("is too long (2,000 characters at most)");
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters");
    }
    if uri.contains('#') {
        return Err("must not contain a fragment (RFC 6749 §3.1.2)");
    }
    if uri.contains('*') {
        return Err("must not contain a wildcard: redirect URIs match exactly");
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err("must be an absolute URI");
    };
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err("must be an absolute URI");
    }
    match scheme {
        "https" | "http" => {
            let Some(after) = rest.strip_prefix("//") else {
                return Err("must be an absolute URI");
            };
            let authority = after.split(['/', '?']).next().unwrap_or("");
            if authority.contains('@') {
                return Err("must not contain user information");
            }
            let host = host_of(authority);
            if host.is_empty() {
                return Err("must name a host");
            }
            let loopback =
                host == "127.0.0.1" || host == "[::1]" || host.eq_ignore_ascii_case("localhost");
            if scheme == "http" && !loopback {
                return Err("must use https (http only for 127.0.0.1, [::1] or localhost)");
            }
            Ok(())
        }
        s if s.contains('.') => Ok(()),
        "javascript" | "data" | "file" | "vbscript" => Err("uses a scheme that is not allowed"),
        _ => Err(
            "must use https, http on a loopback host, or a private-use scheme in reverse domain order (com.example.app:/callback)",
        ),
    }
}

/// The host of an authority (`host[:port]`, `[v6][:port]`), lower-cased
/// comparison left to the caller.
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(i) => authority.get(..=i).unwrap_or(""),
            None => "",
        };
    }
    authority.split(':').next().unwrap_or("")
}

/// Private JWK members: a registered key must be public.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn check_jwks(jwks: &serde_json::Value, errors: &mut Vec<FieldError>) {
    let mut bad = |field: String, message: &str| {
        errors.push(FieldError {
            field,
            message: message.to_owned(),
        })
    };
    let Some(keys) = jwks.get("keys").and_then(|k| k.as_array()) else {
        return bad("jwks".into(), "Must be an object {\"keys\": [JWK, ...]}.");
    };
    if jwks.as_object().is_some_and(|o| o.len() != 1) {
        return bad("jwks".into(), "Must have only the member `keys`.");
    }
    if keys.is_empty() || keys.len() > MAX_JWKS {
        return bad("jwks.keys".into(), "Must hold 1 to 10 keys.");
    }
    let mut kids = std::collections::HashSet::new();
    for (i, k) in keys.iter().enumerate() {
        let at = format!("jwks.keys[{i}]");
        let Some(obj) = k.as_object() else {
            bad(at, "Must be a JWK object.");
            continue;
        };
        if PRIVATE_MEMBERS.iter().any(|m| obj.contains_key(*m)) {
            bad(
                at,
                "Holds private or symmetric key material: register public keys only.",
            );
            continue;
        }
        match obj.get("kid").and_then(|v| v.as_str()) {
            Some(kid) if !kid.is_empty() && kid.len() <= 200 => {
                if !kids.insert(kid.to_owned()) {
                    bad(format!("{at}.kid"), "Each key needs its own `kid`.");
                }
            }
            _ => bad(
                format!("{at}.kid"),
                "Each key needs a `kid` (1 to 200 characters).",
            ),
        }
        if crate::jose::decoding_key(k).is_none() {
            bad(
                at,
                "Is not a usable public key (RSA, EC P-256 or Ed25519 JWK).",
            );
        }
    }
}

/// The JWK kinds an alg can verify with.
fn key_fits(alg: &str, jwk: &serde_json::Value) -> bool {
    let kty = jwk.get("kty").and_then(|v| v.as_str());
    let crv = jwk.get("crv").and_then(|v| v.as_str());
    match alg {
        "RS256" => kty == Some("RSA"),
        "ES256" => kty == Some("EC") && crv == Some("P-256"),
        "EdDSA" => kty == Some("OKP") && crv == Some("Ed25519"),
        _ => false,
    }
}

/// The settings of a client, whole, checked together.
struct Settings {
    public: bool,
    redirect_uris: Vec<String>,
    grant_types: Vec<String>,
    scopes: Vec<String>,
    method: String,
    jwks: Option<serde_json::Value>,
    jwt_alg: Option<String>,
    require_pkce: bool,
}

fn check_settings(app: &App, s: &Settings, errors: &mut Vec<FieldError>) {
    let mut bad = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.to_owned(),
            message,
        })
    };
    if s.redirect_uris.len() > MAX_REDIRECT_URIS {
        bad(
            "redirect_uris",
            format!("At most {MAX_REDIRECT_URIS} redirect URIs."),
        );
    }
    for (i, uri) in s.redirect_uris.iter().enumerate() {
        if let Err(m) = check_redirect_uri(uri) {
            bad(&format!("redirect_uris[{i}]"), format!("The URI {m}."));
        }
    }
    if s.grant_types.is_empty() {
        bad("grant_types", "Allow at least one grant type.".into());
    }
    for (i, g) in s.grant_types.iter().enumerate() {
        if !GRANT_TYPES.contains(&g.as_str()) {
            bad(
                &format!("grant_types[{i}]"),
                format!("`{g}` is not one of {}.", GRANT_TYPES.join(", ")),
            );
        }
    }
    let has = |g: &str| s.grant_types.iter().any(|x| x == g);
    if has("authorization_code") && s.redirect_uris.is_empty() {
        bad(
            "redirect_uris",
            "The authorization_code grant needs at least one redirect URI.".into(),
        );
    }
    if has("refresh_token") && !has("authorization_code") {
        bad(
            "grant_types",
            "refresh_token comes with authorization_code.".into(),
        );
    }
    if s.public && has("client_credentials") {
        bad(
            "grant_types",
            "A public client cannot use client_credentials: it has no credentials.".into(),
        );
    }
    let mut scope_errors = Vec::new();
    check_scopes(&app.scopes, &s.scopes, false, &mut scope_errors);
    errors.extend(scope_errors);
    let mut bad = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.to_owned(),
            message,
        })
    };
    if !AUTH_METHODS.contains(&s.method.as_str()) {
        bad(
            "token_endpoint_auth_method",
            format!("Must be one of {}.", AUTH_METHODS.join(", ")),
        );
    } else if s.public != (s.method == "none") {
        bad(
            "token_endpoint_auth_method",
            if s.public {
                "A public client authenticates with `none`.".into()
            } else {
                "A confidential client cannot use `none`.".into()
            },
        );
    } else if s.method == "private_key_jwt" && s.jwks.is_none() {
        bad(
            "jwks",
            "private_key_jwt needs the client's public keys in `jwks`.".into(),
        );
    }
    if s.public && !s.require_pkce {
        bad(
            "require_pkce",
            "A public client must use PKCE (RFC 9700 §2.1.1).".into(),
        );
    }
    if let Some(jwks) = &s.jwks {
        let mut e = Vec::new();
        check_jwks(jwks, &mut e);
        errors.extend(e);
    }
    if let Some(alg) = &s.jwt_alg {
        let field = "jwt_auth.alg";
        if !JWT_ALGS.contains(&alg.as_str()) {
            errors.push(FieldError {
                field: field.into(),
                message: format!("Must be one of {}.", JWT_ALGS.join(", ")),
            });
        } else if alg == "HS256" && s.public {
            errors.push(FieldError {
                field: field.into(),
                message: "HS256 signs with the client secret: a public client has none.".into(),
            });
        } else if alg != "HS256" {
            let fits = s
                .jwks
                .as_ref()
                .and_then(|j| j.get("keys"))
                .and_then(|k| k.as_array())
                .is_some_and(|keys| keys.iter().any(|k| key_fits(alg, k)));
            if !fits {
                errors.push(FieldError {
                    field: field.into(),
                    message: format!("{alg} needs a matching public key in `jwks`."),
                });
            }
        }
    }
}

/// A new client secret: its text, digest and sealed copy (kept so that
/// HS256 client-signed JWTs can be verified with it; see docs/decisions.md).
fn mint_secret(app: &App, client_id: &str) -> Result<(String, Vec<u8>, Vec<u8>), ApiError> {
    let secret = keyfmt::generate(CLIENT_SECRET_PREFIX);
    let digest = keyfmt::digest(&secret).to_vec();
    let sealed = app
        .master_key
        .encrypt(secret.as_bytes(), secret_context(client_id).as_bytes())
        .map_err(|e| {
            tracing::error!(error = %e, "sealing a client secret failed");
            ApiError::internal()
        })?;
    Ok((secret, digest, sealed))
}

/// Associated data of a sealed client secret: it opens for this client only.
pub fn secret_context(client_id: &str) -> String {
    format!("latchkey client secret {client_id}")
}

pub async fn create_client(
    app: &App,
    actor: &Actor,
    org_id: &str,
    req: CreateClient,
) -> Result<(Client, Option<String>), ApiError> {
    app.store
        .get_org(org_id)
        .await
        .map_err(|e| ApiError::from_store(e, "organization"))?;
    let mut errors = Vec::new();
    check_name("name", &req.name, &mut errors);
    let grant_types = req.grant_types.unwrap_or_else(|| {
        // A public client has no credentials: only the code flow fits it.
        if req.redirect_uris.is_empty() && !req.public {
            vec!["client_credentials".into()]
        } else {
            vec!["authorization_code".into(), "refresh_token".into()]
        }
    });
    let method = req.token_endpoint_auth_method.unwrap_or_else(|| {
        if req.public {
            "none".into()
        } else {
            "client_secret_basic".into()
        }
    });
    let mut settings = Settings {
        public: req.public,
        redirect_uris: req.redirect_uris,
        grant_types,
        scopes: req.scopes,
        method,
        jwks: req.jwks,
        jwt_alg: req.jwt_auth.map(|j| j.alg),
        require_pkce: req.require_pkce.unwrap_or(true),
    };
    // Checked as sent, so that `errors[].field` indexes the request's
    // lists; repeats go after.
    check_settings(app, &settings, &mut errors);
    done(errors)?;
    settings.grant_types = dedup(settings.grant_types);
    settings.scopes = dedup(settings.scopes);
    let id = new_id("cli_");
    let now = app.now_ms();
    let (secret, digest, sealed) = if settings.public {
        (None, None, None)
    } else {
        let (s, d, sealed) = mint_secret(app, &id)?;
        (Some(s), Some(d), Some(sealed))
    };
    let client = Client {
        id,
        org_id: org_id.to_owned(),
        name: req.name.trim().to_owned(),
        public: settings.public,
        secret_digest: digest,
        secret_sealed: sealed,
        redirect_uris: settings.redirect_uris,
        grant_types: settings.grant_types,
        scopes: settings.scopes,
        token_endpoint_auth_method: settings.method,
        jwks: settings.jwks,
        jwt_auth_alg: settings.jwt_alg,
        require_pkce: settings.require_pkce,
        created_at: now,
        updated_at: now,
        secret_rotated_at: None,
    };
    app.store.create_client(&client).await?;
    actor.did(app, Some(org_id), "client.created", &client.id);
    Ok((client, secret))
}

pub async fn get_client(app: &App, id: &str) -> Result<Client, ApiError> {
    app.store
        .get_client(id)
        .await
        .map_err(|e| ApiError::from_store(e, "client"))
}

pub async fn list_clients(
    app: &App,
    org_id: &str,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<(Vec<Client>, Option<String>), ApiError> {
    app.store
        .get_org(org_id)
        .await
        .map_err(|e| ApiError::from_store(e, "organization"))?;
    let (page, limit) = crate::service::page(limit, cursor)?;
    let mut rows = app.store.list_clients(org_id, &page).await?;
    let next = crate::service::next_cursor(&mut rows, limit, |c| (c.created_at, c.id.as_str()));
    Ok((rows, next))
}

pub async fn patch_client(
    app: &App,
    actor: &Actor,
    id: &str,
    req: PatchClient,
) -> Result<Client, ApiError> {
    let old = get_client(app, id).await?;
    let mut errors = Vec::new();
    if let Some(n) = &req.name {
        check_name("name", n, &mut errors);
    }
    let mut settings = Settings {
        public: old.public,
        redirect_uris: req
            .redirect_uris
            .clone()
            .unwrap_or_else(|| old.redirect_uris.clone()),
        grant_types: req
            .grant_types
            .clone()
            .unwrap_or_else(|| old.grant_types.clone()),
        scopes: req.scopes.clone().unwrap_or_else(|| old.scopes.clone()),
        method: req
            .token_endpoint_auth_method
            .clone()
            .unwrap_or_else(|| old.token_endpoint_auth_method.clone()),
        jwks: match &req.jwks {
            Some(j) => j.clone(),
            None => old.jwks.clone(),
        },
        jwt_alg: match &req.jwt_auth {
            Some(j) => j.as_ref().map(|j| j.alg.clone()),
            None => old.jwt_auth_alg.clone(),
        },
        require_pkce: req.require_pkce.unwrap_or(old.require_pkce),
    };
    check_settings(app, &settings, &mut errors);
    done(errors)?;
    settings.grant_types = dedup(settings.grant_types);
    settings.scopes = dedup(settings.scopes);
    let patch = ClientPatch {
        name: req.name.map(|n| n.trim().to_owned()),
        redirect_uris: req.redirect_uris.map(|_| settings.redirect_uris),
        grant_types: req.grant_types.map(|_| settings.grant_types),
        scopes: req.scopes.map(|_| settings.scopes),
        token_endpoint_auth_method: req.token_endpoint_auth_method.map(|_| settings.method),
        jwks: req.jwks.map(|_| settings.jwks),
        jwt_auth_alg: req.jwt_auth.map(|_| settings.jwt_alg),
        require_pkce: req.require_pkce,
        updated_at: app.now_ms(),
    };
    let client = app
        .store
        .update_client(id, &patch)
        .await
        .map_err(|e| ApiError::from_store(e, "client"))?;
    app.forget_client(id);
    actor.did(app, Some(&client.org_id), "client.updated", id);
    Ok(client)
}

pub async fn rotate_client_secret(
    app: &App,
    actor: &Actor,
    id: &str,
) -> Result<(Client, String), ApiError> {
    let old = get_client(app, id).await?;
    if old.public {
        return Err(ApiError::new(
            latchkey_core::Code::Conflict,
            "A public client has no secret to rotate.",
        ));
    }
    let (secret, digest, sealed) = mint_secret(app, id)?;
    let client = app
        .store
        .set_client_secret(id, Some(&digest), Some(&sealed), app.now_ms())
        .await
        .map_err(|e| ApiError::from_store(e, "client"))?;
    app.forget_client(id);
    actor.did(app, Some(&client.org_id), "client.secret_rotated", id);
    Ok((client, secret))
}

pub async fn delete_client(app: &App, actor: &Actor, id: &str) -> Result<(), ApiError> {
    let old = get_client(app, id).await?;
    app.store
        .delete_client(id)
        .await
        .map_err(|e| ApiError::from_store(e, "client"))?;
    app.forget_client(id);
    actor.did(app, Some(&old.org_id), "client.deleted", id);
    Ok(())
}

/// A user's remembered consent to a client.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentView {
    pub user_id: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Consent> for ConsentView {
    fn from(c: &Consent) -> Self {
        use crate::views::rfc3339;
        Self {
            user_id: c.user_id.clone(),
            client_id: c.client_id.clone(),
            scopes: c.scopes.clone(),
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
        }
    }
}

pub async fn list_consents(app: &App, client_id: &str) -> Result<Vec<Consent>, ApiError> {
    get_client(app, client_id).await?;
    Ok(app.store.list_consents(client_id).await?)
}

/// Forgets a user's consent to a client and revokes what it granted.
pub async fn revoke_consent(
    app: &App,
    actor: &Actor,
    client_id: &str,
    user_id: &str,
) -> Result<(), ApiError> {
    let client = get_client(app, client_id).await?;
    app.store
        .delete_consent(user_id, client_id)
        .await
        .map_err(|e| ApiError::from_store(e, "consent"))?;
    app.store
        .revoke_user_grants(user_id, client_id, app.now_ms())
        .await?;
    // At once on this node, not when the change feed comes round.
    app.forget_grants();
    actor.did(
        app,
        Some(&client.org_id),
        "consent.revoked",
        &format!("{client_id}/{user_id}"),
    );
    Ok(())
}

// ---------------------------------------------------------------- users

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    /// 8 to 1,024 characters; stored as an argon2id hash.
    pub password: String,
    /// `admin` or `member` (default).
    pub role: Option<String>,
}

impl std::fmt::Debug for CreateUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUser")
            .field("email", &self.email)
            .field("password", &"[REDACTED]")
            .field("role", &self.role)
            .finish()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub org_id: String,
    pub email: String,
    pub role: String,
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.clone(),
            org_id: u.org_id.clone(),
            email: u.email.clone(),
            role: u.role.clone(),
            created_at: crate::views::rfc3339(u.created_at),
        }
    }
}

/// An email address as stored: trimmed and lower-cased, if it is one.
pub fn normalize_email(email: &str) -> Option<String> {
    let e = email.trim();
    let (local, domain) = e.rsplit_once('@')?;
    let ok = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && e.len() <= MAX_EMAIL
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then(|| e.to_lowercase())
}

pub async fn create_user(
    app: &App,
    actor: &Actor,
    org_id: &str,
    req: CreateUser,
) -> Result<User, ApiError> {
    app.store
        .get_org(org_id)
        .await
        .map_err(|e| ApiError::from_store(e, "organization"))?;
    let mut errors = Vec::new();
    let email = normalize_email(&req.email);
    if email.is_none() {
        errors.push(FieldError {
            field: "email".into(),
            message: "Must be an email address.".into(),
        });
    }
    let len = req.password.chars().count();
    if !(super::password::MIN_LEN..=super::password::MAX_LEN).contains(&len) {
        errors.push(FieldError {
            field: "password".into(),
            message: format!(
                "Must be {} to {} characters.",
                super::password::MIN_LEN,
                super::password::MAX_LEN
            ),
        });
    }
    let role = req.role.unwrap_or_else(|| "member".into());
    if !ROLES.contains(&role.as_str()) {
        errors.push(FieldError {
            field: "role".into(),
            message: "Must be `admin` or `member`.".into(),
        });
    }
    done(errors)?;
    let email = email.unwrap_or_default();
    if app.store.user_by_email(org_id, &email).await?.is_some() {
        return Err(ApiError::new(
            latchkey_core::Code::Conflict,
            "This organization already has a user with this email.",
        ));
    }
    let Some(password_hash) = super::password::hash(req.password).await else {
        tracing::error!("hashing a password failed");
        return Err(ApiError::internal());
    };
    let user = User {
        id: new_id("usr_"),
        org_id: org_id.to_owned(),
        email,
        password_hash,
        role,
        created_at: app.now_ms(),
    };
    app.store.create_user(&user).await.map_err(|e| match e {
        latchkey_store::StoreError::Conflict(_) => ApiError::new(
            latchkey_core::Code::Conflict,
            "This organization already has a user with this email.",
        ),
        e => e.into(),
    })?;
    actor.did(app, Some(org_id), "user.created", &user.id);
    Ok(user)
}

pub async fn get_user(app: &App, id: &str) -> Result<User, ApiError> {
    app.store
        .get_user(id)
        .await
        .map_err(|e| ApiError::from_store(e, "user"))
}

pub async fn list_users(
    app: &App,
    org_id: &str,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<(Vec<User>, Option<String>), ApiError> {
    app.store
        .get_org(org_id)
        .await
        .map_err(|e| ApiError::from_store(e, "organization"))?;
    let (page, limit): (Page, u32) = crate::service::page(limit, cursor)?;
    let mut rows = app.store.list_users(org_id, &page).await?;
    let next = crate::service::next_cursor(&mut rows, limit, |u| (u.created_at, u.id.as_str()));
    Ok((rows, next))
}

pub async fn delete_user(app: &App, actor: &Actor, id: &str) -> Result<(), ApiError> {
    let user = get_user(app, id).await?;
    app.store
        .delete_user(id)
        .await
        .map_err(|e| ApiError::from_store(e, "user"))?;
    // Their grants end with them, at once on this node.
    app.forget_grants();
    actor.did(app, Some(&user.org_id), "user.deleted", id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris() {
        for ok in [
            "https://app.example.com/callback",
            "https://app.example.com:8443/cb?x=1",
            "http://127.0.0.1:5000/cb",
            "http://[::1]/cb",
            "http://localhost:3000/cb",
            "http://LOCALHOST:3000/cb",
            "com.example.app:/oauth2redirect",
        ] {
            assert_eq!(check_redirect_uri(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://app.example.com/cb",
            "https://app.example.com/cb#frag",
            "https://*.example.com/cb",
            "https://user@app.example.com/cb",
            "javascript:alert(1)",
            "myapp:/cb",
            "/relative/cb",
            "https:///cb",
            "https://app.example.com/c b",
            "https://evil.com\\@app.example.com",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(
            normalize_email(" Ada@Example.COM "),
            Some("ada@example.com".into())
        );
        for bad in [
            "ada",
            "@example.com",
            "ada@example",
            "a da@example.com",
            "ada@.com",
        ] {
            assert_eq!(normalize_email(bad), None, "{bad}");
        }
    }
}
