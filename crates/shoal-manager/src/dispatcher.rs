//! The dispatcher (leader only): holds one session per node agent, tracks
//! heartbeats, marks nodes READY/DOWN, pushes assignments and records task
//! status reports.
//!
//! A node is DOWN after 3 missed heartbeat periods. When a manager becomes
//! leader it gives every node a fresh grace period, so no node is marked DOWN
//! merely because the leader changed: agents find the new leader and
//! re-establish their session well within it.

use crate::proposer::Proposer;
use shoal_api::{Node, NodeDescription, NodeRole, NodeState, Task, TaskState, Timestamp};
use shoal_net::rpc::{DispatcherMessage, ManagerAddr, TaskStatusReport};
use shoal_store::{Change, Command, Event, Expect, Object, Op, Shared};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Extra grace given to every node when a manager becomes leader.
pub const LEADER_CHANGE_GRACE: Duration = Duration::from_secs(2);

struct Session {
    id: u64,
    tx: mpsc::Sender<DispatcherMessage>,
}

/// The dispatcher of one manager (active only while it leads).
pub struct Dispatcher {
    store: Arc<Shared>,
    proposer: Proposer,
    sessions: Mutex<HashMap<String, Session>>,
    last_seen: Mutex<HashMap<String, Instant>>,
    next_session: AtomicU64,
    active: Mutex<Option<CancellationToken>>,
    /// The current leader's address, for redirecting agents.
    pub leader_addr: Mutex<Option<String>>,
}

impl Dispatcher {
    /// A dispatcher over `store`, writing through `proposer`.
    pub fn new(store: Arc<Shared>, proposer: Proposer) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            store,
            proposer,
            sessions: Mutex::new(HashMap::new()),
            last_seen: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            active: Mutex::new(None),
            leader_addr: Mutex::new(None),
        })
    }

    /// Whether this dispatcher accepts sessions (its manager leads).
    pub fn is_active(&self) -> bool {
        self.active.lock().expect("lock").is_some()
    }

    /// Starts serving: called when this manager becomes leader.
    pub fn activate(self: &Arc<Self>) {
        let token = CancellationToken::new();
        {
            let mut active = self.active.lock().expect("lock");
            if let Some(old) = active.replace(token.clone()) {
                old.cancel();
            }
        }
        let grace = Instant::now() + LEADER_CHANGE_GRACE;
        {
            let mut seen = self.last_seen.lock().expect("lock");
            seen.clear();
            for n in self
                .store
                .view(|t| t.nodes.iter().map(|n| n.id.clone()).collect::<Vec<_>>())
            {
                seen.insert(n, grace);
            }
        }
        let me = self.clone();
        let t = token.clone();
        tokio::spawn(async move { me.check_heartbeats(t).await });
        let me = self.clone();
        tokio::spawn(async move { me.push_assignments(token).await });
    }

    /// Stops serving: called when this manager loses leadership. Open
    /// sessions end, so agents go looking for the new leader.
    pub fn deactivate(&self) {
        if let Some(t) = self.active.lock().expect("lock").take() {
            t.cancel();
        }
        self.sessions.lock().expect("lock").clear();
    }

    fn heartbeat_period(&self) -> Duration {
        self.store.view(|t| {
            t.cluster
                .as_ref()
                .map(|c| c.cluster.spec.heartbeat_period())
                .unwrap_or(shoal_api::DEFAULT_HEARTBEAT_PERIOD)
        })
    }

    /// Opens a session for `node_id`; returns the session id and the
    /// receiver of messages for the agent.
    pub async fn open_session(
        &self,
        node_id: &str,
        description: NodeDescription,
        addr: String,
        cert_role: NodeRole,
    ) -> Result<(u64, mpsc::Receiver<DispatcherMessage>), tonic::Status> {
        if !self.is_active() {
            let leader = self
                .leader_addr
                .lock()
                .expect("lock")
                .clone()
                .unwrap_or_default();
            return Err(tonic::Status::failed_precondition(format!(
                "not the leader; leader={leader}"
            )));
        }
        let node = self
            .store
            .view(|t| t.nodes.get(node_id).cloned())
            .ok_or_else(|| {
                tonic::Status::permission_denied(format!(
                    "node {node_id} is not part of the cluster"
                ))
            })?;
        let (tx, rx) = mpsc::channel(64);
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        self.last_seen
            .lock()
            .expect("lock")
            .insert(node_id.to_string(), Instant::now());
        self.sessions
            .lock()
            .expect("lock")
            .insert(node_id.to_string(), Session { id, tx: tx.clone() });
        self.set_node_ready(&node, description, addr).await;
        let managers = self.managers();
        let _ = tx
            .send(DispatcherMessage::Welcome {
                heartbeat_ms: self.heartbeat_period().as_millis() as u64,
                managers,
            })
            .await;
        let _ = tx.send(self.assignments_of(node_id)).await;
        if node.spec.role != cert_role {
            // The role changed while the node was away: it switches now.
            let _ = tx
                .send(DispatcherMessage::RoleChanged(node.spec.role))
                .await;
        }
        Ok((id, rx))
    }

    /// Records a heartbeat.
    pub fn heartbeat(&self, node_id: &str) {
        self.last_seen
            .lock()
            .expect("lock")
            .insert(node_id.to_string(), Instant::now());
    }

    /// Nodes marked DOWN whose session is alive and heartbeating again are READY.
    async fn revive(&self, now: Instant, limit: Duration) {
        let sessions: Vec<String> = self
            .sessions
            .lock()
            .expect("lock")
            .keys()
            .cloned()
            .collect();
        let back: Vec<Node> = {
            let seen = self.last_seen.lock().expect("lock");
            self.store.view(|t| {
                sessions
                    .iter()
                    .filter_map(|id| t.nodes.get(id))
                    .filter(|n| n.status.state == NodeState::Down)
                    .filter(|n| {
                        seen.get(&n.id)
                            .is_some_and(|at| now.saturating_duration_since(*at) <= limit)
                    })
                    .map(|n| (**n).clone())
                    .collect()
            })
        };
        for mut n in back {
            tracing::info!(node = %n.id, "node heartbeats again: marking it ready");
            let version = n.version.index;
            n.status.state = NodeState::Ready;
            n.status.message = String::new();
            n.updated_at = Timestamp::now();
            if let Err(e) = self
                .store_put(Object::Node(n.into()), Expect::Version(version))
                .await
            {
                tracing::debug!("could not mark node ready: {e}");
            }
        }
    }

    /// Forgets a session that ended (the node stays READY until its heartbeats lapse).
    pub fn close_session(&self, node_id: &str, session: u64) {
        let mut s = self.sessions.lock().expect("lock");
        if s.get(node_id).is_some_and(|x| x.id == session) {
            s.remove(node_id);
        }
    }

    /// Sends a message to a node's agent, if it has a session here.
    pub fn notify(&self, node_id: &str, m: DispatcherMessage) {
        if let Some(s) = self.sessions.lock().expect("lock").get(node_id) {
            let _ = s.tx.try_send(m);
        }
    }

    /// Managers' addresses, from the store.
    pub fn managers(&self) -> Vec<ManagerAddr> {
        self.store.view(|t| {
            t.nodes
                .iter()
                .filter_map(|n| {
                    n.manager_status.as_ref().map(|m| ManagerAddr {
                        node_id: n.id.clone(),
                        addr: m.addr.clone(),
                    })
                })
                .collect()
        })
    }

    fn assignments_of(&self, node_id: &str) -> DispatcherMessage {
        self.store.view(|t| {
            let tasks: Vec<Task> = t
                .tasks_on_node(node_id)
                .filter(|task| {
                    task.status.state >= TaskState::Assigned
                        || task.desired_state > TaskState::Running
                })
                .map(|task| (**task).clone())
                .collect();
            let services = tasks
                .iter()
                .filter_map(|task| {
                    t.services
                        .get(&task.service_id)
                        .map(|s| (s.id.clone(), s.spec.name.clone()))
                })
                .collect();
            DispatcherMessage::Assignments { tasks, services }
        })
    }

    /// Records a node's new description (its engine went away or came
    /// back): the scheduler's executor filter follows it.
    pub async fn update_description(&self, node_id: &str, description: NodeDescription) {
        for _ in 0..3 {
            let Some(node) = self.store.view(|t| t.nodes.get(node_id).cloned()) else {
                return;
            };
            if node.description == description {
                return;
            }
            let mut n = (*node).clone();
            n.description = description.clone();
            n.updated_at = Timestamp::now();
            let version = n.version.index;
            match self
                .store_put(Object::Node(n.into()), Expect::Version(version))
                .await
            {
                Ok(()) => {
                    tracing::info!(node = %node_id, executors = ?description.executors, "node description updated");
                    return;
                }
                Err(e) => tracing::debug!(node = %node_id, "description update: {e}; retrying"),
            }
        }
    }

    async fn set_node_ready(&self, node: &Node, description: NodeDescription, addr: String) {
        let mut n = node.clone();
        let host = addr
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or(addr.clone());
        if n.status.state == NodeState::Ready
            && n.description == description
            && n.status.addr == host
            && n.addr == addr
        {
            return;
        }
        n.addr = addr;
        n.description = description;
        n.status.state = NodeState::Ready;
        n.status.message = String::new();
        n.status.addr = host;
        n.updated_at = Timestamp::now();
        let version = n.version.index;
        if let Err(e) = self
            .store_put(Object::Node(n.into()), Expect::Version(version))
            .await
        {
            tracing::warn!(node = %node.id, "could not mark node ready: {e}");
        }
    }

    async fn store_put(&self, object: Object, expect: Expect) -> Result<(), String> {
        let cmd = Command {
            ops: vec![Op::Put { object, expect }],
            atomic: true,
            request: 0,
        };
        match self.proposer.propose(cmd).await {
            Ok(r) => match r.results.into_iter().next() {
                Some(Ok(_)) => Ok(()),
                Some(Err(e)) => Err(e.to_string()),
                None => Ok(()),
            },
            Err(e) => Err(e.to_string()),
        }
    }

    async fn check_heartbeats(self: Arc<Self>, token: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut prev = Instant::now();
        while !token.is_cancelled() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = token.cancelled() => return,
            }
            let limit = self.heartbeat_period() * 3;
            let now = Instant::now();
            // If this manager itself was starved of CPU, heartbeats that
            // arrived meanwhile may not have been read yet: don't count the
            // stall against the nodes.
            let stall = now
                .saturating_duration_since(prev)
                .saturating_sub(Duration::from_millis(250));
            prev = now;
            if !stall.is_zero() {
                for at in self.last_seen.lock().expect("lock").values_mut() {
                    *at += stall;
                }
            }
            self.revive(now, limit).await;
            let expired: Vec<Node> = {
                let seen = self.last_seen.lock().expect("lock");
                self.store.view(|t| {
                    t.nodes
                        .iter()
                        .filter(|n| n.status.state != NodeState::Down)
                        .filter(|n| match seen.get(&n.id) {
                            Some(at) => now.saturating_duration_since(*at) > limit,
                            None => true,
                        })
                        .map(|n| (**n).clone())
                        .collect()
                })
            };
            for mut n in expired {
                if !self.last_seen.lock().expect("lock").contains_key(&n.id) {
                    // A node this leader has never heard of yet (just joined): start its clock.
                    self.last_seen
                        .lock()
                        .expect("lock")
                        .insert(n.id.clone(), now);
                    continue;
                }
                tracing::info!(node = %n.id, "node missed its heartbeats: marking it down");
                let version = n.version.index;
                n.status.state = NodeState::Down;
                n.status.message = "heartbeat failure".into();
                n.updated_at = Timestamp::now();
                if let Err(e) = self
                    .store_put(Object::Node(n.into()), Expect::Version(version))
                    .await
                {
                    tracing::debug!("could not mark node down: {e}");
                }
            }
        }
    }

    /// Pushes each node its full task list whenever its tasks change.
    async fn push_assignments(self: Arc<Self>, token: CancellationToken) {
        let mut changes = self.store.subscribe();
        loop {
            let mut dirty: HashSet<String> = HashSet::new();
            let mut reset = false;
            let mut notices: Vec<(String, DispatcherMessage)> = Vec::new();
            tokio::select! {
                _ = token.cancelled() => return,
                c = changes.recv() => match c {
                    Ok(c) => collect_dirty(&c, &mut dirty, &mut reset, &mut notices),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => reset = true,
                    Err(_) => return,
                }
            }
            // Coalesce a burst of changes into one push per node.
            tokio::time::sleep(Duration::from_millis(5)).await;
            loop {
                match changes.try_recv() {
                    Ok(c) => collect_dirty(&c, &mut dirty, &mut reset, &mut notices),
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => reset = true,
                    Err(_) => break,
                }
            }
            let targets: Vec<String> = if reset {
                self.sessions
                    .lock()
                    .expect("lock")
                    .keys()
                    .cloned()
                    .collect()
            } else {
                dirty.into_iter().collect()
            };
            for node in targets {
                let m = self.assignments_of(&node);
                self.notify(&node, m);
            }
            for (node, m) in notices {
                self.notify(&node, m);
            }
        }
    }

    /// Records task status reports from `node_id`'s agent (forward-only).
    pub async fn report_status(&self, node_id: &str, reports: Vec<TaskStatusReport>) {
        // One op per task: the latest report wins (states only move forward).
        let mut latest: HashMap<String, usize> = HashMap::new();
        for (i, r) in reports.iter().enumerate() {
            latest.insert(r.task_id.clone(), i);
        }
        let reports: Vec<TaskStatusReport> = reports
            .into_iter()
            .enumerate()
            .filter(|(i, r)| latest.get(&r.task_id) == Some(i))
            .map(|(_, r)| r)
            .collect();
        let mut ops = Vec::new();
        self.store.view(|t| {
            for r in &reports {
                let Some(task) = t.tasks.get(&r.task_id) else {
                    continue;
                };
                if task.node_id != node_id {
                    continue;
                }
                let mut task = (**task).clone();
                let version = task.version.index;
                if !task.advance(r.state, &r.message, &r.err) {
                    continue;
                }
                if r.pid != 0 || r.exit_code.is_some() || !r.container_id.is_empty() {
                    let cs = task
                        .status
                        .container_status
                        .get_or_insert_with(Default::default);
                    cs.pid = r.pid;
                    cs.exit_code = r.exit_code.unwrap_or(cs.exit_code);
                    if !r.container_id.is_empty() {
                        cs.container_id = r.container_id.clone();
                    }
                }
                task.updated_at = Timestamp::now();
                ops.push(Op::Put {
                    object: Object::Task(task.into()),
                    expect: Expect::Version(version),
                });
            }
        });
        if ops.is_empty() {
            return;
        }
        if let Err(e) = self
            .proposer
            .propose(Command {
                ops,
                atomic: false,
                request: 0,
            })
            .await
        {
            tracing::warn!(node = %node_id, "could not record task status: {e}");
        }
    }
}

fn collect_dirty(
    c: &Change,
    dirty: &mut HashSet<String>,
    reset: &mut bool,
    notices: &mut Vec<(String, DispatcherMessage)>,
) {
    match c {
        Change::Reset => *reset = true,
        Change::Applied(a) => {
            for ev in &a.events {
                match ev {
                    Event::Updated(Object::Node(old), Object::Node(new))
                        if old.spec.role != new.spec.role =>
                    {
                        notices.push((
                            new.id.clone(),
                            DispatcherMessage::RoleChanged(new.spec.role),
                        ));
                    }
                    Event::Deleted(Object::Node(n)) => {
                        notices.push((n.id.clone(), DispatcherMessage::Removed))
                    }
                    Event::Created(Object::Task(t)) | Event::Deleted(Object::Task(t)) => {
                        dirty.insert(t.node_id.clone());
                    }
                    // Status-only changes come from the agent itself: no push needed.
                    Event::Updated(Object::Task(old), Object::Task(new))
                        if old.node_id != new.node_id
                            || old.desired_state != new.desired_state
                            || old.spec != new.spec =>
                    {
                        dirty.insert(old.node_id.clone());
                        dirty.insert(new.node_id.clone());
                    }
                    _ => {}
                }
            }
        }
    }
    dirty.remove("");
}
