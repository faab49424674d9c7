//! Finding tasks again after an agent restart: which run (and are adopted
//! as they are), which have exited, and which lost their shim.

use super::files::{
    abandon_start, blocking, read_exit, read_spec, read_start, shim_alive, signal_group,
};
use super::{ProcessExecutor, TaskHandle};
use crate::process::cgroup::{self, CgroupLayout};
use crate::process::error::ExecError;
use crate::process::spec::{validate_task_id, ProcessTaskSpec};
use crate::process::status::ExitStatus;
use crate::process::taskdir::{write_json_atomic, TaskDir};
use nix::sys::signal::Signal;
use std::io;

/// A task found in the state directory by [`ProcessExecutor::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptedTask {
    pub spec: ProcessTaskSpec,
    pub state: AdoptedState,
}

/// Where a found task stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdoptedState {
    /// Its shim is alive and the task has not exited.
    Running(TaskHandle),
    /// The task has ended (perhaps while no agent was watching).
    Exited(ExitStatus),
}

impl ProcessExecutor {
    /// Every task in the state directory, sorted by task ID. Meant for the
    /// agent after a restart: running tasks are re-adopted as they are (the
    /// same processes, never a second copy) and exited ones come with their
    /// exit status. A task whose shim died without recording an exit is
    /// killed and reported as exited with an error.
    pub async fn list(&self) -> Result<Vec<AdoptedTask>, ExecError> {
        let root = &self.inner.state_root;
        let mut entries = match tokio::fs::read_dir(root).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ExecError::io(format!("reading {}", root.display()), e)),
        };
        let mut ids = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| ExecError::io(format!("reading {}", root.display()), e))?
        {
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if validate_task_id(&id).is_ok()
                && entry.file_type().await.is_ok_and(|t| t.is_dir())
                && !self.is_starting(&id)
            {
                ids.push(id);
            }
        }
        ids.sort();
        let mut tasks = Vec::new();
        for id in ids {
            let dir = self.existing_dir(&id).await?;
            let spec = match read_spec(&dir).await {
                Ok(spec) => spec,
                Err(e) => {
                    tracing::warn!(task_id = %id, error = %e, "skipping task directory");
                    continue;
                }
            };
            let state = self.adopt(&dir, &id).await?;
            tasks.push(AdoptedTask { spec, state });
        }
        Ok(tasks)
    }

    async fn adopt(&self, dir: &TaskDir, task_id: &str) -> Result<AdoptedState, ExecError> {
        if let Some(status) = read_exit(dir).await? {
            return Ok(AdoptedState::Exited(status));
        }
        if let Some(record) = self.await_start_record(dir).await? {
            if shim_alive(dir) {
                return Ok(AdoptedState::Running(TaskHandle::from_record(
                    task_id, record,
                )));
            }
        }
        if let Some(status) = self.reconcile_if_lost(dir).await? {
            return Ok(AdoptedState::Exited(status));
        }
        if let Some(status) = read_exit(dir).await? {
            return Ok(AdoptedState::Exited(status)); // the shim finished just now
        }
        // A live shim that never started its task in all this time is stuck.
        abandon_start(dir, "task shim got stuck before starting the task").await;
        let status = read_exit(dir)
            .await?
            .unwrap_or_else(|| ExitStatus::error("task shim got stuck before starting the task"));
        Ok(AdoptedState::Exited(status))
    }

    /// If the shim is gone without having written `exit.json`, kills what
    /// may be left of the task and writes `exit.json` in its place.
    pub(super) async fn reconcile_if_lost(
        &self,
        dir: &TaskDir,
    ) -> Result<Option<ExitStatus>, ExecError> {
        if shim_alive(dir) {
            return Ok(None);
        }
        // Re-read after the liveness check: the shim writes exit.json, then exits.
        if read_exit(dir).await?.is_some() {
            return Ok(None);
        }
        if let Some(record) = read_start(dir).await? {
            signal_group(&record, Signal::SIGKILL);
        }
        let task_id = read_spec(dir).await.map(|s| s.task_id).unwrap_or_default();
        let status = ExitStatus::error(
            "task shim exited without recording the task's exit; remaining processes were killed",
        );
        let exit_path = dir.exit();
        let to_write = status.clone();
        blocking(move || {
            if !task_id.is_empty() {
                cgroup::remove_dirs(&CgroupLayout::detect().task_dirs(&task_id));
            }
            write_json_atomic(&exit_path, &to_write)
        })
        .await
        .map_err(|e| ExecError::io("writing exit.json", e))?;
        tracing::warn!(dir = %dir.path().display(), "task shim lost; task marked exited");
        Ok(Some(status))
    }
}
