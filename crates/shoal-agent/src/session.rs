//! The agent's session with the leader's dispatcher: finds the leader among
//! the known managers (with backoff), says Hello, heartbeats, reports task
//! status, and hands what the dispatcher sends to the node runtime.

use shoal_api::NodeDescription;
use shoal_net::rpc::pb::cluster_client::ClusterClient;
use shoal_net::rpc::{msg, parse, AgentMessage, DispatcherMessage, ManagerAddr, TaskStatusReport};
use shoal_net::tls::connect_channel_with_keepalive;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the session needs.
pub struct SessionConfig {
    /// This node's node-to-node address.
    pub addr: String,
    /// What this node is (updates are sent to the dispatcher as they come).
    pub description: tokio::sync::watch::Receiver<NodeDescription>,
    /// Managers to try (kept up to date from the dispatcher).
    pub managers: Arc<Mutex<Vec<ManagerAddr>>>,
    /// TLS settings presenting our node certificate.
    pub tls: Arc<rustls::ClientConfig>,
}

/// A manager whose session just failed is not tried again, nor followed to
/// by a redirect, for this long while another may answer: a leader that is
/// frozen or cut off still looks like the leader to managers that have not
/// noticed yet, and every try on it costs a connect timeout.
const AVOID_FAILED: Duration = Duration::from_secs(3);
/// Backstop for opening a session (the HTTP/2 PINGs, see [`keepalive`],
/// catch a manager gone silent sooner).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 PING interval and answer timeout for a session, from the cluster's
/// heartbeat period. A manager that stops answering (frozen, or cut off by
/// the network: its connections stay open) ends the session within about
/// two periods, so the agent finds the new leader well before that leader
/// would mark the node down (its grace plus three periods).
fn keepalive(period: Duration) -> (Duration, Duration) {
    let interval = period.max(Duration::from_millis(100));
    (interval, interval.max(Duration::from_secs(1)))
}

/// Runs sessions until cancelled: every message from a dispatcher goes to
/// `events`; task status reports from `status` go to the dispatcher.
pub async fn run(
    mut cfg: SessionConfig,
    events: mpsc::UnboundedSender<DispatcherMessage>,
    mut status: mpsc::UnboundedReceiver<Vec<TaskStatusReport>>,
    token: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let mut next = 0usize;
    let mut preferred: Option<String> = None;
    let mut period = shoal_api::DEFAULT_HEARTBEAT_PERIOD;
    let mut failed: HashMap<String, Instant> = HashMap::new();
    while !token.is_cancelled() {
        let managers = cfg.managers.lock().expect("lock").clone();
        if managers.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        failed.retain(|_, at| at.elapsed() < AVOID_FAILED);
        let addr = match preferred.take() {
            Some(a) => a,
            None => {
                // The next manager in turn that did not just fail (the next
                // one anyway if they all did).
                let n = managers.len();
                next = (1..=n)
                    .map(|k| (next + k) % n)
                    .find(|i| !failed.contains_key(&managers[*i].addr))
                    .unwrap_or((next + 1) % n);
                managers[next].addr.clone()
            }
        };
        match session(&mut cfg, &addr, &mut period, &events, &mut status, &token).await {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(SessionEnd::Redirect(leader)) if failed.contains_key(&leader) => {
                // The manager asked still names a leader that just failed
                // us: it has not noticed yet. Wait, then try another.
                tracing::debug!(%addr, %leader, "redirected to a manager that just failed");
            }
            Err(SessionEnd::Redirect(leader)) => {
                tracing::debug!(%addr, %leader, "not the leader; trying the leader");
                preferred = Some(leader);
                continue;
            }
            Err(SessionEnd::Failed(e)) => {
                tracing::debug!(%addr, "session failed: {e}");
                failed.insert(addr, Instant::now());
            }
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_millis(800));
    }
}

enum SessionEnd {
    Redirect(String),
    Failed(String),
}

async fn session(
    cfg: &mut SessionConfig,
    addr: &str,
    period: &mut Duration,
    events: &mpsc::UnboundedSender<DispatcherMessage>,
    status: &mut mpsc::UnboundedReceiver<Vec<TaskStatusReport>>,
    token: &CancellationToken,
) -> Result<(), SessionEnd> {
    let (ping, ping_timeout) = keepalive(*period);
    let channel = connect_channel_with_keepalive(addr, cfg.tls.clone(), ping, ping_timeout)
        .map_err(|e| SessionEnd::Failed(e.to_string()))?;
    let mut client = ClusterClient::new(channel).max_decoding_message_size(256 << 20);
    let (out_tx, out_rx) = mpsc::channel(64);
    let description = cfg.description.borrow_and_update().clone();
    out_tx
        .send(msg(&AgentMessage::Hello {
            description,
            addr: cfg.addr.clone(),
        }))
        .await
        .map_err(|e| SessionEnd::Failed(e.to_string()))?;
    let resp = tokio::time::timeout(
        OPEN_TIMEOUT,
        client.session(tokio_stream::wrappers::ReceiverStream::new(out_rx)),
    )
    .await
    .map_err(|_| SessionEnd::Failed(format!("no answer to Hello within {OPEN_TIMEOUT:?}")))?
    .map_err(
        |s| match s.message().strip_prefix("not the leader; leader=") {
            Some(leader) if !leader.is_empty() => SessionEnd::Redirect(leader.to_string()),
            _ => SessionEnd::Failed(s.message().to_string()),
        },
    )?;
    let mut inbound = resp.into_inner();
    let mut beat = tokio::time::interval(*period * 2 / 3);
    tracing::info!(manager = %addr, "session established");
    loop {
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = beat.tick() => {
                if out_tx.send(msg(&AgentMessage::Heartbeat)).await.is_err() {
                    return Err(SessionEnd::Failed("session closed".into()));
                }
            }
            Ok(()) = cfg.description.changed() => {
                let d = cfg.description.borrow_and_update().clone();
                if out_tx.send(msg(&AgentMessage::Describe(d))).await.is_err() {
                    return Err(SessionEnd::Failed("session closed".into()));
                }
            }
            Some(reports) = status.recv() => {
                let reports = coalesce(reports, status);
                if out_tx.send(msg(&AgentMessage::Status(reports))).await.is_err() {
                    return Err(SessionEnd::Failed("session closed".into()));
                }
            }
            m = inbound.message() => match m {
                Ok(Some(m)) => {
                    let m: DispatcherMessage = parse(&m).map_err(|e| SessionEnd::Failed(e.to_string()))?;
                    match &m {
                        DispatcherMessage::Welcome { heartbeat_ms, managers } => {
                            // Beat a little faster than the period so one late beat is not a miss.
                            *period = Duration::from_millis((*heartbeat_ms).max(50));
                            beat = tokio::time::interval(*period * 2 / 3);
                            *cfg.managers.lock().expect("lock") = managers.clone();
                        }
                        DispatcherMessage::Managers(managers) => {
                            *cfg.managers.lock().expect("lock") = managers.clone();
                        }
                        _ => {}
                    }
                    if events.send(m).is_err() {
                        return Ok(());
                    }
                }
                Ok(None) => return Err(SessionEnd::Failed("the dispatcher closed the session".into())),
                Err(s) => return Err(SessionEnd::Failed(s.to_string())),
            },
        }
    }
}

/// Merges every report already waiting into one batch, keeping only the
/// latest report of each task (states only move forward, so the latest says
/// it all) — one message and one Raft write for a burst of task starts.
fn coalesce(
    first: Vec<TaskStatusReport>,
    rx: &mut mpsc::UnboundedReceiver<Vec<TaskStatusReport>>,
) -> Vec<TaskStatusReport> {
    let mut order: Vec<String> = Vec::new();
    let mut latest: std::collections::HashMap<String, TaskStatusReport> =
        std::collections::HashMap::new();
    let mut add = |r: TaskStatusReport| {
        if !latest.contains_key(&r.task_id) {
            order.push(r.task_id.clone());
        }
        latest.insert(r.task_id.clone(), r);
    };
    first.into_iter().for_each(&mut add);
    while let Ok(more) = rx.try_recv() {
        more.into_iter().for_each(&mut add);
    }
    order
        .into_iter()
        .filter_map(|id| latest.remove(&id))
        .collect()
}
