//! Pure task placement for shoal: which node should each new task of a service run on?
//!
//! The manager owns one [`Scheduler`], feeds it nodes ([`Scheduler::upsert_node`]) and tasks already
//! placed ([`Scheduler::add_task`]), then asks it to place batches of new tasks of one service
//! ([`Scheduler::schedule`]). A batch runs through the filters (readiness, resources, constraints,
//! host ports, max replicas per node, executor), then the placement preferences split the fitting
//! nodes into groups, and the service's [`Strategy`] picks a node inside the chosen group. A task that
//! fits nowhere gets an [`Explanation`] counting the nodes each filter rejected.
//!
//! No I/O, no async, no dependencies: nodes and tasks in, placements out. The state is kept
//! incrementally (per-node reserved resources, per-node per-service task counts, used host ports),
//! so placing a batch costs one pass over the nodes plus a heap operation per task, never a loop over
//! all nodes × all tasks. See README.md for the flow.
//!
//! ```
//! use shoal_scheduler::{parse_constraints, NodeInfo, Resources, Scheduler, TaskGroup};
//!
//! let mut scheduler = Scheduler::new();
//! let mut node = NodeInfo::new("node-1");
//! node.capacity = Resources::new(2_000_000_000, 8 << 30); // 2 CPUs, 8 GiB
//! node.labels.insert("zone".into(), "a".into());
//! scheduler.upsert_node(node);
//!
//! let group = TaskGroup {
//!     constraints: parse_constraints(&["node.labels.zone==a".into()]).unwrap(),
//!     reservations: Resources::new(500_000_000, 1 << 30), // half a CPU, 1 GiB
//!     ..TaskGroup::new("web")
//! };
//! let placement = scheduler.schedule(&group, &["web.1", "web.2", "web.3", "web.4", "web.5"]);
//! assert_eq!(placement.nodes, ["node-1"; 4]);
//! let why = placement.explanation.unwrap().to_string();
//! assert_eq!(why, "no suitable node (1 node lacks CPU)");
//! assert_eq!(scheduler.service_tasks_on_node("web", "node-1"), 4);
//! ```

#![warn(missing_docs)]

mod constraint;
mod explain;
mod filter;
mod intern;
mod node;
mod preference;
mod schedule;
mod state;
mod strategy;

use std::collections::BTreeMap;

pub use constraint::{
    parse_constraint, parse_constraints, Attribute, Constraint, ConstraintError, Operator,
};
pub use explain::Explanation;
pub use preference::{parse_preference, parse_preferences, Preference};
pub use schedule::Placement;
pub use state::{NodeUsage, Scheduler};
pub use strategy::Strategy;

/// CPU and memory, as reserved by a task or offered by a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// CPU in units of 1e-9 CPUs.
    pub nano_cpus: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
}

impl Resources {
    /// Resources of `nano_cpus` nano-CPUs and `memory_bytes` bytes.
    pub const fn new(nano_cpus: i64, memory_bytes: i64) -> Self {
        Resources {
            nano_cpus,
            memory_bytes,
        }
    }
}

/// The role of a node in the cluster (`node.role` in constraints).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum NodeRole {
    /// Runs tasks only.
    #[default]
    Worker,
    /// Holds the replicated state; may run tasks too.
    Manager,
}

impl NodeRole {
    /// The lowercase name used in constraints: `worker` or `manager`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Worker => "worker",
            NodeRole::Manager => "manager",
        }
    }
}

/// Whether a node accepts new tasks, as set by the operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Availability {
    /// Accepts new tasks.
    #[default]
    Active,
    /// Keeps its tasks, accepts no new ones.
    Pause,
    /// Its tasks move elsewhere; accepts no new ones.
    Drain,
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// What the scheduler needs to know about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node ID.
    pub id: String,
    /// Host name (`node.hostname`).
    pub hostname: String,
    /// Manager or worker (`node.role`).
    pub role: NodeRole,
    /// True when the node is up (its agent heartbeats).
    pub ready: bool,
    /// Operator-set availability.
    pub availability: Availability,
    /// Operating system, e.g. `linux` (`node.platform.os`).
    pub os: String,
    /// Architecture, e.g. `x86_64` (`node.platform.arch`).
    pub arch: String,
    /// Node labels (`node.labels.<key>`).
    pub labels: BTreeMap<String, String>,
    /// Engine labels (`engine.labels.<key>`).
    pub engine_labels: BTreeMap<String, String>,
    /// Total CPU and memory the node offers to tasks.
    pub capacity: Resources,
    /// Executors the node can run tasks with, e.g. `process`, `docker`.
    pub executors: Vec<String>,
}

impl NodeInfo {
    /// A ready, active linux/x86_64 worker named `id` with the `process` executor and no capacity.
    pub fn new(id: impl Into<String>) -> Self {
        let id = id.into();
        NodeInfo {
            hostname: id.clone(),
            id,
            role: NodeRole::Worker,
            ready: true,
            availability: Availability::Active,
            os: "linux".to_owned(),
            arch: "x86_64".to_owned(),
            labels: BTreeMap::new(),
            engine_labels: BTreeMap::new(),
            capacity: Resources::default(),
            executors: vec!["process".to_owned()],
        }
    }
}

/// A task already placed on a node, as the scheduler accounts for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskInfo {
    /// Task ID.
    pub id: String,
    /// ID of the service the task belongs to.
    pub service_id: String,
    /// ID of the node the task is placed on.
    pub node_id: String,
    /// CPU and memory reserved for the task.
    pub reservations: Resources,
    /// Ports the task publishes in host mode.
    pub host_ports: Vec<(Protocol, u16)>,
}

/// The placement requirements shared by all tasks of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskGroup {
    /// ID of the service.
    pub service_id: String,
    /// Placement constraints, from [`parse_constraints`].
    pub constraints: Vec<Constraint>,
    /// Placement preferences, outermost first, from [`parse_preferences`].
    pub preferences: Vec<Preference>,
    /// CPU and memory each task reserves.
    pub reservations: Resources,
    /// At most this many tasks of the service per node; 0 means unlimited.
    pub max_replicas_per_node: u64,
    /// Ports each task publishes in host mode.
    pub host_ports: Vec<(Protocol, u16)>,
    /// Executor each task needs, e.g. `process`; empty means any node will do.
    pub executor: String,
    /// How to choose among the nodes that fit.
    pub strategy: Strategy,
}

impl TaskGroup {
    /// A group for `service_id` with no requirements and the default (spread) strategy.
    pub fn new(service_id: impl Into<String>) -> Self {
        TaskGroup {
            service_id: service_id.into(),
            ..TaskGroup::default()
        }
    }
}
