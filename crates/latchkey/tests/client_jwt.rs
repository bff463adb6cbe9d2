//! Client-signed JWTs (SPEC §7) through the real binary, on both
//! backends: each algorithm accepted through `/v1/verify` and
//! forward-auth; the claims rules of `[jwt_auth]`; the attack suite of
//! issue 6 (every forged, confused or malformed token a 401, never a 5xx);
//! one-time `jti` across two nodes; and changes to a client (secret
//! rotated, keys replaced, jwt_auth off, client deleted) in force at once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{Backend, Resp, TestServer, clients_dir, now, runs, tool_or_skip};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const AUD: &str = "https://api.example.test";

/// The documents API, with client JWTs for `AUD`.
fn config(extra: &str) -> String {
    format!(
        "{}\n[jwt_auth]\naudience = \"{AUD}\"\nmax_lifetime = \"1h\"\nleeway = \"30s\"\n{extra}",
        common::ROUTES
    )
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A client's signing key: how to sign, and what to register.
struct Signer {
    alg: Algorithm,
    key: EncodingKey,
    /// The public JWK (with `kid`), or `None` for HS256.
    jwk: Option<Value>,
    kid: Option<String>,
    /// The private key as PKCS#8 PEM, for the scripts.
    pem: Option<String>,
}

fn pkcs8_pem(der: &[u8]) -> String {
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in STANDARD.encode(der).as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

fn signer(alg: Algorithm, kid: &str) -> Signer {
    let rng = SystemRandom::new();
    let der: Vec<u8> = match alg {
        Algorithm::ES256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap()
            .as_ref()
            .to_vec(),
        Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8v1(&rng)
            .unwrap()
            .as_ref()
            .to_vec(),
        Algorithm::RS256 => {
            use aws_lc_rs::encoding::AsDer;
            aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .unwrap()
                .as_der()
                .unwrap()
                .as_ref()
                .to_vec()
        }
        other => panic!("no public-key signer for {other:?}"),
    };
    let pem = pkcs8_pem(&der);
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_der(&der),
        Algorithm::EdDSA => EncodingKey::from_ed_der(&der),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    };
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    assert!(jwk.get("d").is_none(), "a public JWK holds a private key");
    Signer {
        alg,
        key,
        jwk: Some(jwk),
        kid: Some(kid.to_owned()),
        pem: Some(pem),
    }
}

fn hmac_signer(secret: &str) -> Signer {
    Signer {
        alg: Algorithm::HS256,
        key: EncodingKey::from_secret(secret.as_bytes()),
        jwk: None,
        kid: None,
        pem: None,
    }
}

impl Signer {
    fn header(&self) -> Header {
        let mut h = Header::new(self.alg);
        h.kid = self.kid.clone();
        h
    }

    fn sign(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&self.header(), claims, &self.key).unwrap()
    }

    /// Signs raw header JSON and claims JSON text as they are.
    fn sign_raw(&self, header: &str, claims: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &self.key, self.alg).unwrap();
        format!("{input}.{sig}")
    }

    /// Signs `claims` under a header edited by `edit`.
    fn sign_with(&self, claims: &Value, edit: impl FnOnce(&mut Value)) -> String {
        let mut h = serde_json::to_value(self.header()).unwrap();
        h.as_object_mut().unwrap().retain(|_, v| !v.is_null());
        edit(&mut h);
        self.sign_raw(&h.to_string(), &claims.to_string())
    }
}

fn claims(client_id: &str) -> Value {
    let t = now();
    json!({"iss": client_id, "sub": "svc-billing", "aud": AUD, "iat": t, "exp": t + 300})
}

/// Registers a client_credentials client with `jwt_auth` `alg` and, for
/// public-key algs, `keys`: (client id, client secret).
async fn client(s: &TestServer, org: &str, alg: &str, keys: &[&Signer]) -> (String, String) {
    let mut body = json!({
        "name": format!("svc {alg}"),
        "scopes": ["documents.read", "documents.write"],
        "jwt_auth": {"alg": alg},
    });
    let jwks: Vec<Value> = keys.iter().filter_map(|k| k.jwk.clone()).collect();
    if !jwks.is_empty() {
        body["jwks"] = json!({ "keys": jwks });
    }
    let r = s.post(&format!("/v1/orgs/{org}/clients"), body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v = r.json();
    let secret = v["client_secret"].as_str().unwrap().to_owned();
    s.remember(&secret);
    (v["client_id"].as_str().unwrap().to_owned(), secret)
}

async fn verify(s: &TestServer, token: &str, scopes: &[&str]) -> Value {
    s.verify(json!({"credential": token, "required_scopes": scopes}))
        .await
}

async fn forward(s: &TestServer, token: &str, path: &str) -> Resp {
    s.send(
        s.http
            .get(s.at("/v1/forward-auth"))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", path)
            .bearer_auth(token),
    )
    .await
}

fn assert_valid(v: &Value, client_id: &str) {
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["code"], "VALID", "{v}");
    assert_eq!(v["credential_type"], "client_jwt", "{v}");
    assert_eq!(v["client_id"], client_id, "{v}");
}

fn assert_refused(v: &Value, code: &str, says: &str) {
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["status"], 401, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains(says), "{detail:?} should say {says:?}");
}

// ------------------------------------------------------------------ accepted

async fn each_alg_is_accepted_through_verify_and_forward_auth(s: TestServer) {
    let org = s.org().await;
    let es = signer(Algorithm::ES256, "es-1");
    let ed = signer(Algorithm::EdDSA, "ed-1");
    let rs = signer(Algorithm::RS256, "rs-1");
    let (hs_id, hs_secret) = client(&s, &org, "HS256", &[]).await;
    let hs = hmac_signer(&hs_secret);
    let mut clients = vec![(hs_id, &hs)];
    for (alg, k) in [("ES256", &es), ("EdDSA", &ed), ("RS256", &rs)] {
        clients.push((client(&s, &org, alg, &[k]).await.0, k));
    }
    for (id, k) in &clients {
        let t = k.sign(&claims(id));
        s.remember(&t);
        let v = verify(&s, &t, &["documents.read"]).await;
        assert_valid(&v, id);
        assert_eq!(v["subject"], "svc-billing", "{v}");
        assert_eq!(v["org_id"], org.as_str(), "{v}");
        assert_eq!(v["scopes"], json!(["documents.read", "documents.write"]));
        assert_eq!(v["environment"], "live");
        assert!(v.get("key_id").is_none(), "{v}");
        assert!(v["expires_at"].as_str().is_some(), "{v}");

        let r = forward(&s, &t, "/api/v1/documents").await;
        assert_eq!(r.status, 200, "{id}: {}", r.text);
        assert_eq!(
            r.header("x-latchkey-credential-type").as_deref(),
            Some("client_jwt")
        );
        assert_eq!(
            r.header("x-latchkey-client-id").as_deref(),
            Some(id.as_str())
        );
        assert_eq!(
            r.header("x-latchkey-subject").as_deref(),
            Some("svc-billing")
        );
        assert_eq!(r.header("x-latchkey-org").as_deref(), Some(org.as_str()));
        assert_eq!(r.header("x-latchkey-key-id"), None);

        // A `scope` claim narrows the client's scopes.
        let mut c = claims(id);
        c["scope"] = json!("documents.read");
        let t = k.sign(&c);
        let v = verify(&s, &t, &["documents.read"]).await;
        assert_valid(&v, id);
        assert_eq!(v["scopes"], json!(["documents.read"]));
        let v = verify(&s, &t, &["documents.write"]).await;
        assert_eq!(v["code"], "INSUFFICIENT_SCOPE", "{v}");
        assert_eq!(v["status"], 403);
        let r = s
            .send(
                s.http
                    .get(s.at("/v1/forward-auth"))
                    .header("x-forwarded-method", "POST")
                    .header("x-forwarded-uri", "/api/v1/documents")
                    .bearer_auth(&t),
            )
            .await;
        r.problem(403, "INSUFFICIENT_SCOPE");

        // A scope the client may not have is not granted by asking.
        let mut c = claims(id);
        c["scope"] = json!("documents.read admin");
        let v = verify(&s, &k.sign(&c), &[]).await;
        assert_refused(
            &v,
            "INVALID_TOKEN",
            "names admin, which this client may not be",
        );
    }

    // The log shows the decisions as the client's, of type client_jwt.
    let (id, _) = &clients[1];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = s
            .get(&format!("/v1/orgs/{org}/logs?client_id={id}&code=VALID"))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let rows = r.json()["data"].as_array().unwrap().clone();
        if rows.len() >= 3 {
            assert!(
                rows.iter().all(|e| e["credential_type"] == "client_jwt"),
                "{rows:?}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
both!(
    each_alg_is_accepted_through_verify_and_forward_auth,
    &config("")
);

// ------------------------------------------------------------- claims rules

async fn the_claims_rules_of_jwt_auth(s: TestServer) {
    let org = s.org().await;
    let k = signer(Algorithm::ES256, "k1");
    let (id, _) = client(&s, &org, "ES256", &[&k]).await;
    let t = now();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims(&id);
        edit(&mut c);
        k.sign(&c)
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "exp beyond max_lifetime",
            with(&|c| c["exp"] = json!(t + 3601)),
            "INVALID_TOKEN",
            "at most 3600 s",
        ),
        (
            "expired beyond the leeway",
            with(&|c| {
                c["iat"] = json!(t - 600);
                c["exp"] = json!(t - 31);
            }),
            "TOKEN_EXPIRED",
            "expired on",
        ),
        (
            "nbf in the future",
            with(&|c| c["nbf"] = json!(t + 120)),
            "INVALID_TOKEN",
            "not valid yet (nbf)",
        ),
        (
            "iat in the future",
            with(&|c| {
                c["iat"] = json!(t + 120);
                c["exp"] = json!(t + 300);
            }),
            "INVALID_TOKEN",
            "issued in the future",
        ),
        (
            "missing iat",
            with(&|c| drop(c.as_object_mut().unwrap().remove("iat"))),
            "INVALID_TOKEN",
            "no iat",
        ),
        (
            "missing exp",
            with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))),
            "INVALID_TOKEN",
            "no exp",
        ),
        (
            "missing sub",
            with(&|c| drop(c.as_object_mut().unwrap().remove("sub"))),
            "INVALID_TOKEN",
            "no sub",
        ),
        (
            "aud of another API",
            with(&|c| c["aud"] = json!("https://other.example")),
            "INVALID_TOKEN",
            "not this API's audience",
        ),
        (
            "aud an array without ours",
            with(&|c| c["aud"] = json!(["https://other.example"])),
            "INVALID_TOKEN",
            "not this API's audience",
        ),
        (
            "iss of another client",
            with(&|c| c["iss"] = json!("cli_0000000000000000000000")),
            "INVALID_TOKEN",
            "not the id of a registered client",
        ),
        (
            "iss of no client at all",
            with(&|c| c["iss"] = json!("https://evil.example")),
            "INVALID_TOKEN",
            "neither this server nor",
        ),
        (
            "exp a string",
            with(&|c| c["exp"] = json!((t + 300).to_string())),
            "INVALID_TOKEN",
            "exp must be a number",
        ),
        (
            "iat a boolean",
            with(&|c| c["iat"] = json!(true)),
            "INVALID_TOKEN",
            "iat must be a number",
        ),
        (
            "iss a number",
            with(&|c| c["iss"] = json!(7)),
            "INVALID_TOKEN",
            "no iss",
        ),
        (
            "aud an object",
            with(&|c| c["aud"] = json!({"aud": AUD})),
            "INVALID_TOKEN",
            "string or an array of strings",
        ),
        (
            "sub an object",
            with(&|c| c["sub"] = json!({"id": 1})),
            "INVALID_TOKEN",
            "sub must be a string",
        ),
        (
            "scope an array",
            with(&|c| c["scope"] = json!(["documents.read"])),
            "INVALID_TOKEN",
            "scope must be a string",
        ),
    ];
    for (name, token, code, says) in &cases {
        let v = verify(&s, token, &[]).await;
        assert_eq!(v["valid"], false, "{name}: {v}");
        assert_eq!(v["code"], *code, "{name}: {v}");
        assert!(
            v["detail"].as_str().unwrap().contains(says),
            "{name}: {v} should say {says:?}"
        );
    }
    // Within the leeway, and exactly max_lifetime: accepted.
    let ok = [
        with(&|c| {
            c["iat"] = json!(t - 600);
            c["exp"] = json!(t - 20);
        }),
        with(&|c| c["exp"] = json!(t + 3600)),
        with(&|c| c["nbf"] = json!(t + 20)),
        with(&|c| c["aud"] = json!(["https://other.example", AUD])),
    ];
    for token in &ok {
        assert_valid(&verify(&s, token, &[]).await, &id);
    }
}
both!(the_claims_rules_of_jwt_auth, &config(""));

// --------------------------------------------------------- the attack suite

/// Sends `token` every way it can arrive and checks each answer is the
/// refusal `says`: 401 problem+json with `WWW-Authenticate`, never a 5xx.
async fn refused_everywhere(s: &TestServer, name: &str, token: &str, says: &str) {
    let v = s.post("/v1/verify", json!({ "credential": token })).await;
    assert_eq!(v.status, 200, "{name}: {}", v.text);
    let v = v.json();
    assert_eq!(v["valid"], false, "{name}: {v}");
    assert_eq!(v["status"], 401, "{name}: {v}");
    assert!(
        matches!(v["code"].as_str(), Some("INVALID_TOKEN" | "INVALID_FORMAT")),
        "{name}: {v}"
    );
    assert!(
        v["detail"].as_str().unwrap().contains(says),
        "{name}: {v} should say {says:?}"
    );
    // As a bearer credential, when it can be one (no whitespace).
    if token.bytes().all(|b| b.is_ascii_graphic()) {
        let r = forward(s, token, "/api/v1/documents").await;
        assert_eq!(r.status, 401, "{name}: {}", r.text);
        let p = r.json();
        assert_eq!(p["code"], v["code"], "{name}: {p}");
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        assert!(
            r.header("content-type")
                .unwrap_or_default()
                .starts_with("application/problem+json"),
            "{name}"
        );
    }
}

async fn the_attack_suite(s: TestServer) {
    let org = s.org().await;
    let es = signer(Algorithm::ES256, "es-1");
    let rs = signer(Algorithm::RS256, "rs-1");
    let other_key = signer(Algorithm::ES256, "other-1");
    let (es_id, _) = client(&s, &org, "ES256", &[&es]).await;
    let (rs_id, _) = client(&s, &org, "RS256", &[&rs]).await;
    let (other_id, _) = client(&s, &org, "ES256", &[&other_key]).await;
    let (hs_id, hs_secret) = client(&s, &org, "HS256", &[]).await;
    let hs = hmac_signer(&hs_secret);
    let c = claims(&es_id);
    let good = es.sign(&c);
    s.remember(&good);
    assert_valid(&verify(&s, &good, &[]).await, &es_id);
    let parts: Vec<String> = good.split('.').map(str::to_owned).collect();

    let mut cases: Vec<(String, String, &str)> = Vec::new();
    let mut case = |name: &str, token: String, says: &'static str| {
        cases.push((name.to_owned(), token, says));
    };

    // alg none, every spelling, with and without a signature.
    for alg in ["none", "None", "NONE"] {
        let h = b64(&json!({"alg": alg, "typ": "JWT"}));
        case(
            &format!("alg {alg}"),
            format!("{h}.{}.", parts[1]),
            "no signature",
        );
        case(
            &format!("alg {alg}, signed"),
            format!("{h}.{}.{}", parts[1], parts[2]),
            "alg none",
        );
    }
    // Algorithm confusion: HS256 keyed with the client's public key, as
    // the JWK text, the PEM an attacker would try, or the raw point.
    let es_pub_pem = {
        let jwk: Jwk = serde_json::from_value(es.jwk.clone().unwrap()).unwrap();
        serde_json::to_string(&jwk).unwrap()
    };
    for (name, client_id, secret) in [
        ("HS256 with the EC public JWK", &es_id, es_pub_pem.clone()),
        (
            "HS256 with the RSA public JWK",
            &rs_id,
            rs.jwk.clone().unwrap().to_string(),
        ),
        (
            "HS256 with the RSA modulus",
            &rs_id,
            rs.jwk.clone().unwrap()["n"].as_str().unwrap().to_owned(),
        ),
    ] {
        let confused = Signer {
            alg: Algorithm::HS256,
            key: EncodingKey::from_secret(secret.as_bytes()),
            jwk: None,
            kid: None,
            pem: None,
        };
        let t = confused.sign(&claims(client_id));
        case(name, t, "is not");
    }
    // kid tricks: traversal, SQL, another client's key.
    for kid in [
        "../../../../../etc/passwd",
        "/dev/null",
        "' OR '1'='1' --",
        "es-1' UNION SELECT 1 --",
    ] {
        let t = es.sign_with(&c, |h| h["kid"] = json!(kid));
        case(&format!("kid {kid}"), t, "kid names no ES256 key");
    }
    let t = other_key.sign_with(&c, |h| h["kid"] = json!("other-1"));
    case("kid of another client's key", t, "kid names no ES256 key");
    let t = other_key.sign_with(&c, |h| h["kid"] = json!("es-1"));
    case("signed by another client's key", t, "does not verify");
    // Keys offered by the header are never used.
    let attacker = signer(Algorithm::ES256, "es-1");
    for (name, extra) in [
        ("jwk header", json!({"jwk": attacker.jwk.clone().unwrap()})),
        (
            "jku header",
            json!({"jku": "https://evil.example/jwks.json"}),
        ),
        (
            "x5u header",
            json!({"x5u": "https://evil.example/cert.pem"}),
        ),
        ("x5c header", json!({"x5c": ["MIIBszCCAVmgAwIBAgIU"]})),
    ] {
        let t = attacker.sign_with(&c, |h| {
            h.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
        });
        case(name, t, "does not verify");
    }
    // Header extensions and other token kinds.
    case(
        "unknown crit",
        es.sign_with(&c, |h| {
            h["crit"] = json!(["exp-ext"]);
            h["exp-ext"] = json!(1);
        }),
        "crit",
    );
    case(
        "b64 false",
        es.sign_with(&c, |h| {
            h["b64"] = json!(false);
            h["crit"] = json!(["b64"]);
        }),
        "crit",
    );
    case(
        "b64 false without crit",
        es.sign_with(&c, |h| h["b64"] = json!(false)),
        "unencoded payload",
    );
    case(
        "a JWE",
        format!(
            "{}.{}.{}.{}.{}",
            b64(&json!({"alg": "RSA-OAEP-256", "enc": "A256GCM"})),
            URL_SAFE_NO_PAD.encode([7u8; 256]),
            URL_SAFE_NO_PAD.encode([1u8; 12]),
            URL_SAFE_NO_PAD.encode(b"ciphertext"),
            URL_SAFE_NO_PAD.encode([2u8; 16]),
        ),
        "JWE",
    );
    case(
        "a JWE header in three parts",
        es.sign_with(&c, |h| h["enc"] = json!("A256GCM")),
        "JWE",
    );
    case(
        "a nested JWT",
        es.sign_raw(r#"{"alg":"ES256","cty":"JWT"}"#, &good),
        "claims is not valid JSON",
    );
    case(
        "a nested JWT, cty with claims",
        es.sign_with(&c, |h| h["cty"] = json!("JWT")),
        "nested",
    );
    case(
        "typ of an access token",
        es.sign_with(&c, |h| h["typ"] = json!("at+jwt")),
        "access token",
    );
    // Signatures.
    case(
        "signature stripped",
        format!("{}.{}.", parts[0], parts[1]),
        "no signature",
    );
    case(
        "signature and dot stripped",
        format!("{}.{}", parts[0], parts[1]),
        "three base64url parts",
    );
    case(
        "claims swapped under a signature",
        format!(
            "{}.{}.{}",
            parts[0],
            b64(
                &json!({"iss": es_id, "sub": "admin", "aud": AUD, "iat": now(), "exp": now() + 60})
            ),
            parts[2]
        ),
        "does not verify",
    );
    case(
        "ES256 r = s = 0",
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            URL_SAFE_NO_PAD.encode([0u8; 64])
        ),
        "does not verify",
    );
    let mut one = [0u8; 32];
    one[31] = 1;
    case(
        "ES256 r = 0",
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            URL_SAFE_NO_PAD.encode([[0u8; 32], one].concat())
        ),
        "does not verify",
    );
    case(
        "ES256 s = 0",
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            URL_SAFE_NO_PAD.encode([one, [0u8; 32]].concat())
        ),
        "does not verify",
    );
    case(
        "HS256 with a wrong secret",
        hmac_signer("lk_cs_not-the-secret").sign(&claims(&hs_id)),
        "does not verify",
    );
    // Encodings.
    case("extra dots", format!("{good}.."), "three base64url parts");
    case(
        "a fourth part",
        format!("{good}.e30"),
        "three base64url parts",
    );
    case(
        "padding",
        format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        "not base64url",
    );
    case(
        "standard base64 characters",
        format!("{}.{}+/.{}", parts[0], parts[1], parts[2]),
        "not base64url",
    );
    case(
        "whitespace inside",
        format!("{}. {}.{}", parts[0], parts[1], parts[2]),
        "not base64url",
    );
    case(
        "a newline inside",
        format!("{}.{}\n.{}", parts[0], parts[1], parts[2]),
        "not base64url",
    );
    case(
        "duplicate alg in the header",
        hs.sign_raw(
            r#"{"alg":"HS256","alg":"none"}"#,
            &claims(&hs_id).to_string(),
        ),
        "header names a JSON member twice",
    );
    case(
        "duplicate sub in the claims",
        es.sign_raw(
            r#"{"alg":"ES256","kid":"es-1"}"#,
            &format!(
                r#"{{"iss":"{es_id}","sub":"svc","sub":"admin","aud":"{AUD}","iat":{},"exp":{}}}"#,
                now(),
                now() + 60
            ),
        ),
        "claims names a JSON member twice",
    );
    case(
        "duplicate iss in the claims",
        es.sign_raw(
            r#"{"alg":"ES256","kid":"es-1"}"#,
            &format!(
                r#"{{"iss":"{other_id}","iss":"{es_id}","sub":"svc","aud":"{AUD}","iat":{},"exp":{}}}"#,
                now(),
                now() + 60
            ),
        ),
        "claims names a JSON member twice",
    );
    case(
        "a 64 KiB token",
        es.sign_with(&c, |h| h["pad"] = json!("x".repeat(64 * 1024))),
        "longer than 8 KiB",
    );
    case(
        "header not JSON",
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode("alg=HS256"),
            parts[1],
            parts[2]
        ),
        "header is not valid JSON",
    );
    case(
        "claims an array",
        es.sign_raw(r#"{"alg":"ES256"}"#, "[1,2,3]"),
        "claims is not a JSON object",
    );

    for (name, token, says) in &cases {
        refused_everywhere(&s, name, token, says).await;
    }

    // None of them wrote a row to the organization's log that names a
    // client whose key did not sign it; the ones signed by the client
    // but refused for their claims do name it.
    let mut c2 = claims(&es_id);
    c2["aud"] = json!("https://other.example");
    let refused = es.sign(&c2);
    let v = verify(&s, &refused, &[]).await;
    assert_eq!(v["code"], "INVALID_TOKEN", "{v}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = s
            .get(&format!(
                "/v1/orgs/{org}/logs?client_id={es_id}&code=INVALID_TOKEN"
            ))
            .await;
        let rows = r.json()["data"].as_array().unwrap().clone();
        if !rows.is_empty() {
            assert_eq!(rows.len(), 1, "only the client's own token: {rows:?}");
            assert_eq!(rows[0]["credential_type"], "client_jwt");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no log entry");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The server is still well.
    assert_valid(&verify(&s, &good, &[]).await, &es_id);
}
both!(the_attack_suite, &config(""));

// ------------------------------------------------------------ required typ

async fn a_required_typ(s: TestServer) {
    let org = s.org().await;
    let k = signer(Algorithm::EdDSA, "k1");
    let (id, _) = client(&s, &org, "EdDSA", &[&k]).await;
    let c = claims(&id);
    assert_valid(
        &verify(&s, &k.sign_with(&c, |h| h["typ"] = json!("JWT")), &[]).await,
        &id,
    );
    assert_valid(
        &verify(
            &s,
            &k.sign_with(&c, |h| h["typ"] = json!("application/jwt")),
            &[],
        )
        .await,
        &id,
    );
    for (name, token) in [
        (
            "missing typ",
            k.sign_with(&c, |h| drop(h.as_object_mut().unwrap().remove("typ"))),
        ),
        (
            "wrong typ",
            k.sign_with(&c, |h| h["typ"] = json!("secevent+jwt")),
        ),
        (
            "typ at+jwt",
            k.sign_with(&c, |h| h["typ"] = json!("at+jwt")),
        ),
    ] {
        refused_everywhere(&s, name, &token, "must say typ JWT").await;
    }
}
both!(a_required_typ, &config("typ = \"JWT\""));

// ------------------------------------------------------------ one-time jti

async fn require_jti_holds_across_nodes(s: TestServer) {
    let org = s.org().await;
    let k = signer(Algorithm::ES256, "k1");
    let (id, _) = client(&s, &org, "ES256", &[&k]).await;
    let b = s.second_node();
    let mut c = claims(&id);

    // No jti: refused.
    let v = verify(&s, &k.sign(&c), &[]).await;
    assert_refused(&v, "INVALID_TOKEN", "requires a jti");

    // Used on one node, refused on the other.
    c["jti"] = json!("once-1");
    let t = k.sign(&c);
    assert_valid(&verify(&s, &t, &[]).await, &id);
    assert_refused(&verify(&b, &t, &[]).await, "INVALID_TOKEN", "used before");
    assert_refused(&verify(&s, &t, &[]).await, "INVALID_TOKEN", "used before");
    let r = forward(&b, &t, "/api/v1/documents").await;
    r.problem(401, "INVALID_TOKEN");

    // One token raced at both nodes: exactly one request passes.
    c["jti"] = json!("raced");
    let t = k.sign(&c);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let url = if i % 2 == 0 {
            s.at("/v1/verify")
        } else {
            b.at("/v1/verify")
        };
        let http = s.http.clone();
        let root = s.root_key.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(root)
                .json(&json!({ "credential": t }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }));
    }
    let mut valid = 0;
    for t in tasks {
        let v = t.await.unwrap();
        if v["valid"] == true {
            valid += 1;
        } else {
            assert_refused(&v, "INVALID_TOKEN", "used before");
        }
    }
    assert_eq!(valid, 1, "one of 24 concurrent uses of one jti");

    // Another client may use the same jti: ids are per client.
    let k2 = signer(Algorithm::ES256, "k2");
    let (id2, _) = client(&s, &org, "ES256", &[&k2]).await;
    let mut c2 = claims(&id2);
    c2["jti"] = json!("once-1");
    assert_valid(&verify(&b, &k2.sign(&c2), &[]).await, &id2);
}
both!(
    require_jti_holds_across_nodes,
    &config("require_jti = true")
);

// --------------------------------------------------------- client changes

async fn changes_to_the_client_hold_at_once(s: TestServer) {
    let org = s.org().await;
    // HS256: rotating the secret ends the old secret's tokens.
    let (hs_id, old_secret) = client(&s, &org, "HS256", &[]).await;
    let old = hmac_signer(&old_secret).sign(&claims(&hs_id));
    assert_valid(&verify(&s, &old, &[]).await, &hs_id);
    let r = s
        .post(&format!("/v1/clients/{hs_id}/rotate-secret"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new_secret = r.json()["client_secret"].as_str().unwrap().to_owned();
    s.remember(&new_secret);
    assert_refused(
        &verify(&s, &old, &[]).await,
        "INVALID_TOKEN",
        "does not verify",
    );
    let new = hmac_signer(&new_secret).sign(&claims(&hs_id));
    assert_valid(&verify(&s, &new, &[]).await, &hs_id);

    // Public keys: a second key for rotation, then the first removed.
    let k1 = signer(Algorithm::ES256, "k1");
    let k2 = signer(Algorithm::ES256, "k2");
    let (id, _) = client(&s, &org, "ES256", &[&k1]).await;
    let t1 = k1.sign(&claims(&id));
    assert_valid(&verify(&s, &t1, &[]).await, &id);
    let both_keys = json!({"jwks": {"keys": [k1.jwk.clone(), k2.jwk.clone()]}});
    let r = s.patch(&format!("/v1/clients/{id}"), both_keys).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let t2 = k2.sign(&claims(&id));
    assert_valid(&verify(&s, &t1, &[]).await, &id);
    assert_valid(&verify(&s, &t2, &[]).await, &id);
    let only_k2 = json!({"jwks": {"keys": [k2.jwk.clone()]}});
    let r = s.patch(&format!("/v1/clients/{id}"), only_k2).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_refused(&verify(&s, &t1, &[]).await, "INVALID_TOKEN", "kid names no");
    assert_valid(&verify(&s, &t2, &[]).await, &id);

    // A second node learns of the changes through the feed.
    let b = s.second_node();
    assert_valid(&verify(&b, &t2, &[]).await, &id);

    // jwt_auth off: refused.
    let r = s
        .patch(&format!("/v1/clients/{id}"), json!({"jwt_auth": null}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_refused(&verify(&s, &t2, &[]).await, "INVALID_TOKEN", "not set up");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let v = verify(&b, &t2, &[]).await;
        if v["valid"] == false {
            assert_refused(&v, "INVALID_TOKEN", "not set up");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "node B still accepts");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Deleted: refused.
    let r = s.delete(&format!("/v1/clients/{hs_id}")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_refused(
        &verify(&s, &new, &[]).await,
        "INVALID_TOKEN",
        "not the id of a registered client",
    );
}
both!(changes_to_the_client_hold_at_once, &config(""));

// ------------------------------------------------- the documented examples

/// The fenced code blocks of `lang` in docs/client-jwt.md.
fn doc_blocks(lang: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/client-jwt.md");
    let text = std::fs::read_to_string(path).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim_end() == format!("```{lang}") => current = Some(String::new()),
            Some(b) if line.trim_end() == "```" => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// Runs `program args` in `dir` with `env`; answers its stdout's one line.
fn run(program: &str, args: &[&str], dir: &std::path::Path, env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "{program} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().count(),
        1,
        "{program} printed more than a token: {stdout}"
    );
    stdout
}

/// Every example on docs/client-jwt.md, exactly as written, signs a token
/// a real server accepts: Python (PyJWT), Node (jose), Go (standard
/// library) and shell (openssl).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_examples_sign_tokens_latchkey_accepts() {
    let Some(s) = TestServer::start_with(Backend::Sqlite, &config(""), &[]).await else {
        return;
    };
    let org = s.org().await;
    let (hs_id, hs_secret) = client(&s, &org, "HS256", &[]).await;
    let ed = signer(Algorithm::EdDSA, "ed-2026-12");
    let (ed_id, _) = client(&s, &org, "EdDSA", &[&ed]).await;
    let es = signer(Algorithm::ES256, "es-2026-12");
    let (es_id, _) = client(&s, &org, "ES256", &[&es]).await;
    let dir = tempfile::tempdir().unwrap();
    let ed_pem = dir.path().join("ed25519.pem");
    std::fs::write(&ed_pem, ed.pem.as_ref().unwrap()).unwrap();
    let es_pem = dir.path().join("p256.pem");
    std::fs::write(&es_pem, es.pem.as_ref().unwrap()).unwrap();

    let python = doc_blocks("python");
    let js = doc_blocks("js");
    let go = doc_blocks("go");
    let sh = doc_blocks("sh");
    let [python, js, go] = [&python, &js, &go].map(|b| {
        assert_eq!(b.len(), 1, "one example per language: {b:?}");
        b[0].clone()
    });
    // The shell blocks: the registration curls, then the signing one.
    let sh = sh
        .iter()
        .find(|b| b.contains("openssl dgst"))
        .expect("the shell example")
        .clone();

    struct Example<'a> {
        lang: &'static str,
        /// Whether its tool is here, and what to install if not.
        available: bool,
        needs: &'static str,
        program: &'static str,
        args: Vec<String>,
        dir: std::path::PathBuf,
        env: Vec<(&'static str, String)>,
        client_id: &'a str,
        /// The example names a `scope` (documents.read).
        scoped: bool,
    }
    let node_dir = clients_dir().join("node");
    let go_file = dir.path().join("main.go");
    std::fs::write(&go_file, &go).unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let examples = [
        Example {
            lang: "python",
            available: runs("python3")
                && std::process::Command::new("python3")
                    .args(["-c", "import jwt, cryptography"])
                    .status()
                    .is_ok_and(|st| st.success()),
            needs: "python3 with PyJWT (tests/clients/python/requirements.txt)",
            program: "python3",
            args: vec!["-c".into(), python],
            dir: dir.path().to_owned(),
            env: vec![
                ("CLIENT_ID", hs_id.clone()),
                ("CLIENT_SECRET", hs_secret.clone()),
            ],
            client_id: &hs_id,
            scoped: true,
        },
        Example {
            lang: "node",
            available: runs("node") && node_dir.join("node_modules/jose").is_dir(),
            needs: "node with jose (npm ci in tests/clients/node)",
            program: "node",
            args: vec!["--input-type=module".into(), "-e".into(), js],
            dir: node_dir.clone(),
            env: vec![
                ("CLIENT_ID", ed_id.clone()),
                ("PRIVATE_KEY_FILE", path(&ed_pem)),
                ("KEY_ID", "ed-2026-12".into()),
            ],
            client_id: &ed_id,
            scoped: true,
        },
        Example {
            lang: "go",
            available: std::process::Command::new("go")
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success()),
            needs: "go (Debian's golang-go)",
            program: "go",
            args: vec!["run".into(), path(&go_file)],
            dir: dir.path().to_owned(),
            env: vec![
                ("CLIENT_ID", es_id.clone()),
                ("PRIVATE_KEY_FILE", path(&es_pem)),
                ("KEY_ID", "es-2026-12".into()),
                ("GOCACHE", path(&dir.path().join("gocache"))),
            ],
            client_id: &es_id,
            scoped: true,
        },
        Example {
            lang: "sh",
            available: runs("openssl") || std::path::Path::new("/usr/bin/openssl").exists(),
            needs: "openssl",
            program: "sh",
            args: vec!["-c".into(), sh],
            dir: dir.path().to_owned(),
            env: vec![
                ("CLIENT_ID", hs_id.clone()),
                ("CLIENT_SECRET", hs_secret.clone()),
            ],
            client_id: &hs_id,
            scoped: false,
        },
    ];
    let mut tokens = Vec::new();
    for ex in &examples {
        if tool_or_skip(ex.available, ex.needs).is_none() {
            continue;
        }
        let mut env: Vec<(&str, &str)> = ex.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.push(("API_AUDIENCE", AUD));
        let args: Vec<&str> = ex.args.iter().map(String::as_str).collect();
        let token = run(ex.program, &args, &ex.dir, &env);
        tokens.push((ex.lang, token, ex.client_id, ex.scoped));
    }
    for (lang, token, client_id, scoped) in &tokens {
        s.remember(token);
        let v = verify(&s, token, &["documents.read"]).await;
        assert_valid(&v, client_id);
        assert_eq!(v["subject"], "billing-worker", "{lang}: {v}");
        let want: &[&str] = if *scoped {
            &["documents.read"]
        } else {
            &["documents.read", "documents.write"]
        };
        assert_eq!(v["scopes"], json!(want), "{lang}: {v}");
        // Good for the five minutes the examples give, and no more.
        let exp = time::OffsetDateTime::parse(
            v["expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
        .unix_timestamp();
        assert!((exp - now() - 300).abs() <= 5, "{lang}: expires {exp}");
    }
}

// ------------------------------------------------------------------- CLI

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_create_with_jwt_auth_from_the_cli() {
    let Some(s) = TestServer::start_with(Backend::Sqlite, &config(""), &[]).await else {
        return;
    };
    let org = s.org().await;
    let k = signer(Algorithm::EdDSA, "cli-key");
    let dir = tempfile::tempdir().unwrap();
    let jwk_file = dir.path().join("key.json");
    // One JWK on its own is taken as a key set of one.
    std::fs::write(&jwk_file, k.jwk.as_ref().unwrap().to_string()).unwrap();
    let out = s.cli(&[
        "--json",
        "clients",
        "create",
        "--org",
        &org,
        "--name",
        "signer",
        "--scopes",
        "documents.read",
        "--jwt-alg",
        "EdDSA",
        "--jwks-file",
        jwk_file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    s.remember(v["client_secret"].as_str().unwrap());
    assert_eq!(v["jwt_auth"], json!({"alg": "EdDSA"}));
    assert_eq!(v["jwks"]["keys"][0]["kid"], "cli-key");
    let id = v["client_id"].as_str().unwrap().to_owned();

    let token = k.sign(&claims(&id));
    let out = s.cli(&["--json", "verify", &token]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_valid(&v, &id);
    // A forged one: refused, exit code 1.
    let forged = signer(Algorithm::EdDSA, "cli-key").sign(&claims(&id));
    let out = s.cli(&["verify", &forged]);
    assert_eq!(out.status.code(), Some(1));

    // Text output names the algorithm; a bad file is a usage error (2).
    let out = s.cli(&[
        "clients",
        "create",
        "--org",
        &org,
        "--name",
        "hs",
        "--jwt-alg",
        "HS256",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("client JWTs:   HS256"), "{text}");
    let secret = text
        .split_whitespace()
        .find(|w| w.starts_with("lk_cs_"))
        .unwrap()
        .to_owned();
    s.remember(&secret);
    let out = s.cli(&[
        "clients",
        "create",
        "--org",
        &org,
        "--name",
        "x",
        "--jwt-alg",
        "EdDSA",
        "--jwks-file",
        "/nonexistent/keys.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    // A refused registration (RS256 without an RSA key) exits 1.
    let out = s.cli(&[
        "clients",
        "create",
        "--org",
        &org,
        "--name",
        "x",
        "--jwt-alg",
        "RS256",
        "--jwks-file",
        jwk_file.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
