//! [`EngineSlot`]: the node's docker executor, bound when its engine first
//! answers — at node start or any time later — and shared by everything
//! that runs or reads containers (the worker, the node service).

use super::DockerExecutor;
use std::sync::{Arc, RwLock};

/// Holds the node's [`DockerExecutor`] once there is one. Cheap to clone;
/// all clones see the same executor.
#[derive(Debug, Clone, Default)]
pub struct EngineSlot(Arc<RwLock<Option<DockerExecutor>>>);

impl EngineSlot {
    /// A slot holding `docker` (empty for `None`).
    pub fn new(docker: Option<DockerExecutor>) -> EngineSlot {
        EngineSlot(Arc::new(RwLock::new(docker)))
    }

    /// The executor, if the engine has been found.
    pub fn get(&self) -> Option<DockerExecutor> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Binds `docker`, replacing any executor bound before.
    pub fn set(&self, docker: DockerExecutor) {
        *self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(docker);
    }
}
