//! Filters: may this node take one more task of the group?
//!
//! A task group is resolved once per batch against the interned node attributes
//! ([`Requirements::resolve`]); each filter is then a few integer comparisons on a node. The filters
//! run in this order, and a rejected node is counted against the first one that rejects it:
//!
//! 1. readiness: node ready and availability active;
//! 2. resources: reserved CPU / memory plus the task's reservation within the node's capacity;
//! 3. constraints: every hard constraint holds;
//! 4. host ports: none of the task's host-mode ports is in use on the node;
//! 5. max replicas: fewer tasks of the service on the node than the per-node maximum;
//! 6. executor: the node has the executor the task needs.
//!
//! Readiness, constraints and executor cannot change during a batch; resources, host ports and max
//! replicas can, as tasks land ([`Requirements::still_fits`]).

use crate::constraint::{Attribute, Constraint, Operator};
use crate::intern::{Interner, Sym};
use crate::node::{NodeAttrs, ENGINE};
use crate::state::{port_key, Usage};
use crate::{Resources, TaskGroup};

/// Why a filter rejected a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Not ready, or paused / drained.
    NotAvailable,
    /// Not enough CPU and/or memory left.
    Resources { cpu: bool, memory: bool },
    /// A hard constraint does not hold.
    Constraints,
    /// A host port is taken.
    PortConflict,
    /// The node holds the maximum number of tasks of the service.
    MaxReplicas,
    /// The node lacks the executor.
    Executor,
}

/// A node attribute with label keys resolved to symbols.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NodeAttr {
    Id,
    Hostname,
    Role,
    Os,
    Arch,
    /// Node label; `None` when no node has the key.
    Label(Option<Sym>),
    /// Engine label; `None` when no node has the key.
    EngineLabel(Option<Sym>),
}

impl NodeAttr {
    /// Resolves an attribute against the interned strings.
    pub(crate) fn resolve(attribute: &Attribute, interner: &Interner) -> NodeAttr {
        match attribute {
            Attribute::NodeId => NodeAttr::Id,
            Attribute::NodeHostname => NodeAttr::Hostname,
            Attribute::NodeRole => NodeAttr::Role,
            Attribute::NodeOs => NodeAttr::Os,
            Attribute::NodeArch => NodeAttr::Arch,
            Attribute::NodeLabel(key) => NodeAttr::Label(interner.get(key)),
            Attribute::EngineLabel(key) => NodeAttr::EngineLabel(interner.get(key)),
        }
    }

    /// The (lowercased) value of this attribute on a node.
    pub(crate) fn value(self, node: &NodeAttrs) -> Option<Sym> {
        match self {
            NodeAttr::Id => Some(node.id),
            NodeAttr::Hostname => Some(node.hostname),
            NodeAttr::Role => Some(node.role),
            NodeAttr::Os => Some(node.os),
            NodeAttr::Arch => Some(node.arch),
            NodeAttr::Label(key) => node.labels.get(key?),
            NodeAttr::EngineLabel(key) => node.labels.get(key? | ENGINE),
        }
    }
}

/// A constraint resolved against the interned strings.
#[derive(Debug, Clone, Copy)]
struct Check {
    attr: NodeAttr,
    operator: Operator,
    /// `None` when no node has this value: `==` fails everywhere, `!=` holds everywhere.
    value: Option<Sym>,
}

impl Check {
    fn resolve(constraint: &Constraint, interner: &Interner) -> Check {
        Check {
            attr: NodeAttr::resolve(&constraint.attribute, interner),
            operator: constraint.operator,
            value: interner.get(&constraint.value.to_ascii_lowercase()),
        }
    }

    fn holds(&self, node: &NodeAttrs) -> bool {
        let found = self.attr.value(node);
        let equal = found.is_some() && found == self.value;
        match self.operator {
            Operator::Eq => equal,
            Operator::Ne => !equal,
        }
    }
}

/// What a task of the group needs from a node, resolved for one batch.
pub(crate) struct Requirements {
    hard: Vec<Check>,
    soft: Vec<Check>,
    cpu: i64,
    memory: i64,
    ports: Vec<u32>,
    max_replicas: u64,
    /// `None`: any node; `Some(None)`: no node has the executor.
    executor: Option<Option<Sym>>,
}

impl Requirements {
    /// Resolves the group's requirements against the interned node attributes.
    pub(crate) fn resolve(group: &TaskGroup, interner: &Interner) -> Requirements {
        let checks = |soft: bool| {
            let matching = group.constraints.iter().filter(|c| c.soft == soft);
            matching.map(|c| Check::resolve(c, interner)).collect()
        };
        let Resources {
            nano_cpus,
            memory_bytes,
        } = group.reservations;
        Requirements {
            hard: checks(false),
            soft: checks(true),
            cpu: nano_cpus,
            memory: memory_bytes,
            ports: group
                .host_ports
                .iter()
                .map(|&(p, n)| port_key(p, n))
                .collect(),
            max_replicas: group.max_replicas_per_node,
            executor: (!group.executor.is_empty()).then(|| interner.get(&group.executor)),
        }
    }

    /// Host-port keys each task uses.
    pub(crate) fn ports(&self) -> &[u32] {
        &self.ports
    }

    /// Whether the group has soft constraints.
    pub(crate) fn has_soft(&self) -> bool {
        !self.soft.is_empty()
    }

    /// Runs all filters in order; `service_tasks` is the service's task count on the node.
    pub(crate) fn check(
        &self,
        node: &NodeAttrs,
        usage: &Usage,
        service_tasks: u32,
    ) -> Result<(), Rejection> {
        if !node.available {
            return Err(Rejection::NotAvailable);
        }
        let (cpu, memory) = self.lacks(node, usage);
        if cpu || memory {
            return Err(Rejection::Resources { cpu, memory });
        }
        if !self.hard.iter().all(|c| c.holds(node)) {
            return Err(Rejection::Constraints);
        }
        if self.port_conflict(usage) {
            return Err(Rejection::PortConflict);
        }
        if self.at_max_replicas(service_tasks) {
            return Err(Rejection::MaxReplicas);
        }
        if let Some(executor) = self.executor {
            if !executor.is_some_and(|e| node.executors.contains(&e)) {
                return Err(Rejection::Executor);
            }
        }
        Ok(())
    }

    /// Whether every soft constraint holds on the node.
    pub(crate) fn satisfies_soft(&self, node: &NodeAttrs) -> bool {
        self.soft.iter().all(|c| c.holds(node))
    }

    /// The filters that change as tasks land: resources, host ports, max replicas.
    pub(crate) fn still_fits(&self, node: &NodeAttrs, usage: &Usage, service_tasks: u32) -> bool {
        self.lacks(node, usage) == (false, false)
            && !self.port_conflict(usage)
            && !self.at_max_replicas(service_tasks)
    }

    /// (lacks CPU, lacks memory); a zero reservation never lacks.
    fn lacks(&self, node: &NodeAttrs, usage: &Usage) -> (bool, bool) {
        let short = |want: i64, used: i128, capacity: i64| {
            want > 0 && used + i128::from(want) > i128::from(capacity)
        };
        (
            short(self.cpu, usage.cpu, node.capacity.nano_cpus),
            short(self.memory, usage.memory, node.capacity.memory_bytes),
        )
    }

    fn port_conflict(&self, usage: &Usage) -> bool {
        !usage.ports.is_empty() && self.ports.iter().any(|p| usage.ports.contains_key(p))
    }

    fn at_max_replicas(&self, service_tasks: u32) -> bool {
        self.max_replicas > 0 && u64::from(service_tasks) >= self.max_replicas
    }
}
