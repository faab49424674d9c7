//! Client side: a tonic channel over our TLS configuration.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint};

use super::TlsError;

/// Time allowed for TCP connect plus TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The server name put in the ClientHello. Our verifiers do not check it:
/// nodes are addressed by IP:port and identified by their certificates.
pub const SERVER_NAME: &str = "shoal-manager";

/// A `tower::Service<Uri>` that dials `host:port` from the URI over TCP
/// (TCP_NODELAY set) and performs the TLS handshake with its configuration.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    timeout: Duration,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// A connector with [`CONNECT_TIMEOUT`].
    pub fn new(config: Arc<ClientConfig>) -> TlsConnector {
        TlsConnector {
            config,
            timeout: CONNECT_TIMEOUT,
        }
    }

    /// Sets the time allowed for TCP connect plus TLS handshake.
    pub fn with_timeout(mut self, timeout: Duration) -> TlsConnector {
        self.timeout = timeout;
        self
    }

    /// Dials `host:port` and completes the TLS handshake.
    pub async fn connect(&self, host_port: &str) -> io::Result<TlsStream<TcpStream>> {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let name = ServerName::try_from(SERVER_NAME).expect("SERVER_NAME is a valid DNS name");
        let dial = async {
            let tcp = TcpStream::connect(host_port).await?;
            tcp.set_nodelay(true)?;
            connector.connect(name, tcp).await
        };
        match tokio::time::timeout(self.timeout, dial).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connecting to {host_port} timed out after {:?}",
                    self.timeout
                ),
            )),
        }
    }
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}"))
            })?;
            let port = uri.port_u16().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("no port in {uri}"))
            })?;
            // `host` keeps the brackets of an IPv6 literal, as `connect` wants.
            let stream = this.connect(&format!("{host}:{port}")).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// The endpoint for `addr` (`host:port`, e.g. `10.0.0.1:2377` or `[::1]:2377`),
/// for callers who want to tune it before
/// `endpoint.connect_with_connector_lazy(TlsConnector::new(config))`.
pub fn endpoint(addr: &str) -> Result<Endpoint, TlsError> {
    let bad = |reason: String| TlsError::Address {
        addr: addr.to_string(),
        reason,
    };
    if addr.contains('/') || addr.contains("://") {
        return Err(bad("expected host:port".into()));
    }
    let endpoint =
        Endpoint::from_shared(format!("http://{addr}")).map_err(|e| bad(e.to_string()))?;
    if endpoint.uri().port_u16().is_none() {
        return Err(bad("a port is required".into()));
    }
    Ok(endpoint)
}

/// A lazily connecting gRPC channel to `addr` (`host:port`) over TLS with
/// `config` (e.g. from [`super::client_config`]); it (re)connects on demand.
/// Must be called within a tokio runtime (the channel spawns its worker).
pub fn connect_channel(addr: &str, config: Arc<ClientConfig>) -> Result<Channel, TlsError> {
    Ok(endpoint(addr)?.connect_with_connector_lazy(TlsConnector::new(config)))
}

/// Like [`connect_channel`], for a long-lived call that must notice a peer
/// gone silent: HTTP/2 PINGs go out after `interval` without traffic, and the
/// connection is closed (every call on it fails) when one is not answered
/// within `timeout`. A process that is frozen, or cut off by the network,
/// keeps its TCP connections open and says nothing; without this, a call
/// waiting on it waits forever.
pub fn connect_channel_with_keepalive(
    addr: &str,
    config: Arc<ClientConfig>,
    interval: Duration,
    timeout: Duration,
) -> Result<Channel, TlsError> {
    Ok(endpoint(addr)?
        .http2_keep_alive_interval(interval)
        .keep_alive_timeout(timeout)
        .keep_alive_while_idle(true)
        .connect_with_connector_lazy(TlsConnector::new(config)))
}
