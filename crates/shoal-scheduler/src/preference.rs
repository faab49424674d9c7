//! Placement preferences: spreading a service evenly over the values of node attributes.
//!
//! `spread=node.labels.zone` splits the fitting nodes into one group per distinct zone (nodes
//! without the label form one more group); several preferences nest (zones, then racks within each
//! zone). Each task walks down the [`Tree`] into the child group holding the fewest tasks of the
//! service, and the strategy picks a node inside the leaf group it reaches. A group whose nodes are
//! all full is dropped for the rest of the batch.

use std::cmp::Reverse;
use std::collections::binary_heap::{BinaryHeap, PeekMut};
use std::fmt;

use crate::constraint::{Attribute, ConstraintError};
use crate::filter::NodeAttr;
use crate::intern::{FastMap, Sym};
use crate::strategy::{Leaf, NodeLoad, SplitMix64, Strategy};

/// A placement preference of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Preference {
    /// Spread tasks evenly over the distinct values of the attribute.
    Spread(Attribute),
}

impl fmt::Display for Preference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Preference::Spread(attribute) => write!(f, "spread={attribute}"),
        }
    }
}

/// Parses a preference such as `spread=node.labels.zone` (as in `docker service create
/// --placement-pref`).
pub fn parse_preference(preference: &str) -> Result<Preference, ConstraintError> {
    let invalid = |reason| ConstraintError::Preference {
        preference: preference.to_owned(),
        reason,
    };
    let (kind, key) = preference
        .split_once('=')
        .ok_or_else(|| invalid("expected \"spread=<key>\""))?;
    if !kind.trim().eq_ignore_ascii_case("spread") {
        return Err(invalid("expected \"spread=<key>\""));
    }
    let attribute = Attribute::parse(key).map_err(|_| invalid("unknown key"))?;
    Ok(Preference::Spread(attribute))
}

/// Parses a service's preferences, outermost first; the first bad one is the error.
pub fn parse_preferences(preferences: &[String]) -> Result<Vec<Preference>, ConstraintError> {
    preferences.iter().map(|p| parse_preference(p)).collect()
}

/// A candidate node of a batch: slot and load.
pub(crate) type Candidate = (u32, NodeLoad);

enum Group {
    /// Min-heap of children on (tasks of the service in the child, child order, child index).
    Inner(BinaryHeap<Reverse<(u32, u32, u32)>>),
    Leaf(Leaf),
}

/// The fitting nodes of a batch grouped by preference values; the root is group 0.
pub(crate) struct Tree {
    groups: Vec<Group>,
}

/// A group while the tree is built.
#[derive(Default)]
struct Draft {
    service_tasks: u32,
    /// (value, child index); leaves have none.
    children: Vec<(Option<Sym>, u32)>,
    nodes: Vec<Candidate>,
}

impl Tree {
    /// Groups `candidates` by the values `value_of(slot, attr)` of each preference, in order;
    /// `text_of` orders sibling groups by value (the group without the value last).
    pub(crate) fn build<'s>(
        strategy: Strategy,
        preferences: &[NodeAttr],
        candidates: impl Iterator<Item = Candidate>,
        value_of: impl Fn(u32, NodeAttr) -> Option<Sym>,
        text_of: impl Fn(Sym) -> &'s str,
    ) -> Tree {
        if preferences.is_empty() {
            return Tree {
                groups: vec![Group::Leaf(Leaf::new(strategy, candidates))],
            };
        }
        let mut drafts = vec![Draft::default()];
        let mut index: FastMap<(u32, Option<Sym>), u32> = FastMap::default();
        for (slot, load) in candidates {
            let mut group = 0;
            drafts[0].service_tasks += load.service_tasks;
            for &attr in preferences {
                let value = value_of(slot, attr);
                let siblings = &drafts[group as usize].children;
                // Few groups (zones, racks): a scan beats hashing; many (node IDs): the index.
                let known = if siblings.len() <= 8 {
                    siblings
                        .iter()
                        .find(|&&(v, _)| v == value)
                        .map(|&(_, child)| child)
                } else {
                    index.get(&(group, value)).copied()
                };
                let child = known.unwrap_or_else(|| {
                    let child = drafts.len() as u32;
                    drafts[group as usize].children.push((value, child));
                    drafts.push(Draft::default());
                    index.insert((group, value), child);
                    child
                });
                drafts[child as usize].service_tasks += load.service_tasks;
                group = child;
            }
            drafts[group as usize].nodes.push((slot, load));
        }
        let service_tasks: Vec<u32> = drafts.iter().map(|d| d.service_tasks).collect();
        let groups = drafts
            .into_iter()
            .map(|mut draft| {
                if draft.children.is_empty() {
                    return Group::Leaf(Leaf::new(strategy, draft.nodes.into_iter()));
                }
                draft.children.sort_by(|a, b| match (a.0, b.0) {
                    (Some(a), Some(b)) => text_of(a).cmp(text_of(b)),
                    (a, b) => a.is_none().cmp(&b.is_none()),
                });
                let heap = draft
                    .children
                    .iter()
                    .enumerate()
                    .map(|(order, &(_, child))| {
                        Reverse((service_tasks[child as usize], order as u32, child))
                    });
                Group::Inner(heap.collect())
            })
            .collect();
        Tree { groups }
    }

    /// Places one task: walks to the least-loaded leaf with room, takes its best node and calls
    /// `commit(slot, rank)`, which records the task and returns the node's new load if it can take
    /// another. Returns the slot, or `None` when no node in the tree has room.
    pub(crate) fn place(
        &mut self,
        rng: &mut SplitMix64,
        commit: &mut impl FnMut(u32, u32) -> Option<NodeLoad>,
    ) -> Option<u32> {
        self.place_in(0, rng, commit)
    }

    fn place_in(
        &mut self,
        group: u32,
        rng: &mut SplitMix64,
        commit: &mut impl FnMut(u32, u32) -> Option<NodeLoad>,
    ) -> Option<u32> {
        let mut children = match &mut self.groups[group as usize] {
            Group::Leaf(leaf) => return leaf.place(rng, commit),
            // Taken out while a child is searched, so the recursion can borrow the tree.
            Group::Inner(children) => std::mem::take(children),
        };
        let mut placed = None;
        while let Some(mut least) = children.peek_mut() {
            let Reverse((count, order, child)) = *least;
            placed = self.place_in(child, rng, commit);
            if placed.is_some() {
                *least = Reverse((count + 1, order, child));
                break;
            }
            // No room left in this child: it is done for this batch.
            PeekMut::pop(least);
        }
        self.groups[group as usize] = Group::Inner(children);
        placed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_parse_with_known_keys_only() {
        assert_eq!(
            parse_preference("spread=node.labels.zone").unwrap(),
            Preference::Spread(Attribute::NodeLabel("zone".into()))
        );
        assert_eq!(
            parse_preference(" Spread = node.id ").unwrap(),
            Preference::Spread(Attribute::NodeId)
        );
        assert_eq!(
            parse_preference("spread=node.foo").unwrap_err().to_string(),
            r#"invalid placement preference "spread=node.foo": unknown key"#
        );
        assert_eq!(
            parse_preference("pack=node.id").unwrap_err().to_string(),
            r#"invalid placement preference "pack=node.id": expected "spread=<key>""#
        );
        let prefs = [
            "spread=node.labels.zone".to_owned(),
            "spread=engine.labels.rack".to_owned(),
        ];
        assert_eq!(
            parse_preferences(&prefs).unwrap()[1].to_string(),
            "spread=engine.labels.rack"
        );
    }
}
