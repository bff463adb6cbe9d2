//! `latchkey-bench`: the load generator and benchmark driver behind
//! `bench/run.sh` (see docs/benchmarks.md).
//!
//! - `run`: N keep-alive connections for D seconds against one endpoint,
//!   every answer checked, req/s and p50/p99 latency.
//! - `seed`: an organization and N keys through the HTTP API.
//! - `suite`: warm-up and the interleaved rounds against a running server
//!   (`--plan verify`, `protect` or `oauth`), appended to a JSON-lines file.
//! - `console-seed`: apps, members, a usage log written through the store
//!   and a console session, for `suite --plan console`.
//! - `upstream`: the API behind latchkey's proxy: 200 `{"ok":true}` to
//!   everything.
//! - `propagation`: how long a revocation through one node takes to reach
//!   another node.
//! - `report`: the tables from such files; exits 1 if any run is void.

mod client;
mod console;
mod jwt;
mod load;
mod procstat;
mod propagation;
mod report;
mod seed;
mod suite;
mod upstream;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::client::Target;
use crate::load::{Check, Workload};

#[derive(Debug, Parser)]
#[command(
    name = "latchkey-bench",
    about = "Load generator and benchmark driver for latchkey"
)]
struct Cli {
    /// Load-generator threads (1 = one thread, like `wrk -t1`).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Server {
    /// The server, `http://host:port`.
    #[arg(long)]
    url: String,
    /// A root key with `verify` and `keys.*` scopes.
    #[arg(long, env = "LATCHKEY_ROOT_KEY", hide_env_values = true)]
    root: String,
}

/// The `oauth` plan's peer and clients. Secrets come from the
/// environment (never printed).
#[derive(Debug, Args)]
struct OAuthFlags {
    /// The peer OAuth server (node-oidc-provider: `POST /token`, `POST
    /// /token/introspection`), `http://host:port`.
    #[arg(long)]
    peer: Option<String>,
    /// The peer's PID, to report its CPU in its runs.
    #[arg(long)]
    peer_pid: Option<u32>,
    /// A latchkey OAuth client (client_secret_basic) allowed --scope.
    #[arg(long, env = "LATCHKEY_BENCH_CLIENT_ID")]
    client_id: Option<String>,
    /// Its secret (best from the environment: never shown).
    #[arg(long, env = "LATCHKEY_BENCH_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// The peer's client (client_secret_basic) allowed --scope.
    #[arg(long, env = "LATCHKEY_BENCH_PEER_CLIENT_ID")]
    peer_client_id: Option<String>,
    /// Its secret (best from the environment: never shown).
    #[arg(
        long,
        env = "LATCHKEY_BENCH_PEER_CLIENT_SECRET",
        hide_env_values = true
    )]
    peer_client_secret: Option<String>,
    /// The scope every token is asked for.
    #[arg(long, default_value = "api:read")]
    scope: String,
}

impl OAuthFlags {
    /// The oauth plan's arguments, if `--peer` is given.
    fn args(self) -> Result<Option<suite::OAuthArgs>> {
        let Some(peer) = self.peer else {
            return Ok(None);
        };
        let id = self.client_id.context("--client-id")?;
        let secret = self.client_secret.context("--client-secret")?;
        let peer_id = self.peer_client_id.context("--peer-client-id")?;
        let peer_secret = self.peer_client_secret.context("--peer-client-secret")?;
        Ok(Some(suite::OAuthArgs {
            peer: Target::new(&peer, None)?,
            peer_pid: self.peer_pid,
            client: load::basic_auth(&id, &secret)?,
            peer_client: load::basic_auth(&peer_id, &peer_secret)?,
            scope: self.scope,
        }))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One run against one endpoint.
    Run {
        #[command(flatten)]
        server: Server,
        /// healthz, valid, revoked, malformed (POST /v1/verify), forward-auth
        /// (GET /v1/forward-auth for GET /api/v1/documents) or upstream (GET
        /// /api/v1/documents, answered by `latchkey-bench upstream`).
        #[arg(long, default_value = "healthz")]
        check: String,
        /// Key file (one key a line) for every check but healthz.
        #[arg(long)]
        keys: Option<PathBuf>,
        /// Use only the first N keys of the file.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(short = 'c', long, default_value_t = 32)]
        connections: usize,
        #[arg(short = 'd', long, default_value_t = 5.0)]
        seconds: f64,
        /// The server's PID, to report its CPU share.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create an organization and keys through the API; write them to files in --out.
    Seed {
        #[command(flatten)]
        server: Server,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
        #[arg(long, default_value_t = 100)]
        revoked: usize,
        #[arg(long, default_value_t = 1000)]
        malformed: usize,
        #[arg(short = 'c', long, default_value_t = 32)]
        connections: usize,
        /// Append a seed record to this results file.
        #[arg(long)]
        jsonl: Option<PathBuf>,
        #[arg(long, default_value = "server")]
        backend: String,
    },
    /// Register one client per client-JWT algorithm (HS256, EdDSA,
    /// ES256) and write --tokens signed tokens each to --out
    /// (jwt-hs256.txt, jwt-eddsa.txt, jwt-es256.txt).
    SeedJwts {
        #[command(flatten)]
        server: Server,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1000)]
        tokens: usize,
        /// Also this many tokens per algorithm to send once each
        /// (jwt-<alg>-fresh.txt): the cost of a signature never seen.
        #[arg(long, default_value_t = 0)]
        fresh: usize,
        /// The server's `[jwt_auth] audience`.
        #[arg(long)]
        audience: String,
        /// exp - iat of each token, in seconds (at most the server's
        /// max_lifetime; long enough to outlast the runs).
        #[arg(long, default_value_t = 3600)]
        lifetime: i64,
    },
    /// For `suite --plan console`, after `seed`: apps and members through
    /// the API, --rows usage log entries over the last --days written
    /// through the store at --database, a console session of the root
    /// key; what the suite needs goes to --out/console.json.
    ConsoleSeed {
        #[command(flatten)]
        server: Server,
        #[arg(long)]
        out: PathBuf,
        /// The server's database (`sqlite://...` or `postgres://...`).
        #[arg(long)]
        database: String,
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        #[arg(long, default_value_t = 29.0)]
        days: f64,
        #[arg(long, default_value_t = 20)]
        apps: usize,
        #[arg(long, default_value_t = 20)]
        members: usize,
    },
    /// Warm-up, then interleaved rounds at -c N and at -c1, appended to --jsonl.
    Suite {
        #[command(flatten)]
        server: Server,
        /// verify (healthz, verify hot, healthz, verify all, revoked,
        /// malformed), protect (healthz, forward-auth, healthz, direct,
        /// proxy, direct; needs --upstream) or oauth (healthz, token,
        /// peer-token, healthz, introspect, peer-introspect; needs --peer
        /// and both servers' client credentials) or jwt (healthz,
        /// jwt-hs256, jwt-eddsa, healthz, jwt-es256; needs --dir from
        /// seed-jwts) or console (the console's pages; needs --dir where
        /// console-seed wrote).
        #[arg(long, default_value = "verify")]
        plan: String,
        /// The upstream behind the server's `[proxy]`, `http://host:port`.
        #[arg(long)]
        upstream: Option<String>,
        #[command(flatten)]
        oauth: Box<OAuthFlags>,
        /// The directory `seed` (verify, protect) or `seed-jwts` (jwt) wrote to.
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        backend: String,
        #[arg(long)]
        server_pid: Option<u32>,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 3.0)]
        c1_seconds: f64,
        #[arg(long, default_value_t = 2)]
        c1_rounds: usize,
        #[arg(long, default_value_t = 3.0)]
        warmup: f64,
        /// Size of the hot key set (the first N keys).
        #[arg(long, default_value_t = 1000)]
        hot_keys: usize,
        #[arg(short = 'c', long, default_value_t = 32)]
        connections: usize,
        #[arg(long)]
        jsonl: PathBuf,
    },
    /// Serve 200 `{"ok":true}` to every request (the upstream of the proxy
    /// scenario); prints `http://ADDR` on stdout.
    Upstream {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Revocation through node A until node B, which has the key cached,
    /// answers KEY_REVOKED: p50/p99/max over --n rounds.
    Propagation {
        /// Node A (keys are created and revoked through it), `http://host:port`.
        #[arg(long)]
        a: String,
        /// Node B (keys are verified through it), `http://host:port`.
        #[arg(long)]
        b: String,
        /// A root key with `verify` and `keys.*` scopes.
        #[arg(long, env = "LATCHKEY_ROOT_KEY", hide_env_values = true)]
        root: String,
        /// Rounds (one key each).
        #[arg(long, default_value_t = 200)]
        n: usize,
        /// Longest wait per round for B, in seconds.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
        #[arg(long, default_value = "postgres")]
        backend: String,
        /// Append the record to this results file.
        #[arg(long)]
        jsonl: Option<PathBuf>,
    },
    /// Print the tables of results files; exit 1 if any run had wrong answers.
    Report { files: Vec<PathBuf> },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("latchkey-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main(cli: Cli) -> Result<ExitCode> {
    let rt = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()?
    };
    rt.block_on(async_main(cli.command))
}

async fn async_main(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Run {
            server,
            check,
            keys,
            limit,
            connections,
            seconds,
            server_pid,
            json,
        } => {
            let target = Target::new(&server.url, Some(&server.root))?;
            let check = Check::parse(&check)?;
            let load = match check {
                Check::Healthz => Workload::healthz(),
                Check::Token | Check::Introspect => {
                    anyhow::bail!("token and introspect runs: `suite --plan oauth`")
                }
                c => {
                    let path = keys.context("--keys is needed for every check but healthz")?;
                    let keys = seed::read_keys(&path)?;
                    match c {
                        Check::ForwardAuth => Workload::forward_auth(&keys, limit)?,
                        Check::Upstream => Workload::documents(&keys, limit)?,
                        c => Workload::verify(c, &keys, limit)?,
                    }
                }
            };
            let stats = load::run(
                &target,
                &load,
                connections,
                Duration::from_secs_f64(seconds),
                server_pid,
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string(&stats)?);
            } else {
                println!(
                    "{:.0} req/s  p50 {}  p99 {}  max {}  ({} right, {} wrong, {} errors in {:.1} s on {} connections; server CPU {})",
                    stats.rps,
                    report::fmt_us(stats.p50_us),
                    report::fmt_us(stats.p99_us),
                    report::fmt_us(stats.max_us),
                    stats.ok,
                    stats.wrong,
                    stats.errors,
                    stats.seconds,
                    stats.connections,
                    stats
                        .server_cpu
                        .map(|c| format!("{c:.0}%"))
                        .unwrap_or_else(|| "-".into())
                );
            }
            if stats.wrong + stats.errors > 0 {
                eprintln!(
                    "VOID: wrong answers or errors; first: {}",
                    stats.sample_wrong.as_deref().unwrap_or("")
                );
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Seed {
            server,
            out,
            keys,
            revoked,
            malformed,
            connections,
            jsonl,
            backend,
        } => {
            let target = Target::new(&server.url, Some(&server.root))?;
            let args = seed::SeedArgs {
                keys,
                revoked,
                malformed,
                connections,
            };
            let r = seed::seed(&target, &out, &args).await?;
            eprintln!(
                "seeded {} keys + {} revoked in {:.1} s ({:.0} keys/s), each key verified once in {:.1} s, {} malformed; org {}; files in {}",
                r.keys,
                r.revoked,
                r.seconds,
                r.keys_per_sec,
                r.first_use_seconds,
                r.malformed,
                r.org_id,
                out.display()
            );
            if let Some(path) = jsonl {
                suite::append(&path, &suite::seed_record(&backend, &r))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::SeedJwts {
            server,
            out,
            tokens,
            fresh,
            audience,
            lifetime,
        } => {
            let target = Target::new(&server.url, Some(&server.root))?;
            let args = jwt::JwtSeed {
                tokens,
                fresh,
                audience: &audience,
                lifetime_s: lifetime,
            };
            jwt::seed(&target, &out, &args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ConsoleSeed {
            server,
            out,
            database,
            rows,
            days,
            apps,
            members,
        } => {
            let target = Target::new(&server.url, Some(&server.root))?;
            let r = console::seed(
                &target,
                &server.root,
                &out,
                &console::SeedArgs {
                    database,
                    rows,
                    days,
                    apps,
                    members,
                },
            )
            .await?;
            eprintln!(
                "console seed: {} keys, {} log entries, {apps} apps, {members} members, a session, in {:.1} s",
                r.keys, r.log_rows, r.seconds
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Suite {
            server,
            plan,
            upstream,
            oauth,
            dir,
            backend,
            server_pid,
            seconds,
            rounds,
            c1_seconds,
            c1_rounds,
            warmup,
            hot_keys,
            connections,
            jsonl,
        } => {
            let target = Target::new(&server.url, Some(&server.root))?;
            let args = suite::SuiteArgs {
                plan: suite::Plan::parse(&plan)?,
                upstream: upstream.map(|u| Target::new(&u, None)).transpose()?,
                oauth: oauth.args()?,
                backend,
                dir,
                server_pid,
                seconds,
                rounds,
                c1_seconds,
                c1_rounds,
                warmup,
                hot_keys,
                connections,
                jsonl,
            };
            suite::suite(&target, &args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Upstream { listen } => {
            upstream::serve(&listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Propagation {
            a,
            b,
            root,
            n,
            timeout,
            backend,
            jsonl,
        } => {
            let args = propagation::PropagationArgs {
                backend,
                rounds: n,
                timeout: Duration::try_from_secs_f64(timeout).context("--timeout")?,
            };
            let rec = propagation::run(
                &Target::new(&a, Some(&root))?,
                &Target::new(&b, Some(&root))?,
                &args,
            )
            .await?;
            eprintln!("{}", report::propagation_line(&rec));
            if let Some(path) = jsonl {
                suite::append(&path, &suite::Record::Propagation(rec.clone()))?;
            }
            Ok(if rec.timeouts > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Report { files } => {
            let rep = report::render(&report::read(&files)?)?;
            print!("{}", rep.text);
            Ok(if rep.void {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
