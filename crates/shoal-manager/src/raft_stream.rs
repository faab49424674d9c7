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
use openraft::error::{ClientWriteError, RaftError};
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
            let result = services.raft.append_entries(rpc).await;
            Ok(serde_json::to_vec(&result).expect("serializable"))
        }
        frame::PROPOSE => {
            services.check_manager_peer(identity).map_err(refused)?;
            let batch: Batch = serde_json::from_slice(body)
                .map_err(|e| (frame::REFUSED, format!("invalid write batch: {e}")))?;
            match services.raft.client_write(batch).await {
                Ok(resp) => Ok(serde_json::to_vec(&resp.data).expect("serializable")),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    Err((frame::RETRY, "not the leader".into()))
                }
                Err(e) => Err((frame::RETRY, e.to_string())),
            }
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
        self.exchange(req, false).await
    }

    /// Writes the frame `req` on the open connection now, without waiting
    /// for the socket: what it does not take at once stays with TLS for
    /// [`StreamClient::call_sent`] to flush. Called where waiting is not
    /// allowed (the leader's log append hands its entries over here, and
    /// the first follower has them a task hand-off sooner). `false` when
    /// nothing was sent: no connection is open, earlier bytes are still
    /// pending, the frame is over [`SEND_NOW_MAX`], or the write failed
    /// (the connection is then dropped); use [`StreamClient::call`].
    pub fn send_now(&mut self, req: &mut [u8]) -> bool {
        use std::io::Write;
        let Some(s) = self.stream.as_mut() else {
            return false;
        };
        if req.len() > SEND_NOW_MAX || frame::finish(req).is_err() {
            return false;
        }
        let (tcp, tls) = s.get_mut();
        if tls.wants_write() {
            return false;
        }
        // Whole: the frame is far under rustls's outgoing buffer limit.
        if tls.writer().write_all(req).is_err() {
            self.stream = None;
            return false;
        }
        while tls.wants_write() {
            match tls.write_tls(&mut TryWrite(tcp)) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // Part of the frame may be out: the stream is unusable.
                    self.stream = None;
                    return false;
                }
            }
        }
        true
    }

    /// Finishes the call whose frame [`StreamClient::send_now`] wrote:
    /// flushes what is left of it and reads the answer, as [`call`] would
    /// (if the connection breaks, `req` goes again once on a new one).
    ///
    /// [`call`]: StreamClient::call
    pub async fn call_sent(&mut self, req: &mut [u8]) -> Result<u8, StreamError> {
        self.exchange(req, true).await
    }

    async fn exchange(&mut self, req: &mut [u8], mut sent: bool) -> Result<u8, StreamError> {
        use tokio::io::AsyncWriteExt;
        loop {
            let reused = self.stream.is_some();
            if self.stream.is_none() {
                sent = false;
                let s = TlsConnector::new(self.tls.clone())
                    .connect(&self.addr)
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
                self.stream = Some(s);
            }
            let s = self.stream.as_mut().expect("connected");
            let r = match if sent {
                s.flush().await
            } else {
                frame::send(s, req).await
            } {
                Ok(()) => frame::recv(s, &mut self.reply).await,
                Err(e) => Err(e),
            };
            sent = false;
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

/// Largest frame [`StreamClient::send_now`] writes (bigger appends come with
/// heavy write loads, when the runtime has other work than waiting).
pub const SEND_NOW_MAX: usize = 16 << 10;

/// A TCP stream as a non-blocking [`std::io::Write`]: takes what the socket
/// takes now, `WouldBlock` otherwise.
struct TryWrite<'a>(&'a TcpStream);

impl std::io::Write for TryWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

    /// A manager's client TLS configuration (no ALPN yet) and a server
    /// configuration of the same CA.
    fn configs() -> (Arc<rustls::ClientConfig>, rustls::ServerConfig) {
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
        let server = (*tls::server_config(&ca.cert_pem, &m.cert_pem, &m.key_pem).unwrap()).clone();
        let cfg = tls::client_config(&ca.cert_pem, Some((&m.cert_pem, &m.key_pem))).unwrap();
        (cfg, server)
    }

    /// A manager's client TLS configuration, and a listening server (address
    /// and task) of the same CA that shakes hands as an older shoal would:
    /// it offers gRPC's ALPN only.
    pub async fn older_shoal() -> (
        Arc<rustls::ClientConfig>,
        String,
        tokio::task::JoinHandle<()>,
    ) {
        let (cfg, mut old) = configs();
        old.alpn_protocols = vec![tls::ALPN_H2.to_vec()];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(old));
        let server = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = acceptor.accept(tcp).await;
            }
        });
        (cfg, addr, server)
    }

    /// A client configuration offering the stream, and a server of the
    /// stream's ALPN that answers every frame with `OK` and the frame's own
    /// body, and closes each connection after `per_conn` frames; with the
    /// number of connections it took.
    pub async fn echo_stream(
        per_conn: usize,
    ) -> (
        Arc<rustls::ClientConfig>,
        String,
        Arc<std::sync::atomic::AtomicUsize>,
        tokio::task::JoinHandle<()>,
    ) {
        let (cfg, mut server) = configs();
        server.alpn_protocols = vec![tls::ALPN_RAFT.to_vec()];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = conns.clone();
        let server = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut body = Vec::new();
                    for _ in 0..per_conn {
                        if shoal_net::frame::recv(&mut s, &mut body).await.is_err() {
                            return;
                        }
                        let mut out = shoal_net::frame::start(shoal_net::frame::OK, body.len());
                        out.extend_from_slice(&body);
                        if shoal_net::frame::send(&mut s, &mut out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (tls::with_alpn(&cfg, tls::ALPN_RAFT), addr, conns, server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_net::tls;

    fn request(body: &[u8]) -> Vec<u8> {
        let mut req = frame::start(frame::APPEND_ENTRIES, body.len());
        req.extend_from_slice(body);
        req
    }

    /// A frame written by `send_now` is answered like one sent by `call`;
    /// without an open connection, or too big, it is not written; and a
    /// connection that broke meanwhile is replaced and the frame sent again.
    #[tokio::test]
    async fn a_frame_written_now_gets_its_answer_or_goes_again() {
        use std::sync::atomic::Ordering;
        let (cfg, addr, conns, server) = testing::echo_stream(usize::MAX).await;
        let mut client = StreamClient::new(&addr, cfg.clone());
        let mut first = request(b"first");
        // Nothing to write on: no connection yet.
        assert!(!client.send_now(&mut first));
        assert_eq!(client.call(&mut first).await.ok(), Some(frame::OK));
        assert_eq!(client.reply(), b"first");
        for i in 0..20 {
            let body = format!("now {i}");
            let mut req = request(body.as_bytes());
            assert!(client.send_now(&mut req));
            assert_eq!(client.call_sent(&mut req).await.ok(), Some(frame::OK));
            assert_eq!(client.reply(), body.as_bytes());
        }
        // Too big to write from a task that must not wait.
        let big_body = vec![b'x'; SEND_NOW_MAX];
        let mut big = request(&big_body);
        assert!(!client.send_now(&mut big));
        assert_eq!(client.call(&mut big).await.ok(), Some(frame::OK));
        assert_eq!(client.reply(), &big_body[..]);
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        server.abort();

        // The server hangs up after each answer.
        let (cfg, addr, conns, server) = testing::echo_stream(1).await;
        let mut client = StreamClient::new(&addr, cfg);
        assert_eq!(client.call(&mut request(b"a")).await.ok(), Some(frame::OK));
        for (i, body) in [&b"b"[..], b"c", b"d"].into_iter().enumerate() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let mut req = request(body);
            // The write may go out on the closed connection or fail at once:
            // either way the frame is answered, over a new connection.
            let now = client.send_now(&mut req);
            let tag = if now {
                client.call_sent(&mut req).await
            } else {
                client.call(&mut req).await
            };
            assert_eq!(tag.ok(), Some(frame::OK));
            assert_eq!(client.reply(), body);
            assert_eq!(conns.load(Ordering::SeqCst), i + 2);
        }
        server.abort();
    }

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
