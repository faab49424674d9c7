//! Starting and running a node: `init`, `join`, `daemon`, `dev`.
//!
//! A node runs its gRPC listener (mutual TLS), its agent session and the
//! control API; a manager also runs Raft and the manager components. When
//! the node's role changes (promote/demote) the runtime renews its
//! certificate and restarts its components in the new role, in process.

use crate::state::{DataDir, NodeState};
use anyhow::{bail, Context};
use shoal_api::{
    Cluster, ClusterSpec, EngineDescription, ManagerStatus, Node, NodeDescription, NodeRole,
    NodeSpec, NodeState as Liveness, NodeStatus, Platform, Resources, Timestamp, TlsInfo,
};
use shoal_manager::Bootstrap;
use shoal_net::pki::{NodeKeyPair, Role, RootCa};
use shoal_net::rpc::pb::cluster_client::ClusterClient;
use shoal_net::rpc::{msg, JoinRequest, JoinResponse, ManagerAddr, RenewRequest, RenewResponse};
use shoal_net::tls::{self, ReloadableCert};
use shoal_net::token::ParsedToken;
use shoal_store::ClusterRecord;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Flags shared by `init` and `join`.
#[derive(Debug, Clone)]
pub struct StartArgs {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Node-to-node listen address.
    pub listen_addr: String,
    /// Address others reach us at.
    pub advertise_addr: Option<String>,
    /// Control API socket.
    pub api_socket: Option<PathBuf>,
    /// Host name to report instead of the machine's.
    pub hostname: Option<String>,
    /// A second socket serving the control API (for the docker CLI).
    pub docker_socket: Option<PathBuf>,
    /// The Docker Engine to use (`unix:///PATH`).
    pub engine_socket: Option<String>,
    /// The Docker API on TCP.
    pub docker_tcp: Option<crate::state::DockerTcp>,
}

fn parse_addr(what: &str, a: &str) -> anyhow::Result<std::net::SocketAddr> {
    a.parse()
        .with_context(|| format!("invalid {what} {a:?}: expected IP:PORT, e.g. 127.0.0.1:4242"))
}

fn advertise(args: &StartArgs) -> anyhow::Result<String> {
    let listen = parse_addr("--listen-addr", &args.listen_addr)?;
    match &args.advertise_addr {
        Some(a) => {
            let a = parse_addr("--advertise-addr", a)?;
            if a.ip().is_unspecified() {
                bail!("invalid --advertise-addr {a}: it must be an address other nodes can reach");
            }
            Ok(a.to_string())
        }
        None if listen.ip().is_unspecified() => {
            bail!("--advertise-addr is required when --listen-addr is {listen} (other nodes need an address to reach this one)")
        }
        None => Ok(listen.to_string()),
    }
}

/// What this machine is.
pub fn describe(hostname: Option<&str>) -> NodeDescription {
    let hostname = hostname.map(str::to_string).unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into())
    });
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get() as i64)
        .unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|k| k.parse::<i64>().ok())
                })
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    NodeDescription {
        hostname,
        platform: Platform {
            architecture: std::env::consts::ARCH.into(),
            os: std::env::consts::OS.into(),
        },
        resources: Resources {
            nano_cpus: ncpu * 1_000_000_000,
            memory_bytes: mem,
        },
        engine: EngineDescription {
            engine_version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        },
        tls_info: None,
        executors: vec!["process".into()],
    }
}

/// Where the node looks for its Docker Engine: `--engine-socket`, else
/// DOCKER_HOST and /var/run/docker.sock.
pub fn engine_candidates(explicit: Option<&str>) -> Vec<String> {
    match explicit {
        Some(e) => vec![e.to_string()],
        None => std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.trim().is_empty())
            .into_iter()
            .chain(std::iter::once("unix:///var/run/docker.sock".to_string()))
            .collect(),
    }
}

/// Finds the node's Docker Engine among `candidates` ([`engine_candidates`]);
/// when one answers, the node offers the `docker` executor and describes the
/// engine, and the API's engine passthrough uses the same engine. `Err` says
/// why none answered.
pub async fn find_engine(
    description: &mut NodeDescription,
    candidates: &[String],
) -> Result<shoal_agent::docker::DockerExecutor, String> {
    let mut last = String::from("no engine address");
    for host in candidates {
        let d = match shoal_agent::docker::DockerExecutor::connect_to(host).await {
            Ok(d) => d,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        if describe_engine(description, &d).await {
            shoal_manager::api::use_engine(d.host());
            tracing::info!(engine = %d.host(), "Docker Engine found: the docker executor is available");
            return Ok(d);
        }
        last = format!("{host}: the engine does not describe itself");
    }
    Err(last)
}

/// Adds the engine to `description`; false when it does not answer.
pub async fn describe_engine(
    description: &mut NodeDescription,
    d: &shoal_agent::docker::DockerExecutor,
) -> bool {
    match d.describe().await {
        Ok(info) => {
            if !description.executors.iter().any(|e| e == "docker") {
                description.executors.push("docker".into());
            }
            description.engine.engine_version = info.version;
            description.engine.labels = info.labels;
            description.engine.plugins = info
                .plugins
                .into_iter()
                .map(|(kind, name)| shoal_api::PluginDescription { kind, name })
                .collect();
            true
        }
        Err(e) => {
            tracing::warn!("the Docker Engine at {} does not answer: {e}", d.host());
            false
        }
    }
}

/// Settings of a new cluster beyond the node's addresses.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Initial cluster settings (unset fields keep their defaults).
    pub spec: Option<ClusterSpec>,
    /// Agent heartbeat period (`--heartbeat-period`).
    pub heartbeat: Option<Duration>,
    /// Lock the managers' keys with an unlock key.
    pub autolock: bool,
    /// This node's availability.
    pub availability: Option<shoal_api::Availability>,
    /// Overlay address pools.
    pub default_addr_pool: Option<Vec<String>>,
    /// Overlay subnet size.
    pub subnet_size: u32,
    /// VXLAN port.
    pub data_path_port: u32,
}

/// Writes the data dir of a new cluster's first manager: root CA, node
/// certificate, `node.json`. Returns how its manager bootstraps.
pub fn prepare_init(
    dir: &DataDir,
    args: &StartArgs,
    opts: InitOptions,
) -> anyhow::Result<Bootstrap> {
    dir.ensure_unused()?;
    let addr = advertise(args)?;
    let ca = RootCa::generate()?;
    let cluster_id = shoal_api::new_id();
    let node_id = shoal_api::new_id();
    let raft_id = shoal_api::new_raft_id();
    let mut spec = opts.spec.unwrap_or_default();
    if spec.name.is_empty() {
        spec.name = "default".into();
    }
    if let Some(hb) = opts.heartbeat {
        spec.dispatcher.heartbeat_period = Some(hb.as_nanos() as i64);
    }
    spec.encryption_config.auto_lock_managers |= opts.autolock;
    let unlock_key = spec
        .encryption_config
        .auto_lock_managers
        .then(shoal_net::lock::UnlockKey::generate);
    let host = shoal_manager::ca::host_of(&addr);
    let cert = ca.issue_node_cert(
        &node_id,
        Role::Manager,
        &cluster_id,
        spec.node_cert_expiry(),
        std::slice::from_ref(&host),
    )?;
    let token = |r| shoal_net::token::JoinToken::generate(&ca.digest_bytes(), r).to_string();
    let now = Timestamp::now();
    let record = ClusterRecord {
        cluster: Cluster {
            id: cluster_id.clone(),
            created_at: now,
            updated_at: now,
            spec,
            tls_info: TlsInfo {
                trust_root: ca.cert_pem.clone(),
                ..Default::default()
            },
            subnet_size: if opts.subnet_size == 0 {
                24
            } else {
                opts.subnet_size
            },
            data_path_port: if opts.data_path_port == 0 {
                4789
            } else {
                opts.data_path_port
            },
            default_addr_pool: opts.default_addr_pool.filter(|p| !p.is_empty()),
            join_tokens: shoal_api::JoinTokens {
                worker: token(Role::Worker),
                manager: token(Role::Manager),
            },
            ..Default::default()
        },
        ca_cert_pem: ca.cert_pem.clone(),
        ca_key_pem: ca.key_pem.clone(),
        unlock_key: unlock_key
            .as_ref()
            .map(|k| k.to_string())
            .unwrap_or_default(),
        removed_nodes: Default::default(),
    };
    let node = Node {
        id: node_id.clone(),
        created_at: now,
        updated_at: now,
        spec: NodeSpec {
            role: NodeRole::Manager,
            availability: opts.availability.unwrap_or_default(),
            ..Default::default()
        },
        description: describe(args.hostname.as_deref()),
        status: NodeStatus {
            state: Liveness::Ready,
            message: String::new(),
            addr: host,
        },
        manager_status: Some(ManagerStatus {
            addr: addr.clone(),
            ..Default::default()
        }),
        raft_id,
        addr: addr.clone(),
        ..Default::default()
    };
    let state = NodeState {
        node_id: node_id.clone(),
        role: NodeRole::Manager,
        cluster_id,
        listen_addr: args.listen_addr.clone(),
        advertise_addr: addr.clone(),
        api_socket: args
            .api_socket
            .clone()
            .unwrap_or_else(|| args.data_dir.join("shoal.sock")),
        raft_id,
        managers: vec![ManagerAddr { node_id, addr }],
        hostname_override: args.hostname.clone(),
        docker_socket: args.docker_socket.clone(),
        engine_socket: args.engine_socket.clone(),
        docker_tcp: args.docker_tcp.clone(),
    };
    std::fs::create_dir_all(&args.data_dir)?;
    dir.use_seal(unlock_key);
    dir.save_certs(&ca.cert_pem, &cert.cert_pem, &cert.key_pem)?;
    dir.save(&state)?;
    Ok(Bootstrap::Init(Box::new((record, node))))
}

/// `shoal init`: a new cluster with this node as its first manager.
pub async fn init(args: StartArgs, heartbeat: Option<Duration>) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir);
    let bootstrap = prepare_init(
        &dir,
        &args,
        InitOptions {
            heartbeat,
            ..Default::default()
        },
    )?;
    crate::host::run(
        dir,
        crate::host::Sockets::of(&args),
        crate::host::Start::Run(bootstrap),
        false,
    )
    .await
}

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinFailure {
    /// A bad token or address, or the cluster refused the token.
    #[error("{0}")]
    Invalid(String),
    /// No manager answered.
    #[error("{0}")]
    Unreachable(String),
    /// Anything else (local I/O…).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<shoal_net::pki::PkiError> for JoinFailure {
    fn from(e: shoal_net::pki::PkiError) -> JoinFailure {
        JoinFailure::Other(e.into())
    }
}

impl From<shoal_net::tls::TlsError> for JoinFailure {
    fn from(e: shoal_net::tls::TlsError) -> JoinFailure {
        JoinFailure::Other(e.into())
    }
}

/// Joins the cluster of `manager` with `token`: gets a certificate signed
/// and writes the data dir.
pub async fn prepare_join(
    args: &StartArgs,
    token: String,
    manager: String,
    availability: Option<shoal_api::Availability>,
) -> Result<(), JoinFailure> {
    let dir = DataDir::new(&args.data_dir);
    dir.ensure_unused()?;
    let parsed = ParsedToken::parse(&token).map_err(|e| JoinFailure::Invalid(e.to_string()))?;
    parse_addr("manager address", &manager).map_err(|e| JoinFailure::Invalid(format!("{e:#}")))?;
    let addr = advertise(args).map_err(|e| JoinFailure::Invalid(format!("{e:#}")))?;
    let key = NodeKeyPair::generate()?;
    let (cfg, capture) = tls::pinned_client_config(&parsed.ca_digest)?;
    let channel = tls::connect_channel(&manager, cfg)?;
    let mut client = ClusterClient::new(channel);
    let req = JoinRequest {
        token,
        csr_pem: key.csr_pem()?,
        addr: addr.clone(),
        description: describe(args.hostname.as_deref()),
        availability,
    };
    let resp = tokio::time::timeout(Duration::from_secs(20), client.join(msg(&req)))
        .await
        .map_err(|_| JoinFailure::Unreachable(format!("timed out joining through {manager}")))?
        .map_err(|s| {
            if s.code() == tonic::Code::Unavailable {
                JoinFailure::Unreachable(format!(
                    "cannot reach a manager of this cluster at {manager}: {} (is the address right, and does the token belong to that cluster?)",
                    s.message()
                ))
            } else {
                JoinFailure::Invalid(format!("join refused: {}", s.message()))
            }
        })?;
    let resp: JoinResponse = shoal_net::rpc::parse(resp.get_ref())
        .map_err(|s| JoinFailure::Invalid(s.message().to_string()))?;
    let ca_pem = capture
        .root_matching(&parsed.ca_digest)
        .unwrap_or(resp.ca_pem.clone());
    if !parsed.matches_ca(&shoal_net::pki::certs_from_pem(&ca_pem)?[0]) {
        return Err(JoinFailure::Invalid(
            "the manager's root CA does not match the token".into(),
        ));
    }
    std::fs::create_dir_all(&args.data_dir).map_err(anyhow::Error::from)?;
    dir.save_certs(&ca_pem, &resp.cert_pem, &key.key_pem())?;
    let state = NodeState {
        node_id: resp.node_id.clone(),
        role: resp.role,
        cluster_id: resp.cluster_id.clone(),
        listen_addr: args.listen_addr.clone(),
        advertise_addr: addr,
        api_socket: args
            .api_socket
            .clone()
            .unwrap_or_else(|| args.data_dir.join("shoal.sock")),
        raft_id: resp.raft_id,
        managers: resp.managers.clone(),
        hostname_override: args.hostname.clone(),
        docker_socket: args.docker_socket.clone(),
        engine_socket: args.engine_socket.clone(),
        docker_tcp: args.docker_tcp.clone(),
    };
    dir.save(&state)?;
    tracing::info!(node = %resp.node_id, role = resp.role.as_str(), "joined the cluster");
    Ok(())
}

/// `shoal join`: joins the cluster of `manager` with `token`.
pub async fn join(args: StartArgs, token: String, manager: String) -> anyhow::Result<()> {
    prepare_join(&args, token, manager, None)
        .await
        .map_err(anyhow::Error::from)?;
    let dir = DataDir::new(&args.data_dir);
    crate::host::run(
        dir,
        crate::host::Sockets::of(&args),
        crate::host::Start::Run(Bootstrap::Member),
        false,
    )
    .await
}

/// Flags of `shoal daemon`.
#[derive(Debug, Clone, Default)]
pub struct DaemonArgs {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Docker API socket (remembered).
    pub docker_socket: Option<PathBuf>,
    /// Control API socket for a node in no swarm yet.
    pub api_socket: Option<PathBuf>,
    /// Host name for a node created through the API.
    pub hostname: Option<String>,
    /// The Docker Engine to use (remembered).
    pub engine_socket: Option<String>,
    /// The Docker API on TCP (remembered).
    pub docker_tcp: Option<crate::state::DockerTcp>,
}

/// `shoal daemon`: runs the node of a data dir; on an empty one, a node that
/// is in no swarm yet, waiting for `POST /swarm/init` or `/swarm/join` (as
/// a Docker Engine does). It stays up when the node leaves its swarm.
pub async fn daemon(a: DaemonArgs) -> anyhow::Result<()> {
    let dir = DataDir::new(&a.data_dir);
    if !dir.exists() {
        let sockets = crate::host::Sockets {
            api: a
                .api_socket
                .unwrap_or_else(|| a.data_dir.join("shoal.sock")),
            docker: a.docker_socket,
            hostname: a.hostname,
            engine: a.engine_socket,
            tcp: a.docker_tcp,
        };
        return crate::host::run(dir, sockets, crate::host::Start::Inactive, true).await;
    }
    let mut state = dir.load()?;
    let mut changed = false;
    if a.docker_socket.is_some() && a.docker_socket != state.docker_socket {
        state.docker_socket = a.docker_socket;
        changed = true;
    }
    if a.engine_socket.is_some() && a.engine_socket != state.engine_socket {
        state.engine_socket = a.engine_socket;
        changed = true;
    }
    if a.docker_tcp.is_some() && a.docker_tcp != state.docker_tcp {
        state.docker_tcp = a.docker_tcp;
        changed = true;
    }
    if changed {
        dir.save(&state)?;
    }
    let start = if dir.locked() {
        crate::host::Start::Locked
    } else {
        crate::host::Start::Run(Bootstrap::Member)
    };
    crate::host::run(dir, crate::host::Sockets::of_state(&state), start, true).await
}

/// `shoal init --force-new-cluster`: quorum-loss recovery on a surviving manager.
pub async fn force_new_cluster(data_dir: PathBuf) -> anyhow::Result<()> {
    let dir = DataDir::new(&data_dir);
    let state = dir.load()?;
    if state.role != NodeRole::Manager || state.raft_id == 0 {
        bail!(
            "--force-new-cluster needs the data dir of a manager; {} is a worker's",
            data_dir.display()
        );
    }
    if dir.locked() {
        bail!("this manager's keys are locked (autolock): start it with `shoal daemon`, unlock it, then use `docker swarm init --force-new-cluster`");
    }
    crate::host::run(
        dir,
        crate::host::Sockets::of_state(&state),
        crate::host::Start::Run(Bootstrap::ForceNewCluster),
        false,
    )
    .await
}

/// Asks a manager for a new certificate (with the node's desired role) and
/// stores it; switches the Raft state for a role change.
pub async fn renew(
    dir: &DataDir,
    managers: &Arc<Mutex<Vec<ManagerAddr>>>,
    tls: &Arc<rustls::ClientConfig>,
) -> anyhow::Result<RenewResponse> {
    let key = NodeKeyPair::generate()?;
    let list = managers.lock().expect("lock").clone();
    let mut last_err = anyhow::anyhow!("no manager known");
    for m in list {
        let channel = match tls::connect_channel(&m.addr, tls.clone()) {
            Ok(c) => c,
            Err(e) => {
                last_err = e.into();
                continue;
            }
        };
        let mut client = ClusterClient::new(channel);
        match client
            .renew_cert(msg(&RenewRequest {
                csr_pem: key.csr_pem()?,
            }))
            .await
        {
            Ok(resp) => {
                let resp: RenewResponse = shoal_net::rpc::parse(resp.get_ref())
                    .map_err(|s| anyhow::anyhow!(s.message().to_string()))?;
                let (ca, _, _) = dir.load_certs()?;
                let mut state = dir.load()?;
                if state.role != resp.role || state.raft_id != resp.raft_id {
                    // A new Raft member never reuses old Raft state.
                    let _ = std::fs::remove_dir_all(dir.raft_dir());
                }
                dir.save_certs(&ca, &resp.cert_pem, &key.key_pem())?;
                state.role = resp.role;
                state.raft_id = resp.raft_id;
                dir.save(&state)?;
                return Ok(resp);
            }
            Err(s) => last_err = anyhow::anyhow!("{}: {}", m.addr, s.message()),
        }
    }
    Err(last_err)
}

/// Renews the node certificate at a random point between 50% and 80% of its
/// validity, without restarting anything (new connections use the new one).
pub fn spawn_cert_renewal(
    dir: DataDir,
    reload: Arc<ReloadableCert>,
    managers: Arc<Mutex<Vec<ManagerAddr>>>,
    tls: Arc<rustls::ClientConfig>,
    token: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let Some(id) = reload.identity() else { return };
            let wait = id
                .renewal_instant()
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(wait.max(Duration::from_secs(1))) => {}
            }
            match renew(&dir, &managers, &tls).await {
                Ok(resp) => {
                    if let Ok((_, cert, key)) = dir.load_certs() {
                        if let Err(e) = reload.replace(&cert, &key) {
                            tracing::warn!("renewed certificate not usable: {e}");
                        } else {
                            tracing::info!(role = resp.role.as_str(), "node certificate renewed");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("certificate renewal failed, retrying in 30s: {e:#}");
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                    }
                }
            }
        }
    });
}

/// `shoal dev`: a one-node cluster in the foreground (re-used if the data dir exists).
pub async fn dev(
    data_dir: PathBuf,
    api_socket: Option<PathBuf>,
    docker_socket: Option<PathBuf>,
) -> anyhow::Result<()> {
    let dir = DataDir::new(&data_dir);
    let docker_socket = docker_socket.map(|p| std::path::absolute(&p).unwrap_or(p));
    let socket = api_socket
        .clone()
        .unwrap_or_else(|| data_dir.join("shoal.sock"));
    let abs = std::path::absolute(&socket).unwrap_or(socket.clone());
    println!("shoal dev: a one-node cluster (manager + agent).");
    println!("  API:   unix://{}", abs.display());
    println!("  Try:   export SHOAL_HOST=unix://{}", abs.display());
    println!("         shoal node ls");
    println!(
        "  Stop:  Ctrl-C (state stays in {}; run again to resume)",
        data_dir.display()
    );
    if let Some(p) = &docker_socket {
        println!("  Docker: export DOCKER_HOST=unix://{}", p.display());
    }
    if dir.exists() {
        return daemon(DaemonArgs {
            data_dir,
            docker_socket,
            ..Default::default()
        })
        .await;
    }
    // Pick a free loopback port for node-to-node traffic.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let args = StartArgs {
        data_dir,
        listen_addr: format!("127.0.0.1:{port}"),
        advertise_addr: None,
        api_socket: Some(abs),
        hostname: None,
        docker_socket,
        engine_socket: None,
        docker_tcp: None,
    };
    init(args, None).await
}
