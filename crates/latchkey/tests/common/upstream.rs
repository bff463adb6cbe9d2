//! A small upstream API for the proxy and forward-auth tests: it answers
//! every request with what it received (method, path, query, headers, body
//! size and checksum), counts requests, and has a few special paths:
//! `/slow/...` answers after 3 s, `/missing/...` answers a plain-text 404.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;

#[derive(Default)]
pub struct Seen {
    /// Requests received.
    pub hits: AtomicUsize,
    /// Body bytes received so far, over all requests.
    pub body_bytes: AtomicUsize,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start() -> Upstream {
        let seen = Arc::new(Seen::default());
        let app = Router::new().fallback(echo).with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Upstream { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.seen.hits.load(Ordering::SeqCst)
    }
}

async fn echo(State(seen): State<Arc<Seen>>, req: Request) -> Response {
    seen.hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    if path.starts_with("/slow/") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if path.starts_with("/missing/") {
        return (StatusCode::NOT_FOUND, "upstream says no").into_response();
    }
    let mut stream = body.into_data_stream();
    let mut len = 0usize;
    let mut crc = crc32fast::Hasher::new();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        len += chunk.len();
        crc.update(&chunk);
        seen.body_bytes.fetch_add(chunk.len(), Ordering::SeqCst);
    }
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    axum::Json(json!({
        "method": parts.method.as_str(),
        "path": path,
        "query": parts.uri.query(),
        "headers": headers,
        "body_len": len,
        "body_crc": crc.finalize(),
    }))
    .into_response()
}
