//! The application: config, store, caches and the background recorders
//! of key uses and of the usage log, shared by the HTTP server and the CLI.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use latchkey_core::scope::ScopePolicy;
use latchkey_store::oauth::{AccessToken, Client, Grant};
use latchkey_store::{ApiKey, Change, ChangeSink, LogEntry, RootKey, Store, StoreError};
use tokio::sync::mpsc;

use crate::config::{Config, KeyKind};
use crate::crypto::MasterKey;
use crate::logs::{ActionLog, DecisionLog};
use crate::ratelimit::{Limiter, MemoryLimiter, RedisLimiter};

/// Milliseconds since the Unix epoch, from a clock that can be replaced.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let now = time::OffsetDateTime::now_utc();
        i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }
}

/// A use of a key, recorded off the request path.
#[derive(Debug, Clone)]
pub enum Use {
    Key(String, i64),
    Root(String, i64),
}

/// A record in a node's cache, with the time of its last use known to be
/// recorded: a key sends at most one use per [`USE_PRECISION_MS`] to the
/// recorder, rather than one per request, and none while the stored
/// `last_used_at` is that recent.
#[derive(Debug)]
pub struct Cached<T> {
    pub record: T,
    use_sent_at: AtomicI64,
}

/// `last_used_at` is kept to this precision: a key used all the time is
/// written once every five minutes, not once a request. The writes a node
/// makes grow with the keys in use divided by this (100,000 keys in use:
/// 333 row updates a second); the exact time of every use is in the
/// usage log.
pub const USE_PRECISION_MS: i64 = 5 * 60_000;

impl<T> Cached<T> {
    /// `last_used_at`: the record's stored last use, if any.
    pub fn new(record: T, last_used_at: Option<i64>) -> Self {
        Self {
            record,
            use_sent_at: AtomicI64::new(last_used_at.unwrap_or(i64::MIN)),
        }
    }

    /// Whether a use at `now` should be sent: true at most once per
    /// [`USE_PRECISION_MS`] for this cached record.
    pub fn should_send_use(&self, now: i64) -> bool {
        let last = self.use_sent_at.load(Ordering::Relaxed);
        now.saturating_sub(last) >= USE_PRECISION_MS
            && self
                .use_sent_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

impl<T> std::ops::Deref for Cached<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.record
    }
}

pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub scopes: ScopePolicy,
    pub master_key: MasterKey,
    pub clock: Arc<dyn Clock>,
    /// The compiled `[[routes]]`.
    pub routes: latchkey_core::route::RouteTable,
    /// The built-in proxy, when `[proxy] upstream` is set.
    pub proxy: Option<crate::http::proxy::Proxy>,
    /// Where rate limits are counted (`[ratelimit] backend`).
    pub limiter: Arc<dyn Limiter>,
    /// Client addresses over `failed_auth_per_ip`, until when (ms): a
    /// node that saw the limit reached refuses them without asking the
    /// limiter, so valid requests cost no extra round trip.
    pub blocked_ips: moka::sync::Cache<std::net::IpAddr, i64>,
    /// `trusted_proxies`, parsed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The keys access tokens are signed with.
    pub keys: crate::oauth::keys::KeyRing,
    caches: Arc<Caches>,
    uses: mpsc::Sender<Use>,
    /// The usage log's queue (see [`crate::logs`]).
    logs: mpsc::Sender<LogEntry>,
    /// The task following the change feed into `caches`.
    feed: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.feed.abort();
    }
}

/// How many digests [`SeenOnce`] holds (8 bytes each).
const SEEN_SLOTS: usize = 1 << 16;

/// A doorkeeper in front of a cache (as in TinyLFU): which digests were
/// seen once, in a fixed table of tags, without allocating. A slot holds
/// the last digest that fell in it, so a digest seen twice with many
/// others between may be taken for new: it is then only verified once
/// more.
pub struct SeenOnce {
    slots: Box<[AtomicU64]>,
}

impl SeenOnce {
    /// `slots` is rounded up to a power of two.
    pub fn new(slots: usize) -> Self {
        let n = slots.max(1).next_power_of_two();
        Self {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Whether `digest` was seen before; marks it seen.
    pub fn seen_before(&self, digest: &[u8; 32]) -> bool {
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(digest.get(at..at + 8).unwrap_or(&[0; 8]));
            u64::from_le_bytes(b)
        };
        // The slot from one word, the tag from another (never 0, the
        // empty slot).
        let mask = self.slots.len() - 1;
        let Some(slot) = self.slots.get(usize::try_from(word(0)).unwrap_or(0) & mask) else {
            return false;
        };
        let tag = word(8) | 1;
        slot.swap(tag, Ordering::Relaxed) == tag
    }
}

/// The hasher of the caches below: foldhash, seeded per process (the
/// hashbrown crate's default). moka defaults to SipHash, and its table rehashes every entry as
/// records expire and new ones come in: with a cold cache, SipHash in those
/// rehashes was 2.8% of the server's CPU. The keys are digests and ids of
/// records that exist, not strings a caller chooses freely (the caches of
/// caller-chosen keys, blocked IPs and rate-limit slots, keep SipHash).
type CacheHasher = foldhash::fast::RandomState;
type Cache<K, V> = moka::sync::Cache<K, V, CacheHasher>;

/// A cache of at most `capacity` entries, each kept `ttl` at most.
fn cache<K, V>(capacity: u64, ttl: Duration) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    moka::sync::Cache::builder()
        .max_capacity(capacity)
        .time_to_live(ttl)
        .build_with_hasher(CacheHasher::default())
}

/// This node's caches of key records. A record stays until the change feed
/// says it changed (through any node), the feed is lost, or the cache
/// lifetime (`cache.ttl`, the backstop) ends.
pub struct Caches {
    keys: Cache<[u8; 32], Arc<Cached<ApiKey>>>,
    roots: Cache<[u8; 32], Arc<Cached<RootKey>>>,
    /// OAuth clients by id (token endpoint, token checks).
    clients: Cache<String, Arc<Client>>,
    /// Grants by id: whether the tokens issued from one still hold.
    grants: Cache<String, Arc<Grant>>,
    /// Opaque access tokens by digest.
    access_tokens: Cache<[u8; 32], Arc<AccessToken>>,
    /// Revoked JWT ids (with their expiry, ms): every one not yet
    /// expired, loaded from the store and kept by the change feed, so
    /// checking a token costs no lookup. Valid while `jtis_loaded`.
    revoked_jtis: Cache<String, i64>,
    jtis_loaded: AtomicBool,
    jtis_loading: tokio::sync::Mutex<()>,
    /// Set when the signing keys changed: reloaded before the next use.
    signing_keys_stale: AtomicBool,
    /// JWT access tokens whose signature and claims were checked, by the
    /// SHA-256 of the token: a token used for many requests is verified
    /// once per node. Expiry, revocation, the grant and the client are
    /// still checked on every use.
    verified: Cache<[u8; 32], Arc<crate::jose::AccessClaims>>,
    /// Client-signed JWTs whose signature this node checked, by the
    /// SHA-256 of the token, with the client record it held for: a token
    /// a client reuses is verified once per node. The claims (time
    /// included) are checked on every use.
    verified_jwts: Cache<[u8; 32], Arc<VerifiedJwt>>,
    /// The client JWTs seen once: a token enters `verified_jwts` on its
    /// second use, so that tokens signed for one request each (as many
    /// clients do) cost no cache entry.
    jwts_seen: SeenOnce,
    /// The keys each client's JWTs are verified with, built from the
    /// client record they were read from (a changed record builds anew).
    client_keys: Cache<String, Arc<ClientJwtKeys>>,
    /// Bumped whenever a cached record is forgotten, so that a cache fill
    /// that read the store before a change can tell and not cache what it
    /// read (see [`App::cached`]).
    generation: AtomicU64,
    /// Set while the change feed is down: answers come from the store.
    bypass: AtomicBool,
}

impl Caches {
    fn forget(&self, change: Change) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        match change {
            Change::ApiKey(d) => self.keys.invalidate(&d),
            Change::RootKey(d) => self.roots.invalidate(&d),
            Change::Client(id) => {
                self.client_keys.invalidate(&id);
                self.clients.invalidate(&id);
            }
            Change::Grant(id) => self.grants.invalidate(&id),
            Change::AccessToken(d) => self.access_tokens.invalidate(&d),
            // Its expiry is not in the notice: kept until the next reload.
            Change::RevokedJti(jti) => self.revoked_jtis.insert(jti, i64::MAX),
            Change::SigningKeys => {
                self.signing_keys_stale.store(true, Ordering::Release);
                self.verified.invalidate_all();
            }
        }
    }

    fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.keys.invalidate_all();
        self.roots.invalidate_all();
        self.clients.invalidate_all();
        self.grants.invalidate_all();
        self.access_tokens.invalidate_all();
        self.verified.invalidate_all();
        self.client_keys.invalidate_all();
        self.verified_jwts.invalidate_all();
        self.signing_keys_stale.store(true, Ordering::Release);
        // Revocations may have been missed: reload before trusting the set.
        self.jtis_loaded.store(false, Ordering::Release);
    }
}

impl ChangeSink for Caches {
    fn changed(&self, change: Change) {
        metrics::counter!("latchkey_cache_invalidations_total").increment(1);
        self.forget(change);
    }

    fn lost(&self) {
        self.bypass.store(true, Ordering::Release);
        self.forget_all();
        metrics::gauge!("latchkey_change_feed_up").set(0.0);
    }

    fn resumed(&self) {
        self.forget_all();
        self.bypass.store(false, Ordering::Release);
        metrics::gauge!("latchkey_change_feed_up").set(1.0);
    }
}

/// A client JWT whose signature held for `client`: its claims.
pub struct VerifiedJwt {
    pub client: Arc<Client>,
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// A client's JWT verification keys, and the record they came from.
pub struct ClientJwtKeys {
    client: Arc<Client>,
    /// `None`: the client is not set up for client-signed JWTs.
    pub keys: Option<crate::client_jwt::ClientKeys>,
}

/// Longest wait before a recorded use reaches the database.
const USE_FLUSH_EVERY: Duration = Duration::from_secs(1);
const USE_QUEUE: usize = 65_536;

impl App {
    /// Builds the app and starts the tasks that write `last_used_at` and
    /// the usage log in batches. The returned handle finishes once the app
    /// is dropped and the last batches are written.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        master_key: MasterKey,
    ) -> (Arc<App>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(USE_QUEUE);
        let (log_tx, log_rx) = mpsc::channel(crate::logs::LOG_QUEUE);
        let ttl = config.cache.ttl.0;
        let cap = config.cache.capacity;
        let caches = Arc::new(Caches {
            keys: cache(cap, ttl),
            roots: cache(10_000, ttl),
            clients: cache(cap, ttl),
            grants: cache(cap, ttl),
            access_tokens: cache(cap, ttl),
            revoked_jtis: moka::sync::Cache::builder().build_with_hasher(CacheHasher::default()),
            verified: cache(cap, config.oauth.access_token_ttl.0),
            verified_jwts: cache(
                cap,
                config.jwt_auth.max_lifetime.0 + config.jwt_auth.leeway.0,
            ),
            jwts_seen: SeenOnce::new(SEEN_SLOTS),
            client_keys: cache(cap, ttl),
            jtis_loaded: AtomicBool::new(false),
            jtis_loading: tokio::sync::Mutex::new(()),
            signing_keys_stale: AtomicBool::new(true),
            generation: AtomicU64::new(0),
            // Until the feed follows changes, nothing is cached.
            bypass: AtomicBool::new(true),
        });
        let feed = {
            let store = store.clone();
            let sink: Arc<dyn ChangeSink> = caches.clone();
            tokio::spawn(async move { store.follow_changes(sink).await })
        };
        let limiter = limiter(&config);
        let trusted_proxies = config
            .trusted_proxies
            .iter()
            .filter_map(|p| crate::limits::parse_net(p))
            .collect();
        let app = Arc::new(App {
            limiter,
            blocked_ips: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            trusted_proxies,
            keys: Default::default(),
            scopes: config.scope_policy(),
            routes: config.route_table(),
            proxy: crate::http::proxy::Proxy::new(&config.proxy),
            config,
            store: store.clone(),
            master_key,
            clock: Arc::new(SystemClock),
            caches,
            uses: tx,
            logs: log_tx,
            feed,
        });
        let uses = tokio::spawn(record_uses(store.clone(), rx));
        let logs = tokio::spawn(crate::logs::record(store, log_rx));
        let task = tokio::spawn(async move {
            let _ = uses.await;
            let _ = logs.await;
        });
        (app, task)
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn kind(&self, name: &str) -> Option<&KeyKind> {
        self.config.key_kinds.iter().find(|k| k.name == name)
    }

    /// Records a use without waiting; under overload a use is dropped
    /// rather than slowing the request (it only feeds `last_used_at`).
    pub fn record_use(&self, u: Use) {
        if self.uses.try_send(u).is_err() {
            metrics::counter!("latchkey_dropped_uses_total").increment(1);
        }
    }

    /// Logs a decision on a presented credential, without waiting: the
    /// entry is queued for the background writer, or dropped (and counted
    /// in `latchkey_dropped_logs_total`) when the queue is full. The path
    /// loses its query and the user agent is cut to 256 characters here.
    pub fn log_decision(&self, d: DecisionLog) {
        // A decision that found no key belongs to no organization: no log
        // could list it, so it is not written (it is counted in
        // `latchkey_decisions_total`). Garbage sent to the API costs no
        // database write.
        if d.org_id.is_none() {
            return;
        }
        self.queue_log(crate::logs::decision_entry(d, self.now_ms()));
    }

    /// Logs a management action, without waiting (as [`App::log_decision`]).
    pub fn log_action(&self, a: ActionLog) {
        self.queue_log(crate::logs::action_entry(a, self.now_ms()));
    }

    fn queue_log(&self, entry: LogEntry) {
        if self.logs.try_send(entry).is_err() {
            crate::logs::count_dropped(1, "queue_full");
        }
    }

    /// A key record by digest: from this node's cache, else from the store.
    pub async fn api_key(
        &self,
        digest: [u8; 32],
    ) -> Result<Option<Arc<Cached<ApiKey>>>, StoreError> {
        self.cached(
            &self.caches.keys,
            digest,
            |k| k.last_used_at,
            || self.store.key_by_digest(&digest),
        )
        .await
    }

    /// A root key record by digest: from this node's cache, else from the store.
    pub async fn root_key(
        &self,
        digest: [u8; 32],
    ) -> Result<Option<Arc<Cached<RootKey>>>, StoreError> {
        self.cached(
            &self.caches.roots,
            digest,
            |k| k.last_used_at,
            || self.store.root_key_by_digest(&digest),
        )
        .await
    }

    /// [`by_id`] for key records, which carry when their last use was sent.
    async fn cached<T, F, Fut>(
        &self,
        cache: &Cache<[u8; 32], Arc<Cached<T>>>,
        digest: [u8; 32],
        last_used: fn(&T) -> Option<i64>,
        fetch: F,
    ) -> Result<Option<Arc<Cached<T>>>, StoreError>
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, StoreError>>,
    {
        by_id(&self.caches, cache, digest, || async {
            Ok(fetch().await?.map(|r| {
                let used = last_used(&r);
                Cached::new(r, used)
            }))
        })
        .await
    }

    /// Drops the cached record of a key after a change through this node
    /// has been written (the change feed tells the other nodes, and this
    /// one too, a moment later).
    pub fn forget_key(&self, key: &ApiKey) {
        if let Ok(d) = <[u8; 32]>::try_from(key.digest.as_slice()) {
            self.caches.forget(Change::ApiKey(d));
        }
    }

    pub fn forget_root_key(&self, key: &RootKey) {
        if let Ok(d) = <[u8; 32]>::try_from(key.digest.as_slice()) {
            self.caches.forget(Change::RootKey(d));
        }
    }

    /// Whether the signing keys changed since last asked.
    pub fn take_signing_keys_stale(&self) -> bool {
        self.caches.signing_keys_stale.swap(false, Ordering::AcqRel)
    }

    pub fn mark_signing_keys_stale(&self) {
        self.caches
            .signing_keys_stale
            .store(true, Ordering::Release);
    }

    /// An OAuth client by id: from this node's cache, else from the store.
    pub async fn client(&self, id: &str) -> Result<Option<Arc<Client>>, StoreError> {
        let store = &self.store;
        by_id(
            &self.caches,
            &self.caches.clients,
            id.to_owned(),
            || async {
                match store.get_client(id).await {
                    Ok(c) => Ok(Some(c)),
                    Err(StoreError::NotFound) => Ok(None),
                    Err(e) => Err(e),
                }
            },
        )
        .await
    }

    /// A grant by id: from this node's cache, else from the store.
    pub async fn grant(&self, id: &str) -> Result<Option<Arc<Grant>>, StoreError> {
        let store = &self.store;
        by_id(&self.caches, &self.caches.grants, id.to_owned(), || async {
            match store.get_grant(id).await {
                Ok(g) => Ok(Some(g)),
                Err(StoreError::NotFound) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// An opaque access token by digest: from this node's cache, else
    /// from the store.
    pub async fn access_token(
        &self,
        digest: [u8; 32],
    ) -> Result<Option<Arc<AccessToken>>, StoreError> {
        let store = &self.store;
        by_id(&self.caches, &self.caches.access_tokens, digest, || {
            store.access_token_by_digest(&digest)
        })
        .await
    }

    /// Whether a JWT access token's id was revoked: from this node's set
    /// of revoked ids (loaded once, then kept by the change feed), or from
    /// the store while the feed is down.
    pub async fn jti_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let c = &self.caches;
        if c.bypass.load(Ordering::Acquire) {
            return self.store.is_jti_revoked(jti).await;
        }
        if !c.jtis_loaded.load(Ordering::Acquire) {
            let _one = c.jtis_loading.lock().await;
            if !c.jtis_loaded.load(Ordering::Acquire) {
                // Set first: a revocation arriving during the load is
                // inserted by the feed and kept.
                c.jtis_loaded.store(true, Ordering::Release);
                match self.store.revoked_jtis(self.now_ms()).await {
                    Ok(rows) => {
                        for (jti, exp) in rows {
                            c.revoked_jtis.insert(jti, exp);
                        }
                    }
                    Err(e) => {
                        c.jtis_loaded.store(false, Ordering::Release);
                        return Err(e);
                    }
                }
            }
        }
        Ok(c.revoked_jtis.contains_key(jti))
    }

    /// The claims of a JWT access token this node verified before.
    pub fn verified_token(&self, digest: &[u8; 32]) -> Option<Arc<crate::jose::AccessClaims>> {
        if self.caches.bypass.load(Ordering::Acquire) {
            return None;
        }
        self.caches.verified.get(digest)
    }

    pub fn remember_verified(&self, digest: [u8; 32], claims: Arc<crate::jose::AccessClaims>) {
        self.caches.verified.insert(digest, claims);
    }

    /// Records a revoked JWT id here at once (the feed tells other nodes).
    pub fn note_revoked_jti(&self, jti: &str, exp_ms: i64) {
        self.caches.revoked_jtis.insert(jti.to_owned(), exp_ms);
    }

    /// The keys `client`'s JWTs are verified with (`None` when it has no
    /// `jwt_auth`): built once per client record, the HS256 secret
    /// unsealed with the master key then.
    pub fn client_jwt_keys(&self, client: &Arc<Client>) -> Result<Arc<ClientJwtKeys>, String> {
        if let Some(hit) = self.caches.client_keys.get(&client.id)
            && Arc::ptr_eq(&hit.client, client)
        {
            return Ok(hit);
        }
        use crate::client_jwt::{ClientAlg, ClientKeys};
        let keys = match client.jwt_auth_alg.as_deref().and_then(ClientAlg::parse) {
            None => None,
            Some(ClientAlg::HS256) => match &client.secret_sealed {
                None => None,
                Some(sealed) => {
                    let context = crate::oauth::manage::secret_context(&client.id);
                    let secret = secrecy::zeroize::Zeroizing::new(
                        self.master_key.decrypt(sealed, context.as_bytes())?,
                    );
                    Some(ClientKeys::hmac(&client.id, &secret))
                }
            },
            Some(alg) => client
                .jwks
                .as_ref()
                .and_then(|jwks| ClientKeys::public(&client.id, alg, jwks)),
        };
        let entry = Arc::new(ClientJwtKeys {
            client: client.clone(),
            keys,
        });
        self.caches
            .client_keys
            .insert(client.id.clone(), entry.clone());
        Ok(entry)
    }

    /// A client JWT this node verified before (none while the change
    /// feed is down: the client record may have changed unseen).
    pub fn verified_client_jwt(&self, digest: &[u8; 32]) -> Option<Arc<VerifiedJwt>> {
        if self.caches.bypass.load(Ordering::Acquire) {
            return None;
        }
        self.caches.verified_jwts.get(digest)
    }

    /// Keeps a verified client JWT for its next uses, from its second
    /// verification on (see [`SeenOnce`]).
    pub fn remember_client_jwt(
        &self,
        digest: [u8; 32],
        verified: impl FnOnce() -> Arc<VerifiedJwt>,
    ) {
        if self.caches.jwts_seen.seen_before(&digest) {
            self.caches.verified_jwts.insert(digest, verified());
        }
    }

    pub fn forget_client(&self, id: &str) {
        self.caches.forget(Change::Client(id.to_owned()));
    }

    pub fn forget_grant(&self, id: &str) {
        self.caches.forget(Change::Grant(id.to_owned()));
    }

    /// Forgets every cached grant here at once, for a change that revoked
    /// grants whose ids it does not know (a withdrawn consent, a deleted
    /// user); the feed tells other nodes grant by grant.
    pub fn forget_grants(&self) {
        self.caches.generation.fetch_add(1, Ordering::AcqRel);
        self.caches.grants.invalidate_all();
    }

    /// Forgets an opaque access token here at once (the feed tells other
    /// nodes).
    pub fn forget_access_token(&self, digest: [u8; 32]) {
        self.caches.forget(Change::AccessToken(digest));
    }
}

/// Answers from `cache`, else runs `fetch` and caches what it read, unless
/// a change was made through this node since the read began: the record
/// may predate it (the generation is read before the store and checked
/// again after the insert, for a change landing between). While the change
/// feed is down, answers straight from the store.
async fn by_id<K, V, F, Fut>(
    caches: &Caches,
    cache: &Cache<K, Arc<V>>,
    key: K,
    fetch: F,
) -> Result<Option<Arc<V>>, StoreError>
where
    K: std::hash::Hash + Eq + Send + Sync + Clone + 'static,
    V: Send + Sync + 'static,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Option<V>, StoreError>>,
{
    if caches.bypass.load(Ordering::Acquire) {
        return Ok(fetch().await?.map(Arc::new));
    }
    if let Some(hit) = cache.get(&key) {
        return Ok(Some(hit));
    }
    let generation = caches.generation.load(Ordering::Acquire);
    let Some(record) = fetch().await? else {
        return Ok(None);
    };
    let entry = Arc::new(record);
    if caches.generation.load(Ordering::Acquire) == generation {
        cache.insert(key.clone(), entry.clone());
        if caches.generation.load(Ordering::Acquire) != generation {
            cache.invalidate(&key);
        }
    }
    Ok(Some(entry))
}

/// The configured rate-limit backend. Redis is connected lazily, so a node
/// starts (and applies `on_redis_failure`) while Redis is down.
fn limiter(config: &Config) -> Arc<dyn Limiter> {
    let r = &config.ratelimit;
    if r.backend == "redis" {
        match RedisLimiter::connect_lazy(&r.redis_url, r.on_redis_failure, r.redis_timeout.0) {
            Ok(l) => return Arc::new(l),
            Err(e) => {
                tracing::error!(error = %e, "rate limits: cannot use Redis; counting in memory")
            }
        }
    }
    Arc::new(MemoryLimiter::new())
}

async fn record_uses(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Use>) {
    let mut keys: HashMap<String, i64> = HashMap::new();
    let mut roots: HashMap<String, i64> = HashMap::new();
    let mut tick = tokio::time::interval(USE_FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            u = rx.recv() => match u {
                Some(Use::Key(id, at)) => {
                    let e = keys.entry(id).or_insert(at);
                    *e = (*e).max(at);
                }
                Some(Use::Root(id, at)) => {
                    let e = roots.entry(id).or_insert(at);
                    *e = (*e).max(at);
                }
                None => {
                    flush(&*store, &mut keys, &mut roots).await;
                    return;
                }
            },
            _ = tick.tick() => flush(&*store, &mut keys, &mut roots).await,
        }
        if keys.len() + roots.len() >= 1000 {
            flush(&*store, &mut keys, &mut roots).await;
        }
    }
}

async fn flush(
    store: &dyn Store,
    keys: &mut HashMap<String, i64>,
    roots: &mut HashMap<String, i64>,
) {
    if !keys.is_empty() {
        let batch: Vec<(String, i64)> = keys.drain().collect();
        if let Err(e) = store.touch_keys(&batch).await {
            tracing::warn!(error = %e, n = batch.len(), "could not record key uses");
        }
    }
    if !roots.is_empty() {
        let batch: Vec<(String, i64)> = roots.drain().collect();
        if let Err(e) = store.touch_root_keys(&batch).await {
            tracing::warn!(error = %e, n = batch.len(), "could not record root key uses");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SeenOnce;

    fn digest(n: u64) -> [u8; 32] {
        let mut d = [0u8; 32];
        d[..8].copy_from_slice(&n.to_le_bytes());
        d[8..16].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        d
    }

    #[test]
    fn a_digest_counts_as_seen_from_its_second_sight() {
        let seen = SeenOnce::new(1000);
        assert_eq!(seen.slots.len(), 1024);
        for n in 0..100 {
            assert!(!seen.seen_before(&digest(n)), "first sight of {n}");
        }
        for n in 0..100 {
            assert!(seen.seen_before(&digest(n)), "second sight of {n}");
            assert!(seen.seen_before(&digest(n)), "third sight of {n}");
        }
    }

    #[test]
    fn a_slot_keeps_the_last_digest_that_fell_in_it() {
        let seen = SeenOnce::new(4);
        // 1 and 5 fall in the same slot of four.
        assert!(!seen.seen_before(&digest(1)));
        assert!(!seen.seen_before(&digest(5)));
        assert!(!seen.seen_before(&digest(1)), "5 took the slot");
        assert!(seen.seen_before(&digest(1)));
    }
}
