//! Tasks: one scheduled unit of a service (`GET /tasks` shape).

use crate::{is_default, Labels, PortConfig, TaskSpec, Timestamp, Version};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// A task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Task ID.
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
    /// Optional name.
    #[serde(rename = "Name", default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Task labels.
    #[serde(rename = "Labels", default)]
    pub labels: Labels,
    /// The service's task template at creation (shared by the tasks made
    /// from the same template: the store interns it per service).
    #[serde(rename = "Spec", default)]
    pub spec: Arc<TaskSpec>,
    /// Owning service.
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    /// Slot (replicated services; 0 for global).
    #[serde(rename = "Slot", default, skip_serializing_if = "is_default")]
    pub slot: u64,
    /// Node it is assigned to (empty while pending).
    #[serde(rename = "NodeID", default, skip_serializing_if = "String::is_empty")]
    pub node_id: String,
    /// Observed state.
    #[serde(rename = "Status", default)]
    pub status: TaskStatus,
    /// What the orchestrator wants.
    #[serde(rename = "DesiredState", default)]
    pub desired_state: TaskState,
    /// Network attachments.
    #[serde(
        rename = "NetworksAttachments",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub networks_attachments: Vec<Value>,
    /// Job iteration this task belongs to.
    #[serde(
        rename = "JobIteration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub job_iteration: Option<Version>,
    /// shoal extension: when earlier tasks of this slot were restarted
    /// (for the restart policy's max attempts within its window).
    #[serde(
        rename = "ShoalRestarts",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub restarts: Vec<Timestamp>,
    /// shoal extension: the service's `Version.Index` the spec was taken from.
    #[serde(
        rename = "ShoalSpecVersion",
        default,
        skip_serializing_if = "is_default"
    )]
    pub spec_version: u64,
}

/// Observed task status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// When the state was reached.
    #[serde(rename = "Timestamp", default)]
    pub timestamp: Timestamp,
    /// Current state.
    #[serde(rename = "State", default)]
    pub state: TaskState,
    /// Human-readable message.
    #[serde(rename = "Message", default)]
    pub message: String,
    /// Error, if any (pending explanation, exit code, start failure).
    #[serde(rename = "Err", default, skip_serializing_if = "String::is_empty")]
    pub err: String,
    /// Container or process details.
    #[serde(
        rename = "ContainerStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub container_status: Option<ContainerStatus>,
    /// Ports the task published.
    #[serde(rename = "PortStatus", default)]
    pub port_status: PortStatus,
}

/// Runtime details of a task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// Container ID (empty for processes).
    #[serde(
        rename = "ContainerID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
    /// Process ID.
    #[serde(rename = "PID", default)]
    pub pid: i64,
    /// Exit code.
    #[serde(rename = "ExitCode", default)]
    pub exit_code: i64,
}

/// Published ports of a task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PortStatus {
    /// Ports.
    #[serde(rename = "Ports", default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
}

/// Task states. They only move forward, in this order.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Created.
    #[default]
    New,
    /// Resources (networks, ports) allocated.
    Allocated,
    /// Waiting for a node.
    Pending,
    /// Given to a node.
    Assigned,
    /// The node accepted it.
    Accepted,
    /// Preparing (pulling, creating).
    Preparing,
    /// Prepared.
    Ready,
    /// Starting.
    Starting,
    /// Running.
    Running,
    /// Exited 0.
    Complete,
    /// Stopped on request.
    Shutdown,
    /// Exited non-zero or failed to start.
    Failed,
    /// The node refused it.
    Rejected,
    /// Marked for removal.
    Remove,
    /// Its node is gone.
    Orphaned,
}

impl TaskState {
    /// All states in order.
    pub const ALL: [TaskState; 15] = [
        TaskState::New,
        TaskState::Allocated,
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Accepted,
        TaskState::Preparing,
        TaskState::Ready,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Complete,
        TaskState::Shutdown,
        TaskState::Failed,
        TaskState::Rejected,
        TaskState::Remove,
        TaskState::Orphaned,
    ];

    /// Lowercase name as in the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Allocated => "allocated",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Ready => "ready",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Remove => "remove",
            TaskState::Orphaned => "orphaned",
        }
    }

    /// Parses a lowercase state name.
    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.iter().copied().find(|t| t.as_str() == s)
    }

    /// Whether the task has stopped for good (complete or later).
    pub fn is_terminal(&self) -> bool {
        *self >= TaskState::Complete
    }
}

impl Task {
    /// Moves the observed state forward; refuses to move it backward.
    /// Returns whether anything changed.
    pub fn advance(&mut self, state: TaskState, message: &str, err: &str) -> bool {
        if state < self.status.state
            || (state == self.status.state
                && message == self.status.message
                && err == self.status.err)
        {
            return false;
        }
        self.status.state = state;
        self.status.message = message.to_string();
        self.status.err = err.to_string();
        self.status.timestamp = Timestamp::now();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_ordered_and_parse() {
        for w in TaskState::ALL.windows(2) {
            assert!(w[0] < w[1]);
        }
        for s in TaskState::ALL {
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            serde_json::to_string(&TaskState::Running).unwrap(),
            "\"running\""
        );
    }

    #[test]
    fn task_state_never_moves_backward() {
        let mut t = Task::default();
        assert!(t.advance(TaskState::Running, "started", ""));
        assert!(!t.advance(TaskState::Assigned, "assigned", ""));
        assert_eq!(t.status.state, TaskState::Running);
        assert!(t.advance(TaskState::Failed, "exited", "non-zero exit (1)"));
    }
}
