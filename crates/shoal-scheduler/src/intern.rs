//! String interning and a fast hasher for the scheduler's maps.
//!
//! Node attributes (lowercased label values, OS, executors, ...) are stored as `u32` symbols so that
//! checking a constraint on a node is an integer comparison over a small contiguous vector, not a
//! string map lookup. Symbols are reference-counted and freed when the last node using them goes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// An interned string.
pub(crate) type Sym = u32;

/// A `HashMap` with the [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Folded-multiply hasher, a word at a time (in the style of foldhash / rapidhash). Not
/// DoS-resistant: keys are our own indices and IDs the manager generates, never strings an outside
/// client chooses freely.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

const SEED: u64 = 0x243f_6a88_85a3_08d3;
const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

impl FastHasher {
    fn add(&mut self, word: u64) {
        // The 128-bit product folded onto 64 bits: every input bit reaches the low bits hashbrown
        // indexes with, and the high bits it keeps as tags.
        let product = u128::from(self.0 ^ word ^ SEED) * u128::from(MULTIPLIER);
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.add(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }
    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

struct Entry {
    text: Box<str>,
    refs: u32,
}

/// Reference-counted string ↔ symbol table.
#[derive(Default)]
pub(crate) struct Interner {
    ids: FastMap<Box<str>, Sym>,
    entries: Vec<Entry>,
    free: Vec<Sym>,
}

impl Interner {
    /// The symbol for `text`, adding one reference (creating it if needed).
    pub(crate) fn intern(&mut self, text: &str) -> Sym {
        if let Some(&sym) = self.ids.get(text) {
            self.entries[sym as usize].refs += 1;
            return sym;
        }
        let entry = Entry {
            text: text.into(),
            refs: 1,
        };
        let sym = match self.free.pop() {
            Some(sym) => {
                self.entries[sym as usize] = entry;
                sym
            }
            None => {
                self.entries.push(entry);
                Sym::try_from(self.entries.len() - 1).expect("fewer than 2^32 distinct strings")
            }
        };
        self.ids.insert(text.into(), sym);
        sym
    }

    /// Drops one reference to `sym`, freeing it with the last one.
    pub(crate) fn release(&mut self, sym: Sym) {
        let entry = &mut self.entries[sym as usize];
        entry.refs -= 1;
        if entry.refs == 0 {
            let text = std::mem::take(&mut entry.text);
            self.ids.remove(&text);
            self.free.push(sym);
        }
    }

    /// The symbol for `text` if some node uses it (adds no reference).
    pub(crate) fn get(&self, text: &str) -> Option<Sym> {
        self.ids.get(text).copied()
    }

    /// The text of a live symbol.
    pub(crate) fn resolve(&self, sym: Sym) -> &str {
        &self.entries[sym as usize].text
    }

    /// Number of live symbols.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_shared_and_freed_with_the_last_reference() {
        let mut interner = Interner::default();
        let a = interner.intern("a");
        assert_eq!(interner.intern("a"), a);
        let b = interner.intern("b");
        assert_ne!(a, b);
        interner.release(a);
        assert_eq!(interner.get("a"), Some(a));
        interner.release(a);
        assert_eq!(interner.get("a"), None);
        assert_eq!(interner.len(), 1);
        let c = interner.intern("c");
        assert_eq!(c, a, "freed symbols are reused");
        assert_eq!(interner.resolve(c), "c");
        assert_eq!(interner.resolve(b), "b");
    }
}
