//! The process hosting a node, from start to exit: it serves the API
//! sockets for its whole life and moves the node between Docker's states —
//! inactive (in no swarm), locked (a manager whose key is sealed), active
//! (running as manager or worker) — on `POST /swarm/init`, `/swarm/join`,
//! `/swarm/leave` and `/swarm/unlock`, and on role changes.

use crate::node::{self, describe, InitOptions, JoinFailure, StartArgs};
use crate::state::DataDir;
use anyhow::Context;
use shoal_api::{InitRequest, JoinRequest, NodeRole};
use shoal_manager::api::{
    ApiContext, ApiError, ApiState, Front, HostRequest, LocalNode, Presence, Reply,
};
use shoal_manager::peers::Peers;
use shoal_manager::{Bootstrap, Manager, ManagerConfig};
use shoal_net::lock::UnlockKey;
use shoal_net::rpc::pb::{cluster_server::ClusterServer, raft_server::RaftServer};
use shoal_net::rpc::{DispatcherMessage, ManagerAddr};
use shoal_net::tls::{self, ReloadableCert, TlsIncoming};
use shoal_store::StoreKey;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The API sockets, served for the life of the process.
#[derive(Debug, Clone)]
pub struct Sockets {
    /// Control API socket.
    pub api: PathBuf,
    /// Docker Engine API socket, if any.
    pub docker: Option<PathBuf>,
    /// Host name override (for nodes created through the API).
    pub hostname: Option<String>,
    /// The Docker Engine to use (for nodes created through the API).
    pub engine: Option<String>,
    /// The Docker API on TCP.
    pub tcp: Option<crate::state::DockerTcp>,
}

impl Sockets {
    /// The sockets `init`/`join` flags ask for.
    pub fn of(args: &StartArgs) -> Sockets {
        Sockets {
            api: args
                .api_socket
                .clone()
                .unwrap_or_else(|| args.data_dir.join("shoal.sock")),
            docker: args.docker_socket.clone(),
            hostname: args.hostname.clone(),
            engine: args.engine_socket.clone(),
            tcp: args.docker_tcp.clone(),
        }
    }

    /// The sockets of an existing node.
    pub fn of_state(state: &crate::state::NodeState) -> Sockets {
        Sockets {
            api: state.api_socket.clone(),
            docker: state.docker_socket.clone(),
            hostname: state.hostname_override.clone(),
            engine: state.engine_socket.clone(),
            tcp: state.docker_tcp.clone(),
        }
    }
}

/// A socket the API is served on.
enum ApiListener {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
    Tls(Box<shoal_manager::api::TlsListener>),
}

/// What the node does next.
pub enum Start {
    /// In no swarm: wait for init or join.
    Inactive,
    /// Wait for the unlock key.
    Locked,
    /// Run as a member.
    Run(Bootstrap),
}

/// An API request answered once the node runs.
enum Ready {
    Init(Reply<String>),
    Join(Reply<()>),
    Unlock(Reply<()>),
}

impl Ready {
    fn succeed(self, node_id: &str) {
        match self {
            Ready::Init(r) => drop(r.send(Ok(node_id.to_string()))),
            Ready::Join(r) | Ready::Unlock(r) => drop(r.send(Ok(()))),
        }
    }

    fn fail(self, e: ApiError) {
        match self {
            Ready::Init(r) => drop(r.send(Err(e))),
            Ready::Join(r) | Ready::Unlock(r) => drop(r.send(Err(e))),
        }
    }
}

/// How a member run ended.
enum Exit {
    /// Signal: the process stops.
    Stop,
    /// Role change: run again in the new role.
    Restart,
    /// Left or removed: the state is wiped.
    Left,
    /// `POST /swarm/init` with `ForceNewCluster` on this manager.
    ForceNew(Reply<String>),
}

/// How a locked node stopped waiting.
enum Unlocked {
    /// The key opened it: run.
    Run(Ready),
    /// It left the swarm (`--force`).
    Left,
    /// Signal.
    Stop,
}

struct Host {
    dir: DataDir,
    sockets: Sockets,
    front: Front,
    tx: mpsc::UnboundedSender<HostRequest>,
    rx: mpsc::UnboundedReceiver<HostRequest>,
    /// Stay up, inactive, after leaving (as a Docker Engine does).
    stay: bool,
    /// Bound API sockets not served yet: a node that starts as a member
    /// answers only once it runs (connections wait in the backlog).
    listeners: Vec<(ApiListener, String)>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    token: CancellationToken,
}

/// Runs the node of `dir` until a signal (or, unless `stay`, until it leaves
/// its swarm).
pub async fn run(dir: DataDir, sockets: Sockets, start: Start, stay: bool) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    let front = Front::new(inactive_state(
        &sockets,
        tx.clone(),
        Presence::Inactive,
        None,
    ));
    let token = CancellationToken::new();
    let mut listeners = Vec::new();
    let mut paths = vec![sockets.api.clone()];
    paths.extend(sockets.docker.clone());
    for path in &paths {
        let _ = std::fs::remove_file(path);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let listener = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("cannot serve the API on {}", path.display()))?;
        listeners.push((ApiListener::Unix(listener), path.display().to_string()));
    }
    if let Some(tcp) = &sockets.tcp {
        let listener = tokio::net::TcpListener::bind(&tcp.addr)
            .await
            .with_context(|| format!("cannot serve the Docker API on {}", tcp.addr))?;
        let l = match tcp.tls()? {
            Some(cfg) => ApiListener::Tls(Box::new(shoal_manager::api::TlsListener::new(
                listener, cfg,
            )?)),
            None => {
                tracing::warn!(addr = %tcp.addr, "the Docker API is served on TCP without TLS: anyone who can reach it controls the cluster (use --docker-tlscert/--docker-tlskey/--docker-tlscacert)");
                ApiListener::Tcp(listener)
            }
        };
        listeners.push((l, format!("tcp://{}", tcp.addr)));
    }
    let mut host = Host {
        dir,
        sockets,
        front,
        tx,
        rx,
        stay,
        listeners,
        servers: Vec::new(),
        token: token.clone(),
    };
    let result = host.run(start).await;
    token.cancel();
    for s in std::mem::take(&mut host.servers) {
        let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
    }
    for p in &paths {
        let _ = std::fs::remove_file(p);
    }
    result
}

fn inactive_state(
    sockets: &Sockets,
    host: mpsc::UnboundedSender<HostRequest>,
    presence: Presence,
    state: Option<&crate::state::NodeState>,
) -> ApiState {
    let d = describe(sockets.hostname.as_deref());
    ApiState::new(ApiContext {
        manager: None,
        local: LocalNode {
            node_id: state.map(|s| s.node_id.clone()).unwrap_or_default(),
            addr: state.map(|s| s.advertise_addr.clone()).unwrap_or_default(),
            hostname: d.hostname,
            ncpu: d.resources.nano_cpus / 1_000_000_000,
            mem_total: d.resources.memory_bytes,
            managers: Vec::new(),
        },
        presence,
        host,
    })
}

async fn signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

impl Host {
    /// Serves `state` on the API sockets from now on.
    fn show(&mut self, state: ApiState) {
        self.front.install(state);
        for (listener, path) in self.listeners.drain(..) {
            let (front, stop) = (self.front.clone(), self.token.clone().cancelled_owned());
            use shoal_manager::api::serve;
            self.servers.push(tokio::spawn(async move {
                let r = match listener {
                    ApiListener::Unix(l) => serve(l, front, stop).await,
                    ApiListener::Tcp(l) => serve(l, front, stop).await,
                    ApiListener::Tls(l) => serve(*l, front, stop).await,
                };
                if let Err(e) = r {
                    tracing::error!("API on {path}: {e}");
                }
            }));
        }
    }

    fn show_inactive(&mut self) {
        let s = inactive_state(&self.sockets, self.tx.clone(), Presence::Inactive, None);
        self.show(s);
    }

    async fn run(&mut self, mut start: Start) -> anyhow::Result<()> {
        let mut ready = None;
        loop {
            start = match start {
                Start::Inactive => match self.inactive().await {
                    Some((s, r)) => {
                        ready = Some(r);
                        s
                    }
                    None => return Ok(()),
                },
                Start::Locked => match self.locked().await? {
                    Unlocked::Run(r) => {
                        ready = Some(r);
                        Start::Run(Bootstrap::Member)
                    }
                    Unlocked::Left if self.stay => Start::Inactive,
                    Unlocked::Left | Unlocked::Stop => return Ok(()),
                },
                Start::Run(bootstrap) => {
                    let exit = self.member(bootstrap, &mut ready).await;
                    let exit = match (exit, ready.take()) {
                        (Ok(e), _) => e,
                        // A node started through the API that could not run:
                        // say why and go back to where it was.
                        (Err(e), Some(r)) => {
                            tracing::warn!("the node could not start: {e:#}");
                            let unlocking = matches!(r, Ready::Unlock(_));
                            r.fail(ApiError::internal(format!("{e:#}")));
                            if unlocking {
                                self.dir.use_seal(None);
                                start = Start::Locked;
                            } else {
                                let _ = self.dir.wipe();
                                start = Start::Inactive;
                            }
                            continue;
                        }
                        (Err(e), None) => return Err(e),
                    };
                    match exit {
                        Exit::Stop => return Ok(()),
                        Exit::Restart => {
                            tracing::info!("restarting the node's components in its new role");
                            Start::Run(Bootstrap::Member)
                        }
                        Exit::Left if self.stay => Start::Inactive,
                        Exit::Left => return Ok(()),
                        Exit::ForceNew(r) => {
                            ready = Some(Ready::Init(r));
                            Start::Run(Bootstrap::ForceNewCluster)
                        }
                    }
                }
            }
        }
    }

    /// In no swarm: answers until an init or join succeeds.
    async fn inactive(&mut self) -> Option<(Start, Ready)> {
        self.show_inactive();
        tracing::info!("this node is in no swarm: waiting for `swarm init` or `swarm join`");
        loop {
            let req = tokio::select! {
                _ = signal() => return None,
                r = self.rx.recv() => r?,
            };
            match req {
                HostRequest::Init(req, reply) => match self.init(*req) {
                    Ok(b) => return Some((Start::Run(b), Ready::Init(reply))),
                    Err(e) => {
                        let _ = self.dir.wipe();
                        let _ = reply.send(Err(e));
                    }
                },
                HostRequest::Join(req, reply) => match self.join(*req).await {
                    Ok(()) => return Some((Start::Run(Bootstrap::Member), Ready::Join(reply))),
                    Err(e) => {
                        let _ = self.dir.wipe();
                        let _ = reply.send(Err(e));
                    }
                },
                HostRequest::Leave(reply) => {
                    let _ = reply.send(Err(ApiError::no_swarm()));
                }
                HostRequest::Unlock(_, reply) => {
                    let _ = reply.send(Err(ApiError::no_swarm_manager()));
                }
            }
        }
    }

    fn start_args(&self, listen: String, advertise: String) -> StartArgs {
        StartArgs {
            data_dir: self.dir.root.clone(),
            listen_addr: listen,
            advertise_addr: Some(advertise),
            api_socket: Some(self.sockets.api.clone()),
            hostname: self.sockets.hostname.clone(),
            docker_socket: self.sockets.docker.clone(),
            engine_socket: self.sockets.engine.clone(),
            docker_tcp: self.sockets.tcp.clone(),
        }
    }

    fn init(&self, req: InitRequest) -> Result<Bootstrap, ApiError> {
        let availability =
            shoal_api::parse_availability(&req.availability).map_err(ApiError::bad_request)?;
        let listen = crate::addr::listen(&req.listen_addr).map_err(ApiError::bad_request)?;
        let advertise = crate::addr::advertise_init(&req.advertise_addr, listen)
            .map_err(ApiError::bad_request)?;
        check_free(listen)?;
        let args = self.start_args(listen.to_string(), advertise.to_string());
        node::prepare_init(
            &self.dir,
            &args,
            InitOptions {
                spec: req.spec,
                heartbeat: None,
                autolock: req.auto_lock_managers,
                availability: Some(availability),
                default_addr_pool: req.default_addr_pool,
                subnet_size: req.subnet_size,
                data_path_port: req.data_path_port,
            },
        )
        .map_err(|e| ApiError::internal(format!("{e:#}")))
    }

    async fn join(&self, req: JoinRequest) -> Result<(), ApiError> {
        let availability =
            shoal_api::parse_availability(&req.availability).map_err(ApiError::bad_request)?;
        let listen = crate::addr::listen(&req.listen_addr).map_err(ApiError::bad_request)?;
        let remote = crate::addr::remote(&req.remote_addrs[0]).map_err(ApiError::bad_request)?;
        let advertise = crate::addr::advertise_join(&req.advertise_addr, listen, remote)
            .map_err(ApiError::bad_request)?;
        check_free(listen)?;
        let args = self.start_args(listen.to_string(), advertise.to_string());
        node::prepare_join(
            &args,
            req.join_token,
            remote.to_string(),
            Some(availability),
        )
        .await
        .map_err(|e| match e {
            JoinFailure::Invalid(m) => ApiError::bad_request(m),
            JoinFailure::Unreachable(m) => ApiError::unavailable(m),
            JoinFailure::Other(e) => ApiError::internal(format!("{e:#}")),
        })
    }

    /// A manager whose key is sealed: answers until the right unlock key
    /// comes (or the node leaves with `--force`).
    async fn locked(&mut self) -> anyhow::Result<Unlocked> {
        let state = self.dir.load()?;
        let s = inactive_state(
            &self.sockets,
            self.tx.clone(),
            Presence::Locked,
            Some(&state),
        );
        self.show(s);
        tracing::warn!(
            "this manager is locked: `docker swarm unlock` with the unlock key starts it"
        );
        loop {
            let req = tokio::select! {
                _ = signal() => return Ok(Unlocked::Stop),
                r = self.rx.recv() => match r { Some(r) => r, None => return Ok(Unlocked::Stop) },
            };
            match req {
                HostRequest::Unlock(key, reply) => {
                    let opened = UnlockKey::parse(&key)
                        .ok_or(shoal_net::lock::LockError::WrongKey)
                        .and_then(|k| self.dir.unlock(k));
                    match opened {
                        Ok(()) => return Ok(Unlocked::Run(Ready::Unlock(reply))),
                        Err(_) => {
                            let _ = reply.send(Err(ApiError::unauthorized(
                                "swarm could not be unlocked: invalid key provided",
                            )));
                        }
                    }
                }
                HostRequest::Leave(reply) => {
                    // Validated by the API: this is `--force`.
                    let r = self
                        .dir
                        .wipe()
                        .map_err(|e| ApiError::internal(format!("{e:#}")));
                    self.show_inactive();
                    let _ = reply.send(r);
                    return Ok(Unlocked::Left);
                }
                HostRequest::Init(_, reply) => {
                    let _ = reply.send(Err(ApiError::locked()));
                }
                HostRequest::Join(_, reply) => {
                    let _ = reply.send(Err(ApiError::locked()));
                }
            }
        }
    }

    /// Runs the node as a member of its cluster.
    async fn member(
        &mut self,
        bootstrap: Bootstrap,
        ready: &mut Option<Ready>,
    ) -> anyhow::Result<Exit> {
        let dir = &self.dir.clone();
        let state = dir.load()?;
        let (ca, cert, key) = dir.load_certs()?;
        let reload = ReloadableCert::new(&ca, &cert, &key)?;
        let server_cfg = tls::server_config_with_cert(&ca, reload.clone())?;
        let manager_cfg = tls::client_config_with_cert(&ca, Some(reload.clone()))?;
        let listener = bind_listen_addr(&state.listen_addr).await?;
        let token = CancellationToken::new();
        let manager = if state.role == NodeRole::Manager {
            let cfg = ManagerConfig {
                raft_dir: dir.raft_dir(),
                data_keys: dir.data_keys()?,
                node_id: state.node_id.clone(),
                raft_id: state.raft_id,
                cluster_id: state.cluster_id.clone(),
                addr: state.advertise_addr.clone(),
                peers: Peers::new(manager_cfg.clone()),
                node_peers: Peers::new(tls::peer_client_config(&ca, Some(reload.clone()))?),
            };
            let unfinished = cfg.data_keys.len() > 1;
            let m = Manager::start(cfg, bootstrap).await?;
            if unfinished {
                // A re-keying was cut short: finish it with the current key.
                rekey_store(dir, &m, None).await?;
            }
            Some(m)
        } else {
            None
        };

        let shim_cmd =
            shoal_agent::process::shim_command(&std::env::current_exe()?, "task-shim").await;
        let process = shoal_agent::process::ProcessExecutor::new(dir.root.join("tasks"), shim_cmd);
        let mut description = describe(state.hostname_override.as_deref());
        // The engine may answer only later: the engine watch binds it then.
        let engine_hosts = node::engine_candidates(state.engine_socket.as_deref());
        let without_engine = description.clone();
        let docker = match node::find_engine(&mut description, &engine_hosts).await {
            Ok(d) => Some(d),
            Err(why) => {
                tracing::info!(
                    "no Docker Engine yet: container tasks run elsewhere until one answers ({why})"
                );
                None
            }
        };
        let docker = shoal_agent::docker::EngineSlot::new(docker);
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
            let cluster = services
                .clone()
                .map(|s| ClusterServer::new(s).max_decoding_message_size(256 << 20));
            // Raft replication streams come in on the gRPC port; a worker
            // drops them (no receiver).
            let (raft_conns, raft_rx) = mpsc::channel(16);
            if let Some(s) = &services {
                tokio::spawn(shoal_manager::raft_stream::serve(
                    raft_rx,
                    s.clone(),
                    token.clone(),
                ));
            }
            let incoming =
                TlsIncoming::with_side_door(listener, server_cfg, tls::ALPN_RAFT, raft_conns);
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
        self.show(ApiState::new(ApiContext {
            manager: manager.clone(),
            local: LocalNode {
                node_id: state.node_id.clone(),
                addr: state.advertise_addr.clone(),
                hostname: description.hostname.clone(),
                ncpu: description.resources.nano_cpus / 1_000_000_000,
                mem_total: description.resources.memory_bytes,
                managers: state.managers.clone(),
            },
            presence: Presence::Active,
            host: self.tx.clone(),
        }));

        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = mpsc::unbounded_channel();
        let worker =
            shoal_agent::worker::Worker::new(&state.node_id, process, docker.clone(), status_tx);
        worker.adopt().await;
        let (describe_tx, describe_rx) = tokio::sync::watch::channel(description.clone());
        spawn_engine_watch(
            EngineWatch {
                slot: docker,
                hosts: engine_hosts,
                without_engine,
                worker: worker.clone(),
                describe: describe_tx,
            },
            token.clone(),
        );
        tokio::spawn(shoal_agent::session::run(
            shoal_agent::session::SessionConfig {
                addr: state.advertise_addr.clone(),
                description: describe_rx,
                managers: managers.clone(),
                tls: manager_cfg.clone(),
            },
            events_tx,
            status_rx,
            token.clone(),
        ));
        node::spawn_cert_renewal(
            dir.clone(),
            reload.clone(),
            managers.clone(),
            manager_cfg.clone(),
            token.clone(),
        );
        match &manager {
            Some(m) => spawn_autolock(dir.clone(), m.clone(), token.clone()),
            None if dir.seal().is_some() => {
                // Workers' keys are never locked.
                if let Err(e) = dir.set_seal(None) {
                    tracing::warn!("could not unseal the node key: {e:#}");
                }
            }
            None => {}
        }

        tracing::info!(
            node = %state.node_id, role = state.role.as_str(), addr = %state.advertise_addr,
            api = %self.sockets.api.display(), "node running"
        );
        if let Some(r) = ready.take() {
            // A manager that just joined answers once its store caught up
            // with the cluster (the next `docker node ls` sees it).
            if let (Some(m), Ready::Join(_)) = (&manager, &r) {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                while m.store.view(|t| t.nodes.get(&state.node_id).is_none())
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            r.succeed(&state.node_id);
        }
        let mut leave_reply = None;
        let exit = loop {
            tokio::select! {
                _ = signal() => break Exit::Stop,
                Some(req) = self.rx.recv() => match req {
                    HostRequest::Leave(reply) => {
                        tracing::info!("leaving the cluster");
                        leave_reply = Some(reply);
                        break Exit::Left;
                    }
                    HostRequest::Init(req, reply) if req.force_new_cluster && manager.is_some() => {
                        tracing::warn!("forcing a new cluster from this manager's state");
                        break Exit::ForceNew(reply);
                    }
                    HostRequest::Init(_, reply) => drop(reply.send(Err(ApiError::swarm_exists()))),
                    HostRequest::Join(_, reply) => drop(reply.send(Err(ApiError::swarm_exists()))),
                    HostRequest::Unlock(_, reply) => drop(reply.send(Err(ApiError::not_locked()))),
                },
                Some(ev) = events.recv() => match ev {
                    DispatcherMessage::RoleChanged(role) if role != state.role => {
                        tracing::info!(role = role.as_str(), "role changed: renewing the certificate");
                        match node::renew(dir, &managers, &manager_cfg).await {
                            Ok(_) => break Exit::Restart,
                            Err(e) => tracing::warn!("could not switch role yet: {e:#}"),
                        }
                    }
                    DispatcherMessage::Removed => {
                        tracing::warn!("this node was removed from the cluster");
                        break Exit::Left;
                    }
                    DispatcherMessage::Assignments { tasks, services } => worker.assign(tasks, &services).await,
                    DispatcherMessage::Welcome { managers, .. } => {
                        // A new session: reports sent on the last one may be lost.
                        worker.session_opened();
                        remember_managers(dir, managers)?;
                    }
                    DispatcherMessage::Managers(list) => remember_managers(dir, list)?,
                    _ => {}
                },
            }
        };
        token.cancel();
        if let Some(m) = &manager {
            m.shutdown().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), grpc).await;
        if matches!(exit, Exit::Left) {
            // As Docker does: the node's tasks go with it.
            worker.remove_all().await;
            let r = self
                .dir
                .wipe()
                .map_err(|e| ApiError::internal(format!("{e:#}")));
            // The next request already finds the node in no swarm.
            self.show_inactive();
            if let Some(reply) = leave_reply {
                let _ = reply.send(r);
            }
        }
        Ok(exit)
    }
}

/// Binds the node-to-node address; after a role switch the previous run's
/// listener may take a moment to close, so an address in use is retried
/// for a few seconds.
async fn bind_listen_addr(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr}")),
        }
    }
}

/// Refuses a listen address already in use before any state is written.
fn check_free(addr: std::net::SocketAddr) -> Result<(), ApiError> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| ApiError::bad_request(format!("cannot listen on {addr}: {e}")))
}

/// Re-seals the Raft log and snapshot with `new` (or, to finish an
/// interrupted re-keying, with the current data key), keeping the old keys
/// in the key file until nothing needs them.
async fn rekey_store(
    dir: &DataDir,
    manager: &Manager,
    new: Option<StoreKey>,
) -> anyhow::Result<()> {
    let mut keys = dir.data_keys()?;
    if let Some(k) = new {
        keys.insert(0, k);
        dir.set_data_keys(&keys)?;
    }
    manager.rekey(keys[0].clone()).await?;
    dir.set_data_keys(&keys[..1])
}

/// Keeps this manager's key file sealed with the cluster's current unlock
/// key (autolock on, key rotated) or in clear (autolock off).
fn spawn_autolock(dir: DataDir, manager: Arc<Manager>, token: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let want = manager
                .store
                .view(|t| t.cluster.as_ref().map(|c| c.unlock_key.clone()))
                .and_then(|k| UnlockKey::parse(&k));
            if want != dir.seal() {
                let on = want.is_some();
                let turned_on = on && dir.seal().is_none();
                match dir.set_seal(want) {
                    Ok(()) if on => tracing::info!(
                        "autolock: the node key is sealed with the current unlock key"
                    ),
                    Ok(()) => tracing::info!("autolock off: the node key is stored in clear"),
                    Err(e) => tracing::warn!("autolock: could not rewrite the node key: {e:#}"),
                }
                if turned_on {
                    // The data key was stored in clear until now: whoever
                    // copied it could read what it seals, so the store
                    // moves to a new one (as Swarm rotates its DEK).
                    match rekey_store(&dir, &manager, Some(StoreKey::generate())).await {
                        Ok(()) => {
                            tracing::info!("autolock: the Raft store is sealed with a new data key")
                        }
                        Err(e) => {
                            tracing::warn!("autolock: could not re-key the Raft store: {e:#}")
                        }
                    }
                }
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    });
}

/// What the engine watch works with.
struct EngineWatch {
    /// The node's docker executor, empty until an engine answers.
    slot: shoal_agent::docker::EngineSlot,
    /// Where to look for an engine while there is none.
    hosts: Vec<String>,
    /// The node's description without any engine.
    without_engine: shoal_api::NodeDescription,
    worker: shoal_agent::worker::Worker,
    describe: tokio::sync::watch::Sender<shoal_api::NodeDescription>,
}

/// Watches the node's Docker Engine every [`ENGINE_CHECK`]. While the node
/// has none, it looks for one: the first that answers is bound (the worker
/// and node service use it from then on), its containers are re-adopted and
/// the node starts offering the `docker` executor. When the bound engine
/// stops answering, the node stops offering the executor (new container
/// tasks go elsewhere; tasks that fail meanwhile are replaced by the
/// orchestrators); when it answers again, the executor comes back.
fn spawn_engine_watch(w: EngineWatch, token: CancellationToken) {
    let mut without = w.without_engine.clone();
    without.engine.engine_version = String::new();
    tokio::spawn(async move {
        let mut up = w.slot.get().is_some();
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(ENGINE_CHECK) => {}
            }
            let Some(docker) = w.slot.get() else {
                let mut d = w.without_engine.clone();
                let found = tokio::select! {
                    _ = token.cancelled() => return,
                    found = node::find_engine(&mut d, &w.hosts) => found,
                };
                match found {
                    Ok(engine) => {
                        w.slot.set(engine.clone());
                        w.worker.adopt_containers(&engine).await;
                        up = true;
                        w.describe.send_replace(d);
                    }
                    Err(why) => tracing::debug!("still no Docker Engine: {why}"),
                }
                continue;
            };
            let ping = match tokio::time::timeout(Duration::from_secs(5), docker.ping()).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("no answer within 5s".to_string()),
            };
            match (ping, up) {
                (Err(e), true) => {
                    tracing::warn!(engine = %docker.host(), "the Docker Engine stopped answering: container tasks go elsewhere ({e})");
                    up = false;
                    w.describe.send_replace(without.clone());
                }
                (Ok(()), false) => {
                    let mut d = w.without_engine.clone();
                    if node::describe_engine(&mut d, &docker).await {
                        tracing::info!(engine = %docker.host(), "the Docker Engine answers again");
                        up = true;
                        w.describe.send_replace(d);
                    }
                }
                _ => {}
            }
        }
    });
}

/// How often a node checks that its Docker Engine answers.
const ENGINE_CHECK: Duration = Duration::from_secs(2);

/// Keeps the managers' list in the data dir: a restarted node's agent
/// tries them to find the leader.
fn remember_managers(dir: &DataDir, managers: Vec<ManagerAddr>) -> anyhow::Result<()> {
    let mut s = dir.load()?;
    if s.managers != managers {
        s.managers = managers;
        dir.save(&s)?;
    }
    Ok(())
}
