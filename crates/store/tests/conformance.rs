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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchkey_store::console::{HourCount, KeySearch, KeySearchQuery, Session};
use latchkey_store::oauth::{
    AccessToken, AuthCode, Client, ClientPatch, Consent, Grant, Redeem, RefreshToken, SigningKey,
    SpendRefresh, User,
};
use latchkey_store::testing::{drop_postgres_test_database, postgres_url_for_tests};
use latchkey_store::{
    ActionEvent, ApiKey, Change, ChangeSink, Credits, DecisionEvent, KeyPatch, KeyQuery,
    KeyRateLimit, LogEntry, LogEvent, LogQuery, Org, Page, Refill, RootKey, Spend, Store,
    StoreError,
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
    keys_by_digest_concurrently,
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
    logs_keep_awkward_text,
    logs_filters,
    logs_cursor_pages,
    logs_prune,
    oauth_clients_round_trip,
    oauth_clients_list_pages,
    oauth_update_client_fields,
    oauth_set_client_secret,
    oauth_delete_client_cascades,
    oauth_users,
    oauth_users_list_pages,
    oauth_delete_user_cascades,
    oauth_signing_keys_rotate_and_prune,
    oauth_add_first_signing_key_concurrently,
    oauth_rotate_signing_key_concurrently,
    oauth_grants_revoke,
    oauth_codes_redeem,
    oauth_codes_redeem_concurrently,
    oauth_refresh_tokens,
    oauth_refresh_tokens_spend_concurrently,
    oauth_access_tokens,
    oauth_revoked_jtis,
    oauth_use_once,
    oauth_use_once_concurrently,
    oauth_consents,
    oauth_prune,
    oauth_change_feed,
    console_sessions,
    console_users_by_email_any_org,
    console_search_keys,
    console_log_hours,
    console_logs_window,
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
        created_by: Some("usr_creator".to_owned()),
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

/// Many lookups at once, of keys that exist (each asked for several
/// times), of digests that match nothing, and of a key changed in between:
/// each gets its own row. (PostgreSQL answers lookups that arrive together
/// in shared round trips.)
async fn keys_by_digest_concurrently(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    let mut keys = Vec::new();
    for i in 0..200 {
        let mut k = key(&format!("k{i}"), "o1", NOW + i);
        k.metadata = json!({ "n": i });
        k.scopes = vec![format!("scope{i}")];
        store.create_key(&k).await.unwrap();
        keys.push(k);
    }
    let keys = Arc::new(keys);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2_000usize {
        let store = store.clone();
        let keys = keys.clone();
        tasks.spawn(async move {
            if i % 5 == 4 {
                let found = store
                    .key_by_digest(&digest(&format!("absent{i}")))
                    .await
                    .unwrap();
                assert_eq!(found, None, "lookup {i}");
            } else {
                let want = &keys[(i * 7919) % keys.len()];
                let found = store.key_by_digest(&want.digest).await.unwrap();
                assert_eq!(found.as_ref(), Some(want), "lookup {i}");
            }
        });
    }
    let mut done = 0;
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
        done += 1;
    }
    assert_eq!(done, 2_000);

    // What a lookup answers is the row as it is now, not as a batch saw it.
    assert!(
        store
            .revoke_key("k3", NOW + 500, Some("gone"))
            .await
            .is_ok()
    );
    let after = store.key_by_digest(&digest("k3")).await.unwrap().unwrap();
    assert_eq!(after.revoked_at, Some(NOW + 500));
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

/// Text the escaping of a bulk load could get wrong comes back as it
/// was written: tabs, line ends, backslashes, a literal `\N`, an empty
/// string (which is not NULL), non-ASCII.
async fn logs_keep_awkward_text(store: Arc<dyn Store>) {
    let awkward = [
        "tab\there",
        "line\nend\r\n",
        "back\\slash\\",
        "\\N",
        "\\.",
        "",
        "caf\u{e9} \u{1f511} \u{202e}",
        "\\t not a tab",
    ];
    let mut entries = Vec::new();
    for (n, text) in awkward.iter().enumerate() {
        let mut e = decision(n + 1, Some("o1"), NOW + n as i64, Some(KEY_A), "VALID");
        if let LogEvent::Decision(d) = &mut e.event {
            d.path = Some(format!("/p/{text}"));
            d.user_agent = Some((*text).to_owned());
        }
        entries.push(e);
    }
    store.insert_logs(&entries).await.unwrap();

    let got = store.list_logs(&log_query("o1", 50)).await.unwrap();
    assert_eq!(got.len(), entries.len());
    for want in &entries {
        let back = got.iter().find(|e| e.id == want.id).unwrap();
        assert_eq!(back, want);
    }
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

// ---- OAuth --------------------------------------------------------------

/// Bytes that are not UTF-8 and hold NULs (a sealed secret's shape).
fn sealed(tag: &str) -> Vec<u8> {
    let mut s = vec![0x00, 0xc3, 0x28, 0x00, 0xff];
    s.extend_from_slice(tag.as_bytes());
    s.extend_from_slice(&[0x80, 0x00, 0xfe]);
    s
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn oauth_client(id: &str, org_id: &str, created_at: i64) -> Client {
    Client {
        id: id.to_owned(),
        org_id: org_id.to_owned(),
        name: format!("client {id}"),
        public: false,
        secret_digest: Some(digest(id)),
        secret_sealed: Some(sealed(id)),
        redirect_uris: strings(&[
            "https://app.example/cb?a=b&c",
            "https://例え.jp/コールバック?q=\"ü\"&x=%20 y",
        ]),
        grant_types: strings(&["authorization_code", "refresh_token"]),
        scopes: strings(&["openid", "docs:read", "docs:write"]),
        token_endpoint_auth_method: "client_secret_basic".to_owned(),
        jwks: Some(json!({
            "keys": [{
                "kty": "RSA", "kid": "k-ü", "use": "sig", "alg": "RS256",
                "n": "0vx7agoebGcQSuuPiLJXZpt", "e": "AQAB",
                "x5c": [], "ext": true, "nested": {"n": 42, "z": null}
            }]
        })),
        jwt_auth_alg: Some("RS256".to_owned()),
        require_pkce: true,
        created_at,
        updated_at: created_at,
        secret_rotated_at: Some(created_at),
    }
}

/// A public client: every optional field empty, the booleans the other way.
fn public_client(id: &str, org_id: &str, created_at: i64) -> Client {
    Client {
        id: id.to_owned(),
        org_id: org_id.to_owned(),
        name: format!("public {id}"),
        public: true,
        secret_digest: None,
        secret_sealed: None,
        redirect_uris: strings(&["http://127.0.0.1:8080/callback"]),
        grant_types: strings(&["authorization_code"]),
        scopes: Vec::new(),
        token_endpoint_auth_method: "none".to_owned(),
        jwks: None,
        jwt_auth_alg: None,
        require_pkce: false,
        created_at,
        updated_at: created_at,
        secret_rotated_at: None,
    }
}

fn oauth_user(id: &str, org_id: &str, email: &str, created_at: i64) -> User {
    User {
        id: id.to_owned(),
        org_id: org_id.to_owned(),
        email: email.to_owned(),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${id}"),
        role: "member".to_owned(),
        created_at,
    }
}

fn oauth_grant(id: &str, client_id: &str, user_id: Option<&str>, created_at: i64) -> Grant {
    Grant {
        id: id.to_owned(),
        org_id: "o1".to_owned(),
        client_id: client_id.to_owned(),
        user_id: user_id.map(str::to_owned),
        scopes: strings(&["openid", "docs:read"]),
        created_at,
        revoked_at: None,
    }
}

fn auth_code(tag: &str, client_id: &str, user_id: &str, expires_at: i64) -> AuthCode {
    AuthCode {
        digest: digest(tag),
        client_id: client_id.to_owned(),
        org_id: "o1".to_owned(),
        user_id: user_id.to_owned(),
        redirect_uri: "https://app.example/cb?a=b&c".to_owned(),
        scopes: strings(&["openid", "docs:read"]),
        code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned()),
        created_at: NOW,
        expires_at,
        used_at: None,
        grant_id: None,
    }
}

fn refresh_token(tag: &str, grant_id: &str, client_id: &str, expires_at: i64) -> RefreshToken {
    RefreshToken {
        digest: digest(tag),
        grant_id: grant_id.to_owned(),
        client_id: client_id.to_owned(),
        created_at: NOW,
        expires_at,
        spent_at: None,
    }
}

fn access_token(
    tag: &str,
    grant_id: Option<&str>,
    client_id: &str,
    expires_at: i64,
) -> AccessToken {
    AccessToken {
        digest: digest(tag),
        jti: format!("jti-{tag}"),
        grant_id: grant_id.map(str::to_owned),
        client_id: client_id.to_owned(),
        org_id: "o1".to_owned(),
        subject: format!("sub-{tag}"),
        scopes: strings(&["docs:read"]),
        created_at: NOW,
        expires_at,
        revoked_at: None,
    }
}

fn consent(user_id: &str, client_id: &str, scopes: &[&str], at: i64) -> Consent {
    Consent {
        user_id: user_id.to_owned(),
        client_id: client_id.to_owned(),
        scopes: strings(scopes),
        created_at: at,
        updated_at: at,
    }
}

fn signing_key(kid: &str, created_at: i64) -> SigningKey {
    SigningKey {
        kid: kid.to_owned(),
        alg: "EdDSA".to_owned(),
        public_jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": format!("x-{kid}"), "kid": kid}),
        private_sealed: sealed(kid),
        created_at,
        retired_at: None,
    }
}

fn page(limit: u32) -> Page {
    Page {
        limit,
        cursor: None,
    }
}

/// Pages through a list (`limit` per page, each but the last full).
async fn oauth_pages<T, F, Fut>(limit: u32, key: impl Fn(&T) -> (i64, String), fetch: F) -> Vec<T>
where
    F: Fn(Page) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, StoreError>>,
{
    let mut out: Vec<T> = Vec::new();
    let mut p = page(limit);
    for _ in 0..100 {
        let got = fetch(p.clone()).await.unwrap();
        assert!(got.len() <= limit as usize, "page longer than limit");
        let full = got.len() == limit as usize;
        out.extend(got);
        if !full {
            return out;
        }
        p.cursor = Some(key(out.last().unwrap()));
    }
    panic!("paging did not terminate");
}

/// An organization `o1` with clients `c1` (confidential) and `c2`
/// (public) and users `u1`, `u2`.
async fn oauth_fixture(store: &dyn Store) {
    store_with_org(store, "o1").await;
    store
        .create_client(&oauth_client("c1", "o1", NOW))
        .await
        .unwrap();
    store
        .create_client(&public_client("c2", "o1", NOW + 1))
        .await
        .unwrap();
    for (id, email) in [("u1", "one@example.com"), ("u2", "two@example.com")] {
        store
            .create_user(&oauth_user(id, "o1", email, NOW))
            .await
            .unwrap();
    }
}

/// Opens connections of the pool (concurrent pings) and answers a barrier
/// for `n` tasks, so that the tasks really race once released.
async fn ready_together(store: &Arc<dyn Store>, n: usize) -> Arc<tokio::sync::Barrier> {
    let pings: Vec<_> = (0..n)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.ping().await.unwrap() })
        })
        .collect();
    for p in pings {
        p.await.unwrap();
    }
    Arc::new(tokio::sync::Barrier::new(n))
}

async fn oauth_clients_round_trip(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    let full = oauth_client("c1", "o1", NOW);
    let public = public_client("c2", "o1", NOW + 1);
    store.create_client(&full).await.unwrap();
    store.create_client(&public).await.unwrap();

    let got = store.get_client("c1").await.unwrap();
    assert_eq!(got, full);
    // The bytes themselves, not a text re-encoding of them.
    assert_eq!(got.secret_digest.as_deref(), Some(&digest("c1")[..]));
    assert_eq!(got.secret_sealed.as_deref(), Some(&sealed("c1")[..]));
    assert!(!got.public && got.require_pkce);
    assert_eq!(
        got.redirect_uris[1],
        "https://例え.jp/コールバック?q=\"ü\"&x=%20 y"
    );
    assert_eq!(got.jwks.as_ref().unwrap()["keys"][0]["nested"]["n"], 42);

    let got = store.get_client("c2").await.unwrap();
    assert_eq!(got, public);
    assert!(got.public && !got.require_pkce);
    assert_eq!(got.secret_digest, None);
    assert_eq!(got.jwks, None);
    assert!(got.scopes.is_empty());

    assert_not_found(store.get_client("nope").await, "get unknown client");
    assert_conflict(
        store.create_client(&public_client("c1", "o1", NOW)).await,
        "duplicate client id",
    );
    assert_eq!(store.get_client("c1").await.unwrap(), full);
    assert_conflict(
        store
            .create_client(&public_client("c3", "no-such-org", NOW))
            .await,
        "client of a missing org",
    );
    assert_not_found(store.get_client("c3").await, "client of a missing org");
}

async fn oauth_clients_list_pages(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    store_with_org(&*store, "o2").await;
    // Ties on created_at are broken by id, descending.
    let made = [
        ("a", 10),
        ("b", 20),
        ("c", 20),
        ("d", 30),
        ("e", 5),
        ("f", 20),
        ("g", 40),
    ];
    for (id, at) in made {
        store
            .create_client(&oauth_client(id, "o1", at))
            .await
            .unwrap();
    }
    store
        .create_client(&oauth_client("x", "o2", 25))
        .await
        .unwrap();
    store
        .create_client(&public_client("y", "o2", 50))
        .await
        .unwrap();

    let all = store.list_clients("o1", &page(100)).await.unwrap();
    assert_eq!(ids(&all, |c| &c.id), ["g", "d", "f", "c", "b", "a", "e"]);
    assert_eq!(all[0], oauth_client("g", "o1", 40));

    for limit in [1, 2, 3, 7] {
        let paged = oauth_pages(
            limit,
            |c: &Client| (c.created_at, c.id.clone()),
            |p| {
                let store = store.clone();
                async move { store.list_clients("o1", &p).await }
            },
        )
        .await;
        assert_eq!(paged, all, "pages of {limit}");
    }

    let after_c = store
        .list_clients(
            "o1",
            &Page {
                limit: 2,
                cursor: Some((20, "c".to_owned())),
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&after_c, |c| &c.id), ["b", "a"]);

    let o2 = store.list_clients("o2", &page(100)).await.unwrap();
    assert_eq!(ids(&o2, |c| &c.id), ["y", "x"]);
    assert!(
        store
            .list_clients("o3", &page(100))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn oauth_update_client_fields(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    let mut expected = oauth_client("c1", "o1", NOW);
    store.create_client(&expected).await.unwrap();
    // A neighbour that no update may touch.
    let other = oauth_client("c2", "o1", NOW);
    store.create_client(&other).await.unwrap();

    let mut at = NOW;
    let check = async |patch: ClientPatch, expected: &Client| {
        let got = store.update_client("c1", &patch).await.unwrap();
        assert_eq!(&got, expected, "answered after {patch:?}");
        assert_eq!(
            &store.get_client("c1").await.unwrap(),
            expected,
            "stored after {patch:?}"
        );
    };

    at += 1;
    expected.name = "renamed ü".to_owned();
    expected.updated_at = at;
    check(
        ClientPatch {
            name: Some("renamed ü".to_owned()),
            updated_at: at,
            ..ClientPatch::default()
        },
        &expected,
    )
    .await;

    at += 1;
    expected.redirect_uris = strings(&["https://new.example/cb?x=1&y=ß"]);
    expected.updated_at = at;
    check(
        ClientPatch {
            redirect_uris: Some(expected.redirect_uris.clone()),
            updated_at: at,
            ..ClientPatch::default()
        },
        &expected,
    )
    .await;

    at += 1;
    expected.grant_types = strings(&["client_credentials"]);
    expected.updated_at = at;
    check(
        ClientPatch {
            grant_types: Some(expected.grant_types.clone()),
            updated_at: at,
            ..ClientPatch::default()
        },
        &expected,
    )
    .await;

    at += 1;
    expected.scopes = strings(&["admin"]);
    expected.updated_at = at;
    check(
        ClientPatch {
            scopes: Some(expected.scopes.clone()),
            updated_at: at,
            ..ClientPatch::default()
        },
        &expected,
    )
    .await;

    at += 1;
    expected.token_endpoint_auth_method = "private_key_jwt".to_owned();
    expected.updated_at = at;
    check(
        ClientPatch {
            token_endpoint_auth_method: Some("private_key_jwt".to_owned()),
            updated_at: at,
            ..ClientPatch::default()
        },
        &expected,
    )
    .await;

    at += 1;
    expected.jwks = Some(json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}]}));
    expected.updated_at = at;
    check(
        ClientPatch {
            jwks: Some(expected.jwks.clone()),
            updated_at: at,
            ..ClientPatch::default()
        },
        &expected,
    )
    .await;

    at += 1;
    expected.jwt_auth_alg = Some("ES256".to_owned());
    expected.updated_at = at;
    check(
        ClientPatch {
            jwt_auth_alg: Some(Some("ES256".to_owned())),
            updated_at: at,
            ..ClientPatch::default()
        },
        &expected,
    )
    .await;

    // Some(None) clears each of them, alone.
    at += 1;
    expected.jwks = None;
    expected.updated_at = at;
    check(
        ClientPatch {
            jwks: Some(None),
            updated_at: at,
            ..ClientPatch::default()
        },
        &expected,
    )
    .await;
    assert_eq!(expected.jwt_auth_alg.as_deref(), Some("ES256"));

    at += 1;
    expected.jwt_auth_alg = None;
    expected.updated_at = at;
    check(
        ClientPatch {
            jwt_auth_alg: Some(None),
            updated_at: at,
            ..ClientPatch::default()
        },
        &expected,
    )
    .await;

    // And set again from nothing.
    at += 1;
    expected.jwks = Some(json!({"keys": []}));
    expected.jwt_auth_alg = Some("HS256".to_owned());
    expected.updated_at = at;
    check(
        ClientPatch {
            jwks: Some(expected.jwks.clone()),
            jwt_auth_alg: Some(expected.jwt_auth_alg.clone()),
            updated_at: at,
            ..ClientPatch::default()
        },
        &expected,
    )
    .await;

    // require_pkce both ways.
    for value in [false, true, false] {
        at += 1;
        expected.require_pkce = value;
        expected.updated_at = at;
        check(
            ClientPatch {
                require_pkce: Some(value),
                updated_at: at,
                ..ClientPatch::default()
            },
            &expected,
        )
        .await;
    }

    // An empty patch only moves updated_at.
    at += 1;
    expected.updated_at = at;
    check(
        ClientPatch {
            updated_at: at,
            ..ClientPatch::default()
        },
        &expected,
    )
    .await;

    // Secrets, public, created_at are out of a patch's reach.
    assert_eq!(expected.secret_digest.as_deref(), Some(&digest("c1")[..]));
    assert_eq!(expected.created_at, NOW);

    assert_not_found(
        store
            .update_client(
                "nope",
                &ClientPatch {
                    name: Some("x".to_owned()),
                    updated_at: at,
                    ..ClientPatch::default()
                },
            )
            .await,
        "update unknown client",
    );
    assert_eq!(store.get_client("c2").await.unwrap(), other);
}

async fn oauth_set_client_secret(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    let mut expected = oauth_client("c1", "o1", NOW);
    expected.secret_rotated_at = None;
    store.create_client(&expected).await.unwrap();
    let other = oauth_client("c2", "o1", NOW);
    store.create_client(&other).await.unwrap();

    let new_digest = digest("second secret");
    let new_sealed = sealed("second secret");
    let got = store
        .set_client_secret("c1", Some(&new_digest), Some(&new_sealed), NOW + 10)
        .await
        .unwrap();
    expected.secret_digest = Some(new_digest.clone());
    expected.secret_sealed = Some(new_sealed);
    expected.secret_rotated_at = Some(NOW + 10);
    expected.updated_at = NOW + 10;
    assert_eq!(got, expected);
    assert_eq!(store.get_client("c1").await.unwrap(), expected);

    // A digest alone drops the sealed copy.
    let got = store
        .set_client_secret("c1", Some(&digest("third")), None, NOW + 20)
        .await
        .unwrap();
    expected.secret_digest = Some(digest("third"));
    expected.secret_sealed = None;
    expected.secret_rotated_at = Some(NOW + 20);
    expected.updated_at = NOW + 20;
    assert_eq!(got, expected);
    assert_eq!(store.get_client("c1").await.unwrap(), expected);

    // And nothing at all.
    let got = store
        .set_client_secret("c1", None, None, NOW + 30)
        .await
        .unwrap();
    expected.secret_digest = None;
    expected.secret_rotated_at = Some(NOW + 30);
    expected.updated_at = NOW + 30;
    assert_eq!(got, expected);
    assert_eq!(store.get_client("c1").await.unwrap(), expected);

    assert_not_found(
        store.set_client_secret("nope", None, None, NOW + 40).await,
        "secret of an unknown client",
    );
    assert_eq!(store.get_client("c2").await.unwrap(), other);
}

async fn oauth_delete_client_cascades(store: Arc<dyn Store>) {
    oauth_fixture(&*store).await;
    let far = NOW + 3_600_000;
    // For each client: a grant with a refresh token and an opaque token
    // of its own, an unused code, a token without grant and a consent.
    for c in ["c1", "c2"] {
        let g = format!("g-{c}");
        store
            .create_grant(&oauth_grant(&g, c, Some("u1"), NOW))
            .await
            .unwrap();
        store
            .create_code(&auth_code(&format!("code-{c}"), c, "u1", far))
            .await
            .unwrap();
        store
            .create_refresh_token(&refresh_token(&format!("rt-{c}"), &g, c, far))
            .await
            .unwrap();
        store
            .create_access_token(&access_token(&format!("at-{c}"), Some(&g), c, far))
            .await
            .unwrap();
        store
            .create_access_token(&access_token(&format!("at0-{c}"), None, c, far))
            .await
            .unwrap();
        store
            .upsert_consent(&consent("u1", c, &["openid"], NOW))
            .await
            .unwrap();
    }

    store.delete_client("c1").await.unwrap();
    assert_not_found(store.get_client("c1").await, "deleted client");
    assert_not_found(store.delete_client("c1").await, "second delete");
    assert_not_found(store.delete_client("nope").await, "delete unknown client");
    assert_not_found(
        store
            .update_client(
                "c1",
                &ClientPatch {
                    updated_at: NOW,
                    ..ClientPatch::default()
                },
            )
            .await,
        "update deleted client",
    );

    // Everything issued to c1 went.
    assert_not_found(store.get_grant("g-c1").await, "grant of a deleted client");
    let probe = oauth_grant("g-probe", "c2", Some("u1"), NOW);
    assert_eq!(
        store
            .redeem_code(&digest("code-c1"), NOW, &probe)
            .await
            .unwrap(),
        Redeem::Unknown
    );
    assert_not_found(store.get_grant("g-probe").await, "no grant for a gone code");
    assert_eq!(
        store
            .refresh_token_by_digest(&digest("rt-c1"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .access_token_by_digest(&digest("at-c1"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .access_token_by_digest(&digest("at0-c1"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get_consent("u1", "c1").await.unwrap(), None);
    assert!(store.list_consents("c1").await.unwrap().is_empty());

    // c2's are all there.
    assert_eq!(
        store.get_grant("g-c2").await.unwrap(),
        oauth_grant("g-c2", "c2", Some("u1"), NOW)
    );
    assert_eq!(
        store
            .refresh_token_by_digest(&digest("rt-c2"))
            .await
            .unwrap(),
        Some(refresh_token("rt-c2", "g-c2", "c2", far))
    );
    assert_eq!(
        store
            .access_token_by_digest(&digest("at-c2"))
            .await
            .unwrap(),
        Some(access_token("at-c2", Some("g-c2"), "c2", far))
    );
    assert_eq!(
        store
            .access_token_by_digest(&digest("at0-c2"))
            .await
            .unwrap(),
        Some(access_token("at0-c2", None, "c2", far))
    );
    assert_eq!(
        store.get_consent("u1", "c2").await.unwrap(),
        Some(consent("u1", "c2", &["openid"], NOW))
    );
    let g = oauth_grant("g-new", "c2", Some("u1"), NOW);
    assert!(matches!(
        store
            .redeem_code(&digest("code-c2"), NOW, &g)
            .await
            .unwrap(),
        Redeem::Fresh(_)
    ));
    // The users are not the client's.
    assert_eq!(store.get_user("u1").await.unwrap().email, "one@example.com");
    assert_eq!(
        ids(&store.list_clients("o1", &page(10)).await.unwrap(), |c| &c
            .id),
        ["c2"]
    );
}

async fn oauth_users(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    store_with_org(&*store, "o2").await;
    let u1 = oauth_user("u1", "o1", "ada@example.com", NOW);
    let mut u2 = oauth_user("u2", "o1", "grace@example.com", NOW + 1);
    u2.role = "admin".to_owned();
    store.create_user(&u1).await.unwrap();
    store.create_user(&u2).await.unwrap();

    assert_eq!(store.get_user("u1").await.unwrap(), u1);
    assert_eq!(store.get_user("u2").await.unwrap(), u2);
    assert_eq!(
        store
            .user_by_email("o1", "grace@example.com")
            .await
            .unwrap(),
        Some(u2.clone())
    );
    assert_eq!(
        store
            .user_by_email("o1", "nobody@example.com")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.user_by_email("o2", "ada@example.com").await.unwrap(),
        None
    );
    assert_not_found(store.get_user("nope").await, "get unknown user");

    // One account per address in an organization.
    assert_conflict(
        store
            .create_user(&oauth_user("u3", "o1", "ada@example.com", NOW))
            .await,
        "duplicate email in an org",
    );
    assert_not_found(store.get_user("u3").await, "refused user");
    assert_conflict(
        store
            .create_user(&oauth_user("u1", "o2", "other@example.com", NOW))
            .await,
        "duplicate user id",
    );
    // The same address in another organization is another account.
    let other = oauth_user("u4", "o2", "ada@example.com", NOW);
    store.create_user(&other).await.unwrap();
    assert_eq!(
        store.user_by_email("o2", "ada@example.com").await.unwrap(),
        Some(other)
    );
    assert_eq!(
        store.user_by_email("o1", "ada@example.com").await.unwrap(),
        Some(u1.clone())
    );

    assert_conflict(
        store
            .create_user(&oauth_user("u5", "no-such-org", "x@example.com", NOW))
            .await,
        "user of a missing org",
    );
    assert_not_found(store.get_user("u5").await, "user of a missing org");

    store.delete_user("u2").await.unwrap();
    assert_not_found(store.get_user("u2").await, "deleted user");
    assert_eq!(
        store
            .user_by_email("o1", "grace@example.com")
            .await
            .unwrap(),
        None
    );
    assert_not_found(store.delete_user("u2").await, "second delete");
    assert_not_found(store.delete_user("nope").await, "delete unknown user");
    assert_eq!(store.get_user("u1").await.unwrap(), u1);
    // The address is free again.
    store
        .create_user(&oauth_user("u6", "o1", "grace@example.com", NOW + 5))
        .await
        .unwrap();
}

async fn oauth_users_list_pages(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    store_with_org(&*store, "o2").await;
    let made = [
        ("a", 10),
        ("b", 20),
        ("c", 20),
        ("d", 30),
        ("e", 5),
        ("f", 20),
    ];
    for (id, at) in made {
        store
            .create_user(&oauth_user(id, "o1", &format!("{id}@example.com"), at))
            .await
            .unwrap();
    }
    store
        .create_user(&oauth_user("x", "o2", "x@example.com", 25))
        .await
        .unwrap();

    let all = store.list_users("o1", &page(100)).await.unwrap();
    assert_eq!(ids(&all, |u| &u.id), ["d", "f", "c", "b", "a", "e"]);
    assert_eq!(all[1], oauth_user("f", "o1", "f@example.com", 20));
    for limit in [1, 2, 4, 6] {
        let paged = oauth_pages(
            limit,
            |u: &User| (u.created_at, u.id.clone()),
            |p| {
                let store = store.clone();
                async move { store.list_users("o1", &p).await }
            },
        )
        .await;
        assert_eq!(paged, all, "pages of {limit}");
    }
    let after_f = store
        .list_users(
            "o1",
            &Page {
                limit: 10,
                cursor: Some((20, "f".to_owned())),
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&after_f, |u| &u.id), ["c", "b", "a", "e"]);
    assert_eq!(
        ids(&store.list_users("o2", &page(10)).await.unwrap(), |u| &u.id),
        ["x"]
    );
}

async fn oauth_delete_user_cascades(store: Arc<dyn Store>) {
    oauth_fixture(&*store).await;
    let far = NOW + 3_600_000;
    for u in ["u1", "u2"] {
        for c in ["c1", "c2"] {
            let g = format!("g-{u}-{c}");
            store
                .create_grant(&oauth_grant(&g, c, Some(u), NOW))
                .await
                .unwrap();
            store
                .create_code(&auth_code(&format!("code-{u}-{c}"), c, u, far))
                .await
                .unwrap();
            store
                .create_refresh_token(&refresh_token(&format!("rt-{u}-{c}"), &g, c, far))
                .await
                .unwrap();
            store
                .create_access_token(&access_token(&format!("at-{u}-{c}"), Some(&g), c, far))
                .await
                .unwrap();
            store
                .upsert_consent(&consent(u, c, &["openid"], NOW))
                .await
                .unwrap();
        }
    }
    // A grant of nobody (client credentials) survives any user.
    store
        .create_grant(&oauth_grant("g-cc", "c1", None, NOW))
        .await
        .unwrap();

    store.delete_user("u1").await.unwrap();

    for c in ["c1", "c2"] {
        assert_not_found(
            store.get_grant(&format!("g-u1-{c}")).await,
            "grant of a deleted user",
        );
        assert_eq!(store.get_consent("u1", c).await.unwrap(), None);
        assert_eq!(
            store
                .refresh_token_by_digest(&digest(&format!("rt-u1-{c}")))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .access_token_by_digest(&digest(&format!("at-u1-{c}")))
                .await
                .unwrap(),
            None
        );
        assert!(
            store
                .access_token_by_digest(&digest(&format!("at-u2-{c}")))
                .await
                .unwrap()
                .is_some()
        );
        let probe = oauth_grant(&format!("probe-{c}"), c, Some("u2"), NOW);
        assert_eq!(
            store
                .redeem_code(&digest(&format!("code-u1-{c}")), NOW, &probe)
                .await
                .unwrap(),
            Redeem::Unknown
        );

        assert_eq!(
            store.get_grant(&format!("g-u2-{c}")).await.unwrap(),
            oauth_grant(&format!("g-u2-{c}"), c, Some("u2"), NOW)
        );
        assert_eq!(
            store.get_consent("u2", c).await.unwrap(),
            Some(consent("u2", c, &["openid"], NOW))
        );
        assert!(
            store
                .refresh_token_by_digest(&digest(&format!("rt-u2-{c}")))
                .await
                .unwrap()
                .is_some()
        );
        let consents = store.list_consents(c).await.unwrap();
        assert_eq!(ids(&consents, |c| &c.user_id), ["u2"]);
    }
    let g = oauth_grant("g-fresh", "c1", Some("u2"), NOW);
    assert!(matches!(
        store
            .redeem_code(&digest("code-u2-c1"), NOW, &g)
            .await
            .unwrap(),
        Redeem::Fresh(_)
    ));
    assert_eq!(
        store.get_grant("g-cc").await.unwrap(),
        oauth_grant("g-cc", "c1", None, NOW)
    );
    assert_eq!(
        store.get_client("c1").await.unwrap(),
        oauth_client("c1", "o1", NOW)
    );
}

async fn oauth_signing_keys_rotate_and_prune(store: Arc<dyn Store>) {
    assert!(store.list_signing_keys().await.unwrap().is_empty());
    let k1 = signing_key("k1", NOW);
    assert!(store.add_first_signing_key(&k1).await.unwrap());
    assert!(
        !store
            .add_first_signing_key(&signing_key("k0", NOW + 1))
            .await
            .unwrap()
    );
    assert_eq!(
        store.list_signing_keys().await.unwrap(),
        std::slice::from_ref(&k1)
    );

    // Each rotation retires the key in use at the new key's creation.
    store
        .rotate_signing_key(&signing_key("k2", NOW + 100))
        .await
        .unwrap();
    store
        .rotate_signing_key(&signing_key("k3", NOW + 200))
        .await
        .unwrap();
    let mut r1 = k1.clone();
    r1.retired_at = Some(NOW + 100);
    let mut r2 = signing_key("k2", NOW + 100);
    r2.retired_at = Some(NOW + 200);
    let k3 = signing_key("k3", NOW + 200);
    assert_eq!(
        store.list_signing_keys().await.unwrap(),
        [k3.clone(), r2.clone(), r1.clone()]
    );
    // Not while keys exist, not even after a rotation.
    assert!(
        !store
            .add_first_signing_key(&signing_key("k9", NOW + 300))
            .await
            .unwrap()
    );

    // Removes only keys retired before the cutoff: not at it, not the active one.
    assert_eq!(store.prune_signing_keys(NOW + 100).await.unwrap(), 0);
    assert_eq!(store.list_signing_keys().await.unwrap().len(), 3);
    assert_eq!(store.prune_signing_keys(NOW + 101).await.unwrap(), 1);
    assert_eq!(
        store.list_signing_keys().await.unwrap(),
        [k3.clone(), r2.clone()]
    );
    assert_eq!(store.prune_signing_keys(i64::MAX).await.unwrap(), 1);
    assert_eq!(store.list_signing_keys().await.unwrap(), [k3]);
    assert_eq!(store.prune_signing_keys(i64::MAX).await.unwrap(), 0);

    assert_conflict(
        store
            .rotate_signing_key(&signing_key("k3", NOW + 400))
            .await,
        "rotate to an existing kid",
    );
    // The failed rotation retired nothing.
    assert_eq!(store.list_signing_keys().await.unwrap()[0].retired_at, None);
}

async fn oauth_add_first_signing_key_concurrently(store: Arc<dyn Store>) {
    // Nodes starting at once.
    let start = ready_together(&store, 8).await;
    let mut tasks = Vec::new();
    for i in 0..8_i64 {
        let store = store.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let k = signing_key(&format!("k{i}"), NOW + i);
            start.wait().await;
            (k.clone(), store.add_first_signing_key(&k).await.unwrap())
        }));
    }
    let mut added = Vec::new();
    for t in tasks {
        let (k, was_added) = t.await.unwrap();
        if was_added {
            added.push(k);
        }
    }
    assert_eq!(added.len(), 1, "keys added: {added:?}");
    assert_eq!(store.list_signing_keys().await.unwrap(), added);
}

async fn oauth_rotate_signing_key_concurrently(store: Arc<dyn Store>) {
    assert!(
        store
            .add_first_signing_key(&signing_key("k0", NOW))
            .await
            .unwrap()
    );
    // Nodes rotating at once: each rotation retires what was in use, so
    // one key (the last rotation's) is left signing.
    let start = ready_together(&store, 8).await;
    let mut tasks = Vec::new();
    for i in 1..=8_i64 {
        let store = store.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            store
                .rotate_signing_key(&signing_key(&format!("k{i}"), NOW + i))
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let keys = store.list_signing_keys().await.unwrap();
    assert_eq!(keys.len(), 9);
    let active: Vec<&str> = keys
        .iter()
        .filter(|k| k.retired_at.is_none())
        .map(|k| k.kid.as_str())
        .collect();
    assert_eq!(active.len(), 1, "keys left active: {active:?}");
}

async fn oauth_grants_revoke(store: Arc<dyn Store>) {
    oauth_fixture(&*store).await;
    let g1 = oauth_grant("g1", "c1", Some("u1"), NOW);
    store.create_grant(&g1).await.unwrap();
    assert_eq!(store.get_grant("g1").await.unwrap(), g1);
    let cc = oauth_grant("g-cc", "c1", None, NOW + 1);
    store.create_grant(&cc).await.unwrap();
    assert_eq!(store.get_grant("g-cc").await.unwrap(), cc);
    assert_not_found(store.get_grant("nope").await, "get unknown grant");
    assert_conflict(store.create_grant(&g1).await, "duplicate grant id");
    assert_conflict(
        store
            .create_grant(&oauth_grant("g-x", "no-such-client", Some("u1"), NOW))
            .await,
        "grant of a missing client",
    );
    assert_conflict(
        store
            .create_grant(&oauth_grant("g-y", "c1", Some("no-such-user"), NOW))
            .await,
        "grant of a missing user",
    );

    let mut revoked = g1.clone();
    revoked.revoked_at = Some(NOW + 10);
    assert_eq!(store.revoke_grant("g1", NOW + 10).await.unwrap(), revoked);
    // Idempotent: the first revocation time stays.
    assert_eq!(store.revoke_grant("g1", NOW + 20).await.unwrap(), revoked);
    assert_eq!(store.get_grant("g1").await.unwrap(), revoked);
    assert_not_found(
        store.revoke_grant("nope", NOW).await,
        "revoke unknown grant",
    );
    assert_eq!(store.get_grant("g-cc").await.unwrap(), cc);

    // revoke_user_grants: only that user's, to that client, not yet revoked.
    for (id, client, user) in [
        ("a1", "c1", "u1"),
        ("a2", "c1", "u1"),
        ("a3", "c1", "u1"),
        ("b1", "c2", "u1"),
        ("b2", "c1", "u2"),
    ] {
        store
            .create_grant(&oauth_grant(id, client, Some(user), NOW))
            .await
            .unwrap();
    }
    store.revoke_grant("a3", NOW + 30).await.unwrap();
    // a1 and a2 (g1 and a3 were already revoked).
    assert_eq!(
        store
            .revoke_user_grants("u1", "c1", NOW + 40)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store.get_grant("a1").await.unwrap().revoked_at,
        Some(NOW + 40)
    );
    assert_eq!(
        store.get_grant("a2").await.unwrap().revoked_at,
        Some(NOW + 40)
    );
    assert_eq!(
        store.get_grant("a3").await.unwrap().revoked_at,
        Some(NOW + 30)
    );
    assert_eq!(
        store.get_grant("g1").await.unwrap().revoked_at,
        Some(NOW + 10)
    );
    assert_eq!(store.get_grant("b1").await.unwrap().revoked_at, None);
    assert_eq!(store.get_grant("b2").await.unwrap().revoked_at, None);
    assert_eq!(store.get_grant("g-cc").await.unwrap().revoked_at, None);
    assert_eq!(
        store
            .revoke_user_grants("u1", "c1", NOW + 50)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store.get_grant("a1").await.unwrap().revoked_at,
        Some(NOW + 40)
    );
    assert_eq!(
        store
            .revoke_user_grants("u2", "c2", NOW + 50)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .revoke_user_grants("u2", "c1", NOW + 60)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.get_grant("b2").await.unwrap().revoked_at,
        Some(NOW + 60)
    );
    assert_eq!(store.get_grant("b1").await.unwrap().revoked_at, None);
}

async fn oauth_codes_redeem(store: Arc<dyn Store>) {
    oauth_fixture(&*store).await;
    let code = auth_code("code1", "c1", "u1", NOW + 60_000);
    store.create_code(&code).await.unwrap();
    assert_conflict(store.create_code(&code).await, "duplicate code digest");

    let g1 = oauth_grant("g1", "c1", Some("u1"), NOW + 5);
    let mut spent = code.clone();
    spent.used_at = Some(NOW + 5);
    spent.grant_id = Some("g1".to_owned());
    assert_eq!(
        store
            .redeem_code(&digest("code1"), NOW + 5, &g1)
            .await
            .unwrap(),
        Redeem::Fresh(spent.clone())
    );
    // The grant was created with it.
    assert_eq!(store.get_grant("g1").await.unwrap(), g1);

    // A replay names the first exchange's grant, creates none, changes nothing.
    let g2 = oauth_grant("g2", "c1", Some("u1"), NOW + 6);
    assert_eq!(
        store
            .redeem_code(&digest("code1"), NOW + 6, &g2)
            .await
            .unwrap(),
        Redeem::Replayed(spent.clone())
    );
    assert_not_found(store.get_grant("g2").await, "grant of a replay");
    // Even once the code has expired.
    assert_eq!(
        store
            .redeem_code(&digest("code1"), NOW + 120_000, &g2)
            .await
            .unwrap(),
        Redeem::Replayed(spent)
    );
    assert_not_found(store.get_grant("g2").await, "grant of a replay");

    // Expired and unused: unknown, and still unused.
    let old = auth_code("code2", "c2", "u2", NOW + 60_000);
    store.create_code(&old).await.unwrap();
    let g3 = oauth_grant("g3", "c2", Some("u2"), NOW);
    assert_eq!(
        store
            .redeem_code(&digest("code2"), NOW + 60_001, &g3)
            .await
            .unwrap(),
        Redeem::Unknown
    );
    assert_not_found(store.get_grant("g3").await, "grant of an expired code");
    // (Before its expiry it would still have worked: it was not spent.)
    let mut spent2 = old.clone();
    spent2.used_at = Some(NOW + 59_999);
    spent2.grant_id = Some("g3".to_owned());
    assert_eq!(
        store
            .redeem_code(&digest("code2"), NOW + 59_999, &g3)
            .await
            .unwrap(),
        Redeem::Fresh(spent2)
    );

    assert_eq!(
        store
            .redeem_code(&digest("no such code"), NOW, &g2)
            .await
            .unwrap(),
        Redeem::Unknown
    );
    assert_not_found(store.get_grant("g2").await, "grant of an unknown code");

    // A code without PKCE challenge round-trips as None.
    let mut plain = auth_code("code3", "c1", "u1", NOW + 60_000);
    plain.code_challenge = None;
    plain.scopes = Vec::new();
    store.create_code(&plain).await.unwrap();
    let g4 = oauth_grant("g4", "c1", Some("u1"), NOW);
    match store.redeem_code(&digest("code3"), NOW, &g4).await.unwrap() {
        Redeem::Fresh(c) => {
            assert_eq!(c.code_challenge, None);
            assert!(c.scopes.is_empty());
            assert_eq!(c.digest, digest("code3"));
        }
        other => panic!("expected Fresh, got {other:?}"),
    }

    // A grant that cannot be created leaves the code unspent.
    let code5 = auth_code("code5", "c1", "u1", NOW + 60_000);
    store.create_code(&code5).await.unwrap();
    assert_conflict(
        store.redeem_code(&digest("code5"), NOW, &g1).await,
        "redeem with an existing grant id",
    );
    let g5 = oauth_grant("g5", "c1", Some("u1"), NOW);
    assert!(matches!(
        store.redeem_code(&digest("code5"), NOW, &g5).await.unwrap(),
        Redeem::Fresh(_)
    ));
}

async fn oauth_codes_redeem_concurrently(store: Arc<dyn Store>) {
    oauth_fixture(&*store).await;
    store
        .create_code(&auth_code("code1", "c1", "u1", NOW + 60_000))
        .await
        .unwrap();
    let start = ready_together(&store, 16).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let g = oauth_grant(&format!("g{i}"), "c1", Some("u1"), NOW + i);
            start.wait().await;
            store
                .redeem_code(&digest("code1"), NOW + i, &g)
                .await
                .unwrap()
        }));
    }
    let mut fresh = Vec::new();
    let mut replayed = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Redeem::Fresh(c) => fresh.push(c),
            Redeem::Replayed(c) => replayed.push(c),
            Redeem::Unknown => panic!("a concurrent redeem found no code"),
        }
    }
    assert_eq!(fresh.len(), 1, "fresh redeems: {fresh:?}");
    assert_eq!(replayed.len(), 15);
    let winner = fresh[0].grant_id.clone().unwrap();
    for r in &replayed {
        assert_eq!(r, &fresh[0], "every replay sees the first exchange");
    }
    // Exactly the winner's grant exists.
    for i in 0..16 {
        let id = format!("g{i}");
        let got = store.get_grant(&id).await;
        if id == winner {
            assert_eq!(got.unwrap().id, winner);
        } else {
            assert_not_found(got, "grant of a losing redeem");
        }
    }
}

async fn oauth_refresh_tokens(store: Arc<dyn Store>) {
    oauth_fixture(&*store).await;
    store
        .create_grant(&oauth_grant("g1", "c1", Some("u1"), NOW))
        .await
        .unwrap();
    let t = refresh_token("rt1", "g1", "c1", NOW + 60_000);
    store.create_refresh_token(&t).await.unwrap();
    assert_conflict(
        store.create_refresh_token(&t).await,
        "duplicate refresh token",
    );
    assert_conflict(
        store
            .create_refresh_token(&refresh_token("rt-x", "no-such-grant", "c1", NOW))
            .await,
        "refresh token of a missing grant",
    );
    assert_eq!(
        store.refresh_token_by_digest(&digest("rt1")).await.unwrap(),
        Some(t.clone())
    );
    assert_eq!(
        store
            .refresh_token_by_digest(&digest("nope"))
            .await
            .unwrap(),
        None
    );

    let mut spent = t.clone();
    spent.spent_at = Some(NOW + 10);
    assert_eq!(
        store
            .spend_refresh_token(&digest("rt1"), NOW + 10)
            .await
            .unwrap(),
        SpendRefresh::Fresh(spent.clone())
    );
    assert_eq!(
        store.refresh_token_by_digest(&digest("rt1")).await.unwrap(),
        Some(spent.clone())
    );
    // A second spend is a reuse and keeps the first spend's time.
    assert_eq!(
        store
            .spend_refresh_token(&digest("rt1"), NOW + 20)
            .await
            .unwrap(),
        SpendRefresh::Reused(spent.clone())
    );
    assert_eq!(
        store.refresh_token_by_digest(&digest("rt1")).await.unwrap(),
        Some(spent)
    );
    assert_eq!(
        store
            .spend_refresh_token(&digest("nope"), NOW)
            .await
            .unwrap(),
        SpendRefresh::Unknown
    );

    // Another token of the same grant is untouched.
    let t2 = refresh_token("rt2", "g1", "c1", NOW + 60_000);
    store.create_refresh_token(&t2).await.unwrap();
    assert_eq!(
        store.refresh_token_by_digest(&digest("rt2")).await.unwrap(),
        Some(t2)
    );
}

async fn oauth_refresh_tokens_spend_concurrently(store: Arc<dyn Store>) {
    oauth_fixture(&*store).await;
    store
        .create_grant(&oauth_grant("g1", "c1", Some("u1"), NOW))
        .await
        .unwrap();
    store
        .create_refresh_token(&refresh_token("rt1", "g1", "c1", NOW + 60_000))
        .await
        .unwrap();
    let start = ready_together(&store, 16).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            store
                .spend_refresh_token(&digest("rt1"), NOW + 1 + i)
                .await
                .unwrap()
        }));
    }
    let mut fresh = Vec::new();
    let mut reused = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            SpendRefresh::Fresh(t) => fresh.push(t),
            SpendRefresh::Reused(t) => reused.push(t),
            SpendRefresh::Unknown => panic!("a concurrent spend found no token"),
        }
    }
    assert_eq!(fresh.len(), 1, "fresh spends: {fresh:?}");
    assert_eq!(reused.len(), 15);
    for r in &reused {
        assert_eq!(r, &fresh[0], "every reuse sees the first spend");
    }
    let stored = store
        .refresh_token_by_digest(&digest("rt1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, fresh[0]);
    assert!(stored.spent_at.is_some());
}

async fn oauth_access_tokens(store: Arc<dyn Store>) {
    oauth_fixture(&*store).await;
    store
        .create_grant(&oauth_grant("g1", "c1", Some("u1"), NOW))
        .await
        .unwrap();
    let with_grant = access_token("at1", Some("g1"), "c1", NOW + 60_000);
    let without = access_token("at2", None, "c2", NOW + 60_000);
    store.create_access_token(&with_grant).await.unwrap();
    store.create_access_token(&without).await.unwrap();
    assert_conflict(
        store.create_access_token(&with_grant).await,
        "duplicate access token",
    );
    assert_conflict(
        store
            .create_access_token(&access_token("at3", None, "no-such-client", NOW))
            .await,
        "access token of a missing client",
    );
    assert_eq!(
        store.access_token_by_digest(&digest("at1")).await.unwrap(),
        Some(with_grant.clone())
    );
    assert_eq!(
        store.access_token_by_digest(&digest("at2")).await.unwrap(),
        Some(without.clone())
    );
    assert_eq!(
        store.access_token_by_digest(&digest("nope")).await.unwrap(),
        None
    );

    store
        .revoke_access_token(&digest("at1"), NOW + 10)
        .await
        .unwrap();
    let mut revoked = with_grant.clone();
    revoked.revoked_at = Some(NOW + 10);
    assert_eq!(
        store.access_token_by_digest(&digest("at1")).await.unwrap(),
        Some(revoked.clone())
    );
    // A second revocation keeps the first time.
    store
        .revoke_access_token(&digest("at1"), NOW + 20)
        .await
        .unwrap();
    assert_eq!(
        store.access_token_by_digest(&digest("at1")).await.unwrap(),
        Some(revoked)
    );
    assert_eq!(
        store.access_token_by_digest(&digest("at2")).await.unwrap(),
        Some(without)
    );
    // Revoking an unknown token is not an error (RFC 7009).
    store
        .revoke_access_token(&digest("nope"), NOW)
        .await
        .unwrap();
    assert_eq!(
        store.access_token_by_digest(&digest("nope")).await.unwrap(),
        None
    );
}

async fn oauth_revoked_jtis(store: Arc<dyn Store>) {
    assert!(!store.is_jti_revoked("j1").await.unwrap());
    assert!(store.revoked_jtis(NOW).await.unwrap().is_empty());
    store.revoke_jti("j1", NOW + 100).await.unwrap();
    store.revoke_jti("j2", NOW + 200).await.unwrap();
    store.revoke_jti("j3", NOW - 1).await.unwrap();
    // Idempotent: the first record stays.
    store.revoke_jti("j1", NOW + 999).await.unwrap();
    assert!(store.is_jti_revoked("j1").await.unwrap());
    assert!(store.is_jti_revoked("j3").await.unwrap());
    assert!(!store.is_jti_revoked("j4").await.unwrap());

    let sorted = |mut v: Vec<(String, i64)>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(store.revoked_jtis(NOW).await.unwrap()),
        [("j1".to_owned(), NOW + 100), ("j2".to_owned(), NOW + 200)]
    );
    // Only those not expired at `now`: j1 ends at NOW + 100.
    assert_eq!(
        sorted(store.revoked_jtis(NOW + 100).await.unwrap()),
        [("j2".to_owned(), NOW + 200)]
    );
    assert!(store.revoked_jtis(NOW + 200).await.unwrap().is_empty());
    assert_eq!(
        sorted(store.revoked_jtis(NOW - 2).await.unwrap()),
        [
            ("j1".to_owned(), NOW + 100),
            ("j2".to_owned(), NOW + 200),
            ("j3".to_owned(), NOW - 1)
        ]
    );
}

async fn oauth_use_once(store: Arc<dyn Store>) {
    assert!(store.use_once("a", NOW + 100, NOW).await.unwrap());
    assert!(!store.use_once("a", NOW + 100, NOW).await.unwrap());
    // A second use does not extend the first one's record.
    assert!(!store.use_once("a", NOW + 999, NOW + 50).await.unwrap());
    assert!(store.use_once("b", NOW + 100, NOW).await.unwrap());
    // Once its record expired, the id counts as unused (the token that
    // carried it has expired too), even before a prune.
    assert!(store.use_once("a", NOW + 300, NOW + 100).await.unwrap());
    assert!(!store.use_once("a", NOW + 300, NOW + 299).await.unwrap());
    // Revoked ids are another list.
    assert!(!store.is_jti_revoked("a").await.unwrap());
}

async fn oauth_use_once_concurrently(store: Arc<dyn Store>) {
    let start = ready_together(&store, 16).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            store.use_once("once", NOW + 60_000, NOW).await.unwrap()
        }));
    }
    let mut firsts = 0;
    for t in tasks {
        firsts += usize::from(t.await.unwrap());
    }
    assert_eq!(firsts, 1, "exactly one of 16 concurrent uses is the first");
}

async fn oauth_consents(store: Arc<dyn Store>) {
    oauth_fixture(&*store).await;
    assert_eq!(store.get_consent("u1", "c1").await.unwrap(), None);
    let first = consent("u1", "c1", &["openid", "docs:read"], NOW);
    store.upsert_consent(&first).await.unwrap();
    assert_eq!(store.get_consent("u1", "c1").await.unwrap(), Some(first));

    // A second upsert changes the scopes and updated_at, not created_at.
    let mut again = consent("u1", "c1", &["openid", "docs:read", "docs:write"], NOW + 50);
    store.upsert_consent(&again).await.unwrap();
    again.created_at = NOW;
    assert_eq!(
        store.get_consent("u1", "c1").await.unwrap(),
        Some(again.clone())
    );

    let u2 = consent("u2", "c1", &["openid"], NOW + 10);
    store.upsert_consent(&u2).await.unwrap();
    let other_client = consent("u1", "c2", &["docs:read"], NOW + 20);
    store.upsert_consent(&other_client).await.unwrap();
    assert_eq!(store.get_consent("u2", "c2").await.unwrap(), None);

    // By client, most recently updated first.
    assert_eq!(
        store.list_consents("c1").await.unwrap(),
        [again.clone(), u2.clone()]
    );
    assert_eq!(
        store.list_consents("c2").await.unwrap(),
        std::slice::from_ref(&other_client)
    );
    assert!(store.list_consents("nope").await.unwrap().is_empty());

    assert_conflict(
        store
            .upsert_consent(&consent("no-such-user", "c1", &["x"], NOW))
            .await,
        "consent of a missing user",
    );

    store.delete_consent("u1", "c1").await.unwrap();
    assert_eq!(store.get_consent("u1", "c1").await.unwrap(), None);
    assert_not_found(store.delete_consent("u1", "c1").await, "second delete");
    assert_not_found(
        store.delete_consent("u2", "c2").await,
        "delete unknown consent",
    );
    assert_eq!(store.list_consents("c1").await.unwrap(), [u2]);
    assert_eq!(
        store.get_consent("u1", "c2").await.unwrap(),
        Some(other_client)
    );
}

async fn oauth_prune(store: Arc<dyn Store>) {
    oauth_fixture(&*store).await;
    store
        .create_grant(&oauth_grant("g1", "c1", Some("u1"), NOW))
        .await
        .unwrap();
    let cutoff = NOW + 1_000;
    // Of each kind: one expired before the cutoff, one at it, one after.
    for (tag, exp) in [("old", cutoff - 1), ("at", cutoff), ("new", cutoff + 1)] {
        store
            .create_code(&auth_code(&format!("code-{tag}"), "c1", "u1", exp))
            .await
            .unwrap();
        store
            .create_refresh_token(&refresh_token(&format!("rt-{tag}"), "g1", "c1", exp))
            .await
            .unwrap();
        store
            .create_access_token(&access_token(&format!("at-{tag}"), Some("g1"), "c1", exp))
            .await
            .unwrap();
        store.revoke_jti(&format!("jti-{tag}"), exp).await.unwrap();
        assert!(
            store
                .use_once(&format!("use-{tag}"), exp, NOW)
                .await
                .unwrap()
        );
    }
    // Long expired, and a spent refresh token still valid.
    store
        .create_code(&auth_code("code-ancient", "c2", "u2", 1))
        .await
        .unwrap();
    let mut spent = refresh_token("rt-spent", "g1", "c1", cutoff + 10);
    spent.spent_at = Some(NOW);
    store.create_refresh_token(&spent).await.unwrap();

    assert_eq!(store.prune_oauth(cutoff).await.unwrap(), 6);

    let g = |i: &str| oauth_grant(&format!("probe-{i}"), "c1", Some("u1"), NOW);
    for (tag, kept) in [("old", false), ("at", true), ("new", true)] {
        // A code that is still there is found (as expired at this time).
        let redeemed = store
            .redeem_code(&digest(&format!("code-{tag}")), NOW, &g(tag))
            .await
            .unwrap();
        assert_eq!(matches!(redeemed, Redeem::Fresh(_)), kept, "code-{tag}");
        assert_eq!(
            store
                .refresh_token_by_digest(&digest(&format!("rt-{tag}")))
                .await
                .unwrap()
                .is_some(),
            kept,
            "rt-{tag}"
        );
        assert_eq!(
            store
                .access_token_by_digest(&digest(&format!("at-{tag}")))
                .await
                .unwrap()
                .is_some(),
            kept,
            "at-{tag}"
        );
        assert_eq!(
            store.is_jti_revoked(&format!("jti-{tag}")).await.unwrap(),
            kept,
            "jti-{tag}"
        );
        // A pruned one-time id is free again; a kept one is still used.
        assert_eq!(
            store
                .use_once(&format!("use-{tag}"), cutoff + 5, NOW)
                .await
                .unwrap(),
            !kept,
            "use-{tag}"
        );
    }
    assert_eq!(
        store
            .redeem_code(&digest("code-ancient"), 0, &g("ancient"))
            .await
            .unwrap(),
        Redeem::Unknown
    );
    assert_eq!(
        store
            .refresh_token_by_digest(&digest("rt-spent"))
            .await
            .unwrap(),
        Some(spent)
    );
    // Grants, clients, users are not pruned.
    assert_eq!(store.get_grant("g1").await.unwrap().id, "g1");
    assert_eq!(store.get_client("c2").await.unwrap().id, "c2");
    assert_eq!(store.get_user("u2").await.unwrap().id, "u2");
    assert_eq!(store.prune_oauth(cutoff).await.unwrap(), 0);
}

/// A sink that records what the change feed says.
#[derive(Default)]
struct Recorder {
    changes: Mutex<Vec<Change>>,
    resumed: AtomicUsize,
    lost: AtomicUsize,
}

impl ChangeSink for Recorder {
    fn changed(&self, change: Change) {
        self.changes.lock().unwrap().push(change);
    }
    fn lost(&self) {
        self.lost.fetch_add(1, Ordering::SeqCst);
    }
    fn resumed(&self) {
        self.resumed.fetch_add(1, Ordering::SeqCst);
    }
}

impl Recorder {
    /// Waits (a few seconds at most) until `change` has been told.
    async fn wait_for(&self, change: &Change, after: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.changes.lock().unwrap().contains(change) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{after}: no {change:?} within 5 s; told: {:?}",
                self.changes.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn digest32(tag: &str) -> [u8; 32] {
    <[u8; 32]>::try_from(digest(tag)).unwrap()
}

async fn oauth_change_feed(store: Arc<dyn Store>) {
    // What exists before the feed starts.
    oauth_fixture(&*store).await;
    store
        .create_client(&oauth_client("c3", "o1", NOW))
        .await
        .unwrap();
    store
        .create_grant(&oauth_grant("g1", "c1", Some("u1"), NOW))
        .await
        .unwrap();
    store
        .create_grant(&oauth_grant("g-c2", "c2", Some("u1"), NOW))
        .await
        .unwrap();
    store
        .create_grant(&oauth_grant("g-u2", "c3", Some("u2"), NOW))
        .await
        .unwrap();
    store
        .create_grant(&oauth_grant("g-u1-c3", "c3", Some("u1"), NOW))
        .await
        .unwrap();
    let far = NOW + 3_600_000;
    store
        .create_access_token(&access_token("at1", Some("g1"), "c1", far))
        .await
        .unwrap();
    store
        .create_access_token(&access_token("at-old", None, "c1", NOW))
        .await
        .unwrap();
    assert!(
        store
            .add_first_signing_key(&signing_key("k1", NOW))
            .await
            .unwrap()
    );

    let recorder = Arc::new(Recorder::default());
    let sink: Arc<dyn ChangeSink> = recorder.clone();
    let follower = {
        let store = store.clone();
        tokio::spawn(async move { store.follow_changes(sink).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while recorder.resumed.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the change feed never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // What happened before it started is not told (it is covered by resumed).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let early = recorder.changes.lock().unwrap().clone();
    assert!(early.is_empty(), "told before any change: {early:?}");

    let patch = ClientPatch {
        name: Some("renamed".to_owned()),
        updated_at: NOW + 1,
        ..ClientPatch::default()
    };
    store.update_client("c1", &patch).await.unwrap();
    recorder
        .wait_for(&Change::Client("c1".to_owned()), "update_client")
        .await;

    store
        .set_client_secret("c3", Some(&digest("new")), None, NOW + 2)
        .await
        .unwrap();
    recorder
        .wait_for(&Change::Client("c3".to_owned()), "set_client_secret")
        .await;

    // Deleting a client tells it and the grants that went with it.
    store.delete_client("c2").await.unwrap();
    recorder
        .wait_for(&Change::Client("c2".to_owned()), "delete_client")
        .await;
    recorder
        .wait_for(&Change::Grant("g-c2".to_owned()), "delete_client")
        .await;

    store.revoke_grant("g1", NOW + 3).await.unwrap();
    recorder
        .wait_for(&Change::Grant("g1".to_owned()), "revoke_grant")
        .await;

    assert_eq!(
        store.revoke_user_grants("u1", "c3", NOW + 3).await.unwrap(),
        1
    );
    recorder
        .wait_for(&Change::Grant("g-u1-c3".to_owned()), "revoke_user_grants")
        .await;

    // So does deleting a user, for their grants.
    store.delete_user("u2").await.unwrap();
    recorder
        .wait_for(&Change::Grant("g-u2".to_owned()), "delete_user")
        .await;

    store
        .revoke_access_token(&digest("at1"), NOW + 4)
        .await
        .unwrap();
    recorder
        .wait_for(&Change::AccessToken(digest32("at1")), "revoke_access_token")
        .await;

    store.revoke_jti("jti:42/ü", far).await.unwrap();
    recorder
        .wait_for(&Change::RevokedJti("jti:42/ü".to_owned()), "revoke_jti")
        .await;

    store
        .rotate_signing_key(&signing_key("k2", NOW + 5))
        .await
        .unwrap();
    recorder
        .wait_for(&Change::SigningKeys, "rotate_signing_key")
        .await;

    // Pruning an expired opaque token tells it too.
    assert!(store.prune_oauth(NOW + 1).await.unwrap() >= 1);
    recorder
        .wait_for(&Change::AccessToken(digest32("at-old")), "prune_oauth")
        .await;

    follower.abort();
    assert_eq!(recorder.lost.load(Ordering::SeqCst), 0);
    assert_eq!(recorder.resumed.load(Ordering::SeqCst), 1);
    // Nothing but what was asked for was told about (no stray records).
    let told = recorder.changes.lock().unwrap().clone();
    for change in &told {
        let expected = [
            Change::Client("c1".to_owned()),
            Change::Client("c2".to_owned()),
            Change::Client("c3".to_owned()),
            Change::Grant("g1".to_owned()),
            Change::Grant("g-c2".to_owned()),
            Change::Grant("g-u2".to_owned()),
            Change::Grant("g-u1-c3".to_owned()),
            Change::AccessToken(digest32("at1")),
            Change::AccessToken(digest32("at-old")),
            Change::RevokedJti("jti:42/ü".to_owned()),
            Change::SigningKeys,
        ];
        assert!(
            expected.contains(change),
            "unexpected {change:?} in {told:?}"
        );
    }
}

// ---- console ------------------------------------------------------------

fn session(n: u8, users: &[&str], root: Option<&str>, at: i64) -> Session {
    Session {
        digest: vec![0x00, 0xff, n, 0x7f],
        user_ids: users.iter().map(|u| (*u).to_owned()).collect(),
        root_key_digest: root.map(digest),
        created_at: at,
        seen_at: at,
        expires_at: at + 1000,
    }
}

async fn console_sessions(store: Arc<dyn Store>) {
    let a = session(1, &["usr_a", "usr_b"], None, NOW);
    let r = session(2, &[], Some("rtk_1"), NOW + 10);
    store.create_session(&a).await.unwrap();
    store.create_session(&r).await.unwrap();
    assert_eq!(store.get_session(&a.digest).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_session(&r.digest).await.unwrap(), Some(r.clone()));
    assert_eq!(store.get_session(&[1, 2, 3]).await.unwrap(), None);
    assert_conflict(store.create_session(&a).await, "a session digest twice");

    // Activity only moves forward.
    store.touch_session(&a.digest, NOW + 50).await.unwrap();
    store.touch_session(&a.digest, NOW + 20).await.unwrap();
    let got = store.get_session(&a.digest).await.unwrap().unwrap();
    assert_eq!((got.seen_at, got.expires_at), (NOW + 50, NOW + 1000));

    // Sign-out is idempotent.
    store.delete_session(&a.digest).await.unwrap();
    store.delete_session(&a.digest).await.unwrap();
    assert_eq!(store.get_session(&a.digest).await.unwrap(), None);

    // Pruning takes the sessions that ended, only.
    assert_eq!(store.prune_sessions(NOW + 1009).await.unwrap(), 0);
    assert_eq!(store.prune_sessions(NOW + 1011).await.unwrap(), 1);
    assert_eq!(store.get_session(&r.digest).await.unwrap(), None);
}

async fn console_users_by_email_any_org(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    store_with_org(&*store, "o2").await;
    store_with_org(&*store, "o3").await;
    let u1 = oauth_user("u1", "o2", "ada@example.com", NOW);
    let u2 = oauth_user("u2", "o1", "ada@example.com", NOW + 1);
    let u3 = oauth_user("u3", "o3", "grace@example.com", NOW);
    for u in [&u1, &u2, &u3] {
        store.create_user(u).await.unwrap();
    }
    let got = store
        .users_by_email_any_org("ada@example.com", 10)
        .await
        .unwrap();
    assert_eq!(got, vec![u1.clone(), u2.clone()], "oldest first, every org");
    let one = store
        .users_by_email_any_org("ada@example.com", 1)
        .await
        .unwrap();
    assert_eq!(one, vec![u1]);
    assert!(
        store
            .users_by_email_any_org("nobody@example.com", 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.delete_user("u2").await.unwrap();
    assert_eq!(
        store
            .users_by_email_any_org("ada@example.com", 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn console_search_keys(store: Arc<dyn Store>) {
    store_with_org(&*store, "o1").await;
    store_with_org(&*store, "o2").await;
    let names = [
        ("k1", "Backend prod"),
        ("k2", "backend staging"),
        ("k3", "BACKEND"),
        ("k4", "frontend"),
        ("k5", "back office"),
        ("k6", "backend\u{e9}"),
    ];
    for (i, (id, name)) in names.iter().enumerate() {
        let mut k = key(id, "o1", NOW + i as i64);
        k.name = (*name).to_owned();
        k.start = format!("sk_live_{}x{i}", if i % 2 == 0 { "Ab" } else { "Cd" });
        store.create_key(&k).await.unwrap();
    }
    let mut other = key("k9", "o2", NOW);
    other.name = "backend".to_owned();
    other.start = "sk_live_Abx9".to_owned();
    store.create_key(&other).await.unwrap();

    let search = |search: KeySearch, limit: u32, after: Option<(String, String)>| {
        let store = store.clone();
        async move {
            let q = KeySearchQuery {
                org_id: "o1".to_owned(),
                search,
                limit,
                after,
            };
            ids(&store.search_keys(&q).await.unwrap(), |k| &k.id)
        }
    };
    // Any case; ordered by the lower-cased name, then id; other orgs never.
    let all = search(KeySearch::NamePrefix("BackEnd".into()), 50, None).await;
    assert_eq!(all, ["k3", "k1", "k2", "k6"]);
    assert_eq!(
        search(KeySearch::NamePrefix("back".into()), 50, None).await,
        ["k5", "k3", "k1", "k2", "k6"]
    );
    assert!(
        search(KeySearch::NamePrefix("zzz".into()), 50, None)
            .await
            .is_empty()
    );
    // Pages: after the (lower-cased name, id) of the last row.
    let first = search(KeySearch::NamePrefix("backend".into()), 2, None).await;
    assert_eq!(first, ["k3", "k1"]);
    let next = search(
        KeySearch::NamePrefix("backend".into()),
        2,
        Some(("backend prod".into(), "k1".into())),
    )
    .await;
    assert_eq!(next, ["k2", "k6"]);
    // By the key's start.
    assert_eq!(
        search(KeySearch::StartPrefix("sk_live_Ab".into()), 50, None).await,
        ["k1", "k3", "k5"]
    );
    assert_eq!(
        search(
            KeySearch::StartPrefix("sk_live_Ab".into()),
            50,
            Some(("sk_live_Abx0".into(), "k1".into()))
        )
        .await,
        ["k3", "k5"]
    );
    assert_eq!(
        search(KeySearch::StartPrefix("sk_live_Cdx3".into()), 50, None).await,
        ["k4"]
    );
    assert!(
        search(KeySearch::StartPrefix("sk_live_ab".into()), 50, None)
            .await
            .is_empty(),
        "a key's start is matched exactly, case included"
    );
    // Who created a key comes back with it.
    assert_eq!(
        store.get_key("k1").await.unwrap().created_by.as_deref(),
        Some("usr_creator")
    );
}

async fn console_log_hours(store: Arc<dyn Store>) {
    const H: i64 = 3_600_000;
    let base = (NOW / H) * H;
    let batch1 = vec![
        decision(1, Some("o1"), base + 5, Some(KEY_A), "VALID"),
        decision(2, Some("o1"), base + 6, Some(KEY_A), "VALID"),
        decision(3, Some("o1"), base + 7, Some(KEY_A), "KEY_REVOKED"),
        decision(4, Some("o1"), base + H + 1, Some(KEY_B), "VALID"),
        // Not counted: actions, org-less decisions, other orgs.
        action(5, Some("o1"), base + 8, "key.revoked", KEY_A),
        decision(6, None, base + 9, None, "INVALID_KEY"),
        decision(7, Some("o2"), base + 10, Some(KEY_B), "VALID"),
    ];
    store.insert_logs(&batch1).await.unwrap();
    // A second batch adds to the same hours.
    let batch2 = vec![
        decision(8, Some("o1"), base + 100, Some(KEY_A), "VALID"),
        decision(9, Some("o1"), base + 2 * H, Some(KEY_A), "RATE_LIMITED"),
    ];
    store.insert_logs(&batch2).await.unwrap();
    let hc = |hour: i64, code: &str, n: i64| HourCount {
        hour,
        code: code.to_owned(),
        n,
    };
    assert_eq!(
        store.log_hours("o1", base, base + 3 * H).await.unwrap(),
        vec![
            hc(base, "KEY_REVOKED", 1),
            hc(base, "VALID", 3),
            hc(base + H, "VALID", 1),
            hc(base + 2 * H, "RATE_LIMITED", 1),
        ]
    );
    assert_eq!(
        store.log_hours("o1", base + H, base + 2 * H).await.unwrap(),
        vec![hc(base + H, "VALID", 1)],
        "hours starting in [since, until)"
    );
    assert_eq!(
        store.log_hours("o2", base, base + 3 * H).await.unwrap(),
        vec![hc(base, "VALID", 1)]
    );
    // Retention drops the hours that ended before the cut, with the entries.
    store.prune_logs(base + H + 2).await.unwrap();
    assert_eq!(
        store.log_hours("o1", base, base + 3 * H).await.unwrap(),
        vec![
            hc(base + H, "VALID", 1),
            hc(base + 2 * H, "RATE_LIMITED", 1)
        ]
    );
}

async fn console_logs_window(store: Arc<dyn Store>) {
    // 60 entries of o1, one a millisecond: every 7th on KEY_B, the rest
    // on KEY_A; every 10th refused.
    let entries: Vec<LogEntry> = (0..60)
        .map(|n| {
            let k = if n % 7 == 0 { KEY_B } else { KEY_A };
            let code = if n % 10 == 0 { "KEY_REVOKED" } else { "VALID" };
            decision(n, Some("o1"), NOW + n as i64, Some(k), code)
        })
        .collect();
    store.insert_logs(&entries).await.unwrap();
    let want_b: Vec<String> = (0..60).rev().filter(|n| n % 7 == 0).map(log_id).collect();

    // Without a key or code filter, the window changes nothing.
    let plain = store
        .list_logs_window(&log_query("o1", 5), 3)
        .await
        .unwrap();
    assert_eq!(plain.entries.len(), 5);
    assert_eq!(plain.scanned_to, None);

    // With one, a read looks at `window` entries at most and says where it
    // stopped; reads going on from there find every match once.
    let mut q = LogQuery {
        key_id: Some(KEY_B.to_owned()),
        ..log_query("o1", 50)
    };
    let first = store.list_logs_window(&q, 20).await.unwrap();
    assert_eq!(
        ids(&first.entries, |e| &e.id),
        [log_id(56), log_id(49), log_id(42)]
    );
    assert_eq!(first.scanned_to, Some((NOW + 40, log_id(40))));
    let mut found = Vec::new();
    let mut reads = 0;
    loop {
        let w = store.list_logs_window(&q, 20).await.unwrap();
        reads += 1;
        found.extend(ids(&w.entries, |e| &e.id));
        match w.scanned_to {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(found, want_b);
    assert_eq!(reads, 3, "60 entries, 20 a read: the third finds the end");

    // The window counts the entries in the time range only.
    let ranged = store
        .list_logs_window(
            &LogQuery {
                code: Some("KEY_REVOKED".to_owned()),
                since: Some(NOW + 15),
                until: Some(NOW + 45),
                ..log_query("o1", 50)
            },
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        ids(&ranged.entries, |e| &e.id),
        [log_id(40), log_id(30), log_id(20)]
    );
    assert_eq!(ranged.scanned_to, None);
    // The page's limit still holds inside a window.
    let limited = store
        .list_logs_window(
            &LogQuery {
                key_id: Some(KEY_A.to_owned()),
                ..log_query("o1", 4)
            },
            30,
        )
        .await
        .unwrap();
    assert_eq!(
        ids(&limited.entries, |e| &e.id),
        [log_id(59), log_id(58), log_id(57), log_id(55)]
    );
}
