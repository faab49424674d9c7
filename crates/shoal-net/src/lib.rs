//! shoal-net: how shoal nodes trust and reach each other.
//!
//! * [`pki`]: the cluster's root CA, node key pairs and CSRs, node
//!   certificates (CN node ID, OU role, O cluster ID) and their renewal timing.
//! * [`token`]: Docker Swarm-shaped join tokens `SWMTKN-1-<CA digest>-<secret>`.
//! * [`tls`]: rustls configurations for mutual TLS between nodes (chain to our
//!   root, no host-name check), certificate rotation without restarts, the
//!   server-side connection stream for tonic (with each peer's identity) and
//!   the client-side channel.

pub mod frame;
pub mod lock;
pub mod pki;
pub mod rpc;
pub mod tls;
pub mod token;
