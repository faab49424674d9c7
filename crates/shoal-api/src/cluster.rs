//! The cluster object (`GET /swarm` shape) and its settings.

use crate::{Labels, Timestamp, TlsInfo, Version};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Default agent heartbeat period.
pub const DEFAULT_HEARTBEAT_PERIOD: Duration = Duration::from_millis(500);
/// Default node certificate validity (90 days).
pub const DEFAULT_NODE_CERT_EXPIRY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Default number of old tasks kept per slot.
pub const DEFAULT_TASK_HISTORY: i64 = 5;

/// The cluster ("swarm") object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Cluster ID (the O of every node certificate).
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
    /// Settings.
    #[serde(rename = "Spec", default)]
    pub spec: ClusterSpec,
    /// Root of trust.
    #[serde(rename = "TLSInfo", default)]
    pub tls_info: TlsInfo,
    /// Always false: root rotation is not in progress.
    #[serde(rename = "RootRotationInProgress", default)]
    pub root_rotation_in_progress: bool,
    /// Default address pool for overlay networks.
    #[serde(rename = "DefaultAddrPool", default)]
    pub default_addr_pool: Option<Vec<String>>,
    /// Subnet size for overlay networks.
    #[serde(rename = "SubnetSize", default)]
    pub subnet_size: u32,
    /// VXLAN data path port.
    #[serde(rename = "DataPathPort", default)]
    pub data_path_port: u32,
    /// Join tokens (only on `GET /swarm`).
    #[serde(rename = "JoinTokens", default)]
    pub join_tokens: JoinTokens,
}

/// Cluster settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// Always "default".
    #[serde(rename = "Name", default)]
    pub name: String,
    /// Cluster labels.
    #[serde(rename = "Labels", default)]
    pub labels: Labels,
    /// Orchestration settings.
    #[serde(rename = "Orchestration", default)]
    pub orchestration: OrchestrationConfig,
    /// Raft settings (informational; shoal's timings are in its config).
    #[serde(rename = "Raft", default)]
    pub raft: RaftConfig,
    /// Dispatcher settings.
    #[serde(rename = "Dispatcher", default)]
    pub dispatcher: DispatcherConfig,
    /// CA settings.
    #[serde(rename = "CAConfig", default)]
    pub ca_config: CaConfig,
    /// Task defaults.
    #[serde(rename = "TaskDefaults", default)]
    pub task_defaults: serde_json::Value,
    /// Encryption settings.
    #[serde(rename = "EncryptionConfig", default)]
    pub encryption_config: EncryptionConfig,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            name: "default".into(),
            labels: Labels::new(),
            orchestration: OrchestrationConfig::default(),
            raft: RaftConfig::default(),
            dispatcher: DispatcherConfig::default(),
            ca_config: CaConfig::default(),
            task_defaults: serde_json::json!({}),
            encryption_config: EncryptionConfig::default(),
        }
    }
}

impl ClusterSpec {
    /// The agent heartbeat period.
    pub fn heartbeat_period(&self) -> Duration {
        match self.dispatcher.heartbeat_period {
            Some(n) if n > 0 => Duration::from_nanos(n as u64),
            _ => DEFAULT_HEARTBEAT_PERIOD,
        }
    }

    /// Node certificate validity.
    pub fn node_cert_expiry(&self) -> Duration {
        match self.ca_config.node_cert_expiry {
            Some(n) if n > 0 => Duration::from_nanos(n as u64),
            _ => DEFAULT_NODE_CERT_EXPIRY,
        }
    }

    /// Old tasks kept per slot.
    pub fn task_history_limit(&self) -> i64 {
        self.orchestration
            .task_history_retention_limit
            .unwrap_or(DEFAULT_TASK_HISTORY)
    }
}

/// Orchestration settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrchestrationConfig {
    /// Old tasks kept per slot.
    #[serde(
        rename = "TaskHistoryRetentionLimit",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub task_history_retention_limit: Option<i64>,
}

/// Raft settings as Docker shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaftConfig {
    /// Log entries between snapshots.
    #[serde(rename = "SnapshotInterval", default)]
    pub snapshot_interval: u64,
    /// Old snapshots kept.
    #[serde(rename = "KeepOldSnapshots", default)]
    pub keep_old_snapshots: u64,
    /// Entries kept for slow followers.
    #[serde(rename = "LogEntriesForSlowFollowers", default)]
    pub log_entries_for_slow_followers: u64,
    /// Election ticks.
    #[serde(rename = "ElectionTick", default)]
    pub election_tick: u64,
    /// Heartbeat ticks.
    #[serde(rename = "HeartbeatTick", default)]
    pub heartbeat_tick: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            snapshot_interval: 5000,
            keep_old_snapshots: 0,
            log_entries_for_slow_followers: 1000,
            election_tick: 3,
            heartbeat_tick: 1,
        }
    }
}

/// Dispatcher settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DispatcherConfig {
    /// Agent heartbeat period in nanoseconds.
    #[serde(
        rename = "HeartbeatPeriod",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub heartbeat_period: Option<i64>,
}

/// CA settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaConfig {
    /// Node certificate validity in nanoseconds.
    #[serde(
        rename = "NodeCertExpiry",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub node_cert_expiry: Option<i64>,
    /// External CAs (not supported; kept for round trips).
    #[serde(
        rename = "ExternalCAs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external_cas: Option<serde_json::Value>,
}

/// Encryption settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EncryptionConfig {
    /// Autolock.
    #[serde(rename = "AutoLockManagers", default)]
    pub auto_lock_managers: bool,
}

/// Join tokens, one per role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokens {
    /// Token for workers.
    #[serde(rename = "Worker", default)]
    pub worker: String,
    /// Token for managers.
    #[serde(rename = "Manager", default)]
    pub manager: String,
}

/// `POST /swarm/init` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InitRequest {
    /// Node-to-node listen address: `IP[:PORT]` or `INTERFACE[:PORT]` (port 2377 by default).
    #[serde(rename = "ListenAddr", default)]
    pub listen_addr: String,
    /// Address other nodes reach this one at (same forms; the listen port by default).
    #[serde(rename = "AdvertiseAddr", default)]
    pub advertise_addr: String,
    /// Data path address (overlay traffic; recorded, not used yet).
    #[serde(rename = "DataPathAddr", default)]
    pub data_path_addr: String,
    /// VXLAN port.
    #[serde(rename = "DataPathPort", default)]
    pub data_path_port: u32,
    /// Overlay address pools.
    #[serde(rename = "DefaultAddrPool", default)]
    pub default_addr_pool: Option<Vec<String>>,
    /// Overlay subnet size.
    #[serde(rename = "SubnetSize", default)]
    pub subnet_size: u32,
    /// Quorum-loss recovery on an existing manager.
    #[serde(rename = "ForceNewCluster", default)]
    pub force_new_cluster: bool,
    /// Initial cluster settings (zero values keep the defaults).
    #[serde(rename = "Spec", default)]
    pub spec: Option<ClusterSpec>,
    /// Lock managers' keys at rest with an unlock key.
    #[serde(rename = "AutoLockManagers", default)]
    pub auto_lock_managers: bool,
    /// This node's availability: `active` (also when empty), `pause` or `drain`.
    #[serde(rename = "Availability", default)]
    pub availability: String,
}

/// `POST /swarm/join` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Node-to-node listen address.
    #[serde(rename = "ListenAddr", default)]
    pub listen_addr: String,
    /// Address other nodes reach this one at (found from the route to the manager by default).
    #[serde(rename = "AdvertiseAddr", default)]
    pub advertise_addr: String,
    /// Data path address (recorded, not used yet).
    #[serde(rename = "DataPathAddr", default)]
    pub data_path_addr: String,
    /// Managers to join through.
    #[serde(rename = "RemoteAddrs", default)]
    pub remote_addrs: Vec<String>,
    /// Join token.
    #[serde(rename = "JoinToken", default)]
    pub join_token: String,
    /// This node's availability: `active` (also when empty), `pause` or `drain`.
    #[serde(rename = "Availability", default)]
    pub availability: String,
}

/// Parses the `Availability` of an init or join request (empty: active).
pub fn parse_availability(s: &str) -> Result<crate::Availability, String> {
    match s {
        "" | "active" => Ok(crate::Availability::Active),
        "pause" => Ok(crate::Availability::Pause),
        "drain" => Ok(crate::Availability::Drain),
        other => Err(format!(
            "invalid Availability {other:?}: expected active, pause or drain"
        )),
    }
}

/// `POST /swarm/unlock` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UnlockRequest {
    /// `SWMKEY-1-…`.
    #[serde(rename = "UnlockKey", default)]
    pub unlock_key: String,
}
