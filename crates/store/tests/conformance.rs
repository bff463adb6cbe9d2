//! One conformance suite for every `Store`, run on a fresh SQLite file and
//! on a fresh PostgreSQL database per test. PostgreSQL comes from
//! `LATCHKEY_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! without it the PostgreSQL half is skipped with a message, except under
//! `CI=true`, where it fails.

// Test helpers live outside #[test] functions, where clippy.toml does not reach.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashSet;
use std::sync::Arc;

use latchkey_store::testing::{drop_postgres_test_database, postgres_url_for_tests};
use latchkey_store::{
    ActionEvent, ApiKey, Credits, DecisionEvent, KeyPatch, KeyQuery, KeyRateLimit, LogEntry,
    LogEvent, LogQuery, Org, Page, Refill, RootKey, Spend, Store, StoreError,
};
use serde_json::json;

// ---- harness ------------------------------------------------------------

async fn sqlite_store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    // A parent directory that does not exist yet: connect creates it.
    let url = format!("sqlite://{}/data/latchkey.db", dir.path().display());
    let store = latchkey_store::connect(&url).await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    store.migrate().await.unwrap();
    (dir, store)
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (_dir, store) = super::sqlite_store().await;
                    super::$name(store).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(url) = super::postgres_url_for_tests(stringify!($name)).await else {
                        return;
                    };
                    let store = latchkey_store::connect(&url).await.unwrap();
                    assert_eq!(store.backend(), "postgres");
                    store.migrate().await.unwrap();
                    super::$name(store).await;
                    // Only reached on success: a failed test keeps its database.
                    super::drop_postgres_test_database(&url).await;
                }
            )*
        }
    };
}

conformance!(
    migrate_twice_is_a_no_op,
    orgs_create_get_list,
    root_keys,
    keys_create_and_lookup,
    list_keys_pages_newest_first,
    list_keys_by_external_id,
    update_key_fields,
    revoke_key_is_idempotent_and_can_only_lower,
    rotate_key,
    rotate_key_is_atomic,
    delete_key,
    touch_keys_keeps_the_max,
    concurrent_rotate_revoke_update,
    key_limits_patch,
    spend_credits,
    logs_insert_and_list,
    logs_filters,
    logs_cursor_pages,
    logs_prune,
);

// ---- fixtures -----------------------------------------------------------

const NOW: i64 = 1_700_000_000_000;

fn org(id: &str, created_at: i64) -> Org {
    Org {
        id: id.to_owned(),
        name: format!("Org {id}"),
        created_at,
    }
}

/// Bytes that are not valid UTF-8 and contain a NUL, to prove the digest
/// column is binary.
fn digest(id: &str) -> Vec<u8> {
    let mut d = vec![0x00, 0xff, 0xfe];
    d.extend_from_slice(id.as_bytes());
    d.resize(32, 0x7f);
    d
}

fn key(id: &str, org_id: &str, created_at: i64) -> ApiKey {
    ApiKey {
        id: id.to_owned(),
        org_id: org_id.to_owned(),
        name: format!("key {id}"),
        kind: "live".to_owned(),
        environment: "production".to_owned(),
        start: "lk_live_abcd".to_owned(),
        digest: digest(id),
        scopes: vec!["keys:read".to_owned(), "keys:write".to_owned()],
        external_id: None,
        metadata: json!({}),
        created_at,
        updated_at: created_at,
        expires_at: None,
        revoked_at: None,
        revoke_reason: None,
        replaced_by: None,
        rotated_from: None,
        last_used_at: None,
        ratelimit: None,
        ip_allowlist: Vec::new(),
        credits: None,
    }
}

fn root_key(id: &str, created_at: i64) -> RootKey {
    RootKey {
        id: id.to_owned(),
        name: format!("root {id}"),
        start: "lk_root_wxyz".to_owned(),
        digest: digest(id),
        scopes: vec!["*".to_owned()],
        created_at,
        revoked_at: None,
        last_used_at: None,
    }
}

async fn store_with_org(store: &dyn Store, org_id: &str) {
    store.create_org(&org(org_id, NOW)).await.unwrap();
}

fn ids<T, F: Fn(&T) -> &str>(items: &[T], f: F) -> Vec<String> {
    items.iter().map(|i| f(i).to_owned()).collect()
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{what}: expected Conflict, got {other:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::NotFound) => {}
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

/// Pages through all keys of `q` (`limit` per page), checking that every
/// page but the last is full.
async fn all_pages(store: &dyn Store, mut q: KeyQuery) -> Vec<ApiKey> {
    let mut out = Vec::new();
    for _ in 0..100 {
        let page = store.list_keys(&q).await.unwrap();
        assert!(page.len() <= q.limit as usize, "page longer than limit");
        let full = page.len() == q.limit as usize;
        out.extend(page);
        if !full {
            return out;
        }
        let last = out.last().unwrap();
        q.cursor = Some((last.created_at, last.id.clone()));
    }
    panic!("paging did not terminate");
}

// ---- tests --------------------------------------------------------------

async fn migrate_twice_is_a_no_op(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    store_with_org(&*store, "o1").await;
    store.create_key(&key("k1", "o1", NOW)).await.unwrap();

    store.migrate().await.unwrap();
    store.migrate().await.unwrap();

    store.ping().await.unwrap();
    assert_eq!(store.get_org("o1").await.unwrap(), org("o1", NOW));
    assert_eq!(store.get_key("k1").await.unwrap(), key("k1", "o1", NOW));
}

async fn orgs_create_get_list(store: Arc<dyn Store>) {
    // Ties on created_at are broken by id, descending.
    let orgs = [
        org("a", 10),
        org("b", 20),
        org("c", 20),
        org("d", 30),
        org("e", 5),
    ];
    for o in &orgs {
        store.create_org(o).await.unwrap();
    }
    assert_eq!(store.get_org("c").await.unwrap(), org("c", 20));
    assert_not_found(store.get_org("nope").await, "get unknown org");
    assert_conflict(store.create_org(&org("a", 99)).await, "duplicate org id");
    assert_eq!(store.get_org("a").await.unwrap().created_at, 10);

    let all = store
        .list_orgs(&Page {
            limit: 100,
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(ids(&all, |o| &o.id), ["d", "c", "b", "a", "e"]);

    let mut paged = Vec::new();
    let mut page = Page {
        limit: 2,
        cursor: None,
    };
    loop {
        let got = store.list_orgs(&page).await.unwrap();
        assert!(got.len() <= 2);
        let Some(last) = got.last() else { break };
        page.cursor = Some((last.created_at, last.id.clone()));
        let done = got.len() < 2;
        paged.extend(got);
        if done {
            break;
        }
    }
    assert_eq!(paged, all);

    let after_c = store
        .list_orgs(&Page {
            limit: 10,
            cursor: Some((20, "c".to_owned())),
        })
        .await
        .unwrap();
    assert_eq!(ids(&after_c, |o| &o.id), ["b", "a", "e"]);
}

async fn root_keys(store: Arc<dyn Store>) {
    assert_eq!(store.count_root_keys().await.unwrap(), 0);
    let r1 = root_key("r1", NOW);
    let r2 = root_key("r2", NOW + 1);
    store.create_root_key(&r1).await.unwrap();
    store.create_root_key(&r2).await.unwrap();
    assert_eq!(store.count_root_keys().await.unwrap(), 2);

    assert_eq!(
        store.root_key_by_digest(&digest("r1")).await.unwrap(),
        Some(r1.clone())
    );
    assert_eq!(store.root_key_by_digest(&digest("zz")).await.unwrap(), None);

    let mut dup = root_key("r3", NOW);
    dup.digest = digest("r1");
    assert_conflict(store.create_root_key(&dup).await, "duplicate root digest");
    assert_conflict(
        store.create_root_key(&root_key("r1", NOW)).await,
        "duplicate root id",
    );
    assert_eq!(store.count_root_keys().await.unwrap(), 2);

    let listed = store
        .list_root_keys(&Page {
            limit: 1,
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(listed, vec![r2.clone()]);
    let listed = store
        .list_root_keys(&Page {
            limit: 1,
            cursor: Some((r2.created_at, r2.id.clone())),
        })
        .await
        .unwrap();
    assert_eq!(listed, vec![r1.clone()]);

    let revoked = store.revoke_root_key("r1", NOW + 100).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(NOW + 100));
    // Idempotent: a later revocation keeps the first time.
    let again = store.revoke_root_key("r1", NOW + 200).await.unwrap();
    assert_eq!(again.revoked_at, Some(NOW + 100));
    assert_eq!(
        store
            .root_key_by_digest(&digest("r1"))
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(NOW + 100)
    );
    assert_not_found(
        store.revoke_root_key("nope", NOW).await,
        "revoke unknown root",
    );
    // Revoked keys still count.
    assert_eq!(store.count_root_keys().await.unwrap(), 2);

    store
        .touch_root_keys(&[
            ("r2".to_owned(), NOW + 50),
            ("r2".to_owned(), NOW + 40),
            ("nope".to_owned(), NOW),
        ])
        .await
        .unwrap();
    store
        .touch_root_keys(&[("r2".to_owned(), NOW + 10)])
        .await
        .unwrap();
    let r2_now = store
        .root_key_by_digest(&digest("r2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r2_now.last_used_at, Some(NOW + 50));
    assert_eq!(r2_now.revoked_at, None);
    store.touch_root_keys(&[]).await.unwrap();
}

async fn keys_create_and_lookup(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    let mut full = key("k1", "o1", NOW);
    full.scopes = vec!["a".to_owned(), "b:c".to_owned(), "d.e/f".to_owned()];
    full.external_id = Some("user-42".to_owned());
    full.metadata = json!({"plan": "pro", "n": 3, "nested": {"list": [1, "x", null]}, "ü": true});
    full.expires_at = Some(NOW + 86_400_000);
    full.revoked_at = Some(NOW + 1_000_000);
    full.revoke_reason = Some("scheduled".to_owned());
    full.replaced_by = Some("k9".to_owned());
    full.rotated_from = Some("k0".to_owned());
    full.last_used_at = Some(NOW - 5);
    full.ratelimit = Some(KeyRateLimit {
        limit: 100,
        window_ms: 60_000,
    });
    full.ip_allowlist = vec!["10.0.0.0/8".to_owned(), "2001:db8::/32".to_owned()];
    full.credits = Some(Credits {
        remaining: 7,
        refill: Some(Refill {
            amount: 50,
            interval_ms: 3_600_000,
        }),
        refilled_at: NOW - 10,
    });
    store.create_key(&full).await.unwrap();

    let mut bare = key("k2", "o1", NOW + 1);
    bare.scopes = Vec::new();
    store.create_key(&bare).await.unwrap();

    assert_eq!(store.get_key("k1").await.unwrap(), full);
    assert_eq!(store.get_key("k2").await.unwrap(), bare);
    assert_eq!(
        store.key_by_digest(&digest("k1")).await.unwrap(),
        Some(full.clone())
    );
    assert_eq!(
        store.key_by_digest(&digest("k2")).await.unwrap(),
        Some(bare)
    );
    assert_eq!(store.key_by_digest(&digest("nope")).await.unwrap(), None);
    assert_not_found(store.get_key("nope").await, "get unknown key");

    let mut dup = key("k3", "o1", NOW);
    dup.digest = digest("k1");
    assert_conflict(store.create_key(&dup).await, "duplicate digest");
    assert_not_found(store.get_key("k3").await, "key with duplicate digest");
    assert_conflict(
        store.create_key(&key("k1", "o1", NOW)).await,
        "duplicate key id",
    );
    assert_eq!(store.get_key("k1").await.unwrap(), full);

    // The org must exist.
    assert!(
        store
            .create_key(&key("k4", "no-such-org", NOW))
            .await
            .is_err()
    );
    assert_not_found(store.get_key("k4").await, "key of an unknown org");
}

async fn list_keys_pages_newest_first(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    store_with_org(&*store, "o2").await;
    // Seven keys with ties on created_at, inserted out of order.
    let times = [
        ("k3", 20),
        ("k1", 10),
        ("k7", 40),
        ("k2", 20),
        ("k5", 30),
        ("k4", 30),
        ("k6", 30),
    ];
    for (id, at) in times {
        store.create_key(&key(id, "o1", NOW + at)).await.unwrap();
    }
    // Another org's keys never show up.
    for i in 0..3 {
        store
            .create_key(&key(&format!("x{i}"), "o2", NOW + 25))
            .await
            .unwrap();
    }
    let expected = ["k7", "k6", "k5", "k4", "k3", "k2", "k1"];

    let q = KeyQuery {
        org_id: "o1".to_owned(),
        external_id: None,
        limit: 3,
        cursor: None,
    };
    let first = store.list_keys(&q).await.unwrap();
    assert_eq!(ids(&first, |k| &k.id), ["k7", "k6", "k5"]);

    let paged = all_pages(&*store, q.clone()).await;
    assert_eq!(ids(&paged, |k| &k.id), expected);
    let unique: HashSet<_> = paged.iter().map(|k| k.id.clone()).collect();
    assert_eq!(unique.len(), 7, "no duplicates");
    assert!(paged.iter().all(|k| k.org_id == "o1"));
    assert_eq!(paged[0], key("k7", "o1", NOW + 40));

    // Each page size gives the same sequence.
    for limit in [1, 2, 4, 7, 8, 100] {
        let paged = all_pages(&*store, KeyQuery { limit, ..q.clone() }).await;
        assert_eq!(ids(&paged, |k| &k.id), expected, "limit {limit}");
    }

    // The cursor means "strictly after", also inside a tie.
    let after = store
        .list_keys(&KeyQuery {
            cursor: Some((NOW + 30, "k5".to_owned())),
            limit: 10,
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(ids(&after, |k| &k.id), ["k4", "k3", "k2", "k1"]);
    let past_end = store
        .list_keys(&KeyQuery {
            cursor: Some((NOW + 10, "k1".to_owned())),
            limit: 10,
            ..q.clone()
        })
        .await
        .unwrap();
    assert!(past_end.is_empty());
    let unknown_org = store
        .list_keys(&KeyQuery {
            org_id: "nope".to_owned(),
            ..q
        })
        .await
        .unwrap();
    assert!(unknown_org.is_empty());
}

async fn list_keys_by_external_id(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    store_with_org(&*store, "o2").await;
    let specs = [
        ("a1", "o1", Some("alice"), 1),
        ("b1", "o1", Some("bob"), 2),
        ("a2", "o1", Some("alice"), 3),
        ("n1", "o1", None, 4),
        ("a3", "o1", Some("alice"), 3),
        ("a4", "o1", Some("alice"), 5),
        ("z1", "o2", Some("alice"), 6),
    ];
    for (id, org_id, ext, at) in specs {
        let mut k = key(id, org_id, NOW + at);
        k.external_id = ext.map(str::to_owned);
        store.create_key(&k).await.unwrap();
    }
    let q = KeyQuery {
        org_id: "o1".to_owned(),
        external_id: Some("alice".to_owned()),
        limit: 1,
        cursor: None,
    };
    let alice = all_pages(&*store, q.clone()).await;
    assert_eq!(ids(&alice, |k| &k.id), ["a4", "a3", "a2", "a1"]);
    let alice = all_pages(
        &*store,
        KeyQuery {
            limit: 3,
            ..q.clone()
        },
    )
    .await;
    assert_eq!(ids(&alice, |k| &k.id), ["a4", "a3", "a2", "a1"]);
    assert!(
        alice
            .iter()
            .all(|k| k.external_id.as_deref() == Some("alice"))
    );

    let bob = store
        .list_keys(&KeyQuery {
            external_id: Some("bob".to_owned()),
            limit: 10,
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(ids(&bob, |k| &k.id), ["b1"]);
    let nobody = store
        .list_keys(&KeyQuery {
            external_id: Some("carol".to_owned()),
            limit: 10,
            ..q.clone()
        })
        .await
        .unwrap();
    assert!(nobody.is_empty());

    // Without the filter: everything in o1.
    let all = all_pages(
        &*store,
        KeyQuery {
            external_id: None,
            limit: 2,
            ..q
        },
    )
    .await;
    assert_eq!(ids(&all, |k| &k.id), ["a4", "n1", "a3", "a2", "b1", "a1"]);
}

async fn update_key_fields(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    let mut original = key("k1", "o1", NOW);
    original.external_id = Some("ext".to_owned());
    original.expires_at = Some(NOW + 1000);
    original.metadata = json!({"a": 1});
    store.create_key(&original).await.unwrap();
    let mut expected = original.clone();

    // An empty patch only bumps updated_at.
    let got = store
        .update_key(
            "k1",
            &KeyPatch {
                updated_at: NOW + 1,
                ..KeyPatch::default()
            },
        )
        .await
        .unwrap();
    expected.updated_at = NOW + 1;
    assert_eq!(got, expected);

    let got = store
        .update_key(
            "k1",
            &KeyPatch {
                name: Some("renamed".to_owned()),
                updated_at: NOW + 2,
                ..KeyPatch::default()
            },
        )
        .await
        .unwrap();
    expected.name = "renamed".to_owned();
    expected.updated_at = NOW + 2;
    assert_eq!(got, expected);

    let got = store
        .update_key(
            "k1",
            &KeyPatch {
                scopes: Some(vec!["only:this".to_owned()]),
                updated_at: NOW + 3,
                ..KeyPatch::default()
            },
        )
        .await
        .unwrap();
    expected.scopes = vec!["only:this".to_owned()];
    expected.updated_at = NOW + 3;
    assert_eq!(got, expected);

    let got = store
        .update_key(
            "k1",
            &KeyPatch {
                scopes: Some(Vec::new()),
                metadata: Some(json!({"b": [true, {"c": "d"}]})),
                updated_at: NOW + 4,
                ..KeyPatch::default()
            },
        )
        .await
        .unwrap();
    expected.scopes = Vec::new();
    expected.metadata = json!({"b": [true, {"c": "d"}]});
    expected.updated_at = NOW + 4;
    assert_eq!(got, expected);

    let got = store
        .update_key(
            "k1",
            &KeyPatch {
                expires_at: Some(Some(NOW + 5000)),
                external_id: Some(Some("ext2".to_owned())),
                updated_at: NOW + 5,
                ..KeyPatch::default()
            },
        )
        .await
        .unwrap();
    expected.expires_at = Some(NOW + 5000);
    expected.external_id = Some("ext2".to_owned());
    expected.updated_at = NOW + 5;
    assert_eq!(got, expected);

    // Clearing.
    let got = store
        .update_key(
            "k1",
            &KeyPatch {
                expires_at: Some(None),
                updated_at: NOW + 6,
                ..KeyPatch::default()
            },
        )
        .await
        .unwrap();
    expected.expires_at = None;
    expected.updated_at = NOW + 6;
    assert_eq!(got, expected);
    let got = store
        .update_key(
            "k1",
            &KeyPatch {
                external_id: Some(None),
                updated_at: NOW + 7,
                ..KeyPatch::default()
            },
        )
        .await
        .unwrap();
    expected.external_id = None;
    expected.updated_at = NOW + 7;
    assert_eq!(got, expected);

    // Stored, not just answered.
    assert_eq!(store.get_key("k1").await.unwrap(), expected);
    // Fields outside the patch never change.
    assert_eq!(expected.digest, original.digest);
    assert_eq!(expected.created_at, original.created_at);

    assert_not_found(
        store
            .update_key(
                "nope",
                &KeyPatch {
                    name: Some("x".to_owned()),
                    updated_at: NOW,
                    ..KeyPatch::default()
                },
            )
            .await,
        "update unknown key",
    );
}

async fn revoke_key_is_idempotent_and_can_only_lower(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    store.create_key(&key("k1", "o1", NOW)).await.unwrap();
    store.create_key(&key("k2", "o1", NOW)).await.unwrap();

    let revoked = store
        .revoke_key("k1", NOW + 100, Some("compromised"))
        .await
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(NOW + 100));
    assert_eq!(revoked.revoke_reason.as_deref(), Some("compromised"));
    // Nothing else changed.
    let mut expected = key("k1", "o1", NOW);
    expected.revoked_at = Some(NOW + 100);
    expected.revoke_reason = Some("compromised".to_owned());
    assert_eq!(revoked, expected);

    // Later revocation: the first time and reason stay.
    let again = store
        .revoke_key("k1", NOW + 200, Some("other"))
        .await
        .unwrap();
    assert_eq!(again, expected);
    let same_time = store.revoke_key("k1", NOW + 100, None).await.unwrap();
    assert_eq!(same_time, expected);
    assert_eq!(store.get_key("k1").await.unwrap(), expected);

    // An earlier time than a (future) revoked_at lowers it.
    let lowered = store
        .revoke_key("k1", NOW + 50, Some("sooner"))
        .await
        .unwrap();
    assert_eq!(lowered.revoked_at, Some(NOW + 50));
    assert_eq!(lowered.revoke_reason.as_deref(), Some("sooner"));

    // No reason.
    let plain = store.revoke_key("k2", NOW + 10, None).await.unwrap();
    assert_eq!(plain.revoked_at, Some(NOW + 10));
    assert_eq!(plain.revoke_reason, None);

    assert_not_found(store.revoke_key("nope", NOW, None).await, "revoke unknown");
}

async fn rotate_key(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    let old = key("old", "o1", NOW);
    store.create_key(&old).await.unwrap();

    let mut new = key("new", "o1", NOW + 10);
    new.rotated_from = Some("old".to_owned());
    let until = NOW + 10 + 3_600_000;
    let answered = store
        .rotate_key("old", &new, until, NOW + 10)
        .await
        .unwrap();
    let mut expected_old = old.clone();
    expected_old.replaced_by = Some("new".to_owned());
    expected_old.revoked_at = Some(until);
    expected_old.revoke_reason = Some("rotated".to_owned());
    assert_eq!(answered, expected_old);
    assert_eq!(store.get_key("old").await.unwrap(), expected_old);
    assert_eq!(store.get_key("new").await.unwrap(), new);
    assert_eq!(
        store.key_by_digest(&digest("new")).await.unwrap(),
        Some(new.clone())
    );

    // Rotating again: Conflict, and the would-be key is not inserted.
    let mut newer = key("newer", "o1", NOW + 20);
    newer.rotated_from = Some("old".to_owned());
    assert_conflict(
        store.rotate_key("old", &newer, until, NOW + 20).await,
        "rotate a rotated key",
    );
    assert_not_found(store.get_key("newer").await, "key of a failed rotation");
    assert_eq!(store.get_key("old").await.unwrap(), expected_old);

    // The successor rotates normally.
    newer.rotated_from = Some("new".to_owned());
    let new_answered = store
        .rotate_key("new", &newer, NOW + 30, NOW + 20)
        .await
        .unwrap();
    assert_eq!(new_answered.replaced_by.as_deref(), Some("newer"));
    assert_eq!(new_answered.revoked_at, Some(NOW + 30));

    // A revoked key (as of now) cannot be rotated.
    let mut revoked = key("revoked", "o1", NOW);
    revoked.revoked_at = Some(NOW + 5);
    revoked.revoke_reason = Some("compromised".to_owned());
    store.create_key(&revoked).await.unwrap();
    let mut r2 = key("r2", "o1", NOW + 10);
    r2.rotated_from = Some("revoked".to_owned());
    assert_conflict(
        store.rotate_key("revoked", &r2, NOW + 100, NOW + 5).await,
        "rotate a key revoked exactly now",
    );
    assert_conflict(
        store.rotate_key("revoked", &r2, NOW + 100, NOW + 10).await,
        "rotate a revoked key",
    );
    assert_not_found(store.get_key("r2").await, "key of a failed rotation");
    assert_eq!(store.get_key("revoked").await.unwrap(), revoked);

    // A key scheduled to stop later than old_until: the rotation lowers it.
    let mut scheduled = key("sched", "o1", NOW);
    scheduled.revoked_at = Some(NOW + 10_000);
    scheduled.revoke_reason = Some("scheduled".to_owned());
    store.create_key(&scheduled).await.unwrap();
    let s2 = key("s2", "o1", NOW + 1);
    let got = store
        .rotate_key("sched", &s2, NOW + 500, NOW + 1)
        .await
        .unwrap();
    assert_eq!(got.revoked_at, Some(NOW + 500));
    assert_eq!(got.revoke_reason.as_deref(), Some("rotated"));
    assert_eq!(got.replaced_by.as_deref(), Some("s2"));

    // ... sooner than old_until: it keeps its time and reason.
    let mut soon = key("soon", "o1", NOW);
    soon.revoked_at = Some(NOW + 200);
    soon.revoke_reason = Some("scheduled".to_owned());
    store.create_key(&soon).await.unwrap();
    let soon2 = key("soon2", "o1", NOW + 1);
    let got = store
        .rotate_key("soon", &soon2, NOW + 500, NOW + 1)
        .await
        .unwrap();
    assert_eq!(got.revoked_at, Some(NOW + 200));
    assert_eq!(got.revoke_reason.as_deref(), Some("scheduled"));
    assert_eq!(got.replaced_by.as_deref(), Some("soon2"));
    assert_eq!(store.get_key("soon2").await.unwrap(), soon2);

    // Unknown key: NotFound, nothing inserted.
    let orphan = key("orphan", "o1", NOW);
    assert_not_found(
        store.rotate_key("nope", &orphan, NOW + 1, NOW).await,
        "rotate unknown key",
    );
    assert_not_found(store.get_key("orphan").await, "key of a failed rotation");
}

async fn rotate_key_is_atomic(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    let old = key("old", "o1", NOW);
    let other = key("other", "o1", NOW);
    store.create_key(&old).await.unwrap();
    store.create_key(&other).await.unwrap();

    // The new key collides with an existing digest: the insert fails, and
    // the old key must be left exactly as it was.
    let mut clash = key("clash", "o1", NOW + 1);
    clash.digest = other.digest.clone();
    assert_conflict(
        store.rotate_key("old", &clash, NOW + 100, NOW + 1).await,
        "rotation to a duplicate digest",
    );
    assert_eq!(store.get_key("old").await.unwrap(), old);
    assert_not_found(store.get_key("clash").await, "clashing key");

    // Same with an id collision.
    let clash_id = key("other", "o1", NOW + 1);
    let mut clash_id = ApiKey {
        digest: digest("fresh"),
        ..clash_id
    };
    clash_id.rotated_from = Some("old".to_owned());
    assert_conflict(
        store.rotate_key("old", &clash_id, NOW + 100, NOW + 1).await,
        "rotation to a duplicate id",
    );
    assert_eq!(store.get_key("old").await.unwrap(), old);
    assert_eq!(store.get_key("other").await.unwrap(), other);

    // And then the rotation can still happen.
    let fine = key("fine", "o1", NOW + 2);
    let got = store
        .rotate_key("old", &fine, NOW + 100, NOW + 2)
        .await
        .unwrap();
    assert_eq!(got.replaced_by.as_deref(), Some("fine"));
}

async fn delete_key(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    store.create_key(&key("k1", "o1", NOW)).await.unwrap();
    store.create_key(&key("k2", "o1", NOW + 1)).await.unwrap();

    store.delete_key("k1").await.unwrap();
    assert_not_found(store.get_key("k1").await, "get deleted key");
    assert_eq!(store.key_by_digest(&digest("k1")).await.unwrap(), None);
    let left = store
        .list_keys(&KeyQuery {
            org_id: "o1".to_owned(),
            limit: 10,
            ..KeyQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&left, |k| &k.id), ["k2"]);
    assert_not_found(store.delete_key("k1").await, "delete a deleted key");
    assert_not_found(store.delete_key("nope").await, "delete unknown key");

    // Keys that reference each other through a rotation can be deleted
    // either way round.
    let mut b = key("b", "o1", NOW + 2);
    b.rotated_from = Some("k2".to_owned());
    store
        .rotate_key("k2", &b, NOW + 100, NOW + 2)
        .await
        .unwrap();
    store.delete_key("k2").await.unwrap();
    assert_not_found(store.get_key("k2").await, "get deleted predecessor");
    // The successor is intact (its history still names the deleted key).
    assert_eq!(store.get_key("b").await.unwrap(), b);

    let mut c = key("c", "o1", NOW + 3);
    c.rotated_from = Some("b".to_owned());
    store.rotate_key("b", &c, NOW + 100, NOW + 3).await.unwrap();
    store.delete_key("c").await.unwrap();
    let b_now = store.get_key("b").await.unwrap();
    assert_eq!(b_now.replaced_by.as_deref(), Some("c"));
    store.delete_key("b").await.unwrap();
    assert_not_found(store.get_key("b").await, "get deleted key");

    // The digest is free again.
    store.create_key(&key("k1", "o1", NOW + 9)).await.unwrap();
    assert_eq!(
        store
            .key_by_digest(&digest("k1"))
            .await
            .unwrap()
            .unwrap()
            .created_at,
        NOW + 9
    );
}

async fn touch_keys_keeps_the_max(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    for id in ["k1", "k2", "k3"] {
        store.create_key(&key(id, "o1", NOW)).await.unwrap();
    }
    store
        .touch_keys(&[
            ("k1".to_owned(), NOW + 100),
            ("k2".to_owned(), NOW + 70),
            ("k1".to_owned(), NOW + 50),
            ("unknown".to_owned(), NOW + 1),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.get_key("k1").await.unwrap().last_used_at,
        Some(NOW + 100)
    );
    assert_eq!(
        store.get_key("k2").await.unwrap().last_used_at,
        Some(NOW + 70)
    );
    assert_eq!(store.get_key("k3").await.unwrap().last_used_at, None);

    // Older uses never move it back; newer ones move it forward.
    store
        .touch_keys(&[("k1".to_owned(), NOW + 80), ("k2".to_owned(), NOW + 90)])
        .await
        .unwrap();
    assert_eq!(
        store.get_key("k1").await.unwrap().last_used_at,
        Some(NOW + 100)
    );
    assert_eq!(
        store.get_key("k2").await.unwrap().last_used_at,
        Some(NOW + 90)
    );

    // Touching changes nothing else.
    let k1 = store.get_key("k1").await.unwrap();
    let mut expected = key("k1", "o1", NOW);
    expected.last_used_at = Some(NOW + 100);
    assert_eq!(k1, expected);

    store.touch_keys(&[]).await.unwrap();

    // Concurrent batches, overlapping, in opposite orders.
    let mut tasks = Vec::new();
    for i in 0..10_i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut batch = vec![
                ("k1".to_owned(), NOW + 1000 + i),
                ("k2".to_owned(), NOW + 2000 - i),
                ("k3".to_owned(), NOW + 3000 + i),
            ];
            if i % 2 == 1 {
                batch.reverse();
            }
            store.touch_keys(&batch).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        store.get_key("k1").await.unwrap().last_used_at,
        Some(NOW + 1009)
    );
    assert_eq!(
        store.get_key("k2").await.unwrap().last_used_at,
        Some(NOW + 2000)
    );
    assert_eq!(
        store.get_key("k3").await.unwrap().last_used_at,
        Some(NOW + 3009)
    );
}

async fn concurrent_rotate_revoke_update(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    store.create_key(&key("target", "o1", NOW)).await.unwrap();

    #[derive(Debug)]
    enum Op {
        Rotate(String),
        Revoke,
        Update,
    }

    let mut tasks = Vec::new();
    for i in 0..20_i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            match i % 3 {
                0 => {
                    let id = format!("new{i}");
                    let mut new = key(&id, "o1", NOW + 1 + i);
                    new.rotated_from = Some("target".to_owned());
                    // Every rotation's grace period ends before any revocation.
                    let r = store
                        .rotate_key("target", &new, NOW + 5_000 + i, NOW + 1)
                        .await;
                    (Op::Rotate(id), r.map(|_| ()))
                }
                1 => {
                    let r = store
                        .revoke_key("target", NOW + 10_000 + i, Some("manual"))
                        .await;
                    (Op::Revoke, r.map(|_| ()))
                }
                _ => {
                    let patch = KeyPatch {
                        name: Some(format!("name{i}")),
                        updated_at: NOW + 100 + i,
                        ..KeyPatch::default()
                    };
                    let r = store.update_key("target", &patch).await;
                    (Op::Update, r.map(|_| ()))
                }
            }
        }));
    }

    let mut rotated = Vec::new();
    for t in tasks {
        let (op, result) = t.await.unwrap();
        match (&op, result) {
            (Op::Rotate(id), Ok(())) => rotated.push(id.clone()),
            (Op::Rotate(_), Err(StoreError::Conflict(_))) => {}
            (_, Ok(())) => {}
            (op, Err(e)) => panic!("{op:?} failed: {e:?}"),
        }
    }

    // The key is never revoked as of `now` and never stops before any
    // rotation's grace period, so exactly the first rotation wins.
    assert_eq!(rotated.len(), 1, "rotations that succeeded: {rotated:?}");
    let winner = &rotated[0];
    let target = store.get_key("target").await.unwrap();
    assert_eq!(target.replaced_by.as_ref(), Some(winner));
    let winner_i: i64 = winner.trim_start_matches("new").parse().unwrap();
    assert_eq!(target.revoked_at, Some(NOW + 5_000 + winner_i));
    assert_eq!(target.revoke_reason.as_deref(), Some("rotated"));
    assert!(target.name.starts_with("name"), "name {}", target.name);
    assert!(target.updated_at > NOW);

    let all = all_pages(
        &*store,
        KeyQuery {
            org_id: "o1".to_owned(),
            limit: 5,
            ..KeyQuery::default()
        },
    )
    .await;
    assert_eq!(all.len(), 2, "the target and its one successor");
    let successors: Vec<_> = all
        .iter()
        .filter(|k| k.rotated_from.as_deref() == Some("target"))
        .collect();
    assert_eq!(successors.len(), 1);
    assert_eq!(&successors[0].id, winner);
    assert_eq!(successors[0].revoked_at, None);
}

async fn key_limits_patch(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    let mut expected = key("k1", "o1", NOW);
    store.create_key(&expected).await.unwrap();
    let rl = KeyRateLimit {
        limit: 5,
        window_ms: 1000,
    };
    let credits = Credits {
        remaining: 3,
        refill: None,
        refilled_at: NOW,
    };
    let got = store
        .update_key(
            "k1",
            &KeyPatch {
                ratelimit: Some(Some(rl)),
                ip_allowlist: Some(vec!["192.0.2.0/24".to_owned()]),
                credits: Some(Some(credits)),
                updated_at: NOW + 1,
                ..KeyPatch::default()
            },
        )
        .await
        .unwrap();
    expected.ratelimit = Some(rl);
    expected.ip_allowlist = vec!["192.0.2.0/24".to_owned()];
    expected.credits = Some(credits);
    expected.updated_at = NOW + 1;
    assert_eq!(got, expected);
    // Untouched fields stay; None clears.
    let got = store
        .update_key(
            "k1",
            &KeyPatch {
                ratelimit: Some(None),
                ip_allowlist: Some(Vec::new()),
                credits: Some(None),
                updated_at: NOW + 2,
                ..KeyPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (got.ratelimit, got.ip_allowlist.len(), got.credits),
        (None, 0, None)
    );
    assert_eq!(
        store.spend_credit("k1", NOW).await.unwrap(),
        Spend::Unlimited
    );
    assert_not_found(
        store.spend_credit("nope", NOW).await,
        "spend on unknown key",
    );
}

async fn spend_credits(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    let mut k = key("k1", "o1", NOW);
    k.credits = Some(Credits {
        remaining: 2,
        refill: Some(Refill {
            amount: 3,
            interval_ms: 1000,
        }),
        refilled_at: NOW,
    });
    store.create_key(&k).await.unwrap();
    assert_eq!(
        store.spend_credit("k1", NOW).await.unwrap(),
        Spend::Spent(1)
    );
    assert_eq!(
        store.spend_credit("k1", NOW + 1).await.unwrap(),
        Spend::Spent(0)
    );
    assert_eq!(
        store.spend_credit("k1", NOW + 999).await.unwrap(),
        Spend::Exhausted
    );
    // A refill is due: back to 3, minus this use; refilled_at moves by
    // whole intervals (here 2.5 intervals late: to NOW + 2000).
    assert_eq!(
        store.spend_credit("k1", NOW + 2500).await.unwrap(),
        Spend::Spent(2)
    );
    let c = store.get_key("k1").await.unwrap().credits.unwrap();
    assert_eq!((c.remaining, c.refilled_at), (2, NOW + 2000));
    assert_eq!(
        store.spend_credit("k1", NOW + 2999).await.unwrap(),
        Spend::Spent(1)
    );
    assert_eq!(
        store.spend_credit("k1", NOW + 3000).await.unwrap(),
        Spend::Spent(2)
    );

    // Concurrent spends never take more than there is.
    let mut k2 = key("k2", "o1", NOW);
    k2.credits = Some(Credits {
        remaining: 25,
        refill: None,
        refilled_at: NOW,
    });
    store.create_key(&k2).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.spend_credit("k2", NOW).await.unwrap()
        }));
    }
    let mut spent = Vec::new();
    for t in tasks {
        if let Spend::Spent(n) = t.await.unwrap() {
            spent.push(n);
        }
    }
    spent.sort_unstable();
    assert_eq!(spent, (0..25).collect::<Vec<i64>>());
    assert_eq!(
        store.spend_credit("k2", NOW).await.unwrap(),
        Spend::Exhausted
    );
}

// ---- usage log ------------------------------------------------------------

/// A log id of the right shape (`log_` + 22 base62), distinct per `n`.
fn log_id(n: usize) -> String {
    format!("log_{n:0>22}")
}

fn decision(n: usize, org: Option<&str>, time: i64, key_id: Option<&str>, code: &str) -> LogEntry {
    LogEntry {
        id: log_id(n),
        time,
        org_id: org.map(str::to_owned),
        request_id: Some(format!("req_{n:0>22}")),
        event: LogEvent::Decision(DecisionEvent {
            credential_type: Some("api_key".to_owned()),
            key_id: key_id.map(str::to_owned),
            client_id: None,
            code: code.to_owned(),
            status: if code == "VALID" { 200 } else { 401 },
            method: Some("GET".to_owned()),
            path: Some("/api/v1/documents/42".to_owned()),
            ip: Some("2001:db8::1".to_owned()),
            user_agent: Some("curl/8.5.0 \u{e9}".to_owned()),
            latency_us: 1234,
        }),
    }
}

fn action(n: usize, org: Option<&str>, time: i64, action: &str, target: &str) -> LogEntry {
    LogEntry {
        id: log_id(n),
        time,
        org_id: org.map(str::to_owned),
        request_id: None,
        event: LogEvent::Action(ActionEvent {
            actor: "rtk_aaaaaaaaaaaaaaaaaaaaaa".to_owned(),
            action: action.to_owned(),
            target: Some(target.to_owned()),
        }),
    }
}

fn log_query(org: &str, limit: u32) -> LogQuery {
    LogQuery {
        org_id: org.to_owned(),
        limit,
        ..LogQuery::default()
    }
}

const KEY_A: &str = "key_AAAAAAAAAAAAAAAAAAAAAA";
const KEY_B: &str = "key_BBBBBBBBBBBBBBBBBBBBBB";
const CLIENT: &str = "cli_CCCCCCCCCCCCCCCCCCCCCC";

async fn logs_insert_and_list(store: Arc<dyn Store>) {
    store.insert_logs(&[]).await.unwrap();
    assert!(
        store
            .list_logs(&log_query("o1", 10))
            .await
            .unwrap()
            .is_empty()
    );

    let mut with_client = decision(5, Some("o1"), NOW + 3, None, "VALID");
    if let LogEvent::Decision(d) = &mut with_client.event {
        d.credential_type = Some("client_jwt".to_owned());
        d.client_id = Some(CLIENT.to_owned());
        d.method = None;
        d.path = None;
        d.ip = None;
        d.user_agent = None;
        d.latency_us = 0;
    }
    let entries = vec![
        decision(1, Some("o1"), NOW, Some(KEY_A), "VALID"),
        action(2, Some("o1"), NOW + 1, "key.created", KEY_A),
        // A decision on a key that does not exist: no organization.
        decision(3, None, NOW + 2, None, "INVALID_KEY"),
        // An instance-level action: no organization.
        action(
            4,
            None,
            NOW + 2,
            "root_key.created",
            "rtk_bbbbbbbbbbbbbbbbbbbbbb",
        ),
        with_client,
        decision(6, Some("o2"), NOW + 4, Some(KEY_B), "KEY_REVOKED"),
        // Same time as #1: the id breaks the tie, descending.
        decision(7, Some("o1"), NOW, Some(KEY_A), "INSUFFICIENT_SCOPE"),
    ];
    store.insert_logs(&entries).await.unwrap();

    let o1 = store.list_logs(&log_query("o1", 50)).await.unwrap();
    assert_eq!(
        ids(&o1, |e| &e.id),
        [log_id(5), log_id(2), log_id(7), log_id(1)],
        "newest first, ties by id descending, other orgs and org-less rows left out"
    );
    // Every field comes back as written.
    for got in &o1 {
        let want = entries.iter().find(|e| e.id == got.id).unwrap();
        assert_eq!(got, want);
    }
    let o2 = store.list_logs(&log_query("o2", 50)).await.unwrap();
    assert_eq!(o2, vec![entries[5].clone()]);
    assert!(
        store
            .list_logs(&log_query("nope", 50))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.list_logs(&log_query("o1", 2)).await.unwrap().len(), 2);
}

async fn logs_filters(store: Arc<dyn Store>) {
    let entries = vec![
        decision(1, Some("o1"), NOW, Some(KEY_A), "VALID"),
        decision(2, Some("o1"), NOW + 10, Some(KEY_A), "INSUFFICIENT_SCOPE"),
        decision(3, Some("o1"), NOW + 20, Some(KEY_B), "VALID"),
        decision(4, Some("o1"), NOW + 30, None, "INVALID_FORMAT"),
        action(5, Some("o1"), NOW + 40, "key.revoked", KEY_A),
        action(6, Some("o1"), NOW + 50, "org.created", "o1"),
        // Another org's entry on the same key id is never shown.
        decision(7, Some("o2"), NOW + 60, Some(KEY_A), "VALID"),
        action(8, Some("o1"), NOW + 70, "client.created", CLIENT),
    ];
    store.insert_logs(&entries).await.unwrap();
    let list = |q: LogQuery| {
        let store = store.clone();
        async move { ids(&store.list_logs(&q).await.unwrap(), |e| &e.id) }
    };

    // A key's decisions and the actions on it.
    let by_key = list(LogQuery {
        key_id: Some(KEY_A.to_owned()),
        ..log_query("o1", 50)
    })
    .await;
    assert_eq!(by_key, [log_id(5), log_id(2), log_id(1)]);

    let by_client = list(LogQuery {
        client_id: Some(CLIENT.to_owned()),
        ..log_query("o1", 50)
    })
    .await;
    assert_eq!(by_client, [log_id(8)]);

    let by_code = list(LogQuery {
        code: Some("VALID".to_owned()),
        ..log_query("o1", 50)
    })
    .await;
    assert_eq!(by_code, [log_id(3), log_id(1)]);

    let key_and_code = list(LogQuery {
        key_id: Some(KEY_A.to_owned()),
        code: Some("VALID".to_owned()),
        ..log_query("o1", 50)
    })
    .await;
    assert_eq!(key_and_code, [log_id(1)]);

    // since is inclusive, until exclusive.
    let window = list(LogQuery {
        since: Some(NOW + 10),
        until: Some(NOW + 40),
        ..log_query("o1", 50)
    })
    .await;
    assert_eq!(window, [log_id(4), log_id(3), log_id(2)]);
    let since = list(LogQuery {
        since: Some(NOW + 50),
        ..log_query("o1", 50)
    })
    .await;
    assert_eq!(since, [log_id(8), log_id(6)]);
    let until = list(LogQuery {
        until: Some(NOW + 10),
        ..log_query("o1", 50)
    })
    .await;
    assert_eq!(until, [log_id(1)]);

    // Every filter at once, with a cursor.
    let all = list(LogQuery {
        key_id: Some(KEY_A.to_owned()),
        code: Some("INSUFFICIENT_SCOPE".to_owned()),
        since: Some(NOW),
        until: Some(NOW + 1000),
        cursor: Some((NOW + 40, log_id(5))),
        ..log_query("o1", 50)
    })
    .await;
    assert_eq!(all, [log_id(2)]);
}

async fn logs_cursor_pages(store: Arc<dyn Store>) {
    // 23 entries, three to a millisecond, both kinds, in a scrambled order.
    let mut entries: Vec<LogEntry> = (0..23)
        .map(|n| {
            let time = NOW + (n / 3) as i64;
            if n % 4 == 0 {
                action(n, Some("o1"), time, "key.updated", KEY_A)
            } else {
                decision(n, Some("o1"), time, Some(KEY_A), "VALID")
            }
        })
        .collect();
    entries.reverse();
    entries.swap(3, 17);
    store.insert_logs(&entries).await.unwrap();

    let mut q = log_query("o1", 5);
    let mut seen = Vec::new();
    for _ in 0..100 {
        let page = store.list_logs(&q).await.unwrap();
        assert!(page.len() <= 5);
        let full = page.len() == 5;
        seen.extend(page);
        if !full {
            break;
        }
        let last = seen.last().unwrap();
        q.cursor = Some((last.time, last.id.clone()));
    }
    let want: Vec<String> = (0..23).rev().map(log_id).collect();
    assert_eq!(
        ids(&seen, |e| &e.id),
        want,
        "every entry once, newest first"
    );
}

async fn logs_prune(store: Arc<dyn Store>) {
    assert_eq!(store.prune_logs(NOW).await.unwrap(), 0);
    // More old rows than one insert and one delete statement take.
    let old: Vec<LogEntry> = (0..10_050)
        .map(|n| {
            decision(
                n,
                Some("o1"),
                NOW - 100_000 + (n % 1000) as i64,
                None,
                "VALID",
            )
        })
        .collect();
    store.insert_logs(&old).await.unwrap();
    let keep = vec![
        decision(20_000, Some("o1"), NOW, Some(KEY_A), "VALID"),
        action(20_001, None, NOW + 5, "root_key.created", "rtk_x"),
        decision(20_002, Some("o2"), NOW + 10, None, "INVALID_KEY"),
    ];
    store.insert_logs(&keep).await.unwrap();
    let newest = store.list_logs(&log_query("o1", 2)).await.unwrap();
    assert_eq!(newest[0].id, log_id(20_000));
    assert_eq!(newest[1].time, NOW - 100_000 + 999);

    // Everything strictly before `NOW` goes, in every org and none.
    assert_eq!(store.prune_logs(NOW).await.unwrap(), 10_050);
    assert_eq!(
        store.list_logs(&log_query("o1", 50)).await.unwrap(),
        vec![keep[0].clone()]
    );
    assert_eq!(
        store.list_logs(&log_query("o2", 50)).await.unwrap(),
        vec![keep[2].clone()]
    );
    assert_eq!(store.prune_logs(NOW).await.unwrap(), 0);
    assert_eq!(store.prune_logs(NOW + 6).await.unwrap(), 2);
    assert_eq!(
        store.list_logs(&log_query("o2", 50)).await.unwrap(),
        vec![keep[2].clone()]
    );
}
