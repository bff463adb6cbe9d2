//! The OAuth 2.0 authorization server's records: clients, users, signing
//! keys, grants, authorization codes, refresh tokens, opaque access tokens,
//! revoked JWT ids and remembered consents ([`OAuthStore`]).
//!
//! As for keys, secrets arrive here as SHA-256 digests (codes, refresh
//! tokens, client secrets, opaque tokens) or sealed with the master key
//! (signing keys, HS256 client secrets); this crate never sees them plain.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::common::{decode_scopes, encode_scopes};
use crate::{Page, Result, StoreError};

/// An OAuth client (a third-party app) of an organization.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub id: String,
    pub org_id: String,
    pub name: String,
    /// A public client has no secret (`token_endpoint_auth_method = none`).
    pub public: bool,
    /// SHA-256 of the client secret.
    pub secret_digest: Option<Vec<u8>>,
    /// The secret sealed with the master key, kept only when it must be
    /// usable again (HS256 client-signed JWTs).
    pub secret_sealed: Option<Vec<u8>>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    pub token_endpoint_auth_method: String,
    /// RFC 7591 `jwks`: `{"keys": [JWK, ...]}`.
    pub jwks: Option<serde_json::Value>,
    /// `jwt_auth.alg`, when client-signed JWTs are enabled.
    pub jwt_auth_alg: Option<String>,
    pub require_pkce: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub secret_rotated_at: Option<i64>,
}

/// Fields a PATCH may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ClientPatch {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub token_endpoint_auth_method: Option<String>,
    /// `Some(None)` removes the keys.
    pub jwks: Option<Option<serde_json::Value>>,
    /// `Some(None)` turns client-signed JWTs off.
    pub jwt_auth_alg: Option<Option<String>>,
    pub require_pkce: Option<bool>,
    pub updated_at: i64,
}

/// A person who signs in (OAuth login, console) for an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub org_id: String,
    /// Lower-cased.
    pub email: String,
    /// argon2id, as a PHC string.
    pub password_hash: String,
    /// `admin` or `member`.
    pub role: String,
    pub created_at: i64,
}

/// A key access tokens are signed with.
#[derive(Debug, Clone, PartialEq)]
pub struct SigningKey {
    pub kid: String,
    pub alg: String,
    pub public_jwk: serde_json::Value,
    /// The private key (PKCS#8 DER) sealed with the master key.
    pub private_sealed: Vec<u8>,
    pub created_at: i64,
    /// When a newer key took over signing.
    pub retired_at: Option<i64>,
}

/// One authorization a client holds: from a user (authorization code) or
/// for itself. Tokens issued from it end when it is revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: String,
    pub org_id: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// An authorization code, single use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCode {
    pub digest: Vec<u8>,
    pub client_id: String,
    pub org_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    /// PKCE S256 challenge (base64url), if any.
    pub code_challenge: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    /// The grant its first exchange created.
    pub grant_id: Option<String>,
}

/// What redeeming a code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeem {
    /// First use: the code is now spent and `grant` was created for it.
    Fresh(AuthCode),
    /// Already spent (the code as it was: `grant_id` names what its first
    /// use created).
    Replayed(AuthCode),
    /// No such code.
    Unknown,
}

/// A refresh token of a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub digest: Vec<u8>,
    pub grant_id: String,
    pub client_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub spent_at: Option<i64>,
}

/// What spending a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpendRefresh {
    /// It was unspent and is now spent.
    Fresh(RefreshToken),
    /// It was already spent: a reuse.
    Reused(RefreshToken),
    Unknown,
}

/// An opaque access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub digest: Vec<u8>,
    pub jti: String,
    pub grant_id: Option<String>,
    pub client_id: String,
    pub org_id: String,
    pub subject: String,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// Consent a user gave a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub user_id: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[async_trait]
pub trait OAuthStore: Send + Sync + 'static {
    async fn create_client(&self, client: &Client) -> Result<()>;
    async fn get_client(&self, id: &str) -> Result<Client>;
    /// An organization's clients, newest first.
    async fn list_clients(&self, org_id: &str, page: &Page) -> Result<Vec<Client>>;
    async fn update_client(&self, id: &str, patch: &ClientPatch) -> Result<Client>;
    /// Replaces the secret (digest and, if kept, sealed copy) at `at`.
    async fn set_client_secret(
        &self,
        id: &str,
        digest: Option<&[u8]>,
        sealed: Option<&[u8]>,
        at: i64,
    ) -> Result<Client>;
    /// Deletes a client and everything issued to it.
    async fn delete_client(&self, id: &str) -> Result<()>;

    /// `Conflict` if the organization has a user with that email.
    async fn create_user(&self, user: &User) -> Result<()>;
    async fn get_user(&self, id: &str) -> Result<User>;
    /// By lower-cased email.
    async fn user_by_email(&self, org_id: &str, email: &str) -> Result<Option<User>>;
    async fn list_users(&self, org_id: &str, page: &Page) -> Result<Vec<User>>;
    /// Deletes a user and every grant, code and consent of theirs.
    async fn delete_user(&self, id: &str) -> Result<()>;

    /// Every signing key, newest first.
    async fn list_signing_keys(&self) -> Result<Vec<SigningKey>>;
    /// In one transaction: retires the keys in use (at `key.created_at`)
    /// and adds `key`.
    async fn rotate_signing_key(&self, key: &SigningKey) -> Result<()>;
    /// Adds `key` only if there is no signing key yet (first start, any
    /// number of nodes at once); answers whether it was added.
    async fn add_first_signing_key(&self, key: &SigningKey) -> Result<bool>;
    /// Removes keys retired before `before`; answers how many.
    async fn prune_signing_keys(&self, before: i64) -> Result<u64>;

    async fn create_grant(&self, grant: &Grant) -> Result<()>;
    async fn get_grant(&self, id: &str) -> Result<Grant>;
    /// Revokes at `at` unless already revoked; answers the row.
    async fn revoke_grant(&self, id: &str, at: i64) -> Result<Grant>;
    /// Revokes every grant of `user_id` to `client_id`; answers how many.
    async fn revoke_user_grants(&self, user_id: &str, client_id: &str, at: i64) -> Result<u64>;

    async fn create_code(&self, code: &AuthCode) -> Result<()>;
    /// In one transaction: spends the code (first use only) and creates
    /// the grant `grant.id` for it, at `grant.created_at`, with the code's
    /// own organization, client, user and scopes (the other fields of
    /// `grant` are not used). A code past `expires_at` is `Unknown`.
    async fn redeem_code(&self, digest: &[u8], now: i64, grant: &Grant) -> Result<Redeem>;

    async fn create_refresh_token(&self, token: &RefreshToken) -> Result<()>;
    /// Spends the token at `now` if it is unspent (atomically: of two
    /// concurrent spends, one is `Fresh`, the other `Reused`).
    async fn spend_refresh_token(&self, digest: &[u8], now: i64) -> Result<SpendRefresh>;
    async fn refresh_token_by_digest(&self, digest: &[u8]) -> Result<Option<RefreshToken>>;

    async fn create_access_token(&self, token: &AccessToken) -> Result<()>;
    async fn access_token_by_digest(&self, digest: &[u8]) -> Result<Option<AccessToken>>;
    async fn revoke_access_token(&self, digest: &[u8], at: i64) -> Result<()>;

    /// Records a revoked JWT id until `expires_at` (idempotent).
    async fn revoke_jti(&self, jti: &str, expires_at: i64) -> Result<()>;
    /// The revoked ids that have not expired at `now`.
    async fn revoked_jtis(&self, now: i64) -> Result<Vec<(String, i64)>>;
    async fn is_jti_revoked(&self, jti: &str) -> Result<bool>;
    /// Records a use of the one-time id `id` until `expires_at`; answers
    /// whether this was its first use (atomically: of two concurrent uses,
    /// one is first). An entry expired at `now` counts as unused.
    async fn use_once(&self, id: &str, expires_at: i64, now: i64) -> Result<bool>;

    async fn upsert_consent(&self, consent: &Consent) -> Result<()>;
    async fn get_consent(&self, user_id: &str, client_id: &str) -> Result<Option<Consent>>;
    async fn list_consents(&self, client_id: &str) -> Result<Vec<Consent>>;
    /// `NotFound` if there was none.
    async fn delete_consent(&self, user_id: &str, client_id: &str) -> Result<()>;

    /// Deletes expired codes, refresh tokens, opaque tokens and revoked
    /// ids (expired before `before`); answers how many rows went.
    async fn prune_oauth(&self, before: i64) -> Result<u64>;
}

// ---- SQL ----------------------------------------------------------------

macro_rules! client_cols {
    () => {
        "id, org_id, name, public, secret_digest, secret_sealed, redirect_uris, grant_types, \
         scopes, token_endpoint_auth_method, jwks, jwt_auth_alg, require_pkce, created_at, \
         updated_at, secret_rotated_at"
    };
}
macro_rules! user_cols {
    () => {
        "id, org_id, email, password_hash, role, created_at"
    };
}
macro_rules! signing_key_cols {
    () => {
        "kid, alg, public_jwk, private_sealed, created_at, retired_at"
    };
}
macro_rules! grant_cols {
    () => {
        "id, org_id, client_id, user_id, scopes, created_at, revoked_at"
    };
}
macro_rules! code_cols {
    () => {
        "digest, client_id, org_id, user_id, redirect_uri, scopes, code_challenge, created_at, \
         expires_at, used_at, grant_id"
    };
}
macro_rules! refresh_cols {
    () => {
        "digest, grant_id, client_id, created_at, expires_at, spent_at"
    };
}
macro_rules! access_cols {
    () => {
        "digest, jti, grant_id, client_id, org_id, subject, scopes, created_at, expires_at, \
         revoked_at"
    };
}
macro_rules! consent_cols {
    () => {
        "user_id, client_id, scopes, created_at, updated_at"
    };
}

pub(crate) mod sql {
    pub const INSERT_CLIENT: &str = concat!(
        "INSERT INTO clients (",
        client_cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    );
    pub const GET_CLIENT: &str = concat!("SELECT ", client_cols!(), " FROM clients WHERE id = $1");
    pub const LIST_CLIENTS: &str = concat!(
        "SELECT ",
        client_cols!(),
        " FROM clients WHERE org_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
    );
    pub const LIST_CLIENTS_AFTER: &str = concat!(
        "SELECT ",
        client_cols!(),
        " FROM clients WHERE org_id = $1 AND (created_at, id) < ($3, $4)",
        " ORDER BY created_at DESC, id DESC LIMIT $2"
    );
    /// `$5`/`$7`/`$10`: whether to set jwks / jwt_auth_alg (to `$6`/`$8`).
    pub const UPDATE_CLIENT: &str = concat!(
        "UPDATE clients SET name = COALESCE($2, name), redirect_uris = COALESCE($3, redirect_uris), ",
        "grant_types = COALESCE($4, grant_types), ",
        "jwks = CASE WHEN $5 THEN $6 ELSE jwks END, ",
        "jwt_auth_alg = CASE WHEN $7 THEN $8 ELSE jwt_auth_alg END, ",
        "scopes = COALESCE($9, scopes), ",
        "token_endpoint_auth_method = COALESCE($10, token_endpoint_auth_method), ",
        "require_pkce = COALESCE($11, require_pkce), updated_at = $12 ",
        "WHERE id = $1 RETURNING ",
        client_cols!()
    );
    pub const SET_CLIENT_SECRET: &str = concat!(
        "UPDATE clients SET secret_digest = $2, secret_sealed = $3, secret_rotated_at = $4, ",
        "updated_at = $4 WHERE id = $1 RETURNING ",
        client_cols!()
    );
    pub const DELETE_CLIENT: &str = "DELETE FROM clients WHERE id = $1";

    pub const INSERT_USER: &str = concat!(
        "INSERT INTO users (",
        user_cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6)"
    );
    pub const GET_USER: &str = concat!("SELECT ", user_cols!(), " FROM users WHERE id = $1");
    pub const USER_BY_EMAIL: &str = concat!(
        "SELECT ",
        user_cols!(),
        " FROM users WHERE org_id = $1 AND email = $2"
    );
    pub const LIST_USERS: &str = concat!(
        "SELECT ",
        user_cols!(),
        " FROM users WHERE org_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
    );
    pub const LIST_USERS_AFTER: &str = concat!(
        "SELECT ",
        user_cols!(),
        " FROM users WHERE org_id = $1 AND (created_at, id) < ($3, $4)",
        " ORDER BY created_at DESC, id DESC LIMIT $2"
    );
    pub const DELETE_USER: &str = "DELETE FROM users WHERE id = $1";

    pub const LIST_SIGNING_KEYS: &str = concat!(
        "SELECT ",
        signing_key_cols!(),
        " FROM signing_keys ORDER BY created_at DESC, kid DESC"
    );
    pub const INSERT_SIGNING_KEY: &str = concat!(
        "INSERT INTO signing_keys (",
        signing_key_cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6)"
    );
    pub const INSERT_FIRST_SIGNING_KEY: &str = concat!(
        "INSERT INTO signing_keys (",
        signing_key_cols!(),
        ") SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 FROM signing_keys)"
    );
    pub const RETIRE_SIGNING_KEYS: &str =
        "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL";
    pub const PRUNE_SIGNING_KEYS: &str = "DELETE FROM signing_keys WHERE retired_at < $1";

    pub const INSERT_GRANT: &str = concat!(
        "INSERT INTO grants (",
        grant_cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
    );
    pub const GET_GRANT: &str = concat!("SELECT ", grant_cols!(), " FROM grants WHERE id = $1");
    pub const REVOKE_GRANT: &str =
        "UPDATE grants SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";
    pub const REVOKE_USER_GRANTS: &str = "UPDATE grants SET revoked_at = $3 \
         WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL";

    pub const INSERT_CODE: &str = concat!(
        "INSERT INTO auth_codes (",
        code_cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    );
    pub const SPEND_CODE: &str = concat!(
        "UPDATE auth_codes SET used_at = $2, grant_id = $3 ",
        "WHERE digest = $1 AND used_at IS NULL AND expires_at > $2 RETURNING ",
        code_cols!()
    );
    pub const GET_CODE: &str = concat!(
        "SELECT ",
        code_cols!(),
        " FROM auth_codes WHERE digest = $1"
    );

    pub const INSERT_REFRESH: &str = concat!(
        "INSERT INTO refresh_tokens (",
        refresh_cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6)"
    );
    pub const SPEND_REFRESH: &str = concat!(
        "UPDATE refresh_tokens SET spent_at = $2 WHERE digest = $1 AND spent_at IS NULL RETURNING ",
        refresh_cols!()
    );
    pub const GET_REFRESH: &str = concat!(
        "SELECT ",
        refresh_cols!(),
        " FROM refresh_tokens WHERE digest = $1"
    );

    pub const INSERT_ACCESS: &str = concat!(
        "INSERT INTO access_tokens (",
        access_cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    );
    pub const GET_ACCESS: &str = concat!(
        "SELECT ",
        access_cols!(),
        " FROM access_tokens WHERE digest = $1"
    );
    pub const REVOKE_ACCESS: &str =
        "UPDATE access_tokens SET revoked_at = $2 WHERE digest = $1 AND revoked_at IS NULL";

    pub const INSERT_JTI: &str = "INSERT INTO revoked_jtis (jti, expires_at) VALUES ($1, $2) \
         ON CONFLICT (jti) DO NOTHING";
    pub const LIST_JTIS: &str = "SELECT jti, expires_at FROM revoked_jtis WHERE expires_at > $1";
    pub const GET_JTI: &str = "SELECT 1 FROM revoked_jtis WHERE jti = $1";
    pub const USE_ONCE: &str = "INSERT INTO used_jtis (id, expires_at) VALUES ($1, $2) \
         ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at \
         WHERE used_jtis.expires_at <= $3";

    pub const UPSERT_CONSENT: &str = concat!(
        "INSERT INTO consents (",
        consent_cols!(),
        ") VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, client_id) ",
        "DO UPDATE SET scopes = excluded.scopes, updated_at = excluded.updated_at"
    );
    pub const GET_CONSENT: &str = concat!(
        "SELECT ",
        consent_cols!(),
        " FROM consents WHERE user_id = $1 AND client_id = $2"
    );
    pub const LIST_CONSENTS: &str = concat!(
        "SELECT ",
        consent_cols!(),
        " FROM consents WHERE client_id = $1 ORDER BY updated_at DESC, user_id DESC"
    );
    pub const DELETE_CONSENT: &str = "DELETE FROM consents WHERE user_id = $1 AND client_id = $2";

    pub const PRUNE: [&str; 5] = [
        "DELETE FROM auth_codes WHERE expires_at < $1",
        "DELETE FROM refresh_tokens WHERE expires_at < $1",
        "DELETE FROM access_tokens WHERE expires_at < $1",
        "DELETE FROM revoked_jtis WHERE expires_at < $1",
        "DELETE FROM used_jtis WHERE expires_at < $1",
    ];
}

// ---- rows ---------------------------------------------------------------

fn json_text(what: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(crate) fn encode_json(value: &serde_json::Value) -> String {
    value.to_string()
}

pub(crate) fn encode_uris(uris: &[String]) -> String {
    serde_json::Value::from(uris.to_vec()).to_string()
}

pub(crate) fn client<'r, R>(row: &'r R) -> Result<Client>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: String = row.try_get("id")?;
    let uris: String = row.try_get("redirect_uris")?;
    let redirect_uris: Vec<String> = serde_json::from_str(&uris)
        .map_err(|e| StoreError::Corrupt(format!("client {id}: redirect_uris: {e}")))?;
    let jwks: Option<String> = row.try_get("jwks")?;
    let jwks = jwks
        .map(|t| json_text(&format!("client {id}: jwks"), &t))
        .transpose()?;
    Ok(Client {
        org_id: row.try_get("org_id")?,
        name: row.try_get("name")?,
        public: row.try_get("public")?,
        secret_digest: row.try_get("secret_digest")?,
        secret_sealed: row.try_get("secret_sealed")?,
        redirect_uris,
        grant_types: decode_scopes(&row.try_get::<String, _>("grant_types")?),
        scopes: decode_scopes(&row.try_get::<String, _>("scopes")?),
        token_endpoint_auth_method: row.try_get("token_endpoint_auth_method")?,
        jwks,
        jwt_auth_alg: row.try_get("jwt_auth_alg")?,
        require_pkce: row.try_get("require_pkce")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        secret_rotated_at: row.try_get("secret_rotated_at")?,
        id,
    })
}

pub(crate) fn user<'r, R>(row: &'r R) -> Result<User>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(User {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        role: row.try_get("role")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) fn signing_key<'r, R>(row: &'r R) -> Result<SigningKey>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let kid: String = row.try_get("kid")?;
    let jwk: String = row.try_get("public_jwk")?;
    Ok(SigningKey {
        public_jwk: json_text(&format!("signing key {kid}"), &jwk)?,
        alg: row.try_get("alg")?,
        private_sealed: row.try_get("private_sealed")?,
        created_at: row.try_get("created_at")?,
        retired_at: row.try_get("retired_at")?,
        kid,
    })
}

pub(crate) fn grant<'r, R>(row: &'r R) -> Result<Grant>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Grant {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        client_id: row.try_get("client_id")?,
        user_id: row.try_get("user_id")?,
        scopes: decode_scopes(&row.try_get::<String, _>("scopes")?),
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

pub(crate) fn code<'r, R>(row: &'r R) -> Result<AuthCode>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(AuthCode {
        digest: row.try_get("digest")?,
        client_id: row.try_get("client_id")?,
        org_id: row.try_get("org_id")?,
        user_id: row.try_get("user_id")?,
        redirect_uri: row.try_get("redirect_uri")?,
        scopes: decode_scopes(&row.try_get::<String, _>("scopes")?),
        code_challenge: row.try_get("code_challenge")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        used_at: row.try_get("used_at")?,
        grant_id: row.try_get("grant_id")?,
    })
}

pub(crate) fn refresh<'r, R>(row: &'r R) -> Result<RefreshToken>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(RefreshToken {
        digest: row.try_get("digest")?,
        grant_id: row.try_get("grant_id")?,
        client_id: row.try_get("client_id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        spent_at: row.try_get("spent_at")?,
    })
}

pub(crate) fn access<'r, R>(row: &'r R) -> Result<AccessToken>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(AccessToken {
        digest: row.try_get("digest")?,
        jti: row.try_get("jti")?,
        grant_id: row.try_get("grant_id")?,
        client_id: row.try_get("client_id")?,
        org_id: row.try_get("org_id")?,
        subject: row.try_get("subject")?,
        scopes: decode_scopes(&row.try_get::<String, _>("scopes")?),
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

pub(crate) fn consent<'r, R>(row: &'r R) -> Result<Consent>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Consent {
        user_id: row.try_get("user_id")?,
        client_id: row.try_get("client_id")?,
        scopes: decode_scopes(&row.try_get::<String, _>("scopes")?),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Binds the scopes of a record.
pub(crate) fn scopes(s: &[String]) -> String {
    encode_scopes(s)
}

/// Implements [`OAuthStore`] for a backend (see `impl_store!`).
macro_rules! impl_oauth_store {
    ($store:ty, $db:ty) => {
        impl $store {
            fn page_query<'q>(
                sql_first: &'static str,
                sql_after: &'static str,
                org_id: &'q str,
                page: &'q $crate::Page,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
                let limit = i64::from(page.limit);
                match &page.cursor {
                    None => sqlx::query(sql_first).bind(org_id).bind(limit),
                    Some((at, id)) => sqlx::query(sql_after)
                        .bind(org_id)
                        .bind(limit)
                        .bind(*at)
                        .bind(id.as_str()),
                }
            }

            fn insert_grant_query(
                g: &$crate::oauth::Grant,
            ) -> sqlx::query::Query<'_, $db, <$db as sqlx::Database>::Arguments> {
                sqlx::query($crate::oauth::sql::INSERT_GRANT)
                    .bind(&g.id)
                    .bind(&g.org_id)
                    .bind(&g.client_id)
                    .bind(&g.user_id)
                    .bind($crate::oauth::scopes(&g.scopes))
                    .bind(g.created_at)
                    .bind(g.revoked_at)
            }
        }

        #[async_trait::async_trait]
        impl $crate::oauth::OAuthStore for $store {
            async fn create_client(&self, c: &$crate::oauth::Client) -> $crate::Result<()> {
                sqlx::query($crate::oauth::sql::INSERT_CLIENT)
                    .bind(&c.id)
                    .bind(&c.org_id)
                    .bind(&c.name)
                    .bind(c.public)
                    .bind(&c.secret_digest)
                    .bind(&c.secret_sealed)
                    .bind($crate::oauth::encode_uris(&c.redirect_uris))
                    .bind($crate::oauth::scopes(&c.grant_types))
                    .bind($crate::oauth::scopes(&c.scopes))
                    .bind(&c.token_endpoint_auth_method)
                    .bind(c.jwks.as_ref().map($crate::oauth::encode_json))
                    .bind(&c.jwt_auth_alg)
                    .bind(c.require_pkce)
                    .bind(c.created_at)
                    .bind(c.updated_at)
                    .bind(c.secret_rotated_at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(())
            }

            async fn get_client(&self, id: &str) -> $crate::Result<$crate::oauth::Client> {
                let row = sqlx::query($crate::oauth::sql::GET_CLIENT)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?
                    .ok_or($crate::StoreError::NotFound)?;
                $crate::oauth::client(&row)
            }

            async fn list_clients(
                &self,
                org_id: &str,
                page: &$crate::Page,
            ) -> $crate::Result<Vec<$crate::oauth::Client>> {
                let rows = Self::page_query(
                    $crate::oauth::sql::LIST_CLIENTS,
                    $crate::oauth::sql::LIST_CLIENTS_AFTER,
                    org_id,
                    page,
                )
                .fetch_all(&self.pool)
                .await
                .map_err($crate::common::db_err)?;
                rows.iter().map($crate::oauth::client).collect()
            }

            async fn update_client(
                &self,
                id: &str,
                p: &$crate::oauth::ClientPatch,
            ) -> $crate::Result<$crate::oauth::Client> {
                let row = sqlx::query($crate::oauth::sql::UPDATE_CLIENT)
                    .bind(id)
                    .bind(p.name.as_deref())
                    .bind(p.redirect_uris.as_deref().map($crate::oauth::encode_uris))
                    .bind(p.grant_types.as_deref().map($crate::oauth::scopes))
                    .bind(p.jwks.is_some())
                    .bind(
                        p.jwks
                            .as_ref()
                            .and_then(|j| j.as_ref())
                            .map($crate::oauth::encode_json),
                    )
                    .bind(p.jwt_auth_alg.is_some())
                    .bind(p.jwt_auth_alg.as_ref().and_then(|a| a.as_deref()))
                    .bind(p.scopes.as_deref().map($crate::oauth::scopes))
                    .bind(p.token_endpoint_auth_method.as_deref())
                    .bind(p.require_pkce)
                    .bind(p.updated_at)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?
                    .ok_or($crate::StoreError::NotFound)?;
                $crate::oauth::client(&row)
            }

            async fn set_client_secret(
                &self,
                id: &str,
                digest: Option<&[u8]>,
                sealed: Option<&[u8]>,
                at: i64,
            ) -> $crate::Result<$crate::oauth::Client> {
                let row = sqlx::query($crate::oauth::sql::SET_CLIENT_SECRET)
                    .bind(id)
                    .bind(digest)
                    .bind(sealed)
                    .bind(at)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?
                    .ok_or($crate::StoreError::NotFound)?;
                $crate::oauth::client(&row)
            }

            async fn delete_client(&self, id: &str) -> $crate::Result<()> {
                let done = sqlx::query($crate::oauth::sql::DELETE_CLIENT)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                Ok(())
            }

            async fn create_user(&self, u: &$crate::oauth::User) -> $crate::Result<()> {
                sqlx::query($crate::oauth::sql::INSERT_USER)
                    .bind(&u.id)
                    .bind(&u.org_id)
                    .bind(&u.email)
                    .bind(&u.password_hash)
                    .bind(&u.role)
                    .bind(u.created_at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(())
            }

            async fn get_user(&self, id: &str) -> $crate::Result<$crate::oauth::User> {
                let row = sqlx::query($crate::oauth::sql::GET_USER)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?
                    .ok_or($crate::StoreError::NotFound)?;
                $crate::oauth::user(&row)
            }

            async fn user_by_email(
                &self,
                org_id: &str,
                email: &str,
            ) -> $crate::Result<Option<$crate::oauth::User>> {
                let row = sqlx::query($crate::oauth::sql::USER_BY_EMAIL)
                    .bind(org_id)
                    .bind(email)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                row.as_ref().map($crate::oauth::user).transpose()
            }

            async fn list_users(
                &self,
                org_id: &str,
                page: &$crate::Page,
            ) -> $crate::Result<Vec<$crate::oauth::User>> {
                let rows = Self::page_query(
                    $crate::oauth::sql::LIST_USERS,
                    $crate::oauth::sql::LIST_USERS_AFTER,
                    org_id,
                    page,
                )
                .fetch_all(&self.pool)
                .await
                .map_err($crate::common::db_err)?;
                rows.iter().map($crate::oauth::user).collect()
            }

            async fn delete_user(&self, id: &str) -> $crate::Result<()> {
                let done = sqlx::query($crate::oauth::sql::DELETE_USER)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                Ok(())
            }

            async fn list_signing_keys(&self) -> $crate::Result<Vec<$crate::oauth::SigningKey>> {
                let rows = sqlx::query($crate::oauth::sql::LIST_SIGNING_KEYS)
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                rows.iter().map($crate::oauth::signing_key).collect()
            }

            async fn rotate_signing_key(
                &self,
                k: &$crate::oauth::SigningKey,
            ) -> $crate::Result<()> {
                let mut tx = self.begin_write().await.map_err($crate::common::db_err)?;
                // Else a concurrent rotation's new key, committed after this
                // statement's snapshot, would be left in use next to `k`.
                self.lock_signing_keys(&mut tx).await?;
                sqlx::query($crate::oauth::sql::RETIRE_SIGNING_KEYS)
                    .bind(k.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::common::db_err)?;
                sqlx::query($crate::oauth::sql::INSERT_SIGNING_KEY)
                    .bind(&k.kid)
                    .bind(&k.alg)
                    .bind($crate::oauth::encode_json(&k.public_jwk))
                    .bind(&k.private_sealed)
                    .bind(k.created_at)
                    .bind(k.retired_at)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::common::db_err)?;
                tx.commit().await.map_err($crate::common::db_err)?;
                Ok(())
            }

            async fn add_first_signing_key(
                &self,
                k: &$crate::oauth::SigningKey,
            ) -> $crate::Result<bool> {
                let mut tx = self.begin_write().await.map_err($crate::common::db_err)?;
                self.lock_signing_keys(&mut tx).await?;
                let done = sqlx::query($crate::oauth::sql::INSERT_FIRST_SIGNING_KEY)
                    .bind(&k.kid)
                    .bind(&k.alg)
                    .bind($crate::oauth::encode_json(&k.public_jwk))
                    .bind(&k.private_sealed)
                    .bind(k.created_at)
                    .bind(k.retired_at)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::common::db_err)?;
                tx.commit().await.map_err($crate::common::db_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn prune_signing_keys(&self, before: i64) -> $crate::Result<u64> {
                let done = sqlx::query($crate::oauth::sql::PRUNE_SIGNING_KEYS)
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(done.rows_affected())
            }

            async fn create_grant(&self, g: &$crate::oauth::Grant) -> $crate::Result<()> {
                Self::insert_grant_query(g)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(())
            }

            async fn get_grant(&self, id: &str) -> $crate::Result<$crate::oauth::Grant> {
                let row = sqlx::query($crate::oauth::sql::GET_GRANT)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?
                    .ok_or($crate::StoreError::NotFound)?;
                $crate::oauth::grant(&row)
            }

            async fn revoke_grant(
                &self,
                id: &str,
                at: i64,
            ) -> $crate::Result<$crate::oauth::Grant> {
                sqlx::query($crate::oauth::sql::REVOKE_GRANT)
                    .bind(id)
                    .bind(at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                $crate::oauth::OAuthStore::get_grant(self, id).await
            }

            async fn revoke_user_grants(
                &self,
                user_id: &str,
                client_id: &str,
                at: i64,
            ) -> $crate::Result<u64> {
                let done = sqlx::query($crate::oauth::sql::REVOKE_USER_GRANTS)
                    .bind(user_id)
                    .bind(client_id)
                    .bind(at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(done.rows_affected())
            }

            async fn create_code(&self, c: &$crate::oauth::AuthCode) -> $crate::Result<()> {
                sqlx::query($crate::oauth::sql::INSERT_CODE)
                    .bind(&c.digest)
                    .bind(&c.client_id)
                    .bind(&c.org_id)
                    .bind(&c.user_id)
                    .bind(&c.redirect_uri)
                    .bind($crate::oauth::scopes(&c.scopes))
                    .bind(&c.code_challenge)
                    .bind(c.created_at)
                    .bind(c.expires_at)
                    .bind(c.used_at)
                    .bind(&c.grant_id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(())
            }

            async fn redeem_code(
                &self,
                digest: &[u8],
                now: i64,
                grant: &$crate::oauth::Grant,
            ) -> $crate::Result<$crate::oauth::Redeem> {
                let mut tx = self.begin_write().await.map_err($crate::common::db_err)?;
                let spent = sqlx::query($crate::oauth::sql::SPEND_CODE)
                    .bind(digest)
                    .bind(now)
                    .bind(&grant.id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err($crate::common::db_err)?;
                if let Some(row) = spent {
                    let code = $crate::oauth::code(&row)?;
                    let grant = $crate::oauth::Grant {
                        id: grant.id.clone(),
                        org_id: code.org_id.clone(),
                        client_id: code.client_id.clone(),
                        user_id: Some(code.user_id.clone()),
                        scopes: code.scopes.clone(),
                        created_at: grant.created_at,
                        revoked_at: None,
                    };
                    Self::insert_grant_query(&grant)
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::common::db_err)?;
                    tx.commit().await.map_err($crate::common::db_err)?;
                    return Ok($crate::oauth::Redeem::Fresh(code));
                }
                let row = sqlx::query($crate::oauth::sql::GET_CODE)
                    .bind(digest)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err($crate::common::db_err)?;
                tx.rollback().await.map_err($crate::common::db_err)?;
                let Some(row) = row else {
                    return Ok($crate::oauth::Redeem::Unknown);
                };
                let code = $crate::oauth::code(&row)?;
                Ok(if code.used_at.is_some() {
                    $crate::oauth::Redeem::Replayed(code)
                } else {
                    // Unused but expired.
                    $crate::oauth::Redeem::Unknown
                })
            }

            async fn create_refresh_token(
                &self,
                t: &$crate::oauth::RefreshToken,
            ) -> $crate::Result<()> {
                sqlx::query($crate::oauth::sql::INSERT_REFRESH)
                    .bind(&t.digest)
                    .bind(&t.grant_id)
                    .bind(&t.client_id)
                    .bind(t.created_at)
                    .bind(t.expires_at)
                    .bind(t.spent_at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(())
            }

            async fn spend_refresh_token(
                &self,
                digest: &[u8],
                now: i64,
            ) -> $crate::Result<$crate::oauth::SpendRefresh> {
                let row = sqlx::query($crate::oauth::sql::SPEND_REFRESH)
                    .bind(digest)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                if let Some(row) = row {
                    return Ok($crate::oauth::SpendRefresh::Fresh($crate::oauth::refresh(
                        &row,
                    )?));
                }
                Ok(
                    match $crate::oauth::OAuthStore::refresh_token_by_digest(self, digest).await? {
                        Some(t) => $crate::oauth::SpendRefresh::Reused(t),
                        None => $crate::oauth::SpendRefresh::Unknown,
                    },
                )
            }

            async fn refresh_token_by_digest(
                &self,
                digest: &[u8],
            ) -> $crate::Result<Option<$crate::oauth::RefreshToken>> {
                let row = sqlx::query($crate::oauth::sql::GET_REFRESH)
                    .bind(digest)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                row.as_ref().map($crate::oauth::refresh).transpose()
            }

            async fn create_access_token(
                &self,
                t: &$crate::oauth::AccessToken,
            ) -> $crate::Result<()> {
                sqlx::query($crate::oauth::sql::INSERT_ACCESS)
                    .bind(&t.digest)
                    .bind(&t.jti)
                    .bind(&t.grant_id)
                    .bind(&t.client_id)
                    .bind(&t.org_id)
                    .bind(&t.subject)
                    .bind($crate::oauth::scopes(&t.scopes))
                    .bind(t.created_at)
                    .bind(t.expires_at)
                    .bind(t.revoked_at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(())
            }

            async fn access_token_by_digest(
                &self,
                digest: &[u8],
            ) -> $crate::Result<Option<$crate::oauth::AccessToken>> {
                let row = sqlx::query($crate::oauth::sql::GET_ACCESS)
                    .bind(digest)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                row.as_ref().map($crate::oauth::access).transpose()
            }

            async fn revoke_access_token(&self, digest: &[u8], at: i64) -> $crate::Result<()> {
                sqlx::query($crate::oauth::sql::REVOKE_ACCESS)
                    .bind(digest)
                    .bind(at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(())
            }

            async fn revoke_jti(&self, jti: &str, expires_at: i64) -> $crate::Result<()> {
                sqlx::query($crate::oauth::sql::INSERT_JTI)
                    .bind(jti)
                    .bind(expires_at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(())
            }

            async fn revoked_jtis(&self, now: i64) -> $crate::Result<Vec<(String, i64)>> {
                let rows = sqlx::query($crate::oauth::sql::LIST_JTIS)
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            sqlx::Row::try_get(r, 0usize)?,
                            sqlx::Row::try_get(r, 1usize)?,
                        ))
                    })
                    .collect()
            }

            async fn is_jti_revoked(&self, jti: &str) -> $crate::Result<bool> {
                let row = sqlx::query($crate::oauth::sql::GET_JTI)
                    .bind(jti)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(row.is_some())
            }

            async fn use_once(&self, id: &str, expires_at: i64, now: i64) -> $crate::Result<bool> {
                let done = sqlx::query($crate::oauth::sql::USE_ONCE)
                    .bind(id)
                    .bind(expires_at)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn upsert_consent(&self, c: &$crate::oauth::Consent) -> $crate::Result<()> {
                sqlx::query($crate::oauth::sql::UPSERT_CONSENT)
                    .bind(&c.user_id)
                    .bind(&c.client_id)
                    .bind($crate::oauth::scopes(&c.scopes))
                    .bind(c.created_at)
                    .bind(c.updated_at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(())
            }

            async fn get_consent(
                &self,
                user_id: &str,
                client_id: &str,
            ) -> $crate::Result<Option<$crate::oauth::Consent>> {
                let row = sqlx::query($crate::oauth::sql::GET_CONSENT)
                    .bind(user_id)
                    .bind(client_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                row.as_ref().map($crate::oauth::consent).transpose()
            }

            async fn list_consents(
                &self,
                client_id: &str,
            ) -> $crate::Result<Vec<$crate::oauth::Consent>> {
                let rows = sqlx::query($crate::oauth::sql::LIST_CONSENTS)
                    .bind(client_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                rows.iter().map($crate::oauth::consent).collect()
            }

            async fn delete_consent(&self, user_id: &str, client_id: &str) -> $crate::Result<()> {
                let done = sqlx::query($crate::oauth::sql::DELETE_CONSENT)
                    .bind(user_id)
                    .bind(client_id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                Ok(())
            }

            async fn prune_oauth(&self, before: i64) -> $crate::Result<u64> {
                let mut total = 0;
                for sql in $crate::oauth::sql::PRUNE {
                    let done = sqlx::query(sql)
                        .bind(before)
                        .execute(&self.pool)
                        .await
                        .map_err($crate::common::db_err)?;
                    total += done.rows_affected();
                }
                Ok(total)
            }
        }
    };
}

pub(crate) use impl_oauth_store;
