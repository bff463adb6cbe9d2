//! What latchkey does, whichever door the request came in by (HTTP or
//! CLI): organizations, root keys, API keys. Handlers and commands are
//! thin wrappers around these functions.

use std::sync::Arc;

use latchkey_core::ids::new_id;
use latchkey_core::keyfmt;
use latchkey_store::{ApiKey, KeyPatch, KeyQuery, Org, Page, RootKey};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::app::App;
use crate::config::ROOT_PREFIX;
use crate::error::{ApiError, FieldError};
use crate::limits::{self, RateLimitInput, RefillInput};
use crate::logs::ActionLog;
use crate::views::{DurationInput, nullable, parse_rfc3339};

/// Longest name, external id.
const MAX_NAME: usize = 200;
/// Largest `metadata`, serialized.
const MAX_METADATA: usize = 8 * 1024;
/// Longest expiry or grace period: 10 years.
const MAX_SECONDS: i64 = 10 * 365 * 86_400;

/// The management scopes a root key may hold (SPEC §9).
pub const ROOT_SCOPES: &[&str] = &[
    "orgs.create",
    "orgs.read",
    "keys.create",
    "keys.read",
    "keys.update",
    "keys.delete",
    "keys.revoke",
    "keys.rotate",
    "clients.create",
    "clients.read",
    "clients.update",
    "clients.delete",
    "users.create",
    "users.read",
    "users.delete",
    "logs.read",
    "verify",
    "root_keys.create",
    "root_keys.read",
    "root_keys.revoke",
    "leaks.report",
];

/// The scope rules of root keys: [`ROOT_SCOPES`] as the catalog.
pub fn root_scope_policy() -> &'static latchkey_core::scope::ScopePolicy {
    static POLICY: std::sync::LazyLock<latchkey_core::scope::ScopePolicy> =
        std::sync::LazyLock::new(|| {
            let catalog = ROOT_SCOPES
                .iter()
                .map(|s| ((*s).to_owned(), String::new()))
                .collect();
            latchkey_core::scope::ScopePolicy::new('.', catalog, Default::default())
        });
    &POLICY
}

pub(crate) fn check_name(field: &str, v: &str, errors: &mut Vec<FieldError>) {
    if v.trim().is_empty() || v.chars().count() > MAX_NAME || v.chars().any(char::is_control) {
        errors.push(FieldError {
            field: field.into(),
            message: format!("Must be 1 to {MAX_NAME} characters, without control characters."),
        });
    }
}

pub(crate) fn check_scopes(
    policy: &latchkey_core::scope::ScopePolicy,
    scopes: &[String],
    explicit_only: bool,
    errors: &mut Vec<FieldError>,
) {
    if scopes.len() > latchkey_core::scope::MAX_SCOPES {
        let message = format!(
            "At most {} scopes may be granted.",
            latchkey_core::scope::MAX_SCOPES
        );
        errors.push(FieldError {
            field: "scopes".into(),
            message,
        });
        return;
    }
    for (i, msg) in policy.validate_grant(scopes, explicit_only) {
        errors.push(FieldError {
            field: format!("scopes[{i}]"),
            message: msg,
        });
    }
}

/// Who asks for a change, for the usage log: a root key over HTTP (with
/// the request's id), or the command line.
#[derive(Debug, Clone)]
pub struct Actor {
    /// A root key id (`rtk_...`) or [`Actor::CLI`].
    pub id: String,
    pub request_id: Option<String>,
}

impl Actor {
    pub const CLI: &str = "cli";

    /// The command line (and `latchkey serve`'s first root key).
    pub fn cli() -> Actor {
        Actor {
            id: Actor::CLI.to_owned(),
            request_id: None,
        }
    }

    /// Logs `action` on `target`, in `org_id` (None: instance-level).
    pub(crate) fn did(&self, app: &App, org_id: Option<&str>, action: &'static str, target: &str) {
        app.log_action(ActionLog {
            org_id: org_id.map(str::to_owned),
            request_id: self.request_id.clone(),
            actor: self.id.clone(),
            action,
            target: target.to_owned(),
        });
    }
}

pub(crate) fn done(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(errors))
    }
}

// ---------------------------------------------------------------- orgs

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    pub name: String,
}

pub async fn create_org(app: &App, actor: &Actor, req: CreateOrg) -> Result<Org, ApiError> {
    let mut errors = Vec::new();
    check_name("name", &req.name, &mut errors);
    done(errors)?;
    let org = Org {
        id: new_id("org_"),
        name: req.name.trim().to_owned(),
        created_at: app.now_ms(),
    };
    app.store.create_org(&org).await?;
    actor.did(app, Some(&org.id), "org.created", &org.id);
    Ok(org)
}

// ----------------------------------------------------------- root keys

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRootKey {
    pub name: String,
    /// Management scopes: `orgs.*`, `keys.*`, `clients.*`, `users.*`, `logs.read`, `verify`, `root_keys.*` or `*`.
    pub scopes: Vec<String>,
}

pub async fn create_root_key(
    app: &App,
    actor: &Actor,
    req: CreateRootKey,
) -> Result<(RootKey, String), ApiError> {
    let mut errors = Vec::new();
    check_name("name", &req.name, &mut errors);
    if req.scopes.is_empty() {
        errors.push(FieldError {
            field: "scopes".into(),
            message: "Grant at least one scope.".into(),
        });
    }
    check_scopes(root_scope_policy(), &req.scopes, false, &mut errors);
    done(errors)?;
    let secret = keyfmt::generate(ROOT_PREFIX);
    let key = RootKey {
        id: new_id("rtk_"),
        name: req.name.trim().to_owned(),
        start: keyfmt::start(&secret, ROOT_PREFIX),
        digest: keyfmt::digest(&secret).to_vec(),
        scopes: dedup(req.scopes),
        created_at: app.now_ms(),
        revoked_at: None,
        last_used_at: None,
    };
    app.store.create_root_key(&key).await?;
    actor.did(app, None, "root_key.created", &key.id);
    Ok((key, secret))
}

pub async fn revoke_root_key(app: &App, actor: &Actor, id: &str) -> Result<RootKey, ApiError> {
    let key = app
        .store
        .revoke_root_key(id, app.now_ms())
        .await
        .map_err(|e| ApiError::from_store(e, "root key"))?;
    app.forget_root_key(&key);
    actor.did(app, None, "root_key.revoked", &key.id);
    Ok(key)
}

// ------------------------------------------------------------ API keys

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    /// A configured key kind (default: the first kind that works in the instance's environment).
    pub kind: Option<String>,
    /// One of the kind's environments (default: the only one, or the instance's).
    pub environment: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// RFC 3339 time; or give `expires_in`.
    pub expires_at: Option<String>,
    pub expires_in: Option<DurationInput>,
    /// A JSON object returned by verify.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// The customer's own id for the key's owner; keys can be listed by it.
    pub external_id: Option<String>,
    /// The key's own rate limit (default: `[ratelimit] default`).
    pub ratelimit: Option<RateLimitInput>,
    /// CIDRs the key may be used from (default: anywhere).
    pub ip_allowlist: Option<Vec<String>>,
    /// Usage credits; each valid use spends one (default: unlimited).
    pub remaining: Option<i64>,
    /// Sets `remaining` back to `amount` every `interval`.
    pub refill: Option<RefillInput>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchKey {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// RFC 3339 time, or null to remove the expiry.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Option<String>>,
    pub expires_in: Option<DurationInput>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub external_id: Option<Option<String>>,
    /// null removes the key's own limit.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<RateLimitInput>)]
    pub ratelimit: Option<Option<RateLimitInput>>,
    /// `[]` allows any address.
    pub ip_allowlist: Option<Vec<String>>,
    /// null makes the key unlimited.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub remaining: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<RefillInput>)]
    pub refill: Option<Option<RefillInput>>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeKey {
    pub reason: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the old key keeps working (default 0: it stops now).
    pub grace_period: Option<DurationInput>,
}

fn check_expiry(
    now: i64,
    at: Option<&str>,
    within: Option<DurationInput>,
    errors: &mut Vec<FieldError>,
) -> Option<i64> {
    match (at, within) {
        (Some(_), Some(_)) => {
            errors.push(FieldError {
                field: "expires_in".into(),
                message: "Give `expires_at` or `expires_in`, not both.".into(),
            });
            None
        }
        (Some(text), None) => match parse_rfc3339(text) {
            Some(t) if t > now && t - now <= MAX_SECONDS * 1000 => Some(t),
            Some(_) => {
                errors.push(FieldError {
                    field: "expires_at".into(),
                    message: "Must be in the future and at most 10 years away.".into(),
                });
                None
            }
            None => {
                errors.push(FieldError {
                    field: "expires_at".into(),
                    message: "Must be an RFC 3339 time such as 2030-01-02T03:04:05Z.".into(),
                });
                None
            }
        },
        (None, Some(DurationInput(secs))) => {
            if (1..=MAX_SECONDS).contains(&secs) {
                Some(now + secs * 1000)
            } else {
                errors.push(FieldError {
                    field: "expires_in".into(),
                    message: format!(
                        "Must be between 1 second and {MAX_SECONDS} seconds (10 years)."
                    ),
                });
                None
            }
        }
        (None, None) => None,
    }
}

fn check_metadata(m: &serde_json::Value, errors: &mut Vec<FieldError>) {
    if !m.is_object() {
        errors.push(FieldError {
            field: "metadata".into(),
            message: "Must be a JSON object.".into(),
        });
    } else if serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX) > MAX_METADATA {
        errors.push(FieldError {
            field: "metadata".into(),
            message: format!("Must be at most {MAX_METADATA} bytes of JSON."),
        });
    }
}

fn check_external_id(v: &str, errors: &mut Vec<FieldError>) {
    if v.is_empty() || v.len() > MAX_NAME || v.chars().any(char::is_control) {
        errors.push(FieldError {
            field: "external_id".into(),
            message: format!("Must be 1 to {MAX_NAME} bytes, without control characters."),
        });
    }
}

pub(crate) fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
    v
}

/// A fresh id, secret, digest and start for a key with this prefix.
fn mint(kind_prefix: &str) -> (String, String, Vec<u8>, String) {
    let secret = keyfmt::generate(kind_prefix);
    let start = keyfmt::start(&secret, kind_prefix);
    let digest = keyfmt::digest(&secret).to_vec();
    (new_id("key_"), secret, digest, start)
}

pub async fn create_key(
    app: &App,
    actor: &Actor,
    org_id: &str,
    req: CreateKey,
) -> Result<(ApiKey, String), ApiError> {
    app.store
        .get_org(org_id)
        .await
        .map_err(|e| ApiError::from_store(e, "organization"))?;
    let now = app.now_ms();
    let mut errors = Vec::new();
    check_name("name", &req.name, &mut errors);
    let env = &app.config.environment;
    let kind = match &req.kind {
        Some(name) => app.kind(name),
        None => app
            .config
            .key_kinds
            .iter()
            .find(|k| k.environments.contains(env))
            .or(app.config.key_kinds.first()),
    };
    let Some(kind) = kind else {
        let names: Vec<&str> = app
            .config
            .key_kinds
            .iter()
            .map(|k| k.name.as_str())
            .collect();
        errors.push(FieldError {
            field: "kind".into(),
            message: format!("Unknown key kind; configured kinds: {}.", names.join(", ")),
        });
        return Err(ApiError::validation(errors));
    };
    let environment = match &req.environment {
        Some(e) if kind.environments.contains(e) => e.clone(),
        Some(_) => {
            errors.push(FieldError {
                field: "environment".into(),
                message: format!(
                    "Keys of kind `{}` work in: {}.",
                    kind.name,
                    kind.environments.join(", ")
                ),
            });
            String::new()
        }
        None if kind.environments.contains(env) => env.clone(),
        None => kind.environments.first().cloned().unwrap_or_default(),
    };
    check_scopes(
        &app.scopes,
        &req.scopes,
        kind.requires_explicit_scopes,
        &mut errors,
    );
    let expires_at = check_expiry(now, req.expires_at.as_deref(), req.expires_in, &mut errors);
    if let Some(m) = &req.metadata {
        check_metadata(m, &mut errors);
    }
    if let Some(x) = &req.external_id {
        check_external_id(x, &mut errors);
    }
    let ratelimit = req
        .ratelimit
        .as_ref()
        .and_then(|r| limits::check_ratelimit("ratelimit", r, &mut errors));
    let ip_allowlist = req
        .ip_allowlist
        .as_deref()
        .map(|l| limits::check_allowlist("ip_allowlist", l, &mut errors))
        .unwrap_or_default();
    let credits = limits::new_credits(req.remaining, req.refill.as_ref(), now, &mut errors);
    done(errors)?;
    let (id, secret, digest, start) = mint(&kind.prefix);
    let key = ApiKey {
        id,
        org_id: org_id.to_owned(),
        name: req.name.trim().to_owned(),
        kind: kind.name.clone(),
        environment,
        start,
        digest,
        scopes: dedup(req.scopes),
        external_id: req.external_id,
        metadata: req.metadata.unwrap_or_else(|| serde_json::json!({})),
        created_at: now,
        updated_at: now,
        expires_at,
        revoked_at: None,
        revoke_reason: None,
        replaced_by: None,
        rotated_from: None,
        last_used_at: None,
        ratelimit,
        ip_allowlist,
        credits,
        created_by: Some(actor.id.clone()),
    };
    app.store.create_key(&key).await?;
    actor.did(app, Some(&key.org_id), "key.created", &key.id);
    Ok((key, secret))
}

pub async fn get_key(app: &App, id: &str) -> Result<ApiKey, ApiError> {
    app.store
        .get_key(id)
        .await
        .map_err(|e| ApiError::from_store(e, "key"))
}

pub struct KeyListQuery {
    pub external_id: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Answers a page and the cursor of the next one.
pub async fn list_keys(
    app: &App,
    org_id: &str,
    q: KeyListQuery,
) -> Result<(Vec<ApiKey>, Option<String>), ApiError> {
    app.store
        .get_org(org_id)
        .await
        .map_err(|e| ApiError::from_store(e, "organization"))?;
    let limit = page_limit(q.limit)?;
    let cursor = q
        .cursor
        .as_deref()
        .map(crate::views::decode_cursor)
        .transpose()?;
    let mut rows = app
        .store
        .list_keys(&KeyQuery {
            org_id: org_id.to_owned(),
            external_id: q.external_id,
            limit: limit + 1,
            cursor,
        })
        .await?;
    let next = next_cursor(&mut rows, limit, |k| (k.created_at, k.id.as_str()));
    Ok((rows, next))
}

pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=200).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::field("limit", "Must be between 1 and 200.")),
    }
}

/// Trims the extra row fetched to learn whether another page exists.
pub fn next_cursor<T>(
    rows: &mut Vec<T>,
    limit: u32,
    key: impl Fn(&T) -> (i64, &str),
) -> Option<String> {
    if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| {
            let (ts, id) = key(r);
            crate::views::encode_cursor(ts, id)
        })
    } else {
        None
    }
}

/// The store page to ask for (one row more than shown, to learn whether
/// another page exists) and the number of rows to show.
pub fn page(limit: Option<u32>, cursor: Option<&str>) -> Result<(Page, u32), ApiError> {
    let limit = page_limit(limit)?;
    let cursor = cursor.map(crate::views::decode_cursor).transpose()?;
    Ok((
        Page {
            limit: limit + 1,
            cursor,
        },
        limit,
    ))
}

pub async fn patch_key(
    app: &App,
    actor: &Actor,
    id: &str,
    req: PatchKey,
) -> Result<ApiKey, ApiError> {
    let current = get_key(app, id).await?;
    let now = app.now_ms();
    let mut errors = Vec::new();
    if let Some(n) = &req.name {
        check_name("name", n, &mut errors);
    }
    if let Some(s) = &req.scopes {
        let explicit = app
            .kind(&current.kind)
            .is_some_and(|k| k.requires_explicit_scopes);
        check_scopes(&app.scopes, s, explicit, &mut errors);
    }
    if let Some(m) = &req.metadata {
        check_metadata(m, &mut errors);
    }
    if let Some(Some(x)) = &req.external_id {
        check_external_id(x, &mut errors);
    }
    let expires_at = match (&req.expires_at, req.expires_in) {
        (Some(None), None) => Some(None),
        (Some(None), Some(_)) => {
            errors.push(FieldError {
                field: "expires_in".into(),
                message: "Give `expires_at` or `expires_in`, not both.".into(),
            });
            None
        }
        (at, within) => {
            let at = at.as_ref().and_then(|a| a.as_deref());
            if at.is_none() && within.is_none() {
                None
            } else {
                check_expiry(now, at, within, &mut errors).map(Some)
            }
        }
    };
    let ratelimit = req
        .ratelimit
        .map(|r| r.and_then(|r| limits::check_ratelimit("ratelimit", &r, &mut errors)));
    let ip_allowlist = req
        .ip_allowlist
        .as_deref()
        .map(|l| limits::check_allowlist("ip_allowlist", l, &mut errors));
    let credits =
        limits::patched_credits(current.credits, req.remaining, req.refill, now, &mut errors);
    done(errors)?;
    let patch = KeyPatch {
        name: req.name.map(|n| n.trim().to_owned()),
        scopes: req.scopes.map(dedup),
        metadata: req.metadata,
        expires_at,
        external_id: req.external_id,
        ratelimit,
        ip_allowlist,
        credits,
        updated_at: now,
    };
    let key = app
        .store
        .update_key(id, &patch)
        .await
        .map_err(|e| ApiError::from_store(e, "key"))?;
    app.forget_key(&key);
    actor.did(app, Some(&key.org_id), "key.updated", &key.id);
    Ok(key)
}

pub async fn delete_key(app: &App, actor: &Actor, id: &str) -> Result<(), ApiError> {
    let key = get_key(app, id).await?;
    app.store
        .delete_key(id)
        .await
        .map_err(|e| ApiError::from_store(e, "key"))?;
    app.forget_key(&key);
    actor.did(app, Some(&key.org_id), "key.deleted", &key.id);
    Ok(())
}

pub async fn revoke_key(
    app: &App,
    actor: &Actor,
    id: &str,
    req: RevokeKey,
) -> Result<ApiKey, ApiError> {
    if let Some(r) = &req.reason
        && (r.len() > 500 || r.chars().any(char::is_control))
    {
        return Err(ApiError::field(
            "reason",
            "Must be at most 500 bytes, without control characters.",
        ));
    }
    let reason = req
        .reason
        .as_deref()
        .filter(|r| !r.trim().is_empty())
        .unwrap_or("revoked");
    let key = app
        .store
        .revoke_key(id, app.now_ms(), Some(reason))
        .await
        .map_err(|e| ApiError::from_store(e, "key"))?;
    app.forget_key(&key);
    actor.did(app, Some(&key.org_id), "key.revoked", &key.id);
    Ok(key)
}

/// Answers the new key (with its secret) and the old one as it now is.
pub async fn rotate_key(
    app: &App,
    actor: &Actor,
    id: &str,
    req: RotateKey,
) -> Result<(ApiKey, String, ApiKey), ApiError> {
    let old = get_key(app, id).await?;
    let grace = req.grace_period.map_or(0, |d| d.0);
    if !(0..=MAX_SECONDS).contains(&grace) {
        return Err(ApiError::field(
            "grace_period",
            format!("Must be between 0 and {MAX_SECONDS} seconds."),
        ));
    }
    let Some(kind) = app.kind(&old.kind) else {
        return Err(ApiError::new(
            latchkey_core::Code::Conflict,
            format!("The key's kind `{}` is no longer configured.", old.kind),
        ));
    };
    let now = app.now_ms();
    let (new_id_, secret, digest, start) = mint(&kind.prefix);
    let new = ApiKey {
        id: new_id_,
        start,
        digest,
        created_at: now,
        updated_at: now,
        revoked_at: None,
        revoke_reason: None,
        replaced_by: None,
        rotated_from: Some(old.id.clone()),
        last_used_at: None,
        ..old.clone()
    };
    let old_now = app
        .store
        .rotate_key(id, &new, now + grace * 1000, now)
        .await
        .map_err(|e| match e {
            latchkey_store::StoreError::Conflict(_) => ApiError::new(
                latchkey_core::Code::Conflict,
                "This key was already rotated or revoked; rotate its replacement instead.",
            ),
            other => ApiError::from_store(other, "key"),
        })?;
    app.forget_key(&old_now);
    actor.did(app, Some(&old_now.org_id), "key.rotated", &old_now.id);
    Ok((new, secret, old_now))
}

/// The root key a management request carries, once checked.
#[derive(Debug, Clone)]
pub struct Principal {
    pub root_key: Arc<crate::app::Cached<RootKey>>,
    /// The id of the request it came with (for the usage log).
    pub request_id: Option<String>,
}

impl Principal {
    /// This root key as the author of a change.
    pub fn actor(&self) -> Actor {
        Actor {
            id: self.root_key.id.clone(),
            request_id: self.request_id.clone(),
        }
    }

    /// 403 unless the root key holds `scope`.
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        let policy = root_scope_policy();
        if self
            .root_key
            .scopes
            .iter()
            .any(|g| policy.grant_matches(g, scope))
        {
            Ok(())
        } else {
            Err(ApiError::insufficient_scope(vec![scope.to_owned()]))
        }
    }
}
