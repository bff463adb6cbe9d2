//! The one refusal type. Services answer `ApiError`; the HTTP layer turns
//! it into problem+json (http/problem.rs) and the CLI into a line of text
//! or the same JSON, with exit code 1.

use latchkey_core::Code;
use latchkey_store::StoreError;
use serde::Serialize;

/// One invalid field of a 422 answer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON path of the field, e.g. `scopes[2]` or `expires_in`.
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: Code,
    pub detail: String,
    /// For `VALIDATION_FAILED`.
    pub errors: Vec<FieldError>,
    /// For `INSUFFICIENT_SCOPE`.
    pub required_scopes: Vec<String>,
    /// A credential was presented (so a 401 challenge says
    /// `error="invalid_token"`, RFC 6750 §3.1).
    pub credential_presented: bool,
    /// The rate limit counted for this request, for the `RateLimit-*`
    /// and `Retry-After` headers.
    pub ratelimit: Option<Box<crate::ratelimit::Outcome>>,
    /// The key a decision refused, if it exists: `(org_id, key_id)`.
    pub key: Option<Box<(String, String)>>,
}

impl ApiError {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            errors: Vec::new(),
            required_scopes: Vec::new(),
            credential_presented: false,
            ratelimit: None,
            key: None,
        }
    }

    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest, detail)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(Code::NotFound, format!("No such {what}."))
    }

    pub fn internal() -> Self {
        Self::new(
            Code::Internal,
            "The server failed to handle the request; the request id identifies it in the logs.",
        )
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("`{}`: {}", one.field, one.message),
            _ => format!("{} fields are invalid; see `errors`.", errors.len()),
        };
        Self {
            errors,
            ..Self::new(Code::ValidationFailed, detail)
        }
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    pub fn insufficient_scope(required: Vec<String>) -> Self {
        let detail = format!(
            "This request requires the scope(s): {}.",
            required.join(" ")
        );
        Self {
            required_scopes: required,
            credential_presented: true,
            ..Self::new(Code::InsufficientScope, detail)
        }
    }

    pub fn rate_limited(outcome: crate::ratelimit::Outcome, detail: impl Into<String>) -> Self {
        Self {
            ratelimit: Some(Box::new(outcome)),
            ..Self::new(Code::RateLimited, detail)
        }
    }

    pub fn with_ratelimit(mut self, outcome: Option<crate::ratelimit::Outcome>) -> Self {
        if self.ratelimit.is_none() {
            self.ratelimit = outcome.map(Box::new);
        }
        self
    }

    /// Names the key this refusal was taken on.
    pub fn on_key(mut self, org_id: &str, key_id: &str) -> Self {
        self.key = Some(Box::new((org_id.to_owned(), key_id.to_owned())));
        self
    }

    pub fn presented(mut self) -> Self {
        self.credential_presented = true;
        self
    }

    /// Maps a store answer; `what` names the resource for a 404.
    pub fn from_store(e: StoreError, what: &str) -> Self {
        match e {
            StoreError::NotFound => Self::not_found(what),
            StoreError::Conflict(m) => Self::new(Code::Conflict, m),
            other => {
                tracing::error!(error = %other, "store failure");
                Self::internal()
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::from_store(e, "resource")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.as_str(),
            self.code.status(),
            self.detail
        )
    }
}

impl std::error::Error for ApiError {}
