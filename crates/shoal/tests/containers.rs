//! Container tasks through a real Docker Engine (skipped, with a message,
//! when no engine answers at DOCKER_HOST).

mod common;

use common::docker::*;
use common::*;
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// Ensures `local/busybox:1` exists (built from /bin/busybox); None when no engine.
fn engine_ready() -> Option<()> {
    std::env::var("DOCKER_HOST").ok()?;
    engine_with_busybox().ok()
}

fn running(d: &Daemon, service: &str) -> Vec<Value> {
    let out = d.cli(&["service", "ps", service, "--format", "json"]);
    let ts: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    ts.into_iter()
        .filter(|t| t["Status"]["State"] == "running" && t["DesiredState"] == "running")
        .collect()
}

#[test]
fn containers_converge_are_replaced_when_killed_and_move_off_a_dead_worker() {
    if engine_ready().is_none() {
        eprintln!("SKIPPED containers test: no Docker Engine at DOCKER_HOST");
        return;
    }
    let mut c = Cluster::new();
    c.init("m1", &[]);
    c.join("w1", "worker", 0);
    c.join("w2", "worker", 0);
    let _cleanup = Containers(c.nodes.iter().filter_map(|d| d.node_id()).collect());
    wait_for("3 ready", T, || (ready_count(&c, 0)? == 3).then_some(()));
    let nodes = c.nodes[0].nodes().unwrap();
    assert!(nodes.iter().all(|n| n["Description"]["Executors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "docker")));

    let m = &c.nodes[0];
    m.ok(&[
        "service",
        "create",
        "--name",
        "box",
        "--replicas",
        "6",
        "local/busybox:1",
        "sleep",
        "3600",
    ]);
    let r = running(m, "box");
    assert_eq!(r.len(), 6);
    let names = engine(&[
        "ps",
        "--filter",
        "label=com.docker.swarm.service.name=box",
        "--format",
        "{{.Names}}",
    ])
    .unwrap();
    assert_eq!(
        names.lines().count(),
        6,
        "six containers named service.slot.task: {names}"
    );
    assert!(names.lines().all(|n| n.starts_with("box.")));

    // docker kill one container: the task fails and is replaced.
    let victim = r[0]["Status"]["ContainerStatus"]["ContainerID"]
        .as_str()
        .unwrap()
        .to_string();
    let slot = r[0]["Slot"].as_u64().unwrap();
    engine(&["kill", &victim]).expect("docker kill");
    wait_for("the killed task replaced", T, || {
        let r = running(m, "box");
        (r.len() == 6
            && r.iter()
                .all(|t| t["Status"]["ContainerStatus"]["ContainerID"] != victim.as_str()))
        .then_some(())
    });
    let out = m.cli(&["service", "ps", "box", "--format", "json"]);
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(all.iter().any(|t| t["Slot"].as_u64() == Some(slot)
        && t["Status"]["State"] == "failed"
        && t["Status"]["Err"]
            .as_str()
            .unwrap_or_default()
            .contains("non-zero exit")));

    // SIGKILL a worker: its tasks run elsewhere.
    let w1 = c.nodes[1].node_id().unwrap();
    c.nodes[1].kill();
    wait_for("w1's tasks elsewhere", T, || {
        let r = running(&c.nodes[0], "box");
        (r.len() == 6 && r.iter().all(|t| t["NodeID"] != w1.as_str())).then_some(())
    });

    // An image that is neither local nor pullable: rejected with the engine's error.
    c.nodes[0].ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "nope",
        "local/nope:1",
        "true",
    ]);
    let t = wait_for("a rejected task", T, || {
        let out = c.nodes[0].cli(&["service", "ps", "nope", "--format", "json"]);
        let ts: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        ts.into_iter().find(|t| t["Status"]["State"] == "rejected")
    });
    assert!(
        t["Status"]["Err"]
            .as_str()
            .unwrap()
            .contains("local/nope:1"),
        "{t}"
    );
}
