//! Configuration: defaults < TOML file (`--config`) < `LATCHKEY_*`
//! environment, loaded with figment, then validated as a whole. A bad
//! config is one line naming the setting and where it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use latchkey_core::keyfmt;
pub use latchkey_core::route::RouteSpec;
use latchkey_core::scope::{ScopePolicy, is_scope_token};

/// Prefix of root (management) keys. Not configurable: it must never
/// collide with an API key kind.
pub const ROOT_PREFIX: &str = "lk_root_";
/// OAuth client secrets.
pub const CLIENT_SECRET_PREFIX: &str = "lk_cs_";
/// Refresh tokens.
pub const REFRESH_PREFIX: &str = "lk_rt_";
/// Opaque access tokens.
pub const ACCESS_PREFIX: &str = "lk_at_";
/// Authorization codes.
pub const CODE_PREFIX: &str = "lk_ac_";
/// Every prefix of a secret latchkey makes itself: no key kind may
/// overlap one (a key could not be told from it).
pub const RESERVED_PREFIXES: &[&str] = &[
    ROOT_PREFIX,
    CLIENT_SECRET_PREFIX,
    REFRESH_PREFIX,
    ACCESS_PREFIX,
    CODE_PREFIX,
];

/// Top-level settings, used to tell `LATCHKEY_*` variables that are
/// config from the ones that are not (e.g. test settings).
const TOP_LEVEL: &[&str] = &[
    "public_url",
    "listen",
    "database_url",
    "data_dir",
    "master_key",
    "region",
    "environment",
    "log_format",
    "credentials",
    "key_kinds",
    "scopes",
    "ratelimit",
    "oauth",
    "jwt_auth",
    "routes",
    "proxy",
    "cache",
    "trusted_proxies",
    "logs",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Public base URL: the issuer, and the base of problem `type` URLs.
    pub public_url: String,
    pub listen: String,
    pub database_url: String,
    /// Where the embedded database and the master key file live.
    pub data_dir: String,
    /// 32 bytes, base64. Required on PostgreSQL; on SQLite a file in
    /// `data_dir` is created at first start when unset.
    pub master_key: Option<Masked>,
    pub region: String,
    pub environment: String,
    /// `text` (default) or `json` log lines on stderr.
    pub log_format: String,
    pub credentials: Credentials,
    pub key_kinds: Vec<KeyKind>,
    pub scopes: Scopes,
    pub cache: CacheConfig,
    pub ratelimit: RateLimitConfig,
    /// CIDRs of the proxies in front of latchkey: from a peer in this list,
    /// the client address is read from `X-Forwarded-For` (the right-most
    /// address that is not itself a trusted proxy).
    pub trusted_proxies: Vec<String>,
    /// The OAuth 2.0 authorization server (SPEC §8).
    pub oauth: OAuthConfig,
    /// Client-signed JWTs (SPEC §7).
    pub jwt_auth: JwtAuthConfig,
    /// What each route of the protected API requires (SPEC §6).
    pub routes: Vec<RouteSpec>,
    pub proxy: ProxyConfig,
    /// The usage log (SPEC §9 "Logs").
    pub logs: LogsConfig,
    /// The console's sessions (SPEC §11).
    pub console: ConsoleConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            listen: "127.0.0.1:8080".into(),
            database_url: "sqlite://./latchkey-data/latchkey.db".into(),
            data_dir: "./latchkey-data".into(),
            master_key: None,
            region: "local".into(),
            environment: "live".into(),
            log_format: "text".into(),
            credentials: Credentials::default(),
            key_kinds: vec![
                KeyKind {
                    name: "live".into(),
                    prefix: "sk_live_".into(),
                    environments: vec!["live".into()],
                    requires_explicit_scopes: false,
                },
                KeyKind {
                    name: "test".into(),
                    prefix: "sk_test_".into(),
                    environments: vec!["test".into()],
                    requires_explicit_scopes: false,
                },
                KeyKind {
                    name: "restricted".into(),
                    prefix: "rk_".into(),
                    environments: vec!["test".into(), "live".into()],
                    requires_explicit_scopes: true,
                },
            ],
            scopes: Scopes::default(),
            cache: CacheConfig::default(),
            ratelimit: RateLimitConfig::default(),
            trusted_proxies: Vec::new(),
            oauth: OAuthConfig::default(),
            jwt_auth: JwtAuthConfig::default(),
            routes: Vec::new(),
            proxy: ProxyConfig::default(),
            logs: LogsConfig::default(),
            console: ConsoleConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Credentials {
    pub bearer: bool,
    pub apikey_scheme: bool,
    pub headers: Vec<String>,
    pub query_param: String,
}

impl Default for Credentials {
    fn default() -> Self {
        Self {
            bearer: true,
            apikey_scheme: true,
            headers: vec!["api_key".into(), "x-api-key".into()],
            query_param: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyKind {
    pub name: String,
    pub prefix: String,
    pub environments: Vec<String>,
    #[serde(default)]
    pub requires_explicit_scopes: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scopes {
    pub separator: String,
    pub catalog: BTreeMap<String, String>,
    pub implies: BTreeMap<String, Vec<String>>,
}

impl Default for Scopes {
    fn default() -> Self {
        Self {
            separator: ".".into(),
            catalog: BTreeMap::new(),
            implies: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Longest a node keeps a key record in its cache. Changes made
    /// through any node reach every node through the change feed within
    /// milliseconds (PostgreSQL `LISTEN`) or 100 ms (SQLite); this lifetime
    /// is only the backstop, should a change ever escape the feed.
    pub ttl: Dur,
    /// Most key records cached per node.
    pub capacity: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Dur(Duration::from_secs(60)),
            capacity: 100_000,
        }
    }
}

/// The OAuth 2.0 authorization server (SPEC §8 `[oauth]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    pub access_token_ttl: Dur,
    pub refresh_token_ttl: Dur,
    pub code_ttl: Dur,
    /// `jwt` (RFC 9068) or `opaque`.
    pub access_token_format: String,
    /// `EdDSA`, `ES256` or `RS256`: the alg of the keys made from now on.
    pub signing_alg: String,
    /// `aud` of access tokens; default: `[jwt_auth] audience` if set,
    /// else `public_url`.
    pub audience: Option<String>,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            access_token_ttl: Dur(Duration::from_secs(3600)),
            refresh_token_ttl: Dur(Duration::from_secs(30 * 86_400)),
            code_ttl: Dur(Duration::from_secs(60)),
            access_token_format: "jwt".into(),
            signing_alg: "EdDSA".into(),
            audience: None,
        }
    }
}

/// Client-signed JWTs (SPEC §7 `[jwt_auth]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtAuthConfig {
    /// The `aud` such a JWT must carry: the protected API. Default:
    /// `[oauth] audience` if set, else `public_url`.
    pub audience: Option<String>,
    /// Longest `exp - iat` accepted.
    pub max_lifetime: Dur,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Dur,
    /// Each token must carry a `jti`, accepted once (remembered in the
    /// database until the token expires, so across nodes).
    pub require_jti: bool,
    /// The `typ` every token must carry in its header (e.g. `JWT`);
    /// unset: `typ` may be left out or be `JWT`.
    pub typ: Option<String>,
}

impl Default for JwtAuthConfig {
    fn default() -> Self {
        Self {
            audience: None,
            max_lifetime: Dur(Duration::from_secs(3600)),
            leeway: Dur(Duration::from_secs(60)),
            require_jti: false,
            typ: None,
        }
    }
}

/// Rate limits (SPEC §2 `[ratelimit]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// `memory` (per node) or `redis` (shared by every node).
    pub backend: String,
    #[serde(serialize_with = "masked_url")]
    pub redis_url: String,
    /// While Redis is unreachable: `open` (allow, unlimited) or `closed`
    /// (refuse with 429). Either way each failure is counted and logged.
    pub on_redis_failure: crate::ratelimit::OnFailure,
    /// Longest wait for Redis on a request.
    pub redis_timeout: Dur,
    /// Per credential, unless the key has its own. None: unlimited.
    pub default: Option<QuotaConfig>,
    /// Failed authentications per client IP. None: unlimited.
    pub failed_auth_per_ip: Option<QuotaConfig>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            backend: "memory".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            on_redis_failure: crate::ratelimit::OnFailure::Open,
            redis_timeout: Dur(Duration::from_millis(250)),
            default: None,
            failed_auth_per_ip: None,
        }
    }
}

/// `{ limit = 1000, window = "60s" }`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub limit: u32,
    pub window: Dur,
}

impl QuotaConfig {
    pub fn quota(&self) -> crate::ratelimit::Quota {
        crate::ratelimit::Quota {
            limit: self.limit,
            window: self.window.0,
        }
    }
}

/// Serializes a URL with its password masked.
fn masked_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    match url.split_once("://") {
        Some((scheme, rest)) if rest.contains('@') => {
            let (userinfo, host) = rest.split_once('@').unwrap_or_default();
            let user = userinfo.split(':').next().unwrap_or_default();
            s.serialize_str(&format!("{scheme}://{user}:********@{host}"))
        }
        _ => s.serialize_str(url),
    }
}

/// The built-in reverse proxy (SPEC §6).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// `http://host:port[/base]`; empty = no proxy.
    pub upstream: String,
    /// Longest wait for the upstream's response headers (502/504 beyond).
    pub timeout: Dur,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            upstream: String::new(),
            timeout: Dur(Duration::from_secs(30)),
        }
    }
}

/// The usage log: decisions and management actions, per organization.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// How long entries are kept (at least 1h); older ones are deleted
    /// once an hour.
    pub retention: Dur,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            retention: Dur(Duration::from_secs(30 * 86_400)),
        }
    }
}

/// The console's sessions (docs/console.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// A session ends this long after sign-in, whatever happens.
    pub session_ttl: Dur,
    /// ... or after this long without a request.
    pub idle_timeout: Dur,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            session_ttl: Dur(Duration::from_secs(12 * 3600)),
            idle_timeout: Dur(Duration::from_secs(2 * 3600)),
        }
    }
}

/// A duration written `90s`, `15m`, `1h`, `30d` (or `500ms`), or an
/// integer number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn parse(s: &str) -> Result<Dur, String> {
        parse_duration(s).map(Dur)
    }
}

/// Parses `90s`, `15m`, `1h`, `30d`, `500ms` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s, 15m, 1h or 30d"))?;
    let secs = match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        "ms" => return Ok(Duration::from_millis(n)),
        _ => return Err(format!("`{s}` is not a duration like 90s, 15m, 1h or 30d")),
    };
    secs.filter(|&s| s <= 100 * 365 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{s}` is longer than 100 years"))
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let secs = self.0.as_secs();
        let text = if self.0.subsec_millis() != 0 {
            format!("{}ms", self.0.as_millis())
        } else if secs != 0 && secs.is_multiple_of(86_400) {
            format!("{}d", secs / 86_400)
        } else if secs != 0 && secs.is_multiple_of(3600) {
            format!("{}h", secs / 3600)
        } else if secs != 0 && secs.is_multiple_of(60) {
            format!("{}m", secs / 60)
        } else {
            format!("{secs}s")
        };
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a duration like \"90s\", \"15m\", \"1h\", \"30d\" or a number of seconds",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                Dur::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                u64::try_from(v)
                    .map(|v| Dur(Duration::from_secs(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A secret setting: its Debug, Display and serialized form are masked.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Masked(pub String);

impl fmt::Debug for Masked {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("\"********\"")
    }
}

impl Serialize for Masked {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("********")
    }
}

/// A config that failed to load: one line naming the setting and the source.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Where the config came from, for error messages and `config check`.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub file: Option<PathBuf>,
}

/// Loads defaults, then `file`, then the `LATCHKEY_*` environment, then
/// `database_override` (the `--database` flag), and validates the result.
pub fn load(file: Option<&Path>, database_override: Option<&str>) -> Result<Loaded, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError(format!(
                "config error: file {} does not exist or is not a file",
                path.display()
            )));
        }
        fig = fig.merge(Toml::file_exact(path));
    }
    fig = fig.merge(Env::prefixed("LATCHKEY_").split("__").filter(|k| {
        let top = k.as_str().split('.').next().unwrap_or_default();
        TOP_LEVEL.iter().any(|t| t.eq_ignore_ascii_case(top))
    }));
    if let Some(db) = database_override {
        fig = fig.merge(Serialized::default("database_url", db));
    }
    let config: Config = fig.extract().map_err(|e| describe_figment_error(&fig, e))?;
    let source = match file {
        Some(p) => p.display().to_string(),
        None => "the defaults or the environment".to_owned(),
    };
    validate(&config).map_err(|(setting, msg)| {
        let origin = fig
            .find_metadata(&setting)
            .map(|m| {
                m.source
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| m.name.to_string())
            })
            .unwrap_or_else(|| source.clone());
        ConfigError(format!("config error: `{setting}` in {origin}: {msg}"))
    })?;
    Ok(Loaded {
        config,
        file: file.map(Path::to_path_buf),
    })
}

fn describe_figment_error(fig: &Figment, e: figment::Error) -> ConfigError {
    let mut parts = Vec::new();
    for err in e {
        let setting = if err.path.is_empty() {
            "(top level)".to_owned()
        } else {
            err.path.join(".")
        };
        let origin = err
            .metadata
            .as_ref()
            .map(|m| {
                m.source
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| m.name.to_string())
            })
            .or_else(|| fig.find_metadata(&setting).map(|m| m.name.to_string()))
            .unwrap_or_else(|| "the config".to_owned());
        let kind = match &err.kind {
            figment::error::Kind::UnknownField(field, _) => format!("unknown setting `{field}`"),
            other => one_line(&other.to_string()),
        };
        parts.push(format!("config error: `{setting}` in {origin}: {kind}"));
    }
    ConfigError(parts.join("; "))
}

/// Folds a multi-line message (e.g. a TOML parse error with its source
/// excerpt) into its first and last lines.
fn one_line(msg: &str) -> String {
    let is_excerpt = |l: &str| {
        l.starts_with(['|', '^'])
            || l.split_once('|')
                .is_some_and(|(n, _)| n.trim().chars().all(|c| c.is_ascii_digit()))
    };
    let kept: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_excerpt(l))
        .collect();
    kept.join(": ")
}

/// Whole-config checks that serde cannot express. Answers the setting's
/// dotted path and the problem.
pub fn validate(c: &Config) -> Result<(), (String, String)> {
    let err = |k: &str, m: String| Err((k.to_owned(), m));
    if c.listen.parse::<SocketAddr>().is_err() {
        return err(
            "listen",
            format!("`{}` is not an address like 127.0.0.1:8080", c.listen),
        );
    }
    if !(c.public_url.starts_with("http://") || c.public_url.starts_with("https://"))
        || c.public_url.contains(char::is_whitespace)
    {
        return err(
            "public_url",
            format!("`{}` is not an http(s) URL", c.public_url),
        );
    }
    if !(c.database_url.starts_with("sqlite:")
        || c.database_url.starts_with("postgres://")
        || c.database_url.starts_with("postgresql://"))
    {
        return err(
            "database_url",
            "must start with sqlite: or postgres://".into(),
        );
    }
    if c.environment.trim().is_empty() {
        return err("environment", "must not be empty".into());
    }
    if !matches!(c.log_format.as_str(), "text" | "json") {
        return err(
            "log_format",
            format!("`{}` is not `text` or `json`", c.log_format),
        );
    }
    if let Some(mk) = &c.master_key {
        crate::crypto::MasterKey::from_base64(&mk.0).map_err(|e| ("master_key".to_owned(), e))?;
    }
    for (i, h) in c.credentials.headers.iter().enumerate() {
        if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err()
            || h.eq_ignore_ascii_case("authorization")
        {
            return err(
                &format!("credentials.headers.{i}"),
                format!("`{h}` is not a usable header name"),
            );
        }
    }
    if !c.credentials.query_param.is_empty()
        && !c
            .credentials
            .query_param
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return err(
            "credentials.query_param",
            "must be letters, digits, `_` or `-`".into(),
        );
    }
    if c.key_kinds.is_empty() {
        return err("key_kinds", "at least one key kind is needed".into());
    }
    for (i, k) in c.key_kinds.iter().enumerate() {
        let at = format!("key_kinds.{i}");
        if k.name.is_empty()
            || !k
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return err(
                &format!("{at}.name"),
                format!("`{}` must be letters, digits, `_` or `-`", k.name),
            );
        }
        if !keyfmt::valid_prefix(&k.prefix) {
            return err(
                &format!("{at}.prefix"),
                format!("`{}` must be 1 to 32 letters, digits, `_` or `-`", k.prefix),
            );
        }
        if k.environments.is_empty() || k.environments.iter().any(|e| e.trim().is_empty()) {
            return err(
                &format!("{at}.environments"),
                "must list at least one non-empty environment".into(),
            );
        }
        for (j, other) in c.key_kinds.iter().enumerate().take(i) {
            if other.name == k.name {
                return err(
                    &format!("{at}.name"),
                    format!("duplicate key kind name `{}` (also key_kinds.{j})", k.name),
                );
            }
            if other.prefix == k.prefix {
                return err(
                    &format!("{at}.prefix"),
                    format!("duplicate key prefix `{}` (also key_kinds.{j})", k.prefix),
                );
            }
            if other.prefix.starts_with(&k.prefix) || k.prefix.starts_with(&other.prefix) {
                return err(
                    &format!("{at}.prefix"),
                    format!(
                        "prefix `{}` and `{}` (key_kinds.{j}) are prefixes of one another: a key could not be told apart",
                        k.prefix, other.prefix
                    ),
                );
            }
        }
        if let Some(r) = RESERVED_PREFIXES
            .iter()
            .find(|r| r.starts_with(&k.prefix) || k.prefix.starts_with(*r))
        {
            let what = if *r == ROOT_PREFIX {
                "the root key prefix"
            } else {
                "latchkey's own prefix"
            };
            return err(
                &format!("{at}.prefix"),
                format!("`{}` overlaps {what} `{r}`", k.prefix),
            );
        }
    }
    if !matches!(c.scopes.separator.as_str(), "." | ":") {
        return err(
            "scopes.separator",
            format!("`{}` is not `.` or `:`", c.scopes.separator),
        );
    }
    for name in c.scopes.catalog.keys() {
        if !is_scope_token(name) || name.contains('*') {
            return err(
                &format!("scopes.catalog.{name}"),
                "is not a valid scope name".into(),
            );
        }
    }
    for (name, implied) in &c.scopes.implies {
        if !is_scope_token(name) || name.contains('*') {
            return err(
                &format!("scopes.implies.{name}"),
                "is not a valid scope name".into(),
            );
        }
        if let Some(bad) = implied.iter().find(|s| !is_scope_token(s)) {
            return err(
                &format!("scopes.implies.{name}"),
                format!("`{bad}` is not a valid scope"),
            );
        }
    }
    validate_routes(c)?;
    validate_proxy(&c.proxy)?;
    validate_ratelimit(&c.ratelimit)?;
    for (i, p) in c.trusted_proxies.iter().enumerate() {
        if crate::limits::parse_net(p).is_none() {
            return err(
                &format!("trusted_proxies.{i}"),
                format!("`{p}` is not an IP address or CIDR"),
            );
        }
    }
    validate_oauth(&c.oauth)?;
    validate_jwt_auth(&c.jwt_auth)?;
    if c.logs.retention.0 < Duration::from_secs(3600) {
        return err(
            "logs.retention",
            "must be at least 1h (entries are pruned once an hour)".into(),
        );
    }
    if c.cache.ttl.0 > Duration::from_secs(3600) {
        return err(
            "cache.ttl",
            "must be at most 1h (it bounds how long a change that escaped the change feed could be ignored)"
                .into(),
        );
    }
    let day = Duration::from_secs(86_400);
    for (field, d) in [
        ("console.session_ttl", c.console.session_ttl.0),
        ("console.idle_timeout", c.console.idle_timeout.0),
    ] {
        if d < Duration::from_secs(1) || d > 30 * day {
            return err(field, "must be between 1s and 30d".into());
        }
    }
    Ok(())
}

impl Config {
    pub fn scope_policy(&self) -> ScopePolicy {
        let sep = if self.scopes.separator == ":" {
            ':'
        } else {
            '.'
        };
        ScopePolicy::new(
            sep,
            self.scopes.catalog.clone(),
            self.scopes.implies.clone(),
        )
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            ConfigError(format!(
                "config error: `listen`: `{}` is not an address",
                self.listen
            ))
        })
    }

    /// The compiled `[[routes]]` (validated with the config).
    pub fn route_table(&self) -> latchkey_core::route::RouteTable {
        latchkey_core::route::RouteTable::new(self.routes.clone()).unwrap_or_default()
    }

    pub fn public_url(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }

    /// `aud` of the access tokens issued here.
    pub fn token_audience(&self) -> String {
        self.oauth
            .audience
            .as_ref()
            .or(self.jwt_auth.audience.as_ref())
            .map_or_else(|| self.public_url().to_owned(), Clone::clone)
    }

    /// The `aud` of client-signed JWTs: `[jwt_auth] audience`, else
    /// `[oauth] audience`, else `public_url`.
    pub fn jwt_audience(&self) -> String {
        self.jwt_auth
            .audience
            .as_ref()
            .or(self.oauth.audience.as_ref())
            .map_or_else(|| self.public_url().to_owned(), Clone::clone)
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}

fn err(setting: &str, message: String) -> Result<(), (String, String)> {
    Err((setting.to_owned(), message))
}

fn validate_routes(c: &Config) -> Result<(), (String, String)> {
    if let Err((i, e)) = latchkey_core::route::RouteTable::new(c.routes.clone()) {
        let field = match e {
            latchkey_core::route::RouteError::InvalidMethod(_) => "methods",
            latchkey_core::route::RouteError::PublicWithScopes => "public",
            _ => "path",
        };
        return err(&format!("routes.{i}.{field}"), e.to_string());
    }
    let policy = c.scope_policy();
    for (i, r) in c.routes.iter().enumerate() {
        let first = r
            .path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        if crate::http::proxy::OWN_SEGMENTS
            .iter()
            .any(|own| first.eq_ignore_ascii_case(own))
        {
            return err(
                &format!("routes.{i}.path"),
                format!("`{}` collides with latchkey's own `/{first}` paths", r.path),
            );
        }
        for (j, scope) in r.scopes.iter().enumerate() {
            if !is_scope_token(scope) {
                return err(
                    &format!("routes.{i}.scopes.{j}"),
                    format!("`{scope}` is not a valid scope"),
                );
            }
            if latchkey_core::scope::is_wildcard(scope) {
                return err(
                    &format!("routes.{i}.scopes.{j}"),
                    format!("`{scope}` is a wildcard; a route requires plain scopes"),
                );
            }
            if !policy.catalog().is_empty() && !policy.catalog().contains_key(scope) {
                return err(
                    &format!("routes.{i}.scopes.{j}"),
                    format!("`{scope}` is not in the scope catalog"),
                );
            }
        }
    }
    Ok(())
}

fn validate_oauth(o: &OAuthConfig) -> Result<(), (String, String)> {
    if !matches!(o.access_token_format.as_str(), "jwt" | "opaque") {
        return err(
            "oauth.access_token_format",
            format!("`{}` is not `jwt` or `opaque`", o.access_token_format),
        );
    }
    if !matches!(o.signing_alg.as_str(), "EdDSA" | "ES256" | "RS256") {
        return err(
            "oauth.signing_alg",
            format!("`{}` is not `EdDSA`, `ES256` or `RS256`", o.signing_alg),
        );
    }
    let within = |name: &str, d: &Dur, lo: u64, hi: u64| {
        if d.0 < Duration::from_secs(lo) || d.0 > Duration::from_secs(hi) {
            err(
                &format!("oauth.{name}"),
                format!("must be between {lo} s and {hi} s"),
            )
        } else {
            Ok(())
        }
    };
    within("access_token_ttl", &o.access_token_ttl, 60, 86_400)?;
    within("refresh_token_ttl", &o.refresh_token_ttl, 60, 365 * 86_400)?;
    within("code_ttl", &o.code_ttl, 10, 600)?;
    if let Some(a) = &o.audience
        && (a.is_empty() || a.contains(char::is_whitespace))
    {
        return err("oauth.audience", "must be a non-empty URI".into());
    }
    Ok(())
}

fn validate_jwt_auth(j: &JwtAuthConfig) -> Result<(), (String, String)> {
    if let Some(a) = &j.audience
        && (a.is_empty() || a.contains(char::is_whitespace))
    {
        return err("jwt_auth.audience", "must be a non-empty URI".into());
    }
    if j.max_lifetime.0 < Duration::from_secs(1) || j.max_lifetime.0 > Duration::from_secs(86_400) {
        return err(
            "jwt_auth.max_lifetime",
            "must be between 1 s and 24 h".into(),
        );
    }
    if j.leeway.0 > Duration::from_secs(300) {
        return err("jwt_auth.leeway", "must be at most 5 minutes".into());
    }
    if let Some(t) = &j.typ {
        let bare = t.strip_prefix("application/").unwrap_or(t);
        if bare.is_empty()
            || !bare.bytes().all(|b| b.is_ascii_graphic())
            || bare.eq_ignore_ascii_case(crate::jose::ACCESS_TOKEN_TYP)
        {
            return err(
                "jwt_auth.typ",
                format!("`{t}` is not a usable typ (and at+jwt is an access token's)"),
            );
        }
    }
    Ok(())
}

fn validate_ratelimit(r: &RateLimitConfig) -> Result<(), (String, String)> {
    match r.backend.as_str() {
        "memory" => {}
        "redis" => {
            if redis::Client::open(r.redis_url.as_str()).is_err() {
                return err(
                    "ratelimit.redis_url",
                    "is not a Redis URL like redis://127.0.0.1:6379".into(),
                );
            }
        }
        other => {
            return err(
                "ratelimit.backend",
                format!("`{other}` is not `memory` or `redis`"),
            );
        }
    }
    if r.redis_timeout.0.is_zero() || r.redis_timeout.0 > Duration::from_secs(10) {
        return err("ratelimit.redis_timeout", "must be 1ms to 10s".into());
    }
    for (name, q) in [
        ("default", &r.default),
        ("failed_auth_per_ip", &r.failed_auth_per_ip),
    ] {
        if let Some(q) = q
            && crate::ratelimit::Quota::new(q.limit, q.window.0).is_none()
        {
            return err(
                &format!("ratelimit.{name}"),
                "needs limit >= 1 and a window of 1ms to 10 years".into(),
            );
        }
    }
    Ok(())
}

fn validate_proxy(p: &ProxyConfig) -> Result<(), (String, String)> {
    if p.timeout.0.is_zero() {
        return err("proxy.timeout", "must be more than 0s".into());
    }
    if p.upstream.is_empty() {
        return Ok(());
    }
    let bad = |why: &str| err("proxy.upstream", format!("`{}` {why}", p.upstream));
    let Ok(uri) = p.upstream.parse::<axum::http::Uri>() else {
        return bad("is not a URL");
    };
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return bad(
                "uses https, which the built-in proxy does not speak yet; reach the upstream over http on a private network",
            );
        }
        _ => return bad("must start with http://"),
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return bad("has no host");
    }
    if uri.query().is_some() {
        return bad("must not have a query");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("36600000d").is_err());
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(validate(&Config::default()), Ok(()));
    }

    #[test]
    fn overlapping_prefixes_are_refused() {
        let mut c = Config::default();
        c.key_kinds[2].prefix = "sk_".into();
        let (setting, msg) = validate(&c).unwrap_err();
        assert_eq!(setting, "key_kinds.2.prefix");
        assert!(msg.contains("prefixes of one another"), "{msg}");
        c.key_kinds[2].prefix = "sk_live_".into();
        assert!(validate(&c).unwrap_err().1.contains("duplicate key prefix"));
        c.key_kinds[2].prefix = "lk_".into();
        assert!(validate(&c).unwrap_err().1.contains("root key prefix"));
    }
}
