//! The OAuth server's signing keys and access tokens (RFC 9068 JWTs).
//!
//! Pure code: no store, no HTTP, no clock. [`generate`] makes a key pair,
//! [`Signer`] signs access tokens with the private half, [`Verifier`] checks
//! them against the public JWKs the server publishes at
//! `/.well-known/jwks.json`. All JOSE encoding is jsonwebtoken's, all
//! cryptography aws-lc-rs's.
//!
//! - **The kid is the key's RFC 7638 thumbprint.** It is derived from the
//!   public key alone, so it is stable across restarts and nodes, needs no
//!   counter or registry, and two different keys cannot share one by
//!   accident. Verifiers look keys up by kid and nothing else.
//! - **The alg comes from the key, never from the token.** Each public key is
//!   registered with exactly one alg; a token's header `alg` must equal it
//!   and the signature is checked with `Validation::new(key_alg)`. Letting
//!   the header choose is what makes `alg: none` and the HS256-with-the-
//!   public-key confusion attacks possible.
//! - **Time is a parameter.** jsonwebtoken checks `exp` against the system
//!   clock; here its time checks are off and `exp`/`nbf`/`iat` are checked
//!   against the caller's `now_s`, so tests and a fake clock see the same
//!   verdicts as production.
//!
//! Private keys are PKCS#8 v1 DER (Ed25519 v1 because jsonwebtoken derives
//! the public JWK only from the 48-byte v1 form). jsonwebtoken's RSA signer
//! wants PKCS#1, which aws-lc-rs cannot export; its PEM reader unwraps a
//! PKCS#8 `PRIVATE KEY` into PKCS#1, so RSA keys are passed through PEM.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretBox};
use serde::{Deserialize, Serialize};

/// Longest token [`Verifier::verify_access_token`] will look at.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The `typ` of an RFC 9068 access token.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The algs latchkey signs access tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlg {
    EdDSA,
    ES256,
    RS256,
}

impl SigningAlg {
    pub const ALL: [SigningAlg; 3] = [SigningAlg::EdDSA, SigningAlg::ES256, SigningAlg::RS256];

    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::EdDSA => "EdDSA",
            SigningAlg::ES256 => "ES256",
            SigningAlg::RS256 => "RS256",
        }
    }

    pub fn algorithm(self) -> Algorithm {
        match self {
            SigningAlg::EdDSA => Algorithm::EdDSA,
            SigningAlg::ES256 => Algorithm::ES256,
            SigningAlg::RS256 => Algorithm::RS256,
        }
    }

    fn from_algorithm(alg: Algorithm) -> Option<SigningAlg> {
        match alg {
            Algorithm::EdDSA => Some(SigningAlg::EdDSA),
            Algorithm::ES256 => Some(SigningAlg::ES256),
            Algorithm::RS256 => Some(SigningAlg::RS256),
            _ => None,
        }
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SigningAlg {
    type Err = JoseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SigningAlg::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| JoseError::UnsupportedAlg(s.to_owned()))
    }
}

impl From<SigningAlg> for Algorithm {
    fn from(alg: SigningAlg) -> Algorithm {
        alg.algorithm()
    }
}

/// Failures to make, load or use a signing key. Never carries key bytes.
#[derive(Debug, thiserror::Error)]
pub enum JoseError {
    #[error("unsupported signing alg {0:?} (EdDSA, ES256 or RS256)")]
    UnsupportedAlg(String),
    #[error("generating a {0} key failed")]
    Generate(SigningAlg),
    #[error("the private key is not a usable {0} PKCS#8 v1 key")]
    BadPrivateKey(SigningAlg),
    #[error("a public JWK is unusable: {0}")]
    BadJwk(String),
    #[error("two public JWKs share the kid {0}")]
    DuplicateKid(String),
    #[error("signing failed: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// A freshly generated key pair.
pub struct KeyMaterial {
    /// The RFC 7638 SHA-256 thumbprint of the public key.
    pub kid: String,
    pub alg: SigningAlg,
    /// PKCS#8 v1 DER.
    pub private_pkcs8: SecretBox<[u8]>,
    /// `kty`, `crv`/`x`/`y` or `n`/`e`, `kid`, `alg`, `use: "sig"`.
    pub public_jwk: serde_json::Value,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private_pkcs8", &"[REDACTED]")
            .field("public_jwk", &self.public_jwk)
            .finish()
    }
}

impl KeyMaterial {
    pub fn signer(&self) -> Result<Signer, JoseError> {
        Signer::from_pkcs8(
            self.kid.clone(),
            self.alg,
            self.private_pkcs8.expose_secret(),
        )
    }
}

/// Generates a key pair: Ed25519, ECDSA P-256 or RSA 2048.
pub fn generate(alg: SigningAlg) -> Result<KeyMaterial, JoseError> {
    let rng = SystemRandom::new();
    let der: Vec<u8> = match alg {
        SigningAlg::EdDSA => Ed25519KeyPair::generate_pkcs8v1(&rng)
            .map_err(|_| JoseError::Generate(alg))?
            .as_ref()
            .to_vec(),
        SigningAlg::ES256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| JoseError::Generate(alg))?
            .as_ref()
            .to_vec(),
        SigningAlg::RS256 => aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048)
            .and_then(|k| k.as_der())
            .map_err(|_| JoseError::Generate(alg))?
            .as_ref()
            .to_vec(),
    };
    let private_pkcs8 = SecretBox::from(der.into_boxed_slice());
    let key = encoding_key(alg, private_pkcs8.expose_secret())?;
    let mut jwk = public_jwk(alg, &key)?;
    let kid = thumbprint(&jwk)?;
    jwk.common.key_id = Some(kid.clone());
    let public_jwk = serde_json::to_value(&jwk).map_err(|e| JoseError::BadJwk(e.to_string()))?;
    Ok(KeyMaterial {
        kid,
        alg,
        private_pkcs8,
        public_jwk,
    })
}

/// The RFC 7638 SHA-256 thumbprint of a public JWK, base64url without
/// padding.
pub fn thumbprint(jwk: &Jwk) -> Result<String, JoseError> {
    jwk.thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| JoseError::BadJwk(e.to_string()))
}

/// jsonwebtoken's key for `der` (PKCS#8 v1), checked to parse as `alg`.
fn encoding_key(alg: SigningAlg, der: &[u8]) -> Result<EncodingKey, JoseError> {
    let key = match alg {
        SigningAlg::EdDSA => EncodingKey::from_ed_der(der),
        SigningAlg::ES256 => EncodingKey::from_ec_der(der),
        SigningAlg::RS256 => {
            // aws-lc-rs refuses RSA keys outside 2048..=8192 bits.
            aws_lc_rs::rsa::KeyPair::from_pkcs8(der).map_err(|_| JoseError::BadPrivateKey(alg))?;
            EncodingKey::from_rsa_pem(pkcs8_pem(der).as_bytes())
                .map_err(|_| JoseError::BadPrivateKey(alg))?
        }
    };
    // Deriving the public half parses the private key the way signing
    // will: a bad or mismatched key fails here, not on first use.
    public_jwk(alg, &key)?;
    Ok(key)
}

/// `der` armored as a PKCS#8 `PRIVATE KEY` PEM, wiped on drop.
fn pkcs8_pem(der: &[u8]) -> Zeroizing<String> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----\n";
    const END: &str = "\n-----END PRIVATE KEY-----\n";
    let body = Zeroizing::new(STANDARD.encode(der));
    let mut pem = Zeroizing::new(String::with_capacity(
        BEGIN.len() + body.len() + body.len() / 64 + END.len(),
    ));
    pem.push_str(BEGIN);
    for (i, c) in body.chars().enumerate() {
        if i > 0 && i % 64 == 0 {
            pem.push('\n');
        }
        pem.push(c);
    }
    pem.push_str(END);
    pem
}

/// The public JWK of a private key, with `alg` and `use: "sig"` (no kid).
fn public_jwk(alg: SigningAlg, key: &EncodingKey) -> Result<Jwk, JoseError> {
    let mut jwk =
        Jwk::from_encoding_key(key, alg.algorithm()).map_err(|_| JoseError::BadPrivateKey(alg))?;
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(jwk)
}

/// The claims of an RFC 9068 access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
    pub org_id: String,
    /// latchkey's grant id: revoking the grant makes its tokens fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
}

/// Signs access tokens with one private key.
///
/// The key is parsed once, here, and kept as aws-lc-rs's key pair:
/// jsonwebtoken's `encode` parses the PKCS#8 key again for every token
/// (for Ed25519 that derives the public key: as much work as the
/// signature itself), and the header, the same for every token, is
/// encoded once. The compact serialization is RFC 7515 §7.1's three
/// base64url parts; every token is checked by jsonwebtoken's verifier in
/// this module's tests and by independent JOSE libraries in the
/// end-to-end tests.
pub struct Signer {
    kid: String,
    alg: SigningAlg,
    pair: KeyPair,
    /// base64url of the header JSON, then `.`.
    header_b64: String,
}

enum KeyPair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(aws_lc_rs::rsa::KeyPair),
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// `der` is the PKCS#8 v1 private key, as [`generate`] makes it.
    pub fn from_pkcs8(kid: String, alg: SigningAlg, der: &[u8]) -> Result<Signer, JoseError> {
        // Checks the key the way jsonwebtoken reads it (format, size, and
        // that its public half can be published).
        encoding_key(alg, der)?;
        let bad = |_| JoseError::BadPrivateKey(alg);
        let pair = match alg {
            SigningAlg::EdDSA => KeyPair::Ed(Ed25519KeyPair::from_pkcs8(der).map_err(bad)?),
            SigningAlg::ES256 => KeyPair::Ec(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).map_err(bad)?,
            ),
            SigningAlg::RS256 => {
                KeyPair::Rsa(aws_lc_rs::rsa::KeyPair::from_pkcs8(der).map_err(bad)?)
            }
        };
        let mut header = Header::new(alg.algorithm());
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(kid.clone());
        let json = serde_json::to_vec(&header).map_err(|e| JoseError::Sign(e.into()))?;
        let mut header_b64 = URL_SAFE_NO_PAD.encode(json);
        header_b64.push('.');
        Ok(Signer {
            kid,
            alg,
            pair,
            header_b64,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// A compact JWS with header `{"typ": "at+jwt", "alg", "kid"}`.
    pub fn sign_access_token(&self, claims: &AccessClaims) -> Result<String, JoseError> {
        let json = serde_json::to_vec(claims).map_err(|e| JoseError::Sign(e.into()))?;
        let mut token = String::with_capacity(self.header_b64.len() + json.len() * 2 + 400);
        token.push_str(&self.header_b64);
        URL_SAFE_NO_PAD.encode_string(json, &mut token);
        let failed = |_| JoseError::Sign(ErrorKind::InvalidKeyFormat.into());
        let signature: Vec<u8> = match &self.pair {
            KeyPair::Ed(k) => k.sign(token.as_bytes()).as_ref().to_vec(),
            KeyPair::Ec(k) => k
                .sign(&SystemRandom::new(), token.as_bytes())
                .map_err(failed)?
                .as_ref()
                .to_vec(),
            KeyPair::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    token.as_bytes(),
                    &mut sig,
                )
                .map_err(failed)?;
                sig
            }
        };
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }
}

/// Why an access token was refused. Carries neither the token nor keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS we will parse: too long, bad shape, bad header.
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the token names a key this server does not have")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token expired at {exp}")]
    Expired { exp: i64 },
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// Well-formed and (if it got that far) signed, but not acceptable.
    #[error("the token is not acceptable: {0}")]
    Invalid(&'static str),
}

impl TokenError {
    /// A short sentence for logs and error details.
    pub fn describe(&self) -> String {
        self.to_string()
    }
}

struct VerifyKey {
    alg: SigningAlg,
    key: DecodingKey,
}

/// Verifies access tokens against a set of public JWKs, looked up by kid.
pub struct Verifier {
    keys: HashMap<String, VerifyKey>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The claims as read for verification: [`AccessClaims`] plus `nbf`,
/// which latchkey does not issue but honours.
#[derive(Deserialize)]
struct Payload {
    #[serde(flatten)]
    claims: AccessClaims,
    #[serde(default)]
    nbf: Option<i64>,
}

/// A client's registered public JWK as a key to verify with, if it is
/// one latchkey can use (RSA, EC P-256, Ed25519), with the algorithm it
/// fits; `None` for anything else (symmetric keys included).
pub fn decoding_key(jwk: &serde_json::Value) -> Option<(SigningAlg, DecodingKey)> {
    let jwk: Jwk = serde_json::from_value(jwk.clone()).ok()?;
    let alg = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            SigningAlg::EdDSA
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            SigningAlg::ES256
        }
        AlgorithmParameters::RSA(_) => SigningAlg::RS256,
        _ => return None,
    };
    DecodingKey::from_jwk(&jwk).ok().map(|k| (alg, k))
}

impl Verifier {
    /// Each JWK needs a `kid` and an `alg` latchkey signs with, and key
    /// parameters of that alg's type (OKP Ed25519, EC P-256, RSA).
    pub fn new(keys: &[serde_json::Value]) -> Result<Verifier, JoseError> {
        let mut map = HashMap::with_capacity(keys.len());
        for value in keys {
            let jwk: Jwk = serde_json::from_value(value.clone())
                .map_err(|e| JoseError::BadJwk(e.to_string()))?;
            let kid = jwk
                .common
                .key_id
                .clone()
                .ok_or_else(|| JoseError::BadJwk("no kid".to_owned()))?;
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| Algorithm::try_from(a).ok())
                .and_then(SigningAlg::from_algorithm)
                .ok_or_else(|| JoseError::BadJwk(format!("kid {kid}: no supported alg")))?;
            let fits = match (&jwk.algorithm, alg) {
                (AlgorithmParameters::OctetKeyPair(p), SigningAlg::EdDSA) => {
                    p.curve == EllipticCurve::Ed25519
                }
                (AlgorithmParameters::EllipticCurve(p), SigningAlg::ES256) => {
                    p.curve == EllipticCurve::P256
                }
                (AlgorithmParameters::RSA(_), SigningAlg::RS256) => true,
                _ => false,
            };
            if !fits
                || matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature)
            {
                return Err(JoseError::BadJwk(format!(
                    "kid {kid}: not a {alg} signing key"
                )));
            }
            let key = DecodingKey::from_jwk(&jwk)
                .map_err(|e| JoseError::BadJwk(format!("kid {kid}: {e}")))?;
            if map.insert(kid.clone(), VerifyKey { alg, key }).is_some() {
                return Err(JoseError::DuplicateKid(kid));
            }
        }
        Ok(Verifier { keys: map })
    }

    /// Checks an access token: shape, header (`typ`, `kid`, `alg` equal to
    /// the key's), signature, `iss`, `aud`, and `exp`/`nbf`/`iat` against
    /// `now_s` within `leeway_s`.
    pub fn verify_access_token(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        now_s: i64,
        leeway_s: u64,
    ) -> Result<AccessClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("longer than 8 KiB"));
        }
        let compact = token.split('.').count() == 3
            && token.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !compact {
            return Err(TokenError::Malformed(
                "not three base64url segments separated by dots",
            ));
        }

        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Malformed("the header is not a JWS header"))?;
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(TokenError::Invalid("typ is not at+jwt"));
        }
        if header.crit.is_some() {
            return Err(TokenError::Invalid("crit names extensions we do not know"));
        }
        if header.jku.is_some()
            || header.x5u.is_some()
            || header.jwk.is_some()
            || header.x5c.is_some()
        {
            return Err(TokenError::Invalid("the header carries its own key"));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or(TokenError::Invalid("the header has no kid"))?;
        let key = self.keys.get(kid).ok_or(TokenError::UnknownKey)?;
        if header.alg != key.alg.algorithm() {
            return Err(TokenError::Invalid("alg is not the key's alg"));
        }

        let mut validation = Validation::new(key.alg.algorithm());
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        let payload = jsonwebtoken::decode::<Payload>(token, &key.key, &validation)
            .map_err(|e| decode_error(e.kind()))?
            .claims;

        let leeway = i64::try_from(leeway_s).unwrap_or(i64::MAX);
        let claims = payload.claims;
        // RFC 7519 §4.1.4: not accepted on or after exp.
        if now_s >= claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired { exp: claims.exp });
        }
        if payload
            .nbf
            .is_some_and(|nbf| nbf > now_s.saturating_add(leeway))
        {
            return Err(TokenError::Invalid("not valid yet (nbf)"));
        }
        if claims.iat > now_s.saturating_add(leeway) {
            return Err(TokenError::Invalid("issued in the future (iat)"));
        }
        Ok(claims)
    }
}

/// jsonwebtoken's refusal, once the header and key have been accepted.
fn decode_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) => TokenError::Invalid("a required claim is missing"),
        ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            TokenError::Invalid("the claims are not an access token's")
        }
        ErrorKind::Base64(_) | ErrorKind::InvalidToken => {
            TokenError::Malformed("a segment is not base64url")
        }
        _ => TokenError::Invalid("the key cannot verify this token"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::{Value, json};

    use super::*;

    const ISS: &str = "https://auth.example";
    const AUD: &str = "https://api.example";
    /// In the past: a verifier reading the system clock would call every
    /// token here expired.
    const NOW: i64 = 1_700_000_000;
    const LEEWAY: u64 = 60;

    /// One key per alg, shared: RSA generation is slow.
    fn keys() -> &'static [KeyMaterial] {
        static KEYS: OnceLock<Vec<KeyMaterial>> = OnceLock::new();
        KEYS.get_or_init(|| {
            SigningAlg::ALL
                .into_iter()
                .map(|alg| generate(alg).unwrap())
                .collect()
        })
    }

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: ISS.to_owned(),
            sub: "usr_1".to_owned(),
            aud: AUD.to_owned(),
            exp: NOW + 300,
            iat: NOW,
            jti: "jti_1".to_owned(),
            client_id: "cli_1".to_owned(),
            scope: "documents.read documents.write".to_owned(),
            org_id: "org_1".to_owned(),
            gid: Some("grt_1".to_owned()),
        }
    }

    fn verifier(km: &KeyMaterial) -> Verifier {
        Verifier::new(std::slice::from_ref(&km.public_jwk)).unwrap()
    }

    fn verify(km: &KeyMaterial, token: &str) -> Result<AccessClaims, TokenError> {
        verifier(km).verify_access_token(token, ISS, AUD, NOW, LEEWAY)
    }

    /// The header latchkey writes, for tests that then spoil it.
    fn header(km: &KeyMaterial) -> Header {
        let mut h = Header::new(km.alg.algorithm());
        h.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        h.kid = Some(km.kid.clone());
        h
    }

    /// Signs anything with `km`'s private key.
    fn raw(km: &KeyMaterial, header: &Header, claims: &impl Serialize) -> String {
        let key = encoding_key(km.alg, km.private_pkcs8.expose_secret()).unwrap();
        jsonwebtoken::encode(header, claims, &key).unwrap()
    }

    #[test]
    fn tokens_are_byte_for_byte_what_jsonwebtoken_makes() {
        // Ed25519 and RSA PKCS#1 v1.5 signatures are deterministic: the
        // signer's compact JWS must equal jsonwebtoken's own `encode`.
        for alg in [SigningAlg::EdDSA, SigningAlg::RS256] {
            let km = generate(alg).unwrap();
            let c = claims();
            let ours = km.signer().unwrap().sign_access_token(&c).unwrap();
            assert_eq!(ours, raw(&km, &header(&km), &c), "{alg}");
        }
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// `token` with its header JSON edited; payload and signature kept.
    fn reheader(token: &str, edit: impl FnOnce(&mut Value)) -> String {
        let parts: Vec<&str> = token.split('.').collect();
        let mut h: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        edit(&mut h);
        format!("{}.{}.{}", b64(&h), parts[1], parts[2])
    }

    #[test]
    fn round_trip_for_each_alg() {
        for km in keys() {
            let signer = km.signer().unwrap();
            let token = signer.sign_access_token(&claims()).unwrap();
            let h = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(h.typ.as_deref(), Some("at+jwt"));
            assert_eq!(h.kid.as_deref(), Some(km.kid.as_str()));
            assert_eq!(h.alg, km.alg.algorithm());
            assert_eq!(verify(km, &token), Ok(claims()), "{}", km.alg);

            // A token without a grant id carries no `gid` at all.
            let plain = AccessClaims {
                gid: None,
                ..claims()
            };
            let token = signer.sign_access_token(&plain).unwrap();
            let payload = token.split('.').nth(1).unwrap();
            let payload: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
            assert!(payload.get("gid").is_none());
            assert_eq!(verify(km, &token), Ok(plain));
        }
    }

    #[test]
    fn a_verifier_holds_several_keys() {
        let v = Verifier::new(
            &keys()
                .iter()
                .map(|k| k.public_jwk.clone())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        for km in keys() {
            let token = km.signer().unwrap().sign_access_token(&claims()).unwrap();
            assert_eq!(
                v.verify_access_token(&token, ISS, AUD, NOW, 0),
                Ok(claims())
            );
        }
    }

    #[test]
    fn another_key_under_the_same_kid_is_a_bad_signature() {
        for km in keys() {
            let other = generate(km.alg).unwrap();
            let forged =
                Signer::from_pkcs8(km.kid.clone(), km.alg, other.private_pkcs8.expose_secret())
                    .unwrap()
                    .sign_access_token(&claims())
                    .unwrap();
            assert_eq!(
                verify(km, &forged),
                Err(TokenError::BadSignature),
                "{}",
                km.alg
            );
        }
    }

    #[test]
    fn a_tampered_payload_is_a_bad_signature() {
        for km in keys() {
            let token = km.signer().unwrap().sign_access_token(&claims()).unwrap();
            let parts: Vec<&str> = token.split('.').collect();
            let evil = AccessClaims {
                scope: "*".to_owned(),
                ..claims()
            };
            let tampered = format!(
                "{}.{}.{}",
                parts[0],
                b64(&serde_json::to_value(evil).unwrap()),
                parts[2]
            );
            assert_eq!(verify(km, &tampered), Err(TokenError::BadSignature));
        }
    }

    #[test]
    fn a_header_alg_other_than_the_keys_is_refused() {
        for km in keys() {
            let token = km.signer().unwrap().sign_access_token(&claims()).unwrap();
            for alg in [
                "EdDSA", "ES256", "ES384", "RS256", "RS512", "PS256", "HS256",
            ] {
                if alg == km.alg.as_str() {
                    continue;
                }
                let changed = reheader(&token, |h| h["alg"] = json!(alg));
                assert_eq!(
                    verify(km, &changed),
                    Err(TokenError::Invalid("alg is not the key's alg")),
                    "{} as {alg}",
                    km.alg
                );
            }
        }
    }

    #[test]
    fn alg_none_is_refused() {
        for km in keys() {
            let h = json!({"alg": "none", "typ": "at+jwt", "kid": km.kid});
            let body = b64(&serde_json::to_value(claims()).unwrap());
            // The classic form, with an empty signature...
            let unsigned = format!("{}.{body}.", b64(&h));
            assert!(matches!(
                verify(km, &unsigned),
                Err(TokenError::Malformed(_))
            ));
            // ...and with a signature, so the header is actually read.
            let junk = format!("{}.{body}.AAAA", b64(&h));
            assert_eq!(
                verify(km, &junk),
                Err(TokenError::Malformed("the header is not a JWS header"))
            );
            let upper = format!(
                "{}.{body}.AAAA",
                b64(&json!({"alg": "None", "typ": "at+jwt", "kid": km.kid}))
            );
            assert!(verify(km, &upper).is_err());
        }
    }

    #[test]
    fn hs256_keyed_with_the_public_key_is_refused() {
        for km in keys() {
            let mut h = header(km);
            h.alg = Algorithm::HS256;
            let jwk = km.public_jwk.to_string();
            let member = km
                .public_jwk
                .get("n")
                .or_else(|| km.public_jwk.get("x"))
                .unwrap();
            let raw_bytes = URL_SAFE_NO_PAD.decode(member.as_str().unwrap()).unwrap();
            for secret in [jwk.as_bytes(), raw_bytes.as_slice()] {
                let token =
                    jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(secret)).unwrap();
                assert_eq!(
                    verify(km, &token),
                    Err(TokenError::Invalid("alg is not the key's alg"))
                );
            }
        }
    }

    #[test]
    fn expiry_is_judged_at_now_with_leeway() {
        let km = &keys()[0];
        let token = km.signer().unwrap().sign_access_token(&claims()).unwrap();
        let exp = claims().exp;
        let v = verifier(km);
        let at = |now: i64, leeway: u64| v.verify_access_token(&token, ISS, AUD, now, leeway);
        assert!(at(exp - 1, 0).is_ok());
        assert_eq!(at(exp, 0), Err(TokenError::Expired { exp }));
        assert!(at(exp + 59, 60).is_ok());
        assert_eq!(at(exp + 60, 60), Err(TokenError::Expired { exp }));
        assert_eq!(at(exp + 10_000, 60), Err(TokenError::Expired { exp }));
        // A huge leeway saturates instead of overflowing.
        assert!(at(exp + 10_000, u64::MAX).is_ok());

        // Far in the future per the system clock, expired per `now_s`.
        let later = AccessClaims {
            exp: 4_000_000_000,
            iat: 3_999_999_000,
            ..claims()
        };
        let token = km.signer().unwrap().sign_access_token(&later).unwrap();
        assert_eq!(
            v.verify_access_token(&token, ISS, AUD, 4_000_000_100, 60),
            Err(TokenError::Expired { exp: 4_000_000_000 })
        );
    }

    #[test]
    fn nbf_and_iat_in_the_future_are_refused() {
        let km = &keys()[1];
        let mut body = serde_json::to_value(claims()).unwrap();
        body["nbf"] = json!(NOW + 61);
        assert_eq!(
            verify(km, &raw(km, &header(km), &body)),
            Err(TokenError::Invalid("not valid yet (nbf)"))
        );
        body["nbf"] = json!(NOW + 60);
        assert_eq!(verify(km, &raw(km, &header(km), &body)), Ok(claims()));

        let early = AccessClaims {
            iat: NOW + 61,
            ..claims()
        };
        assert_eq!(
            verify(km, &km.signer().unwrap().sign_access_token(&early).unwrap()),
            Err(TokenError::Invalid("issued in the future (iat)"))
        );
    }

    #[test]
    fn wrong_issuer_and_audience() {
        for km in keys() {
            let token = km.signer().unwrap().sign_access_token(&claims()).unwrap();
            let v = verifier(km);
            assert_eq!(
                v.verify_access_token(&token, "https://evil.example", AUD, NOW, 0),
                Err(TokenError::WrongIssuer)
            );
            assert_eq!(
                v.verify_access_token(&token, ISS, "https://other.example", NOW, 0),
                Err(TokenError::WrongAudience)
            );
        }
    }

    #[test]
    fn missing_or_mistyped_claims_are_refused() {
        let km = &keys()[0];
        for claim in [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "jti",
            "client_id",
            "scope",
            "org_id",
        ] {
            let mut body = serde_json::to_value(claims()).unwrap();
            body.as_object_mut().unwrap().remove(claim);
            assert!(
                matches!(
                    verify(km, &raw(km, &header(km), &body)),
                    Err(TokenError::Invalid(_))
                ),
                "without {claim}"
            );
        }
        let mut body = serde_json::to_value(claims()).unwrap();
        body["exp"] = json!("soon");
        assert!(matches!(
            verify(km, &raw(km, &header(km), &body)),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn typ_must_be_at_jwt() {
        let km = &keys()[2];
        for (typ, ok) in [
            (Some("at+jwt"), true),
            (Some("AT+JWT"), true),
            (Some("application/at+jwt"), true),
            (Some("JWT"), false),
            (Some("at+jwt "), false),
            (None, false),
        ] {
            let mut h = header(km);
            h.typ = typ.map(str::to_owned);
            let got = verify(km, &raw(km, &h, &claims()));
            if ok {
                assert_eq!(got, Ok(claims()), "{typ:?}");
            } else {
                assert_eq!(
                    got,
                    Err(TokenError::Invalid("typ is not at+jwt")),
                    "{typ:?}"
                );
            }
        }
    }

    #[test]
    fn kid_must_name_a_known_key() {
        let km = &keys()[0];
        let mut h = header(km);
        h.kid = Some("someone-elses".to_owned());
        assert_eq!(
            verify(km, &raw(km, &h, &claims())),
            Err(TokenError::UnknownKey)
        );
        h.kid = None;
        assert_eq!(
            verify(km, &raw(km, &h, &claims())),
            Err(TokenError::Invalid("the header has no kid"))
        );
    }

    #[test]
    fn crit_and_key_references_in_the_header_are_refused() {
        let km = &keys()[1];
        let signed = |edit: &dyn Fn(&mut Header)| {
            let mut h = header(km);
            edit(&mut h);
            verify(km, &raw(km, &h, &claims()))
        };
        assert!(matches!(
            signed(&|h| h.crit = Some(vec!["exp".to_owned()])),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            signed(&|h| h.jku = Some("https://evil.example/jwks".to_owned())),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            signed(&|h| h.x5u = Some("https://evil.example/cert".to_owned())),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            signed(&|h| h.x5c = Some(vec!["MIIB".to_owned()])),
            Err(TokenError::Invalid(_))
        ));
        let jwk: Jwk = serde_json::from_value(km.public_jwk.clone()).unwrap();
        assert!(matches!(
            signed(&|h| h.jwk = Some(jwk.clone())),
            Err(TokenError::Invalid(_))
        ));
        assert!(signed(&|_| {}).is_ok());
    }

    #[test]
    fn size_and_shape_are_checked_before_parsing() {
        let km = &keys()[0];
        let signer = km.signer().unwrap();
        let big = |n: usize| {
            let c = AccessClaims {
                scope: "a".repeat(n),
                ..claims()
            };
            signer.sign_access_token(&c).unwrap()
        };
        let token = big(9 * 1024);
        assert!(token.len() > MAX_TOKEN_LEN);
        assert_eq!(
            verify(km, &token),
            Err(TokenError::Malformed("longer than 8 KiB"))
        );
        let token = big(5 * 1024);
        assert!(token.len() < MAX_TOKEN_LEN);
        assert!(verify(km, &token).is_ok());

        let good = signer.sign_access_token(&claims()).unwrap();
        let shape = TokenError::Malformed("not three base64url segments separated by dots");
        let (h, rest) = good.split_once('.').unwrap();
        for bad in [
            format!("{h}. {rest}"),
            format!(" {good}"),
            format!("{good}\n"),
            format!("{good}.AAAA"),
            format!("{h}.{rest}").replacen('.', "..", 1),
            h.to_owned(),
            format!("{h}.{}", rest.split_once('.').unwrap().0),
            format!("{h}=.{rest}"),
            format!("{h}+.{rest}"),
            String::new(),
        ] {
            assert_eq!(verify(km, &bad), Err(shape.clone()), "{bad:?}");
        }
        assert_eq!(
            verify(km, &format!("AAAA.{rest}")),
            Err(TokenError::Malformed("the header is not a JWS header"))
        );
    }

    #[test]
    fn thumbprint_matches_rfc_7638() {
        let jwk: Jwk = serde_json::from_value(json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }))
        .unwrap();
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn public_jwks_are_public_and_named_by_their_thumbprint() {
        for km in keys() {
            let jwk = km.public_jwk.as_object().unwrap();
            for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
                assert!(!jwk.contains_key(private), "{} has {private}", km.alg);
            }
            assert_eq!(jwk["kid"], json!(km.kid));
            assert_eq!(jwk["alg"], json!(km.alg.as_str()));
            assert_eq!(jwk["use"], json!("sig"));
            let expect: &[(&str, Value)] = match km.alg {
                SigningAlg::EdDSA => &[("kty", json!("OKP")), ("crv", json!("Ed25519"))],
                SigningAlg::ES256 => &[("kty", json!("EC")), ("crv", json!("P-256"))],
                SigningAlg::RS256 => &[("kty", json!("RSA")), ("e", json!("AQAB"))],
            };
            for (k, v) in expect {
                assert_eq!(&jwk[*k], v);
            }
            let members: &[&str] = match km.alg {
                SigningAlg::EdDSA => &["alg", "crv", "kid", "kty", "use", "x"],
                SigningAlg::ES256 => &["alg", "crv", "kid", "kty", "use", "x", "y"],
                SigningAlg::RS256 => &["alg", "e", "kid", "kty", "n", "use"],
            };
            let mut keys: Vec<&str> = jwk.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, members);
            let parsed: Jwk = serde_json::from_value(km.public_jwk.clone()).unwrap();
            assert_eq!(thumbprint(&parsed).unwrap(), km.kid);
            assert_eq!(km.kid.len(), 43);
        }
        // 2048-bit RSA: a 256-byte modulus.
        let n = keys()[2].public_jwk["n"].as_str().unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(n).unwrap().len(), 256);
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        for km in keys() {
            let der = km.private_pkcs8.expose_secret();
            let shown = format!("{km:?} {:?}", km.signer().unwrap());
            assert!(shown.contains("[REDACTED]"));
            assert!(!shown.contains(&STANDARD.encode(der)));
            assert!(!shown.contains(&URL_SAFE_NO_PAD.encode(der)));
            assert!(!shown.contains(&format!("{der:?}")));
            assert!(!shown.contains(&format!("{:?}", &der[der.len() - 8..])));
        }
    }

    #[test]
    fn private_keys_must_fit_their_alg() {
        let [ed, ec, rsa] = [&keys()[0], &keys()[1], &keys()[2]];
        for (km, wrong) in [
            (ed, SigningAlg::ES256),
            (ec, SigningAlg::RS256),
            (rsa, SigningAlg::EdDSA),
            (ed, SigningAlg::RS256),
        ] {
            let err = Signer::from_pkcs8("k".to_owned(), wrong, km.private_pkcs8.expose_secret())
                .unwrap_err();
            assert!(matches!(err, JoseError::BadPrivateKey(a) if a == wrong));
        }
        for alg in SigningAlg::ALL {
            assert!(Signer::from_pkcs8("k".to_owned(), alg, b"not a key").is_err());
        }
        // PKCS#8 v2 Ed25519 (public key included) is refused: jsonwebtoken
        // derives the JWK only from v1.
        let v2 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        assert!(Signer::from_pkcs8("k".to_owned(), SigningAlg::EdDSA, v2.as_ref()).is_err());
        // RSA below 2048 bits is refused. A throwaway test key:
        // `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024`.
        const RSA_1024_PKCS8: &str = "MIICdgIBADANBgkqhkiG9w0BAQEFAASCAmAwggJcAgEAAoGBALtyNbkP83AWwA31Ar6UXNIxX+DY\
             jd0SaHl/0kKhjsQ6SQmhnGJloIxJjIww8KICsvlVFf7V5RFKwpp/jlYxf41LBjdie10U7Sq0WufI\
             oJRrMBHxWHDpwd6ARXNSi8Lm9sQ0wZ2F/wnQMyqvUpVPcFPUHR/OsLt9tqDNYoPpJedbAgMBAAEC\
             gYEAttsHRW0mEaZf3D2zW67njbTUz0bxvUOD32Kt/ooT96DUNy0MnYB+SdxF20yysZjodwpl1p9a\
             QrAnfwgIFlVbExK20cE3zsowNHTodYiPdCPcw4A+mr/fj/uO5bur7zXdzZrIdgyN/5v2AmyIKvYI\
             98BXdwQGDpYmdxnc9NA524ECQQDmf/CapoLGR1Ke/gTsr9PQKYuzOyz4xVUmx8EeSBipOXoUATCh\
             vQYnD+wLjEGhBqCfJYD3PVFnOaR40IVMR8zrAkEA0C7vDiPRDrImi958cTcQdAEhEzpz0oNJzC1l\
             yu4CrhANNn6Xkqq/uYRADhnwEAlyVS49t2mZ/nFFr9339gHzUQJACsBzB7O2q+sNxo7Qyf2VosMd\
             WhnrihsiUrHEp1XzmIku0ZoQm6rGi7Hpb8x2Dz3Q5juInX/FuUvuCRio7xr2SwJARQ48d9lDoHdR\
             t/WuG7PjPkednA44myy3jwXEDUNUGj7y0w+84YbIIBaRVNwfuIIZrc2v5SYfUbprHkIn3S+acQJA\
             c9rDqLaropfg/X+DK5BHBUSTYnIp7H8hI1pIkN5eUMGiMVC+nKDby0sSDSXbrCMUuRpdDzgLIgsZ\
             xtCci9MBCQ==";
        let weak = STANDARD.decode(RSA_1024_PKCS8).unwrap();
        assert!(matches!(
            Signer::from_pkcs8("k".to_owned(), SigningAlg::RS256, &weak),
            Err(JoseError::BadPrivateKey(SigningAlg::RS256))
        ));
        // Why RSA goes through PEM: jsonwebtoken's RSA signer wants
        // PKCS#1 DER, and takes PKCS#8 only inside a PEM.
        let direct = EncodingKey::from_rsa_der(rsa.private_pkcs8.expose_secret());
        assert!(jsonwebtoken::encode(&header(rsa), &claims(), &direct).is_err());
    }

    #[test]
    fn verifier_refuses_unusable_jwks() {
        let [ed, ec, rsa] = [&keys()[0], &keys()[1], &keys()[2]];
        let mut no_kid = ed.public_jwk.clone();
        no_kid.as_object_mut().unwrap().remove("kid");
        let mut no_alg = ed.public_jwk.clone();
        no_alg.as_object_mut().unwrap().remove("alg");
        let mut ec_as_rsa = ec.public_jwk.clone();
        ec_as_rsa["alg"] = json!("RS256");
        let mut rsa_as_ps = rsa.public_jwk.clone();
        rsa_as_ps["alg"] = json!("PS256");
        let mut for_enc = ec.public_jwk.clone();
        for_enc["use"] = json!("enc");
        let hmac = json!({"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "h"});
        let p384 = json!({"kty": "EC", "crv": "P-384", "alg": "ES256", "kid": "p",
            "x": URL_SAFE_NO_PAD.encode([1u8; 48]), "y": URL_SAFE_NO_PAD.encode([2u8; 48])});
        for bad in [
            no_kid,
            no_alg,
            ec_as_rsa,
            rsa_as_ps,
            for_enc,
            hmac,
            p384,
            json!("nope"),
        ] {
            assert!(
                matches!(
                    Verifier::new(std::slice::from_ref(&bad)),
                    Err(JoseError::BadJwk(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Verifier::new(&[ed.public_jwk.clone(), ed.public_jwk.clone()]),
            Err(JoseError::DuplicateKid(k)) if k == ed.kid
        ));
        assert!(Verifier::new(&[]).is_ok());
    }

    #[test]
    fn signing_alg_names() {
        for alg in SigningAlg::ALL {
            assert_eq!(alg.as_str().parse::<SigningAlg>().unwrap(), alg);
            assert_eq!(alg.to_string(), alg.as_str());
            assert_eq!(
                Algorithm::from(alg),
                alg.as_str().parse::<Algorithm>().unwrap()
            );
        }
        for bad in ["none", "HS256", "es256", "PS256", ""] {
            assert!(matches!(
                bad.parse::<SigningAlg>(),
                Err(JoseError::UnsupportedAlg(_))
            ));
        }
    }

    #[test]
    fn token_errors_describe_without_detail() {
        let km = &keys()[0];
        let token = km.signer().unwrap().sign_access_token(&claims()).unwrap();
        let errors = [
            TokenError::Malformed("x"),
            TokenError::UnknownKey,
            TokenError::BadSignature,
            TokenError::Expired { exp: 5 },
            TokenError::WrongIssuer,
            TokenError::WrongAudience,
            TokenError::Invalid("y"),
        ];
        for e in errors {
            let text = e.describe();
            assert!(text.starts_with("the token"), "{text}");
            assert!(!text.contains(&token) && !text.contains(&km.kid));
        }
        assert_eq!(
            TokenError::Expired { exp: 5 }.describe(),
            "the token expired at 5"
        );
    }
}
