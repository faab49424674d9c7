//! shoal: the command line. Daemon commands (`init`, `join`, `daemon`,
//! `dev`) start a node; the others talk to a node's control API.

mod addr;
mod client;
mod cmd_node;
mod cmd_service;
mod cmd_swarm;
mod host;
mod logs;
mod node;
mod progress;
mod state;

use clap::{Parser, Subcommand};
use client::{Client, Host};
use std::path::PathBuf;
use std::time::Duration;

/// mimalloc instead of glibc's malloc: the write path allocates and frees
/// many small objects per request across threads, and glibc spent about a
/// fifth of the Raft leader's CPU in malloc/free (fastbin consolidation
/// included; see BENCHMARKS.md). mimalloc also returns freed memory to the
/// system by itself.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "A container orchestrator that speaks Docker Swarm's language"
)]
struct Cli {
    /// Daemon API to talk to: unix:///PATH or tcp://HOST:PORT.
    #[arg(
        short = 'H',
        long = "host",
        env = "SHOAL_HOST",
        global = true,
        default_value = "unix:///run/shoal/shoal.sock"
    )]
    host: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct NodeFlags {
    /// Data directory of this node.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address for node-to-node traffic (IP:PORT).
    #[arg(long)]
    listen_addr: Option<String>,
    /// Address other nodes reach this one at (IP:PORT); defaults to --listen-addr.
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Control API socket (default DATA_DIR/shoal.sock).
    #[arg(long)]
    api_socket: Option<PathBuf>,
    /// Host name this node reports (default: the machine's).
    #[arg(long)]
    hostname: Option<String>,
    /// Also serve the API on this socket (for `DOCKER_HOST=unix://PATH docker …`).
    #[arg(long)]
    docker_socket: Option<PathBuf>,
    /// The Docker Engine that runs this node's containers (unix:///PATH;
    /// default: DOCKER_HOST, else /var/run/docker.sock).
    #[arg(long)]
    engine_socket: Option<String>,
    #[command(flatten)]
    tcp: TcpFlags,
}

/// The Docker API on TCP.
#[derive(clap::Args, Clone)]
struct TcpFlags {
    /// Also serve the Docker API on TCP at IP:PORT.
    #[arg(long)]
    docker_tcp: Option<String>,
    /// TLS certificate (PEM) for --docker-tcp.
    #[arg(long)]
    docker_tlscert: Option<PathBuf>,
    /// TLS private key (PEM) for --docker-tcp.
    #[arg(long)]
    docker_tlskey: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM) on --docker-tcp.
    #[arg(long)]
    docker_tlscacert: Option<PathBuf>,
}

impl TcpFlags {
    fn parse(self) -> anyhow::Result<Option<state::DockerTcp>> {
        state::DockerTcp::from_flags(
            self.docker_tcp,
            self.docker_tlscert,
            self.docker_tlskey,
            self.docker_tlscacert,
        )
    }
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run
enum Cmd {
    /// Start a new cluster with this node as its first manager.
    Init {
        #[command(flatten)]
        node: NodeFlags,
        /// Agent heartbeat period (cluster setting).
        #[arg(long, value_parser = parse_duration)]
        heartbeat_period: Option<Duration>,
        /// Quorum-loss recovery: make this surviving manager a one-manager cluster, keeping every object.
        #[arg(long)]
        force_new_cluster: bool,
    },
    /// Join a cluster as a worker or manager (the token decides).
    Join {
        #[command(flatten)]
        node: NodeFlags,
        /// Join token (SWMTKN-1-…).
        #[arg(long)]
        token: String,
        /// A manager's address (HOST:PORT).
        manager: String,
    },
    /// Run the node of a data dir; with an empty one, a node in no swarm
    /// that waits for `docker swarm init` / `join` through its API.
    Daemon {
        /// Data directory of this node.
        #[arg(long)]
        data_dir: PathBuf,
        /// Also serve the API on this socket (remembered for later restarts).
        #[arg(long)]
        docker_socket: Option<PathBuf>,
        /// Control API socket while the node is in no swarm (default DATA_DIR/shoal.sock).
        #[arg(long)]
        api_socket: Option<PathBuf>,
        /// Host name this node reports, for a node created through the API.
        #[arg(long)]
        hostname: Option<String>,
        /// The Docker Engine that runs this node's containers (remembered).
        #[arg(long)]
        engine_socket: Option<String>,
        #[command(flatten)]
        tcp: TcpFlags,
    },
    /// A one-node cluster (manager + agent) in the foreground.
    Dev {
        /// Data directory.
        #[arg(long, default_value = ".shoal-dev")]
        data_dir: PathBuf,
        /// Control API socket (default DATA_DIR/shoal.sock).
        #[arg(long)]
        api_socket: Option<PathBuf>,
        /// Also serve the API on this socket (for the docker CLI).
        #[arg(long)]
        docker_socket: Option<PathBuf>,
    },
    /// Manage nodes.
    #[command(subcommand)]
    Node(cmd_node::NodeCmd),
    /// Manage the cluster.
    #[command(subcommand)]
    Swarm(cmd_swarm::SwarmCmd),
    /// Manage services.
    #[command(subcommand)]
    Service(cmd_service::ServiceCmd),
    /// Show cluster-wide information about this node.
    Info {
        /// `json` prints the API's `GET /info` document.
        #[arg(long)]
        format: Option<String>,
    },
    /// Run a task shim (internal).
    #[command(hide = true)]
    TaskShim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Parses `500ms`, `2s`, `1m`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (e.g. 500ms, 10s, 1m)"))
}

fn main() {
    // The shim forks: it must run before any thread or runtime exists.
    if std::env::args().nth(1).as_deref() == Some("task-shim") {
        shoal_agent::process::shim::main();
    }
    let cli = Cli::parse();
    let daemon = matches!(
        cli.cmd,
        Cmd::Init { .. } | Cmd::Join { .. } | Cmd::Daemon { .. } | Cmd::Dev { .. }
    );
    if daemon {
        let filter =
            tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "info,openraft=off,h2=warn,tower=warn,hyper=warn",
                )
            });
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        rt.worker_threads(worker_threads());
    }
    let rt = rt.enable_all().build().expect("tokio runtime");
    let code = rt.block_on(async move {
        match run(cli).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{}", format!("{e:#}").trim_end());
                1
            }
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    std::process::exit(code);
}

/// Async worker threads: one per core but one, which is left to the
/// threads that block (log fsyncs, snapshots, task launches) and to the
/// kernel's network work. On a 2-core machine one worker keeps every task
/// hop of a Raft write on one thread: sequential writes 10–25 % faster than
/// with two, up to 15 % less CPU per write (BENCHMARKS.md). `TOKIO_WORKER_THREADS` overrides it.
fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1))
        .unwrap_or(1)
        .max(1)
}

fn start_args(n: NodeFlags, need_listen: bool) -> anyhow::Result<node::StartArgs> {
    let listen_addr = match (n.listen_addr, need_listen) {
        (Some(a), _) => a,
        (None, true) => {
            anyhow::bail!("--listen-addr is required (IP:PORT for node-to-node traffic)")
        }
        (None, false) => String::new(),
    };
    Ok(node::StartArgs {
        data_dir: n.data_dir,
        listen_addr,
        advertise_addr: n.advertise_addr,
        api_socket: n.api_socket,
        hostname: n.hostname,
        docker_socket: n.docker_socket,
        engine_socket: n.engine_socket,
        docker_tcp: n.tcp.parse()?,
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = || -> anyhow::Result<Client> { Ok(Client::new(Host::parse(&cli.host)?)) };
    match cli.cmd {
        Cmd::Init {
            node: n,
            heartbeat_period,
            force_new_cluster,
        } => {
            if force_new_cluster {
                return node::force_new_cluster(n.data_dir).await;
            }
            if let Some(hb) = heartbeat_period {
                if hb < Duration::from_millis(10) {
                    anyhow::bail!("invalid --heartbeat-period {hb:?}: must be at least 10ms");
                }
            }
            node::init(start_args(n, true)?, heartbeat_period).await
        }
        Cmd::Join {
            node: n,
            token,
            manager,
        } => node::join(start_args(n, true)?, token, manager).await,
        Cmd::Daemon {
            data_dir,
            docker_socket,
            api_socket,
            hostname,
            engine_socket,
            tcp,
        } => {
            node::daemon(node::DaemonArgs {
                data_dir,
                docker_socket,
                api_socket,
                hostname,
                engine_socket,
                docker_tcp: tcp.parse()?,
            })
            .await
        }
        Cmd::Dev {
            data_dir,
            api_socket,
            docker_socket,
        } => node::dev(data_dir, api_socket, docker_socket).await,
        Cmd::Node(c) => cmd_node::run(&client()?, c).await,
        Cmd::Swarm(c) => cmd_swarm::run(&client()?, c).await,
        Cmd::Service(c) => cmd_service::run(&client()?, c).await,
        Cmd::Info { format } => cmd_swarm::info(&client()?, format.as_deref()).await,
        Cmd::TaskShim { .. } => unreachable!("handled before the runtime starts"),
    }
}
