//! [`ProcessExecutor`]: the agent's side of process tasks. It launches a
//! shim per task and then only reads and signals: the shim is the task's
//! parent, so the executor learns of an exit through `exit.json`.

mod adopt;
mod files;

pub use adopt::{AdoptedState, AdoptedTask};

use crate::process::cgroup::{self, CgroupLayout};
use crate::process::error::ExecError;
use crate::process::logfile::LogLine;
use crate::process::logs::{self, LogOptions};
use crate::process::spec::{validate_task_id, ProcessTaskSpec};
use crate::process::status::ExitStatus;
use crate::process::taskdir::{read_pid, write_json_atomic, StartRecord, TaskDir};
use files::{
    abandon_start, blocking, read_exit, read_spec, read_start, shim_alive, shim_exit_fd,
    shim_log_tail, signal_group,
};
use nix::sys::signal::Signal;
use std::collections::HashSet;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// How often files written by shims are polled.
const POLL: Duration = Duration::from_millis(50);
/// How long a shim may take to start its task before `start` gives up.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `wait` looks at a running task whose shim it watches by pidfd.
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// How often `wait` checks that the shim is still alive.
const LIVENESS_PERIOD: Duration = Duration::from_secs(1);

/// A task the executor has started (or found running).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskHandle {
    pub task_id: String,
    /// The task process; also its process group.
    pub pid: i32,
    pub shim_pid: i32,
    pub started_at: SystemTime,
    /// Limits requested but not enforced, for the task status.
    pub warnings: Vec<String>,
}

impl TaskHandle {
    fn from_record(task_id: &str, record: StartRecord) -> Self {
        TaskHandle {
            task_id: task_id.to_string(),
            pid: record.pid,
            shim_pid: record.shim_pid,
            started_at: record.started_at,
            warnings: record.warnings,
        }
    }
}

/// Runs tasks as plain processes, each supervised by its own shim.
/// Cheap to clone; all clones share the same state.
#[derive(Debug, Clone)]
pub struct ProcessExecutor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state_root: PathBuf,
    shim_cmd: Vec<OsString>,
    /// Tasks inside `start`, which `list` must not take for lost ones.
    starting: Mutex<HashSet<String>>,
}

impl ProcessExecutor {
    /// `state_root` holds one directory per task (e.g. `<data-dir>/tasks`);
    /// `shim_cmd` is the program and leading arguments that run
    /// [`crate::process::shim::main`] (the task directory is appended).
    pub fn new(state_root: PathBuf, shim_cmd: Vec<OsString>) -> Self {
        ProcessExecutor {
            inner: Arc::new(Inner {
                state_root,
                shim_cmd,
                starting: Mutex::new(HashSet::new()),
            }),
        }
    }

    pub fn state_root(&self) -> &Path {
        &self.inner.state_root
    }

    /// The cgroup hierarchies limits would go to on this host.
    pub fn cgroup_layout(&self) -> CgroupLayout {
        CgroupLayout::detect()
    }

    fn task_dir(&self, task_id: &str) -> Result<TaskDir, ExecError> {
        validate_task_id(task_id).map_err(ExecError::InvalidSpec)?;
        Ok(TaskDir::new(self.inner.state_root.join(task_id)))
    }

    /// The task's directory, which must exist.
    async fn existing_dir(&self, task_id: &str) -> Result<TaskDir, ExecError> {
        let dir = self.task_dir(task_id)?;
        match tokio::fs::metadata(dir.path()).await {
            Ok(m) if m.is_dir() => Ok(dir),
            Ok(_) => Err(ExecError::NotFound(task_id.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(ExecError::NotFound(task_id.to_string()))
            }
            Err(e) => Err(ExecError::io(
                format!("reading {}", dir.path().display()),
                e,
            )),
        }
    }

    /// Starts the task and returns once its process runs. A task that
    /// cannot start (unknown command, bad directory or user) gives
    /// `StartFailed` with the reason, which is also recorded as its exit
    /// status; its directory stays until [`remove`](Self::remove).
    pub async fn start(&self, spec: ProcessTaskSpec) -> Result<TaskHandle, ExecError> {
        spec.validate().map_err(ExecError::InvalidSpec)?;
        if self.inner.shim_cmd.is_empty() {
            return Err(ExecError::StartFailed("no shim command configured".into()));
        }
        let task_id = spec.task_id.clone();
        let Some(_starting) = StartingGuard::claim(&self.inner, &task_id) else {
            return Err(ExecError::AlreadyExists(task_id));
        };
        let dir = self.create_task_dir(&spec).await?;
        match self.launch_and_await_start(&dir, &task_id).await {
            Ok(handle) => Ok(handle),
            Err(ExecError::StartFailed(message)) => {
                abandon_start(&dir, &message).await;
                Err(ExecError::StartFailed(message))
            }
            Err(e) => {
                abandon_start(&dir, &e.to_string()).await;
                Err(e)
            }
        }
    }

    /// Claims `<state_root>/<task_id>` (failing if it exists) and writes
    /// `spec.json` into it.
    async fn create_task_dir(&self, spec: &ProcessTaskSpec) -> Result<TaskDir, ExecError> {
        let root = &self.inner.state_root;
        tokio::fs::create_dir_all(root)
            .await
            .map_err(|e| ExecError::io(format!("creating {}", root.display()), e))?;
        let requested = root.join(&spec.task_id);
        // Owner only: spec.json holds the task's environment, secrets included.
        match tokio::fs::DirBuilder::new()
            .mode(0o700)
            .create(&requested)
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(ExecError::AlreadyExists(spec.task_id.clone()));
            }
            Err(e) => {
                let context = format!("creating {}", requested.display());
                return Err(ExecError::io(context, e));
            }
        }
        // The shim gets the canonical path: it is how a live shim is recognised.
        let path = tokio::fs::canonicalize(&requested)
            .await
            .map_err(|e| ExecError::io(format!("resolving {}", requested.display()), e))?;
        let dir = TaskDir::new(path);
        let spec_path = dir.spec();
        let spec = spec.clone();
        blocking(move || write_json_atomic(&spec_path, &spec))
            .await
            .map_err(|e| ExecError::io("writing spec.json", e))?;
        Ok(dir)
    }

    async fn launch_and_await_start(
        &self,
        dir: &TaskDir,
        task_id: &str,
    ) -> Result<TaskHandle, ExecError> {
        self.launch_shim(dir).await?;
        let started = Instant::now();
        loop {
            if let Some(ExitStatus {
                error: Some(error), ..
            }) = read_exit(dir).await?
            {
                return Err(ExecError::StartFailed(error));
            }
            if tokio::fs::try_exists(dir.pid()).await.unwrap_or(false) {
                let record = read_start(dir).await?.ok_or_else(|| {
                    ExecError::StartFailed("task shim wrote pid but no start.json".into())
                })?;
                return Ok(TaskHandle::from_record(task_id, record));
            }
            let shim_seen = read_pid(&dir.shim_pid()).ok().flatten().is_some();
            if shim_seen && !shim_alive(dir) && read_exit(dir).await?.is_none() {
                return Err(ExecError::StartFailed(format!(
                    "task shim exited before starting the task: {}",
                    shim_log_tail(dir).await
                )));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(ExecError::StartFailed(format!(
                    "task shim did not start the task within {START_TIMEOUT:?}: {}",
                    shim_log_tail(dir).await
                )));
            }
            tokio::time::sleep(POLL / 2).await;
        }
    }

    /// Runs the shim command; the launcher forks the real shim and exits.
    async fn launch_shim(&self, dir: &TaskDir) -> Result<(), ExecError> {
        let shim_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.shim_log())
            .map_err(|e| ExecError::io("opening shim.log", e))?;
        let (program, args) = self
            .inner
            .shim_cmd
            .split_first()
            .expect("checked non-empty");
        let status = tokio::process::Command::new(program)
            .args(args)
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(shim_log)
            .process_group(0)
            .status()
            .await
            .map_err(|e| ExecError::StartFailed(format!("running task shim {program:?}: {e}")))?;
        if !status.success() {
            return Err(ExecError::StartFailed(format!(
                "task shim failed ({status}): {}",
                shim_log_tail(dir).await
            )));
        }
        Ok(())
    }

    /// Resolves when the task has exited. The executor is not the task's
    /// parent: it polls for `exit.json`, and if the shim dies without
    /// writing it, records the task as lost.
    pub async fn wait(&self, task_id: &str) -> Result<ExitStatus, ExecError> {
        let dir = self.existing_dir(task_id).await?;
        let mut last_check = Instant::now();
        loop {
            if let Some(status) = read_exit(&dir).await? {
                return Ok(status);
            }
            // While the shim lives, sleep until it exits (no polling: with
            // a thousand tasks, polling alone kept a core busy).
            if !self.is_starting(task_id) {
                if let Some(fd) = shim_exit_fd(&dir) {
                    tokio::select! {
                        _ = fd.readable() => {}
                        // Also notice a task directory removed meanwhile.
                        _ = tokio::time::sleep(IDLE_CHECK) => {}
                    }
                    if !tokio::fs::try_exists(dir.path()).await.unwrap_or(true) {
                        return Err(ExecError::NotFound(task_id.to_string()));
                    }
                    continue;
                }
            }
            if last_check.elapsed() >= LIVENESS_PERIOD && !self.is_starting(task_id) {
                last_check = Instant::now();
                if let Some(status) = self.reconcile_if_lost(&dir).await? {
                    return Ok(status);
                }
            }
            if !tokio::fs::try_exists(dir.path()).await.unwrap_or(true) {
                return Err(ExecError::NotFound(task_id.to_string()));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops the task: its stop signal to the whole process group, SIGKILL
    /// to the group if it still runs after `grace`. Returns the exit status
    /// once `exit.json` exists (at once if the task had already exited).
    pub async fn shutdown(&self, task_id: &str, grace: Duration) -> Result<ExitStatus, ExecError> {
        let dir = self.existing_dir(task_id).await?;
        if let Some(status) = read_exit(&dir).await? {
            return Ok(status);
        }
        let Some(record) = self.await_start_record(&dir).await? else {
            return self.wait(task_id).await;
        };
        let spec = read_spec(&dir).await?;
        signal_group(&record, spec.stop_signal.0);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = read_exit(&dir).await? {
                return Ok(status);
            }
            tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
        if read_exit(&dir).await?.is_none() {
            tracing::info!(
                task_id,
                ?grace,
                "task did not stop in time; sending SIGKILL"
            );
            signal_group(&record, Signal::SIGKILL);
        }
        self.wait(task_id).await
    }

    /// The start record, waiting for it while the shim is still starting
    /// the task; `None` if the task ended without starting.
    async fn await_start_record(&self, dir: &TaskDir) -> Result<Option<StartRecord>, ExecError> {
        let started = Instant::now();
        loop {
            if let Some(record) = read_start(dir).await? {
                return Ok(Some(record));
            }
            if read_exit(dir).await?.is_some() {
                return Ok(None);
            }
            let in_start = dir
                .path()
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|id| self.is_starting(id));
            if started.elapsed() > START_TIMEOUT || (!in_start && !shim_alive(dir)) {
                return Ok(None);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Shuts the task down if it still runs, then deletes its directory
    /// (logs included). Removing an unknown task is not an error.
    pub async fn remove(&self, task_id: &str) -> Result<(), ExecError> {
        let dir = match self.existing_dir(task_id).await {
            Ok(dir) => dir,
            Err(ExecError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if read_exit(&dir).await?.is_none() {
            let grace = match read_spec(&dir).await {
                Ok(spec) => spec.stop_grace,
                Err(_) => Duration::ZERO,
            };
            self.shutdown(task_id, grace).await?;
        }
        let task = task_id.to_string();
        blocking(move || {
            // Normally the shim has removed the cgroup; this covers a lost one.
            cgroup::remove_dirs(&CgroupLayout::detect().task_dirs(&task));
            Ok(())
        })
        .await
        .map_err(|e| ExecError::io("removing cgroup", e))?;
        match tokio::fs::remove_dir_all(dir.path()).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ExecError::io(
                format!("removing {}", dir.path().display()),
                e,
            )),
        }
    }

    /// The task's output, as a channel of lines (see [`LogOptions`]).
    pub async fn logs(
        &self,
        task_id: &str,
        options: LogOptions,
    ) -> Result<mpsc::Receiver<LogLine>, ExecError> {
        let dir = self.existing_dir(task_id).await?;
        Ok(logs::spawn_reader(dir, options, POLL))
    }

    fn is_starting(&self, task_id: &str) -> bool {
        lock(&self.inner.starting).contains(task_id)
    }
}

/// Marks a task as inside `start` for as long as it lives.
struct StartingGuard<'a> {
    inner: &'a Inner,
    task_id: String,
}

impl<'a> StartingGuard<'a> {
    /// `None` if this executor is already starting the task.
    fn claim(inner: &'a Inner, task_id: &str) -> Option<Self> {
        lock(&inner.starting)
            .insert(task_id.to_string())
            .then(|| StartingGuard {
                inner,
                task_id: task_id.to_string(),
            })
    }
}

impl Drop for StartingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.inner.starting).remove(&self.task_id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
