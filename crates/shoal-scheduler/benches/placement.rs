//! Placement throughput: 100 services × 1,000 tasks placed on 10,000 nodes from an empty state.
//!
//! Run: `cargo bench -p shoal-scheduler`; criterion reports placements per second ("elem/s").
//! Building the cluster is setup, not measured; each measured run places all 100,000 tasks.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shoal_scheduler::{
    parse_constraints, parse_preferences, NodeInfo, Resources, Scheduler, TaskGroup,
};

const NODES: usize = 10_000;
const SERVICES: usize = 100;
const TASKS_PER_SERVICE: usize = 1_000;
const CPU: i64 = 1_000_000_000;
const MIB: i64 = 1 << 20;

/// 10,000 nodes in zones a/b/c; every 4th has an SSD engine label, all have one of 20 racks,
/// every 10th is a manager.
fn cluster() -> Scheduler {
    let mut s = Scheduler::new();
    for i in 0..NODES {
        let mut node = NodeInfo::new(format!("node-{i:05}"));
        node.capacity = Resources::new(32 * CPU, 128 * 1024 * MIB);
        node.labels
            .insert("zone".into(), ["a", "b", "c"][i % 3].into());
        node.labels.insert("rack".into(), format!("r{}", i % 20));
        if i % 4 == 0 {
            node.engine_labels.insert("storage".into(), "ssd".into());
        }
        if i % 10 == 0 {
            node.role = shoal_scheduler::NodeRole::Manager;
        }
        s.upsert_node(node);
    }
    s
}

/// 100 services with one or two constraints each and CPU/memory reservations.
fn services(preferences: &[&str]) -> Vec<(TaskGroup, Vec<String>)> {
    const CONSTRAINTS: [&[&str]; 6] = [
        &["node.labels.zone==a"],
        &["node.labels.zone!=b", "node.role==worker"],
        &["node.platform.os==linux"],
        &["engine.labels.storage==ssd"],
        &["node.labels.rack!=r3", "node.labels.zone==c"],
        &["node.role!=manager"],
    ];
    let preferences: Vec<String> = preferences.iter().map(|p| p.to_string()).collect();
    (0..SERVICES)
        .map(|s| {
            let exprs: Vec<String> = CONSTRAINTS[s % CONSTRAINTS.len()]
                .iter()
                .map(|c| c.to_string())
                .collect();
            let group = TaskGroup {
                constraints: parse_constraints(&exprs).unwrap(),
                preferences: parse_preferences(&preferences).unwrap(),
                reservations: Resources::new(
                    (1 + s as i64 % 4) * CPU / 10,
                    (64 + 64 * (s as i64 % 8)) * MIB,
                ),
                ..TaskGroup::new(format!("service-{s:03}"))
            };
            let ids = (0..TASKS_PER_SERVICE)
                .map(|t| format!("service-{s:03}.{t}"))
                .collect();
            (group, ids)
        })
        .collect()
}

fn place_all(mut s: Scheduler, services: &[(TaskGroup, Vec<String>)]) -> Scheduler {
    for (group, ids) in services {
        let placement = s.schedule(group, ids);
        assert!(
            placement.is_complete(),
            "{:?}",
            placement.explanation.map(|e| e.to_string())
        );
        black_box(&placement);
    }
    s
}

fn placement(c: &mut Criterion) {
    let mut bench = c.benchmark_group("placement");
    bench.sample_size(10);
    bench.throughput(Throughput::Elements((SERVICES * TASKS_PER_SERVICE) as u64));
    for (name, preferences) in [
        ("100k_tasks_10k_nodes_spread", &[][..]),
        (
            "100k_tasks_10k_nodes_spread_zone_pref",
            &["spread=node.labels.zone"][..],
        ),
    ] {
        let services = services(preferences);
        bench.bench_function(name, |b| {
            b.iter_batched(
                cluster,
                |s| place_all(s, &services),
                BatchSize::PerIteration,
            )
        });
    }
    bench.finish();
}

criterion_group!(benches, placement);
criterion_main!(benches);
