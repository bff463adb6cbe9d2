//! The SQLite store's hot-path reads (a key by its digest), on plain
//! rusqlite connections called in place. sqlx runs each SQLite statement
//! on a worker thread of its own and answers over a channel; for a lookup
//! that takes SQLite a few microseconds, those hand-offs cost ten times the
//! work. Writes and everything else stay on sqlx.
//!
//! The readers see every committed write at once: WAL readers start a new
//! snapshot with each statement outside a transaction.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};

use crate::common::{decode_metadata, decode_scopes};
use crate::{ApiKey, Result, RootKey, StoreError};

/// How much of the database file the readers map (address space, not memory).
const MMAP_SIZE: i64 = 1 << 30;

/// Idle reader connections kept open.
const MAX_IDLE: usize = 8;

#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    /// The usage log's writer: one connection, one prepared statement.
    log_writer: Mutex<Option<Connection>>,
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError::Corrupt(format!("sqlite read: {e}"))
}

impl Readers {
    pub(crate) fn new(path: PathBuf, busy_timeout: Duration) -> Self {
        Self {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
            log_writer: Mutex::new(None),
        }
    }

    /// Writes usage log entries in one transaction, one prepared `INSERT`
    /// per row: no statement to parse per batch, no hand-off per row.
    /// Blocking: call it from `spawn_blocking`.
    pub(crate) fn write_logs(&self, entries: &[crate::LogEntry]) -> Result<()> {
        let mut slot = self
            .log_writer
            .lock()
            .map_err(|_| StoreError::Corrupt("log writer poisoned".into()))?;
        let conn = match slot.take() {
            Some(c) => c,
            None => self.open()?,
        };
        let res = insert_logs(&conn, entries);
        if res.is_ok() {
            *slot = Some(conn);
        }
        res.map_err(|e| StoreError::Corrupt(format!("sqlite log write: {e}")))
    }

    fn open(&self) -> Result<Connection> {
        // Read-write without create: a read-only handle cannot set up the
        // WAL index if it has to; this one never writes.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(err)?;
        conn.busy_timeout(self.busy_timeout).map_err(err)?;
        // Map the file: a page is then a memory read rather than a read()
        // system call into the kernel's page cache, for every lookup that
        // misses this connection's own page cache.
        conn.pragma_update(None, "mmap_size", MMAP_SIZE)
            .map_err(err)?;
        // As on sqlx's connections: in WAL mode, a commit then waits for
        // no fsync (only checkpoints do). Per connection, and the default
        // (FULL) made every usage-log batch an fsync of the WAL; a crash
        // of the machine may lose the last batch, never half of one.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.set_prepared_statement_cache_capacity(8);
        Ok(conn)
    }

    /// Runs `f` on an idle connection (or a new one), in place. A lookup
    /// by digest reads a few pages of a mapped file: microseconds, less
    /// than `block_in_place` or `spawn_blocking` would cost to hand it off.
    fn with<R>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> Result<R> {
        let run = || {
            let conn = match self
                .idle
                .lock()
                .map_err(|_| StoreError::Corrupt("reader pool poisoned".into()))?
                .pop()
            {
                Some(c) => c,
                None => self.open()?,
            };
            let out = f(&conn).map_err(err);
            if let Ok(mut idle) = self.idle.lock()
                && idle.len() < MAX_IDLE
            {
                idle.push(conn);
            }
            out
        };
        run()
    }

    pub(crate) fn key_by_digest(&self, digest: &[u8]) -> Result<Option<ApiKey>> {
        let row = self.with(|c| {
            c.prepare_cached(crate::sql::KEY_BY_DIGEST)?
                .query_row([digest], raw_key)
                .optional()
        })?;
        row.map(RawKey::into_key).transpose()
    }

    pub(crate) fn root_key_by_digest(&self, digest: &[u8]) -> Result<Option<RootKey>> {
        self.with(|c| {
            c.prepare_cached(crate::sql::ROOT_KEY_BY_DIGEST)?
                .query_row([digest], |r| {
                    let scopes: String = r.get("scopes")?;
                    Ok(RootKey {
                        id: r.get("id")?,
                        name: r.get("name")?,
                        start: r.get("start")?,
                        digest: r.get("digest")?,
                        scopes: decode_scopes(&scopes),
                        created_at: r.get("created_at")?,
                        revoked_at: r.get("revoked_at")?,
                        last_used_at: r.get("last_used_at")?,
                    })
                })
                .optional()
        })
    }
}

/// A key row before its JSON is parsed (which may fail as `Corrupt`).
struct RawKey {
    key: ApiKey,
    scopes: String,
    metadata: String,
    ip_allowlist: String,
}

impl RawKey {
    fn into_key(self) -> Result<ApiKey> {
        let RawKey {
            mut key,
            scopes,
            metadata,
            ip_allowlist,
        } = self;
        key.scopes = decode_scopes(&scopes);
        key.ip_allowlist = decode_scopes(&ip_allowlist);
        key.metadata = decode_metadata(&key.id, &metadata)?;
        Ok(key)
    }
}

/// A key row by column position, in [`crate::sql::key_cols`]'s order: by
/// name, rusqlite compares the name with every column's (26 of them) for
/// each value, a tenth of a cold lookup (the test below keeps the order).
fn raw_key(r: &Row<'_>) -> rusqlite::Result<RawKey> {
    Ok(RawKey {
        scopes: r.get(7)?,
        metadata: r.get(9)?,
        key: ApiKey {
            id: r.get(0)?,
            org_id: r.get(1)?,
            name: r.get(2)?,
            kind: r.get(3)?,
            environment: r.get(4)?,
            start: r.get(5)?,
            digest: r.get(6)?,
            scopes: Vec::new(),
            external_id: r.get(8)?,
            metadata: serde_json::Value::Null,
            created_at: r.get(10)?,
            updated_at: r.get(11)?,
            expires_at: r.get(12)?,
            revoked_at: r.get(13)?,
            revoke_reason: r.get(14)?,
            replaced_by: r.get(15)?,
            rotated_from: r.get(16)?,
            last_used_at: r.get(17)?,
            ratelimit: crate::common::key_ratelimit(r.get(18)?, r.get(19)?),
            ip_allowlist: Vec::new(),
            credits: crate::common::key_credits(r.get(21)?, r.get(22)?, r.get(23)?, r.get(24)?),
            created_by: r.get(25)?,
        },
        ip_allowlist: r.get(20)?,
    })
}

const INSERT_LOG: &str = concat!(
    "INSERT INTO logs (id, org_id, at, kind, request_id, credential_type, key_id, client_id, ",
    "code, status, method, path, ip, user_agent, latency_us, actor, action, target) ",
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
);

fn insert_logs(conn: &Connection, entries: &[crate::LogEntry]) -> rusqlite::Result<()> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut stmt = tx.prepare_cached(INSERT_LOG)?;
        for e in entries {
            let r = crate::logs::LogRow::of(&e.event);
            stmt.execute(rusqlite::params![
                e.id,
                e.org_id,
                e.time,
                e.event.kind(),
                e.request_id,
                r.credential_type,
                r.key_id,
                r.client_id,
                r.code,
                r.status,
                r.method,
                r.path,
                r.ip,
                r.user_agent,
                r.latency_us,
                r.actor,
                r.action,
                r.target,
            ])?;
        }
        let mut add = tx.prepare_cached(crate::console::sql::ADD_LOG_HOUR)?;
        for (org, hour, code, n) in crate::logs::hour_counts(entries) {
            add.execute(rusqlite::params![org, hour, code, n])?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    /// The log writer (and every reader) commits without an fsync of the
    /// WAL, as the sqlx pool does.
    #[test]
    fn connections_commit_without_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        rusqlite::Connection::open(&path)
            .unwrap()
            .pragma_update(None, "journal_mode", "WAL")
            .unwrap();
        let readers = super::Readers::new(path, std::time::Duration::from_secs(1));
        let conn = readers.open().unwrap();
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "synchronous = NORMAL");
    }

    /// `raw_key` reads by position: these are the positions it uses.
    #[test]
    fn raw_key_positions_follow_key_cols() {
        let cols: Vec<&str> = crate::sql::key_cols!().split(", ").collect();
        let used = [
            ("id", 0),
            ("org_id", 1),
            ("name", 2),
            ("kind", 3),
            ("environment", 4),
            ("start", 5),
            ("digest", 6),
            ("scopes", 7),
            ("external_id", 8),
            ("metadata", 9),
            ("created_at", 10),
            ("updated_at", 11),
            ("expires_at", 12),
            ("revoked_at", 13),
            ("revoke_reason", 14),
            ("replaced_by", 15),
            ("rotated_from", 16),
            ("last_used_at", 17),
            ("ratelimit_limit", 18),
            ("ratelimit_window_ms", 19),
            ("ip_allowlist", 20),
            ("remaining", 21),
            ("refill_amount", 22),
            ("refill_interval_ms", 23),
            ("refilled_at", 24),
            ("created_by", 25),
        ];
        assert_eq!(cols.len(), used.len());
        for (name, at) in used {
            assert_eq!(cols.get(at).map(|c| c.trim()), Some(name), "column {at}");
        }
    }
}
