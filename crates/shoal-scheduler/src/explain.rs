//! Explanations: why a task could not be placed, as the user sees it on a pending task.
//!
//! Each node is counted against the first filter that rejects it (see `filter.rs` for the order),
//! except that a node short of both CPU and memory counts in both resource clauses. The message has
//! one clause per filter that rejected nodes, in filter order:
//! `no suitable node (2 nodes not available for new tasks; 1 node lacks memory)`.

use std::fmt;

use crate::filter::Rejection;

/// Per-filter counts of the nodes that rejected a task; `Display` gives the user-facing message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Explanation {
    /// Nodes considered (all known nodes).
    pub nodes: usize,
    /// Nodes not ready, paused or drained.
    pub not_available: usize,
    /// Nodes without enough CPU left.
    pub lack_cpu: usize,
    /// Nodes without enough memory left.
    pub lack_memory: usize,
    /// Nodes where a hard constraint does not hold.
    pub unsatisfied_constraints: usize,
    /// Nodes where a host-mode port is already published.
    pub host_port_conflict: usize,
    /// Nodes that hold the maximum number of tasks of the service.
    pub max_replicas_reached: usize,
    /// The service's maximum number of tasks per node.
    pub max_replicas_per_node: u64,
    /// Nodes without the executor the task needs.
    pub missing_executor: usize,
    /// The executor the task needs.
    pub executor: String,
}

impl Explanation {
    /// Counts one rejected node.
    pub(crate) fn record(&mut self, rejection: Rejection) {
        match rejection {
            Rejection::NotAvailable => self.not_available += 1,
            Rejection::Resources { cpu, memory } => {
                self.lack_cpu += usize::from(cpu);
                self.lack_memory += usize::from(memory);
            }
            Rejection::Constraints => self.unsatisfied_constraints += 1,
            Rejection::PortConflict => self.host_port_conflict += 1,
            Rejection::MaxReplicas => self.max_replicas_reached += 1,
            Rejection::Executor => self.missing_executor += 1,
        }
    }
}

/// `"1 node lacks"` / `"3 nodes lack"`: the count, the noun and the verb agreeing with it.
fn clause(count: usize, singular: &str, plural: &str, rest: &str) -> String {
    let (noun, verb) = if count == 1 {
        ("node", singular)
    } else {
        ("nodes", plural)
    };
    format!("{count} {noun} {verb}{rest}")
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return f.write_str("no suitable node (no nodes in the cluster)");
        }
        let max = format!(
            " the max replicas per node ({})",
            self.max_replicas_per_node
        );
        let executor = format!(" the {} executor", self.executor);
        let clauses = [
            (self.not_available, "not", "not", " available for new tasks"),
            (self.lack_cpu, "lacks", "lack", " CPU"),
            (self.lack_memory, "lacks", "lack", " memory"),
            (
                self.unsatisfied_constraints,
                "does not",
                "do not",
                " satisfy constraints",
            ),
            (
                self.host_port_conflict,
                "has",
                "have",
                " a host port conflict",
            ),
            (self.max_replicas_reached, "reached", "reached", &max),
            (self.missing_executor, "lacks", "lack", &executor),
        ];
        let text: Vec<String> = clauses
            .into_iter()
            .filter(|&(count, ..)| count > 0)
            .map(|(count, singular, plural, rest)| clause(count, singular, plural, rest))
            .collect();
        if text.is_empty() {
            return f.write_str("no suitable node");
        }
        write!(f, "no suitable node ({})", text.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_follow_filter_order_with_singular_and_plural() {
        let mut e = Explanation {
            nodes: 9,
            max_replicas_per_node: 2,
            executor: "docker".into(),
            ..Default::default()
        };
        e.record(Rejection::Executor);
        e.record(Rejection::Resources {
            cpu: false,
            memory: true,
        });
        e.record(Rejection::NotAvailable);
        e.record(Rejection::NotAvailable);
        e.record(Rejection::Resources {
            cpu: true,
            memory: true,
        });
        e.record(Rejection::Constraints);
        e.record(Rejection::PortConflict);
        e.record(Rejection::PortConflict);
        e.record(Rejection::MaxReplicas);
        assert_eq!(
            e.to_string(),
            "no suitable node (2 nodes not available for new tasks; 1 node lacks CPU; \
             2 nodes lack memory; 1 node does not satisfy constraints; \
             2 nodes have a host port conflict; 1 node reached the max replicas per node (2); \
             1 node lacks the docker executor)"
        );
    }

    #[test]
    fn empty_cluster_says_so() {
        assert_eq!(
            Explanation::default().to_string(),
            "no suitable node (no nodes in the cluster)"
        );
    }
}
