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
pub use state_machine::{Applied, Change, Shared, SnapshotFile, StateMachine};
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
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(every),
        max_in_snapshot_log_to_keep: (every / 5).min(1000),
        ..Default::default()
    };
    Ok(config.validate()?)
}
