//! Tables from a results file: every run, then per scenario the median
//! over rounds, each run as a ratio to the baseline runs beside it
//! (healthz; for the proxy, the same request straight to the upstream),
//! latchkey's OAuth endpoints against a peer's, the revocation propagation
//! times, and the goals.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::load::RunStats;
use crate::propagation::PropagationRecord;
use crate::suite::{Record, RunRecord};

pub fn fmt_us(us: u64) -> String {
    if us < 1000 {
        format!("{us} µs")
    } else {
        format!("{:.2} ms", us as f64 / 1000.0)
    }
}

fn fmt_rps(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_pct(v: Option<f64>) -> String {
    v.map(|c| format!("{c:.0}%")).unwrap_or_else(|| "-".into())
}

/// CPU of every other process (a database server, other users), in % of one core.
fn others(s: &RunStats) -> Option<f64> {
    let all = s.machine_busy? * s.cpus? as f64;
    Some((all - s.server_cpu? - s.client_cpu?).max(0.0))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return None;
    }
    let hi = v.get(n / 2).copied()?;
    if n % 2 == 1 {
        Some(hi)
    } else {
        v.get(n / 2 - 1).map(|lo| (lo + hi) / 2.0)
    }
}

fn spread(v: &[f64]) -> Option<(f64, f64)> {
    let lo = v.iter().copied().reduce(f64::min)?;
    let hi = v.iter().copied().reduce(f64::max)?;
    Some((lo, hi))
}

fn label(scenario: &str, keys: usize) -> String {
    let n = if keys >= 1000 && keys.is_multiple_of(1000) {
        format!("{}k", keys / 1000)
    } else {
        keys.to_string()
    };
    match scenario {
        "healthz" => "GET /healthz".into(),
        "valid-hot" => format!("verify valid, {n} keys"),
        "valid-cold" => format!("verify valid, {n} keys"),
        "revoked" => format!("verify revoked ({n} keys)"),
        "malformed" => "verify malformed (checksum)".into(),
        "forward-auth" => format!("forward-auth GET /api/v1/documents, {n} keys"),
        "direct" => format!("GET /api/v1/documents straight to the upstream, {n} keys"),
        "proxy" => format!("GET /api/v1/documents through latchkey's proxy, {n} keys"),
        "token" => "POST /oauth/token (client_credentials)".into(),
        "peer-token" => "peer: POST /token (client_credentials)".into(),
        "introspect" => "POST /oauth/introspect".into(),
        "peer-introspect" => "peer: POST /token/introspection".into(),
        "jwt-hs256" => format!("verify client JWT HS256, {n} tokens"),
        "jwt-eddsa" => format!("verify client JWT EdDSA, {n} tokens"),
        "jwt-es256" => format!("verify client JWT ES256, {n} tokens"),
        "jwt-hs256-fresh" => "verify client JWT HS256, a new token each request".into(),
        "jwt-eddsa-fresh" => "verify client JWT EdDSA, a new token each request".into(),
        "jwt-es256-fresh" => "verify client JWT ES256, a new token each request".into(),
        "console-keys" => "API keys, first page".into(),
        "console-keys-deep" => "API keys, a page in the middle".into(),
        "console-keys-search-name" => "API keys, search a name every key has".into(),
        "console-keys-search-start" => "API keys, search a key's start".into(),
        "console-key" => "one key".into(),
        "console-keys-new" => "create-key form".into(),
        "console-apps" => "OAuth apps".into(),
        "console-members" => "Members".into(),
        "console-logs-24h" => "API logs, 24 h, chart".into(),
        "console-logs-7d" => "API logs, 7 days, chart".into(),
        "console-logs-30d" => "API logs, 30 days, chart".into(),
        "console-logs-key" => "API logs, 30 days, one key".into(),
        "console-logs-code" => "API logs, 30 days, KEY_REVOKED".into(),
        "console-logs-app" => "API logs, 30 days, one app".into(),
        "console-logs-key-code" => "API logs, 30 days, one key, VALID".into(),
        other => other.into(),
    }
}

/// The scenario a run is compared to: `None` for the baselines themselves.
fn baseline_of(scenario: &str) -> Option<&'static str> {
    match scenario {
        "healthz" | "direct" | "peer-token" | "peer-introspect" => None,
        "proxy" => Some("direct"),
        _ => Some("healthz"),
    }
}

/// The `p`-quantile of sorted `v` (exact: the smallest value with at least
/// `p` of the values at or below it).
fn quantile(v: &[u64], p: f64) -> Option<u64> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let idx = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
    v.get(idx).copied()
}

fn fmt_ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// p50 / p99 / max of µs samples, in ms.
fn p50_p99_max(v: &[u64]) -> (String, String, String) {
    let mut v = v.to_vec();
    v.sort_unstable();
    let f = |x: Option<u64>| x.map(fmt_ms).unwrap_or_else(|| "—".into());
    (
        f(quantile(&v, 0.50)),
        f(quantile(&v, 0.99)),
        f(v.last().copied()),
    )
}

/// The revocation goal: p99 from A's answer to B's `KEY_REVOKED`, in ms.
const PROPAGATION_GOAL_MS: f64 = 100.0;

fn propagation_p99_ms(p: &PropagationRecord) -> Option<f64> {
    let mut v = p.from_answer_us.clone();
    v.sort_unstable();
    quantile(&v, 0.99).map(|us| us as f64 / 1000.0)
}

/// One line about a propagation record, for the command's own output.
pub fn propagation_line(p: &PropagationRecord) -> String {
    let (a50, a99, amax) = p50_p99_max(&p.from_answer_us);
    let (s50, s99, smax) = p50_p99_max(&p.from_send_us);
    format!(
        "propagation ({}, {} rounds): from A's revoke answer p50 {a50} p99 {a99} max {amax}; from before the revoke request p50 {s50} p99 {s99} max {smax}; {} stale answers from B in {} rounds; {} timeouts",
        p.backend,
        p.from_answer_us.len(),
        p.stale_answers,
        p.stale_rounds,
        p.timeouts
    )
}

/// A run with what it is compared to.
struct Row<'a> {
    r: &'a RunRecord,
    /// rps / mean rps of the nearest healthz run before and after it in the same pass.
    ratio: Option<f64>,
}

/// Each pass: (backend, connections) → its runs in order.
fn passes(runs: &[RunRecord]) -> BTreeMap<(String, usize), Vec<&RunRecord>> {
    let mut m: BTreeMap<(String, usize), Vec<&RunRecord>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.round > 0) {
        m.entry((r.backend.clone(), r.stats.connections))
            .or_default()
            .push(r);
    }
    for v in m.values_mut() {
        v.sort_by_key(|r| r.seq);
    }
    m
}

/// `r`'s req/s over the mean req/s of the nearest `base` run before it
/// and after it in the same pass.
fn ratio_to(pass: &[&RunRecord], r: &RunRecord, base: &str) -> Option<f64> {
    let before = pass
        .iter()
        .filter(|h| h.scenario == base && h.seq < r.seq)
        .max_by_key(|h| h.seq);
    let after = pass
        .iter()
        .filter(|h| h.scenario == base && h.seq > r.seq)
        .min_by_key(|h| h.seq);
    let base: Vec<f64> = [before, after]
        .into_iter()
        .flatten()
        .map(|h| h.stats.rps)
        .collect();
    (!base.is_empty()).then(|| r.stats.rps / (base.iter().sum::<f64>() / base.len() as f64))
}

fn with_ratios<'a>(pass: &[&'a RunRecord]) -> Vec<Row<'a>> {
    pass.iter()
        .map(|r| Row {
            r,
            ratio: baseline_of(&r.scenario).and_then(|base| ratio_to(pass, r, base)),
        })
        .collect()
}

/// Cold/hot ratio of each round of a pass: valid-cold rps / valid-hot rps.
fn cold_hot(pass: &[&RunRecord]) -> Vec<f64> {
    let mut out = Vec::new();
    for round in pass
        .iter()
        .map(|r| r.round)
        .collect::<std::collections::BTreeSet<_>>()
    {
        let find = |s: &str| {
            pass.iter()
                .find(|r| r.round == round && r.scenario == s)
                .map(|r| r.stats.rps)
        };
        if let (Some(cold), Some(hot)) = (find("valid-cold"), find("valid-hot"))
            && hot > 0.0
        {
            out.push(cold / hot);
        }
    }
    out
}

/// A goal figure of one backend at the highest concurrency: a ratio that
/// should be at least `goal`.
struct Goal {
    what: String,
    value: Option<f64>,
    spread: Option<(f64, f64)>,
    goal: f64,
}

/// Sets (or replaces) the goal `what` of `backend`, keeping the order in
/// which goals were first set.
fn set_goal(goals: &mut BTreeMap<String, Vec<Goal>>, backend: &str, g: Goal) {
    let v = goals.entry(backend.to_owned()).or_default();
    match v.iter_mut().find(|x| x.what == g.what) {
        Some(x) => *x = g,
        None => v.push(g),
    }
}

/// The goal of a scenario's ratio on `backend`, if it has one: (what, goal).
fn scenario_goal(backend: &str, scenario: &str) -> Option<(&'static str, f64)> {
    match scenario {
        "valid-hot" if backend.ends_with("+redis") => Some((
            "verify valid / healthz, a Redis rate-limit round trip on every verify",
            0.3,
        )),
        "valid-hot" => Some(("verify valid / healthz", 0.5)),
        "forward-auth" => Some(("forward-auth / healthz", 0.5)),
        "proxy" => Some(("through the proxy / straight to the upstream", 0.5)),
        "jwt-hs256" => Some(("verify client JWT HS256 / healthz", 0.4)),
        "jwt-eddsa" => Some(("verify client JWT EdDSA / healthz", 0.25)),
        "jwt-es256" => Some(("verify client JWT ES256 / healthz", 0.25)),
        "jwt-hs256-fresh" => Some((
            "verify client JWT HS256, new token each request / healthz",
            0.4,
        )),
        "jwt-eddsa-fresh" => Some((
            "verify client JWT EdDSA, new token each request / healthz",
            0.25,
        )),
        "jwt-es256-fresh" => Some((
            "verify client JWT ES256, new token each request / healthz",
            0.25,
        )),
        _ => None,
    }
}

pub struct Report {
    pub text: String,
    pub void: bool,
}

pub fn read(paths: &[impl AsRef<Path>]) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for p in paths {
        let p = p.as_ref();
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            out.push(
                serde_json::from_str(line).with_context(|| format!("{}:{}", p.display(), i + 1))?,
            );
        }
    }
    Ok(out)
}

pub fn render(records: &[Record]) -> Result<Report> {
    let props: Vec<&PropagationRecord> = records
        .iter()
        .filter_map(|r| {
            if let Record::Propagation(p) = r {
                Some(p)
            } else {
                None
            }
        })
        .collect();
    let runs: Vec<RunRecord> = records
        .iter()
        .filter_map(|r| {
            if let Record::Run(r) = r {
                Some(r.clone())
            } else {
                None
            }
        })
        .collect();
    let mut t = String::new();
    let bad: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| r.stats.wrong + r.stats.errors > 0)
        .collect();

    for rec in records {
        if let Record::Seed {
            backend,
            keys,
            revoked,
            malformed,
            seconds,
            keys_per_sec,
            first_use_seconds,
        } = rec
        {
            writeln!(
                t,
                "Seeded {backend}: {keys} keys + {revoked} revoked (+ {malformed} malformed made from valid ones) in {seconds:.1} s ({keys_per_sec:.0} keys/s through the API)"
            )?;
            if let Some(s) = first_use_seconds.filter(|s| *s > 0.0) {
                writeln!(
                    t,
                    "- then each live key verified once (its first use, which writes `last_used_at`) in {s:.1} s: {:.0} req/s",
                    *keys as f64 / s
                )?;
            }
        }
    }

    let passes = passes(&runs);
    let mut goals: BTreeMap<String, Vec<Goal>> = BTreeMap::new();
    let mut notes: Vec<String> = Vec::new();
    if !passes.is_empty() {
        writeln!(t, "\n### Every run\n")?;
        if runs.iter().any(|r| r.scenario == "proxy") {
            writeln!(
                t,
                "Ratio: req/s over the mean of the nearest baseline run before and after it in the same pass: `GET /healthz`, and for the proxy the same request sent straight to the upstream (`direct`)."
            )?;
        } else {
            writeln!(
                t,
                "Ratio: req/s over the mean of the nearest `GET /healthz` run before and after it in the same pass."
            )?;
        }
        writeln!(
            t,
            "CPU in % of one core (200% = both cores of a 2-core machine); other procs = every other process (the PostgreSQL server, Redis, the proxy's upstream, other users), from /proc/stat.\n"
        )?;
        every_run(&mut t, &passes)?;
        summary(&mut t, &passes, &mut goals)?;
        if passes.values().flatten().any(|r| r.scenario == "token") {
            oauth_section(&mut t, &passes, &mut goals, &mut notes)?;
        }
        if passes
            .values()
            .flatten()
            .any(|r| r.scenario.starts_with("console-"))
        {
            console_section(&mut t, &passes)?;
        }
    }

    if !props.is_empty() {
        propagation_section(&mut t, &props)?;
    }

    writeln!(t, "\n### Goals (highest concurrency)\n")?;
    let verdict = |v: Option<f64>, goal: f64| match v {
        Some(x) if x >= goal => "met",
        Some(_) => "NOT met",
        None => "not measured",
    };
    for (backend, list) in &goals {
        for g in list {
            writeln!(
                t,
                "- {backend}: {} = {}{} — goal ≥ {} {}",
                g.what,
                g.value
                    .map(|x| format!("{x:.2}"))
                    .unwrap_or_else(|| "—".into()),
                g.spread
                    .map(|(a, b)| format!(" (spread {a:.2}–{b:.2})"))
                    .unwrap_or_default(),
                g.goal,
                verdict(g.value, g.goal)
            )?;
        }
    }
    for n in &notes {
        writeln!(t, "{n}")?;
    }
    propagation_goals(&mut t, &props)?;

    if !bad.is_empty() {
        writeln!(
            t,
            "\nVOID: {} run(s) had wrong answers or errors; their figures do not count:",
            bad.len()
        )?;
        for r in &bad {
            writeln!(
                t,
                "- {} c{} round {} {}: {} wrong, {} errors; first: {}",
                r.backend,
                r.stats.connections,
                r.round,
                r.scenario,
                r.stats.wrong,
                r.stats.errors,
                r.stats.sample_wrong.as_deref().unwrap_or("")
            )?;
        }
    }
    let prop_bad = props.iter().filter(|p| p.timeouts > 0).count();
    if prop_bad > 0 {
        writeln!(
            t,
            "\nVOID: {prop_bad} propagation pass(es) had rounds in which node B never answered KEY_REVOKED; their figures do not count."
        )?;
    }
    if bad.is_empty() && prop_bad == 0 && !(runs.is_empty() && props.is_empty()) {
        writeln!(t, "\nEvery answer of every run was checked and right.")?;
    }
    Ok(Report {
        text: t,
        void: !bad.is_empty() || prop_bad > 0 || (runs.is_empty() && props.is_empty()),
    })
}

type Passes<'a> = BTreeMap<(String, usize), Vec<&'a RunRecord>>;

fn every_run(t: &mut String, passes: &Passes) -> Result<()> {
    writeln!(
        t,
        "| backend | conns | round | scenario | req/s | p50 | p99 | ratio | server CPU | client CPU | other procs | wrong/errors |"
    )?;
    writeln!(
        t,
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for ((backend, conns), pass) in passes {
        for row in with_ratios(pass) {
            let s = &row.r.stats;
            writeln!(
                t,
                "| {backend} | {conns} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.r.round,
                label(&row.r.scenario, row.r.keys),
                fmt_rps(s.rps),
                fmt_us(s.p50_us),
                fmt_us(s.p99_us),
                row.ratio
                    .map(|x| format!("{x:.2}"))
                    .unwrap_or_else(|| "—".into()),
                fmt_pct(s.server_cpu),
                fmt_pct(s.client_cpu),
                fmt_pct(others(s)),
                s.wrong + s.errors
            )?;
        }
    }
    Ok(())
}

fn summary(t: &mut String, passes: &Passes, goals: &mut BTreeMap<String, Vec<Goal>>) -> Result<()> {
    writeln!(
        t,
        "\n### Summary (median over rounds; spread = lowest–highest ratio)\n"
    )?;
    let any_proxy = passes
        .values()
        .flatten()
        .any(|r| baseline_of(&r.scenario) == Some("direct"));
    writeln!(
        t,
        "| backend | conns | scenario | req/s | p50 | p99 | {} | spread | server CPU | client CPU | other procs | wrong/errors |",
        if any_proxy {
            "ratio to baseline"
        } else {
            "ratio to healthz"
        }
    )?;
    writeln!(
        t,
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for ((backend, conns), pass) in passes {
        let rows = with_ratios(pass);
        let mut order: Vec<&str> = Vec::new();
        for r in pass {
            if !order.contains(&r.scenario.as_str()) {
                order.push(&r.scenario);
            }
        }
        for sc in order.iter().copied() {
            let of: Vec<&Row> = rows.iter().filter(|x| x.r.scenario == sc).collect();
            let keys = of.first().map(|x| x.r.keys).unwrap_or(0);
            let m =
                |f: &dyn Fn(&Row) -> Option<f64>| median(of.iter().filter_map(|x| f(x)).collect());
            let ratios: Vec<f64> = of.iter().filter_map(|x| x.ratio).collect();
            let ratio = median(ratios.clone());
            let sp = spread(&ratios);
            let wrong: u64 = of.iter().map(|x| x.r.stats.wrong + x.r.stats.errors).sum();
            writeln!(
                t,
                "| {backend} | {conns} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {wrong} |",
                label(sc, keys),
                m(&|x| Some(x.r.stats.rps)).map(fmt_rps).unwrap_or_default(),
                m(&|x| Some(x.r.stats.p50_us as f64))
                    .map(|v| fmt_us(v as u64))
                    .unwrap_or_default(),
                m(&|x| Some(x.r.stats.p99_us as f64))
                    .map(|v| fmt_us(v as u64))
                    .unwrap_or_default(),
                ratio
                    .map(|x| format!("{x:.2}"))
                    .unwrap_or_else(|| "—".into()),
                sp.map(|(a, b)| format!("{a:.2}–{b:.2}"))
                    .unwrap_or_else(|| "—".into()),
                fmt_pct(m(&|x| x.r.stats.server_cpu)),
                fmt_pct(m(&|x| x.r.stats.client_cpu)),
                fmt_pct(m(&|x| others(&x.r.stats))),
            )?;
            if *conns > 1
                && let Some((what, goal)) = scenario_goal(backend, sc)
            {
                set_goal(
                    goals,
                    backend,
                    Goal {
                        what: what.to_owned(),
                        value: ratio,
                        spread: sp,
                        goal,
                    },
                );
            }
        }
        if !order.contains(&"valid-hot") {
            continue;
        }
        let ch = cold_hot(pass);
        writeln!(
            t,
            "| {backend} | {conns} | verify all keys / verify hot keys | | | | {} | {} | | | | |",
            median(ch.clone())
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "—".into()),
            spread(&ch)
                .map(|(a, b)| format!("{a:.2}–{b:.2}"))
                .unwrap_or_else(|| "—".into())
        )?;
        // The 100k/1k goal is about the store; with Redis it would measure
        // the same store again.
        if *conns > 1 && !backend.ends_with("+redis") {
            set_goal(
                goals,
                backend,
                Goal {
                    what: "verify among all keys / among hot keys".into(),
                    value: median(ch.clone()),
                    spread: spread(&ch),
                    goal: 0.8,
                },
            );
        }
    }
    Ok(())
}

/// The OAuth goals (issue 5): latchkey's req/s over the peer's.
const OAUTH_PEER_GOAL: f64 = 10.0;

/// latchkey's scenario, the peer's, and what they count.
const OAUTH_PAIRS: [(&str, &str, &str); 2] = [
    ("token", "peer-token", "client_credentials tokens/s"),
    ("introspect", "peer-introspect", "introspections/s"),
];

/// `r`'s p50 and p99 over those of the nearest healthz run before and
/// after it in the same pass (means of the two).
fn latency_ratios(pass: &[&RunRecord], r: &RunRecord) -> Option<(f64, f64)> {
    let before = pass
        .iter()
        .filter(|h| h.scenario == "healthz" && h.seq < r.seq)
        .max_by_key(|h| h.seq);
    let after = pass
        .iter()
        .filter(|h| h.scenario == "healthz" && h.seq > r.seq)
        .min_by_key(|h| h.seq);
    let base: Vec<&&RunRecord> = [before, after].into_iter().flatten().collect();
    if base.is_empty() {
        return None;
    }
    let mean = |f: fn(&RunStats) -> u64| {
        base.iter().map(|h| f(&h.stats) as f64).sum::<f64>() / base.len() as f64
    };
    let (p50, p99) = (mean(|s| s.p50_us), mean(|s| s.p99_us));
    (p50 > 0.0 && p99 > 0.0).then(|| (r.stats.p50_us as f64 / p50, r.stats.p99_us as f64 / p99))
}

/// The console's pages: p50 and p99 (medians over rounds) and each as a
/// multiple of `GET /healthz`'s on the same server, in the same pass.
fn console_section(t: &mut String, passes: &Passes) -> Result<()> {
    writeln!(t, "\n### Console pages (median over rounds)\n")?;
    writeln!(
        t,
        "Latency of each page as the load generator sees it on loopback (the server's time, plus a loopback round trip), and its p50 and p99 over those of the nearest `GET /healthz` runs before and after it.\n"
    )?;
    writeln!(
        t,
        "| backend | conns | page | p50 | p99 | p50 / healthz p50 | p99 / healthz p99 | req/s | server CPU | wrong/errors |"
    )?;
    writeln!(t, "|---|---|---|---|---|---|---|---|---|---|")?;
    for ((backend, conns), pass) in passes {
        let mut order: Vec<&str> = Vec::new();
        for r in pass.iter() {
            if (r.scenario.starts_with("console-") || r.scenario == "healthz")
                && !order.contains(&r.scenario.as_str())
            {
                order.push(&r.scenario);
            }
        }
        for sc in order {
            let of: Vec<&&RunRecord> = pass.iter().filter(|r| r.scenario == sc).collect();
            let med_u = |f: fn(&RunStats) -> u64| {
                median(of.iter().map(|r| f(&r.stats) as f64).collect()).map(|x| x as u64)
            };
            let ratios: Vec<(f64, f64)> = if sc == "healthz" {
                Vec::new()
            } else {
                of.iter().filter_map(|r| latency_ratios(pass, r)).collect()
            };
            let r50 = median(ratios.iter().map(|r| r.0).collect());
            let r99 = median(ratios.iter().map(|r| r.1).collect());
            let rps = median(of.iter().map(|r| r.stats.rps).collect());
            let cpu = median(of.iter().filter_map(|r| r.stats.server_cpu).collect());
            let bad: u64 = of.iter().map(|r| r.stats.wrong + r.stats.errors).sum();
            let x = |v: Option<f64>| v.map(|v| format!("{v:.1}×")).unwrap_or_else(|| "—".into());
            writeln!(
                t,
                "| {backend} | {conns} | {} | {} | {} | {} | {} | {} | {} | {bad} |",
                label(sc, 0),
                med_u(|s| s.p50_us)
                    .map(fmt_us)
                    .unwrap_or_else(|| "—".into()),
                med_u(|s| s.p99_us)
                    .map(fmt_us)
                    .unwrap_or_else(|| "—".into()),
                x(r50),
                x(r99),
                rps.map(fmt_rps).unwrap_or_else(|| "—".into()),
                fmt_pct(cpu),
            )?;
        }
    }
    Ok(())
}

fn fmt_ratio(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "—".into())
}

fn fmt_spread(v: &[f64]) -> String {
    spread(v)
        .map(|(a, b)| format!("{a:.2}–{b:.2}"))
        .unwrap_or_else(|| "—".into())
}

/// latchkey's token and introspection runs beside the peer's: req/s and
/// latency of each, the ratios to the peer and to `/healthz` with their
/// goals, the p99s side by side.
fn oauth_section(
    t: &mut String,
    passes: &Passes,
    goals: &mut BTreeMap<String, Vec<Goal>>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let oauth: Vec<(&(String, usize), &Vec<&RunRecord>)> = passes
        .iter()
        .filter(|(_, pass)| pass.iter().any(|r| r.scenario == "token"))
        .collect();
    writeln!(
        t,
        "
### OAuth: latchkey and the peer
"
    )?;
    writeln!(
        t,
        "req/s: median over rounds, spread = lowest–highest run; p50, p99: medians over rounds. In the peer's runs \"server CPU\" is the peer's process. CPU/req: the server's CPU time per answer (server CPU ÷ req/s).\n"
    )?;
    writeln!(
        t,
        "| backend | conns | scenario | req/s | spread | p50 | p99 | server CPU | CPU/req | client CPU | wrong/errors |"
    )?;
    writeln!(t, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for ((backend, conns), pass) in &oauth {
        for sc in [
            "healthz",
            "token",
            "peer-token",
            "introspect",
            "peer-introspect",
        ] {
            let of: Vec<&RunRecord> = pass.iter().filter(|r| r.scenario == sc).copied().collect();
            if of.is_empty() {
                continue;
            }
            let m = |f: &dyn Fn(&RunStats) -> Option<f64>| {
                median(of.iter().filter_map(|r| f(&r.stats)).collect())
            };
            let rps: Vec<f64> = of.iter().map(|r| r.stats.rps).collect();
            let cpu_per_req = m(&|s| {
                let cpu = s.server_cpu?;
                (s.rps > 0.0).then(|| cpu / 100.0 / s.rps * 1e6)
            });
            writeln!(
                t,
                "| {backend} | {conns} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                label(sc, 0),
                m(&|s| Some(s.rps)).map(fmt_rps).unwrap_or_default(),
                spread(&rps)
                    .map(|(a, b)| format!("{}–{}", fmt_rps(a), fmt_rps(b)))
                    .unwrap_or_default(),
                m(&|s| Some(s.p50_us as f64))
                    .map(|v| fmt_us(v as u64))
                    .unwrap_or_default(),
                m(&|s| Some(s.p99_us as f64))
                    .map(|v| fmt_us(v as u64))
                    .unwrap_or_default(),
                fmt_pct(m(&|s| s.server_cpu)),
                cpu_per_req
                    .map(|v| format!("{v:.0} µs"))
                    .unwrap_or_else(|| "-".into()),
                fmt_pct(m(&|s| s.client_cpu)),
                of.iter()
                    .map(|r| r.stats.wrong + r.stats.errors)
                    .sum::<u64>(),
            )?;
        }
    }

    writeln!(
        t,
        "\nRatios: each of latchkey's runs over the mean of the nearest run of the other scenario before and after it in the same pass; median over rounds, spread = lowest–highest. \"10× the peer\" is the peer's own ratio to the healthz runs beside it, times {OAUTH_PEER_GOAL}: above 1, meeting the goal would take latchkey past its own `/healthz`.\n"
    )?;
    writeln!(t, "| backend | conns | ratio | median | spread | goal |")?;
    writeln!(t, "|---|---:|---|---:|---:|---|")?;
    for ((backend, conns), pass) in &oauth {
        for (ours, peer, what) in OAUTH_PAIRS {
            let of: Vec<&RunRecord> = pass
                .iter()
                .filter(|r| r.scenario == ours)
                .copied()
                .collect();
            let vs_peer: Vec<f64> = of.iter().filter_map(|r| ratio_to(pass, r, peer)).collect();
            let vs_healthz: Vec<f64> = of
                .iter()
                .filter_map(|r| ratio_to(pass, r, "healthz"))
                .collect();
            let peer_vs_healthz: Vec<f64> = pass
                .iter()
                .filter(|r| r.scenario == peer)
                .filter_map(|r| ratio_to(pass, r, "healthz"))
                .collect();
            let to_peer = median(vs_peer.clone());
            let to_healthz = median(vs_healthz.clone());
            let ceiling = median(peer_vs_healthz).map(|x| x * OAUTH_PEER_GOAL);
            let verdict = match to_peer {
                Some(x) if x >= OAUTH_PEER_GOAL => "met",
                Some(_) => "NOT met",
                None => "not measured",
            };
            writeln!(
                t,
                "| {backend} | {conns} | {ours} / {peer} | {} | {} | ≥ {OAUTH_PEER_GOAL}: {verdict} |",
                fmt_ratio(to_peer),
                fmt_spread(&vs_peer)
            )?;
            writeln!(
                t,
                "| {backend} | {conns} | {ours} / healthz | {} | {} | {} |",
                fmt_ratio(to_healthz),
                fmt_spread(&vs_healthz),
                match ceiling {
                    Some(c) if c > 1.0 => format!(
                        "10× the peer = {c:.2}× healthz: above latchkey's own /healthz, so the peer is not the limit"
                    ),
                    Some(c) => format!("10× the peer = {c:.2}× healthz"),
                    None => "—".into(),
                }
            )?;
            if *conns > 1 {
                set_goal(
                    goals,
                    backend,
                    Goal {
                        what: format!("{what}, latchkey / peer"),
                        value: to_peer,
                        spread: spread(&vs_peer),
                        goal: OAUTH_PEER_GOAL,
                    },
                );
                if let Some(c) = ceiling.filter(|c| *c > 1.0) {
                    notes.push(format!(
                        "- {backend}: {what}: 10× the peer would be {c:.2}× latchkey's own /healthz, so the peer is not the limit; latchkey's {ours} / healthz = {}{}",
                        fmt_ratio(to_healthz),
                        spread(&vs_healthz)
                            .map(|(a, b)| format!(" (spread {a:.2}–{b:.2})"))
                            .unwrap_or_default()
                    ));
                }
            }
        }
    }

    writeln!(t, "\np99 side by side (medians over rounds):\n")?;
    writeln!(
        t,
        "| backend | conns | token p99 | peer token p99 | introspect p99 | peer introspect p99 |"
    )?;
    writeln!(t, "|---|---:|---:|---:|---:|---:|")?;
    for ((backend, conns), pass) in &oauth {
        let p99 = |sc: &str| {
            median(
                pass.iter()
                    .filter(|r| r.scenario == sc)
                    .map(|r| r.stats.p99_us as f64)
                    .collect(),
            )
            .map(|v| fmt_us(v as u64))
            .unwrap_or_else(|| "—".into())
        };
        writeln!(
            t,
            "| {backend} | {conns} | {} | {} | {} | {} |",
            p99("token"),
            p99("peer-token"),
            p99("introspect"),
            p99("peer-introspect")
        )?;
    }
    Ok(())
}

fn propagation_goals(t: &mut String, props: &[&PropagationRecord]) -> Result<()> {
    for p in props {
        let p99 = propagation_p99_ms(p);
        let verdict = match p99 {
            _ if p.timeouts > 0 => "NOT met (timeouts)",
            Some(x) if x <= PROPAGATION_GOAL_MS => "met",
            Some(_) => "NOT met",
            None => "not measured",
        };
        writeln!(
            t,
            "- {}: revocation through node A seen by node B, p99 from A's answer = {} — goal ≤ {PROPAGATION_GOAL_MS} ms {verdict}",
            p.backend,
            p99.map(|x| format!("{x:.2} ms"))
                .unwrap_or_else(|| "—".into()),
        )?;
    }
    Ok(())
}

fn propagation_section(t: &mut String, props: &[&PropagationRecord]) -> Result<()> {
    writeln!(t, "\n### Revocation propagation between two nodes\n")?;
    writeln!(
        t,
        "Each round: a key created through node A, verified through node B until valid (B has it cached; `cache.ttl` 60 s), revoked through A, then verified through B back to back on one keep-alive connection until B answers `KEY_REVOKED`.\n"
    )?;
    writeln!(t, "| backend | measured | rounds | p50 | p99 | max |")?;
    writeln!(t, "|---|---|---:|---:|---:|---:|")?;
    for p in props {
        for (what, v) in [
            (
                "from A's revoke answer to B's KEY_REVOKED",
                &p.from_answer_us,
            ),
            (
                "from just before the revoke request to B's KEY_REVOKED",
                &p.from_send_us,
            ),
            (
                "the revoke request through A (sent to answered)",
                &p.revoke_us,
            ),
        ] {
            let (p50, p99, max) = p50_p99_max(v);
            writeln!(
                t,
                "| {} | {what} | {} | {p50} | {p99} | {max} |",
                p.backend,
                v.len()
            )?;
        }
    }
    writeln!(t)?;
    for p in props {
        writeln!(
            t,
            "{}: B answered `valid` {} time(s) to requests sent after A's revoke answer, in {} of {} rounds; {} round(s) timed out. B's change feed was up before and after the pass (`latchkey_change_feed_up`), and B forgot {} cached records on its notifications during it.",
            p.backend,
            p.stale_answers,
            p.stale_rounds,
            p.rounds,
            p.timeouts,
            p.b_invalidations
                .map(|x| format!("{x:.0}"))
                .unwrap_or_else(|| "?".into())
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seq: usize, scenario: &str, rps: f64) -> Record {
        Record::Run(RunRecord {
            backend: "sqlite".into(),
            round: 1,
            seq,
            scenario: scenario.into(),
            keys: 1000,
            stats: RunStats {
                connections: 32,
                rps,
                ..RunStats::default()
            },
        })
    }

    #[test]
    fn the_proxy_is_compared_to_direct_and_forward_auth_to_healthz() {
        let recs = vec![
            run(1, "healthz", 100.0),
            run(2, "forward-auth", 60.0),
            run(3, "healthz", 140.0),
            run(4, "direct", 200.0),
            run(5, "proxy", 50.0),
            run(6, "direct", 300.0),
        ];
        let rep = render(&recs).unwrap();
        assert!(
            rep.text.contains(
                "- sqlite: forward-auth / healthz = 0.50 (spread 0.50–0.50) — goal ≥ 0.5 met"
            ),
            "{}",
            rep.text
        );
        assert!(
            rep.text.contains(
                "- sqlite: through the proxy / straight to the upstream = 0.20 (spread 0.20–0.20) — goal ≥ 0.5 NOT met"
            ),
            "{}",
            rep.text
        );
        assert!(!rep.text.contains("verify all keys"));
        assert!(!rep.void);
    }

    #[test]
    fn oauth_ratios_to_the_peer_and_to_healthz() {
        let recs = vec![
            run(1, "healthz", 100.0),
            run(2, "token", 50.0),
            run(3, "peer-token", 20.0),
            run(4, "healthz", 100.0),
            run(5, "introspect", 80.0),
            run(6, "peer-introspect", 5.0),
        ];
        let rep = render(&recs).unwrap();
        let has = |s: &str| assert!(rep.text.contains(s), "no `{s}` in\n{}", rep.text);
        has("| sqlite | 32 | token / peer-token | 2.50 | 2.50–2.50 | ≥ 10: NOT met |");
        has("| sqlite | 32 | introspect / peer-introspect | 16.00 | 16.00–16.00 | ≥ 10: met |");
        // The peer's tokens are 0.2 of healthz: 10× that is above healthz.
        has(
            "| sqlite | 32 | token / healthz | 0.50 | 0.50–0.50 | 10× the peer = 2.00× healthz: above latchkey's own /healthz, so the peer is not the limit |",
        );
        has(
            "| sqlite | 32 | introspect / healthz | 0.80 | 0.80–0.80 | 10× the peer = 0.50× healthz |",
        );
        has(
            "- sqlite: client_credentials tokens/s, latchkey / peer = 2.50 (spread 2.50–2.50) — goal ≥ 10 NOT met",
        );
        has(
            "- sqlite: introspections/s, latchkey / peer = 16.00 (spread 16.00–16.00) — goal ≥ 10 met",
        );
        has(
            "- sqlite: client_credentials tokens/s: 10× the peer would be 2.00× latchkey's own /healthz",
        );
        has("| sqlite | 32 | peer: POST /token (client_credentials) | 20 | 20–20 |");
        assert!(!rep.void);
    }

    #[test]
    fn a_wrong_introspection_voids_the_report() {
        let mut recs = vec![
            run(1, "healthz", 100.0),
            run(2, "token", 50.0),
            run(3, "peer-token", 20.0),
            run(4, "healthz", 100.0),
            run(5, "introspect", 80.0),
        ];
        let mut bad = RunRecord {
            backend: "sqlite".into(),
            round: 1,
            seq: 6,
            scenario: "peer-introspect".into(),
            keys: 0,
            stats: RunStats {
                connections: 32,
                rps: 5.0,
                ok: 10,
                wrong: 1,
                sample_wrong: Some(r#"200 OK: {"active":false}"#.into()),
                ..RunStats::default()
            },
        };
        recs.push(Record::Run(bad.clone()));
        let rep = render(&recs).unwrap();
        assert!(rep.void);
        assert!(rep.text.contains("VOID: 1 run(s)"), "{}", rep.text);
        bad.stats.wrong = 0;
        recs.pop();
        recs.push(Record::Run(bad));
        assert!(!render(&recs).unwrap().void);
    }

    #[test]
    fn propagation_quantiles_and_timeouts() {
        let mut p = PropagationRecord {
            backend: "postgres".into(),
            rounds: 100,
            from_answer_us: (1..=100).map(|i| i * 1000).collect(),
            ..PropagationRecord::default()
        };
        assert_eq!(propagation_p99_ms(&p), Some(99.0));
        let rep = render(&[Record::Propagation(p.clone())]).unwrap();
        assert!(
            rep.text.contains("= 99.00 ms — goal ≤ 100 ms met"),
            "{}",
            rep.text
        );
        assert!(!rep.void);
        p.timeouts = 1;
        let rep = render(&[Record::Propagation(p)]).unwrap();
        assert!(rep.void);
        assert!(rep.text.contains("NOT met (timeouts)"));
    }
}
