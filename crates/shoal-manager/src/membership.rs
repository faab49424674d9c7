//! Raft membership reconciler (leader only): makes the Raft voter set follow
//! the manager nodes in the store. A new manager is added as a learner, made
//! a voter once it has caught up, and removed when it is demoted or removed.
//! One membership change at a time, as Raft requires.

use openraft::ChangeMembers;
use shoal_api::NodeRole;
use shoal_store::{Member, Raft, Shared};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How far behind (in entries) a learner may be and still be made a voter.
const CATCH_UP_SLACK: u64 = 64;

/// Runs until `token` is cancelled.
pub async fn run(raft: Raft, store: Arc<Shared>, token: CancellationToken) {
    let mut changes = store.subscribe();
    loop {
        if let Err(e) = reconcile_once(&raft, &store).await {
            tracing::debug!("membership reconcile: {e}");
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = changes.recv() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// Desired Raft members: manager nodes with a Raft id and an address.
pub fn desired_members(store: &Shared) -> BTreeMap<u64, Member> {
    store.view(|t| {
        t.nodes
            .iter()
            .filter(|n| n.spec.role == NodeRole::Manager && n.raft_id != 0)
            .filter_map(|n| {
                let addr = n.manager_status.as_ref()?.addr.clone();
                (!addr.is_empty()).then(|| {
                    (
                        n.raft_id,
                        Member {
                            addr,
                            node_id: n.id.clone(),
                        },
                    )
                })
            })
            .collect()
    })
}

async fn reconcile_once(raft: &Raft, store: &Shared) -> anyhow::Result<()> {
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(m.id) {
        return Ok(());
    }
    let membership = m.membership_config.membership().clone();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let all: BTreeSet<u64> = membership.nodes().map(|(id, _)| *id).collect();
    let desired = desired_members(store);
    if desired.is_empty() {
        // The store has no managers yet (bootstrapping): nothing to follow.
        return Ok(());
    }
    for (id, member) in &desired {
        if !all.contains(id) {
            tracing::info!(raft_id = id, node = %member.node_id, "adding manager as Raft learner");
            raft.add_learner(*id, member.clone(), false).await?;
            return Ok(());
        }
    }
    let last = m.last_log_index.unwrap_or(0);
    if let Some(repl) = &m.replication {
        for id in desired.keys() {
            if voters.contains(id) {
                continue;
            }
            let matched = repl
                .get(id)
                .cloned()
                .flatten()
                .map(|l| l.index)
                .unwrap_or(0);
            if matched + CATCH_UP_SLACK >= last {
                tracing::info!(raft_id = id, "manager caught up: making it a voter");
                raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), true)
                    .await?;
                return Ok(());
            }
        }
    }
    let stale_voters: BTreeSet<u64> = voters
        .iter()
        .filter(|v| !desired.contains_key(v))
        .copied()
        .collect();
    if !stale_voters.is_empty() && stale_voters.len() < voters.len() {
        tracing::info!(
            ?stale_voters,
            "removing demoted or removed managers from the Raft voters"
        );
        raft.change_membership(ChangeMembers::RemoveVoters(stale_voters), false)
            .await?;
        return Ok(());
    }
    let stale_learners: BTreeSet<u64> = all
        .iter()
        .filter(|v| !voters.contains(v) && !desired.contains_key(v))
        .copied()
        .collect();
    if !stale_learners.is_empty() {
        raft.change_membership(ChangeMembers::RemoveNodes(stale_learners), false)
            .await?;
    }
    Ok(())
}
