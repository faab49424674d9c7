//! A node's Docker Engine, seen from the cluster:
//! * it goes away and comes back: the node stops offering the `docker`
//!   executor (container tasks are placed elsewhere or wait, with the
//!   reason), then offers it again. The worker reaches the real engine
//!   (DOCKER_HOST) through `--engine-socket` pointing at a relay socket this
//!   test controls, so "the engine is unreachable" is real for that node only;
//! * it answers only after the node started (the relay is not listening
//!   yet): the node offers no `docker` executor and container tasks wait,
//!   then, once the relay listens, the node binds the engine, describes it
//!   and runs the tasks in real containers, without a restart; a task
//!   replaced while its restarted node had no engine has its old container
//!   stopped once the engine answers, and the replacement runs there;
//! * a task's container on a worker is reached through a manager that has
//!   no engine: `docker exec` and `docker container inspect` go to the
//!   engine of the node that runs it.
//!
//! Skipped, with a `SKIPPED` line, without an engine at DOCKER_HOST that has
//! `local/busybox:1` (the containers test builds it).

mod common;

use common::docker::{engine, ServiceContainers, BUSYBOX_IMAGE};
use common::{wait_for, Cluster};
use serde_json::Value;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn engine_socket() -> Option<PathBuf> {
    let host = std::env::var("DOCKER_HOST").ok()?;
    let path = PathBuf::from(host.strip_prefix("unix://")?);
    engine(&["image", "inspect", BUSYBOX_IMAGE]).map(|_| path)
}

/// A unix-socket relay to the engine that can be cut (listener closed,
/// open connections shut down) and restored.
struct Relay {
    path: PathBuf,
    engine: PathBuf,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<UnixStream>>>,
}

impl Relay {
    /// A relay that does not listen yet (see [`Relay::restore`]).
    fn new(path: PathBuf, engine: PathBuf) -> Relay {
        Relay {
            path,
            engine,
            up: Arc::new(AtomicBool::new(false)),
            conns: Arc::default(),
        }
    }

    fn start(path: PathBuf, engine: PathBuf) -> Relay {
        let r = Relay::new(path, engine);
        r.restore();
        r
    }

    fn restore(&self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).unwrap();
        self.up.store(true, Ordering::SeqCst);
        let (up, conns, engine) = (self.up.clone(), self.conns.clone(), self.engine.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if !up.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = UnixStream::connect(&engine) else {
                    continue;
                };
                let mut l = conns.lock().unwrap();
                l.push(client.try_clone().unwrap());
                l.push(server.try_clone().unwrap());
                for (mut a, mut b) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut a, &mut b);
                        let _ = b.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
    }

    fn cut(&self) {
        if !self.up.swap(false, Ordering::SeqCst) {
            return;
        }
        let _ = std::fs::remove_file(&self.path);
        // Wake the accept loop so it sees `up` is false and drops the listener.
        let _ = UnixStream::connect(&self.path);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Starts `m1` with no engine and worker `w1` whose engine is `engine`
/// reached through a relay socket `<name>.sock`; returns the relay and
/// w1's index once w1 offers the `docker` executor.
fn engine_less_manager_and_relayed_worker(
    c: &mut Cluster,
    name: &str,
    engine: PathBuf,
) -> (Relay, usize) {
    let relay = Relay::start(c.tmp.path().join(format!("{name}.sock")), engine);
    let none = format!("unix://{}", c.tmp.path().join("no-engine.sock").display());
    c.init("m1", &["--engine-socket", &none]);
    let via_relay = format!("unix://{}", relay.path.display());
    let w1 = c.join_with("w1", "worker", 0, &["--engine-socket", &via_relay]);
    wait_for("w1 offers docker", T, || {
        executors(c, "w1")
            .contains(&"docker".to_string())
            .then_some(())
    });
    (relay, w1)
}

/// A task pending because no node can take it.
fn waits_for_a_node(t: &Value) -> bool {
    t["Status"]["State"] == "pending"
        && t["Status"]["Err"]
            .as_str()
            .unwrap_or_default()
            .contains("no suitable node")
}

fn executors(c: &Cluster, node: &str) -> Vec<String> {
    let out = c.nodes[0].ok(&["node", "inspect", node]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let v = if v.is_array() { v[0].clone() } else { v };
    v["Description"]["Executors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn tasks(c: &Cluster) -> Vec<Value> {
    service_tasks(c, "eng")
}

fn service_tasks(c: &Cluster, service: &str) -> Vec<Value> {
    let out = c.nodes[0].ok(&["service", "ps", service, "--format", "json"]);
    serde_json::from_str(&out).unwrap()
}

fn node_description(c: &Cluster, node: &str) -> Value {
    let out = c.nodes[0].ok(&["node", "inspect", node]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let v = if v.is_array() { v[0].clone() } else { v };
    v["Description"].clone()
}

#[test]
fn an_engine_that_answers_only_after_the_node_started_is_used() {
    let Some(engine_path) = engine_socket() else {
        eprintln!("SKIPPED late engine test: no Docker Engine with local/busybox:1 at DOCKER_HOST");
        return;
    };
    let _containers = ServiceContainers("late");
    let mut c = Cluster::new();
    // Nothing listens at the relay's path yet: the node starts without an engine.
    let relay = Relay::new(c.tmp.path().join("late-relay.sock"), engine_path);
    let via_relay = format!("unix://{}", relay.path.display());
    c.init("m1", &["--engine-socket", &via_relay]);
    assert!(!relay.path.exists());
    assert!(!executors(&c, "m1").contains(&"docker".to_string()));

    c.nodes[0].ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "late",
        "local/busybox:1",
        "sleep",
        "1d",
    ]);
    wait_for("the container task waits with the reason", T, || {
        service_tasks(&c, "late")
            .iter()
            .any(waits_for_a_node)
            .then_some(())
    });
    // Still without an engine a few engine checks later: nothing runs.
    std::thread::sleep(Duration::from_secs(5));
    assert!(!executors(&c, "m1").contains(&"docker".to_string()));
    assert!(service_tasks(&c, "late")
        .iter()
        .all(|t| t["Status"]["State"] == "pending"));

    relay.restore();
    wait_for("m1 offers docker", T, || {
        executors(&c, "m1")
            .contains(&"docker".to_string())
            .then_some(())
    });
    let engine_version = engine(&["version", "--format", "{{.Server.Version}}"]).unwrap();
    assert_eq!(
        node_description(&c, "m1")["Engine"]["EngineVersion"],
        engine_version.trim()
    );
    let task = wait_for("the task runs in a container", T, || {
        service_tasks(&c, "late")
            .into_iter()
            .find(|t| t["Status"]["State"] == "running")
    });
    let cid = task["Status"]["ContainerStatus"]["ContainerID"]
        .as_str()
        .unwrap()
        .to_string();
    let running = engine(&[
        "container",
        "inspect",
        "--format",
        "{{.State.Running}} {{.Name}}",
        &cid,
    ])
    .unwrap();
    assert_eq!(
        running.trim(),
        format!("true /late.1.{}", task["ID"].as_str().unwrap())
    );
    c.nodes[0].ok(&["service", "rm", "late"]);
    wait_for("the container is removed", T, || {
        engine(&["container", "inspect", &cid])
            .is_none()
            .then_some(())
    });
}

/// The container of a task replaced while its restarted node had no engine
/// (the node offered no `docker` executor, or reported the task lost) is
/// stopped once the engine answers, and the replacement runs there: one
/// container of the service runs in the end.
#[test]
fn a_late_engine_stops_the_container_of_a_task_replaced_meanwhile() {
    let Some(engine_path) = engine_socket() else {
        eprintln!("SKIPPED late engine adoption test: no Docker Engine with local/busybox:1 at DOCKER_HOST");
        return;
    };
    let _containers = ServiceContainers("relost");
    let mut c = Cluster::new();
    let (relay, w1) = engine_less_manager_and_relayed_worker(&mut c, "relost-relay", engine_path);
    c.nodes[0].ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "relost",
        "local/busybox:1",
        "sleep",
        "1d",
    ]);
    let first = wait_for("the container runs on w1", T, || {
        service_tasks(&c, "relost")
            .into_iter()
            .find(|t| t["Status"]["State"] == "running")
    });
    let old = first["Status"]["ContainerStatus"]["ContainerID"]
        .as_str()
        .unwrap()
        .to_string();

    // w1 restarts while its engine is out of reach: its task is replaced.
    c.nodes[w1].kill();
    relay.cut();
    c.nodes[w1].restart();
    wait_for("the task is replaced and its replacement waits", T, || {
        let tasks = service_tasks(&c, "relost");
        let replaced = tasks.iter().any(|t| {
            t["ID"] == first["ID"]
                && (t["DesiredState"] == "shutdown" || t["Status"]["State"] == "failed")
        });
        let waiting = tasks.iter().any(|t| t["Status"]["State"] == "pending");
        (replaced && waiting).then_some(())
    });
    assert_eq!(
        engine(&[
            "container",
            "inspect",
            "--format",
            "{{.State.Running}}",
            &old
        ])
        .unwrap()
        .trim(),
        "true"
    );

    relay.restore();
    let replacement = wait_for("the replacement runs on w1", T, || {
        service_tasks(&c, "relost")
            .into_iter()
            .find(|t| t["Status"]["State"] == "running" && t["ID"] != first["ID"])
    });
    let new = replacement["Status"]["ContainerStatus"]["ContainerID"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new, old);
    wait_for("the lost task's container is stopped", T, || {
        let running = engine(&[
            "container",
            "inspect",
            "--format",
            "{{.State.Running}}",
            &old,
        ]);
        (running.as_deref().map(str::trim) != Some("true")).then_some(())
    });
    let running = engine(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        "label=com.docker.swarm.service.name=relost",
    ])
    .unwrap();
    assert_eq!(
        running.split_whitespace().collect::<Vec<_>>(),
        vec![new.as_str()]
    );
    c.nodes[0].ok(&["service", "rm", "relost"]);
}

#[test]
fn engine_loss_withdraws_the_docker_executor_and_recovery_restores_it() {
    let Some(engine) = engine_socket() else {
        eprintln!("SKIPPED engine_loss test: no Docker Engine with local/busybox:1 at DOCKER_HOST");
        return;
    };
    let _containers = ServiceContainers("eng");
    let mut c = Cluster::new();
    let (relay, _) = engine_less_manager_and_relayed_worker(&mut c, "relay", engine);
    assert!(!executors(&c, "m1").contains(&"docker".to_string()));

    c.nodes[0].ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "eng",
        "--replicas",
        "1",
        "local/busybox:1",
        "sleep",
        "1d",
    ]);
    wait_for("the container runs on w1", T, || {
        tasks(&c)
            .iter()
            .any(|t| t["Status"]["State"] == "running")
            .then_some(())
    });

    relay.cut();
    wait_for("w1 withdraws docker", T, || {
        (!executors(&c, "w1").contains(&"docker".to_string())).then_some(())
    });
    c.nodes[0].ok(&["service", "scale", "--detach", "eng=2"]);
    wait_for("the new task waits with the reason", T, || {
        tasks(&c).iter().any(waits_for_a_node).then_some(())
    });

    relay.restore();
    wait_for("w1 offers docker again", T, || {
        executors(&c, "w1")
            .contains(&"docker".to_string())
            .then_some(())
    });
    wait_for("both replicas run", T, || {
        (tasks(&c)
            .iter()
            .filter(|t| t["Status"]["State"] == "running" && t["DesiredState"] == "running")
            .count()
            == 2)
            .then_some(())
    });
    c.nodes[0].ok(&["service", "rm", "eng"]);
}

#[test]
fn exec_and_inspect_through_a_manager_reach_the_engine_of_the_tasks_node() {
    if engine_socket().is_none() || !Path::new("/usr/local/bin/docker").exists() {
        eprintln!("SKIPPED remote exec test: needs an engine at DOCKER_HOST with local/busybox:1 and /usr/local/bin/docker");
        return;
    }
    let _containers = ServiceContainers("rx");
    let mut c = Cluster::new();
    let sock = c.tmp.path().join("m1-docker.sock");
    let none = format!("unix://{}", c.tmp.path().join("no-engine.sock").display());
    c.init(
        "m1",
        &[
            "--engine-socket",
            &none,
            "--docker-socket",
            sock.to_str().unwrap(),
        ],
    );
    c.join("w1", "worker", 0);
    c.nodes[0].ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "rx",
        "local/busybox:1",
        "sleep",
        "1d",
    ]);
    let task = wait_for("rx running", T, || {
        let out = c.nodes[0].ok(&["service", "ps", "rx", "--format", "json"]);
        let tasks: Vec<Value> = serde_json::from_str(&out).ok()?;
        tasks
            .into_iter()
            .find(|t| t["Status"]["State"] == "running")
    });
    let cid = task["Status"]["ContainerStatus"]["ContainerID"]
        .as_str()
        .unwrap()
        .to_string();
    let name = format!("rx.1.{}", task["ID"].as_str().unwrap());
    let docker = |args: &[&str]| {
        Command::new("/usr/local/bin/docker")
            .env("DOCKER_HOST", format!("unix://{}", sock.display()))
            .args(args)
            .output()
            .unwrap()
    };
    let out = docker(&["exec", &cid[..12], "echo", "hello from w1"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello from w1");
    let out = docker(&["exec", &name, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let out = docker(&["container", "inspect", "--format", "{{.Name}}", &cid[..12]]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("/{name}")
    );
    // The manager has no engine of its own: other containers are not found.
    let out = docker(&["exec", "no-such-container", "true"]);
    assert!(!out.status.success());
    c.nodes[0].ok(&["service", "rm", "rx"]);
}
