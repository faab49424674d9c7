//! The worker: turns the dispatcher's assignments into running tasks.
//!
//! For every assigned task whose desired state is running, one controller
//! walks it through accepted → preparing → ready → starting → running on its
//! executor, waits for it to exit (complete or failed, with the exit code),
//! and stops it (shutdown, after the stop grace period) when the desired
//! state moves past running. Tasks no longer assigned are stopped and their
//! local state removed. Every state change is reported to the dispatcher.
//!
//! Agent restarts: the process executor's shims outlive the agent, so on
//! start the worker **re-adopts** every task still running (same process,
//! no duplicate) and reports those that exited meanwhile with their exit
//! status. A task the store believes started but that is not on this node
//! any more is reported failed, so the orchestrator replaces it.

use crate::docker::{self, DockerExecutor, EngineSlot};
use crate::process::{
    AdoptedState, ExecError, ExitOutcome, ExitStatus, ProcessExecutor, ProcessTaskSpec,
    ResourceLimits, StopSignal,
};
use shoal_api::{RuntimeKind, Task, TaskState};
use shoal_net::rpc::TaskStatusReport;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Which executor runs a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exec {
    Process,
    Docker,
}

/// Local knowledge of one task.
struct Local {
    /// Last state reported.
    state: TaskState,
    /// Whether a shutdown was requested.
    stopping: bool,
    /// Its executor.
    exec: Exec,
    /// The last report sent (see [`Worker::session_opened`]).
    last: Option<TaskStatusReport>,
}

/// Runs tasks on this node.
#[derive(Clone)]
pub struct Worker {
    node_id: String,
    process: ProcessExecutor,
    /// The docker executor, bound when the node's engine first answers.
    docker: EngineSlot,
    status: mpsc::UnboundedSender<Vec<TaskStatusReport>>,
    local: Arc<Mutex<HashMap<String, Local>>>,
    /// A new session with the dispatcher began: the next assignment set is
    /// checked for reports that may have been lost.
    resync: Arc<std::sync::atomic::AtomicBool>,
    /// Task starts in progress at once: a burst of hundreds of assignments
    /// must not starve the node (and its heartbeats) of CPU.
    starts: Arc<tokio::sync::Semaphore>,
}

/// Concurrent task starts per node.
const CONCURRENT_STARTS: usize = 16;

fn report(task_id: &str, state: TaskState, message: &str, err: &str) -> TaskStatusReport {
    TaskStatusReport {
        task_id: task_id.to_string(),
        state,
        message: message.to_string(),
        err: err.to_string(),
        pid: 0,
        exit_code: None,
        container_id: String::new(),
    }
}

fn exit_report(task_id: &str, st: &ExitStatus) -> TaskStatusReport {
    let (state, err) = match st.outcome() {
        ExitOutcome::Complete => (TaskState::Complete, String::new()),
        ExitOutcome::Failed(e) => (TaskState::Failed, e),
    };
    let mut r = report(task_id, state, "finished", &err);
    r.exit_code = Some(st.code.map(i64::from).unwrap_or(-1));
    r
}

/// "started", plus any limit the host could not apply (so the task status says so).
fn started_message(warnings: &[String]) -> String {
    if warnings.is_empty() {
        "started".to_string()
    } else {
        format!("started ({})", warnings.join("; "))
    }
}

/// The process executor's spec for a task.
pub fn process_spec(
    task: &Task,
    service_name: &str,
    node_id: &str,
) -> Result<ProcessTaskSpec, String> {
    let p = task
        .spec
        .process_spec
        .as_ref()
        .ok_or("the task has no ProcessSpec")?;
    let limits = task.spec.limits();
    Ok(ProcessTaskSpec {
        task_id: task.id.clone(),
        service_id: task.service_id.clone(),
        service_name: service_name.to_string(),
        slot: task.slot,
        node_id: node_id.to_string(),
        command: p.command.clone(),
        args: p.args.clone(),
        env: p.env.clone(),
        dir: (!p.dir.is_empty()).then(|| p.dir.clone()),
        user: (!p.user.is_empty()).then(|| p.user.clone()),
        limits: ResourceLimits {
            nano_cpus: limits.nano_cpus,
            memory_bytes: limits.memory_bytes,
        },
        stop_grace: task.spec.stop_grace_period(),
        stop_signal: StopSignal::default(),
        ..Default::default()
    })
}

impl Worker {
    /// A worker using `process` (and the executor in `docker` once the
    /// node's engine is found: at start or later), reporting through `status`.
    pub fn new(
        node_id: &str,
        process: ProcessExecutor,
        docker: EngineSlot,
        status: mpsc::UnboundedSender<Vec<TaskStatusReport>>,
    ) -> Worker {
        Worker {
            node_id: node_id.to_string(),
            process,
            docker,
            status,
            local: Arc::new(Mutex::new(HashMap::new())),
            resync: Default::default(),
            starts: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_STARTS)),
        }
    }

    fn exec_of(&self, id: &str) -> Exec {
        self.local
            .lock()
            .expect("lock")
            .get(id)
            .map(|l| l.exec)
            .unwrap_or(Exec::Process)
    }

    fn track(&self, id: &str, state: TaskState, exec: Exec) {
        self.local.lock().expect("lock").insert(
            id.to_string(),
            Local {
                state,
                stopping: false,
                exec,
                last: None,
            },
        );
    }

    async fn exec_wait(&self, id: &str) -> Result<ExitStatus, String> {
        match (self.exec_of(id), self.docker.get()) {
            (Exec::Docker, Some(d)) => d.wait(id).await.map_err(|e| e.to_string()),
            (Exec::Docker, None) => Err("no container engine".into()),
            (Exec::Process, _) => self.process.wait(id).await.map_err(|e| e.to_string()),
        }
    }

    async fn exec_remove(&self, id: &str, exec: Exec) {
        let r = match (exec, self.docker.get()) {
            (Exec::Docker, Some(d)) => d.remove(id).await.map_err(|e| e.to_string()),
            (Exec::Docker, None) => Ok(()),
            (Exec::Process, _) => self.process.remove(id).await.map_err(|e| e.to_string()),
        };
        if let Err(e) = r {
            tracing::debug!(task = %id, "remove: {e}");
        }
    }

    async fn send(&self, r: TaskStatusReport) {
        if let Some(l) = self.local.lock().expect("lock").get_mut(&r.task_id) {
            l.state = r.state;
            l.last = Some(r.clone());
        }
        let _ = self.status.send(vec![r]);
    }

    /// A session with a dispatcher was opened (its assignment set comes
    /// next). Reports sent on the previous session may be lost: a leader
    /// that got them and died before it committed them leaves the store
    /// with an older state (a task started here stays `assigned` for
    /// good). So the next assignment set is compared with what this node
    /// reported, and a task's last report is sent again where the store is
    /// behind it.
    pub fn session_opened(&self) {
        self.resync.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Sends `task`'s last report again if the store's state is behind it.
    fn report_again_if_behind(&self, task: &Task) {
        let again = self
            .local
            .lock()
            .expect("lock")
            .get(&task.id)
            .filter(|l| l.state > task.status.state)
            .and_then(|l| l.last.clone());
        if let Some(r) = again {
            tracing::debug!(task = %task.id, state = ?r.state, "reporting again: the store is behind");
            let _ = self.status.send(vec![r]);
        }
    }

    /// Stops and removes every task of this node (the node leaves its
    /// cluster), waiting until they are gone.
    pub async fn remove_all(&self) {
        let all: Vec<(String, Exec)> = self
            .local
            .lock()
            .expect("lock")
            .drain()
            .map(|(id, l)| (id, l.exec))
            .collect();
        let mut set = tokio::task::JoinSet::new();
        for (id, exec) in all {
            let me = self.clone();
            set.spawn(async move { me.exec_remove(&id, exec).await });
        }
        while set.join_next().await.is_some() {}
    }

    /// Re-adopts tasks (processes and containers) that survived an agent restart.
    pub async fn adopt(&self) {
        match self.process.list().await {
            Ok(found) => {
                for t in found {
                    let id = t.spec.task_id.clone();
                    self.track(&id, TaskState::Running, Exec::Process);
                    match t.state {
                        AdoptedState::Running(h) => {
                            tracing::info!(task = %id, pid = h.pid, "re-adopted a running task");
                            let mut r = report(&id, TaskState::Running, "started", "");
                            r.pid = h.pid as i64;
                            self.send(r).await;
                            let me = self.clone();
                            tokio::spawn(async move { me.wait_exit(&id).await });
                        }
                        AdoptedState::Exited(st) => self.send(exit_report(&id, &st)).await,
                    }
                }
            }
            Err(e) => tracing::warn!("could not list local tasks: {e}"),
        }
        if let Some(d) = self.docker.get() {
            self.adopt_containers(&d).await;
        }
    }

    /// Re-adopts this node's containers found in `d`'s engine: at start, or
    /// when the engine first answers after the node started. A task already
    /// known here is not adopted twice; one reported lost meanwhile (its
    /// container was out of reach) is stopped, as it has been replaced.
    pub async fn adopt_containers(&self, d: &DockerExecutor) {
        let found = match d.list().await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("could not list local containers: {e}");
                return;
            }
        };
        for c in found.into_iter().filter(|c| c.node_id == self.node_id) {
            let id = c.task_id.clone();
            let lost = {
                let mut l = self.local.lock().expect("lock");
                match l.get_mut(&id) {
                    Some(known) if known.exec == Exec::Docker => continue,
                    Some(known) => {
                        known.exec = Exec::Docker;
                        known.stopping = true;
                        true
                    }
                    None => false,
                }
            };
            if lost {
                if let docker::AdoptedState::Running(_) = c.state {
                    let me = self.clone();
                    tokio::spawn(
                        async move { me.stop_task(&id, docker::DEFAULT_STOP_GRACE).await },
                    );
                }
                continue;
            }
            self.track(&id, TaskState::Running, Exec::Docker);
            match c.state {
                docker::AdoptedState::Running(h) => {
                    tracing::info!(task = %id, container = %h.container_id, "re-adopted a running container");
                    let mut r = report(&id, TaskState::Running, "started", "");
                    r.pid = h.pid as i64;
                    r.container_id = h.container_id.clone();
                    self.send(r).await;
                    let me = self.clone();
                    tokio::spawn(async move { me.wait_exit(&id).await });
                }
                docker::AdoptedState::Exited(st) => self.send(exit_report(&id, &st)).await,
            }
        }
    }

    /// Applies a complete assignment set from the dispatcher.
    pub async fn assign(
        &self,
        tasks: Vec<Task>,
        service_names: &std::collections::BTreeMap<String, String>,
    ) {
        let assigned: HashSet<String> = tasks.iter().map(|t| t.id.clone()).collect();
        let resync = self.resync.swap(false, std::sync::atomic::Ordering::SeqCst);
        for task in tasks {
            let known = self.local.lock().expect("lock").contains_key(&task.id);
            if resync && known {
                self.report_again_if_behind(&task);
            }
            if task.desired_state <= TaskState::Running {
                if known || task.status.state.is_terminal() {
                    continue;
                }
                if task.status.state >= TaskState::Starting {
                    // The store thinks it started here, but this node has no trace of it.
                    self.track(&task.id, TaskState::Failed, Exec::Process);
                    self.send(report(
                        &task.id,
                        TaskState::Failed,
                        "lost",
                        "task not found on its node (agent state lost)",
                    ))
                    .await;
                    continue;
                }
                let exec = match task.spec.runtime_kind() {
                    RuntimeKind::Process => Exec::Process,
                    RuntimeKind::Container => Exec::Docker,
                };
                self.track(&task.id, task.status.state, exec);
                let me = self.clone();
                let name = service_names
                    .get(&task.service_id)
                    .cloned()
                    .unwrap_or_default();
                tokio::spawn(async move { me.run_task(task, name).await });
            } else if known {
                let stop = {
                    let mut l = self.local.lock().expect("lock");
                    let e = l.get_mut(&task.id).expect("known");
                    let stop = !e.stopping && !e.state.is_terminal();
                    e.stopping = true;
                    stop
                };
                if stop {
                    let me = self.clone();
                    let grace = task.spec.stop_grace_period();
                    tokio::spawn(async move { me.stop_task(&task.id, grace).await });
                }
            }
        }
        // Tasks no longer assigned were removed from the cluster: clean up.
        let gone: Vec<String> = {
            let l = self.local.lock().expect("lock");
            l.keys()
                .filter(|k| !assigned.contains(*k))
                .cloned()
                .collect()
        };
        for id in gone {
            let exec = self
                .local
                .lock()
                .expect("lock")
                .remove(&id)
                .map(|l| l.exec)
                .unwrap_or(Exec::Process);
            let me = self.clone();
            tokio::spawn(async move { me.exec_remove(&id, exec).await });
        }
    }

    async fn run_task(&self, task: Task, service_name: String) {
        let id = task.id.clone();
        self.send(report(&id, TaskState::Accepted, "accepted", ""))
            .await;
        self.send(report(&id, TaskState::Preparing, "preparing", ""))
            .await;
        match task.spec.runtime_kind() {
            RuntimeKind::Process => self.run_process(&task, &service_name).await,
            RuntimeKind::Container => self.run_container(&task, &service_name).await,
        }
    }

    async fn run_process(&self, task: &Task, service_name: &str) {
        let id = task.id.clone();
        let spec = match process_spec(task, service_name, &self.node_id) {
            Ok(s) => s,
            Err(e) => {
                return self
                    .send(report(&id, TaskState::Rejected, "rejected", &e))
                    .await
            }
        };
        self.send(report(&id, TaskState::Ready, "prepared", ""))
            .await;
        self.send(report(&id, TaskState::Starting, "starting", ""))
            .await;
        let permit = self.starts.acquire().await;
        let started = self.process.start(spec).await;
        drop(permit);
        match started {
            Ok(h) => {
                let mut r = report(&id, TaskState::Running, &started_message(&h.warnings), "");
                r.pid = h.pid as i64;
                self.send(r).await;
                self.wait_exit(&id).await;
            }
            Err(ExecError::InvalidSpec(e)) => {
                self.send(report(&id, TaskState::Rejected, "rejected", &e))
                    .await
            }
            Err(e) => {
                let mut r = report(&id, TaskState::Failed, "starting failed", &e.to_string());
                r.exit_code = Some(-1);
                self.send(r).await;
            }
        }
    }

    async fn run_container(&self, task: &Task, service_name: &str) {
        let id = task.id.clone();
        let Some(d) = self.docker.get() else {
            return self
                .send(report(
                    &id,
                    TaskState::Rejected,
                    "rejected",
                    "this node has no container engine",
                ))
                .await;
        };
        let spec = match crate::convert::container_spec(task, service_name, &self.node_id) {
            Ok(s) => s,
            Err(e) => {
                return self
                    .send(report(&id, TaskState::Rejected, "rejected", &e))
                    .await
            }
        };
        if let Err(e) = d.prepare_image(&spec.image).await {
            return self
                .send(report(
                    &id,
                    TaskState::Rejected,
                    "preparing failed",
                    &e.to_string(),
                ))
                .await;
        }
        self.send(report(&id, TaskState::Ready, "prepared", ""))
            .await;
        self.send(report(&id, TaskState::Starting, "starting", ""))
            .await;
        let permit = self.starts.acquire().await;
        // The image was checked (pulled if needed) just above.
        let started = d.start_prepared(spec).await;
        drop(permit);
        match started {
            Ok(h) => {
                let mut r = report(&id, TaskState::Running, &started_message(&h.warnings), "");
                r.pid = h.pid as i64;
                r.container_id = h.container_id.clone();
                self.send(r).await;
                self.wait_exit(&id).await;
            }
            Err(docker::ExecError::InvalidSpec(e))
            | Err(docker::ExecError::ImageUnavailable(e)) => {
                self.send(report(&id, TaskState::Rejected, "rejected", &e))
                    .await
            }
            Err(e) => {
                let mut r = report(
                    &id,
                    TaskState::Failed,
                    "starting container failed",
                    &e.to_string(),
                );
                r.exit_code = Some(-1);
                self.send(r).await;
            }
        }
    }

    async fn wait_exit(&self, id: &str) {
        match self.exec_wait(id).await {
            Ok(st) => {
                let stopping = self
                    .local
                    .lock()
                    .expect("lock")
                    .get(id)
                    .is_some_and(|l| l.stopping);
                let mut r = exit_report(id, &st);
                if stopping {
                    r.state = TaskState::Shutdown;
                    r.message = "shutdown".into();
                    r.err.clear();
                }
                self.send(r).await;
            }
            Err(e) => {
                self.send(report(id, TaskState::Failed, "lost", &e.to_string()))
                    .await
            }
        }
    }

    async fn stop_task(&self, id: &str, grace: Duration) {
        let r = match (self.exec_of(id), self.docker.get()) {
            (Exec::Docker, Some(d)) => match d.shutdown(id, grace).await {
                Ok(_) | Err(docker::ExecError::NotFound(_)) => Ok(()),
                Err(e) => Err(e.to_string()),
            },
            (Exec::Docker, None) => Ok(()),
            (Exec::Process, _) => match self.process.shutdown(id, grace).await {
                Ok(_) | Err(ExecError::NotFound(_)) => Ok(()),
                Err(e) => Err(e.to_string()),
            },
        };
        if let Err(e) = r {
            tracing::warn!(task = %id, "shutdown: {e}");
        }
        // A task that never started (still preparing) ends here.
        let state = self.local.lock().expect("lock").get(id).map(|l| l.state);
        if state.is_some_and(|s| s < TaskState::Running) {
            self.send(report(id, TaskState::Shutdown, "shutdown", ""))
                .await;
        }
    }
}
