//! The HTTP server: one router, one error type, one middleware stack.

pub mod authorize;
pub mod clients;
pub mod extract;
pub mod form;
pub mod forward_auth;
pub mod gate;
pub mod oauth;
pub mod ops;
pub mod problem;
pub mod proxy;
pub mod v1;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use crate::app::App;
use crate::error::ApiError;

/// Largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The OpenAPI document of every `/v1` endpoint, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    split().1
}

/// The API's router and its OpenAPI document. axum's catch-all `{*name}`
/// is written `{name}` in the document, as OpenAPI has it.
fn split() -> (Router<Arc<App>>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = api_router().split_for_parts();
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths
        .into_iter()
        .map(|(k, v)| (k.replace("{*", "{"), v))
        .collect();
    tidy(&mut doc);
    (router, doc)
}

/// What OpenAPI requires and utoipa leaves out: a description on every
/// response (refusal ranges say they are problem+json), and operation ids
/// used once (a handler that takes any method gets `_get`, `_post`, ...).
fn tidy(doc: &mut utoipa::openapi::OpenApi) {
    use std::collections::HashMap;
    use utoipa::openapi::RefOr;
    use utoipa::openapi::path::Operation;

    fn operations(
        item: &mut utoipa::openapi::PathItem,
    ) -> [(&'static str, &mut Option<Operation>); 8] {
        [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("options", &mut item.options),
            ("head", &mut item.head),
            ("patch", &mut item.patch),
            ("trace", &mut item.trace),
        ]
    }
    let mut uses: HashMap<String, usize> = HashMap::new();
    for item in doc.paths.paths.values_mut() {
        for (_, op) in operations(item) {
            if let Some(id) = op.as_ref().and_then(|o| o.operation_id.clone()) {
                *uses.entry(id).or_default() += 1;
            }
        }
    }
    for item in doc.paths.paths.values_mut() {
        for (method, op) in operations(item) {
            let Some(op) = op else { continue };
            if let Some(id) = &mut op.operation_id
                && uses.get(id.as_str()).is_some_and(|n| *n > 1)
            {
                id.push('_');
                id.push_str(method);
            }
            for (status, response) in op.responses.responses.iter_mut() {
                if let RefOr::T(r) = response
                    && r.description.is_empty()
                {
                    r.description = if status.starts_with('2') {
                        "Success.".to_owned()
                    } else {
                        "A refusal, as application/problem+json (RFC 9457).".to_owned()
                    };
                }
            }
        }
    }
}

fn api_router() -> OpenApiRouter<Arc<App>> {
    let mut doc = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("latchkey")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("Self-hosted API authentication: API keys, OAuth 2.0, client JWTs. Errors are RFC 9457 problem+json."))
                .build(),
        )
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "root_key",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("lk_root_...")
                .build(),
        ),
    );
    components.add_security_scheme(
        "root_key_header",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
    );
    OpenApiRouter::with_openapi(doc)
        .merge(v1::router())
        .merge(clients::router())
        .merge(forward_auth::router())
}

/// The whole application as an axum router.
pub fn router(app: Arc<App>) -> Router {
    let (api, doc) = split();
    let doc = Arc::new(doc);
    api.merge(ops::router(doc))
        .merge(oauth::router())
        // The OAuth pages (HTML, not in the OpenAPI document).
        .merge(authorize::router())
        // The console (HTML, not in the OpenAPI document either).
        .merge(crate::console::router())
        // Everything else goes to the built-in proxy (a 404 without one).
        .fallback(proxy::handle)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("handler panicked");
            ApiError::internal().into_response_parts()
        }))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            problem::finish,
        ))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
            header::PROXY_AUTHORIZATION,
        ]))
        .with_state(app)
}

impl ApiError {
    fn into_response_parts(self) -> axum::response::Response {
        axum::response::IntoResponse::into_response(self)
    }
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
