//! Server side: a stream of TLS connections for tonic's `serve_with_incoming`,
//! each carrying the peer's verified identity.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::Stream;

use crate::pki::{parse_node_cert, NodeIdentity};

/// Longest time a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handshaken but not yet taken by the server.
const READY_QUEUE: usize = 64;

/// Who is on the other end of a connection. tonic puts it in every request's
/// extensions: `request.extensions().get::<PeerInfo>()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's TCP address.
    pub remote_addr: SocketAddr,
    /// The identity in the peer's client certificate, verified to chain to our
    /// root CA during the handshake; None when the peer sent no certificate
    /// (a node that has not joined yet).
    pub identity: Option<NodeIdentity>,
}

/// One accepted, handshaken TLS connection.
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn").field("peer", &self.info).finish()
    }
}

impl TlsConn {
    fn new(stream: TlsStream<TcpStream>, remote_addr: SocketAddr) -> TlsConn {
        let (_, conn) = stream.get_ref();
        let identity = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| match parse_node_cert(leaf.as_ref()) {
                Ok(id) => Some(id),
                Err(e) => {
                    tracing::debug!(%remote_addr, error = %e, "client certificate carries no node identity");
                    None
                }
            });
        TlsConn {
            stream,
            info: PeerInfo {
                remote_addr,
                identity,
            },
        }
    }

    /// The peer's address and identity.
    pub fn peer_info(&self) -> &PeerInfo {
        &self.info
    }

    /// The underlying TLS stream.
    pub fn get_ref(&self) -> &TlsStream<TcpStream> {
        &self.stream
    }

    /// The underlying TLS stream, to read and write.
    pub fn get_mut(&mut self) -> &mut TlsStream<TcpStream> {
        &mut self.stream
    }

    /// The ALPN protocol the handshake agreed on, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.stream.get_ref().1.alpn_protocol()
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts TCP connections and performs the TLS handshake of each in its own
/// task (a slow client cannot hold up others); yields the connections whose
/// handshake succeeded. Failed handshakes are dropped with a debug log.
///
/// ```text
/// tonic::transport::Server::builder()
///     .add_service(svc)
///     .serve_with_incoming(TlsIncoming::new(listener, server_config))
///     .await?;
/// // in a handler: request.extensions().get::<PeerInfo>()
/// ```
///
/// Dropping it (e.g. when the server future ends) closes the listener and
/// abandons handshakes in progress.
pub struct TlsIncoming {
    ready: mpsc::Receiver<io::Result<TlsConn>>,
    accept_task: JoinHandle<()>,
    local_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for TlsIncoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIncoming")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl TlsIncoming {
    /// Starts accepting on `listener`. Must be called within a tokio runtime.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> TlsIncoming {
        TlsIncoming::start(listener, config, None)
    }

    /// Like [`TlsIncoming::new`], but connections that negotiated the ALPN
    /// protocol `alpn` go to `side` instead of this stream (for a protocol
    /// served beside gRPC on the same port). Such a connection is dropped
    /// when `side` is full or closed.
    pub fn with_side_door(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        alpn: &'static [u8],
        side: mpsc::Sender<TlsConn>,
    ) -> TlsIncoming {
        TlsIncoming::start(listener, config, Some(SideDoor { alpn, side }))
    }

    fn start(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        side: Option<SideDoor>,
    ) -> TlsIncoming {
        let local_addr = listener.local_addr().ok();
        let (tx, rx) = mpsc::channel(READY_QUEUE);
        let accept_task = tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(config),
            tx,
            side.map(Arc::new),
        ));
        TlsIncoming {
            ready: rx,
            accept_task,
            local_addr,
        }
    }

    /// The address being listened on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl Stream for TlsIncoming {
    type Item = io::Result<TlsConn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.ready.poll_recv(cx)
    }
}

/// Where connections of another ALPN protocol go.
struct SideDoor {
    alpn: &'static [u8],
    side: mpsc::Sender<TlsConn>,
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<io::Result<TlsConn>>,
    side: Option<Arc<SideDoor>>,
) {
    // Handshakes in flight; dropped (and so aborted) with this task.
    let mut handshakes: JoinSet<()> = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote_addr)) => {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(%remote_addr, error = %e, "cannot set TCP_NODELAY");
                    }
                    let acceptor = acceptor.clone();
                    let ready = ready.clone();
                    let side = side.clone();
                    handshakes.spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let conn = TlsConn::new(stream, remote_addr);
                                match side {
                                    Some(door) if conn.alpn() == Some(door.alpn) => {
                                        if door.side.try_send(conn).is_err() {
                                            tracing::debug!(%remote_addr, "side-door connection dropped: not taken");
                                        }
                                    }
                                    // The receiver is gone only when the server stopped.
                                    _ => {
                                        let _ = ready.send(Ok(conn)).await;
                                    }
                                }
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%remote_addr, error = %e, "TLS handshake failed");
                            }
                            Err(_) => {
                                tracing::debug!(%remote_addr, "TLS handshake timed out");
                            }
                        }
                    });
                }
                Err(e) => {
                    if ready.is_closed() {
                        return;
                    }
                    match e.kind() {
                        io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock => {
                            tracing::debug!(error = %e, "accept failed");
                        }
                        _ => {
                            // e.g. out of file descriptors: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed; retrying shortly");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            },
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            _ = ready.closed() => return,
        }
    }
}
