//! Passwords of organization users: argon2id (m=19456 KiB, t=2, p=1, the
//! crate's defaults, as OWASP recommends), as PHC strings, hashed and
//! checked off the async threads (each takes ~20 ms of one core).

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// Shortest and longest password accepted.
pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 1024;

/// Hashes `password`; `None` if the hasher failed (never for valid input).
pub async fn hash(password: String) -> Option<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .ok()
            .map(|h| h.to_string())
    })
    .await
    .ok()
    .flatten()
}

/// A hash of nothing anyone knows: checked against when an account does
/// not exist, so that a wrong email takes as long as a wrong password.
static DECOY: LazyLock<Option<String>> = LazyLock::new(|| {
    let mut noise = [0u8; 32];
    aws_lc_rs::rand::fill(&mut noise).ok()?;
    Argon2::default()
        .hash_password(&noise)
        .ok()
        .map(|h| h.to_string())
});

/// Whether `password` matches `phc` (`None`: no such account; the work is
/// done anyway and the answer is false).
pub async fn verify(password: String, phc: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let known = phc.is_some();
        let Some(phc) = phc.or_else(|| DECOY.clone()) else {
            return false;
        };
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), phc.as_str())
            .is_ok();
        ok && known
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = hash("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse battery".into(), Some(h.clone())).await);
        assert!(!verify("correct horse batterY".into(), Some(h.clone())).await);
        assert!(!verify("correct horse battery".into(), None).await);
        assert!(!verify("x".into(), Some("not a phc string".into())).await);
        let again = hash("correct horse battery".into()).await.unwrap();
        assert_ne!(h, again, "each hash has its own salt");
    }
}
