//! The gRPC service every node serves to managers: task logs from this
//! node's executors.

use crate::docker::DockerExecutor;
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
    docker: Option<DockerExecutor>,
    cluster_id: String,
}

impl NodeService {
    /// A service over this node's executors for the cluster `cluster_id`.
    pub fn new(
        process: ProcessExecutor,
        docker: Option<DockerExecutor>,
        cluster_id: &str,
    ) -> NodeService {
        NodeService {
            process,
            docker,
            cluster_id: cluster_id.to_string(),
        }
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Node for NodeService {
    type TaskLogsStream = LogStream;

    async fn task_logs(&self, req: Request<Msg>) -> Result<Response<LogStream>, Status> {
        let id = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.identity.clone())
            .ok_or_else(|| Status::unauthenticated("a node certificate is required"))?;
        if id.cluster_id != self.cluster_id || id.role != Role::Manager {
            return Err(Status::permission_denied(
                "only this cluster's managers may read task logs",
            ));
        }
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
                Err(e) => match &self.docker {
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
