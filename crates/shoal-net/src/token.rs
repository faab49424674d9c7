//! Join tokens, in Docker Swarm's exact shape:
//!
//! ```text
//! SWMTKN-1-<digest>-<secret>
//! ```
//!
//! * `digest`: SHA-256 of the root CA certificate's DER, as a base36 number
//!   zero-padded to 50 characters. A joining node pins the CA with it before it
//!   trusts anything the manager says.
//! * `secret`: 128 random bits as base36, zero-padded to 25 characters. The
//!   manager and worker tokens of a cluster share the digest and differ in the
//!   secret, which says what role the joiner gets.
//!
//! Secrets are compared in constant time.

use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};

use crate::pki::{cert_digest, hex, Role};

/// First field of every join token.
pub const TOKEN_PREFIX: &str = "SWMTKN";
/// The only token format version.
pub const TOKEN_VERSION: &str = "1";
/// Length of the base36 CA digest field.
pub const DIGEST_LEN: usize = 50;
/// Length of the base36 secret field.
pub const SECRET_LEN: usize = 25;

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Why a join token was refused. Every message is one line starting with
/// `invalid join token: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token does not start with `SWMTKN-`.
    #[error("invalid join token: it must start with \"SWMTKN-\"")]
    Prefix,
    /// Not four `-`-separated fields.
    #[error("invalid join token: expected SWMTKN-1-<ca digest>-<secret>")]
    Shape,
    /// A version other than 1.
    #[error("invalid join token: unsupported version {0:?} (expected \"1\")")]
    Version(String),
    /// The digest field is not 50 characters.
    #[error("invalid join token: the CA digest must be {DIGEST_LEN} characters, got {0}")]
    DigestLength(usize),
    /// The digest field has characters outside `[0-9a-z]`.
    #[error("invalid join token: the CA digest may hold only 0-9 and a-z")]
    DigestChars,
    /// The digest field is a number larger than 256 bits.
    #[error("invalid join token: the CA digest is out of range")]
    DigestRange,
    /// The secret field is not 25 characters.
    #[error("invalid join token: the secret must be {SECRET_LEN} characters, got {0}")]
    SecretLength(usize),
    /// The secret field has characters outside `[0-9a-z]`.
    #[error("invalid join token: the secret may hold only 0-9 and a-z")]
    SecretChars,
}

/// A join token made by a manager, for one role.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    role: Role,
    ca_digest: [u8; 32],
    secret: String,
    token: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("role", &self.role)
            .field("ca_digest", &hex(&self.ca_digest))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The full token text, e.g. for `docker swarm join-token`.
impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.token)
    }
}

impl JoinToken {
    /// A new token for `role`, pinning the CA whose DER has SHA-256 `ca_digest`
    /// (see [`crate::pki::RootCa::digest_bytes`]), with a fresh random secret.
    pub fn generate(ca_digest: &[u8; 32], role: Role) -> JoinToken {
        let mut raw = [0u8; 16];
        SystemRandom::new()
            .fill(&mut raw)
            .expect("the system random generator works");
        let secret = to_base36(&raw, SECRET_LEN);
        JoinToken::from_parts(ca_digest, role, secret)
    }

    /// A token from a stored secret (25 base36 characters), e.g. when the
    /// manager reloads its tokens from the store.
    pub fn from_secret(
        ca_digest: &[u8; 32],
        role: Role,
        secret: &str,
    ) -> Result<JoinToken, TokenError> {
        check_secret(secret)?;
        Ok(JoinToken::from_parts(ca_digest, role, secret.to_string()))
    }

    fn from_parts(ca_digest: &[u8; 32], role: Role, secret: String) -> JoinToken {
        let token = format!(
            "{TOKEN_PREFIX}-{TOKEN_VERSION}-{}-{secret}",
            to_base36(ca_digest, DIGEST_LEN)
        );
        JoinToken {
            role,
            ca_digest: *ca_digest,
            secret,
            token,
        }
    }

    /// The role this token grants.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The secret field (25 base36 characters).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The pinned CA digest, lowercase hex.
    pub fn ca_digest_hex(&self) -> String {
        hex(&self.ca_digest)
    }

    /// The full token text.
    pub fn as_str(&self) -> &str {
        &self.token
    }

    /// Whether this token pins the CA certificate `ca_cert_der`.
    pub fn matches_ca(&self, ca_cert_der: &[u8]) -> bool {
        cert_digest(ca_cert_der) == self.ca_digest
    }

    /// Whether a presented token is this one: same CA digest and same secret
    /// (the secret compared in constant time).
    pub fn accepts(&self, presented: &ParsedToken) -> bool {
        let digest_ok = presented.ca_digest == hex(&self.ca_digest);
        let secret_ok = constant_time_eq(presented.secret.as_bytes(), self.secret.as_bytes());
        digest_ok & secret_ok
    }

    /// Parses a token; see [`ParsedToken`].
    pub fn parse(token: &str) -> Result<ParsedToken, TokenError> {
        ParsedToken::parse(token)
    }
}

/// The fields of a join token as a joiner (or a manager checking one) reads them.
#[derive(Clone, PartialEq, Eq)]
pub struct ParsedToken {
    /// SHA-256 of the pinned CA certificate, lowercase hex (64 characters),
    /// the same form as [`crate::pki::RootCa::digest`].
    pub ca_digest: String,
    /// The secret, 25 base36 characters.
    pub secret: String,
}

impl fmt::Debug for ParsedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedToken")
            .field("ca_digest", &self.ca_digest)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl ParsedToken {
    /// Reads `SWMTKN-1-<digest>-<secret>` (surrounding white space ignored).
    pub fn parse(token: &str) -> Result<ParsedToken, TokenError> {
        let token = token.trim();
        let rest = token
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|r| r.strip_prefix('-'))
            .ok_or(TokenError::Prefix)?;
        let fields: Vec<&str> = rest.split('-').collect();
        let [version, digest, secret] = fields[..] else {
            return Err(TokenError::Shape);
        };
        if version != TOKEN_VERSION {
            return Err(TokenError::Version(version.to_string()));
        }
        if digest.len() != DIGEST_LEN {
            return Err(TokenError::DigestLength(digest.chars().count()));
        }
        if !is_base36(digest) {
            return Err(TokenError::DigestChars);
        }
        let bytes = from_base36::<32>(digest).ok_or(TokenError::DigestRange)?;
        check_secret(secret)?;
        Ok(ParsedToken {
            ca_digest: hex(&bytes),
            secret: secret.to_string(),
        })
    }

    /// Whether the token pins the CA certificate `ca_cert_der` (its SHA-256).
    pub fn matches_ca(&self, ca_cert_der: &[u8]) -> bool {
        self.matches_digest(&hex(&cert_digest(ca_cert_der)))
    }

    /// Whether the token pins the CA whose digest (lowercase hex) is `digest_hex`.
    pub fn matches_digest(&self, digest_hex: &str) -> bool {
        self.ca_digest.eq_ignore_ascii_case(digest_hex)
    }

    /// Whether `secret` is this token's secret, compared in constant time.
    pub fn secret_matches(&self, secret: &str) -> bool {
        constant_time_eq(self.secret.as_bytes(), secret.as_bytes())
    }
}

fn check_secret(secret: &str) -> Result<(), TokenError> {
    if secret.len() != SECRET_LEN {
        return Err(TokenError::SecretLength(secret.chars().count()));
    }
    if !is_base36(secret) {
        return Err(TokenError::SecretChars);
    }
    Ok(())
}

fn is_base36(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// Equality whose running time depends only on the lengths, not the contents.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// A big-endian unsigned number in base36, left-padded with zeros to `width`.
/// `width` must be large enough for the number.
fn to_base36(big_endian: &[u8], width: usize) -> String {
    let mut n = big_endian.to_vec();
    let mut digits = Vec::with_capacity(width);
    while n.iter().any(|&b| b != 0) {
        // n = n / 36, remainder is the next digit.
        let mut rem: u32 = 0;
        for byte in n.iter_mut() {
            let cur = (rem << 8) | u32::from(*byte);
            *byte = (cur / 36) as u8;
            rem = cur % 36;
        }
        digits.push(BASE36[rem as usize]);
    }
    assert!(
        digits.len() <= width,
        "number too large for {width} base36 digits"
    );
    digits.resize(width, b'0');
    digits.reverse();
    String::from_utf8(digits).expect("base36 is ascii")
}

/// Reads a base36 string (`[0-9a-z]` only) as an N-byte big-endian number;
/// `None` if it does not fit.
fn from_base36<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut n = [0u8; N];
    for c in s.bytes() {
        let digit = BASE36.iter().position(|&d| d == c)? as u32;
        // n = n * 36 + digit
        let mut carry = digit;
        for byte in n.iter_mut().rev() {
            let cur = u32::from(*byte) * 36 + carry;
            *byte = (cur & 0xff) as u8;
            carry = cur >> 8;
        }
        if carry != 0 {
            return None;
        }
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::RootCa;

    fn digest_of(n: u128) -> [u8; 32] {
        let mut d = [0u8; 32];
        d[16..].copy_from_slice(&n.to_be_bytes());
        d
    }

    #[test]
    fn base36_matches_known_values() {
        assert_eq!(to_base36(&[0], 3), "000");
        assert_eq!(to_base36(&[35], 2), "0z");
        assert_eq!(to_base36(&[1, 0], 4), "0074"); // 256 = 7*36 + 4
                                                   // The largest 256-bit number fits in 50 base36 digits.
        let max = to_base36(&[0xff; 32], DIGEST_LEN);
        assert_eq!(max.len(), DIGEST_LEN);
        assert_eq!(from_base36::<32>(&max), Some([0xff; 32]));
        // ...and 50 'z's does not fit in 256 bits.
        assert_eq!(from_base36::<32>(&"z".repeat(50)), None);
        for n in [0u128, 1, 35, 36, 1295, 1296, u64::MAX as u128, u128::MAX] {
            let s = to_base36(&n.to_be_bytes(), SECRET_LEN);
            assert_eq!(u128::from_str_radix(&s, 36).unwrap(), n, "{s}");
            assert_eq!(from_base36::<16>(&s), Some(n.to_be_bytes()));
        }
    }

    #[test]
    fn round_trip_and_shape() {
        let ca = RootCa::generate().unwrap();
        let token = JoinToken::generate(&ca.digest_bytes(), Role::Worker);
        let text = token.to_string();
        assert!(text.starts_with("SWMTKN-1-"), "{text}");
        assert_eq!(text.len(), "SWMTKN-1-".len() + DIGEST_LEN + 1 + SECRET_LEN);
        let parsed = JoinToken::parse(&format!("  {text}\n")).unwrap();
        assert_eq!(parsed.ca_digest, ca.digest());
        assert_eq!(parsed.secret, token.secret());
        assert!(parsed.matches_ca(&ca.cert_der()));
        assert!(token.matches_ca(&ca.cert_der()));
        assert!(token.accepts(&parsed));
        assert!(parsed.secret_matches(token.secret()));
        assert_eq!(token.role(), Role::Worker);
        assert!(!format!("{token:?}").contains(token.secret()));
        assert!(!format!("{parsed:?}").contains(token.secret()));

        let again =
            JoinToken::from_secret(&ca.digest_bytes(), Role::Worker, token.secret()).unwrap();
        assert_eq!(again, token);
    }

    #[test]
    fn digest_is_swarm_encoding() {
        // Swarm writes the digest as big.Int.Text(36) zero-padded to 50.
        let token = JoinToken::generate(&digest_of(36 * 36 + 5), Role::Manager);
        let digest_field = token.as_str().split('-').nth(2).unwrap();
        assert_eq!(digest_field, format!("{}105", "0".repeat(47)));
    }

    #[test]
    fn secrets_differ_and_compare() {
        let d = digest_of(7);
        let a = JoinToken::generate(&d, Role::Worker);
        let b = JoinToken::generate(&d, Role::Manager);
        assert_ne!(a.secret(), b.secret());
        let pa = JoinToken::parse(a.as_str()).unwrap();
        assert!(a.accepts(&pa));
        assert!(!b.accepts(&pa));
        assert!(!pa.secret_matches(b.secret()));
        assert!(!pa.secret_matches(""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn digest_mismatch_is_detected() {
        let ca = RootCa::generate().unwrap();
        let other = RootCa::generate().unwrap();
        let token = JoinToken::generate(&ca.digest_bytes(), Role::Worker);
        let parsed = JoinToken::parse(token.as_str()).unwrap();
        assert!(!parsed.matches_ca(&other.cert_der()));
        assert!(!token.matches_ca(&other.cert_der()));
        assert!(!parsed.matches_digest(&other.digest()));
        // Same secret, other CA: refused.
        let forged =
            JoinToken::from_secret(&other.digest_bytes(), Role::Worker, token.secret()).unwrap();
        assert!(!token.accepts(&JoinToken::parse(forged.as_str()).unwrap()));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = JoinToken::generate(&digest_of(99), Role::Worker).to_string();
        let fields: Vec<&str> = good.split('-').collect();
        let (digest, secret) = (fields[2], fields[3]);
        let cases: Vec<(String, TokenError)> = vec![
            (String::new(), TokenError::Prefix),
            (good.replace("SWMTKN", "SWMTKX"), TokenError::Prefix),
            (format!("swmtkn-1-{digest}-{secret}"), TokenError::Prefix),
            (
                format!("SWMTKN-2-{digest}-{secret}"),
                TokenError::Version("2".into()),
            ),
            (format!("SWMTKN-1-{digest}"), TokenError::Shape),
            (format!("SWMTKN-1-{digest}-{secret}-x"), TokenError::Shape),
            (
                format!("SWMTKN-1-{}-{secret}", &digest[1..]),
                TokenError::DigestLength(49),
            ),
            (
                format!("SWMTKN-1-{digest}0-{secret}"),
                TokenError::DigestLength(51),
            ),
            (
                format!("SWMTKN-1-{}A-{secret}", &digest[1..]),
                TokenError::DigestChars,
            ),
            (
                format!("SWMTKN-1-{}-{secret}", "z".repeat(50)),
                TokenError::DigestRange,
            ),
            (
                format!("SWMTKN-1-{digest}-{}", &secret[1..]),
                TokenError::SecretLength(24),
            ),
            (
                format!("SWMTKN-1-{digest}-{}!", &secret[1..]),
                TokenError::SecretChars,
            ),
            (
                format!("SWMTKN-1-{digest}-{}_", &secret[1..]),
                TokenError::SecretChars,
            ),
        ];
        for (text, want) in cases {
            let err = JoinToken::parse(&text).unwrap_err();
            assert_eq!(err, want, "{text}");
            let msg = err.to_string();
            assert!(msg.starts_with("invalid join token: "), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        assert!(JoinToken::from_secret(&digest_of(1), Role::Worker, "short").is_err());
    }
}
