//! What each slot (or, for global services, each node) of a service should
//! hold, and the changes that get it there.

use super::scheduling::{node_fits, to_node_info};
use super::update::{self, UpdatePlan};
use super::Memory;
use shoal_api::{
    ModeKind, Node, NodeState, RestartCondition, Service, Task, TaskState, TaskStatus, Timestamp,
};
use shoal_scheduler::Constraint;
use shoal_store::{Expect, Object, Op, Tables};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where a task belongs within its service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// Replicated services and jobs.
    Slot(u64),
    /// Global services and jobs.
    Node(String),
}

/// The key of a task for its service's mode.
pub fn key_of(kind: ModeKind, t: &Task) -> Key {
    match kind {
        ModeKind::Global | ModeKind::GlobalJob => Key::Node(t.node_id.clone()),
        _ => Key::Slot(t.slot),
    }
}

/// Whether the orchestrator still wants this task to run.
pub fn is_live(t: &Task) -> bool {
    t.desired_state <= TaskState::Running
}

/// Reconciles every service; returns the earliest time a pass is needed again.
pub fn reconcile_all(
    t: &Tables,
    now: SystemTime,
    mem: &mut Memory,
    ops: &mut Vec<Op>,
) -> Option<SystemTime> {
    let mut wake: Option<SystemTime> = None;
    for svc in t.services.iter() {
        if let Some(w) = reconcile_service(t, svc, now, mem, ops) {
            wake = Some(wake.map_or(w, |x| x.min(w)));
        }
    }
    wake
}

/// Context of one service's pass.
pub struct Ctx<'a> {
    /// The tables.
    pub t: &'a Tables,
    /// The service.
    pub svc: &'a Service,
    /// Its parsed constraints.
    pub constraints: Vec<Constraint>,
    /// The executor its tasks need.
    pub executor: &'static str,
    /// Now.
    pub now: SystemTime,
}

impl Ctx<'_> {
    /// Whether `node_id` may keep running this service's tasks.
    pub fn node_ok(&self, node_id: &str) -> bool {
        match self.t.nodes.get(node_id) {
            Some(n) => {
                node_fits(n, &self.constraints, self.executor) && n.status.state != NodeState::Down
            }
            None => false,
        }
    }

    /// Whether `node_id` is up (its agent is connected).
    pub fn node_up(&self, node_id: &str) -> bool {
        self.t
            .nodes
            .get(node_id)
            .is_some_and(|n| n.status.state == NodeState::Ready)
    }
}

fn reconcile_service(
    t: &Tables,
    svc: &Service,
    now: SystemTime,
    mem: &mut Memory,
    ops: &mut Vec<Op>,
) -> Option<SystemTime> {
    let kind = svc.spec.mode.kind();
    let template = &svc.spec.task_template;
    let ctx = Ctx {
        t,
        svc,
        constraints: shoal_scheduler::parse_constraints(template.constraints()).unwrap_or_default(),
        executor: template.runtime_kind().executor(),
        now,
    };
    let mut groups: BTreeMap<Key, Vec<Arc<Task>>> = BTreeMap::new();
    for task in t.tasks_of_service(&svc.id) {
        groups
            .entry(key_of(kind, task))
            .or_default()
            .push(task.clone());
    }
    for g in groups.values_mut() {
        g.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    }
    let mut wake = None;
    let mut plan = UpdatePlan::default();
    let wanted: Vec<Key> = match kind {
        ModeKind::Replicated => (1..=svc.spec.mode.replicas().unwrap_or(1))
            .map(Key::Slot)
            .collect(),
        ModeKind::ReplicatedJob => job_slots(svc, &groups),
        ModeKind::Global | ModeKind::GlobalJob => t
            .nodes
            .iter()
            .filter(|n| {
                eligible_for_new(&ctx, n)
                    || groups
                        .get(&Key::Node(n.id.clone()))
                        .is_some_and(|g| g.iter().any(|x| is_live(x)))
            })
            .map(|n| Key::Node(n.id.clone()))
            .collect(),
    };
    // Tasks in keys no longer wanted: scaled down, or their node left the service's nodes.
    for (key, tasks) in &groups {
        if wanted.contains(key) {
            continue;
        }
        for task in tasks.iter().filter(|x| is_live(x)) {
            let desired = if matches!(key, Key::Slot(_)) {
                TaskState::Remove
            } else {
                TaskState::Shutdown
            };
            ops.push(set_desired(task, desired, now));
        }
    }
    let is_job = matches!(kind, ModeKind::ReplicatedJob | ModeKind::GlobalJob);
    let max_concurrent = match (&svc.spec.mode.replicated_job, kind) {
        (Some(j), ModeKind::ReplicatedJob) => j.max_concurrent.unwrap_or(1).max(1) as usize,
        _ => usize::MAX,
    };
    let mut running_jobs = groups
        .values()
        .filter(|g| g.iter().any(|x| is_live(x)))
        .count();
    for key in wanted {
        let tasks = groups.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        let w = reconcile_key(
            &ctx,
            &key,
            tasks,
            is_job,
            &mut running_jobs,
            max_concurrent,
            &mut plan,
            ops,
        );
        if let Some(w) = w {
            wake = Some(wake.map_or(w, |x: SystemTime| x.min(w)));
        }
    }
    if !is_job {
        if let Some(w) = update::advance(&ctx, &groups, &plan, mem, ops) {
            wake = Some(wake.map_or(w, |x: SystemTime| x.min(w)));
        }
    }
    wake
}

/// The slots of a replicated job: 1..=TotalCompletions.
fn job_slots(svc: &Service, _groups: &BTreeMap<Key, Vec<Arc<Task>>>) -> Vec<Key> {
    let job = svc.spec.mode.replicated_job.clone().unwrap_or_default();
    let max = job.max_concurrent.unwrap_or(1).max(1);
    let total = job.total_completions.unwrap_or(max);
    (1..=total).map(Key::Slot).collect()
}

/// Whether a node can receive a new task of this (global) service.
fn eligible_for_new(ctx: &Ctx<'_>, n: &Node) -> bool {
    n.status.state != NodeState::Down
        && n.spec.availability == shoal_api::Availability::Active
        && node_fits(n, &ctx.constraints, ctx.executor)
        && to_node_info(n).ready
}

#[allow(clippy::too_many_arguments)]
fn reconcile_key(
    ctx: &Ctx<'_>,
    key: &Key,
    tasks: &[Arc<Task>],
    is_job: bool,
    running_jobs: &mut usize,
    max_concurrent: usize,
    plan: &mut UpdatePlan,
    ops: &mut Vec<Op>,
) -> Option<SystemTime> {
    let now = ctx.now;
    let live: Vec<&Arc<Task>> = tasks.iter().filter(|x| is_live(x)).collect();
    if is_job && tasks.iter().any(|x| x.status.state == TaskState::Complete) {
        for t in live {
            if t.status.state.is_terminal() {
                ops.push(set_desired(t, TaskState::Complete, now));
            }
        }
        return None;
    }
    if !live.is_empty() {
        let mut wake = None;
        for t in &live {
            if !t.node_id.is_empty() && !ctx.node_ok(&t.node_id) {
                // Down, drained, gone, or no longer matching: replace at once.
                ops.push(set_desired(t, TaskState::Shutdown, now));
                continue;
            }
            if t.status.state.is_terminal() {
                match restart_decision(ctx, t, is_job) {
                    Restart::Now => {
                        ops.push(set_desired(t, TaskState::Shutdown, now));
                        let mut restarts = recent_restarts(ctx, t);
                        restarts.push(Timestamp(Some(now)));
                        ops.push(create(ctx, key, restarts));
                    }
                    Restart::At(at) => wake = Some(at),
                    Restart::Never => ops.push(set_desired(t, TaskState::Complete, now)),
                }
            }
        }
        plan.observe(ctx, key, &live);
        return wake;
    }
    let latest = tasks.last();
    match latest {
        Some(l) if l.desired_state == TaskState::Complete => None,
        Some(l)
            if !l.status.state.is_terminal()
                && l.desired_state == TaskState::Shutdown
                && !l.node_id.is_empty()
                && ctx.node_ok(&l.node_id)
                && ctx.node_up(&l.node_id) =>
        {
            // Stop-first: the old task is still stopping on a healthy node.
            plan.stopping(key);
            None
        }
        _ => {
            if is_job {
                if *running_jobs >= max_concurrent {
                    return None;
                }
                *running_jobs += 1;
            }
            let restarts = latest.map(|l| l.restarts.clone()).unwrap_or_default();
            ops.push(create(ctx, key, restarts));
            plan.replacing(key);
            None
        }
    }
}

enum Restart {
    Now,
    At(SystemTime),
    Never,
}

fn dur(ns: Option<i64>) -> Duration {
    Duration::from_nanos(ns.unwrap_or(0).max(0) as u64)
}

fn recent_restarts(ctx: &Ctx<'_>, t: &Task) -> Vec<Timestamp> {
    let policy = ctx.svc.spec.task_template.restart();
    let window = dur(policy.window);
    t.restarts
        .iter()
        .filter(|r| {
            window.is_zero()
                || r.0
                    .is_some_and(|at| ctx.now.duration_since(at).unwrap_or_default() <= window)
        })
        .cloned()
        .collect()
}

fn restart_decision(ctx: &Ctx<'_>, t: &Task, is_job: bool) -> Restart {
    let policy = ctx.svc.spec.task_template.restart();
    let mut condition = policy.condition.unwrap_or(RestartCondition::Any);
    if is_job
        && ctx
            .svc
            .spec
            .task_template
            .restart_policy
            .as_ref()
            .and_then(|p| p.condition)
            .is_none()
    {
        condition = RestartCondition::OnFailure;
    }
    let wanted = match (t.status.state, condition) {
        (_, RestartCondition::None) => false,
        (TaskState::Complete, RestartCondition::OnFailure) => false,
        (TaskState::Complete, RestartCondition::Any) => !is_job,
        _ => true,
    };
    if !wanted {
        return Restart::Never;
    }
    if let Some(max) = policy.max_attempts.filter(|m| *m > 0) {
        if recent_restarts(ctx, t).len() as u64 >= max {
            return Restart::Never;
        }
    }
    let at = t.status.timestamp.0.unwrap_or(ctx.now) + dur(policy.delay);
    if at <= ctx.now {
        Restart::Now
    } else {
        Restart::At(at)
    }
}

/// A new task for `key` from the service's current template.
pub fn create(ctx: &Ctx<'_>, key: &Key, restarts: Vec<Timestamp>) -> Op {
    let svc = ctx.svc;
    let now = Timestamp(Some(ctx.now));
    let (slot, node_id, state, message) = match key {
        Key::Slot(s) => (*s, String::new(), TaskState::New, "created"),
        Key::Node(n) => (0, n.clone(), TaskState::Assigned, "assigned"),
    };
    let task = Task {
        id: shoal_api::new_id(),
        created_at: now,
        updated_at: now,
        spec: ctx
            .t
            .task_template(&svc.id)
            .cloned()
            .unwrap_or_else(|| Arc::new(svc.spec.task_template.clone())),
        service_id: svc.id.clone(),
        slot,
        node_id,
        status: TaskStatus {
            timestamp: now,
            state,
            message: message.into(),
            ..Default::default()
        },
        desired_state: TaskState::Running,
        spec_version: svc.version.index,
        restarts,
        ..Default::default()
    };
    Op::Put {
        object: Object::Task(task.into()),
        expect: Expect::Absent,
    }
}

/// Changes a task's desired state.
pub fn set_desired(t: &Task, desired: TaskState, now: SystemTime) -> Op {
    let mut t = t.clone();
    let version = t.version.index;
    t.desired_state = desired;
    t.updated_at = Timestamp(Some(now));
    Op::Put {
        object: Object::Task(t.into()),
        expect: Expect::Version(version),
    }
}
