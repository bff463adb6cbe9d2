//! Rate limits: GCRA (generic cell rate algorithm), as rwz/redis-gcra's
//! `perform_gcra_ratelimit.lua`.
//!
//! A [`Quota`] of `limit` requests per `window` allows a burst of `limit`:
//! the emission interval is `T = window / limit` and the tolerance
//! `T * limit` (the window, give or take the rounding of `T`), so a fresh
//! key can spend its whole limit at once and then one more every `T`. The
//! state of a key is one number, its TAT (theoretical arrival time).
//!
//! [`gcra`] is the one pure step. [`MemoryLimiter`] runs it in this process;
//! [`RedisLimiter`] runs the same integer math in one Lua script on Redis
//! with Redis `TIME` as the clock, so several nodes share one budget and
//! one clock. Both are a [`Limiter`].
//!
//! A backend that fails answers [`LimitError::Unavailable`]; the caller
//! then applies the configured [`OnFailure`], e.g. with [`fallback`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// `limit` requests per `window`, with a burst of `limit`.
///
/// Meant to hold `limit >= 1` and `1 ms <= window <= MAX_WINDOW`
/// ([`Quota::new`] checks it). Other values are still handled, never a
/// panic: a `limit` of 0 refuses every request that costs anything; a
/// window above [`MAX_WINDOW`] counts as `MAX_WINDOW`; an emission interval
/// below 1 µs (more than `window` in µs requests per window) counts as 1 µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub window: Duration,
}

/// Longest window: ten years. It keeps every TAT below 2^53 µs, where the
/// Lua script's numbers (doubles) are still exact integers.
pub const MAX_WINDOW: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

impl Quota {
    /// A quota, or `None` unless `limit >= 1` and `1 ms <= window <= MAX_WINDOW`.
    pub fn new(limit: u32, window: Duration) -> Option<Self> {
        (limit >= 1 && window >= Duration::from_millis(1) && window <= MAX_WINDOW)
            .then_some(Self { limit, window })
    }
}

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    pub limit: u32,
    /// Requests still allowed right now, after this one (0 when refused).
    pub remaining: u32,
    /// Time until the quota is fully available again (TAT - now, >= 0).
    pub reset: Duration,
    /// When refused: time until this request (at its cost) would be
    /// allowed. `None` when allowed, and when it never would be: a cost
    /// above the limit.
    pub retry_after: Option<Duration>,
}

impl Outcome {
    /// `reset` in whole seconds, rounded up (for `RateLimit-Reset`).
    pub fn reset_secs(&self) -> u64 {
        ceil_secs(self.reset)
    }

    /// `retry_after` in whole seconds, rounded up (for `Retry-After`).
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(ceil_secs)
    }

    /// Builds an outcome from the integers of [`gcra`] or the Lua script;
    /// a negative `retry_after_us` means none.
    fn from_parts(
        quota: Quota,
        allowed: bool,
        remaining: i64,
        reset_us: i64,
        retry_after_us: i64,
    ) -> Self {
        Self {
            allowed,
            limit: quota.limit,
            remaining: if allowed {
                u32::try_from(remaining.max(0))
                    .unwrap_or(u32::MAX)
                    .min(quota.limit)
            } else {
                0
            },
            reset: micros(reset_us),
            retry_after: (!allowed && retry_after_us >= 0).then(|| micros(retry_after_us)),
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A non-negative count of µs as a duration (negative counts as 0).
fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

/// The integers of one GCRA step, shared by [`gcra`] and the Lua script.
#[derive(Debug, Clone, Copy)]
struct Params {
    /// Emission interval T, >= 1 µs.
    interval: i64,
    /// T * limit.
    tolerance: i64,
    /// T * cost; `tolerance + 1` when cost > limit (never allowed).
    increment: i64,
}

impl Params {
    fn new(quota: Quota, cost: u32) -> Self {
        let window = i64::try_from(quota.window.min(MAX_WINDOW).as_micros()).unwrap_or(i64::MAX);
        let interval = (window / i64::from(quota.limit.max(1))).max(1);
        // interval * limit <= max(window, limit) < 2^53: no overflow.
        let tolerance = interval.saturating_mul(i64::from(quota.limit));
        let increment = if cost > quota.limit {
            tolerance.saturating_add(1)
        } else {
            interval.saturating_mul(i64::from(cost))
        };
        Self {
            interval,
            tolerance,
            increment,
        }
    }
}

/// One pure GCRA step. `now_us` and `tat_us` are µs on any monotonic-ish
/// scale; `tat_us` is `None` for a key with no state. `cost` 0 peeks:
/// reports without spending.
///
/// Returns the outcome and the TAT to store: the new one when allowed,
/// the given one (or `now_us` if none) when refused or peeking.
pub fn gcra(now_us: i64, tat_us: Option<i64>, quota: Quota, cost: u32) -> (Outcome, i64) {
    let p = Params::new(quota, cost);
    let stored = tat_us.unwrap_or(now_us);
    let tat = stored.max(now_us);
    let reset_now = tat.saturating_sub(now_us);
    if p.increment > p.tolerance {
        return (Outcome::from_parts(quota, false, 0, reset_now, -1), stored);
    }
    let new_tat = tat.saturating_add(p.increment);
    let allow_at = new_tat.saturating_sub(p.tolerance);
    let diff = now_us.saturating_sub(allow_at);
    if diff < 0 {
        let retry = diff.saturating_neg();
        return (
            Outcome::from_parts(quota, false, 0, reset_now, retry),
            stored,
        );
    }
    let outcome = Outcome::from_parts(
        quota,
        true,
        diff / p.interval,
        new_tat.saturating_sub(now_us),
        -1,
    );
    (outcome, if cost == 0 { stored } else { new_tat })
}

/// A backend that applies quotas to keys.
#[async_trait::async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// Spends `cost` of `key`'s `quota` if it is there (`cost` 0 peeks).
    /// `key` names what is limited (`key:<id>`, `ip:<addr>`), never a secret.
    async fn check(&self, key: &str, quota: Quota, cost: u32) -> Result<Outcome, LimitError>;
    fn name(&self) -> &'static str;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The backend did not answer in time or failed. The message never
    /// names the key or the backend's URL.
    #[error("rate limit backend unavailable: {0}")]
    Unavailable(String),
}

/// What to do while the backend is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Allow requests, unlimited.
    Open,
    /// Refuse requests (429, retry in a second).
    Closed,
}

/// The outcome to use when the backend is unavailable: `Open` allows with
/// the full limit remaining; `Closed` refuses with `retry_after` 1 s.
pub fn fallback(quota: Quota, failure: OnFailure) -> Outcome {
    match failure {
        OnFailure::Open => Outcome {
            allowed: true,
            limit: quota.limit,
            remaining: quota.limit,
            reset: Duration::ZERO,
            retry_after: None,
        },
        OnFailure::Closed => Outcome {
            allowed: false,
            limit: quota.limit,
            remaining: 0,
            reset: Duration::from_secs(1),
            retry_after: Some(Duration::from_secs(1)),
        },
    }
}

// ---------------------------------------------------------------------------
// Memory

/// Keys a [`MemoryLimiter`] tracks by default.
pub const DEFAULT_MEMORY_CAPACITY: u64 = 1_000_000;

/// Quotas in this process's memory: one node's view only.
///
/// Each key's TAT lives in a moka cache entry that expires when the TAT
/// passes (the key is then back to full, the same as absent), so memory
/// holds only keys in use, at most `capacity` of them. Checks on one key
/// are serialized by moka's per-key lock (`and_compute_with`), so two
/// concurrent checks never both spend the last unit. At capacity, moka's
/// admission policy keeps the busiest keys; a key it does not keep starts
/// from full.
pub struct MemoryLimiter {
    base: Instant,
    cache: moka::sync::Cache<String, Slot>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    tat: i64,
    /// Until the TAT passes, from when the slot was written.
    ttl: Duration,
}

struct SlotExpiry;

impl moka::Expiry<String, Slot> for SlotExpiry {
    fn expire_after_create(&self, _: &String, slot: &Slot, _: Instant) -> Option<Duration> {
        Some(slot.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        slot: &Slot,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(slot.ttl)
    }
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLimiter {
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_MEMORY_CAPACITY)
    }

    /// Tracks at most `capacity` keys.
    pub fn with_capacity(capacity: u64) -> Self {
        Self {
            base: Instant::now(),
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(SlotExpiry)
                .build(),
        }
    }

    fn now_us(&self) -> i64 {
        i64::try_from(self.base.elapsed().as_micros()).unwrap_or(i64::MAX)
    }

    /// The check at a given time (µs since this limiter was made).
    fn check_at(&self, key: &str, quota: Quota, cost: u32, now_us: i64) -> Outcome {
        let mut outcome = fallback(quota, OnFailure::Closed);
        self.cache.entry_by_ref(key).and_compute_with(|entry| {
            let tat = entry.map(|e| e.into_value().tat);
            let (o, new_tat) = gcra(now_us, tat, quota, cost);
            outcome = o;
            if o.allowed && cost > 0 {
                moka::ops::compute::Op::Put(Slot {
                    tat: new_tat,
                    ttl: micros(new_tat.saturating_sub(now_us)),
                })
            } else {
                moka::ops::compute::Op::Nop
            }
        });
        outcome
    }
}

#[async_trait::async_trait]
impl Limiter for MemoryLimiter {
    async fn check(&self, key: &str, quota: Quota, cost: u32) -> Result<Outcome, LimitError> {
        Ok(self.check_at(key, quota, cost, self.now_us()))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

// ---------------------------------------------------------------------------
// Redis

/// Longest wait for one Redis call, unless given.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// Prefix of the Redis keys: `latchkey:rl:{key}`.
pub const REDIS_KEY_PREFIX: &str = "latchkey:rl:";

/// [`gcra`] in Lua, on Redis `TIME`. KEYS[1]: the key; ARGV: emission
/// interval, tolerance, increment (µs, from `Params`). Returns
/// `{allowed, remaining, reset_us, retry_after_us}` (-1: none). Numbers
/// are doubles, exact below 2^53 µs (see `MAX_WINDOW`); the TAT is written
/// with `%.0f`, as a plain `tostring` would round it to 14 digits.
const GCRA_LUA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local key = KEYS[1]
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local increment = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local stored = redis.call('GET', key)
local tat = now
if stored then
  stored = tonumber(stored)
  if stored and stored > now then tat = stored end
end
if increment > tolerance then
  return {0, 0, tat - now, -1}
end
local new_tat = tat + increment
local diff = now - (new_tat - tolerance)
if diff < 0 then
  return {0, 0, tat - now, -diff}
end
if increment > 0 then
  local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
  redis.call('SET', key, string.format('%.0f', new_tat), 'PX', string.format('%.0f', ttl_ms))
end
return {1, math.floor(diff / interval), new_tat - now, -1}
";

/// Quotas on Redis, shared by every node that uses the same Redis.
///
/// One `ConnectionManager` (a multiplexed connection that reconnects by
/// itself once Redis is back) and one script, loaded again by the client
/// on `NOSCRIPT`. Each call is bounded by a timeout, so a hung Redis costs
/// a request at most that long; a failure is [`LimitError::Unavailable`]
/// and a warning, at most one a second.
pub struct RedisLimiter {
    conn: ConnectionManager,
    script: redis::Script,
    failure: OnFailure,
    timeout: Duration,
    warn: WarnEvery,
}

impl RedisLimiter {
    /// Connects with [`DEFAULT_REDIS_TIMEOUT`]; see [`Self::connect_with_timeout`].
    pub async fn connect(url: &str, failure: OnFailure) -> Result<Self, LimitError> {
        Self::connect_with_timeout(url, failure, DEFAULT_REDIS_TIMEOUT).await
    }

    /// Connects and checks that Redis answers a `PING` (within
    /// `max(timeout, 1 s)`): a wrong URL or an unreachable Redis is an
    /// error here rather than a warning on every request. `timeout` bounds
    /// each later call.
    pub async fn connect_with_timeout(
        url: &str,
        failure: OnFailure,
        timeout: Duration,
    ) -> Result<Self, LimitError> {
        let limiter = Self::connect_lazy(url, failure, timeout)?;
        let mut conn = limiter.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        match tokio::time::timeout(timeout.max(Duration::from_secs(1)), ping).await {
            Ok(Ok(_)) => Ok(limiter),
            Ok(Err(e)) => Err(LimitError::Unavailable(describe(&e))),
            Err(_) => Err(LimitError::Unavailable("no answer to PING".into())),
        }
    }

    /// Does not connect until the first check: for a node that must start
    /// while Redis is down (with `OnFailure::Open`, say). Fails only on a
    /// URL it cannot use.
    pub fn connect_lazy(
        url: &str,
        failure: OnFailure,
        timeout: Duration,
    ) -> Result<Self, LimitError> {
        let client = redis::Client::open(url)
            .map_err(|_| LimitError::Unavailable("invalid Redis URL".into()))?;
        // Reconnection: a few quick tries, then the next call starts over.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| LimitError::Unavailable(describe(&e)))?;
        Ok(Self {
            conn,
            script: redis::Script::new(GCRA_LUA),
            failure,
            timeout,
            warn: WarnEvery::new(),
        })
    }

    /// The configured failure mode, for the caller to apply with
    /// [`fallback`] when a check fails.
    pub fn on_failure(&self) -> OnFailure {
        self.failure
    }

    async fn eval(&self, key: &str, quota: Quota, cost: u32) -> Result<Outcome, LimitError> {
        let p = Params::new(quota, cost);
        let mut conn = self.conn.clone();
        let mut call = self.script.key(format!("{REDIS_KEY_PREFIX}{key}"));
        call.arg(p.interval).arg(p.tolerance).arg(p.increment);
        let answer = tokio::time::timeout(
            self.timeout,
            call.invoke_async::<(i64, i64, i64, i64)>(&mut conn),
        )
        .await;
        match answer {
            Ok(Ok((allowed, remaining, reset_us, retry_us))) => Ok(Outcome::from_parts(
                quota,
                allowed == 1,
                remaining,
                reset_us,
                retry_us,
            )),
            Ok(Err(e)) => Err(LimitError::Unavailable(describe(&e))),
            Err(_) => Err(LimitError::Unavailable(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}

#[async_trait::async_trait]
impl Limiter for RedisLimiter {
    async fn check(&self, key: &str, quota: Quota, cost: u32) -> Result<Outcome, LimitError> {
        let answer = self.eval(key, quota, cost).await;
        if let Err(LimitError::Unavailable(why)) = &answer {
            metrics::counter!("latchkey_ratelimit_backend_errors_total", "backend" => "redis")
                .increment(1);
            self.warn.warn(why);
        }
        answer
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

/// A Redis error in a few words: its category and code, never its detail
/// or the address (a URL may hold a password).
fn describe(e: &redis::RedisError) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connection_refusal() {
        "connection refused".into()
    } else if e.is_connection_dropped() {
        "connection dropped".into()
    } else {
        match e.code() {
            Some(code) => format!("{} ({code})", e.category()),
            None => e.category().to_string(),
        }
    }
}

/// Logs a backend failure at most once a second, with the number of
/// failures not logged since.
struct WarnEvery {
    base: Instant,
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl WarnEvery {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether this failure is the one logged this second.
    fn warn(&self, why: &str) -> bool {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(1000),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            tracing::warn!(error = %why, suppressed, "rate limit backend unavailable");
            true
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// The Redis for tests: `LATCHKEY_TEST_REDIS_URL`, by default
/// `redis://127.0.0.1:6379`. `None` (and a `SKIPPED` line) when it does not
/// answer; under `CI=true` an unreachable Redis fails the test instead.
#[cfg(test)]
pub fn redis_url_for_tests() -> Option<String> {
    let url = std::env::var("LATCHKEY_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let answers = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    match answers {
        Ok(_) => Some(url),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("Redis is required under CI=true (LATCHKEY_TEST_REDIS_URL={url}): {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: Redis unreachable at LATCHKEY_TEST_REDIS_URL={url}: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    use super::*;

    const SEC: i64 = 1_000_000;

    fn q(limit: u32, secs: u64) -> Quota {
        Quota::new(limit, Duration::from_secs(secs)).unwrap()
    }

    /// Runs `costs` at one instant from a fresh key; returns the outcomes.
    fn burst(now: i64, tat: &mut Option<i64>, quota: Quota, costs: &[u32]) -> Vec<Outcome> {
        costs
            .iter()
            .map(|&cost| {
                let (o, new_tat) = gcra(now, *tat, quota, cost);
                *tat = Some(new_tat);
                o
            })
            .collect()
    }

    #[test]
    fn quota_new_checks_bounds() {
        assert!(Quota::new(0, Duration::from_secs(1)).is_none());
        assert!(Quota::new(1, Duration::from_micros(999)).is_none());
        assert!(Quota::new(1, MAX_WINDOW + Duration::from_secs(1)).is_none());
        assert_eq!(
            Quota::new(1, Duration::from_millis(1)),
            Some(Quota {
                limit: 1,
                window: Duration::from_millis(1)
            })
        );
    }

    #[test]
    fn fresh_key_allows_exactly_limit_then_retry_after_t() {
        let quota = q(10, 10); // T = 1 s
        let now = 1_000 * SEC;
        let mut tat = None;
        let outs = burst(now, &mut tat, quota, &[1; 10]);
        assert!(outs.iter().all(|o| o.allowed));
        let remaining: Vec<u32> = outs.iter().map(|o| o.remaining).collect();
        assert_eq!(remaining, vec![9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
        assert_eq!(outs[0].reset, Duration::from_secs(1));
        assert_eq!(outs[9].reset, Duration::from_secs(10));
        assert!(
            outs.iter()
                .all(|o| o.retry_after.is_none() && o.limit == 10)
        );

        let (refused, kept) = gcra(now, tat, quota, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(refused.reset, Duration::from_secs(10));
        assert_eq!(Some(kept), tat, "a refusal does not move the TAT");

        // Just before T: still refused, with the rest of T to wait.
        let (early, _) = gcra(now + SEC - 1, tat, quota, 1);
        assert!(!early.allowed);
        assert_eq!(early.retry_after, Some(Duration::from_micros(1)));

        // After T: exactly one more.
        let (one, t2) = gcra(now + SEC, tat, quota, 1);
        assert!(one.allowed);
        assert_eq!(one.remaining, 0);
        let (two, _) = gcra(now + SEC, Some(t2), quota, 1);
        assert!(!two.allowed);
    }

    #[test]
    fn cost_above_one_spends_several_units() {
        let quota = q(10, 10);
        let now = 5 * SEC;
        let (o, tat) = gcra(now, None, quota, 4);
        assert!(o.allowed);
        assert_eq!(o.remaining, 6);
        assert_eq!(o.reset, Duration::from_secs(4));
        let (o, tat) = gcra(now, Some(tat), quota, 6);
        assert!(o.allowed);
        assert_eq!(o.remaining, 0);
        let (o, kept) = gcra(now, Some(tat), quota, 3);
        assert!(!o.allowed);
        assert_eq!(o.retry_after, Some(Duration::from_secs(3)), "3 units back");
        assert_eq!(kept, tat);
        // A cost above the limit is never allowed, and waiting won't help.
        let (o, kept) = gcra(now, None, quota, 11);
        assert!(!o.allowed);
        assert_eq!(o.retry_after, None);
        assert_eq!(o.reset, Duration::ZERO);
        assert_eq!(kept, now);
        // Huge costs do not overflow.
        let (o, _) = gcra(now, Some(tat), quota, u32::MAX);
        assert!(!o.allowed);
    }

    #[test]
    fn cost_zero_peeks_without_spending() {
        let quota = q(10, 10);
        let now = 7 * SEC;
        let (o, tat) = gcra(now, None, quota, 0);
        assert!(o.allowed);
        assert_eq!(o.remaining, 10);
        assert_eq!(o.reset, Duration::ZERO);
        assert_eq!(tat, now);
        let mut tat = None;
        burst(now, &mut tat, quota, &[1; 10]);
        let (o, kept) = gcra(now, tat, quota, 0);
        assert!(o.allowed, "a peek is never refused");
        assert_eq!(o.remaining, 0);
        assert_eq!(o.reset, Duration::from_secs(10));
        assert_eq!(Some(kept), tat);
        // Half a window later, 5 units are back.
        let (o, _) = gcra(now + 5 * SEC, tat, quota, 0);
        assert_eq!(o.remaining, 5);
    }

    #[test]
    fn long_idle_returns_to_full() {
        let quota = q(10, 10);
        let mut tat = None;
        burst(0, &mut tat, quota, &[1; 10]);
        let (o, _) = gcra(3_600 * SEC, tat, quota, 1);
        assert!(o.allowed);
        assert_eq!(o.remaining, 9);
        assert_eq!(o.reset, Duration::from_secs(1));
        // An old TAT counts as no TAT.
        assert_eq!(
            gcra(3_600 * SEC, tat, quota, 1).0,
            gcra(3_600 * SEC, None, quota, 1).0
        );
    }

    #[test]
    fn one_per_second() {
        let quota = q(1, 1);
        let (o, tat) = gcra(0, None, quota, 1);
        assert!(o.allowed);
        assert_eq!(o.remaining, 0);
        assert_eq!(o.reset, Duration::from_secs(1));
        let (o, _) = gcra(SEC / 2, Some(tat), quota, 1);
        assert!(!o.allowed);
        assert_eq!(o.retry_after, Some(Duration::from_millis(500)));
        assert_eq!(o.retry_after_secs(), Some(1));
        assert_eq!(o.reset_secs(), 1);
        let (o, _) = gcra(SEC, Some(tat), quota, 1);
        assert!(o.allowed);
    }

    #[test]
    fn uneven_interval_still_allows_exactly_limit() {
        // 999 per ms: T = 1 µs after rounding; the burst is still 999.
        let quota = Quota::new(999, Duration::from_millis(1)).unwrap();
        let mut tat = None;
        let outs = burst(0, &mut tat, quota, &[1; 1000]);
        assert_eq!(outs.iter().filter(|o| o.allowed).count(), 999);
        // 3 per second: T = 333 333 µs.
        let mut tat = None;
        let outs = burst(0, &mut tat, q(3, 1), &[1; 4]);
        assert_eq!(outs.iter().filter(|o| o.allowed).count(), 3);
    }

    #[test]
    fn odd_quotas_do_not_panic() {
        let zero = Quota {
            limit: 0,
            window: Duration::from_secs(1),
        };
        assert!(!gcra(0, None, zero, 1).0.allowed);
        assert!(gcra(0, None, zero, 0).0.allowed);
        let tiny = Quota {
            limit: u32::MAX,
            window: Duration::ZERO,
        };
        assert!(gcra(0, None, tiny, 1).0.allowed);
        let huge = Quota {
            limit: 1,
            window: Duration::MAX,
        };
        let _ = gcra(i64::MAX, Some(i64::MAX), huge, u32::MAX);
        let _ = gcra(i64::MAX, Some(i64::MIN), huge, 1);
        assert!(!gcra(i64::MIN, Some(i64::MAX), huge, 1).0.allowed);
    }

    #[test]
    fn fallback_outcomes() {
        let quota = q(10, 60);
        let open = fallback(quota, OnFailure::Open);
        assert!(open.allowed);
        assert_eq!(open.remaining, 10);
        assert_eq!(open.retry_after, None);
        let closed = fallback(quota, OnFailure::Closed);
        assert!(!closed.allowed);
        assert_eq!(closed.remaining, 0);
        assert_eq!(closed.retry_after, Some(Duration::from_secs(1)));
    }

    #[test]
    fn warnings_are_logged_at_most_once_a_second() {
        let w = WarnEvery::new();
        assert!(w.warn("x"));
        assert!(!w.warn("x"));
        assert!(!w.warn("x"));
        assert_eq!(w.suppressed.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn memory_follows_gcra_and_peeks_do_not_write() {
        let m = MemoryLimiter::new();
        let quota = q(3, 60);
        let t0 = 10 * SEC;
        assert_eq!(m.check_at("k", quota, 0, t0).remaining, 3);
        assert_eq!(m.cache.get("k").map(|s| s.tat), None, "peek wrote");
        let rem: Vec<u32> = (0..3)
            .map(|_| m.check_at("k", quota, 1, t0).remaining)
            .collect();
        assert_eq!(rem, vec![2, 1, 0]);
        assert!(!m.check_at("k", quota, 1, t0).allowed);
        assert!(m.check_at("other", quota, 1, t0).allowed, "keys are apart");
        // 20 s later (T), one more.
        assert!(m.check_at("k", quota, 1, t0 + 20 * SEC).allowed);
        // Through the trait, on the real clock.
        let o = m.check("fresh", quota, 1).await.unwrap();
        assert!(o.allowed && o.remaining == 2);
        assert_eq!(m.name(), "memory");
    }

    #[tokio::test]
    async fn memory_entries_expire_when_their_tat_passes() {
        let m = MemoryLimiter::new();
        let quota = Quota::new(2, Duration::from_millis(50)).unwrap();
        assert!(m.check("k", quota, 1).await.unwrap().allowed);
        assert!(m.check("k", quota, 1).await.unwrap().allowed);
        assert!(!m.check("k", quota, 1).await.unwrap().allowed);
        assert!(m.cache.contains_key("k"));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(!m.cache.contains_key("k"), "an idle key is gone");
        // Its memory goes on moka's timer wheel (buckets of about a second).
        let start = Instant::now();
        while m.cache.entry_count() > 0 && start.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            m.cache.run_pending_tasks();
        }
        assert_eq!(m.cache.entry_count(), 0, "an idle key is dropped");
        assert!(m.check("k", quota, 1).await.unwrap().allowed);
    }

    /// 64 tasks, 10 tries each, on one key: exactly `limit` allowed.
    async fn hammer(limiters: Vec<Arc<dyn Limiter>>, key: String, quota: Quota) -> u32 {
        let allowed = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for i in 0..64 {
            let limiter = limiters[i % limiters.len()].clone();
            let allowed = allowed.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..10 {
                    if limiter.check(&key, quota, 1).await.unwrap().allowed {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        allowed.load(Ordering::Relaxed)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_concurrent_checks_spend_exactly_the_limit() {
        let m: Arc<dyn Limiter> = Arc::new(MemoryLimiter::new());
        let allowed = hammer(vec![m], "key:one".into(), q(100, 3600)).await;
        assert_eq!(allowed, 100);
    }

    fn unique_key(what: &str) -> String {
        format!("test:{what}:{:016x}", rand::random::<u64>())
    }

    async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
        redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_two_processes_spend_exactly_the_limit() {
        let Some(url) = redis_url_for_tests() else {
            return;
        };
        let a = RedisLimiter::connect(&url, OnFailure::Closed)
            .await
            .unwrap();
        let b = RedisLimiter::connect(&url, OnFailure::Closed)
            .await
            .unwrap();
        assert_eq!(a.name(), "redis");
        assert_eq!(a.on_failure(), OnFailure::Closed);
        let key = unique_key("exact");
        let allowed = hammer(vec![Arc::new(a), Arc::new(b)], key.clone(), q(100, 3600)).await;
        assert_eq!(allowed, 100);
        let _: () = redis::cmd("DEL")
            .arg(format!("{REDIS_KEY_PREFIX}{key}"))
            .query_async(&mut raw(&url).await)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn redis_and_memory_agree() {
        let Some(url) = redis_url_for_tests() else {
            return;
        };
        let r = RedisLimiter::connect(&url, OnFailure::Open).await.unwrap();
        let m = MemoryLimiter::new();
        let key = unique_key("agree");
        let quota = q(10, 100); // T = 10 s: the few ms the test takes don't count
        let costs = [1, 0, 3, 2, 11, 1, 4, 0, 1, 2, 1, 1, 1];
        let mut allowed = 0;
        for (i, &cost) in costs.iter().enumerate() {
            let ro = r.check(&key, quota, cost).await.unwrap();
            let mo = m.check(&key, quota, cost).await.unwrap();
            let view = |o: Outcome| (o.allowed, o.remaining, o.reset_secs(), o.retry_after_secs());
            assert_eq!(view(ro), view(mo), "step {i}, cost {cost}");
            allowed += u32::from(ro.allowed && cost > 0);
        }
        // 1, 3, 2 (11 never), 1 (4 refused: 3 left), 1, 2: 10 units in 6
        // requests; the rest refused.
        assert_eq!(allowed, 6);
        let _: () = redis::cmd("DEL")
            .arg(format!("{REDIS_KEY_PREFIX}{key}"))
            .query_async(&mut raw(&url).await)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn redis_keys_expire_once_idle() {
        let Some(url) = redis_url_for_tests() else {
            return;
        };
        let r = RedisLimiter::connect(&url, OnFailure::Closed)
            .await
            .unwrap();
        let key = unique_key("ttl");
        let name = format!("{REDIS_KEY_PREFIX}{key}");
        let mut conn = raw(&url).await;
        let quota = q(10, 10);
        r.check(&key, quota, 0).await.unwrap();
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&name)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(exists, 0, "a peek writes nothing");
        r.check(&key, quota, 1).await.unwrap();
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&name)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(pttl > 900 && pttl <= 1_001, "one unit spent: PTTL {pttl}");
        for _ in 0..9 {
            assert!(r.check(&key, quota, 1).await.unwrap().allowed);
        }
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&name)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(pttl > 9_000 && pttl <= 10_001, "all spent: PTTL {pttl}");
        // The stored TAT is an exact integer of µs.
        let tat: String = redis::cmd("GET")
            .arg(&name)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(tat.bytes().all(|b| b.is_ascii_digit()), "TAT {tat}");
        let _: () = redis::cmd("DEL")
            .arg(&name)
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn redis_reconnects_after_its_connection_is_killed() {
        let Some(url) = redis_url_for_tests() else {
            return;
        };
        let r = RedisLimiter::connect(&url, OnFailure::Closed)
            .await
            .unwrap();
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut r.conn.clone())
            .await
            .unwrap();
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(&mut raw(&url).await)
            .await
            .unwrap();
        assert_eq!(killed, 1);
        let key = unique_key("reconnect");
        let start = Instant::now();
        let mut answered = false;
        while start.elapsed() < Duration::from_secs(5) {
            if r.check(&key, q(10, 10), 0).await.is_ok() {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(answered, "no answer 5 s after the connection was killed");
    }

    #[tokio::test]
    async fn unreachable_redis_fails_fast() {
        let url = "redis://127.0.0.1:1";
        let quota = q(10, 60);
        let start = Instant::now();
        let connected = RedisLimiter::connect(url, OnFailure::Closed).await;
        assert!(
            matches!(connected, Err(LimitError::Unavailable(_))),
            "connected to nothing"
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );

        let lazy =
            RedisLimiter::connect_lazy(url, OnFailure::Open, Duration::from_millis(250)).unwrap();
        let start = Instant::now();
        let err = lazy.check("key:abc", quota, 1).await.unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        let LimitError::Unavailable(why) = &err;
        assert!(
            !why.contains("key:abc") && !why.contains("127.0.0.1"),
            "{why}"
        );
        // Still failing, still fast, on the next call.
        let start = Instant::now();
        assert!(lazy.check("key:abc", quota, 1).await.is_err());
        assert!(start.elapsed() < Duration::from_secs(2));

        assert_eq!(lazy.on_failure(), OnFailure::Open);
        assert!(fallback(quota, lazy.on_failure()).allowed);
        let closed = fallback(quota, OnFailure::Closed);
        assert!(!closed.allowed);
        assert_eq!(closed.retry_after_secs(), Some(1));
    }

    #[test]
    fn bad_url_is_refused_without_echoing_it() {
        let Err(LimitError::Unavailable(why)) =
            RedisLimiter::connect_lazy("nope://:secret@x", OnFailure::Open, DEFAULT_REDIS_TIMEOUT)
        else {
            panic!("a bad URL was accepted");
        };
        assert!(!why.contains("secret"));
    }
}
