//! latchkey's storage: one [`Store`] trait, two real implementations
//! (embedded SQLite in WAL mode, PostgreSQL). Plain SQL, runtime queries,
//! the same statements on both backends wherever the dialects agree.
//!
//! Times are stored as integer milliseconds since the Unix epoch (UTC);
//! the HTTP layer formats them as RFC 3339. Secrets never reach this crate:
//! keys arrive as SHA-256 digests.

use async_trait::async_trait;

pub mod changes;
mod common;
pub mod console;
mod logs;
pub mod oauth;
mod pg_lookup;
mod postgres;
mod sql;
mod sqlite;
mod sqlite_read;
pub mod testing;

pub use changes::{Change, ChangeSink};
pub use console::ConsoleStore;
pub use oauth::OAuthStore;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Errors a store call can answer. `NotFound` and `Conflict` are answers,
/// `Backend` is a failure (logged, shown as a 500 without its cause).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Backend(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub use logs::{ActionEvent, DecisionEvent, LogEntry, LogEvent, LogQuery};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

/// A management key (`lk_root_...`), valid across the whole instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootKey {
    pub id: String,
    pub name: String,
    /// Prefix and first 4 body characters, for display.
    pub start: String,
    /// SHA-256 of the whole key.
    pub digest: Vec<u8>,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// An API key issued to an organization.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub org_id: String,
    pub name: String,
    /// Name of the configured key kind (`live`, `test`, `restricted`, ...).
    pub kind: String,
    pub environment: String,
    pub start: String,
    pub digest: Vec<u8>,
    pub scopes: Vec<String>,
    pub external_id: Option<String>,
    /// A JSON object.
    pub metadata: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: Option<i64>,
    /// When the key stops working: set at revocation (now) or rotation
    /// (now + grace period). A key with `revoked_at <= now` is revoked.
    pub revoked_at: Option<i64>,
    pub revoke_reason: Option<String>,
    /// The key that replaced this one at rotation.
    pub replaced_by: Option<String>,
    /// The key this one replaced at rotation.
    pub rotated_from: Option<String>,
    pub last_used_at: Option<i64>,
    /// The key's own rate limit (else the configured default applies).
    pub ratelimit: Option<KeyRateLimit>,
    /// CIDRs the key may be used from; empty = anywhere.
    pub ip_allowlist: Vec<String>,
    /// Usage credits; `None` = unlimited.
    pub credits: Option<Credits>,
    /// Who created it: a console user (`usr_...`), a root key (`rtk_...`)
    /// or `cli`; `None` for keys made before this was recorded. A
    /// rotation's new key keeps the old key's.
    pub created_by: Option<String>,
}

/// A key's own rate limit: `limit` requests per `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRateLimit {
    pub limit: i64,
    pub window_ms: i64,
}

/// Usage credits: each valid use spends one; at every `refill.interval_ms`
/// after `refilled_at`, `remaining` is set back to `refill.amount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credits {
    pub remaining: i64,
    pub refill: Option<Refill>,
    pub refilled_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    pub amount: i64,
    pub interval_ms: i64,
}

/// What spending a credit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// One credit spent; this many are left.
    Spent(i64),
    /// None left.
    Exhausted,
    /// The key has no credits (any more): nothing to spend.
    Unlimited,
}

/// Filters and page for listing keys. Newest first; `cursor` is the
/// `(created_at, id)` of the last row of the previous page.
#[derive(Debug, Clone, Default)]
pub struct KeyQuery {
    pub org_id: String,
    pub external_id: Option<String>,
    pub limit: u32,
    pub cursor: Option<(i64, String)>,
}

/// Fields a PATCH may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub metadata: Option<serde_json::Value>,
    /// `Some(None)` clears the expiry.
    pub expires_at: Option<Option<i64>>,
    pub external_id: Option<Option<String>>,
    /// `Some(None)` removes the key's own limit.
    pub ratelimit: Option<Option<KeyRateLimit>>,
    pub ip_allowlist: Option<Vec<String>>,
    /// `Some(None)` makes the key unlimited.
    pub credits: Option<Option<Credits>>,
    pub updated_at: i64,
}

/// Page of a plain list (orgs, root keys): newest first.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: u32,
    pub cursor: Option<(i64, String)>,
}

#[async_trait]
pub trait Store: oauth::OAuthStore + console::ConsoleStore + Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;
    /// Runs the pending migrations.
    async fn migrate(&self) -> Result<()>;
    /// A cheap round trip, for `/readyz`.
    async fn ping(&self) -> Result<()>;

    async fn create_org(&self, org: &Org) -> Result<()>;
    async fn get_org(&self, id: &str) -> Result<Org>;
    async fn list_orgs(&self, page: &Page) -> Result<Vec<Org>>;

    async fn create_root_key(&self, key: &RootKey) -> Result<()>;
    async fn root_key_by_digest(&self, digest: &[u8]) -> Result<Option<RootKey>>;
    async fn list_root_keys(&self, page: &Page) -> Result<Vec<RootKey>>;
    /// Revokes at `at` unless already revoked (idempotent); answers the row.
    async fn revoke_root_key(&self, id: &str, at: i64) -> Result<RootKey>;
    async fn count_root_keys(&self) -> Result<i64>;

    /// `Conflict` if the digest already exists.
    async fn create_key(&self, key: &ApiKey) -> Result<()>;
    async fn key_by_digest(&self, digest: &[u8]) -> Result<Option<ApiKey>>;
    async fn get_key(&self, id: &str) -> Result<ApiKey>;
    async fn list_keys(&self, q: &KeyQuery) -> Result<Vec<ApiKey>>;
    /// Applies the patch in one statement and answers the updated row.
    async fn update_key(&self, id: &str, patch: &KeyPatch) -> Result<ApiKey>;
    /// Sets `revoked_at = at` and the reason unless the key already stops
    /// working at or before `at` (then it is left alone: idempotent).
    /// Answers the row as it now is.
    async fn revoke_key(&self, id: &str, at: i64, reason: Option<&str>) -> Result<ApiKey>;
    /// In one transaction: marks `old_id` as replaced by `new_key.id`,
    /// working until `old_until`, and inserts `new_key`. `Conflict` if the
    /// old key was already rotated or is revoked (as of `now`); `NotFound`
    /// if it does not exist. Answers the old key as it now is.
    async fn rotate_key(
        &self,
        old_id: &str,
        new_key: &ApiKey,
        old_until: i64,
        now: i64,
    ) -> Result<ApiKey>;
    async fn delete_key(&self, id: &str) -> Result<()>;
    /// Spends one credit of key `id` at `now`, refilling first if a refill
    /// is due; atomic, so concurrent spends never take more than there is.
    async fn spend_credit(&self, id: &str, now: i64) -> Result<Spend>;
    /// Records uses in one batch: `last_used_at = max(last_used_at, at)`.
    async fn touch_keys(&self, uses: &[(String, i64)]) -> Result<()>;
    async fn touch_root_keys(&self, uses: &[(String, i64)]) -> Result<()>;
    /// Writes a batch of usage-log entries, a few multi-row inserts for
    /// the whole batch. An entry whose id already exists fails the batch
    /// with `Conflict`.
    async fn insert_logs(&self, entries: &[LogEntry]) -> Result<()>;
    /// An organization's log entries, newest first (see [`LogQuery`]).
    async fn list_logs(&self, q: &LogQuery) -> Result<Vec<LogEntry>>;
    /// Deletes every entry older than `before` (ms), a chunk at a time,
    /// and the hourly counts of the hours that ended by then; answers how
    /// many entries went.
    async fn prune_logs(&self, before: i64) -> Result<u64>;
    /// Follows the changes made to key records by any node, forever,
    /// telling `sink` (see [`changes`]).
    async fn follow_changes(&self, sink: std::sync::Arc<dyn ChangeSink>);
}

/// Opens the store named by a `database_url`: `sqlite://path` (the file is
/// created if missing) or `postgres://...`.
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PgStore::connect(url).await?))
    } else {
        Ok(std::sync::Arc::new(SqliteStore::connect(url).await?))
    }
}
