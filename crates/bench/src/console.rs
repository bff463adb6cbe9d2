//! The console benchmark's seed (`console-seed`) and page workloads
//! (`suite --plan console`): an organization with the keys `seed` made
//! (10,000 in bench/console.sh), apps and members made through the API, a
//! usage log of N entries (1,000,000) written straight through the store
//! (as the server's log writer writes them, hourly counts included) over
//! the last D days, and a console session opened with the root key through
//! the sign-in form. `console.json` in the seed directory tells the suite
//! what to ask for.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, COOKIE, HeaderName, HeaderValue, SET_COOKIE};
use hyper::{Method, StatusCode};
use latchkey_store::{DecisionEvent, LogEntry, LogEvent};
use serde::{Deserialize, Serialize};

use crate::client::{Conn, Target};
use crate::load::Rng;
use crate::seed::{call, field};

pub const CONSOLE_FILE: &str = "console.json";

/// What the console pages of the suite ask for.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConsoleSeed {
    pub org_id: String,
    /// `lk_console=...`: the session of the root key.
    pub cookie: String,
    pub keys: usize,
    /// A key that is in about 1/keys of the log's decisions.
    pub key_id: String,
    /// A key's start, for the search by start.
    pub key_start: String,
    /// A cursor into the middle of the key list.
    pub deep_cursor: String,
    pub client_id: String,
    pub log_rows: usize,
    pub seconds: f64,
}

pub struct SeedArgs {
    pub database: String,
    pub rows: usize,
    pub days: f64,
    pub apps: usize,
    pub members: usize,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A log id (`log_` + 22 base62) from a counter.
fn log_id(n: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut s = String::with_capacity(26);
    s.push_str("log_");
    let mut v = n;
    let mut digits = [b'0'; 22];
    for d in digits.iter_mut().rev() {
        *d = ALPHABET.get((v % 62) as usize).copied().unwrap_or(b'0');
        v /= 62;
    }
    s.push_str(std::str::from_utf8(&digits).unwrap_or("0"));
    s
}

/// The outcome of a seeded decision: mostly valid, some refusals.
fn outcome(r: u64) -> (&'static str, u16) {
    match r % 100 {
        0..=89 => ("VALID", 200),
        90..=94 => ("INSUFFICIENT_SCOPE", 403),
        95..=97 => ("KEY_REVOKED", 401),
        _ => ("RATE_LIMITED", 429),
    }
}

/// Every key id (and start) of `org`, in list order, and the cursor of
/// the page in the middle of the list.
async fn key_ids(
    conn: &mut Conn,
    target: &Target,
    org: &str,
) -> Result<(Vec<(String, String)>, String)> {
    let mut out = Vec::new();
    let mut cursors: Vec<String> = Vec::new();
    loop {
        let path = match cursors.last() {
            None => format!("/v1/orgs/{org}/keys?limit=200"),
            Some(c) => format!("/v1/orgs/{org}/keys?limit=200&cursor={c}"),
        };
        let page = call(conn, target, Method::GET, &path, None, StatusCode::OK).await?;
        for k in page
            .get("data")
            .and_then(|d| d.as_array())
            .context("data")?
        {
            out.push((field(k, "id")?, field(k, "start")?));
        }
        match page.get("next_cursor").and_then(|c| c.as_str()) {
            Some(c) => cursors.push(c.to_owned()),
            None => break,
        }
    }
    let deep = cursors.get(cursors.len() / 2).cloned().unwrap_or_default();
    Ok((out, deep))
}

/// Opens a console session with the root key: the sign-in page (its
/// pre-session cookie and form token), then its form.
async fn sign_in(target: &Target, root: &str) -> Result<String> {
    let mut conn = Conn::open(target).await?;
    let page = target.build(Method::GET, "/console/sign-in", None, &[], None)?;
    let (status, headers, body) = conn.exchange(page).await?;
    if status != StatusCode::OK {
        bail!("GET /console/sign-in: {status}");
    }
    let pre = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("lk_console_pre="))
        .and_then(|v| v.split(';').next())
        .context("no lk_console_pre cookie")?
        .to_owned();
    let html = String::from_utf8_lossy(&body);
    let at = html
        .find("name=\"csrf\" value=\"")
        .context("no csrf field")?
        + 19;
    let csrf = html
        .get(at..)
        .and_then(|r| r.split('"').next())
        .context("csrf")?
        .to_owned();
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", &csrf)
        .append_pair("method", "root_key")
        .append_pair("root_key", root)
        .finish();
    let headers = [
        (
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        ),
        (
            COOKIE,
            HeaderValue::from_str(&format!("lk_console_pre={pre}"))?,
        ),
    ];
    let req = target.build(
        Method::POST,
        "/console/sign-in",
        None,
        &headers,
        Some(Bytes::from(form)),
    )?;
    let (status, headers, _) = conn.exchange(req).await?;
    if status != StatusCode::SEE_OTHER {
        bail!("POST /console/sign-in: {status}");
    }
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("lk_console="))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .context("no session cookie")
}

pub async fn seed(target: &Target, root: &str, dir: &Path, a: &SeedArgs) -> Result<ConsoleSeed> {
    let started = Instant::now();
    let mut conn = Conn::open(target).await?;
    let orgs = call(
        &mut conn,
        target,
        Method::GET,
        "/v1/orgs",
        None,
        StatusCode::OK,
    )
    .await?;
    let org_id = field(
        orgs.get("data")
            .and_then(|d| d.as_array())
            .and_then(|d| d.first())
            .context("no organization: run `seed` first")?,
        "id",
    )?;
    let (keys, deep_cursor) = key_ids(&mut conn, target, &org_id).await?;
    if keys.is_empty() {
        bail!("the organization has no keys: run `seed` first");
    }
    let mut clients = Vec::new();
    for i in 0..a.apps.max(1) {
        let c = call(
            &mut conn,
            target,
            Method::POST,
            &format!("/v1/orgs/{org_id}/clients"),
            Some(serde_json::json!({"name": format!("bench app {i}"), "redirect_uris": ["https://app.example/cb"]})),
            StatusCode::CREATED,
        )
        .await?;
        clients.push(field(&c, "id")?);
    }
    for i in 0..a.members {
        call(
            &mut conn,
            target,
            Method::POST,
            &format!("/v1/orgs/{org_id}/users"),
            Some(serde_json::json!({"email": format!("member{i}@bench.example"), "password": "bench password", "role": if i == 0 { "admin" } else { "member" }})),
            StatusCode::CREATED,
        )
        .await?;
    }
    // The log: entries evenly over the last `days`, in time order (as the
    // writer appends them), keys drawn uniformly, one in 20 decisions an
    // app's, one entry in 200 an action.
    let store = latchkey_store::connect(&a.database)
        .await
        .context("opening the store")?;
    let now = now_ms();
    let span = (a.days * 86_400_000.0) as i64;
    let start = now - span;
    let mut rng = Rng::new(7);
    let mut batch = Vec::with_capacity(10_000);
    for n in 0..a.rows {
        let time = start + (span as i128 * n as i128 / a.rows.max(1) as i128) as i64;
        let r = rng.next_u64();
        let event = if r.is_multiple_of(200) {
            let (id, _) = keys.get(rng.below(keys.len())).context("keys")?;
            LogEvent::Action(latchkey_store::ActionEvent {
                actor: "rtk_bench".into(),
                action: "key.updated".into(),
                target: Some(id.clone()),
            })
        } else if r % 20 == 1 {
            let (code, status) = outcome(r >> 8);
            LogEvent::Decision(DecisionEvent {
                credential_type: Some("access_token".into()),
                client_id: clients.get(rng.below(clients.len())).cloned(),
                code: code.into(),
                status,
                method: Some("GET".into()),
                path: Some("/api/v1/documents".into()),
                ip: Some("203.0.113.7".into()),
                user_agent: Some("bench".into()),
                latency_us: 120,
                ..DecisionEvent::default()
            })
        } else {
            let (code, status) = outcome(r >> 8);
            let (id, _) = keys.get(rng.below(keys.len())).context("keys")?;
            LogEvent::Decision(DecisionEvent {
                credential_type: Some("api_key".into()),
                key_id: Some(id.clone()),
                code: code.into(),
                status,
                ip: Some("203.0.113.7".into()),
                latency_us: 90,
                ..DecisionEvent::default()
            })
        };
        batch.push(LogEntry {
            id: log_id(n as u64),
            time,
            org_id: Some(org_id.clone()),
            request_id: None,
            event,
        });
        if batch.len() == 10_000 {
            store
                .insert_logs(&batch)
                .await
                .context("writing log entries")?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store
            .insert_logs(&batch)
            .await
            .context("writing log entries")?;
    }
    let cookie = sign_in(target, root).await?;
    let (key_id, key_start) = keys.get(keys.len() / 3).cloned().context("keys")?;
    let seed = ConsoleSeed {
        org_id,
        cookie,
        keys: keys.len(),
        key_id,
        key_start,
        deep_cursor,
        client_id: clients.first().cloned().unwrap_or_default(),
        log_rows: a.rows,
        seconds: started.elapsed().as_secs_f64(),
    };
    std::fs::write(dir.join(CONSOLE_FILE), serde_json::to_vec_pretty(&seed)?)
        .context("writing console.json")?;
    Ok(seed)
}

pub fn read(dir: &Path) -> Result<ConsoleSeed> {
    let p = dir.join(CONSOLE_FILE);
    let text = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(serde_json::from_slice(&text)?)
}

/// The console pages measured: (scenario, path).
pub fn pages(s: &ConsoleSeed) -> Vec<(&'static str, String)> {
    let org = format!("/console/orgs/{}", s.org_id);
    vec![
        ("console-keys", format!("{org}/keys")),
        (
            "console-keys-deep",
            format!("{org}/keys?cursor={}", s.deep_cursor),
        ),
        ("console-keys-search-name", format!("{org}/keys?q=bench")),
        (
            "console-keys-search-start",
            format!("{org}/keys?q={}", s.key_start),
        ),
        ("console-key", format!("{org}/keys/{}", s.key_id)),
        ("console-keys-new", format!("{org}/keys/new")),
        ("console-apps", format!("{org}/apps")),
        ("console-members", format!("{org}/members")),
        ("console-logs-24h", format!("{org}/logs")),
        ("console-logs-7d", format!("{org}/logs?range=7d")),
        ("console-logs-30d", format!("{org}/logs?range=30d")),
        (
            "console-logs-key",
            format!("{org}/logs?key_id={}&range=30d", s.key_id),
        ),
        (
            "console-logs-code",
            format!("{org}/logs?code=KEY_REVOKED&range=30d"),
        ),
        (
            "console-logs-app",
            format!("{org}/logs?client_id={}&range=30d", s.client_id),
        ),
        (
            "console-logs-key-code",
            format!("{org}/logs?key_id={}&code=VALID&range=30d", s.key_id),
        ),
    ]
}

/// The header every console request carries.
pub fn cookie_header(s: &ConsoleSeed) -> Result<(HeaderName, HeaderValue)> {
    Ok((COOKIE, HeaderValue::from_str(&s.cookie)?))
}
