//! Strategies: how to choose among the nodes of one group that fit a task.
//!
//! A [`Leaf`] holds the fitting nodes of one leaf group of the preference tree, ordered for the
//! service's [`Strategy`]. Placing a task takes the best node; the caller records the task and
//! returns the node's new load if it can still take another task of the batch, and the node is
//! re-ranked in place. Only the chosen node's load changes between two picks, so a binary heap
//! stays exact and a pick costs one O(log n) sift.

use std::cmp::Reverse;
use std::collections::binary_heap::{BinaryHeap, PeekMut};

/// How to choose a node among those that fit, selectable per service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Fewest tasks of this service, then fewest tasks overall, then lowest node ID.
    #[default]
    Spread,
    /// Fullest node that still fits (highest reserved CPU + memory fraction), then most tasks,
    /// then lowest node ID.
    Binpack,
    /// Any fitting node, uniformly at random (seeded, see [`crate::Scheduler::with_seed`]).
    Random,
}

/// What a strategy ranks a node by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeLoad {
    /// Tasks of the batch's service on the node.
    pub service_tasks: u32,
    /// Tasks of all services on the node.
    pub tasks: u32,
    /// Reserved CPU fraction + reserved memory fraction, each in units of 2^-32.
    pub fullness: u64,
    /// Position of the node in node-ID order (the tie-break).
    pub rank: u32,
}

/// The reserved fraction of `capacity`, in units of 2^-32 (0 when nothing is offered).
pub(crate) fn fraction(reserved: i128, capacity: i64) -> u64 {
    if capacity <= 0 {
        return 0;
    }
    let reserved = reserved.clamp(0, i128::from(capacity));
    ((reserved << 32) / i128::from(capacity)) as u64
}

/// The fitting nodes of one leaf group, ordered for a strategy.
pub(crate) enum Leaf {
    /// Min-heap on (service tasks, tasks, rank).
    Spread(BinaryHeap<Reverse<(u32, u32, u32, u32)>>),
    /// Max-heap on (fullness, tasks, lowest rank).
    Binpack(BinaryHeap<(u64, u32, Reverse<u32>, u32)>),
    /// Unordered (slot, rank) pairs.
    Random(Vec<(u32, u32)>),
}

impl Leaf {
    /// A leaf over `nodes` (node slot and load), built in O(n).
    pub(crate) fn new(strategy: Strategy, nodes: impl Iterator<Item = (u32, NodeLoad)>) -> Leaf {
        match strategy {
            Strategy::Spread => Leaf::Spread(nodes.map(spread_key).collect()),
            Strategy::Binpack => Leaf::Binpack(nodes.map(binpack_key).collect()),
            Strategy::Random => Leaf::Random(nodes.map(|(slot, l)| (slot, l.rank)).collect()),
        }
    }

    /// Picks the best node and calls `commit(slot, rank)`, which records a task on it and returns
    /// its new load if it can take another; the node is re-ranked in place or dropped.
    pub(crate) fn place(
        &mut self,
        rng: &mut SplitMix64,
        commit: &mut impl FnMut(u32, u32) -> Option<NodeLoad>,
    ) -> Option<u32> {
        match self {
            Leaf::Spread(heap) => {
                let mut best = heap.peek_mut()?;
                let Reverse((_, _, rank, slot)) = *best;
                match commit(slot, rank) {
                    Some(load) => *best = spread_key((slot, load)),
                    None => drop(PeekMut::pop(best)),
                }
                Some(slot)
            }
            Leaf::Binpack(heap) => {
                let mut best = heap.peek_mut()?;
                let (_, _, Reverse(rank), slot) = *best;
                match commit(slot, rank) {
                    Some(load) => *best = binpack_key((slot, load)),
                    None => drop(PeekMut::pop(best)),
                }
                Some(slot)
            }
            Leaf::Random(nodes) => {
                if nodes.is_empty() {
                    return None;
                }
                let at = rng.below(nodes.len());
                let (slot, rank) = nodes[at];
                if commit(slot, rank).is_none() {
                    nodes.swap_remove(at);
                }
                Some(slot)
            }
        }
    }
}

fn spread_key((slot, l): (u32, NodeLoad)) -> Reverse<(u32, u32, u32, u32)> {
    Reverse((l.service_tasks, l.tasks, l.rank, slot))
}

fn binpack_key((slot, l): (u32, NodeLoad)) -> (u64, u32, Reverse<u32>, u32) {
    (l.fullness, l.tasks, Reverse(l.rank), slot)
}

/// SplitMix64: a tiny, fast, seedable generator; good enough to scatter tasks, not for secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0), by multiply-high (bias below 2^-32 for our n).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(service_tasks: u32, tasks: u32, fullness: u64, rank: u32) -> NodeLoad {
        NodeLoad {
            service_tasks,
            tasks,
            fullness,
            rank,
        }
    }

    /// The order in which a leaf hands out its nodes when each takes one task only.
    fn order(mut leaf: Leaf) -> Vec<u32> {
        let mut rng = SplitMix64(1);
        std::iter::from_fn(|| leaf.place(&mut rng, &mut |_, _| None)).collect()
    }

    #[test]
    fn a_node_that_still_fits_is_ranked_again_with_its_new_load() {
        let nodes = [(10, load(0, 0, 0, 0)), (11, load(0, 0, 0, 1))];
        let mut leaf = Leaf::new(Strategy::Spread, nodes.into_iter());
        let mut rng = SplitMix64(1);
        let mut picks = Vec::new();
        let mut commit = |slot, rank| {
            picks.push(slot);
            let placed = picks.iter().filter(|&&s| s == slot).count() as u32;
            (placed < 2).then_some(load(placed, placed, 0, rank))
        };
        while leaf.place(&mut rng, &mut commit).is_some() {}
        assert_eq!(picks, [10, 11, 10, 11]);
    }

    #[test]
    fn spread_prefers_fewest_service_tasks_then_fewest_tasks_then_id() {
        let nodes = [
            (10, load(1, 1, 0, 0)),
            (11, load(0, 5, 0, 1)),
            (12, load(0, 2, 0, 3)),
            (13, load(0, 2, 0, 2)),
        ];
        assert_eq!(
            order(Leaf::new(Strategy::Spread, nodes.into_iter())),
            vec![13, 12, 11, 10]
        );
    }

    #[test]
    fn binpack_prefers_fullest_then_most_tasks_then_id() {
        let nodes = [
            (10, load(0, 9, 5, 0)),
            (11, load(0, 1, 7, 1)),
            (12, load(0, 3, 5, 3)),
            (13, load(0, 3, 5, 2)),
        ];
        assert_eq!(
            order(Leaf::new(Strategy::Binpack, nodes.into_iter())),
            vec![11, 10, 13, 12]
        );
    }

    #[test]
    fn random_is_deterministic_for_a_seed_and_visits_every_node() {
        let nodes = || (0..50).map(|i| (i, load(0, 0, 0, i)));
        let mut first = order(Leaf::new(Strategy::Random, nodes()));
        let second = order(Leaf::new(Strategy::Random, nodes()));
        assert_eq!(first, second);
        assert_ne!(first, (0..50).collect::<Vec<_>>(), "not the input order");
        first.sort_unstable();
        assert_eq!(first, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn fraction_is_clamped_and_zero_without_capacity() {
        assert_eq!(fraction(5, 0), 0);
        assert_eq!(fraction(1, 2), 1 << 31);
        assert_eq!(fraction(9, 2), 1 << 32);
        assert_eq!(fraction(-3, 2), 0);
    }
}
