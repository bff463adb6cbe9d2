//! Seeding through the HTTP API: one organization, N live keys (created
//! on C connections at once), R more keys that are then revoked, and
//! malformed keys (a valid key with its checksum altered). Then each live
//! key is verified once, as keys of a deployment in service have been:
//! a key's first use ever writes its `last_used_at`, and the runs that
//! follow measure cache misses, not that one-time write.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Serialize;

use crate::client::{Conn, Target};

pub struct SeedArgs {
    pub keys: usize,
    pub revoked: usize,
    pub malformed: usize,
    pub connections: usize,
}

#[derive(Debug, Serialize)]
pub struct SeedReport {
    pub org_id: String,
    pub keys: usize,
    pub revoked: usize,
    pub malformed: usize,
    pub seconds: f64,
    pub keys_per_sec: f64,
    /// The pass that verifies each live key once: its first use.
    pub first_use_seconds: f64,
}

pub const KEYS_FILE: &str = "keys.txt";
pub const REVOKED_FILE: &str = "revoked.txt";
pub const MALFORMED_FILE: &str = "malformed.txt";

pub async fn call(
    conn: &mut Conn,
    target: &Target,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
    want: StatusCode,
) -> Result<serde_json::Value> {
    let body = body
        .map(|b| serde_json::to_vec(&b).map(Bytes::from))
        .transpose()?;
    let (status, text) = conn.send(target.request(method, path, body)?).await?;
    if status != want {
        bail!(
            "{path}: expected {want}, got {status}: {}",
            String::from_utf8_lossy(&text)
        );
    }
    serde_json::from_slice(&text).with_context(|| format!("{path}: answer is not JSON"))
}

pub fn field(v: &serde_json::Value, name: &str) -> Result<String> {
    v.get(name)
        .and_then(|x| x.as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("answer has no `{name}`: {v}"))
}

/// Creates `n` keys in `org` on `connections` connections; answers (id, secret) in creation order.
async fn create_keys(
    target: &Target,
    org: &str,
    n: usize,
    connections: usize,
) -> Result<Vec<(String, String)>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections.clamp(1, n.max(1)) {
        let (target, next, org) = (target.clone(), next.clone(), org.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&target).await?;
            let path = format!("/v1/orgs/{org}/keys");
            // `documents.read`: what the `[[routes]]` entry of the forward-auth
            // and proxy scenarios requires (verify requires no scope).
            let body =
                serde_json::json!({"name": "bench", "kind": "live", "scopes": ["documents.read"]});
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let v = call(
                    &mut conn,
                    &target,
                    Method::POST,
                    &path,
                    Some(body.clone()),
                    StatusCode::CREATED,
                )
                .await?;
                out.push((i, field(&v, "id")?, field(&v, "key")?));
            }
            anyhow::Ok(out)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_unstable_by_key(|(i, _, _)| *i);
    Ok(all.into_iter().map(|(_, id, key)| (id, key)).collect())
}

/// Verifies each key once on `connections` connections; every answer
/// must be 200 with `valid: true`.
async fn use_each(target: &Target, keys: Arc<Vec<String>>, connections: usize) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections.clamp(1, keys.len().max(1)) {
        let (target, next, keys) = (target.clone(), next.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&target).await?;
            while let Some(key) = keys.get(next.fetch_add(1, Ordering::Relaxed)) {
                let v = call(
                    &mut conn,
                    &target,
                    Method::POST,
                    "/v1/verify",
                    Some(serde_json::json!({ "credential": key })),
                    StatusCode::OK,
                )
                .await?;
                if v.get("valid") != Some(&serde_json::Value::Bool(true)) {
                    bail!("a seeded key did not verify: {v}");
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// A key with its last (checksum) character changed: the server must
/// refuse it on its shape alone.
pub fn malform(key: &str) -> Result<String> {
    let last = key.chars().last().ok_or_else(|| anyhow!("empty key"))?;
    let swapped = if last == '0' { '1' } else { '0' };
    let mut bad = key
        .get(..key.len() - last.len_utf8())
        .ok_or_else(|| anyhow!("bad key"))?
        .to_owned();
    bad.push(swapped);
    Ok(bad)
}

fn write_lines(path: &Path, lines: impl Iterator<Item = String>) -> Result<()> {
    let mut text = String::new();
    for l in lines {
        text.push_str(&l);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

pub async fn seed(target: &Target, out: &Path, args: &SeedArgs) -> Result<SeedReport> {
    std::fs::create_dir_all(out)?;
    let started = Instant::now();
    let mut conn = Conn::open(target).await?;
    let org = call(
        &mut conn,
        target,
        Method::POST,
        "/v1/orgs",
        Some(serde_json::json!({"name": "bench"})),
        StatusCode::CREATED,
    )
    .await?;
    let org_id = field(&org, "id")?;
    let keys = create_keys(target, &org_id, args.keys + args.revoked, args.connections).await?;
    let (live, to_revoke) = keys.split_at(args.keys.min(keys.len()));
    for (id, _) in to_revoke {
        call(
            &mut conn,
            target,
            Method::POST,
            &format!("/v1/keys/{id}/revoke"),
            None,
            StatusCode::OK,
        )
        .await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let used = Instant::now();
    let live_keys: Arc<Vec<String>> = Arc::new(live.iter().map(|(_, k)| k.clone()).collect());
    use_each(target, live_keys.clone(), args.connections).await?;
    let first_use_seconds = used.elapsed().as_secs_f64();
    let malformed: Vec<String> = live_keys
        .iter()
        .take(args.malformed)
        .map(|k| malform(k))
        .collect::<Result<_>>()?;
    for m in &malformed {
        if latchkey_core::keyfmt::check(m, "sk_live_")
            != Err(latchkey_core::keyfmt::FormatError::Checksum)
        {
            bail!("{m} was meant to have a bad checksum");
        }
    }
    write_lines(&out.join(KEYS_FILE), live_keys.iter().cloned())?;
    write_lines(
        &out.join(REVOKED_FILE),
        to_revoke.iter().map(|(_, k)| k.clone()),
    )?;
    write_lines(&out.join(MALFORMED_FILE), malformed.iter().cloned())?;
    Ok(SeedReport {
        org_id,
        keys: live.len(),
        revoked: to_revoke.len(),
        malformed: malformed.len(),
        seconds,
        keys_per_sec: keys.len() as f64 / seconds,
        first_use_seconds,
    })
}

/// Reads a key file written by [`seed`].
pub fn read_keys(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}
