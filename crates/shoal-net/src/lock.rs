//! Autolock: a manager's private key at rest, sealed with the cluster's
//! unlock key, as Docker Swarm's `--autolock` does.
//!
//! The unlock key is 256 random bits shown as `SWMKEY-1-<base64>` (Docker's
//! shape). Sealed data is AES-256-GCM with a random nonce, armored as text so
//! the key file stays a text file:
//!
//! ```text
//! -----BEGIN SHOAL SEALED KEY-----
//! base64(nonce ‖ ciphertext ‖ tag)
//! -----END SHOAL SEALED KEY-----
//! ```

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;

const PREFIX: &str = "SWMKEY-1-";
const BEGIN: &str = "-----BEGIN SHOAL SEALED KEY-----";
const END: &str = "-----END SHOAL SEALED KEY-----";

/// A cluster's unlock key.
#[derive(Clone, PartialEq, Eq)]
pub struct UnlockKey([u8; 32]);

impl fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnlockKey(<redacted>)")
    }
}

impl fmt::Display for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", STANDARD_NO_PAD.encode(self.0))
    }
}

/// Sealed data could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// Not sealed data.
    #[error("not sealed data")]
    NotSealed,
    /// The key does not open it (or the data was altered).
    #[error("invalid key provided")]
    WrongKey,
}

impl UnlockKey {
    /// A new random key.
    pub fn generate() -> UnlockKey {
        let mut k = [0u8; 32];
        SystemRandom::new().fill(&mut k).expect("system random");
        UnlockKey(k)
    }

    /// Parses `SWMKEY-1-…`; `None` when it is not one.
    pub fn parse(s: &str) -> Option<UnlockKey> {
        let b64 = s.trim().strip_prefix(PREFIX)?;
        let bytes = STANDARD_NO_PAD.decode(b64.trim_end_matches('=')).ok()?;
        Some(UnlockKey(bytes.try_into().ok()?))
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("32-byte key"))
    }

    /// Seals `plain` into armored text.
    pub fn seal(&self, plain: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).expect("system random");
        let mut buf = plain.to_vec();
        self.aead()
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .expect("seal");
        let mut all = nonce.to_vec();
        all.extend_from_slice(&buf);
        format!("{BEGIN}\n{}\n{END}\n", STANDARD.encode(all))
    }

    /// Opens armored text sealed with this key.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, LockError> {
        let body = sealed
            .trim()
            .strip_prefix(BEGIN)
            .and_then(|s| s.strip_suffix(END))
            .ok_or(LockError::NotSealed)?;
        let all = STANDARD
            .decode(body.trim())
            .map_err(|_| LockError::NotSealed)?;
        if all.len() < NONCE_LEN {
            return Err(LockError::NotSealed);
        }
        let (nonce, ct) = all.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| LockError::NotSealed)?;
        let mut buf = ct.to_vec();
        let plain = self
            .aead()
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| LockError::WrongKey)?;
        Ok(plain.to_vec())
    }
}

/// Whether `text` is sealed data.
pub fn is_sealed(text: &str) -> bool {
    text.trim_start().starts_with(BEGIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_as_text() {
        let k = UnlockKey::generate();
        let s = k.to_string();
        assert!(s.starts_with("SWMKEY-1-"), "{s}");
        assert_eq!(UnlockKey::parse(&s), Some(k));
        assert_eq!(UnlockKey::parse("SWMKEY-1-short"), None);
        assert_eq!(UnlockKey::parse("nonsense"), None);
        assert_eq!(UnlockKey::parse(""), None);
    }

    #[test]
    fn seal_opens_only_with_its_key() {
        let k = UnlockKey::generate();
        let sealed = k.seal(b"-----BEGIN PRIVATE KEY-----\nabc\n");
        assert!(is_sealed(&sealed));
        assert!(!is_sealed("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(
            k.open(&sealed).unwrap(),
            b"-----BEGIN PRIVATE KEY-----\nabc\n"
        );
        assert_eq!(
            UnlockKey::generate().open(&sealed),
            Err(LockError::WrongKey)
        );
        let mut tampered = sealed.clone().into_bytes();
        let i = BEGIN.len() + 5;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        assert!(k.open(std::str::from_utf8(&tampered).unwrap()).is_err());
        assert_eq!(k.open("plain"), Err(LockError::NotSealed));
    }
}
