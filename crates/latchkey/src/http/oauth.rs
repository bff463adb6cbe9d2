//! The OAuth 2.0 endpoints (SPEC §8): token, introspection, revocation,
//! and the documents clients discover the server by (RFC 8414 metadata,
//! the JWKS). They answer in OAuth's own formats, not problem+json.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;

use crate::app::App;
use crate::oauth::token::{self, Form, OAuthError};

type AppState = State<Arc<App>>;

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/oauth/token", post(token_endpoint))
        .route("/oauth/introspect", post(introspect))
        .route("/oauth/revoke", post(revoke))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/.well-known/jwks.json", get(jwks))
}

fn no_store() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h
}

/// The form of a request; a body refused by the framework (too large,
/// unreadable) is answered in OAuth's error format too, with its status.
fn read_form(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Form, OAuthError> {
    match body {
        Ok(body) => Form::parse(headers, &body),
        Err(rejection) => {
            let status = rejection.status();
            let description = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!(
                    "The request body is too large ({} KiB at most).",
                    crate::http::BODY_LIMIT / 1024
                )
            } else {
                "The request body could not be read.".to_owned()
            };
            Err(OAuthError::invalid_request(description).with_status(status))
        }
    }
}

/// An answer with `Cache-Control: no-store` (RFC 6749 §5.1), or the error.
fn answer(res: Result<impl IntoResponse, OAuthError>) -> Response {
    match res {
        Ok(a) => (no_store(), a).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn token_endpoint(
    State(app): AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let form = read_form(&headers, body);
    answer(async { token::token(&app, &headers, &form?).await.map(Json) }.await)
}

async fn introspect(
    State(app): AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let form = read_form(&headers, body);
    answer(async { token::introspect(&app, &headers, &form?).await.map(Json) }.await)
}

async fn revoke(
    State(app): AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let form = read_form(&headers, body);
    answer(async { token::revoke(&app, &headers, &form?).await.map(|()| "") }.await)
}

/// RFC 8414 authorization server metadata.
async fn metadata(State(app): AppState) -> Response {
    let issuer = app.config.public_url();
    // Introspection needs a client that authenticates (RFC 7662 §2.1);
    // a public client may still revoke its tokens (RFC 7009 §2.1).
    let auth_methods = [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ];
    let with_none = [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "none",
    ];
    // The algs a private_key_jwt assertion may be signed with: RFC 8414 §2
    // requires the list wherever private_key_jwt is offered.
    let assertion_algs = ["ES256", "EdDSA", "RS256"];
    let body = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        "token_endpoint": format!("{issuer}/oauth/token"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{issuer}/oauth/introspect"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": with_none,
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "revocation_endpoint_auth_methods_supported": with_none,
        "revocation_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": app.scopes.catalog().keys().collect::<Vec<_>>(),
        "authorization_response_iss_parameter_supported": true,
        "service_documentation": format!("{issuer}/errors"),
    });
    let mut h = HeaderMap::new();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    (h, Json(body)).into_response()
}

/// The public keys access tokens are signed with (and, after a rotation,
/// were signed with until their tokens expire).
async fn jwks(State(app): AppState) -> Response {
    match app.keys.get(&app).await {
        Ok(keys) => {
            let mut h = HeaderMap::new();
            // Short: a rotation must reach verifiers well before the old
            // key's tokens are gone.
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=60"),
            );
            (h, Json(keys.jwks.clone())).into_response()
        }
        Err(e) => OAuthError::from(e).into_response(),
    }
}
