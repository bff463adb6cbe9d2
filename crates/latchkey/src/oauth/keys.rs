//! The signing keys of access tokens, as every node holds them: the key
//! that signs (the newest not retired), and every key still published in
//! the JWKS (a retired key stays until the tokens it signed have expired).
//! Private keys are stored sealed with the master key. A change made by
//! any node (`latchkey signing-keys rotate`) reaches the others through
//! the change feed, which marks the ring stale; it is reloaded on next use.

use std::sync::Arc;

use latchkey_store::oauth::SigningKey;
use secrecy::ExposeSecret;
use tokio::sync::{Mutex, RwLock};

use crate::app::App;
use crate::error::ApiError;
use crate::jose::{self, Signer, SigningAlg, Verifier};

/// What a node signs and verifies with.
pub struct Keys {
    pub signer: Signer,
    pub verifier: Verifier,
    /// The published JWKS document, `{"keys": [...]}`.
    pub jwks: serde_json::Value,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
pub struct KeyRing {
    current: RwLock<Option<Arc<Keys>>>,
    /// One reload at a time.
    loading: Mutex<()>,
}

/// Associated data of a sealed private key: it opens as this key only.
fn context(kid: &str) -> String {
    format!("latchkey signing key {kid}")
}

/// How long a retired key stays published: the longest an access token
/// it signed can live, plus a margin for clocks and caches.
fn publish_for_ms(app: &App) -> i64 {
    let ttl = i64::try_from(app.config.oauth.access_token_ttl.0.as_millis()).unwrap_or(i64::MAX);
    ttl.saturating_add(10 * 60 * 1000)
}

/// A new signing key of the configured alg, sealed.
fn mint(app: &App) -> Result<SigningKey, ApiError> {
    let alg: SigningAlg = app
        .config
        .oauth
        .signing_alg
        .parse()
        .map_err(|_| ApiError::internal())?;
    let material = jose::generate(alg).map_err(|e| {
        tracing::error!(error = %e, "generating a signing key failed");
        ApiError::internal()
    })?;
    let sealed = app
        .master_key
        .encrypt(
            material.private_pkcs8.expose_secret(),
            context(&material.kid).as_bytes(),
        )
        .map_err(|e| {
            tracing::error!(error = %e, "sealing a signing key failed");
            ApiError::internal()
        })?;
    Ok(SigningKey {
        kid: material.kid.clone(),
        alg: alg.as_str().to_owned(),
        public_jwk: material.public_jwk.clone(),
        private_sealed: sealed,
        created_at: app.now_ms(),
        retired_at: None,
    })
}

/// Builds the ring from the stored keys (making the first one if there is
/// none): the newest unretired key signs; every key retired less than
/// [`publish_for_ms`] ago is published and verifies.
async fn load(app: &App) -> Result<Keys, ApiError> {
    let mut rows = app.store.list_signing_keys().await?;
    if !rows.iter().any(|k| k.retired_at.is_none()) {
        let first = mint(app)?;
        if app.store.add_first_signing_key(&first).await? {
            tracing::info!(kid = %first.kid, alg = %first.alg, "made the first signing key");
        }
        rows = app.store.list_signing_keys().await?;
    }
    let now = app.now_ms();
    let keep = publish_for_ms(app);
    let active = rows
        .iter()
        .find(|k| k.retired_at.is_none())
        .ok_or_else(ApiError::internal)?;
    let der = app
        .master_key
        .decrypt(&active.private_sealed, context(&active.kid).as_bytes())
        .map_err(|e| {
            tracing::error!(kid = %active.kid, error = %e, "cannot open the signing key: is this the master key it was sealed with?");
            ApiError::internal()
        })?;
    let alg: SigningAlg = active.alg.parse().map_err(|_| ApiError::internal())?;
    let signer = Signer::from_pkcs8(active.kid.clone(), alg, &der).map_err(|e| {
        tracing::error!(kid = %active.kid, error = %e, "unusable signing key");
        ApiError::internal()
    })?;
    let published: Vec<serde_json::Value> = rows
        .iter()
        .filter(|k| k.retired_at.is_none_or(|r| now.saturating_sub(r) < keep))
        .map(|k| k.public_jwk.clone())
        .collect();
    let verifier = Verifier::new(&published).map_err(|e| {
        tracing::error!(error = %e, "unusable published key");
        ApiError::internal()
    })?;
    Ok(Keys {
        signer,
        verifier,
        jwks: serde_json::json!({ "keys": published }),
    })
}

impl KeyRing {
    /// The keys, loaded on first use and after any change.
    pub async fn get(&self, app: &App) -> Result<Arc<Keys>, ApiError> {
        let stale = app.take_signing_keys_stale();
        if !stale && let Some(k) = self.current.read().await.as_ref() {
            return Ok(k.clone());
        }
        let _one = self.loading.lock().await;
        if !stale && let Some(k) = self.current.read().await.as_ref() {
            return Ok(k.clone());
        }
        let keys = Arc::new(load(app).await?);
        *self.current.write().await = Some(keys.clone());
        Ok(keys)
    }
}

/// `latchkey signing-keys rotate`: a new key signs from now on; the old
/// one stays published until its tokens have expired, then is removed.
/// Answers the new key's id.
pub async fn rotate(app: &App) -> Result<String, ApiError> {
    let key = mint(app)?;
    app.store.rotate_signing_key(&key).await?;
    let pruned = app
        .store
        .prune_signing_keys(app.now_ms().saturating_sub(publish_for_ms(app)))
        .await?;
    app.mark_signing_keys_stale();
    tracing::info!(kid = %key.kid, alg = %key.alg, pruned, "rotated the signing key");
    Ok(key.kid)
}
