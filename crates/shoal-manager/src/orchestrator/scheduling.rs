//! Assigns unassigned tasks to nodes with the pure scheduler, and records
//! why the others stay pending. The scheduler's view (nodes, and what the
//! tasks already on them reserve) is built from the store on each pass.

use super::slots::is_live;
use shoal_api::{
    Availability as ApiAvail, Node, NodeRole as ApiRole, NodeState, Service, Task, TaskState,
    Timestamp,
};
use shoal_scheduler::{
    Availability, Constraint, NodeInfo, NodeRole, Protocol, Resources, Scheduler, Strategy,
    TaskGroup, TaskInfo,
};
use shoal_store::{Expect, Object, Op, Tables};
use std::collections::BTreeMap;

/// The scheduler's view of a node.
pub fn to_node_info(n: &Node) -> NodeInfo {
    NodeInfo {
        id: n.id.clone(),
        hostname: n.description.hostname.clone(),
        role: match n.spec.role {
            ApiRole::Manager => NodeRole::Manager,
            ApiRole::Worker => NodeRole::Worker,
        },
        ready: n.status.state == NodeState::Ready,
        availability: match n.spec.availability {
            ApiAvail::Active => Availability::Active,
            ApiAvail::Pause => Availability::Pause,
            ApiAvail::Drain => Availability::Drain,
        },
        os: n.description.platform.os.clone(),
        arch: n.description.platform.architecture.clone(),
        labels: n.spec.labels.clone(),
        engine_labels: n.description.engine.labels.clone(),
        capacity: Resources::new(
            n.description.resources.nano_cpus,
            n.description.resources.memory_bytes,
        ),
        executors: n.description.executors.clone(),
    }
}

/// Whether `n` may keep running a task with these (hard) constraints and executor.
pub fn node_fits(n: &Node, constraints: &[Constraint], executor: &str) -> bool {
    if n.spec.availability == ApiAvail::Drain {
        return false;
    }
    if !n.description.executors.iter().any(|e| e == executor) {
        return false;
    }
    let info = to_node_info(n);
    constraints
        .iter()
        .filter(|c| !c.soft)
        .all(|c| c.matches(&info))
}

fn host_ports(svc: &Service) -> Vec<(Protocol, u16)> {
    svc.spec
        .endpoint_spec
        .as_ref()
        .map(|e| {
            e.ports
                .iter()
                .filter(|p| p.publish_mode == "host" && p.published_port > 0)
                .map(|p| {
                    let proto = match p.protocol.as_str() {
                        "udp" => Protocol::Udp,
                        "sctp" => Protocol::Sctp,
                        _ => Protocol::Tcp,
                    };
                    (proto, p.published_port as u16)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The placement requirements of a service's tasks.
pub fn task_group(svc: &Service) -> TaskGroup {
    let tpl = &svc.spec.task_template;
    let placement = tpl.placement.clone().unwrap_or_default();
    let prefs: Vec<String> = placement
        .preferences
        .iter()
        .filter_map(|p| {
            p.spread
                .as_ref()
                .map(|s| format!("spread={}", s.spread_descriptor))
        })
        .collect();
    let r = tpl.reservations();
    TaskGroup {
        service_id: svc.id.clone(),
        constraints: shoal_scheduler::parse_constraints(&placement.constraints).unwrap_or_default(),
        preferences: shoal_scheduler::parse_preferences(&prefs).unwrap_or_default(),
        reservations: Resources::new(r.nano_cpus, r.memory_bytes),
        max_replicas_per_node: placement.max_replicas,
        host_ports: host_ports(svc),
        executor: tpl.runtime_kind().executor().to_string(),
        strategy: match placement.strategy.as_str() {
            "binpack" => Strategy::Binpack,
            "random" => Strategy::Random,
            _ => Strategy::Spread,
        },
    }
}

/// Services whose tasks one pass handles once it has this many ops (the
/// orchestrator passes again at once after a write, so the rest follows;
/// this bounds the copies in flight when 100,000 tasks arrive together).
const OPS_PER_PASS: usize = 2000;

/// Assignments (and pending explanations) for the unassigned tasks (of the
/// first services, up to about [`OPS_PER_PASS`] changes).
pub fn assign(t: &Tables) -> Vec<Op> {
    let mut waiting: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for task in t.tasks.iter() {
        if task.node_id.is_empty() && is_live(task) && task.status.state <= TaskState::Pending {
            waiting
                .entry(task.service_id.as_str())
                .or_default()
                .push(task);
        }
    }
    if waiting.is_empty() {
        return Vec::new();
    }
    let mut s = Scheduler::new();
    for n in t.nodes.iter() {
        s.upsert_node(to_node_info(n));
    }
    let mut ports_of: BTreeMap<&str, Vec<(Protocol, u16)>> = BTreeMap::new();
    for task in t.tasks.iter() {
        if task.node_id.is_empty() || !is_live(task) || task.status.state.is_terminal() {
            continue;
        }
        let ports = ports_of
            .entry(task.service_id.as_str())
            .or_insert_with(|| {
                t.services
                    .get(&task.service_id)
                    .map(|svc| host_ports(svc))
                    .unwrap_or_default()
            })
            .clone();
        let r = task.spec.reservations();
        s.add_task(TaskInfo {
            id: task.id.clone(),
            service_id: task.service_id.clone(),
            node_id: task.node_id.clone(),
            reservations: Resources::new(r.nano_cpus, r.memory_bytes),
            host_ports: ports,
        });
    }
    let now = Timestamp::now();
    let mut ops = Vec::new();
    for (service_id, mut tasks) in waiting {
        if ops.len() >= OPS_PER_PASS {
            break;
        }
        let Some(svc) = t.services.get(service_id) else {
            continue;
        };
        tasks.sort_by_key(|x| (x.slot, x.created_at));
        let group = task_group(svc);
        let ids: Vec<&str> = tasks.iter().map(|x| x.id.as_str()).collect();
        let placement = s.schedule(&group, &ids);
        let nodes: Vec<String> = placement.nodes.iter().map(|n| n.to_string()).collect();
        let why = placement
            .explanation
            .as_ref()
            .map(|e| e.to_string())
            .unwrap_or_default();
        for (i, task) in tasks.iter().enumerate() {
            let node = nodes.get(i);
            if node.is_none() && task.status.state == TaskState::Pending && task.status.err == why {
                continue;
            }
            let mut nt = (*task).clone();
            let version = nt.version.index;
            if let Some(node) = node {
                nt.node_id = node.clone();
                nt.status.state = TaskState::Assigned;
                nt.status.message = "scheduler assigned task to node".into();
                nt.status.err = String::new();
                nt.status.timestamp = now;
            } else {
                nt.status.state = TaskState::Pending;
                nt.status.message = "pending task scheduling".into();
                nt.status.err = why.clone();
                nt.status.timestamp = now;
            }
            nt.updated_at = now;
            ops.push(Op::Put {
                object: Object::Task(nt.into()),
                expect: Expect::Version(version),
            });
        }
    }
    ops
}
