//! The node-to-node protocol: generated tonic services (proto/shoal.proto)
//! and the JSON documents each call carries.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use shoal_api::{NodeDescription, NodeRole, Task, TaskState};

/// Generated protobuf and tonic code.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("shoal.v1");
}

pub use pb::Msg;

/// Wraps a JSON document in a [`Msg`].
pub fn msg<T: Serialize>(value: &T) -> Msg {
    Msg {
        json: serde_json::to_vec(value).expect("serializable"),
        data: Vec::new(),
    }
}

/// Reads the JSON document of a [`Msg`]; a malformed one is an invalid argument.
pub fn parse<T: DeserializeOwned>(m: &Msg) -> Result<T, tonic::Status> {
    serde_json::from_slice(&m.json)
        .map_err(|e| tonic::Status::invalid_argument(format!("malformed message: {e}")))
}

/// Request of `Join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The full join token.
    pub token: String,
    /// CSR of the joining node's fresh key, PEM.
    pub csr_pem: String,
    /// The node's node-to-node address `host:port` (as others reach it).
    pub addr: String,
    /// What the node is.
    pub description: NodeDescription,
    /// The availability it starts with (active when absent).
    #[serde(default)]
    pub availability: Option<shoal_api::Availability>,
}

/// A manager's identity and address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerAddr {
    /// Node ID.
    pub node_id: String,
    /// `host:port`.
    pub addr: String,
}

/// Response of `Join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The new node's ID.
    pub node_id: String,
    /// Its role (from the token used).
    pub role: NodeRole,
    /// Cluster ID.
    pub cluster_id: String,
    /// Signed node certificate, PEM.
    pub cert_pem: String,
    /// Root CA, PEM.
    pub ca_pem: String,
    /// Raft member id (managers).
    pub raft_id: u64,
    /// Known managers.
    pub managers: Vec<ManagerAddr>,
}

/// Request of `RenewCert`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewRequest {
    /// CSR of a fresh key, PEM.
    pub csr_pem: String,
}

/// Response of `RenewCert`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewResponse {
    /// Signed certificate, PEM.
    pub cert_pem: String,
    /// The role it carries (the node's desired role).
    pub role: NodeRole,
    /// Raft member id (if the node is, or becomes, a manager).
    pub raft_id: u64,
}

/// One task's observed status, reported by an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatusReport {
    /// Task ID.
    pub task_id: String,
    /// New state.
    pub state: TaskState,
    /// Message.
    pub message: String,
    /// Error text (empty if none).
    pub err: String,
    /// Process ID, if running.
    pub pid: i64,
    /// Exit code, if exited.
    pub exit_code: Option<i64>,
    /// Container ID (docker executor).
    pub container_id: String,
}

/// Agent → dispatcher.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum AgentMessage {
    /// First message of a session.
    Hello {
        /// What the node is.
        description: NodeDescription,
        /// The node's node-to-node address.
        addr: String,
    },
    /// Still alive.
    Heartbeat,
    /// Task status changes.
    Status(Vec<TaskStatusReport>),
    /// The node's description changed (e.g. its Docker Engine went away or came back).
    Describe(NodeDescription),
}

/// Dispatcher → agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum DispatcherMessage {
    /// Session accepted.
    Welcome {
        /// Heartbeat period in milliseconds.
        heartbeat_ms: u64,
        /// Known managers.
        managers: Vec<ManagerAddr>,
    },
    /// The tasks this node must run (the complete set).
    Assignments {
        /// Tasks assigned to the node, with their desired state.
        tasks: Vec<Task>,
        /// Names of the services of those tasks, by service ID.
        services: std::collections::BTreeMap<String, String>,
    },
    /// The manager list changed.
    Managers(Vec<ManagerAddr>),
    /// The node's desired role changed: renew the certificate and switch.
    RoleChanged(NodeRole),
    /// The node was removed from the cluster.
    Removed,
}

/// Request of `TaskLogs` (served by every node).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogsRequest {
    /// Tasks whose logs to send.
    pub task_ids: Vec<String>,
    /// Lines per task from the end (None = all).
    pub tail: Option<usize>,
    /// Keep streaming.
    pub follow: bool,
}

/// One log line (a `TaskLogs` stream item).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    /// Task ID.
    pub task_id: String,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: u128,
    /// 1 = stdout, 2 = stderr.
    pub stream: u8,
    /// The line, without its newline.
    pub line: String,
}

/// Reads `r` to its end and hands what it reads, as `Msg.data` chunks of up
/// to 64 KiB, to `send`; stops early when `send` answers false. Used by the
/// engine tunnel, both ways.
pub async fn pump_reader<R, F, Fut>(mut r: R, mut send: F)
where
    R: tokio::io::AsyncRead + Unpin,
    F: FnMut(Msg) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let m = Msg {
                    json: Vec::new(),
                    data: buf[..n].to_vec(),
                };
                if !send(m).await {
                    return;
                }
            }
        }
    }
}
