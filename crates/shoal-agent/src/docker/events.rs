//! [`Exits`]: how the executor learns that task containers started, exited
//! or were removed — from **one** `GET /events` stream per executor
//! (filtered by the engine to `type=container`, shoal's task label and the
//! `start`, `die` and `destroy` actions), not from one `POST /wait` and an
//! inspect per container.
//!
//! ```text
//!  dockerd ──/events (start | die + exitCode | destroy)──▶ reader task ──▶ Exits
//!                                                                       container ID → Running | Exited(status)
//!  DockerExecutor::wait(task) ─────────────────────────────────────────▶ answered at once, or waits for the die
//! ```
//!
//! Every container the stream reports is recorded (containers a restarted
//! agent adopts later too), so an exit is never lost between a container's
//! start and the first `wait` on it; `destroy` forgets it.
//!
//! **Gaps.** Each (re)connection asks the engine to replay its recent
//! events `since` the last one seen (or a moment before the executor was
//! made), so an exit during a reconnect is not lost. A container the stream
//! knows nothing about (created by someone else, or before an agent restart)
//! is inspected once by `wait`; after that its exit comes from the stream.
//! Every [`RESYNC`] the reader also lists the engine's stopped task
//! containers (one request for all of them) and settles any wait the stream
//! missed, should the engine ever drop an event for a slow subscriber.
//!
//! **Engine loss.** When the stream breaks, every pending wait ends with
//! `EngineUnavailable` (as a broken `/wait` connection used to), running
//! containers become unknown again (the next `wait` inspects them), and the
//! reader reconnects every [`RECONNECT`].

use crate::docker::error::{classify, Failure};
use crate::docker::spec::LABEL_SHOAL_TASK;
use crate::process::ExitStatus;
use bollard::models::{ContainerStateStatusEnum, EventMessage};
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, ListContainersOptions};
use bollard::Docker;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use tokio_stream::StreamExt;

/// Pause before reconnecting a broken event stream.
pub const RECONNECT: Duration = Duration::from_secs(1);
/// How often the reader checks for exits the stream may have missed (only
/// while some wait is pending).
pub const RESYNC: Duration = Duration::from_secs(10);
/// How far before the executor was made the first stream starts replaying.
const FIRST_SINCE: Duration = Duration::from_secs(1);

/// How a pending wait ended.
#[derive(Debug)]
pub enum Outcome {
    Exited(ExitStatus),
    /// The container was removed.
    Gone,
    /// The event stream broke (the engine went away): nothing is known.
    Unavailable(String),
}

/// What [`Exits::wait_for`] found.
pub enum Waiting {
    /// The container has exited.
    Exited(ExitStatus),
    /// Nothing is known about it: inspect it and [`Exits::observe`] that.
    Unknown,
    /// It runs: the receiver resolves when it stops.
    Running(oneshot::Receiver<Outcome>),
}

#[derive(Debug)]
enum Known {
    Unknown,
    Running,
    Exited(ExitStatus),
}

#[derive(Debug)]
struct Entry {
    known: Known,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

impl Default for Entry {
    fn default() -> Entry {
        Entry {
            known: Known::Unknown,
            waiters: Vec::new(),
        }
    }
}

/// The task containers' states as the engine's event stream tells them.
#[derive(Debug, Default)]
pub struct Exits {
    inner: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    containers: HashMap<String, Entry>,
    /// `timeNano` of the newest event seen (where a reconnect resumes).
    last_event_ns: Option<i64>,
}

impl Exits {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The executor is creating container `id`.
    pub fn created(&self, id: &str) {
        self.lock().containers.entry(id.to_string()).or_default();
    }

    /// The engine has started container `id` (the start call returned):
    /// running, unless its exit is already known.
    pub fn started(&self, id: &str) {
        let mut s = self.lock();
        let e = s.containers.entry(id.to_string()).or_default();
        if matches!(e.known, Known::Unknown) {
            e.known = Known::Running;
        }
    }

    /// What an inspect or list found, for a container the stream has said
    /// nothing about (the stream is newer, so it wins otherwise).
    pub fn observe(&self, id: &str, exited: Option<ExitStatus>) {
        let mut s = self.lock();
        let e = s.containers.entry(id.to_string()).or_default();
        match (&e.known, exited) {
            (Known::Unknown, None) => e.known = Known::Running,
            (Known::Unknown | Known::Running, Some(status)) => settle(e, status),
            _ => {}
        }
    }

    /// Where container `id` stands, to wait for its exit.
    pub fn wait_for(&self, id: &str) -> Waiting {
        let mut s = self.lock();
        let e = s.containers.entry(id.to_string()).or_default();
        match &e.known {
            Known::Exited(status) => Waiting::Exited(status.clone()),
            Known::Unknown => Waiting::Unknown,
            Known::Running => {
                let (tx, rx) = oneshot::channel();
                e.waiters.push(tx);
                Waiting::Running(rx)
            }
        }
    }

    /// The executor removed container `id`.
    pub fn forget(&self, id: &str) {
        if let Some(e) = self.lock().containers.remove(id) {
            for w in e.waiters {
                let _ = w.send(Outcome::Gone);
            }
        }
    }

    /// Applies one event from the stream.
    fn apply(&self, event: &EventMessage) {
        let Some(actor) = &event.actor else { return };
        let Some(id) = actor.id.as_deref() else {
            return;
        };
        let mut s = self.lock();
        if let Some(ns) = event.time_nano {
            s.last_event_ns = Some(s.last_event_ns.map_or(ns, |l| l.max(ns)));
        }
        match event.action.as_deref() {
            Some("start") => {
                // Running (again): a later die is a new exit.
                let e = s.containers.entry(id.to_string()).or_default();
                e.known = Known::Running;
            }
            Some("die") => {
                let attrs = actor.attributes.as_ref();
                let code = attrs
                    .and_then(|a| a.get("exitCode"))
                    .and_then(|c| c.parse::<i32>().ok())
                    .unwrap_or(-1);
                let finished_at = event
                    .time_nano
                    .and_then(|ns| u64::try_from(ns).ok())
                    .map(|ns| UNIX_EPOCH + Duration::from_nanos(ns))
                    .unwrap_or_else(SystemTime::now);
                let status = ExitStatus {
                    code: Some(code),
                    signal: None,
                    error: None,
                    finished_at,
                };
                settle(s.containers.entry(id.to_string()).or_default(), status);
            }
            Some("destroy") => {
                if let Some(e) = s.containers.remove(id) {
                    for w in e.waiters {
                        let _ = w.send(Outcome::Gone);
                    }
                }
            }
            _ => {}
        }
    }

    /// The stream broke: pending waits end, running containers become
    /// unknown (exits stay: they are final).
    fn stream_down(&self, why: &str) {
        let mut s = self.lock();
        for e in s.containers.values_mut() {
            for w in e.waiters.drain(..) {
                let _ = w.send(Outcome::Unavailable(why.to_string()));
            }
            if matches!(e.known, Known::Running) {
                e.known = Known::Unknown;
            }
        }
    }

    /// Containers with a pending wait.
    fn waited(&self) -> Vec<String> {
        let mut s = self.lock();
        s.containers
            .iter_mut()
            .filter_map(|(id, e)| {
                e.waiters.retain(|w| !w.is_closed());
                (!e.waiters.is_empty()).then(|| id.clone())
            })
            .collect()
    }

    fn since(&self, fallback: SystemTime) -> String {
        let ns = self.lock().last_event_ns.unwrap_or_else(|| {
            fallback
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or_default()
        });
        format!(
            "{}.{:09}",
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000)
        )
    }
}

fn settle(e: &mut Entry, status: ExitStatus) {
    for w in e.waiters.drain(..) {
        let _ = w.send(Outcome::Exited(status.clone()));
    }
    e.known = Known::Exited(status);
}

/// Starts the reader of `docker`'s event stream feeding `exits`; it runs
/// until aborted (the executor's last clone is dropped).
pub fn spawn_reader(docker: Docker, exits: Arc<Exits>) -> tokio::task::JoinHandle<()> {
    let first_since = SystemTime::now() - FIRST_SINCE;
    tokio::spawn(async move {
        loop {
            let why = read_stream(&docker, &exits, first_since).await;
            tracing::debug!("engine event stream ended: {why}");
            exits.stream_down(&why);
            tokio::time::sleep(RECONNECT).await;
        }
    })
}

/// Reads one connection of the stream until it breaks; why it did.
async fn read_stream(docker: &Docker, exits: &Exits, first_since: SystemTime) -> String {
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("label".to_string(), vec![format!("{LABEL_SHOAL_TASK}=1")]),
        (
            "event".to_string(),
            vec!["start".into(), "die".into(), "destroy".into()],
        ),
    ]);
    let options = EventsOptions {
        since: Some(exits.since(first_since)),
        until: None,
        filters: Some(filters),
    };
    let mut stream = docker.events(Some(options));
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(event)) => exits.apply(&event),
                Some(Err(e)) => return match classify(e) {
                    Failure::Unavailable(m) | Failure::NotFound(m) | Failure::Conflict(m) | Failure::Other(m) => m,
                },
                None => return "the engine closed the event stream".to_string(),
            },
            _ = resync.tick() => settle_missed(docker, exits).await,
        }
    }
}

/// Settles pending waits on containers the engine says have stopped (one
/// list for all, then an inspect of each such container only).
async fn settle_missed(docker: &Docker, exits: &Exits) {
    let waited = exits.waited();
    if waited.is_empty() {
        return;
    }
    let filters = HashMap::from([
        ("label".to_string(), vec![format!("{LABEL_SHOAL_TASK}=1")]),
        (
            "status".to_string(),
            vec!["created".into(), "exited".into(), "dead".into()],
        ),
    ]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let Ok(stopped) = docker.list_containers(Some(options)).await else {
        return;
    };
    for id in stopped.into_iter().filter_map(|c| c.id) {
        if !waited.contains(&id) {
            continue;
        }
        let Ok(inspect) = docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
        else {
            continue;
        };
        let state = inspect.state.unwrap_or_default();
        let running = matches!(
            state.status,
            Some(
                ContainerStateStatusEnum::RUNNING
                    | ContainerStateStatusEnum::PAUSED
                    | ContainerStateStatusEnum::RESTARTING
            )
        );
        if !running {
            tracing::debug!(container = %id, "an exit the event stream did not report");
            exits.observe(&id, Some(super::executor::exit_status(&state)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn event(action: &str, id: &str, exit: Option<&str>, ns: i64) -> EventMessage {
        let attributes = exit.map(|c| HashMap::from([("exitCode".to_string(), c.to_string())]));
        EventMessage {
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some(id.into()),
                attributes,
            }),
            time_nano: Some(ns),
            ..Default::default()
        }
    }

    fn exited(w: Waiting) -> ExitStatus {
        match w {
            Waiting::Exited(s) => s,
            _ => panic!("not exited"),
        }
    }

    #[tokio::test]
    async fn an_exit_reaches_waits_before_and_after_it() {
        let x = Exits::default();
        x.created("c1");
        assert!(matches!(x.wait_for("c1"), Waiting::Unknown));
        x.started("c1");
        let Waiting::Running(rx) = x.wait_for("c1") else {
            panic!("not running")
        };
        x.apply(&event("die", "c1", Some("3"), 1_700_000_000_500_000_000));
        let Ok(Outcome::Exited(s)) = rx.await else {
            panic!("no exit")
        };
        assert_eq!(s.code, Some(3));
        assert_eq!(
            s.finished_at,
            UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000)
        );
        assert_eq!(exited(x.wait_for("c1")).code, Some(3));
        assert_eq!(x.since(SystemTime::now()), "1700000000.500000000");
    }

    #[tokio::test]
    async fn a_die_before_start_returns_is_kept() {
        let x = Exits::default();
        x.created("c1");
        x.apply(&event("start", "c1", None, 1));
        x.apply(&event("die", "c1", Some("0"), 2));
        x.started("c1");
        // An inspect made before the die does not undo it either.
        x.observe("c1", None);
        assert_eq!(exited(x.wait_for("c1")).code, Some(0));
    }

    #[tokio::test]
    async fn removal_and_stream_loss_end_pending_waits() {
        let x = Exits::default();
        x.apply(&event("start", "c1", None, 1));
        x.apply(&event("start", "c2", None, 2));
        let (Waiting::Running(r1), Waiting::Running(r2)) = (x.wait_for("c1"), x.wait_for("c2"))
        else {
            panic!("not running")
        };
        x.apply(&event("destroy", "c1", None, 3));
        assert!(matches!(r1.await, Ok(Outcome::Gone)));
        assert_eq!(x.waited(), vec!["c2".to_string()]);
        x.stream_down("gone");
        assert!(matches!(r2.await, Ok(Outcome::Unavailable(m)) if m == "gone"));
        // After the loss nothing is assumed: the next wait inspects.
        assert!(matches!(x.wait_for("c2"), Waiting::Unknown));
        x.observe("c2", None);
        assert!(matches!(x.wait_for("c2"), Waiting::Running(_)));
    }
}
