//! The write path: every change to the cluster state goes through here.
//!
//! Concurrent writers are batched into one Raft entry (one fsync, one
//! replication round for many writes). On a follower the batch is forwarded
//! to the leader over gRPC; during an election it waits for a leader. A batch
//! whose outcome is unknown (connection lost after sending) is reported as
//! such, never silently retried.

use crate::peers::Peers;
use openraft::error::{ClientWriteError, RaftError};
use shoal_net::rpc::msg;
use shoal_net::rpc::pb::cluster_client::ClusterClient;
use shoal_store::{Batch, BatchResult, Command, CommandResult, Raft};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// How long a write waits for a leader before giving up.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// Most commands in one Raft entry.
const MAX_BATCH: usize = 1024;
/// Raft entries in flight at once from this manager.
const IN_FLIGHT: usize = 2;

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

struct Pending {
    cmd: Command,
    reply: oneshot::Sender<Result<CommandResult, WriteError>>,
}

/// Submits commands; cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

impl Proposer {
    /// Starts the batching loop for `raft` (this manager's Raft instance).
    pub fn start(raft: Raft, peers: Arc<Peers>) -> Proposer {
        let (tx, mut rx) = mpsc::channel::<Pending>(65536);
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(IN_FLIGHT));
            while let Some(first) = rx.recv().await {
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore open");
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let raft = raft.clone();
                let peers = peers.clone();
                tokio::spawn(async move {
                    let (cmds, replies): (Vec<_>, Vec<_>) =
                        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
                    match submit(&raft, &peers, Batch(cmds)).await {
                        Ok(BatchResult(results)) => {
                            for (reply, r) in replies.into_iter().zip(results) {
                                let _ = reply.send(Ok(r));
                            }
                        }
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                    drop(permit);
                });
            }
        });
        Proposer { tx }
    }

    /// Commits `cmd` and returns its result.
    pub async fn propose(&self, mut cmd: Command) -> Result<CommandResult, WriteError> {
        if cmd.request == 0 {
            // Lets the store apply it once even if a retry sends it twice.
            cmd.request = rand::random::<u64>().max(1);
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { cmd, reply })
            .await
            .map_err(|_| WriteError::Raft("the manager is shutting down".into()))?;
        rx.await
            .map_err(|_| WriteError::Raft("the manager is shutting down".into()))?
    }
}

/// Proposes `batch` on the leader, wherever it is.
async fn submit(raft: &Raft, peers: &Peers, batch: Batch) -> Result<BatchResult, WriteError> {
    let deadline = Instant::now() + WRITE_TIMEOUT;
    let mut metrics = raft.metrics();
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
            Some(l) if l == me => match raft.client_write(batch.clone()).await {
                Ok(resp) => return Ok(resp.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {}
                Err(e) => return Err(WriteError::Raft(e.to_string())),
            },
            Some(_) => {
                if let Some(addr) = leader_addr {
                    match forward(peers, &addr, &batch).await {
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

async fn forward(peers: &Peers, addr: &str, batch: &Batch) -> Result<BatchResult, Forward> {
    let channel = peers.channel(addr).map_err(|_| Forward::Retry)?;
    let mut client = ClusterClient::new(channel).max_decoding_message_size(256 << 20);
    let mut req = tonic::Request::new(msg(batch));
    req.set_timeout(WRITE_TIMEOUT);
    match client.propose(req).await {
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
