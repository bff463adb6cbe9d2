//! Embedded SQLite: one file, WAL journal, a small pool.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use crate::Result;
use crate::common::{db_err, embedded_migrator, impl_store};

const MAX_CONNECTIONS: u32 = 8;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite store. Readers run concurrently (WAL); writers queue on
/// SQLite's lock, waiting up to [`BUSY_TIMEOUT`] for it.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Hot-path reads on a file database; `None` in memory, where only
    /// sqlx's connections can see the data.
    readers: Option<std::sync::Arc<crate::sqlite_read::Readers>>,
}

impl SqliteStore {
    /// Opens (creating if missing, with its parent directory) the database
    /// named by `url`: `sqlite://./path/to.db`, `sqlite:path/to.db`,
    /// `sqlite:///abs/path.db` or `sqlite::memory:`. Does not migrate.
    pub async fn connect(url: &str) -> Result<Self> {
        let in_memory = is_in_memory(url);
        let options = SqliteConnectOptions::from_str(url)
            .map_err(db_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Normal);

        if !in_memory
            && let Some(parent) = options.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| db_err(sqlx::Error::Io(e)))?;
        }

        // No ping before each use: a round trip through the connection's
        // worker thread for nothing, on a file that cannot go away.
        let mut pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .test_before_acquire(false);
        if in_memory {
            // An in-memory database lives as long as one connection to it.
            pool = pool
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let readers = (!in_memory).then(|| {
            let path = options.get_filename().to_path_buf();
            std::sync::Arc::new(crate::sqlite_read::Readers::new(path, BUSY_TIMEOUT))
        });
        let pool = pool.connect_with(options).await.map_err(db_err)?;
        Ok(Self { pool, readers })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn migrator() -> Migrator {
        embedded_migrator(&[
            (
                1,
                "initial",
                include_str!("../migrations/sqlite/0001_initial.sql"),
            ),
            (
                2,
                "changes",
                include_str!("../migrations/sqlite/0002_changes.sql"),
            ),
            (
                3,
                "key limits",
                include_str!("../migrations/sqlite/0003_key_limits.sql"),
            ),
            (
                4,
                "logs",
                include_str!("../migrations/sqlite/0004_logs.sql"),
            ),
            (
                5,
                "oauth",
                include_str!("../migrations/sqlite/0005_oauth.sql"),
            ),
            (
                6,
                "used jtis",
                include_str!("../migrations/sqlite/0006_used_jtis.sql"),
            ),
            (
                7,
                "console",
                include_str!("../migrations/sqlite/0007_console.sql"),
            ),
        ])
    }

    /// A transaction that takes SQLite's write lock up front, so it never
    /// has to upgrade a read lock (which fails with `SQLITE_BUSY` at once,
    /// without honouring `busy_timeout`, when another writer got there first).
    async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }
}

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

impl SqliteStore {
    /// Most log entries per transaction: the log recorder's whole batch.
    /// Every commit changes the file, and every reader then drops its map
    /// of the file and faults its pages in again (SQLite unmaps on any
    /// change): one commit per batch, not one per thousand entries.
    const LOG_CHUNK: usize = 5_000;
    /// Most log entries per multi-row `INSERT` (18 parameters each, under
    /// SQLite's limit of 32,766).
    const LOG_STATEMENT_ROWS: usize = 1_000;

    /// On a file: rusqlite, one prepared statement, off the async threads.
    /// In memory (only sqlx's connections see the data): multi-row
    /// `INSERT`s in one transaction.
    async fn write_logs(&self, chunk: &[crate::LogEntry]) -> Result<()> {
        if let Some(readers) = &self.readers {
            let readers = readers.clone();
            let chunk = chunk.to_vec();
            return tokio::task::spawn_blocking(move || readers.write_logs(&chunk))
                .await
                .map_err(|e| crate::StoreError::Corrupt(format!("log writer: {e}")))?;
        }
        let mut tx = self.begin_write().await.map_err(db_err)?;
        for part in chunk.chunks(Self::LOG_STATEMENT_ROWS) {
            let mut qb = sqlx::QueryBuilder::<Sqlite>::new("INSERT INTO logs (");
            qb.push(crate::logs::LOG_COLS).push(") ");
            qb.push_values(part, |mut b, e| {
                let r = crate::logs::LogRow::of(&e.event);
                let s = |v: Option<&str>| v.map(str::to_owned);
                b.push_bind(e.id.clone())
                    .push_bind(e.org_id.clone())
                    .push_bind(e.time)
                    .push_bind(e.event.kind())
                    .push_bind(e.request_id.clone())
                    .push_bind(s(r.credential_type))
                    .push_bind(s(r.key_id))
                    .push_bind(s(r.client_id))
                    .push_bind(s(r.code))
                    .push_bind(r.status)
                    .push_bind(s(r.method))
                    .push_bind(s(r.path))
                    .push_bind(s(r.ip))
                    .push_bind(s(r.user_agent))
                    .push_bind(r.latency_us)
                    .push_bind(s(r.actor))
                    .push_bind(s(r.action))
                    .push_bind(s(r.target));
            });
            // Parts differ in size: not worth a prepared statement each.
            qb.build()
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        for (org, hour, code, n) in crate::logs::hour_counts(chunk) {
            sqlx::query(crate::console::sql::ADD_LOG_HOUR)
                .bind(org)
                .bind(hour)
                .bind(code)
                .bind(n)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn follow(&self, sink: std::sync::Arc<dyn crate::ChangeSink>) {
        crate::changes::follow_sqlite(self.pool.clone(), sink).await
    }

    async fn lookup_key(&self, digest: &[u8]) -> Result<Option<crate::ApiKey>> {
        match &self.readers {
            Some(r) => r.key_by_digest(digest),
            None => {
                let row = sqlx::query(crate::sql::KEY_BY_DIGEST)
                    .bind(digest)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_err)?;
                row.as_ref().map(crate::common::api_key).transpose()
            }
        }
    }

    async fn lookup_root_key(&self, digest: &[u8]) -> Result<Option<crate::RootKey>> {
        match &self.readers {
            Some(r) => r.root_key_by_digest(digest),
            None => self.sqlx_root_key_by_digest(digest).await,
        }
    }
}

impl_store!(
    SqliteStore,
    Sqlite,
    "sqlite",
    crate::sql::SQLITE_TOUCH_KEYS,
    crate::sql::SQLITE_TOUCH_ROOT_KEYS,
    crate::sql::SQLITE_PRUNE_LOGS
);

impl SqliteStore {
    /// Writers already hold SQLite's one write lock (`BEGIN IMMEDIATE`).
    async fn lock_signing_keys(&self, _tx: &mut Transaction<'static, Sqlite>) -> Result<()> {
        Ok(())
    }
}

crate::oauth::impl_oauth_store!(SqliteStore, Sqlite);
crate::console::impl_console_store!(
    SqliteStore,
    Sqlite,
    crate::console::SQLITE_SEARCH,
    |s: &str| s.to_ascii_lowercase()
);
