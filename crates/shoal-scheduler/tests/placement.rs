//! Placement scenarios, through the public API only: each test is one rule of the scheduler.

use std::collections::BTreeMap;

use shoal_scheduler::{
    parse_constraints, parse_preferences, Availability, NodeInfo, NodeRole, Placement, Protocol,
    Resources, Scheduler, Strategy, TaskGroup, TaskInfo,
};

const CPU: i64 = 1_000_000_000;
const GIB: i64 = 1 << 30;

/// A ready, active worker with 4 CPUs and 8 GiB, in `zone` (no label when empty).
fn node(id: &str, zone: &str) -> NodeInfo {
    let mut node = NodeInfo::new(id);
    node.capacity = Resources::new(4 * CPU, 8 * GIB);
    if !zone.is_empty() {
        node.labels.insert("zone".into(), zone.into());
    }
    node
}

fn cluster(nodes: impl IntoIterator<Item = NodeInfo>) -> Scheduler {
    let mut s = Scheduler::new();
    for n in nodes {
        s.upsert_node(n);
    }
    s
}

fn group(service: &str, constraints: &[&str]) -> TaskGroup {
    let constraints: Vec<String> = constraints.iter().map(|c| c.to_string()).collect();
    TaskGroup {
        constraints: parse_constraints(&constraints).unwrap(),
        ..TaskGroup::new(service)
    }
}

fn ids(service: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{service}.{i}")).collect()
}

/// Places `n` tasks named `<service>.<i>`.
fn place<'a>(s: &'a mut Scheduler, g: &TaskGroup, n: usize) -> Placement<'a> {
    s.schedule(g, &ids(&g.service_id, n))
}

fn placed_on<'a>(p: &Placement<'a>) -> Vec<&'a str> {
    p.nodes.clone()
}

/// Tasks of `service` per node, for nodes n1..=n{count}.
fn counts(s: &Scheduler, service: &str, count: usize) -> Vec<usize> {
    (1..=count)
        .map(|i| s.service_tasks_on_node(service, &format!("n{i}")))
        .collect()
}

fn task(id: &str, service: &str, node: &str, reservations: Resources) -> TaskInfo {
    TaskInfo {
        id: id.into(),
        service_id: service.into(),
        node_id: node.into(),
        reservations,
        host_ports: vec![],
    }
}

#[test]
fn drained_node_gets_no_tasks() {
    let mut s = cluster([node("n1", ""), node("n2", "")]);
    s.upsert_node(NodeInfo {
        availability: Availability::Drain,
        ..node("n1", "")
    });
    let p = place(&mut s, &TaskGroup::new("web"), 3);
    assert_eq!(placed_on(&p), ["n2", "n2", "n2"]);
}

#[test]
fn paused_and_down_nodes_get_no_tasks() {
    let paused = NodeInfo {
        availability: Availability::Pause,
        ..node("n1", "")
    };
    let down = NodeInfo {
        ready: false,
        ..node("n2", "")
    };
    let mut s = cluster([paused, down]);
    let p = place(&mut s, &TaskGroup::new("web"), 1);
    assert_eq!(
        p.explanation.unwrap().to_string(),
        "no suitable node (2 nodes not available for new tasks)"
    );
}

#[test]
fn reservations_must_fit_in_what_is_left_on_the_node() {
    let mut s = cluster([node("n1", ""), node("n2", "")]);
    s.add_task(task("old", "db", "n1", Resources::new(3 * CPU, GIB)));
    let g = TaskGroup {
        reservations: Resources::new(2 * CPU, GIB),
        ..TaskGroup::new("web")
    };
    let p = place(&mut s, &g, 3);
    assert_eq!(placed_on(&p), ["n2", "n2"]);
    assert_eq!(
        p.explanation.unwrap().to_string(),
        "no suitable node (2 nodes lack CPU)"
    );
    assert_eq!(
        s.node_usage("n2").unwrap().reserved,
        Resources::new(4 * CPU, 2 * GIB)
    );
}

#[test]
fn tasks_without_reservations_always_fit() {
    let mut s = cluster([NodeInfo::new("n1")]);
    assert_eq!(place(&mut s, &TaskGroup::new("web"), 5).nodes.len(), 5);
}

#[test]
fn constraints_select_by_role_platform_and_labels() {
    let manager = NodeInfo {
        role: NodeRole::Manager,
        ..node("n1", "a")
    };
    let arm = NodeInfo {
        arch: "aarch64".into(),
        ..node("n2", "a")
    };
    let mut engine = node("n3", "b");
    engine.engine_labels.insert("storage".into(), "SSD".into());
    let mut s = cluster([manager, arm, engine, node("n4", "a")]);
    let one = |s: &mut Scheduler, c: &[&str]| placed_on(&place(s, &group("svc", c), 1)).join(",");
    assert_eq!(one(&mut s, &["node.role==manager"]), "n1");
    assert_eq!(one(&mut s, &["node.platform.arch==AARCH64"]), "n2");
    assert_eq!(one(&mut s, &["engine.labels.storage==ssd"]), "n3");
    assert_eq!(
        one(
            &mut s,
            &[
                "node.labels.zone==a",
                "node.role!=manager",
                "node.platform.arch!=aarch64"
            ]
        ),
        "n4"
    );
    assert_eq!(one(&mut s, &["node.hostname==n2"]), "n2");
    assert_eq!(one(&mut s, &["node.id == N3"]), "n3");
    assert_eq!(one(&mut s, &["node.platform.os!=linux"]), "");
}

#[test]
fn node_without_the_label_satisfies_not_equal_only() {
    let mut s = cluster([node("n1", "a"), node("n2", "")]);
    assert_eq!(
        placed_on(&place(&mut s, &group("x", &["node.labels.zone!=a"]), 2)),
        ["n2", "n2"]
    );
    let p = place(&mut s, &group("y", &["node.labels.zone==b"]), 1);
    assert_eq!(
        p.explanation.unwrap().to_string(),
        "no suitable node (2 nodes do not satisfy constraints)"
    );
}

#[test]
fn soft_constraint_is_preferred_while_it_fits() {
    let mut s = cluster([node("n1", "a"), node("n2", "b"), node("n3", "b")]);
    let g = group("web", &["node.labels.zone==~b"]);
    assert_eq!(placed_on(&place(&mut s, &g, 4)), ["n2", "n3", "n2", "n3"]);
}

#[test]
fn soft_constraint_is_dropped_only_when_nothing_fits() {
    let mut s = cluster([node("n1", "a"), node("n2", "b"), node("n3", "c")]);
    let g = TaskGroup {
        max_replicas_per_node: 1,
        ..group("web", &["node.labels.zone==~b", "node.labels.zone!=c"])
    };
    // n2 takes the first task; then no zone-b node has room, so the soft constraint is dropped,
    // but the hard one still keeps n3 out.
    let p = place(&mut s, &g, 3);
    assert_eq!(placed_on(&p), ["n2", "n1"]);
    let text = p.explanation.unwrap().to_string();
    assert_eq!(text, "no suitable node (1 node does not satisfy constraints; 2 nodes reached the max replicas per node (1))");
    // A soft constraint no node satisfies at all is simply ignored.
    let mut s = cluster([node("n1", "a")]);
    assert_eq!(
        placed_on(&place(&mut s, &group("api", &["node.labels.zone==~z"]), 1)),
        ["n1"]
    );
}

#[test]
fn host_port_conflicts_keep_tasks_apart() {
    let mut s = cluster([node("n1", ""), node("n2", ""), node("n3", "")]);
    let mut other = task("other", "proxy", "n1", Resources::default());
    other.host_ports = vec![(Protocol::Tcp, 80)];
    s.add_task(other);
    let g = TaskGroup {
        host_ports: vec![(Protocol::Tcp, 80)],
        ..TaskGroup::new("web")
    };
    let p = place(&mut s, &g, 3);
    assert_eq!(placed_on(&p), ["n2", "n3"]);
    assert_eq!(
        p.explanation.unwrap().to_string(),
        "no suitable node (3 nodes have a host port conflict)"
    );
    // Another protocol on the same port number does not conflict.
    let udp = TaskGroup {
        host_ports: vec![(Protocol::Udp, 80)],
        ..TaskGroup::new("dns")
    };
    assert_eq!(place(&mut s, &udp, 3).nodes.len(), 3);
}

#[test]
fn max_replicas_per_node_caps_tasks_of_the_service() {
    let mut s = cluster([node("n1", ""), node("n2", "")]);
    s.add_task(task("web.old", "web", "n1", Resources::default()));
    let g = TaskGroup {
        max_replicas_per_node: 2,
        ..TaskGroup::new("web")
    };
    let p = place(&mut s, &g, 4);
    assert_eq!(p.nodes.len(), 3);
    assert_eq!(
        p.explanation.unwrap().to_string(),
        "no suitable node (2 nodes reached the max replicas per node (2))"
    );
    assert_eq!(counts(&s, "web", 2), [2, 2]);
}

#[test]
fn executor_must_be_available_on_the_node() {
    let docker = NodeInfo {
        executors: vec!["process".into(), "docker".into()],
        ..node("n2", "")
    };
    let mut s = cluster([node("n1", ""), docker]);
    let g = TaskGroup {
        executor: "docker".into(),
        ..TaskGroup::new("web")
    };
    assert_eq!(placed_on(&place(&mut s, &g, 2)), ["n2", "n2"]);
    let g = TaskGroup {
        executor: "wasm".into(),
        ..TaskGroup::new("web")
    };
    let p = place(&mut s, &g, 1);
    assert_eq!(
        p.explanation.unwrap().to_string(),
        "no suitable node (2 nodes lack the wasm executor)"
    );
}

#[test]
fn spread_prefers_fewest_service_tasks_then_fewest_tasks_then_node_id() {
    let mut s = cluster([node("n3", ""), node("n1", ""), node("n2", "")]);
    s.add_task(task("db.1", "db", "n1", Resources::default()));
    s.add_task(task("web.old", "web", "n2", Resources::default()));
    let p = place(&mut s, &TaskGroup::new("web"), 4);
    assert_eq!(placed_on(&p), ["n3", "n1", "n2", "n3"]);
}

#[test]
fn binpack_fills_the_fullest_node_first() {
    let mut s = cluster([node("n1", ""), node("n2", ""), node("n3", "")]);
    s.add_task(task("db.1", "db", "n2", Resources::new(CPU, GIB)));
    let g = TaskGroup {
        strategy: Strategy::Binpack,
        reservations: Resources::new(CPU, GIB),
        ..TaskGroup::new("web")
    };
    let p = place(&mut s, &g, 5);
    assert_eq!(placed_on(&p), ["n2", "n2", "n2", "n1", "n1"]);
}

#[test]
fn random_strategy_is_deterministic_for_a_seed() {
    let nodes = || (1..=20).map(|i| node(&format!("n{i}"), ""));
    let g = TaskGroup {
        strategy: Strategy::Random,
        ..TaskGroup::new("web")
    };
    let run = |seed| {
        let mut s = Scheduler::with_seed(seed);
        nodes().for_each(|n| s.upsert_node(n));
        placed_on(&place(&mut s, &g, 10)).join(",")
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn spread_preference_balances_zones_then_nodes() {
    // Zone a has three nodes, zone b one: tasks still split evenly between the zones.
    let mut s = cluster([
        node("n1", "a"),
        node("n2", "a"),
        node("n3", "a"),
        node("n4", "b"),
    ]);
    let g = TaskGroup {
        preferences: parse_preferences(&["spread=node.labels.zone".into()]).unwrap(),
        ..TaskGroup::new("web")
    };
    place(&mut s, &g, 6);
    assert_eq!(counts(&s, "web", 4), [1, 1, 1, 3]);
}

#[test]
fn nested_preferences_spread_over_zone_then_rack() {
    let racked = |id: &str, zone: &str, rack: &str| {
        let mut n = node(id, zone);
        n.labels.insert("rack".into(), rack.into());
        n
    };
    let nodes = [
        racked("n1", "a", "1"),
        racked("n2", "a", "1"),
        racked("n3", "a", "2"),
        racked("n4", "b", "1"),
    ];
    let mut s = cluster(nodes);
    let prefs = [
        "spread=node.labels.zone".to_owned(),
        "spread=node.labels.rack".to_owned(),
    ];
    let g = TaskGroup {
        preferences: parse_preferences(&prefs).unwrap(),
        ..TaskGroup::new("web")
    };
    place(&mut s, &g, 8);
    // Zone a gets 4 tasks: 2 on rack 1 (n1, n2) and 2 on rack 2 (n3); zone b gets 4.
    assert_eq!(counts(&s, "web", 4), [1, 1, 2, 4]);
}

#[test]
fn nodes_without_the_label_form_their_own_group() {
    let mut s = cluster([node("n1", "a"), node("n2", ""), node("n3", "")]);
    let g = TaskGroup {
        preferences: parse_preferences(&["spread=node.labels.zone".into()]).unwrap(),
        ..TaskGroup::new("web")
    };
    place(&mut s, &g, 4);
    assert_eq!(counts(&s, "web", 3), [2, 1, 1]);
}

#[test]
fn spread_preference_counts_existing_tasks_and_skips_full_zones() {
    let mut s = cluster([node("n1", "a"), node("n2", "b"), node("n3", "c")]);
    s.add_task(task("web.a", "web", "n1", Resources::default()));
    s.add_task(task("web.b", "web", "n1", Resources::default()));
    s.add_task(task("big", "db", "n3", Resources::new(4 * CPU, 0)));
    let g = TaskGroup {
        reservations: Resources::new(CPU, 0),
        preferences: parse_preferences(&["spread=node.labels.zone".into()]).unwrap(),
        ..TaskGroup::new("web")
    };
    let p = place(&mut s, &g, 4);
    // Zone c is full; zone b catches up with zone a's two tasks, then they alternate.
    assert_eq!(placed_on(&p), ["n2", "n2", "n1", "n2"]);
}

#[test]
fn explanation_counts_each_filter() {
    let mut s = cluster([
        NodeInfo {
            ready: false,
            ..node("n1", "a")
        },
        NodeInfo {
            availability: Availability::Drain,
            ..node("n2", "a")
        },
        NodeInfo {
            capacity: Resources::new(CPU, GIB),
            ..node("n3", "a")
        },
        NodeInfo {
            capacity: Resources::new(8 * CPU, GIB),
            ..node("n4", "a")
        },
        NodeInfo {
            capacity: Resources::new(CPU, 16 * GIB),
            ..node("n5", "a")
        },
        node("n6", "b"),
        NodeInfo {
            executors: vec![],
            ..node("n7", "a")
        },
    ]);
    let g = TaskGroup {
        reservations: Resources::new(2 * CPU, 2 * GIB),
        executor: "process".into(),
        ..group("web", &["node.labels.zone==a"])
    };
    let p = place(&mut s, &g, 1);
    assert!(!p.is_complete());
    assert_eq!(
        p.explanation.unwrap().to_string(),
        "no suitable node (2 nodes not available for new tasks; 2 nodes lack CPU; 2 nodes lack memory; \
         1 node does not satisfy constraints; 1 node lacks the process executor)"
    );
}

#[test]
fn empty_cluster_is_explained() {
    let mut s = Scheduler::new();
    let p = place(&mut s, &TaskGroup::new("web"), 2);
    assert!(p.nodes.is_empty());
    assert_eq!(
        p.explanation.unwrap().to_string(),
        "no suitable node (no nodes in the cluster)"
    );
}

#[test]
fn batch_placements_are_seen_by_the_next_batch() {
    let mut s = cluster([node("n1", ""), node("n2", "")]);
    let g = TaskGroup::new("web");
    s.schedule(&g, &["a", "b", "c"]);
    s.schedule(&g, &["d"]);
    assert_eq!(counts(&s, "web", 2), [2, 2]);
    assert_eq!(s.task_node("c"), Some("n1"));
    assert_eq!(s.task_count(), 4);
    s.remove_task("a");
    assert_eq!(counts(&s, "web", 2), [1, 2]);
}

#[test]
fn rescheduling_a_known_task_moves_it_without_double_counting() {
    let mut s = cluster([node("n1", ""), node("n2", "")]);
    let g = TaskGroup {
        reservations: Resources::new(CPU, 0),
        ..TaskGroup::new("web")
    };
    s.schedule(&g, &["t"]);
    s.upsert_node(NodeInfo {
        availability: Availability::Drain,
        ..node("n1", "")
    });
    s.schedule(&g, &["t"]);
    assert_eq!(s.task_node("t"), Some("n2"));
    assert_eq!(s.node_usage("n1").unwrap().tasks, 0);
    assert_eq!(s.node_usage("n2").unwrap().reserved.nano_cpus, CPU);
}

#[test]
fn adding_a_known_task_replaces_it() {
    let mut s = cluster([node("n1", ""), node("n2", "")]);
    s.add_task(task("t", "web", "n1", Resources::new(CPU, GIB)));
    s.add_task(task("t", "web", "n2", Resources::new(CPU, GIB)));
    assert_eq!(s.node_usage("n1").unwrap().tasks, 0);
    assert_eq!(
        s.node_usage("n2").unwrap().reserved,
        Resources::new(CPU, GIB)
    );
    assert_eq!((s.task_count(), s.service_task_count("web")), (1, 1));
    s.remove_task("nope");
    s.remove_task("t");
    s.remove_task("t");
    assert_eq!((s.task_count(), s.service_task_count("web")), (0, 0));
}

#[test]
fn task_on_an_unknown_node_is_counted_when_the_node_arrives() {
    let mut s = Scheduler::new();
    s.add_task(task("t", "web", "n1", Resources::new(3 * CPU, 0)));
    assert!(!s.contains_node("n1"));
    assert_eq!(s.node_usage("n1").unwrap().tasks, 1);
    s.upsert_node(node("n1", ""));
    let g = TaskGroup {
        reservations: Resources::new(2 * CPU, 0),
        ..TaskGroup::new("web")
    };
    assert_eq!(
        place(&mut s, &g, 1).explanation.unwrap().to_string(),
        "no suitable node (1 node lacks CPU)"
    );
    s.remove_node("n1");
    assert_eq!(s.node_count(), 0);
    assert_eq!(
        s.node_usage("n1").unwrap().tasks,
        1,
        "tasks outlive their node until removed"
    );
    s.remove_task("t");
    assert_eq!(s.node_usage("n1"), None);
}

#[test]
fn labels_are_matched_after_an_update_of_the_node() {
    let mut s = cluster([node("n1", "a")]);
    let g = group("web", &["node.labels.zone==b"]);
    assert!(!place(&mut s, &g, 1).is_complete());
    s.upsert_node(node("n1", "b"));
    assert_eq!(place(&mut s, &g, 1).node(0), Some("n1"));
    let mut labels = BTreeMap::new();
    labels.insert("zone".to_owned(), "B".to_owned());
    s.upsert_node(NodeInfo {
        labels,
        ..node("n1", "")
    });
    assert_eq!(place(&mut s, &g, 1).node(0), Some("n1"));
}

#[test]
fn scheduler_can_be_shared_with_async_code() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Scheduler>();
}

#[test]
fn spread_preference_over_many_values_gives_each_group_a_turn() {
    let mut s = cluster((1..=20).map(|i| node(&format!("n{i}"), "")));
    s.add_task(task("web.old", "web", "n7", Resources::default()));
    let g = TaskGroup {
        strategy: Strategy::Binpack, // would stack everything on one node without the preference
        preferences: parse_preferences(&["spread=node.hostname".into()]).unwrap(),
        ..TaskGroup::new("web")
    };
    place(&mut s, &g, 39);
    assert_eq!(counts(&s, "web", 20), [2; 20]);
}
