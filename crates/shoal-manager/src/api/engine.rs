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
pub async fn passthrough(req: Request) -> Response {
    match forward(req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn forward(mut req: Request) -> Result<Response, ApiError> {
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
    let mut resp = send(out).await?;
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

/// `GET /distribution/{image}/json`: shoal does not ask registries for
/// digests, so the docker CLI warns ("could not be accessed on a registry
/// to record its digest") and sends the image unchanged, as it does when a
/// daemon cannot reach the registry.
pub async fn distribution(axum::extract::Path(rest): axum::extract::Path<String>) -> ApiError {
    let image = rest.strip_suffix("/json").unwrap_or(&rest);
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "shoal does not resolve image digests on a registry: each node uses its local copy of {image} or pulls it itself"
        ),
    )
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
