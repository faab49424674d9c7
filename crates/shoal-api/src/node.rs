//! Nodes: the machines of the cluster (`GET /nodes` shape).

use crate::{is_default, Labels, Timestamp, Version};
use serde::{Deserialize, Serialize};

/// A node: a machine running the shoal daemon.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Node ID (also the CN of its certificate).
    #[serde(rename = "ID")]
    pub id: String,
    /// Version of the last change.
    #[serde(rename = "Version", default)]
    pub version: Version,
    /// Creation time.
    #[serde(rename = "CreatedAt", default)]
    pub created_at: Timestamp,
    /// Last change time.
    #[serde(rename = "UpdatedAt", default)]
    pub updated_at: Timestamp,
    /// What the user asks of the node.
    #[serde(rename = "Spec", default)]
    pub spec: NodeSpec,
    /// What the node says about itself.
    #[serde(rename = "Description", default)]
    pub description: NodeDescription,
    /// Observed state.
    #[serde(rename = "Status", default)]
    pub status: NodeStatus,
    /// Present on managers.
    #[serde(
        rename = "ManagerStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub manager_status: Option<ManagerStatus>,
    /// shoal extension: the node's node-to-node address `host:port`.
    #[serde(
        rename = "ShoalAddr",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub addr: String,
    /// shoal extension: the node's Raft member id (managers only; 0 otherwise).
    #[serde(rename = "ShoalRaftID", default, skip_serializing_if = "is_default")]
    pub raft_id: u64,
}

/// The user-controlled part of a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Optional user-given name.
    #[serde(rename = "Name", default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Node labels (used by constraints `node.labels.*`).
    #[serde(rename = "Labels", default)]
    pub labels: Labels,
    /// Desired role.
    #[serde(rename = "Role", default)]
    pub role: NodeRole,
    /// Availability for tasks.
    #[serde(rename = "Availability", default)]
    pub availability: Availability,
}

/// Node role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Runs tasks only.
    #[default]
    Worker,
    /// Holds the replicated state and votes in Raft.
    Manager,
}

impl NodeRole {
    /// Lowercase name as in the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeRole::Worker => "worker",
            NodeRole::Manager => "manager",
        }
    }
}

/// Whether a node accepts tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// Accepts new tasks.
    #[default]
    Active,
    /// Keeps its tasks, accepts no new ones.
    Pause,
    /// Its tasks move elsewhere.
    Drain,
}

impl Availability {
    /// Lowercase name as in the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        }
    }
}

/// What a node reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeDescription {
    /// Host name.
    #[serde(rename = "Hostname", default)]
    pub hostname: String,
    /// OS and architecture.
    #[serde(rename = "Platform", default)]
    pub platform: Platform,
    /// Capacity.
    #[serde(rename = "Resources", default)]
    pub resources: Resources,
    /// Engine (runtime) details.
    #[serde(rename = "Engine", default)]
    pub engine: EngineDescription,
    /// Certificate trust information.
    #[serde(rename = "TLSInfo", default, skip_serializing_if = "Option::is_none")]
    pub tls_info: Option<TlsInfo>,
    /// shoal extension: executors this node can run ("process", "docker").
    #[serde(rename = "Executors", default)]
    pub executors: Vec<String>,
}

/// OS and architecture.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// e.g. `x86_64`.
    #[serde(rename = "Architecture", default)]
    pub architecture: String,
    /// e.g. `linux`.
    #[serde(rename = "OS", default)]
    pub os: String,
}

/// CPU and memory amounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in units of 1e-9 CPUs.
    #[serde(rename = "NanoCPUs", default, skip_serializing_if = "is_default")]
    pub nano_cpus: i64,
    /// Memory in bytes.
    #[serde(rename = "MemoryBytes", default, skip_serializing_if = "is_default")]
    pub memory_bytes: i64,
}

/// Engine details.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineDescription {
    /// Engine version string.
    #[serde(rename = "EngineVersion", default)]
    pub engine_version: String,
    /// Engine labels (used by constraints `engine.labels.*`).
    #[serde(rename = "Labels", default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Plugins.
    #[serde(rename = "Plugins", default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginDescription>,
}

/// An engine plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginDescription {
    /// Plugin type.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Plugin name.
    #[serde(rename = "Name")]
    pub name: String,
}

/// Certificate trust information, as Docker shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsInfo {
    /// Root CA certificate (PEM).
    #[serde(rename = "TrustRoot", default)]
    pub trust_root: String,
    /// Issuer subject, base64 DER.
    #[serde(rename = "CertIssuerSubject", default)]
    pub cert_issuer_subject: String,
    /// Issuer public key, base64 DER.
    #[serde(rename = "CertIssuerPublicKey", default)]
    pub cert_issuer_public_key: String,
}

/// Observed node state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// ready / down / unknown / disconnected.
    #[serde(rename = "State", default)]
    pub state: NodeState,
    /// Why the node is in this state.
    #[serde(rename = "Message", default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// IP address the node is reached at.
    #[serde(rename = "Addr", default)]
    pub addr: String,
}

/// Node liveness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Not yet heard from.
    #[default]
    Unknown,
    /// Missed its heartbeats.
    Down,
    /// Session alive.
    Ready,
    /// Left the cluster.
    Disconnected,
}

impl NodeState {
    /// Lowercase name as in the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeState::Unknown => "unknown",
            NodeState::Down => "down",
            NodeState::Ready => "ready",
            NodeState::Disconnected => "disconnected",
        }
    }
}

/// Manager-specific status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ManagerStatus {
    /// Whether this manager is the Raft leader (filled when read).
    #[serde(rename = "Leader", default, skip_serializing_if = "is_default")]
    pub leader: bool,
    /// reachable / unreachable / unknown (filled when read).
    #[serde(rename = "Reachability", default)]
    pub reachability: String,
    /// Manager address `host:port` (node-to-node listener).
    #[serde(rename = "Addr", default)]
    pub addr: String,
}
