//! The docker executor: runs a task as a container through the node's
//! local Docker Engine API (`bollard` over the unix socket).
//!
//! ```text
//!  agent ── DockerExecutor ──Engine API (unix socket)──▶ dockerd ──▶ container
//!                │   create / start / inspect / stop / rm / logs            `<service>.<slot>.<task_id>`
//!                ├── one GET /events stream: start / die (exit code) / destroy of task containers
//!                └── list by label com.shoal.task=1 (adoption after a restart)
//! ```
//!
//! **Exits** come from the executor's one event stream (see `events.rs`),
//! not from a `wait` request per container: a container costs the engine
//! create, start and one inspect (its pid), then stop and remove.
//!
//! The engine is the containers' parent and keeps their state, so the
//! executor keeps none: it finds a task's container by its labels, the
//! same ones Swarm puts on task containers (`com.docker.swarm.task.id`,
//! `...task.name`, `...service.id`, `...service.name`, `...node.id`) plus
//! shoal's marker `com.shoal.task=1`.
//!
//! **Agent restarts.** Containers keep running without the agent. A new
//! [`DockerExecutor`] calls [`DockerExecutor::list`] and adopts every marked
//! container: running ones as they are (same container, same pid), stopped
//! ones with their exit status. Nothing is restarted.
//!
//! **Images.** [`DockerExecutor::start`] uses the image if the engine has it
//! and pulls it otherwise; a failed pull is [`ExecError::ImageUnavailable`]
//! with the engine's message, for a `rejected` task.
//!
//! **No engine.** Every call on an engine that does not answer gives
//! [`ExecError::EngineUnavailable`], so the node can report it and its tasks
//! can go elsewhere.
//!
//! Exits, log lines and log options are the process executor's types
//! ([`ExitStatus`], [`LogLine`], [`LogOptions`]), so the agent handles both
//! executors alike; [`ExitStatus::outcome`] maps an exit to Swarm's
//! messages (0: complete; otherwise failed, `task: non-zero exit (N)`).

mod error;
mod events;
mod executor;
mod logs;
mod slot;
mod spec;

pub use error::ExecError;
pub use executor::{
    exit_status, AdoptedContainer, AdoptedState, DockerExecutor, EngineInfo, HealthState,
    TaskHandle, DEFAULT_DOCKER_SOCKET,
};
pub use slot::EngineSlot;
pub use spec::{
    ContainerLimits, ContainerReservations, ContainerTaskSpec, HealthcheckSpec, MountKind,
    MountSpec, UlimitSpec, DEFAULT_STOP_GRACE, LABEL_NODE_ID, LABEL_SERVICE_ID, LABEL_SERVICE_NAME,
    LABEL_SHOAL_TASK, LABEL_TASK, LABEL_TASK_ID, LABEL_TASK_NAME, RESERVED_LABELS,
};

pub use crate::process::{ExitOutcome, ExitStatus, LogLine, LogOptions, OutputStream};
