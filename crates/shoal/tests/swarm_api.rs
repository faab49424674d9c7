//! The swarm lifecycle through the Docker Engine API, as Docker has it: a
//! `shoal daemon` on an empty data dir is in no swarm (`LocalNodeState:
//! inactive`) and is driven by `POST /swarm/init`, `/swarm/join`,
//! `/swarm/leave`, `GET /swarm/unlockkey` and `POST /swarm/unlock`. Real
//! daemons on loopback, raw HTTP on their API sockets.

mod common;

use base64::Engine;
use common::{api, count_procs, free_port, wait_for, Cluster};
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn swarm_state(c: &Cluster, i: usize) -> Value {
    let (code, body) = api(&c.nodes[i], "GET", "/v1.41/info", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["Swarm"].clone()
}

fn local_state(c: &Cluster, i: usize) -> String {
    swarm_state(c, i)["LocalNodeState"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn post(c: &Cluster, i: usize, path: &str, body: Value) -> (u16, String) {
    api(&c.nodes[i], "POST", path, Some(&body.to_string()))
}

fn init_body(port: u16) -> Value {
    json!({
        "ListenAddr": format!("127.0.0.1:{port}"),
        "AdvertiseAddr": "127.0.0.1",
        "DataPathAddr": "",
        "ForceNewCluster": false,
        "Spec": {"Labels": null, "Orchestration": {"TaskHistoryRetentionLimit": 3},
                 "Raft": {}, "Dispatcher": {}, "CAConfig": {}, "TaskDefaults": {},
                 "EncryptionConfig": {"AutoLockManagers": false}},
        "AutoLockManagers": false,
        "Availability": "",
    })
}

fn token(c: &Cluster, i: usize, role: &str) -> String {
    let (code, body) = api(&c.nodes[i], "GET", "/v1.41/swarm", None);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["JoinTokens"][role].as_str().unwrap().to_string()
}

fn join_body(port: u16, remote: &str, token: &str) -> Value {
    json!({
        "ListenAddr": format!("127.0.0.1:{port}"),
        "AdvertiseAddr": "",
        "RemoteAddrs": [remote],
        "JoinToken": token,
        "Availability": "",
    })
}

fn node_count(c: &Cluster, i: usize) -> usize {
    let (code, body) = api(&c.nodes[i], "GET", "/v1.41/nodes", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Vec<Value>>(&body).unwrap().len()
}

fn error_of(code: u16, body: &str, want_code: u16, want: &str) {
    assert_eq!(code, want_code, "{body}");
    let v: Value = serde_json::from_str(body).expect("a JSON error body");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(msg.contains(want), "{msg:?} should contain {want:?}");
}

#[test]
fn inactive_node_refuses_cluster_calls_and_bad_init_or_join() {
    let mut c = Cluster::new();
    let a = c.idle("a", &[]);
    assert_eq!(local_state(&c, a), "inactive");
    assert_eq!(swarm_state(&c, a)["ControlAvailable"], json!(false));

    let (code, body) = api(&c.nodes[a], "GET", "/v1.41/nodes", None);
    error_of(code, &body, 503, "docker swarm init");
    let (code, body) = api(&c.nodes[a], "GET", "/v1.41/swarm", None);
    error_of(code, &body, 503, "not a swarm manager");
    let (code, body) = post(&c, a, "/v1.41/swarm/leave", json!({}));
    error_of(code, &body, 503, "This node is not part of a swarm");
    let (code, body) = post(&c, a, "/v1.41/swarm/unlock", json!({"UnlockKey": "x"}));
    error_of(code, &body, 503, "not a swarm manager");
    let (code, body) = api(&c.nodes[a], "GET", "/v1.41/swarm/unlockkey", None);
    error_of(code, &body, 503, "not a swarm manager");

    // Bad init requests: 400, and the node stays in no swarm.
    let port = free_port();
    let (code, body) = api(&c.nodes[a], "POST", "/v1.41/swarm/init", Some("{not json"));
    error_of(code, &body, 400, "invalid JSON");
    let (code, body) = post(&c, a, "/v1.41/swarm/init", json!({"ListenAddr": ""}));
    error_of(code, &body, 400, "invalid empty address");
    let mut b = init_body(port);
    b["Availability"] = json!("sometimes");
    let (code, body) = post(&c, a, "/v1.41/swarm/init", b);
    error_of(code, &body, 400, "invalid Availability");
    let mut b = init_body(port);
    b["AdvertiseAddr"] = json!("0.0.0.0");
    let (code, body) = post(&c, a, "/v1.41/swarm/init", b);
    error_of(code, &body, 400, "non-zero IP");
    let mut b = init_body(port);
    b["ListenAddr"] = json!("nosuchiface0:2377");
    let (code, body) = post(&c, a, "/v1.41/swarm/init", b);
    error_of(code, &body, 400, "nosuchiface0");
    let mut b = init_body(port);
    b["Spec"]["Name"] = json!("other");
    let (code, body) = post(&c, a, "/v1.41/swarm/init", b);
    error_of(code, &body, 400, "must be named \"default\"");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let (code, body) = post(&c, a, "/v1.41/swarm/init", init_body(busy_port));
    error_of(code, &body, 400, "cannot listen");
    drop(busy);

    // Bad join requests.
    let (code, body) = post(
        &c,
        a,
        "/v1.41/swarm/join",
        json!({"ListenAddr": "127.0.0.1:1", "RemoteAddrs": [], "JoinToken": "x"}),
    );
    error_of(code, &body, 400, "at least 1 RemoteAddr");
    let (code, body) = post(
        &c,
        a,
        "/v1.41/swarm/join",
        join_body(free_port(), "127.0.0.1:1", "SWMTKN-nonsense"),
    );
    error_of(code, &body, 400, "invalid join token");
    let (code, body) = post(
        &c,
        a,
        "/v1.41/swarm/join",
        join_body(free_port(), "manager.example:2377", "SWMTKN-nonsense"),
    );
    error_of(code, &body, 400, "invalid remoteAddr");

    assert_eq!(local_state(&c, a), "inactive");
    assert!(!c.nodes[a].dir.join("node.json").exists());
}

#[test]
fn init_join_leave_and_init_again_in_one_process() {
    let mut c = Cluster::new();
    let a = c.idle("a", &[]);
    let b = c.idle("b", &[]);
    let pa = free_port();
    let (code, body) = post(&c, a, "/v1.41/swarm/init", init_body(pa));
    assert_eq!(code, 200, "{body}");
    let id_a: String = serde_json::from_str(&body).expect("the node ID as a JSON string");
    let s = swarm_state(&c, a);
    assert_eq!(s["LocalNodeState"], json!("active"));
    assert_eq!(s["ControlAvailable"], json!(true));
    assert_eq!(s["NodeID"], json!(id_a));
    let (_, body) = api(&c.nodes[a], "GET", "/v1.41/swarm", None);
    let swarm: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        swarm["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"],
        json!(3)
    );
    let cluster_1 = swarm["ID"].as_str().unwrap().to_string();
    let (code, body) = post(&c, a, "/v1.41/swarm/init", init_body(free_port()));
    error_of(code, &body, 503, "already part of a swarm");

    // Joins that fail leave b in no swarm.
    let remote = format!("127.0.0.1:{pa}");
    let worker_token = token(&c, a, "Worker");
    let mut wrong = worker_token.clone();
    let n = wrong.len();
    wrong.replace_range(n - 25.., "0000000000000000000000000");
    let (code, body) = post(
        &c,
        b,
        "/v1.41/swarm/join",
        join_body(free_port(), &remote, &wrong),
    );
    error_of(code, &body, 400, "join refused");
    let (code, body) = post(
        &c,
        b,
        "/v1.41/swarm/join",
        join_body(
            free_port(),
            &format!("127.0.0.1:{}", free_port()),
            &worker_token,
        ),
    );
    error_of(code, &body, 503, "cannot reach");
    assert_eq!(local_state(&c, b), "inactive");

    // b joins as a worker and runs a task.
    let (code, body) = post(
        &c,
        b,
        "/v1.41/swarm/join",
        join_body(free_port(), &remote, &worker_token),
    );
    assert_eq!(code, 200, "{body}");
    let s = swarm_state(&c, b);
    assert_eq!(s["LocalNodeState"], json!("active"));
    assert_eq!(s["ControlAvailable"], json!(false));
    let (code, body) = post(
        &c,
        b,
        "/v1.41/swarm/join",
        join_body(free_port(), &remote, &worker_token),
    );
    error_of(code, &body, 503, "already part of a swarm");
    wait_for("2 nodes", T, || (node_count(&c, a) == 2).then_some(()));
    c.nodes[a].ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "lc",
        "--mode",
        "global",
        "--runtime",
        "process",
        "--",
        "sleep",
        "4711",
    ]);
    wait_for("a task on each node", T, || {
        (count_procs("sleep 4711") == 2).then_some(())
    });

    // A worker leaves without --force; its tasks go with it; the process stays up.
    let (code, body) = post(&c, b, "/v1.41/swarm/leave", json!({}));
    assert_eq!(code, 200, "{body}");
    assert_eq!(local_state(&c, b), "inactive");
    assert!(c.nodes[b].running());
    wait_for("b's task gone", T, || {
        (count_procs("sleep 4711") == 1).then_some(())
    });

    // b comes back as a manager; a manager does not leave without --force.
    let (code, body) = post(
        &c,
        b,
        "/v1.41/swarm/join",
        join_body(free_port(), &remote, &token(&c, a, "Manager")),
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        node_count(&c, b) >= 2,
        "a new manager serves the cluster's state at once"
    );
    let (code, body) = post(&c, b, "/v1.41/swarm/leave", json!({}));
    error_of(code, &body, 503, "participating as a manager");
    let b_id = swarm_state(&c, b)["NodeID"].as_str().unwrap().to_string();
    c.nodes[a].ok(&["node", "demote", &b_id]);
    wait_for("b is a worker", T, || {
        (swarm_state(&c, b)["ControlAvailable"] == json!(false)).then_some(())
    });
    let (code, body) = api(&c.nodes[b], "POST", "/v1.41/swarm/leave", None);
    assert_eq!(code, 200, "{body}");

    // The last manager: refused without force, then gone with it.
    let (code, body) = post(&c, a, "/v1.41/swarm/leave", json!({}));
    error_of(
        code,
        &body,
        503,
        "Removing the last manager erases all current state",
    );
    let (code, body) = api(&c.nodes[a], "POST", "/v1.41/swarm/leave?force=1", None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(local_state(&c, a), "inactive");
    wait_for("a's task gone", T, || {
        (count_procs("sleep 4711") == 0).then_some(())
    });

    // Init → leave → init, in the same process, each a new cluster.
    let mut ids = vec![cluster_1];
    for _ in 0..2 {
        let (code, body) = post(&c, a, "/v1.41/swarm/init", init_body(free_port()));
        assert_eq!(code, 200, "{body}");
        let (_, body) = api(&c.nodes[a], "GET", "/v1.41/swarm", None);
        let id = serde_json::from_str::<Value>(&body).unwrap()["ID"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(!ids.contains(&id), "a new cluster each time");
        ids.push(id);
        assert_eq!(node_count(&c, a), 1);
        let (code, body) = api(&c.nodes[a], "POST", "/v1.41/swarm/leave?force=true", None);
        assert_eq!(code, 200, "{body}");
    }
    assert!(c.nodes[a].running() && c.nodes[b].running());
}

#[test]
fn autolock_seals_the_manager_key_until_unlocked() {
    let mut c = Cluster::new();
    let a = c.idle("a", &[]);
    let mut body = init_body(free_port());
    body["AutoLockManagers"] = json!(true);
    let (code, out) = post(&c, a, "/v1.41/swarm/init", body);
    assert_eq!(code, 200, "{out}");
    let (code, out) = api(&c.nodes[a], "GET", "/v1.41/swarm/unlockkey", None);
    assert_eq!(code, 200, "{out}");
    let key = serde_json::from_str::<Value>(&out).unwrap()["UnlockKey"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(key.starts_with("SWMKEY-1-"), "{key}");
    let key_file = c.nodes[a].dir.join("certs").join("node.key");
    let sealed = std::fs::read_to_string(&key_file).unwrap();
    assert!(!sealed.contains("PRIVATE KEY"), "the key at rest is sealed");
    let (code, out) = post(&c, a, "/v1.41/swarm/unlock", json!({"UnlockKey": key}));
    error_of(code, &out, 409, "swarm is not locked");

    // A restart comes up locked.
    c.nodes[a].restart();
    let s = swarm_state(&c, a);
    assert_eq!(s["LocalNodeState"], json!("locked"), "{s}");
    let (code, out) = api(&c.nodes[a], "GET", "/v1.41/nodes", None);
    error_of(code, &out, 503, "docker swarm unlock");
    let (code, out) = post(
        &c,
        a,
        "/v1.41/swarm/unlock",
        json!({"UnlockKey": "nonsense"}),
    );
    error_of(code, &out, 400, "invalid unlock key");
    let other = "SWMKEY-1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let (code, out) = post(&c, a, "/v1.41/swarm/unlock", json!({"UnlockKey": other}));
    error_of(code, &out, 401, "invalid key provided");
    let (code, out) = post(&c, a, "/v1.41/swarm/leave", json!({}));
    error_of(code, &out, 503, "encrypted and locked");
    assert_eq!(local_state(&c, a), "locked");
    let (code, out) = post(&c, a, "/v1.41/swarm/unlock", json!({"UnlockKey": key}));
    assert_eq!(code, 200, "{out}");
    assert_eq!(local_state(&c, a), "active");
    assert_eq!(node_count(&c, a), 1);
    let sealed = std::fs::read_to_string(&key_file).unwrap();

    // The Raft log at rest is sealed too: neither a secret's value nor the
    // CA's private key (both in the replicated state) can be read from it.
    let value = "the-secret-value-4711";
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    let (code, out) = post(
        &c,
        a,
        "/v1.41/secrets/create",
        json!({"Name": "s1", "Data": b64}),
    );
    assert_eq!(code, 201, "{out}");
    let raft = c.nodes[a].dir.join("raft");
    let mut files = 0;
    let mut stack = vec![raft];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&p).unwrap();
            for needle in [value.as_bytes(), b64.as_bytes(), b"PRIVATE KEY"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{} holds {:?} in clear",
                    p.display(),
                    String::from_utf8_lossy(needle)
                );
            }
        }
    }
    assert!(files > 0, "the Raft files were looked at");

    // Rotation re-seals; turning autolock off stores the key in clear.
    let (_, out) = api(&c.nodes[a], "GET", "/v1.41/swarm", None);
    let swarm: Value = serde_json::from_str(&out).unwrap();
    let v = swarm["Version"]["Index"].as_u64().unwrap();
    let (code, out) = post(
        &c,
        a,
        &format!("/v1.41/swarm/update?version={v}&rotateManagerUnlockKey=true"),
        swarm["Spec"].clone(),
    );
    assert_eq!(code, 200, "{out}");
    let (_, out) = api(&c.nodes[a], "GET", "/v1.41/swarm/unlockkey", None);
    let key2 = serde_json::from_str::<Value>(&out).unwrap()["UnlockKey"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(key, key2);
    wait_for("the key re-sealed", T, || {
        (std::fs::read_to_string(&key_file).ok()? != sealed).then_some(())
    });
    c.nodes[a].restart();
    let (code, out) = post(&c, a, "/v1.41/swarm/unlock", json!({"UnlockKey": key}));
    error_of(code, &out, 401, "invalid key provided");
    let (code, out) = post(&c, a, "/v1.41/swarm/unlock", json!({"UnlockKey": key2}));
    assert_eq!(code, 200, "{out}");
    assert_eq!(set_autolock(&c, a, false), "");
    wait_for("key in clear", T, || {
        std::fs::read_to_string(&key_file)
            .ok()?
            .contains("PRIVATE KEY")
            .then_some(())
    });
    c.nodes[a].restart();
    assert_eq!(local_state(&c, a), "active");

    // Turning autolock on again moves the store to a new data key (the old
    // one sat in clear): the log is rewritten into new segment files.
    let wal = c.nodes[a].dir.join("raft").join("wal");
    let segments = || {
        let mut v: Vec<String> = std::fs::read_dir(&wal)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".wal"))
            .collect();
        v.sort();
        v
    };
    let before = segments();
    let key3 = set_autolock(&c, a, true);
    assert!(key3.starts_with("SWMKEY-1-"), "{key3}");
    wait_for("the store re-keyed", T, || {
        let now = segments();
        (!now.iter().any(|s| before.contains(s))).then_some(())
    });
    wait_for("the key sealed", T, || {
        (!std::fs::read_to_string(&key_file)
            .ok()?
            .contains("PRIVATE KEY"))
        .then_some(())
    });
    c.nodes[a].restart();
    assert_eq!(local_state(&c, a), "locked");
    let (code, out) = post(&c, a, "/v1.41/swarm/unlock", json!({"UnlockKey": key3}));
    assert_eq!(code, 200, "{out}");
    let (code, out) = api(&c.nodes[a], "GET", "/v1.41/secrets", None);
    assert_eq!(code, 200, "{out}");
    assert!(
        out.contains("\"s1\""),
        "the secret survived the re-keying: {out}"
    );
    assert!(
        !out.contains(&b64),
        "a secret's value is never listed: {out}"
    );
    let listed = |filters: &str| {
        let enc: String = filters
            .bytes()
            .map(|b| match b.is_ascii_alphanumeric() {
                true => (b as char).to_string(),
                false => format!("%{b:02X}"),
            })
            .collect();
        let path = format!("/v1.41/secrets?filters={enc}");
        let (code, out) = api(&c.nodes[a], "GET", &path, None);
        assert_eq!(code, 200, "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        v.as_array().unwrap().len()
    };
    assert_eq!(listed(r#"{"name":["s"]}"#), 1);
    assert_eq!(listed(r#"{"name":["zz"]}"#), 0);
    let bad = "/v1.41/secrets?filters=%7B%22bad%22%3A%5B%22x%22%5D%7D";
    let (code, out) = api(&c.nodes[a], "GET", bad, None);
    error_of(code, &out, 400, "invalid filter 'bad'");
}

/// Turns autolock on or off with `swarm/update`; returns the unlock key
/// then in force ("" when off).
fn set_autolock(c: &Cluster, a: usize, on: bool) -> String {
    let (_, out) = api(&c.nodes[a], "GET", "/v1.41/swarm", None);
    let mut swarm: Value = serde_json::from_str(&out).unwrap();
    let v = swarm["Version"]["Index"].as_u64().unwrap();
    swarm["Spec"]["EncryptionConfig"]["AutoLockManagers"] = json!(on);
    let (code, out) = post(
        c,
        a,
        &format!("/v1.41/swarm/update?version={v}"),
        swarm["Spec"].clone(),
    );
    assert_eq!(code, 200, "{out}");
    let (_, out) = api(&c.nodes[a], "GET", "/v1.41/swarm/unlockkey", None);
    serde_json::from_str::<Value>(&out).unwrap()["UnlockKey"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn docker_cli_swarm_init_autolock_join_unlock_leave() {
    const DOCKER: &str = "/usr/local/bin/docker";
    if !std::path::Path::new(DOCKER).exists() {
        eprintln!("SKIPPED docker CLI swarm test: no {DOCKER}");
        return;
    }
    let mut c = Cluster::new();
    let sock = |n: &str| c.tmp.path().join(format!("{n}-docker.sock"));
    let (sa, sb) = (sock("a"), sock("b"));
    let a = c.idle("a", &["--docker-socket", sa.to_str().unwrap()]);
    c.idle("b", &["--docker-socket", sb.to_str().unwrap()]);
    let docker = |s: &std::path::Path, args: &[&str], stdin: Option<&str>| {
        use std::io::Write;
        let mut child = std::process::Command::new(DOCKER)
            .env("DOCKER_HOST", format!("unix://{}", s.display()))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let pa = free_port().to_string();
    let (ok, out) = docker(
        &sa,
        &[
            "swarm",
            "init",
            "--autolock",
            "--advertise-addr",
            "127.0.0.1",
            "--listen-addr",
            &format!("127.0.0.1:{pa}"),
        ],
        None,
    );
    assert!(
        ok && out.contains("Swarm initialized") && out.contains("SWMKEY-1-"),
        "{out}"
    );
    let (ok, key) = docker(&sa, &["swarm", "unlock-key", "-q"], None);
    assert!(ok, "{key}");
    let (ok, token) = docker(&sa, &["swarm", "join-token", "-q", "worker"], None);
    assert!(ok, "{token}");
    let (ok, out) = docker(
        &sb,
        &[
            "swarm",
            "join",
            "--listen-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--token",
            token.trim(),
            &format!("127.0.0.1:{pa}"),
        ],
        None,
    );
    assert!(
        ok && out.contains("This node joined a swarm as a worker."),
        "{out}"
    );
    wait_for("2 nodes", T, || {
        let (ok, out) = docker(&sa, &["node", "ls", "-q"], None);
        (ok && out.lines().count() == 2).then_some(())
    });
    let (ok, out) = docker(&sb, &["swarm", "leave"], None);
    assert!(ok && out.contains("Node left the swarm."), "{out}");

    // A restart locks the manager until `docker swarm unlock`.
    c.nodes[a].restart();
    let (_, out) = docker(
        &sa,
        &["info", "--format", "{{.Swarm.LocalNodeState}}"],
        None,
    );
    assert_eq!(out.trim(), "locked");
    let (ok, out) = docker(&sa, &["node", "ls"], None);
    assert!(!ok && out.contains("docker swarm unlock"), "{out}");
    let (ok, out) = docker(
        &sa,
        &["swarm", "unlock"],
        Some(&format!("{}\n", key.trim())),
    );
    assert!(ok, "{out}");
    let (ok, out) = docker(&sa, &["node", "ls"], None);
    assert!(ok, "{out}");
    let (ok, out) = docker(&sa, &["swarm", "leave", "--force"], None);
    assert!(ok && out.contains("Node left the swarm."), "{out}");
    let (_, out) = docker(
        &sa,
        &["info", "--format", "{{.Swarm.LocalNodeState}}"],
        None,
    );
    assert_eq!(out.trim(), "inactive");
}
