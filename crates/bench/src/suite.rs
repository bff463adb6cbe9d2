//! The interleaved schedule against one running server: warm-up, then
//! rounds — at -c32, then at -c1. Each run is appended to a JSON-lines
//! file as it ends. Two plans:
//!
//! - `verify`: healthz, verify (hot keys), healthz, verify (all keys),
//!   revoked, malformed;
//! - `protect`: healthz, forward-auth (hot keys), healthz, direct, proxy,
//!   direct — where `proxy` is `GET /api/v1/documents` through latchkey's
//!   proxy and `direct` the same request straight to the upstream, so that
//!   each subject has its baseline run on both sides.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::client::Target;
use crate::load::{self, Check, RunStats, Workload};
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
    }
}

/// Which schedule to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Verify,
    Protect,
}

impl Plan {
    pub fn parse(s: &str) -> Result<Plan> {
        match s {
            "verify" => Ok(Plan::Verify),
            "protect" => Ok(Plan::Protect),
            _ => anyhow::bail!("unknown plan `{s}`: verify or protect"),
        }
    }
}

pub struct SuiteArgs {
    pub plan: Plan,
    /// The upstream behind latchkey's proxy (`protect` plan).
    pub upstream: Option<Target>,
    pub backend: String,
    pub dir: PathBuf,
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

/// One run of a round: its scenario name, how many keys it draws from,
/// where it is sent, and what.
struct Step {
    name: &'static str,
    keys: usize,
    target: Target,
    load: Workload,
}

fn step(name: &'static str, keys: usize, target: &Target, load: Workload) -> Step {
    Step {
        name,
        keys,
        target: target.clone(),
        load,
    }
}

/// The runs of one round, and the indices of the warm-up runs.
fn plan(target: &Target, a: &SuiteArgs) -> Result<(Vec<Step>, Vec<usize>)> {
    let keys = seed::read_keys(&a.dir.join(seed::KEYS_FILE))?;
    let hot_n = a.hot_keys.min(keys.len());
    Ok(match a.plan {
        Plan::Verify => {
            let revoked = seed::read_keys(&a.dir.join(seed::REVOKED_FILE))?;
            let malformed = seed::read_keys(&a.dir.join(seed::MALFORMED_FILE))?;
            let steps = vec![
                step("healthz", 0, target, Workload::healthz()),
                step(
                    "valid-hot",
                    hot_n,
                    target,
                    Workload::verify(Check::Valid, &keys, Some(hot_n))?,
                ),
                step("healthz", 0, target, Workload::healthz()),
                step(
                    "valid-cold",
                    keys.len(),
                    target,
                    Workload::verify(Check::Valid, &keys, None)?,
                ),
                step(
                    "revoked",
                    revoked.len(),
                    target,
                    Workload::verify(Check::Revoked, &revoked, None)?,
                ),
                step(
                    "malformed",
                    malformed.len(),
                    target,
                    Workload::verify(Check::Malformed, &malformed, None)?,
                ),
            ];
            (steps, vec![1])
        }
        Plan::Protect => {
            let upstream = a
                .upstream
                .as_ref()
                .context("the protect plan needs --upstream")?;
            let documents = Workload::documents(&keys, Some(hot_n))?;
            let steps = vec![
                step("healthz", 0, target, Workload::healthz()),
                step(
                    "forward-auth",
                    hot_n,
                    target,
                    Workload::forward_auth(&keys, Some(hot_n))?,
                ),
                step("healthz", 0, target, Workload::healthz()),
                step("direct", hot_n, upstream, documents.clone()),
                step("proxy", hot_n, target, documents.clone()),
                step("direct", hot_n, upstream, documents),
            ];
            (steps, vec![1, 4])
        }
    })
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
                &s.load,
                a.connections,
                Duration::from_secs_f64(a.warmup),
                a.server_pid,
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
                    &s.load,
                    conns,
                    Duration::from_secs_f64(secs),
                    a.server_pid,
                )
                .await?;
                record(round, seq, s.name, s.keys, stats)?;
            }
        }
    }
    Ok(())
}
