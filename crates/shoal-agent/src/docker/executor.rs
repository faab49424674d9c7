//! [`DockerExecutor`]: the agent's side of container tasks, through the
//! node's Docker Engine API. The engine is the containers' parent and keeps
//! their state; the executor keeps a task ID → container ID cache and what
//! its one event stream said about the containers ([`Exits`]), so a new
//! executor (after an agent restart) finds everything again by label.
//!
//! Engine API requests per task container: `POST /containers/create`,
//! `POST /containers/{id}/start`, `GET /containers/{id}/json` (the pid and
//! start time for the task status), and, when it ends, `stop` and `DELETE`.
//! Its exit comes from the executor's `GET /events` stream (shared by all
//! containers); images are looked up once per burst ([`IMAGE_FRESH`]).

use crate::docker::error::{classify, ExecError, Failure};
use crate::docker::events::{self, Exits, Outcome, Waiting};
use crate::docker::logs;
use crate::docker::spec::{
    grace_seconds, validate_task_id, ContainerTaskSpec, LABEL_NODE_ID, LABEL_SERVICE_ID,
    LABEL_SERVICE_NAME, LABEL_SHOAL_TASK, LABEL_TASK_ID, LABEL_TASK_NAME, RESERVED_LABELS,
};
use crate::process::{ExitStatus, LogLine, LogOptions};
use bollard::errors::Error as EngineError;
use bollard::models::{
    ContainerInspectResponse, ContainerState, ContainerStateStatusEnum, HealthStatusEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// Where the engine listens when neither `DOCKER_HOST` nor a socket is given.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// How long `connect` waits for the engine to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for the engine to start answering one request (headers;
/// streamed bodies such as `wait` and `logs` may take as long as they need).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Extra time, beyond the grace period, the engine gets to answer a stop.
const STOP_SLACK: Duration = Duration::from_secs(30);
/// How long an image found in the engine counts as there: a burst of one
/// service's tasks asks the engine once, not once per task.
const IMAGE_FRESH: Duration = Duration::from_secs(5);

/// A task the executor has started (or found running).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskHandle {
    pub task_id: String,
    pub container_id: String,
    /// The container's main process, as seen from the host (0 if unknown).
    pub pid: i32,
    pub started_at: SystemTime,
    /// The engine's warnings from creating the container (limits the
    /// kernel does not support, ...), for the task status.
    pub warnings: Vec<String>,
}

/// A container's healthcheck state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    Starting,
    Healthy,
    Unhealthy,
}

/// Where a found container stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdoptedState {
    /// Running (or paused, or restarting): adopted as it is.
    Running(TaskHandle),
    /// Exited (perhaps while no agent watched), or never started.
    Exited(ExitStatus),
}

/// A shoal task container found in the engine ([`DockerExecutor::list`],
/// [`DockerExecutor::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptedContainer {
    pub task_id: String,
    /// The container's name (`<service>.<slot>.<task_id>`).
    pub task_name: String,
    pub service_id: String,
    pub service_name: String,
    pub node_id: String,
    pub container_id: String,
    pub image: String,
    /// The container's labels other than Swarm's and shoal's own (the
    /// spec's labels, plus any the image defines).
    pub labels: BTreeMap<String, String>,
    /// `None` when the container has no healthcheck.
    pub health: Option<HealthState>,
    pub state: AdoptedState,
}

/// What the node reports about its engine (`NodeDescription.Engine`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineInfo {
    /// `20.10.24+dfsg1`
    pub version: String,
    /// The API version the executor talks (negotiated down to the engine's).
    pub api_version: String,
    pub os: String,
    pub arch: String,
    pub kernel_version: String,
    pub ncpu: i64,
    pub memory_bytes: i64,
    /// The engine's `--label`s.
    pub labels: BTreeMap<String, String>,
    /// `(kind, name)` as Swarm reports them: kinds `Volume`, `Network`,
    /// `Authorization`, `Log`.
    pub plugins: Vec<(String, String)>,
}

/// Runs tasks as containers through a Docker Engine. Cheap to clone; all
/// clones share one connection setup and cache.
#[derive(Debug, Clone)]
pub struct DockerExecutor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    docker: Docker,
    host: String,
    /// Task ID → container ID, for the containers seen so far.
    containers: Mutex<HashMap<String, String>>,
    /// Image → when it was last found in the engine; its lock makes
    /// concurrent checks of one image wait for the first.
    images: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
    /// The containers' starts and exits, from the engine's event stream.
    exits: Arc<Exits>,
    /// The task reading that stream (stopped with the last clone).
    events: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.events.abort();
    }
}

impl DockerExecutor {
    /// Connects to the engine at `DOCKER_HOST` (a `unix://` address), else
    /// at `socket`, else at [`DEFAULT_DOCKER_SOCKET`], and checks that it
    /// answers. `EngineUnavailable` if it does not.
    pub async fn connect(socket: Option<&str>) -> Result<Self, ExecError> {
        let env = std::env::var("DOCKER_HOST").ok();
        Self::connect_to(resolve_host(env.as_deref(), socket)).await
    }

    /// Connects to exactly `host` (`unix:///path` or `/path`), ignoring
    /// `DOCKER_HOST`, and negotiates the API version.
    pub async fn connect_to(host: &str) -> Result<Self, ExecError> {
        let path = match host.strip_prefix("unix://") {
            Some(path) => path,
            None if host.starts_with('/') => host,
            None => {
                return Err(ExecError::EngineUnavailable(format!(
                "unsupported Docker host {host:?}: only unix sockets (unix:///path) are supported"
            )))
            }
        };
        let unavailable =
            |detail: String| ExecError::EngineUnavailable(format!("{host}: {detail}"));
        let docker =
            Docker::connect_with_unix(path, REQUEST_TIMEOUT.as_secs(), API_DEFAULT_VERSION)
                .map_err(|e| unavailable(detail(e)))?;
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| unavailable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| unavailable(detail(e)))?;
        let exits = Arc::new(Exits::default());
        let events = events::spawn_reader(docker.clone(), exits.clone()).abort_handle();
        Ok(DockerExecutor {
            inner: Arc::new(Inner {
                docker,
                host: host.to_string(),
                containers: Mutex::new(HashMap::new()),
                images: Mutex::new(HashMap::new()),
                exits,
                events,
            }),
        })
    }

    /// The address this executor talks to.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// The underlying Engine API client (events, stats, ...).
    pub fn client(&self) -> &Docker {
        &self.inner.docker
    }

    /// Whether the engine answers now.
    pub async fn ping(&self) -> Result<(), ExecError> {
        self.docker().ping().await.map(drop).map_err(unavailable)
    }

    /// The engine's version, resources, labels and plugins.
    pub async fn describe(&self) -> Result<EngineInfo, ExecError> {
        let docker = self.docker();
        let version = docker.version().await.map_err(ExecError::engine)?;
        let info = docker.info().await.map_err(ExecError::engine)?;
        let labels = info
            .labels
            .unwrap_or_default()
            .into_iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (l, String::new()),
            })
            .collect();
        let mut plugins = Vec::new();
        if let Some(p) = info.plugins {
            for (kind, names) in [
                ("Volume", p.volume),
                ("Network", p.network),
                ("Authorization", p.authorization),
                ("Log", p.log),
            ] {
                for name in names.unwrap_or_default() {
                    plugins.push((kind.to_string(), name));
                }
            }
        }
        Ok(EngineInfo {
            version: version.version.or(info.server_version).unwrap_or_default(),
            api_version: docker.client_version().to_string(),
            os: version.os.or(info.os_type).unwrap_or_default(),
            arch: version.arch.or(info.architecture).unwrap_or_default(),
            kernel_version: version
                .kernel_version
                .or(info.kernel_version)
                .unwrap_or_default(),
            ncpu: info.ncpu.unwrap_or_default(),
            memory_bytes: info.mem_total.unwrap_or_default(),
            labels,
            plugins,
        })
    }

    /// Makes sure `image` is in the engine, pulling it if it is not.
    /// `ImageUnavailable` with the engine's message if the pull fails.
    /// Concurrent calls for one image share one check, and an image found
    /// in the last [`IMAGE_FRESH`] is not looked up again.
    pub async fn prepare_image(&self, image: &str) -> Result<(), ExecError> {
        let entry = lock(&self.inner.images)
            .entry(image.to_string())
            .or_default()
            .clone();
        let mut found_at = entry.lock().await;
        if found_at.is_some_and(|t| t.elapsed() < IMAGE_FRESH) {
            return Ok(());
        }
        self.find_or_pull(image).await?;
        *found_at = Some(Instant::now());
        Ok(())
    }

    async fn find_or_pull(&self, image: &str) -> Result<(), ExecError> {
        let docker = self.docker();
        match docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) => match classify(e) {
                Failure::NotFound(_) => {}
                Failure::Unavailable(m) => return Err(ExecError::EngineUnavailable(m)),
                Failure::Conflict(m) | Failure::Other(m) => return Err(ExecError::Engine(m)),
            },
        }
        let failed = |why: String| {
            ExecError::ImageUnavailable(format!("No such image: {image} (pull failed: {why})"))
        };
        let mut pull = Box::pin(docker.create_image(Some(pull_options(image)), None, None));
        while let Some(progress) = pull.next().await {
            if let Err(e) = progress {
                return Err(match classify(e) {
                    Failure::Unavailable(m) => ExecError::EngineUnavailable(m),
                    Failure::NotFound(m) | Failure::Conflict(m) | Failure::Other(m) => failed(m),
                });
            }
        }
        match docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) => Err(match classify(e) {
                Failure::NotFound(m) => failed(format!("not found after pulling: {m}")),
                Failure::Unavailable(m) => ExecError::EngineUnavailable(m),
                Failure::Conflict(m) | Failure::Other(m) => ExecError::Engine(m),
            }),
        }
    }

    /// Pulls the image if needed, creates the container (named
    /// `<service>.<slot>.<task_id>`, labelled like Swarm's) and starts it.
    /// A container that was created but did not start stays until
    /// [`remove`](Self::remove); its error is also its exit status.
    pub async fn start(&self, spec: ContainerTaskSpec) -> Result<TaskHandle, ExecError> {
        spec.validate().map_err(ExecError::InvalidSpec)?;
        self.prepare_image(&spec.image).await?;
        self.start_prepared(spec).await
    }

    /// [`start`](Self::start) for an image [`prepare_image`](Self::prepare_image)
    /// has just made sure of: create, start and inspect, no image lookup
    /// (an image removed meanwhile is `ImageUnavailable`).
    pub async fn start_prepared(&self, spec: ContainerTaskSpec) -> Result<TaskHandle, ExecError> {
        spec.validate().map_err(ExecError::InvalidSpec)?;
        let docker = self.docker();
        let options = CreateContainerOptions {
            name: Some(spec.container_name()),
            platform: String::new(),
        };
        let created = docker
            .create_container(Some(options), spec.to_create_body())
            .await
            .map_err(|e| match classify(e) {
                Failure::Conflict(_) => ExecError::AlreadyExists(spec.task_id.clone()),
                Failure::Unavailable(m) => ExecError::EngineUnavailable(m),
                // 404 here is an image removed since `prepare_image`: the
                // next one looks it up (and pulls it) again.
                Failure::NotFound(m) => {
                    lock(&self.inner.images).remove(&spec.image);
                    ExecError::ImageUnavailable(m)
                }
                Failure::Other(m) => ExecError::StartFailed(m),
            })?;
        self.remember(&spec.task_id, &created.id);
        self.inner.exits.created(&created.id);
        for warning in &created.warnings {
            tracing::warn!(task_id = %spec.task_id, %warning, "engine warning creating container");
        }
        docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| match classify(e) {
                Failure::Unavailable(m) => ExecError::EngineUnavailable(m),
                Failure::NotFound(_) => ExecError::NotFound(spec.task_id.clone()),
                Failure::Conflict(m) | Failure::Other(m) => ExecError::StartFailed(m),
            })?;
        self.inner.exits.started(&created.id);
        // The pid (`ContainerStatus.PID`, as Swarm reports it) is in no
        // response or event: one inspect.
        let inspect = self.inspect(&spec.task_id, &created.id).await?;
        let state = inspect.state.unwrap_or_default();
        Ok(TaskHandle {
            task_id: spec.task_id,
            container_id: created.id,
            pid: pid_of(&state),
            started_at: parse_time(state.started_at.as_deref()).unwrap_or_else(SystemTime::now),
            warnings: created.warnings,
        })
    }

    /// Resolves when the container has stopped, with how it ended: from
    /// the executor's event stream (a container it knows nothing about yet
    /// is inspected once). `EngineUnavailable` if the stream breaks first.
    pub async fn wait(&self, task_id: &str) -> Result<ExitStatus, ExecError> {
        let id = self.container_id(task_id).await?;
        loop {
            match self.inner.exits.wait_for(&id) {
                Waiting::Exited(status) => return Ok(status),
                Waiting::Unknown => {
                    let state = self.inspect(task_id, &id).await?.state.unwrap_or_default();
                    let exited = match adopted_state(task_id, &id, &state) {
                        AdoptedState::Exited(status) => Some(status),
                        AdoptedState::Running(_) => None,
                    };
                    self.inner.exits.observe(&id, exited);
                }
                Waiting::Running(rx) => {
                    return match rx.await {
                        Ok(Outcome::Exited(status)) => Ok(status),
                        Ok(Outcome::Gone) => {
                            self.forget(task_id);
                            Err(ExecError::NotFound(task_id.to_string()))
                        }
                        Ok(Outcome::Unavailable(m)) => Err(ExecError::EngineUnavailable(m)),
                        Err(_) => Err(ExecError::EngineUnavailable(
                            "the executor stopped".to_string(),
                        )),
                    }
                }
            }
        }
    }

    /// Stops the container: its stop signal (the spec's, else the image's,
    /// else SIGTERM), SIGKILL after `grace` (rounded up to whole seconds, as
    /// the Engine API takes it). Returns how it ended (at once if it had
    /// already stopped).
    pub async fn shutdown(&self, task_id: &str, grace: Duration) -> Result<ExitStatus, ExecError> {
        let id = self.container_id(task_id).await?;
        let seconds = grace_seconds(grace);
        let docker = self
            .docker()
            .clone()
            .with_timeout(REQUEST_TIMEOUT.max(Duration::from_secs(seconds as u64) + STOP_SLACK));
        let options = StopContainerOptions {
            signal: None,
            t: Some(i32::try_from(seconds).unwrap_or(i32::MAX)),
        };
        docker
            .stop_container(&id, Some(options))
            .await
            .map_err(|e| self.task_error(task_id, e))?;
        self.wait(task_id).await
    }

    /// Removes the container, killing it if it still runs, with its
    /// anonymous volumes. Removing an unknown task is not an error.
    pub async fn remove(&self, task_id: &str) -> Result<(), ExecError> {
        let id = match self.container_id(task_id).await {
            Ok(id) => id,
            Err(ExecError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let options = RemoveContainerOptions {
            v: true,
            force: true,
            link: false,
        };
        let result = self.docker().remove_container(&id, Some(options)).await;
        self.forget(task_id);
        self.inner.exits.forget(&id);
        match result {
            Ok(()) => Ok(()),
            Err(e) => match classify(e) {
                Failure::NotFound(_) => Ok(()),
                Failure::Unavailable(m) => Err(ExecError::EngineUnavailable(m)),
                Failure::Conflict(m) if m.contains("already in progress") => Ok(()),
                Failure::Conflict(m) | Failure::Other(m) => Err(ExecError::Engine(m)),
            },
        }
    }

    /// Every container with shoal's task label, sorted by task ID: after an
    /// agent restart, running ones are adopted as they are and exited ones
    /// come with their exit status. Containers of all nodes sharing this
    /// engine are listed; filter on `node_id` if that matters.
    pub async fn list(&self) -> Result<Vec<AdoptedContainer>, ExecError> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_SHOAL_TASK}=1")])]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let summaries = self
            .docker()
            .list_containers(Some(options))
            .await
            .map_err(ExecError::engine)?;
        let mut found = Vec::new();
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            let inspect = match self.docker().inspect_container(&id, None).await {
                Ok(inspect) => inspect,
                Err(e) => match classify(e) {
                    // Removed since it was listed.
                    Failure::NotFound(_) => continue,
                    Failure::Unavailable(m) => return Err(ExecError::EngineUnavailable(m)),
                    Failure::Conflict(m) | Failure::Other(m) => return Err(ExecError::Engine(m)),
                },
            };
            if let Some(container) = adopted(&inspect) {
                self.remember(&container.task_id, &container.container_id);
                let exited = match &container.state {
                    AdoptedState::Exited(status) => Some(status.clone()),
                    AdoptedState::Running(_) => None,
                };
                self.inner.exits.observe(&container.container_id, exited);
                found.push(container);
            }
        }
        found.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        Ok(found)
    }

    /// Where the task's container stands now (state, exit, health).
    pub async fn status(&self, task_id: &str) -> Result<AdoptedContainer, ExecError> {
        let id = self.container_id(task_id).await?;
        let inspect = self.inspect(task_id, &id).await?;
        adopted(&inspect).ok_or_else(|| ExecError::NotFound(task_id.to_string()))
    }

    /// The container's output, as a channel of lines (see [`LogOptions`]).
    pub async fn logs(
        &self,
        task_id: &str,
        options: LogOptions,
    ) -> Result<mpsc::Receiver<LogLine>, ExecError> {
        let id = self.container_id(task_id).await?;
        Ok(logs::spawn_reader(self.docker().clone(), id, options))
    }

    fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    /// The task's container ID: from the cache, else found by label.
    async fn container_id(&self, task_id: &str) -> Result<String, ExecError> {
        validate_task_id(task_id).map_err(ExecError::InvalidSpec)?;
        if let Some(id) = lock(&self.inner.containers).get(task_id) {
            return Ok(id.clone());
        }
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_SHOAL_TASK}=1"),
                format!("{LABEL_TASK_ID}={task_id}"),
            ],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let found = self
            .docker()
            .list_containers(Some(options))
            .await
            .map_err(ExecError::engine)?;
        let id = found
            .into_iter()
            .find_map(|c| c.id)
            .ok_or_else(|| ExecError::NotFound(task_id.to_string()))?;
        self.remember(task_id, &id);
        Ok(id)
    }

    async fn inspect(
        &self,
        task_id: &str,
        container_id: &str,
    ) -> Result<ContainerInspectResponse, ExecError> {
        self.docker()
            .inspect_container(container_id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| self.task_error(task_id, e))
    }

    /// An engine error about the task's container; 404 also drops it from
    /// the cache.
    fn task_error(&self, task_id: &str, e: EngineError) -> ExecError {
        let error = ExecError::for_task(task_id, e);
        if matches!(error, ExecError::NotFound(_)) {
            self.forget(task_id);
        }
        error
    }

    fn remember(&self, task_id: &str, container_id: &str) {
        lock(&self.inner.containers).insert(task_id.to_string(), container_id.to_string());
    }

    fn forget(&self, task_id: &str) {
        lock(&self.inner.containers).remove(task_id);
    }
}

/// `DOCKER_HOST` if set, else `socket`, else the default socket.
fn resolve_host<'a>(docker_host: Option<&'a str>, socket: Option<&'a str>) -> &'a str {
    docker_host
        .filter(|h| !h.trim().is_empty())
        .or(socket)
        .unwrap_or(DEFAULT_DOCKER_SOCKET)
}

/// The pull request for `image`: an untagged name means `latest` (the
/// Engine API would pull every tag).
fn pull_options(image: &str) -> CreateImageOptions {
    let last = image.rsplit('/').next().unwrap_or(image);
    let tagged = last.contains(':') || image.contains('@');
    CreateImageOptions {
        from_image: Some(image.to_string()),
        tag: (!tagged).then(|| "latest".to_string()),
        ..Default::default()
    }
}

/// A found container as the agent sees it; `None` without a task ID label.
fn adopted(inspect: &ContainerInspectResponse) -> Option<AdoptedContainer> {
    let config = inspect.config.as_ref()?;
    let all = config.labels.clone().unwrap_or_default();
    let label = |k: &str| all.get(k).cloned().unwrap_or_default();
    let task_id = all.get(LABEL_TASK_ID)?.clone();
    let container_id = inspect.id.clone().unwrap_or_default();
    let state = inspect.state.clone().unwrap_or_default();
    let health = state
        .health
        .as_ref()
        .and_then(|h| h.status)
        .and_then(|s| match s {
            HealthStatusEnum::STARTING => Some(HealthState::Starting),
            HealthStatusEnum::HEALTHY => Some(HealthState::Healthy),
            HealthStatusEnum::UNHEALTHY => Some(HealthState::Unhealthy),
            HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
        });
    let name = inspect
        .name
        .as_deref()
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_else(|| label(LABEL_TASK_NAME));
    Some(AdoptedContainer {
        state: adopted_state(&task_id, &container_id, &state),
        task_name: name,
        service_id: label(LABEL_SERVICE_ID),
        service_name: label(LABEL_SERVICE_NAME),
        node_id: label(LABEL_NODE_ID),
        image: config.image.clone().unwrap_or_default(),
        labels: all
            .iter()
            .filter(|(k, _)| !RESERVED_LABELS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        health,
        task_id,
        container_id,
    })
}

fn adopted_state(task_id: &str, container_id: &str, state: &ContainerState) -> AdoptedState {
    use ContainerStateStatusEnum as S;
    let running = match state.status {
        Some(S::RUNNING | S::PAUSED | S::RESTARTING | S::STOPPING) => true,
        Some(S::CREATED | S::EXITED | S::DEAD | S::REMOVING) => false,
        Some(S::EMPTY) | None => state.running.unwrap_or(false),
    };
    if running {
        return AdoptedState::Running(TaskHandle {
            task_id: task_id.to_string(),
            container_id: container_id.to_string(),
            pid: pid_of(state),
            started_at: parse_time(state.started_at.as_deref()).unwrap_or_else(SystemTime::now),
            warnings: Vec::new(),
        });
    }
    AdoptedState::Exited(exit_status(state))
}

/// How a stopped container ended, with the messages Docker Swarm shows:
/// `ExitStatus::outcome` gives complete for 0 and `task: non-zero exit (N)`
/// otherwise; an engine error (the container never started) is the message.
pub fn exit_status(state: &ContainerState) -> ExitStatus {
    let code = state
        .exit_code
        .map(|c| i32::try_from(c).unwrap_or(i32::MAX))
        .unwrap_or(0);
    let finished_at = parse_time(state.finished_at.as_deref()).unwrap_or_else(SystemTime::now);
    let engine_error = state.error.clone().filter(|e| !e.is_empty());
    let never_started = state.status == Some(ContainerStateStatusEnum::CREATED);
    let error = match (engine_error, never_started) {
        (Some(e), true) => Some(e),
        (None, true) => Some("task: container was created but never started".to_string()),
        (Some(e), false) if code != 0 => Some(format!("task: non-zero exit ({code}): {e}")),
        (Some(e), false) => Some(e),
        (None, false) => None,
    };
    ExitStatus {
        code: Some(code),
        signal: None,
        error,
        finished_at,
    }
}

fn pid_of(state: &ContainerState) -> i32 {
    state
        .pid
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or_default()
}

/// The engine's RFC 3339 times; its zero time (`0001-01-01T00:00:00Z`) is `None`.
fn parse_time(text: Option<&str>) -> Option<SystemTime> {
    let text = text?;
    if text.starts_with("0001-") {
        return None;
    }
    humantime::parse_rfc3339_weak(text).ok()
}

fn unavailable(e: EngineError) -> ExecError {
    match classify(e) {
        Failure::Unavailable(m)
        | Failure::NotFound(m)
        | Failure::Conflict(m)
        | Failure::Other(m) => ExecError::EngineUnavailable(m),
    }
}

fn detail(e: EngineError) -> String {
    match unavailable(e) {
        ExecError::EngineUnavailable(m) => m,
        other => other.to_string(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ExitOutcome;

    #[test]
    fn docker_host_wins_over_the_configured_socket() {
        let env = Some("unix:///env.sock");
        assert_eq!(resolve_host(env, Some("/cfg.sock")), "unix:///env.sock");
        assert_eq!(resolve_host(Some(""), Some("/cfg.sock")), "/cfg.sock");
        assert_eq!(resolve_host(None, Some("/cfg.sock")), "/cfg.sock");
        assert_eq!(resolve_host(None, None), DEFAULT_DOCKER_SOCKET);
    }

    #[test]
    fn untagged_images_pull_latest_only() {
        assert_eq!(pull_options("busybox").tag.as_deref(), Some("latest"));
        assert_eq!(pull_options("local/nope:1").tag, None);
        assert_eq!(
            pull_options("registry:5000/team/app").tag.as_deref(),
            Some("latest")
        );
        assert_eq!(pull_options("registry:5000/team/app:2").tag, None);
        assert_eq!(pull_options("app@sha256:abcd").tag, None);
    }

    fn state(status: ContainerStateStatusEnum, code: i64, error: &str) -> ContainerState {
        ContainerState {
            status: Some(status),
            exit_code: Some(code),
            error: Some(error.into()),
            finished_at: Some("2024-01-02T03:04:05.5Z".into()),
            ..Default::default()
        }
    }

    #[test]
    fn exits_map_to_swarm_messages() {
        use ContainerStateStatusEnum as S;
        let ok = exit_status(&state(S::EXITED, 0, ""));
        assert_eq!(ok.outcome(), ExitOutcome::Complete);
        assert_eq!(
            ok.finished_at,
            SystemTime::UNIX_EPOCH + Duration::new(1_704_164_645, 500_000_000)
        );
        assert_eq!(
            exit_status(&state(S::EXITED, 3, "")).outcome(),
            ExitOutcome::Failed("task: non-zero exit (3)".into())
        );
        assert_eq!(
            exit_status(&state(S::EXITED, 137, "")).outcome(),
            ExitOutcome::Failed("task: non-zero exit (137)".into())
        );
        let never = exit_status(&state(S::CREATED, 127, "exec: \"nope\": not found"));
        assert_eq!(
            never.outcome(),
            ExitOutcome::Failed("exec: \"nope\": not found".into())
        );
        assert!(matches!(
            adopted_state("t", "c", &state(S::RUNNING, 0, "")),
            AdoptedState::Running(_)
        ));
    }

    #[test]
    fn zero_times_are_unknown() {
        assert_eq!(parse_time(Some("0001-01-01T00:00:00Z")), None);
        assert!(parse_time(Some("2024-01-02T03:04:05.123456789Z")).is_some());
        assert_eq!(parse_time(None), None);
    }
}
