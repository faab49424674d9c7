//! Object identifiers: 25 characters of base36, like Docker Swarm's.

use rand::Rng;

const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Length of an object ID (128 random bits in base36, zero-padded).
pub const ID_LEN: usize = 25;

/// A new random object ID: 128 random bits written in base36, 25 characters.
pub fn new_id() -> String {
    let n: u128 = rand::rng().random();
    base36(n, ID_LEN)
}

/// `n` in base36, left-padded with zeros to `width` characters.
pub fn base36(mut n: u128, width: usize) -> String {
    let mut out = Vec::with_capacity(width);
    while n > 0 {
        out.push(ALPHABET[(n % 36) as usize]);
        n /= 36;
    }
    while out.len() < width {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8(out).expect("base36 is ascii")
}

/// A random nonzero u64, used for Raft member ids.
pub fn new_raft_id() -> u64 {
    loop {
        let n: u64 = rand::rng().random();
        if n != 0 {
            return n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_25_base36_chars_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), ID_LEN);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
        assert_ne!(a, b);
    }

    #[test]
    fn base36_pads() {
        assert_eq!(base36(35, 3), "00z");
        assert_eq!(base36(36, 2), "10");
    }
}
