//! Cached gRPC channels to other nodes, and Raft stream clients to other
//! managers, over mutual TLS.

use crate::raft_stream::StreamClient;
use shoal_net::tls::TlsConnector;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Idle stream clients kept for forwarding writes.
const IDLE_STREAMS: usize = 4;
/// A call in flight on a channel sends an HTTP/2 PING after this long
/// without traffic...
const PING_AFTER: Duration = Duration::from_secs(5);
/// ...and the connection is dropped (its calls fail) if the answer takes
/// longer: a peer frozen or cut off by the network keeps its TCP
/// connection open and silent, and a long call (`service logs -f`) on it
/// would wait forever.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a manager that does not serve the Raft stream is not asked again.
pub const NOT_SERVED_FOR: Duration = Duration::from_secs(60);

/// One lazily connected channel per peer address, reused by every caller.
pub struct Peers {
    tls: Arc<rustls::ClientConfig>,
    /// `tls` offering the Raft replication stream's ALPN instead of gRPC's.
    raft_tls: Arc<rustls::ClientConfig>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Idle stream clients (with their connections), for forwarded writes.
    idle_streams: Mutex<Vec<StreamClient>>,
    /// Managers that do not serve the stream, until when not to ask again.
    not_served: Mutex<HashMap<String, Instant>>,
}

impl Peers {
    /// Peers reached with `tls` (our node certificate, verifying theirs).
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Arc<Peers> {
        Arc::new(Peers {
            raft_tls: shoal_net::tls::with_alpn(&tls, shoal_net::tls::ALPN_RAFT),
            tls,
            channels: Mutex::new(HashMap::new()),
            idle_streams: Mutex::new(Vec::new()),
            not_served: Mutex::new(HashMap::new()),
        })
    }

    /// The TLS configuration of Raft replication streams.
    pub fn raft_tls(&self) -> Arc<rustls::ClientConfig> {
        self.raft_tls.clone()
    }

    /// A stream client to the manager at `addr`: an idle one if there is
    /// one, else a new one. Give it back with [`Peers::put_stream`].
    pub fn take_stream(&self, addr: &str) -> StreamClient {
        let mut idle = self.idle_streams.lock().expect("peers lock");
        match idle.iter().position(|c| c.addr() == addr) {
            Some(i) => idle.swap_remove(i),
            None => StreamClient::new(addr, self.raft_tls()),
        }
    }

    /// Keeps `client` for the next [`Peers::take_stream`].
    pub fn put_stream(&self, client: StreamClient) {
        let mut idle = self.idle_streams.lock().expect("peers lock");
        idle.push(client);
        if idle.len() > IDLE_STREAMS {
            idle.remove(0);
        }
    }

    /// Whether the manager at `addr` may serve the Raft stream (it was not
    /// found not to in the last [`NOT_SERVED_FOR`]).
    pub fn serves_stream(&self, addr: &str) -> bool {
        let mut map = self.not_served.lock().expect("peers lock");
        match map.get(addr) {
            Some(until) if Instant::now() < *until => false,
            Some(_) => {
                map.remove(addr);
                true
            }
            None => true,
        }
    }

    /// Records that the manager at `addr` does not serve the Raft stream.
    pub fn stream_not_served(&self, addr: &str) {
        tracing::info!(%addr, "manager does not serve the Raft stream; using gRPC");
        self.not_served
            .lock()
            .expect("peers lock")
            .insert(addr.to_string(), Instant::now() + NOT_SERVED_FOR);
    }

    /// The channel to `addr` (`host:port`); connects on first use.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::Status> {
        let mut map = self.channels.lock().expect("peers lock");
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = shoal_net::tls::endpoint(addr)
            .map_err(|e| tonic::Status::unavailable(format!("cannot reach {addr}: {e}")))?
            .http2_keep_alive_interval(PING_AFTER)
            .keep_alive_timeout(PING_TIMEOUT)
            .keep_alive_while_idle(false)
            .connect_with_connector_lazy(TlsConnector::new(self.tls.clone()));
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}
