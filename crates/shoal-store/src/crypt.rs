//! Encryption at rest of the Raft log and snapshots, with the store's data
//! key (DEK), as Docker Swarm encrypts its Raft WAL and snapshots.
//!
//! The DEK is 256 random bits kept by the node next to its TLS key (sealed
//! with the cluster's unlock key when autolock is on). Everything the store
//! writes is AES-256-GCM under it with a fresh random 96-bit nonce; the
//! additional data binds each sealed piece to where it belongs (a log
//! record's kind and position, a snapshot chunk's number), so pieces cannot
//! be moved around or cut short unnoticed.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use std::io::{Read, Write};

/// Bytes an AES-GCM tag adds.
pub const TAG_LEN: usize = 16;
/// Bytes of a nonce.
pub const NONCE: usize = NONCE_LEN;

/// Names a [`StoreKey`] without revealing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

/// The store's data encryption key.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreKey([u8; 32]);

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(<redacted>)")
    }
}

impl StoreKey {
    /// A new random key.
    pub fn generate() -> StoreKey {
        let mut k = [0u8; 32];
        SystemRandom::new().fill(&mut k).expect("system random");
        StoreKey(k)
    }

    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> StoreKey {
        StoreKey(bytes)
    }

    /// The key's bytes (to persist it).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short name of the key (a digest of it, not the key), written
    /// beside what it seals so the right key of several is found.
    pub fn id(&self) -> KeyId {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.0);
        KeyId(d.as_ref()[..8].try_into().expect("8 bytes"))
    }

    pub(crate) fn cipher(&self) -> Cipher {
        Cipher {
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("32-byte key")),
        }
    }
}

/// A ready AES-256-GCM key.
pub(crate) struct Cipher {
    key: LessSafeKey,
}

impl Cipher {
    /// Appends `nonce ‖ ciphertext ‖ tag` of `plain` to `out`.
    pub fn seal_append(&self, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) {
        // From the thread's CSPRNG (ChaCha, seeded and reseeded from the
        // OS): the same random 96-bit nonces as from the OS, without a
        // `getrandom` system call for every record (two per Raft write, on a
        // follower's critical path).
        let mut nonce = [0u8; NONCE_LEN];
        rand::Rng::fill(&mut rand::rng(), &mut nonce);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[start..],
            )
            .expect("seal");
        out.extend_from_slice(tag.as_ref());
    }

    /// Opens `nonce ‖ ciphertext ‖ tag` in place; `None` if it does not
    /// authenticate (wrong key, altered or torn data).
    pub fn open_in_place<'a>(&self, aad: &[u8], sealed: &'a mut [u8]) -> Option<&'a mut [u8]> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        self.key.open_in_place(nonce, Aad::from(aad), rest).ok()
    }
}

/// Plaintext bytes per sealed snapshot chunk.
const CHUNK: usize = 1 << 20;

fn chunk_aad(stream: u8, n: u64, last: bool) -> [u8; 10] {
    let mut aad = [0u8; 10];
    aad[0] = stream;
    aad[1..9].copy_from_slice(&n.to_le_bytes());
    aad[9] = last as u8;
    aad
}

/// Marks the last chunk in its length word.
const LAST: u32 = 1 << 31;

/// Writes `data` sealed in 1 MiB chunks (`u32 length|last ‖ sealed chunk`);
/// the last one is marked (and the mark authenticated), so a file cut short
/// does not open. `stream` tells apart several streams in one file.
pub(crate) fn seal_stream(
    cipher: &Cipher,
    stream: u8,
    data: &[u8],
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(CHUNK.min(data.len()) + NONCE_LEN + TAG_LEN);
    let count = data.len().div_ceil(CHUNK).max(1);
    for n in 0..count {
        let chunk = &data[(n * CHUNK).min(data.len())..((n + 1) * CHUNK).min(data.len())];
        let last = n + 1 == count;
        buf.clear();
        cipher.seal_append(&chunk_aad(stream, n as u64, last), chunk, &mut buf);
        let word = buf.len() as u32 | if last { LAST } else { 0 };
        out.write_all(&word.to_le_bytes())?;
        out.write_all(&buf)?;
    }
    Ok(())
}

/// Reads what [`seal_stream`] wrote.
pub(crate) fn open_stream(
    cipher: &Cipher,
    stream: u8,
    input: &mut impl Read,
) -> std::io::Result<Vec<u8>> {
    let bad = || std::io::Error::other("the snapshot does not open with this node's data key");
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for n in 0u64.. {
        let mut word = [0u8; 4];
        input.read_exact(&mut word)?;
        let word = u32::from_le_bytes(word);
        let (len, last) = ((word & !LAST) as usize, word & LAST != 0);
        if len > CHUNK + NONCE_LEN + TAG_LEN {
            return Err(bad());
        }
        buf.resize(len, 0);
        input.read_exact(&mut buf)?;
        let plain = cipher
            .open_in_place(&chunk_aad(stream, n, last), &mut buf)
            .ok_or_else(bad)?;
        out.extend_from_slice(plain);
        if last {
            return Ok(out);
        }
    }
    unreachable!("the chunk counter does not overflow")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_detects_tampering() {
        let c = StoreKey::generate().cipher();
        let mut out = Vec::new();
        c.seal_append(b"aad", b"hello", &mut out);
        let mut good = out.clone();
        assert_eq!(c.open_in_place(b"aad", &mut good).unwrap(), b"hello");
        let mut other_aad = out.clone();
        assert!(c.open_in_place(b"aae", &mut other_aad).is_none());
        let mut flipped = out.clone();
        flipped[NONCE_LEN] ^= 1;
        assert!(c.open_in_place(b"aad", &mut flipped).is_none());
        let other = StoreKey::generate().cipher();
        assert!(other.open_in_place(b"aad", &mut out).is_none());
    }

    #[test]
    fn stream_round_trips_and_refuses_truncation() {
        let c = StoreKey::generate().cipher();
        for size in [0usize, 10, CHUNK, CHUNK + 1, 3 * CHUNK + 7] {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut file = Vec::new();
            seal_stream(&c, 1, &data, &mut file).unwrap();
            assert_eq!(open_stream(&c, 1, &mut file.as_slice()).unwrap(), data);
            assert!(open_stream(&c, 2, &mut file.as_slice()).is_err());
            if size > CHUNK {
                // Drop the last chunk: the one before is not marked last.
                let first_len =
                    (u32::from_le_bytes(file[..4].try_into().unwrap()) & !LAST) as usize;
                let cut = &file[..4 + first_len];
                assert!(open_stream(&c, 1, &mut &cut[..]).is_err());
            }
        }
    }
}
