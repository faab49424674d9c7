//! The Raft stream ([`shoal_net::frame`]) between managers: AppendEntries
//! from the leader's replication sessions (one connection per session), and
//! writes forwarded by followers to the leader. Each connection carries one
//! request, then its answer, at a time; the server answers on the
//! connection's own task.
//!
//! The caller's certificate is checked at every request with the same rules
//! as the gRPC calls ([`Services::check_raft_peer`] for AppendEntries,
//! [`Services::check_manager_peer`] for writes), so a manager demoted or
//! removed while connected is refused from its next request on.

use crate::grpc::Services;
use crate::proposer::LeadWrite;
use openraft::raft::AppendEntriesRequest;
use shoal_net::frame;
use shoal_net::pki::NodeIdentity;
use shoal_net::tls::{TlsConn, TlsConnector, ALPN_RAFT};
use shoal_store::{Batch, TypeConfig};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

/// Serves every connection that comes in on `conns` until `stop`.
pub async fn serve(
    mut conns: mpsc::Receiver<TlsConn>,
    services: Services,
    stop: CancellationToken,
) {
    loop {
        let conn = tokio::select! {
            c = conns.recv() => match c {
                Some(c) => c,
                None => return,
            },
            _ = stop.cancelled() => return,
        };
        let services = services.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let peer = conn.peer_info().remote_addr;
            tokio::select! {
                r = connection(conn, &services) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "raft stream closed");
                    }
                }
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// A connection with no request for this long is closed. The leader's
/// replication sessions send heartbeats every 50 ms; an idle forwarding
/// client reconnects when it next needs to.
const IDLE: std::time::Duration = std::time::Duration::from_secs(60);
/// Largest request read from a caller that is not a manager (enough to be
/// told so): the body of a frame is allocated before it is read.
const STRANGER_FRAME: usize = 64 << 10;

/// Answers requests on `conn` until it closes; an error ends the connection.
async fn connection(mut conn: TlsConn, services: &Services) -> std::io::Result<()> {
    let identity = conn.peer_info().identity.clone();
    let mut body = Vec::new();
    loop {
        // Checked before each request: the caller's role may change.
        let peer = services.check_raft_peer(identity.as_ref());
        let max = match peer {
            Ok(_) => frame::MAX_FRAME,
            Err(_) => STRANGER_FRAME,
        };
        let next = frame::recv_at_most(conn.get_mut(), &mut body, max);
        let tag = match tokio::time::timeout(IDLE, next).await {
            Err(_) => return Ok(()),
            Ok(Ok(tag)) => tag,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
        };
        let (tag, answer) = match answer(services, identity.as_ref(), peer, tag, &body).await {
            Ok(json) => (frame::OK, json),
            Err((tag, why)) => (tag, why.into_bytes()),
        };
        let mut out = frame::start(tag, answer.len());
        out.extend_from_slice(&answer);
        frame::send(conn.get_mut(), &mut out).await?;
    }
}

/// The JSON answer to one request, or another answer's tag and message.
/// `peer` is the caller's verdict under the Raft RPC rule.
async fn answer(
    services: &Services,
    identity: Option<&NodeIdentity>,
    peer: Result<NodeIdentity, tonic::Status>,
    tag: u8,
    body: &[u8],
) -> Result<Vec<u8>, (u8, String)> {
    let refused = |s: tonic::Status| (frame::REFUSED, s.message().to_string());
    match tag {
        frame::APPEND_ENTRIES => {
            peer.map_err(refused)?;
            let rpc: AppendEntriesRequest<TypeConfig> =
                serde_json::from_slice(body).map_err(|e| {
                    (
                        frame::REFUSED,
                        format!("invalid AppendEntries request: {e}"),
                    )
                })?;
            let result = services.append_entries(rpc).await;
            Ok(serde_json::to_vec(&result).expect("serializable"))
        }
        frame::PROPOSE => {
            services.check_manager_peer(identity).map_err(refused)?;
            let batch: Batch = serde_json::from_slice(body)
                .map_err(|e| (frame::REFUSED, format!("invalid write batch: {e}")))?;
            match services.proposer.write_as_leader(batch).await {
                Ok(r) => Ok(serde_json::to_vec(&r).expect("serializable")),
                Err(e @ (LeadWrite::NoQuorum | LeadWrite::QuorumLost)) => {
                    Err((frame::REFUSED, e.message()))
                }
                Err(e) => Err((frame::RETRY, e.message())),
            }
        }
        frame::LEADER_SEEN => {
            peer.map_err(refused)?;
            Ok(serde_json::to_vec(&services.leader_seen()).expect("serializable"))
        }
        other => Err((frame::REFUSED, format!("unknown request type {other}"))),
    }
}

/// Why a request over the stream failed.
pub enum StreamError {
    /// The peer does not serve the stream (an older shoal).
    NotServed,
    /// No connection could be made.
    Unreachable(std::io::Error),
    /// The connection broke.
    Io(std::io::Error),
}

/// The client end of the stream to one manager; connects when needed.
pub struct StreamClient {
    addr: String,
    tls: Arc<rustls::ClientConfig>,
    stream: Option<TlsStream<TcpStream>>,
    reply: Vec<u8>,
}

impl StreamClient {
    /// A client for the manager at `addr`, over `tls` (which must offer
    /// [`ALPN_RAFT`]); nothing is dialled yet.
    pub fn new(addr: &str, tls: Arc<rustls::ClientConfig>) -> StreamClient {
        StreamClient {
            addr: addr.to_string(),
            tls,
            stream: None,
            reply: Vec::new(),
        }
    }

    /// The manager's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends the frame `req` (connecting first if need be) and reads the
    /// answer; returns its tag ([`StreamClient::reply`] has its body). A
    /// connection that was already open and fails is replaced once: the
    /// peer may have restarted since. So a request may arrive twice: both
    /// kinds are safe to repeat (AppendEntries by Raft's rules, writes by
    /// their request IDs).
    pub async fn call(&mut self, req: &mut [u8]) -> Result<u8, StreamError> {
        loop {
            let reused = self.stream.is_some();
            if self.stream.is_none() {
                self.stream = Some(connect(&self.addr, &self.tls).await?);
            }
            let s = self.stream.as_mut().expect("connected");
            let r = match frame::send(s, req).await {
                Ok(()) => frame::recv(s, &mut self.reply).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(tag) => return Ok(tag),
                Err(e) => {
                    self.stream = None;
                    if !reused {
                        return Err(StreamError::Io(e));
                    }
                }
            }
        }
    }

    /// The body of the last answer.
    pub fn reply(&self) -> &[u8] {
        &self.reply
    }

    /// Drops the connection (after a call was cut off, its state is unknown).
    pub fn reset(&mut self) {
        self.stream = None;
    }
}

/// Opens a Raft stream connection to `addr` (mutual TLS, the Raft stream's
/// ALPN).
pub async fn connect(
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<TlsStream<TcpStream>, StreamError> {
    let s = TlsConnector::new(tls.clone())
        .connect(addr)
        .await
        .map_err(|e| {
            if refused_alpn(&e) {
                StreamError::NotServed
            } else {
                StreamError::Unreachable(e)
            }
        })?;
    if s.get_ref().1.alpn_protocol() != Some(ALPN_RAFT) {
        return Err(StreamError::NotServed);
    }
    Ok(s)
}

/// Whether `e` is the server refusing every ALPN protocol we offered.
fn refused_alpn(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(
                r,
                rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)
            )
        })
}

/// Test helpers shared with other modules' tests.
#[cfg(test)]
pub(crate) mod testing {
    use shoal_net::pki::{Role, RootCa, DEFAULT_NODE_CERT_VALIDITY};
    use shoal_net::tls;
    use std::sync::Arc;

    /// A manager's client TLS configuration, and a listening server (address
    /// and task) of the same CA that shakes hands as an older shoal would:
    /// it offers gRPC's ALPN only.
    pub async fn older_shoal() -> (
        Arc<rustls::ClientConfig>,
        String,
        tokio::task::JoinHandle<()>,
    ) {
        let (cfg, listener, acceptor) = peer(tls::ALPN_H2).await;
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = acceptor.accept(tcp).await;
            }
        });
        (cfg, addr, server)
    }

    /// Like [`older_shoal`], for a peer that serves the Raft stream: it
    /// answers AppendEntries with `Success`, but only once `hold` requests
    /// have come without an answer (so only a client that sends before the
    /// previous answers came gets any), and it closes its first connection
    /// once the first request has come, without answering.
    pub async fn raft_peer(
        hold: usize,
    ) -> (
        Arc<rustls::ClientConfig>,
        String,
        tokio::task::JoinHandle<()>,
    ) {
        use openraft::error::RaftError;
        use openraft::raft::AppendEntriesResponse;
        use shoal_net::frame;
        let (cfg, listener, acceptor) = peer(tls::ALPN_RAFT).await;
        let addr = listener.local_addr().unwrap().to_string();
        let ok: Result<AppendEntriesResponse<u64>, RaftError<u64>> =
            Ok(AppendEntriesResponse::Success);
        let ok = serde_json::to_vec(&ok).unwrap();
        let server = tokio::spawn(async move {
            let mut first = true;
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut conn) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut body = Vec::new();
                let mut unanswered = 0;
                while frame::recv(&mut conn, &mut body).await.is_ok() {
                    if std::mem::take(&mut first) {
                        break;
                    }
                    unanswered += 1;
                    if unanswered < hold {
                        continue;
                    }
                    for _ in 0..std::mem::take(&mut unanswered) {
                        let mut out = frame::start(frame::OK, ok.len());
                        out.extend_from_slice(&ok);
                        frame::send(&mut conn, &mut out).await.unwrap();
                    }
                }
            }
        });
        (cfg, addr, server)
    }

    /// A manager's client TLS configuration, and a listener with the TLS
    /// acceptor of a peer of the same CA offering `alpn`.
    async fn peer(
        alpn: &[u8],
    ) -> (
        Arc<rustls::ClientConfig>,
        tokio::net::TcpListener,
        tokio_rustls::TlsAcceptor,
    ) {
        let ca = RootCa::generate().unwrap();
        let m = ca
            .issue_node_cert(
                "m1",
                Role::Manager,
                "c1",
                DEFAULT_NODE_CERT_VALIDITY,
                &["127.0.0.1".into()],
            )
            .unwrap();
        let mut server =
            (*tls::server_config(&ca.cert_pem, &m.cert_pem, &m.key_pem).unwrap()).clone();
        server.alpn_protocols = vec![alpn.to_vec()];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let cfg = tls::client_config(&ca.cert_pem, Some((&m.cert_pem, &m.key_pem))).unwrap();
        (cfg, listener, acceptor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_net::tls;

    /// An older shoal offers only `h2`: the client tells that apart from a
    /// peer that is down, so the caller can fall back to gRPC.
    #[tokio::test]
    async fn a_peer_without_the_stream_is_told_from_one_that_is_down() {
        let (cfg, addr, server) = testing::older_shoal().await;
        let cfg = tls::with_alpn(&cfg, ALPN_RAFT);
        let mut req = frame::start(frame::APPEND_ENTRIES, 2);
        req.extend_from_slice(b"{}");

        let mut client = StreamClient::new(&addr, cfg.clone());
        assert!(matches!(
            client.call(&mut req).await,
            Err(StreamError::NotServed)
        ));
        server.abort();
        let _ = server.await;
        // Nobody listens there any more.
        let mut client = StreamClient::new(&addr, cfg);
        assert!(matches!(
            client.call(&mut req).await,
            Err(StreamError::Unreachable(_))
        ));
    }
}
