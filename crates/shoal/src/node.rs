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
use shoal_manager::api::{ApiError, ApiState, LocalNode, NodeControl};
use shoal_manager::peers::Peers;
use shoal_manager::{Bootstrap, Manager, ManagerConfig};
use shoal_net::pki::{NodeKeyPair, Role, RootCa};
use shoal_net::rpc::pb::cluster_client::ClusterClient;
use shoal_net::rpc::pb::{cluster_server::ClusterServer, raft_server::RaftServer};
use shoal_net::rpc::{
    msg, DispatcherMessage, JoinRequest, JoinResponse, ManagerAddr, RenewRequest, RenewResponse,
};
use shoal_net::tls::{self, ReloadableCert, TlsIncoming};
use shoal_net::token::ParsedToken;
use shoal_store::ClusterRecord;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
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

/// Finds the node's Docker Engine (DOCKER_HOST, else /var/run/docker.sock);
/// when one answers, the node offers the `docker` executor and describes
/// the engine.
async fn detect_engine(
    description: &mut NodeDescription,
) -> Option<shoal_agent::docker::DockerExecutor> {
    let d = match shoal_agent::docker::DockerExecutor::connect(None).await {
        Ok(d) => d,
        Err(e) => {
            tracing::info!("no Docker Engine: container tasks will run elsewhere ({e})");
            return None;
        }
    };
    match d.describe().await {
        Ok(info) => {
            description.executors.push("docker".into());
            description.engine.engine_version = info.version;
            description.engine.labels = info.labels;
            description.engine.plugins = info
                .plugins
                .into_iter()
                .map(|(kind, name)| shoal_api::PluginDescription { kind, name })
                .collect();
            tracing::info!(engine = %d.host(), "Docker Engine found: the docker executor is available");
            Some(d)
        }
        Err(e) => {
            tracing::warn!("the Docker Engine does not answer: {e}");
            None
        }
    }
}

/// `shoal init`: a new cluster with this node as its first manager.
pub async fn init(args: StartArgs, heartbeat: Option<Duration>) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir);
    dir.ensure_unused()?;
    let addr = advertise(&args)?;
    let ca = RootCa::generate()?;
    let cluster_id = shoal_api::new_id();
    let node_id = shoal_api::new_id();
    let raft_id = shoal_api::new_raft_id();
    let spec = {
        let mut s = ClusterSpec::default();
        s.dispatcher.heartbeat_period = heartbeat.map(|d| d.as_nanos() as i64);
        s
    };
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
            subnet_size: 24,
            data_path_port: 4789,
            join_tokens: shoal_api::JoinTokens {
                worker: token(Role::Worker),
                manager: token(Role::Manager),
            },
            ..Default::default()
        },
        ca_cert_pem: ca.cert_pem.clone(),
        ca_key_pem: ca.key_pem.clone(),
    };
    let node = Node {
        id: node_id.clone(),
        created_at: now,
        updated_at: now,
        spec: NodeSpec {
            role: NodeRole::Manager,
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
    };
    std::fs::create_dir_all(&args.data_dir)?;
    dir.save_certs(&ca.cert_pem, &cert.cert_pem, &cert.key_pem)?;
    dir.save(&state)?;
    run(dir, Bootstrap::Init(Box::new((record, node)))).await
}

/// `shoal join`: joins the cluster of `manager` with `token`.
pub async fn join(args: StartArgs, token: String, manager: String) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir);
    dir.ensure_unused()?;
    let parsed = ParsedToken::parse(&token)?;
    parse_addr("manager address", &manager)?;
    let addr = advertise(&args)?;
    let key = NodeKeyPair::generate()?;
    let (cfg, capture) = tls::pinned_client_config(&parsed.ca_digest)?;
    let channel = tls::connect_channel(&manager, cfg)?;
    let mut client = ClusterClient::new(channel);
    let req = JoinRequest {
        token,
        csr_pem: key.csr_pem()?,
        addr: addr.clone(),
        description: describe(args.hostname.as_deref()),
    };
    let resp = tokio::time::timeout(Duration::from_secs(20), client.join(msg(&req)))
        .await
        .map_err(|_| anyhow::anyhow!("timed out joining through {manager}"))?
        .map_err(|s| {
            if s.code() == tonic::Code::Unavailable {
                anyhow::anyhow!(
                    "cannot reach a manager of this cluster at {manager}: {} (is the address right, and does the token belong to that cluster?)",
                    s.message()
                )
            } else {
                anyhow::anyhow!("join refused: {}", s.message())
            }
        })?;
    let resp: JoinResponse = shoal_net::rpc::parse(resp.get_ref())
        .map_err(|s| anyhow::anyhow!(s.message().to_string()))?;
    let ca_pem = capture
        .root_matching(&parsed.ca_digest)
        .unwrap_or(resp.ca_pem.clone());
    if !parsed.matches_ca(&shoal_net::pki::certs_from_pem(&ca_pem)?[0]) {
        bail!("the manager's root CA does not match the token");
    }
    std::fs::create_dir_all(&args.data_dir)?;
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
    };
    dir.save(&state)?;
    tracing::info!(node = %resp.node_id, role = resp.role.as_str(), "joined the cluster");
    run(dir, Bootstrap::Member).await
}

/// `shoal daemon`: restarts a node from its data dir.
pub async fn daemon(data_dir: PathBuf, docker_socket: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = DataDir::new(&data_dir);
    let mut state = dir.load()?;
    if docker_socket.is_some() && docker_socket != state.docker_socket {
        state.docker_socket = docker_socket;
        dir.save(&state)?;
    }
    run(dir, Bootstrap::Member).await
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
    run(dir, Bootstrap::ForceNewCluster).await
}

enum Exit {
    Stop,
    Restart,
}

enum Request {
    Leave,
}

struct Control {
    tx: mpsc::UnboundedSender<Request>,
}

impl NodeControl for Control {
    fn leave(&self, _force: bool) -> Result<(), ApiError> {
        self.tx
            .send(Request::Leave)
            .map_err(|_| ApiError::internal("the node is shutting down"))
    }
}

async fn run(dir: DataDir, mut bootstrap: Bootstrap) -> anyhow::Result<()> {
    loop {
        match run_once(&dir, std::mem::replace(&mut bootstrap, Bootstrap::Member)).await? {
            Exit::Stop => return Ok(()),
            Exit::Restart => tracing::info!("restarting the node's components in its new role"),
        }
    }
}

async fn run_once(dir: &DataDir, bootstrap: Bootstrap) -> anyhow::Result<Exit> {
    let state = dir.load()?;
    let (ca, cert, key) = dir.load_certs()?;
    let reload = ReloadableCert::new(&ca, &cert, &key)?;
    let server_cfg = tls::server_config_with_cert(&ca, reload.clone())?;
    let manager_cfg = tls::client_config_with_cert(&ca, Some(reload.clone()))?;
    let listener = tokio::net::TcpListener::bind(&state.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", state.listen_addr))?;
    let token = CancellationToken::new();
    let manager = if state.role == NodeRole::Manager {
        let cfg = ManagerConfig {
            raft_dir: dir.raft_dir(),
            node_id: state.node_id.clone(),
            raft_id: state.raft_id,
            cluster_id: state.cluster_id.clone(),
            addr: state.advertise_addr.clone(),
            peers: Peers::new(manager_cfg.clone()),
            node_peers: Peers::new(tls::peer_client_config(&ca, Some(reload.clone()))?),
        };
        Some(Manager::start(cfg, bootstrap).await?)
    } else {
        None
    };

    let shim_cmd = vec![
        std::env::current_exe()?.into_os_string(),
        "task-shim".into(),
    ];
    let process = shoal_agent::process::ProcessExecutor::new(dir.root.join("tasks"), shim_cmd);
    let mut description = describe(state.hostname_override.as_deref());
    let docker = detect_engine(&mut description).await;
    let grpc = {
        let node_service = shoal_net::rpc::pb::node_server::NodeServer::new(
            shoal_agent::node_service::NodeService::new(
                process.clone(),
                docker.clone(),
                &state.cluster_id,
            ),
        );
        let services = manager.as_ref().map(|m| m.services());
        let raft = services.clone().map(|s| {
            RaftServer::new(s)
                .max_decoding_message_size(1 << 30)
                .max_encoding_message_size(1 << 30)
        });
        let cluster = services.map(|s| ClusterServer::new(s).max_decoding_message_size(256 << 20));
        let incoming = TlsIncoming::new(listener, server_cfg);
        let t = token.clone();
        tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(node_service)
                .add_optional_service(raft)
                .add_optional_service(cluster)
                .serve_with_incoming_shutdown(incoming, t.cancelled_owned())
                .await;
            if let Err(e) = r {
                tracing::error!("gRPC server: {e}");
            }
        })
    };

    let managers = Arc::new(Mutex::new(state.managers.clone()));
    let (req_tx, mut req_rx) = mpsc::unbounded_channel();
    let api = {
        let api_state = ApiState {
            manager: manager.clone(),
            local: LocalNode {
                node_id: state.node_id.clone(),
                addr: state.advertise_addr.clone(),
                hostname: description.hostname.clone(),
                ncpu: description.resources.nano_cpus / 1_000_000_000,
                mem_total: description.resources.memory_bytes,
                managers: state.managers.clone(),
            },
            control: Arc::new(Control { tx: req_tx }),
        };
        if let Some(path) = state.docker_socket.clone() {
            let _ = std::fs::remove_file(&path);
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d)?;
            }
            let listener = tokio::net::UnixListener::bind(&path)
                .with_context(|| format!("cannot serve the Docker API on {}", path.display()))?;
            let (t, api_state) = (token.clone(), api_state.clone());
            tokio::spawn(async move {
                if let Err(e) =
                    shoal_manager::api::serve(listener, api_state, t.cancelled_owned()).await
                {
                    tracing::error!("Docker API on {}: {e}", path.display());
                }
            });
        }
        let path = state.api_socket.clone();
        let _ = std::fs::remove_file(&path);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let listener = tokio::net::UnixListener::bind(&path)
            .with_context(|| format!("cannot serve the control API on {}", path.display()))?;
        let t = token.clone();
        tokio::spawn(async move {
            if let Err(e) =
                shoal_manager::api::serve(listener, api_state, t.cancelled_owned()).await
            {
                tracing::error!("control API on {}: {e}", path.display());
            }
        })
    };

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = mpsc::unbounded_channel();
    let worker = shoal_agent::worker::Worker::new(&state.node_id, process, docker, status_tx);
    worker.adopt().await;
    let session = shoal_agent::session::run(
        shoal_agent::session::SessionConfig {
            addr: state.advertise_addr.clone(),
            description,
            managers: managers.clone(),
            tls: manager_cfg.clone(),
        },
        events_tx,
        status_rx,
        token.clone(),
    );
    tokio::spawn(session);
    spawn_cert_renewal(
        dir.clone(),
        reload.clone(),
        managers.clone(),
        manager_cfg.clone(),
        token.clone(),
    );

    tracing::info!(
        node = %state.node_id, role = state.role.as_str(), addr = %state.advertise_addr,
        api = %state.api_socket.display(), "node running"
    );
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let exit = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Exit::Stop,
            _ = sigterm.recv() => break Exit::Stop,
            Some(Request::Leave) = req_rx.recv() => {
                tracing::info!("leaving the cluster");
                // Answer the API call before tearing down.
                tokio::time::sleep(Duration::from_millis(100)).await;
                token.cancel();
                if let Some(m) = &manager { m.shutdown().await; }
                dir.wipe()?;
                break Exit::Stop;
            }
            Some(ev) = events.recv() => match ev {
                DispatcherMessage::RoleChanged(role) if role != state.role => {
                    tracing::info!(role = role.as_str(), "role changed: renewing the certificate");
                    match renew(dir, &managers, &manager_cfg).await {
                        Ok(_) => break Exit::Restart,
                        Err(e) => tracing::warn!("could not switch role yet: {e:#}"),
                    }
                }
                DispatcherMessage::Removed => {
                    tracing::warn!("this node was removed from the cluster");
                    token.cancel();
                    if let Some(m) = &manager { m.shutdown().await; }
                    dir.wipe()?;
                    break Exit::Stop;
                }
                DispatcherMessage::Assignments { tasks, services } => worker.assign(tasks, &services).await,
                DispatcherMessage::Managers(list) | DispatcherMessage::Welcome { managers: list, .. } => {
                    let mut s = dir.load()?;
                    if s.managers != list {
                        s.managers = list;
                        dir.save(&s)?;
                    }
                }
                _ => {}
            },
        }
    };
    token.cancel();
    if let Some(m) = &manager {
        m.shutdown().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), grpc).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), api).await;
    let _ = std::fs::remove_file(&state.api_socket);
    if let Some(p) = &state.docker_socket {
        let _ = std::fs::remove_file(p);
    }
    Ok(exit)
}

/// Asks a manager for a new certificate (with the node's desired role) and
/// stores it; switches the Raft state for a role change.
async fn renew(
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
fn spawn_cert_renewal(
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
        return daemon(data_dir, docker_socket).await;
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
    };
    init(args, None).await
}
