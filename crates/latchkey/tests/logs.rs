//! The usage log end to end, on SQLite and PostgreSQL: decisions and
//! management actions reach `GET /v1/orgs/{org}/logs` (and `latchkey
//! logs`) within a couple of seconds, filters and pages work, and no
//! secret ever lands in a log entry.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use common::{BIN, TestServer};
use latchkey::views::parse_rfc3339;
use serde_json::{Value, json};

/// Longest wait for entries to show: the writer flushes every second.
const WAIT: Duration = Duration::from_secs(5);

/// Polls the org's log (with `query`) until it holds at least `n`
/// entries, and answers them. Fails after [`WAIT`].
async fn logs_until(s: &TestServer, org: &str, query: &str, n: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let r = s
            .get(&format!("/v1/orgs/{org}/logs?limit=200&{query}"))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let data = r.json()["data"].as_array().unwrap().clone();
        if data.len() >= n {
            return data;
        }
        assert!(
            started.elapsed() < WAIT,
            "{n} entries expected within {WAIT:?}, got {}: {data:#?}",
            data.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An entry's time, in ms (RFC 3339 strings with and without a fraction
/// do not sort as text).
fn ms(e: &Value) -> i64 {
    parse_rfc3339(e["time"].as_str().unwrap()).unwrap()
}

/// Lets the clock move on, so that entries have distinct times and
/// "newest first" one answer.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

fn actions(entries: &[Value]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter(|e| e["kind"] == "action")
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn codes(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["kind"] == "decision")
        .map(|e| e["code"].as_str().unwrap().to_owned())
        .collect()
}

async fn root_key_id(s: &TestServer) -> String {
    let roots = s.get("/v1/root-keys").await.json();
    roots["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "test")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn decisions_and_actions_are_logged(s: TestServer) {
    let root = root_key_id(&s).await;
    let r = s.post("/v1/orgs", json!({"name": "Acme"})).await;
    let org = r.json()["id"].as_str().unwrap().to_owned();
    let org_request = r.header("x-request-id").unwrap();
    tick().await;

    let (a, key_a) = s
        .key(&org, json!({"name": "a", "scopes": ["documents.read"]}))
        .await;
    tick().await;
    let (b, key_b) = s.key(&org, json!({"name": "b", "scopes": ["*"]})).await;
    tick().await;
    let v = s
        .verify(json!({"credential": key_a, "required_scopes": ["documents.read"], "ip": "203.0.113.7"}))
        .await;
    tick().await;
    assert_eq!(v["valid"], true);
    let v = s
        .verify(json!({"credential": key_a, "required_scopes": ["documents.write"]}))
        .await;
    tick().await;
    assert_eq!(v["code"], "INSUFFICIENT_SCOPE");
    let v = s.verify(json!({"credential": key_b})).await;
    tick().await;
    assert_eq!(v["valid"], true);
    let r = s
        .patch(&format!("/v1/keys/{b}"), json!({"name": "b2"}))
        .await;
    tick().await;
    assert_eq!(r.status, 200);
    let revoke = s.post(&format!("/v1/keys/{b}/revoke"), json!({})).await;
    tick().await;
    assert_eq!(revoke.status, 200);
    let v = s.verify(json!({"credential": key_b})).await;
    tick().await;
    assert_eq!(v["code"], "KEY_REVOKED");
    let r = s.post(&format!("/v1/keys/{a}/rotate"), json!({})).await;
    tick().await;
    assert_eq!(r.status, 201);
    let c = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(s.delete(&format!("/v1/keys/{c}")).await.status, 204);
    tick().await;
    // Refusals before any key is found belong to no organization.
    let v = s.verify(json!({"credential": "sk_live_nope"})).await;
    tick().await;
    assert_eq!(v["code"], "INVALID_FORMAT");

    // org.created, 2 key.created, key.updated, key.revoked, key.rotated,
    // key.deleted; 4 decisions on the org's keys.
    let started = Instant::now();
    let all = logs_until(&s, &org, "", 11).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "entries took {:?} to show",
        started.elapsed()
    );
    assert_eq!(all.len(), 11, "{all:#?}");
    assert_eq!(
        actions(&all),
        [
            ("key.deleted".to_owned(), c.clone()),
            ("key.rotated".to_owned(), a.clone()),
            ("key.revoked".to_owned(), b.clone()),
            ("key.updated".to_owned(), b.clone()),
            ("key.created".to_owned(), b.clone()),
            ("key.created".to_owned(), a.clone()),
            ("org.created".to_owned(), org.clone()),
        ],
        "newest first"
    );
    assert_eq!(
        codes(&all),
        ["KEY_REVOKED", "VALID", "INSUFFICIENT_SCOPE", "VALID"]
    );
    let times: Vec<i64> = all.iter().map(ms).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(times, sorted, "newest first");

    // Every entry: an id, an RFC 3339 time, the request that caused it.
    for e in &all {
        assert!(e["id"].as_str().unwrap().starts_with("log_"), "{e}");
        assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
        assert!(e["request_id"].as_str().unwrap().starts_with("req_"), "{e}");
    }
    let created = all.last().unwrap();
    assert_eq!(
        created,
        &json!({"id": created["id"], "time": created["time"], "request_id": org_request,
                "kind": "action", "actor": root, "action": "org.created", "target": org})
    );
    let revoked = all.iter().find(|e| e["action"] == "key.revoked").unwrap();
    assert_eq!(
        revoked["request_id"].as_str(),
        revoke.header("x-request-id").as_deref()
    );

    // A decision: what verify knows of it.
    let valid = all
        .iter()
        .find(|e| e["code"] == "VALID" && e["key_id"] == a.as_str())
        .unwrap()
        .clone();
    let latency = valid["latency_ms"].as_f64().unwrap();
    assert!((0.0..5000.0).contains(&latency), "{valid}");
    assert_eq!(
        valid,
        json!({"id": valid["id"], "time": valid["time"], "request_id": valid["request_id"],
               "kind": "decision", "credential_type": "api_key", "key_id": a, "client_id": null,
               "code": "VALID", "status": 200, "method": null, "path": null,
               "ip": "203.0.113.7", "user_agent": null, "latency_ms": valid["latency_ms"]})
    );
    let scope = all
        .iter()
        .find(|e| e["code"] == "INSUFFICIENT_SCOPE")
        .unwrap();
    assert_eq!(scope["status"], 403);
    assert_eq!(scope["key_id"], a.as_str());
    assert_eq!(scope["ip"], Value::Null);
    // A refused key that exists is known, and so is its organization.
    let revoked = all.iter().find(|e| e["code"] == "KEY_REVOKED").unwrap();
    assert_eq!(revoked["key_id"], b.as_str());
    assert_eq!(revoked["status"], 401);
    assert_eq!(revoked["credential_type"], "api_key");

    // Filters: a key's decisions and the actions on it; a code.
    let of_a = logs_until(&s, &org, &format!("key_id={a}"), 0).await;
    assert_eq!(
        actions(&of_a),
        [
            ("key.rotated".to_owned(), a.clone()),
            ("key.created".to_owned(), a.clone())
        ]
    );
    assert_eq!(codes(&of_a), ["INSUFFICIENT_SCOPE", "VALID"]);
    let valid_only = logs_until(&s, &org, "code=VALID", 0).await;
    assert_eq!(codes(&valid_only), ["VALID", "VALID"]);
    assert_eq!(valid_only.len(), 2);
    let a_valid = logs_until(&s, &org, &format!("code=VALID&key_id={a}"), 0).await;
    assert_eq!(a_valid.len(), 1);
    assert_eq!(a_valid[0]["key_id"], a.as_str());
    let none = logs_until(&s, &org, "code=KEY_EXPIRED", 0).await;
    assert!(none.is_empty());

    // Another organization sees none of it.
    let other = s.org().await;
    let theirs = logs_until(&s, &other, "", 1).await;
    assert_eq!(
        actions(&theirs),
        [("org.created".to_owned(), other.clone())]
    );
    assert!(codes(&theirs).is_empty());
}
both!(decisions_and_actions_are_logged);

async fn pages_and_time_windows(s: TestServer) {
    let org = s.org().await;
    let (_, key) = s.key(&org, json!({"name": "k"})).await;
    for _ in 0..9 {
        s.verify(json!({"credential": key})).await;
    }
    // org.created, key.created, 9 decisions.
    let all = logs_until(&s, &org, "", 11).await;
    assert_eq!(all.len(), 11);

    let mut paged: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/orgs/{org}/logs?limit=3&cursor={c}"),
            None => format!("/v1/orgs/{org}/logs?limit=3"),
        };
        let page = s.get(&path).await.json();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 3);
        paged.extend(data.iter().cloned());
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(paged, all, "the pages, joined, are the whole log, in order");
    // Filters hold across pages.
    let first = s
        .get(&format!("/v1/orgs/{org}/logs?limit=2&code=VALID"))
        .await
        .json();
    let c = first["next_cursor"].as_str().unwrap();
    let second = s
        .get(&format!(
            "/v1/orgs/{org}/logs?limit=200&code=VALID&cursor={c}"
        ))
        .await
        .json();
    assert_eq!(second["data"].as_array().unwrap().len(), 7);
    assert_eq!(second["next_cursor"], Value::Null);

    // since is inclusive, until exclusive, both RFC 3339.
    let oldest = all.last().unwrap()["time"].as_str().unwrap().to_owned();
    let newest = all[0]["time"].as_str().unwrap().to_owned();
    let enc = |t: &str| t.replace('+', "%2B");
    let since = logs_until(&s, &org, &format!("since={}", enc(&newest)), 0).await;
    assert!(!since.is_empty());
    assert!(since.iter().all(|e| ms(e) >= ms(&all[0])));
    let until = logs_until(&s, &org, &format!("until={}", enc(&newest)), 0).await;
    assert_eq!(since.len() + until.len(), all.len());
    assert!(until.iter().all(|e| ms(e) < ms(&all[0])));
    let window = logs_until(
        &s,
        &org,
        &format!("since={}&until={}", enc(&oldest), enc(&newest)),
        0,
    )
    .await;
    assert_eq!(window, until);
    // Offsets are understood.
    let future = logs_until(&s, &org, "since=2999-01-01T01:00:00%2B01:00", 0).await;
    assert!(future.is_empty());
    let past = logs_until(&s, &org, "until=2000-01-01T00:00:00Z", 0).await;
    assert!(past.is_empty());
}
both!(pages_and_time_windows);

async fn scopes_and_bad_filters(s: TestServer) {
    let org = s.org().await;
    let r = s
        .post(
            "/v1/root-keys",
            json!({"name": "no-logs", "scopes": ["keys.*", "orgs.*"]}),
        )
        .await;
    let no_logs = r.json()["key"].as_str().unwrap().to_owned();
    let r = s
        .send(
            s.http
                .get(s.at(&format!("/v1/orgs/{org}/logs")))
                .bearer_auth(&no_logs),
        )
        .await;
    assert_eq!(
        r.problem(403, "INSUFFICIENT_SCOPE")["required_scopes"],
        json!(["logs.read"])
    );
    let r = s
        .post(
            "/v1/root-keys",
            json!({"name": "logs", "scopes": ["logs.read"]}),
        )
        .await;
    let reader = r.json()["key"].as_str().unwrap().to_owned();
    let r = s
        .send(
            s.http
                .get(s.at(&format!("/v1/orgs/{org}/logs")))
                .bearer_auth(&reader),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Instance-level actions (root keys) belong to no organization.
    let entries = logs_until(&s, &org, "", 1).await;
    assert_eq!(actions(&entries), [("org.created".to_owned(), org.clone())]);
    let r = s
        .send(s.http.get(s.at(&format!("/v1/orgs/{org}/logs"))))
        .await;
    r.problem(401, "MISSING_KEY");

    s.get("/v1/orgs/org_doesnotexist0000000000/logs")
        .await
        .problem(404, "NOT_FOUND");
    s.get("/v1/orgs/nonsense/logs")
        .await
        .problem(404, "NOT_FOUND");

    let r = s
        .get(&format!(
            "/v1/orgs/{org}/logs?key_id=sk_live_x&client_id=nope&code=valid&since=yesterday&until=2026-13-01T00:00:00Z&cursor=garbage&limit=0"
        ))
        .await;
    let p = r.problem(422, "VALIDATION_FAILED");
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "key_id",
            "client_id",
            "code",
            "since",
            "until",
            "limit",
            "cursor"
        ],
        "{p}"
    );
    for (query, field) in [
        ("limit=201", "limit"),
        ("limit=abc", "limit"),
        ("code=NOT_A_CODE", "code"),
        (
            "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            "until",
        ),
        ("since=1767225600000", "since"),
    ] {
        let r = s.get(&format!("/v1/orgs/{org}/logs?{query}")).await;
        let p = r.problem(422, "VALIDATION_FAILED");
        assert_eq!(p["errors"][0]["field"], field, "{query}: {p}");
    }
    // Unknown query parameters are ignored, as on every endpoint.
    let r = s.get(&format!("/v1/orgs/{org}/logs?utm_source=x")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Every known code is accepted.
    for code in ["VALID", "INVALID_KEY", "RATE_LIMITED", "FORBIDDEN_IP"] {
        let r = s.get(&format!("/v1/orgs/{org}/logs?code={code}")).await;
        assert_eq!(r.status, 200, "{code}: {}", r.text);
    }
    s.post(&format!("/v1/orgs/{org}/logs"), json!({}))
        .await
        .problem(405, "METHOD_NOT_ALLOWED");
}
both!(scopes_and_bad_filters);

/// A key presented in a query string, in a body, in headers: never in a
/// log entry (every response the harness reads, the logs' included, is
/// searched for every secret it has seen, and so is the server log).
async fn no_secret_in_the_log(s: TestServer) {
    let org = s.org().await;
    let (id, key) = s
        .key(&org, json!({"name": "k", "scopes": ["documents.read"]}))
        .await;
    s.verify(json!({"credential": key, "required_scopes": ["documents.read"]}))
        .await;
    s.verify(json!({"credential": format!("{key}x")})).await;
    // The query parameter is a configured credential place here.
    for uri in [
        format!("/api/v1/documents?api_key={key}"),
        format!("/api/v1/documents/42?x=1&api_key={key}"),
    ] {
        let r = s
            .send(
                s.http
                    .get(s.at("/v1/forward-auth"))
                    .header("x-forwarded-method", "GET")
                    .header("x-forwarded-uri", uri)
                    .header("user-agent", format!("agent {key}")),
            )
            .await;
        assert!(r.status == 200 || r.status == 401, "{}", r.text);
    }
    let r = s
        .send(
            s.http
                .get(s.at(&format!("/v1/orgs/{org}/logs?api_key={key}")))
                .bearer_auth(&s.root_key),
        )
        .await;
    r.problem(400, "INVALID_REQUEST");
    let (rotated_id, rotated) = {
        let r = s.post(&format!("/v1/keys/{id}/rotate"), json!({})).await;
        let v = r.json();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["key"].as_str().unwrap().to_owned(),
        )
    };
    s.verify(json!({"credential": rotated})).await;

    // org.created, key.created, 2 VALID from verify, 2 VALID from
    // forward-auth, key.rotated (the refusal of a malformed key belongs to
    // no organization).
    let all = logs_until(&s, &org, "", 7).await;
    assert_eq!(all.len(), 7, "{all:#?}");
    let fwd: Vec<&Value> = all.iter().filter(|e| e["method"] == "GET").collect();
    assert_eq!(fwd.len(), 2, "{all:#?}");
    for e in fwd {
        assert_eq!(e["code"], "VALID");
        assert_eq!(e["key_id"], id.as_str());
        assert!(e["path"].as_str().unwrap().starts_with("/api/v1/documents"));
        assert_eq!(e["ip"], "127.0.0.1");
        assert_eq!(e["user_agent"], "agent [REDACTED]");
    }
    let text = serde_json::to_string(&all).unwrap();
    for secret in [&key, &rotated, &s.root_key] {
        assert!(!text.contains(secret.as_str()));
        assert!(!text.contains(&secret[..secret.len() - 6]));
    }
    assert!(text.contains(&rotated_id));
    for e in &all {
        if let Some(p) = e["path"].as_str() {
            assert!(!p.contains('?') && !p.contains('#'), "{e}");
        }
        if let Some(ua) = e["user_agent"].as_str() {
            assert!(ua.chars().count() <= 256, "{e}");
        }
    }
}
/// Keys also accepted as `?api_key=`, and a small API's routes.
static QUERY_PARAM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "[credentials]\nquery_param = \"api_key\"\n{}",
        common::ROUTES
    )
});
both!(no_secret_in_the_log, &QUERY_PARAM);

async fn the_cli_prints_the_log(s: TestServer) {
    let org = s.org().await;
    let out = s.cli(&[
        "--json", "keys", "create", "--org", &org, "--name", "cli-key",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    s.remember(created["key"].as_str().unwrap());
    let key_id = created["id"].as_str().unwrap().to_owned();
    let out = s.cli(&["verify", created["key"].as_str().unwrap()]);
    assert!(out.status.success());
    s.verify(json!({"credential": created["key"]})).await;

    // org.created, key.created (by the CLI), 2 decisions (one by the CLI).
    let api = logs_until(&s, &org, "", 4).await;
    let by_cli = api.iter().find(|e| e["action"] == "key.created").unwrap();
    assert_eq!(by_cli["actor"], "cli");
    assert_eq!(by_cli["target"], key_id.as_str());
    assert_eq!(by_cli["request_id"], Value::Null);
    assert_eq!(codes(&api), ["VALID", "VALID"]);

    let out = s.cli(&["--json", "logs", "--org", &org]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    s.check_no_secret_in(&stdout, "the CLI's output");
    let page: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(page["data"].as_array().unwrap(), &api, "the API's JSON");
    assert_eq!(page["next_cursor"], Value::Null);

    let out = s.cli(&["logs", "--org", &org, "--key-id", &key_id, "--since", "1h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    s.check_no_secret_in(&table, "the CLI's output");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("TIME"), "{table}");
    assert_eq!(lines.len(), 4, "a header and 3 entries: {table}");
    assert!(
        lines[1].contains("decision") && lines[1].contains("VALID"),
        "{table}"
    );
    assert!(
        lines[3].contains("action") && lines[3].contains("key.created") && lines[3].contains("cli"),
        "{table}"
    );

    let out = s.cli(&[
        "--json", "logs", "--org", &org, "--code", "VALID", "--limit", "1",
    ]);
    assert!(out.status.success());
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string());

    let out = s.cli(&["logs", "--org", &org, "--until", "2000-01-01T00:00:00Z"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("(no entries)"));

    let out = s.cli(&["logs", "--org", "org_doesnotexist0000000000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT_FOUND"));
    let out = s.cli(&["logs", "--org", &org, "--code", "NOPE"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("code"));
    let out = s.cli(&["logs"]);
    assert_eq!(out.status.code(), Some(2), "--org is required");
}
both!(the_cli_prints_the_log);

#[test]
fn retention_is_configured_and_at_least_an_hour() {
    let dir = tempfile::tempdir().unwrap();
    let check = |toml: &str| {
        let path = dir.path().join("l.toml");
        std::fs::write(&path, toml).unwrap();
        std::process::Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .args(["--json", "config", "check"])
            .env_remove("LATCHKEY_CONFIG")
            .output()
            .unwrap()
    };
    let o = check("");
    assert!(o.status.success());
    let c: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(c["logs"]["retention"], "30d");

    let o = check("[logs]\nretention = \"1h\"\n");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(c["logs"]["retention"], "1h");

    for bad in ["\"5m\"", "\"0\"", "\"forever\""] {
        let o = check(&format!("[logs]\nretention = {bad}\n"));
        assert_eq!(o.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("logs.retention"), "{bad}: {err}");
    }
    let o = check("[logs]\nkeep = \"1h\"\n");
    assert_eq!(o.status.code(), Some(2));
}
