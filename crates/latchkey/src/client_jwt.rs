//! Client-signed JWTs (SPEC §7): an OAuth client signs a short-lived JWT
//! itself and presents it as a bearer credential.
//!
//! Pure code: no store, no HTTP, no clock. [`parse`] splits and decodes a
//! compact JWS strictly, [`Jws::verify`] checks it against one client's
//! registered keys and the instance's [`Policy`]. Signatures are checked
//! by aws-lc-rs (keys parsed once per client record; RSA through
//! jsonwebtoken); the parsing is ours, because the checks this credential
//! needs are stricter than a general JWT decoder's:
//!
//! - **The client's registration picks the algorithm.** The header's
//!   `alg` must equal the client's `jwt_auth.alg` exactly, before any key
//!   is touched: `none` in any spelling, and HS256 signed with a public
//!   key (the algorithm-confusion attack), never reach a verifier.
//! - **Keys come from the registration only.** `kid` chooses among the
//!   client's own `jwks`; `jku`, `x5u`, `jwk` and `x5c` are ignored, never
//!   fetched or trusted.
//! - **Nothing ambiguous is read.** A JSON member named twice (in the
//!   header, the claims, or anything nested), non-canonical base64url,
//!   `crit` (latchkey implements no extension), `b64: false`, a JWE, a
//!   nested JWT (`cty`) or an access token's `typ: at+jwt` are refused.
//! - **Claims have their registered types**: `exp`, `iat`, `nbf` are
//!   numbers, `aud` a string or an array of strings, `sub`, `jti` and
//!   `scope` strings. Anything else is refused, not coerced.
//!
//! A refusal says which check failed, in a sentence that never contains
//! key material.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Longest token looked at.
pub const MAX_LEN: usize = 8 * 1024;

/// Longest `sub`, `kid` and `jti` accepted.
const MAX_ID_LEN: usize = 256;

/// Most scopes a `scope` claim may name.
const MAX_SCOPES: usize = 100;

/// Why a client JWT was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `INVALID_TOKEN`, with a sentence naming the failed check.
    Invalid(String),
    /// `TOKEN_EXPIRED`: `exp`, in seconds.
    Expired(i64),
}

fn invalid(detail: impl Into<String>) -> Refusal {
    Refusal::Invalid(detail.into())
}

/// A compact JWS, split and decoded, not yet verified.
#[derive(Debug)]
pub struct Jws<'a> {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    /// `header.payload`, what the signature covers.
    signing_input: &'a str,
    /// The third part, base64url.
    signature_b64: &'a str,
    /// The third part, decoded.
    signature: Vec<u8>,
}

/// Splits and decodes `token`: three non-empty base64url parts, the
/// first two JSON objects with unique member names.
pub fn parse(token: &str) -> Result<Jws<'_>, Refusal> {
    if token.len() > MAX_LEN {
        return Err(invalid("The token is longer than 8 KiB."));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        // A JWE: header, encrypted key (empty for `dir`), IV, ciphertext, tag.
        let jwe: Vec<&str> = token.split('.').collect();
        let is_jwe = matches!(jwe.as_slice(), [h, _, iv, ct, tag] if ![h, iv, ct, tag].iter().any(|p| p.is_empty()));
        return Err(if is_jwe {
            invalid("This is an encrypted JWT (JWE, five parts): send a signed JWT (JWS).")
        } else {
            invalid("A signed JWT has three base64url parts separated by dots.")
        });
    };
    if h.is_empty() || p.is_empty() {
        return Err(invalid("The token's header or claims part is empty."));
    }
    if s.is_empty() {
        return Err(invalid("The token has no signature."));
    }
    let header = object(h, "header")?;
    let claims = object(p, "claims")?;
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| invalid("The token's signature is not base64url (without padding)."))?;
    Ok(Jws {
        header,
        claims,
        signing_input: token.get(..h.len() + 1 + p.len()).unwrap_or_default(),
        signature_b64: s,
        signature,
    })
}

/// One base64url part as a JSON object with unique member names.
fn object(part: &str, what: &str) -> Result<Map<String, Value>, Refusal> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        invalid(format!(
            "The token's {what} is not base64url (without padding)."
        ))
    })?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let parsed = Strict::deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(Strict(Value::Object(m))) => Ok(m),
        Ok(_) => Err(invalid(format!("The token's {what} is not a JSON object."))),
        Err(e) if e.to_string().starts_with(DUPLICATE) => Err(invalid(format!(
            "The token's {what} names a JSON member twice."
        ))),
        Err(_) => Err(invalid(format!("The token's {what} is not valid JSON."))),
    }
}

const DUPLICATE: &str = "duplicate member";

/// A JSON value read with every object's member names unique, at every
/// depth (`serde_json::Value` keeps the last of two silently; two readers
/// of one token could then see two different claims).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut v = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            v.push(item);
        }
        Ok(Value::Array(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if m.contains_key(&k) {
                return Err(de::Error::custom(DUPLICATE));
            }
            m.insert(k, v);
        }
        Ok(Value::Object(m))
    }
}

/// The algorithms a client may register for its JWTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAlg {
    HS256,
    ES256,
    EdDSA,
    RS256,
}

impl ClientAlg {
    pub fn parse(s: &str) -> Option<ClientAlg> {
        match s {
            "HS256" => Some(ClientAlg::HS256),
            "ES256" => Some(ClientAlg::ES256),
            "EdDSA" => Some(ClientAlg::EdDSA),
            "RS256" => Some(ClientAlg::RS256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ClientAlg::HS256 => "HS256",
            ClientAlg::ES256 => "ES256",
            ClientAlg::EdDSA => "EdDSA",
            ClientAlg::RS256 => "RS256",
        }
    }
}

/// A key a client's JWTs are verified with, parsed once (when the
/// client record is read), not per token.
enum VerifyKey {
    /// HS256: the client secret (boxed: its HMAC state is 1 KiB).
    Hmac(Box<aws_lc_rs::hmac::Key>),
    /// Ed25519 or P-256, parsed and checked to be on its curve.
    Parsed(aws_lc_rs::signature::ParsedPublicKey),
    /// RSA, from the JWK's `n` and `e` (jsonwebtoken's key).
    Rsa(DecodingKey),
}

impl VerifyKey {
    /// Whether `signature` (also given as base64url) signs `input`. HMACs
    /// are compared in constant time (aws-lc-rs's `hmac::verify`).
    fn verifies(&self, input: &[u8], signature: &[u8], signature_b64: &str) -> bool {
        match self {
            VerifyKey::Hmac(k) => aws_lc_rs::hmac::verify(k, input, signature).is_ok(),
            VerifyKey::Parsed(k) => k.verify_sig(input, signature).is_ok(),
            VerifyKey::Rsa(k) => {
                jsonwebtoken::crypto::verify(signature_b64, input, k, Algorithm::RS256)
                    .unwrap_or(false)
            }
        }
    }

    /// The verification key of a registered public JWK, if it is a key
    /// of `alg`'s type.
    fn of_jwk(alg: ClientAlg, jwk: &Value) -> Option<VerifyKey> {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ED25519, ParsedPublicKey};
        let (fits, key) = crate::jose::decoding_key(jwk)?;
        let member = |name: &str| {
            jwk.get(name)
                .and_then(Value::as_str)
                .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
        };
        match (alg, fits) {
            (ClientAlg::RS256, crate::jose::SigningAlg::RS256) => Some(VerifyKey::Rsa(key)),
            (ClientAlg::EdDSA, crate::jose::SigningAlg::EdDSA) => {
                ParsedPublicKey::new(&ED25519, member("x")?)
                    .ok()
                    .map(VerifyKey::Parsed)
            }
            (ClientAlg::ES256, crate::jose::SigningAlg::ES256) => {
                let mut point = vec![4u8];
                point.extend(member("x")?);
                point.extend(member("y")?);
                ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                    .ok()
                    .map(VerifyKey::Parsed)
            }
            _ => None,
        }
    }
}

/// What verifying needs of one client: its id, its pinned algorithm and
/// the keys that algorithm may use.
pub struct ClientKeys {
    client_id: String,
    alg: ClientAlg,
    /// HS256: the client secret (one key, no kid). Otherwise each of the
    /// client's `jwks` keys that fits the algorithm, with its kid.
    keys: Vec<(Option<String>, VerifyKey)>,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("ClientKeys")
            .field("client_id", &self.client_id)
            .field("alg", &self.alg)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl ClientKeys {
    /// HS256 with `secret` (the client secret's bytes).
    pub fn hmac(client_id: &str, secret: &[u8]) -> ClientKeys {
        ClientKeys {
            client_id: client_id.to_owned(),
            alg: ClientAlg::HS256,
            keys: vec![(
                None,
                VerifyKey::Hmac(Box::new(aws_lc_rs::hmac::Key::new(
                    aws_lc_rs::hmac::HMAC_SHA256,
                    secret,
                ))),
            )],
        }
    }

    /// ES256, EdDSA or RS256 with the keys of `jwks` (`{"keys": [...]}`)
    /// that fit `alg`; `None` if none does (or `alg` is HS256).
    pub fn public(client_id: &str, alg: ClientAlg, jwks: &Value) -> Option<ClientKeys> {
        if alg == ClientAlg::HS256 {
            return None;
        }
        let keys: Vec<_> = jwks
            .get("keys")?
            .as_array()?
            .iter()
            .filter(|jwk| {
                // A key registered for another alg is not this one's.
                jwk.get("alg")
                    .and_then(Value::as_str)
                    .is_none_or(|a| a == alg.as_str())
            })
            .filter_map(|jwk| {
                let key = VerifyKey::of_jwk(alg, jwk)?;
                let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
                Some((kid, key))
            })
            .collect();
        (!keys.is_empty()).then(|| ClientKeys {
            client_id: client_id.to_owned(),
            alg,
            keys,
        })
    }
}

/// The instance's rules (`[jwt_auth]`).
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub audience: &'a str,
    pub max_lifetime_s: i64,
    pub leeway_s: i64,
    pub require_jti: bool,
    /// The `typ` every token must carry; `None`: absent or `JWT`.
    pub typ: Option<&'a str>,
}

/// What a verified client JWT says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: Option<String>,
    /// The `scope` claim's tokens, if it has one.
    pub scope: Option<Vec<String>>,
}

/// Whether two `typ` values name one media type (RFC 7515 §4.1.9: the
/// `application/` prefix may be left out; compared without case).
fn same_typ(a: &str, b: &str) -> bool {
    let bare = |t: &str| {
        t.get(..12)
            .filter(|p| p.eq_ignore_ascii_case("application/"))
            .map_or(t, |_| t.get(12..).unwrap_or_default())
            .to_ascii_lowercase()
    };
    bare(a) == bare(b)
}

/// A NumericDate claim (RFC 7519 §2): a JSON number of seconds; a
/// fraction is dropped.
fn numeric(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, Refusal> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.is_finite() && f.abs() < 1e15 => Ok(Some(f.floor() as i64)),
            _ => Err(invalid(format!("The token's {name} is out of range."))),
        },
        Some(_) => Err(invalid(format!(
            "The token's {name} must be a number of seconds since the epoch (NumericDate)."
        ))),
    }
}

/// An identifier claim or header: a string of 1 to 256 printable
/// characters.
fn id_str<'v>(v: &'v Value, what: &str) -> Result<&'v str, Refusal> {
    match v.as_str() {
        Some(s) if !s.is_empty() && s.len() <= MAX_ID_LEN && !s.chars().any(char::is_control) => {
            Ok(s)
        }
        _ => Err(invalid(format!(
            "The token's {what} must be a string of 1 to {MAX_ID_LEN} printable characters."
        ))),
    }
}

impl Jws<'_> {
    /// The `iss` claim, if it is a string: which client to verify with.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// Checks the header against the client's registration, the signature
    /// with its key, then the claims against `policy` at `now_s`.
    pub fn verify(
        &self,
        client: &ClientKeys,
        policy: &Policy<'_>,
        now_s: i64,
    ) -> Result<Claims, Refusal> {
        self.verify_signature(client, policy)?;
        check_claims(&self.claims, &client.client_id, policy, now_s)
    }

    /// The header's checks and the signature: once this holds, the token
    /// is the client's own, and what else is wrong with it is the
    /// client's doing ([`check_claims`]).
    pub fn verify_signature(
        &self,
        client: &ClientKeys,
        policy: &Policy<'_>,
    ) -> Result<(), Refusal> {
        let key = self.check_header(client, policy)?;
        if !key.verifies(
            self.signing_input.as_bytes(),
            &self.signature,
            self.signature_b64,
        ) {
            return Err(invalid(
                "The token's signature does not verify with this client's key.",
            ));
        }
        Ok(())
    }

    /// The header's checks; answers the key to verify with.
    fn check_header<'k>(
        &self,
        client: &'k ClientKeys,
        policy: &Policy<'_>,
    ) -> Result<&'k VerifyKey, Refusal> {
        let h = &self.header;
        let pinned = client.alg.as_str();
        match h.get("alg") {
            Some(Value::String(a)) if a == pinned => {}
            Some(Value::String(a)) if a.eq_ignore_ascii_case("none") => {
                return Err(invalid("Unsigned JWTs (alg none) are never accepted."));
            }
            Some(Value::String(_)) => {
                return Err(invalid(format!(
                    "The token's alg is not {pinned}, the algorithm this client registered."
                )));
            }
            Some(_) => return Err(invalid("The token's alg is not a string.")),
            None => return Err(invalid("The token's header has no alg.")),
        }
        if h.contains_key("enc") || h.contains_key("zip") {
            return Err(invalid(
                "The token's header is a JWE's (enc): send a signed JWT (JWS).",
            ));
        }
        if h.contains_key("crit") {
            return Err(invalid(
                "The token's header lists critical extensions (crit); latchkey supports none.",
            ));
        }
        if h.contains_key("b64") {
            return Err(invalid(
                "The token's header asks for an unencoded payload (b64), which is not accepted.",
            ));
        }
        if h.contains_key("cty") {
            return Err(invalid(
                "The token's header has a cty: nested JWTs are not accepted.",
            ));
        }
        let typ = match h.get("typ") {
            None => None,
            Some(Value::String(t)) => Some(t.as_str()),
            Some(_) => return Err(invalid("The token's typ is not a string.")),
        };
        match (policy.typ, typ) {
            (Some(want), Some(t)) if same_typ(want, t) => {}
            (Some(want), _) => {
                return Err(invalid(format!("The token's header must say typ {want}.")));
            }
            (None, None) => {}
            (None, Some(t)) if same_typ(t, "JWT") => {}
            (None, Some(t)) if same_typ(t, crate::jose::ACCESS_TOKEN_TYP) => {
                return Err(invalid(
                    "This is an OAuth access token (typ at+jwt), not a client-signed JWT.",
                ));
            }
            (None, Some(_)) => return Err(invalid("The token's typ is not JWT.")),
        }
        let kid = match h.get("kid") {
            None => None,
            Some(v) => Some(id_str(v, "kid")?),
        };
        if client.alg == ClientAlg::HS256 {
            // One key, the client secret: a kid has nothing to choose.
            return client
                .keys
                .first()
                .map(|(_, k)| k)
                .ok_or_else(|| invalid("This client has no key for its JWTs."));
        }
        match kid {
            Some(kid) => client
                .keys
                .iter()
                .find(|(k, _)| k.as_deref() == Some(kid))
                .map(|(_, k)| k)
                .ok_or_else(|| {
                    invalid(format!(
                        "The token's kid names no {pinned} key registered for this client."
                    ))
                }),
            None => match client.keys.as_slice() {
                [(_, only)] => Ok(only),
                _ => Err(invalid(
                    "The token's header has no kid, and this client has several keys: name one.",
                )),
            },
        }
    }

    /// The claims, once the signature held (to keep them).
    pub fn into_claims(self) -> Map<String, Value> {
        self.claims
    }
}

/// The claims' checks for a token of `client_id` whose signature held, at
/// `now_s` (also on a token verified before: time moves).
pub fn check_claims(
    c: &Map<String, Value>,
    client_id: &str,
    policy: &Policy<'_>,
    now_s: i64,
) -> Result<Claims, Refusal> {
    if c.get("iss").and_then(Value::as_str) != Some(client_id) {
        return Err(invalid("The token's iss is not this client's id."));
    }
    let sub = id_str(
        c.get("sub")
            .ok_or_else(|| invalid("The token has no sub (its subject)."))?,
        "sub",
    )?
    .to_owned();
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => a == policy.audience,
        Some(Value::Array(all)) if all.iter().all(Value::is_string) => {
            all.iter().any(|a| a.as_str() == Some(policy.audience))
        }
        Some(_) => {
            return Err(invalid(
                "The token's aud must be a string or an array of strings.",
            ));
        }
        None => {
            return Err(invalid(format!(
                "The token has no aud; it must be {}.",
                policy.audience
            )));
        }
    };
    if !aud_ok {
        return Err(invalid(format!(
            "The token's aud is not this API's audience, {}.",
            policy.audience
        )));
    }
    let exp = numeric(c, "exp")?.ok_or_else(|| invalid("The token has no exp."))?;
    let iat = numeric(c, "iat")?.ok_or_else(|| invalid("The token has no iat."))?;
    let nbf = numeric(c, "nbf")?;
    if exp < iat {
        return Err(invalid("The token's exp is before its iat."));
    }
    if exp - iat > policy.max_lifetime_s {
        return Err(invalid(format!(
            "The token lasts {} s from iat to exp; at most {} s is accepted.",
            exp - iat,
            policy.max_lifetime_s
        )));
    }
    // RFC 7519 §4.1.4: not accepted on or after exp.
    if now_s >= exp.saturating_add(policy.leeway_s) {
        return Err(Refusal::Expired(exp));
    }
    if iat > now_s.saturating_add(policy.leeway_s) {
        return Err(invalid("The token was issued in the future (iat)."));
    }
    if nbf.is_some_and(|nbf| nbf > now_s.saturating_add(policy.leeway_s)) {
        return Err(invalid("The token is not valid yet (nbf)."));
    }
    let jti = match c.get("jti") {
        None => None,
        Some(v) => Some(id_str(v, "jti")?.to_owned()),
    };
    if policy.require_jti && jti.is_none() {
        return Err(invalid(
            "This API requires a jti in each token: a unique id, accepted once.",
        ));
    }
    let scope = match c.get("scope") {
        None => None,
        Some(Value::String(s)) => {
            let scopes: Vec<String> = s
                .split(' ')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect();
            if scopes.len() > MAX_SCOPES
                || !scopes
                    .iter()
                    .all(|t| latchkey_core::scope::is_scope_token(t))
            {
                return Err(invalid(
                    "The token's scope is not a list of at most 100 scope tokens.",
                ));
            }
            Some(scopes)
        }
        Some(_) => {
            return Err(invalid(
                "The token's scope must be a string of space-separated scopes.",
            ));
        }
    };
    Ok(Claims {
        sub,
        exp,
        iat,
        jti,
        scope,
    })
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use jsonwebtoken::{EncodingKey, Header};
    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_700_000_000;
    const AUD: &str = "https://api.example";
    const CID: &str = "cli_123";
    const SECRET: &[u8] = b"lk_cs_a-very-secret-client-secret";

    fn policy() -> Policy<'static> {
        Policy {
            audience: AUD,
            max_lifetime_s: 3600,
            leeway_s: 60,
            require_jti: false,
            typ: None,
        }
    }

    fn claims() -> Value {
        json!({"iss": CID, "sub": "user-42", "aud": AUD, "iat": NOW, "exp": NOW + 300})
    }

    fn b64(v: &impl serde::Serialize) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    /// A compact JWS of raw header and claims text, HMAC-signed.
    fn hs_raw(header: &str, claims: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET);
        let sig = aws_lc_rs::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn hs(header: &Value, claims: &Value) -> String {
        hs_raw(&header.to_string(), &claims.to_string())
    }

    fn hs_keys() -> ClientKeys {
        ClientKeys::hmac(CID, SECRET)
    }

    fn check(token: &str, keys: &ClientKeys) -> Result<Claims, Refusal> {
        check_with(token, keys, &policy())
    }

    fn check_with(token: &str, keys: &ClientKeys, p: &Policy<'_>) -> Result<Claims, Refusal> {
        parse(token)?.verify(keys, p, NOW)
    }

    fn refused(r: Result<Claims, Refusal>, says: &str) {
        match r {
            Err(Refusal::Invalid(d)) => assert!(d.contains(says), "{d:?} should say {says:?}"),
            other => panic!("expected a refusal saying {says:?}, got {other:?}"),
        }
    }

    fn ec_key() -> (EcdsaKeyPair, Value) {
        let rng = SystemRandom::new();
        let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.as_ref()).unwrap();
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": "ec1",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        (pair, jwk)
    }

    fn es(pair: &EcdsaKeyPair, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let sig = pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    #[test]
    fn hs256_round_trip() {
        let t = hs(&json!({"alg": "HS256", "typ": "JWT"}), &claims());
        let c = check(&t, &hs_keys()).unwrap();
        assert_eq!(c.sub, "user-42");
        assert_eq!((c.iat, c.exp), (NOW, NOW + 300));
        assert_eq!(c.scope, None);
        // No typ at all is fine too, and aud may be an array.
        let mut cl = claims();
        cl["aud"] = json!(["https://other", AUD]);
        cl["scope"] = json!("documents.read  documents.write");
        cl["jti"] = json!("j-1");
        let c = check(&hs(&json!({"alg": "HS256"}), &cl), &hs_keys()).unwrap();
        assert_eq!(
            c.scope,
            Some(vec!["documents.read".into(), "documents.write".into()])
        );
        assert_eq!(c.jti.as_deref(), Some("j-1"));
        // What jsonwebtoken makes verifies here.
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        check(&t, &hs_keys()).unwrap();
    }

    #[test]
    fn every_public_alg_round_trips_with_its_kid() {
        for alg in crate::jose::SigningAlg::ALL {
            let km = crate::jose::generate(alg).unwrap();
            let calg = ClientAlg::parse(alg.as_str()).unwrap();
            let jwks = json!({"keys": [km.public_jwk.clone()]});
            let keys = ClientKeys::public(CID, calg, &jwks).unwrap();
            let mut h = Header::new(alg.algorithm());
            h.kid = Some(km.kid.clone());
            let der = km.private_pkcs8.expose_secret();
            let enc = match alg {
                crate::jose::SigningAlg::EdDSA => EncodingKey::from_ed_der(der),
                crate::jose::SigningAlg::ES256 => EncodingKey::from_ec_der(der),
                crate::jose::SigningAlg::RS256 => {
                    // jsonwebtoken reads RSA private keys as PEM (PKCS#8 inside).
                    let pem = format!(
                        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                        base64::engine::general_purpose::STANDARD.encode(der)
                    );
                    EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
                }
            };
            let t = jsonwebtoken::encode(&h, &claims(), &enc).unwrap();
            check(&t, &keys).unwrap_or_else(|e| panic!("{alg}: {e:?}"));
            // Without a kid, the one key is used.
            h.kid = None;
            let t = jsonwebtoken::encode(&h, &claims(), &enc).unwrap();
            check(&t, &keys).unwrap();
            // A kid that is not the client's.
            h.kid = Some("someone-else".into());
            let t = jsonwebtoken::encode(&h, &claims(), &enc).unwrap();
            refused(check(&t, &keys), "kid names no");
        }
    }

    #[test]
    fn alg_none_in_every_spelling_and_any_other_alg_are_refused() {
        for alg in ["none", "None", "NONE", "nOnE"] {
            let t = format!("{}.{}.sig", b64(&json!({"alg": alg})), b64(&claims()));
            refused(check(&t, &hs_keys()), "alg none");
            // Even with the signature stripped entirely.
            let t = format!("{}.{}.", b64(&json!({"alg": alg})), b64(&claims()));
            refused(check(&t, &hs_keys()), "no signature");
        }
        for alg in ["HS384", "HS512", "RS256", "hs256", "", "ES256"] {
            let t = hs(&json!({"alg": alg}), &claims());
            refused(check(&t, &hs_keys()), "is not HS256");
        }
        refused(
            check(&hs(&json!({"alg": 5}), &claims()), &hs_keys()),
            "not a string",
        );
        refused(
            check(&hs(&json!({"typ": "JWT"}), &claims()), &hs_keys()),
            "no alg",
        );
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        // Algorithm confusion: the attacker knows the client's public key
        // and MACs with it, naming HS256.
        let (pair, jwk) = ec_key();
        let keys =
            ClientKeys::public(CID, ClientAlg::ES256, &json!({"keys": [jwk.clone()]})).unwrap();
        for secret in [
            jwk.to_string().into_bytes(),
            pair.public_key().as_ref().to_vec(),
        ] {
            let input = format!(
                "{}.{}",
                b64(&json!({"alg": "HS256", "kid": "ec1"})),
                b64(&claims())
            );
            let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
            let sig = aws_lc_rs::hmac::sign(&k, input.as_bytes());
            let t = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
            refused(check(&t, &keys), "is not ES256");
        }
        // The real thing verifies.
        check(
            &es(&pair, &json!({"alg": "ES256", "kid": "ec1"}), &claims()),
            &keys,
        )
        .unwrap();
    }

    #[test]
    fn es256_signatures_with_r_or_s_zero_are_refused() {
        // CVE-2022-21449 ("psychic signatures"): (0, 0) verified anything
        // on a broken verifier.
        let (_, jwk) = ec_key();
        let keys = ClientKeys::public(CID, ClientAlg::ES256, &json!({"keys": [jwk]})).unwrap();
        let input = format!("{}.{}", b64(&json!({"alg": "ES256"})), b64(&claims()));
        let mut one = [0u8; 32];
        one[31] = 1;
        for (r, s) in [([0u8; 32], [0u8; 32]), ([0u8; 32], one), (one, [0u8; 32])] {
            let sig = [r, s].concat();
            let t = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig));
            refused(check(&t, &keys), "signature does not verify");
        }
    }

    #[test]
    fn keys_in_the_header_are_ignored() {
        // A token signed by the attacker's own key, which it offers in
        // jwk / jku / x5u / x5c: verified with the client's key, it fails.
        let (mine, jwk) = ec_key();
        let (theirs, their_jwk) = ec_key();
        let keys = ClientKeys::public(CID, ClientAlg::ES256, &json!({"keys": [jwk]})).unwrap();
        for extra in [
            json!({"jwk": their_jwk}),
            json!({"jku": "https://evil.example/jwks.json"}),
            json!({"x5u": "https://evil.example/cert.pem"}),
            json!({"x5c": ["MIIB"]}),
        ] {
            let mut h = json!({"alg": "ES256"});
            h.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            refused(check(&es(&theirs, &h, &claims()), &keys), "does not verify");
            // Signed with the registered key, the header's extras change nothing.
            check(&es(&mine, &h, &claims()), &keys).unwrap();
        }
    }

    #[test]
    fn header_extensions_and_other_token_kinds_are_refused() {
        let k = hs_keys();
        let h = |extra: Value| {
            let mut h = json!({"alg": "HS256"});
            h.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            hs(&h, &claims())
        };
        refused(check(&h(json!({"crit": ["exp"]})), &k), "crit");
        refused(
            check(&h(json!({"crit": ["b64"], "b64": false})), &k),
            "crit",
        );
        refused(check(&h(json!({"b64": false})), &k), "unencoded payload");
        refused(check(&h(json!({"cty": "JWT"})), &k), "nested");
        refused(check(&h(json!({"enc": "A256GCM"})), &k), "JWE");
        refused(check(&h(json!({"typ": "at+jwt"})), &k), "access token");
        refused(
            check(&h(json!({"typ": "application/at+jwt"})), &k),
            "access token",
        );
        refused(check(&h(json!({"typ": "JOSE+JSON"})), &k), "typ is not JWT");
        refused(check(&h(json!({"typ": 1})), &k), "typ is not a string");
        check(&h(json!({"typ": "application/jwt"})), &k).unwrap();
        // A five-part token is a JWE.
        refused(check("a.b.c.d.e", &k), "JWE");
        // A nested JWT as the payload fails as claims.
        let inner = hs(&json!({"alg": "HS256"}), &claims());
        let t = hs_raw(r#"{"alg":"HS256"}"#, &inner);
        refused(check(&t, &k), "claims is not valid JSON");
    }

    #[test]
    fn a_required_typ_must_be_there() {
        let p = Policy {
            typ: Some("client+jwt"),
            ..policy()
        };
        let k = hs_keys();
        check_with(
            &hs(&json!({"alg": "HS256", "typ": "client+jwt"}), &claims()),
            &k,
            &p,
        )
        .unwrap();
        check_with(
            &hs(
                &json!({"alg": "HS256", "typ": "application/Client+JWT"}),
                &claims(),
            ),
            &k,
            &p,
        )
        .unwrap();
        for h in [
            json!({"alg": "HS256"}),
            json!({"alg": "HS256", "typ": "JWT"}),
        ] {
            refused(
                check_with(&hs(&h, &claims()), &k, &p),
                "must say typ client+jwt",
            );
        }
    }

    #[test]
    fn kid_tricks_choose_nothing() {
        let (a, jwk_a) = ec_key();
        let (b, mut jwk_b) = ec_key();
        jwk_b["kid"] = json!("ec2");
        let keys =
            ClientKeys::public(CID, ClientAlg::ES256, &json!({"keys": [jwk_a, jwk_b]})).unwrap();
        check(
            &es(&b, &json!({"alg": "ES256", "kid": "ec2"}), &claims()),
            &keys,
        )
        .unwrap();
        // Signed by key b but naming a: a is used, and fails.
        refused(
            check(
                &es(&b, &json!({"alg": "ES256", "kid": "ec1"}), &claims()),
                &keys,
            ),
            "does not verify",
        );
        for kid in [
            json!("../../../../etc/passwd"),
            json!("' OR '1'='1"),
            json!("ec1\u{0000}"),
            json!("x".repeat(300)),
        ] {
            let r = check(
                &es(&a, &json!({"alg": "ES256", "kid": kid}), &claims()),
                &keys,
            );
            assert!(matches!(r, Err(Refusal::Invalid(_))), "{r:?}");
        }
        refused(
            check(
                &es(&a, &json!({"alg": "ES256", "kid": 7}), &claims()),
                &keys,
            ),
            "kid must be a string",
        );
        // Several keys and no kid: which one is not guessed.
        refused(
            check(&es(&a, &json!({"alg": "ES256"}), &claims()), &keys),
            "name one",
        );
    }

    #[test]
    fn claim_checks() {
        let k = hs_keys();
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut c = claims();
            edit(&mut c);
            check(&hs(&json!({"alg": "HS256"}), &c), &k)
        };
        refused(
            with(&|c| c["iss"] = json!("cli_other")),
            "iss is not this client",
        );
        refused(
            with(&|c| c["aud"] = json!("https://other")),
            "not this API's audience",
        );
        refused(
            with(&|c| c["aud"] = json!(["https://other"])),
            "not this API's audience",
        );
        refused(with(&|c| c["aud"] = json!([AUD, 3])), "array of strings");
        refused(with(&|c| c["aud"] = json!({"x": AUD})), "array of strings");
        refused(
            with(&|c| drop(c.as_object_mut().unwrap().remove("aud"))),
            "no aud",
        );
        refused(
            with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))),
            "no exp",
        );
        refused(
            with(&|c| drop(c.as_object_mut().unwrap().remove("iat"))),
            "no iat",
        );
        refused(
            with(&|c| drop(c.as_object_mut().unwrap().remove("sub"))),
            "no sub",
        );
        refused(with(&|c| c["sub"] = json!("")), "sub must be");
        refused(with(&|c| c["sub"] = json!(42)), "sub must be");
        refused(with(&|c| c["sub"] = json!("a\nb")), "sub must be");
        refused(
            with(&|c| c["exp"] = json!("1700000300")),
            "exp must be a number",
        );
        refused(with(&|c| c["iat"] = json!(true)), "iat must be a number");
        refused(with(&|c| c["nbf"] = json!(null)), "nbf must be a number");
        refused(with(&|c| c["exp"] = json!(1e300)), "out of range");
        refused(with(&|c| c["jti"] = json!(1)), "jti must be");
        refused(
            with(&|c| c["scope"] = json!(["documents.read"])),
            "scope must be a string",
        );
        refused(with(&|c| c["scope"] = json!("a\"b")), "scope tokens");
        // Lifetime, expiry and leeway.
        refused(
            with(&|c| c["exp"] = json!(NOW + 3601)),
            "lasts 3601 s from iat to exp; at most 3600",
        );
        refused(
            with(&|c| c["exp"] = json!(NOW - 1)),
            "exp is before its iat",
        );
        with(&|c| c["exp"] = json!(NOW + 3600)).unwrap();
        with(&|c| c["exp"] = json!(NOW as f64 + 300.75)).unwrap();
        let expired = with(&|c| {
            c["iat"] = json!(NOW - 400);
            c["exp"] = json!(NOW - 60);
        });
        assert_eq!(expired, Err(Refusal::Expired(NOW - 60)));
        // Within the leeway: still accepted.
        with(&|c| {
            c["iat"] = json!(NOW - 400);
            c["exp"] = json!(NOW - 59);
        })
        .unwrap();
        refused(
            with(&|c| {
                c["iat"] = json!(NOW + 61);
                c["exp"] = json!(NOW + 100);
            }),
            "issued in the future",
        );
        with(&|c| c["iat"] = json!(NOW + 60)).unwrap();
        refused(with(&|c| c["nbf"] = json!(NOW + 61)), "not valid yet");
        with(&|c| c["nbf"] = json!(NOW + 60)).unwrap();
        // jti when required.
        let p = Policy {
            require_jti: true,
            ..policy()
        };
        refused(
            check_with(&hs(&json!({"alg": "HS256"}), &claims()), &k, &p),
            "requires a jti",
        );
    }

    #[test]
    fn the_signature_covers_everything() {
        let k = hs_keys();
        let good = hs(&json!({"alg": "HS256"}), &claims());
        let parts: Vec<&str> = good.split('.').collect();
        // Claims swapped under the same signature.
        let mut c = claims();
        c["sub"] = json!("admin");
        let forged = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
        refused(check(&forged, &hs_keys()), "does not verify");
        // Signed with another secret.
        let other = ClientKeys::hmac(CID, b"another secret");
        refused(check(&good, &other), "does not verify");
        // The signature stripped.
        refused(
            check(&format!("{}.{}.", parts[0], parts[1]), &k),
            "no signature",
        );
        refused(
            check(&format!("{}.{}", parts[0], parts[1]), &k),
            "three base64url parts",
        );
    }

    #[test]
    fn malformed_encodings_are_refused() {
        let k = hs_keys();
        let good = hs(&json!({"alg": "HS256"}), &claims());
        let parts: Vec<&str> = good.split('.').collect();
        for (t, says) in [
            (format!("{good}."), "three base64url parts"),
            (format!(".{good}"), "three base64url parts"),
            (format!("{}..{}", parts[0], parts[2]), "empty"),
            (
                format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
                "header is not base64url",
            ),
            (
                format!("{}.{}+.{}", parts[0], parts[1], parts[2]),
                "claims is not base64url",
            ),
            (
                format!("{} .{}.{}", parts[0], parts[1], parts[2]),
                "header is not base64url",
            ),
            (
                format!("{}.{}.{}==", parts[0], parts[1], parts[2]),
                "signature is not base64url",
            ),
            (
                format!("{}.{}.{}", parts[0], parts[1], "a"),
                "signature is not base64url",
            ),
            ("x".repeat(MAX_LEN + 1), "longer than 8 KiB"),
            (
                format!("{}.{}.{}", b64(&json!([1])), parts[1], parts[2]),
                "header is not a JSON object",
            ),
        ] {
            refused(check(&t, &k), says);
        }
        // Non-canonical base64url: the HMAC's 32 bytes end in a character
        // whose 2 low bits are padding; setting one is refused, although
        // a lenient decoder would read the same bytes.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let sig = parts[2];
        assert_eq!(sig.len(), 43);
        let last = sig.as_bytes()[42];
        let idx = ALPHABET.iter().position(|&c| c == last).unwrap();
        assert_eq!(idx % 4, 0, "canonical");
        let t = format!(
            "{}.{}.{}{}",
            parts[0],
            parts[1],
            &sig[..42],
            char::from(ALPHABET[idx | 1])
        );
        refused(check(&t, &k), "signature is not base64url");
    }

    #[test]
    fn duplicate_members_are_refused_at_every_depth() {
        let k = hs_keys();
        let c = claims().to_string();
        for (header, claims, says) in [
            (
                r#"{"alg":"HS256","alg":"none"}"#.to_owned(),
                c.clone(),
                "header names a JSON member twice",
            ),
            (
                r#"{"alg":"none","alg":"HS256"}"#.to_owned(),
                c.clone(),
                "header names a JSON member twice",
            ),
            (
                r#"{"alg":"HS256"}"#.to_owned(),
                format!(
                    r#"{{"iss":"{CID}","sub":"a","sub":"admin","aud":"{AUD}","iat":{NOW},"exp":{}}}"#,
                    NOW + 60
                ),
                "claims names a JSON member twice",
            ),
            (
                r#"{"alg":"HS256"}"#.to_owned(),
                format!(
                    r#"{{"iss":"{CID}","sub":"a","aud":"{AUD}","iat":{NOW},"exp":{},"x":{{"y":1,"y":2}}}}"#,
                    NOW + 60
                ),
                "claims names a JSON member twice",
            ),
            (
                r#"{"alg":"HS256"} x"#.to_owned(),
                c.clone(),
                "header is not valid JSON",
            ),
        ] {
            refused(check(&hs_raw(&header, &claims), &k), says);
        }
    }

    #[test]
    fn public_keys_fit_only_their_alg() {
        let (_, ec) = ec_key();
        let ed = crate::jose::generate(crate::jose::SigningAlg::EdDSA)
            .unwrap()
            .public_jwk;
        let jwks = json!({"keys": [ec.clone(), ed]});
        assert!(ClientKeys::public(CID, ClientAlg::ES256, &jwks).is_some());
        assert!(ClientKeys::public(CID, ClientAlg::EdDSA, &jwks).is_some());
        assert!(ClientKeys::public(CID, ClientAlg::RS256, &jwks).is_none());
        assert!(ClientKeys::public(CID, ClientAlg::HS256, &jwks).is_none());
        // A key registered with another alg is not used for this one.
        let mut tagged = ec;
        tagged["alg"] = json!("ES384");
        assert!(ClientKeys::public(CID, ClientAlg::ES256, &json!({"keys": [tagged]})).is_none());
        assert!(ClientKeys::public(CID, ClientAlg::ES256, &json!({"keys": []})).is_none());
        assert!(ClientKeys::public(CID, ClientAlg::ES256, &json!({})).is_none());
    }

    #[test]
    fn no_mutation_of_a_signed_token_is_accepted() {
        // Every single-character change of a valid token, to any character
        // of the base64url alphabet, a dot or a space, in any of its three
        // parts: refused, never a panic (4,000 mutations per algorithm).
        use rand::RngExt;
        let (pair, jwk) = ec_key();
        let es_keys = ClientKeys::public(CID, ClientAlg::ES256, &json!({"keys": [jwk]})).unwrap();
        let es_token = es(&pair, &json!({"alg": "ES256", "kid": "ec1"}), &claims());
        let hs_token = hs(&json!({"alg": "HS256"}), &claims());
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_. ";
        let mut rng = rand::rng();
        for (token, keys) in [(&es_token, &es_keys), (&hs_token, &hs_keys())] {
            check(token, keys).unwrap();
            for _ in 0..4000 {
                let mut bytes = token.clone().into_bytes();
                let at = rng.random_range(0..bytes.len());
                let to = CHARS[rng.random_range(0..CHARS.len())];
                if bytes[at] == to {
                    continue;
                }
                bytes[at] = to;
                let mutated = String::from_utf8(bytes).unwrap();
                assert!(
                    check(&mutated, keys).is_err(),
                    "accepted a token changed at {at}: {mutated}"
                );
            }
        }
    }
}
