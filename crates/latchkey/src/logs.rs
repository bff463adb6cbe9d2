//! The usage log (SPEC §9 "Logs"): every decision on a presented
//! credential and every management action, per organization.
//!
//! Requests never wait for the log: [`App::log_decision`] and
//! [`App::log_action`] put an entry on a bounded queue (dropping it, and
//! counting `latchkey_dropped_logs_total`, when the queue is full) and a
//! background task writes the queue in batches (every second, or every
//! 5,000 entries). A retention task deletes entries older than
//! `[logs] retention`, and expired OAuth codes and tokens, once an hour.
//!
//! A row never holds a secret: ids, codes, the path without its query
//! string (a query may carry a credential), an IP address and at most 256
//! characters of user agent.
//!
//! [`App::log_decision`]: crate::app::App::log_decision
//! [`App::log_action`]: crate::app::App::log_action

use std::sync::Arc;
use std::time::Duration;

use latchkey_core::Code;
use latchkey_core::ids::{is_id, new_id};
use latchkey_core::keyfmt;
use latchkey_store::{ActionEvent, DecisionEvent, LogEntry, LogEvent, LogQuery, Store};
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa::IntoParams;

use crate::app::{App, Clock};
use crate::decision::Grant;
use crate::error::{ApiError, FieldError};
use crate::views::{decode_cursor, encode_cursor, parse_rfc3339};

/// Entries waiting to be written, at most.
pub const LOG_QUEUE: usize = 65_536;
/// Longest wait before an entry reaches the database.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Entries written at once, at most.
const BATCH: usize = 5_000;

/// Longest user agent kept, in characters.
pub const MAX_USER_AGENT: usize = 256;
const MAX_PATH: usize = 2048;
const MAX_METHOD: usize = 16;
const MAX_IP: usize = 64;

/// How often the retention task prunes, and how soon after start first.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const FIRST_PRUNE_AFTER: Duration = Duration::from_secs(10);

/// A decision to log. Fill what is known; the rest stays `None`.
///
/// ```ignore
/// let started = std::time::Instant::now();
/// let res = decision::decide(&app, &cred, &scopes, env).await;
/// app.log_decision(DecisionLog {
///     request_id: Some(request_id),
///     method: Some(method.to_owned()),
///     path: Some(path.to_owned()),   // the query is cut off in any case
///     ip, user_agent,
///     latency_ms: started.elapsed().as_secs_f64() * 1000.0,
///     ..DecisionLog::of_credential(&app, &cred, &res)
/// });
/// ```
#[derive(Debug, Clone, Default)]
pub struct DecisionLog {
    /// The organization of the key decided on; `None` when no key was
    /// found (such entries are listed by no organization).
    pub org_id: Option<String>,
    pub request_id: Option<String>,
    /// `api_key`, `access_token` or `client_jwt`; `None` when the
    /// credential's kind could not be told.
    pub credential_type: Option<&'static str>,
    pub key_id: Option<String>,
    pub client_id: Option<String>,
    /// `VALID` or a code of SPEC §5.
    pub code: &'static str,
    /// The status of the answer: 200 when valid.
    pub status: u16,
    /// The original request's method and path, when known (forward-auth,
    /// the proxy). Anything from `?` on is dropped before it is stored.
    pub method: Option<String>,
    pub path: Option<String>,
    pub ip: Option<String>,
    /// Kept to its first 256 characters.
    pub user_agent: Option<String>,
    /// Time spent deciding.
    pub latency_ms: f64,
}

impl DecisionLog {
    /// What a decision's outcome tells: on a grant, the key, its
    /// organization and `VALID`; on a refusal, its code and status.
    pub fn of(res: &Result<Grant, ApiError>) -> DecisionLog {
        match res {
            Ok(g) => DecisionLog {
                org_id: Some(g.org_id().to_owned()),
                credential_type: Some(g.credential_type()),
                key_id: g.key().map(|k| k.id.clone()),
                client_id: g.client_id().map(str::to_owned),
                code: Code::Valid.as_str(),
                status: 200,
                ..DecisionLog::default()
            },
            // A refusal taken on a key that exists names it, so that it
            // shows in the organization's log.
            Err(e) => DecisionLog {
                org_id: e.key.as_ref().map(|k| k.0.clone()),
                key_id: e
                    .key
                    .as_ref()
                    .filter(|k| !k.1.starts_with("cli_"))
                    .map(|k| k.1.clone()),
                client_id: e
                    .key
                    .as_ref()
                    .filter(|k| k.1.starts_with("cli_"))
                    .map(|k| k.1.clone()),
                code: e.code.as_str(),
                status: e.code.status(),
                ..DecisionLog::default()
            },
        }
    }
}

impl DecisionLog {
    /// What a decision on `credential` tells: [`DecisionLog::of`], and the
    /// credential's type when it has a key prefix.
    pub fn of_credential(
        app: &App,
        credential: &str,
        res: &Result<Grant, ApiError>,
    ) -> DecisionLog {
        let mut log = DecisionLog::of(res);
        log.credential_type = log
            .credential_type
            .or_else(|| credential_type(app, credential));
        log
    }
}

fn key_kind<'a>(app: &'a App, credential: &str) -> Option<&'a crate::config::KeyKind> {
    let prefixes = app.config.key_kinds.iter().map(|k| k.prefix.as_str());
    keyfmt::match_prefix(credential, prefixes).and_then(|i| app.config.key_kinds.get(i))
}

/// What can be told of a credential without deciding on it: `api_key`
/// for a configured key prefix, `access_token` for an opaque token or a
/// JWS this server issued, `client_jwt` for a JWS of another issuer.
pub fn credential_type(app: &App, credential: &str) -> Option<&'static str> {
    if credential.starts_with(crate::config::ACCESS_PREFIX) {
        return Some("access_token");
    }
    if key_kind(app, credential).is_some() {
        return Some("api_key");
    }
    crate::decision::jwt_kind(app, credential)
}

/// A management action to log.
#[derive(Debug, Clone, Default)]
pub struct ActionLog {
    /// The organization acted in; `None` for instance-level actions
    /// (root keys), which are listed by no organization.
    pub org_id: Option<String>,
    pub request_id: Option<String>,
    /// A root key id (`rtk_...`) or `cli`.
    pub actor: String,
    /// `org.created`, `key.created`, `key.updated`, `key.revoked`,
    /// `key.rotated`, `key.deleted`, `root_key.created`, `root_key.revoked`.
    pub action: &'static str,
    /// The id of the resource acted on.
    pub target: String,
}

/// At most `max` characters of `s`, without control characters.
fn clean(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// The path alone: never the query (which may carry a credential) nor a fragment.
fn path_only(p: &str) -> String {
    let end = p.find(['?', '#']).unwrap_or(p.len());
    clean(p.get(..end).unwrap_or_default(), MAX_PATH)
}

/// Microseconds from milliseconds, rounded, never negative.
fn micros(ms: f64) -> i64 {
    let us = (ms * 1000.0).round();
    if us.is_finite() && us > 0.0 {
        // In range: clamped below i64::MAX.
        us.min(9.0e18) as i64
    } else {
        0
    }
}

pub(crate) fn decision_entry(d: DecisionLog, now: i64) -> LogEntry {
    LogEntry {
        id: new_id("log_"),
        time: now,
        org_id: d.org_id,
        request_id: d.request_id,
        event: LogEvent::Decision(DecisionEvent {
            credential_type: d.credential_type.map(str::to_owned),
            key_id: d.key_id,
            client_id: d.client_id,
            code: d.code.to_owned(),
            status: d.status,
            method: d.method.map(|m| clean(&m, MAX_METHOD)),
            path: d.path.as_deref().map(path_only),
            ip: d.ip.map(|ip| clean(&ip, MAX_IP)),
            user_agent: d.user_agent.map(|ua| clean(&ua, MAX_USER_AGENT)),
            latency_us: micros(d.latency_ms),
        }),
    }
}

pub(crate) fn action_entry(a: ActionLog, now: i64) -> LogEntry {
    LogEntry {
        id: new_id("log_"),
        time: now,
        org_id: a.org_id,
        request_id: a.request_id,
        event: LogEvent::Action(ActionEvent {
            actor: a.actor,
            action: a.action.to_owned(),
            target: Some(a.target),
        }),
    }
}

/// Counts entries that never reach the database.
pub(crate) fn count_dropped(n: usize, reason: &'static str) {
    metrics::counter!("latchkey_dropped_logs_total", "reason" => reason).increment(n as u64);
}

/// Writes queued entries in batches until the queue closes (the app was
/// dropped), then writes what is left and ends.
pub(crate) async fn record(store: Arc<dyn Store>, mut rx: mpsc::Receiver<LogEntry>) {
    let mut batch: Vec<LogEntry> = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    flush(&*store, &mut batch).await;
                    return;
                }
                if batch.len() >= BATCH {
                    flush(&*store, &mut batch).await;
                }
            }
            _ = tick.tick() => flush(&*store, &mut batch).await,
        }
    }
}

async fn flush(store: &dyn Store, batch: &mut Vec<LogEntry>) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = store.insert_logs(batch).await {
        tracing::warn!(error = %e, n = batch.len(), "could not write usage log entries");
        count_dropped(batch.len(), "write_failed");
    }
    batch.clear();
}

/// Starts the task that deletes entries older than `retention`: shortly
/// after start, then once an hour. It runs until aborted.
pub fn spawn_retention(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    retention: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(FIRST_PRUNE_AFTER).await;
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            prune(&*store, &*clock, retention).await;
        }
    })
}

/// Deletes the entries older than `retention`, and the OAuth records
/// (codes, refresh and opaque tokens, revoked token ids) that expired over
/// an hour ago; answers how many log entries went.
pub async fn prune(store: &dyn Store, clock: &dyn Clock, retention: Duration) -> u64 {
    let keep_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let now = clock.now_ms();
    match store.prune_oauth(now.saturating_sub(3_600_000)).await {
        Ok(n) if n > 0 => tracing::info!(deleted = n, "pruned expired OAuth codes and tokens"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not prune expired OAuth codes and tokens"),
    }
    let before = now.saturating_sub(keep_ms);
    match store.prune_logs(before).await {
        Ok(n) => {
            if n > 0 {
                tracing::info!(deleted = n, "pruned usage log entries past their retention");
            }
            n
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not prune the usage log");
            0
        }
    }
}

/// The filters of `GET /v1/orgs/{org}/logs` and `latchkey logs`, as
/// given: each is checked, and every bad one named, by [`list`].
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogFilter {
    /// Only this key's decisions and the actions on it (`key_...`).
    pub key_id: Option<String>,
    /// Only this OAuth client's decisions and the actions on it (`cli_...`).
    pub client_id: Option<String>,
    /// Only decisions with this code: `VALID` or a code of SPEC §5.
    pub code: Option<String>,
    /// RFC 3339: entries at or after this time.
    pub since: Option<String>,
    /// RFC 3339: entries before this time.
    pub until: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 200, default 50.
    #[param(value_type = Option<u32>)]
    pub limit: Option<String>,
}

/// Checks `f` into a store query for `org_id` (asking one entry more than
/// the page, to learn whether another follows) and the page size.
fn query(org_id: &str, f: LogFilter) -> Result<(LogQuery, u32), ApiError> {
    let mut errors = Vec::new();
    let mut bad = |field: &str, message: &str| {
        errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        })
    };
    if let Some(k) = &f.key_id
        && !is_id(k, "key_")
    {
        bad("key_id", "Must be a key id (key_...).");
    }
    if let Some(c) = &f.client_id
        && !is_id(c, "cli_")
    {
        bad("client_id", "Must be an OAuth client id (cli_...).");
    }
    let code = match f.code.as_deref() {
        None => None,
        Some(c) => match Code::ALL.into_iter().find(|k| k.as_str() == c) {
            Some(code) => Some(code.as_str().to_owned()),
            None => {
                bad(
                    "code",
                    "Not a known code; e.g. VALID, INVALID_KEY, KEY_REVOKED, INSUFFICIENT_SCOPE.",
                );
                None
            }
        },
    };
    let mut time = |field: &str, v: Option<&str>| match v.map(parse_rfc3339) {
        None => None,
        Some(Some(t)) => Some(t),
        Some(None) => {
            bad(
                field,
                "Must be an RFC 3339 time such as 2030-01-02T03:04:05Z.",
            );
            None
        }
    };
    let since = time("since", f.since.as_deref());
    let until = time("until", f.until.as_deref());
    if let (Some(s), Some(u)) = (since, until)
        && u <= s
    {
        bad("until", "Must be later than `since`.");
    }
    let limit = match f.limit.as_deref().map(str::parse::<u32>) {
        None => 50,
        Some(Ok(n)) if (1..=200).contains(&n) => n,
        Some(_) => {
            bad("limit", "Must be an integer between 1 and 200.");
            50
        }
    };
    let cursor = match f.cursor.as_deref().map(decode_cursor) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            errors.extend(e.errors);
            None
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    Ok((
        LogQuery {
            org_id: org_id.to_owned(),
            key_id: f.key_id,
            client_id: f.client_id,
            code,
            since,
            until,
            cursor,
            limit: limit + 1,
        },
        limit,
    ))
}

/// A page of an organization's log, newest first, and the cursor of the
/// next page. 404 for an unknown organization, 422 naming every bad filter.
pub async fn list(
    app: &App,
    org_id: &str,
    f: LogFilter,
) -> Result<(Vec<LogEntry>, Option<String>), ApiError> {
    read(app, org_id, f, None).await
}

/// [`list`], reading at most `window` of the organization's entries when
/// a filter has no index (`key_id`, `code`; see docs/decisions.md): a page
/// may then hold fewer entries than asked, and its next cursor goes on
/// from where the read stopped. For the console, whose pages must cost
/// the same however large the log.
pub async fn list_window(
    app: &App,
    org_id: &str,
    f: LogFilter,
    window: u32,
) -> Result<(Vec<LogEntry>, Option<String>), ApiError> {
    read(app, org_id, f, Some(window)).await
}

async fn read(
    app: &App,
    org_id: &str,
    f: LogFilter,
    window: Option<u32>,
) -> Result<(Vec<LogEntry>, Option<String>), ApiError> {
    app.store
        .get_org(org_id)
        .await
        .map_err(|e| ApiError::from_store(e, "organization"))?;
    let (q, limit) = query(org_id, f)?;
    let (mut rows, scanned_to) = match window {
        None => (app.store.list_logs(&q).await?, None),
        Some(n) => {
            let w = app.store.list_logs_window(&q, n).await?;
            (w.entries, w.scanned_to)
        }
    };
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|e| encode_cursor(e.time, &e.id))
    } else {
        scanned_to.map(|(at, id)| encode_cursor(at, &id))
    };
    Ok((rows, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_keeps_the_path_without_its_query_and_a_short_user_agent() {
        let secret = "sk_live_0123456789abcdefghijklmnopqrstuvwxyzABCD";
        let d = DecisionLog {
            code: "VALID",
            status: 200,
            method: Some("GET".into()),
            path: Some(format!("/api/v1/documents?api_key={secret}&x=1")),
            user_agent: Some(format!("agent\n{}", "x".repeat(1000))),
            ip: Some("203.0.113.9".into()),
            latency_ms: 0.4567,
            ..DecisionLog::default()
        };
        let e = decision_entry(d, 42);
        assert!(is_id(&e.id, "log_"), "{}", e.id);
        assert_eq!(e.time, 42);
        let LogEvent::Decision(d) = e.event else {
            panic!("not a decision");
        };
        assert_eq!(d.path.as_deref(), Some("/api/v1/documents"));
        assert!(!format!("{d:?}").contains(secret));
        let ua = d.user_agent.unwrap();
        assert_eq!(ua.chars().count(), MAX_USER_AGENT);
        assert!(ua.starts_with("agentxxx"));
        assert_eq!(d.latency_us, 457);
        assert_eq!(path_only("/a#frag?b"), "/a");
        assert_eq!(micros(f64::NAN), 0);
        assert_eq!(micros(-1.0), 0);
        assert_eq!(micros(f64::INFINITY), 0);
    }

    #[test]
    fn filters_are_checked_field_by_field() {
        let f = LogFilter {
            key_id: Some("nope".into()),
            client_id: Some("key_AAAAAAAAAAAAAAAAAAAAAA".into()),
            code: Some("valid".into()),
            since: Some("yesterday".into()),
            until: Some("2026-01-01T00:00:00Z".into()),
            cursor: Some("!!".into()),
            limit: Some("0".into()),
        };
        let e = query("org_x", f).unwrap_err();
        assert_eq!(e.code, Code::ValidationFailed);
        let fields: Vec<&str> = e.errors.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            ["key_id", "client_id", "code", "since", "limit", "cursor"]
        );

        let f = LogFilter {
            since: Some("2026-01-02T00:00:00Z".into()),
            until: Some("2026-01-01T00:00:00Z".into()),
            ..LogFilter::default()
        };
        let e = query("org_x", f).unwrap_err();
        assert_eq!(e.errors.first().map(|f| f.field.as_str()), Some("until"));

        let (q, limit) = query(
            "org_x",
            LogFilter {
                code: Some("KEY_REVOKED".into()),
                since: Some("2026-01-01T00:00:00Z".into()),
                limit: Some("10".into()),
                ..LogFilter::default()
            },
        )
        .unwrap();
        assert_eq!(limit, 10);
        assert_eq!(q.limit, 11);
        assert_eq!(q.code.as_deref(), Some("KEY_REVOKED"));
        assert_eq!(q.since, Some(1_767_225_600_000));
        assert_eq!(q.until, None);
    }
}
