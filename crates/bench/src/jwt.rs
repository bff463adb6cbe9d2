//! Seeding for the client-JWT benchmark (issue 6): one organization, one
//! client per algorithm (HS256 with its secret, EdDSA and ES256 with a
//! key made here and registered as its JWK), and N distinct tokens each,
//! signed here, written one a line to `jwt-<alg>.txt`.
//!
//! The tokens are built here from aws-lc-rs primitives (the load generator
//! stays free of a JOSE library); the server checks them with its own, and
//! every answer of every run is checked to be `valid: true`.

use std::path::Path;

use anyhow::{Context, Result};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::client::{Conn, Target};
use crate::seed::{call, field};

/// The algorithms benchmarked, and the files their tokens go to: a few
/// tokens each used many times (as clients reuse a token until it
/// expires), and many tokens each sent once.
pub const ALGS: [(&str, &str, &str); 3] = [
    ("HS256", "jwt-hs256.txt", "jwt-hs256-fresh.txt"),
    ("EdDSA", "jwt-eddsa.txt", "jwt-eddsa-fresh.txt"),
    ("ES256", "jwt-es256.txt", "jwt-es256-fresh.txt"),
];

enum Key {
    Hmac(Box<aws_lc_rs::hmac::Key>),
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
}

impl Key {
    fn sign(&self, input: &[u8]) -> Result<Vec<u8>> {
        Ok(match self {
            Key::Hmac(k) => aws_lc_rs::hmac::sign(k, input).as_ref().to_vec(),
            Key::Ed(k) => k.sign(input).as_ref().to_vec(),
            Key::Ec(k) => k
                .sign(&SystemRandom::new(), input)
                .map_err(|_| anyhow::anyhow!("ES256 signing failed"))?
                .as_ref()
                .to_vec(),
        })
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A key pair for `alg` and its public JWK (with kid `bench`).
fn key_pair(alg: &str) -> Result<(Key, Value)> {
    let rng = SystemRandom::new();
    match alg {
        "EdDSA" => {
            let der = Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| anyhow::anyhow!("Ed25519 key generation failed"))?;
            let k = Ed25519KeyPair::from_pkcs8(der.as_ref())
                .map_err(|_| anyhow::anyhow!("Ed25519 key"))?;
            let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": "bench",
                             "x": b64(k.public_key().as_ref())});
            Ok((Key::Ed(k), jwk))
        }
        _ => {
            let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| anyhow::anyhow!("P-256 key generation failed"))?;
            let k = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.as_ref())
                .map_err(|_| anyhow::anyhow!("P-256 key"))?;
            let point = k.public_key().as_ref();
            let (x, y) = (
                point.get(1..33).context("P-256 point")?,
                point.get(33..65).context("P-256 point")?,
            );
            let jwk =
                json!({"kty": "EC", "crv": "P-256", "kid": "bench", "x": b64(x), "y": b64(y)});
            Ok((Key::Ec(k), jwk))
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// What to seed.
pub struct JwtSeed<'a> {
    /// Tokens to reuse, per algorithm.
    pub tokens: usize,
    /// Tokens to send once each, per algorithm.
    pub fresh: usize,
    pub audience: &'a str,
    /// `exp - iat` of each token.
    pub lifetime_s: i64,
}

/// Registers the clients through `target` and writes their tokens into
/// `out`.
pub async fn seed(target: &Target, out: &Path, args: &JwtSeed<'_>) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let mut conn = Conn::open(target).await?;
    let org = call(
        &mut conn,
        target,
        Method::POST,
        "/v1/orgs",
        Some(json!({"name": "bench jwt"})),
        StatusCode::CREATED,
    )
    .await?;
    let org_id = field(&org, "id")?;
    for (alg, file, fresh_file) in ALGS {
        let (pair, jwks) = if alg == "HS256" {
            (None, Value::Null)
        } else {
            let (k, jwk) = key_pair(alg)?;
            (Some(k), json!({ "keys": [jwk] }))
        };
        let body = json!({
            "name": format!("bench {alg}"),
            "scopes": ["documents.read"],
            "jwt_auth": {"alg": alg},
            "jwks": jwks,
        });
        let c = call(
            &mut conn,
            target,
            Method::POST,
            &format!("/v1/orgs/{org_id}/clients"),
            Some(body),
            StatusCode::CREATED,
        )
        .await?;
        let client_id = field(&c, "client_id")?;
        let key = match pair {
            Some(k) => k,
            None => Key::Hmac(Box::new(aws_lc_rs::hmac::Key::new(
                aws_lc_rs::hmac::HMAC_SHA256,
                field(&c, "client_secret")?.as_bytes(),
            ))),
        };
        let header = if alg == "HS256" {
            json!({"alg": alg, "typ": "JWT"})
        } else {
            json!({"alg": alg, "typ": "JWT", "kid": "bench"})
        };
        let header = b64(&serde_json::to_vec(&header)?);
        let iat = now();
        let sign = |tag: &str, n: usize, file: &str| -> Result<()> {
            let mut text = String::with_capacity(n * 400);
            for i in 0..n {
                let id = format!("bench-{tag}-{i}");
                let claims = json!({"iss": client_id, "sub": id, "aud": args.audience,
                                    "iat": iat, "exp": iat + args.lifetime_s, "jti": id});
                let input = format!("{header}.{}", b64(&serde_json::to_vec(&claims)?));
                let sig = key.sign(input.as_bytes())?;
                text.push_str(&input);
                text.push('.');
                text.push_str(&b64(&sig));
                text.push('\n');
            }
            let path = out.join(file);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "{alg}: client {client_id}, {n} tokens in {}",
                path.display()
            );
            Ok(())
        };
        sign("reused", args.tokens, file)?;
        if args.fresh > 0 {
            sign("fresh", args.fresh, fresh_file)?;
        }
    }
    Ok(())
}
