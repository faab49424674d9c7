//! The write commands replicated through Raft, and their results.
//!
//! A [`Command`] is a batch of [`Op`]s. Creation/update times are set by the
//! proposer, never during apply, so every replica applies the same bytes to
//! the same state. The version check (`Expect`) happens during apply, on the
//! state every replica agrees on, so concurrent writers cannot lose each
//! other's changes.

use serde::{Deserialize, Serialize};
use shoal_api::{Cluster, Config, Network, Node, Secret, Service, Task, Timestamp};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What kind of object an op targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// Nodes.
    Node,
    /// Services.
    Service,
    /// Tasks.
    Task,
    /// Networks.
    Network,
    /// Secrets.
    Secret,
    /// Configs.
    Config,
    /// The cluster object.
    Cluster,
}

impl Kind {
    /// Lowercase name for messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Service => "service",
            Kind::Task => "task",
            Kind::Network => "network",
            Kind::Secret => "secret",
            Kind::Config => "config",
            Kind::Cluster => "cluster",
        }
    }
}

/// The cluster object plus what only managers may see (CA key, token secrets).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The object as the API shows it.
    pub cluster: Cluster,
    /// Root CA certificate, PEM.
    pub ca_cert_pem: String,
    /// Root CA private key, PEM.
    pub ca_key_pem: String,
    /// The managers' unlock key (`SWMKEY-1-…`) while autolock is on, else empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unlock_key: String,
    /// Nodes removed from the cluster (node ID → when). Their certificates
    /// stay valid until they expire, so this is what keeps them out; a
    /// node neither here nor in the nodes table is one a lagging replica
    /// has not heard of yet.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub removed_nodes: BTreeMap<String, Timestamp>,
}

/// Any stored object. Objects are immutable once stored and shared by
/// reference: the tables, change events, commands and the log's in-memory
/// tail hold the same allocation (the JSON is the same as the plain object's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Object {
    /// A node.
    Node(Arc<Node>),
    /// A service.
    Service(Arc<Service>),
    /// A task.
    Task(Arc<Task>),
    /// A network.
    Network(Arc<Network>),
    /// A secret.
    Secret(Arc<Secret>),
    /// A config.
    Config(Arc<Config>),
    /// The cluster.
    Cluster(Arc<ClusterRecord>),
}

macro_rules! object_from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for Object {
            fn from(o: $t) -> Object {
                Object::$v(Arc::new(o))
            }
        }
        impl From<Arc<$t>> for Object {
            fn from(o: Arc<$t>) -> Object {
                Object::$v(o)
            }
        }
    )*};
}

object_from!(Node => Node, Service => Service, Task => Task, Network => Network,
    Config => Config, ClusterRecord => Cluster);

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Node(_) => Kind::Node,
            Object::Service(_) => Kind::Service,
            Object::Task(_) => Kind::Task,
            Object::Network(_) => Kind::Network,
            Object::Secret(_) => Kind::Secret,
            Object::Config(_) => Kind::Config,
            Object::Cluster(_) => Kind::Cluster,
        }
    }

    /// The object's ID.
    pub fn id(&self) -> &str {
        match self {
            Object::Node(o) => &o.id,
            Object::Service(o) => &o.id,
            Object::Task(o) => &o.id,
            Object::Network(o) => &o.id,
            Object::Secret(o) => &o.id,
            Object::Config(o) => &o.id,
            Object::Cluster(o) => &o.cluster.id,
        }
    }

    /// The object's unique name, for kinds whose names are unique.
    pub fn unique_name(&self) -> Option<&str> {
        match self {
            Object::Service(o) => Some(&o.spec.name),
            Object::Network(o) => Some(&o.spec.name),
            Object::Secret(o) => Some(&o.spec.name),
            Object::Config(o) => Some(&o.spec.name),
            _ => None,
        }
    }

    /// The object's version index.
    pub fn version(&self) -> u64 {
        match self {
            Object::Node(o) => o.version.index,
            Object::Service(o) => o.version.index,
            Object::Task(o) => o.version.index,
            Object::Network(o) => o.version.index,
            Object::Secret(o) => o.version.index,
            Object::Config(o) => o.version.index,
            Object::Cluster(o) => o.cluster.version.index,
        }
    }

    /// Sets the object's version index (copies the object if it is shared).
    pub fn set_version(&mut self, index: u64) {
        if self.version() == index {
            return;
        }
        let v = match self {
            Object::Node(o) => &mut Arc::make_mut(o).version,
            Object::Service(o) => &mut Arc::make_mut(o).version,
            Object::Task(o) => &mut Arc::make_mut(o).version,
            Object::Network(o) => &mut Arc::make_mut(o).version,
            Object::Secret(o) => &mut Arc::make_mut(o).version,
            Object::Config(o) => &mut Arc::make_mut(o).version,
            Object::Cluster(o) => &mut Arc::make_mut(o).cluster.version,
        };
        v.index = index;
    }
}

/// The precondition of a put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// Create: the ID must not exist.
    Absent,
    /// Update: the stored version must be this one.
    Version(u64),
    /// Update: the object must exist, any version.
    Exists,
    /// Create or replace.
    Any,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Create or update an object.
    Put {
        /// The new object.
        object: Object,
        /// Precondition.
        expect: Expect,
    },
    /// Delete an object.
    Delete {
        /// Kind.
        kind: Kind,
        /// ID.
        id: String,
        /// Expected version, if any.
        expect: Option<u64>,
    },
}

/// A batch of ops replicated as one Raft entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// The ops, applied in order.
    pub ops: Vec<Op>,
    /// All-or-nothing: on the first failing op, earlier ones are undone.
    pub atomic: bool,
    /// A random ID the proposer gives the command (0: none). A command whose
    /// ID was applied recently is not applied again: its first result is
    /// returned, so a write retried after a lost reply happens exactly once.
    #[serde(default)]
    pub request: u64,
}

/// Why an op was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StoreError {
    /// No such object.
    #[error("{kind} {id} not found", kind = .0.as_str(), id = .1)]
    NotFound(Kind, String),
    /// The ID is taken.
    #[error("{kind} {id} already exists", kind = .0.as_str(), id = .1)]
    Exists(Kind, String),
    /// The name is taken by another object.
    #[error("name conflicts with an existing object: {kind} {name} already exists", kind = .0.as_str(), name = .1)]
    NameConflict(Kind, String),
    /// Stale version.
    #[error("update out of sequence")]
    OutOfSequence,
    /// Any other refusal.
    #[error("{0}")]
    Invalid(String),
}

/// Several independent commands proposed together as one Raft entry (the
/// write path batches concurrent requests). Each command keeps its own
/// atomicity and gets its own result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch(pub Vec<Command>);

/// Results of a [`Batch`], one per command.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchResult(pub Vec<CommandResult>);

/// The result of applying one command.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// One result per op: the new version index, or why it failed. For an
    /// atomic command that failed, every op carries the error that stopped it.
    pub results: Vec<Result<u64, StoreError>>,
}
