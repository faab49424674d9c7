//! `GET /services/{id}/logs`: every task's output from every node, merged
//! into Docker's multiplexed stream (8-byte frame headers, stream 1 =
//! stdout, 2 = stderr), each line carrying the swarm details the docker CLI
//! needs. A node that is down or unreachable never makes it hang: its tasks
//! get one stderr line saying their logs are unavailable.

use super::error::bool_param;
use super::services::find;
use super::{ApiError, ApiState};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use shoal_api::{NodeState, Task, TaskState, Timestamp};
use shoal_net::rpc::pb::node_client::NodeClient;
use shoal_net::rpc::{msg, parse, LogLine, LogsRequest};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::mpsc;

/// One frame of Docker's multiplexed stream.
pub fn frame(stream: u8, payload: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(8 + payload.len());
    b.extend_from_slice(&[stream, 0, 0, 0]);
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    Bytes::from(b)
}

struct Fmt {
    details: bool,
    timestamps: bool,
}

impl Fmt {
    fn line(&self, task: &Task, ts_ns: u128, text: &str) -> String {
        let mut s = String::new();
        if self.timestamps {
            let t = UNIX_EPOCH + Duration::from_nanos(ts_ns as u64);
            s.push_str(&Timestamp(Some(t)).to_rfc3339());
            s.push(' ');
        }
        if self.details {
            s.push_str(&format!(
                "com.docker.swarm.node.id={},com.docker.swarm.service.id={},com.docker.swarm.task.id={} ",
                task.node_id, task.service_id, task.id
            ));
        }
        s.push_str(text);
        s.push('\n');
        s
    }
}

/// `GET /services/{id}/logs?stdout&stderr&tail&follow&timestamps&details`.
pub async fn service_logs(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let m = s.manager()?.clone();
    let tasks = m.store.view(|t| {
        let svc = find(t, &id)?;
        Ok::<_, ApiError>(
            t.tasks_of_service(&svc.id)
                .filter(|task| task.status.state >= TaskState::Starting)
                .map(|task| (**task).clone())
                .collect::<Vec<_>>(),
        )
    })?;
    stream_logs(&m, tasks, &q)
}

/// `GET /tasks/{id}/logs?…`: one task's output (`docker service logs TASK`).
pub async fn task_logs(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let m = s.manager()?.clone();
    let task = m
        .store
        .view(|t| super::blobs::resolve(&t.tasks, &id, "task"))?;
    stream_logs(&m, vec![(*task).clone()], &q)
}

/// Streams the logs of `tasks` (those with a node) as Docker's multiplexed stream.
fn stream_logs(
    m: &std::sync::Arc<crate::Manager>,
    tasks: Vec<Task>,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let tail = match q.get("tail").map(String::as_str) {
        None | Some("") | Some("all") => None,
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid tail {n:?}")))?,
        ),
    };
    let follow = bool_param(q.get("follow"));
    let (want_out, want_err) = (
        !q.contains_key("stdout") || bool_param(q.get("stdout")),
        !q.contains_key("stderr") || bool_param(q.get("stderr")),
    );
    let fmt = std::sync::Arc::new(Fmt {
        details: bool_param(q.get("details")),
        timestamps: bool_param(q.get("timestamps")),
    });
    let (by_node, nodes) = m.store.view(|t| {
        let mut by_node: BTreeMap<String, Vec<Task>> = BTreeMap::new();
        for task in tasks {
            if !task.node_id.is_empty() {
                by_node.entry(task.node_id.clone()).or_default().push(task);
            }
        }
        let nodes: HashMap<String, (String, String, bool)> = by_node
            .keys()
            .filter_map(|n| t.nodes.get(n))
            .map(|n| {
                (
                    n.id.clone(),
                    (
                        n.addr.clone(),
                        n.description.hostname.clone(),
                        n.status.state == NodeState::Ready,
                    ),
                )
            })
            .collect();
        (by_node, nodes)
    });
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(256);
    for (node_id, tasks) in by_node {
        let tx = tx.clone();
        let fmt = fmt.clone();
        let peers = m.node_peers.clone();
        let (addr, host, up) = nodes.get(&node_id).cloned().unwrap_or_default();
        tokio::spawn(async move {
            let unavailable = |why: &str| {
                tasks
                    .iter()
                    .map(|t| {
                        frame(
                            2,
                            fmt.line(t, 0, &format!("[logs unavailable: node {host} {why}]"))
                                .as_bytes(),
                        )
                    })
                    .collect::<Vec<_>>()
            };
            if !up || addr.is_empty() {
                for f in unavailable("is down") {
                    let _ = tx.send(Ok(f)).await;
                }
                return;
            }
            let by_id: HashMap<String, Task> =
                tasks.iter().map(|t| (t.id.clone(), t.clone())).collect();
            let req = LogsRequest {
                task_ids: by_id.keys().cloned().collect(),
                tail,
                follow,
            };
            let stream = async {
                let ch = peers.channel(&addr)?;
                let mut client = NodeClient::new(ch);
                let mut r = tonic::Request::new(msg(&req));
                if !follow {
                    r.set_timeout(Duration::from_secs(30));
                }
                Ok::<_, tonic::Status>(client.task_logs(r).await?.into_inner())
            };
            let mut stream = match tokio::time::timeout(Duration::from_secs(5), stream).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    for f in unavailable(&format!("is unreachable: {}", e.message())) {
                        let _ = tx.send(Ok(f)).await;
                    }
                    return;
                }
                Err(_) => {
                    for f in unavailable("did not answer") {
                        let _ = tx.send(Ok(f)).await;
                    }
                    return;
                }
            };
            loop {
                let m = match stream.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => return,
                    // The node went away mid-stream (a dead connection,
                    // or one its PINGs found silent): say so.
                    Err(e) => {
                        for f in unavailable(&format!("stopped answering: {}", e.message())) {
                            let _ = tx.send(Ok(f)).await;
                        }
                        return;
                    }
                };
                let Ok(l) = parse::<LogLine>(&m) else {
                    continue;
                };
                if (l.stream == 2 && !want_err) || (l.stream != 2 && !want_out) {
                    continue;
                }
                let Some(task) = by_id.get(&l.task_id) else {
                    continue;
                };
                if tx
                    .send(Ok(frame(
                        l.stream,
                        fmt.line(task, l.timestamp_ns, &l.line).as_bytes(),
                    )))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    drop(tx);
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(Response::builder()
        .status(200)
        .body(body)
        .expect("response"))
}
