//! What a manager runs: the control API, the Raft network and gRPC services,
//! the write path, the dispatcher, the CA and the leader-only components.

pub mod api;
pub mod ca;
pub mod dispatcher;
pub mod early;
pub mod grpc;
pub mod manager;
pub mod membership;
pub mod orchestrator;
pub mod peers;
pub mod proposer;
pub mod raft_net;
pub mod raft_stream;
pub mod writes;

pub use manager::{Bootstrap, Manager, ManagerConfig};
