//! The interleaved schedule against one running server: warm-up, then
//! rounds — at -c32, then at -c1. Each run is appended to a JSON-lines
//! file as it ends. Two plans:
//!
//! - `verify`: healthz, verify (hot keys), healthz, verify (all keys),
//!   revoked, malformed;
//! - `protect`: healthz, forward-auth (hot keys), healthz, direct, proxy,
//!   direct — where `proxy` is `GET /api/v1/documents` through latchkey's
//!   proxy and `direct` the same request straight to the upstream, so that
//!   each subject has its baseline run on both sides;
//! - `oauth`: healthz, token, peer-token, healthz, introspect,
//!   peer-introspect — client_credentials tokens and introspections from
//!   latchkey and from a peer OAuth server (node-oidc-provider), each
//!   introspection run on a token fetched just before it;
//! - `jwt`: healthz, jwt-hs256, jwt-eddsa, healthz, jwt-es256 — verify of
//!   client-signed JWTs, each request one of 1,000 distinct tokens;
//! - `console`: each console page (keys, a deep page, both searches, a
//!   key, the new-key form, apps, members, the logs over 24 h, 7 and 30
//!   days and with each filter), `GET /healthz` between every few, with
//!   the session `console-seed` opened (see `console`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hyper::HeaderMap;
use hyper::header::HeaderValue;
use serde::{Deserialize, Serialize};

use crate::client::{Conn, Target};
use crate::load::{self, Check, Rng, RunStats, Workload};
use crate::propagation::PropagationRecord;
use crate::seed::{self, SeedReport};

/// One line of the results file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    Seed {
        backend: String,
        keys: usize,
        revoked: usize,
        malformed: usize,
        seconds: f64,
        keys_per_sec: f64,
        /// How long verifying each live key once took (absent in results
        /// files written before the first-use pass).
        #[serde(default)]
        first_use_seconds: Option<f64>,
    },
    Run(RunRecord),
    Propagation(PropagationRecord),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub backend: String,
    /// 0 for the warm-up.
    pub round: usize,
    /// Position in the pass, to find each run's neighbouring healthz runs.
    pub seq: usize,
    pub scenario: String,
    /// How many keys requests were drawn from (0 for healthz).
    pub keys: usize,
    #[serde(flatten)]
    pub stats: RunStats,
}

pub fn append(path: &Path, rec: &Record) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(rec)?)?;
    Ok(())
}

pub fn seed_record(backend: &str, r: &SeedReport) -> Record {
    Record::Seed {
        backend: backend.to_owned(),
        keys: r.keys,
        revoked: r.revoked,
        malformed: r.malformed,
        seconds: r.seconds,
        keys_per_sec: r.keys_per_sec,
        first_use_seconds: Some(r.first_use_seconds),
    }
}

/// Which schedule to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Verify,
    Protect,
    OAuth,
    Jwt,
    Console,
}

impl Plan {
    pub fn parse(s: &str) -> Result<Plan> {
        match s {
            "verify" => Ok(Plan::Verify),
            "protect" => Ok(Plan::Protect),
            "oauth" => Ok(Plan::OAuth),
            "jwt" => Ok(Plan::Jwt),
            "console" => Ok(Plan::Console),
            _ => bail!("unknown plan `{s}`: verify, protect, oauth, jwt or console"),
        }
    }
}

/// latchkey's OAuth endpoints.
pub const TOKEN_PATH: &str = "/oauth/token";
pub const INTROSPECT_PATH: &str = "/oauth/introspect";
/// node-oidc-provider's.
pub const PEER_TOKEN_PATH: &str = "/token";
pub const PEER_INTROSPECT_PATH: &str = "/token/introspection";

/// What the `oauth` plan needs besides latchkey itself.
pub struct OAuthArgs {
    /// The peer OAuth server.
    pub peer: Target,
    /// Its PID, to report its CPU in its runs.
    pub peer_pid: Option<u32>,
    /// `Authorization: Basic` of a latchkey client allowed `scope`.
    pub client: HeaderValue,
    /// `Authorization: Basic` of the peer's client allowed `scope`.
    pub peer_client: HeaderValue,
    /// The scope every token is asked for.
    pub scope: String,
}

pub struct SuiteArgs {
    pub plan: Plan,
    /// The upstream behind latchkey's proxy (`protect` plan).
    pub upstream: Option<Target>,
    /// The peer and the clients (`oauth` plan).
    pub oauth: Option<OAuthArgs>,
    pub backend: String,
    /// The directory `seed` wrote to (`verify` and `protect` plans).
    pub dir: Option<PathBuf>,
    pub server_pid: Option<u32>,
    pub seconds: f64,
    pub rounds: usize,
    pub c1_seconds: f64,
    pub c1_rounds: usize,
    pub warmup: f64,
    pub hot_keys: usize,
    pub connections: usize,
    pub jsonl: PathBuf,
}

pub fn progress(r: &RunRecord) {
    let s = &r.stats;
    let cpu = s
        .server_cpu
        .map(|c| format!("{c:.0}%"))
        .unwrap_or_else(|| "-".into());
    let void = if s.wrong + s.errors > 0 {
        format!(
            "  VOID: {} wrong, {} errors: {}",
            s.wrong,
            s.errors,
            s.sample_wrong.as_deref().unwrap_or("")
        )
    } else {
        String::new()
    };
    eprintln!(
        "  {:<12} c{:<3} round {} {:<12} {:>9.0} req/s  p50 {:>7}  p99 {:>7}  server CPU {:>5}{void}",
        r.backend,
        s.connections,
        r.round,
        r.scenario,
        s.rps,
        crate::report::fmt_us(s.p50_us),
        crate::report::fmt_us(s.p99_us),
        cpu
    );
}

/// What a step sends: the same workload every run, or an introspection
/// of a token fetched from the same server just before the run (a peer
/// that keeps tokens in a bounded in-memory store, as node-oidc-provider
/// does — 1,000 entries — forgets a token once a token run has issued
/// a thousand more).
enum Load {
    Fixed(Workload),
    Introspect {
        token_path: &'static str,
        introspect_path: &'static str,
        client: HeaderValue,
        scope: String,
    },
}

/// One run of a round: its scenario name, how many keys it draws from,
/// where it is sent, what, and whose CPU to measure.
struct Step {
    name: &'static str,
    keys: usize,
    target: Target,
    load: Load,
    pid: Option<u32>,
}

impl Step {
    async fn workload(&self) -> Result<Workload> {
        match &self.load {
            Load::Fixed(w) => Ok(w.clone()),
            Load::Introspect {
                token_path,
                introspect_path,
                client,
                scope,
            } => {
                let token = fetch_token(&self.target, token_path, client, scope)
                    .await
                    .with_context(|| format!("a token to introspect ({})", self.name))?;
                Ok(Workload::introspection(
                    introspect_path,
                    client.clone(),
                    &token,
                ))
            }
        }
    }
}

/// One client_credentials token from `target`, outside any measurement.
pub async fn fetch_token(
    target: &Target,
    path: &str,
    client: &HeaderValue,
    scope: &str,
) -> Result<String> {
    let load = Workload::client_credentials(path, client.clone(), scope);
    let mut conn = Conn::open(target).await?;
    let (status, body) = conn.send(load.request(target, &mut Rng::new(1))?).await?;
    if !Check::Token.is_right(status, &HeaderMap::new(), &body) {
        bail!(
            "POST {path} to {}: {status}: {}",
            target.addr,
            String::from_utf8_lossy(body.get(..300).unwrap_or(&body))
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("{path}: answer is not JSON"))?;
    seed::field(&v, "access_token")
}

fn step(name: &'static str, keys: usize, target: &Target, load: Workload, a: &SuiteArgs) -> Step {
    Step {
        name,
        keys,
        target: target.clone(),
        load: Load::Fixed(load),
        pid: a.server_pid,
    }
}

/// The runs of one round, and the indices of the warm-up runs.
fn plan(target: &Target, a: &SuiteArgs) -> Result<(Vec<Step>, Vec<usize>)> {
    match a.plan {
        Plan::Verify => verify_plan(target, a),
        Plan::Protect => protect_plan(target, a),
        Plan::OAuth => oauth_plan(target, a),
        Plan::Jwt => jwt_plan(target, a),
        Plan::Console => console_plan(target, a),
    }
}

/// healthz, then the console pages three at a time with a healthz run
/// after each three, so that every page has a healthz run close by.
fn console_plan(target: &Target, a: &SuiteArgs) -> Result<(Vec<Step>, Vec<usize>)> {
    let dir = a
        .dir
        .as_deref()
        .context("the console plan needs --dir (where console-seed wrote)")?;
    let seed = crate::console::read(dir)?;
    let cookie = crate::console::cookie_header(&seed)?;
    let mut steps = vec![step("healthz", 0, target, Workload::healthz(), a)];
    let mut warmups = Vec::new();
    for (i, (name, path)) in crate::console::pages(&seed).into_iter().enumerate() {
        warmups.push(steps.len());
        steps.push(step(
            name,
            seed.keys,
            target,
            Workload::page(&path, vec![cookie.clone()]),
            a,
        ));
        if i % 3 == 2 {
            steps.push(step("healthz", 0, target, Workload::healthz(), a));
        }
    }
    if steps.last().is_some_and(|s| s.name != "healthz") {
        steps.push(step("healthz", 0, target, Workload::healthz(), a));
    }
    Ok((steps, warmups))
}

/// The seed directory and its keys (`verify` and `protect` plans).
fn seeded(a: &SuiteArgs) -> Result<(&Path, Vec<String>)> {
    let dir = a
        .dir
        .as_deref()
        .context("the verify and protect plans need --dir")?;
    Ok((dir, seed::read_keys(&dir.join(seed::KEYS_FILE))?))
}

fn verify_plan(target: &Target, a: &SuiteArgs) -> Result<(Vec<Step>, Vec<usize>)> {
    let (dir, keys) = seeded(a)?;
    let hot_n = a.hot_keys.min(keys.len());
    let revoked = seed::read_keys(&dir.join(seed::REVOKED_FILE))?;
    let malformed = seed::read_keys(&dir.join(seed::MALFORMED_FILE))?;
    let steps = vec![
        step("healthz", 0, target, Workload::healthz(), a),
        step(
            "valid-hot",
            hot_n,
            target,
            Workload::verify(Check::Valid, &keys, Some(hot_n))?,
            a,
        ),
        step("healthz", 0, target, Workload::healthz(), a),
        step(
            "valid-cold",
            keys.len(),
            target,
            Workload::verify(Check::Valid, &keys, None)?,
            a,
        ),
        step(
            "revoked",
            revoked.len(),
            target,
            Workload::verify(Check::Revoked, &revoked, None)?,
            a,
        ),
        step(
            "malformed",
            malformed.len(),
            target,
            Workload::verify(Check::Malformed, &malformed, None)?,
            a,
        ),
    ];
    Ok((steps, vec![1]))
}

fn protect_plan(target: &Target, a: &SuiteArgs) -> Result<(Vec<Step>, Vec<usize>)> {
    let (_, keys) = seeded(a)?;
    let hot_n = a.hot_keys.min(keys.len());
    let upstream = a
        .upstream
        .as_ref()
        .context("the protect plan needs --upstream")?;
    let documents = Workload::documents(&keys, Some(hot_n))?;
    let steps = vec![
        step("healthz", 0, target, Workload::healthz(), a),
        step(
            "forward-auth",
            hot_n,
            target,
            Workload::forward_auth(&keys, Some(hot_n))?,
            a,
        ),
        step("healthz", 0, target, Workload::healthz(), a),
        step("direct", hot_n, upstream, documents.clone(), a),
        step("proxy", hot_n, target, documents.clone(), a),
        step("direct", hot_n, upstream, documents, a),
    ];
    Ok((steps, vec![1, 4]))
}

/// healthz, jwt-hs256, jwt-eddsa, healthz, jwt-es256: each algorithm's
/// run has a healthz run on at least one side in its round; then, when
/// seed-jwts wrote them, healthz, jwt-*-fresh (each request a token sent
/// once), healthz. Only the reused-token runs are warmed up.
fn jwt_plan(target: &Target, a: &SuiteArgs) -> Result<(Vec<Step>, Vec<usize>)> {
    let dir = a
        .dir
        .as_deref()
        .context("the jwt plan needs --dir (written by seed-jwts)")?;
    const NAMES: [(&str, &str); 3] = [
        ("jwt-hs256", "jwt-hs256-fresh"),
        ("jwt-eddsa", "jwt-eddsa-fresh"),
        ("jwt-es256", "jwt-es256-fresh"),
    ];
    let healthz = || step("healthz", 0, target, Workload::healthz(), a);
    let mut reused = Vec::new();
    let mut fresh = Vec::new();
    for ((name, fresh_name), (_, file, fresh_file)) in NAMES.into_iter().zip(crate::jwt::ALGS) {
        let tokens = seed::read_keys(&dir.join(file))?;
        let load = Workload::verify(Check::Valid, &tokens, None)?;
        reused.push(step(name, tokens.len(), target, load, a));
        let path = dir.join(fresh_file);
        if path.exists() {
            let tokens = seed::read_keys(&path)?;
            let load = Workload::verify(Check::Valid, &tokens, None)?.each_once();
            fresh.push(step(fresh_name, tokens.len(), target, load, a));
        }
    }
    let mut reused = reused.into_iter();
    let (Some(hs), Some(ed), Some(es)) = (reused.next(), reused.next(), reused.next()) else {
        bail!("three algorithms");
    };
    let mut steps = vec![healthz(), hs, ed, healthz(), es];
    if !fresh.is_empty() {
        steps.push(healthz());
        let mut fresh = fresh.into_iter();
        steps.extend(fresh.next());
        steps.extend(fresh.next());
        steps.push(healthz());
        steps.extend(fresh);
        steps.push(healthz());
    }
    Ok((steps, vec![1, 2, 4]))
}

/// healthz, token, peer-token, healthz, introspect, peer-introspect: each
/// of latchkey's runs has a healthz run on one side and its peer run on
/// the other (the peer's of the round before on the first side, but in
/// the first round).
fn oauth_plan(target: &Target, a: &SuiteArgs) -> Result<(Vec<Step>, Vec<usize>)> {
    let o = a.oauth.as_ref().context("the oauth plan needs --peer")?;
    let peer = |name, load| Step {
        name,
        keys: 0,
        target: o.peer.clone(),
        load,
        pid: o.peer_pid,
    };
    let steps = vec![
        step("healthz", 0, target, Workload::healthz(), a),
        step(
            "token",
            0,
            target,
            Workload::client_credentials(TOKEN_PATH, o.client.clone(), &o.scope),
            a,
        ),
        peer(
            "peer-token",
            Load::Fixed(Workload::client_credentials(
                PEER_TOKEN_PATH,
                o.peer_client.clone(),
                &o.scope,
            )),
        ),
        step("healthz", 0, target, Workload::healthz(), a),
        Step {
            name: "introspect",
            keys: 0,
            target: target.clone(),
            load: Load::Introspect {
                token_path: TOKEN_PATH,
                introspect_path: INTROSPECT_PATH,
                client: o.client.clone(),
                scope: o.scope.clone(),
            },
            pid: a.server_pid,
        },
        peer(
            "peer-introspect",
            Load::Introspect {
                token_path: PEER_TOKEN_PATH,
                introspect_path: PEER_INTROSPECT_PATH,
                client: o.peer_client.clone(),
                scope: o.scope.clone(),
            },
        ),
    ];
    Ok((steps, vec![1, 2, 4, 5]))
}

pub async fn suite(target: &Target, a: &SuiteArgs) -> Result<()> {
    let (steps, warmups) = plan(target, a)?;
    let record =
        |round: usize, seq: usize, scenario: &str, keys: usize, stats: RunStats| -> Result<()> {
            let r = RunRecord {
                backend: a.backend.clone(),
                round,
                seq,
                scenario: scenario.to_owned(),
                keys,
                stats,
            };
            progress(&r);
            append(&a.jsonl, &Record::Run(r))
        };
    if a.warmup > 0.0 {
        for i in warmups {
            let s = steps.get(i).context("plan")?;
            let stats = load::run(
                &s.target,
                &s.workload().await?,
                a.connections,
                Duration::from_secs_f64(a.warmup),
                s.pid,
            )
            .await?;
            record(0, 0, &format!("warmup-{}", s.name), s.keys, stats)?;
        }
    }
    for (conns, secs, rounds) in [
        (a.connections, a.seconds, a.rounds),
        (1, a.c1_seconds, a.c1_rounds),
    ] {
        let mut seq = 0;
        for round in 1..=rounds {
            for s in &steps {
                seq += 1;
                let stats = load::run(
                    &s.target,
                    &s.workload().await?,
                    conns,
                    Duration::from_secs_f64(secs),
                    s.pid,
                )
                .await?;
                record(round, seq, s.name, s.keys, stats)?;
            }
        }
    }
    Ok(())
}
