//! Operations endpoints: health, readiness, metrics, the OpenAPI
//! document, and the human pages behind each problem `type` URL.

use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use latchkey_core::Code;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::app::App;
use crate::error::ApiError;

pub fn router(doc: Arc<utoipa::openapi::OpenApi>) -> Router<Arc<App>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route(
            "/openapi.json",
            get(move || async move { Json(doc.as_ref().clone()) }),
        )
        .route("/errors/{slug}", get(error_page))
        .route("/errors", get(error_index))
        .route("/", get(home))
}

/// The process-wide Prometheus recorder, installed once.
pub fn metrics_handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<App>>) -> Result<&'static str, ApiError> {
    match tokio::time::timeout(std::time::Duration::from_secs(2), app.store.ping()).await {
        Ok(Ok(())) => Ok("ready\n"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::new(
                Code::Unavailable,
                "The database is unreachable.",
            ))
        }
        Err(_) => Err(ApiError::new(
            Code::Unavailable,
            "The database did not answer within 2 seconds.",
        )),
    }
}

async fn metrics_text() -> Response {
    let body = metrics_handle().map(|h| h.render()).unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · latchkey</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:3rem auto;padding:0 1rem;color:#1a1a1a}}\
code{{background:#f2f2f2;padding:.1em .3em;border-radius:3px}}a{{color:#0a58ca}}</style></head><body>{body}</body></html>"
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders `backticks` as `<code>` after escaping.
fn prose(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in escape(s).split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str("<code>");
            out.push_str(part);
            out.push_str("</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

async fn error_page(Path(slug): Path<String>) -> Result<Html<String>, ApiError> {
    let code = Code::from_slug(&slug).ok_or_else(|| ApiError::not_found("error code"))?;
    let (what, fix) = code.explanation();
    let body = format!(
        "<p><a href=\"/errors\">All errors</a></p><h1><code>{}</code></h1><p>HTTP {} · <code>error: \"{}\"</code></p>\
<h2>What happened</h2><p>{}</p><h2>How to fix it</h2><p>{}</p>",
        code.as_str(),
        code.status(),
        code.family(),
        prose(what),
        prose(fix)
    );
    Ok(page(code.as_str(), &body))
}

async fn error_index() -> Html<String> {
    let mut body = String::from(
        "<h1>Error codes</h1><p>Every refusal is <code>application/problem+json</code> with one of these codes.</p><ul>",
    );
    for c in Code::ALL.into_iter().filter(|c| *c != Code::Valid) {
        body.push_str(&format!(
            "<li><a href=\"/errors/{}\"><code>{}</code></a> ({}) — {}</li>",
            c.slug(),
            c.as_str(),
            c.status(),
            prose(c.explanation().0)
        ));
    }
    body.push_str("</ul>");
    page("Error codes", &body)
}

async fn home() -> impl IntoResponse {
    (
        StatusCode::OK,
        page(
            "latchkey",
            "<h1>latchkey</h1><p>API authentication server. See <a href=\"/openapi.json\">/openapi.json</a>, \
<a href=\"/errors\">error codes</a>, <a href=\"/healthz\">/healthz</a>.</p>",
        ),
    )
}
