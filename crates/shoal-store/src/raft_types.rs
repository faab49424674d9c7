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
    /// shoal's Raft types.
    pub TypeConfig:
        D = Batch,
        R = BatchResult,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

/// The Raft handle type.
pub type Raft = openraft::Raft<TypeConfig>;
/// A Raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<u64>;
/// A vote.
pub type Vote = openraft::Vote<u64>;
/// Membership as stored.
pub type StoredMembership = openraft::StoredMembership<u64, Member>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<u64, Member>;
/// Storage error.
pub type StorageError = openraft::StorageError<u64>;
