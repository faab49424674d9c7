//! Rolling updates and rollbacks: replaces out-of-date tasks in batches of
//! `Parallelism`, waiting `Delay` after each batch, stop-first or
//! start-first, and drives the service's `UpdateStatus`.

use super::slots::{create, set_desired, Ctx, Key};
use super::Memory;
use shoal_api::{Service, Task, TaskState, Timestamp, UpdateConfig, UpdateStatus};
use shoal_store::{Expect, Object, Op};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What one pass saw of a service's update.
#[derive(Default)]
pub struct UpdatePlan {
    dirty: Vec<(Key, Arc<Task>)>,
    in_progress: usize,
    superseded: Vec<Arc<Task>>,
}

fn up_to_date(svc: &Service, t: &Task) -> bool {
    *t.spec == svc.spec.task_template
}

impl UpdatePlan {
    /// Looks at the live tasks of one key.
    pub fn observe(&mut self, ctx: &Ctx<'_>, key: &Key, live: &[&Arc<Task>]) {
        let Some(newest) = live.last() else { return };
        if live.len() >= 2 {
            // Start-first: once the new task runs, the older ones stop.
            if up_to_date(ctx.svc, newest) && newest.status.state == TaskState::Running {
                self.superseded
                    .extend(live[..live.len() - 1].iter().map(|t| (*t).clone()));
            } else {
                self.in_progress += 1;
            }
            return;
        }
        if newest.status.state.is_terminal() {
            return;
        }
        if !up_to_date(ctx.svc, newest) {
            self.dirty.push((key.clone(), (*newest).clone()));
        } else if newest.status.state < TaskState::Running && newest.status.err.is_empty() {
            self.in_progress += 1;
        }
    }

    /// A key whose old task is still stopping.
    pub fn stopping(&mut self, _key: &Key) {
        self.in_progress += 1;
    }

    /// A key that just got a replacement task.
    pub fn replacing(&mut self, _key: &Key) {
        self.in_progress += 1;
    }
}

/// Per-service update progress kept by the leader.
#[derive(Debug, Default, Clone, Copy)]
pub struct Track {
    /// When the last batch was seen finished.
    pub quiet_since: Option<SystemTime>,
    /// Whether a batch has been started.
    pub started: bool,
}

fn is_rollback(svc: &Service) -> bool {
    svc.update_status
        .as_ref()
        .is_some_and(|u| u.state.starts_with("rollback"))
}

fn config(svc: &Service) -> UpdateConfig {
    let c = if is_rollback(svc) {
        &svc.spec.rollback_config
    } else {
        &svc.spec.update_config
    };
    c.clone().unwrap_or(UpdateConfig {
        parallelism: 1,
        ..Default::default()
    })
}

fn set_status(svc: &Service, state: &str, message: &str, now: SystemTime, done: bool) -> Op {
    let mut s = svc.clone();
    let version = s.version.index;
    let prev = s.update_status.take().unwrap_or_default();
    s.update_status = Some(UpdateStatus {
        state: state.into(),
        started_at: prev.started_at.or(Some(Timestamp(Some(now)))),
        completed_at: done.then_some(Timestamp(Some(now))),
        message: message.into(),
    });
    s.service_status = None;
    Op::Put {
        object: Object::Service(s.into()),
        expect: Expect::Version(version),
    }
}

/// Advances the update of one service; returns when to look again.
pub fn advance(
    ctx: &Ctx<'_>,
    _groups: &BTreeMap<Key, Vec<Arc<Task>>>,
    plan: &UpdatePlan,
    mem: &mut Memory,
    ops: &mut Vec<Op>,
) -> Option<SystemTime> {
    let svc = ctx.svc;
    let now = ctx.now;
    for t in &plan.superseded {
        ops.push(set_desired(t, TaskState::Shutdown, now));
    }
    let state = svc
        .update_status
        .as_ref()
        .map(|u| u.state.as_str())
        .unwrap_or("");
    if plan.dirty.is_empty() {
        if plan.in_progress > 0 {
            if let Some(t) = mem.updates.get_mut(&svc.id) {
                t.quiet_since = None;
            }
            return None;
        }
        if !matches!(state, "updating" | "rollback_started") {
            mem.updates.remove(&svc.id);
            return None;
        }
        // As Swarm does, watch the last updated tasks for one Monitor period
        // before declaring the update complete.
        let monitor = match config(svc).monitor {
            m if m > 0 => Duration::from_nanos(m as u64),
            _ => Duration::from_secs(5),
        };
        let track = mem.updates.entry(svc.id.clone()).or_default();
        let since = *track.quiet_since.get_or_insert(now);
        if now < since + monitor {
            return Some(since + monitor);
        }
        mem.updates.remove(&svc.id);
        if state == "updating" {
            ops.push(set_status(svc, "completed", "update completed", now, true));
        } else {
            ops.push(set_status(
                svc,
                "rollback_completed",
                "rollback completed",
                now,
                true,
            ));
        }
        return None;
    }
    if !matches!(state, "updating" | "rollback_started") {
        ops.push(set_status(
            svc,
            "updating",
            "update in progress",
            now,
            false,
        ));
    }
    let track = mem.updates.entry(svc.id.clone()).or_default();
    if plan.in_progress > 0 {
        track.quiet_since = None;
        return None;
    }
    let cfg = config(svc);
    let delay = Duration::from_nanos(cfg.delay.max(0) as u64);
    if track.started {
        let since = *track.quiet_since.get_or_insert(now);
        if now < since + delay {
            return Some(since + delay);
        }
    }
    track.started = true;
    track.quiet_since = None;
    let n = if cfg.parallelism == 0 {
        plan.dirty.len()
    } else {
        cfg.parallelism as usize
    };
    let start_first = cfg.order == "start-first";
    for (key, old) in plan.dirty.iter().take(n) {
        if start_first {
            ops.push(create(ctx, key, old.restarts.clone()));
        } else {
            ops.push(set_desired(old, TaskState::Shutdown, now));
        }
    }
    None
}
