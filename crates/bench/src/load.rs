//! The load generator: N connections, one task each, sending requests
//! back to back for a fixed time, checking every answer and recording
//! every latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::client::{Conn, Target};
use crate::procstat::CpuSampler;

/// What a run asks for and what a right answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// `GET /healthz`: 200 and `ok\n`.
    Healthz,
    /// `POST /v1/verify`: 200 and `"valid":true`.
    Valid,
    /// `POST /v1/verify`: 200 and `"code":"KEY_REVOKED"`.
    Revoked,
    /// `POST /v1/verify`: 200 and `"code":"INVALID_FORMAT"`.
    Malformed,
    /// `/v1/forward-auth`: 200, an empty body and an `X-Latchkey-Key-Id`
    /// header (a refusal has a problem body and no identity headers).
    ForwardAuth,
    /// A request answered by `latchkey-bench upstream` (directly or through
    /// latchkey's proxy): 200 and exactly [`crate::upstream::BODY`].
    Upstream,
    /// An OAuth token request (`grant_type=client_credentials`): 200 and a
    /// body with `"access_token"`.
    Token,
    /// An OAuth introspection of a live token: 200 and `"active":true`.
    Introspect,
    /// A console page of a signed-in session: 200, the whole page, and
    /// not the sign-in form.
    Page,
}

impl Check {
    pub fn parse(s: &str) -> Result<Check> {
        Ok(match s {
            "healthz" => Check::Healthz,
            "valid" => Check::Valid,
            "revoked" => Check::Revoked,
            "malformed" => Check::Malformed,
            "forward-auth" => Check::ForwardAuth,
            "upstream" => Check::Upstream,
            "token" => Check::Token,
            "introspect" => Check::Introspect,
            _ => bail!(
                "unknown check `{s}`: healthz, valid, revoked, malformed, forward-auth, upstream, token or introspect"
            ),
        })
    }

    pub fn is_right(self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> bool {
        if status != StatusCode::OK {
            return false;
        }
        match self {
            Check::Healthz => body == b"ok\n",
            Check::Valid => contains(body, br#""valid":true"#),
            Check::Revoked => contains(body, br#""code":"KEY_REVOKED""#),
            Check::Malformed => contains(body, br#""code":"INVALID_FORMAT""#),
            Check::ForwardAuth => {
                body.is_empty()
                    && headers
                        .get("x-latchkey-key-id")
                        .is_some_and(|v| !v.is_empty())
            }
            Check::Upstream => body == crate::upstream::BODY,
            Check::Token => contains(body, br#""access_token""#),
            Check::Introspect => contains(body, br#""active":true"#),
            Check::Page => {
                body.trim_ascii_end().ends_with(b"</html>")
                    && !contains(body, b"Sign in to the console")
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// What varies from one request to the next: one is drawn at random per
/// request.
#[derive(Clone)]
enum Pick {
    /// A `{"credential": KEY}` body, sent with the root key.
    Body(Bytes),
    /// `Authorization: Bearer KEY` (an API key, instead of the root key).
    Bearer(HeaderValue),
}

/// One kind of request, with what to draw from (nothing for healthz).
#[derive(Clone)]
pub struct Workload {
    pub check: Check,
    method: Method,
    path: Arc<str>,
    /// Sent on every request.
    headers: Arc<Vec<(HeaderName, HeaderValue)>>,
    /// `Authorization` of every request that draws no bearer key, instead
    /// of the target's root key.
    auth: Option<HeaderValue>,
    /// The body of every request that draws none (its content type is
    /// among `headers`).
    body: Option<Bytes>,
    picks: Arc<Vec<Pick>>,
    /// Set: `picks` are drawn in order, each once, across every
    /// connection and every run of this workload (a request past the last
    /// is an error), so no credential is seen twice by the server.
    once: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

/// The path of the protected API that the forward-auth and proxy
/// scenarios ask for (a `[[routes]]` entry requiring `documents.read`).
pub const DOCUMENTS_PATH: &str = "/api/v1/documents";

fn first(keys: &[String], limit: Option<usize>) -> Result<&[String]> {
    let n = limit.unwrap_or(keys.len()).min(keys.len());
    match keys.get(..n) {
        Some(k) if !k.is_empty() => Ok(k),
        _ => bail!("no keys to use"),
    }
}

fn bearers(keys: &[String]) -> Result<Vec<Pick>> {
    keys.iter()
        .map(|k| {
            HeaderValue::from_str(&format!("Bearer {k}"))
                .map(Pick::Bearer)
                .context("a key is not a header value")
        })
        .collect()
}

impl Workload {
    pub fn healthz() -> Workload {
        Workload {
            check: Check::Healthz,
            method: Method::GET,
            path: "/healthz".into(),
            headers: Arc::new(Vec::new()),
            auth: None,
            body: None,
            picks: Arc::new(Vec::new()),
            once: None,
        }
    }

    /// A verify workload over `keys` (the first `limit` of them, if given).
    pub fn verify(check: Check, keys: &[String], limit: Option<usize>) -> Result<Workload> {
        let bodies = first(keys, limit)?
            .iter()
            .map(|k| {
                serde_json::to_vec(&serde_json::json!({ "credential": k }))
                    .map(|b| Pick::Body(Bytes::from(b)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Workload {
            check,
            method: Method::POST,
            path: "/v1/verify".into(),
            headers: Arc::new(Vec::new()),
            auth: None,
            body: None,
            picks: Arc::new(bodies),
            once: None,
        })
    }

    /// `GET /v1/forward-auth` as Traefik sends it for `GET
    /// /api/v1/documents`, with `Authorization: Bearer KEY`, KEY drawn
    /// from the first `limit` of `keys`.
    pub fn forward_auth(keys: &[String], limit: Option<usize>) -> Result<Workload> {
        Ok(Workload {
            check: Check::ForwardAuth,
            method: Method::GET,
            path: "/v1/forward-auth".into(),
            headers: Arc::new(vec![
                (
                    HeaderName::from_static("x-forwarded-method"),
                    HeaderValue::from_static("GET"),
                ),
                (
                    HeaderName::from_static("x-forwarded-uri"),
                    HeaderValue::from_static(DOCUMENTS_PATH),
                ),
            ]),
            auth: None,
            body: None,
            picks: Arc::new(bearers(first(keys, limit)?)?),
            once: None,
        })
    }

    /// `GET /api/v1/documents` with `Authorization: Bearer KEY`, answered
    /// by the upstream: sent to latchkey's proxy, or straight to the
    /// upstream (the same request, which the upstream does not look at).
    pub fn documents(keys: &[String], limit: Option<usize>) -> Result<Workload> {
        Ok(Workload {
            check: Check::Upstream,
            method: Method::GET,
            path: DOCUMENTS_PATH.into(),
            headers: Arc::new(Vec::new()),
            auth: None,
            body: None,
            picks: Arc::new(bearers(first(keys, limit)?)?),
            once: None,
        })
    }

    /// `POST path` with a fixed `application/x-www-form-urlencoded` body
    /// (`form`: name, value pairs, encoded here) and a fixed
    /// `Authorization` (e.g. [`basic_auth`]), as OAuth clients send to a
    /// token or introspection endpoint.
    pub fn form_post(
        check: Check,
        path: &str,
        auth: HeaderValue,
        form: &[(&str, &str)],
    ) -> Workload {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        Workload {
            check,
            method: Method::POST,
            path: path.into(),
            headers: Arc::new(vec![(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )]),
            auth: Some(auth),
            body: Some(Bytes::from(body)),
            picks: Arc::new(Vec::new()),
            once: None,
        }
    }

    /// `grant_type=client_credentials&scope=SCOPE` to a token endpoint.
    pub fn client_credentials(path: &str, auth: HeaderValue, scope: &str) -> Workload {
        Workload::form_post(
            Check::Token,
            path,
            auth,
            &[("grant_type", "client_credentials"), ("scope", scope)],
        )
    }

    /// `GET path` with `headers` (a console page, with its session cookie).
    pub fn page(path: &str, headers: Vec<(HeaderName, HeaderValue)>) -> Workload {
        Workload {
            check: Check::Page,
            method: Method::GET,
            path: path.into(),
            headers: Arc::new(headers),
            auth: None,
            body: None,
            picks: Arc::new(Vec::new()),
            once: None,
        }
    }

    /// `token=TOKEN` to an introspection endpoint.
    pub fn introspection(path: &str, auth: HeaderValue, token: &str) -> Workload {
        Workload::form_post(Check::Introspect, path, auth, &[("token", token)])
    }

    /// This workload with its picks drawn in order, each once.
    pub fn each_once(mut self) -> Workload {
        self.once = Some(Arc::new(std::sync::atomic::AtomicUsize::new(0)));
        self
    }

    pub fn request(
        &self,
        target: &Target,
        rng: &mut Rng,
    ) -> Result<hyper::Request<http_body_util::Full<Bytes>>> {
        let pick = match &self.once {
            _ if self.picks.is_empty() => None,
            Some(next) => {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match self.picks.get(i) {
                    Some(p) => Some(p),
                    None => bail!(
                        "all {} one-time credentials were used: seed more",
                        self.picks.len()
                    ),
                }
            }
            None => self.picks.get(rng.below(self.picks.len())),
        };
        let auth = self.auth.as_ref().or(target.root_auth());
        let (auth, body) = match pick {
            None => (auth, self.body.clone()),
            Some(Pick::Body(b)) => (auth, Some(b.clone())),
            Some(Pick::Bearer(h)) => (Some(h), self.body.clone()),
        };
        target.build(self.method.clone(), &self.path, auth, &self.headers, body)
    }
}

/// `Authorization: Basic` for an OAuth client (RFC 6749 §2.3.1: id and
/// secret each form-urlencoded, then joined by `:` and base64-encoded).
pub fn basic_auth(client_id: &str, secret: &str) -> Result<HeaderValue> {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(client_id), enc(secret));
    HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(raw)))
        .context("client credentials are not a header value")
}

/// xorshift64*: fast, good enough to pick keys uniformly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// What one run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunStats {
    pub connections: usize,
    pub seconds: f64,
    /// Answers that were right.
    pub ok: u64,
    /// Answers with the wrong status or body: the run is void.
    pub wrong: u64,
    /// Connection or protocol failures: the run is void.
    pub errors: u64,
    pub rps: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Server CPU over the run, in % of one core (200% = both cores of a 2-core machine).
    pub server_cpu: Option<f64>,
    /// This load generator's CPU, in % of one core.
    pub client_cpu: Option<f64>,
    /// The whole machine's busy share, in % of all cores (other users included).
    pub machine_busy: Option<f64>,
    /// CPUs of the machine, to turn `machine_busy` into cores.
    #[serde(default)]
    pub cpus: Option<usize>,
    /// The first wrong answer or error, for diagnosis.
    pub sample_wrong: Option<String>,
}

#[derive(Default)]
struct TaskStats {
    lat_us: Vec<u32>,
    ok: u64,
    wrong: u64,
    errors: u64,
    sample: Option<String>,
}

/// Runs `load` on `connections` connections for `duration`. Connections
/// are opened before the clock starts.
pub async fn run(
    target: &Target,
    load: &Workload,
    connections: usize,
    duration: Duration,
    server_pid: Option<u32>,
) -> Result<RunStats> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(Conn::open(target).await?);
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(42);
    let cpu = CpuSampler::start(server_pid);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(connections);
    for (i, conn) in conns.into_iter().enumerate() {
        let (target, load) = (target.clone(), load.clone());
        let rng = Rng::new(seed ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        tasks.push(tokio::spawn(worker(conn, target, load, deadline, rng)));
    }
    let mut all = TaskStats::default();
    for t in tasks {
        let s = t.await?;
        all.lat_us.extend_from_slice(&s.lat_us);
        all.ok += s.ok;
        all.wrong += s.wrong;
        all.errors += s.errors;
        if all.sample.is_none() {
            all.sample = s.sample;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let usage = cpu.finish();
    all.lat_us.sort_unstable();
    let pct = |p: f64| -> u64 {
        let n = all.lat_us.len();
        if n == 0 {
            return 0;
        }
        let idx = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
        all.lat_us.get(idx).copied().map(u64::from).unwrap_or(0)
    };
    Ok(RunStats {
        connections,
        seconds: elapsed,
        ok: all.ok,
        wrong: all.wrong,
        errors: all.errors,
        rps: (all.ok + all.wrong) as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_us: all.lat_us.last().copied().map(u64::from).unwrap_or(0),
        server_cpu: usage.server,
        client_cpu: usage.client,
        machine_busy: usage.machine,
        cpus: std::thread::available_parallelism().ok().map(usize::from),
        sample_wrong: all.sample,
    })
}

async fn worker(
    mut conn: Conn,
    target: Target,
    load: Workload,
    deadline: Instant,
    mut rng: Rng,
) -> TaskStats {
    let mut s = TaskStats {
        lat_us: Vec::with_capacity(1 << 16),
        ..TaskStats::default()
    };
    while Instant::now() < deadline {
        let req = match load.request(&target, &mut rng) {
            Ok(r) => r,
            Err(e) => {
                s.errors += 1;
                s.sample.get_or_insert_with(|| format!("error: {e:#}"));
                break;
            }
        };
        let t0 = Instant::now();
        match conn.exchange(req).await {
            Ok((status, headers, body)) => {
                let us = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
                s.lat_us.push(us);
                if load.check.is_right(status, &headers, &body) {
                    s.ok += 1;
                } else {
                    s.wrong += 1;
                    s.sample.get_or_insert_with(|| {
                        format!(
                            "{status}: {}",
                            String::from_utf8_lossy(body.get(..300).unwrap_or(&body))
                        )
                    });
                }
            }
            Err(e) => {
                s.errors += 1;
                s.sample.get_or_insert_with(|| format!("error: {e:#}"));
                // The connection is likely gone: open another one.
                match Conn::open(&target).await {
                    Ok(c) => conn = c,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_auth_needs_the_identity_header_and_no_body() {
        let mut h = HeaderMap::new();
        assert!(!Check::ForwardAuth.is_right(StatusCode::OK, &h, b""));
        h.insert("x-latchkey-key-id", HeaderValue::from_static("key_1"));
        assert!(Check::ForwardAuth.is_right(StatusCode::OK, &h, b""));
        assert!(!Check::ForwardAuth.is_right(StatusCode::UNAUTHORIZED, &h, b""));
        assert!(!Check::ForwardAuth.is_right(StatusCode::OK, &h, b"{\"type\":\"x\"}"));
    }

    #[test]
    fn token_needs_200_and_an_access_token() {
        let h = HeaderMap::new();
        let ok = br#"{"access_token":"eyJ.x.y","token_type":"Bearer","expires_in":3600,"scope":"api:read"}"#;
        assert!(Check::Token.is_right(StatusCode::OK, &h, ok));
        assert!(!Check::Token.is_right(StatusCode::BAD_REQUEST, &h, ok));
        assert!(!Check::Token.is_right(StatusCode::OK, &h, br#"{"error":"invalid_client"}"#));
        assert!(!Check::Token.is_right(StatusCode::OK, &h, b""));
    }

    #[test]
    fn introspect_needs_200_and_active_true() {
        let h = HeaderMap::new();
        assert!(Check::Introspect.is_right(
            StatusCode::OK,
            &h,
            br#"{"active":true,"client_id":"c","scope":"api:read"}"#
        ));
        // An unknown, expired or evicted token is 200 with active false.
        assert!(!Check::Introspect.is_right(StatusCode::OK, &h, br#"{"active":false}"#));
        assert!(!Check::Introspect.is_right(StatusCode::UNAUTHORIZED, &h, br#"{"active":true}"#));
    }

    #[tokio::test]
    async fn form_post_sends_the_form_and_the_basic_credentials() {
        use http_body_util::BodyExt as _;
        let auth = basic_auth("bench-client", "s3cret").unwrap();
        assert_eq!(auth.to_str().unwrap(), "Basic YmVuY2gtY2xpZW50OnMzY3JldA==");
        let load = Workload::form_post(
            Check::Token,
            "/oauth/token",
            auth.clone(),
            &[("grant_type", "client_credentials"), ("scope", "api:read")],
        );
        let target = Target::new("http://127.0.0.1:9", Some("root")).unwrap();
        let req = load.request(&target, &mut Rng::new(1)).unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/oauth/token");
        assert_eq!(req.headers().get("authorization"), Some(&auth));
        assert_eq!(
            req.headers()
                .get_all(CONTENT_TYPE)
                .iter()
                .collect::<Vec<_>>(),
            vec!["application/x-www-form-urlencoded"]
        );
        let body = req.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "grant_type=client_credentials&scope=api%3Aread");
    }

    #[test]
    fn basic_auth_form_encodes_id_and_secret() {
        // "a:b" -> "a%3Ab", "c d" -> "c+d": base64("a%3Ab:c+d").
        let h = basic_auth("a:b", "c d").unwrap();
        assert_eq!(h.to_str().unwrap(), "Basic YSUzQWI6Yytk");
    }

    #[test]
    fn upstream_answer_is_exact() {
        let h = HeaderMap::new();
        assert!(Check::Upstream.is_right(StatusCode::OK, &h, crate::upstream::BODY));
        assert!(!Check::Upstream.is_right(StatusCode::OK, &h, b"{\"ok\":false}"));
        assert!(!Check::Upstream.is_right(StatusCode::UNAUTHORIZED, &h, crate::upstream::BODY));
    }
}
