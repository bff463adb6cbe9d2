//! A key's own limits (SPEC §9): `ratelimit`, `ip_allowlist`, and usage
//! credits (`remaining`, `refill`): their request shapes, validation and
//! views. Enforcement is in `decision`.

use std::net::IpAddr;

use ipnet::IpNet;
use latchkey_store::{Credits, KeyRateLimit, Refill};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::FieldError;
use crate::views::DurationInput;

/// Most CIDRs in one allowlist.
pub const MAX_ALLOWLIST: usize = 100;
/// Largest rate limit and credit amounts.
const MAX_AMOUNT: i64 = 1_000_000_000_000;
/// Longest rate-limit window or refill interval: 10 years.
const MAX_SECONDS: i64 = 10 * 365 * 86_400;

/// `{limit, window}`: at most `limit` requests per `window`.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitInput {
    pub limit: i64,
    /// Integer seconds or a duration string like `"60s"`.
    pub window: DurationInput,
}

/// `{amount, interval}`: `remaining` is set back to `amount` every `interval`.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefillInput {
    pub amount: i64,
    /// Integer seconds or a duration string like `"24h"`.
    pub interval: DurationInput,
}

/// A key's rate limit as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RateLimitView {
    pub limit: i64,
    /// Seconds.
    pub window: i64,
}

/// A key's refill as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RefillView {
    pub amount: i64,
    /// Seconds.
    pub interval: i64,
}

impl From<KeyRateLimit> for RateLimitView {
    fn from(r: KeyRateLimit) -> Self {
        Self {
            limit: r.limit,
            window: r.window_ms / 1000,
        }
    }
}

impl From<Refill> for RefillView {
    fn from(r: Refill) -> Self {
        Self {
            amount: r.amount,
            interval: r.interval_ms / 1000,
        }
    }
}

fn push(errors: &mut Vec<FieldError>, field: &str, message: impl Into<String>) {
    errors.push(FieldError {
        field: field.to_owned(),
        message: message.into(),
    });
}

pub fn check_ratelimit(
    field: &str,
    r: &RateLimitInput,
    errors: &mut Vec<FieldError>,
) -> Option<KeyRateLimit> {
    let mut ok = true;
    if !(1..=MAX_AMOUNT).contains(&r.limit) {
        push(errors, &format!("{field}.limit"), "Must be 1 or more.");
        ok = false;
    }
    if !(1..=MAX_SECONDS).contains(&r.window.0) {
        push(
            errors,
            &format!("{field}.window"),
            "Must be 1 second to 10 years.",
        );
        ok = false;
    }
    ok.then(|| KeyRateLimit {
        limit: r.limit,
        window_ms: r.window.0 * 1000,
    })
}

/// Reads CIDRs (a bare address means just that address), normalized.
pub fn check_allowlist(field: &str, list: &[String], errors: &mut Vec<FieldError>) -> Vec<String> {
    if list.len() > MAX_ALLOWLIST {
        push(errors, field, format!("At most {MAX_ALLOWLIST} entries."));
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        match parse_cidr(entry) {
            Some(net) => {
                let s = net.to_string();
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            None => push(
                errors,
                &format!("{field}[{i}]"),
                "Not an IP address or CIDR like 203.0.113.0/24.",
            ),
        }
    }
    out
}

fn parse_cidr(s: &str) -> Option<IpNet> {
    parse_net(s.trim()).map(|net| net.trunc())
}

/// A CIDR, or a bare address meaning just that address (`trusted_proxies`,
/// `ip_allowlist`).
pub fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Whether `ip` is in `allowlist` (empty: anywhere).
pub fn allowed_from(allowlist: &[String], ip: Option<IpAddr>) -> bool {
    if allowlist.is_empty() {
        return true;
    }
    let Some(ip) = ip else { return false };
    let ip = canonical(ip);
    allowlist
        .iter()
        .filter_map(|c| c.parse::<IpNet>().ok())
        .any(|net| net.contains(&ip))
}

/// An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

pub fn check_refill(r: &RefillInput, errors: &mut Vec<FieldError>) -> Option<Refill> {
    let mut ok = true;
    if !(1..=MAX_AMOUNT).contains(&r.amount) {
        push(errors, "refill.amount", "Must be 1 or more.");
        ok = false;
    }
    if !(60..=MAX_SECONDS).contains(&r.interval.0) {
        push(errors, "refill.interval", "Must be 1 minute to 10 years.");
        ok = false;
    }
    ok.then(|| Refill {
        amount: r.amount,
        interval_ms: r.interval.0 * 1000,
    })
}

pub fn check_remaining(n: i64, errors: &mut Vec<FieldError>) -> Option<i64> {
    if (0..=MAX_AMOUNT).contains(&n) {
        Some(n)
    } else {
        push(errors, "remaining", "Must be 0 or more.");
        None
    }
}

/// Credits at creation: `remaining` (default: the refill amount) and an
/// optional refill starting now.
pub fn new_credits(
    remaining: Option<i64>,
    refill: Option<&RefillInput>,
    now: i64,
    errors: &mut Vec<FieldError>,
) -> Option<Credits> {
    let refill = refill.and_then(|r| check_refill(r, errors));
    let remaining = match remaining {
        Some(n) => check_remaining(n, errors),
        None => refill.map(|r| r.amount),
    }?;
    Some(Credits {
        remaining,
        refill,
        refilled_at: now,
    })
}

/// Credits after a PATCH of `remaining` and/or `refill` (each: absent,
/// null, or a value); `None` when neither is in the patch.
pub fn patched_credits(
    current: Option<Credits>,
    remaining: Option<Option<i64>>,
    refill: Option<Option<RefillInput>>,
    now: i64,
    errors: &mut Vec<FieldError>,
) -> Option<Option<Credits>> {
    if remaining.is_none() && refill.is_none() {
        return None;
    }
    let explicit_refill = matches!(refill, Some(Some(_)));
    let refill = match refill {
        None => current.and_then(|c| c.refill),
        Some(None) => None,
        Some(Some(r)) => check_refill(&r, errors),
    };
    let remaining = match remaining {
        Some(None) => {
            if explicit_refill {
                push(
                    errors,
                    "refill",
                    "A key without credits (`remaining: null`) has nothing to refill.",
                );
            }
            return Some(None);
        }
        Some(Some(n)) => check_remaining(n, errors).unwrap_or(0),
        None => match (current, refill) {
            (Some(c), _) => c.remaining,
            (None, Some(r)) => r.amount,
            (None, None) => return Some(None),
        },
    };
    Some(Some(Credits {
        remaining,
        refill,
        refilled_at: now,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlists() {
        let mut errors = Vec::new();
        let list = check_allowlist(
            "ip_allowlist",
            &[
                "203.0.113.7/24".into(),
                "198.51.100.1".into(),
                "2001:db8::/32".into(),
                "203.0.113.0/24".into(),
            ],
            &mut errors,
        );
        assert!(errors.is_empty());
        assert_eq!(list, ["203.0.113.0/24", "198.51.100.1/32", "2001:db8::/32"]);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(allowed_from(&list, ip("203.0.113.200")));
        assert!(allowed_from(&list, ip("::ffff:198.51.100.1")));
        assert!(allowed_from(&list, ip("2001:db8:1::5")));
        assert!(!allowed_from(&list, ip("198.51.100.2")));
        assert!(!allowed_from(&list, None));
        assert!(allowed_from(&[], None));
        check_allowlist(
            "ip_allowlist",
            &["10.0.0.0/33".into(), "x".into()],
            &mut errors,
        );
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].field, "ip_allowlist[0]");
    }

    #[test]
    fn credits_patch() {
        let mut e = Vec::new();
        let refill = RefillInput {
            amount: 100,
            interval: DurationInput(3600),
        };
        let c = new_credits(None, Some(&refill), 5, &mut e).unwrap();
        assert_eq!((c.remaining, c.refilled_at), (100, 5));
        assert_eq!(new_credits(None, None, 5, &mut e), None);
        assert_eq!(patched_credits(Some(c), None, None, 9, &mut e), None);
        assert_eq!(
            patched_credits(Some(c), Some(None), None, 9, &mut e),
            Some(None)
        );
        let p = patched_credits(Some(c), Some(Some(7)), None, 9, &mut e)
            .unwrap()
            .unwrap();
        assert_eq!((p.remaining, p.refill, p.refilled_at), (7, c.refill, 9));
        let p = patched_credits(None, None, Some(Some(refill)), 9, &mut e)
            .unwrap()
            .unwrap();
        assert_eq!(p.remaining, 100);
        assert!(e.is_empty());
        patched_credits(Some(c), Some(None), Some(Some(refill)), 9, &mut e);
        assert_eq!(e.len(), 1);
    }
}
