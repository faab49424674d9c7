//! A node's attributes as the filters read them: interned, lowercased, compact.
//!
//! Everything a constraint, preference or executor check looks at is a `u32` symbol, and the first
//! few labels live inline in the node's slot, so checking a node touches one small struct.

use crate::intern::{Interner, Sym};
use crate::{Availability, NodeInfo, Resources};

/// A node's interned attributes.
pub(crate) struct NodeAttrs {
    /// Lowercased node ID.
    pub id: Sym,
    /// Lowercased host name.
    pub hostname: Sym,
    /// `manager` or `worker`.
    pub role: Sym,
    /// Lowercased OS.
    pub os: Sym,
    /// Lowercased architecture.
    pub arch: Sym,
    /// Ready and active: may take new tasks.
    pub available: bool,
    /// Node and engine labels.
    pub labels: Labels,
    /// Executors the node has.
    pub executors: Vec<Sym>,
    /// What the node offers.
    pub capacity: Resources,
}

impl NodeAttrs {
    /// Interns what the filters need of `node` (one reference per symbol used).
    pub(crate) fn intern(node: &NodeInfo, interner: &mut Interner) -> NodeAttrs {
        let mut lower = |text: &str| interner.intern(&text.to_ascii_lowercase());
        let id = lower(&node.id);
        let hostname = lower(&node.hostname);
        let role = lower(node.role.as_str());
        let os = lower(&node.os);
        let arch = lower(&node.arch);
        let mut pairs = Vec::with_capacity(node.labels.len() + node.engine_labels.len());
        for (tag, labels) in [(0, &node.labels), (ENGINE, &node.engine_labels)] {
            for (key, value) in labels {
                let key = interner.intern(key);
                assert!(key < ENGINE, "fewer than 2^31 distinct strings");
                pairs.push((key | tag, interner.intern(&value.to_ascii_lowercase())));
            }
        }
        NodeAttrs {
            id,
            hostname,
            role,
            os,
            arch,
            available: node.ready && node.availability == Availability::Active,
            labels: Labels::new(pairs),
            executors: node.executors.iter().map(|e| interner.intern(e)).collect(),
            capacity: node.capacity,
        }
    }

    /// Gives back the references taken by [`NodeAttrs::intern`].
    pub(crate) fn release(self, interner: &mut Interner) {
        let syms = [self.id, self.hostname, self.role, self.os, self.arch];
        let labels = self.labels.iter().flat_map(|&(k, v)| [k & !ENGINE, v]);
        for sym in syms.into_iter().chain(labels).chain(self.executors) {
            interner.release(sym);
        }
    }
}

/// How many labels a node keeps inline (enough for most nodes).
const INLINE_LABELS: usize = 4;

/// The tag of engine label keys in [`Labels`].
pub(crate) const ENGINE: Sym = 1 << 31;

/// A node's labels as (key, lowercased value) pairs, engine label keys tagged with [`ENGINE`].
/// The first few are stored inline so that a constraint check reads them without a pointer chase.
pub(crate) struct Labels {
    inline: [(Sym, Sym); INLINE_LABELS],
    len: usize,
    spilled: Vec<(Sym, Sym)>,
}

impl Labels {
    fn new(pairs: Vec<(Sym, Sym)>) -> Labels {
        let mut inline = [(0, 0); INLINE_LABELS];
        let len = pairs.len();
        let spilled = match pairs.len() {
            n if n <= INLINE_LABELS => {
                inline[..n].copy_from_slice(&pairs);
                Vec::new()
            }
            _ => {
                inline.copy_from_slice(&pairs[..INLINE_LABELS]);
                pairs[INLINE_LABELS..].to_vec()
            }
        };
        Labels {
            inline,
            len,
            spilled,
        }
    }

    /// All (key, value) pairs.
    fn iter(&self) -> impl Iterator<Item = &(Sym, Sym)> {
        self.inline[..self.len.min(INLINE_LABELS)]
            .iter()
            .chain(&self.spilled)
    }

    /// The value of the label `key` (tagged with [`ENGINE`] for engine labels).
    pub(crate) fn get(&self, key: Sym) -> Option<Sym> {
        self.iter().find(|&&(k, _)| k == key).map(|&(_, v)| v)
    }
}
