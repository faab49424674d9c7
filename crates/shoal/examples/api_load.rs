//! A load generator and timing helper for the control API (used by `bench/`).
//!
//! ```text
//! api_load load      --socket S [--clients N] [--duration SECS] [--warmup SECS] [--write KIND]
//! api_load failover  --socket S --kill-pid PID [--write KIND] [--freeze | --cut-cmd CMD]
//! api_load wait-state --socket S --node ID --kill-pid PID [--state down] [--interval-ms 20]
//! api_load fsync     --dir D [--count 200]
//! api_load floor     [--count 20000]
//! api_load chain     --dir D [--duration 5] [--bytes 600] [--leader-thread]
//! ```
//!
//! `load` opens N HTTP/1.1 keep-alive connections to the API socket and has
//! each issue writes back to back (one in flight per connection) for the
//! duration, then prints writes/s and latency percentiles.
//!
//! `failover` sends SIGKILL to a process (a manager) and then issues writes
//! through the given (surviving) manager one after the other until one is
//! accepted; it prints the time from the kill to that acceptance.
//!
//! `wait-state` sends SIGKILL to a process (a node) and polls
//! `GET /nodes/{id}` every interval until the node shows the given state; it
//! prints the time from the kill to the first answer showing it.
//!
//! `fsync` times the disk the way a Raft log append uses it: 4 KiB written
//! into an already-allocated file in D, then `fdatasync`, COUNT times (the
//! floor under every write's latency: one on the leader, one on a follower).
//!
//! `floor` times the steps a Raft write cannot avoid on this machine, with
//! no shoal code in them: a message to another tokio task and back, a
//! round trip through the blocking pool, and a 64-byte round trip to another
//! process over loopback TCP and over a unix socket (the child is this
//! program, `floor-echo`). A sequential write through a leader needs at least
//! two cross-process round trips (client ↔ leader, leader ↔ follower) and
//! the follower's fsync; openraft 0.9 adds the leader's fsync before it.
//!
//! `chain` runs the message pattern of one sequential Raft write as plainly
//! as it can be written: a client sends a request over a unix socket to a
//! leader process, which sends it over loopback TCP to two follower
//! processes and appends it to its own log; each appends it (`pwrite` into a
//! zero-filled file, `fdatasync`) and answers; the leader answers the client
//! once its own append and the first follower's answer are done. Blocking
//! I/O on plain threads, no TLS, no encoding: what is left is the disk, the
//! wake-ups and the system calls, i.e. the ceiling for this machine.
//!
//! Every mode ends with one machine-readable `RESULT key=value ...` line.
//!
//! Write kinds: `configs` (`POST /configs/create` with a unique name per
//! write, 201 expected) or `node-label` (`GET /nodes/{id}` for the version,
//! then `POST /nodes/{id}/update?version=N` with a changed label; concurrent
//! clients on one node conflict, so use it sequentially).

#[path = "load/chain.rs"]
mod chain;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(about = "Load generator and timing helper for shoal's control API")]
struct Args {
    /// Tokio worker threads of this process.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    cmd: Mode,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum WriteKind {
    /// `POST /configs/create`, a unique name per write.
    Configs,
    /// `GET /nodes/{id}` + `POST /nodes/{id}/update` (label change).
    NodeLabel,
}

#[derive(clap::Args, Clone)]
struct Target {
    /// API socket (a manager's DATA_DIR/shoal.sock).
    #[arg(long)]
    socket: PathBuf,
    /// What a write is.
    #[arg(long, value_enum, default_value_t = WriteKind::Configs)]
    write: WriteKind,
    /// Node whose labels `node-label` writes change (default: the target's own node).
    #[arg(long)]
    node: Option<String>,
    /// Prefix of created object names (default: derived from the clock).
    #[arg(long)]
    prefix: Option<String>,
}

#[derive(Subcommand)]
enum Mode {
    /// Writes as fast as possible from N connections; prints writes/s and latency.
    Load {
        #[command(flatten)]
        target: Target,
        /// Concurrent connections (one request in flight on each).
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Measured seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Unmeasured seconds before (connections and Raft warm up).
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Also print accepted writes per interval of this many ms of the
        /// measured window, stamped with the wall clock (to line drops up
        /// with the daemons' logs).
        #[arg(long)]
        timeline_ms: Option<u64>,
    },
    /// SIGKILLs a process, then writes through the target until one is accepted.
    Failover {
        #[command(flatten)]
        target: Target,
        /// Process to SIGKILL first (0: none, time from start).
        #[arg(long, default_value_t = 0)]
        kill_pid: i32,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
        /// Send SIGSTOP instead of SIGKILL (a frozen manager: its
        /// connections stay open and silent). The caller sends SIGCONT.
        #[arg(long)]
        freeze: bool,
        /// Instead of a signal, run this shell command first (e.g. one that
        /// cuts a host's network cable); time from when it returns.
        #[arg(long)]
        cut_cmd: Option<String>,
    },
    /// Times write + fdatasync of 4 KiB blocks in a file in DIR.
    Fsync {
        /// Directory for the (temporary) test file.
        #[arg(long)]
        dir: PathBuf,
        /// Number of synced writes.
        #[arg(long, default_value_t = 200)]
        count: usize,
    },
    /// Times the unavoidable steps of a write: task hop, blocking pool, IPC.
    Floor {
        /// Round trips per measurement.
        #[arg(long, default_value_t = 20000)]
        count: usize,
    },
    /// The fastest a Raft-shaped write can go on this machine, with no shoal
    /// code: a client, a leader and two followers as processes, blocking
    /// I/O, no TLS, no encoding (see the module docs).
    Chain {
        /// Directory for the three logs (on the disk under test).
        #[arg(long)]
        dir: PathBuf,
        /// Measured seconds.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Bytes per request (≈ one AppendEntries with one config).
        #[arg(long, default_value_t = 600)]
        bytes: usize,
        /// The leader syncs on a thread of its own (as shoal's leader does,
        /// on the blocking pool) instead of inline.
        #[arg(long)]
        leader_thread: bool,
    },
    /// (internal) A node of `chain`.
    #[command(hide = true)]
    ChainNode {
        #[arg(long)]
        role: String,
        #[arg(long)]
        wal: PathBuf,
        #[arg(long)]
        bytes: usize,
        /// leader: the client's unix socket and the followers' addresses.
        #[arg(long)]
        unix: Option<PathBuf>,
        #[arg(long)]
        followers: Vec<String>,
        #[arg(long)]
        leader_thread: bool,
    },
    /// (internal) The echo child of `floor`: echoes 64-byte messages on
    /// the TCP connection and the unix socket it is given.
    #[command(hide = true)]
    FloorEcho {
        #[arg(long)]
        tcp: String,
        #[arg(long)]
        unix: PathBuf,
    },
    /// SIGKILLs a process, then polls a node until it shows a state.
    WaitState {
        /// API socket of a manager.
        #[arg(long)]
        socket: PathBuf,
        /// Node ID to watch.
        #[arg(long)]
        node: String,
        /// State to wait for (`down`, `ready`, ...).
        #[arg(long, default_value = "down")]
        state: String,
        /// Process to SIGKILL first (0: none).
        #[arg(long, default_value_t = 0)]
        kill_pid: i32,
        /// Milliseconds between polls.
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
        /// Instead of a SIGKILL, run this shell command first (e.g. one that
        /// cuts the node's network cable); time from when it returns.
        #[arg(long)]
        cut_cmd: Option<String>,
    },
}

type Sender = SendRequest<Full<Bytes>>;

/// One keep-alive HTTP/1.1 connection to the API socket.
struct Conn {
    socket: PathBuf,
    sender: Option<Sender>,
}

impl Conn {
    fn new(socket: &Path) -> Conn {
        Conn {
            socket: socket.to_path_buf(),
            sender: None,
        }
    }

    async fn sender(&mut self) -> anyhow::Result<&mut Sender> {
        let usable = match &mut self.sender {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .with_context(|| format!("connect {}", self.socket.display()))?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        self.sender.as_mut().ok_or_else(|| anyhow!("no connection"))
    }

    /// Sends one request; returns the status and body. A transport error
    /// drops the connection (the next call reconnects).
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let r = self.call_inner(method, path, body).await;
        if r.is_err() {
            self.sender = None;
        }
        r
    }

    async fn call_inner(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/v1.41{path}"))
            .header("Host", "shoal");
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let sender = self.sender().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }
}

/// The daemon's error message, or the body.
fn message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// What one write attempt came to.
enum Outcome {
    Ok,
    /// The API answered with an error status.
    Refused(u16, String),
    /// No answer (connection refused, reset, ...).
    Transport(String),
}

/// Issues writes of one kind.
struct Writer {
    kind: WriteKind,
    prefix: String,
    client: usize,
    seq: u64,
    node: String,
}

impl Writer {
    async fn write(&mut self, conn: &mut Conn) -> Outcome {
        self.seq += 1;
        match self.kind {
            WriteKind::Configs => {
                let name = format!("{}-{}-{}", self.prefix, self.client, self.seq);
                let body = json!({"Name": name, "Data": "aGk="})
                    .to_string()
                    .into_bytes();
                match conn.call("POST", "/configs/create", Some(body)).await {
                    Ok((201, _)) => Outcome::Ok,
                    Ok((s, b)) => Outcome::Refused(s, message(&b)),
                    Err(e) => Outcome::Transport(format!("{e:#}")),
                }
            }
            WriteKind::NodeLabel => {
                let path = format!("/nodes/{}", self.node);
                let node: Value = match conn.call("GET", &path, None).await {
                    Ok((200, b)) => match serde_json::from_slice(&b) {
                        Ok(v) => v,
                        Err(e) => return Outcome::Refused(200, format!("bad JSON: {e}")),
                    },
                    Ok((s, b)) => return Outcome::Refused(s, message(&b)),
                    Err(e) => return Outcome::Transport(format!("{e:#}")),
                };
                let version = node["Version"]["Index"].as_u64().unwrap_or(0);
                let mut spec = node["Spec"].clone();
                if !spec["Labels"].is_object() {
                    spec["Labels"] = json!({});
                }
                spec["Labels"][format!("bench.{}", self.client)] =
                    Value::String(format!("{}-{}", self.prefix, self.seq));
                let path = format!("/nodes/{}/update?version={version}", self.node);
                match conn
                    .call("POST", &path, Some(spec.to_string().into_bytes()))
                    .await
                {
                    Ok((200, _)) => Outcome::Ok,
                    Ok((s, b)) => Outcome::Refused(s, message(&b)),
                    Err(e) => Outcome::Transport(format!("{e:#}")),
                }
            }
        }
    }
}

fn default_prefix() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("bench{}{:03}", t.as_secs(), t.subsec_millis())
}

/// The target's own node ID (from `/info`).
async fn own_node_id(socket: &Path) -> anyhow::Result<String> {
    let mut c = Conn::new(socket);
    let (status, body) = c.call("GET", "/info", None).await?;
    if status != 200 {
        bail!("GET /info: {status} {}", message(&body));
    }
    let v: Value = serde_json::from_slice(&body)?;
    v["Swarm"]["NodeID"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| anyhow!("GET /info has no Swarm.NodeID"))
}

async fn writer(t: &Target, client: usize) -> anyhow::Result<Writer> {
    let node = match (t.write, &t.node) {
        (WriteKind::NodeLabel, None) => own_node_id(&t.socket).await?,
        (_, n) => n.clone().unwrap_or_default(),
    };
    Ok(Writer {
        kind: t.write,
        prefix: t.prefix.clone().unwrap_or_else(default_prefix),
        client,
        seq: 0,
        node,
    })
}

fn kill(pid: i32) -> anyhow::Result<()> {
    signal(pid, nix::sys::signal::Signal::SIGKILL)
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) -> anyhow::Result<()> {
    if pid > 0 {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
            .with_context(|| format!("kill -{sig} {pid}"))?;
    }
    Ok(())
}

/// CPU seconds (user + system, all threads) this process has used so far.
fn own_cpu_secs() -> f64 {
    // /proc/self/stat: fields after the parenthesised command name; utime and
    // stime are fields 14 and 15, in USER_HZ (100 on Linux) ticks.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Per-client results of `load`.
#[derive(Default)]
struct ClientStats {
    /// Latencies (µs) of accepted writes started in the measured window.
    lat_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
    /// When the last measured write completed.
    last_done: Option<Instant>,
    /// When each accepted measured write completed, in µs after the
    /// measured window opened.
    done_us: Vec<u64>,
}

async fn load(
    t: Target,
    clients: usize,
    duration: f64,
    warmup: f64,
    timeline_ms: Option<u64>,
) -> anyhow::Result<()> {
    if clients == 0 {
        bail!("--clients must be at least 1");
    }
    let prefix = t.prefix.clone().unwrap_or_else(default_prefix);
    let t = Target {
        prefix: Some(prefix),
        ..t
    };
    // Connect everyone before the clock starts.
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut c = Conn::new(&t.socket);
        c.sender().await?;
        conns.push(c);
    }
    let cpu0 = own_cpu_secs();
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(duration);
    let wall_from = SystemTime::now() + measure_from.saturating_duration_since(Instant::now());
    let mut tasks = Vec::with_capacity(clients);
    for (i, mut conn) in conns.into_iter().enumerate() {
        let mut w = writer(&t, i).await?;
        tasks.push(tokio::spawn(async move {
            let mut st = ClientStats::default();
            tokio::time::sleep_until(start.into()).await;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let outcome = w.write(&mut conn).await;
                let done = Instant::now();
                if t0 < measure_from {
                    continue;
                }
                match outcome {
                    Outcome::Ok => {
                        let us = (done - t0).as_micros().min(u32::MAX as u128) as u32;
                        st.lat_us.push(us);
                        st.last_done = Some(done);
                        if timeline_ms.is_some() {
                            st.done_us.push((done - measure_from).as_micros() as u64);
                        }
                    }
                    Outcome::Refused(s, m) => {
                        *st.errors.entry(format!("{s} {m}")).or_default() += 1;
                    }
                    Outcome::Transport(m) => {
                        *st.errors.entry(format!("transport: {m}")).or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            st
        }));
    }
    let mut lat: Vec<u32> = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut last = measure_from;
    let mut done_us: Vec<u64> = Vec::new();
    for task in tasks {
        let st = task.await?;
        lat.extend_from_slice(&st.lat_us);
        done_us.extend_from_slice(&st.done_us);
        for (k, v) in st.errors {
            *errors.entry(k).or_default() += v;
        }
        if let Some(d) = st.last_done {
            last = last.max(d);
        }
    }
    let cpu = (own_cpu_secs() - cpu0) / (Instant::now() - start).as_secs_f64() * 100.0;
    lat.sort_unstable();
    let secs = (last - measure_from).as_secs_f64().max(duration);
    let n = lat.len();
    let pct = |p: f64| -> f64 {
        if n == 0 {
            return f64::NAN;
        }
        let i = ((p / 100.0) * n as f64).ceil() as usize;
        lat[i.clamp(1, n) - 1] as f64 / 1000.0
    };
    let nerr: u64 = errors.values().sum();
    let kind = match t.write {
        WriteKind::Configs => "configs/create",
        WriteKind::NodeLabel => "nodes/update(GET+POST)",
    };
    println!(
        "{kind}: {clients} client(s), {secs:.1}s measured: {n} writes accepted, {:.0} writes/s, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {nerr} errors; load generator CPU {cpu:.0}%",
        n as f64 / secs,
        pct(50.0),
        pct(99.0),
        pct(100.0)
    );
    for (m, c) in errors.iter().take(5) {
        println!("  error x{c}: {}", m.chars().take(200).collect::<String>());
    }
    if let Some(step) = timeline_ms.filter(|s| *s > 0) {
        print_timeline(&done_us, step, wall_from);
    }
    println!(
        "RESULT endpoint={kind} clients={clients} secs={secs:.2} writes={n} wps={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} errors={nerr} gen_cpu_pct={cpu:.0}",
        n as f64 / secs,
        pct(50.0),
        pct(99.0),
        pct(100.0)
    );
    Ok(())
}

/// Prints accepted writes per `step_ms` (as writes/s), each line stamped
/// with the wall-clock time (UTC, HH:MM:SS.mmm) the interval began.
fn print_timeline(done_us: &[u64], step_ms: u64, wall_from: SystemTime) {
    let step_us = step_ms * 1000;
    let buckets = done_us.iter().max().map_or(0, |m| m / step_us + 1) as usize;
    let mut counts = vec![0u64; buckets];
    for d in done_us {
        counts[(d / step_us) as usize] += 1;
    }
    let from = wall_from
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    for (i, c) in counts.iter().enumerate() {
        let t = (from + i as u64 * step_ms) % 86_400_000;
        println!(
            "TIMELINE {:02}:{:02}:{:02}.{:03} {:.0}",
            t / 3_600_000,
            t / 60_000 % 60,
            t / 1000 % 60,
            t % 1000,
            *c as f64 * 1000.0 / step_ms as f64
        );
    }
}

/// What `failover` does to the cluster first.
enum Fault {
    Kill(i32),
    Freeze(i32),
    Cut(String),
}

impl Fault {
    /// Does it; returns the instant it is done (a cut: when the command
    /// returned).
    fn inflict(self) -> anyhow::Result<Instant> {
        let t0 = Instant::now();
        match self {
            Fault::Kill(pid) => kill(pid)?,
            Fault::Freeze(pid) => signal(pid, nix::sys::signal::Signal::SIGSTOP)?,
            Fault::Cut(cmd) => {
                let st = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(&cmd)
                    .status()?;
                anyhow::ensure!(st.success(), "{cmd:?} failed: {st}");
                return Ok(Instant::now());
            }
        }
        Ok(t0)
    }
}

async fn failover(t: Target, fault: Fault, timeout: f64) -> anyhow::Result<()> {
    let mut w = writer(&t, 0).await?;
    let mut conn = Conn::new(&t.socket);
    conn.sender().await?;
    let t0 = fault.inflict()?;
    let deadline = t0 + Duration::from_secs_f64(timeout);
    let mut attempts = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        attempts += 1;
        let a0 = Instant::now();
        let outcome = tokio::time::timeout_at(deadline.into(), w.write(&mut conn)).await;
        let done = Instant::now();
        match outcome {
            Ok(Outcome::Ok) => {
                let total = ms(done - t0);
                println!(
                    "write accepted {total:.1} ms after the kill (attempt {attempts}, which started at {:.1} ms and took {:.1} ms)",
                    ms(a0 - t0),
                    ms(done - a0)
                );
                for (m, c) in &errors {
                    println!(
                        "  failed attempt x{c}: {}",
                        m.chars().take(200).collect::<String>()
                    );
                }
                let nerr: u64 = errors.values().sum();
                println!(
                    "RESULT kill_to_write_ms={total:.1} attempts={attempts} last_attempt_start_ms={:.1} last_attempt_ms={:.1} failed_attempts={nerr}",
                    ms(a0 - t0),
                    ms(done - a0)
                );
                return Ok(());
            }
            Ok(Outcome::Refused(s, m)) => {
                *errors.entry(format!("{s} {m}")).or_default() += 1;
            }
            Ok(Outcome::Transport(m)) => {
                *errors.entry(format!("transport: {m}")).or_default() += 1;
            }
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            for (m, c) in &errors {
                println!(
                    "  failed attempt x{c}: {}",
                    m.chars().take(200).collect::<String>()
                );
            }
            println!("RESULT kill_to_write_ms=timeout attempts={attempts}");
            bail!("no write accepted within {timeout}s of the kill");
        }
        // Don't spin a core while the survivors elect a leader.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn wait_state(
    socket: PathBuf,
    node: String,
    state: String,
    fault: Fault,
    interval_ms: u64,
    timeout: f64,
) -> anyhow::Result<()> {
    let mut conn = Conn::new(&socket);
    conn.sender().await?;
    let path = format!("/nodes/{node}");
    let t0 = fault.inflict()?;
    let deadline = t0 + Duration::from_secs_f64(timeout);
    let mut polls = 0u64;
    let mut last_state = String::new();
    let mut tick = tokio::time::interval(Duration::from_millis(interval_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        polls += 1;
        let p0 = Instant::now();
        let seen = match conn.call("GET", &path, None).await {
            Ok((200, b)) => serde_json::from_slice::<Value>(&b)
                .ok()
                .and_then(|v| v["Status"]["State"].as_str().map(String::from))
                .unwrap_or_default(),
            Ok((s, b)) => format!("error {s}: {}", message(&b)),
            Err(e) => format!("transport: {e:#}"),
        };
        let done = Instant::now();
        if seen != last_state {
            println!("  {:8.1} ms: {seen}", ms(done - t0));
            last_state = seen.clone();
        }
        if seen == state {
            println!(
                "node {node} {state} {:.1} ms after the kill (poll {polls}, started at {:.1} ms)",
                ms(done - t0),
                ms(p0 - t0)
            );
            println!(
                "RESULT kill_to_state_ms={:.1} poll_start_ms={:.1} polls={polls}",
                ms(done - t0),
                ms(p0 - t0)
            );
            return Ok(());
        }
        if done >= deadline {
            println!("RESULT kill_to_state_ms=timeout polls={polls}");
            bail!("node {node} not {state} within {timeout}s (last seen: {last_state})");
        }
    }
}

/// Disk sync latency: 4 KiB pwrite + fdatasync into a preallocated file.
fn fsync_probe(dir: &Path, count: usize) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let path = dir.join(format!("fsync-probe-{}", std::process::id()));
    let block = vec![0x5au8; 4096];
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let result = (|| -> anyhow::Result<Vec<u32>> {
        f.write_all(&vec![0u8; 4096 * count.max(1)])?;
        f.sync_all()?;
        let mut lat = Vec::with_capacity(count);
        for i in 0..count {
            let t0 = Instant::now();
            f.write_all_at(&block, (i * 4096) as u64)?;
            f.sync_data()?;
            lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
        Ok(lat)
    })();
    let _ = std::fs::remove_file(&path);
    let mut lat = result?;
    lat.sort_unstable();
    let n = lat.len().max(1);
    let pct = |p: usize| lat.get((n * p / 100).min(n - 1)).copied().unwrap_or(0) as f64 / 1000.0;
    println!(
        "fsync: {count} x (4 KiB write + fdatasync): p50 {:.2} ms, p90 {:.2} ms",
        pct(50),
        pct(90)
    );
    println!(
        "RESULT fsync_p50_ms={:.2} fsync_p90_ms={:.2}",
        pct(50),
        pct(90)
    );
    Ok(())
}

/// Runs `$body` `$count` times; its median and 99th percentile in µs.
macro_rules! time_loop {
    ($count:expr, $body:block) => {{
        let mut lat: Vec<u64> = Vec::with_capacity($count);
        for _ in 0..$count.max(1) {
            let t0 = Instant::now();
            $body
            lat.push(t0.elapsed().as_nanos() as u64);
        }
        lat.sort_unstable();
        let at = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)] as f64 / 1000.0;
        (at(50), at(99))
    }};
}

/// See the module docs (`floor`).
async fn floor(count: usize) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (to_task, mut task_rx) = tokio::sync::mpsc::channel::<u64>(1);
    let (from_task, mut back) = tokio::sync::mpsc::channel::<u64>(1);
    tokio::spawn(async move {
        while let Some(v) = task_rx.recv().await {
            if from_task.send(v).await.is_err() {
                break;
            }
        }
    });
    let task = time_loop!(count, {
        to_task.send(1).await?;
        back.recv().await.context("echo task ended")?;
    });
    let blocking = time_loop!(count, {
        tokio::task::spawn_blocking(|| ()).await?;
    });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let tcp_addr = listener.local_addr()?;
    let dir = std::env::temp_dir().join(format!("shoal-floor-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let unix_path = dir.join("echo.sock");
    let unix_listener = tokio::net::UnixListener::bind(&unix_path)?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["floor-echo", "--tcp", &tcp_addr.to_string(), "--unix"])
        .arg(&unix_path)
        .kill_on_drop(true)
        .spawn()?;
    let result = async {
        let (mut tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let (mut unix, _) = unix_listener.accept().await?;
        let mut buf = [7u8; 64];
        let tcp_rt = time_loop!(count, {
            tcp.write_all(&buf).await?;
            tcp.read_exact(&mut buf).await?;
        });
        // The echo child serves the unix socket once TCP is closed.
        drop(tcp);
        let unix_rt = time_loop!(count, {
            unix.write_all(&buf).await?;
            unix.read_exact(&mut buf).await?;
        });
        anyhow::Ok((tcp_rt, unix_rt))
    }
    .await;
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    let (tcp_rt, unix_rt) = result?;
    println!(
        "floor (µs, p50/p99): task hop round trip {:.1}/{:.1}, blocking pool round trip {:.1}/{:.1}, \
         loopback TCP round trip to another process {:.1}/{:.1}, unix socket {:.1}/{:.1}",
        task.0, task.1, blocking.0, blocking.1, tcp_rt.0, tcp_rt.1, unix_rt.0, unix_rt.1
    );
    println!(
        "RESULT task_rt_us={:.1} blocking_rt_us={:.1} tcp_rt_us={:.1} unix_rt_us={:.1}",
        task.0, blocking.0, tcp_rt.0, unix_rt.0
    );
    Ok(())
}

/// The child side of `floor`: echoes on both connections until they close.
async fn floor_echo(tcp: &str, unix: &Path) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut t = tokio::net::TcpStream::connect(tcp).await?;
    t.set_nodelay(true)?;
    let mut u = tokio::net::UnixStream::connect(unix).await?;
    let mut buf = [0u8; 64];
    while t.read_exact(&mut buf).await.is_ok() {
        t.write_all(&buf).await?;
    }
    while u.read_exact(&mut buf).await.is_ok() {
        u.write_all(&buf).await?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match args.cmd {
            Mode::Load {
                target,
                clients,
                duration,
                warmup,
                timeline_ms,
            } => load(target, clients, duration, warmup, timeline_ms).await,
            Mode::Failover {
                target,
                kill_pid,
                timeout,
                freeze,
                cut_cmd,
            } => {
                let fault = match cut_cmd {
                    Some(c) => Fault::Cut(c),
                    None if freeze => Fault::Freeze(kill_pid),
                    None => Fault::Kill(kill_pid),
                };
                failover(target, fault, timeout).await
            }
            Mode::WaitState {
                socket,
                node,
                state,
                kill_pid,
                interval_ms,
                timeout,
                cut_cmd,
            } => {
                let fault = match cut_cmd {
                    Some(c) => Fault::Cut(c),
                    None => Fault::Kill(kill_pid),
                };
                wait_state(socket, node, state, fault, interval_ms, timeout).await
            }
            Mode::Fsync { dir, count } => fsync_probe(&dir, count),
            Mode::Floor { count } => floor(count).await,
            Mode::FloorEcho { tcp, unix } => floor_echo(&tcp, &unix).await,
            Mode::Chain {
                dir,
                duration,
                bytes,
                leader_thread,
            } => chain::run(&dir, duration, bytes, leader_thread),
            Mode::ChainNode {
                role,
                wal,
                bytes,
                unix,
                followers,
                leader_thread,
            } => chain::node(&role, &wal, bytes, unix, &followers, leader_thread),
        }
    })
}
