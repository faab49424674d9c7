//! gRPC services a manager serves to other nodes: Raft, and the cluster
//! service (join, certificate renewal, forwarded writes, agent sessions).
//! Every call checks the caller's certificate identity.

use crate::ca;
use crate::dispatcher::Dispatcher;
use crate::proposer::{LeadWrite, Proposer};
use futures::Stream;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::storage::Snapshot;
use shoal_api::NodeRole;
use shoal_net::pki::{NodeIdentity, Role};
use shoal_net::rpc::pb::cluster_server::Cluster;
use shoal_net::rpc::pb::raft_server;
use shoal_net::rpc::{msg, parse, AgentMessage, JoinRequest, Msg, RenewRequest, TaskStatusReport};
use shoal_net::tls::PeerInfo;
use shoal_store::{Batch, Raft, Shared, SnapshotMeta, Tables, TypeConfig, Vote};
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// What the manager's gRPC services share.
#[derive(Clone)]
pub struct Services {
    /// This manager's Raft instance.
    pub raft: Raft,
    /// The replicated state.
    pub store: Arc<Shared>,
    /// The write path.
    pub proposer: Proposer,
    /// Agent sessions.
    pub dispatcher: Arc<Dispatcher>,
    /// Our cluster's ID.
    pub cluster_id: String,
    /// What leaders' requests have told us (for
    /// `manager::catch_up_before_campaigning`).
    pub contact: Arc<LeaderContact>,
}

/// What the leader's requests have told this manager: the highest commit
/// index an AppendEntries carried, and when the last request came.
pub struct LeaderContact {
    commit: std::sync::atomic::AtomicU64,
    /// Milliseconds after `since` of the last request, plus one (0: none).
    last: std::sync::atomic::AtomicU64,
    since: std::time::Instant,
}

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact {
            commit: Default::default(),
            last: Default::default(),
            since: std::time::Instant::now(),
        }
    }
}

impl LeaderContact {
    /// A request came, carrying `commit` (AppendEntries) or not.
    fn note(&self, commit: Option<u64>) {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(c) = commit {
            self.commit.fetch_max(c, Relaxed);
        }
        let ms = self.since.elapsed().as_millis() as u64 + 1;
        self.last.fetch_max(ms, Relaxed);
    }

    /// The highest commit index carried so far (0: none).
    pub fn commit(&self) -> u64 {
        self.commit.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long since the last request, if one came.
    pub fn quiet_for(&self) -> Option<std::time::Duration> {
        let last = self.last.load(std::sync::atomic::Ordering::Relaxed);
        let now = self.since.elapsed().as_millis() as u64 + 1;
        (last > 0).then(|| std::time::Duration::from_millis(now.saturating_sub(last)))
    }
}

/// A manager's answer to [`shoal_net::frame::LEADER_SEEN`].
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct LeaderSeen {
    /// It is the leader.
    pub leading: bool,
    /// Milliseconds since a leader's last request reached it (None: none ever did).
    pub quiet_ms: Option<u64>,
}

/// The verified identity of the caller, which must belong to this cluster.
pub fn caller<T>(req: &Request<T>, cluster_id: &str) -> Result<NodeIdentity, Status> {
    identity_in(
        req.extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.identity.as_ref()),
        cluster_id,
    )
}

/// `identity`, if there is one and it belongs to this cluster.
fn identity_in(identity: Option<&NodeIdentity>, cluster_id: &str) -> Result<NodeIdentity, Status> {
    let id = identity
        .cloned()
        .ok_or_else(|| Status::unauthenticated("a node certificate is required"))?;
    if id.cluster_id != cluster_id {
        return Err(Status::permission_denied(
            "the certificate belongs to another cluster",
        ));
    }
    Ok(id)
}

impl Services {
    /// What this manager knows of the leader, for a follower's pre-vote.
    pub fn leader_seen(&self) -> LeaderSeen {
        LeaderSeen {
            leading: crate::manager::leads(&self.raft),
            quiet_ms: self.contact.quiet_for().map(|q| q.as_millis() as u64),
        }
    }

    /// Hands an AppendEntries to Raft, noting the commit index it carries.
    pub async fn append_entries(
        &self,
        rpc: openraft::raft::AppendEntriesRequest<TypeConfig>,
    ) -> Result<openraft::raft::AppendEntriesResponse<u64>, openraft::error::RaftError<u64>> {
        self.contact.note(rpc.leader_commit.map(|c| c.index));
        self.raft.append_entries(rpc).await
    }

    /// The caller must hold a manager certificate and, when this manager
    /// knows the cluster, still be a manager in it (demoted or removed
    /// managers' certificates open nothing).
    fn require_manager<T>(&self, req: &Request<T>) -> Result<NodeIdentity, Status> {
        self.manager_caller(req, false)
    }

    /// [`Self::require_manager`] for the Raft RPCs, which also let in a
    /// manager this replica has not heard of yet: a manager catching up
    /// applies the log a prefix at a time, and the leader may have joined
    /// after that prefix (refusing it would stop the catching up for good).
    /// A removed one stays out: the cluster object lists removed nodes.
    fn require_raft_peer<T>(&self, req: &Request<T>) -> Result<NodeIdentity, Status> {
        self.manager_caller(req, true)
    }

    fn manager_caller<T>(
        &self,
        req: &Request<T>,
        unknown_ok: bool,
    ) -> Result<NodeIdentity, Status> {
        let info = req.extensions().get::<PeerInfo>();
        self.check_manager(info.and_then(|p| p.identity.as_ref()), unknown_ok)
    }

    /// The Raft RPC rule of [`Services::require_raft_peer`], for a caller
    /// known by its certificate's `identity` (the replication stream's).
    pub fn check_raft_peer(&self, identity: Option<&NodeIdentity>) -> Result<NodeIdentity, Status> {
        self.check_manager(identity, true)
    }

    /// The rule of [`Services::require_manager`], for a caller known by its
    /// certificate's `identity` (a stream's).
    pub fn check_manager_peer(
        &self,
        identity: Option<&NodeIdentity>,
    ) -> Result<NodeIdentity, Status> {
        self.check_manager(identity, false)
    }

    fn check_manager(
        &self,
        identity: Option<&NodeIdentity>,
        unknown_ok: bool,
    ) -> Result<NodeIdentity, Status> {
        let id = identity_in(identity, &self.cluster_id)?;
        if id.role != Role::Manager {
            return Err(Status::permission_denied("only managers may call this"));
        }
        self.store
            .view(|t| match manager_verdict(t, &id.node_id) {
                Err(Refusal::Unknown) if unknown_ok => Ok(()),
                other => other,
            })
            .map_err(Status::permission_denied)?;
        Ok(id)
    }
}

/// Why a manager certificate's holder is refused.
#[derive(Debug, PartialEq)]
enum Refusal {
    Demoted,
    Removed,
    Unknown,
}

impl From<Refusal> for String {
    fn from(r: Refusal) -> String {
        match r {
            Refusal::Demoted => "the node was demoted",
            Refusal::Removed => "the node was removed from the cluster",
            Refusal::Unknown => "the node is not part of the cluster",
        }
        .into()
    }
}

/// Whether the replicated state `t` has `node_id` as a manager now.
fn manager_verdict(t: &Tables, node_id: &str) -> Result<(), Refusal> {
    let Some(cluster) = &t.cluster else {
        return Ok(());
    };
    match t.nodes.get(node_id) {
        Some(n) if n.spec.role == NodeRole::Manager => Ok(()),
        Some(_) => Err(Refusal::Demoted),
        None if cluster.removed_nodes.contains_key(node_id) => Err(Refusal::Removed),
        None => Err(Refusal::Unknown),
    }
}

fn reply<T: serde::Serialize>(v: &T) -> Result<Response<Msg>, Status> {
    Ok(Response::new(msg(v)))
}

#[tonic::async_trait]
impl raft_server::Raft for Services {
    async fn append_entries(&self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        self.require_raft_peer(&req)?;
        let rpc: AppendEntriesRequest<TypeConfig> = parse(req.get_ref())?;
        reply(&self.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        self.require_raft_peer(&req)?;
        let rpc: VoteRequest<u64> = parse(req.get_ref())?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        self.require_raft_peer(&req)?;
        let (vote, meta): (Vote, SnapshotMeta) = parse(req.get_ref())?;
        let data = req.into_inner().data;
        let snapshot = Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(data)),
        };
        self.contact.note(None);
        let r = self.raft.install_full_snapshot(vote, snapshot).await;
        self.contact.note(None);
        reply(&r)
    }
}

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Cluster for Services {
    async fn join(&self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        let join: JoinRequest = parse(req.get_ref())?;
        let mut join = join;
        // A node that advertises an unspecified address is reached where it called from.
        if let Some(peer) = req.extensions().get::<PeerInfo>() {
            if let Ok(sa) = join.addr.parse::<std::net::SocketAddr>() {
                if sa.ip().is_unspecified() {
                    join.addr =
                        std::net::SocketAddr::new(peer.remote_addr.ip(), sa.port()).to_string();
                }
            }
        }
        reply(&ca::join(&self.store, &self.proposer, join).await?)
    }

    async fn renew_cert(&self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        let id = caller(&req, &self.cluster_id)?;
        let r: RenewRequest = parse(req.get_ref())?;
        reply(&ca::renew(&self.store, &self.proposer, &id.node_id, &r.csr_pem).await?)
    }

    async fn propose(&self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        self.require_manager(&req)?;
        let batch: Batch = parse(req.get_ref())?;
        match self.proposer.write_as_leader(batch).await {
            Ok(r) => reply(&r),
            Err(e @ LeadWrite::NotLeader) => Err(Status::failed_precondition(e.message())),
            Err(e) => Err(Status::unavailable(e.message())),
        }
    }

    /// Read index: the leader's last applied log index, so a follower can
    /// wait until it has applied as much before serving a read.
    async fn leader_op(&self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        self.require_manager(&req)?;
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(m.id) {
            return Err(Status::failed_precondition("not the leader"));
        }
        reply(&m.last_applied.map(|l| l.index).unwrap_or(0))
    }

    type SessionStream = MsgStream;

    async fn session(&self, req: Request<Streaming<Msg>>) -> Result<Response<MsgStream>, Status> {
        let id = caller(&req, &self.cluster_id)?;
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            Status::invalid_argument("the session ended before its first message")
        })?;
        let (description, addr) = match parse::<AgentMessage>(&first)? {
            AgentMessage::Hello { description, addr } => (description, addr),
            _ => return Err(Status::invalid_argument("a session starts with Hello")),
        };
        let node_id = id.node_id.clone();
        let (session, mut rx) = self
            .dispatcher
            .open_session(
                &node_id,
                description,
                addr,
                match id.role {
                    Role::Manager => NodeRole::Manager,
                    Role::Worker => NodeRole::Worker,
                },
            )
            .await?;
        let dispatcher = self.dispatcher.clone();
        let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Result<Msg, Status>>(64);
        // Three loops, so neither a slow write nor a slow agent ever delays
        // reading heartbeats: dispatcher → agent, agent → dispatcher, and
        // the status writer (which merges bursts into one write).
        let forward_tx = out_tx.clone();
        // When the dispatcher drops the session (leadership lost), the whole
        // stream ends so the agent looks for the new leader.
        let closed = tokio_util::sync::CancellationToken::new();
        let closing = closed.clone();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if forward_tx.send(Ok(msg(&m))).await.is_err() {
                    break;
                }
            }
            closing.cancel();
        });
        let (status_tx, mut status_rx) =
            tokio::sync::mpsc::unbounded_channel::<Vec<TaskStatusReport>>();
        let writer = dispatcher.clone();
        let writer_node = node_id.clone();
        tokio::spawn(async move {
            while let Some(mut reports) = status_rx.recv().await {
                while let Ok(more) = status_rx.try_recv() {
                    reports.extend(more);
                }
                writer.report_status(&writer_node, reports).await;
            }
        });
        tokio::spawn(async move {
            loop {
                let m = tokio::select! {
                    m = inbound.message() => m,
                    _ = closed.cancelled() => break,
                };
                match m {
                    Ok(Some(m)) => match parse::<AgentMessage>(&m) {
                        Ok(AgentMessage::Heartbeat) => dispatcher.heartbeat(&node_id),
                        Ok(AgentMessage::Status(reports)) => {
                            dispatcher.heartbeat(&node_id);
                            let _ = status_tx.send(reports);
                        }
                        Ok(AgentMessage::Describe(d)) => {
                            let (dispatcher, node_id) = (dispatcher.clone(), node_id.clone());
                            tokio::spawn(async move {
                                dispatcher.update_description(&node_id, d).await
                            });
                        }
                        Ok(AgentMessage::Hello { .. }) => {}
                        Err(e) => {
                            let _ = out_tx.send(Err(e)).await;
                            break;
                        }
                    },
                    _ => break,
                }
            }
            dispatcher.close_session(&node_id, session);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out_rx),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_store::{ClusterRecord, Command, Expect, Object, Op};

    fn put(t: &mut Tables, index: u64, object: Object) {
        let (r, _) = t.apply(
            index,
            Command {
                ops: vec![Op::Put {
                    object,
                    expect: Expect::Any,
                }],
                atomic: true,
                request: 0,
            },
        );
        assert!(r.results[0].is_ok(), "{r:?}");
    }

    fn node(id: &str, role: NodeRole) -> Object {
        let mut n = shoal_api::Node {
            id: id.into(),
            ..Default::default()
        };
        n.spec.role = role;
        Object::Node(n.into())
    }

    #[test]
    fn managers_pass_demoted_and_removed_ones_do_not_and_unknown_ones_only_for_raft() {
        let mut t = Tables::default();
        // No cluster yet (a node joining): nothing to check against.
        assert_eq!(manager_verdict(&t, "m9"), Ok(()));
        let mut rec = ClusterRecord::default();
        rec.cluster.id = "c1".into();
        rec.removed_nodes
            .insert("gone".into(), shoal_api::Timestamp::now());
        put(&mut t, 1, Object::Cluster(rec.into()));
        put(&mut t, 2, node("m1", NodeRole::Manager));
        put(&mut t, 3, node("w1", NodeRole::Worker));
        assert_eq!(manager_verdict(&t, "m1"), Ok(()));
        assert_eq!(manager_verdict(&t, "w1"), Err(Refusal::Demoted));
        assert_eq!(manager_verdict(&t, "gone"), Err(Refusal::Removed));
        // Not heard of yet: refused for manager RPCs, which go to an
        // up-to-date leader; let in for Raft (see `require_raft_peer`).
        assert_eq!(manager_verdict(&t, "m9"), Err(Refusal::Unknown));
        assert_eq!(
            String::from(Refusal::Removed),
            "the node was removed from the cluster"
        );
    }

    #[test]
    fn leader_contact_keeps_the_highest_commit_and_the_last_request_time() {
        let c = LeaderContact::default();
        assert_eq!((c.commit(), c.quiet_for()), (0, None));
        c.note(Some(7));
        c.note(Some(5));
        c.note(None);
        assert_eq!(c.commit(), 7, "commit indexes only go up");
        assert!(c.quiet_for().unwrap() < std::time::Duration::from_secs(1));
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(c.quiet_for().unwrap() >= std::time::Duration::from_millis(25));
        c.note(None);
        assert!(c.quiet_for().unwrap() < std::time::Duration::from_millis(25));
    }
}
