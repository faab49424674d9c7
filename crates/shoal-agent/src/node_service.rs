//! The gRPC service every node serves to managers: task logs from this
//! node's executors.

use crate::docker::EngineSlot;
use crate::process::{LogOptions, OutputStream, ProcessExecutor};
use futures::Stream;
use shoal_net::pki::Role;
use shoal_net::rpc::pb::node_server::Node;
use shoal_net::rpc::{msg, parse, LogLine, LogsRequest, Msg};
use shoal_net::tls::PeerInfo;
use std::pin::Pin;
use std::time::UNIX_EPOCH;
use tonic::{Request, Response, Status};

/// Serves this node's task logs to the cluster's managers.
pub struct NodeService {
    process: ProcessExecutor,
    docker: EngineSlot,
    cluster_id: String,
}

impl NodeService {
    /// A service over this node's executors for the cluster `cluster_id`.
    pub fn new(process: ProcessExecutor, docker: EngineSlot, cluster_id: &str) -> NodeService {
        NodeService {
            process,
            docker,
            cluster_id: cluster_id.to_string(),
        }
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send + 'static>>;

impl NodeService {
    /// Refuses callers other than this cluster's managers.
    fn manager_only<T>(&self, req: &Request<T>, what: &str) -> Result<(), Status> {
        let id = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.identity.clone())
            .ok_or_else(|| Status::unauthenticated("a node certificate is required"))?;
        if id.cluster_id != self.cluster_id || id.role != Role::Manager {
            return Err(Status::permission_denied(format!(
                "only this cluster's managers may {what}"
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    type TaskLogsStream = LogStream;
    type EngineTunnelStream = LogStream;

    async fn engine_tunnel(
        &self,
        req: Request<tonic::Streaming<Msg>>,
    ) -> Result<Response<LogStream>, Status> {
        use tokio::io::AsyncWriteExt;
        self.manager_only(&req, "reach this node's Docker Engine")?;
        let host = self
            .docker
            .get()
            .map(|d| d.host().to_string())
            .ok_or_else(|| Status::unavailable("this node has no Docker Engine"))?;
        let path = host.strip_prefix("unix://").unwrap_or(&host).to_string();
        let sock = tokio::net::UnixStream::connect(&path).await.map_err(|e| {
            Status::unavailable(format!(
                "this node's Docker Engine at {host} does not answer: {e}"
            ))
        })?;
        let (rd, mut wr) = sock.into_split();
        let mut inbound = req.into_inner();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if wr.write_all(&m.data).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Msg, Status>>(64);
        tokio::spawn(shoal_net::rpc::pump_reader(rd, move |m| {
            let tx = tx.clone();
            async move { tx.send(Ok(m)).await.is_ok() }
        }));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn task_logs(&self, req: Request<Msg>) -> Result<Response<LogStream>, Status> {
        self.manager_only(&req, "read task logs")?;
        let r: LogsRequest = parse(req.get_ref())?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Msg, Status>>(256);
        for task_id in r.task_ids {
            let opts = LogOptions {
                tail: r.tail,
                follow: r.follow,
                since: None,
            };
            let lines = match self.process.logs(&task_id, opts.clone()).await {
                Ok(l) => Ok(l),
                Err(e) => match self.docker.get() {
                    Some(d) => d.logs(&task_id, opts).await.map_err(|e| e.to_string()),
                    None => Err(e.to_string()),
                },
            };
            let mut lines = match lines {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(task = %task_id, "no logs: {e}");
                    continue;
                }
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(l) = lines.recv().await {
                    let line = LogLine {
                        task_id: task_id.clone(),
                        timestamp_ns: l
                            .timestamp
                            .duration_since(UNIX_EPOCH)
                            .map(|d| d.as_nanos())
                            .unwrap_or(0),
                        stream: if l.stream == OutputStream::Stderr {
                            2
                        } else {
                            1
                        },
                        line: String::from_utf8_lossy(&l.line).to_string(),
                    };
                    if tx.send(Ok(msg(&line))).await.is_err() {
                        return;
                    }
                }
            });
        }
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
