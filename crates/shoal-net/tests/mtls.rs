//! Real TLS over loopback: a tonic server on `TlsIncoming` with a hand-written
//! unary gRPC service that reports the caller's `PeerInfo`, and raw
//! tokio-rustls connections for handshake-level checks.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use shoal_net::frame;
use shoal_net::pki::{NodeCert, Role, RootCa, DEFAULT_NODE_CERT_VALIDITY};
use shoal_net::tls::{
    bootstrap_client_config, client_config, client_config_with_cert, connect_channel,
    pinned_client_config, server_config, server_config_with_cert, with_alpn, PeerInfo,
    ReloadableCert, TlsConnector, TlsIncoming, ALPN_RAFT,
};
use shoal_net::token::JoinToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::body::Body;
use tonic_prost::ProstCodec;

const CLUSTER: &str = "c0000000000000000000000001";
const MANAGER: &str = "m0000000000000000000000001";
const WORKER: &str = "w0000000000000000000000001";
const PATH: &str = "/shoal.test.Who/Am";

struct Pki {
    ca: RootCa,
    manager: NodeCert,
    worker: NodeCert,
}

fn pki() -> Pki {
    let ca = RootCa::generate().unwrap();
    let v = DEFAULT_NODE_CERT_VALIDITY;
    Pki {
        manager: ca
            .issue_node_cert(MANAGER, Role::Manager, CLUSTER, v, &["127.0.0.1".into()])
            .unwrap(),
        worker: ca
            .issue_node_cert(WORKER, Role::Worker, CLUSTER, v, &[])
            .unwrap(),
        ca,
    }
}

/// Answers with who the caller is, as the server sees it.
#[derive(Clone)]
struct WhoAmI;

impl tower::Service<tonic::Request<String>> for WhoAmI {
    type Response = tonic::Response<String>;
    type Error = tonic::Status;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<String>) -> Self::Future {
        let answer = match req.extensions().get::<PeerInfo>() {
            None => "no peer info".to_string(),
            Some(PeerInfo {
                identity: None,
                remote_addr,
            }) => format!("anonymous from {}", remote_addr.ip()),
            Some(PeerInfo {
                identity: Some(id), ..
            }) => format!("{}/{}/{}", id.node_id, id.role.ou(), id.cluster_id),
        };
        std::future::ready(Ok(tonic::Response::new(answer)))
    }
}

/// The HTTP-level service tonic serves: routes one gRPC method to `WhoAmI`.
#[derive(Clone)]
struct Router;

impl tower::Service<http::Request<Body>> for Router {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(async move {
            if req.uri().path() != PATH {
                let mut res = http::Response::new(Body::empty());
                *res.status_mut() = http::StatusCode::NOT_FOUND;
                return Ok(res);
            }
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<String, String>::default());
            Ok(grpc.unary(WhoAmI, req).await)
        })
    }
}

/// A tonic server on a loopback port, stopped (listener closed) on drop.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    async fn start(config: Arc<rustls::ServerConfig>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(Router, TlsIncoming::new(listener, config), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Server {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("server stops")
            .unwrap();
        // The listener is closed.
        assert!(tokio::net::TcpStream::connect(self.addr).await.is_err());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn who_am_i(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<String, tonic::Status> {
    let channel = connect_channel(&addr.to_string(), config).unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        grpc.unary(
            tonic::Request::new(String::new()),
            PathAndQuery::from_static(PATH),
            ProstCodec::<String, String>::default(),
        ),
    )
    .await
    .expect("call finishes")?;
    Ok(res.into_inner())
}

fn manager_server_config(p: &Pki) -> Arc<rustls::ServerConfig> {
    server_config(&p.ca.cert_pem, &p.manager.cert_pem, &p.manager.key_pem).unwrap()
}

#[tokio::test]
async fn tonic_server_sees_client_identity() {
    let p = pki();
    let server = Server::start(manager_server_config(&p)).await;

    // (1) A client with a certificate from our CA: the server knows who it is.
    let cfg = client_config(
        &p.ca.cert_pem,
        Some((p.worker.cert_pem.as_str(), p.worker.key_pem.as_str())),
    )
    .unwrap();
    let who = who_am_i(server.addr, cfg.clone()).await.unwrap();
    assert_eq!(who, format!("{WORKER}/swarm-worker/{CLUSTER}"));

    // (2) A client with no certificate is let in, without identity.
    let anon = client_config(&p.ca.cert_pem, None).unwrap();
    let who = who_am_i(server.addr, anon).await.unwrap();
    assert_eq!(who, "anonymous from 127.0.0.1");

    server.shutdown().await;
}

#[tokio::test]
async fn tonic_refuses_foreign_certificates() {
    let p = pki();
    let other = pki();
    let server = Server::start(manager_server_config(&p)).await;

    // (3) A client whose certificate comes from another CA is refused.
    let foreign_client = client_config(
        &p.ca.cert_pem, // it trusts our server...
        Some((
            other.worker.cert_pem.as_str(),
            other.worker.key_pem.as_str(),
        )),
    )
    .unwrap();
    let err = who_am_i(server.addr, foreign_client).await.unwrap_err();
    // The server's fatal alert ends the connection under the first request.
    assert!(format!("{err:?}").contains("alert"), "{err:?}");

    // (4) A client that trusts another CA refuses our server.
    let other_trust = client_config(
        &other.ca.cert_pem,
        Some((
            other.worker.cert_pem.as_str(),
            other.worker.key_pem.as_str(),
        )),
    )
    .unwrap();
    let err = who_am_i(server.addr, other_trust).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("invalid peer certificate"),
        "{err:?}"
    );

    // The server still serves good clients.
    let good = client_config(&p.ca.cert_pem, None).unwrap();
    assert!(who_am_i(server.addr, good).await.is_ok());
    server.shutdown().await;
}

/// Handshake-level checks with `TlsIncoming` as a plain stream.
#[tokio::test]
async fn handshake_refusals_and_peer_info() {
    let p = pki();
    let other = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut incoming = TlsIncoming::new(listener, manager_server_config(&p));

    // (3) A client certificate from another CA: the server aborts the
    // handshake and never yields the connection.
    let foreign = client_config(
        &p.ca.cert_pem,
        Some((
            other.worker.cert_pem.as_str(),
            other.worker.key_pem.as_str(),
        )),
    )
    .unwrap();
    let client = TlsConnector::new(foreign);
    // TLS 1.3: the client finishes first, then reads the server's alert.
    match client.connect(&addr).await {
        Err(e) => panic!("client side should complete first: {e}"),
        Ok(mut stream) => {
            let mut buf = [0u8; 16];
            let res = stream.read(&mut buf).await;
            assert!(
                matches!(res, Err(_) | Ok(0)),
                "the server must refuse the foreign client certificate: {res:?}"
            );
            if let Err(e) = res {
                let msg = e.to_string();
                assert!(msg.contains("alert"), "{msg}");
            }
        }
    }
    let nothing = tokio::time::timeout(Duration::from_millis(300), incoming.next()).await;
    assert!(nothing.is_err(), "a refused handshake must not be yielded");

    // (4) A client trusting another CA refuses our server during the handshake.
    let distrust = client_config(&other.ca.cert_pem, None).unwrap();
    let err = TlsConnector::new(distrust)
        .connect(&addr)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");

    // (1) A good client: yielded with its identity, and data flows.
    let good = client_config(
        &p.ca.cert_pem,
        Some((p.worker.cert_pem.as_str(), p.worker.key_pem.as_str())),
    )
    .unwrap();
    let client = tokio::spawn(async move {
        let mut s = TlsConnector::new(good).connect(&addr).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    });
    let mut conn = tokio::time::timeout(Duration::from_secs(5), incoming.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let info = conn.peer_info().clone();
    let id = info.identity.expect("identity");
    assert_eq!(id.node_id, WORKER);
    assert_eq!(id.role, Role::Worker);
    assert_eq!(id.cluster_id, CLUSTER);
    assert_eq!(info.remote_addr.ip().to_string(), "127.0.0.1");
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    conn.write_all(b"pong").await.unwrap();
    client.await.unwrap();
}

#[tokio::test]
async fn client_requires_a_manager_server() {
    let p = pki();
    // A server presenting a worker certificate (chains to our CA, wrong OU).
    let cfg = server_config(&p.ca.cert_pem, &p.worker.cert_pem, &p.worker.key_pem).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let _incoming = TlsIncoming::new(listener, cfg);
    let client = client_config(&p.ca.cert_pem, None).unwrap();
    let err = TlsConnector::new(client).connect(&addr).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn join_pins_the_root_by_token_digest() {
    let p = pki();
    let other = pki();
    let server = Server::start(manager_server_config(&p)).await;
    let token = JoinToken::generate(&p.ca.digest_bytes(), Role::Worker);
    let parsed = JoinToken::parse(token.as_str()).unwrap();

    // Pinned by the right digest: verified connection, root captured.
    let (cfg, capture) = pinned_client_config(&parsed.ca_digest).unwrap();
    let who = who_am_i(server.addr, cfg).await.unwrap();
    assert!(who.starts_with("anonymous"), "{who}");
    let root_pem = capture
        .root_matching(&parsed.ca_digest)
        .expect("root presented");
    assert_eq!(
        shoal_net::pki::certs_from_pem(&root_pem).unwrap(),
        shoal_net::pki::certs_from_pem(&p.ca.cert_pem).unwrap()
    );
    assert!(parsed.matches_ca(&shoal_net::pki::certs_from_pem(&root_pem).unwrap()[0]));
    // The captured root then verifies the manager for real.
    let verified = client_config(&root_pem, None).unwrap();
    assert!(who_am_i(server.addr, verified).await.is_ok());

    // Pinned by another cluster's digest: refused before anything is sent.
    let (wrong, wrong_capture) = pinned_client_config(&other.ca.digest()).unwrap();
    assert!(who_am_i(server.addr, wrong).await.is_err());
    assert!(wrong_capture.chain().is_none());

    // Bootstrap (accept anything) captures the chain for the caller to check.
    let (boot, boot_capture) = bootstrap_client_config();
    assert!(who_am_i(server.addr, boot).await.is_ok());
    let chain = boot_capture.chain().expect("chain captured");
    assert_eq!(chain.len(), 2, "leaf then root");
    assert!(parsed.matches_ca(&chain[1]));
    assert!(!parsed.matches_ca(&chain[0]));
    assert!(boot_capture.root_matching(&other.ca.digest()).is_none());

    server.shutdown().await;
}

#[tokio::test]
async fn renewed_certificates_apply_to_new_connections() {
    let p = pki();
    // Server side: the manager renews its certificate.
    let server_cert =
        ReloadableCert::new(&p.ca.cert_pem, &p.manager.cert_pem, &p.manager.key_pem).unwrap();
    let cfg = server_config_with_cert(&p.ca.cert_pem, server_cert.clone()).unwrap();
    let server = Server::start(cfg).await;

    // Client side: a worker whose certificate is replaced while its config lives on.
    let client_cert =
        ReloadableCert::new(&p.ca.cert_pem, &p.worker.cert_pem, &p.worker.key_pem).unwrap();
    let client_cfg = client_config_with_cert(&p.ca.cert_pem, Some(client_cert.clone())).unwrap();
    assert_eq!(
        who_am_i(server.addr, client_cfg.clone()).await.unwrap(),
        format!("{WORKER}/swarm-worker/{CLUSTER}")
    );

    // The worker is promoted: new key, new cert with the manager role.
    let promoted =
        p.ca.issue_node_cert(
            WORKER,
            Role::Manager,
            CLUSTER,
            Duration::from_secs(3600),
            &[],
        )
        .unwrap();
    client_cert
        .replace(&promoted.cert_pem, &promoted.key_pem)
        .unwrap();
    assert_eq!(client_cert.identity().unwrap().role, Role::Manager);
    assert_eq!(
        who_am_i(server.addr, client_cfg.clone()).await.unwrap(),
        format!("{WORKER}/swarm-manager/{CLUSTER}")
    );

    // A mismatched key is refused and the current certificate stays.
    assert!(client_cert
        .replace(&p.worker.cert_pem, &promoted.key_pem)
        .is_err());
    assert_eq!(client_cert.identity().unwrap().role, Role::Manager);

    // The server's renewed certificate is what new clients see.
    let renewed =
        p.ca.issue_node_cert(
            MANAGER,
            Role::Manager,
            CLUSTER,
            Duration::from_secs(7200),
            &[],
        )
        .unwrap();
    server_cert
        .replace(&renewed.cert_pem, &renewed.key_pem)
        .unwrap();
    let (boot, capture) = bootstrap_client_config();
    who_am_i(server.addr, boot).await.unwrap();
    let leaf = &capture.chain().unwrap()[0];
    let renewed_der = &shoal_net::pki::certs_from_pem(&renewed.cert_pem).unwrap()[0];
    assert_eq!(leaf, renewed_der);

    server.shutdown().await;
}

/// Connections that negotiate the Raft stream's ALPN go to the side door,
/// with the caller's identity; gRPC on the same port is unaffected, and an
/// ALPN protocol nobody serves is refused during the handshake.
#[tokio::test]
async fn side_door_takes_the_raft_alpn_beside_grpc() {
    let p = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (side, mut side_rx) = tokio::sync::mpsc::channel(4);
    let incoming =
        TlsIncoming::with_side_door(listener, manager_server_config(&p), ALPN_RAFT, side);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(Router, incoming, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    let cfg = client_config(
        &p.ca.cert_pem,
        Some((p.manager.cert_pem.as_str(), p.manager.key_pem.as_str())),
    )
    .unwrap();

    let mut client = TlsConnector::new(with_alpn(&cfg, ALPN_RAFT))
        .connect(&addr.to_string())
        .await
        .unwrap();
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(ALPN_RAFT));
    let mut conn = tokio::time::timeout(Duration::from_secs(5), side_rx.recv())
        .await
        .expect("a side-door connection")
        .unwrap();
    assert_eq!(conn.alpn(), Some(ALPN_RAFT));
    let id = conn.peer_info().identity.clone().expect("an identity");
    assert_eq!((id.node_id.as_str(), id.role), (MANAGER, Role::Manager));
    // Frames go both ways.
    let mut req = frame::start(frame::APPEND_ENTRIES, 2);
    req.extend_from_slice(b"hi");
    frame::send(&mut client, &mut req).await.unwrap();
    let mut body = Vec::new();
    let tag = frame::recv(conn.get_mut(), &mut body).await.unwrap();
    assert_eq!((tag, body.as_slice()), (frame::APPEND_ENTRIES, &b"hi"[..]));
    let mut answer = frame::start(frame::OK, 2);
    answer.extend_from_slice(b"ok");
    frame::send(conn.get_mut(), &mut answer).await.unwrap();
    let tag = frame::recv(&mut client, &mut body).await.unwrap();
    assert_eq!((tag, body.as_slice()), (frame::OK, &b"ok"[..]));

    // gRPC on the same port still works, and never reaches the side door.
    let who = who_am_i(addr, cfg.clone()).await.unwrap();
    assert_eq!(who, format!("{MANAGER}/swarm-manager/{CLUSTER}"));
    assert!(side_rx.try_recv().is_err());

    // An ALPN protocol the server does not speak fails the handshake.
    let err = TlsConnector::new(with_alpn(&cfg, b"nope/1"))
        .connect(&addr.to_string())
        .await
        .unwrap_err();
    // (What the Raft client looks for to fall back to gRPC.)
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(
            inner,
            Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::NoApplicationProtocol
            ))
        ),
        "{err:?}"
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops")
        .unwrap();
}
