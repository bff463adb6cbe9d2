//! API Logs: the organization's decisions and management actions, by
//! pages, filtered by key, app, outcome code and time range (checked by
//! `logs`, as for `GET /v1/orgs/{org}/logs`), with a chart of requests per
//! hour by outcome.
//!
//! The `key_id` and `code` filters have no index (docs/decisions.md): a
//! page reads at most [`WINDOW`] entries of the range and says how far it
//! looked, so that no page costs more however large the log.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use latchkey_core::Code;
use latchkey_core::ids::is_id;
use latchkey_store::{LogEntry, LogEvent};

use super::chart::{self, Chart};
use super::{AppState, Ctx, Fail, FormData, Layout, Need, answer, iso, ok, when};
use crate::http::authorize::base_path;
use crate::logs::LogFilter;

/// Entries per page.
const PAGE: u32 = 50;
/// Most entries one page reads for the filters without an index.
pub const WINDOW: u32 = 10_000;
const HOUR: i64 = 3_600_000;

/// The time ranges offered, and the default.
const RANGES: [(&str, &str, i64); 4] = [
    ("1h", "Last hour", HOUR),
    ("24h", "Last 24 hours", 24 * HOUR),
    ("7d", "Last 7 days", 7 * 24 * HOUR),
    ("30d", "Last 30 days", 30 * 24 * HOUR),
];

pub struct LogRow {
    pub time: String,
    pub time_iso: String,
    pub decision: bool,
    /// `ok`, `warn` or `bad`.
    pub class: &'static str,
    pub code: String,
    pub status: String,
    pub credential: String,
    pub credential_href: Option<String>,
    pub request: String,
    pub ip: String,
    pub latency: String,
    pub actor: String,
}

pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "console/logs.html")]
struct LogsPage {
    layout: Layout,
    action: String,
    key_id: String,
    client_id: String,
    codes: Vec<Choice>,
    ranges: Vec<Choice>,
    custom: bool,
    since: String,
    until: String,
    rows: Vec<LogRow>,
    chart: Chart,
    chart_scope: Option<&'static str>,
    next: Option<String>,
    first: Option<String>,
    range_text: String,
    filtered: bool,
    /// The filters' error, if one was wrong.
    error: Option<String>,
    keys_href: String,
    windowed: bool,
}

/// `YYYY-MM-DDTHH:MM` (a `datetime-local` input), read as UTC.
fn parse_local(s: &str) -> Option<i64> {
    let full = match s.len() {
        16 => format!("{s}:00Z"),
        19 => format!("{s}Z"),
        _ => return None,
    };
    crate::views::parse_rfc3339(&full)
}

fn local(ms: i64) -> String {
    crate::views::rfc3339(ms).get(..16).unwrap_or("").to_owned()
}

fn badge(code: &str) -> &'static str {
    match code {
        "VALID" => "ok",
        "RATE_LIMITED" | "USAGE_EXCEEDED" => "warn",
        _ => "bad",
    }
}

async fn rows(c: &Ctx, entries: &[LogEntry]) -> Vec<LogRow> {
    let mut keys: HashMap<String, Option<(String, String)>> = HashMap::new();
    let mut users: HashMap<String, Option<String>> = HashMap::new();
    for e in entries {
        // The key each entry names: a decision's, or an action's target.
        let key = match &e.event {
            LogEvent::Decision(d) => d.key_id.as_ref(),
            LogEvent::Action(a) => a.target.as_ref().filter(|t| is_id(t, "key_")),
        };
        if let Some(k) = key
            && !keys.contains_key(k)
        {
            let found = c
                .app
                .store
                .get_key(k)
                .await
                .ok()
                .filter(|key| key.org_id == c.org.id)
                .map(|key| (key.name, key.start));
            keys.insert(k.clone(), found);
        }
        if let LogEvent::Action(a) = &e.event
            && a.actor.starts_with("usr_")
            && !users.contains_key(&a.actor)
        {
            let found = c.app.store.get_user(&a.actor).await.ok().map(|u| u.email);
            users.insert(a.actor.clone(), found);
        }
    }
    entries
        .iter()
        .map(|e| match &e.event {
            LogEvent::Decision(d) => {
                let (credential, href) = match (&d.key_id, &d.client_id) {
                    (Some(k), _) => match keys.get(k).cloned().flatten() {
                        Some((name, start)) => (
                            format!("{name} ({start}\u{2026})"),
                            Some(c.href(&format!("/keys/{k}"))),
                        ),
                        None => (k.clone(), None),
                    },
                    (None, Some(cl)) => (cl.clone(), Some(c.href(&format!("/apps/{cl}")))),
                    _ => (d.credential_type.clone().unwrap_or_default(), None),
                };
                let request = match (&d.method, &d.path) {
                    (Some(m), Some(p)) => format!("{m} {p}"),
                    _ => "verify".to_owned(),
                };
                LogRow {
                    time: when_exact(e.time),
                    time_iso: iso(e.time),
                    decision: true,
                    class: badge(&d.code),
                    code: d.code.clone(),
                    status: d.status.to_string(),
                    credential,
                    credential_href: href,
                    request,
                    ip: d.ip.clone().unwrap_or_default(),
                    latency: format!("{:.1} ms", d.latency_us as f64 / 1000.0),
                    actor: String::new(),
                }
            }
            LogEvent::Action(a) => LogRow {
                time: when_exact(e.time),
                time_iso: iso(e.time),
                decision: false,
                class: "muted",
                code: a.action.clone(),
                status: String::new(),
                credential: match a
                    .target
                    .as_ref()
                    .and_then(|t| keys.get(t).cloned().flatten())
                {
                    Some((name, start)) => format!("{name} ({start}\u{2026})"),
                    None => a.target.clone().unwrap_or_default(),
                },
                credential_href: a.target.as_deref().and_then(|t| {
                    if is_id(t, "key_") {
                        Some(c.href(&format!("/keys/{t}")))
                    } else if is_id(t, "cli_") {
                        Some(c.href(&format!("/apps/{t}")))
                    } else {
                        None
                    }
                }),
                request: String::new(),
                ip: String::new(),
                latency: String::new(),
                actor: match a.actor.as_str() {
                    "cli" => "the command line".to_owned(),
                    id if id.starts_with("usr_") => {
                        users.get(id).cloned().flatten().unwrap_or(id.to_owned())
                    }
                    id => format!("root key {id}"),
                },
            },
        })
        .collect()
}

/// `GET /console/orgs/{org}/logs?key_id=&client_id=&code=&range=&since=&until=&cursor=`.
pub async fn page(
    State(app): AppState,
    Path(org): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let here = format!(
            "{}/console/orgs/{org}/logs",
            base_path(app.config.public_url())
        );
        let c = Ctx::load(&app, &headers, &org, None, &here).await?;
        c.need(Need::Read("logs.read"), "read the logs")?;
        let q = FormData::query(raw.as_deref());
        let now = c.app.now_ms();
        let key_id = q.one("key_id").map(|s| s.trim().to_owned());
        let client_id = q.one("client_id").map(|s| s.trim().to_owned());
        let code = q.one("code").map(str::to_owned);
        let range = q.one("range").unwrap_or("24h");
        let mut error = None;
        let custom = range == "custom";
        let (since, until) = if custom {
            let s = q.one("since").map(|v| (v, parse_local(v)));
            let u = q.one("until").map(|v| (v, parse_local(v)));
            match (s, u) {
                (Some((_, Some(s))), Some((_, Some(u)))) if u > s => (s, u),
                (Some((_, Some(s))), None) if s < now => (s, now),
                _ => {
                    error = Some("Give a start and an end (the end later than the start), as dates and times in UTC.".to_owned());
                    (now - 24 * HOUR, now)
                }
            }
        } else {
            let span = RANGES
                .iter()
                .find(|(v, _, _)| *v == range)
                .map_or(24 * HOUR, |r| r.2);
            (now - span, now)
        };
        let filter = LogFilter {
            key_id: key_id.clone(),
            client_id: client_id.clone(),
            code: code.clone(),
            since: Some(crate::views::rfc3339(since)),
            until: Some(crate::views::rfc3339(until)),
            cursor: q.one("cursor").map(str::to_owned),
            limit: Some(PAGE.to_string()),
        };
        let windowed = key_id.is_some() || code.is_some();
        let (entries, next) = match crate::logs::list_window(&c.app, &c.org.id, filter, WINDOW).await {
            Ok(r) => r,
            Err(e) if e.code == Code::ValidationFailed => {
                error = Some(
                    e.errors
                        .iter()
                        .map(|f| format!("{}: {}", f.field, f.message))
                        .collect::<Vec<_>>()
                        .join(" "),
                );
                (Vec::new(), None)
            }
            Err(e) => return Err(Fail::from(e)),
        };
        let mut hours = c
            .app
            .store
            .log_hours(&c.org.id, latchkey_store::console::hour_of(since), until)
            .await?;
        if let Some(code) = &code {
            hours.retain(|h| &h.code == code);
        }
        let chart = chart::build(&hours, since, until);
        // The page's own query without its cursor, for the page links.
        let base_q = {
            let mut s = form_urlencoded::Serializer::new(String::new());
            for name in ["key_id", "client_id", "code", "range", "since", "until"] {
                if let Some(v) = q.one(name) {
                    s.append_pair(name, v);
                }
            }
            s.finish()
        };
        let link = |cursor: Option<&str>| {
            let mut s = here_with(&c.href("/logs"), &base_q);
            if let Some(cur) = cursor {
                s.push(if base_q.is_empty() { '?' } else { '&' });
                s.push_str("cursor=");
                s.push_str(cur);
            }
            s
        };
        let mut codes = vec![Choice {
            value: String::new(),
            label: "Any outcome".into(),
            selected: code.is_none(),
        }];
        for k in Code::ALL {
            if k.is_bad_credential() || matches!(k, Code::Valid | Code::InsufficientScope | Code::ForbiddenIp | Code::RateLimited | Code::UsageExceeded | Code::InvalidRequest | Code::MissingKey) {
                codes.push(Choice {
                    value: k.as_str().to_owned(),
                    label: k.as_str().to_owned(),
                    selected: code.as_deref() == Some(k.as_str()),
                });
            }
        }
        let ranges = RANGES
            .iter()
            .map(|(v, l, _)| Choice {
                value: (*v).to_owned(),
                label: (*l).to_owned(),
                selected: !custom && *v == range,
            })
            .chain(std::iter::once(Choice {
                value: "custom".into(),
                label: "Custom range (UTC)".into(),
                selected: custom,
            }))
            .collect();
        let filtered = key_id.is_some() || client_id.is_some() || code.is_some();
        Ok(ok(&LogsPage {
            layout: c.layout("API logs", "logs"),
            action: c.href("/logs"),
            key_id: key_id.unwrap_or_default(),
            client_id: client_id.clone().unwrap_or_default(),
            codes,
            ranges,
            custom,
            since: local(since),
            until: local(until),
            rows: rows(&c, &entries).await,
            chart,
            chart_scope: (q.one("key_id").is_some() || client_id.is_some())
                .then_some("The chart counts every key and app of the organization; the table below is filtered."),
            next: next.as_deref().map(|n| link(Some(n))),
            first: q.one("cursor").map(|_| link(None)),
            range_text: format!("{} to {}", when(since), when(until)),
            filtered,
            error,
            keys_href: c.href("/keys"),
            windowed,
        }))
    }
    .await;
    answer(&app, r)
}

/// `2026-01-02 03:04:05 UTC`: log entries come many a minute.
fn when_exact(ms: i64) -> String {
    let t = crate::views::rfc3339(ms);
    format!(
        "{} {} UTC",
        t.get(..10).unwrap_or(""),
        t.get(11..19).unwrap_or("")
    )
}

fn here_with(path: &str, q: &str) -> String {
    if q.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{q}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_are_utc() {
        assert_eq!(parse_local("2026-01-02T03:04"), Some(1_767_323_040_000));
        assert_eq!(parse_local("2026-01-02T03:04:05"), Some(1_767_323_045_000));
        assert_eq!(parse_local("yesterday"), None);
        assert_eq!(local(1_767_323_045_123), "2026-01-02T03:04");
    }
}
