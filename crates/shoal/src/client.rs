//! A minimal HTTP/1.1 client for the control API over a unix socket or TCP.

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use std::path::PathBuf;

/// Where the API is.
#[derive(Debug, Clone)]
pub enum Host {
    /// `unix:///path`.
    Unix(PathBuf),
    /// `tcp://host:port`.
    Tcp(String),
}

impl Host {
    /// Parses `-H` / `SHOAL_HOST`.
    pub fn parse(s: &str) -> anyhow::Result<Host> {
        if let Some(p) = s.strip_prefix("unix://") {
            if p.is_empty() {
                bail!("invalid host {s:?}: expected unix:///path/to/socket");
            }
            Ok(Host::Unix(PathBuf::from(p)))
        } else if let Some(a) = s.strip_prefix("tcp://") {
            if !a.contains(':') {
                bail!("invalid host {s:?}: expected tcp://HOST:PORT");
            }
            Ok(Host::Tcp(a.to_string()))
        } else {
            bail!("invalid host {s:?}: expected unix:///PATH or tcp://HOST:PORT")
        }
    }
}

/// An API response.
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Bytes,
}

impl Response {
    /// The body as JSON, or the daemon's error message.
    pub fn json<T: DeserializeOwned>(self) -> anyhow::Result<T> {
        self.ok()?;
        serde_json::from_slice(&self.body).context("the daemon sent malformed JSON")
    }

    fn body_has(&self, text: &str) -> bool {
        String::from_utf8_lossy(&self.body).contains(text)
    }

    /// Fails with the daemon's `{"message"}` for non-2xx statuses.
    pub fn ok(&self) -> anyhow::Result<()> {
        if (200..300).contains(&self.status) {
            return Ok(());
        }
        let msg = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).to_string());
        bail!("Error response from daemon: {msg}")
    }
}

/// Control API client.
pub struct Client {
    host: Host,
}

impl Client {
    /// A client for `host`.
    pub fn new(host: Host) -> Client {
        Client { host }
    }

    /// Sends a request; `body` is JSON if given.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<Response> {
        let bytes = body
            .map(|b| serde_json::to_vec(&b).expect("json"))
            .unwrap_or_default();
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/v1.41{path}"))
            .header("Host", "shoal")
            .header(
                "User-Agent",
                concat!("shoal-cli/", env!("CARGO_PKG_VERSION")),
            );
        if !bytes.is_empty() {
            req = req.header("Content-Type", "application/json");
        }
        let req = req.body(Full::new(Bytes::from(bytes)))?;
        let resp = match &self.host {
            Host::Unix(p) => {
                let stream = tokio::net::UnixStream::connect(p).await.with_context(|| {
                    format!(
                        "Cannot connect to the shoal daemon at unix://{}. Is the daemon running?",
                        p.display()
                    )
                })?;
                send(stream, req).await?
            }
            Host::Tcp(a) => {
                let stream = tokio::net::TcpStream::connect(a).await.with_context(|| {
                    format!(
                        "Cannot connect to the shoal daemon at tcp://{a}. Is the daemon running?"
                    )
                })?;
                send(stream, req).await?
            }
        };
        Ok(resp)
    }

    /// Sends a bodiless request and returns the response with its body unread (for streams).
    pub async fn request_stream(
        &self,
        method: &str,
        path: &str,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let req = Request::builder()
            .method(method)
            .uri(format!("/v1.41{path}"))
            .header("Host", "shoal")
            .body(Full::new(Bytes::new()))?;
        async fn go<S>(
            stream: S,
            req: Request<Full<Bytes>>,
        ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>>
        where
            S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(sender.send_request(req).await?)
        }
        match &self.host {
            Host::Unix(p) => {
                go(
                    tokio::net::UnixStream::connect(p).await.with_context(|| {
                        format!(
                            "Cannot connect to the shoal daemon at unix://{}",
                            p.display()
                        )
                    })?,
                    req,
                )
                .await
            }
            Host::Tcp(a) => {
                go(
                    tokio::net::TcpStream::connect(a).await.with_context(|| {
                        format!("Cannot connect to the shoal daemon at tcp://{a}")
                    })?,
                    req,
                )
                .await
            }
        }
    }

    /// GET and decode JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call("GET", path, None).await?.json()
    }

    /// Reads the object at `get`, lets `change` edit it and name the write (path
    /// and body, the path carrying the version read), and sends that write. A
    /// write that lost a race with another writer ("update out of sequence": the
    /// cluster bumps a node's version when its status changes, a service's when
    /// an update progresses) reads the object again and redoes the change, up to
    /// `RACES` times, so one command is one change made on the current object.
    pub async fn update_versioned<T: DeserializeOwned>(
        &self,
        get: &str,
        mut change: impl FnMut(&mut T) -> anyhow::Result<(String, serde_json::Value)>,
    ) -> anyhow::Result<T> {
        const RACES: usize = 8;
        let mut raced = 0;
        loop {
            let mut obj: T = self.get(get).await?;
            let (path, body) = change(&mut obj)?;
            let r = self.call("POST", &path, Some(body)).await?;
            if r.status == 409 && raced < RACES && r.body_has("update out of sequence") {
                raced += 1;
                // Back off a little, not in step with the other writers.
                let jitter = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos() % 10_000_000)
                    .unwrap_or(0);
                let wait =
                    std::time::Duration::from_nanos(raced as u64 * 5_000_000 + jitter as u64);
                tokio::time::sleep(wait).await;
                continue;
            }
            r.ok()?;
            return Ok(obj);
        }
    }
}

async fn send<S>(stream: S, req: Request<Full<Bytes>>) -> anyhow::Result<Response>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .context("the daemon closed the connection")?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Response { status, body })
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
