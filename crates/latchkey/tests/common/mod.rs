//! The end-to-end harness: every test starts the real `latchkey` binary
//! on a free port, on a fresh SQLite file or a fresh PostgreSQL database,
//! and talks to it over HTTP. When a server stops, its whole log output is
//! searched for every secret the test saw; finding one fails the test.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod upstream;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_latchkey");
pub const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
pub const PUBLIC_URL: &str = "http://latchkey.test";

/// The `[[routes]]` of a small documents API, for the protection tests.
pub const ROUTES: &str = r#"
[scopes.catalog]
"documents.read" = "Read documents"
"documents.write" = "Write documents"

[[routes]]
methods = ["GET"]
path = "/api/v1/status"
public = true

[[routes]]
methods = ["GET"]
path = "/api/v1/documents"
scopes = ["documents.read"]

[[routes]]
methods = ["POST"]
path = "/api/v1/documents"
scopes = ["documents.write"]

[[routes]]
path = "/api/v1/documents/{id}"
scopes = ["documents.read"]

[[routes]]
methods = ["PUT", "POST"]
path = "/api/v1/uploads/*"
scopes = ["documents.write"]

[[routes]]
path = "/slow/*"
public = true

[[routes]]
path = "/missing/*"
public = true
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestServer {
    pub url: String,
    pub root_key: String,
    pub database_url: String,
    pub config_path: PathBuf,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    child: Child,
    log_path: PathBuf,
    secrets: Mutex<Vec<String>>,
    /// Whether this server made the PostgreSQL database (and drops it).
    owns_database: bool,
    env: Vec<(String, String)>,
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
    /// Asserts a problem+json refusal with this status and code.
    pub fn problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        let v = self.json();
        assert_eq!(v["code"], code, "{}", self.text);
        assert_eq!(v["status"], status);
        assert_eq!(v["message"], v["detail"]);
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()));
        let slug = code.to_ascii_lowercase().replace('_', "-");
        assert_eq!(v["type"], format!("{PUBLIC_URL}/errors/{slug}"));
        let rid = v["request_id"].as_str().unwrap();
        assert!(rid.starts_with("req_"));
        assert_eq!(self.header("x-request-id").as_deref(), Some(rid));
        v
    }
}

/// A fresh database URL for `backend`, or None when PostgreSQL is
/// unreachable outside CI (the harness prints SKIPPED; under CI=true it
/// fails instead).
pub async fn database_for(backend: Backend, dir: &std::path::Path) -> Option<String> {
    match backend {
        Backend::Sqlite => Some(format!("sqlite://{}/latchkey.db", dir.display())),
        Backend::Postgres => latchkey_store::testing::postgres_url_for_tests("e2e").await,
    }
}

/// The Redis URL for tests (`LATCHKEY_TEST_REDIS_URL`, default
/// `redis://127.0.0.1:6379`), or None when Redis is unreachable outside CI
/// (the test prints SKIPPED); under `CI=true` an unreachable Redis fails.
pub fn redis_for_tests() -> Option<String> {
    let url = std::env::var("LATCHKEY_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let addr = url
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if reachable {
        return Some(url);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("Redis is required under CI=true and is unreachable at {url}");
    }
    eprintln!("SKIPPED: Redis is unreachable at {url}");
    None
}

impl TestServer {
    pub async fn start(backend: Backend) -> Option<TestServer> {
        Self::start_with(backend, "", &[]).await
    }

    /// Starts a server whose config file is the test defaults plus `extra_toml`.
    pub async fn start_with(
        backend: Backend,
        extra_toml: &str,
        env: &[(&str, &str)],
    ) -> Option<TestServer> {
        let dir = tempfile::tempdir().unwrap();
        let database_url = database_for(backend, dir.path()).await?;
        let config_path = dir.path().join("latchkey.toml");
        let toml = format!(
            "listen = \"127.0.0.1:0\"\npublic_url = \"{PUBLIC_URL}\"\ndatabase_url = \"{database_url}\"\ndata_dir = \"{}\"\n{extra_toml}\n",
            dir.path().join("data").display()
        );
        std::fs::write(&config_path, toml).unwrap();
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if backend == Backend::Postgres {
            env.push(("LATCHKEY_MASTER_KEY".into(), MASTER_KEY.into()));
        }
        let log_path = dir.path().join("server.log");
        let mut srv = TestServer {
            url: String::new(),
            root_key: String::new(),
            database_url,
            config_path,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            child: Command::new("true").spawn().unwrap(),
            log_path,
            secrets: Mutex::new(Vec::new()),
            owns_database: true,
            env,
            dir,
        };
        let out = srv.cli(&[
            "--json",
            "root-keys",
            "create",
            "--name",
            "test",
            "--scopes",
            "*",
        ]);
        assert!(
            out.status.success(),
            "root-keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        srv.root_key = v["key"].as_str().unwrap().to_owned();
        srv.remember(&srv.root_key.clone());
        let (child, url) = srv.spawn_serve();
        srv.child = child;
        srv.url = url;
        Some(srv)
    }

    fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&self.config_path);
        c.env_remove("LATCHKEY_CONFIG");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs a CLI command against this server's config and database.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs a CLI command with `input` on its standard input.
    pub fn cli_with_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Starts `latchkey serve`, logging at debug level into the log file,
    /// and waits for its "listening on" line.
    fn spawn_serve(&self) -> (Child, String) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut child = self
            .command()
            .arg("serve")
            .env("LATCHKEY_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            while let Some(Ok(line)) = lines.next() {
                if !sent && let Some(rest) = line.split("listening on ").nth(1) {
                    let url = rest.split_whitespace().next().unwrap().to_owned();
                    tx.send(url).unwrap();
                    sent = true;
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "server did not start: {}",
                    std::fs::read_to_string(&self.log_path).unwrap_or_default()
                )
            });
        (child, url)
    }

    /// Another `latchkey serve` process on the same config and database:
    /// a second node. It knows the secrets this one has seen so far.
    pub fn second_node(&self) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut node = TestServer {
            url: String::new(),
            root_key: self.root_key.clone(),
            database_url: self.database_url.clone(),
            config_path: self.config_path.clone(),
            http: self.http.clone(),
            child: Command::new("true").spawn().unwrap(),
            log_path: dir.path().join("server.log"),
            secrets: Mutex::new(self.secrets.lock().unwrap().clone()),
            owns_database: false,
            env: self.env.clone(),
            dir,
        };
        let (child, url) = node.spawn_serve();
        node.child = child;
        node.url = url;
        node
    }

    /// Stops and restarts the server on the same database (a new port).
    pub fn restart(&mut self) {
        self.stop();
        let (child, url) = self.spawn_serve();
        self.child = child;
        self.url = url;
    }

    fn stop(&mut self) {
        #[cfg(unix)]
        unsafe_free_sigterm(self.child.id());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Remembers a secret: it must never appear in the logs, nor in any
    /// later response.
    pub fn remember(&self, secret: &str) {
        self.secrets.lock().unwrap().push(secret.to_owned());
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            f.read_to_string(&mut s).unwrap();
        }
        s
    }

    pub fn check_no_secret_in(&self, text: &str, what: &str) {
        for s in self.secrets.lock().unwrap().iter() {
            assert!(
                !text.contains(s.as_str()),
                "a secret ({}...) appears in {what}",
                &s[..12]
            );
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        self.check_no_secret_in(&text, "a response");
        let resp = Resp {
            status,
            headers,
            text,
        };
        // Creation and rotation answers carry the new secret once: learn it.
        if (200..300).contains(&status)
            && let Ok(v) = serde_json::from_str::<Value>(&resp.text)
            && let Some(k) = v.get("key").and_then(Value::as_str)
        {
            self.remember(k);
        }
        resp
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.http.get(self.at(path)).bearer_auth(&self.root_key))
            .await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.send(self.http.delete(self.at(path)).bearer_auth(&self.root_key))
            .await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(
            self.http
                .post(self.at(path))
                .bearer_auth(&self.root_key)
                .json(&body),
        )
        .await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.send(
            self.http
                .patch(self.at(path))
                .bearer_auth(&self.root_key)
                .json(&body),
        )
        .await
    }

    pub async fn org(&self) -> String {
        let r = self.post("/v1/orgs", json!({"name": "Acme"})).await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json()["id"].as_str().unwrap().to_owned()
    }

    /// Creates a key and answers (id, secret).
    pub async fn key(&self, org: &str, body: Value) -> (String, String) {
        let r = self.post(&format!("/v1/orgs/{org}/keys"), body).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let v = r.json();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["key"].as_str().unwrap().to_owned(),
        )
    }

    /// Verifies `credential` and answers the verify body (asserting 200).
    pub async fn verify(&self, body: Value) -> Value {
        let r = self.post("/v1/verify", body).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()
    }
}

#[cfg(unix)]
fn unsafe_free_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            return;
        }
        if self.owns_database && self.database_url.starts_with("postgres") {
            // Drop the test database from a thread of its own: this may run inside a runtime.
            let url = self.database_url.clone();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(latchkey_store::testing::drop_postgres_test_database(&url));
            })
            .join();
        }
        let log = self.log();
        assert!(
            log.contains("latchkey listening"),
            "the server log is empty or incomplete: {log}"
        );
        self.check_no_secret_in(&log, "the server log");
        assert!(
            !log.contains(MASTER_KEY),
            "the master key appears in the server log"
        );
        if let Ok(mk) = std::fs::read_to_string(self.dir.path().join("data/master.key")) {
            assert!(
                !log.contains(mk.trim()),
                "the master key appears in the server log"
            );
        }
    }
}

/// Runs an async test body on both backends: `both!(name);` makes
/// `name::sqlite` and `name::postgres` from `async fn name(s: TestServer)`.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        $crate::both!($name, "");
    };
    ($name:ident, $toml:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(s) = $crate::common::TestServer::start_with(
                    $crate::common::Backend::Sqlite,
                    $toml,
                    &[],
                )
                .await
                {
                    super::$name(s).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(s) = $crate::common::TestServer::start_with(
                    $crate::common::Backend::Postgres,
                    $toml,
                    &[],
                )
                .await
                {
                    super::$name(s).await
                }
            }
        }
    };
}

/// Whether `program --version` runs.
pub fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// None, with SKIPPED printed, when a tool is missing outside CI; under
/// `CI=true` a missing tool fails the test (`.ci/run` installs them).
pub fn tool_or_skip(ok: bool, what: &str) -> Option<()> {
    if ok {
        return Some(());
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} is required under CI=true (.ci/run installs it)");
    }
    eprintln!("SKIPPED: {what} is not installed");
    None
}

/// The real client libraries' scripts and installs (Python, Node).
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Seconds since the epoch (the clock tokens are signed and checked with).
pub fn now() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_secs()).unwrap()
}
