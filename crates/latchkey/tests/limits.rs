//! Rate limits, usage credits and IP allowlists (SPEC §2 `[ratelimit]`,
//! §9 key attributes), through verify, forward-auth and two real nodes on
//! one Redis.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{Backend, ROUTES, Resp, TestServer, redis_for_tests};
use serde_json::{Value, json};

fn header<'a>(r: &'a Resp, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

async fn fwd(s: &TestServer, key: &str, xff: Option<&str>) -> Resp {
    let mut req = s
        .http
        .get(s.at("/v1/forward-auth"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/api/v1/documents")
        .bearer_auth(key);
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    s.send(req).await
}

const DEFAULT_LIMIT: &str = r#"
[ratelimit]
default = { limit = 2, window = "60s" }
"#;

async fn rate_limits_per_key_and_by_default(s: TestServer) {
    let org = s.org().await;
    let (id, key) = s
        .key(
            &org,
            json!({"scopes": ["documents.read"], "name": "k", "ratelimit": {"limit": 3, "window": "1h"}}),
        )
        .await;
    let got = s.get(&format!("/v1/keys/{id}")).await.json();
    assert_eq!(got["ratelimit"], json!({"limit": 3, "window": 3600}));
    for left in [2, 1, 0] {
        let v = s.verify(json!({"credential": key})).await;
        assert_eq!(v["valid"], true, "{v}");
        assert_eq!(v["ratelimit"]["limit"], 3);
        assert_eq!(v["ratelimit"]["remaining"], left);
        assert!(v["ratelimit"]["reset"].as_u64().unwrap() > 0);
    }
    let v = s.verify(json!({"credential": key})).await;
    assert_eq!(v["valid"], false);
    assert_eq!(v["code"], "RATE_LIMITED");
    assert_eq!(v["status"], 429);
    assert_eq!(v["ratelimit"]["remaining"], 0);

    // Without its own limit, a key gets `[ratelimit] default` (2 here),
    // and every decided request carries the RateLimit headers.
    let r = s
        .patch(&format!("/v1/keys/{id}"), json!({"ratelimit": null}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["ratelimit"].is_null());
    let (_, other) = s
        .key(&org, json!({"scopes": ["documents.read"], "name": "other"}))
        .await;
    let r = fwd(&s, &other, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(header(&r, "ratelimit-limit"), Some("2"));
    assert_eq!(header(&r, "ratelimit-remaining"), Some("1"));
    assert!(header(&r, "ratelimit-reset").is_some());
    assert_eq!(fwd(&s, &other, None).await.status, 200);
    let r = fwd(&s, &other, None).await;
    r.problem(429, "RATE_LIMITED");
    assert_eq!(header(&r, "ratelimit-remaining"), Some("0"));
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
}
both!(
    rate_limits_per_key_and_by_default,
    &format!("{ROUTES}\n{DEFAULT_LIMIT}")
);

async fn usage_credits_are_never_overspent(s: TestServer) {
    let org = s.org().await;
    let (id, key) = s
        .key(
            &org,
            json!({"scopes": ["documents.read"], "name": "k", "remaining": 3}),
        )
        .await;
    for left in [2, 1, 0] {
        let v = s.verify(json!({"credential": key})).await;
        assert_eq!(v["valid"], true, "{v}");
        assert_eq!(v["remaining"], left);
    }
    let v = s.verify(json!({"credential": key})).await;
    assert_eq!(
        (v["code"].as_str(), v["status"].as_u64()),
        (Some("USAGE_EXCEEDED"), Some(429))
    );
    assert_eq!(
        s.get(&format!("/v1/keys/{id}")).await.json()["remaining"],
        0
    );

    // A top-up through PATCH is in force at once.
    let r = s
        .patch(&format!("/v1/keys/{id}"), json!({"remaining": 1}))
        .await;
    assert_eq!(r.json()["remaining"], 1);
    assert_eq!(s.verify(json!({"credential": key})).await["valid"], true);

    // A refused request (wrong scope) spends nothing.
    let (_, k2) = s
        .key(
            &org,
            json!({"name": "k2", "remaining": 1, "scopes": ["documents.read"]}),
        )
        .await;
    let v = s
        .verify(json!({"credential": k2, "required_scopes": ["documents.write"]}))
        .await;
    assert_eq!(v["code"], "INSUFFICIENT_SCOPE");
    assert_eq!(s.verify(json!({"credential": k2})).await["valid"], true);

    // 40 credits, 160 concurrent uses: exactly 40 succeed.
    let (_, k3) = s
        .key(
            &org,
            json!({"scopes": ["documents.read"], "name": "k3", "remaining": 40}),
        )
        .await;
    let mut tasks = Vec::new();
    for _ in 0..160 {
        let http = s.http.clone();
        let url = s.at("/v1/verify");
        let root = s.root_key.clone();
        let k3 = k3.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(root)
                .json(&json!({"credential": k3}))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()["valid"] == true
        }));
    }
    let mut valid = 0;
    for t in tasks {
        if t.await.unwrap() {
            valid += 1;
        }
    }
    assert_eq!(valid, 40, "credits overspent or lost");

    // Bad values are refused with the field named.
    let r = s
        .post(
            &format!("/v1/orgs/{org}/keys"),
            json!({"scopes": ["documents.read"], "name": "x", "remaining": -1, "refill": {"amount": 0, "interval": "1s"}}),
        )
        .await;
    let p = r.problem(422, "VALIDATION_FAILED");
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["refill.amount", "refill.interval", "remaining"]);
}
both!(usage_credits_are_never_overspent);

async fn ip_allowlists(s: TestServer) {
    let org = s.org().await;
    let (id, key) = s
        .key(
            &org,
            json!({"scopes": ["documents.read"], "name": "k", "ip_allowlist": ["198.51.100.0/24", "2001:db8::1"]}),
        )
        .await;
    assert_eq!(
        s.get(&format!("/v1/keys/{id}")).await.json()["ip_allowlist"],
        json!(["198.51.100.0/24", "2001:db8::1/128"])
    );
    for (ip, valid) in [
        ("198.51.100.7", true),
        ("::ffff:198.51.100.9", true),
        ("2001:db8::1", true),
        ("198.51.101.1", false),
        ("2001:db8::2", false),
    ] {
        let v = s.verify(json!({"credential": key, "ip": ip})).await;
        assert_eq!(v["valid"], valid, "{ip}: {v}");
        if !valid {
            assert_eq!(
                (v["code"].as_str(), v["status"].as_u64()),
                (Some("FORBIDDEN_IP"), Some(403))
            );
        }
    }
    // No address known: refused, since the key is limited to some.
    let v = s.verify(json!({"credential": key})).await;
    assert_eq!(v["code"], "FORBIDDEN_IP");
    // `[]` lifts the limit.
    let r = s
        .patch(&format!("/v1/keys/{id}"), json!({"ip_allowlist": []}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(s.verify(json!({"credential": key})).await["valid"], true);
    let r = s
        .post(
            &format!("/v1/orgs/{org}/keys"),
            json!({"scopes": ["documents.read"], "name": "x", "ip_allowlist": ["10.0.0.0/33", "nope"]}),
        )
        .await;
    assert_eq!(
        r.problem(422, "VALIDATION_FAILED")["errors"][1]["field"],
        "ip_allowlist[1]"
    );
}
both!(ip_allowlists);

/// X-Forwarded-For is believed only from a trusted proxy, and then read
/// from the right, past the trusted hops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_address_and_trusted_proxies() {
    for (trusted, xff, valid) in [
        ("", Some("198.51.100.7"), false),
        (
            "trusted_proxies = [\"127.0.0.1\"]",
            Some("198.51.100.7"),
            true,
        ),
        (
            "trusted_proxies = [\"127.0.0.1\"]",
            Some("198.51.100.7, 203.0.113.5"),
            false,
        ),
        (
            "trusted_proxies = [\"127.0.0.1\", \"203.0.113.0/24\"]",
            Some("198.51.100.7, 203.0.113.5"),
            true,
        ),
        (
            "trusted_proxies = [\"127.0.0.1\"]",
            Some("not-an-ip"),
            false,
        ),
        ("trusted_proxies = [\"127.0.0.1\"]", None, false),
    ] {
        let toml = format!("{trusted}\n{ROUTES}");
        let Some(s) = TestServer::start_with(Backend::Sqlite, &toml, &[]).await else {
            return;
        };
        let org = s.org().await;
        let (_, key) = s
            .key(&org, json!({"scopes": ["documents.read"], "name": "k", "ip_allowlist": ["198.51.100.0/24"]}))
            .await;
        let r = fwd(&s, &key, xff).await;
        if valid {
            assert_eq!(r.status, 200, "{trusted} {xff:?}: {}", r.text);
        } else {
            r.problem(403, "FORBIDDEN_IP");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_per_ip() {
    let toml =
        format!("{ROUTES}\n[ratelimit]\nfailed_auth_per_ip = {{ limit = 3, window = \"1h\" }}\n");
    let Some(s) = TestServer::start_with(Backend::Sqlite, &toml, &[]).await else {
        return;
    };
    let org = s.org().await;
    let (_, key) = s
        .key(&org, json!({"scopes": ["documents.read"], "name": "k"}))
        .await;
    let bad = "sk_live_0000000000000000000000000000000000000000000000";
    // Valid uses never count.
    for _ in 0..5 {
        assert_eq!(fwd(&s, &key, None).await.status, 200);
    }
    // Three failures are allowed; the fourth fills the quota; from then on
    // this address is refused, even with a valid key.
    for _ in 0..4 {
        assert_eq!(fwd(&s, bad, None).await.status, 401);
    }
    let r = fwd(&s, &key, None).await;
    r.problem(429, "RATE_LIMITED");
    assert!(header(&r, "retry-after").unwrap().parse::<u64>().unwrap() > 60);
    // Verify counts the address it is given; another address is not blocked.
    for _ in 0..4 {
        let v = s
            .verify(json!({"credential": bad, "ip": "203.0.113.9"}))
            .await;
        assert_ne!(v["code"], "RATE_LIMITED");
    }
    let v = s
        .verify(json!({"credential": key, "ip": "203.0.113.9"}))
        .await;
    assert_eq!(v["code"], "RATE_LIMITED");
    let v = s
        .verify(json!({"credential": key, "ip": "203.0.113.10"}))
        .await;
    assert_eq!(v["valid"], true);
}

/// Two latchkey processes on one Redis share one limit: over 300 requests
/// spread across both, the number allowed exceeds the limit by at most 1 %.
async fn two_nodes_share_one_redis_limit(backend: Backend) {
    let Some(redis) = redis_for_tests() else {
        return;
    };
    let toml = format!("{ROUTES}\n[ratelimit]\nbackend = \"redis\"\nredis_url = \"{redis}\"\n");
    let Some(a) = TestServer::start_with(backend, &toml, &[]).await else {
        return;
    };
    let b = a.second_node();
    let org = a.org().await;
    let (_, key) = a
        .key(&org, json!({"scopes": ["documents.read"], "name": "k", "ratelimit": {"limit": 100, "window": "1h"}}))
        .await;
    b.remember(&key);
    let mut tasks = Vec::new();
    for i in 0..300 {
        let node = if i % 2 == 0 { &a } else { &b };
        let req = node
            .http
            .get(node.at("/v1/forward-auth"))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", "/api/v1/documents")
            .bearer_auth(&key);
        tasks.push(tokio::spawn(async move {
            req.send().await.unwrap().status().as_u16()
        }));
    }
    let mut allowed = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => allowed += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        (100..=101).contains(&allowed),
        "{allowed} allowed, {limited} limited, for a limit of 100"
    );
    assert_eq!(allowed + limited, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_redis_limit_sqlite() {
    two_nodes_share_one_redis_limit(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_redis_limit_postgres() {
    two_nodes_share_one_redis_limit(Backend::Postgres).await;
}

/// With Redis down, `on_redis_failure` decides: `open` allows (without a
/// limit), `closed` refuses with 429; each failure is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_open_or_closed_as_configured() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("redis://{}", l.local_addr().unwrap())
    };
    for (mode, want) in [("open", 200), ("closed", 429)] {
        let toml = format!(
            "{ROUTES}\n[ratelimit]\nbackend = \"redis\"\nredis_url = \"{dead}\"\non_redis_failure = \"{mode}\"\nredis_timeout = \"100ms\"\n"
        );
        let Some(s) = TestServer::start_with(Backend::Sqlite, &toml, &[]).await else {
            return;
        };
        let org = s.org().await;
        let (_, key) = s
            .key(&org, json!({"scopes": ["documents.read"], "name": "k", "ratelimit": {"limit": 5, "window": 60}}))
            .await;
        let started = std::time::Instant::now();
        let r = fwd(&s, &key, None).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a down Redis hangs requests"
        );
        assert_eq!(r.status, want, "{mode}: {}", r.text);
        if want == 429 {
            r.problem(429, "RATE_LIMITED");
            assert_eq!(header(&r, "retry-after"), Some("1"));
        }
        // A key without a limit never asks Redis.
        let (_, free) = s
            .key(&org, json!({"scopes": ["documents.read"], "name": "free"}))
            .await;
        assert_eq!(fwd(&s, &free, None).await.status, 200);
        let log = s.log();
        assert!(
            log.contains("rate limit backend"),
            "no warning logged: {log}"
        );
    }
}

#[test]
fn bad_ratelimit_config_is_refused() {
    for (toml, setting) in [
        (
            "[ratelimit]\nbackend = \"memcached\"\n",
            "ratelimit.backend",
        ),
        (
            "[ratelimit]\nbackend = \"redis\"\nredis_url = \"http://x\"\n",
            "ratelimit.redis_url",
        ),
        (
            "[ratelimit]\ndefault = { limit = 0, window = \"1s\" }\n",
            "ratelimit.default",
        ),
        (
            "[ratelimit]\non_redis_failure = \"maybe\"\n",
            "on_redis_failure",
        ),
        ("trusted_proxies = [\"10.0.0.0/99\"]\n", "trusted_proxies.0"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, toml).unwrap();
        let out = std::process::Command::new(common::BIN)
            .arg("--config")
            .arg(&path)
            .args(["config", "check"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{toml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(setting), "{toml}: {err}");
    }
}
