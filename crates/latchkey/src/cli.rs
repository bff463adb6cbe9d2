//! The command line (SPEC §10). Commands work on the database directly
//! through the same services as the HTTP API, print text for people and
//! `--json` (the HTTP API's JSON) for scripts. Exit codes: 0 done or
//! valid, 1 refused, 2 usage or config error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::app::App;
use crate::config::{self, Loaded};
use crate::crypto::{MasterKey, Origin};
use crate::error::ApiError;
use crate::http::v1::VerifyAnswer;
use crate::oauth::manage;
use crate::service;
use crate::views::{KeyView, ListPage, LogView, NewKeyView, NewRootKeyView, OrgView, RootKeyView};

#[derive(Debug, Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Self-hosted API authentication server: API keys with scopes, environments, rotation and revocation."
)]
pub struct Cli {
    /// TOML config file (defaults < file < LATCHKEY_* environment).
    #[arg(long, global = true, env = "LATCHKEY_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL, overriding the config (sqlite://path or postgres://...).
    #[arg(long, global = true)]
    database: Option<String>,
    /// Print the HTTP API's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Config commands.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Root (management) keys.
    #[command(subcommand, name = "root-keys")]
    RootKeys(RootKeysCmd),
    /// Organizations.
    #[command(subcommand)]
    Orgs(OrgsCmd),
    /// API keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// OAuth clients (third-party and first-party apps).
    #[command(subcommand)]
    Clients(ClientsCmd),
    /// Organization users (who sign in to authorize OAuth apps and to the console).
    #[command(subcommand)]
    Users(UsersCmd),
    /// An organization's usage log, newest first: decisions and management actions.
    Logs(LogsArgs),
    /// Verify a credential, as `POST /v1/verify` does. Exit 0 if valid, 1 if not.
    Verify {
        credential: String,
        /// Required scopes, space- or comma-separated.
        #[arg(long)]
        scopes: Option<String>,
        #[arg(long)]
        environment: Option<String>,
    },
    /// The keys OAuth access tokens are signed with.
    #[command(subcommand, name = "signing-keys")]
    SigningKeys(SigningKeysCmd),
}

#[derive(Debug, Subcommand)]
enum SigningKeysCmd {
    /// Sign with a new key from now on (`[oauth] signing_alg`); the old one
    /// stays in the JWKS until the tokens it signed have expired.
    Rotate,
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Validate the config and print the effective one, secrets masked.
    Check,
}

#[derive(Debug, Subcommand)]
enum RootKeysCmd {
    /// Create a root key (shown once).
    Create {
        #[arg(long, default_value = "cli")]
        name: String,
        /// Management scopes, space- or comma-separated (default `*`).
        #[arg(long, default_value = "*")]
        scopes: String,
    },
}

#[derive(Debug, Subcommand)]
enum OrgsCmd {
    /// Create an organization.
    Create {
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCmd {
    /// Create an API key (shown once).
    Create(CreateKeyArgs),
    /// List an organization's keys, newest first.
    List {
        #[arg(long)]
        org: String,
        #[arg(long)]
        external_id: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Revoke a key.
    Revoke {
        key_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Rotate a key: prints the new key once; the old one works for the grace period.
    Rotate {
        key_id: String,
        /// e.g. 24h, 90s or seconds (default 0: the old key stops now).
        #[arg(long)]
        grace_period: Option<String>,
    },
}

#[derive(Debug, Args)]
struct CreateKeyArgs {
    #[arg(long)]
    org: String,
    #[arg(long)]
    name: String,
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    environment: Option<String>,
    /// Scopes, space- or comma-separated.
    #[arg(long, default_value = "")]
    scopes: String,
    /// e.g. 90d, 24h or seconds.
    #[arg(long)]
    expires_in: Option<String>,
    #[arg(long)]
    external_id: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ClientsCmd {
    /// Register an OAuth client (its secret is shown once).
    Create(CreateClientArgs),
}

#[derive(Debug, Args)]
struct CreateClientArgs {
    #[arg(long)]
    org: String,
    #[arg(long)]
    name: String,
    /// An exact redirect URI (repeatable).
    #[arg(long = "redirect-uri", value_name = "URI")]
    redirect_uris: Vec<String>,
    /// authorization_code, refresh_token or client_credentials (repeatable;
    /// default: authorization_code and refresh_token with redirect URIs,
    /// else client_credentials).
    #[arg(long = "grant-type", value_name = "GRANT")]
    grant_types: Vec<String>,
    /// The scopes the client may be granted, space- or comma-separated.
    #[arg(long, default_value = "")]
    scopes: String,
    /// A public client (browser or native app): no secret, PKCE only.
    #[arg(long)]
    public: bool,
    /// client_secret_basic, client_secret_post, private_key_jwt or none
    /// (default: none for public clients, else client_secret_basic).
    #[arg(long = "auth-method", value_name = "METHOD")]
    auth_method: Option<String>,
    /// The client's public keys: a JSON file with `{"keys": [JWK, ...]}`
    /// or one JWK (`-` reads standard input).
    #[arg(long = "jwks-file", value_name = "FILE")]
    jwks_file: Option<String>,
    /// Accept JWTs the client signs itself: HS256 (with its secret),
    /// ES256, EdDSA or RS256 (with a key of --jwks-file).
    #[arg(long = "jwt-alg", value_name = "ALG")]
    jwt_alg: Option<String>,
}

/// The keys of `--jwks-file`, as `{"keys": [...]}` (one JWK is wrapped).
fn jwks_arg(path: Option<&str>) -> Result<Option<serde_json::Value>, Failure> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| Failure::Usage(format!("--jwks-file {path}: {e}")))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Failure::Usage(format!("--jwks-file {path}: not JSON ({e})")))?;
    Ok(Some(if v.get("kty").is_some() {
        serde_json::json!({ "keys": [v] })
    } else {
        v
    }))
}

#[derive(Debug, Subcommand)]
enum UsersCmd {
    /// Add a user to an organization.
    Create(CreateUserArgs),
}

#[derive(Debug, Args)]
struct CreateUserArgs {
    #[arg(long)]
    org: String,
    #[arg(long)]
    email: String,
    /// The password (8 to 1,024 characters); prefer --password-stdin,
    /// which keeps it out of the shell history and the process list.
    #[arg(
        long,
        conflicts_with = "password_stdin",
        required_unless_present = "password_stdin"
    )]
    password: Option<String>,
    /// Read the password from standard input (one line).
    #[arg(long)]
    password_stdin: bool,
    /// admin or member (default member).
    #[arg(long)]
    role: Option<String>,
}

/// The password of `users create`: the flag's, or stdin's first line.
fn password_arg(a: &CreateUserArgs) -> Result<String, Failure> {
    if let Some(p) = &a.password {
        return Ok(p.clone());
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Failure::Other(format!("cannot read the password from stdin: {e}")))?;
    let trimmed = line.strip_suffix('\n').unwrap_or(&line);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    Ok(trimmed.to_owned())
}

#[derive(Debug, Args)]
struct LogsArgs {
    #[arg(long)]
    org: String,
    /// Only this key's decisions and the actions on it.
    #[arg(long)]
    key_id: Option<String>,
    /// Only this OAuth client's entries.
    #[arg(long)]
    client_id: Option<String>,
    /// Only decisions with this code (VALID, INVALID_KEY, KEY_REVOKED, ...).
    #[arg(long)]
    code: Option<String>,
    /// An RFC 3339 time, or a duration back from now (e.g. 1h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// An RFC 3339 time, or a duration back from now.
    #[arg(long)]
    until: Option<String>,
    /// 1 to 200 (default 50).
    #[arg(long)]
    limit: Option<u32>,
    #[arg(long)]
    cursor: Option<String>,
}

/// A time argument: RFC 3339 as is, or a duration back from `now`.
fn time_arg(v: Option<String>, now: i64) -> Option<String> {
    v.map(|s| match config::parse_duration(&s) {
        Ok(d) => crate::views::rfc3339(
            now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        ),
        Err(_) => s,
    })
}

/// The log as a table: one line per entry.
fn log_table(page: &ListPage<LogView>) -> String {
    use crate::views::LogEventView;
    let mut out = format!(
        "{:<24} {:<8} {:<20} {:<6} {:<26} {:<26} {}",
        "TIME", "KIND", "WHAT", "STATUS", "KEY/TARGET", "BY/FROM", "REQUEST"
    );
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    for e in &page.data {
        let (what, status, subject, by) = match &e.event {
            LogEventView::Decision(d) => (
                d.code.clone(),
                d.status.to_string(),
                d.key_id.clone().or_else(|| d.client_id.clone()),
                d.ip.clone(),
            ),
            LogEventView::Action(a) => (
                a.action.clone(),
                String::new(),
                a.target.clone(),
                Some(a.actor.clone()),
            ),
        };
        let kind = match &e.event {
            LogEventView::Decision(_) => "decision",
            LogEventView::Action(_) => "action",
        };
        out.push_str(&format!(
            "\n{:<24} {:<8} {:<20} {:<6} {:<26} {:<26} {}",
            e.time,
            kind,
            what,
            status,
            dash(&subject),
            dash(&by),
            dash(&e.request_id)
        ));
    }
    if page.data.is_empty() {
        out.push_str("\n(no entries)");
    }
    if let Some(c) = &page.next_cursor {
        out.push_str(&format!("\nmore: --cursor {c}"));
    }
    out
}

/// Splits `"a b,c"` into scopes.
pub fn split_scopes(s: &str) -> Vec<String> {
    s.split([' ', ','])
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

fn duration_arg(
    flag: &str,
    v: Option<&str>,
) -> Result<Option<crate::views::DurationInput>, Failure> {
    v.map(|s| {
        config::parse_duration(s)
            .map_err(|e| Failure::Usage(format!("--{flag}: {e}")))
            .and_then(|d| {
                i64::try_from(d.as_secs())
                    .map_err(|_| Failure::Usage(format!("--{flag}: too long")))
            })
            .map(crate::views::DurationInput)
    })
    .transpose()
}

/// Why a command failed, and so its exit code.
enum Failure {
    /// Bad usage or config: exit 2.
    Usage(String),
    /// A refusal (not found, invalid, conflict): exit 1.
    Refused(ApiError),
    /// Anything else (database unreachable, I/O): exit 1.
    Other(String),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Refused(e)
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(Failure::Usage(m)) => {
            eprintln!("{m}");
            ExitCode::from(2)
        }
        Err(Failure::Refused(e)) => {
            if json {
                let problem =
                    crate::http::problem::Problem::new(&e, "", &latchkey_core::ids::new_id("req_"));
                println!("{}", serde_json::to_string(&problem).unwrap_or_default());
            } else {
                eprintln!("error: {}: {}", e.code.as_str(), e.detail);
                for f in &e.errors {
                    eprintln!("  {}: {}", f.field, f.message);
                }
            }
            ExitCode::from(1)
        }
        Err(Failure::Other(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
    }
}

fn init_logs(format: &str, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        println!("{}", text());
    }
}

/// Opens the store, migrates, loads the master key and builds the app.
async fn open(loaded: &Loaded) -> Result<(Arc<App>, tokio::task::JoinHandle<()>, Origin), Failure> {
    let c = &loaded.config;
    if c.is_sqlite() {
        std::fs::create_dir_all(&c.data_dir)
            .map_err(|e| Failure::Other(format!("cannot create {}: {e}", c.data_dir)))?;
    }
    let store = latchkey_store::connect(&c.database_url)
        .await
        .map_err(|e| Failure::Other(format!("cannot open the database: {e}")))?;
    store
        .migrate()
        .await
        .map_err(|e| Failure::Other(format!("migration failed: {e}")))?;
    let configured = c.master_key.as_ref().map(|m| m.0.as_str());
    let (mk, origin) =
        MasterKey::load(configured, std::path::Path::new(&c.data_dir), c.is_sqlite())
            .map_err(Failure::Usage)?;
    let (app, task) = App::new(c.clone(), store, mk);
    Ok((app, task, origin))
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let loaded = config::load(cli.config.as_deref(), cli.database.as_deref())
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let json = cli.json;
    match cli.command {
        Command::Config(ConfigCmd::Check) => {
            let text = toml::to_string_pretty(&loaded.config)
                .map_err(|e| Failure::Other(e.to_string()))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&loaded.config).unwrap_or_default()
                );
            } else {
                let from = loaded
                    .file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "defaults and environment".into());
                println!("# config OK ({from}); secrets masked\n{text}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => serve(loaded).await,
        Command::Migrate => {
            init_logs(&loaded.config.log_format, "warn");
            let (_app, _task, _) = open(&loaded).await?;
            print(json, &serde_json::json!({"migrated": true}), || {
                "Database is up to date.".to_owned()
            });
            Ok(ExitCode::SUCCESS)
        }
        other => {
            init_logs(&loaded.config.log_format, "warn");
            let (app, task, _) = open(&loaded).await?;
            let res = command(&app, other, json).await;
            drop(app);
            let _ = task.await;
            res
        }
    }
}

async fn command(app: &App, cmd: Command, json: bool) -> Result<ExitCode, Failure> {
    let now = app.now_ms();
    let cli = service::Actor::cli();
    match cmd {
        Command::RootKeys(RootKeysCmd::Create { name, scopes }) => {
            let (k, secret) = service::create_root_key(
                app,
                &cli,
                service::CreateRootKey {
                    name,
                    scopes: split_scopes(&scopes),
                },
            )
            .await?;
            let view = NewRootKeyView {
                key: secret.clone(),
                record: RootKeyView::from(&k),
            };
            print(json, &view, || {
                format!(
                    "Created root key {} ({}) with scopes: {}\n\n  {secret}\n\nStore it now: it will not be shown again.",
                    k.id,
                    k.name,
                    k.scopes.join(" ")
                )
            });
        }
        Command::Orgs(OrgsCmd::Create { name }) => {
            let org = service::create_org(app, &cli, service::CreateOrg { name }).await?;
            print(json, &OrgView::from(&org), || {
                format!("Created organization {} ({})", org.id, org.name)
            });
        }
        Command::Keys(KeysCmd::Create(a)) => {
            let req = service::CreateKey {
                name: a.name,
                kind: a.kind,
                environment: a.environment,
                scopes: split_scopes(&a.scopes),
                expires_in: duration_arg("expires-in", a.expires_in.as_deref())?,
                external_id: a.external_id,
                ..Default::default()
            };
            let (k, secret) = service::create_key(app, &cli, &a.org, req).await?;
            let view = NewKeyView {
                key: secret.clone(),
                record: KeyView::new(&k, app.now_ms()),
            };
            print(json, &view, || {
                format!(
                    "Created {} key {} ({}, environment {}) in {}\n\n  {secret}\n\nStore it now: it will not be shown again.",
                    k.kind, k.id, k.name, k.environment, k.org_id
                )
            });
        }
        Command::Keys(KeysCmd::List {
            org,
            external_id,
            limit,
            cursor,
        }) => {
            let (rows, next_cursor) = service::list_keys(
                app,
                &org,
                service::KeyListQuery {
                    external_id,
                    limit,
                    cursor,
                },
            )
            .await?;
            let page = ListPage {
                data: rows.iter().map(|k| KeyView::new(k, app.now_ms())).collect(),
                next_cursor,
            };
            print(json, &page, || {
                let mut out = format!(
                    "{:<26} {:<18} {:<10} {:<9} {:<10} {}",
                    "ID", "START", "KIND", "ENV", "STATUS", "NAME"
                );
                for k in &page.data {
                    let status = serde_json::to_value(k.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    out.push_str(&format!(
                        "\n{:<26} {:<18} {:<10} {:<9} {:<10} {}",
                        k.id, k.start, k.kind, k.environment, status, k.name
                    ));
                }
                if page.data.is_empty() {
                    out.push_str("\n(no keys)");
                }
                if let Some(c) = &page.next_cursor {
                    out.push_str(&format!("\nmore: --cursor {c}"));
                }
                out
            });
        }
        Command::Keys(KeysCmd::Revoke { key_id, reason }) => {
            let k = service::revoke_key(app, &cli, &key_id, service::RevokeKey { reason }).await?;
            let view = KeyView::new(&k, app.now_ms());
            print(json, &view, || {
                format!(
                    "Revoked {} ({})",
                    k.id,
                    k.revoke_reason.clone().unwrap_or_default()
                )
            });
        }
        Command::Keys(KeysCmd::Rotate {
            key_id,
            grace_period,
        }) => {
            let req = service::RotateKey {
                grace_period: duration_arg("grace-period", grace_period.as_deref())?,
            };
            let (new, secret, old) = service::rotate_key(app, &cli, &key_id, req).await?;
            let view = NewKeyView {
                key: secret.clone(),
                record: KeyView::new(&new, app.now_ms()),
            };
            print(json, &view, || {
                let until = old
                    .revoked_at
                    .map(crate::views::rfc3339)
                    .unwrap_or_default();
                format!(
                    "Rotated {} into {}; the old key works until {until}.\n\n  {secret}\n\nStore it now: it will not be shown again.",
                    old.id, new.id
                )
            });
        }
        Command::Clients(ClientsCmd::Create(a)) => {
            let req = manage::CreateClient {
                name: a.name,
                redirect_uris: a.redirect_uris,
                grant_types: (!a.grant_types.is_empty()).then_some(a.grant_types),
                scopes: split_scopes(&a.scopes),
                public: a.public,
                token_endpoint_auth_method: a.auth_method,
                jwks: jwks_arg(a.jwks_file.as_deref())?,
                jwt_auth: a.jwt_alg.map(|alg| manage::JwtAuth { alg }),
                require_pkce: None,
            };
            let (c, secret) = manage::create_client(app, &cli, &a.org, req).await?;
            let view = manage::NewClientView {
                client_id: c.id.clone(),
                client_secret: secret.clone(),
                client: manage::ClientView::from(&c),
            };
            print(json, &view, || {
                let kind = if c.public { "public" } else { "confidential" };
                let mut out = format!(
                    "Created {kind} client {} ({}) in {}\n  grant types:   {}\n  auth method:   {}",
                    c.id,
                    c.name,
                    c.org_id,
                    c.grant_types.join(" "),
                    c.token_endpoint_auth_method
                );
                if let Some(alg) = &c.jwt_auth_alg {
                    out.push_str(&format!("\n  client JWTs:   {alg}"));
                }
                for uri in &c.redirect_uris {
                    out.push_str(&format!("\n  redirect URI:  {uri}"));
                }
                if !c.scopes.is_empty() {
                    out.push_str(&format!("\n  scopes:        {}", c.scopes.join(" ")));
                }
                out.push_str(&format!("\n\n  client_id:     {}", c.id));
                match &secret {
                    Some(s) => out.push_str(&format!(
                        "\n  client_secret: {s}\n\nStore the secret now: it will not be shown again."
                    )),
                    None => out.push_str("\n\nA public client has no secret: it uses PKCE."),
                }
                out
            });
        }
        Command::Users(UsersCmd::Create(a)) => {
            let password = password_arg(&a)?;
            let req = manage::CreateUser {
                email: a.email,
                password,
                role: a.role,
            };
            let u = manage::create_user(app, &cli, &a.org, req).await?;
            print(json, &manage::UserView::from(&u), || {
                format!(
                    "Created user {} ({}, {}) in {}",
                    u.id, u.email, u.role, u.org_id
                )
            });
        }
        Command::Logs(a) => {
            let filter = crate::logs::LogFilter {
                key_id: a.key_id,
                client_id: a.client_id,
                code: a.code,
                since: time_arg(a.since, now),
                until: time_arg(a.until, now),
                cursor: a.cursor,
                limit: a.limit.map(|n| n.to_string()),
            };
            let (rows, next_cursor) = crate::logs::list(app, &a.org, filter).await?;
            let page = ListPage {
                data: rows.iter().map(LogView::from).collect(),
                next_cursor,
            };
            print(json, &page, || log_table(&page));
        }
        Command::Verify {
            credential,
            scopes,
            environment,
        } => {
            let env = environment.unwrap_or_else(|| app.config.environment.clone());
            let required = scopes.as_deref().map(split_scopes).unwrap_or_default();
            let started = std::time::Instant::now();
            let res = crate::decision::decide(
                app,
                crate::decision::Ask {
                    credential: credential.trim(),
                    required_scopes: &required,
                    environment: &env,
                    ip: None,
                },
            )
            .await;
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            app.log_decision(crate::logs::DecisionLog {
                latency_ms,
                ..crate::logs::DecisionLog::of_credential(app, credential.trim(), &res)
            });
            let answer = VerifyAnswer::from_decision(res)?;
            let valid = answer.valid;
            print(json, &answer, || {
                if answer.valid {
                    let holder = match (&answer.key_id, &answer.client_id) {
                        (Some(k), _) => format!("key {k}"),
                        (None, Some(c)) => format!("access token of client {c}"),
                        (None, None) => "credential".to_owned(),
                    };
                    format!(
                        "VALID: {holder} of {} (scopes: {})",
                        answer.org_id.clone().unwrap_or_default(),
                        answer.scopes.clone().unwrap_or_default().join(" ")
                    )
                } else {
                    format!(
                        "{}: {}",
                        answer.code,
                        answer.detail.clone().unwrap_or_default()
                    )
                }
            });
            return Ok(if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Command::SigningKeys(SigningKeysCmd::Rotate) => {
            let kid = crate::oauth::keys::rotate(app).await?;
            print(json, &serde_json::json!({ "kid": kid }), || {
                format!(
                    "Access tokens are now signed with key {kid}; the previous key stays in /.well-known/jwks.json until its tokens have expired."
                )
            });
        }
        Command::Serve | Command::Migrate | Command::Config(_) => {}
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(loaded: Loaded) -> Result<ExitCode, Failure> {
    let c = loaded.config.clone();
    init_logs(&c.log_format, "info");
    let _ = crate::http::ops::metrics_handle();
    let addr = c.listen_addr().map_err(|e| Failure::Usage(e.to_string()))?;
    let (app, task, origin) = open(&loaded).await?;
    match &origin {
        Origin::Config => tracing::info!("master key from LATCHKEY_MASTER_KEY"),
        Origin::File(p) => tracing::info!(path = %p, "master key from file"),
        Origin::Created(p) => {
            tracing::info!(path = %p, "created a new master key file (mode 0600): back it up")
        }
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::Other(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::Other(e.to_string()))?;
    let bootstrap = if app
        .store
        .count_root_keys()
        .await
        .map_err(|e| Failure::Other(e.to_string()))?
        == 0
    {
        Some(
            service::create_root_key(
                &app,
                &service::Actor::cli(),
                service::CreateRootKey {
                    name: "bootstrap".into(),
                    scopes: vec!["*".into()],
                },
            )
            .await?,
        )
    } else {
        None
    };
    tracing::info!(addr = %bound, backend = app.store.backend(), environment = %c.environment, "latchkey listening");
    println!(
        "latchkey {} listening on http://{bound} ({} database)",
        env!("CARGO_PKG_VERSION"),
        app.store.backend()
    );
    if let Some((_, secret)) = bootstrap {
        println!("{}", banner(&secret, &format!("http://{bound}")));
    }
    let retention =
        crate::logs::spawn_retention(app.store.clone(), app.clock.clone(), c.logs.retention.0);
    let router = crate::http::router(app.clone());
    drop(app);
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        return;
                    }
                };
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
    };
    crate::http::serve(listener, router, shutdown)
        .await
        .map_err(|e| Failure::Other(e.to_string()))?;
    retention.abort();
    let _ = task.await;
    Ok(ExitCode::SUCCESS)
}

/// What a newcomer sees at first start: the root key, once, and what to do next.
fn banner(root_key: &str, base: &str) -> String {
    format!(
        r#"
This is a new database: here is its first root key. It is shown once and never again.

    export LATCHKEY_ROOT_KEY={root_key}

Try it (each command prints JSON; copy the ids it returns into the next one):

    # 1. create an organization
    curl -s -X POST {base}/v1/orgs -H "Authorization: Bearer $LATCHKEY_ROOT_KEY" \
      -H 'Content-Type: application/json' -d '{{"name": "Acme"}}'

    # 2. create a test key in it (replace ORG_ID)
    curl -s -X POST {base}/v1/orgs/ORG_ID/keys -H "Authorization: Bearer $LATCHKEY_ROOT_KEY" \
      -H 'Content-Type: application/json' -d '{{"name": "backend", "kind": "test", "scopes": ["documents.read"]}}'

    # 3. verify it, as your API would (replace KEY)
    curl -s -X POST {base}/v1/verify -H "Authorization: Bearer $LATCHKEY_ROOT_KEY" \
      -H 'Content-Type: application/json' \
      -d '{{"credential": "KEY", "environment": "test", "required_scopes": ["documents.read"]}}'

API reference: {base}/openapi.json    Errors: {base}/errors
"#
    )
}
