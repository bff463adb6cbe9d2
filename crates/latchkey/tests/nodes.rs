//! Several `latchkey serve` processes on one database (SPEC §1): a change
//! made through one node is in force on every node within 1 second.
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
        took <= Duration::from_millis(1200),
        "scope change took {took:?} to reach node B"
    );

    // A revocation through A.
    let read = json!({"credential": key, "required_scopes": ["docs.read"]});
    assert_eq!(b.verify(read.clone()).await["valid"], true);
    let r = a.post(&format!("/v1/keys/{id}/revoke"), json!({})).await;
    assert_eq!(r.status, 200);
    let took = until(&b, read, |v| v["code"] == "KEY_REVOKED").await;
    assert!(
        took <= Duration::from_millis(1200),
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
        took <= Duration::from_millis(1200),
        "rotation took {took:?} to reach node A"
    );
}
both!(changes_reach_every_node_within_a_second);
