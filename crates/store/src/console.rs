//! What the console (SPEC §11) needs of the store beyond the management
//! API's records: its sessions, sign-in by email across organizations,
//! the API Keys page's search, the API Logs chart's hourly counts and a
//! bounded read of the log for the filters no index serves
//! ([`ConsoleStore`]).
//!
//! Every read here costs what the page shows, not what the tables hold:
//! each is one range of an index, cut at the page's end, or (the log's
//! `key_id` and `code` filters, which have no index: docs/decisions.md)
//! at most [`LogWindow::scanned`] entries.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::common::{decode_scopes, encode_scopes};
use crate::{ApiKey, LogEntry, LogQuery, Result};

/// A console session. The browser holds a random token; only its SHA-256
/// is kept here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 of the session token.
    pub digest: Vec<u8>,
    /// The accounts whose password was checked at sign-in (one email may
    /// have an account in several organizations).
    pub user_ids: Vec<String>,
    /// SHA-256 of the root key the session was opened with.
    pub root_key_digest: Option<Vec<u8>>,
    pub created_at: i64,
    /// Last activity (for the idle timeout).
    pub seen_at: i64,
    /// When the session ends whatever happens.
    pub expires_at: i64,
}

/// What the API Keys page searches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySearch {
    /// Names starting with this, in any case (ASCII case on SQLite, whose
    /// `lower()` folds ASCII only).
    NamePrefix(String),
    /// Keys whose `start` (`sk_live_AbCd`) begins with this.
    StartPrefix(String),
}

/// A page of a search: ordered by the searched column (names lower-cased)
/// then id; `after` is the `(name or start, id)` of the last row of the
/// previous page, as the key has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySearchQuery {
    pub org_id: String,
    pub search: KeySearch,
    pub limit: u32,
    pub after: Option<(String, String)>,
}

/// Decisions of one organization in one hour with one code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourCount {
    /// Start of the hour, ms since the Unix epoch.
    pub hour: i64,
    pub code: String,
    pub n: i64,
}

/// A page of the log read through a bounded window.
#[derive(Debug, Clone, PartialEq)]
pub struct LogWindow {
    /// The matching entries, newest first (at most the query's limit).
    pub entries: Vec<LogEntry>,
    /// Where the read stopped, when entries remain past it: the `(at, id)`
    /// of the last entry looked at. The next read goes on from there (as
    /// a cursor); `None` when the read reached the end.
    pub scanned_to: Option<(i64, String)>,
}

/// The hour an entry at `at` (ms) falls in.
pub fn hour_of(at: i64) -> i64 {
    at - at.rem_euclid(3_600_000)
}

#[async_trait]
pub trait ConsoleStore: Send + Sync + 'static {
    async fn create_session(&self, s: &Session) -> Result<()>;
    async fn get_session(&self, digest: &[u8]) -> Result<Option<Session>>;
    /// Records activity at `seen_at`.
    async fn touch_session(&self, digest: &[u8], seen_at: i64) -> Result<()>;
    /// Ends a session (idempotent).
    async fn delete_session(&self, digest: &[u8]) -> Result<()>;
    /// Deletes the sessions that ended before `now`; answers how many.
    async fn prune_sessions(&self, now: i64) -> Result<u64>;

    /// The accounts with this (lower-cased) email, in every organization,
    /// oldest first, at most `limit`.
    async fn users_by_email_any_org(
        &self,
        email: &str,
        limit: u32,
    ) -> Result<Vec<crate::oauth::User>>;

    /// A page of an organization's keys matching `q.search`.
    async fn search_keys(&self, q: &KeySearchQuery) -> Result<Vec<ApiKey>>;

    /// The organization's decisions per hour and code, for the hours
    /// starting in `[since, until)`, oldest first.
    async fn log_hours(&self, org_id: &str, since: i64, until: i64) -> Result<Vec<HourCount>>;

    /// Like [`Store::list_logs`](crate::Store::list_logs), but reading at
    /// most `window` of the organization's entries (in the query's time
    /// range, after its cursor, of its client if it names one) before
    /// filtering them by key and code. Without a key or code filter every
    /// filter has an index and this is `list_logs`.
    async fn list_logs_window(&self, q: &LogQuery, window: u32) -> Result<LogWindow>;
}

pub(crate) fn session<'r, R>(row: &'r R) -> Result<Session>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let ids: String = row.try_get("user_ids")?;
    Ok(Session {
        digest: row.try_get("digest")?,
        user_ids: decode_scopes(&ids),
        root_key_digest: row.try_get("root_key_digest")?,
        created_at: row.try_get("created_at")?,
        seen_at: row.try_get("seen_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

pub(crate) fn encode_ids(ids: &[String]) -> String {
    encode_scopes(ids)
}

/// The upper bound of the strings starting with `prefix`, in byte order:
/// nothing sorts after U+10FFFF.
pub(crate) fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

pub(crate) mod sql {
    pub const INSERT_SESSION: &str = "INSERT INTO console_sessions \
         (digest, user_ids, root_key_digest, created_at, seen_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)";
    pub const GET_SESSION: &str = "SELECT digest, user_ids, root_key_digest, created_at, \
         seen_at, expires_at FROM console_sessions WHERE digest = $1";
    pub const TOUCH_SESSION: &str = "UPDATE console_sessions SET seen_at = $2 \
         WHERE digest = $1 AND seen_at < $2";
    pub const DELETE_SESSION: &str = "DELETE FROM console_sessions WHERE digest = $1";
    pub const PRUNE_SESSIONS: &str = "DELETE FROM console_sessions WHERE expires_at < $1";
    pub const USERS_BY_EMAIL: &str = "SELECT id, org_id, email, password_hash, role, created_at \
         FROM users WHERE email = $1 ORDER BY created_at, id LIMIT $2";
    pub const LOG_HOURS: &str = "SELECT hour, code, n FROM log_hours \
         WHERE org_id = $1 AND hour >= $2 AND hour < $3 ORDER BY hour, code";
    /// `$1` org, `$2` hour, `$3` code, `$4` how many more.
    pub const ADD_LOG_HOUR: &str = "INSERT INTO log_hours (org_id, hour, code, n) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (org_id, hour, code) DO UPDATE SET n = log_hours.n + excluded.n";
    /// `$1` before: the hours that ended by then.
    pub const PRUNE_LOG_HOURS: &str = "DELETE FROM log_hours WHERE hour + 3600000 <= $1";
}

/// The searches, whose SQL differs by backend only in collation: SQLite
/// compares bytes already; PostgreSQL needs `COLLATE "C"` for a prefix to
/// be one range of the index (docs/console.md).
pub(crate) struct SearchSql {
    pub name_first: &'static str,
    pub name_after: &'static str,
    pub start_first: &'static str,
    pub start_after: &'static str,
}

macro_rules! search_sql {
    ($name:literal, $start:literal) => {
        $crate::console::SearchSql {
            name_first: concat!(
                "SELECT ",
                $crate::sql::key_cols!(),
                " FROM api_keys WHERE org_id = $1 AND ",
                $name,
                " >= $2 AND ",
                $name,
                " < $3 ORDER BY ",
                $name,
                ", id LIMIT $4"
            ),
            name_after: concat!(
                "SELECT ",
                $crate::sql::key_cols!(),
                " FROM api_keys WHERE org_id = $1 AND ",
                $name,
                " < $3 AND (",
                $name,
                ", id) > ($5, $6) ORDER BY ",
                $name,
                ", id LIMIT $4"
            ),
            start_first: concat!(
                "SELECT ",
                $crate::sql::key_cols!(),
                " FROM api_keys WHERE org_id = $1 AND ",
                $start,
                " >= $2 AND ",
                $start,
                " < $3 ORDER BY ",
                $start,
                ", id LIMIT $4"
            ),
            start_after: concat!(
                "SELECT ",
                $crate::sql::key_cols!(),
                " FROM api_keys WHERE org_id = $1 AND ",
                $start,
                " < $3 AND (",
                $start,
                ", id) > ($5, $6) ORDER BY ",
                $start,
                ", id LIMIT $4"
            ),
        }
    };
}

pub(crate) const SQLITE_SEARCH: SearchSql = search_sql!("lower(name)", "start");
pub(crate) const PG_SEARCH: SearchSql =
    search_sql!("(lower(name) COLLATE \"C\")", "(start COLLATE \"C\")");

/// Implements [`ConsoleStore`] for a backend (as `impl_store!`); `$search`
/// is its [`SearchSql`], `$fold` how it lower-cases a searched name as its
/// `lower()` does.
macro_rules! impl_console_store {
    ($store:ty, $db:ty, $search:expr, $fold:expr) => {
        #[async_trait::async_trait]
        impl $crate::console::ConsoleStore for $store {
            async fn create_session(&self, s: &$crate::console::Session) -> $crate::Result<()> {
                sqlx::query($crate::console::sql::INSERT_SESSION)
                    .bind(&s.digest)
                    .bind($crate::console::encode_ids(&s.user_ids))
                    .bind(&s.root_key_digest)
                    .bind(s.created_at)
                    .bind(s.seen_at)
                    .bind(s.expires_at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(())
            }

            async fn get_session(
                &self,
                digest: &[u8],
            ) -> $crate::Result<Option<$crate::console::Session>> {
                let row = sqlx::query($crate::console::sql::GET_SESSION)
                    .bind(digest)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                row.as_ref().map($crate::console::session).transpose()
            }

            async fn touch_session(&self, digest: &[u8], seen_at: i64) -> $crate::Result<()> {
                sqlx::query($crate::console::sql::TOUCH_SESSION)
                    .bind(digest)
                    .bind(seen_at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(())
            }

            async fn delete_session(&self, digest: &[u8]) -> $crate::Result<()> {
                sqlx::query($crate::console::sql::DELETE_SESSION)
                    .bind(digest)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(())
            }

            async fn prune_sessions(&self, now: i64) -> $crate::Result<u64> {
                let done = sqlx::query($crate::console::sql::PRUNE_SESSIONS)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(done.rows_affected())
            }

            async fn users_by_email_any_org(
                &self,
                email: &str,
                limit: u32,
            ) -> $crate::Result<Vec<$crate::oauth::User>> {
                let rows = sqlx::query($crate::console::sql::USERS_BY_EMAIL)
                    .bind(email)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                rows.iter().map($crate::oauth::user).collect()
            }

            async fn search_keys(
                &self,
                q: &$crate::console::KeySearchQuery,
            ) -> $crate::Result<Vec<$crate::ApiKey>> {
                let s: &$crate::console::SearchSql = &$search;
                let fold: fn(&str) -> String = $fold;
                let (prefix, first, after) = match &q.search {
                    $crate::console::KeySearch::NamePrefix(p) => {
                        (fold(p), s.name_first, s.name_after)
                    }
                    $crate::console::KeySearch::StartPrefix(p) => {
                        (p.clone(), s.start_first, s.start_after)
                    }
                };
                let end = $crate::console::prefix_end(&prefix);
                let limit = i64::from(q.limit);
                let query = match &q.after {
                    None => sqlx::query(first)
                        .bind(&q.org_id)
                        .bind(prefix)
                        .bind(end)
                        .bind(limit),
                    Some((value, id)) => sqlx::query(after)
                        .bind(&q.org_id)
                        .bind(prefix)
                        .bind(end)
                        .bind(limit)
                        .bind(match &q.search {
                            $crate::console::KeySearch::NamePrefix(_) => fold(value),
                            $crate::console::KeySearch::StartPrefix(_) => value.clone(),
                        })
                        .bind(id),
                };
                let rows = query
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                rows.iter().map($crate::common::api_key).collect()
            }

            async fn log_hours(
                &self,
                org_id: &str,
                since: i64,
                until: i64,
            ) -> $crate::Result<Vec<$crate::console::HourCount>> {
                let rows = sqlx::query($crate::console::sql::LOG_HOURS)
                    .bind(org_id)
                    .bind(since)
                    .bind(until)
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::console::HourCount {
                            hour: sqlx::Row::try_get(r, "hour")?,
                            code: sqlx::Row::try_get(r, "code")?,
                            n: sqlx::Row::try_get(r, "n")?,
                        })
                    })
                    .collect()
            }

            async fn list_logs_window(
                &self,
                q: &$crate::LogQuery,
                window: u32,
            ) -> $crate::Result<$crate::console::LogWindow> {
                if q.key_id.is_none() && q.code.is_none() {
                    return Ok($crate::console::LogWindow {
                        entries: $crate::Store::list_logs(self, q).await?,
                        scanned_to: None,
                    });
                }
                // Where a read of `window` entries ends: the last of them,
                // and whether any entry follows it, found on the index
                // alone (no row: fewer remain).
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT at, id");
                Self::push_log_range(&mut qb, q, None);
                qb.push(" ORDER BY at DESC, id DESC LIMIT 2 OFFSET ")
                    .push_bind(i64::from(window.max(1)) - 1);
                let rows = qb
                    .build()
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                let edge: Option<(i64, String)> = match rows.first() {
                    Some(r) => Some((sqlx::Row::try_get(r, "at")?, sqlx::Row::try_get(r, "id")?)),
                    None => None,
                };
                let more = rows.len() > 1;
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT ");
                qb.push($crate::logs::LOG_COLS);
                Self::push_log_range(&mut qb, q, edge.as_ref().map(|e| e.0));
                if let Some((at, id)) = &edge {
                    qb.push(" AND (at, id) >= (")
                        .push_bind(*at)
                        .push(", ")
                        .push_bind(id.clone())
                        .push(")");
                }
                if let Some(v) = &q.key_id {
                    qb.push(" AND key_id = ").push_bind(v.clone());
                }
                if let Some(v) = &q.code {
                    qb.push(" AND code = ").push_bind(v.clone());
                }
                qb.push(" ORDER BY at DESC, id DESC LIMIT ")
                    .push_bind(i64::from(q.limit));
                let rows = qb
                    .build()
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                let entries = rows
                    .iter()
                    .map($crate::logs::log_entry)
                    .collect::<$crate::Result<Vec<_>>>()?;
                Ok($crate::console::LogWindow {
                    entries,
                    scanned_to: edge.filter(|_| more),
                })
            }
        }
    };
}

pub(crate) use impl_console_store;
