//! Orchestration (leader only): keeps actual state equal to desired state.
//!
//! One loop, driven by store changes and timers, runs passes. Each pass
//! reads a consistent view of the store and computes the changes needed:
//!
//! * [`slots`]: per service, the tasks each slot (replicated, replicated
//!   job) or node (global, global job) should have — creating tasks,
//!   scaling down (highest slots first), replacing tasks whose node is down,
//!   drained or no longer satisfies the constraints (at once), applying the
//!   restart policy to tasks that ended (after its delay, within its max
//!   attempts), and rolling updates ([`update`]).
//! * [`reaper`]: deletes old tasks beyond the cluster's task history limit
//!   and the tasks of removed services.
//! * [`scheduling`]: assigns unassigned tasks to nodes with the pure
//!   scheduler, or records why they stay pending.
//!
//! Passes are idempotent: a new leader continues from the store, so there
//! are no duplicate slots and no lost tasks after a leader change.

pub mod reaper;
pub mod scheduling;
pub mod slots;
pub mod update;

use crate::proposer::Proposer;
use shoal_store::{Command, Op, Shared};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// In-memory progress the leader keeps between passes (rebuilt after a
/// leader change from the store; losing it only delays an update batch).
#[derive(Default)]
pub struct Memory {
    /// Per service: progress of its rolling update.
    pub updates: HashMap<String, update::Track>,
}

/// Runs orchestration until `token` is cancelled.
pub async fn run(store: Arc<Shared>, proposer: Proposer, token: CancellationToken) {
    let mut changes = store.subscribe();
    let mut memory = Memory::default();
    // Ops written since the allocator last gave freed memory back.
    let mut churn = 0usize;
    loop {
        let now = SystemTime::now();
        let (ops, wake) = store.view(|t| {
            let mut ops = Vec::new();
            let wake = slots::reconcile_all(t, now, &mut memory, &mut ops);
            reaper::reap(t, &mut ops);
            (ops, wake)
        });
        let wrote = !ops.is_empty();
        churn += ops.len();
        if wrote {
            commit(&proposer, ops).await;
        }
        let assign = store.view(scheduling::assign);
        let assigned = !assign.is_empty();
        churn += assign.len();
        if assigned {
            commit(&proposer, assign).await;
        }
        if wrote || assigned {
            // Our own writes come back as changes; look again right away.
            drain(&mut changes);
            continue;
        }
        if churn >= TRIM_AFTER_OPS {
            churn = 0;
            release_freed_memory();
        }
        let sleep = wake
            .and_then(|w| w.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        tokio::select! {
            _ = token.cancelled() => return,
            _ = changes.recv() => {
                // Let a burst of changes settle into one pass.
                tokio::time::sleep(Duration::from_millis(5)).await;
                drain(&mut changes);
            }
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Written ops after which an idle orchestrator asks the allocator to
/// return freed memory to the system.
const TRIM_AFTER_OPS: usize = 10_000;

/// Large bursts (thousands of tasks created, copied for a write, applied)
/// leave freed pages scattered in glibc's heaps, which it keeps; give them
/// back once the burst is over.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn drain(rx: &mut tokio::sync::broadcast::Receiver<shoal_store::Change>) {
    while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) = rx.try_recv() {}
}

async fn commit(proposer: &Proposer, ops: Vec<Op>) {
    // Independent ops: one stale version (an agent's status report raced us)
    // must not block the others; the next pass retries it.
    for chunk in ops.chunks(500) {
        match proposer
            .propose(Command {
                ops: chunk.to_vec(),
                atomic: false,
                request: 0,
            })
            .await
        {
            Ok(r) => {
                let failed = r.results.iter().filter(|r| r.is_err()).count();
                if failed > 0 {
                    tracing::debug!(failed, "orchestrator ops refused (will retry)");
                }
            }
            Err(e) => {
                tracing::warn!("orchestrator could not write: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
