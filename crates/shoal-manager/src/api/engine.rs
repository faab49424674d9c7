//! The node's own Docker Engine, passed through: `/containers/…`,
//! `/exec/…` and `/images/…` requests go unchanged (same method, path,
//! query, headers and body) to the engine at `DOCKER_HOST` (else
//! `/var/run/docker.sock`), and its answer comes back unchanged. That is
//! what makes `docker ps`, `docker exec`, `docker images`, `docker image
//! inspect` and `docker tag` work against a shoal node: they show and reach
//! the containers of *this* node (a task on another node is reached through
//! that node's socket). Hijacked connections (`docker exec`'s
//! `POST /exec/{id}/start` with `Upgrade: tcp`) are relayed both ways after
//! the engine's `101`.

use super::{ApiError, ClientVersion};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where the engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineAddr {
    /// `unix:///path`.
    Unix(PathBuf),
    /// `tcp://host:port` (plain HTTP).
    Tcp(String),
}

impl std::fmt::Display for EngineAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineAddr::Unix(p) => write!(f, "unix://{}", p.display()),
            EngineAddr::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

static ENGINE: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

/// Passes engine requests to `host` (the engine the node found) from now on.
pub fn use_engine(host: &str) {
    *ENGINE.write().expect("engine lock") = Some(host.to_string());
}

/// The engine of this node: the one it found, else `DOCKER_HOST`, else the
/// default socket.
pub fn engine_addr() -> Result<EngineAddr, ApiError> {
    let found = ENGINE.read().expect("engine lock").clone();
    parse_addr(
        found
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .as_deref(),
    )
}

fn parse_addr(host: Option<&str>) -> Result<EngineAddr, ApiError> {
    match host.filter(|h| !h.is_empty()) {
        None => Ok(EngineAddr::Unix("/var/run/docker.sock".into())),
        Some(h) => {
            if let Some(p) = h.strip_prefix("unix://") {
                Ok(EngineAddr::Unix(p.into()))
            } else if let Some(a) = h.strip_prefix("tcp://").or(h.strip_prefix("http://")) {
                Ok(EngineAddr::Tcp(a.trim_end_matches('/').to_string()))
            } else {
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("this node's DOCKER_HOST {h:?} is not supported: use unix:///PATH or tcp://HOST:PORT"),
                ))
            }
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn unreachable(addr: &EngineAddr, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("Cannot connect to the Docker Engine of this node at {addr} ({why}). Is the docker daemon running?"),
    )
}

/// Sends one request to the engine on a fresh connection (upgrades allowed).
async fn send(req: http::Request<Body>) -> Result<http::Response<hyper::body::Incoming>, ApiError> {
    let addr = engine_addr()?;
    let connect = async {
        Ok::<Box<dyn Io>, std::io::Error>(match &addr {
            EngineAddr::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
            EngineAddr::Tcp(a) => Box::new(tokio::net::TcpStream::connect(a).await?),
        })
    };
    let io = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(io)) => io,
        Ok(Err(e)) => return Err(unreachable(&addr, e)),
        Err(_) => return Err(unreachable(&addr, "timed out")),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| unreachable(&addr, e))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(&addr, e))
}

fn target_is_remote(t: &Target) -> bool {
    matches!(t, Target::Node { .. })
}

/// Sends one request to another node's engine through its engine tunnel.
async fn send_remote(
    req: http::Request<Body>,
    host: &str,
    addr: &str,
    peers: &crate::peers::Peers,
) -> Result<http::Response<hyper::body::Incoming>, ApiError> {
    use shoal_net::rpc::pb::node_client::NodeClient;
    use shoal_net::rpc::Msg;
    use tokio::io::AsyncWriteExt;
    let gone = |why: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot reach the Docker Engine of node {host} ({addr}): {why}"),
        )
    };
    let ch = peers
        .channel(addr)
        .map_err(|s| gone(s.message().to_string()))?;
    let (to_node, to_node_rx) = tokio::sync::mpsc::channel::<Msg>(64);
    let mut client = NodeClient::new(ch);
    let open = client.engine_tunnel(tokio_stream::wrappers::ReceiverStream::new(to_node_rx));
    let mut from_node = tokio::time::timeout(Duration::from_secs(5), open)
        .await
        .map_err(|_| gone("timed out".into()))?
        .map_err(|s| gone(s.message().to_string()))?
        .into_inner();
    let (ours, theirs) = tokio::io::duplex(64 << 10);
    let (rd, mut wr) = tokio::io::split(theirs);
    tokio::spawn(shoal_net::rpc::pump_reader(rd, move |m| {
        let to_node = to_node.clone();
        async move { to_node.send(m).await.is_ok() }
    }));
    tokio::spawn(async move {
        while let Ok(Some(m)) = from_node.message().await {
            if wr.write_all(&m.data).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(ours))
        .await
        .map_err(|e| gone(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| gone(e.to_string()))
}

/// `GET path` on the engine, as JSON (None on any failure or after `timeout`).
pub async fn get_json(path: &str, timeout: Duration) -> Option<serde_json::Value> {
    let req = http::Request::get(path)
        .header(header::HOST, "docker")
        .body(Body::empty())
        .ok()?;
    let fetch = async {
        let resp = send(req).await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let bytes = axum::body::to_bytes(Body::new(resp.into_body()), 16 << 20)
            .await
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    tokio::time::timeout(timeout, fetch).await.ok().flatten()
}

/// Any request under `/containers`, `/exec` or `/images`: relayed to the engine.
pub async fn passthrough(
    axum::extract::State(state): axum::extract::State<super::ApiState>,
    req: Request,
) -> Response {
    let target = route(&state, req.uri().path());
    match forward(req, target).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Which engine a request is for.
#[derive(Clone)]
enum Target {
    /// This node's.
    Local,
    /// Another node's, through its gRPC engine tunnel.
    Node {
        host: String,
        addr: String,
        peers: std::sync::Arc<crate::peers::Peers>,
    },
}

/// Exec instances created on other nodes' engines: exec ID → (host name, address).
static EXEC_ROUTES: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, (String, String)>>,
> = std::sync::LazyLock::new(Default::default);

/// A request about a task's container (by container ID prefix, task ID or
/// container name) goes to the engine of the node that runs it; one about
/// an exec instance goes where it was created; everything else stays local.
fn route(state: &super::ApiState, path: &str) -> Target {
    let Some(m) = &state.manager else {
        return Target::Local;
    };
    let remote = |node_id: &str| {
        m.store.view(|t| {
            let n = t.nodes.get(node_id)?;
            (node_id != state.local.node_id && !n.addr.is_empty()).then(|| Target::Node {
                host: n.description.hostname.clone(),
                addr: n.addr.clone(),
                peers: m.node_peers.clone(),
            })
        })
    };
    if let Some(rest) = path.strip_prefix("/exec/") {
        let id = rest.split('/').next().unwrap_or_default();
        let known = EXEC_ROUTES.lock().expect("exec routes").get(id).cloned();
        return match known {
            Some((host, addr)) => Target::Node {
                host,
                addr,
                peers: m.node_peers.clone(),
            },
            None => Target::Local,
        };
    }
    let Some(rest) = path.strip_prefix("/containers/") else {
        return Target::Local;
    };
    let id = rest
        .split('/')
        .next()
        .unwrap_or_default()
        .trim_start_matches('/');
    if id.is_empty() || matches!(id, "json" | "create" | "prune") {
        return Target::Local;
    }
    // `service.slot.taskid` names end with the task ID.
    let task_id = id.rsplit('.').next().unwrap_or(id);
    let node = m.store.view(|t| {
        t.tasks
            .iter()
            .find(|task| {
                task.id == task_id
                    || task.status.container_status.as_ref().is_some_and(|c| {
                        c.container_id.len() >= 12
                            && id.len() >= 3
                            && c.container_id.starts_with(id)
                    })
            })
            .map(|task| task.node_id.clone())
    });
    node.and_then(|n| remote(&n)).unwrap_or(Target::Local)
}

async fn forward(mut req: Request, dest: Target) -> Result<Response, ApiError> {
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let target = match req.extensions().get::<ClientVersion>() {
        Some(ClientVersion(v)) => format!("/v{v}{pq}"),
        None => pq,
    };
    let wants_upgrade = req.headers().contains_key(header::UPGRADE);
    let client_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut out = http::Request::builder().method(parts.method).uri(&target);
    for (k, v) in &parts.headers {
        if k != header::HOST && k != header::TRANSFER_ENCODING {
            out = out.header(k, v);
        }
    }
    let out = out
        .header(header::HOST, HeaderValue::from_static("docker"))
        .body(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))?;
    let creates_exec = target_is_remote(&dest)
        && out.method() == http::Method::POST
        && out.uri().path().ends_with("/exec")
        && out.uri().path().contains("/containers/");
    let mut resp = match &dest {
        Target::Local => send(out).await?,
        Target::Node { host, addr, peers } => send_remote(out, host, addr, peers).await?,
    };
    if creates_exec && resp.status().is_success() {
        // Remember where the exec instance lives for its start/inspect/resize.
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(Body::new(body), 1 << 20)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
        if let (Ok(v), Target::Node { host, addr, .. }) =
            (serde_json::from_slice::<serde_json::Value>(&bytes), &dest)
        {
            if let Some(id) = v["Id"].as_str() {
                let mut routes = EXEC_ROUTES.lock().expect("exec routes");
                if routes.len() > 10_000 {
                    routes.clear();
                }
                routes.insert(id.to_string(), (host.clone(), addr.clone()));
            }
        }
        let mut parts = parts;
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts.headers.remove(header::CONTENT_LENGTH);
        return Ok(Response::from_parts(parts, Body::from(bytes)));
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "the Docker Engine switched protocols on a request that did not ask to",
            ));
        };
        let engine_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (Ok(client), Ok(engine)) = tokio::join!(client_upgrade, engine_upgrade) else {
                return;
            };
            let (mut client, mut engine) = (TokioIo::new(client), TokioIo::new(engine));
            let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
        });
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(header::TRANSFER_ENCODING);
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// `GET /distribution/{image}/json`: answered by this node's engine (which
/// asks the registry for the image's digest, as Docker's manager does); a
/// node without an engine says so. Either way an error only makes the
/// docker CLI warn and send the image unpinned.
pub async fn distribution(req: Request) -> Response {
    let image = req
        .uri()
        .path()
        .trim_start_matches("/distribution/")
        .trim_end_matches("/json")
        .to_string();
    match forward(req, Target::Local).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "this manager has no Docker Engine to resolve the digest of {image} on a registry: each node uses its local copy or pulls it itself"
            ),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_addresses() {
        assert_eq!(
            parse_addr(None).unwrap(),
            EngineAddr::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            parse_addr(Some("unix:///tmp/d.sock")).unwrap(),
            EngineAddr::Unix("/tmp/d.sock".into())
        );
        assert_eq!(
            parse_addr(Some("tcp://127.0.0.1:2375")).unwrap(),
            EngineAddr::Tcp("127.0.0.1:2375".into())
        );
        assert!(parse_addr(Some("ssh://x")).is_err());
    }
}
