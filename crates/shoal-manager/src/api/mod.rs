//! The control API: HTTP/JSON in the Docker Engine API's paths and shapes,
//! served on a unix socket by every node (workers answer only the system
//! endpoints). The `shoal` CLI and the stock `docker` CLI both use it.

mod blobs;
mod engine;
mod error;
mod logs;
mod networks;
mod nodes;
mod services;
mod swarm;
mod system;
mod tasks;

pub use engine::use_engine;
pub use error::ApiError;

use crate::Manager;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Uri};
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::Router;
use std::sync::Arc;

/// The API version shoal speaks (the docker CLI then uses exactly the
/// request shapes recorded in docker-cli-swarm-api.md).
pub const API_VERSION: &str = "1.41";
/// The oldest API version accepted.
pub const MIN_API_VERSION: &str = "1.24";
/// Version string reported as the engine version.
pub const SHOAL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The answer to a [`HostRequest`].
pub type Reply<T> = tokio::sync::oneshot::Sender<Result<T, ApiError>>;

/// Swarm lifecycle actions the API asks of the process hosting the node
/// (one at a time, in order, as Docker's daemon serialises them).
pub enum HostRequest {
    /// `POST /swarm/init`: answers the new node's ID once it serves.
    Init(Box<shoal_api::InitRequest>, Reply<String>),
    /// `POST /swarm/join`: answers once the node runs in the cluster.
    Join(Box<shoal_api::JoinRequest>, Reply<()>),
    /// `POST /swarm/leave`: stops the node's tasks and components and
    /// forgets the cluster (checks for `force` are made before).
    Leave(Reply<()>),
    /// `POST /swarm/unlock` on a locked manager.
    Unlock(String, Reply<()>),
}

/// Where this node stands, as `/info`'s `Swarm.LocalNodeState` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Not part of a swarm.
    Inactive,
    /// A manager whose keys are locked until `swarm unlock`.
    Locked,
    /// A running member.
    Active,
}

impl Presence {
    /// Docker's name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Inactive => "inactive",
            Presence::Locked => "locked",
            Presence::Active => "active",
        }
    }
}

/// What this node is, for `/info`.
#[derive(Debug, Clone)]
pub struct LocalNode {
    /// Node ID.
    pub node_id: String,
    /// Node-to-node address.
    pub addr: String,
    /// Host name.
    pub hostname: String,
    /// Number of CPUs.
    pub ncpu: i64,
    /// Memory bytes.
    pub mem_total: i64,
    /// Managers known to this node (for workers' `/info`).
    pub managers: Vec<shoal_net::rpc::ManagerAddr>,
}

/// Shared state of the API handlers. Every request clones it a few times
/// (axum's layers and extractors), so it is one `Arc`.
#[derive(Clone)]
pub struct ApiState(Arc<ApiContext>);

impl ApiState {
    /// Shares `context` with the handlers.
    pub fn new(context: ApiContext) -> ApiState {
        ApiState(Arc::new(context))
    }
}

impl std::ops::Deref for ApiState {
    type Target = ApiContext;

    fn deref(&self) -> &ApiContext {
        &self.0
    }
}

/// What the API handlers know of the node.
pub struct ApiContext {
    /// The manager, on managers.
    pub manager: Option<Arc<Manager>>,
    /// This node.
    pub local: LocalNode,
    /// Whether the node is in a swarm.
    pub presence: Presence,
    /// Lifecycle requests to the hosting process.
    pub host: tokio::sync::mpsc::UnboundedSender<HostRequest>,
}

impl ApiContext {
    /// The manager, or the error Docker gives on a worker, an inactive or a
    /// locked node.
    pub fn manager(&self) -> Result<&Arc<Manager>, ApiError> {
        match (self.presence, &self.manager) {
            (Presence::Active, Some(m)) => Ok(m),
            (Presence::Active, None) => Err(ApiError::not_a_manager()),
            (Presence::Inactive, _) => Err(ApiError::no_swarm_manager()),
            (Presence::Locked, _) => Err(ApiError::locked()),
        }
    }

    /// Sends a lifecycle request and waits for its answer.
    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> HostRequest) -> Result<T, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.host
            .send(make(tx))
            .map_err(|_| ApiError::unavailable("the node is shutting down"))?;
        rx.await
            .map_err(|_| ApiError::unavailable("the node is shutting down"))?
    }
}

/// The router (paths without the `/v1.NN` prefix).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/_ping", get(system::ping).head(system::ping))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/nodes", get(nodes::list))
        .route("/nodes/{id}", get(nodes::inspect).delete(nodes::remove))
        .route("/nodes/{id}/update", post(nodes::update))
        .route("/secrets", get(blobs::list_secrets))
        .route("/secrets/create", post(blobs::create_secret))
        .route(
            "/secrets/{id}",
            get(blobs::inspect_secret).delete(blobs::remove_secret),
        )
        .route("/secrets/{id}/update", post(blobs::update_secret))
        .route("/configs", get(blobs::list_configs))
        .route("/configs/create", post(blobs::create_config))
        .route(
            "/configs/{id}",
            get(blobs::inspect_config).delete(blobs::remove_config),
        )
        .route("/configs/{id}/update", post(blobs::update_config))
        .route("/services", get(services::list))
        .route("/services/create", post(services::create))
        .route(
            "/services/{id}",
            get(services::inspect).delete(services::remove),
        )
        .route("/services/{id}/update", post(services::update))
        .route("/services/{id}/logs", get(logs::service_logs))
        .route("/tasks", get(tasks::list))
        .route("/tasks/{id}", get(tasks::inspect))
        .route("/tasks/{id}/logs", get(logs::task_logs))
        .route("/networks", get(networks::list))
        .route("/networks/create", post(networks::create))
        .route(
            "/networks/{id}",
            get(networks::inspect).delete(networks::remove),
        )
        .route("/distribution/{*image}", get(engine::distribution))
        .route("/containers/{*rest}", any(engine::passthrough))
        .route("/exec/{*rest}", any(engine::passthrough))
        .route("/images/{*rest}", any(engine::passthrough))
        .route("/swarm", get(swarm::inspect))
        .route("/swarm/update", post(swarm::update))
        .route("/swarm/leave", post(swarm::leave))
        .route("/swarm/init", post(swarm::init))
        .route("/swarm/join", post(swarm::join))
        .route("/swarm/unlock", post(swarm::unlock))
        .route("/swarm/unlockkey", get(swarm::unlock_key))
        .route(
            "/__shoal/bad-version/{v}",
            get(system::bad_version)
                .post(system::bad_version)
                .delete(system::bad_version),
        )
        .fallback(system::not_found)
        .layer(axum::middleware::map_response(error::json_errors))
        .with_state(state)
}

/// The API version of a request's `/v1.NN` prefix (absent without one).
#[derive(Debug, Clone)]
pub struct ClientVersion(pub String);

/// Strips Docker's optional `/v1.NN` prefix before routing; an unsupported
/// version is routed to an error handler.
pub fn strip_version(mut req: Request) -> Request {
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/v") {
        if let Some((ver, tail)) = rest.split_once('/') {
            if ver
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            {
                let ok = version_supported(ver);
                let ver = ver.to_string();
                let new_path = if ok {
                    format!("/{tail}")
                } else {
                    format!("/__shoal/bad-version/{ver}")
                };
                let pq = match req.uri().query() {
                    Some(q) => format!("{new_path}?{q}"),
                    None => new_path,
                };
                if let Ok(uri) = pq.parse::<Uri>() {
                    *req.uri_mut() = uri;
                    if ok {
                        req.extensions_mut().insert(ClientVersion(ver));
                    }
                }
            }
        }
    }
    req
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn version_supported(v: &str) -> bool {
    match (
        parse_version(v),
        parse_version(API_VERSION),
        parse_version(MIN_API_VERSION),
    ) {
        (Some(v), Some(max), Some(min)) => v >= min && v <= max,
        _ => false,
    }
}

/// On a follower, every request that reads the state first catches up with
/// the leader's applied index, so a client reads its own writes (made through
/// any manager) and an update's `version` is never stale merely because this
/// replica lags. Blind writes (see [`reads_nothing`]) skip it.
async fn read_your_writes(
    axum::extract::State(state): axum::extract::State<ApiState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response<Body> {
    if let Some(m) = &state.manager {
        if !reads_nothing(&req) {
            m.catch_up().await;
        }
    }
    next.run(req).await
}

/// Requests whose handler reads nothing from the local replica: creating a
/// secret or config only proposes a new object (its name's uniqueness is
/// checked on the leader, during apply), so the local state's lag cannot
/// change its outcome.
fn reads_nothing(req: &Request) -> bool {
    req.method() == axum::http::Method::POST
        && matches!(req.uri().path(), "/configs/create" | "/secrets/create")
}

/// Adds the headers every Docker daemon response carries.
pub fn add_headers(mut resp: Response<Body>) -> Response<Body> {
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert(
        "Server",
        HeaderValue::from_static(concat!("shoal/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    resp
}

/// The API a socket serves, swapped as the node changes state (inactive →
/// init/join → active → leave → inactive, role changes) while the sockets
/// stay open for the life of the process.
#[derive(Clone)]
pub struct Front(Arc<std::sync::RwLock<Router>>);

impl Front {
    /// A front serving `state`.
    pub fn new(state: ApiState) -> Front {
        Front(Arc::new(std::sync::RwLock::new(app(state))))
    }

    /// Serves `state` from now on.
    pub fn install(&self, state: ApiState) {
        *self.0.write().expect("front lock") = app(state);
    }

    fn current(&self) -> Router {
        self.0.read().expect("front lock").clone()
    }
}

/// The router with its per-state middleware.
fn app(state: ApiState) -> Router {
    router(state.clone()).layer(axum::middleware::from_fn_with_state(
        state,
        read_your_writes,
    ))
}

/// Serves the API on a unix socket until `shutdown` completes.
pub async fn serve_unix(
    path: &std::path::Path,
    front: Front,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    serve(listener, front, shutdown).await
}

/// Serves the API on any axum listener.
pub async fn serve<L>(
    listener: L,
    front: Front,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    use tower::{Layer, ServiceExt};
    let app = tower::service_fn(move |req: Request| {
        let router = front.current();
        async move { router.oneshot(req).await }
    });
    let app = tower::util::MapResponseLayer::new(add_headers).layer(app);
    let app = tower::util::MapRequestLayer::new(strip_version).layer(app);
    axum::serve(
        listener,
        axum::ServiceExt::<Request>::into_make_service(app),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(())
}

/// A TLS listener for the API on TCP: handshakes run in their own tasks
/// (see [`shoal_net::tls::TlsIncoming`]); failed handshakes are dropped.
pub struct TlsListener {
    incoming: shoal_net::tls::TlsIncoming,
    addr: std::net::SocketAddr,
}

impl TlsListener {
    /// Serves TLS with `config` on `listener`.
    pub fn new(
        listener: tokio::net::TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<TlsListener> {
        let addr = listener.local_addr()?;
        Ok(TlsListener {
            incoming: shoal_net::tls::TlsIncoming::new(listener, config),
            addr,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = shoal_net::tls::TlsConn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use futures::StreamExt;
        loop {
            match self.incoming.next().await {
                Some(Ok(conn)) => {
                    let addr = conn.peer_info().remote_addr;
                    return (conn, addr);
                }
                Some(Err(e)) => tracing::debug!("Docker API on TCP: {e}"),
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// A JSON array response serialized a few items at a time as the client
/// reads it, so a long list (100,000 tasks) never sits in memory whole —
/// neither as copies of the objects nor as one body.
pub(crate) fn json_array<T, F>(items: Vec<T>, write: F) -> Response
where
    T: Send + 'static,
    F: Fn(&T, &mut Vec<u8>) -> serde_json::Result<()> + Send + 'static,
{
    const PER_CHUNK: usize = 256;
    let mut items = items.into_iter().peekable();
    let mut first = true;
    let mut started = false;
    let mut done = false;
    let chunks = std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut buf = Vec::with_capacity(16 << 10);
        if !started {
            buf.push(b'[');
            started = true;
        }
        for _ in 0..PER_CHUNK {
            let Some(item) = items.next() else { break };
            if !first {
                buf.push(b',');
            }
            first = false;
            if let Err(e) = write(&item, &mut buf) {
                done = true;
                return Some(Err(std::io::Error::other(e)));
            }
        }
        if items.peek().is_none() {
            buf.push(b']');
            done = true;
        }
        Some(Ok(axum::body::Bytes::from(buf)))
    });
    Response::builder()
        .header(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::reads_nothing;
    use axum::body::Body;
    use axum::extract::Request;

    fn req(method: &str, path: &str) -> Request {
        Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .expect("request")
    }

    #[test]
    fn only_blind_creates_skip_the_catch_up() {
        assert!(reads_nothing(&req("POST", "/configs/create")));
        assert!(reads_nothing(&req("POST", "/secrets/create")));
        assert!(!reads_nothing(&req("GET", "/configs")));
        assert!(!reads_nothing(&req("POST", "/configs/abc/update")));
        assert!(!reads_nothing(&req("POST", "/services/create")));
        assert!(!reads_nothing(&req("POST", "/networks/create")));
    }

    #[tokio::test]
    async fn json_array_streams_valid_json() {
        for n in [0usize, 1, 255, 256, 257, 1000] {
            let items: Vec<u64> = (0..n as u64).collect();
            let resp = super::json_array(items, |x, buf| serde_json::to_writer(buf, x));
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            let back: Vec<u64> = serde_json::from_slice(&body).unwrap();
            assert_eq!(back, (0..n as u64).collect::<Vec<_>>(), "{n} items");
        }
    }
}
