//! `latchkey-bench propagation`: how long a revocation made through one
//! node takes to reach another node that has the key cached.
//!
//! Each round: create a key through node A, verify it through node B until
//! B says valid (B now has it cached, for `cache.ttl`: 60 s by default),
//! revoke it through A, then verify it through B back to back on one
//! keep-alive connection until B answers `KEY_REVOKED`. The time is taken
//! from the moment A's revoke answer arrived, and also from just before the
//! revoke request was sent, to B's first `KEY_REVOKED` answer.
//!
//! B's change feed must be up before and after the pass (`/metrics`:
//! `latchkey_change_feed_up 1`): while it is down B bypasses its caches,
//! and its answers would come from the database whatever the feed does.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::client::{Conn, Target};
use crate::seed::{call, field};

pub struct PropagationArgs {
    pub backend: String,
    pub rounds: usize,
    /// Longest wait, per round, for B to see the key valid, then revoked.
    pub timeout: Duration,
}

/// One line of the results file: every round's times in µs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PropagationRecord {
    pub backend: String,
    pub rounds: usize,
    /// From A's revoke answer to B's first `KEY_REVOKED` answer.
    pub from_answer_us: Vec<u64>,
    /// From just before the revoke request was sent through A to B's
    /// first `KEY_REVOKED` answer.
    pub from_send_us: Vec<u64>,
    /// The revoke request through A, sent to answered.
    pub revoke_us: Vec<u64>,
    /// B's answers `valid` to requests sent after A's revoke answer.
    pub stale_answers: u64,
    /// Rounds in which B gave at least one such answer.
    pub stale_rounds: usize,
    /// Rounds in which B did not answer `KEY_REVOKED` within the timeout.
    pub timeouts: usize,
    /// B's `latchkey_cache_invalidations_total` over the pass: changes B
    /// learnt of through the change feed.
    #[serde(default)]
    pub b_invalidations: Option<f64>,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

enum Seen {
    Valid,
    Revoked,
}

/// `POST /v1/verify` of `key` through `conn`: valid or revoked, anything
/// else is an error.
async fn verify(conn: &mut Conn, target: &Target, key: &str) -> Result<Seen> {
    let body = Bytes::from(serde_json::to_vec(
        &serde_json::json!({ "credential": key }),
    )?);
    let (status, text) = conn
        .send(target.request(Method::POST, "/v1/verify", Some(body))?)
        .await?;
    if status != StatusCode::OK {
        bail!(
            "verify through B: {status}: {}",
            String::from_utf8_lossy(&text)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&text)?;
    if v.get("valid").and_then(|x| x.as_bool()) == Some(true) {
        return Ok(Seen::Valid);
    }
    if v.get("code").and_then(|x| x.as_str()) == Some("KEY_REVOKED") {
        return Ok(Seen::Revoked);
    }
    bail!("verify through B: unexpected answer {v}")
}

/// The value of the unlabelled metric `name` in a node's `/metrics`
/// (Prometheus text), `None` if absent.
async fn metric(conn: &mut Conn, target: &Target, name: &str) -> Result<Option<f64>> {
    let (status, text) = conn
        .send(target.request(Method::GET, "/metrics", None)?)
        .await?;
    if status != StatusCode::OK {
        bail!("/metrics: {status}");
    }
    let text = String::from_utf8_lossy(&text);
    Ok(text.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        if n == name {
            v.trim().parse().ok()
        } else {
            None
        }
    }))
}

/// While B's change feed is down B bypasses its caches and every answer
/// comes from the database: a fast "propagation" would then measure
/// nothing. Waits up to `timeout` for `latchkey_change_feed_up 1`.
async fn feed_up(conn: &mut Conn, target: &Target, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if metric(conn, target, "latchkey_change_feed_up").await? == Some(1.0) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("node B's change feed is not up (latchkey_change_feed_up is not 1)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(a: &Target, b: &Target, args: &PropagationArgs) -> Result<PropagationRecord> {
    let mut ca = Conn::open(a).await?;
    let mut cb = Conn::open(b).await?;
    feed_up(&mut cb, b, args.timeout).await?;
    let invalidations_before = metric(&mut cb, b, INVALIDATIONS).await?.unwrap_or(0.0);
    let org = call(
        &mut ca,
        a,
        Method::POST,
        "/v1/orgs",
        Some(serde_json::json!({"name": "bench-propagation"})),
        StatusCode::CREATED,
    )
    .await?;
    let org_id = field(&org, "id")?;
    let create_path = format!("/v1/orgs/{org_id}/keys");
    let create_body =
        serde_json::json!({"name": "propagation", "kind": "live", "scopes": ["documents.read"]});
    let mut rec = PropagationRecord {
        backend: args.backend.clone(),
        rounds: args.rounds,
        ..PropagationRecord::default()
    };
    for round in 1..=args.rounds {
        let created = call(
            &mut ca,
            a,
            Method::POST,
            &create_path,
            Some(create_body.clone()),
            StatusCode::CREATED,
        )
        .await?;
        let (id, key) = (field(&created, "id")?, field(&created, "key")?);

        // B must have the key cached before the revocation.
        let start = Instant::now();
        loop {
            if let Seen::Valid = verify(&mut cb, b, &key).await? {
                break;
            }
            if start.elapsed() > args.timeout {
                bail!("round {round}: B never answered valid for key {id}");
            }
        }

        let sent = Instant::now();
        call(
            &mut ca,
            a,
            Method::POST,
            &format!("/v1/keys/{id}/revoke"),
            None,
            StatusCode::OK,
        )
        .await?;
        let answered = Instant::now();
        let mut stale = 0u64;
        loop {
            match verify(&mut cb, b, &key).await? {
                Seen::Revoked => {
                    let seen = Instant::now();
                    rec.from_answer_us.push(us(seen.duration_since(answered)));
                    rec.from_send_us.push(us(seen.duration_since(sent)));
                    rec.revoke_us.push(us(answered.duration_since(sent)));
                    break;
                }
                Seen::Valid => stale += 1,
            }
            if answered.elapsed() > args.timeout {
                rec.timeouts += 1;
                eprintln!(
                    "  round {round}: B still answered valid for key {id} {:.1} s after the revocation",
                    args.timeout.as_secs_f64()
                );
                break;
            }
        }
        rec.stale_answers += stale;
        rec.stale_rounds += usize::from(stale > 0);
    }
    feed_up(&mut cb, b, Duration::ZERO).await?;
    let invalidations_after = metric(&mut cb, b, INVALIDATIONS).await?.unwrap_or(0.0);
    rec.b_invalidations = Some(invalidations_after - invalidations_before);
    Ok(rec)
}

const INVALIDATIONS: &str = "latchkey_cache_invalidations_total";
