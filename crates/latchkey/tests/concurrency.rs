//! Concurrent writes and reads against one server, on SQLite and
//! PostgreSQL: racing rotate / revoke / patch of one key, deletes racing
//! rotations, a burst of key creations in one org, and a storm of verifies
//! across a revoke. Every
//! answer must be a success or a clean 409, and the state left behind must
//! be one that some serial order of the requests could have produced.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Resp, TestServer};
use futures::future::join_all;
use futures::{StreamExt, stream};
use serde_json::{Value, json};

// ------------------------------------------- rotate / revoke / patch race

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Rotate,
    Revoke,
    Patch,
}

struct Outcome {
    op: Op,
    i: usize,
    start: Instant,
    end: Instant,
    r: Resp,
}

/// One race on a fresh key; answers whether a rotation won.
async fn race_once(s: &TestServer, round: usize) -> bool {
    let org = s.org().await;
    let (id, secret) = s
        .key(
            &org,
            json!({"name": "orig", "scopes": ["documents.read"], "metadata": {"round": round}}),
        )
        .await;
    let id = id.as_str();
    let tasks = (0..30).map(|i| {
        let op = match i % 3 {
            0 => Op::Rotate,
            1 => Op::Revoke,
            _ => Op::Patch,
        };
        // Round 0 lets the rotations go first, round 1 the revocations;
        // the others interleave everything.
        let delay = match (round, op) {
            (0, Op::Revoke) | (1, Op::Rotate) => 60 + i,
            (0 | 1, _) => i % 4,
            _ => (i * 7 + round * 13) % 40,
        };
        async move {
            tokio::time::sleep(Duration::from_millis(delay as u64)).await;
            let start = Instant::now();
            let r = match op {
                Op::Rotate => {
                    s.post(
                        &format!("/v1/keys/{id}/rotate"),
                        json!({"grace_period": 60}),
                    )
                    .await
                }
                Op::Revoke => {
                    s.post(&format!("/v1/keys/{id}/revoke"), json!({"reason": "race"}))
                        .await
                }
                Op::Patch => {
                    s.patch(
                        &format!("/v1/keys/{id}"),
                        json!({"name": format!("name-{i}")}),
                    )
                    .await
                }
            };
            Outcome {
                op,
                i,
                start,
                end: Instant::now(),
                r,
            }
        }
    });
    let outcomes = join_all(tasks).await;

    // Every answer: a success of the right shape, or a clean 409.
    for o in &outcomes {
        let what = format!("round {round}, {:?} #{}", o.op, o.i);
        assert!(o.r.status < 500, "{what}: {} {}", o.r.status, o.r.text);
        match o.op {
            Op::Rotate if o.r.status == 201 => {
                let v = o.r.json();
                assert_eq!(v["rotated_from"], id, "{what}: {}", o.r.text);
                assert_eq!(v["status"], "active", "{what}: {}", o.r.text);
                assert!(
                    v["key"].as_str().is_some_and(|k| k.starts_with("sk_live_")),
                    "{what}"
                );
            }
            Op::Rotate => {
                o.r.problem(409, "CONFLICT");
            }
            Op::Revoke => {
                assert_eq!(o.r.status, 200, "{what}: {}", o.r.text);
                let v = o.r.json();
                assert_eq!(v["id"], id);
                assert_eq!(v["status"], "revoked", "{what}: {}", o.r.text);
                assert_eq!(v["revoke_reason"], "race", "{what}: {}", o.r.text);
            }
            Op::Patch => {
                assert_eq!(o.r.status, 200, "{what}: {}", o.r.text);
                assert_eq!(
                    o.r.json()["name"],
                    format!("name-{}", o.i),
                    "{what}: {}",
                    o.r.text
                );
            }
        }
    }
    let of = |op: Op| outcomes.iter().filter(move |o| o.op == op);
    let winners: Vec<&Outcome> = of(Op::Rotate).filter(|o| o.r.status == 201).collect();
    let refused_after_revoke = of(Op::Rotate)
        .filter(|rot| of(Op::Revoke).any(|rev| rev.end < rot.start))
        .count();
    eprintln!(
        "round {round}: rotation won: {}, rotations started after a revoke answered: {refused_after_revoke}",
        !winners.is_empty()
    );
    assert!(
        winners.len() <= 1,
        "round {round}: {} rotations of one key succeeded",
        winners.len()
    );

    // A rotation that started after a revocation had answered must have
    // been refused.
    for rot in of(Op::Rotate) {
        for rev in of(Op::Revoke) {
            if rev.end < rot.start {
                assert_eq!(
                    rot.r.status, 409,
                    "round {round}: rotate #{} started after revoke #{} answered, yet got {}: {}",
                    rot.i, rev.i, rot.r.status, rot.r.text
                );
            }
        }
    }

    let old = s.get(&format!("/v1/keys/{id}")).await;
    assert_eq!(old.status, 200, "{}", old.text);
    let old = old.json();
    let old_verdict = s.verify(json!({"credential": secret})).await;
    // The old key's stored state and verify agree.
    let expected = match old["status"].as_str() {
        Some("revoked") => "KEY_REVOKED",
        Some("active" | "rotating") => "VALID",
        other => panic!("round {round}: old key in state {other:?}: {old}"),
    };
    assert_eq!(
        old_verdict["code"], expected,
        "round {round}: old key {old} but verify says {old_verdict}"
    );
    // A revocation always ran and nothing can undo it.
    assert_eq!(old["status"], "revoked", "round {round}: {old}");
    assert_eq!(old["revoke_reason"], "race", "round {round}: {old}");
    // Its name is the one of some patch.
    let names: HashSet<String> = of(Op::Patch).map(|o| format!("name-{}", o.i)).collect();
    assert!(
        old["name"].as_str().is_some_and(|n| names.contains(n)),
        "round {round}: {old}"
    );

    let listed = s
        .get(&format!("/v1/orgs/{org}/keys?limit=200"))
        .await
        .json();
    let listed = listed["data"].as_array().unwrap();
    match winners.first() {
        Some(w) => {
            let new = w.r.json();
            let new_id = new["id"].as_str().unwrap();
            let new_secret = new["key"].as_str().unwrap();
            assert_eq!(old["replaced_by"], new_id, "round {round}: {old}");
            let got = s.get(&format!("/v1/keys/{new_id}")).await.json();
            assert_eq!(got["rotated_from"], id, "{got}");
            assert_eq!(got["status"], "active", "{got}");
            assert_eq!(got["replaced_by"], Value::Null, "{got}");
            assert_eq!(got["scopes"], json!(["documents.read"]), "{got}");
            assert_eq!(got["metadata"], json!({"round": round}), "{got}");
            let v = s
                .verify(json!({"credential": new_secret, "required_scopes": ["documents.read"]}))
                .await;
            assert_eq!(v["code"], "VALID", "round {round}: the new key: {v}");
            assert_eq!(v["key_id"], new_id);
            // What answered after the rotation had answered saw it.
            for o in outcomes
                .iter()
                .filter(|o| o.start > w.end && o.op != Op::Rotate)
            {
                assert_eq!(
                    o.r.json()["replaced_by"],
                    new_id,
                    "round {round}: {:?} #{} after the rotation: {}",
                    o.op,
                    o.i,
                    o.r.text
                );
            }
            let mut ids: Vec<&str> = listed.iter().map(|k| k["id"].as_str().unwrap()).collect();
            ids.sort_unstable();
            let mut want = vec![id, new_id];
            want.sort_unstable();
            assert_eq!(
                ids, want,
                "round {round}: refused rotations must leave no key behind"
            );
        }
        None => {
            assert_eq!(old["replaced_by"], Value::Null, "round {round}: {old}");
            assert_eq!(
                listed.len(),
                1,
                "round {round}: refused rotations must leave no key behind: {listed:?}"
            );
        }
    }
    !winners.is_empty()
}

async fn rotate_revoke_patch_race(s: TestServer) {
    let mut rotated = Vec::new();
    for round in 0..5 {
        rotated.push(race_once(&s, round).await);
    }
    assert!(
        rotated.iter().any(|r| *r),
        "no round had a rotation win: the race never exercised a successful rotation"
    );
    healthy(&s).await;
}
both!(rotate_revoke_patch_race);

/// A delete racing rotations of the same key: the delete answers 204 once
/// (then 404), a rotation answers 201 at most once, else 404 or 409; a
/// rotation that won leaves a working replacement, and the deleted key is
/// gone from every answer.
async fn delete_races_rotate(s: TestServer) {
    let s = &s;
    let org = s.org().await;
    let mut outcomes = HashMap::new();
    for round in 0..6 {
        let (id, secret) = s.key(&org, json!({"name": format!("d{round}")})).await;
        let id = id.as_str();
        let tasks = (0..12).map(|i| async move {
            tokio::time::sleep(Duration::from_millis(((i * 5 + round * 3) % 20) as u64)).await;
            if i % 3 == 0 {
                (true, s.delete(&format!("/v1/keys/{id}")).await)
            } else {
                (
                    false,
                    s.post(
                        &format!("/v1/keys/{id}/rotate"),
                        json!({"grace_period": "1h"}),
                    )
                    .await,
                )
            }
        });
        let answers = join_all(tasks).await;
        let mut deleted = 0;
        let mut rotated = Vec::new();
        for (is_delete, r) in &answers {
            assert!(r.status < 500, "{} {}", r.status, r.text);
            match (is_delete, r.status) {
                (true, 204) => deleted += 1,
                (true, _) => {
                    r.problem(404, "NOT_FOUND");
                }
                (false, 201) => rotated.push(r.json()),
                (false, 409) => {
                    r.problem(409, "CONFLICT");
                }
                (false, _) => {
                    r.problem(404, "NOT_FOUND");
                }
            }
        }
        assert_eq!(deleted, 1, "round {round}: one delete succeeds");
        assert!(
            rotated.len() <= 1,
            "round {round}: {} rotations won",
            rotated.len()
        );
        s.get(&format!("/v1/keys/{id}"))
            .await
            .problem(404, "NOT_FOUND");
        assert_eq!(
            s.verify(json!({"credential": secret})).await["code"],
            "INVALID_KEY"
        );
        if let Some(new) = rotated.first() {
            let v = s.verify(json!({"credential": new["key"]})).await;
            assert_eq!(v["code"], "VALID", "round {round}: {v}");
            assert_eq!(
                s.get(&format!("/v1/keys/{}", new["id"].as_str().unwrap()))
                    .await
                    .json()["rotated_from"],
                id
            );
        }
        *outcomes.entry(rotated.len()).or_insert(0) += 1;
    }
    eprintln!("rounds by rotations won: {outcomes:?}");
    healthy(s).await;
}
both!(delete_races_rotate);

async fn healthy(s: &TestServer) {
    let h = s.send(s.http.get(s.at("/healthz"))).await;
    assert_eq!(h.status, 200, "{}", h.text);
}

// -------------------------------------------------------- many creations

fn parse_time(v: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        v.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// Walks every page of `path` (which has a `?`), answering the ids in order.
async fn walk(s: &TestServer, path: &str, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let url = match &cursor {
            Some(c) => format!("{path}&limit={limit}&cursor={c}"),
            None => format!("{path}&limit={limit}"),
        };
        let page = s.get(&url).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let page = page.json();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit, "{page}");
        all.extend(data.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(
                    data.len(),
                    limit,
                    "a page short of the limit has a next cursor"
                );
                cursor = Some(c.to_owned());
            }
            None => return all,
        }
    }
    panic!("the pages of {path} never end");
}

async fn many_creations(s: TestServer) {
    let org = s.org().await;
    let path = format!("/v1/orgs/{org}/keys");
    let path = path.as_str();
    let s = &s;
    let started = Instant::now();
    let answers: Vec<(usize, Resp)> = stream::iter(0..200usize)
        .map(|i| async move {
            let body = json!({"name": format!("k{i}"), "external_id": format!("owner-{}", i % 10), "metadata": {"i": i}});
            (i, s.post(path, body).await)
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut ids = HashSet::new();
    let mut secrets = HashSet::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for (i, r) in &answers {
        assert_eq!(r.status, 201, "creation {i}: {}", r.text);
        let v = r.json();
        assert_eq!(v["name"], format!("k{i}"));
        let id = v["id"].as_str().unwrap().to_owned();
        assert!(ids.insert(id.clone()), "duplicate id {id}");
        assert!(
            secrets.insert(v["key"].as_str().unwrap().to_owned()),
            "duplicate secret"
        );
        by_id.insert(id, *i);
    }
    assert_eq!(ids.len(), 200);
    eprintln!("200 creations, 32 in flight: {:?}", started.elapsed());

    // Cursor pages return each key exactly once, newest first.
    for limit in [7, 50, 199, 200] {
        let listed = walk(s, &format!("{path}?"), limit).await;
        let listed_ids: Vec<String> = listed
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect();
        let unique: HashSet<&String> = listed_ids.iter().collect();
        assert_eq!(
            unique.len(),
            listed_ids.len(),
            "limit {limit}: a key listed twice"
        );
        assert_eq!(
            listed_ids.len(),
            200,
            "limit {limit}: {} keys listed",
            listed_ids.len()
        );
        assert_eq!(
            unique.into_iter().cloned().collect::<HashSet<_>>(),
            ids,
            "limit {limit}"
        );
        for pair in listed.windows(2) {
            assert!(
                parse_time(&pair[0]["created_at"]) >= parse_time(&pair[1]["created_at"]),
                "limit {limit}: not newest first: {pair:?}"
            );
        }
        for k in &listed {
            let i = by_id[k["id"].as_str().unwrap()];
            assert_eq!(k["metadata"], json!({"i": i}), "limit {limit}");
            assert!(k.get("key").is_none(), "a list shows a secret");
        }
    }
    // By owner, paged too.
    let owned = walk(s, &format!("{path}?external_id=owner-3"), 6).await;
    let mut got: Vec<usize> = owned
        .iter()
        .map(|k| by_id[k["id"].as_str().unwrap()])
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..200).filter(|i| i % 10 == 3).collect::<Vec<_>>());
    // Exactly 200 at limit 200: one page, no cursor.
    let page = s.get(&format!("{path}?limit=200")).await.json();
    assert_eq!(page["data"].as_array().unwrap().len(), 200);
    assert_eq!(page["next_cursor"], Value::Null);
    // Every created key works.
    let some: Vec<&(usize, Resp)> = answers.iter().step_by(25).collect();
    for (i, r) in some {
        let v = s.verify(json!({"credential": r.json()["key"]})).await;
        assert_eq!(v["code"], "VALID", "key {i}: {v}");
    }
    healthy(s).await;
}
both!(many_creations);

// ------------------------------------------------ verifies across a revoke

struct Verdict {
    start: Instant,
    end: Instant,
    code: String,
}

/// At least 500 verifies of one key, 32 in flight, with the key revoked
/// once 150 have answered, going on until 250 have started after the revoke
/// answered (a slow revoke must not leave too few to judge by); with `churn`, the key is also patched over and over until
/// the revoke is sent (each patch drops the key from this node's cache, so
/// verifies keep reading it from the database right up to the revoke).
async fn verifies_across_revoke(s: &TestServer, churn: bool) {
    let org = s.org().await;
    let (id, key) = s
        .key(&org, json!({"name": "hot", "scopes": ["documents.read"]}))
        .await;
    let (id, key) = (id.as_str(), key.as_str());
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let revoked_at: Mutex<Option<Instant>> = Mutex::new(None);
    let late_started = AtomicUsize::new(0);
    let (done, stop, revoked_at, late_started) = (&done, &stop, &revoked_at, &late_started);
    let verifies = stream::iter(0..5000)
        .take_while(|i| std::future::ready(*i < 500 || late_started.load(Ordering::SeqCst) < 250))
        .map(|_| async move {
            let start = Instant::now();
            if revoked_at.lock().unwrap().is_some_and(|t| start > t) {
                late_started.fetch_add(1, Ordering::SeqCst);
            }
            let r = s
                .post(
                    "/v1/verify",
                    json!({"credential": key, "required_scopes": ["documents.read"]}),
                )
                .await;
            let end = Instant::now();
            done.fetch_add(1, Ordering::SeqCst);
            assert_eq!(r.status, 200, "{}", r.text);
            Verdict {
                start,
                end,
                code: r.json()["code"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>();
    let revoker = async move {
        while done.load(Ordering::SeqCst) < 150 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stop.store(true, Ordering::SeqCst);
        let start = Instant::now();
        let r = s.post(&format!("/v1/keys/{id}/revoke"), json!({})).await;
        let end = Instant::now();
        *revoked_at.lock().unwrap() = Some(end);
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json()["status"], "revoked");
        (start, end)
    };
    let patcher = |who: u32| async move {
        let mut n = 0u32;
        while churn && !stop.load(Ordering::SeqCst) {
            let r = s
                .patch(
                    &format!("/v1/keys/{id}"),
                    json!({"metadata": {"who": who, "n": n}}),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            n += 1;
        }
        n
    };
    let (verdicts, (rev_start, rev_end), p1, p2) =
        tokio::join!(verifies, revoker, patcher(1), patcher(2));
    let patches = p1 + p2;

    let mut counts: HashMap<&str, usize> = HashMap::new();
    for v in &verdicts {
        *counts.entry(v.code.as_str()).or_default() += 1;
        assert!(
            v.code == "VALID" || v.code == "KEY_REVOKED",
            "churn {churn}: an answer that is neither VALID nor KEY_REVOKED: {}",
            v.code
        );
        if v.end < rev_start {
            assert_eq!(
                v.code, "VALID",
                "churn {churn}: a verify that answered before the revoke was sent"
            );
        }
    }
    let late: Vec<&Verdict> = verdicts.iter().filter(|v| v.start > rev_end).collect();
    let stale: Vec<Duration> = late
        .iter()
        .filter(|v| v.code != "KEY_REVOKED")
        .map(|v| v.start - rev_end)
        .collect();
    assert!(
        stale.is_empty(),
        "churn {churn} ({patches} patches): {} of {} verifies started after the revoke had answered still said VALID \
         (started up to {:?} after it; counts {counts:?})",
        stale.len(),
        late.len(),
        stale.iter().max()
    );
    assert!(
        late.len() >= 250,
        "too few verifies after the revoke ({}) for the test to mean anything",
        late.len()
    );
    assert!(
        counts.get("VALID").copied().unwrap_or(0) >= 150,
        "{counts:?}"
    );
    let after = s.verify(json!({"credential": key})).await;
    assert_eq!(after["code"], "KEY_REVOKED", "{after}");
}

async fn verify_during_revoke(s: TestServer) {
    for _ in 0..3 {
        verifies_across_revoke(&s, false).await;
    }
    healthy(&s).await;
}
both!(verify_during_revoke);

/// The same, while the key keeps dropping out of the cache. A verify that
/// missed the cache reads the key from the database and then inserts it;
/// when that read happened before the revoke committed and the insert after
/// the revoke's `forget_key`, the cache holds the key as not revoked, and
/// verifies that start after the revoke answered say VALID until the entry
/// is overwritten or expires (cache TTL, 1 s by default).
async fn verify_during_revoke_with_cache_churn(s: TestServer) {
    for _ in 0..100 {
        verifies_across_revoke(&s, true).await;
    }
    healthy(&s).await;
}
both!(verify_during_revoke_with_cache_churn);
