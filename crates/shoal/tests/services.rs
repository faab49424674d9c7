//! Services and tasks on the process executor, end to end.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(40);

fn tasks(d: &Daemon, service: &str) -> Vec<Value> {
    let out = d.cli(&["service", "ps", service, "--format", "json"]);
    if !out.status.success() {
        return Vec::new();
    }
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn running(d: &Daemon, service: &str) -> Vec<Value> {
    tasks(d, service)
        .into_iter()
        .filter(|t| t["Status"]["State"] == "running" && t["DesiredState"] == "running")
        .collect()
}

fn node_ids(c: &Cluster, via: usize) -> BTreeMap<String, String> {
    c.nodes[via]
        .nodes()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["ID"].as_str().unwrap().to_string(),
                n["Description"]["Hostname"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn per_node(ts: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for t in ts {
        *m.entry(t["NodeID"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    m
}

fn slots(ts: &[Value]) -> Vec<u64> {
    let mut s: Vec<u64> = ts.iter().map(|t| t["Slot"].as_u64().unwrap()).collect();
    s.sort();
    s
}

fn wait_running(d: &Daemon, service: &str, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} running tasks of {service}"), T, || {
        let r = running(d, service);
        (r.len() == n).then_some(r)
    })
}

#[test]
fn replicas_spread_move_off_dead_and_drained_nodes_and_follow_labels() {
    let mut c = Cluster::new();
    c.init("m1", &[]);
    c.join("m2", "manager", 0);
    c.join("m3", "manager", 0);
    c.join("w1", "worker", 0);
    c.join("w2", "worker", 0);
    wait_for("5 ready", T, || (ready_count(&c, 0)? == 5).then_some(()));

    c.nodes[0].ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "10",
        "--runtime",
        "process",
        "--",
        "sleep",
        "4101",
    ]);
    let r = wait_running(&c.nodes[0], "web", 10);
    let counts = per_node(&r);
    assert_eq!(counts.len(), 5, "every node runs tasks: {counts:?}");
    let (min, max) = (
        counts.values().min().unwrap(),
        counts.values().max().unwrap(),
    );
    assert!(
        max - min <= 1,
        "per-node counts differ by at most 1: {counts:?}"
    );
    assert_eq!(slots(&r), (1..=10).collect::<Vec<_>>());
    wait_for("10 sleep processes", T, || {
        (count_procs("sleep 4101") == 10).then_some(())
    });

    // SIGKILL a worker: its tasks run elsewhere, in the same slots.
    let ids = node_ids(&c, 0);
    let w1 = ids.iter().find(|(_, h)| *h == "w1").unwrap().0.clone();
    let w1_slots: Vec<u64> = r
        .iter()
        .filter(|t| t["NodeID"] == w1.as_str())
        .map(|t| t["Slot"].as_u64().unwrap())
        .collect();
    c.nodes[3].kill();
    let r = wait_for("w1's tasks replaced", T, || {
        let r = running(&c.nodes[1], "web");
        (r.len() == 10 && r.iter().all(|t| t["NodeID"] != w1.as_str())).then_some(r)
    });
    assert_eq!(
        slots(&r),
        (1..=10).collect::<Vec<_>>(),
        "same slot numbers, no duplicates"
    );
    for s in &w1_slots {
        assert!(r.iter().any(|t| t["Slot"].as_u64() == Some(*s)));
    }

    // Drain w2: its tasks move.
    c.nodes[0].ok(&["node", "update", "--availability", "drain", "w2"]);
    let w2 = ids.iter().find(|(_, h)| *h == "w2").unwrap().0.clone();
    wait_for("w2 drained", T, || {
        let r = running(&c.nodes[0], "web");
        (r.len() == 10
            && r.iter()
                .all(|t| t["NodeID"] != w2.as_str() && t["NodeID"] != w1.as_str()))
        .then_some(())
    });

    // A constrained service follows a label.
    c.nodes[0].ok(&["node", "update", "--label-add", "zone=a", "m2"]);
    c.nodes[0].ok(&[
        "service",
        "create",
        "--name",
        "zoned",
        "--replicas",
        "2",
        "--constraint",
        "node.labels.zone==a",
        "--runtime",
        "process",
        "--",
        "sleep",
        "4102",
    ]);
    let m2 = ids.iter().find(|(_, h)| *h == "m2").unwrap().0.clone();
    let m3 = ids.iter().find(|(_, h)| *h == "m3").unwrap().0.clone();
    let r = wait_running(&c.nodes[0], "zoned", 2);
    assert!(r.iter().all(|t| t["NodeID"] == m2.as_str()));
    c.nodes[0].ok(&["node", "update", "--label-rm", "zone", "m2"]);
    c.nodes[0].ok(&["node", "update", "--label-add", "zone=a", "m3"]);
    wait_for("zoned tasks on m3", T, || {
        let r = running(&c.nodes[0], "zoned");
        (r.len() == 2 && r.iter().all(|t| t["NodeID"] == m3.as_str())).then_some(())
    });

    // Killing the leader in the middle of a scale to 50 converges, without duplicate slots.
    c.nodes[0].ok(&["service", "scale", "--detach", "web=50"]);
    let leader = c.leader(1).unwrap();
    c.nodes[leader].kill();
    let other = (0..3).find(|i| *i != leader).unwrap();
    let waited = std::panic::catch_unwind(|| {
        wait_for(
            "50 running after the leader died",
            Duration::from_secs(90),
            || {
                let r = running(&c.nodes[other], "web");
                (r.len() == 50).then_some(r)
            },
        )
    });
    let r = waited.unwrap_or_else(|e| {
        // Seen once in CI (not reproduced): what the tasks were doing, as
        // each live manager sees them.
        for m in (0..3).filter(|m| *m != leader) {
            let mut states: BTreeMap<String, usize> = BTreeMap::new();
            for t in tasks(&c.nodes[m], "web") {
                let k = format!(
                    "{} desired={} node={} err={}",
                    t["Status"]["State"], t["DesiredState"], t["NodeID"], t["Status"]["Err"]
                );
                *states.entry(k).or_default() += 1;
            }
            eprintln!("tasks of web as {} sees them: {states:#?}", c.nodes[m].name);
        }
        std::panic::resume_unwind(e)
    });
    assert_eq!(
        slots(&r),
        (1..=50).collect::<Vec<_>>(),
        "no duplicate or missing slots"
    );
}

#[test]
fn global_jobs_restarts_reservations_and_agent_restarts() {
    let mut c = Cluster::new();
    c.init("m1", &[]);
    c.join("w1", "worker", 0);
    wait_for("2 ready", T, || (ready_count(&c, 0)? == 2).then_some(()));
    let m = &c.nodes[0];

    // A global service follows nodes that join later.
    m.ok(&[
        "service",
        "create",
        "--name",
        "everywhere",
        "--mode",
        "global",
        "--runtime",
        "process",
        "--",
        "sleep",
        "4201",
    ]);
    wait_running(m, "everywhere", 2);

    // A reservation that fits once per node: the third task waits, explained.
    m.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "big",
        "--replicas",
        "3",
        "--reserve-cpu",
        "1.5",
        "--runtime",
        "process",
        "--",
        "sleep",
        "4202",
    ]);
    let pending = wait_for("a pending task with an explanation", T, || {
        tasks(m, "big").into_iter().find(|t| {
            t["Status"]["State"] == "pending"
                && t["Status"]["Err"]
                    .as_str()
                    .is_some_and(|e| e.contains("no suitable node"))
        })
    });
    let why = pending["Status"]["Err"].as_str().unwrap().to_string();
    assert!(
        why.contains("lack CPU") || why.contains("lacks CPU"),
        "explains the CPU shortage: {why}"
    );
    c.join("w2", "worker", 0);
    let m = &c.nodes[0];
    wait_running(m, "big", 3);
    wait_running(m, "everywhere", 3);

    // on-failure with max attempts 3: the first run and 3 restarts, then it stops.
    m.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "crashy",
        "--restart-condition",
        "on-failure",
        "--restart-max-attempts",
        "3",
        "--restart-delay",
        "100ms",
        "--runtime",
        "process",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    wait_for("4 failed attempts", T, || {
        let ts = tasks(m, "crashy");
        (ts.iter()
            .filter(|t| t["Status"]["State"] == "failed")
            .count()
            == 4)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let ts = tasks(m, "crashy");
    assert_eq!(ts.len(), 4, "no fifth attempt: {ts:?}");
    assert!(ts.iter().all(|t| t["Status"]["Err"]
        .as_str()
        .unwrap_or_default()
        .contains("non-zero exit (3)")));

    // A replicated job runs to its completions.
    m.ok(&[
        "service",
        "create",
        "--name",
        "job",
        "--mode",
        "replicated-job",
        "--replicas",
        "4",
        "--max-concurrent",
        "2",
        "--runtime",
        "process",
        "--",
        "sh",
        "-c",
        "sleep 0.2",
    ]);
    let ts = tasks(m, "job");
    assert_eq!(
        ts.iter()
            .filter(|t| t["Status"]["State"] == "complete")
            .count(),
        4,
        "{ts:?}"
    );

    // Agent SIGKILL and restart: tasks are re-adopted, none orphaned or duplicated.
    let before = count_procs("sleep 4201");
    assert_eq!(before, 3);
    c.nodes[1].kill();
    std::thread::sleep(Duration::from_millis(300));
    c.nodes[1].restart();
    wait_for("w1 ready again", T, || {
        (c.state_of(0, "w1")? == "ready").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        count_procs("sleep 4201"),
        3,
        "no duplicate after the agent restart"
    );
    assert_eq!(running(&c.nodes[0], "everywhere").len(), 3);

    // Removing services stops their processes.
    c.nodes[0].ok(&["service", "rm", "everywhere", "big"]);
    wait_for("processes gone", T, || {
        (count_procs("sleep 4201") + count_procs("sleep 4202") == 0).then_some(())
    });
}

#[test]
fn bad_service_input_is_refused_without_state_change() {
    let mut c = Cluster::new();
    c.init("m1", &[]);
    let m = &c.nodes[0];
    let fails = |args: &[&str], needle: &str| {
        let out = m.cli(args);
        assert!(!out.status.success(), "{args:?} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err:?}"
        );
    };
    fails(
        &[
            "service",
            "create",
            "--name",
            "x",
            "--constraint",
            "node.labels.zone=a",
            "--runtime",
            "process",
            "--",
            "sleep",
            "1",
        ],
        "invalid constraint",
    );
    fails(
        &[
            "service",
            "create",
            "--name",
            "x",
            "--replicas",
            "-1",
            "--runtime",
            "process",
            "--",
            "sleep",
            "1",
        ],
        "",
    );
    fails(
        &[
            "service",
            "create",
            "--name",
            "x",
            "--mode",
            "sideways",
            "--runtime",
            "process",
            "--",
            "sleep",
            "1",
        ],
        "invalid --mode",
    );
    fails(
        &[
            "service",
            "create",
            "--name",
            "x",
            "--runtime",
            "process",
            "--",
            "",
        ],
        "empty",
    );
    fails(
        &[
            "service",
            "create",
            "--name",
            "x",
            "--restart-condition",
            "sometimes",
            "--runtime",
            "process",
            "--",
            "sleep",
            "1",
        ],
        "restart-condition",
    );
    fails(&["service", "inspect", "nosuch"], "not found");
    fails(&["service", "rm", "nosuch"], "not found");
    m.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "dup",
        "--runtime",
        "process",
        "--",
        "sleep",
        "4301",
    ]);
    fails(
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "dup",
            "--runtime",
            "process",
            "--",
            "sleep",
            "4301",
        ],
        "already exists",
    );
    fails(
        &["service", "update", "--replicas", "2", "nosuch"],
        "not found",
    );
    let out = m.ok(&["service", "ls", "--format", "json"]);
    let svcs: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(svcs.len(), 1, "only the valid service exists");
    m.ok(&["service", "rm", "dup"]);
}

#[test]
fn logs_merge_tasks_from_two_nodes_and_name_a_down_node() {
    let mut c = Cluster::new();
    c.init("m1", &[]);
    c.join("w1", "worker", 0);
    wait_for("2 ready", T, || (ready_count(&c, 0)? == 2).then_some(()));
    let m = &c.nodes[0];
    m.ok(&[
        "service",
        "create",
        "--name",
        "talk",
        "--replicas",
        "2",
        "--replicas-max-per-node",
        "1",
        "--runtime",
        "process",
        "--",
        "sh",
        "-c",
        "echo hello from $SHOAL_TASK_SLOT; sleep 0.3; echo oops >&2; sleep 4401",
    ]);
    let out = wait_for("both tasks' lines", T, || {
        let o = m.cli(&["service", "logs", "talk"]);
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        (s.contains("hello from 1") && s.contains("hello from 2")).then_some(o)
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("@m1") && stdout.contains("@w1"),
        "prefixed service.slot.task@node: {stdout}"
    );
    assert!(stdout.lines().all(|l| l.starts_with("talk.")), "{stdout}");
    assert_eq!(
        stderr.matches("oops").count(),
        2,
        "stderr lines go to stderr: {stderr}"
    );
    let tail = m.ok(&["service", "logs", "--tail", "1", "talk"]);
    assert!(
        !tail.contains("hello"),
        "--tail 1 keeps only the last line of each task: {tail}"
    );

    // `logs -f` while w1 freezes: its part of the stream ends with a note
    // (its connection stays open and silent; the manager's PINGs find it
    // out) instead of hanging, and m1's part goes on.
    let err_file = c.tmp.path().join("follow.err");
    let mut follow = std::process::Command::new(bin())
        .arg("-H")
        .arg(format!("unix://{}", m.socket.display()))
        .args(["service", "logs", "-f", "talk"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .spawn()
        .unwrap();
    wait_for("logs -f streaming both tasks", T, || {
        (std::fs::read_to_string(&err_file)
            .ok()?
            .matches("oops")
            .count()
            == 2)
            .then_some(())
    });
    c.nodes[1].signal(SIGSTOP);
    let seen = std::panic::catch_unwind(|| {
        wait_for("logs -f noting that w1 stopped answering", T, || {
            std::fs::read_to_string(&err_file)
                .ok()?
                .contains("logs unavailable: node w1 stopped answering")
                .then_some(())
        })
    });
    c.nodes[1].signal(SIGCONT);
    let still_following = matches!(follow.try_wait(), Ok(None));
    let _ = follow.kill();
    let _ = follow.wait();
    seen.unwrap();
    assert!(still_following, "logs -f must go on with m1's task");

    c.nodes[1].kill();
    wait_for("w1 down", T, || {
        (c.state_of(0, "w1")? == "down").then_some(())
    });
    let out = c.nodes[0].cli(&["service", "logs", "talk"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("logs unavailable: node w1 is down"),
        "{out:?}"
    );
}

#[test]
fn rolling_update_start_first_then_rollback_and_api_refusals() {
    let mut c = Cluster::new();
    c.init("m1", &[]);
    let m = &c.nodes[0];
    m.ok(&[
        "service",
        "create",
        "--name",
        "roll",
        "--replicas",
        "3",
        "--update-parallelism",
        "1",
        "--update-order",
        "start-first",
        "--runtime",
        "process",
        "--",
        "sleep",
        "4501",
    ]);
    assert_eq!(count_procs("sleep 4501"), 3);
    m.ok(&["service", "update", "--args", "4502", "roll"]);
    wait_for("old processes stopped", T, || {
        (count_procs("sleep 4501") == 0).then_some(())
    });
    assert_eq!(count_procs("sleep 4502"), 3);
    let svc: Vec<Value> = serde_json::from_str(&m.ok(&["service", "inspect", "roll"])).unwrap();
    assert_eq!(svc[0]["UpdateStatus"]["State"], "completed");
    assert_eq!(
        svc[0]["PreviousSpec"]["TaskTemplate"]["ProcessSpec"]["Args"][0],
        "4501"
    );

    m.ok(&["service", "rollback", "roll"]);
    wait_for("rolled back", T, || {
        (count_procs("sleep 4502") == 0 && count_procs("sleep 4501") == 3).then_some(())
    });
    let svc: Vec<Value> = serde_json::from_str(&m.ok(&["service", "inspect", "roll"])).unwrap();
    assert_eq!(svc[0]["UpdateStatus"]["State"], "rollback_completed");
    assert_eq!(
        svc[0]["Spec"]["TaskTemplate"]["ProcessSpec"]["Args"][0],
        "4501"
    );

    // --force replaces tasks whose spec did not change.
    let before: Vec<String> = running(m, "roll")
        .iter()
        .map(|t| t["ID"].as_str().unwrap().to_string())
        .collect();
    m.ok(&["service", "update", "--force", "roll"]);
    let after: Vec<String> = running(m, "roll")
        .iter()
        .map(|t| t["ID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(after.len(), 3);
    assert!(
        after.iter().all(|id| !before.contains(id)),
        "every task replaced"
    );

    // API refusals: mode change, stale version, malformed JSON, wrong types, unknown version prefix.
    let svc = &svc[0];
    let id = svc["ID"].as_str().unwrap();
    let version = svc["Version"]["Index"].as_u64().unwrap();
    let mut spec = svc["Spec"].clone();
    spec["Mode"] = serde_json::json!({"Global": {}});
    let (st, body) = api(
        m,
        "POST",
        &format!("/v1.41/services/{id}/update?version={version}"),
        Some(&spec.to_string()),
    );
    assert_eq!(st, 400, "{body}");
    assert!(
        body.contains("service mode change is not allowed"),
        "{body}"
    );
    let (st, body) = api(
        m,
        "POST",
        &format!("/v1.41/services/{id}/update?version=1"),
        Some(&svc["Spec"].to_string()),
    );
    assert_eq!(st, 409, "{body}");
    assert!(body.contains("update out of sequence"), "{body}");
    let (st, body) = api(m, "POST", "/v1.41/services/create", Some("{not json"));
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("\"message\""), "{body}");
    let (st, body) = api(
        m,
        "POST",
        "/v1.41/services/create",
        Some(r#"{"Name":"x","Mode":{"Replicated":{"Replicas":"three"}}}"#),
    );
    assert_eq!(st, 400, "{body}");
    let (st, body) = api(m, "GET", "/v9.99/services", None);
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("too new"), "{body}");
    let (st, _) = api(m, "GET", "/v1.41/services/nosuch", None);
    assert_eq!(st, 404);
    let (st, body) = api(m, "GET", "/v1.41/services", None);
    assert_eq!(st, 200);
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&body).unwrap().len(),
        1,
        "nothing was created by the bad requests"
    );
    m.ok(&["service", "rm", "roll"]);
    wait_for("processes gone", T, || {
        (count_procs("sleep 4501") == 0).then_some(())
    });
}

/// A worker cut off by the network (hosts in network namespaces) keeps
/// running its task, as Docker Swarm's do; the manager marks it DOWN and
/// starts the task again on the other worker. When the cable is back the
/// worker is READY again and stops its old task, which now belongs to no
/// one: one copy runs, not two.
#[test]
fn a_worker_cut_off_has_its_task_replaced_and_stops_it_when_back() {
    let Some(mut c) = Cluster::in_netns() else {
        return;
    };
    c.init("m1", &[]);
    c.join("w1", "worker", 0);
    c.join("w2", "worker", 0);
    let m = 0;
    wait_for("3 ready", T, || (ready_count(&c, m)? == 3).then_some(()));
    c.nodes[m].ok(&[
        "service",
        "create",
        "--name",
        "solo",
        "--constraint",
        "node.role==worker",
        "--runtime",
        "process",
        "--",
        "sleep",
        "4702",
    ]);
    let first = wait_running(&c.nodes[m], "solo", 1);
    let ids = node_ids(&c, m);
    let host = ids[first[0]["NodeID"].as_str().unwrap()].clone();
    let cut = c.nodes.iter().position(|d| d.name == host).unwrap();
    wait_for("one sleep 4702", T, || {
        (count_procs("sleep 4702") == 1).then_some(())
    });

    c.net.as_ref().unwrap().cable(cut + 1, false);
    wait_for("the cut-off worker down", T, || {
        (c.state_of(m, &host)? == "down").then_some(())
    });
    let moved = wait_for("the task running on the other worker", T, || {
        let r = running(&c.nodes[m], "solo");
        (r.len() == 1 && r[0]["NodeID"] != first[0]["NodeID"]).then_some(r)
    });
    assert_eq!(moved[0]["Slot"], first[0]["Slot"], "same slot");
    // The cut-off worker's copy still runs: it cannot be told otherwise.
    wait_for("two sleep 4702 while cut off", T, || {
        (count_procs("sleep 4702") == 2).then_some(())
    });

    c.net.as_ref().unwrap().cable(cut + 1, true);
    wait_for("the worker ready again", T, || {
        (c.state_of(m, &host)? == "ready").then_some(())
    });
    wait_for("its old copy stopped: one sleep 4702", T, || {
        (count_procs("sleep 4702") == 1).then_some(())
    });
    let r = running(&c.nodes[m], "solo");
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["NodeID"], moved[0]["NodeID"], "the replacement stays");
}
