//! The refusal codes of SPEC §5, as one enum: status, family, title and
//! the `type` URL slug all come from here.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    Valid,
    InvalidRequest,
    MissingKey,
    InvalidFormat,
    InvalidKey,
    KeyRevoked,
    KeyExpired,
    WrongEnvironment,
    InvalidToken,
    TokenExpired,
    TokenRevoked,
    InsufficientScope,
    ForbiddenIp,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    RateLimited,
    UsageExceeded,
    Internal,
    BadGateway,
    Unavailable,
    GatewayTimeout,
}

impl Code {
    /// Every code, for the error pages and the docs.
    pub const ALL: [Code; 25] = [
        Code::Valid,
        Code::InvalidRequest,
        Code::MissingKey,
        Code::InvalidFormat,
        Code::InvalidKey,
        Code::KeyRevoked,
        Code::KeyExpired,
        Code::WrongEnvironment,
        Code::InvalidToken,
        Code::TokenExpired,
        Code::TokenRevoked,
        Code::InsufficientScope,
        Code::ForbiddenIp,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::Conflict,
        Code::PayloadTooLarge,
        Code::UnsupportedMediaType,
        Code::ValidationFailed,
        Code::RateLimited,
        Code::UsageExceeded,
        Code::Internal,
        Code::BadGateway,
        Code::Unavailable,
        Code::GatewayTimeout,
    ];

    pub fn status(self) -> u16 {
        match self {
            Code::Valid => 200,
            Code::InvalidRequest => 400,
            Code::MissingKey
            | Code::InvalidFormat
            | Code::InvalidKey
            | Code::KeyRevoked
            | Code::KeyExpired
            | Code::WrongEnvironment
            | Code::InvalidToken
            | Code::TokenExpired
            | Code::TokenRevoked => 401,
            Code::InsufficientScope | Code::ForbiddenIp => 403,
            Code::NotFound => 404,
            Code::MethodNotAllowed => 405,
            Code::Conflict => 409,
            Code::PayloadTooLarge => 413,
            Code::UnsupportedMediaType => 415,
            Code::ValidationFailed => 422,
            Code::RateLimited | Code::UsageExceeded => 429,
            Code::Internal => 500,
            Code::BadGateway => 502,
            Code::Unavailable => 503,
            Code::GatewayTimeout => 504,
        }
    }

    /// `KEY_REVOKED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Valid => "VALID",
            Code::InvalidRequest => "INVALID_REQUEST",
            Code::MissingKey => "MISSING_KEY",
            Code::InvalidFormat => "INVALID_FORMAT",
            Code::InvalidKey => "INVALID_KEY",
            Code::KeyRevoked => "KEY_REVOKED",
            Code::KeyExpired => "KEY_EXPIRED",
            Code::WrongEnvironment => "WRONG_ENVIRONMENT",
            Code::InvalidToken => "INVALID_TOKEN",
            Code::TokenExpired => "TOKEN_EXPIRED",
            Code::TokenRevoked => "TOKEN_REVOKED",
            Code::InsufficientScope => "INSUFFICIENT_SCOPE",
            Code::ForbiddenIp => "FORBIDDEN_IP",
            Code::NotFound => "NOT_FOUND",
            Code::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Code::Conflict => "CONFLICT",
            Code::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Code::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Code::ValidationFailed => "VALIDATION_FAILED",
            Code::RateLimited => "RATE_LIMITED",
            Code::UsageExceeded => "USAGE_EXCEEDED",
            Code::Internal => "INTERNAL",
            Code::BadGateway => "BAD_GATEWAY",
            Code::Unavailable => "UNAVAILABLE",
            Code::GatewayTimeout => "GATEWAY_TIMEOUT",
        }
    }

    /// `key-revoked`: the last segment of the problem `type` URL.
    pub fn slug(self) -> String {
        self.as_str().to_ascii_lowercase().replace('_', "-")
    }

    pub fn from_slug(slug: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.slug() == slug)
    }

    /// The lower-case family of SPEC §5's `error` member.
    pub fn family(self) -> &'static str {
        match self.status() {
            200 => "ok",
            400 | 413 | 415 => "invalid_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            405 => "method_not_allowed",
            409 => "conflict",
            422 => "validation_failed",
            429 => "rate_limited",
            502 | 504 => "upstream_error",
            503 => "unavailable",
            _ => "internal_error",
        }
    }

    /// The HTTP reason phrase used as the problem `title`.
    pub fn title(self) -> &'static str {
        match self.status() {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            413 => "Payload Too Large",
            415 => "Unsupported Media Type",
            422 => "Unprocessable Content",
            429 => "Too Many Requests",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            _ => "Internal Server Error",
        }
    }

    /// Whether a credential was presented and found wanting, so that a
    /// bearer challenge carries `error="invalid_token"` (RFC 6750 §3.1).
    pub fn is_bad_credential(self) -> bool {
        self.status() == 401 && self != Code::MissingKey
    }

    /// What the error page at the `type` URL says: what happened and what to do.
    pub fn explanation(self) -> (&'static str, &'static str) {
        match self {
            Code::Valid => ("The credential is valid.", "Nothing to do."),
            Code::InvalidRequest => (
                "The request is malformed: a header, parameter or body could not be read, or it carried two different credentials.",
                "Send one credential, in one place, and check the request against the API reference.",
            ),
            Code::MissingKey => (
                "No credential was presented where one is required.",
                "Send your API key as `Authorization: Bearer <key>` (or in another place the API documents).",
            ),
            Code::InvalidFormat => (
                "The credential is not one this server could have issued: wrong prefix, length, characters or checksum.",
                "Copy the key again from where it was shown at creation; keys are never shown twice, so create a new one if it is lost.",
            ),
            Code::InvalidKey => (
                "The key is well-formed but does not exist (it may have been deleted).",
                "Check that you are using a current key for this instance.",
            ),
            Code::KeyRevoked => (
                "The key was revoked, or it was rotated and its grace period has ended.",
                "Use the key that replaced it, or create a new one.",
            ),
            Code::KeyExpired => (
                "The key is past its expiry date.",
                "Create a new key; set a later expiry if the key must live longer.",
            ),
            Code::WrongEnvironment => (
                "The key belongs to another environment: for example a test key sent to a live instance.",
                "Test keys only work in the test environment; use a key of this environment.",
            ),
            Code::InvalidToken => (
                "The token failed its signature, issuer, audience or shape checks.",
                "Obtain a new token and send it unchanged.",
            ),
            Code::TokenExpired => ("The token is past its expiry.", "Obtain a new token."),
            Code::TokenRevoked => (
                "The token, or the grant it came from, was revoked.",
                "Ask the user to authorize the app again.",
            ),
            Code::InsufficientScope => (
                "The credential is valid but lacks a scope this request requires.",
                "Use a credential granted the scopes listed in `required_scopes`.",
            ),
            Code::ForbiddenIp => (
                "The key may only be used from the addresses in its IP allowlist.",
                "Call from an allowed address or change the key's allowlist.",
            ),
            Code::NotFound => (
                "No such resource or route.",
                "Check the identifier and the path.",
            ),
            Code::MethodNotAllowed => (
                "The path exists but does not accept this method.",
                "Use one of the methods in the `Allow` header.",
            ),
            Code::Conflict => (
                "The request conflicts with the resource's current state.",
                "Read the resource again and retry with its current state.",
            ),
            Code::PayloadTooLarge => (
                "The request body is larger than 1 MiB.",
                "Send a smaller body.",
            ),
            Code::UnsupportedMediaType => (
                "The request body is not of a supported content type.",
                "Send JSON with `Content-Type: application/json`.",
            ),
            Code::ValidationFailed => (
                "The request is well-formed but some values are invalid.",
                "Fix the fields listed in `errors[]`.",
            ),
            Code::RateLimited => (
                "Too many requests in the current window.",
                "Wait for the number of seconds in `Retry-After`.",
            ),
            Code::UsageExceeded => (
                "The key has used all of its usage credits.",
                "Wait for the credits to refill or raise the key's `remaining`.",
            ),
            Code::Internal => (
                "The server failed to handle the request.",
                "Retry later; report the `request_id` if it persists.",
            ),
            Code::BadGateway => (
                "The built-in proxy could not get an answer from the upstream API: it refused the connection or broke it off.",
                "Check that the upstream in `[proxy] upstream` is running and reachable from latchkey.",
            ),
            Code::GatewayTimeout => (
                "The upstream API did not answer within `[proxy] timeout`.",
                "Retry later; if the upstream is slow on purpose, raise `[proxy] timeout`.",
            ),
            Code::Unavailable => (
                "A dependency of the server (such as its database) is unavailable.",
                "Retry later.",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.slug()));
            assert_eq!(Code::from_slug(&c.slug()), Some(c));
        }
        assert_eq!(Code::KeyRevoked.slug(), "key-revoked");
        assert_eq!(Code::from_slug("nope"), None);
    }

    #[test]
    fn statuses_and_families_follow_the_spec() {
        assert_eq!(Code::InvalidRequest.status(), 400);
        assert_eq!(Code::WrongEnvironment.status(), 401);
        assert_eq!(Code::ForbiddenIp.status(), 403);
        assert_eq!(Code::UsageExceeded.status(), 429);
        assert_eq!(Code::ValidationFailed.family(), "validation_failed");
        assert_eq!(Code::KeyExpired.family(), "unauthorized");
        assert!(Code::InvalidKey.is_bad_credential());
        assert!(!Code::MissingKey.is_bad_credential());
    }
}
