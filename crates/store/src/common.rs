//! What both backends share: error mapping, row decoding, value encoding,
//! the embedded migrations, and the [`Store`](crate::Store) implementation
//! itself, written once as a macro over the backend's pool and database
//! types (sqlx's generic-over-database bounds are unwieldy; the macro keeps
//! one copy of the logic without them).

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{ColumnIndex, Decode, Row, SqlSafeStr, Type};

use crate::{ApiKey, Org, Result, RootKey, StoreError};

/// Maps a driver error to the store's answers: a unique (or foreign-key)
/// violation is a `Conflict`, a missing row is `NotFound`, anything else is
/// a backend failure.
pub(crate) fn db_err(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(format!("already exists ({})", db.message()))
        }
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            StoreError::Conflict(format!("references a missing row ({})", db.message()))
        }
        other => StoreError::Backend(other),
    }
}

/// Builds a migrator from migrations compiled into the binary (sqlx's
/// `migrate!` needs the `macros` feature, which this crate does not use).
/// Each entry is `(version, description, sql)`; the checksum is computed
/// from the SQL text exactly as `migrate!` would.
pub(crate) fn embedded_migrator(migrations: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

pub(crate) fn encode_scopes(scopes: &[String]) -> String {
    scopes.join(" ")
}

pub(crate) fn decode_scopes(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

pub(crate) fn encode_metadata(value: &serde_json::Value) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("metadata: {e}")))
}

pub(crate) fn decode_metadata(id: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("key {id}: metadata: {e}")))
}

/// Uses `(id, at)` in a deterministic order (by id), one entry per id with
/// its latest time. Updating rows in a fixed order keeps concurrent batches
/// from deadlocking each other on PostgreSQL.
/// Most uses recorded by one statement.
pub(crate) const TOUCH_CHUNK: usize = 5_000;

pub(crate) fn normalize_uses(uses: &[(String, i64)]) -> Vec<(&str, i64)> {
    let mut sorted: Vec<(&str, i64)> = uses.iter().map(|(id, at)| (id.as_str(), *at)).collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0).then(b.1.cmp(&a.1)));
    sorted.dedup_by(|later, first| later.0 == first.0);
    sorted
}

pub(crate) fn org<'r, R>(row: &'r R) -> Result<Org>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Org {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) fn root_key<'r, R>(row: &'r R) -> Result<RootKey>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let scopes: String = row.try_get("scopes")?;
    Ok(RootKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        start: row.try_get("start")?,
        digest: row.try_get("digest")?,
        scopes: decode_scopes(&scopes),
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

pub(crate) fn api_key<'r, R>(row: &'r R) -> Result<ApiKey>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: String = row.try_get("id")?;
    let scopes: String = row.try_get("scopes")?;
    let metadata: String = row.try_get("metadata")?;
    let metadata = decode_metadata(&id, &metadata)?;
    Ok(ApiKey {
        org_id: row.try_get("org_id")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        environment: row.try_get("environment")?,
        start: row.try_get("start")?,
        digest: row.try_get("digest")?,
        scopes: decode_scopes(&scopes),
        external_id: row.try_get("external_id")?,
        metadata,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        revoke_reason: row.try_get("revoke_reason")?,
        replaced_by: row.try_get("replaced_by")?,
        rotated_from: row.try_get("rotated_from")?,
        last_used_at: row.try_get("last_used_at")?,
        ratelimit: key_ratelimit(
            row.try_get("ratelimit_limit")?,
            row.try_get("ratelimit_window_ms")?,
        ),
        ip_allowlist: decode_scopes(&row.try_get::<String, _>("ip_allowlist")?),
        credits: key_credits(
            row.try_get("remaining")?,
            row.try_get("refill_amount")?,
            row.try_get("refill_interval_ms")?,
            row.try_get("refilled_at")?,
        ),
        created_by: row.try_get("created_by")?,
        id,
    })
}

pub(crate) fn key_ratelimit(
    limit: Option<i64>,
    window_ms: Option<i64>,
) -> Option<crate::KeyRateLimit> {
    Some(crate::KeyRateLimit {
        limit: limit?,
        window_ms: window_ms?,
    })
}

pub(crate) fn key_credits(
    remaining: Option<i64>,
    refill_amount: Option<i64>,
    refill_interval_ms: Option<i64>,
    refilled_at: Option<i64>,
) -> Option<crate::Credits> {
    Some(crate::Credits {
        remaining: remaining?,
        refill: refill_amount
            .zip(refill_interval_ms)
            .map(|(amount, interval_ms)| crate::Refill {
                amount,
                interval_ms,
            }),
        refilled_at: refilled_at.unwrap_or(0),
    })
}

/// The columns of a key's limits, as bound by INSERT and UPDATE.
pub(crate) struct LimitCols {
    pub rl_limit: Option<i64>,
    pub rl_window: Option<i64>,
    pub remaining: Option<i64>,
    pub refill_amount: Option<i64>,
    pub refill_interval: Option<i64>,
    pub refilled_at: Option<i64>,
}

impl LimitCols {
    pub(crate) fn of(rl: Option<crate::KeyRateLimit>, credits: Option<crate::Credits>) -> Self {
        Self {
            rl_limit: rl.map(|r| r.limit),
            rl_window: rl.map(|r| r.window_ms),
            remaining: credits.map(|c| c.remaining),
            refill_amount: credits.and_then(|c| c.refill).map(|r| r.amount),
            refill_interval: credits.and_then(|c| c.refill).map(|r| r.interval_ms),
            refilled_at: credits.map(|c| c.refilled_at),
        }
    }
}

/// Implements [`Store`](crate::Store) for a backend struct that has a
/// `pool: sqlx::Pool<$db>` field, an associated `fn migrator() -> Migrator`
/// and an `async fn begin_write(&self) -> sqlx::Result<Transaction<'static, $db>>`
/// that opens a transaction which already holds the write lock where the
/// database needs that (SQLite: `BEGIN IMMEDIATE`).
macro_rules! impl_store {
    ($store:ty, $db:ty, $backend:literal, $touch_keys:expr, $touch_roots:expr, $prune_logs:expr) => {
        impl $store {
            /// Pushes the filters of `q` that every log read shares (the
            /// organization, time range, client and cursor), the range as
            /// single bounds (`logs::at_bounds`): from `stop` on, if given.
            fn push_log_range(
                qb: &mut sqlx::QueryBuilder<$db>,
                q: &$crate::LogQuery,
                stop: Option<i64>,
            ) {
                qb.push(" FROM logs WHERE org_id = ")
                    .push_bind(q.org_id.clone());
                if let Some(v) = &q.client_id {
                    qb.push(" AND client_id = ").push_bind(v.clone());
                }
                let (lo, hi) = $crate::logs::at_bounds(q, stop);
                if let Some(v) = lo {
                    qb.push(" AND at >= ").push_bind(v);
                }
                match hi {
                    Some((v, true)) => {
                        qb.push(" AND at <= ").push_bind(v);
                    }
                    Some((v, false)) => {
                        qb.push(" AND at < ").push_bind(v);
                    }
                    None => {}
                }
                if let Some((at, id)) = &q.cursor {
                    qb.push(" AND (at, id) < (")
                        .push_bind(*at)
                        .push(", ")
                        .push_bind(id.clone())
                        .push(")");
                }
            }

            /// Looks a root key up by digest through sqlx.
            async fn sqlx_root_key_by_digest(&self, digest: &[u8]) -> $crate::Result<Option<$crate::RootKey>> {
                let row = sqlx::query($crate::sql::ROOT_KEY_BY_DIGEST)
                    .bind(digest)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                row.as_ref().map($crate::common::root_key).transpose()
            }

            /// Records uses in one statement per chunk: `[[id, at], ...]`
            /// as JSON, joined against the table by the backend's SQL.
            async fn touch(&self, sql: &'static str, uses: &[(String, i64)]) -> $crate::Result<()> {
                let uses = $crate::common::normalize_uses(uses);
                for chunk in uses.chunks($crate::common::TOUCH_CHUNK) {
                    let json = serde_json::to_string(chunk).map_err(|e| $crate::StoreError::Corrupt(e.to_string()))?;
                    sqlx::query(sql).bind(json).execute(&self.pool).await.map_err($crate::common::db_err)?;
                }
                Ok(())
            }

            fn insert_key_query(
                key: &$crate::ApiKey,
            ) -> $crate::Result<
                sqlx::query::Query<'static, $db, <$db as sqlx::Database>::Arguments>,
            > {
                let metadata = $crate::common::encode_metadata(&key.metadata)?;
                let l = $crate::common::LimitCols::of(key.ratelimit, key.credits);
                Ok(sqlx::query($crate::sql::INSERT_KEY)
                    .bind(&key.id)
                    .bind(&key.org_id)
                    .bind(&key.name)
                    .bind(&key.kind)
                    .bind(&key.environment)
                    .bind(&key.start)
                    .bind(&key.digest)
                    .bind($crate::common::encode_scopes(&key.scopes))
                    .bind(&key.external_id)
                    .bind(metadata)
                    .bind(key.created_at)
                    .bind(key.updated_at)
                    .bind(key.expires_at)
                    .bind(key.revoked_at)
                    .bind(&key.revoke_reason)
                    .bind(&key.replaced_by)
                    .bind(&key.rotated_from)
                    .bind(key.last_used_at)
                    .bind(l.rl_limit)
                    .bind(l.rl_window)
                    .bind($crate::common::encode_scopes(&key.ip_allowlist))
                    .bind(l.remaining)
                    .bind(l.refill_amount)
                    .bind(l.refill_interval)
                    .bind(l.refilled_at)
                    .bind(&key.created_by))
            }
        }

        #[async_trait::async_trait]
        impl $crate::Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn migrate(&self) -> $crate::Result<()> {
                Self::migrator().run(&self.pool).await?;
                Ok(())
            }

            async fn ping(&self) -> $crate::Result<()> {
                sqlx::query($crate::sql::PING)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(())
            }

            async fn create_org(&self, org: &$crate::Org) -> $crate::Result<()> {
                sqlx::query($crate::sql::INSERT_ORG)
                    .bind(&org.id)
                    .bind(&org.name)
                    .bind(org.created_at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(())
            }

            async fn get_org(&self, id: &str) -> $crate::Result<$crate::Org> {
                let row = sqlx::query($crate::sql::GET_ORG)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?
                    .ok_or($crate::StoreError::NotFound)?;
                $crate::common::org(&row)
            }

            async fn list_orgs(&self, page: &$crate::Page) -> $crate::Result<Vec<$crate::Org>> {
                let limit = i64::from(page.limit);
                let query = match &page.cursor {
                    None => sqlx::query($crate::sql::LIST_ORGS).bind(limit),
                    Some((at, id)) => sqlx::query($crate::sql::LIST_ORGS_AFTER)
                        .bind(limit)
                        .bind(*at)
                        .bind(id),
                };
                let rows = query
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                rows.iter().map($crate::common::org).collect()
            }

            async fn create_root_key(&self, key: &$crate::RootKey) -> $crate::Result<()> {
                sqlx::query($crate::sql::INSERT_ROOT_KEY)
                    .bind(&key.id)
                    .bind(&key.name)
                    .bind(&key.start)
                    .bind(&key.digest)
                    .bind($crate::common::encode_scopes(&key.scopes))
                    .bind(key.created_at)
                    .bind(key.revoked_at)
                    .bind(key.last_used_at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(())
            }

            async fn root_key_by_digest(
                &self,
                digest: &[u8],
            ) -> $crate::Result<Option<$crate::RootKey>> {
                self.lookup_root_key(digest).await
            }

            async fn list_root_keys(
                &self,
                page: &$crate::Page,
            ) -> $crate::Result<Vec<$crate::RootKey>> {
                let limit = i64::from(page.limit);
                let query = match &page.cursor {
                    None => sqlx::query($crate::sql::LIST_ROOT_KEYS).bind(limit),
                    Some((at, id)) => sqlx::query($crate::sql::LIST_ROOT_KEYS_AFTER)
                        .bind(limit)
                        .bind(*at)
                        .bind(id),
                };
                let rows = query
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                rows.iter().map($crate::common::root_key).collect()
            }

            async fn revoke_root_key(&self, id: &str, at: i64) -> $crate::Result<$crate::RootKey> {
                sqlx::query($crate::sql::REVOKE_ROOT_KEY)
                    .bind(id)
                    .bind(at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                let row = sqlx::query($crate::sql::GET_ROOT_KEY)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?
                    .ok_or($crate::StoreError::NotFound)?;
                $crate::common::root_key(&row)
            }

            async fn count_root_keys(&self) -> $crate::Result<i64> {
                let row = sqlx::query($crate::sql::COUNT_ROOT_KEYS)
                    .fetch_one(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(sqlx::Row::try_get::<i64, _>(&row, 0usize)?)
            }

            async fn create_key(&self, key: &$crate::ApiKey) -> $crate::Result<()> {
                Self::insert_key_query(key)?
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                Ok(())
            }

            async fn key_by_digest(&self, digest: &[u8]) -> $crate::Result<Option<$crate::ApiKey>> {
                self.lookup_key(digest).await
            }

            async fn get_key(&self, id: &str) -> $crate::Result<$crate::ApiKey> {
                let row = sqlx::query($crate::sql::GET_KEY)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?
                    .ok_or($crate::StoreError::NotFound)?;
                $crate::common::api_key(&row)
            }

            async fn list_keys(&self, q: &$crate::KeyQuery) -> $crate::Result<Vec<$crate::ApiKey>> {
                let limit = i64::from(q.limit);
                // Binds in the order the statements number them: org, limit,
                // then the external id, then the cursor.
                let query = match (&q.external_id, &q.cursor) {
                    (None, None) => sqlx::query($crate::sql::LIST_KEYS)
                        .bind(&q.org_id)
                        .bind(limit),
                    (None, Some((at, id))) => sqlx::query($crate::sql::LIST_KEYS_AFTER)
                        .bind(&q.org_id)
                        .bind(limit)
                        .bind(*at)
                        .bind(id),
                    (Some(ext), None) => sqlx::query($crate::sql::LIST_KEYS_EXTERNAL)
                        .bind(&q.org_id)
                        .bind(limit)
                        .bind(ext),
                    (Some(ext), Some((at, id))) => {
                        sqlx::query($crate::sql::LIST_KEYS_EXTERNAL_AFTER)
                            .bind(&q.org_id)
                            .bind(limit)
                            .bind(ext)
                            .bind(*at)
                            .bind(id)
                    }
                };
                let rows = query
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                rows.iter().map($crate::common::api_key).collect()
            }

            async fn update_key(
                &self,
                id: &str,
                patch: &$crate::KeyPatch,
            ) -> $crate::Result<$crate::ApiKey> {
                let scopes = patch
                    .scopes
                    .as_deref()
                    .map($crate::common::encode_scopes);
                let metadata = patch
                    .metadata
                    .as_ref()
                    .map($crate::common::encode_metadata)
                    .transpose()?;
                let external_id: Option<&str> =
                    patch.external_id.as_ref().and_then(|e| e.as_deref());
                let l = $crate::common::LimitCols::of(
                    patch.ratelimit.flatten(),
                    patch.credits.flatten(),
                );
                let allowlist = patch
                    .ip_allowlist
                    .as_deref()
                    .map($crate::common::encode_scopes);
                let row = sqlx::query($crate::sql::UPDATE_KEY)
                    .bind(id)
                    .bind(patch.name.as_deref())
                    .bind(scopes)
                    .bind(metadata)
                    .bind(patch.expires_at.is_some())
                    .bind(patch.expires_at.flatten())
                    .bind(patch.external_id.is_some())
                    .bind(external_id)
                    .bind(patch.updated_at)
                    .bind(patch.ratelimit.is_some())
                    .bind(l.rl_limit)
                    .bind(l.rl_window)
                    .bind(allowlist)
                    .bind(patch.credits.is_some())
                    .bind(l.remaining)
                    .bind(l.refill_amount)
                    .bind(l.refill_interval)
                    .bind(l.refilled_at)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?
                    .ok_or($crate::StoreError::NotFound)?;
                $crate::common::api_key(&row)
            }

            async fn revoke_key(
                &self,
                id: &str,
                at: i64,
                reason: Option<&str>,
            ) -> $crate::Result<$crate::ApiKey> {
                sqlx::query($crate::sql::REVOKE_KEY)
                    .bind(id)
                    .bind(at)
                    .bind(reason)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                self.get_key(id).await
            }

            async fn rotate_key(
                &self,
                old_id: &str,
                new_key: &$crate::ApiKey,
                old_until: i64,
                now: i64,
            ) -> $crate::Result<$crate::ApiKey> {
                let insert = Self::insert_key_query(new_key)?;
                let mut tx = self.begin_write().await.map_err($crate::common::db_err)?;
                let old = sqlx::query($crate::sql::ROTATE_OLD_KEY)
                    .bind(old_id)
                    .bind(&new_key.id)
                    .bind(old_until)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err($crate::common::db_err)?;
                let Some(old) = old else {
                    let exists = sqlx::query($crate::sql::KEY_EXISTS)
                        .bind(old_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err($crate::common::db_err)?
                        .is_some();
                    tx.rollback().await.map_err($crate::common::db_err)?;
                    return Err(if exists {
                        $crate::StoreError::Conflict(
                            "the key was already rotated or is revoked".to_owned(),
                        )
                    } else {
                        $crate::StoreError::NotFound
                    });
                };
                let old = $crate::common::api_key(&old)?;
                // On failure the transaction rolls back when dropped.
                insert
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::common::db_err)?;
                tx.commit().await.map_err($crate::common::db_err)?;
                Ok(old)
            }

            async fn delete_key(&self, id: &str) -> $crate::Result<()> {
                let done = sqlx::query($crate::sql::DELETE_KEY)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                Ok(())
            }

            async fn spend_credit(&self, id: &str, now: i64) -> $crate::Result<$crate::Spend> {
                let row = sqlx::query($crate::sql::SPEND_CREDIT)
                    .bind(id)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?;
                if let Some(row) = row {
                    return Ok($crate::Spend::Spent(sqlx::Row::try_get::<i64, _>(&row, 0usize)?));
                }
                // Nothing spent: exhausted, or the key has no credits (any more).
                let row = sqlx::query($crate::sql::KEY_REMAINING)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::common::db_err)?
                    .ok_or($crate::StoreError::NotFound)?;
                let remaining: Option<i64> = sqlx::Row::try_get(&row, 0usize)?;
                Ok(match remaining {
                    Some(_) => $crate::Spend::Exhausted,
                    None => $crate::Spend::Unlimited,
                })
            }

            async fn touch_keys(&self, uses: &[(String, i64)]) -> $crate::Result<()> {
                self.touch($touch_keys, uses).await
            }

            async fn touch_root_keys(&self, uses: &[(String, i64)]) -> $crate::Result<()> {
                self.touch($touch_roots, uses).await
            }

            async fn insert_logs(&self, entries: &[$crate::LogEntry]) -> $crate::Result<()> {
                for chunk in entries.chunks(Self::LOG_CHUNK) {
                    self.write_logs(chunk).await?;
                }
                Ok(())
            }

            async fn list_logs(&self, q: &$crate::LogQuery) -> $crate::Result<Vec<$crate::LogEntry>> {
                // Only the filters given, so that each query can use the
                // index of its most selective one.
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT ");
                qb.push($crate::logs::LOG_COLS);
                Self::push_log_range(&mut qb, q, None);
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
                rows.iter().map($crate::logs::log_entry).collect()
            }

            async fn prune_logs(&self, before: i64) -> $crate::Result<u64> {
                let mut total = 0;
                loop {
                    let done = sqlx::query($prune_logs)
                        .bind(before)
                        .bind($crate::logs::PRUNE_CHUNK)
                        .execute(&self.pool)
                        .await
                        .map_err($crate::common::db_err)?;
                    total += done.rows_affected();
                    if done.rows_affected() < $crate::logs::PRUNE_CHUNK as u64 {
                        sqlx::query($crate::console::sql::PRUNE_LOG_HOURS)
                            .bind(before)
                            .execute(&self.pool)
                            .await
                            .map_err($crate::common::db_err)?;
                        return Ok(total);
                    }
                }
            }

            async fn follow_changes(&self, sink: std::sync::Arc<dyn $crate::ChangeSink>) {
                self.follow(sink).await
            }
        }
    };
}

pub(crate) use impl_store;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip() {
        let scopes = vec!["keys:read".to_owned(), "keys:write".to_owned()];
        assert_eq!(decode_scopes(&encode_scopes(&scopes)), scopes);
        assert!(decode_scopes("").is_empty());
        assert!(decode_scopes(&encode_scopes(&[])).is_empty());
    }

    #[test]
    fn uses_are_sorted_and_deduplicated_keeping_the_latest() {
        let uses = vec![
            ("b".to_owned(), 5),
            ("a".to_owned(), 1),
            ("b".to_owned(), 9),
            ("a".to_owned(), 3),
            ("c".to_owned(), 2),
        ];
        assert_eq!(normalize_uses(&uses), vec![("a", 3), ("b", 9), ("c", 2)]);
    }
}
