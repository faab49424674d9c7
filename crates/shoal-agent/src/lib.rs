//! shoal-agent: the node agent (dispatcher session, task controllers) and
//! the executors that run tasks on this node.

pub mod convert;
pub mod docker;
pub mod node_service;
pub mod process;
pub mod session;
pub mod worker;
