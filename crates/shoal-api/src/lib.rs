//! shoal's object model, serialized in the Docker Engine API's JSON shapes.
//!
//! Every cluster object (node, service, task, network, secret, config and the
//! cluster itself) is defined here once and used everywhere: in the Raft log,
//! in snapshots, on the control API and in the CLI. Field names follow the
//! Docker Engine API (`ID`, `Spec`, `Version.Index`, …) so the stock `docker`
//! CLI can read what shoal serves. Fields the Docker API does not have are
//! prefixed or documented as shoal extensions; unknown fields sent by a client
//! are kept (`extra`) so a read-modify-write round trip never loses them.

pub mod cluster;
pub mod id;
pub mod node;
pub mod objects;
pub mod service;
pub mod task;
pub mod time;

pub use cluster::*;
pub use id::*;
pub use node::*;
pub use objects::*;
pub use service::*;
pub use task::*;
pub use time::Timestamp;

use serde::{Deserialize, Serialize};

/// The optimistic-concurrency version of an object: the Raft log index of
/// its last change. An update carrying a stale index is refused.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    /// Raft log index of the last change.
    #[serde(rename = "Index", default)]
    pub index: u64,
}

/// Helper for `skip_serializing_if`.
pub fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Free-form labels, sorted for stable output.
pub type Labels = std::collections::BTreeMap<String, String>;
