//! Hostile and malformed input, end to end on SQLite and PostgreSQL: every
//! case must be refused with a 4xx (never a 5xx), and every refusal our own
//! code writes must be a full problem+json with the right code. Requests
//! that are not valid HTTP at all go over a raw TCP socket; hyper refuses
//! those itself with a bare 4xx, which is all they are held to.
//!
//! Each table runs to its end and reports every failing case at once; the
//! server must still be healthy afterwards (a panic must not have killed it).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use common::{Resp, TestServer};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ------------------------------------------------------------ the table

/// What a case must get.
#[derive(Debug, Clone)]
enum Want {
    /// A problem+json refusal with this status and code.
    Problem(u16, &'static str),
    /// A problem+json refusal with one of these (status, code).
    OneOf(&'static [(u16, &'static str)]),
    /// 422 VALIDATION_FAILED whose `errors[]` has an entry for this field.
    Field(&'static str),
    /// 422 VALIDATION_FAILED whose `errors[]` names a field starting so.
    FieldPrefix(&'static str),
    /// A success with this status.
    Ok(u16),
    /// A verify answer (200) refusing the credential with this code and status.
    Refused(&'static str, u16),
}

struct Case {
    name: String,
    req: RequestBuilder,
    want: Want,
}

fn case(name: impl Into<String>, req: RequestBuilder, want: Want) -> Case {
    Case {
        name: name.into(),
        req,
        want,
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

fn field_names(v: &Value) -> Vec<String> {
    v["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks one answer; panics (caught by [`run`]) on a mismatch.
fn check(r: &Resp, want: &Want) {
    assert!(r.status < 500, "a server error: {} {}", r.status, r.text);
    match want {
        Want::Problem(status, code) => {
            r.problem(*status, code);
        }
        Want::OneOf(options) => {
            let got = r.json()["code"].as_str().unwrap_or_default().to_owned();
            let Some((status, code)) = options.iter().find(|(_, c)| *c == got) else {
                panic!("code {got} is none of {options:?}: {}", r.text)
            };
            r.problem(*status, code);
        }
        Want::Field(field) => {
            let v = r.problem(422, "VALIDATION_FAILED");
            let names = field_names(&v);
            assert!(
                names.iter().any(|n| n == field),
                "errors[] should name `{field}`: {}",
                r.text
            );
        }
        Want::FieldPrefix(prefix) => {
            let v = r.problem(422, "VALIDATION_FAILED");
            let names = field_names(&v);
            assert!(
                names.iter().any(|n| n.starts_with(prefix)),
                "errors[] should name `{prefix}...`: {}",
                r.text
            );
        }
        Want::Ok(status) => assert_eq!(r.status, *status, "{}", r.text),
        Want::Refused(code, status) => {
            assert_eq!(r.status, 200, "{}", r.text);
            let v = r.json();
            assert_eq!(v["valid"], false, "{}", r.text);
            assert_eq!(v["code"], *code, "{}", r.text);
            assert_eq!(v["status"], *status, "{}", r.text);
            assert!(
                v["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{}",
                r.text
            );
            assert!(
                v.get("key_id").is_none() && v.get("org_id").is_none(),
                "a refusal names no key: {}",
                r.text
            );
        }
    }
}

/// Runs every case, then fails listing each one that went wrong, and
/// checks the server survived.
async fn run(s: &TestServer, cases: Vec<Case>) {
    let mut failures = Vec::new();
    let total = cases.len();
    for Case { name, req, want } in cases {
        let r = s.send(req).await;
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| check(&r, &want))) {
            failures.push(format!(
                "[{name}] want {want:?}, got {}: {}",
                r.status,
                panic_text(&*p)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    healthy(s).await;
}

async fn healthy(s: &TestServer) {
    let h = s.send(s.http.get(s.at("/healthz"))).await;
    assert_eq!(h.status, 200, "the server is no longer healthy: {}", h.text);
}

// ------------------------------------------------------------ helpers

fn rooted(s: &TestServer, method: Method, path: &str) -> RequestBuilder {
    s.http.request(method, s.at(path)).bearer_auth(&s.root_key)
}

fn post_json(s: &TestServer, path: &str, body: Value) -> RequestBuilder {
    rooted(s, Method::POST, path).json(&body)
}

fn post_raw(
    s: &TestServer,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<Vec<u8>>,
) -> RequestBuilder {
    let mut r = rooted(s, Method::POST, path);
    if let Some(ct) = content_type {
        r = r.header(CONTENT_TYPE, ct);
    }
    r.body(body.into())
}

fn get_with_auth(s: &TestServer, path: &str, values: &[HeaderValue]) -> RequestBuilder {
    let mut r = s.http.get(s.at(path));
    for v in values {
        r = r.header(AUTHORIZATION, v.clone());
    }
    r
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap()
}

/// `key` with its last character changed: the checksum no longer matches.
fn bad_checksum(key: &str) -> String {
    let (head, last) = key.split_at(key.len() - 1);
    format!("{head}{}", if last == "A" { "B" } else { "A" })
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// A root key holding only `scopes`.
async fn limited_root_key(s: &TestServer, scopes: &[&str]) -> String {
    let r = s
        .post(
            "/v1/root-keys",
            json!({"name": "limited", "scopes": scopes}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["key"].as_str().unwrap().to_owned()
}

// ------------------------------------------------- Authorization headers

async fn authorization_headers(s: TestServer) {
    let root = s.root_key.clone();
    let unknown_root = latchkey_core::keyfmt::generate("lk_root_");
    s.remember(&unknown_root);
    let org = s.org().await;
    let (_, api_key) = s.key(&org, json!({"name": "k"})).await;
    let long = format!("Bearer {}", "A".repeat(8 * 1024));
    let long_root = format!("Bearer lk_root_{}", "A".repeat(8 * 1024));
    let obs_text = HeaderValue::from_bytes(b"Bearer lk_root_\xe9\xff\x80abc").unwrap();
    let obs_scheme = HeaderValue::from_bytes(b"B\xe9arer abc").unwrap();

    let bad = |name: &str, values: Vec<HeaderValue>, want: Want| {
        case(name, get_with_auth(&s, "/v1/orgs", &values), want)
    };
    let cases = vec![
        bad(
            "no Authorization",
            vec![],
            Want::Problem(401, "MISSING_KEY"),
        ),
        bad(
            "empty value",
            vec![hv("")],
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        bad(
            "Bearer alone",
            vec![hv("Bearer")],
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        bad(
            "Bearer and spaces",
            vec![hv("Bearer    ")],
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        bad(
            "Bearer a b",
            vec![hv("Bearer a b")],
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        bad(
            "Bearer root extra",
            vec![hv(&format!("Bearer {root} extra"))],
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        bad(
            "Basic",
            vec![hv("Basic dXNlcjpwYXNz")],
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        bad(
            "unknown scheme",
            vec![hv(&format!("Token {root}"))],
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        bad(
            "scheme only, no space",
            vec![hv(&format!("Bearer{root}"))],
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        bad(
            "lowercase bearer works",
            vec![hv(&format!("bearer {root}"))],
            Want::Ok(200),
        ),
        bad(
            "uppercase BEARER works",
            vec![hv(&format!("BEARER {root}"))],
            Want::Ok(200),
        ),
        bad(
            "ApiKey scheme works",
            vec![hv(&format!("ApiKey {root}"))],
            Want::Ok(200),
        ),
        bad(
            "two Authorization headers",
            vec![hv(&format!("Bearer {root}")), hv(&format!("Bearer {root}"))],
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        bad(
            "two different Authorization headers",
            vec![hv(&format!("Bearer {root}")), hv("Bearer x")],
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        bad(
            "non-ASCII credential",
            vec![obs_text],
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        bad(
            "non-ASCII scheme",
            vec![obs_scheme],
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        bad(
            "8 KiB credential",
            vec![hv(&long)],
            Want::Problem(401, "INVALID_FORMAT"),
        ),
        bad(
            "8 KiB root-prefixed credential",
            vec![hv(&long_root)],
            Want::Problem(401, "INVALID_FORMAT"),
        ),
        bad(
            "root key, wrong checksum",
            vec![hv(&format!("Bearer {}", bad_checksum(&root)))],
            Want::Problem(401, "INVALID_FORMAT"),
        ),
        bad(
            "root key, truncated",
            vec![hv(&format!("Bearer {}", &root[..root.len() - 1]))],
            Want::Problem(401, "INVALID_FORMAT"),
        ),
        bad(
            "root key, non-base62 char",
            vec![hv(&format!("Bearer {}-{}", &root[..20], &root[21..]))],
            Want::Problem(401, "INVALID_FORMAT"),
        ),
        bad(
            "unknown root key",
            vec![hv(&format!("Bearer {unknown_root}"))],
            Want::Problem(401, "INVALID_KEY"),
        ),
        bad(
            "API key instead of root key",
            vec![hv(&format!("Bearer {api_key}"))],
            Want::Problem(401, "INVALID_FORMAT"),
        ),
        case(
            "x-api-key root key works",
            s.http.get(s.at("/v1/orgs")).header("x-api-key", &root),
            Want::Ok(200),
        ),
        case(
            "same root key in two places works",
            s.http
                .get(s.at("/v1/orgs"))
                .bearer_auth(&root)
                .header("x-api-key", &root),
            Want::Ok(200),
        ),
        case(
            "two different credentials",
            s.http
                .get(s.at("/v1/orgs"))
                .bearer_auth(&root)
                .header("x-api-key", &unknown_root),
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        case(
            "empty x-api-key",
            s.http.get(s.at("/v1/orgs")).header("x-api-key", ""),
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        case(
            "two x-api-key headers",
            s.http
                .get(s.at("/v1/orgs"))
                .header("x-api-key", &root)
                .header("x-api-key", &root),
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        case(
            "root key in the query string (refused by default)",
            s.http.get(s.at(&format!("/v1/orgs?api_key={root}"))),
            Want::Problem(401, "MISSING_KEY"),
        ),
    ];
    run(&s, cases).await;

    // RFC 6750 challenges. No credential: a bare challenge, no error.
    let r = s.send(s.http.get(s.at("/v1/orgs"))).await;
    r.problem(401, "MISSING_KEY");
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"latchkey\"")
    );
    // A bad credential: invalid_token, with a description that is a valid
    // quoted-string and does not echo the credential.
    for cred in [
        bad_checksum(&root),
        unknown_root.clone(),
        api_key.clone(),
        "A".repeat(8 * 1024),
    ] {
        let r = s
            .send(s.http.get(s.at("/v1/orgs")).bearer_auth(&cred))
            .await;
        assert_eq!(r.status, 401, "{}", r.text);
        let w = r.header("www-authenticate").unwrap_or_default();
        assert!(w.starts_with("Bearer realm=\"latchkey\""), "{w}");
        assert!(w.contains("error=\"invalid_token\""), "{w}");
        assert!(w.contains("error_description=\""), "{w}");
        assert!(
            !w.contains(&cred[..20]),
            "the challenge echoes the credential: {w}"
        );
        assert!(
            !r.text.contains(&cred[..20]),
            "the body echoes the credential: {}",
            r.text
        );
    }
    // A 400 (malformed header) is not a 401: no invalid_token challenge.
    let r = s
        .send(get_with_auth(&s, "/v1/orgs", &[hv("Bearer a b")]))
        .await;
    r.problem(400, "INVALID_REQUEST");
    assert!(
        !r.header("www-authenticate")
            .unwrap_or_default()
            .contains("invalid_token")
    );

    // 403 for a root key lacking a scope: insufficient_scope naming it.
    let reader = limited_root_key(&s, &["keys.read"]).await;
    let r = s
        .send(
            s.http
                .post(s.at("/v1/orgs"))
                .bearer_auth(&reader)
                .json(&json!({"name": "x"})),
        )
        .await;
    let v = r.problem(403, "INSUFFICIENT_SCOPE");
    assert_eq!(v["required_scopes"], json!(["orgs.create"]), "{}", r.text);
    let w = r.header("www-authenticate").unwrap_or_default();
    assert!(w.starts_with("Bearer realm=\"latchkey\""), "{w}");
    assert!(w.contains("error=\"insufficient_scope\""), "{w}");
    assert!(w.contains("scope=\"orgs.create\""), "{w}");
    // ...and it may do what it holds.
    let r = s
        .send(
            s.http
                .get(s.at(&format!("/v1/orgs/{org}/keys")))
                .bearer_auth(&reader),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Verify needs `verify`.
    let r = s
        .send(
            s.http
                .post(s.at("/v1/verify"))
                .bearer_auth(&reader)
                .json(&json!({"credential": api_key})),
        )
        .await;
    assert_eq!(
        r.problem(403, "INSUFFICIENT_SCOPE")["required_scopes"],
        json!(["verify"])
    );
    // A revoked root key is refused at once on this node.
    let list = s.get("/v1/root-keys").await.json();
    let reader_id = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "limited")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .post(&format!("/v1/root-keys/{reader_id}/revoke"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .send(
            s.http
                .get(s.at(&format!("/v1/orgs/{org}/keys")))
                .bearer_auth(&reader),
        )
        .await;
    r.problem(401, "KEY_REVOKED");
    assert!(
        r.header("www-authenticate")
            .unwrap_or_default()
            .contains("error=\"invalid_token\"")
    );
    healthy(&s).await;
}
both!(authorization_headers);

// ------------------------------------------------------- raw HTTP/1.1

/// Sends `request` as is over a new TCP connection and reads the answer
/// until the server closes it.
async fn raw(s: &TestServer, request: &[u8]) -> Resp {
    let addr = s.url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading all of a huge request.
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 20 s to a raw request");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':')
            && let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.trim().as_bytes()),
                HeaderValue::from_str(v.trim()),
            )
        {
            headers.append(k, v);
        }
    }
    Resp {
        status,
        headers,
        text: body.to_owned(),
    }
}

/// A raw answer must be a 4xx; if our code wrote it (it carries a request
/// id), it must be a full problem+json.
fn check_raw(name: &str, r: &Resp, want_status: Option<u16>) {
    assert!(
        (400..500).contains(&r.status),
        "[{name}] want a 4xx, got {}: {}",
        r.status,
        r.text
    );
    if let Some(st) = want_status {
        assert_eq!(r.status, st, "[{name}] {}", r.text);
    }
    if r.header("x-request-id").is_some() {
        let code = r.json()["code"].as_str().unwrap_or_default().to_owned();
        r.problem(r.status, &code);
    } else {
        assert!(
            r.text.is_empty(),
            "[{name}] a refusal from neither hyper nor us: {}",
            r.text
        );
    }
}

async fn raw_requests(s: TestServer) {
    let root = s.root_key.clone();
    let get = |target: &str, extra: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {root}\r\n{extra}\r\n"
        )
    };
    // Control characters in header values: not valid HTTP.
    let mut cases: Vec<(&str, Vec<u8>, Option<u16>)> = Vec::new();
    for (name, ctl) in [
        ("CR", "\r"),
        ("LF", "\n"),
        ("NUL", "\0"),
        ("0x01", "\x01"),
        ("DEL", "\x7f"),
        ("ESC", "\x1b"),
    ] {
        let in_auth = format!(
            "GET /v1/orgs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {root}{ctl}x\r\n\r\n"
        );
        let in_other = get("/v1/orgs", &format!("X-Api-Key: a{ctl}b\r\n"));
        cases.push((name, in_auth.into_bytes(), None));
        cases.push((name, in_other.into_bytes(), None));
    }
    // Invalid percent-encodings in the request target.
    for target in [
        "/v1/orgs/%zz",
        "/v1/orgs/%",
        "/v1/keys/%ff%fe",
        "/v1/keys/%C3%28",
        "/v1/orgs?limit=%zz",
        "/v1/orgs?cursor=%ff",
        "/v1/orgs/%00",
    ] {
        cases.push(("percent-encoding", get(target, "").into_bytes(), None));
    }
    // Overlong request target: 64 KiB is past what HTTP/1.1 parsing takes.
    cases.push((
        "64 KiB URI",
        get(&format!("/v1/orgs/{}", "a".repeat(64 * 1024)), "").into_bytes(),
        Some(414),
    ));
    // A long one that parses reaches the router: an unknown id.
    cases.push((
        "60 KiB id",
        get(&format!("/v1/keys/key_{}", "a".repeat(60 * 1024)), "").into_bytes(),
        Some(404),
    ));
    cases.push((
        "space in target",
        b"GET /v1/or gs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        None,
    ));
    cases.push(("no version", b"GET /v1/orgs\r\n\r\n".to_vec(), None));
    cases.push((
        "header without colon",
        get("/v1/orgs", "NoColonHere\r\n").into_bytes(),
        None,
    ));
    cases.push((
        "bad Content-Length",
        format!("POST /v1/orgs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {root}\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n{{}}")
            .into_bytes(),
        None,
    ));
    cases.push((
        "two Content-Lengths",
        format!(
            "POST /v1/orgs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {root}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}"
        )
        .into_bytes(),
        None,
    ));
    cases.push((
        "bad chunk size",
        format!(
            "POST /v1/orgs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {root}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
        )
        .into_bytes(),
        Some(400),
    ));
    for (name, bytes, want) in &cases {
        let r = raw(&s, bytes).await;
        check_raw(name, &r, *want);
    }
    // The undecodable path parameter reached our code.
    let r = raw(&s, get("/v1/keys/%ff%fe", "").as_bytes()).await;
    assert!(r.header("x-request-id").is_some(), "{r:?}");
    // A well-formed raw request still works after all that.
    let r = raw(&s, get("/v1/orgs", "").as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    healthy(&s).await;
}
both!(raw_requests);

// ------------------------------------------------------------ JSON bodies

async fn json_bodies(s: TestServer) {
    let org = s.org().await;
    let keys = format!("/v1/orgs/{org}/keys");
    let (key_id, api_key) = s
        .key(&org, json!({"name": "k", "scopes": ["documents.read"]}))
        .await;
    let key_path = format!("/v1/keys/{key_id}");
    let big = "x".repeat(1024 * 1024 + 10);
    let over_1mib = format!("{{\"name\": \"{big}\"}}");
    let over_1mib_verify = format!("{{\"credential\": \"{big}\"}}");
    let many_scopes: Vec<String> = (0..10_000).map(|i| format!("s{i}")).collect();
    let many_bad_scopes: Vec<String> = (0..10_000).map(|i| format!("s {i}")).collect();
    let big_metadata = json!({"blob": "x".repeat(8 * 1024)});
    let deep_metadata = format!(
        "{{\"name\": \"x\", \"metadata\": {{\"a\": {}}}}}",
        nested(10_000)
    );
    let deep_object = format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let not_utf8: &[u8] = b"{\"name\": \"caf\xe9\"}";
    let not_utf8_verify: &[u8] = b"{\"credential\": \"sk_live_\xff\xfe\"}";
    let bom: &[u8] = b"\xef\xbb\xbf{\"name\": \"x\"}";
    const DEEP: &[(u16, &str)] = &[(400, "INVALID_REQUEST"), (422, "VALIDATION_FAILED")];

    let k = |name: &str, body: Value, want: Want| {
        case(
            format!("create key: {name}"),
            post_json(&s, &keys, body),
            want,
        )
    };
    let kraw = |name: &str, ct: Option<&str>, body: &[u8], want: Want| {
        case(
            format!("create key: {name}"),
            post_raw(&s, &keys, ct, body.to_vec()),
            want,
        )
    };
    let v = |name: &str, body: Value, want: Want| {
        case(
            format!("verify: {name}"),
            post_json(&s, "/v1/verify", body),
            want,
        )
    };
    let vraw = |name: &str, ct: Option<&str>, body: &[u8], want: Want| {
        case(
            format!("verify: {name}"),
            post_raw(&s, "/v1/verify", ct, body.to_vec()),
            want,
        )
    };
    let p = |name: &str, body: Value, want: Want| {
        case(
            format!("patch: {name}"),
            rooted(&s, Method::PATCH, &key_path).json(&body),
            want,
        )
    };
    const JSON: Option<&str> = Some("application/json");

    let cases = vec![
        // Syntax.
        kraw(
            "invalid JSON",
            JSON,
            b"{name: x}",
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        kraw(
            "truncated JSON",
            JSON,
            b"{\"name\": \"abc",
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        kraw(
            "truncated object",
            JSON,
            b"{\"name\": \"abc\",",
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        kraw(
            "empty body",
            JSON,
            b"",
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        kraw(
            "nested 10,000 deep in metadata",
            JSON,
            deep_metadata.as_bytes(),
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        kraw(
            "body nested 10,000 deep",
            JSON,
            nested(10_000).as_bytes(),
            Want::OneOf(DEEP),
        ),
        kraw(
            "objects nested 10,000 deep",
            JSON,
            deep_object.as_bytes(),
            Want::OneOf(DEEP),
        ),
        kraw(
            "non-UTF-8 bytes",
            JSON,
            not_utf8,
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        kraw(
            "byte-order mark",
            JSON,
            bom,
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        kraw(
            "lone surrogate escape",
            JSON,
            b"{\"name\": \"\\ud800\"}",
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        // Media type and size.
        kraw(
            "text/plain",
            Some("text/plain"),
            b"{\"name\": \"x\"}",
            Want::Problem(415, "UNSUPPORTED_MEDIA_TYPE"),
        ),
        kraw(
            "no content type",
            None,
            b"{\"name\": \"x\"}",
            Want::Problem(415, "UNSUPPORTED_MEDIA_TYPE"),
        ),
        kraw(
            "form content type",
            Some("application/x-www-form-urlencoded"),
            b"name=x",
            Want::Problem(415, "UNSUPPORTED_MEDIA_TYPE"),
        ),
        case(
            "create key: non-ASCII content type",
            rooted(&s, Method::POST, &keys)
                .header(
                    CONTENT_TYPE,
                    HeaderValue::from_bytes(b"application/j\xe9son").unwrap(),
                )
                .body("{\"name\": \"x\"}"),
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        kraw(
            "json-like content type",
            Some("application/jsonx"),
            b"{\"name\": \"x\"}",
            Want::Problem(415, "UNSUPPORTED_MEDIA_TYPE"),
        ),
        kraw(
            "json with charset works",
            Some("application/json; charset=utf-8"),
            b"{\"name\": \"x\"}",
            Want::Ok(201),
        ),
        kraw(
            "over 1 MiB",
            JSON,
            over_1mib.as_bytes(),
            Want::Problem(413, "PAYLOAD_TOO_LARGE"),
        ),
        // Types.
        k("name: 1", json!({"name": 1}), Want::Field("name")),
        k("name: null", json!({"name": null}), Want::Field("name")),
        k(
            "scopes: \"a\"",
            json!({"name": "x", "scopes": "a"}),
            Want::Field("scopes"),
        ),
        k(
            "scopes: [1]",
            json!({"name": "x", "scopes": [1]}),
            Want::Field("scopes[0]"),
        ),
        k(
            "scopes: [\"a\", null]",
            json!({"name": "x", "scopes": ["a", null]}),
            Want::Field("scopes[1]"),
        ),
        k(
            "metadata: \"x\"",
            json!({"name": "x", "metadata": "x"}),
            Want::Field("metadata"),
        ),
        k(
            "metadata: [1]",
            json!({"name": "x", "metadata": [1]}),
            Want::Field("metadata"),
        ),
        k(
            "metadata: 7",
            json!({"name": "x", "metadata": 7}),
            Want::Field("metadata"),
        ),
        k(
            "kind: 1",
            json!({"name": "x", "kind": 1}),
            Want::Field("kind"),
        ),
        k(
            "unknown kind",
            json!({"name": "x", "kind": "gold"}),
            Want::Field("kind"),
        ),
        k(
            "environment outside the kind",
            json!({"name": "x", "kind": "live", "environment": "test"}),
            Want::Field("environment"),
        ),
        k(
            "external_id: 5",
            json!({"name": "x", "external_id": 5}),
            Want::Field("external_id"),
        ),
        k(
            "external_id empty",
            json!({"name": "x", "external_id": ""}),
            Want::Field("external_id"),
        ),
        k(
            "body is a string",
            json!("x"),
            Want::Problem(422, "VALIDATION_FAILED"),
        ),
        k(
            "body is null",
            json!(null),
            Want::Problem(422, "VALIDATION_FAILED"),
        ),
        // Required and unknown fields.
        k(
            "missing name",
            json!({"scopes": ["a"]}),
            Want::Problem(422, "VALIDATION_FAILED"),
        ),
        k(
            "unknown field",
            json!({"name": "x", "nmae": "y"}),
            Want::Field("nmae"),
        ),
        k(
            "unknown nested-looking field",
            json!({"name": "x", "ratelimt": {"limit": 1}}),
            Want::Field("ratelimt"),
        ),
        // Expiry.
        k(
            "expires_in negative",
            json!({"name": "x", "expires_in": -5}),
            Want::Field("expires_in"),
        ),
        k(
            "expires_in zero",
            json!({"name": "x", "expires_in": 0}),
            Want::Field("expires_in"),
        ),
        k(
            "expires_in 1e12",
            json!({"name": "x", "expires_in": 1e12}),
            Want::Field("expires_in"),
        ),
        k(
            "expires_in 10^12",
            json!({"name": "x", "expires_in": 1_000_000_000_000_i64}),
            Want::Field("expires_in"),
        ),
        k(
            "expires_in i64::MAX",
            json!({"name": "x", "expires_in": i64::MAX}),
            Want::Field("expires_in"),
        ),
        k(
            "expires_in i64::MIN",
            json!({"name": "x", "expires_in": i64::MIN}),
            Want::Field("expires_in"),
        ),
        k(
            "expires_in u64::MAX",
            json!({"name": "x", "expires_in": u64::MAX}),
            Want::Field("expires_in"),
        ),
        k(
            "expires_in 1.5",
            json!({"name": "x", "expires_in": 1.5}),
            Want::Field("expires_in"),
        ),
        k(
            "expires_in \"99999999d\"",
            json!({"name": "x", "expires_in": "99999999d"}),
            Want::Field("expires_in"),
        ),
        k(
            "expires_in \"99999999999999999999s\"",
            json!({"name": "x", "expires_in": "99999999999999999999s"}),
            Want::Field("expires_in"),
        ),
        k(
            "expires_in \"0s\"",
            json!({"name": "x", "expires_in": "0s"}),
            Want::Field("expires_in"),
        ),
        k(
            "expires_in \"500ms\"",
            json!({"name": "x", "expires_in": "500ms"}),
            Want::Field("expires_in"),
        ),
        k(
            "expires_in \"-5s\"",
            json!({"name": "x", "expires_in": "-5s"}),
            Want::Field("expires_in"),
        ),
        k(
            "expires_in \"soon\"",
            json!({"name": "x", "expires_in": "soon"}),
            Want::Field("expires_in"),
        ),
        k(
            "expires_in \"\"",
            json!({"name": "x", "expires_in": ""}),
            Want::Field("expires_in"),
        ),
        k(
            "expires_in true",
            json!({"name": "x", "expires_in": true}),
            Want::Field("expires_in"),
        ),
        k(
            "expires_at in the past",
            json!({"name": "x", "expires_at": "2001-02-03T04:05:06Z"}),
            Want::Field("expires_at"),
        ),
        k(
            "expires_at now-ish epoch",
            json!({"name": "x", "expires_at": "1970-01-01T00:00:00Z"}),
            Want::Field("expires_at"),
        ),
        k(
            "expires_at unparseable",
            json!({"name": "x", "expires_at": "next tuesday"}),
            Want::Field("expires_at"),
        ),
        k(
            "expires_at without zone",
            json!({"name": "x", "expires_at": "2031-01-02T03:04:05"}),
            Want::Field("expires_at"),
        ),
        k(
            "expires_at year 9999",
            json!({"name": "x", "expires_at": "9999-12-31T23:59:59Z"}),
            Want::Field("expires_at"),
        ),
        k(
            "expires_at a number",
            json!({"name": "x", "expires_at": 1_900_000_000}),
            Want::Field("expires_at"),
        ),
        k(
            "expires_at and expires_in",
            json!({"name": "x", "expires_at": "2031-01-02T03:04:05Z", "expires_in": 60}),
            Want::FieldPrefix("expires_"),
        ),
        // Scopes.
        k(
            "10,000 scopes",
            json!({"name": "x", "scopes": many_scopes}),
            Want::Field("scopes"),
        ),
        k(
            "10,000 bad scopes",
            json!({"name": "x", "scopes": many_bad_scopes}),
            Want::Field("scopes"),
        ),
        k(
            "scope with a space",
            json!({"name": "x", "scopes": ["ok", "a b"]}),
            Want::Field("scopes[1]"),
        ),
        k(
            "scope with a quote",
            json!({"name": "x", "scopes": ["a\"b"]}),
            Want::Field("scopes[0]"),
        ),
        k(
            "scope with a backslash",
            json!({"name": "x", "scopes": ["ok", "ok2", "a\\b"]}),
            Want::Field("scopes[2]"),
        ),
        k(
            "empty scope",
            json!({"name": "x", "scopes": [""]}),
            Want::Field("scopes[0]"),
        ),
        k(
            "non-ASCII scope",
            json!({"name": "x", "scopes": ["docs.lés"]}),
            Want::Field("scopes[0]"),
        ),
        k(
            "scope with NUL",
            json!({"name": "x", "scopes": ["a\u{0}b"]}),
            Want::Field("scopes[0]"),
        ),
        k(
            "300-char scope",
            json!({"name": "x", "scopes": ["a".repeat(300)]}),
            Want::Field("scopes[0]"),
        ),
        k(
            "misplaced wildcard",
            json!({"name": "x", "scopes": ["do*cs"]}),
            Want::Field("scopes[0]"),
        ),
        k(
            "wildcard on a restricted kind",
            json!({"name": "x", "kind": "restricted", "scopes": ["*"]}),
            Want::Field("scopes[0]"),
        ),
        // Names and metadata.
        k(
            "300-char name",
            json!({"name": "n".repeat(300)}),
            Want::Field("name"),
        ),
        k("empty name", json!({"name": ""}), Want::Field("name")),
        k("blank name", json!({"name": " \t "}), Want::Field("name")),
        k(
            "name with NUL",
            json!({"name": "a\u{0}b"}),
            Want::Field("name"),
        ),
        k("name with LF", json!({"name": "a\nb"}), Want::Field("name")),
        k(
            "name with ESC",
            json!({"name": "a\u{1b}[31mb"}),
            Want::Field("name"),
        ),
        k(
            "name with DEL",
            json!({"name": "a\u{7f}b"}),
            Want::Field("name"),
        ),
        k(
            "metadata over 8 KiB",
            json!({"name": "x", "metadata": big_metadata}),
            Want::Field("metadata"),
        ),
        k(
            "several bad fields",
            json!({"name": "", "scopes": ["a b"], "expires_in": 0}),
            Want::FieldPrefix("scopes[0]"),
        ),
        // The same door for verify.
        vraw(
            "invalid JSON",
            JSON,
            b"{credential",
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        vraw(
            "truncated JSON",
            JSON,
            b"{\"credential\": \"sk_",
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        vraw(
            "empty body",
            JSON,
            b"",
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        vraw(
            "body nested 10,000 deep",
            JSON,
            nested(10_000).as_bytes(),
            Want::OneOf(DEEP),
        ),
        vraw(
            "required_scopes nested 10,000 deep",
            JSON,
            format!(
                "{{\"credential\": \"x\", \"required_scopes\": {}}}",
                nested(10_000)
            )
            .as_bytes(),
            Want::OneOf(DEEP),
        ),
        vraw(
            "text/plain",
            Some("text/plain"),
            b"{\"credential\": \"x\"}",
            Want::Problem(415, "UNSUPPORTED_MEDIA_TYPE"),
        ),
        vraw(
            "no content type",
            None,
            b"{\"credential\": \"x\"}",
            Want::Problem(415, "UNSUPPORTED_MEDIA_TYPE"),
        ),
        vraw(
            "over 1 MiB",
            JSON,
            over_1mib_verify.as_bytes(),
            Want::Problem(413, "PAYLOAD_TOO_LARGE"),
        ),
        vraw(
            "non-UTF-8 bytes",
            JSON,
            not_utf8_verify,
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        v(
            "credential: 1",
            json!({"credential": 1}),
            Want::Field("credential"),
        ),
        v(
            "credential: null",
            json!({"credential": null}),
            Want::Field("credential"),
        ),
        v(
            "credential: [key]",
            json!({"credential": [api_key]}),
            Want::Field("credential"),
        ),
        v(
            "missing credential",
            json!({"required_scopes": ["a"]}),
            Want::Problem(422, "VALIDATION_FAILED"),
        ),
        v(
            "unknown field",
            json!({"credential": "x", "scope": "a"}),
            Want::Field("scope"),
        ),
        // An overlong credential is no credential latchkey issued: a
        // verdict, like any other (the body limit bounds it).
        v(
            "credential of 500 KB",
            json!({"credential": "a".repeat(500_000)}),
            Want::Refused("INVALID_FORMAT", 401),
        ),
        v(
            "key prefix and 64 KiB",
            json!({"credential": format!("sk_live_{}", "a".repeat(65_536))}),
            Want::Refused("INVALID_FORMAT", 401),
        ),
        v(
            "a 64 KiB JWS",
            json!({"credential": format!("eyJhbGciOiJIUzI1NiJ9.{}.sig", "e".repeat(65_536))}),
            Want::Refused("INVALID_TOKEN", 401),
        ),
        v(
            "required_scopes: \"a\"",
            json!({"credential": "x", "required_scopes": "a"}),
            Want::Field("required_scopes"),
        ),
        v(
            "required_scopes: [1]",
            json!({"credential": "x", "required_scopes": [1]}),
            Want::Field("required_scopes[0]"),
        ),
        v(
            "required_scopes with a space",
            json!({"credential": "x", "required_scopes": ["ok", "a b"]}),
            Want::Field("required_scopes[1]"),
        ),
        v(
            "required_scopes with a quote",
            json!({"credential": "x", "required_scopes": ["a\"b"]}),
            Want::Field("required_scopes[0]"),
        ),
        v(
            "10,000 required_scopes",
            json!({"credential": "x", "required_scopes": many_scopes}),
            Want::Field("required_scopes"),
        ),
        v(
            "empty environment",
            json!({"credential": "x", "environment": ""}),
            Want::Field("environment"),
        ),
        v(
            "huge environment",
            json!({"credential": "x", "environment": "e".repeat(1000)}),
            Want::Field("environment"),
        ),
        v(
            "environment: 1",
            json!({"credential": "x", "environment": 1}),
            Want::Field("environment"),
        ),
        v(
            "bad ip",
            json!({"credential": "x", "ip": "300.1.2.3"}),
            Want::Field("ip"),
        ),
        v(
            "ip with port",
            json!({"credential": "x", "ip": "10.0.0.1:80"}),
            Want::Field("ip"),
        ),
        // Patch, revoke and rotate bodies.
        p("name: 1", json!({"name": 1}), Want::Field("name")),
        p(
            "name with control chars",
            json!({"name": "a\u{1}"}),
            Want::Field("name"),
        ),
        p(
            "scopes with a space",
            json!({"scopes": ["a b"]}),
            Want::Field("scopes[0]"),
        ),
        p(
            "metadata: []",
            json!({"metadata": []}),
            Want::Field("metadata"),
        ),
        p(
            "expires_at unparseable",
            json!({"expires_at": "yesterday"}),
            Want::Field("expires_at"),
        ),
        p(
            "expires_at in the past",
            json!({"expires_at": "2001-01-01T00:00:00Z"}),
            Want::Field("expires_at"),
        ),
        p(
            "expires_at null with expires_in",
            json!({"expires_at": null, "expires_in": 60}),
            Want::FieldPrefix("expires_"),
        ),
        p(
            "expires_in 0",
            json!({"expires_in": 0}),
            Want::Field("expires_in"),
        ),
        p(
            "unknown field",
            json!({"status": "active"}),
            Want::Field("status"),
        ),
        p("empty patch works", json!({}), Want::Ok(200)),
        case(
            "patch: text/plain",
            rooted(&s, Method::PATCH, &key_path)
                .header(CONTENT_TYPE, "text/plain")
                .body("{}"),
            Want::Problem(415, "UNSUPPORTED_MEDIA_TYPE"),
        ),
        case(
            "rotate: grace_period -1",
            post_json(
                &s,
                &format!("{key_path}/rotate"),
                json!({"grace_period": -1}),
            ),
            Want::Field("grace_period"),
        ),
        case(
            "rotate: grace_period \"forever\"",
            post_json(
                &s,
                &format!("{key_path}/rotate"),
                json!({"grace_period": "forever"}),
            ),
            Want::Field("grace_period"),
        ),
        case(
            "rotate: grace_period 1e99",
            post_json(
                &s,
                &format!("{key_path}/rotate"),
                json!({"grace_period": 1e99}),
            ),
            Want::Field("grace_period"),
        ),
        case(
            "rotate: grace_period 11 years",
            post_json(
                &s,
                &format!("{key_path}/rotate"),
                json!({"grace_period": "4000d"}),
            ),
            Want::Field("grace_period"),
        ),
        case(
            "rotate: unknown field",
            post_json(&s, &format!("{key_path}/rotate"), json!({"grace": 60})),
            Want::Field("grace"),
        ),
        case(
            "rotate: text/plain",
            post_raw(
                &s,
                &format!("{key_path}/rotate"),
                Some("text/plain"),
                "grace_period=1",
            ),
            Want::Problem(415, "UNSUPPORTED_MEDIA_TYPE"),
        ),
        case(
            "revoke: reason: 1",
            post_json(&s, &format!("{key_path}/revoke"), json!({"reason": 1})),
            Want::Field("reason"),
        ),
        case(
            "revoke: 600-char reason",
            post_json(
                &s,
                &format!("{key_path}/revoke"),
                json!({"reason": "r".repeat(600)}),
            ),
            Want::Field("reason"),
        ),
        case(
            "revoke: reason with LF",
            post_json(&s, &format!("{key_path}/revoke"), json!({"reason": "a\nb"})),
            Want::Field("reason"),
        ),
        case(
            "revoke: invalid JSON",
            post_raw(&s, &format!("{key_path}/revoke"), JSON, "{reason"),
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        case(
            "org: name: []",
            post_json(&s, "/v1/orgs", json!({"name": []})),
            Want::Field("name"),
        ),
        case(
            "org: 300-char name",
            post_json(&s, "/v1/orgs", json!({"name": "o".repeat(300)})),
            Want::Field("name"),
        ),
        case(
            "root key: unknown scope",
            post_json(
                &s,
                "/v1/root-keys",
                json!({"name": "r", "scopes": ["keys.read", "nope"]}),
            ),
            Want::Field("scopes[1]"),
        ),
        case(
            "root key: no scopes",
            post_json(&s, "/v1/root-keys", json!({"name": "r", "scopes": []})),
            Want::Field("scopes"),
        ),
    ];
    let started = Instant::now();
    run(&s, cases).await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the table took {:?}",
        started.elapsed()
    );

    // 10,000-element scope arrays are refused fast.
    for (path, body) in [
        (keys.as_str(), json!({"name": "x", "scopes": many_scopes})),
        (
            "/v1/verify",
            json!({"credential": "x", "required_scopes": many_scopes}),
        ),
    ] {
        let t = Instant::now();
        let r = s.post(path, body).await;
        r.problem(422, "VALIDATION_FAILED");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{path}: {:?}",
            t.elapsed()
        );
    }

    // None of the refused writes changed anything: the key is as created
    // (the one allowed patch was empty) and still works; only the two
    // allowed creations made keys.
    let got = s.get(&key_path).await.json();
    assert_eq!(got["name"], "k");
    assert_eq!(got["status"], "active");
    assert_eq!(got["scopes"], json!(["documents.read"]));
    assert_eq!(got["expires_at"], Value::Null);
    assert_eq!(got["replaced_by"], Value::Null);
    assert_eq!(
        s.verify(json!({"credential": api_key})).await["code"],
        "VALID"
    );
    let list = s.get(&format!("{keys}?limit=200")).await.json();
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "{list}");
    let roots = s.get("/v1/root-keys").await.json();
    assert_eq!(roots["data"].as_array().unwrap().len(), 1, "{roots}");
}
both!(json_bodies);

// ------------------------------------------------- paths and query strings

async fn paths_and_queries(s: TestServer) {
    let org = s.org().await;
    let (key_id, _) = s.key(&org, json!({"name": "k"})).await;
    let missing_org = "org_0000000000000000000000";
    let missing_key = "key_0000000000000000000000";
    let long_id = format!("key_{}", "a".repeat(10 * 1024));
    let nf = |name: &str, method: Method, path: &str| {
        case(
            name,
            rooted(&s, method, path),
            Want::Problem(404, "NOT_FOUND"),
        )
    };
    let q = |name: &str, path: &str, want: Want| case(name, rooted(&s, Method::GET, path), want);
    let mut cases = vec![
        nf(
            "org id with a key prefix",
            Method::GET,
            &format!("/v1/orgs/{key_id}"),
        ),
        nf(
            "key id with an org prefix",
            Method::GET,
            &format!("/v1/keys/{org}"),
        ),
        nf(
            "key id without prefix",
            Method::GET,
            &format!("/v1/keys/{}", &key_id[4..]),
        ),
        nf(
            "key id, uppercase prefix",
            Method::GET,
            &format!("/v1/keys/KEY_{}", &key_id[4..]),
        ),
        nf(
            "key id one char short",
            Method::GET,
            &format!("/v1/keys/{}", &key_id[..key_id.len() - 1]),
        ),
        nf(
            "key id one char long",
            Method::GET,
            &format!("/v1/keys/{key_id}a"),
        ),
        nf("10 KiB key id", Method::GET, &format!("/v1/keys/{long_id}")),
        case(
            "10 KiB key id, patch",
            rooted(&s, Method::PATCH, &format!("/v1/keys/{long_id}")).json(&json!({"name": "x"})),
            Want::Problem(404, "NOT_FOUND"),
        ),
        nf(
            "10 KiB key id, revoke",
            Method::POST,
            &format!("/v1/keys/{long_id}/revoke"),
        ),
        nf(
            "10 KiB org id",
            Method::GET,
            &format!("/v1/orgs/org_{}", "b".repeat(10 * 1024)),
        ),
        nf("%00 key id", Method::GET, "/v1/keys/%00"),
        nf(
            "key id with %00",
            Method::GET,
            &format!("/v1/keys/{key_id}%00"),
        ),
        nf(
            "key id with %2F",
            Method::GET,
            &format!("/v1/keys/{}%2F..", &key_id[..10]),
        ),
        nf("percent-encoded junk", Method::GET, "/v1/keys/%zz%"),
        nf("key id with spaces", Method::GET, "/v1/keys/key_%20%20%20"),
        nf(
            "unknown org",
            Method::GET,
            &format!("/v1/orgs/{missing_org}"),
        ),
        nf(
            "keys of unknown org",
            Method::GET,
            &format!("/v1/orgs/{missing_org}/keys"),
        ),
        nf(
            "unknown key",
            Method::GET,
            &format!("/v1/keys/{missing_key}"),
        ),
        nf(
            "delete unknown key",
            Method::DELETE,
            &format!("/v1/keys/{missing_key}"),
        ),
        nf(
            "revoke unknown key",
            Method::POST,
            &format!("/v1/keys/{missing_key}/revoke"),
        ),
        nf(
            "rotate unknown key",
            Method::POST,
            &format!("/v1/keys/{missing_key}/rotate"),
        ),
        nf(
            "revoke unknown root key",
            Method::POST,
            "/v1/root-keys/rtk_0000000000000000000000/revoke",
        ),
        nf(
            "revoke root key, wrong prefix",
            Method::POST,
            &format!("/v1/root-keys/{key_id}/revoke"),
        ),
        nf("unknown route", Method::GET, "/v1/nope"),
        nf(
            "unknown route under a key",
            Method::POST,
            &format!("/v1/keys/{key_id}/explode"),
        ),
        nf("unversioned", Method::GET, "/orgs"),
        nf("v2", Method::GET, "/v2/orgs"),
        nf("double slash", Method::GET, "//v1/orgs"),
        nf("dot segments", Method::GET, "/v1/orgs/../orgs/x"),
        case(
            "create key in unknown org",
            post_json(
                &s,
                &format!("/v1/orgs/{missing_org}/keys"),
                json!({"name": "x"}),
            ),
            Want::Problem(404, "NOT_FOUND"),
        ),
        q(
            "limit=-1",
            "/v1/orgs?limit=-1",
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        q("limit=0", "/v1/orgs?limit=0", Want::Field("limit")),
        q("limit=201", "/v1/orgs?limit=201", Want::Field("limit")),
        q("limit=999", "/v1/orgs?limit=999", Want::Field("limit")),
        q(
            "limit=abc",
            "/v1/orgs?limit=abc",
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        q(
            "limit=1.5",
            "/v1/orgs?limit=1.5",
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        q(
            "limit=2^64",
            "/v1/orgs?limit=18446744073709551616",
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        q(
            "limit empty",
            "/v1/orgs?limit=",
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        q(
            "limit twice",
            "/v1/orgs?limit=1&limit=2",
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        q("cursor=!!!", "/v1/orgs?cursor=!!!", Want::Field("cursor")),
        q("cursor empty", "/v1/orgs?cursor=", Want::Field("cursor")),
        q(
            "cursor=%ff",
            "/v1/orgs?cursor=%ff",
            Want::OneOf(&[(400, "INVALID_REQUEST"), (422, "VALIDATION_FAILED")]),
        ),
        q(
            "cursor of bad text",
            "/v1/orgs?cursor=YSBi",
            Want::Field("cursor"),
        ),
        // base64url("99999999999999999999.org_x"): a timestamp past i64.
        q(
            "cursor with a huge timestamp",
            "/v1/orgs?cursor=OTk5OTk5OTk5OTk5OTk5OTk5OTkub3JnX3g",
            Want::Field("cursor"),
        ),
        q(
            "10 KiB cursor",
            &format!("/v1/orgs?cursor={}", "A".repeat(10 * 1024)),
            Want::Field("cursor"),
        ),
        q(
            "keys limit=-1",
            &format!("/v1/orgs/{org}/keys?limit=-1"),
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        q(
            "keys limit=999",
            &format!("/v1/orgs/{org}/keys?limit=999"),
            Want::Field("limit"),
        ),
        q(
            "keys limit=abc",
            &format!("/v1/orgs/{org}/keys?limit=abc"),
            Want::Problem(400, "INVALID_REQUEST"),
        ),
        q(
            "keys cursor=!!!",
            &format!("/v1/orgs/{org}/keys?cursor=!!!"),
            Want::Field("cursor"),
        ),
        q(
            "root keys limit=999",
            "/v1/root-keys?limit=999",
            Want::Field("limit"),
        ),
        q(
            "root keys cursor=!!!",
            "/v1/root-keys?cursor=!!!",
            Want::Field("cursor"),
        ),
        q(
            "unknown query parameters are ignored",
            "/v1/orgs?foo=bar&limit=1",
            Want::Ok(200),
        ),
        q(
            "10 KiB external_id finds nothing",
            &format!("/v1/orgs/{org}/keys?external_id={}", "e".repeat(10 * 1024)),
            Want::Ok(200),
        ),
    ];
    // Wrong methods on known paths: 405 with Allow.
    for (method, path) in [
        (Method::DELETE, "/v1/orgs".to_owned()),
        (Method::PUT, format!("/v1/keys/{key_id}")),
        (Method::GET, format!("/v1/keys/{key_id}/revoke")),
        (Method::DELETE, format!("/v1/keys/{key_id}/rotate")),
        (Method::GET, "/v1/verify".to_owned()),
        (Method::PATCH, format!("/v1/orgs/{org}")),
    ] {
        cases.push(case(
            format!("{method} {}", &path[..path.len().min(20)]),
            rooted(&s, method, &path),
            Want::Problem(405, "METHOD_NOT_ALLOWED"),
        ));
    }
    run(&s, cases).await;

    for (method, path, allowed) in [
        (Method::DELETE, "/v1/orgs".to_owned(), vec!["GET", "POST"]),
        (
            Method::PUT,
            format!("/v1/keys/{key_id}"),
            vec!["GET", "PATCH", "DELETE"],
        ),
        (Method::GET, "/v1/verify".to_owned(), vec!["POST"]),
    ] {
        let r = s.send(s.http.request(method.clone(), s.at(&path))).await;
        r.problem(405, "METHOD_NOT_ALLOWED");
        let allow = r
            .header("allow")
            .unwrap_or_else(|| panic!("{method} {path}: no Allow header"));
        let listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        for m in allowed {
            assert!(
                listed.contains(&m),
                "{method} {path}: Allow {allow} lacks {m}"
            );
        }
        assert!(
            !listed.contains(&method.as_str()),
            "{method} {path}: Allow {allow}"
        );
    }
    // A 10 KiB id never reached storage as a lookup that failed loudly, and
    // the real key is untouched by the refused calls on ids like it.
    assert_eq!(
        s.get(&format!("/v1/keys/{key_id}")).await.json()["status"],
        "active"
    );
}
both!(paths_and_queries);

// ------------------------------------------------------- verify refusals

async fn verify_refusals(s: TestServer) {
    let org = s.org().await;
    let (_, live) = s
        .key(&org, json!({"name": "live", "scopes": ["documents.read"]}))
        .await;
    let (_, test_key) = s.key(&org, json!({"name": "test", "kind": "test"})).await;
    let (revoked_id, revoked) = s.key(&org, json!({"name": "revoked"})).await;
    let r = s
        .post(
            &format!("/v1/keys/{revoked_id}/revoke"),
            json!({"reason": "test"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (_, expiring) = s
        .key(&org, json!({"name": "expiring", "expires_in": 1}))
        .await;
    let (deleted_id, deleted) = s.key(&org, json!({"name": "deleted"})).await;
    assert_eq!(
        s.delete(&format!("/v1/keys/{deleted_id}")).await.status,
        204
    );
    let (rotated_id, rotated) = s.key(&org, json!({"name": "rotated"})).await;
    let r = s
        .post(&format!("/v1/keys/{rotated_id}/rotate"), json!({}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let unknown = latchkey_core::keyfmt::generate("sk_live_");
    s.remember(&unknown);
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let non_base62 = format!("{}-{}", &live[..12], &live[13..]);
    let test_on_live = test_key.clone();
    let vv =
        |name: &str, body: Value, want: Want| case(name, post_json(&s, "/v1/verify", body), want);
    let cases = vec![
        vv(
            "empty credential",
            json!({"credential": ""}),
            Want::Refused("MISSING_KEY", 401),
        ),
        vv(
            "blank credential",
            json!({"credential": "   "}),
            Want::Refused("MISSING_KEY", 401),
        ),
        vv(
            "unknown prefix",
            json!({"credential": "xk_live_abcdef"}),
            Want::Refused("INVALID_FORMAT", 401),
        ),
        vv(
            "prefix only",
            json!({"credential": "sk_live_"}),
            Want::Refused("INVALID_FORMAT", 401),
        ),
        vv(
            "right prefix, short",
            json!({"credential": &live[..live.len() - 1]}),
            Want::Refused("INVALID_FORMAT", 401),
        ),
        vv(
            "right prefix, long",
            json!({"credential": format!("{live}0")}),
            Want::Refused("INVALID_FORMAT", 401),
        ),
        vv(
            "wrong checksum",
            json!({"credential": bad_checksum(&live)}),
            Want::Refused("INVALID_FORMAT", 401),
        ),
        vv(
            "non-base62 char",
            json!({"credential": non_base62}),
            Want::Refused("INVALID_FORMAT", 401),
        ),
        vv(
            "non-ASCII char",
            json!({"credential": format!("{}é{}", &live[..12], &live[14..])}),
            Want::Refused("INVALID_FORMAT", 401),
        ),
        vv(
            "NUL in key",
            json!({"credential": format!("{}\u{0}{}", &live[..12], &live[13..])}),
            Want::Refused("INVALID_FORMAT", 401),
        ),
        vv(
            "lowercase prefix variant",
            json!({"credential": live.replacen("sk_live_", "SK_LIVE_", 1)}),
            Want::Refused("INVALID_FORMAT", 401),
        ),
        vv(
            "root key as credential",
            json!({"credential": s.root_key}),
            Want::Refused("INVALID_FORMAT", 401),
        ),
        vv(
            "JWT-shaped",
            json!({"credential": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.sig"}),
            Want::Refused("INVALID_TOKEN", 401),
        ),
        vv(
            "unknown key",
            json!({"credential": unknown}),
            Want::Refused("INVALID_KEY", 401),
        ),
        vv(
            "deleted key",
            json!({"credential": deleted}),
            Want::Refused("INVALID_KEY", 401),
        ),
        vv(
            "revoked key",
            json!({"credential": revoked}),
            Want::Refused("KEY_REVOKED", 401),
        ),
        vv(
            "rotated key, no grace",
            json!({"credential": rotated}),
            Want::Refused("KEY_REVOKED", 401),
        ),
        vv(
            "expired key",
            json!({"credential": expiring}),
            Want::Refused("KEY_EXPIRED", 401),
        ),
        vv(
            "test key on a live instance",
            json!({"credential": test_on_live}),
            Want::Refused("WRONG_ENVIRONMENT", 401),
        ),
        vv(
            "live key asked for test",
            json!({"credential": live, "environment": "test"}),
            Want::Refused("WRONG_ENVIRONMENT", 401),
        ),
        vv(
            "missing scope",
            json!({"credential": live, "required_scopes": ["documents.write"]}),
            Want::Refused("INSUFFICIENT_SCOPE", 403),
        ),
        vv(
            "one of two scopes missing",
            json!({"credential": live, "required_scopes": ["documents.read", "documents.delete"]}),
            Want::Refused("INSUFFICIENT_SCOPE", 403),
        ),
        vv(
            "parent of a granted scope",
            json!({"credential": live, "required_scopes": ["documents"]}),
            Want::Refused("INSUFFICIENT_SCOPE", 403),
        ),
    ];
    run(&s, cases).await;

    // The details that go with the codes.
    let v = s
        .verify(
            json!({"credential": live, "required_scopes": ["documents.read", "documents.delete"]}),
        )
        .await;
    assert_eq!(v["required_scopes"], json!(["documents.delete"]), "{v}");
    let v = s.verify(json!({"credential": test_on_live})).await;
    assert!(v["detail"].as_str().unwrap().contains("test"), "{v}");
    let v = s
        .verify(json!({"credential": test_on_live, "environment": "test"}))
        .await;
    assert_eq!(v["code"], "VALID", "{v}");
    let v = s.verify(json!({"credential": expiring})).await;
    assert!(v["detail"].as_str().unwrap().contains("expired"), "{v}");
    let v = s.verify(json!({"credential": rotated})).await;
    assert!(v["detail"].as_str().unwrap().contains("rotated"), "{v}");
    let v = s
        .verify(json!({"credential": live, "required_scopes": ["documents.read"]}))
        .await;
    assert_eq!(v["valid"], true, "{v}");
    let v = s.verify(json!({"credential": format!("  {live}  ")})).await;
    assert_eq!(v["code"], "VALID", "surrounding spaces are trimmed: {v}");
    healthy(&s).await;
}
both!(verify_refusals);

// -------------------------------------------------- server bugs, shown

/// A JSON array is not a JSON object, but serde's derived structs accept
/// an array of the fields in declaration order: `["x"]` creates an
/// organization named "x". Bodies must be objects.
async fn array_bodies_are_refused(s: TestServer) {
    let r = s.post("/v1/orgs", json!(["x"])).await;
    r.problem(422, "VALIDATION_FAILED");
    let org = s.org().await;
    let r = s
        .post(
            &format!("/v1/orgs/{org}/keys"),
            json!(["x", null, null, ["*"], null, null, null, null]),
        )
        .await;
    r.problem(422, "VALIDATION_FAILED");
    let r = s
        .post("/v1/verify", json!(["sk_live_x", [], null, null]))
        .await;
    r.problem(422, "VALIDATION_FAILED");
    let orgs = s.get("/v1/orgs").await.json();
    assert_eq!(orgs["data"].as_array().unwrap().len(), 1, "{orgs}");
}
both!(array_bodies_are_refused);

/// A missing required field is reported as field `(body)`, not by name.
async fn missing_field_is_named(s: TestServer) {
    let org = s.org().await;
    for (path, body, field) in [
        (
            format!("/v1/orgs/{org}/keys"),
            json!({"scopes": ["a"]}),
            "name",
        ),
        ("/v1/orgs".to_owned(), json!({}), "name"),
        (
            "/v1/verify".to_owned(),
            json!({"required_scopes": ["a"]}),
            "credential",
        ),
        ("/v1/root-keys".to_owned(), json!({"name": "r"}), "scopes"),
    ] {
        let r = s.post(&path, body).await;
        let v = r.problem(422, "VALIDATION_FAILED");
        assert_eq!(
            field_names(&v),
            vec![field.to_owned()],
            "{path}: {}",
            r.text
        );
    }
}
both!(missing_field_is_named);

/// An id that percent-decodes to invalid UTF-8 (`%ff`) makes the URL
/// unreadable: 400 INVALID_REQUEST (from axum's path extractor), where
/// every readable id that names nothing (`%00`, `%zz`, wrong prefix,
/// 10 KiB) is a 404 NOT_FOUND.
async fn undecodable_id_is_invalid_request(s: TestServer) {
    for path in [
        "/v1/keys/%ff",
        "/v1/keys/key_%ff%fe",
        "/v1/orgs/%C3%28",
        "/v1/orgs/%ff/keys",
    ] {
        s.get(path).await.problem(400, "INVALID_REQUEST");
    }
}
both!(undecodable_id_is_invalid_request);

/// serde_json is fed the body through a `Deserializer` whose `end()` is
/// never called, so whatever follows the first JSON value is ignored:
/// `{"name": "abc"} x` creates a key named "abc", and of two objects sent
/// back to back the first one wins.
async fn trailing_garbage_is_refused(s: TestServer) {
    let org = s.org().await;
    let keys = format!("/v1/orgs/{org}/keys");
    for body in [
        &b"{\"name\": \"abc\"} x"[..],
        b"{\"name\": \"a\"}{\"name\": \"b\"}",
        b"{\"name\": \"a\"}]",
    ] {
        let r = s
            .send(post_raw(&s, &keys, Some("application/json"), body.to_vec()))
            .await;
        r.problem(400, "INVALID_REQUEST");
    }
    let r = s
        .send(post_raw(
            &s,
            "/v1/verify",
            Some("application/json"),
            &b"{\"credential\": \"x\"} garbage"[..],
        ))
        .await;
    r.problem(400, "INVALID_REQUEST");
    let list = s.get(&keys).await.json();
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        0,
        "a refused body created keys: {list}"
    );
}
both!(trailing_garbage_is_refused);
