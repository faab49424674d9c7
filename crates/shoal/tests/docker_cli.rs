//! The stock docker CLI end to end against a shoal cluster (1 manager + 1
//! worker, both serving the control API on `--docker-socket` too), as
//! recorded in docs/docker-cli-swarm-api.md. The daemons find their Docker
//! Engine at DOCKER_HOST; the CLI gets `DOCKER_HOST=unix://<shoal socket>`.
//! Skipped (with a `SKIPPED` line) without /usr/local/bin/docker or an
//! engine answering at DOCKER_HOST.

mod common;

use common::docker::*;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const DOCKER: &str = "/usr/local/bin/docker";
const T: Duration = Duration::from_secs(60);

/// Whether the test can run: the CLI exists, an engine answers, and
/// `local/busybox:1` exists (imported from /bin/busybox if needed).
fn prerequisites() -> Result<(), String> {
    if !Path::new(DOCKER).exists() {
        return Err(format!("{DOCKER} is missing"));
    }
    engine_with_busybox()
}

/// The docker CLI pointed at a shoal node's docker socket.
struct Cli {
    host: String,
}

impl Cli {
    fn new(socket: &Path) -> Cli {
        Cli {
            host: format!("unix://{}", socket.display()),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(DOCKER);
        c.args(args)
            .env("DOCKER_HOST", &self.host)
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .stdin(Stdio::null());
        c
    }

    /// Runs a command, killing it after `limit`.
    fn run_for(&self, args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Output {
        let mut c = self.cmd(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().expect("run docker");
        if let Some(data) = stdin {
            let mut i = child.stdin.take().unwrap();
            i.write_all(data).unwrap();
        }
        let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let t_out = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        });
        let t_err = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = err.read_to_end(&mut v);
            v
        });
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Output {
            status,
            stdout: t_out.join().unwrap(),
            stderr: t_err.join().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_for(args, None, Duration::from_secs(120))
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_in(args, None)
    }

    fn ok_in(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let t = Instant::now();
        let out = self.run_for(args, stdin, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "docker {args:?} failed ({:?}, after {:?}):\n{}\n{}",
            out.status,
            t.elapsed(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "docker {args:?} succeeded but should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("docker {args:?}: {e}: {out}"))
    }
}

/// A raw HTTP/1.1 request on a unix socket: (status, body).
fn raw(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    http_at(socket, method, path, body, None).expect("request on the API socket")
}

fn lines_with<'a>(out: &'a str, needle: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.contains(needle)).collect()
}

/// The REPLICAS column of `service ls` for `name`.
fn replicas(cli: &Cli, name: &str) -> Option<String> {
    let out = cli.ok(&["service", "ls", "--format", "{{.Name}} {{.Replicas}}"]);
    out.lines().find_map(|l| {
        l.strip_prefix(&format!("{name} "))
            .map(|r| r.trim().to_string())
    })
}

fn wait_replicas(cli: &Cli, name: &str, want: &str) {
    wait_for(&format!("{name} at {want}"), T, || {
        (replicas(cli, name).as_deref() == Some(want)).then_some(())
    });
}

#[test]
fn docker_cli_end_to_end() {
    if let Err(why) = prerequisites() {
        println!("SKIPPED docker_cli_end_to_end: {why}");
        return;
    }
    let started = Instant::now();
    let mut containers = Containers(Vec::new());
    let mut c = Cluster::new();
    let tmp = c.tmp.path().to_path_buf();
    let msock: PathBuf = tmp.join("m1.docker.sock");
    let wsock: PathBuf = tmp.join("w1.docker.sock");
    let m = c.init("m1", &["--docker-socket", msock.to_str().unwrap()]);
    let w = c.join_with(
        "w1",
        "worker",
        m,
        &["--docker-socket", wsock.to_str().unwrap()],
    );
    let m_id = c.nodes[m].node_id().unwrap();
    let w_id = c.nodes[w].node_id().unwrap();
    containers.0 = vec![m_id.clone(), w_id.clone()];
    let d = Cli::new(&msock);
    let dw = Cli::new(&wsock);
    wait_for("the worker ready", T, || {
        (c.state_of(m, "w1").as_deref() == Some("ready")).then_some(())
    });

    // --- version negotiation, version, info
    let (status, _) = raw(&msock, "GET", "/_ping", "");
    assert_eq!(status, 200);
    let v = d.ok(&["version"]);
    assert!(v.contains("API version:       1.41"), "{v}");
    assert!(v.contains("Server: shoal"), "{v}");
    let info = d.ok(&["info"]);
    assert!(info.contains("Swarm: active"), "{info}");
    assert!(info.contains("Is Manager: true"), "{info}");
    assert!(info.contains(&format!("NodeID: {m_id}")), "{info}");
    assert!(info.contains("Nodes: 2"), "{info}");
    let winfo = dw.ok(&["info"]);
    assert!(
        winfo.contains("Swarm: active") && winfo.contains("Is Manager: false"),
        "{winfo}"
    );
    let (_, err) = dw.fails(&["node", "ls"]);
    assert!(err.contains("not a swarm manager"), "{err}");

    // --- nodes
    let ls = d.ok(&["node", "ls"]);
    let m_line = lines_with(&ls, "m1");
    assert!(
        m_line.len() == 1
            && m_line[0].contains(&format!("{m_id} *"))
            && m_line[0].contains("Leader"),
        "{ls}"
    );
    assert!(
        lines_with(&ls, "w1").iter().any(|l| l.contains("Ready")),
        "{ls}"
    );
    let me = d.json(&["node", "inspect", "self"]);
    assert_eq!(me[0]["ID"], m_id.as_str());
    assert_eq!(me[0]["Description"]["Hostname"], "m1");
    assert_eq!(
        d.ok(&["node", "update", "--label-add", "zone=a", "w1"])
            .trim(),
        "w1"
    );
    let wn = d.json(&["node", "inspect", "w1"]);
    assert_eq!(wn[0]["Spec"]["Labels"]["zone"], "a");
    d.ok(&["node", "update", "--availability", "drain", &w_id]);
    assert_eq!(
        d.json(&["node", "inspect", &w_id])[0]["Spec"]["Availability"],
        "drain"
    );
    d.ok(&["node", "update", "--availability", "active", &w_id]);
    assert_eq!(
        d.json(&["node", "inspect", &w_id])[0]["Spec"]["Availability"],
        "active"
    );
    let out = d.ok(&["node", "promote", "w1"]);
    assert!(out.contains("promoted to a manager"), "{out}");
    wait_for("w1 reachable as a manager", T, || {
        let ls = d.ok(&["node", "ls"]);
        lines_with(&ls, "w1")
            .iter()
            .any(|l| l.contains("Reachable") && l.contains("Ready"))
            .then_some(())
    });
    let out = d.ok(&["node", "demote", "w1"]);
    assert!(out.contains("demoted"), "{out}");
    wait_for("w1 a worker again", T, || {
        let n = d.json(&["node", "inspect", "w1"]);
        (n[0]["Spec"]["Role"] == "worker"
            && n[0]["ManagerStatus"].is_null()
            && n[0]["Status"]["State"] == "ready")
            .then_some(())
    });
    wait_for("w1's API back as a worker", T, || {
        dw.run(&["info"]).status.success().then_some(())
    });
    d.ok(&["node", "ps"]);

    // --- services
    let id = d.ok(&[
        "service",
        "create",
        "--name",
        "t1",
        "--replicas",
        "2",
        "--detach",
        "--stop-grace-period",
        "1s",
        "local/busybox:1",
        "sleep",
        "3600",
    ]);
    assert_eq!(id.trim().len(), 25, "{id}");
    let out = d.ok(&[
        "service",
        "create",
        "--name",
        "t2",
        "--replicas",
        "2",
        "local/busybox:1",
        "sleep",
        "3600",
    ]);
    assert!(out.contains("overall progress: 2 out of 2 tasks"), "{out}");
    assert!(
        out.contains("verify: Service") && out.contains("converged"),
        "{out}"
    );
    wait_replicas(&d, "t1", "2/2");
    assert_eq!(replicas(&d, "t2").as_deref(), Some("2/2"));
    let (_, err) = d.fails(&[
        "service",
        "create",
        "--name",
        "t1",
        "--detach",
        "local/busybox:1",
        "sleep",
        "1",
    ]);
    assert!(
        err.contains("rpc error: code = AlreadyExists desc = name conflicts with an existing object: service t1 already exists"),
        "{err}"
    );
    let ps = d.ok(&["service", "ps", "t1"]);
    assert!(ps.contains("t1.1") && ps.contains("t1.2"), "{ps}");
    assert_eq!(lines_with(&ps, "Running").len(), 2, "{ps}");
    let svc = d.json(&["service", "inspect", "t1"]);
    assert_eq!(svc[0]["Spec"]["Name"], "t1");
    assert_eq!(svc[0]["Spec"]["Mode"]["Replicated"]["Replicas"], 2);
    assert_eq!(svc[0]["Spec"]["UpdateConfig"]["Order"], "stop-first");
    assert_eq!(svc[0]["Spec"]["EndpointSpec"]["Mode"], "vip");
    let pretty = d.ok(&["service", "inspect", "--pretty", "t1"]);
    assert!(
        pretty.contains("Name:\t\tt1") && pretty.contains("Replicas:\t2"),
        "{pretty}"
    );
    let (out, err) = d.fails(&["service", "inspect", "nosuch"]);
    assert_eq!(out.trim(), "[]");
    assert!(err.contains("no such service: nosuch"), "{err}");
    let (_, err) = d.fails(&["service", "rm", "nosuch"]);
    assert!(
        err.contains("Error response from daemon: service nosuch not found"),
        "{err}"
    );

    let out = d.ok(&["service", "scale", "t1=3"]);
    assert!(out.contains("converged"), "{out}");
    assert_eq!(replicas(&d, "t1").as_deref(), Some("3/3"));
    let out = d.ok(&[
        "service",
        "update",
        "--force",
        "--update-parallelism",
        "1",
        "t1",
    ]);
    assert!(out.contains("verify: Service t1 converged"), "{out}");
    let svc = d.json(&["service", "inspect", "t1"]);
    assert_eq!(svc[0]["Spec"]["TaskTemplate"]["ForceUpdate"], 1);
    let out = d.ok(&["service", "rollback", "t1"]);
    assert!(out.contains("rollback"), "{out}");
    let svc = d.json(&["service", "inspect", "t1"]);
    assert_eq!(svc[0]["Spec"]["TaskTemplate"]["ForceUpdate"], 0);
    assert_eq!(svc[0]["UpdateStatus"]["State"], "rollback_completed");
    wait_replicas(&d, "t1", "3/3");

    // --- logs
    d.ok(&[
        "service",
        "create",
        "--name",
        "t3",
        "--detach",
        "local/busybox:1",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo line $i; echo err $i >&2; sleep 0.3; done",
    ]);
    wait_replicas(&d, "t3", "1/1");
    wait_for("t3's output", T, || {
        let out = d.run(&["service", "logs", "t3"]);
        (String::from_utf8_lossy(&out.stdout).lines().count() >= 3).then_some(())
    });
    let out = d.run(&["service", "logs", "--tail", "2", "t3"]);
    assert!(out.status.success());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    // --tail counts stdout and stderr lines together.
    assert_eq!(
        stdout.lines().count() + stderr.lines().count(),
        2,
        "{stdout}{stderr}"
    );
    assert!(
        stdout
            .lines()
            .chain(stderr.lines())
            .all(|l| l.starts_with("t3.1.") && l.contains("@")),
        "{stdout}{stderr}"
    );
    let out = d.run_for(
        &["service", "logs", "-f", "--tail", "1", "t3"],
        None,
        Duration::from_secs(3),
    );
    assert!(!out.status.success(), "logs -f ended by itself");
    let followed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(lines_with(&followed, "| line").len() >= 3, "{followed}");

    // `docker service logs TASK` (a task ID instead of a service).
    let task = d.ok(&["service", "ps", "-q", "t3"]);
    let task = task.lines().next().unwrap().trim().to_string();
    let out = d.run(&["service", "logs", "--tail", "4", &task]);
    assert!(out.status.success());
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("t3.1.") && out.contains("| line"), "{out}");

    // A process service (created with shoal's CLI) as the docker CLI sees it.
    c.nodes[m].ok(&[
        "service",
        "create",
        "--name",
        "p1",
        "--runtime",
        "process",
        "-d",
        "sleep",
        "3600",
    ]);
    wait_replicas(&d, "p1", "1/1");
    let ls = d.ok(&["service", "ls", "--format", "{{.Name}} {{.Image}}"]);
    assert!(ls.contains("p1 sleep"), "{ls}");
    let ps = d.ok(&["service", "ps", "p1"]);
    assert!(ps.contains("p1.1") && ps.contains("Running"), "{ps}");
    d.ok(&["service", "inspect", "--pretty", "p1"]);
    let v1 = d.json(&["service", "inspect", "p1"])[0]["Version"]["Index"].clone();
    let out = d.ok(&["service", "scale", "p1=2"]);
    assert!(out.contains("converged"), "{out}");
    let p1 = d.json(&["service", "inspect", "p1"]);
    assert_ne!(p1[0]["Version"]["Index"], v1);
    assert_eq!(
        p1[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"],
        "sleep"
    );
    // An edit through the docker CLI lands in the ProcessSpec.
    let out = d.ok(&["service", "update", "--env-add", "X=1", "p1"]);
    assert!(out.contains("converged"), "{out}");
    // The docker CLI's round trips did not turn it into a container service.
    let stored: Value =
        serde_json::from_str(&c.nodes[m].ok(&["service", "inspect", "p1"])).unwrap();
    let tpl = &stored[0]["Spec"]["TaskTemplate"];
    assert_eq!(tpl["Runtime"], "process", "{stored}");
    assert!(tpl["ContainerSpec"].is_null(), "{stored}");
    assert_eq!(tpl["ProcessSpec"]["Env"][0], "X=1", "{stored}");
    assert_eq!(stored[0]["Spec"]["Mode"]["Replicated"]["Replicas"], 2);
    assert_eq!(d.ok(&["service", "rm", "p1"]).trim(), "p1");

    // --- containers, exec, images through the manager's engine
    let ps = d.ok(&[
        "ps",
        "--filter",
        "label=com.docker.swarm.service.name=t1",
        "--format",
        "{{.ID}} {{.Names}}",
    ]);
    assert!(lines_with(&ps, " t1.").len() >= 3, "{ps}");
    let cid = ps.split_whitespace().next().unwrap().to_string();
    assert_eq!(d.ok(&["exec", &cid, "echo", "hello"]).trim(), "hello");
    let out = d.run(&["exec", &cid, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(d.ok(&["images"]).contains("local/busybox"));
    let img = d.json(&["image", "inspect", "local/busybox:1"]);
    assert!(img[0]["Id"].as_str().unwrap().starts_with("sha256:"));
    d.ok(&[
        "tag",
        "local/busybox:1",
        "local/busybox:shoal-docker-cli-test",
    ]);
    let tagged = d.json(&["image", "inspect", "local/busybox:shoal-docker-cli-test"]);
    assert_eq!(tagged[0]["Id"], img[0]["Id"]);
    d.ok(&["rmi", "local/busybox:shoal-docker-cli-test"]);
    assert!(engine(&["image", "inspect", "local/busybox:shoal-docker-cli-test"]).is_none());
    let nps = d.ok(&["node", "ps", "w1"]);
    assert!(nps.contains("Running"), "{nps}");

    // --- swarm
    let jt = d.ok(&["swarm", "join-token", "worker"]);
    assert!(jt.contains("docker swarm join --token SWMTKN-1-"), "{jt}");
    assert!(jt.contains(&c.nodes[m].addr), "{jt}");
    let mtok = d.ok(&["swarm", "join-token", "-q", "manager"]);
    assert!(mtok.trim().starts_with("SWMTKN-1-"), "{mtok}");
    let before = d.ok(&["swarm", "join-token", "-q", "worker"]);
    let out = d.ok(&["swarm", "join-token", "--rotate", "worker"]);
    assert!(
        out.contains("Successfully rotated worker join token"),
        "{out}"
    );
    let after = d.ok(&["swarm", "join-token", "-q", "worker"]);
    assert_ne!(before, after);
    assert_eq!(
        d.ok(&["swarm", "update", "--task-history-limit", "3"])
            .trim(),
        "Swarm updated."
    );
    assert!(d.ok(&["info"]).contains("Task History Retention Limit: 3"));

    // --- secrets and configs
    let sid = d.ok_in(&["secret", "create", "s1", "-"], Some(b"topsecret"));
    assert_eq!(sid.trim().len(), 25, "{sid}");
    assert!(d.ok(&["secret", "ls"]).contains("s1"));
    let s = d.json(&["secret", "inspect", "s1"]);
    assert_eq!(s[0]["Spec"]["Name"], "s1");
    assert!(s[0]["Spec"]["Data"].is_null(), "secret data shown: {s}");
    let cfg_file = tmp.join("c1.txt");
    std::fs::write(&cfg_file, "server-config-data\n").unwrap();
    d.ok(&["config", "create", "c1", cfg_file.to_str().unwrap()]);
    assert!(d.ok(&["config", "ls"]).contains("c1"));
    let cf = d.json(&["config", "inspect", "c1"]);
    assert_eq!(cf[0]["Spec"]["Data"], "c2VydmVyLWNvbmZpZy1kYXRhCg==");

    // --- networks
    let nid = d.ok(&["network", "create", "-d", "overlay", "ov1"]);
    assert_eq!(nid.trim().len(), 25, "{nid}");
    let (_, err) = d.fails(&["network", "create", "-d", "overlay", "ov1"]);
    assert!(err.contains("already exists"), "{err}");
    let nls = d.ok(&["network", "ls"]);
    assert!(
        lines_with(&nls, "ov1")
            .iter()
            .any(|l| l.contains("overlay") && l.contains("swarm")),
        "{nls}"
    );
    let net = d.json(&["network", "inspect", "ov1"]);
    assert_eq!(net[0]["Id"], nid.trim());
    let subnet = net[0]["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        subnet.starts_with("10.0.") && subnet.ends_with(".0/24"),
        "{subnet}"
    );
    // A service using the secret, the config and the network.
    d.ok(&[
        "service",
        "create",
        "--name",
        "sc1",
        "--detach",
        "--secret",
        "s1",
        "--config",
        "source=c1,target=/etc/c1",
        "--network",
        "ov1",
        "--env",
        "FOO=bar",
        "local/busybox:1",
        "sleep",
        "3600",
    ]);
    let sc1 = d.json(&["service", "inspect", "sc1"]);
    assert_eq!(
        sc1[0]["Spec"]["TaskTemplate"]["Networks"][0]["Target"],
        nid.trim()
    );
    let (_, err) = d.fails(&["network", "rm", "ov1"]);
    assert!(err.contains("in use"), "{err}");
    assert_eq!(d.ok(&["service", "rm", "sc1"]).trim(), "sc1");
    assert_eq!(d.ok(&["network", "rm", "ov1"]).trim(), "ov1");
    assert!(!d.ok(&["network", "ls"]).contains("ov1"));
    assert_eq!(d.ok(&["secret", "rm", "s1"]).trim(), "s1");
    assert_eq!(d.ok(&["config", "rm", "c1"]).trim(), "c1");
    assert!(!d.ok(&["secret", "ls"]).contains("s1"));

    // --- stacks
    let compose = tmp.join("compose.yml");
    std::fs::write(
        &compose,
        r#"version: "3.8"
services:
  web:
    image: local/busybox:1
    command: ["sleep", "3600"]
    networks: [appnet]
    deploy:
      replicas: 2
  worker:
    image: local/busybox:1
    command: ["sleep", "3600"]
    environment:
      ROLE: worker
    networks: [appnet]
networks:
  appnet: {}
"#,
    )
    .unwrap();
    let out = d.ok(&["stack", "deploy", "-c", compose.to_str().unwrap(), "st1"]);
    assert!(out.contains("Creating network st1_appnet"), "{out}");
    assert!(
        out.contains("Creating service st1_web") && out.contains("Creating service st1_worker"),
        "{out}"
    );
    let sls = d.ok(&["stack", "ls"]);
    assert!(
        lines_with(&sls, "st1")
            .iter()
            .any(|l| l.split_whitespace().nth(1) == Some("2")),
        "{sls}"
    );
    wait_replicas(&d, "st1_web", "2/2");
    wait_replicas(&d, "st1_worker", "1/1");
    let sps = d.ok(&["stack", "ps", "st1"]);
    assert!(
        sps.contains("st1_web.1") && sps.contains("st1_web.2") && sps.contains("st1_worker.1"),
        "{sps}"
    );
    let sss = d.ok(&["stack", "services", "st1"]);
    assert!(
        lines_with(&sss, "st1_web")
            .iter()
            .any(|l| l.contains("2/2")),
        "{sss}"
    );
    let web = d.json(&["service", "inspect", "st1_web"]);
    let appnet = d.json(&["network", "inspect", "st1_appnet"]);
    assert_eq!(
        web[0]["Spec"]["TaskTemplate"]["Networks"][0]["Target"],
        appnet[0]["Id"]
    );
    let out = d.ok(&["stack", "rm", "st1"]);
    assert!(out.contains("Removing network st1_appnet"), "{out}");
    assert!(!d.ok(&["service", "ls"]).contains("st1_"));
    assert!(!d.ok(&["network", "ls"]).contains("st1_appnet"));

    // --- bad input: Docker's error shape, a 4xx, no state change
    let before = d.ok(&["service", "ls", "-q"]);
    for (method, path, body, want) in [
        ("POST", "/v1.41/services/create", "{bad", 400),
        ("POST", "/v1.41/services/create", r#"{"Name":5}"#, 400),
        (
            "POST",
            "/v1.41/networks/create",
            r#"{"Name":"x","Internal":"yes"}"#,
            400,
        ),
        (
            "POST",
            "/v1.41/networks/create",
            r#"{"Name":"x","Driver":"bridge"}"#,
            400,
        ),
        ("GET", "/v1.99/services", "", 400),
        ("GET", "/v1.41/services?filters=%7Bnope", "", 400),
        ("PUT", "/v1.41/services", "", 405),
        ("GET", "/v1.41/networks/nosuch", "", 404),
        ("DELETE", "/v1.41/networks/nosuch", "", 404),
    ] {
        let (status, body) = raw(&msock, method, path, body);
        assert_eq!(status, want, "{method} {path}: {body}");
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        assert!(v["message"].is_string(), "{path}: {body}");
    }
    assert_eq!(d.ok(&["service", "ls", "-q"]), before);
    assert!(!d.ok(&["network", "ls"]).contains(" x "));

    let out = d.ok(&["service", "rm", "t1", "t2", "t3"]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["t1", "t2", "t3"]
    );
    assert_eq!(d.ok(&["service", "ls", "-q"]).trim(), "");

    drop(c);
    drop(containers);
    for node in [&m_id, &w_id] {
        let left = engine(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.swarm.node.id={node}"),
        ])
        .unwrap_or_default();
        assert!(left.trim().is_empty(), "containers left on {node}: {left}");
    }
    println!("docker_cli_end_to_end took {:?}", started.elapsed());
}
