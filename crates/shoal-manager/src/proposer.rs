//! The write path: every change to the cluster state goes through here.
//!
//! Concurrent writers are batched into one Raft entry (one fsync, one
//! replication round for many writes). On a follower the batch is forwarded
//! to the leader over the Raft stream (gRPC if the leader does not serve it);
//! during an election it waits for a leader. Commands
//! carry request IDs, so a forward lost with a dying leader is retried safely
//! (the store applies each ID once).
//!
//! One entry is in flight at a time: openraft 0.9 appends and fsyncs inside
//! its core task, so a second entry would only delay the first one's commit.
//! Writers that arrive meanwhile queue up and go together in the next entry.

use crate::peers::Peers;
use crate::raft_stream::StreamError;
use openraft::error::{ClientWriteError, RaftError};
use shoal_net::frame;
use shoal_net::rpc::msg;
use shoal_net::rpc::pb::cluster_client::ClusterClient;
use shoal_store::{Batch, BatchResult, Command, CommandResult, Raft};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

/// How long a write waits for a leader before giving up.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// Most commands in one Raft entry.
const MAX_BATCH: usize = 1024;
/// Raft entries in flight at once from this manager. One: openraft 0.9
/// appends (and fsyncs) inside its core task, so a second entry only makes
/// the first wait (measured in BENCHMARKS.md: 1 beats 2, 4 and 8).
const IN_FLIGHT: usize = 1;
/// How long a new batch waits, at most, for the writers the previous one
/// answered (it goes as soon as they are all queued). 2 ms: with 64 writers
/// in closed loops a round takes ≈ 3 ms here, and with 1 ms some came back
/// too late and went in a second entry (64 clients: 2 ms gave 19–24k
/// writes/s against 14–19k with 1 ms, and 4 ms 17k; BENCHMARKS.md).
const LINGER_US: u64 = 2000;

/// Why a write did not happen (or may not have).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// No leader could be reached in time.
    #[error("the cluster has no reachable leader (is a majority of managers up?)")]
    NoLeader,
    /// The write may or may not have been committed.
    #[error("the write's outcome is unknown: {0}")]
    Unknown(String),
    /// Raft stopped or refused.
    #[error("{0}")]
    Raft(String),
}

/// Batching knobs (`SHOAL_PROPOSE_IN_FLIGHT`, `SHOAL_PROPOSE_LINGER_US`
/// override the defaults, for benchmarking).
struct Tuning {
    in_flight: usize,
    linger: Duration,
}

impl Tuning {
    fn from_env() -> Tuning {
        let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        Tuning {
            in_flight: var("SHOAL_PROPOSE_IN_FLIGHT")
                .map(|n| n.max(1) as usize)
                .unwrap_or(IN_FLIGHT),
            linger: Duration::from_micros(var("SHOAL_PROPOSE_LINGER_US").unwrap_or(LINGER_US)),
        }
    }
}

fn drain(rx: &mut mpsc::Receiver<Pending>, batch: &mut Vec<Pending>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
}

type Reply = oneshot::Sender<Result<CommandResult, WriteError>>;

struct Pending {
    cmd: Command,
    /// The writer's reply, unless it waits in [`Waiting`].
    reply: Option<Reply>,
}

/// The writers waiting on this manager, by their commands' request IDs.
/// The state machine answers each as it applies the command (see
/// [`shoal_store::Writers`]); the batch answers whoever is left (an error,
/// or a result the apply did not hand over).
#[derive(Default)]
pub(crate) struct Waiting(std::sync::Mutex<HashMap<u64, Waiter>>);

struct Waiter {
    reply: Reply,
    /// The in-flight slot of the writer's batch, shared by its writers: it
    /// frees when the last one is answered, so the writers answered by the
    /// state machine find it free when they come back (a writer that finds
    /// it taken waits for company, see `LINGER_US`).
    slot: Option<Arc<OwnedSemaphorePermit>>,
}

impl Waiting {
    /// Registers `reply` for command `request`; gives it back if another
    /// writer already waits under that ID.
    fn register(&self, request: u64, reply: Reply) -> Option<Reply> {
        match self.0.lock().expect("waiting").entry(request) {
            Entry::Occupied(_) => Some(reply),
            Entry::Vacant(v) => {
                v.insert(Waiter { reply, slot: None });
                None
            }
        }
    }

    /// Gives the writers of `requests` that wait here the batch's `slot`;
    /// whether every one of them waits here.
    fn hold(&self, requests: &[u64], slot: &Arc<OwnedSemaphorePermit>) -> bool {
        let mut map = self.0.lock().expect("waiting");
        let mut all = true;
        for r in requests {
            match map.get_mut(r) {
                Some(w) => w.slot = Some(slot.clone()),
                None => all = false,
            }
        }
        all
    }

    fn take(&self, request: u64) -> Option<Reply> {
        let w = self.0.lock().expect("waiting").remove(&request)?;
        Some(w.reply)
    }
}

impl shoal_store::Writers for Waiting {
    fn any(&self) -> bool {
        !self.0.lock().expect("waiting").is_empty()
    }

    fn answer(&self, request: u64, result: CommandResult) {
        if let Some(reply) = self.take(request) {
            let _ = reply.send(Ok(result));
        }
    }
}

/// Writers registered in [`Waiting`] for a forwarded batch; taken out when
/// dropped.
struct Registered<'a> {
    waiting: &'a Waiting,
    requests: Vec<u64>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        for request in &self.requests {
            self.waiting.take(*request);
        }
    }
}

/// Submits commands; cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
    raft: Raft,
    no_quorum: watch::Receiver<bool>,
    waiting: Arc<Waiting>,
}

/// How long a write waits on a leader without a quorum before it is
/// refused (the quorum may come back, or the leadership move).
const NO_QUORUM_WAIT: Duration = Duration::from_secs(2);

/// Why this manager did not take a write as the leader.
pub(crate) enum LeadWrite {
    /// It is not the leader (any more).
    NotLeader,
    /// It leads, but no majority of the voters has acknowledged it lately
    /// (see `manager::check_quorum`): the write was not proposed.
    NoQuorum,
    /// The quorum was lost while the write was in flight: it may or may not
    /// be committed, by this leader if the quorum comes back in time.
    QuorumLost,
    /// Raft refused it.
    Failed(String),
}

impl LeadWrite {
    /// What a writer is told (for `QuorumLost`, why the outcome is unknown).
    pub(crate) fn message(&self) -> String {
        match self {
            LeadWrite::NotLeader => "not the leader".into(),
            LeadWrite::NoQuorum => WriteError::NoLeader.to_string(),
            LeadWrite::QuorumLost => {
                "the leader lost contact with most managers while the write was in flight".into()
            }
            LeadWrite::Failed(e) => e.clone(),
        }
    }
}

/// Proposes `batch` to this manager's Raft as the leader. A leader that no
/// majority has acknowledged lately (cut off from the others: openraft 0.9
/// has no check-quorum, so it does not step down by itself) refuses writes
/// after [`NO_QUORUM_WAIT`], and gives up a write in flight when that
/// happens, instead of holding the writer until the network heals.
async fn write_as_leader(
    raft: &Raft,
    no_quorum: &watch::Receiver<bool>,
    batch: Batch,
) -> Result<BatchResult, LeadWrite> {
    let mut no_quorum = no_quorum.clone();
    if *no_quorum.borrow() {
        // A short wait, in case the acknowledgements resume (a stalled
        // disk on the followers) or another leader takes over.
        let back = tokio::time::timeout(NO_QUORUM_WAIT, no_quorum.wait_for(|lost| !*lost));
        if !matches!(back.await, Ok(Ok(_))) {
            return Err(LeadWrite::NoQuorum);
        }
    }
    let lost = async move {
        if no_quorum.wait_for(|lost| *lost).await.is_err() {
            // The check stopped with the manager: nothing to race.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = raft.client_write(batch) => match r {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(LeadWrite::NotLeader)
            }
            Err(e) => Err(LeadWrite::Failed(e.to_string())),
        },
        () = lost => Err(LeadWrite::QuorumLost),
    }
}

impl Proposer {
    /// Starts the batching loop for `raft` (this manager's Raft instance,
    /// whose state machine answers the writers in `waiting`). `no_quorum`
    /// is true while this manager leads without a quorum.
    pub(crate) fn start(
        raft: Raft,
        peers: Arc<Peers>,
        no_quorum: watch::Receiver<bool>,
        waiting: Arc<Waiting>,
    ) -> Proposer {
        let (tx, mut rx) = mpsc::channel::<Pending>(65536);
        let proposer = Proposer {
            tx: tx.clone(),
            raft: raft.clone(),
            no_quorum: no_quorum.clone(),
            waiting: waiting.clone(),
        };
        let tuning = Tuning::from_env();
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(tuning.in_flight));
            let mut last_len = 0usize;
            while let Some(first) = rx.recv().await {
                let permit = match permits.clone().try_acquire_owned() {
                    Ok(p) => (p, false),
                    Err(_) => (
                        permits
                            .clone()
                            .acquire_owned()
                            .await
                            .expect("semaphore open"),
                        true,
                    ),
                };
                let (permit, waited) = permit;
                let mut batch = vec![first];
                drain(&mut rx, &mut batch);
                // Group commit: wait a moment for the writers the previous
                // entry answered, who come straight back (closed loops). One
                // more command in this entry costs next to nothing; one more
                // entry costs an fsync on the leader and on a follower. If
                // this batch queued behind that entry, they come on top of
                // it. A lone writer never waits (its last batch was itself).
                let target = if waited {
                    batch.len() + last_len
                } else {
                    last_len
                }
                .min(MAX_BATCH);
                if batch.len() < target && !tuning.linger.is_zero() {
                    let until = tokio::time::Instant::now() + tuning.linger;
                    while batch.len() < target {
                        match tokio::time::timeout_at(until, rx.recv()).await {
                            Ok(Some(p)) => {
                                batch.push(p);
                                drain(&mut rx, &mut batch);
                            }
                            _ => break,
                        }
                    }
                }
                last_len = batch.len();
                let raft = raft.clone();
                let peers = peers.clone();
                let no_quorum = no_quorum.clone();
                let waiting = waiting.clone();
                tokio::spawn(async move {
                    let (cmds, replies): (Vec<_>, Vec<_>) = batch
                        .into_iter()
                        .map(|p| {
                            let request = p.cmd.request;
                            (p.cmd, (request, p.reply))
                        })
                        .unzip();
                    // The slot goes with the writers waiting on the state
                    // machine; the batch keeps it too while any does not.
                    let requests: Vec<u64> = replies
                        .iter()
                        .filter(|(_, reply)| reply.is_none())
                        .map(|(request, _)| *request)
                        .collect();
                    let slot = Arc::new(permit);
                    let everyone = requests.len() == replies.len();
                    let slot = (!(waiting.hold(&requests, &slot) && everyone)).then_some(slot);
                    let started = Instant::now();
                    let n = cmds.len();
                    let result = submit(&raft, &peers, &no_quorum, Batch(cmds)).await;
                    // Free the slot before answering, so the writers answered
                    // now never find it taken when they come back.
                    drop(slot);
                    tracing::debug!(
                        commands = n,
                        us = started.elapsed().as_micros() as u64,
                        "batch committed"
                    );
                    // Those the state machine has not answered yet.
                    let left = replies
                        .into_iter()
                        .map(|(request, reply)| reply.or_else(|| waiting.take(request)));
                    match result {
                        Ok(BatchResult(results)) => {
                            for (reply, r) in left.zip(results) {
                                if let Some(reply) = reply {
                                    let _ = reply.send(Ok(r));
                                }
                            }
                        }
                        Err(e) => {
                            for reply in left.flatten() {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                });
            }
        });
        proposer
    }

    /// Proposes a batch forwarded by another manager, as the leader. Its
    /// commands wait in [`Waiting`] too, so the state machine answers them
    /// as it applies them, as it does this manager's own writers: openraft's
    /// answer to `client_write` comes later, through RaftCore, which is
    /// then often busy with the other followers' answers (40–50 µs on a
    /// sequential write, measured). Whichever comes first is used.
    pub(crate) async fn write_as_leader(&self, batch: Batch) -> Result<BatchResult, LeadWrite> {
        // Taken out again however this ends (the forward's connection may
        // drop this future before the write is done).
        let mut registered = Registered {
            waiting: &self.waiting,
            requests: Vec::with_capacity(batch.0.len()),
        };
        let mut answers = Vec::with_capacity(batch.0.len());
        for cmd in &batch.0 {
            let (reply, rx) = oneshot::channel();
            // An ID already waiting (a retried forward still in flight):
            // that batch's writers get openraft's answer.
            if cmd.request == 0 || self.waiting.register(cmd.request, reply).is_some() {
                break;
            }
            registered.requests.push(cmd.request);
            answers.push(rx);
        }
        let every = !answers.is_empty() && answers.len() == batch.0.len();
        let write = write_as_leader(&self.raft, &self.no_quorum, batch);
        let result = if every {
            let applied = async move {
                let mut results = Vec::with_capacity(answers.len());
                for rx in answers {
                    results.push(rx.await.ok()?.ok()?);
                }
                Some(BatchResult(results))
            };
            tokio::select! {
                r = write => r,
                Some(r) = applied => Ok(r),
            }
        } else {
            write.await
        };
        drop(registered);
        result
    }

    /// Commits `cmd` and returns its result.
    pub async fn propose(&self, mut cmd: Command) -> Result<CommandResult, WriteError> {
        if cmd.request == 0 {
            // Lets the store apply it once even if a retry sends it twice.
            cmd.request = rand::random::<u64>().max(1);
        }
        let (reply, rx) = oneshot::channel();
        let request = cmd.request;
        let reply = self.waiting.register(request, reply);
        let registered = reply.is_none();
        if self.tx.send(Pending { cmd, reply }).await.is_err() {
            if registered {
                self.waiting.take(request);
            }
            return Err(WriteError::Raft("the manager is shutting down".into()));
        }
        rx.await
            .map_err(|_| WriteError::Raft("the manager is shutting down".into()))?
    }
}

/// Proposes `batch` on the leader, wherever it is.
async fn submit(
    raft: &Raft,
    peers: &Peers,
    no_quorum: &watch::Receiver<bool>,
    batch: Batch,
) -> Result<BatchResult, WriteError> {
    let deadline = Instant::now() + WRITE_TIMEOUT;
    let mut metrics = raft.server_metrics();
    loop {
        let (leader, me, leader_addr) = {
            let m = metrics.borrow();
            let addr = m.current_leader.and_then(|l| {
                m.membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| n.addr.clone())
            });
            (m.current_leader, m.id, addr)
        };
        match leader {
            Some(l) if l == me => match write_as_leader(raft, no_quorum, batch.clone()).await {
                Ok(r) => return Ok(r),
                Err(LeadWrite::NotLeader) => {}
                Err(LeadWrite::NoQuorum) => return Err(WriteError::NoLeader),
                Err(e @ LeadWrite::QuorumLost) => return Err(WriteError::Unknown(e.message())),
                Err(LeadWrite::Failed(e)) => return Err(WriteError::Raft(e)),
            },
            Some(l) => {
                if let Some(addr) = leader_addr {
                    let moved = leader_moves(raft.clone(), l);
                    match forward(peers, &addr, &batch, moved).await {
                        Ok(r) => return Ok(r),
                        Err(Forward::Retry) => {}
                        Err(Forward::Failed(e)) => return Err(e),
                    }
                }
            }
            None => {}
        }
        if Instant::now() >= deadline {
            return Err(WriteError::NoLeader);
        }
        // Wait for a leadership change, but re-check at least every 50 ms.
        let _ = tokio::time::timeout(Duration::from_millis(50), metrics.changed()).await;
    }
}

enum Forward {
    Retry,
    Failed(WriteError),
}

/// Resolves once this manager sees a leader other than `from`, or none: a
/// leader that froze, or was cut off, keeps its connections open and never
/// answers, and the rest of the cluster elects another meanwhile.
async fn leader_moves(raft: Raft, from: u64) {
    let mut metrics = raft.server_metrics();
    loop {
        if metrics.borrow_and_update().current_leader != Some(from) {
            return;
        }
        if metrics.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Forwards `batch` to the leader at `addr`; gives up on it (to retry with
/// whoever leads now; each command ID is applied once) when `moved` resolves.
async fn forward(
    peers: &Peers,
    addr: &str,
    batch: &Batch,
    moved: impl std::future::Future<Output = ()>,
) -> Result<BatchResult, Forward> {
    tokio::pin!(moved);
    if peers.serves_stream(addr) {
        let mut client = peers.take_stream(addr);
        let mut req = frame::start(frame::PROPOSE, 256);
        serde_json::to_writer(&mut req, batch).expect("serializable");
        let answer = tokio::select! {
            a = tokio::time::timeout(WRITE_TIMEOUT, client.call(&mut req)) => a,
            // The connection is dropped with the client: an answer that
            // comes later must not be read as the answer to another call.
            () = &mut moved => return Err(Forward::Retry),
        };
        match answer {
            Ok(Ok(frame::OK)) => {
                let r = serde_json::from_slice(client.reply()).map_err(|e| {
                    Forward::Failed(WriteError::Unknown(format!("bad reply from leader: {e}")))
                });
                peers.put_stream(client);
                return r;
            }
            // Not the leader (any more), or Raft could not take it now.
            Ok(Ok(frame::RETRY)) => {
                peers.put_stream(client);
                tokio::time::sleep(Duration::from_millis(20)).await;
                return Err(Forward::Retry);
            }
            Ok(Ok(frame::REFUSED)) => {
                let text = String::from_utf8_lossy(client.reply()).into_owned();
                let e = if text == WriteError::NoLeader.to_string() {
                    WriteError::NoLeader
                } else {
                    WriteError::Unknown(text)
                };
                peers.put_stream(client);
                return Err(Forward::Failed(e));
            }
            Ok(Ok(tag)) => {
                return Err(Forward::Failed(WriteError::Unknown(format!(
                    "unknown answer type {tag} from the leader"
                ))))
            }
            Ok(Err(StreamError::NotServed)) => peers.stream_not_served(addr),
            // Lost in transit (the leader died?), or no answer in time:
            // retrying is safe because the store applies each command ID once.
            Ok(Err(_)) | Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                return Err(Forward::Retry);
            }
        }
    }
    let channel = peers.channel(addr).map_err(|_| Forward::Retry)?;
    let mut client = ClusterClient::new(channel).max_decoding_message_size(256 << 20);
    let mut req = tonic::Request::new(msg(batch));
    req.set_timeout(WRITE_TIMEOUT);
    let answer = tokio::select! {
        a = client.propose(req) => a,
        () = &mut moved => return Err(Forward::Retry),
    };
    match answer {
        Ok(resp) => serde_json::from_slice(&resp.into_inner().json).map_err(|e| {
            Forward::Failed(WriteError::Unknown(format!("bad reply from leader: {e}")))
        }),
        // Refused before proposing, or lost in transit (the old leader died):
        // retrying is safe because the store applies each command ID once.
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
                    | tonic::Code::DeadlineExceeded
            ) =>
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err(Forward::Retry)
        }
        Err(s) => Err(Forward::Failed(WriteError::Unknown(
            s.message().to_string(),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_store::Writers;

    fn result(version: u64) -> CommandResult {
        CommandResult {
            results: vec![Ok(version)],
        }
    }

    /// The state machine answers the writers waiting here, each once, and
    /// the batch's in-flight slot frees with the last of them; the batch
    /// answers only those left.
    #[tokio::test]
    async fn the_state_machine_answers_waiting_writers_and_frees_their_slot() {
        let waiting = Waiting::default();
        assert!(!waiting.any());
        let (a, mut a_rx) = oneshot::channel();
        let (b, mut b_rx) = oneshot::channel();
        assert!(waiting.register(1, a).is_none());
        assert!(waiting.register(2, b).is_none());
        // Another writer under a taken ID keeps its own reply.
        let (c, _c_rx) = oneshot::channel();
        assert!(waiting.register(1, c).is_some());
        assert!(waiting.any());

        let slots = Arc::new(Semaphore::new(1));
        let slot = Arc::new(slots.clone().try_acquire_owned().unwrap());
        assert!(waiting.hold(&[1, 2], &slot));
        assert!(!waiting.hold(&[1, 3], &slot), "3 does not wait here");
        drop(slot);
        assert_eq!(slots.available_permits(), 0);

        waiting.answer(1, result(7));
        assert_eq!(a_rx.try_recv().unwrap().unwrap(), result(7));
        assert_eq!(slots.available_permits(), 0, "2 still holds the slot");
        // An unknown or already answered command: nothing happens.
        waiting.answer(1, result(8));
        waiting.answer(9, result(9));
        assert!(b_rx.try_recv().is_err());

        waiting.answer(2, result(10));
        assert_eq!(b_rx.try_recv().unwrap().unwrap(), result(10));
        assert_eq!(slots.available_permits(), 1);
        assert!(!waiting.any());
        assert!(waiting.take(1).is_none() && waiting.take(2).is_none());
    }
}
