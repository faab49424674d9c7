//! shoal's replicated cluster state.
//!
//! Managers keep the cluster's objects in in-memory [`Tables`], changed only
//! by [`Command`]s committed through Raft (openraft 0.9) and applied in log
//! order on every manager. The Raft log and vote live in a write-ahead log
//! (`wal/`), snapshots in `snapshot.bin`, both sealed with the node's data
//! key; on start the tables are rebuilt from the snapshot plus the log. Components of the leader follow
//! the [`Change`] stream. This crate knows nothing of what services or tasks
//! mean: it stores objects, checks versions and unique names, and reports
//! changes.

// openraft's `StorageError` is large and is what its traits return; objects
// are moved by value on purpose (they are boxed nowhere else either).
#![allow(clippy::result_large_err, clippy::large_enum_variant)]

pub mod command;
pub mod crypt;
mod encoded;
mod legacy;
pub mod log_store;
pub mod raft_types;
pub mod state_machine;
pub mod tables;

pub use command::*;
pub use crypt::{KeyId, StoreKey};
pub use encoded::EncodedEntries;
pub use log_store::{LeaderAppend, LeaderAppends, LogStore};
pub use raft_types::*;
pub use state_machine::{Applied, Change, Shared, SnapshotFile, StateMachine, Writers};
pub use tables::{Event, Table, Tables};

use std::path::Path;

/// Nanoseconds since the Unix epoch.
pub(crate) fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Opens the durable parts of the store under `dir` (`wal/`,
/// `snapshot.bin`), sealed with the data keys `keys` (the first seals what
/// is written from now on; the others may open older files).
pub fn open(dir: &Path, keys: &[StoreKey]) -> anyhow::Result<(LogStore, StateMachine)> {
    std::fs::create_dir_all(dir)?;
    let log = LogStore::open(dir, keys)?;
    let sm = StateMachine::open(dir, keys)?;
    Ok((log, sm))
}

/// Log entries between snapshots (`SHOAL_SNAPSHOT_LOGS` overrides it, e.g.
/// to exercise compaction and snapshot catch-up in tests).
pub fn snapshot_every() -> u64 {
    std::env::var("SHOAL_SNAPSHOT_LOGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(5000)
}

/// Most log entries between snapshots, however big the state (a restarted
/// manager replays the log since its snapshot; etcd's default is the same).
pub const MAX_LOGS_BETWEEN_SNAPSHOTS: u64 = 100_000;

/// Whether a manager builds a snapshot now, `since` entries after its last
/// one, whose data took `snapshot_bytes`, while log entries average
/// `entry_bytes`: at least `every` ([`snapshot_every`]) entries apart, and
/// beyond that once the log since holds about as many bytes as the snapshot
/// (or after [`MAX_LOGS_BETWEEN_SNAPSHOTS`]). A snapshot encodes, seals,
/// writes and syncs the whole state, so with a fixed interval its cost per
/// write grows with the state (200,000 configs: ≈ 80 MB every 5,000 writes,
/// on every manager); this way a write pays for snapshots about what it
/// pays for its own log record, whatever the state's size.
pub fn snapshot_due(since: u64, every: u64, snapshot_bytes: u64, entry_bytes: u64) -> bool {
    since >= every
        && (since >= MAX_LOGS_BETWEEN_SNAPSHOTS.max(every)
            || since.saturating_mul(entry_bytes.max(1)) >= snapshot_bytes)
}

/// openraft settings tuned for sub-second failover on a LAN (see ARCHITECTURE.md).
pub fn raft_config(cluster_name: &str) -> anyhow::Result<openraft::Config> {
    let every = snapshot_every();
    let config = openraft::Config {
        cluster_name: cluster_name.to_string(),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        install_snapshot_timeout: 5000,
        max_payload_entries: 256,
        // Snapshots are triggered by the manager, by `snapshot_due`.
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: (every / 5).min(1000),
        ..Default::default()
    };
    Ok(config.validate()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Snapshots come every `every` entries while the state is small next
    /// to the log, later as it grows, and never more than the cap apart.
    #[test]
    fn snapshots_are_due_by_entries_and_by_the_state_s_size() {
        // No snapshot yet, or a small one: the entry count decides.
        assert!(!snapshot_due(4_999, 5_000, 0, 500));
        assert!(snapshot_due(5_000, 5_000, 0, 500));
        assert!(snapshot_due(5_000, 5_000, 100_000, 500));
        // An 80 MB state and 400-byte entries: 200,000 entries' worth,
        // capped at the most entries between snapshots.
        let big = 80 << 20;
        assert!(!snapshot_due(5_000, 5_000, big, 400));
        assert!(!snapshot_due(99_999, 5_000, big, 400));
        assert!(snapshot_due(MAX_LOGS_BETWEEN_SNAPSHOTS, 5_000, big, 400));
        // A 4 MB state: once the log since holds as many bytes.
        let mid = 4 << 20;
        assert!(!snapshot_due(10_000, 5_000, mid, 400));
        assert!(snapshot_due(mid / 400 + 1, 5_000, mid, 400));
        // The minimum still holds with a tiny state or unknown entry sizes.
        assert!(!snapshot_due(19, 20, 10, 0));
        assert!(snapshot_due(20, 20, 10, 0));
        // A minimum above the cap wins.
        assert!(!snapshot_due(150_000, 200_000, big, 400));
    }
}
