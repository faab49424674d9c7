//! Properties of placement over random clusters and task groups, checked against a plain model
//! written from the rules (not from the scheduler's data structures).

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use shoal_scheduler::{
    parse_constraints, parse_preferences, Availability, NodeInfo, NodeRole, NodeUsage, Protocol,
    Resources, Scheduler, Strategy as Pick, TaskGroup, TaskInfo,
};

const UNIT: i64 = 1_000;
const ZONES: [&str; 4] = ["", "a", "b", "c"];
const CONSTRAINTS: [&str; 7] = [
    "node.labels.zone==a",
    "node.labels.zone!=b",
    "node.role==worker",
    "node.platform.arch!=aarch64",
    "node.labels.zone==~c",
    "node.labels.zone!=~a",
    "engine.labels.gpu==yes",
];
const PORTS: [(Protocol, u16); 2] = [(Protocol::Tcp, 80), (Protocol::Udp, 53)];
const EXECUTORS: [&str; 2] = ["process", "docker"];
const SERVICES: usize = 3;

fn node_strategy(id: usize) -> impl proptest::strategy::Strategy<Value = NodeInfo> {
    (
        prop::bool::weighted(0.9),
        0..4usize,
        0..4usize,
        any::<bool>(),
        any::<bool>(),
        0..5i64,
        0..5i64,
        0..4usize,
    )
        .prop_map(move |(ready, avail, zone, manager, arm, cpu, mem, execs)| {
            let mut node = NodeInfo::new(format!("n{id}"));
            node.ready = ready;
            node.availability = [
                Availability::Active,
                Availability::Active,
                Availability::Pause,
                Availability::Drain,
            ][avail];
            if !ZONES[zone].is_empty() {
                node.labels.insert("zone".into(), ZONES[zone].into());
            }
            if manager {
                node.role = NodeRole::Manager;
            }
            if arm {
                node.arch = "aarch64".into();
                node.engine_labels.insert("gpu".into(), "YES".into());
            }
            node.capacity = Resources::new(cpu * UNIT, mem * UNIT);
            node.executors = EXECUTORS
                .iter()
                .enumerate()
                .filter(|(i, _)| execs & (1 << i) != 0)
                .map(|(_, e)| e.to_string())
                .collect();
            node
        })
}

fn nodes_strategy(max: usize) -> impl proptest::strategy::Strategy<Value = Vec<NodeInfo>> {
    (0..=max).prop_flat_map(|n| (0..n).map(node_strategy).collect::<Vec<_>>())
}

/// A batch: the group and how many tasks to place. Per-service settings (max replicas, ports)
/// derive from the service, so every batch of a service agrees with the others.
fn batch_strategy() -> impl proptest::strategy::Strategy<Value = (TaskGroup, usize)> {
    let constraints = prop::collection::vec(0..CONSTRAINTS.len(), 0..3);
    let spread = prop::option::of(prop::sample::select(vec![
        "node.labels.zone",
        "node.role",
        "node.id",
    ]));
    (
        0..SERVICES,
        constraints,
        spread,
        0..3i64,
        0..3i64,
        0..3usize,
        0..3usize,
        0..9usize,
    )
        .prop_map(
            |(service, constraints, spread, cpu, mem, executor, strategy, count)| {
                let exprs: Vec<String> = constraints
                    .into_iter()
                    .map(|i| CONSTRAINTS[i].to_owned())
                    .collect();
                let prefs: Vec<String> = spread
                    .map(|key| format!("spread={key}"))
                    .into_iter()
                    .collect();
                let group = TaskGroup {
                    service_id: format!("s{service}"),
                    constraints: parse_constraints(&exprs).unwrap(),
                    preferences: parse_preferences(&prefs).unwrap(),
                    reservations: Resources::new(cpu * UNIT, mem * UNIT),
                    max_replicas_per_node: service as u64, // s0 unlimited, s1 one, s2 two
                    host_ports: PORTS[..service.min(1)].to_vec(), // s1 and s2 publish tcp/80
                    executor: ["", "process", "docker"][executor].to_owned(),
                    strategy: [Pick::Spread, Pick::Binpack, Pick::Random][strategy],
                };
                (group, count)
            },
        )
}

/// The rules, written plainly: may `node` take one more task of `group` in the state `s`?
fn fits(
    s: &Scheduler,
    ports: &HashMap<(String, (Protocol, u16)), u32>,
    node: &NodeInfo,
    group: &TaskGroup,
) -> bool {
    let usage = s.node_usage(&node.id).unwrap_or_default();
    let room = |want: i64, used: i64, cap: i64| want <= 0 || used + want <= cap;
    let svc = s.service_tasks_on_node(&group.service_id, &node.id) as u64;
    node.ready
        && node.availability == Availability::Active
        && room(
            group.reservations.nano_cpus,
            usage.reserved.nano_cpus,
            node.capacity.nano_cpus,
        )
        && room(
            group.reservations.memory_bytes,
            usage.reserved.memory_bytes,
            node.capacity.memory_bytes,
        )
        && group
            .constraints
            .iter()
            .filter(|c| !c.soft)
            .all(|c| c.matches(node))
        && group
            .host_ports
            .iter()
            .all(|p| !ports.contains_key(&(node.id.clone(), *p)))
        && (group.max_replicas_per_node == 0 || svc < group.max_replicas_per_node)
        && (group.executor.is_empty() || node.executors.contains(&group.executor))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_placement_satisfies_the_filters_and_unplaced_tasks_fit_nowhere(
        nodes in nodes_strategy(12),
        batches in prop::collection::vec(batch_strategy(), 1..8),
        seed in any::<u64>(),
    ) {
        let mut s = Scheduler::with_seed(seed);
        let by_id: BTreeMap<String, NodeInfo> = nodes.iter().map(|n| (n.id.clone(), n.clone())).collect();
        for n in nodes {
            s.upsert_node(n);
        }
        let mut ports: HashMap<(String, (Protocol, u16)), u32> = HashMap::new();
        for (b, (group, count)) in batches.iter().enumerate() {
            let ids: Vec<String> = (0..*count).map(|i| format!("b{b}.{i}")).collect();
            let placement = s.schedule(group, &ids);
            let (placed, explanation) = (placement.nodes.len(), placement.explanation.clone());
            for node_id in placement.nodes {
                let node = &by_id[node_id];
                prop_assert!(node.ready && node.availability == Availability::Active);
                prop_assert!(group.constraints.iter().filter(|c| !c.soft).all(|c| c.matches(node)));
                prop_assert!(group.executor.is_empty() || node.executors.contains(&group.executor));
                for &port in &group.host_ports {
                    let users = ports.entry((node_id.to_string(), port)).or_insert(0);
                    *users += 1;
                    prop_assert_eq!(*users, 1, "host port used twice on {}", node_id);
                }
            }
            for node in by_id.values() {
                let usage = s.node_usage(&node.id).unwrap_or_default();
                prop_assert!(usage.reserved.nano_cpus <= node.capacity.nano_cpus);
                prop_assert!(usage.reserved.memory_bytes <= node.capacity.memory_bytes);
                let svc = s.service_tasks_on_node(&group.service_id, &node.id) as u64;
                prop_assert!(group.max_replicas_per_node == 0 || svc <= group.max_replicas_per_node);
            }
            prop_assert_eq!(explanation.is_none(), placed == *count);
            if let Some(explanation) = explanation {
                prop_assert_eq!(explanation.nodes, by_id.len());
                prop_assert!(!by_id.values().any(|n| fits(&s, &ports, n, group)), "{} but a node fits", explanation);
            }
        }
    }

    #[test]
    fn spread_over_identical_nodes_keeps_counts_within_one(
        nodes in 1..12usize,
        batches in prop::collection::vec(1..20usize, 1..6),
        zoned in any::<bool>(),
    ) {
        let mut s = Scheduler::new();
        for i in 0..nodes {
            let mut node = NodeInfo::new(format!("n{i}"));
            node.labels.insert("zone".into(), "a".into());
            s.upsert_node(node);
        }
        let prefs = if zoned { vec!["spread=node.labels.zone".to_owned()] } else { vec![] };
        let group = TaskGroup { preferences: parse_preferences(&prefs).unwrap(), ..TaskGroup::new("web") };
        for (b, count) in batches.into_iter().enumerate() {
            let ids: Vec<String> = (0..count).map(|i| format!("{b}.{i}")).collect();
            prop_assert!(s.schedule(&group, &ids).is_complete());
            let counts: Vec<usize> = (0..nodes).map(|i| s.service_tasks_on_node("web", &format!("n{i}"))).collect();
            prop_assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1, "{:?}", counts);
        }
    }

    #[test]
    fn adding_then_removing_tasks_restores_the_state(
        nodes in nodes_strategy(6),
        base in prop::collection::vec(task_strategy(), 0..20),
        extra in prop::collection::vec(task_strategy(), 0..20),
        batch in batch_strategy(),
    ) {
        let mut s = Scheduler::new();
        for n in nodes {
            s.upsert_node(n);
        }
        for (i, mut t) in base.into_iter().enumerate() {
            t.id = format!("base{}", i % 15); // some IDs repeat: re-adding replaces
            s.add_task(t);
        }
        let before = snapshot(&s);
        let mut added = Vec::new();
        for (i, mut t) in extra.into_iter().enumerate() {
            t.id = format!("extra{i}");
            added.push(t.id.clone());
            s.add_task(t);
        }
        let (group, count) = batch;
        let scheduled: Vec<String> = (0..count).map(|i| format!("sched{i}")).collect();
        s.schedule(&group, &scheduled);
        for id in added.iter().chain(&scheduled).rev() {
            s.remove_task(id);
        }
        prop_assert_eq!(before, snapshot(&s));
        if let Some(node) = s.task_node("base0").map(str::to_owned) {
            let usage = s.node_usage(&node).unwrap();
            s.remove_task("base0");
            s.add_task(TaskInfo { id: "base0".into(), service_id: "s0".into(), node_id: node.clone(), ..TaskInfo::default() });
            s.remove_task("base0");
            s.add_task(TaskInfo { id: "again".into(), service_id: "s0".into(), node_id: node.clone(), ..TaskInfo::default() });
            s.remove_task("again");
            prop_assert!(s.node_usage(&node).is_none_or(|u| u.tasks + 1 == usage.tasks));
        }
    }
}

fn task_strategy() -> impl proptest::strategy::Strategy<Value = TaskInfo> {
    (
        0..SERVICES,
        0..9usize,
        0..3i64,
        0..3i64,
        prop::option::of(0..PORTS.len()),
    )
        .prop_map(|(service, node, cpu, mem, port)| TaskInfo {
            id: String::new(),
            service_id: format!("s{service}"),
            node_id: format!("n{node}"), // n6..n8 are never known nodes
            reservations: Resources::new(cpu * UNIT, mem * UNIT),
            host_ports: port.map(|p| PORTS[p]).into_iter().collect(),
        })
}

/// Everything observable about nodes n0..n8 and services s0..s2.
fn snapshot(s: &Scheduler) -> (usize, Vec<Option<NodeUsage>>, Vec<usize>) {
    let nodes: Vec<String> = (0..9).map(|i| format!("n{i}")).collect();
    let services: Vec<String> = (0..SERVICES).map(|i| format!("s{i}")).collect();
    let usage = nodes.iter().map(|n| s.node_usage(n)).collect();
    let mut counts: Vec<usize> = services
        .iter()
        .map(|svc| s.service_task_count(svc))
        .collect();
    for svc in &services {
        counts.extend(nodes.iter().map(|n| s.service_tasks_on_node(svc, n)));
    }
    (s.task_count(), usage, counts)
}
