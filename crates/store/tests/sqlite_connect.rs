//! SQLite-specific: URL forms, file creation and connection settings.

// Test helpers live outside #[test] functions, where clippy.toml does not reach.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use latchkey_store::{Org, SqliteStore, Store};
use sqlx::Row;

async fn pragma(store: &SqliteStore, name: &str) -> String {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA {name}")))
        .fetch_one(store.pool())
        .await
        .unwrap();
    match row.try_get::<String, _>(0) {
        Ok(s) => s,
        Err(_) => row.try_get::<i64, _>(0).unwrap().to_string(),
    }
}

async fn round_trip(store: &dyn Store) {
    store.migrate().await.unwrap();
    let org = Org {
        id: "o1".to_owned(),
        name: "One".to_owned(),
        created_at: 1,
    };
    store.create_org(&org).await.unwrap();
    assert_eq!(store.get_org("o1").await.unwrap(), org);
}

#[tokio::test]
async fn url_forms_create_the_file_and_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().display().to_string();
    assert!(base.starts_with('/'));
    for (url, file) in [
        (format!("sqlite://{base}/a/b/one.db"), "a/b/one.db"),
        (format!("sqlite:{base}/c/two.db"), "c/two.db"),
        (format!("sqlite://{base}/three.db?mode=rwc"), "three.db"),
    ] {
        let store = SqliteStore::connect(&url).await.unwrap();
        round_trip(&store).await;
        store.close().await;
        assert!(
            dir.path().join(file).is_file(),
            "{url} did not create {file}"
        );
    }
    // Reopening an existing file keeps its data.
    let store = SqliteStore::connect(&format!("sqlite:{base}/c/two.db"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.get_org("o1").await.unwrap().name, "One");
}

#[tokio::test]
async fn connection_settings() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/s.db", dir.path().display());
    let store = SqliteStore::connect(&url).await.unwrap();
    assert_eq!(pragma(&store, "journal_mode").await, "wal");
    assert_eq!(pragma(&store, "foreign_keys").await, "1");
    assert_eq!(pragma(&store, "synchronous").await, "1"); // NORMAL
    assert_eq!(pragma(&store, "busy_timeout").await, "5000");
    assert_eq!(store.backend(), "sqlite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_is_shared_by_the_pool() {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    round_trip(&store).await;
    // Many concurrent readers use several pooled connections; all of them
    // see the same database.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.get_org("o1").await.map(|o| o.name)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "One");
    }
    // A second in-memory store is a different database.
    let other = SqliteStore::connect("sqlite::memory:").await.unwrap();
    other.migrate().await.unwrap();
    assert!(other.get_org("o1").await.is_err());
}
