//! A real nginx with `auth_request` in front of a real upstream, asking the
//! real latchkey: the shipped example `docs/examples/nginx.conf`, run as it
//! is (only its addresses changed). Under `CI=true` a missing nginx fails
//! the run; elsewhere the test says SKIPPED.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::upstream::Upstream;
use common::{Backend, ROUTES, Resp, TestServer};
use serde_json::json;

fn nginx_binary() -> Option<PathBuf> {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(p).exists() {
            return Some(p.into());
        }
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("nginx is required under CI=true (.ci/run installs Debian's nginx package)");
    }
    eprintln!("SKIPPED: nginx forward-auth test: nginx is not installed");
    None
}

struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    /// SIGTERM to the master, which stops its workers (a SIGKILL would
    /// leave them running, listening on the test's port).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Runs the shipped example with latchkey at `latchkey` and the API at `api`.
    fn start(bin: &Path, latchkey: &str, api: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/nginx.conf"),
        )
        .unwrap();
        for needle in ["127.0.0.1:8080", "127.0.0.1:9000", "listen 127.0.0.1:8000"] {
            assert!(
                example.contains(needle),
                "the example no longer has {needle}"
            );
        }
        let site = example
            .replace("127.0.0.1:8080", latchkey)
            .replace("127.0.0.1:9000", api)
            .replace("listen 127.0.0.1:8000", &format!("listen 127.0.0.1:{port}"));
        std::fs::write(dir.path().join("latchkey.conf"), site).unwrap();
        let d = dir.path().display();
        let user = if is_root() { "user root;\n" } else { "" };
        let main = format!(
            "{user}daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             include {d}/latchkey.conf;\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let nginx = Nginx { child, port, dir };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx did not start: {}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn header<'a>(r: &'a Resp, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Sends raw bytes and answers the reply's status line and body.
fn raw(port: u16, bytes: &[u8]) -> String {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_in_front_of_an_api() {
    let Some(bin) = nginx_binary() else {
        return;
    };
    let up = Upstream::start().await;
    let Some(s) = TestServer::start_with(Backend::Sqlite, ROUTES, &[]).await else {
        return;
    };
    let nginx = Nginx::start(
        &bin,
        s.url.trim_start_matches("http://"),
        &up.addr.to_string(),
    );
    let org = s.org().await;
    let (rid, reader) = s
        .key(
            &org,
            json!({"name": "reader", "scopes": ["documents.read"]}),
        )
        .await;
    let get = |path: &str| s.http.get(nginx.url(path));

    // Allowed: the API sees the identity, not the credential.
    let r = s
        .send(get("/api/v1/documents?page=2").bearer_auth(&reader))
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text, nginx.error_log());
    let seen = r.json();
    assert_eq!(seen["path"], "/api/v1/documents");
    assert_eq!(seen["query"], "page=2");
    let h = &seen["headers"];
    assert_eq!(h["x-latchkey-org"], org.as_str());
    assert_eq!(h["x-latchkey-key-id"], rid.as_str());
    assert_eq!(h["x-latchkey-subject"], rid.as_str());
    assert_eq!(h["x-latchkey-scopes"], "documents.read");
    assert_eq!(h["x-latchkey-credential-type"], "api_key");
    assert!(h["x-request-id"].as_str().unwrap().starts_with("req_"));
    assert!(h.get("authorization").is_none(), "{h}");

    // The key in the `api_key` header works and is not passed on either.
    let r = s
        .send(get("/api/v1/documents").header("api_key", &reader))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["headers"].get("api_key").is_none());

    // Public: no credential needed, no identity passed.
    let r = s.send(get("/api/v1/status")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["headers"].get("x-latchkey-org").is_none());

    // Refusals reach the client as latchkey's problem+json, true status.
    let hits = up.hits();
    let r = s.send(get("/api/v1/documents")).await;
    r.problem(401, "MISSING_KEY");
    assert_eq!(
        header(&r, "www-authenticate"),
        Some("Bearer realm=\"latchkey\"")
    );
    assert!(header(&r, "x-request-id").unwrap().starts_with("req_"));
    let r = s
        .send(
            s.http
                .post(nginx.url("/api/v1/documents"))
                .bearer_auth(&reader),
        )
        .await;
    let p = r.problem(403, "INSUFFICIENT_SCOPE");
    assert_eq!(p["required_scopes"], json!(["documents.write"]));
    let r = s.send(get("/api/v2/elsewhere").bearer_auth(&reader)).await;
    r.problem(404, "NOT_FOUND");
    let r = s.send(s.http.delete(nginx.url("/api/v1/status"))).await;
    r.problem(405, "METHOD_NOT_ALLOWED");
    assert_eq!(header(&r, "allow"), Some("GET"));
    // A client cannot pass its own identity headers.
    let r = s
        .send(get("/api/v1/status").header("x-latchkey-org", "org_forged"))
        .await;
    r.problem(400, "INVALID_REQUEST");
    // Paths nginx would resolve differently from the upstream are refused.
    for target in [
        "/api/v1/status/../documents",
        "/api/v1/status/%2e%2e/documents",
        "/api/v1/status%2F..%2Fdocuments",
    ] {
        let reply = raw(
            nginx.port,
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(reply.starts_with("HTTP/1.1 400"), "{target}: {reply}");
        assert!(reply.contains("INVALID_REQUEST"), "{target}: {reply}");
    }
    assert_eq!(
        s.post(&format!("/v1/keys/{rid}/revoke"), json!({}))
            .await
            .status,
        200
    );
    let r = s.send(get("/api/v1/documents").bearer_auth(&reader)).await;
    r.problem(401, "KEY_REVOKED");
    assert!(
        header(&r, "www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    assert_eq!(up.hits(), hits, "a refused request reached the API");
}
