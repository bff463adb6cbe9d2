//! Several `latchkey serve` processes on one database (SPEC §1): a change
//! made through one node is in force on every node within 1 second. The
//! servers run with the default cache lifetime (60 s), so what carries the
//! changes here is the change feed, not the expiry of cache entries.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::json;

/// Verifies through `node` until `done` says so; answers how long it took.
async fn until(
    node: &TestServer,
    body: serde_json::Value,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let v = node.verify(body.clone()).await;
        if done(&v) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the change never reached the other node: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn changes_reach_every_node_within_a_second(a: TestServer) {
    let b = a.second_node();
    let org = a.org().await;
    let (id, key) = a
        .key(
            &org,
            json!({"name": "k", "scopes": ["docs.read", "docs.write"]}),
        )
        .await;
    b.remember(&key);
    let write = json!({"credential": key, "required_scopes": ["docs.write"]});
    // Node B has the key in its cache.
    assert_eq!(b.verify(write.clone()).await["valid"], true);

    // A scope cut through A.
    let r = a
        .patch(&format!("/v1/keys/{id}"), json!({"scopes": ["docs.read"]}))
        .await;
    assert_eq!(r.status, 200);
    let took = until(&b, write, |v| v["code"] == "INSUFFICIENT_SCOPE").await;
    assert!(
        took <= Duration::from_millis(1000),
        "scope change took {took:?} to reach node B"
    );

    // A revocation through A.
    let read = json!({"credential": key, "required_scopes": ["docs.read"]});
    assert_eq!(b.verify(read.clone()).await["valid"], true);
    let r = a.post(&format!("/v1/keys/{id}/revoke"), json!({})).await;
    assert_eq!(r.status, 200);
    let took = until(&b, read, |v| v["code"] == "KEY_REVOKED").await;
    assert!(
        took <= Duration::from_millis(1000),
        "revocation took {took:?} to reach node B"
    );

    // A rotation through B: A serves the new key and ends the old one.
    let (id2, key2) = b.key(&org, json!({"name": "k2"})).await;
    a.remember(&key2);
    assert_eq!(a.verify(json!({"credential": key2})).await["valid"], true);
    let r = b.post(&format!("/v1/keys/{id2}/rotate"), json!({})).await;
    assert_eq!(r.status, 201);
    let new = r.json()["key"].as_str().unwrap().to_owned();
    a.remember(&new);
    assert_eq!(a.verify(json!({"credential": new})).await["valid"], true);
    let took = until(&a, json!({"credential": key2}), |v| {
        v["code"] == "KEY_REVOKED"
    })
    .await;
    assert!(
        took <= Duration::from_millis(1000),
        "rotation took {took:?} to reach node A"
    );
}
both!(changes_reach_every_node_within_a_second);

async fn deletes_and_root_key_revocations_reach_every_node(a: TestServer) {
    let b = a.second_node();
    let org = a.org().await;
    let (id, key) = a.key(&org, json!({"name": "k"})).await;
    b.remember(&key);
    let body = json!({"credential": key});
    assert_eq!(b.verify(body.clone()).await["valid"], true);
    assert_eq!(a.delete(&format!("/v1/keys/{id}")).await.status, 204);
    let took = until(&b, body, |v| v["code"] == "INVALID_KEY").await;
    assert!(took <= Duration::from_millis(1000), "delete took {took:?}");

    // A root key made and revoked through A, used through B.
    let r = a
        .post(
            "/v1/root-keys",
            json!({"name": "ops", "scopes": ["orgs.read"]}),
        )
        .await;
    assert_eq!(r.status, 201);
    let root = r.json()["key"].as_str().unwrap().to_owned();
    let root_id = r.json()["id"].as_str().unwrap().to_owned();
    a.remember(&root);
    b.remember(&root);
    let list = async |node: &TestServer| {
        node.send(node.http.get(node.at("/v1/orgs")).bearer_auth(&root))
            .await
    };
    assert_eq!(list(&b).await.status, 200);
    let r = a
        .post(&format!("/v1/root-keys/{root_id}/revoke"), json!({}))
        .await;
    assert_eq!(r.status, 200);
    let start = Instant::now();
    loop {
        let r = list(&b).await;
        if r.status == 401 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "root key revocation did not reach node B: {}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
both!(deletes_and_root_key_revocations_reach_every_node);

/// The value of a metric on `node`'s `/metrics`, if present.
async fn metric(node: &TestServer, name: &str) -> Option<f64> {
    let text = node.get("/metrics").await.text;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// On PostgreSQL the feed is a `LISTEN` connection. When it is cut, a node
/// must not keep answering from its cache: it bypasses the cache until it
/// listens again, and then follows changes as before.
async fn a_lost_listener_never_leaves_a_stale_cache(a: TestServer) {
    if !a.database_url.starts_with("postgres") {
        return; // SQLite has no connection to lose: its feed is a table.
    }
    let b = a.second_node();
    let org = a.org().await;
    let (id, key) = a.key(&org, json!({"name": "k"})).await;
    b.remember(&key);
    let body = json!({"credential": key});
    assert_eq!(b.verify(body.clone()).await["valid"], true);
    let start = Instant::now();
    while metric(&b, "latchkey_change_feed_up").await != Some(1.0) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "feed never came up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Cut every listening connection, then revoke at once.
    let out = std::process::Command::new("psql")
        .arg(&a.database_url)
        .args(["-qAtc", "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'listen%'"])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cut: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(cut, 2, "one listener per node");
    let r = a.post(&format!("/v1/keys/{id}/revoke"), json!({})).await;
    assert_eq!(r.status, 200);
    let took = until(&b, body, |v| v["code"] == "KEY_REVOKED").await;
    assert!(
        took <= Duration::from_millis(1000),
        "revocation took {took:?}"
    );

    // The feed comes back and carries changes again.
    let start = Instant::now();
    while metric(&b, "latchkey_change_feed_up").await != Some(1.0) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "feed never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (id2, key2) = a.key(&org, json!({"name": "k2"})).await;
    b.remember(&key2);
    let body2 = json!({"credential": key2});
    assert_eq!(b.verify(body2.clone()).await["valid"], true);
    assert_eq!(b.verify(body2.clone()).await["valid"], true);
    let r = a.post(&format!("/v1/keys/{id2}/revoke"), json!({})).await;
    assert_eq!(r.status, 200);
    let took = until(&b, body2, |v| v["code"] == "KEY_REVOKED").await;
    assert!(
        took <= Duration::from_millis(1000),
        "revocation took {took:?}"
    );
}
both!(a_lost_listener_never_leaves_a_stale_cache);
