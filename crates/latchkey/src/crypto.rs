//! The master key: encrypts what must be recoverable (signing keys,
//! HS256 client secrets) with AES-256-GCM. Given as `LATCHKEY_MASTER_KEY`
//! (32 bytes, base64) or, on the embedded default, kept in a file created
//! with mode 0600 in the data directory at first start.

use std::fmt;
use std::io::Write;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretBox};

pub const MASTER_KEY_FILE: &str = "master.key";

pub struct MasterKey(SecretBox<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

/// Where the master key came from, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Config,
    File(String),
    Created(String),
}

impl MasterKey {
    pub fn from_base64(text: &str) -> Result<MasterKey, String> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| "is not valid base64".to_owned())?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "must decode to exactly 32 bytes".to_owned())?;
        Ok(MasterKey(SecretBox::new(Box::new(arr))))
    }

    fn generate() -> Result<MasterKey, String> {
        let mut arr = [0u8; 32];
        aws_lc_rs::rand::fill(&mut arr)
            .map_err(|_| "the system random generator failed".to_owned())?;
        Ok(MasterKey(SecretBox::new(Box::new(arr))))
    }

    /// Loads the key from `configured`, else from `{data_dir}/master.key`,
    /// creating that file (0600) when `may_create`.
    pub fn load(
        configured: Option<&str>,
        data_dir: &Path,
        may_create: bool,
    ) -> Result<(MasterKey, Origin), String> {
        if let Some(text) = configured {
            return Self::from_base64(text)
                .map(|k| (k, Origin::Config))
                .map_err(|e| format!("master_key {e}"));
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        let shown = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                return Self::from_base64(&text)
                    .map(|k| (k, Origin::File(shown.clone())))
                    .map_err(|e| format!("{shown} {e}"));
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("cannot read {shown}: {e}"));
            }
            Err(_) => {}
        }
        if !may_create {
            return Err("no master key: set LATCHKEY_MASTER_KEY (32 bytes, base64; e.g. `openssl rand -base64 32`). \
                 Every node sharing a PostgreSQL database must use the same one."
                .to_owned());
        }
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        let key = Self::generate()?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(&path)
            .map_err(|e| format!("cannot create {shown}: {e}"))?;
        let text = STANDARD.encode(key.0.expose_secret());
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("cannot write {shown}: {e}"))?;
        Ok((key, Origin::Created(shown)))
    }

    fn aead(&self) -> Result<RandomizedNonceKey, String> {
        RandomizedNonceKey::new(&AES_256_GCM, self.0.expose_secret())
            .map_err(|_| "bad master key".to_owned())
    }

    /// Encrypts `plain`; the output is the 12-byte nonce then the
    /// ciphertext and tag. `context` is bound as associated data.
    pub fn encrypt(&self, plain: &[u8], context: &[u8]) -> Result<Vec<u8>, String> {
        let key = self.aead()?;
        let mut buf = plain.to_vec();
        let nonce = key
            .seal_in_place_append_tag(Aad::from(context), &mut buf)
            .map_err(|_| "encryption failed".to_owned())?;
        let mut out = nonce.as_ref().to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// A 32-byte key for one purpose, derived from the master key:
    /// HMAC-SHA256(master key, `label`). Different labels give unrelated
    /// keys; none of them reveals the master key or another label's key.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, self.0.expose_secret());
        let tag = aws_lc_rs::hmac::sign(&key, label.as_bytes());
        let mut out = [0u8; 32];
        for (o, t) in out.iter_mut().zip(tag.as_ref()) {
            *o = *t;
        }
        out
    }

    pub fn decrypt(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, String> {
        let key = self.aead()?;
        if sealed.len() < 12 + 16 {
            return Err("ciphertext too short".to_owned());
        }
        let (nonce, rest) = sealed.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_owned())?;
        let mut buf = rest.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(context), &mut buf)
            .map_err(|_| "decryption failed".to_owned())?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_is_created_once_with_mode_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, o1) = MasterKey::load(None, dir.path(), true).unwrap();
        assert!(matches!(o1, Origin::Created(_)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(MASTER_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (k2, o2) = MasterKey::load(None, dir.path(), true).unwrap();
        assert!(matches!(o2, Origin::File(_)));
        let sealed = k1.encrypt(b"secret", b"ctx").unwrap();
        assert_eq!(k2.decrypt(&sealed, b"ctx").unwrap(), b"secret");
        assert!(k2.decrypt(&sealed, b"other").is_err());
        assert_ne!(&sealed[12..18], b"secret");
    }

    #[test]
    fn derived_keys_are_hmac_of_the_label() {
        let k = MasterKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap();
        let a = k.derive("a");
        assert_eq!(a, k.derive("a"));
        assert_ne!(a, k.derive("b"));
        let other = MasterKey::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert_ne!(a, other.derive("a"));
        let expect = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &[7u8; 32]),
            b"a",
        );
        assert_eq!(&a[..], expect.as_ref());
    }

    #[test]
    fn configured_key_must_be_32_bytes_of_base64() {
        let dir = tempfile::tempdir().unwrap();
        assert!(MasterKey::load(Some("not base64!"), dir.path(), true).is_err());
        assert!(MasterKey::load(Some(&STANDARD.encode([1u8; 16])), dir.path(), true).is_err());
        let (_, o) = MasterKey::load(Some(&STANDARD.encode([1u8; 32])), dir.path(), true).unwrap();
        assert_eq!(o, Origin::Config);
        assert!(!dir.path().join(MASTER_KEY_FILE).exists());
        assert!(
            MasterKey::load(None, dir.path(), false)
                .unwrap_err()
                .contains("LATCHKEY_MASTER_KEY")
        );
        assert!(
            format!(
                "{:?}",
                MasterKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap()
            )
            .contains("REDACTED")
        );
    }
}
