//! Helpers for tests that need a real PostgreSQL (this crate's and the
//! server's). Always compiled: it is small and other crates' tests use it.
//!
//! `LATCHKEY_TEST_PG_URL` names a server and a database to connect to for
//! administration (default [`DEFAULT_PG_URL`]); each call creates a fresh
//! database there. When the server is unreachable the tests are skipped
//! with a message on stderr, except under CI (`CI=true`), where a missing
//! service is a failure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// Where tests look for PostgreSQL when `LATCHKEY_TEST_PG_URL` is unset.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The administration URL: `LATCHKEY_TEST_PG_URL` or [`DEFAULT_PG_URL`].
pub fn postgres_admin_url() -> String {
    std::env::var("LATCHKEY_TEST_PG_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_PG_URL.to_owned())
}

/// Creates a fresh, empty database `latchkey_test_{label}_{suffix}` and
/// answers its URL, or `None` (after printing `SKIPPED: ...` to stderr) if
/// PostgreSQL is unreachable outside CI.
///
/// # Panics
/// Under CI (`CI=true`) when PostgreSQL is unreachable, and whenever the
/// server is reachable but refuses to create the database.
#[allow(clippy::panic)]
pub async fn postgres_url_for_tests(label: &str) -> Option<String> {
    let admin = postgres_admin_url();
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(&admin)).await;
    let mut conn = match connected {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => return unreachable(&admin, &err.to_string()),
        Err(_) => return unreachable(&admin, "connection timed out"),
    };
    let name = database_name(label);
    if let Err(err) = sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
    {
        panic!("creating test database {name} at {}: {err}", redact(&admin));
    }
    // Best effort: the database exists either way.
    let _ = conn.close().await;
    Some(with_database(&admin, &name))
}

/// Drops a database made by [`postgres_url_for_tests`], even while
/// connections to it remain open. Best effort: errors are ignored.
pub async fn drop_postgres_test_database(url: &str) {
    let Some(name) = database_of(url) else {
        return;
    };
    if !name.starts_with("latchkey_test_") {
        return;
    }
    let admin = postgres_admin_url();
    if let Ok(Ok(mut conn)) =
        tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(&admin)).await
    {
        let _ = sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
        let _ = conn.close().await;
    }
}

#[allow(clippy::panic)]
fn unreachable(admin: &str, err: &str) -> Option<String> {
    let admin = redact(admin);
    let under_ci =
        std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v.trim() == "1");
    if under_ci {
        panic!(
            "PostgreSQL unreachable at {admin}: {err} \
             (CI=true: a missing database service is a failure, not a skip; \
             set LATCHKEY_TEST_PG_URL or start PostgreSQL)"
        );
    }
    eprintln!(
        "SKIPPED: PostgreSQL unreachable at {admin}: {err} \
         (set LATCHKEY_TEST_PG_URL or start PostgreSQL)"
    );
    None
}

/// `latchkey_test_{label}_{suffix}`, at most 63 bytes (PostgreSQL's limit),
/// the label reduced to `[a-z0-9_]`, the suffix unique per call.
fn database_name(label: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    // 8 hex digits of time, the process id and a per-process counter.
    let suffix = format!(
        "{:08x}{:x}{seq:x}",
        (nanos as u64) & 0xffff_ffff,
        std::process::id()
    );
    format!("latchkey_test_{label}_{suffix}")
}

/// Replaces (or adds) the database in a `postgres://` URL, keeping any
/// query string.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base.get(authority_start..).and_then(|rest| rest.find('/')) {
        Some(slash) => base.get(..authority_start + slash).unwrap_or(base),
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

fn database_of(url: &str) -> Option<&str> {
    let base = url.split('?').next().unwrap_or(url);
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let rest = base.get(authority_start..)?;
    let (_, database) = rest.split_once('/')?;
    (!database.is_empty()).then_some(database)
}

/// Hides the password in a URL meant for a message.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = url.get(authority_start..).unwrap_or_default();
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = rest.get(..authority_end).unwrap_or_default();
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let Some((user, _password)) = userinfo.split_once(':') else {
        return url.to_owned();
    };
    format!(
        "{}{user}:***@{host}{}",
        url.get(..authority_start).unwrap_or_default(),
        rest.get(authority_end..).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_unique_and_valid() {
        let a = database_name("Conformance Test/öx");
        let b = database_name("Conformance Test/öx");
        assert_ne!(a, b);
        assert!(a.starts_with("latchkey_test_conformance_test__x_"), "{a}");
        assert!(a.len() <= 63, "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
        let long = database_name(&"x".repeat(200));
        assert!(long.len() <= 63, "{long}");
    }

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t1"),
            "postgres://u:p@h/t1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "t1"),
            "postgres://h:5432/t1"
        );
        assert_eq!(
            with_database("postgresql://h?application_name=x", "t1"),
            "postgresql://h/t1?application_name=x"
        );
        assert_eq!(database_of("postgres://h:5432/t1?x=y"), Some("t1"));
        assert_eq!(database_of("postgres://h:5432"), None);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://user:secret@h:5432/db"),
            "postgres://user:***@h:5432/db"
        );
        assert_eq!(redact("postgres://user@h/db"), "postgres://user@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
