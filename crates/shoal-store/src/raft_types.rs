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

#[cfg(test)]
mod tests {
    use super::*;

    /// What openraft 0.9.25 wrote (`serde_json`) for the same values: logs,
    /// votes and snapshots written by older builds must still read, and
    /// what is written now must read the same way.
    #[test]
    fn json_shapes_match_openraft_0_9() {
        fn same<T: serde::Serialize + serde::de::DeserializeOwned>(json: &str) {
            let v: T = serde_json::from_str(json).unwrap();
            assert_eq!(serde_json::to_string(&v).unwrap(), json);
        }
        let id = r#"{"leader_id":{"term":3,"node_id":7},"index":42}"#;
        same::<LogId>(id);
        assert_eq!(serde_json::to_string(&log_id(3, 7, 42)).unwrap(), id);
        same::<Option<LogId>>("null");
        same::<Vote>(r#"{"leader_id":{"term":5,"node_id":2},"committed":false}"#);
        same::<Vote>(r#"{"leader_id":{"term":5,"node_id":2},"committed":true}"#);
        assert_eq!(
            serde_json::to_string(&Vote::new_committed(5, 2)).unwrap(),
            r#"{"leader_id":{"term":5,"node_id":2},"committed":true}"#
        );
        same::<Entry>(&format!(r#"{{"log_id":{id},"payload":"Blank"}}"#));
        same::<Entry>(&format!(r#"{{"log_id":{id},"payload":{{"Normal":[]}}}}"#));
        let membership = r#"{"configs":[[1,2],[2,3]],"nodes":{"1":{"addr":"a:1","node_id":"n1"},"2":{"addr":"b:2","node_id":"n2"},"3":{"addr":"c:3","node_id":"n3"}}}"#;
        same::<Entry>(&format!(
            r#"{{"log_id":{id},"payload":{{"Membership":{membership}}}}}"#
        ));
        // 0.10 dropped the snapshot id; it reads 0.9's and writes it empty.
        let meta = format!(
            r#"{{"last_log_id":{id},"last_membership":{{"log_id":{id},"membership":{membership}}},"snapshot_id":"3-42-1"}}"#
        );
        let m: SnapshotMeta = serde_json::from_str(&meta).unwrap();
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            meta.replace("3-42-1", "")
        );
        assert_eq!(m.last_membership.membership().voter_ids().count(), 3);
    }
}
