//! The one error type of the docker executor, and how engine errors map to it.

use bollard::errors::Error as EngineError;

/// Why a docker executor call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The spec can never run (bad task ID, no image, ...): reject the task.
    #[error("invalid task spec: {0}")]
    InvalidSpec(String),
    /// No Docker engine answers (no socket, refused, timed out): the node
    /// cannot run containers now; its tasks should go elsewhere.
    #[error("Docker engine unavailable: {0}")]
    EngineUnavailable(String),
    /// The image is not on this node and pulling it failed; the text is the
    /// engine's, meant for the (rejected) task's status.
    #[error("{0}")]
    ImageUnavailable(String),
    /// A container for this task (by name) already exists.
    #[error("task {0} already exists on this node")]
    AlreadyExists(String),
    /// No container for this task ID.
    #[error("task {0} not found on this node")]
    NotFound(String),
    /// The container was created but did not start; the engine's text
    /// (`exec: "nope": executable file not found in $PATH`, ...).
    #[error("{0}")]
    StartFailed(String),
    /// Any other error the engine returned.
    #[error("Docker engine: {0}")]
    Engine(String),
}

/// How an engine error is classified before a call site gives it meaning.
pub(crate) enum Failure {
    NotFound(String),
    Conflict(String),
    Unavailable(String),
    Other(String),
}

pub(crate) fn classify(e: EngineError) -> Failure {
    match e {
        EngineError::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => Failure::NotFound(message),
            409 => Failure::Conflict(message),
            _ => Failure::Other(message),
        },
        EngineError::DockerStreamError { error } => Failure::Other(error),
        EngineError::RequestTimeoutError => {
            Failure::Unavailable("the engine did not answer in time".into())
        }
        EngineError::SocketNotFoundError(path) => {
            Failure::Unavailable(format!("no Docker socket at {path}"))
        }
        e @ (EngineError::HyperLegacyError { .. }
        | EngineError::HyperResponseError { .. }
        | EngineError::HttpClientError { .. }
        | EngineError::IOError { .. }) => Failure::Unavailable(error_chain(&e)),
        e => Failure::Other(e.to_string()),
    }
}

impl ExecError {
    /// An engine error with no better meaning at the call site.
    pub(crate) fn engine(e: EngineError) -> Self {
        match classify(e) {
            Failure::Unavailable(m) => ExecError::EngineUnavailable(m),
            Failure::NotFound(m) | Failure::Conflict(m) | Failure::Other(m) => ExecError::Engine(m),
        }
    }

    /// An engine error on a call about task `task_id`'s container: 404 is
    /// `NotFound(task_id)`.
    pub(crate) fn for_task(task_id: &str, e: EngineError) -> Self {
        match classify(e) {
            Failure::NotFound(_) => ExecError::NotFound(task_id.to_string()),
            Failure::Unavailable(m) => ExecError::EngineUnavailable(m),
            Failure::Conflict(m) | Failure::Other(m) => ExecError::Engine(m),
        }
    }
}

/// An error with its sources (`connection refused` is usually a source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
