//! A bare HTTP/1.1 keep-alive connection (hyper's connection-level
//! client over one `TcpStream`): no pool, no retries, nothing between the
//! measurement and the socket.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where the server is: `host:port` taken from an `http://host:port` URL.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: String,
    host: HeaderValue,
    auth: Option<HeaderValue>,
}

impl Target {
    /// `url` is `http://host:port` (a trailing `/` is allowed); `root_key`
    /// is sent as `Authorization: Bearer` on API calls.
    pub fn new(url: &str, root_key: Option<&str>) -> Result<Target> {
        let Some(rest) = url.trim().strip_prefix("http://") else {
            bail!("`{url}` is not an http:// URL");
        };
        let addr = rest.trim_end_matches('/').to_owned();
        if addr.is_empty() || addr.contains('/') {
            bail!("`{url}` must be http://host:port with no path");
        }
        let host = HeaderValue::from_str(&addr).context("host header")?;
        let auth = root_key
            .map(|k| HeaderValue::from_str(&format!("Bearer {}", k.trim())))
            .transpose()
            .context("root key")?;
        Ok(Target { addr, host, auth })
    }

    /// A request to `path` with the root key; with a body it is a JSON POST.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Request<Full<Bytes>>> {
        self.build(method, path, self.auth.as_ref(), &[], body)
    }

    /// The root key's `Authorization` value, if any.
    pub fn root_auth(&self) -> Option<&HeaderValue> {
        self.auth.as_ref()
    }

    /// A request to `path` with `auth` as its `Authorization` (none if
    /// `None`) and `headers` added; a body is JSON unless `headers` name
    /// its content type.
    pub fn build(
        &self,
        method: Method,
        path: &str,
        auth: Option<&HeaderValue>,
        headers: &[(HeaderName, HeaderValue)],
        body: Option<Bytes>,
    ) -> Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone());
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a.clone());
        }
        for (name, value) in headers {
            b = b.header(name.clone(), value.clone());
        }
        let typed = headers.iter().any(|(name, _)| name == CONTENT_TYPE);
        let req = match body {
            Some(body) if typed => b.body(Full::new(body)),
            Some(body) => b
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(Full::new(body)),
            None => b.body(Full::new(Bytes::new())),
        };
        req.context("building a request")
    }
}

/// One open connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(target: &Target) -> Result<Conn> {
        let stream = TcpStream::connect(&target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender })
    }

    /// Sends `req` and reads the whole answer.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes)> {
        let (status, _, body) = self.exchange(req).await?;
        Ok((status, body))
    }

    /// Sends `req` and reads the whole answer, headers included.
    pub async fn exchange(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        self.sender.ready().await.context("connection not ready")?;
        let res = self.sender.send_request(req).await.context("sending")?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await.context("reading the body")?.to_bytes();
        Ok((parts.status, parts.headers, body))
    }
}
