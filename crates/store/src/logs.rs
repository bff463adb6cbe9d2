//! The usage log (SPEC §9 "Logs"): one table, `logs`, for two kinds of
//! entries: the decisions taken on presented credentials and the
//! management actions. One table keeps one order (`at DESC, id DESC`)
//! and one cursor over both kinds.
//!
//! A row holds ids, codes, a path without its query, an IP address and a
//! user agent: never a secret. Cleaning what goes in is the recorder's job
//! (latchkey's `logs` module); this crate stores what it is given.

use latchkey_core::ids::is_id;
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::{Result, StoreError};

/// One entry of the usage log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// `log_` + 22 base62 characters.
    pub id: String,
    /// Milliseconds since the Unix epoch.
    pub time: i64,
    /// The organization the entry belongs to; `None` for a decision on a
    /// key that does not exist, or an instance-level action (root keys).
    /// Such entries are kept (and pruned) but listed by no organization.
    pub org_id: Option<String>,
    /// The request that caused it; `None` from the command line.
    pub request_id: Option<String>,
    pub event: LogEvent,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LogEvent {
    Decision(DecisionEvent),
    Action(ActionEvent),
}

impl LogEvent {
    /// `"decision"` or `"action"`, as stored in the `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            LogEvent::Decision(_) => "decision",
            LogEvent::Action(_) => "action",
        }
    }
}

/// A decision on a presented credential.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DecisionEvent {
    /// `api_key`, `access_token`, `client_jwt`; `None` when the credential
    /// could not be told (missing, malformed).
    pub credential_type: Option<String>,
    pub key_id: Option<String>,
    pub client_id: Option<String>,
    /// `VALID` or a refusal code of SPEC §5.
    pub code: String,
    /// The HTTP status of the answer (200 when valid).
    pub status: u16,
    /// The original request's method and path (no query), when known.
    pub method: Option<String>,
    pub path: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Time spent deciding, in microseconds.
    pub latency_us: i64,
}

/// A management action: who did what to which resource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActionEvent {
    /// A root key id (`rtk_...`) or `cli`.
    pub actor: String,
    /// e.g. `key.created`, `key.revoked`, `org.created`.
    pub action: String,
    /// The id of the resource acted on.
    pub target: Option<String>,
}

/// Filters and page for an organization's log. Newest first; `cursor` is
/// the `(time, id)` of the last entry of the previous page.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub org_id: String,
    /// The key's decisions and the management actions on that key.
    pub key_id: Option<String>,
    pub client_id: Option<String>,
    /// Decisions with this code (actions have none).
    pub code: Option<String>,
    /// Entries at or after this time (ms).
    pub since: Option<i64>,
    /// Entries strictly before this time (ms).
    pub until: Option<i64>,
    pub cursor: Option<(i64, String)>,
    pub limit: u32,
}

/// The decisions of `entries` counted per organization, hour and code, in
/// that order (so that concurrent writers take the rows' locks in one
/// order), for the `log_hours` table.
pub(crate) fn hour_counts(entries: &[LogEntry]) -> Vec<(String, i64, String, i64)> {
    let mut counts: std::collections::BTreeMap<(&str, i64, &str), i64> = Default::default();
    for e in entries {
        if let (Some(org), LogEvent::Decision(d)) = (&e.org_id, &e.event) {
            *counts
                .entry((
                    org.as_str(),
                    crate::console::hour_of(e.time),
                    d.code.as_str(),
                ))
                .or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|((org, hour, code), n)| (org.to_owned(), hour, code.to_owned(), n))
        .collect()
}

/// The time range of a log read as single bounds on `at`: the highest
/// lower bound (`since`, or where a bounded read must stop) and the
/// lowest upper bound (`until`, exclusive, or the cursor's time,
/// inclusive). SQLite starts an index range at one bound per side, and
/// not at a row value: given two, it may pick the looser, and a page deep
/// in the log would then read every entry before it.
pub(crate) fn at_bounds(q: &LogQuery, stop: Option<i64>) -> (Option<i64>, Option<(i64, bool)>) {
    let lo = match (q.since, stop) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let hi = match (q.until, &q.cursor) {
        (Some(u), Some((c, _))) if *c < u => Some((*c, true)),
        (Some(u), _) => Some((u, false)),
        (None, Some((c, _))) => Some((*c, true)),
        (None, None) => None,
    };
    (lo, hi)
}

/// Most entries deleted by one statement when pruning, so that the
/// write lock is released between chunks.
pub(crate) const PRUNE_CHUNK: i64 = 10_000;

pub(crate) const LOG_COLS: &str = "id, org_id, at, kind, request_id, credential_type, key_id, \
     client_id, code, status, method, path, ip, user_agent, latency_us, actor, action, target";

/// The columns of one entry, in [`LOG_COLS`] order (`id`, `org_id`, `at`,
/// `kind` and `request_id` are bound from the entry itself).
pub(crate) struct LogRow<'a> {
    pub credential_type: Option<&'a str>,
    /// For an action on a key, the key: so that a key's log shows both.
    pub key_id: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub code: Option<&'a str>,
    pub status: Option<i32>,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub latency_us: Option<i64>,
    pub actor: Option<&'a str>,
    pub action: Option<&'a str>,
    pub target: Option<&'a str>,
}

impl<'a> LogRow<'a> {
    pub(crate) fn of(event: &'a LogEvent) -> Self {
        match event {
            LogEvent::Decision(d) => LogRow {
                credential_type: d.credential_type.as_deref(),
                key_id: d.key_id.as_deref(),
                client_id: d.client_id.as_deref(),
                code: Some(&d.code),
                status: Some(i32::from(d.status)),
                method: d.method.as_deref(),
                path: d.path.as_deref(),
                ip: d.ip.as_deref(),
                user_agent: d.user_agent.as_deref(),
                latency_us: Some(d.latency_us),
                actor: None,
                action: None,
                target: None,
            },
            LogEvent::Action(a) => LogRow {
                credential_type: None,
                key_id: a.target.as_deref().filter(|t| is_id(t, "key_")),
                client_id: a.target.as_deref().filter(|t| is_id(t, "cli_")),
                code: None,
                status: None,
                method: None,
                path: None,
                ip: None,
                user_agent: None,
                latency_us: None,
                actor: Some(&a.actor),
                action: Some(&a.action),
                target: a.target.as_deref(),
            },
        }
    }
}

/// `entries` as the data of `COPY logs (LOG_COLS) FROM STDIN` in
/// PostgreSQL's text format: one line per entry, columns separated by tabs,
/// `\N` for NULL, and backslash, tab, newline and carriage return escaped
/// (<https://www.postgresql.org/docs/current/sql-copy.html>, "Text
/// Format"). A NUL character, which no PostgreSQL text can hold, is
/// dropped rather than failing the whole batch.
pub(crate) fn copy_text(entries: &[LogEntry]) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, v: Option<&str>) {
        let Some(v) = v else {
            out.extend_from_slice(b"\\N\t");
            return;
        };
        for b in v.bytes() {
            match b {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                0 => {}
                b => out.push(b),
            }
        }
        out.push(b'\t');
    }
    fn int(out: &mut Vec<u8>, v: Option<i64>) {
        match v {
            Some(n) => {
                use std::io::Write as _;
                // Writing to a Vec cannot fail.
                let _ = write!(out, "{n}\t");
            }
            None => out.extend_from_slice(b"\\N\t"),
        }
    }
    let mut out = Vec::with_capacity(entries.len() * 160);
    for e in entries {
        let r = LogRow::of(&e.event);
        text(&mut out, Some(&e.id));
        text(&mut out, e.org_id.as_deref());
        int(&mut out, Some(e.time));
        text(&mut out, Some(e.event.kind()));
        text(&mut out, e.request_id.as_deref());
        text(&mut out, r.credential_type);
        text(&mut out, r.key_id);
        text(&mut out, r.client_id);
        text(&mut out, r.code);
        int(&mut out, r.status.map(i64::from));
        text(&mut out, r.method);
        text(&mut out, r.path);
        text(&mut out, r.ip);
        text(&mut out, r.user_agent);
        int(&mut out, r.latency_us);
        text(&mut out, r.actor);
        text(&mut out, r.action);
        text(&mut out, r.target);
        // The last column's tab becomes the line's end.
        if let Some(last) = out.last_mut() {
            *last = b'\n';
        }
    }
    out
}

pub(crate) fn log_entry<'r, R>(row: &'r R) -> Result<LogEntry>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    i32: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: String = row.try_get("id")?;
    let kind: String = row.try_get("kind")?;
    let event = match kind.as_str() {
        "decision" => {
            let status: Option<i32> = row.try_get("status")?;
            let status = status
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| StoreError::Corrupt(format!("log {id}: status")))?;
            let code: Option<String> = row.try_get("code")?;
            LogEvent::Decision(DecisionEvent {
                credential_type: row.try_get("credential_type")?,
                key_id: row.try_get("key_id")?,
                client_id: row.try_get("client_id")?,
                code: code.ok_or_else(|| StoreError::Corrupt(format!("log {id}: code")))?,
                status,
                method: row.try_get("method")?,
                path: row.try_get("path")?,
                ip: row.try_get("ip")?,
                user_agent: row.try_get("user_agent")?,
                latency_us: row.try_get::<Option<i64>, _>("latency_us")?.unwrap_or(0),
            })
        }
        "action" => {
            let actor: Option<String> = row.try_get("actor")?;
            let action: Option<String> = row.try_get("action")?;
            LogEvent::Action(ActionEvent {
                actor: actor.unwrap_or_default(),
                action: action.ok_or_else(|| StoreError::Corrupt(format!("log {id}: action")))?,
                target: row.try_get("target")?,
            })
        }
        other => {
            return Err(StoreError::Corrupt(format!("log {id}: kind `{other}`")));
        }
    };
    Ok(LogEntry {
        time: row.try_get("at")?,
        org_id: row.try_get("org_id")?,
        request_id: row.try_get("request_id")?,
        event,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_and_marks_nulls() {
        const KEY: &str = "key_AAAAAAAAAAAAAAAAAAAAAA";
        let entry = LogEntry {
            id: "log_1".to_owned(),
            time: -5,
            org_id: None,
            request_id: Some("a\tb\nc\rd\\e\0f".to_owned()),
            event: LogEvent::Action(ActionEvent {
                actor: "cli".to_owned(),
                action: "key.created".to_owned(),
                target: Some(KEY.to_owned()),
            }),
        };
        let text = String::from_utf8(copy_text(&[entry.clone(), entry])).unwrap();
        let line = format!(
            "log_1\t\\N\t-5\taction\ta\\tb\\nc\\rd\\\\ef\t\\N\t{KEY}\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\tcli\tkey.created\t{KEY}\n"
        );
        assert_eq!(text, format!("{line}{line}"));
        assert_eq!(line.split('\t').count(), LOG_COLS.split(',').count());
        assert!(copy_text(&[]).is_empty());
    }

    #[test]
    fn one_bound_a_side() {
        let q = |since, until, cursor: Option<i64>| LogQuery {
            since,
            until,
            cursor: cursor.map(|c| (c, "log_x".to_owned())),
            ..LogQuery::default()
        };
        assert_eq!(at_bounds(&q(None, None, None), None), (None, None));
        assert_eq!(
            at_bounds(&q(Some(10), Some(100), None), Some(50)),
            (Some(50), Some((100, false)))
        );
        assert_eq!(
            at_bounds(&q(Some(60), Some(100), Some(80)), Some(50)),
            (Some(60), Some((80, true))),
            "the cursor is the tighter upper bound"
        );
        assert_eq!(
            at_bounds(&q(None, Some(100), Some(120)), None),
            (None, Some((100, false)))
        );
        assert_eq!(
            at_bounds(&q(None, None, Some(7)), Some(3)),
            (Some(3), Some((7, true)))
        );
    }
}
