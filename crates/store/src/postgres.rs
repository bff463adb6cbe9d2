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
        Ok(Self { pool })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
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
        ])
    }

    async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Postgres>> {
        self.pool.begin().await
    }
}

impl PgStore {
    async fn follow(&self, sink: std::sync::Arc<dyn crate::ChangeSink>) {
        crate::changes::follow_postgres(self.pool.clone(), sink).await
    }

    async fn lookup_key(&self, digest: &[u8]) -> Result<Option<crate::ApiKey>> {
        self.sqlx_key_by_digest(digest).await
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
    crate::sql::PG_TOUCH_ROOT_KEYS
);
