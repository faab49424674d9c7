//! The one error type of the process executor.

use std::io;

/// Why an executor call failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The spec can never run (bad task ID, empty command, ...): reject the task.
    #[error("invalid task spec: {0}")]
    InvalidSpec(String),
    /// A task with this ID already has a state directory on this node.
    #[error("task {0} already exists on this node")]
    AlreadyExists(String),
    /// No state directory for this task ID.
    #[error("task {0} not found on this node")]
    NotFound(String),
    /// The task did not start; the text is meant for the task's status
    /// (`exec: "nope": executable file not found in $PATH`).
    #[error("{0}")]
    StartFailed(String),
    /// Reading or writing the task's state failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl ExecError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        ExecError::Io {
            context: context.into(),
            source,
        }
    }
}
