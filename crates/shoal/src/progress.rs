//! Waits for a service to converge, printing docker-style progress:
//! a line per slot, `overall progress: N out of M tasks`, then
//! `verify: Service NAME converged`. Fails with the tasks' errors when the
//! service can't converge.

use crate::client::{enc, Client};
use anyhow::bail;
use serde_json::json;
use shoal_api::{ModeKind, Node, NodeState, Service, Task, TaskState};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long tasks may stay unplaceable before the CLI gives up.
const STUCK: Duration = Duration::from_secs(20);
/// Failed attempts in one slot that mean the service can't converge.
const MAX_FAILURES: usize = 3;
/// How long convergence must hold before it is reported.
const VERIFY: Duration = Duration::from_secs(1);

fn slot_key(t: &Task) -> String {
    if t.slot > 0 {
        t.slot.to_string()
    } else {
        t.node_id.clone()
    }
}

/// Polls until the service converges (or fails).
pub async fn wait(c: &Client, service_id: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut printed: BTreeMap<String, String> = BTreeMap::new();
    let mut last_overall = String::new();
    let mut converged_since: Option<Instant> = None;
    let mut stuck_since: Option<Instant> = None;
    loop {
        let svc: Service = c.get(&format!("/services/{}", enc(service_id))).await?;
        let all_filter = json!({ "service": { svc.id.clone(): true } }).to_string();
        let all: Vec<Task> = c
            .get(&format!("/tasks?filters={}", enc(&all_filter)))
            .await?;
        let nodes: Vec<Node> = c.get("/nodes").await?;
        let down: Vec<&str> = nodes
            .iter()
            .filter(|n| n.status.state == NodeState::Down)
            .map(|n| n.id.as_str())
            .collect();
        let fresh: Vec<&Task> = all
            .iter()
            .filter(|t| *t.spec == svc.spec.task_template && !down.contains(&t.node_id.as_str()))
            .collect();
        let kind = svc.spec.mode.kind();
        // The task that matters per slot: the one with the lowest desired state, newest first.
        let mut by_slot: BTreeMap<String, &Task> = BTreeMap::new();
        for t in &fresh {
            let k = slot_key(t);
            match by_slot.get(&k) {
                Some(cur)
                    if (cur.desired_state, std::cmp::Reverse(cur.created_at))
                        <= (t.desired_state, std::cmp::Reverse(t.created_at)) => {}
                _ => {
                    by_slot.insert(k, t);
                }
            }
        }
        let (done, target) = match kind {
            ModeKind::Replicated => {
                let r = svc.spec.mode.replicas().unwrap_or(1);
                let running = by_slot
                    .iter()
                    .filter(|(k, t)| {
                        k.parse::<u64>().is_ok_and(|s| s <= r)
                            && t.status.state == TaskState::Running
                            && t.desired_state <= TaskState::Running
                    })
                    .count() as u64;
                (running, r)
            }
            ModeKind::Global => {
                let live: Vec<&&Task> = by_slot
                    .values()
                    .filter(|t| t.desired_state <= TaskState::Running)
                    .collect();
                let running = live
                    .iter()
                    .filter(|t| t.status.state == TaskState::Running)
                    .count() as u64;
                (running, live.len() as u64)
            }
            ModeKind::ReplicatedJob | ModeKind::GlobalJob => {
                let complete = by_slot
                    .values()
                    .filter(|t| t.status.state == TaskState::Complete)
                    .count() as u64;
                let total = match kind {
                    ModeKind::ReplicatedJob => svc
                        .spec
                        .mode
                        .replicated_job
                        .as_ref()
                        .and_then(|j| j.total_completions.or(j.max_concurrent))
                        .unwrap_or(1),
                    _ => by_slot.len() as u64,
                };
                (complete, total)
            }
        };
        for (k, t) in &by_slot {
            let line = if t.status.err.is_empty() {
                t.status.state.as_str().to_string()
            } else {
                t.status.err.clone()
            };
            if printed.get(k) != Some(&line) {
                if kind == ModeKind::Replicated {
                    println!("{k}/{target}: {line}");
                } else {
                    println!("{}: {line}", &k[..k.len().min(12)]);
                }
                printed.insert(k.clone(), line);
            }
        }
        let overall = format!("overall progress: {done} out of {target} tasks");
        if overall != last_overall {
            println!("{overall}");
            last_overall = overall;
        }
        if let Some(u) = &svc.update_status {
            if u.state == "paused" || u.state == "rollback_paused" {
                bail!("update {}: {}", u.state, u.message);
            }
        }
        let updating = svc
            .update_status
            .as_ref()
            .is_some_and(|u| u.state == "updating" || u.state == "rollback_started");
        if done == target && !updating && (target > 0 || kind != ModeKind::Global) {
            let since = *converged_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= VERIFY {
                println!("verify: Service {} converged", svc.spec.name);
                return Ok(());
            }
        } else {
            converged_since = None;
        }
        // Can't converge: tasks unplaceable for a while, or failing again and again.
        let errors: Vec<String> = by_slot
            .values()
            .filter(|t| !t.status.err.is_empty() && t.status.state <= TaskState::Pending)
            .map(|t| format!("{}: {}", slot_key(t), t.status.err))
            .collect();
        if errors.is_empty() {
            stuck_since = None;
        } else if stuck_since.get_or_insert_with(Instant::now).elapsed() > STUCK {
            bail!(
                "service {} can't converge:\n{}",
                svc.spec.name,
                errors.join("\n")
            );
        }
        let mut failures: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in all.iter().filter(|t| {
            t.status.state == TaskState::Failed || t.status.state == TaskState::Rejected
        }) {
            if t.created_at.0 >= Some(std::time::SystemTime::now() - start.elapsed()) {
                failures
                    .entry(slot_key(t))
                    .or_default()
                    .push(t.status.err.clone());
            }
        }
        if let Some((slot, errs)) = failures.iter().find(|(_, e)| e.len() >= MAX_FAILURES) {
            bail!(
                "service {} can't converge: task {slot} failed {} times: {}",
                svc.spec.name,
                errs.len(),
                errs.last().cloned().unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
