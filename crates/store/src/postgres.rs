//! PostgreSQL.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::Result;
use crate::common::{db_err, embedded_migrator, impl_store};

const MAX_CONNECTIONS: u32 = 16;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL store. Transactions run at READ COMMITTED; every
/// check-then-write is a conditional `UPDATE`, which PostgreSQL re-evaluates
/// against the latest row version after waiting for a concurrent writer.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Key lookups by digest, coalesced into shared round trips.
    lookups: crate::pg_lookup::KeyLookups,
}

impl PgStore {
    /// Connects to `url` (`postgres://...`). Does not migrate.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // No ping before each use: it doubles the round trips of every
            // lookup. A broken connection fails its query, is dropped, and
            // /readyz tells when the database is gone.
            .test_before_acquire(false)
            .connect(url)
            .await
            .map_err(db_err)?;
        let lookups = crate::pg_lookup::KeyLookups::start(url)?;
        Ok(Self { pool, lookups })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.lookups.close().await;
        self.pool.close().await;
    }

    fn migrator() -> Migrator {
        embedded_migrator(&[
            (
                1,
                "initial",
                include_str!("../migrations/postgres/0001_initial.sql"),
            ),
            (
                2,
                "changes",
                include_str!("../migrations/postgres/0002_changes.sql"),
            ),
            (
                3,
                "key limits",
                include_str!("../migrations/postgres/0003_key_limits.sql"),
            ),
            (
                4,
                "logs",
                include_str!("../migrations/postgres/0004_logs.sql"),
            ),
            (
                5,
                "oauth",
                include_str!("../migrations/postgres/0005_oauth.sql"),
            ),
            (
                6,
                "used jtis",
                include_str!("../migrations/postgres/0006_used_jtis.sql"),
            ),
            (
                7,
                "console",
                include_str!("../migrations/postgres/0007_console.sql"),
            ),
        ])
    }

    async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Postgres>> {
        self.pool.begin().await
    }
}

/// The hourly counts of a batch (`log_hours`), one statement: each
/// (organization, hour, code) appears once in the arrays.
const ADD_LOG_HOURS: &str = concat!(
    "INSERT INTO log_hours (org_id, hour, code, n) ",
    "SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[]) ",
    "ON CONFLICT (org_id, hour, code) DO UPDATE SET n = log_hours.n + excluded.n"
);

impl PgStore {
    /// Most log entries per transaction.
    const LOG_CHUNK: usize = 10_000;

    async fn write_logs(&self, chunk: &[crate::LogEntry]) -> Result<()> {
        // A batch goes in by `COPY`, the cheapest way into PostgreSQL for
        // both sides: one text buffer written straight from the entries, in
        // the order of LOG_COLS (no per-column arrays, no `UNNEST`).
        let copy_logs = format!("COPY logs ({}) FROM STDIN", crate::logs::LOG_COLS);
        let data = crate::logs::copy_text(chunk);
        // A batch of usage log entries may be lost in a crash of the
        // database server (never half-written): no wait for the WAL flush.
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query("SET LOCAL synchronous_commit TO OFF")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        // On an error the COPY is dropped, which fails it, and so is the
        // transaction, which rolls back: nothing half-written.
        let mut copy = tx.copy_in_raw(&copy_logs).await.map_err(db_err)?;
        copy.send(data).await.map_err(db_err)?;
        copy.finish().await.map_err(db_err)?;
        let hours = crate::logs::hour_counts(chunk);
        if !hours.is_empty() {
            let mut orgs = Vec::with_capacity(hours.len());
            let mut starts = Vec::with_capacity(hours.len());
            let mut codes = Vec::with_capacity(hours.len());
            let mut ns = Vec::with_capacity(hours.len());
            for (org, hour, code, n) in hours {
                orgs.push(org);
                starts.push(hour);
                codes.push(code);
                ns.push(n);
            }
            sqlx::query(ADD_LOG_HOURS)
                .bind(orgs)
                .bind(starts)
                .bind(codes)
                .bind(ns)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn follow(&self, sink: std::sync::Arc<dyn crate::ChangeSink>) {
        crate::changes::follow_postgres(self.pool.clone(), sink).await
    }

    async fn lookup_key(&self, digest: &[u8]) -> Result<Option<crate::ApiKey>> {
        self.lookups.key_by_digest(digest).await
    }

    async fn lookup_root_key(&self, digest: &[u8]) -> Result<Option<crate::RootKey>> {
        self.sqlx_root_key_by_digest(digest).await
    }
}

impl_store!(
    PgStore,
    Postgres,
    "postgres",
    crate::sql::PG_TOUCH_KEYS,
    crate::sql::PG_TOUCH_ROOT_KEYS,
    crate::sql::PG_PRUNE_LOGS
);

impl PgStore {
    /// Serializes the writers of signing keys that read them first: the
    /// first-key insert of nodes starting at once (its `WHERE NOT EXISTS`
    /// alone would let two in) and rotations (each retires the keys in use,
    /// which must include the key of a rotation that just committed).
    async fn lock_signing_keys(&self, tx: &mut Transaction<'static, Postgres>) -> Result<()> {
        sqlx::query("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

crate::oauth::impl_oauth_store!(PgStore, Postgres);
crate::console::impl_console_store!(PgStore, Postgres, crate::console::PG_SEARCH, |s: &str| s
    .to_lowercase());
