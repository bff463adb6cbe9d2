//! Protecting an API (SPEC §6): `/v1/forward-auth` (generic, nginx and
//! Envoy flavours) and the built-in proxy, in front of a real upstream, on
//! the real binary. The nginx end of forward-auth is in nginx.rs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::upstream::Upstream;
use common::{Backend, ROUTES, Resp, TestServer};
use serde_json::{Value, json};

/// A server with the routes above, proxying to `upstream` if given.
async fn server(backend: Backend, upstream: Option<String>) -> Option<TestServer> {
    let proxy = upstream
        .map(|u| format!("[proxy]\nupstream = \"{u}\"\ntimeout = \"1s\"\n"))
        .unwrap_or_default();
    TestServer::start_with(backend, &format!("{ROUTES}\n{proxy}"), &[]).await
}

/// A reader key and a writer key of one org: (org, reader, writer, reader id).
async fn keys(s: &TestServer) -> (String, String, String, String) {
    let org = s.org().await;
    let (rid, reader) = s
        .key(
            &org,
            json!({"name": "reader", "scopes": ["documents.read"], "external_id": "cust_42"}),
        )
        .await;
    let (_, writer) = s
        .key(
            &org,
            json!({"name": "writer", "scopes": ["documents.read", "documents.write"]}),
        )
        .await;
    (org, reader, writer, rid)
}

async fn fwd(s: &TestServer, path: &str, method: &str, uri: &str, key: Option<&str>) -> Resp {
    let mut req = s
        .http
        .get(s.at(path))
        .header("x-forwarded-method", method)
        .header("x-forwarded-uri", uri);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    s.send(req).await
}

fn header<'a>(r: &'a Resp, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

async fn forward_auth_follows_the_routes(backend: Backend) {
    let Some(s) = server(backend, None).await else {
        return;
    };
    let (org, reader, writer, rid) = keys(&s).await;
    let fa = "/v1/forward-auth";

    // A public route needs nothing and says nothing about identity.
    let r = fwd(&s, fa, "GET", "/api/v1/status", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(header(&r, "x-latchkey-org").is_none());

    // A protected route with a key that has its scope.
    let r = fwd(&s, fa, "GET", "/api/v1/documents?page=2", Some(&reader)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(header(&r, "x-latchkey-org"), Some(org.as_str()));
    assert_eq!(header(&r, "x-latchkey-subject"), Some("cust_42"));
    assert_eq!(header(&r, "x-latchkey-key-id"), Some(rid.as_str()));
    assert_eq!(header(&r, "x-latchkey-scopes"), Some("documents.read"));
    assert_eq!(header(&r, "x-latchkey-credential-type"), Some("api_key"));
    assert_eq!(header(&r, "x-latchkey-environment"), Some("live"));
    assert!(header(&r, "x-request-id").is_some());

    // The same path with another method needs another scope.
    let r = fwd(&s, fa, "POST", "/api/v1/documents", Some(&reader)).await;
    let p = r.problem(403, "INSUFFICIENT_SCOPE");
    assert_eq!(p["required_scopes"], json!(["documents.write"]));
    assert!(
        header(&r, "www-authenticate")
            .unwrap()
            .contains("insufficient_scope")
    );
    let r = fwd(&s, fa, "POST", "/api/v1/documents", Some(&writer)).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // `{id}` routes, with the original's spelling variations.
    for uri in [
        "/api/v1/documents/doc_1",
        "/API/V1/Documents/doc_1",
        "//api//v1/documents/doc_1/",
        "/api/v1/%64ocuments/doc_1",
    ] {
        let r = fwd(&s, fa, "DELETE", uri, Some(&reader)).await;
        assert_eq!(r.status, 200, "{uri}: {}", r.text);
        let r = fwd(&s, fa, "DELETE", uri, None).await;
        r.problem(401, "MISSING_KEY");
    }

    // No credential, a bad one, a revoked one.
    let r = fwd(&s, fa, "GET", "/api/v1/documents", None).await;
    r.problem(401, "MISSING_KEY");
    assert_eq!(
        header(&r, "www-authenticate"),
        Some("Bearer realm=\"latchkey\"")
    );
    let r = fwd(&s, fa, "GET", "/api/v1/documents", Some("sk_live_nope")).await;
    r.problem(401, "INVALID_FORMAT");
    assert_eq!(
        s.post(&format!("/v1/keys/{rid}/revoke"), json!({}))
            .await
            .status,
        200
    );
    let r = fwd(&s, fa, "GET", "/api/v1/documents", Some(&reader)).await;
    r.problem(401, "KEY_REVOKED");

    // Unknown paths are 404, known paths with another method 405.
    let r = fwd(&s, fa, "GET", "/api/v2/documents", Some(&writer)).await;
    r.problem(404, "NOT_FOUND");
    let r = fwd(&s, fa, "DELETE", "/api/v1/status", Some(&writer)).await;
    r.problem(405, "METHOD_NOT_ALLOWED");
    assert_eq!(header(&r, "allow"), Some("GET"));

    // X-Original-* works the same, and the key may sit in another place.
    let r = s
        .send(
            s.http
                .post(s.at(fa))
                .header("x-original-method", "GET")
                .header("x-original-uri", "/api/v1/documents")
                .header("x-api-key", &writer),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_follows_the_routes_sqlite() {
    forward_auth_follows_the_routes(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_follows_the_routes_postgres() {
    forward_auth_follows_the_routes(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_for_nginx_and_envoy() {
    let Some(s) = server(Backend::Sqlite, None).await else {
        return;
    };
    let (_, reader, _, _) = keys(&s).await;
    let nginx = "/v1/forward-auth/nginx";
    let r = fwd(&s, nginx, "GET", "/api/v1/documents", Some(&reader)).await;
    assert_eq!(r.status, 200);
    assert!(header(&r, "x-latchkey-org").is_some());

    // Every refusal is 401 or 403 for nginx, the truth in headers.
    for (method, uri, key, status, want, code) in [
        ("GET", "/api/v1/documents", None, 401, 401, "MISSING_KEY"),
        (
            "POST",
            "/api/v1/documents",
            Some(&reader),
            403,
            403,
            "INSUFFICIENT_SCOPE",
        ),
        ("GET", "/nowhere", Some(&reader), 403, 404, "NOT_FOUND"),
        (
            "DELETE",
            "/api/v1/status",
            None,
            403,
            405,
            "METHOD_NOT_ALLOWED",
        ),
        (
            "GET",
            "/api/v1/../status",
            None,
            403,
            400,
            "INVALID_REQUEST",
        ),
    ] {
        let r = fwd(&s, nginx, method, uri, key.map(String::as_str)).await;
        assert_eq!(r.status, status, "{method} {uri}: {}", r.text);
        assert_eq!(
            header(&r, "x-latchkey-status"),
            Some(want.to_string().as_str())
        );
        assert_eq!(header(&r, "x-latchkey-code"), Some(code));
        let p: Value = serde_json::from_str(header(&r, "x-latchkey-problem").unwrap()).unwrap();
        assert_eq!(p["status"], want);
        assert_eq!(p["code"], code);
        assert_eq!(p["request_id"].as_str(), header(&r, "x-request-id"));
        // The body is the same problem.
        assert_eq!(r.json()["code"], code);
    }

    // Envoy: the original method, the original path after the prefix.
    let r = s
        .send(
            s.http
                .delete(s.at("/v1/forward-auth/envoy/api/v1/documents/doc_1?x=1"))
                .bearer_auth(&reader),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(header(&r, "x-latchkey-key-id").is_some());
    let r = s
        .send(
            s.http
                .post(s.at("/v1/forward-auth/envoy/api/v1/documents"))
                .bearer_auth(&reader),
        )
        .await;
    r.problem(403, "INSUFFICIENT_SCOPE");
    let r = s
        .send(s.http.get(s.at("/v1/forward-auth/envoy/api/v1/status")))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.send(s.http.get(s.at("/v1/forward-auth/envoy"))).await;
    r.problem(404, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_refuses_bad_input() {
    let Some(s) = server(Backend::Sqlite, None).await else {
        return;
    };
    let (_, reader, _, _) = keys(&s).await;
    let fa = "/v1/forward-auth";
    let send = async |headers: &[(&str, &str)]| {
        let mut req = s.http.get(s.at(fa)).bearer_auth(&reader);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        s.send(req).await
    };
    let long = format!("/api/v1/documents/{}", "a".repeat(9000));
    for (headers, why) in [
        (vec![("x-forwarded-uri", "/api/v1/documents")], "no method"),
        (vec![("x-forwarded-method", "GET")], "no uri"),
        (
            vec![
                ("x-forwarded-method", "GET"),
                ("x-original-method", "DELETE"),
                ("x-forwarded-uri", "/api/v1/documents"),
            ],
            "methods disagree",
        ),
        (
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/api/v1/status"),
                ("x-original-uri", "/api/v1/documents"),
            ],
            "uris disagree",
        ),
        (
            vec![
                ("x-forwarded-method", "G ET"),
                ("x-forwarded-uri", "/api/v1/status"),
            ],
            "not a method",
        ),
        (
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "http://evil.test/api/v1/status"),
            ],
            "absolute-form",
        ),
        (
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "api/v1/status"),
            ],
            "relative",
        ),
        (
            vec![("x-forwarded-method", "GET"), ("x-forwarded-uri", &long)],
            "overlong",
        ),
        (
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/api/v1/documents/%zz"),
            ],
            "bad percent-encoding",
        ),
        (
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/api/v1/status/../documents"),
            ],
            "dot segments",
        ),
        (
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/api/v1/status/%2e%2e/documents"),
            ],
            "encoded dot segments",
        ),
        (
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/api/v1/status%2F..%2Fdocuments"),
            ],
            "encoded slash",
        ),
        (
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/api/v1/status;/../documents"),
            ],
            "path parameter",
        ),
        (
            vec![
                ("x-forwarded-method", "GET"),
                (
                    "x-forwarded-uri",
                    "/api/v1/documents/%0d%0aX-Latchkey-Org:%20x",
                ),
            ],
            "encoded CR/LF",
        ),
        (
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/api/v1/status"),
                ("x-latchkey-org", "org_forged"),
            ],
            "client-supplied identity",
        ),
    ] {
        let r = send(&headers).await;
        let p = r.problem(400, "INVALID_REQUEST");
        assert!(!p["detail"].as_str().unwrap().is_empty(), "{why}");
    }

    // Header injection over a raw connection: a CR inside a header value.
    let addr = s.url.trim_start_matches("http://").to_owned();
    let raw = format!(
        "GET {fa} HTTP/1.1\r\nHost: x\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Uri: /api/v1/status\rX-Latchkey-Org: forged\r\nConnection: close\r\n\r\n"
    );
    let status = raw_status(&addr, raw.as_bytes());
    assert!((400..500).contains(&status), "{status}");
}

/// Sends raw bytes and answers the status code of the reply.
fn raw_status(addr: &str, bytes: &[u8]) -> u16 {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

async fn proxy_forwards_decided_requests(backend: Backend) {
    let up = Upstream::start().await;
    let Some(s) = server(backend, Some(up.url())).await else {
        return;
    };
    let (org, reader, writer, rid) = keys(&s).await;

    // Allowed: forwarded with identity, without the credential.
    let r = s
        .send(
            s.http
                .get(s.at("//api//v1/documents?page=2&q=a%20b"))
                .bearer_auth(&reader)
                .header("x-latchkey-org", "org_forged")
                .header("x-latchkey-admin", "true")
                .header("x-other", "kept"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let seen = r.json();
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/api/v1/documents");
    assert_eq!(seen["query"], "page=2&q=a%20b");
    let h = &seen["headers"];
    assert_eq!(h["x-latchkey-org"], org.as_str());
    assert_eq!(h["x-latchkey-subject"], "cust_42");
    assert_eq!(h["x-latchkey-key-id"], rid.as_str());
    assert_eq!(h["x-latchkey-scopes"], "documents.read");
    assert!(h.get("x-latchkey-admin").is_none(), "{h}");
    assert!(h.get("authorization").is_none(), "{h}");
    assert_eq!(h["x-other"], "kept");
    assert_eq!(h["x-request-id"].as_str(), header(&r, "x-request-id"));
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert!(
        h["x-forwarded-host"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(h["host"].as_str().unwrap(), up.addr.to_string());

    // The key in a header of its own is stripped too; the body goes along.
    let r = s
        .send(
            s.http
                .post(s.at("/api/v1/documents"))
                .header("x-api-key", &writer)
                .json(&json!({"title": "NDA"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let seen = r.json();
    assert!(seen["headers"].get("x-api-key").is_none());
    assert_eq!(seen["body_len"], 15);

    // Public routes skip auth and carry no identity, even a forged one.
    let r = s
        .send(
            s.http
                .get(s.at("/api/v1/status"))
                .header("x-latchkey-org", "org_forged"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["headers"].get("x-latchkey-org").is_none());

    // Refusals never reach the upstream.
    let before = up.hits();
    s.send(s.http.get(s.at("/api/v1/documents")))
        .await
        .problem(401, "MISSING_KEY");
    s.send(s.http.post(s.at("/api/v1/documents")).bearer_auth(&reader))
        .await
        .problem(403, "INSUFFICIENT_SCOPE");
    s.send(s.http.get(s.at("/api/v2/elsewhere")).bearer_auth(&reader))
        .await
        .problem(404, "NOT_FOUND");
    s.send(s.http.get(s.at("/api/v1/status/%zz")))
        .await
        .problem(400, "INVALID_REQUEST");
    // latchkey's own paths are never proxied, whatever their case.
    s.send(s.http.get(s.at("/v1/nothing-here")).bearer_auth(&reader))
        .await
        .problem(404, "NOT_FOUND");
    s.send(s.http.get(s.at("/V1/orgs")).bearer_auth(&reader))
        .await
        .problem(404, "NOT_FOUND");
    assert_eq!(up.hits(), before, "a refused request reached the upstream");

    // The upstream's own answers pass through untouched, errors included.
    let r = s.send(s.http.get(s.at("/missing/thing"))).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text, "upstream says no");
    assert!(
        header(&r, "content-type")
            .unwrap()
            .starts_with("text/plain")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_forwards_decided_requests_sqlite() {
    proxy_forwards_decided_requests(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_forwards_decided_requests_postgres() {
    proxy_forwards_decided_requests(Backend::Postgres).await;
}

/// An upload far over the 1 MiB body limit of the management API streams
/// through: the upstream receives the first part before the client has
/// sent the rest, so nothing holds the whole body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_streams_large_bodies() {
    let up = Upstream::start().await;
    let Some(s) = server(Backend::Sqlite, Some(up.url())).await else {
        return;
    };
    let (_, _, writer, _) = keys(&s).await;
    const CHUNK: usize = 1024 * 1024;
    const CHUNKS: usize = 8;
    let seen = up.seen.clone();
    let body = futures::stream::unfold(0usize, move |i| {
        let seen = seen.clone();
        async move {
            if i == CHUNKS {
                return None;
            }
            if i > 0 {
                // Wait until the upstream holds what was sent so far.
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while seen.body_bytes.load(Ordering::SeqCst) < i * CHUNK {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "chunk {i}: the upstream never received the earlier chunks; the body is being buffered"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let chunk = vec![u8::try_from(i).unwrap(); CHUNK];
            Some((Ok::<_, std::io::Error>(chunk), i + 1))
        }
    });
    let r = s
        .send(
            s.http
                .put(s.at("/api/v1/uploads/big.bin"))
                .bearer_auth(&writer)
                .body(reqwest::Body::wrap_stream(body)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let seen = r.json();
    assert_eq!(seen["body_len"], CHUNK * CHUNKS);
    let mut crc = crc32fast::Hasher::new();
    for i in 0..CHUNKS {
        crc.update(&vec![u8::try_from(i).unwrap(); CHUNK]);
    }
    assert_eq!(seen["body_crc"], crc.finalize());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_answers_502_and_504_for_a_down_or_slow_upstream() {
    // Slow: the upstream answers /slow/ after 3 s; the timeout is 1 s.
    let up = Upstream::start().await;
    let Some(s) = server(Backend::Sqlite, Some(up.url())).await else {
        return;
    };
    let r = s.send(s.http.get(s.at("/slow/report"))).await;
    let p = r.problem(504, "GATEWAY_TIMEOUT");
    assert!(p["detail"].as_str().unwrap().contains("1000 ms"), "{p}");
    drop(s);

    // Down: nothing listens at the upstream's address.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let Some(s) = server(Backend::Sqlite, Some(dead)).await else {
        return;
    };
    let r = s.send(s.http.get(s.at("/api/v1/status"))).await;
    r.problem(502, "BAD_GATEWAY");
    // An unmatched route is still a 404, decided before any upstream call.
    s.send(s.http.get(s.at("/nowhere")))
        .await
        .problem(404, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_refuses_bad_input_without_forwarding_it() {
    let up = Upstream::start().await;
    let Some(s) = server(Backend::Sqlite, Some(up.url())).await else {
        return;
    };
    let addr = s.url.trim_start_matches("http://").to_owned();
    let long = format!("/api/v1/documents/{}", "a".repeat(9000));
    for target in [
        "http://evil.test/api/v1/status",
        "/api/v1/status/%zz",
        "/api/v1/status/..%2F..%2Fdocuments",
        "/api/v1/%2e%2e/v1/status",
        "/api/v1/status/..;/documents",
        long.as_str(),
    ] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let status = raw_status(&addr, raw.as_bytes());
        assert_eq!(status, 400, "{target}");
    }
    assert_eq!(up.hits(), 0, "bad input reached the upstream");
}

/// A key in the query string (`credentials.query_param`, as some APIs
/// document `?api_key=`) works through forward-auth and the proxy, and the
/// proxy never passes it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_in_the_query_string() {
    let up = Upstream::start().await;
    let toml = format!(
        "[credentials]\nquery_param = \"api_key\"\n{ROUTES}\n[proxy]\nupstream = \"{}\"\n",
        up.url()
    );
    let Some(s) = TestServer::start_with(Backend::Sqlite, &toml, &[]).await else {
        return;
    };
    let (_, reader, _, _) = keys(&s).await;
    let uri = format!("/api/v1/documents?page=2&api_key={reader}&sort=asc");
    let r = fwd(&s, "/v1/forward-auth", "GET", &uri, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The query of the forward-auth request itself is not the original's.
    let r = s
        .send(
            s.http
                .get(s.at(&format!("/v1/forward-auth?api_key={reader}")))
                .header("x-forwarded-method", "GET")
                .header("x-forwarded-uri", "/api/v1/documents"),
        )
        .await;
    r.problem(401, "MISSING_KEY");

    let r = s.send(s.http.get(s.at(&uri))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let seen = r.json();
    assert_eq!(seen["query"], "page=2&sort=asc");
    assert!(!r.text.contains(&reader), "the key reached the upstream");
}
