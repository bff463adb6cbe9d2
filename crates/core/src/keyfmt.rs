//! The API key format (SPEC §3): `prefix` + 38 random base62 characters +
//! a 6-character base62 CRC32 of everything before it.
//!
//! The checksum lets a mistyped or made-up key be refused without any
//! storage lookup, and lets secret scanners find keys with few false
//! positives. Keys are stored only as their SHA-256 digest.

use rand::distr::{Alphanumeric, SampleString};
use subtle::ConstantTimeEq;

/// Random characters in a key body (38 × log2(62) ≈ 226 bits).
pub const RANDOM_LEN: usize = 38;
/// Checksum characters at the end of a key body.
pub const CHECKSUM_LEN: usize = 6;
/// Length of a key body: random part and checksum.
pub const BODY_LEN: usize = RANDOM_LEN + CHECKSUM_LEN;
/// Body characters shown after the prefix in a key's `start`.
pub const START_BODY_CHARS: usize = 4;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// CRC32 (IEEE, as zlib's) of `data`, in base62 (`0-9A-Za-z`), big-endian,
/// left-padded with `0` to 6 characters.
pub fn checksum(data: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(data);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        // `n % 62` is always a valid index.
        *slot = ALPHABET.get((n % 62) as usize).copied().unwrap_or(b'0');
        n /= 62;
    }
    out
}

/// Mints a new key with this prefix.
pub fn generate(prefix: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + BODY_LEN);
    key.push_str(prefix);
    Alphanumeric.append_string(&mut rand::rng(), &mut key, RANDOM_LEN);
    let sum = checksum(key.as_bytes());
    key.extend(sum.iter().map(|&b| char::from(b)));
    key
}

/// Why a string is not a key latchkey could have issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    /// No configured prefix starts the string.
    UnknownPrefix,
    /// The body is not 44 characters long.
    Length,
    /// The body has a character outside base62.
    Alphabet,
    /// The checksum does not match.
    Checksum,
}

impl FormatError {
    /// A sentence for the refusal's `detail`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::UnknownPrefix => "The credential does not start with a known key prefix.",
            Self::Length => "The key has the wrong length.",
            Self::Alphabet => "The key contains characters that no key can contain.",
            Self::Checksum => "The key's checksum does not match: it was mistyped or truncated.",
        }
    }
}

/// Which of `prefixes` starts `candidate`. Prefixes are validated at
/// config load so that none is a prefix of another: at most one matches.
pub fn match_prefix<'a, I>(candidate: &str, prefixes: I) -> Option<usize>
where
    I: IntoIterator<Item = &'a str>,
{
    prefixes.into_iter().position(|p| candidate.starts_with(p))
}

/// Checks the body of a key whose prefix is `prefix`: length, alphabet and
/// checksum, without any lookup.
pub fn check(candidate: &str, prefix: &str) -> Result<(), FormatError> {
    let body = candidate
        .strip_prefix(prefix)
        .ok_or(FormatError::UnknownPrefix)?;
    if body.len() != BODY_LEN {
        return Err(FormatError::Length);
    }
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(FormatError::Alphabet);
    }
    let (signed, sum) = candidate.split_at(candidate.len() - CHECKSUM_LEN);
    let expected = checksum(signed.as_bytes());
    if bool::from(expected.ct_eq(sum.as_bytes())) {
        Ok(())
    } else {
        Err(FormatError::Checksum)
    }
}

/// The displayable start of a key: its prefix and first 4 body characters.
pub fn start(key: &str, prefix: &str) -> String {
    let end = (prefix.len() + START_BODY_CHARS).min(key.len());
    key.get(..end).unwrap_or(prefix).to_owned()
}

/// SHA-256 of the whole key: what is stored and looked up.
pub fn digest(key: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Whether a character may appear in a key prefix.
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 32
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_vectors_match_zlib_crc32_in_base62() {
        // zlib.crc32(b"") == 0
        assert_eq!(&checksum(b""), b"000000");
        // zlib.crc32(b"a") == 0xE8B7BE43 == 3904355907
        assert_eq!(crc32fast::hash(b"a"), 3_904_355_907);
        assert_eq!(&checksum(b"a"), b"4GEHKN");
        // zlib.crc32(b"sk_test_" + b"A"*38) computed independently in Python:
        let key_part = format!("sk_test_{}", "A".repeat(38));
        assert_eq!(crc32fast::hash(key_part.as_bytes()), 0xF8BF_12D3);
        assert_eq!(&checksum(key_part.as_bytes()), b"4YQcct");
    }

    #[test]
    fn generated_keys_pass_their_own_check() {
        for prefix in ["sk_live_", "sk_test_", "rk_", "lk_root_"] {
            let k = generate(prefix);
            assert_eq!(k.len(), prefix.len() + BODY_LEN);
            assert_eq!(check(&k, prefix), Ok(()));
            assert_eq!(start(&k, prefix).len(), prefix.len() + 4);
        }
    }

    #[test]
    fn malformed_keys_are_told_apart() {
        let k = generate("sk_live_");
        assert_eq!(check(&k, "sk_test_"), Err(FormatError::UnknownPrefix));
        assert_eq!(
            check(&k[..k.len() - 1], "sk_live_"),
            Err(FormatError::Length)
        );
        let mut bad = k.clone();
        bad.replace_range(10..11, "-");
        assert_eq!(check(&bad, "sk_live_"), Err(FormatError::Alphabet));
        // Change one random character: the checksum no longer matches.
        let mut typo = k.clone().into_bytes();
        typo[12] = if typo[12] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        assert_eq!(check(&typo, "sk_live_"), Err(FormatError::Checksum));
        // Multi-byte characters never panic.
        let weird = format!("sk_live_{}", "é".repeat(22));
        assert_eq!(check(&weird, "sk_live_"), Err(FormatError::Alphabet));
    }

    #[test]
    fn prefixes_match_and_digest_is_sha256() {
        assert_eq!(match_prefix("rk_abc", ["sk_live_", "rk_"]), Some(1));
        assert_eq!(match_prefix("xx", ["sk_live_", "rk_"]), None);
        // SHA-256("abc")
        assert_eq!(digest("abc")[..4], [0xba, 0x78, 0x16, 0xbf],);
        assert!(valid_prefix("isk_"));
        assert!(!valid_prefix("bad prefix"));
        assert!(!valid_prefix(""));
    }
}
