//! A cluster harness for integration tests: real `shoal` daemons as
//! processes on loopback, each with its own data dir, port and API socket.
//! Every daemon is killed (by PID) when the harness is dropped, pass or fail.

#![allow(dead_code)]

pub mod docker;
pub mod netns;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The shoal binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shoal"))
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` until it returns Some, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One daemon.
pub struct Daemon {
    /// Its name (also its reported host name).
    pub name: String,
    /// Data dir.
    pub dir: PathBuf,
    /// Node-to-node address.
    pub addr: String,
    /// API socket.
    pub socket: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    env: Vec<(String, String)>,
    /// The network namespace it runs in (`None`: the test's own).
    netns: Option<String>,
}

impl Daemon {
    fn spawn(&mut self, args: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match &self.netns {
            // `ip netns exec` execs the daemon: the child's PID is the daemon's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let child = cmd
            .args(args)
            .env("SHOAL_LOG", "info,openraft=off")
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn shoal");
        self.child = Some(child);
    }

    /// Runs the CLI against this daemon's API.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .output()
            .expect("run shoal cli")
    }

    /// Runs the CLI and returns stdout, panicking on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "shoal {args:?} on {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `node ls --format json`, if the API answers.
    pub fn nodes(&self) -> Option<Vec<Value>> {
        let out = self.cli(&["node", "ls", "--format", "json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// This node's ID (from `/info`).
    pub fn node_id(&self) -> Option<String> {
        let out = self.cli(&["info", "--format", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["Swarm"]["NodeID"].as_str().map(String::from)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc_kill(c.id() as i32, 15) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGSTOP or SIGCONT.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            unsafe { libc_kill(c.id() as i32, sig) };
        }
    }

    /// Starts the (stopped) daemon with `args` and waits for its API.
    pub fn start(&mut self, args: &[&str]) {
        self.kill();
        self.spawn(args);
        self.wait_api();
    }

    /// Restarts with `shoal daemon --data-dir`.
    pub fn restart(&mut self) {
        self.kill();
        let dir = self.dir.display().to_string();
        self.spawn(&["daemon", "--data-dir", &dir]);
        self.wait_api();
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits for the API socket to answer.
    pub fn wait_api(&mut self) {
        let name = self.name.clone();
        let log = self.log.clone();
        wait_for(&format!("{name}'s API"), Duration::from_secs(30), || {
            if !self.running() {
                panic!(
                    "{name} exited: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            self.cli(&["info", "--format", "json"])
                .status
                .success()
                .then_some(())
        });
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Signal numbers.
pub const SIGSTOP: i32 = 19;
/// Signal numbers.
pub const SIGCONT: i32 = 18;

/// A set of daemons in one temporary directory.
pub struct Cluster {
    /// The daemons.
    pub nodes: Vec<Daemon>,
    /// The temporary directory (kept alive).
    pub tmp: tempfile::TempDir,
    /// Extra environment for every daemon started from now on.
    pub env: Vec<(String, String)>,
    /// With [`Cluster::in_netns`]: each daemon on a host of its own (dropped
    /// after the daemons are killed).
    pub net: Option<netns::Net>,
}

impl Cluster {
    /// An empty cluster harness.
    pub fn new() -> Cluster {
        Cluster {
            nodes: Vec::new(),
            tmp: tempfile::tempdir().unwrap(),
            env: Vec::new(),
            net: None,
        }
    }

    /// An empty harness whose daemons each run on a host (network namespace)
    /// of their own, cabled to one switch; `None` (and says why) where that
    /// cannot be done (not root, no `ip`): the test then has nothing to run.
    pub fn in_netns() -> Option<Cluster> {
        match netns::Net::new() {
            Ok(net) => {
                let mut c = Cluster::new();
                c.net = Some(net);
                Some(c)
            }
            Err(e) => {
                eprintln!("skipped: network namespaces are not usable here: {e}");
                None
            }
        }
    }

    fn daemon(&self, name: &str) -> Daemon {
        let dir = self.tmp.path().join(name);
        let (netns, addr) = match &self.net {
            Some(net) => {
                let (ns, ip) = net.add_host();
                (Some(ns), format!("{ip}:2377"))
            }
            None => (None, format!("127.0.0.1:{}", free_port())),
        };
        Daemon {
            name: name.into(),
            socket: dir.join("shoal.sock"),
            log: self.tmp.path().join(format!("{name}.log")),
            dir,
            addr,
            child: None,
            env: self.env.clone(),
            netns,
        }
    }

    /// Starts the first manager with `shoal init`; returns its index.
    pub fn init(&mut self, name: &str, extra: &[&str]) -> usize {
        let mut d = self.daemon(name);
        let dir = d.dir.display().to_string();
        let addr = d.addr.clone();
        let mut args = vec![
            "init",
            "--data-dir",
            &dir,
            "--listen-addr",
            &addr,
            "--hostname",
            name,
        ];
        args.extend_from_slice(extra);
        d.spawn(&args);
        d.wait_api();
        self.nodes.push(d);
        self.nodes.len() - 1
    }

    /// Joins a node through `via` with the `role`'s token; returns its index.
    pub fn join(&mut self, name: &str, role: &str, via: usize) -> usize {
        self.join_with(name, role, via, &[])
    }

    /// Runs `shoal join` for a node that must fail; returns its output.
    pub fn join_expect_failure(&self, name: &str, token: &str, manager: &str) -> Output {
        let d = self.daemon(name);
        let mut child = Command::new(bin())
            .args([
                "join",
                "--data-dir",
                &d.dir.display().to_string(),
                "--listen-addr",
                &d.addr,
                "--token",
                token,
                manager,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return child.wait_with_output().unwrap();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "join of {name} did not fail: {:?}",
                    child.wait_with_output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Index of the current leader (as seen by node `via`).
    pub fn leader(&self, via: usize) -> Option<usize> {
        let nodes = self.nodes[via].nodes()?;
        let leader = nodes
            .iter()
            .find(|n| n["ManagerStatus"]["Leader"].as_bool() == Some(true))?;
        let host = leader["Description"]["Hostname"].as_str()?;
        self.nodes.iter().position(|d| d.name == host)
    }

    /// Node state (`ready`/`down`) of `name` as seen by node `via`.
    pub fn state_of(&self, via: usize, name: &str) -> Option<String> {
        let nodes = self.nodes[via].nodes()?;
        let n = nodes
            .iter()
            .find(|n| n["Description"]["Hostname"].as_str() == Some(name))?;
        n["Status"]["State"].as_str().map(String::from)
    }
}

/// How many nodes `via` sees READY (`None` if its API does not answer).
pub fn ready_count(c: &Cluster, via: usize) -> Option<usize> {
    let nodes = c.nodes[via].nodes()?;
    Some(
        nodes
            .iter()
            .filter(|n| n["Status"]["State"] == "ready")
            .count(),
    )
}

/// Number of processes whose command line (args joined by spaces) is `cmdline`.
pub fn count_procs(cmdline: &str) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let args: Vec<String> = c
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).to_string())
                .collect();
            if args.join(" ") == cmdline {
                n += 1;
            }
        }
    }
    n
}

/// Kills every task process and shim a daemon's agent started (they outlive
/// the daemon on purpose, so tests end them by the PIDs the shims recorded).
pub fn kill_tasks(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir.join("tasks")) else {
        return;
    };
    for e in entries.flatten() {
        for f in ["pid", "shim.pid"] {
            if let Some(pid) = std::fs::read_to_string(e.path().join(f))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                if pid > 1 {
                    unsafe {
                        libc_kill(-pid, 9);
                        libc_kill(pid, 9);
                    }
                }
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for d in &mut self.nodes {
            d.kill();
        }
        for d in &self.nodes {
            kill_tasks(&d.dir);
        }
        if std::thread::panicking() {
            for d in &self.nodes {
                eprintln!("===== log of {} =====\n{}", d.name, d.log());
            }
        }
    }
}

/// A raw HTTP/1.1 request to a daemon's API socket: (status, body).
pub fn api(d: &Daemon, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    http_at(&d.socket, method, path, body.unwrap_or(""), None).expect("API request")
}

/// One HTTP/1.1 request on the unix socket `socket`: (status, body), with
/// a chunked body decoded (lists are streamed); `None` if it could not be
/// sent or read (within `read_timeout`, if given).
pub fn http_at(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    body: &str,
    read_timeout: Option<Duration>,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    s.set_read_timeout(read_timeout).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: shoal\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let resp = String::from_utf8_lossy(&resp).to_string();
    let status: u16 = resp
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    let (head, rest) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut r = rest;
        while let Some((len, tail)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            r = tail[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_string()
    };
    Some((status, body))
}

impl Cluster {
    /// Joins like [`Cluster::join`], with extra daemon flags (e.g.
    /// `--docker-socket PATH`); returns its index.
    pub fn join_with(&mut self, name: &str, role: &str, via: usize, extra: &[&str]) -> usize {
        let token = self.nodes[via]
            .ok(&["swarm", "join-token", "-q", role])
            .trim()
            .to_string();
        let manager = self.nodes[via].addr.clone();
        let mut d = self.daemon(name);
        let dir = d.dir.display().to_string();
        let addr = d.addr.clone();
        let mut args = vec![
            "join",
            "--data-dir",
            &dir,
            "--listen-addr",
            &addr,
            "--hostname",
            name,
            "--token",
            &token,
        ];
        args.extend_from_slice(extra);
        args.push(&manager);
        d.spawn(&args);
        d.wait_api();
        self.nodes.push(d);
        self.nodes.len() - 1
    }
}

impl Cluster {
    /// Starts `shoal daemon` on an empty data dir: a node in no swarm that
    /// waits for `POST /swarm/init` or `/swarm/join`; returns its index.
    pub fn idle(&mut self, name: &str, extra: &[&str]) -> usize {
        let mut d = self.daemon(name);
        let dir = d.dir.display().to_string();
        let mut args = vec!["daemon", "--data-dir", &dir, "--hostname", name];
        args.extend_from_slice(extra);
        d.spawn(&args);
        d.wait_api();
        self.nodes.push(d);
        self.nodes.len() - 1
    }
}
