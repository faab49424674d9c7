//! Cached gRPC channels to other nodes, over mutual TLS.

use shoal_net::tls::connect_channel;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tonic::transport::Channel;

/// One lazily connected channel per peer address, reused by every caller.
pub struct Peers {
    tls: Arc<rustls::ClientConfig>,
    /// `tls` offering the Raft replication stream's ALPN instead of gRPC's.
    raft_tls: Arc<rustls::ClientConfig>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Peers {
    /// Peers reached with `tls` (our node certificate, verifying theirs).
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Arc<Peers> {
        Arc::new(Peers {
            raft_tls: shoal_net::tls::with_alpn(&tls, shoal_net::tls::ALPN_RAFT),
            tls,
            channels: Mutex::new(HashMap::new()),
        })
    }

    /// The TLS configuration of Raft replication streams.
    pub fn raft_tls(&self) -> Arc<rustls::ClientConfig> {
        self.raft_tls.clone()
    }

    /// The channel to `addr` (`host:port`); connects on first use.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::Status> {
        let mut map = self.channels.lock().expect("peers lock");
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = connect_channel(addr, self.tls.clone())
            .map_err(|e| tonic::Status::unavailable(format!("cannot reach {addr}: {e}")))?;
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}
