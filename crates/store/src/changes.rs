//! The change feed: how a node learns that a key record it may have cached
//! was changed through another node. Triggers in the schema publish every
//! change (migrations `0002_changes.sql`); each backend follows them its
//! own way:
//!
//! - PostgreSQL: `LISTEN latchkey_changes`. Notifications arrive at commit,
//!   in commit order, within milliseconds. If the listening connection is
//!   lost, notifications sent meanwhile are lost too, so the feed says
//!   [`ChangeSink::lost`] at once and [`ChangeSink::resumed`] only after it
//!   listens again: the node forgets and bypasses its caches in between.
//! - SQLite: the `changes` table, polled every [`SQLITE_POLL`]. SQLite has
//!   one writer at a time, so sequence numbers grow in commit order and a
//!   poll past the last one seen misses nothing.

use std::sync::Arc;
use std::time::Duration;

/// What a change was made to, by what the caches are keyed by: a
/// digest for keys and opaque tokens, an id for other records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    ApiKey([u8; 32]),
    RootKey([u8; 32]),
    /// An OAuth client changed or was deleted.
    Client(String),
    /// A grant was revoked or deleted.
    Grant(String),
    /// An opaque access token was revoked or deleted.
    AccessToken([u8; 32]),
    /// A JWT access token was revoked (its `jti`).
    RevokedJti(String),
    /// A signing key was added, retired or removed.
    SigningKeys,
}

/// Where the feed reports. Calls come from one task, in order.
pub trait ChangeSink: Send + Sync + 'static {
    /// This record changed: forget it.
    fn changed(&self, change: Change);
    /// The feed can no longer tell about changes: forget everything and
    /// stop caching until [`ChangeSink::resumed`].
    fn lost(&self);
    /// The feed follows changes again (also said once at start): forget
    /// everything read before, and cache again.
    fn resumed(&self);
}

/// How often an SQLite node looks for changes made by another process.
pub const SQLITE_POLL: Duration = Duration::from_millis(100);
/// How long the `changes` rows of SQLite are kept.
pub const SQLITE_KEEP_MS: i64 = 10 * 60 * 1000;
/// Wait before listening again after losing the PostgreSQL connection.
pub const PG_RETRY: Duration = Duration::from_millis(500);
/// The notification channel.
pub const PG_CHANNEL: &str = "latchkey_changes";

/// Parses a notification payload `<table>:<hex digest>` (keys, opaque
/// tokens), `<table>:<id>` (other records) or `signing_keys:`.
pub(crate) fn parse_payload(payload: &str) -> Option<Change> {
    let (table, rest) = payload.split_once(':')?;
    match table {
        "api_keys" | "root_keys" | "access_tokens" => table_change(table, &decode_hex32(rest)?),
        _ => table_change(table, rest.as_bytes()),
    }
}

/// The change a row of table `table` names by `value` (a digest or an id).
pub(crate) fn table_change(table: &str, value: &[u8]) -> Option<Change> {
    let digest = || <[u8; 32]>::try_from(value).ok();
    let id = || {
        std::str::from_utf8(value)
            .ok()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    match table {
        "api_keys" => Some(Change::ApiKey(digest()?)),
        "root_keys" => Some(Change::RootKey(digest()?)),
        "access_tokens" => Some(Change::AccessToken(digest()?)),
        "clients" => Some(Change::Client(id()?)),
        "grants" => Some(Change::Grant(id()?)),
        "revoked_jtis" => Some(Change::RevokedJti(id()?)),
        "signing_keys" => Some(Change::SigningKeys),
        _ => None,
    }
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let s = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Follows PostgreSQL notifications forever.
pub(crate) async fn follow_postgres(pool: sqlx::PgPool, sink: Arc<dyn ChangeSink>) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "change feed: cannot connect to PostgreSQL; caches bypassed");
                tokio::time::sleep(PG_RETRY).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(PG_CHANNEL).await {
            tracing::warn!(error = %e, "change feed: LISTEN failed; caches bypassed");
            tokio::time::sleep(PG_RETRY).await;
            continue;
        }
        // Listening: whatever changed before now is covered by forgetting
        // everything cached so far.
        sink.resumed();
        while let Ok(Some(n)) = listener.try_recv().await {
            match parse_payload(n.payload()) {
                Some(change) => sink.changed(change),
                None => tracing::warn!(
                    payload_len = n.payload().len(),
                    "change feed: unreadable notification ignored"
                ),
            }
        }
        tracing::warn!(
            "change feed: lost the PostgreSQL listener; caches bypassed until it is back"
        );
        sink.lost();
        tokio::time::sleep(PG_RETRY).await;
    }
}

/// Follows the SQLite `changes` table forever.
pub(crate) async fn follow_sqlite(pool: sqlx::SqlitePool, sink: Arc<dyn ChangeSink>) {
    use sqlx::Row;
    let mut last: Option<i64> = None;
    let mut healthy = false;
    let mut since_prune = Duration::ZERO;
    let mut tick = tokio::time::interval(SQLITE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result =
            match last {
                None => sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM changes")
                    .fetch_one(&pool)
                    .await
                    .and_then(|r| r.try_get::<i64, _>(0usize))
                    .map(|seq| {
                        last = Some(seq);
                        Vec::new()
                    }),
                Some(after) => sqlx::query(
                    "SELECT seq, tbl, digest FROM changes WHERE seq > $1 ORDER BY seq LIMIT 10000",
                )
                .bind(after)
                .fetch_all(&pool)
                .await,
            };
        match result {
            Ok(rows) => {
                if !healthy {
                    healthy = true;
                    sink.resumed();
                    // Everything read before is forgotten: skip the rows.
                } else {
                    let mut expected = last.unwrap_or(0) + 1;
                    for row in &rows {
                        let seq: i64 = row.try_get(0usize).unwrap_or(expected);
                        if seq != expected {
                            // Rows were pruned under a node that fell far behind.
                            sink.lost();
                            sink.resumed();
                        }
                        expected = seq + 1;
                        let table: String = row.try_get(1usize).unwrap_or_default();
                        let digest: Vec<u8> = row.try_get(2usize).unwrap_or_default();
                        match table_change(&table, &digest) {
                            Some(change) => sink.changed(change),
                            None => tracing::warn!(seq, "change feed: unreadable change ignored"),
                        }
                    }
                }
                if let Some(row) = rows.last()
                    && let Ok(seq) = row.try_get::<i64, _>(0usize)
                {
                    last = Some(seq);
                }
            }
            Err(e) => {
                if healthy {
                    tracing::warn!(error = %e, "change feed: cannot read changes; caches bypassed");
                    healthy = false;
                    sink.lost();
                }
                last = None;
            }
        }
        since_prune += SQLITE_POLL;
        if since_prune >= Duration::from_secs(60) {
            since_prune = Duration::ZERO;
            if let Err(e) = sqlx::query("DELETE FROM changes WHERE at < $1")
                .bind(unix_ms() - SQLITE_KEEP_MS)
                .execute(&pool)
                .await
            {
                tracing::debug!(error = %e, "change feed: prune failed; will retry");
            }
        }
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        let hex = "00ff".repeat(16);
        let mut d = [0u8; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = if i % 2 == 0 { 0 } else { 0xff };
        }
        assert_eq!(
            parse_payload(&format!("api_keys:{hex}")),
            Some(Change::ApiKey(d))
        );
        assert_eq!(
            parse_payload(&format!("root_keys:{hex}")),
            Some(Change::RootKey(d))
        );
        assert_eq!(parse_payload(&format!("orgs:{hex}")), None);
        assert_eq!(
            parse_payload(&format!("access_tokens:{hex}")),
            Some(Change::AccessToken(d))
        );
        assert_eq!(
            parse_payload("clients:cli_abc"),
            Some(Change::Client("cli_abc".to_owned()))
        );
        assert_eq!(
            parse_payload("grants:grt_1"),
            Some(Change::Grant("grt_1".to_owned()))
        );
        assert_eq!(
            parse_payload("revoked_jtis:j1"),
            Some(Change::RevokedJti("j1".to_owned()))
        );
        assert_eq!(parse_payload("signing_keys:"), Some(Change::SigningKeys));
        assert_eq!(parse_payload("clients:"), None);
        assert_eq!(parse_payload("api_keys:00"), None);
        assert_eq!(
            parse_payload(&format!("api_keys:{}", "zz".repeat(32))),
            None
        );
        assert_eq!(parse_payload("nonsense"), None);
    }
}
