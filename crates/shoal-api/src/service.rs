//! Services: the desired state of a workload (`GET /services` shape).

use crate::{is_default, Labels, Timestamp, Version};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Fields a client sent that shoal does not model, kept for round trips.
pub type Extra = BTreeMap<String, Value>;

/// A service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// Service ID.
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
    /// Desired state.
    #[serde(rename = "Spec", default)]
    pub spec: ServiceSpec,
    /// The spec before the last update (for rollback).
    #[serde(
        rename = "PreviousSpec",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub previous_spec: Option<ServiceSpec>,
    /// Published endpoint.
    #[serde(rename = "Endpoint", default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
    /// Progress of a rolling update.
    #[serde(
        rename = "UpdateStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub update_status: Option<UpdateStatus>,
    /// Running/desired counts (computed when read with `status=true`).
    #[serde(
        rename = "ServiceStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub service_status: Option<ServiceStatus>,
    /// Job progress.
    #[serde(rename = "JobStatus", default, skip_serializing_if = "Option::is_none")]
    pub job_status: Option<JobStatus>,
}

/// What the user asks of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Unique name.
    #[serde(rename = "Name", default)]
    pub name: String,
    /// Service labels.
    #[serde(rename = "Labels", default)]
    pub labels: Labels,
    /// What each task runs.
    #[serde(rename = "TaskTemplate", default)]
    pub task_template: TaskSpec,
    /// Replicated / global / jobs.
    #[serde(rename = "Mode", default)]
    pub mode: ServiceMode,
    /// Rolling update settings.
    #[serde(
        rename = "UpdateConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub update_config: Option<UpdateConfig>,
    /// Rollback settings.
    #[serde(
        rename = "RollbackConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rollback_config: Option<UpdateConfig>,
    /// Published ports.
    #[serde(
        rename = "EndpointSpec",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_spec: Option<EndpointSpec>,
    /// Unmodelled fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Exactly one of the members is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceMode {
    /// N replicas in slots 1..N.
    /// (Go's JSON decoder matches keys without regard to case; the Python
    /// SDK sends `replicated` and `global`.)
    #[serde(
        rename = "Replicated",
        alias = "replicated",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub replicated: Option<ReplicatedMode>,
    /// One task per eligible node.
    #[serde(
        rename = "Global",
        alias = "global",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub global: Option<Value>,
    /// Run to a number of completions.
    #[serde(
        rename = "ReplicatedJob",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub replicated_job: Option<ReplicatedJob>,
    /// One completion per eligible node.
    #[serde(rename = "GlobalJob", default, skip_serializing_if = "Option::is_none")]
    pub global_job: Option<Value>,
}

/// The kind of a service mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModeKind {
    /// Replicated.
    Replicated,
    /// Global.
    Global,
    /// Replicated job.
    ReplicatedJob,
    /// Global job.
    GlobalJob,
}

impl ModeKind {
    /// Name as `docker service ls` prints it.
    pub fn as_str(&self) -> &'static str {
        match self {
            ModeKind::Replicated => "replicated",
            ModeKind::Global => "global",
            ModeKind::ReplicatedJob => "replicated job",
            ModeKind::GlobalJob => "global job",
        }
    }
}

impl ServiceMode {
    /// Which mode is set (replicated when none is).
    pub fn kind(&self) -> ModeKind {
        if self.global.is_some() {
            ModeKind::Global
        } else if self.replicated_job.is_some() {
            ModeKind::ReplicatedJob
        } else if self.global_job.is_some() {
            ModeKind::GlobalJob
        } else {
            ModeKind::Replicated
        }
    }

    /// Number of modes set (valid specs have exactly one after defaults).
    pub fn count_set(&self) -> usize {
        [
            self.replicated.is_some(),
            self.global.is_some(),
            self.replicated_job.is_some(),
            self.global_job.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }

    /// Replica count of a replicated service.
    pub fn replicas(&self) -> Option<u64> {
        self.replicated.as_ref().and_then(|r| r.replicas)
    }
}

/// Replicated mode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicatedMode {
    /// Number of replicas (default 1).
    #[serde(rename = "Replicas", default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
}

/// Replicated job mode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicatedJob {
    /// Tasks running at once (default 1).
    #[serde(
        rename = "MaxConcurrent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_concurrent: Option<u64>,
    /// Completions wanted (default MaxConcurrent).
    #[serde(
        rename = "TotalCompletions",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub total_completions: Option<u64>,
}

/// The template of every task of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Container to run (runtime `container`).
    #[serde(
        rename = "ContainerSpec",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub container_spec: Option<ContainerSpec>,
    /// shoal extension: plain process to run (runtime `process`).
    #[serde(
        rename = "ProcessSpec",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub process_spec: Option<ProcessSpec>,
    /// Limits and reservations.
    #[serde(rename = "Resources", default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Restart policy.
    #[serde(
        rename = "RestartPolicy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub restart_policy: Option<RestartPolicy>,
    /// Placement constraints and preferences.
    #[serde(rename = "Placement", default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Networks to attach.
    #[serde(rename = "Networks", default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAttachmentConfig>,
    /// Log driver.
    #[serde(rename = "LogDriver", default, skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<Value>,
    /// Incremented to force an update with an unchanged spec.
    #[serde(rename = "ForceUpdate", default)]
    pub force_update: u64,
    /// `container` or `process` (empty means container).
    #[serde(rename = "Runtime", default, skip_serializing_if = "String::is_empty")]
    pub runtime: String,
    /// Unmodelled fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The runtime a task needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeKind {
    /// A plain process (the `process` executor).
    Process,
    /// A container (the `docker` executor).
    Container,
}

impl RuntimeKind {
    /// The executor that runs this runtime.
    pub fn executor(&self) -> &'static str {
        match self {
            RuntimeKind::Process => "process",
            RuntimeKind::Container => "docker",
        }
    }
}

impl TaskSpec {
    /// Which runtime this spec uses.
    pub fn runtime_kind(&self) -> RuntimeKind {
        if self.runtime == "process"
            || (self.runtime.is_empty()
                && self.process_spec.is_some()
                && self.container_spec.is_none())
        {
            RuntimeKind::Process
        } else {
            RuntimeKind::Container
        }
    }

    /// Placement constraints (empty if none).
    pub fn constraints(&self) -> &[String] {
        self.placement
            .as_ref()
            .map(|p| p.constraints.as_slice())
            .unwrap_or(&[])
    }

    /// Reserved resources (zero if none).
    pub fn reservations(&self) -> crate::Resources {
        self.resources
            .as_ref()
            .and_then(|r| r.reservations.as_ref())
            .map(|r| crate::Resources {
                nano_cpus: r.nano_cpus,
                memory_bytes: r.memory_bytes,
            })
            .unwrap_or_default()
    }

    /// Resource limits (zero if none).
    pub fn limits(&self) -> crate::Resources {
        self.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .map(|r| crate::Resources {
                nano_cpus: r.nano_cpus,
                memory_bytes: r.memory_bytes,
            })
            .unwrap_or_default()
    }

    /// The restart policy with defaults filled.
    pub fn restart(&self) -> RestartPolicy {
        let mut p = self.restart_policy.clone().unwrap_or_default();
        if p.condition.is_none() {
            p.condition = Some(RestartCondition::Any);
        }
        if p.delay.is_none() {
            p.delay = Some(5_000_000_000);
        }
        p
    }

    /// Stop grace period (default 10 s).
    pub fn stop_grace_period(&self) -> Duration {
        let ns = self
            .process_spec
            .as_ref()
            .and_then(|p| p.stop_grace_period)
            .or_else(|| {
                self.container_spec
                    .as_ref()
                    .and_then(|c| c.stop_grace_period)
            });
        match ns {
            Some(n) if n >= 0 => Duration::from_nanos(n as u64),
            _ => Duration::from_secs(10),
        }
    }
}

/// A container (Docker `ContainerSpec`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Image reference.
    #[serde(rename = "Image", default)]
    pub image: String,
    /// Container labels.
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    /// Entrypoint override.
    #[serde(rename = "Command", default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments.
    #[serde(rename = "Args", default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Hostname.
    #[serde(rename = "Hostname", default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// Environment `K=V`.
    #[serde(rename = "Env", default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Working directory.
    #[serde(rename = "Dir", default, skip_serializing_if = "String::is_empty")]
    pub dir: String,
    /// User.
    #[serde(rename = "User", default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Run an init process.
    #[serde(rename = "Init", default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// Allocate a TTY.
    #[serde(rename = "TTY", default, skip_serializing_if = "is_default")]
    pub tty: bool,
    /// Read-only root filesystem.
    #[serde(rename = "ReadOnly", default, skip_serializing_if = "is_default")]
    pub read_only: bool,
    /// Mounts.
    #[serde(rename = "Mounts", default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Value>,
    /// Stop signal.
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub stop_signal: String,
    /// Stop grace period, nanoseconds.
    #[serde(
        rename = "StopGracePeriod",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_grace_period: Option<i64>,
    /// Health check.
    #[serde(
        rename = "HealthCheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub health_check: Option<Value>,
    /// Secret references.
    #[serde(rename = "Secrets", default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Value>,
    /// Config references.
    #[serde(rename = "Configs", default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<Value>,
    /// Sysctls.
    #[serde(rename = "Sysctls", default, skip_serializing_if = "Option::is_none")]
    pub sysctls: Option<BTreeMap<String, String>>,
    /// Added capabilities.
    #[serde(
        rename = "CapabilityAdd",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub capability_add: Vec<String>,
    /// Dropped capabilities.
    #[serde(
        rename = "CapabilityDrop",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub capability_drop: Vec<String>,
    /// Ulimits.
    #[serde(rename = "Ulimits", default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Value>,
    /// Unmodelled fields (DNSConfig, Isolation, Privileges, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// shoal extension: a plain process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Program to run.
    #[serde(rename = "Command", default)]
    pub command: String,
    /// Its arguments.
    #[serde(rename = "Args", default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment `K=V`.
    #[serde(rename = "Env", default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Working directory.
    #[serde(rename = "Dir", default, skip_serializing_if = "String::is_empty")]
    pub dir: String,
    /// User (name or uid[:gid]).
    #[serde(rename = "User", default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Stop grace period, nanoseconds.
    #[serde(
        rename = "StopGracePeriod",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_grace_period: Option<i64>,
}

/// Limits and reservations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceRequirements {
    /// Upper bounds.
    #[serde(rename = "Limits", default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limit>,
    /// What the scheduler sets aside.
    #[serde(
        rename = "Reservations",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub reservations: Option<Reservation>,
}

/// Resource limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limit {
    /// CPU, 1e-9 CPUs.
    #[serde(rename = "NanoCPUs", default, skip_serializing_if = "is_default")]
    pub nano_cpus: i64,
    /// Memory bytes.
    #[serde(rename = "MemoryBytes", default, skip_serializing_if = "is_default")]
    pub memory_bytes: i64,
    /// Max PIDs.
    #[serde(rename = "Pids", default, skip_serializing_if = "is_default")]
    pub pids: i64,
}

/// Resource reservations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    /// CPU, 1e-9 CPUs.
    #[serde(rename = "NanoCPUs", default, skip_serializing_if = "is_default")]
    pub nano_cpus: i64,
    /// Memory bytes.
    #[serde(rename = "MemoryBytes", default, skip_serializing_if = "is_default")]
    pub memory_bytes: i64,
    /// Generic resources (kept for round trips).
    #[serde(
        rename = "GenericResources",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub generic_resources: Option<Value>,
}

/// When to restart a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RestartCondition {
    /// Never.
    #[serde(rename = "none")]
    None,
    /// On non-zero exit.
    #[serde(rename = "on-failure")]
    OnFailure,
    /// Always.
    #[serde(rename = "any")]
    Any,
}

/// Restart policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// Condition.
    #[serde(rename = "Condition", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<RestartCondition>,
    /// Delay between restarts, nanoseconds.
    #[serde(rename = "Delay", default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<i64>,
    /// Max attempts (0 = unlimited).
    #[serde(
        rename = "MaxAttempts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_attempts: Option<u64>,
    /// Window in which attempts are counted, nanoseconds.
    #[serde(rename = "Window", default, skip_serializing_if = "Option::is_none")]
    pub window: Option<i64>,
}

/// Placement constraints and preferences.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// Constraint expressions, e.g. `node.labels.zone==a`.
    #[serde(rename = "Constraints", default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// Spread preferences.
    #[serde(rename = "Preferences", default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<PlacementPreference>,
    /// Max tasks of the service per node (0 = unlimited).
    #[serde(rename = "MaxReplicas", default, skip_serializing_if = "is_default")]
    pub max_replicas: u64,
    /// Platforms.
    #[serde(rename = "Platforms", default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<Value>,
    /// shoal extension: `spread` (default), `binpack` or `random`.
    #[serde(rename = "Strategy", default, skip_serializing_if = "String::is_empty")]
    pub strategy: String,
}

/// A placement preference.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlacementPreference {
    /// Spread over the values of a label.
    #[serde(rename = "Spread", default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<SpreadOver>,
}

/// Spread descriptor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpreadOver {
    /// e.g. `node.labels.zone`.
    #[serde(rename = "SpreadDescriptor", default)]
    pub spread_descriptor: String,
}

/// A network attachment request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkAttachmentConfig {
    /// Network ID or name.
    #[serde(rename = "Target", default)]
    pub target: String,
    /// DNS aliases.
    #[serde(rename = "Aliases", default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Driver options.
    #[serde(
        rename = "DriverOpts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub driver_opts: Option<BTreeMap<String, String>>,
}

/// Rolling update / rollback settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Tasks updated at once (0 = all).
    #[serde(rename = "Parallelism", default)]
    pub parallelism: u64,
    /// Delay between batches, nanoseconds.
    #[serde(rename = "Delay", default, skip_serializing_if = "is_default")]
    pub delay: i64,
    /// pause / continue / rollback.
    #[serde(
        rename = "FailureAction",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub failure_action: String,
    /// Monitor window, nanoseconds.
    #[serde(rename = "Monitor", default, skip_serializing_if = "is_default")]
    pub monitor: i64,
    /// Failure ratio tolerated.
    #[serde(rename = "MaxFailureRatio", default)]
    pub max_failure_ratio: f64,
    /// stop-first / start-first.
    #[serde(rename = "Order", default, skip_serializing_if = "String::is_empty")]
    pub order: String,
}

/// Endpoint settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointSpec {
    /// vip / dnsrr.
    #[serde(rename = "Mode", default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Published ports.
    #[serde(rename = "Ports", default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
}

/// A published port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortConfig {
    /// Optional name.
    #[serde(rename = "Name", default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// tcp / udp / sctp.
    #[serde(rename = "Protocol", default)]
    pub protocol: String,
    /// Port inside the task.
    #[serde(rename = "TargetPort", default)]
    pub target_port: u32,
    /// Port on the host / mesh.
    #[serde(rename = "PublishedPort", default, skip_serializing_if = "is_default")]
    pub published_port: u32,
    /// ingress / host.
    #[serde(rename = "PublishMode", default)]
    pub publish_mode: String,
}

/// The realized endpoint of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The spec it realizes.
    #[serde(rename = "Spec", default)]
    pub spec: EndpointSpec,
    /// Published ports.
    #[serde(rename = "Ports", default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
    /// Virtual IPs.
    #[serde(rename = "VirtualIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_ips: Vec<Value>,
}

/// Progress of an update or rollback.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// updating / paused / completed / rollback_started / rollback_paused / rollback_completed.
    #[serde(rename = "State", default)]
    pub state: String,
    /// Start time.
    #[serde(rename = "StartedAt", default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// End time.
    #[serde(
        rename = "CompletedAt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub completed_at: Option<Timestamp>,
    /// Human-readable message.
    #[serde(rename = "Message", default)]
    pub message: String,
}

/// Running and desired task counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Tasks in state running.
    #[serde(rename = "RunningTasks")]
    pub running_tasks: u64,
    /// Tasks wanted.
    #[serde(rename = "DesiredTasks")]
    pub desired_tasks: u64,
    /// Completed tasks (jobs).
    #[serde(rename = "CompletedTasks")]
    pub completed_tasks: u64,
}

/// Job progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Incremented on each job run.
    #[serde(rename = "JobIteration", default)]
    pub job_iteration: Version,
    /// Last execution start.
    #[serde(
        rename = "LastExecution",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_execution: Option<Timestamp>,
}
