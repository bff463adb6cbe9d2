//! JSON shapes of the HTTP API (and of the CLI's `--json`), with their
//! OpenAPI schemas.

use latchkey_store::{ApiKey, LogEntry, LogEvent, Org, RootKey};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;

/// RFC 3339 UTC with millisecond precision.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    let ms_part = t.millisecond();
    match t.format(&f) {
        Ok(s) if ms_part == 0 => s,
        Ok(s) => format!("{}.{ms_part:03}Z", s.trim_end_matches('Z')),
        Err(_) => String::from("1970-01-01T00:00:00Z"),
    }
}

pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrgView {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

impl From<&Org> for OrgView {
    fn from(o: &Org) -> Self {
        Self {
            id: o.id.clone(),
            name: o.name.clone(),
            created_at: rfc3339(o.created_at),
        }
    }
}

/// Where a key stands now.
#[derive(Debug, Clone, Copy, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    /// Rotated, and still working until its grace period ends.
    Rotating,
    Revoked,
    Expired,
}

pub fn key_status(k: &ApiKey, now: i64) -> KeyStatus {
    match (k.revoked_at, k.expires_at) {
        (Some(r), _) if r <= now => KeyStatus::Revoked,
        (_, Some(e)) if e <= now => KeyStatus::Expired,
        (Some(_), _) => KeyStatus::Rotating,
        _ => KeyStatus::Active,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub kind: String,
    pub environment: String,
    /// The key's prefix and first 4 characters, for display.
    pub start: String,
    pub scopes: Vec<String>,
    pub external_id: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub status: KeyStatus,
    pub created_at: String,
    pub updated_at: String,
    pub expires_at: Option<String>,
    /// When the key stopped (or, during a rotation's grace period, will stop) working.
    pub revoked_at: Option<String>,
    pub revoke_reason: Option<String>,
    pub replaced_by: Option<String>,
    pub rotated_from: Option<String>,
    pub last_used_at: Option<String>,
    /// The key's own rate limit (null: the configured default applies).
    pub ratelimit: Option<crate::limits::RateLimitView>,
    /// CIDRs the key may be used from (empty: anywhere).
    pub ip_allowlist: Vec<String>,
    /// Usage credits left (null: unlimited).
    pub remaining: Option<i64>,
    pub refill: Option<crate::limits::RefillView>,
}

impl KeyView {
    pub fn new(k: &ApiKey, now: i64) -> Self {
        Self {
            id: k.id.clone(),
            org_id: k.org_id.clone(),
            name: k.name.clone(),
            kind: k.kind.clone(),
            environment: k.environment.clone(),
            start: k.start.clone(),
            scopes: k.scopes.clone(),
            external_id: k.external_id.clone(),
            metadata: k.metadata.clone(),
            status: key_status(k, now),
            created_at: rfc3339(k.created_at),
            updated_at: rfc3339(k.updated_at),
            expires_at: k.expires_at.map(rfc3339),
            revoked_at: k.revoked_at.map(rfc3339),
            revoke_reason: k.revoke_reason.clone(),
            replaced_by: k.replaced_by.clone(),
            rotated_from: k.rotated_from.clone(),
            last_used_at: k.last_used_at.map(rfc3339),
            ratelimit: k.ratelimit.map(Into::into),
            ip_allowlist: k.ip_allowlist.clone(),
            remaining: k.credits.map(|c| c.remaining),
            refill: k.credits.and_then(|c| c.refill).map(Into::into),
        }
    }
}

/// A key as answered once, at creation or rotation: with its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewKeyView {
    /// The API key. Shown this once: store it now.
    pub key: String,
    #[serde(flatten)]
    pub record: KeyView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RootKeyView {
    pub id: String,
    pub name: String,
    pub start: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

impl From<&RootKey> for RootKeyView {
    fn from(k: &RootKey) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            start: k.start.clone(),
            scopes: k.scopes.clone(),
            created_at: rfc3339(k.created_at),
            revoked_at: k.revoked_at.map(rfc3339),
            last_used_at: k.last_used_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewRootKeyView {
    /// The root key. Shown this once: store it now.
    pub key: String,
    #[serde(flatten)]
    pub record: RootKeyView,
}

/// An entry of the usage log: a decision or a management action.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogView {
    /// `log_...`
    pub id: String,
    pub time: String,
    /// The request that caused it (null from the command line).
    pub request_id: Option<String>,
    #[serde(flatten)]
    pub event: LogEventView,
}

/// What the entry records; `kind` tells which.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogEventView {
    Decision(DecisionView),
    Action(ActionView),
}

/// A decision on a presented credential.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionView {
    /// `api_key`, `access_token` or `client_jwt`; null when it could not be told.
    pub credential_type: Option<String>,
    pub key_id: Option<String>,
    pub client_id: Option<String>,
    /// `VALID` or a refusal code.
    pub code: String,
    /// The status of the answer (200 when valid).
    pub status: u16,
    /// The original request's method and path (never its query), when known.
    pub method: Option<String>,
    pub path: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Time spent deciding.
    pub latency_ms: f64,
}

/// A management action.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionView {
    /// The root key that made it (`rtk_...`), or `cli`.
    pub actor: String,
    /// e.g. `key.created`, `key.revoked`, `key.rotated`, `org.created`.
    pub action: String,
    /// The id of the resource acted on.
    pub target: Option<String>,
}

impl From<&LogEntry> for LogView {
    fn from(e: &LogEntry) -> Self {
        let event = match &e.event {
            LogEvent::Decision(d) => LogEventView::Decision(DecisionView {
                credential_type: d.credential_type.clone(),
                key_id: d.key_id.clone(),
                client_id: d.client_id.clone(),
                code: d.code.clone(),
                status: d.status,
                method: d.method.clone(),
                path: d.path.clone(),
                ip: d.ip.clone(),
                user_agent: d.user_agent.clone(),
                latency_ms: d.latency_us as f64 / 1000.0,
            }),
            LogEvent::Action(a) => LogEventView::Action(ActionView {
                actor: a.actor.clone(),
                action: a.action.clone(),
                target: a.target.clone(),
            }),
        };
        Self {
            id: e.id.clone(),
            time: rfc3339(e.time),
            request_id: e.request_id.clone(),
            event,
        }
    }
}

/// A page of a list, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListPage<T> {
    pub data: Vec<T>,
    /// Pass as `?cursor=` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// A duration in a request body: integer seconds or a string like `"90s"`, `"24h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(value_type = String, example = "24h")]
pub struct DurationInput(pub i64);

impl<'de> Deserialize<'de> for DurationInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected integer seconds or a duration string like \"90s\"")
        })? {
            Raw::Int(n) => Ok(DurationInput(n)),
            Raw::Text(s) => crate::config::parse_duration(&s)
                .map_err(serde::de::Error::custom)
                .and_then(|d| {
                    i64::try_from(d.as_secs())
                        .map_err(|_| serde::de::Error::custom("duration too long"))
                })
                .map(DurationInput),
        }
    }
}

/// Deserializes a field that may be absent (outer `None`), `null`
/// (`Some(None)`) or a value.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Encodes a keyset cursor `(created_at, id)` as an opaque string.
pub fn encode_cursor(created_at: i64, id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{created_at}.{id}"))
}

pub fn decode_cursor(c: &str) -> Result<(i64, String), ApiError> {
    use base64::Engine;
    let bad = || ApiError::field("cursor", "Not a cursor this server returned.");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (ts, id) = text.split_once('.').ok_or_else(bad)?;
    let ts: i64 = ts.parse().map_err(|_| bad())?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(bad());
    }
    Ok((ts, id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_cursors() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_323_045_123), "2026-01-02T03:04:05.123Z");
        assert_eq!(
            parse_rfc3339("2026-01-02T03:04:05.123Z"),
            Some(1_767_323_045_123)
        );
        assert_eq!(
            parse_rfc3339("2026-01-02T04:04:05+01:00"),
            Some(1_767_323_045_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        let c = encode_cursor(42, "key_abc");
        assert_eq!(decode_cursor(&c).unwrap(), (42, "key_abc".to_owned()));
        assert!(decode_cursor("!!!").is_err());
        assert!(decode_cursor(&encode_cursor(1, "a b")).is_err());
    }
}
