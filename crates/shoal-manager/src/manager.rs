//! A manager: Raft instance, store, write path, dispatcher and the
//! leader-only components that start when it leads and stop when it doesn't.

use crate::dispatcher::Dispatcher;
use crate::grpc::{LeaderContact, Services};
use crate::peers::Peers;
use crate::proposer::Proposer;
use crate::raft_net::Network;
use crate::{membership, orchestrator, writes};
use openraft::storage::RaftLogStorage;
use openraft::{EntryPayload, LeaderId, LogId, Membership, ServerState};
use shoal_api::{Node, Timestamp};
use shoal_net::frame;
use shoal_store::{ClusterRecord, Entry, Expect, Member, Object, Raft, Shared, Vote};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

/// How a manager starts.
pub enum Bootstrap {
    /// An existing member (restart, or a manager that joined).
    Member,
    /// The first manager of a new cluster: initialise Raft with itself and
    /// write the cluster object and its own node.
    Init(Box<(ClusterRecord, Node)>),
    /// Quorum-loss recovery: keep every object, make this the only voter.
    ForceNewCluster,
}

/// What a manager needs to start.
pub struct ManagerConfig {
    /// Directory of the Raft log, vote and snapshots.
    pub raft_dir: PathBuf,
    /// The keys the log and snapshots are sealed with: the first seals what
    /// is written from now on, the others may open older files.
    pub data_keys: Vec<shoal_store::StoreKey>,
    /// This node's ID.
    pub node_id: String,
    /// This manager's Raft id.
    pub raft_id: u64,
    /// Cluster ID.
    pub cluster_id: String,
    /// Node-to-node address others reach us at.
    pub addr: String,
    /// Channels to other managers (our certificate; theirs must be a manager's).
    pub peers: Arc<Peers>,
    /// Channels to any node (for task logs).
    pub node_peers: Arc<Peers>,
}

/// A running manager.
pub struct Manager {
    /// Raft.
    pub raft: Raft,
    /// Replicated state.
    pub store: Arc<Shared>,
    /// Write path.
    pub proposer: Proposer,
    /// Agent sessions (active while leading).
    pub dispatcher: Arc<Dispatcher>,
    /// This node's ID.
    pub node_id: String,
    /// Cluster ID.
    pub cluster_id: String,
    /// Channels to any node.
    pub node_peers: Arc<Peers>,
    /// Channels to other managers.
    pub peers: Arc<Peers>,
    read_index: Arc<Mutex<ReadIndexQueue>>,
    /// True while this manager leads without a quorum ([`check_quorum`]).
    no_quorum: watch::Receiver<bool>,
    token: CancellationToken,
    /// The durable files, to re-key them.
    log: shoal_store::LogStore,
    snapshots: shoal_store::SnapshotFile,
    /// What leaders' requests have told us (see [`Services`]).
    contact: Arc<LeaderContact>,
}

/// Callers waiting for the next read-index round (see [`Manager::catch_up`]).
#[derive(Default)]
struct ReadIndexQueue {
    /// Whether a task is running rounds.
    running: bool,
    /// Leader address each caller saw, and where its answer goes.
    waiters: Vec<(String, oneshot::Sender<Option<u64>>)>,
}

/// Runs read-index rounds until no caller is waiting: each round takes every
/// caller queued so far and asks the leader once per leader address.
async fn read_index_rounds(queue: Arc<Mutex<ReadIndexQueue>>, peers: Arc<Peers>) {
    loop {
        let waiters = {
            let mut q = queue.lock().expect("read index lock");
            if q.waiters.is_empty() {
                q.running = false;
                return;
            }
            std::mem::take(&mut q.waiters)
        };
        let mut by_addr: BTreeMap<String, Vec<oneshot::Sender<Option<u64>>>> = BTreeMap::new();
        for (addr, tx) in waiters {
            by_addr.entry(addr).or_default().push(tx);
        }
        for (addr, txs) in by_addr {
            let index = leader_applied_index(&peers, &addr).await;
            for tx in txs {
                let _ = tx.send(index);
            }
        }
    }
}

/// Asks the leader at `addr` for its applied index (None if it can't answer).
async fn leader_applied_index(peers: &Peers, addr: &str) -> Option<u64> {
    let ch = peers.channel(addr).ok()?;
    let mut client = shoal_net::rpc::pb::cluster_client::ClusterClient::new(ch);
    let mut req = tonic::Request::new(shoal_net::rpc::msg(&()));
    req.set_timeout(Duration::from_millis(500));
    let resp = client.leader_op(req).await.ok()?;
    shoal_net::rpc::parse::<u64>(resp.get_ref()).ok()
}

impl Manager {
    /// Re-seals the Raft log and the snapshot with `key`, which seals
    /// everything written from now on; afterwards no other key is needed.
    pub async fn rekey(&self, key: shoal_store::StoreKey) -> anyhow::Result<()> {
        self.log.rekey(key.clone()).await?;
        let snapshots = self.snapshots.clone();
        tokio::task::spawn_blocking(move || snapshots.rekey(key)).await??;
        Ok(())
    }

    /// Opens the store, starts Raft and the leadership watcher.
    pub async fn start(cfg: ManagerConfig, bootstrap: Bootstrap) -> anyhow::Result<Arc<Manager>> {
        let (mut log, mut sm) = shoal_store::open(&cfg.raft_dir, &cfg.data_keys)?;
        let waiting = Arc::new(crate::proposer::Waiting::default());
        sm.answer_writers(waiting.clone());
        let (log_files, snapshots) = (log.clone(), sm.snapshot_file());
        let me = Member {
            addr: cfg.addr.clone(),
            node_id: cfg.node_id.clone(),
        };
        never_lead_again_in_an_old_term(&mut log, cfg.raft_id).await?;
        if matches!(bootstrap, Bootstrap::ForceNewCluster) {
            force_single_voter(&mut log, cfg.raft_id, me.clone()).await?;
        }
        let store = sm.shared();
        let mut config = shoal_store::raft_config(&cfg.cluster_id)?;
        // A manager restarting into a cluster that has other voters stays
        // out of elections until it has caught up (see
        // `catch_up_before_campaigning`); off from the start, so no timer
        // can fire before that is decided.
        let member = matches!(bootstrap, Bootstrap::Member);
        config.enable_elect = !member;
        let config = Arc::new(config);
        let encoded = log.encoded();
        let early = crate::early::Early::new(cfg.peers.clone());
        log.observe_leader_appends(cfg.raft_id, early.clone());
        let raft = Raft::new(
            cfg.raft_id,
            config,
            Network::new(cfg.peers.clone(), encoded, early),
            log,
            sm,
        )
        .await?;
        let quiet = member && has_other_voters(&raft).await;
        if member && !quiet {
            raft.runtime_config().elect(true);
        }
        let contact = Arc::new(LeaderContact::default());
        let (no_quorum_tx, no_quorum) = watch::channel(false);
        let proposer = Proposer::start(raft.clone(), cfg.peers.clone(), no_quorum.clone(), waiting);
        let dispatcher = Dispatcher::new(store.clone(), proposer.clone());
        let token = CancellationToken::new();
        let manager = Arc::new(Manager {
            raft: raft.clone(),
            store,
            proposer,
            dispatcher,
            node_id: cfg.node_id.clone(),
            cluster_id: cfg.cluster_id.clone(),
            node_peers: cfg.node_peers.clone(),
            peers: cfg.peers.clone(),
            read_index: Default::default(),
            no_quorum,
            token: token.clone(),
            log: log_files,
            snapshots,
            contact: contact.clone(),
        });
        match bootstrap {
            Bootstrap::Init(b) => {
                let (cluster, node) = *b;
                raft.initialize(BTreeMap::from([(cfg.raft_id, me)])).await?;
                manager.wait_leader(Duration::from_secs(10)).await?;
                writes::commit(
                    &manager.proposer,
                    vec![
                        shoal_store::Op::Put {
                            object: Object::Cluster(cluster.into()),
                            expect: Expect::Absent,
                        },
                        shoal_store::Op::Put {
                            object: Object::Node(node.into()),
                            expect: Expect::Absent,
                        },
                    ],
                )
                .await?;
            }
            Bootstrap::ForceNewCluster => {
                manager.wait_leader(Duration::from_secs(10)).await?;
                manager.forget_other_managers().await?;
            }
            Bootstrap::Member => {}
        }
        {
            let (raft, token, peers) = (raft.clone(), token.clone(), cfg.peers.clone());
            tokio::spawn(async move {
                if quiet {
                    catch_up_before_campaigning(raft.clone(), contact.clone(), token.clone()).await;
                }
                campaign_only_after_running_silence(raft, contact, peers, token).await;
            });
        }
        tokio::spawn(snapshot_policy(
            manager.raft.clone(),
            manager.log.clone(),
            manager.snapshots.clone(),
            token.clone(),
        ));
        tokio::spawn(check_quorum(raft.clone(), no_quorum_tx, token.clone()));
        tokio::spawn(watch_leadership(manager.clone(), token));
        Ok(manager)
    }

    /// The gRPC services of this manager.
    pub fn services(&self) -> Services {
        Services {
            raft: self.raft.clone(),
            store: self.store.clone(),
            proposer: self.proposer.clone(),
            dispatcher: self.dispatcher.clone(),
            cluster_id: self.cluster_id.clone(),
            contact: self.contact.clone(),
        }
    }

    /// The leader's node ID, if known (not this manager's while it leads
    /// without a quorum).
    pub fn leader_node_id(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let l = m.current_leader?;
        if l == m.id && *self.no_quorum.borrow() {
            return None;
        }
        m.membership_config
            .membership()
            .get_node(&l)
            .map(|n| n.node_id.clone())
    }

    /// Read-your-writes on followers: waits (briefly) until this manager has
    /// applied everything the leader had applied when asked. Leaders, and
    /// followers that can't reach a leader, answer from their own state.
    ///
    /// Concurrent callers share read-index round trips: a caller joins the
    /// next round to start (never one already in flight, whose answer may
    /// predate the call), so each caller still gets an index the leader
    /// reported after the call began.
    pub async fn catch_up(&self) {
        let (leader_addr, me_leader) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let addr = m.current_leader.and_then(|l| {
                m.membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| n.addr.clone())
            });
            (addr, m.current_leader == Some(m.id))
        };
        if me_leader {
            return;
        }
        let Some(addr) = leader_addr else { return };
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut ri = self.read_index.lock().expect("read index lock");
            ri.waiters.push((addr, tx));
            !std::mem::replace(&mut ri.running, true)
        };
        if start {
            tokio::spawn(read_index_rounds(
                self.read_index.clone(),
                self.peers.clone(),
            ));
        }
        if let Ok(Some(index)) = rx.await {
            let mut applied = self.store.applied();
            let _ = tokio::time::timeout(Duration::from_secs(2), applied.wait_for(|a| *a >= index))
                .await;
        }
    }

    /// Waits until this manager leads.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<()> {
        self.raft
            .wait(Some(timeout))
            .state(ServerState::Leader, "become leader")
            .await
            .map_err(|e| anyhow::anyhow!("did not become leader: {e}"))?;
        Ok(())
    }

    /// After `--force-new-cluster`: the other managers are no longer Raft
    /// members; clear their Raft ids so they rejoin as new members.
    async fn forget_other_managers(&self) -> anyhow::Result<()> {
        let others: Vec<Node> = self.store.view(|t| {
            t.nodes
                .iter()
                .filter(|n| n.id != self.node_id && n.raft_id != 0)
                .map(|n| (**n).clone())
                .collect()
        });
        for mut n in others {
            let v = n.version.index;
            n.raft_id = 0;
            n.updated_at = Timestamp::now();
            writes::commit_one(&self.proposer, Object::Node(n.into()), Expect::Version(v)).await?;
        }
        Ok(())
    }

    /// Stops Raft and the leader components.
    pub async fn shutdown(&self) {
        self.token.cancel();
        self.dispatcher.deactivate();
        let _ = self.raft.shutdown().await;
    }
}

/// Starts and stops the leader-only components as leadership comes and goes.
async fn watch_leadership(m: Arc<Manager>, token: CancellationToken) {
    // The server metrics change with leadership and membership only (the
    // full metrics change several times per write).
    let mut server = m.raft.server_metrics();
    let mut no_quorum = m.no_quorum.clone();
    let mut leading: Option<CancellationToken> = None;
    loop {
        let (leads_raft, is_leader) = {
            let sm = server.borrow_and_update();
            let lost = *no_quorum.borrow_and_update();
            let leads = is_leading(sm.id, sm.state, sm.current_leader);
            // A leader without a quorum sends agents to no one.
            let addr = sm
                .current_leader
                .filter(|l| !(*l == sm.id && lost))
                .and_then(|l| {
                    sm.membership_config
                        .membership()
                        .get_node(&l)
                        .map(|n| n.addr.clone())
                });
            *m.dispatcher.leader_addr.lock().expect("lock") = addr;
            (leads, leads && !lost)
        };
        // Leader components start only once a quorum confirms the
        // leadership (a leader cut off from the others may not know yet).
        let confirmed = is_leader
            && leading.is_none()
            && matches!(
                tokio::time::timeout(Duration::from_secs(1), m.raft.ensure_linearizable()).await,
                Ok(Ok(_))
            );
        match (is_leader, leading.is_some()) {
            (true, false) if !confirmed => {}
            (true, false) => {
                tracing::info!(node = %m.node_id, "became leader: starting dispatcher and orchestration");
                let t = token.child_token();
                m.dispatcher.activate();
                tokio::spawn(membership::run(m.raft.clone(), m.store.clone(), t.clone()));
                tokio::spawn(orchestrator::run(
                    m.store.clone(),
                    m.proposer.clone(),
                    t.clone(),
                ));
                leading = Some(t);
            }
            (false, true) => {
                if leads_raft {
                    tracing::warn!(node = %m.node_id, "leading without a quorum: stopping leader components");
                } else {
                    tracing::info!(node = %m.node_id, "lost leadership: stopping leader components");
                }
                if let Some(t) = leading.take() {
                    t.cancel();
                }
                m.dispatcher.deactivate();
            }
            _ => {}
        }
        // Leading, but not confirmed yet: ask again soon, changes or not.
        let unconfirmed = is_leader && leading.is_none();
        tokio::select! {
            _ = token.cancelled() => {
                if let Some(t) = leading.take() { t.cancel(); }
                return;
            }
            r = server.changed() => if r.is_err() { return },
            r = no_quorum.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_millis(100)), if unconfirmed => {}
        }
    }
}

/// A leader that no majority of the voters has acknowledged (answered an
/// AppendEntries or heartbeat of) for this long acts as no leader: it is
/// cut off from the others, who have elected another by now (they stand
/// after 150–300 ms of silence).
const QUORUM_LOST: Duration = Duration::from_secs(2);
const QUORUM_CHECK: Duration = Duration::from_millis(100);

/// openraft 0.9 has no check-quorum: a leader cut off from the others
/// stays leader in its own eyes until it hears of a newer term, so its
/// writes would wait for the network to heal, its dispatcher would keep its
/// own agent, and it would show itself as the leader. This sets `no_quorum`
/// while this manager leads and no majority has acknowledged it for
/// [`QUORUM_LOST`] (openraft's `millis_since_quorum_ack`; a new leader not
/// acknowledged yet counts from when this first sees it): writes are refused,
/// leader components stop, and no leader is shown. It clears again if the
/// acknowledgements come back before another leader takes over.
async fn check_quorum(raft: Raft, no_quorum: watch::Sender<bool>, token: CancellationToken) {
    let limit = QUORUM_LOST.as_millis() as u64;
    // Since when openraft has reported no quorum acknowledgement at all.
    let mut unacked_since: Option<tokio::time::Instant> = None;
    let mut server = raft.server_metrics();
    loop {
        // A follower has nothing to check: it waits to lead, without a tick.
        let follows = {
            let sm = server.borrow_and_update();
            !is_leading(sm.id, sm.state, sm.current_leader)
        };
        tokio::select! {
            _ = token.cancelled() => return,
            r = server.changed(), if follows => if r.is_err() { return },
            _ = tokio::time::sleep(QUORUM_CHECK), if !follows => {}
        }
        let (leading, acked_ms) = {
            let m = raft.metrics();
            let m = m.borrow();
            (
                is_leading(m.id, m.state, m.current_leader),
                m.millis_since_quorum_ack,
            )
        };
        let now = tokio::time::Instant::now();
        let lost = match (leading, acked_ms) {
            (true, Some(ms)) => {
                unacked_since = None;
                ms >= limit
            }
            (true, None) => now - *unacked_since.get_or_insert(now) >= QUORUM_LOST,
            (false, _) => {
                unacked_since = None;
                false
            }
        };
        no_quorum.send_if_modified(|was| {
            if *was == lost {
                return false;
            }
            if lost {
                tracing::warn!(
                    quiet_ms = acked_ms,
                    "no majority of managers has acknowledged this leader lately: it refuses \
                     writes and acts as no leader until they do, or another leader takes over"
                );
            } else if leading {
                tracing::info!("a majority of managers acknowledges this leader again");
            }
            *was = lost;
            true
        });
    }
}

/// How often the snapshot policy looks at the log.
const SNAPSHOT_CHECK: Duration = Duration::from_millis(250);

/// Builds this manager's snapshots when [`shoal_store::snapshot_due`] says
/// so (openraft's own, fixed-interval policy is off), one at a time, until
/// `token` is cancelled.
async fn snapshot_policy(
    raft: Raft,
    log: shoal_store::LogStore,
    snapshots: shoal_store::SnapshotFile,
    token: CancellationToken,
) {
    let every = shoal_store::snapshot_every();
    let mut metrics = raft.metrics();
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(SNAPSHOT_CHECK) => {}
        }
        if metrics.has_changed().is_err() {
            return; // Raft has stopped.
        }
        let (applied, last) = {
            let m = metrics.borrow_and_update();
            (m.last_applied.map(|l| l.index), m.snapshot.map(|l| l.index))
        };
        let Some(applied) = applied else { continue };
        let since = last.map_or(applied + 1, |s| applied.saturating_sub(s));
        if !shoal_store::snapshot_due(since, every, snapshots.last_size(), log.avg_entry_bytes()) {
            continue;
        }
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
        // One at a time: wait for it (a big state takes seconds), then look again.
        let built = async {
            loop {
                if metrics.changed().await.is_err() {
                    return;
                }
                if metrics.borrow().snapshot.map(|l| l.index) != last {
                    return;
                }
            }
        };
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::timeout(Duration::from_secs(60), built) => {}
        }
    }
}

/// How long a restarted manager stays out of elections if it hears from no
/// leader (the leader retries an unreachable peer every 100 ms; a whole
/// cluster restarted at once waits this long for its first election).
const QUIET_WITHOUT_LEADER: Duration = Duration::from_secs(1);
/// The longest it stays out while catching up with a leader it hears from.
const QUIET_MAX: Duration = Duration::from_secs(30);
/// ...or once that leader has sent nothing for this long (longer than a big
/// snapshot takes to arrive, during which nothing else is sent).
const LEADER_SILENT: Duration = Duration::from_secs(5);

/// Whether the Raft membership has voters other than this node (once
/// RaftCore has published the stored membership; a node that has none
/// yet, joining, has none).
async fn has_other_voters(raft: &Raft) -> bool {
    let loaded = raft
        .wait(Some(Duration::from_millis(200)))
        .metrics(
            |m| {
                m.membership_config
                    .membership()
                    .voter_ids()
                    .next()
                    .is_some()
            },
            "stored membership",
        )
        .await;
    loaded.is_ok_and(|m| {
        m.membership_config
            .membership()
            .voter_ids()
            .any(|v| v != m.id)
    })
}

/// openraft 0.9 has no pre-vote: a manager that restarts behind the others
/// times out while the leader sends it a snapshot (one message, no
/// heartbeats meanwhile), stands for a new term, and its answer deposes a
/// healthy leader (0.4–0.8 s without one; BENCHMARKS.md, session 9). So a
/// restarted manager starts with elections off, and turns them on once it
/// has applied what the first leader it heard from had committed, or if no
/// leader speaks to it within [`QUIET_WITHOUT_LEADER`], or the leader it
/// heard from is gone or silent for [`LEADER_SILENT`], or after
/// [`QUIET_MAX`]. It votes all along, so the others can elect without it.
async fn catch_up_before_campaigning(
    raft: Raft,
    contact: Arc<LeaderContact>,
    token: CancellationToken,
) {
    let started = tokio::time::Instant::now();
    let mut target: Option<u64> = None;
    let why = loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        let (leader, applied) = {
            let m = raft.metrics();
            let m = m.borrow();
            let applied = m.last_applied.map_or(0, |l| l.index);
            (m.current_leader.filter(|l| *l != m.id), applied)
        };
        let seen = contact.commit();
        if target.is_none() && leader.is_some() && seen > 0 {
            target = Some(seen);
        }
        match target {
            Some(t) if applied >= t => break "caught up with the leader",
            Some(_) if leader.is_none() => break "the leader is gone",
            Some(_) if contact.quiet_for().is_some_and(|q| q >= LEADER_SILENT) => {
                break "the leader went silent"
            }
            None if started.elapsed() >= QUIET_WITHOUT_LEADER => break "no leader spoke to us",
            _ if started.elapsed() >= QUIET_MAX => break "still catching up",
            _ => {}
        }
    };
    raft.runtime_config().elect(true);
    tracing::info!(
        reason = why,
        after_ms = started.elapsed().as_millis() as u64,
        "standing for election allowed"
    );
}

/// Whether this manager is the Raft leader.
pub(crate) fn leads(raft: &Raft) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    is_leading(m.id, m.state, m.current_leader)
}

/// Whether Raft node `id`, in `state` and seeing `leader`, leads (from
/// either the full or the server metrics).
fn is_leading(id: u64, state: ServerState, leader: Option<u64>) -> bool {
    state == ServerState::Leader && leader == Some(id)
}

/// How long a follower must have heard nothing from the leader, while it
/// was running, before it may stand for election (openraft's own timeout,
/// 150–300 ms, still decides when; this only lets it).
const SILENCE_TO_CAMPAIGN: Duration = Duration::from_millis(150);
/// A tick of the guard this late means this process did not run meanwhile
/// (SIGSTOP, a paused VM, a host too busy to schedule it).
const STALL: Duration = Duration::from_millis(200);
const GUARD_TICK: Duration = Duration::from_millis(20);
/// A voter asked in a pre-vote agrees the leader is gone if it has heard
/// nothing from it for this long (less than [`SILENCE_TO_CAMPAIGN`]: the
/// voters' clocks on the leader's last heartbeat differ by up to a period)...
const PRE_VOTE_QUIET: Duration = Duration::from_millis(100);
/// ...and it must answer within this.
const PRE_VOTE_WAIT: Duration = Duration::from_millis(300);
/// Pre-vote rounds are this far apart at least while they fail.
const PRE_VOTE_EVERY: Duration = Duration::from_millis(100);

/// openraft 0.9 has no pre-vote, so a follower that times out stands for a
/// new term at once, and its answers carrying that term depose the leader
/// even when the leader is fine:
/// - a follower whose own process stalled (frozen, a paused VM) times out as
///   it resumes, before it reads the heartbeats waiting on its sockets (a
///   3 s SIGSTOP of a follower deposed the leader every time);
/// - a follower cut off from the leader by the network, fully or one way,
///   stands again and again, and deposes the leader once its requests get
///   through.
///
/// So a follower that hears from the leader keeps elections off. It turns
/// them on only once it has *run* for [`SILENCE_TO_CAMPAIGN`] without a word
/// from the leader (a stall restarts that count), and a majority of the
/// voters, itself included, say they have not heard from a leader lately
/// either: a pre-vote round over the Raft stream ([`frame::LEADER_SEEN`]).
/// An older manager that does not know the request counts as agreeing. A
/// manager that never heard from a leader (one alone, or all restarted) and
/// the leader itself are left as they are.
async fn campaign_only_after_running_silence(
    raft: Raft,
    contact: Arc<LeaderContact>,
    peers: Arc<Peers>,
    token: CancellationToken,
) {
    let mut last_tick = tokio::time::Instant::now();
    let mut running_since = last_tick;
    let mut next_round = last_tick;
    let mut elect: Option<bool> = None;
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(GUARD_TICK) => {}
        }
        let now = tokio::time::Instant::now();
        let gap = now - last_tick;
        last_tick = now;
        if gap >= STALL {
            running_since = now;
            tracing::info!(
                stalled_ms = gap.as_millis() as u64,
                "this manager did not run for a while: it will not stand for election before \
                 hearing from the leader or running without a word from it"
            );
        }
        let Some(quiet) = contact.quiet_for() else {
            continue;
        };
        if leads(&raft) {
            continue;
        }
        let silent = quiet.min(now - running_since) >= SILENCE_TO_CAMPAIGN;
        let want = if !silent {
            false
        } else if elect == Some(true) {
            true
        } else if now < next_round {
            continue;
        } else {
            next_round = now + PRE_VOTE_EVERY;
            let agreed = majority_heard_no_leader(&raft, &peers).await;
            // The round's own wait is not a stall.
            last_tick = tokio::time::Instant::now();
            if !agreed {
                tracing::debug!("pre-vote: most voters still hear from a leader");
            }
            agreed
        };
        if elect != Some(want) {
            raft.runtime_config().elect(want);
            elect = Some(want);
        }
    }
}

/// The pre-vote round: whether a majority of the voters, this manager
/// included, have not heard from a leader for [`PRE_VOTE_QUIET`].
async fn majority_heard_no_leader(raft: &Raft, peers: &Arc<Peers>) -> bool {
    let (me, voters) = {
        let m = raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let voters: Vec<(u64, Option<String>)> = membership
            .voter_ids()
            .map(|id| (id, membership.get_node(&id).map(|n| n.addr.clone())))
            .collect();
        (m.id, voters)
    };
    let majority = voters.len() / 2 + 1;
    let mut asks = tokio::task::JoinSet::new();
    for (_, addr) in voters.into_iter().filter(|(id, _)| *id != me) {
        let Some(addr) = addr else { continue };
        let peers = peers.clone();
        asks.spawn(async move { heard_no_leader(&peers, &addr).await });
    }
    let mut agree = 1;
    while let Some(r) = asks.join_next().await {
        if r.unwrap_or(false) {
            agree += 1;
            if agree >= majority {
                break;
            }
        }
    }
    agree >= majority
}

/// Asks the manager at `addr` whether it has heard from a leader lately;
/// true if it has not (or is too old to know the question), false if it has,
/// leads, or does not answer in time.
async fn heard_no_leader(peers: &Peers, addr: &str) -> bool {
    if !peers.serves_stream(addr) {
        return true;
    }
    let mut client = peers.take_stream(addr);
    let mut req = frame::start(frame::LEADER_SEEN, 0);
    let answer = tokio::time::timeout(PRE_VOTE_WAIT, client.call(&mut req)).await;
    match answer {
        Ok(Ok(frame::OK)) => {
            let seen: Option<crate::grpc::LeaderSeen> = serde_json::from_slice(client.reply()).ok();
            peers.put_stream(client);
            seen.is_some_and(|s| {
                !s.leading
                    && s.quiet_ms
                        .is_none_or(|q| q >= PRE_VOTE_QUIET.as_millis() as u64)
            })
        }
        Ok(Ok(frame::REFUSED)) => {
            let older = String::from_utf8_lossy(client.reply()).contains("unknown request type");
            peers.put_stream(client);
            older
        }
        Ok(Err(crate::raft_stream::StreamError::NotServed)) => {
            peers.stream_not_served(addr);
            true
        }
        _ => false,
    }
}

/// openraft 0.9 restarts a manager that was leader as leader of the same
/// term (its committed vote for itself survived). With early AppendEntries
/// ([`crate::early`]) followers may hold entries of that term the leader
/// sent but had not synced before it died; leading that term again, it
/// would give those indexes other entries under the same log ids, and the
/// followers would keep theirs (log ids that match are not compared
/// further). So on start such a vote is turned back into a plain vote for
/// ourselves in that term: the manager must win a new term to lead again.
/// It still cannot vote for anyone else in that term.
async fn never_lead_again_in_an_old_term(
    log: &mut shoal_store::LogStore,
    raft_id: u64,
) -> anyhow::Result<()> {
    if let Some(v) = log.read_vote().await? {
        if v.is_committed() && v.leader_id().voted_for() == Some(raft_id) {
            let term = v.leader_id().get_term();
            log.save_vote(&Vote::new(term, raft_id)).await?;
            tracing::info!(term, "led before this start: will stand for a new term");
        }
    }
    Ok(())
}

/// Appends a membership entry making `me` the only voter, under a new term
/// with a committed vote for itself, so Raft restarts as a one-manager
/// cluster that still holds every committed object (`--force-new-cluster`).
async fn force_single_voter(
    log: &mut shoal_store::LogStore,
    raft_id: u64,
    me: Member,
) -> anyhow::Result<()> {
    let state = log.get_log_state().await?;
    let vote: Option<Vote> = log.read_vote().await?;
    let last = state.last_log_id;
    let term = vote
        .map(|v| v.leader_id().term)
        .unwrap_or(0)
        .max(last.map(|l| l.leader_id.term).unwrap_or(0))
        + 1;
    let index = last.map(|l| l.index + 1).unwrap_or(0);
    let membership = Membership::new(
        vec![BTreeSet::from([raft_id])],
        BTreeMap::from([(raft_id, me)]),
    );
    let entry = Entry {
        log_id: LogId::new(LeaderId::new(term, raft_id), index),
        payload: EntryPayload::Membership(membership),
    };
    log.save_vote(&Vote::new_committed(term, raft_id)).await?;
    log.append_direct(vec![entry])?;
    tracing::warn!(
        term,
        index,
        "forced a new one-manager cluster from the existing state"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a committed vote for ourselves is turned back into a plain one,
    /// in the same term; other votes are left alone.
    #[tokio::test]
    async fn a_manager_that_led_stands_for_a_new_term_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _sm) =
            shoal_store::open(dir.path(), &[shoal_store::StoreKey::generate()]).unwrap();
        for (saved, after) in [
            (Vote::new_committed(4, 1), Vote::new(4, 1)),
            (Vote::new(5, 1), Vote::new(5, 1)),
            (Vote::new_committed(6, 2), Vote::new_committed(6, 2)),
        ] {
            log.save_vote(&saved).await.unwrap();
            never_lead_again_in_an_old_term(&mut log, 1).await.unwrap();
            assert_eq!(log.read_vote().await.unwrap(), Some(after));
        }
    }
}
