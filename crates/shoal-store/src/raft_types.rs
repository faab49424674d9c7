//! openraft type configuration for shoal's replicated store.

use crate::command::{Batch, BatchResult};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A Raft member's metadata, replicated inside the membership config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node-to-node listener `host:port`.
    pub addr: String,
    /// The cluster node ID of this member.
    pub node_id: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.node_id, self.addr)
    }
}

openraft::declare_raft_types!(
    /// shoal's Raft types. The leader id is openraft's default
    /// (`leader_id_adv`: term + node id), whose log ids and votes serialize
    /// as openraft 0.9's did, so logs and snapshots written by older builds
    /// still read.
    pub TypeConfig:
        D = Batch,
        R = BatchResult,
        NodeId = u64,
        Node = Member,
        Term = u64,
        LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, u64>,
        Vote = openraft::impls::Vote<openraft::impls::leader_id_adv::LeaderId<u64, u64>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle type.
pub type Raft = openraft::Raft<TypeConfig, crate::StateMachine>;
/// A Raft log entry.
pub type Entry = openraft::Entry<CommittedLeaderId, Payload>;
/// An entry's payload.
pub type Payload = openraft::EntryPayload<Batch, u64, Member>;
/// The leader id recorded in log ids (with `leader_id_adv`, the leader id itself).
pub type CommittedLeaderId =
    <openraft::impls::leader_id_adv::LeaderId<u64, u64> as openraft::vote::RaftLeaderId>::Committed;
/// A log id.
pub type LogId = openraft::LogId<CommittedLeaderId>;
/// A vote.
pub type Vote = openraft::impls::Vote<openraft::impls::leader_id_adv::LeaderId<u64, u64>>;
/// Membership as stored.
pub type StoredMembership = openraft::StoredMembership<CommittedLeaderId, u64, Member>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<CommittedLeaderId, u64, Member>;
/// A snapshot with its data.
pub type Snapshot = openraft::Snapshot<CommittedLeaderId, u64, Member, std::io::Cursor<Vec<u8>>>;
/// Storage error.
pub type StorageError = openraft::StorageError<TypeConfig>;

/// The log id of entry `index` written by the leader `node` in `term`.
pub fn log_id(term: u64, node: u64, index: u64) -> LogId {
    LogId::new(
        CommittedLeaderId {
            term,
            node_id: node,
        },
        index,
    )
}
