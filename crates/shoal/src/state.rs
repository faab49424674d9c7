//! A node's data directory: who it is (`node.json`) and its certificates.
//!
//! ```text
//! DIR/node.json        node ID, role, cluster ID, addresses, Raft id
//! DIR/certs/ca.pem     the cluster's root CA certificate
//! DIR/certs/node.pem   this node's certificate;  DIR/certs/node.key its key and,
//!                      on managers, the key the Raft log and snapshots are sealed with
//! DIR/raft/            managers: Raft log (wal/), vote and snapshots
//! DIR/tasks/           the agent's task state and logs
//! ```

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use shoal_api::NodeRole;
use shoal_net::lock::{self, UnlockKey};
use shoal_net::rpc::ManagerAddr;
use shoal_store::StoreKey;

const DATA_KEY_BEGIN: &str = "-----BEGIN SHOAL DATA KEY-----";
const DATA_KEY_END: &str = "-----END SHOAL DATA KEY-----";
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Contents of `node.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    /// Node ID.
    pub node_id: String,
    /// Current role.
    pub role: NodeRole,
    /// Cluster ID.
    pub cluster_id: String,
    /// Address to listen on for node-to-node traffic.
    pub listen_addr: String,
    /// Address other nodes reach us at.
    pub advertise_addr: String,
    /// Control API socket.
    pub api_socket: PathBuf,
    /// Raft member id (managers).
    pub raft_id: u64,
    /// Managers known at the last contact.
    pub managers: Vec<ManagerAddr>,
    /// Agent heartbeat/dispatcher settings are cluster-wide; nothing else here.
    #[serde(default)]
    pub hostname_override: Option<String>,
    /// A second socket serving the same control API, for the docker CLI.
    #[serde(default)]
    pub docker_socket: Option<PathBuf>,
    /// The Docker Engine to use (`--engine-socket`), instead of DOCKER_HOST
    /// or /var/run/docker.sock.
    #[serde(default)]
    pub engine_socket: Option<String>,
    /// The Docker API also served on TCP (`--docker-tcp`, TLS flags).
    #[serde(default)]
    pub docker_tcp: Option<DockerTcp>,
}

/// The Docker API on TCP: plain, TLS, or TLS with client certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerTcp {
    /// `HOST:PORT` to listen on.
    pub addr: String,
    /// Server certificate (PEM), for TLS.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Clients must present a certificate signed by this CA (Docker's `--tlsverify`).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
}

impl DockerTcp {
    /// From the command-line flags; `None` without `--docker-tcp`.
    pub fn from_flags(
        addr: Option<String>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
    ) -> anyhow::Result<Option<DockerTcp>> {
        let Some(addr) = addr else {
            if cert.is_some() || key.is_some() || ca.is_some() {
                bail!("--docker-tlscert, --docker-tlskey and --docker-tlscacert need --docker-tcp HOST:PORT");
            }
            return Ok(None);
        };
        addr.parse::<std::net::SocketAddr>().with_context(|| {
            format!("invalid --docker-tcp {addr:?}: expected IP:PORT, e.g. 0.0.0.0:2376")
        })?;
        match (&cert, &key) {
            (Some(_), None) | (None, Some(_)) => {
                bail!("--docker-tlscert and --docker-tlskey go together")
            }
            (None, None) if ca.is_some() => {
                bail!("--docker-tlscacert needs --docker-tlscert and --docker-tlskey")
            }
            _ => {}
        }
        Ok(Some(DockerTcp {
            addr,
            tls_cert: cert,
            tls_key: key,
            tls_ca: ca,
        }))
    }

    /// The TLS configuration, when TLS is asked for.
    pub fn tls(&self) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        let ca = self.tls_ca.as_ref().map(read).transpose()?;
        let cfg =
            shoal_net::tls::docker_api_server_config(&read(cert)?, &read(key)?, ca.as_deref())
                .context("the Docker API TLS files")?;
        Ok(Some(cfg))
    }
}

/// The files of a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// The directory.
    pub root: PathBuf,
    /// The unlock key the node's private key is sealed with (autolock), once known.
    seal: Arc<Mutex<Option<UnlockKey>>>,
}

impl DataDir {
    /// A data dir at `root`.
    pub fn new(root: &Path) -> DataDir {
        DataDir {
            root: root.to_path_buf(),
            seal: Arc::default(),
        }
    }

    fn key_file(&self) -> PathBuf {
        self.certs().join("node.key")
    }

    /// Whether the node's private key is sealed (autolock) and no key to open it is known yet.
    pub fn locked(&self) -> bool {
        self.seal.lock().expect("lock").is_none()
            && std::fs::read_to_string(self.key_file()).is_ok_and(|k| lock::is_sealed(&k))
    }

    /// Opens the sealed private key with `key`: from now on the key file is
    /// read and written with it.
    pub fn unlock(&self, key: UnlockKey) -> Result<(), lock::LockError> {
        let text =
            std::fs::read_to_string(self.key_file()).map_err(|_| lock::LockError::NotSealed)?;
        key.open(&text)?;
        *self.seal.lock().expect("lock") = Some(key);
        Ok(())
    }

    /// Uses `key` for the key file from now on, without rewriting it.
    pub fn use_seal(&self, key: Option<UnlockKey>) {
        *self.seal.lock().expect("lock") = key;
    }

    /// The unlock key in use, if any.
    pub fn seal(&self) -> Option<UnlockKey> {
        self.seal.lock().expect("lock").clone()
    }

    /// Seals the private key and the store's data keys with `key` (or
    /// stores them in clear with `None`).
    pub fn set_seal(&self, key: Option<UnlockKey>) -> anyhow::Result<()> {
        let (pem, data_keys) = self.read_key_file()?;
        *self.seal.lock().expect("lock") = key;
        self.write_key_file(&pem, &data_keys)
    }

    /// The node's private key PEM and the store's data keys (the current
    /// one first), from the key file (opened with the unlock key when
    /// sealed).
    fn read_key_file(&self) -> anyhow::Result<(String, Vec<StoreKey>)> {
        let path = self.key_file();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let text = if lock::is_sealed(&text) {
            let seal = self
                .seal()
                .context("the node's key is locked: unlock it with `docker swarm unlock`")?;
            String::from_utf8(
                seal.open(&text)
                    .context("the unlock key does not open the node's key")?,
            )?
        } else {
            text
        };
        let Some(at) = text.find(DATA_KEY_BEGIN) else {
            return Ok((text, Vec::new()));
        };
        let mut keys = Vec::new();
        for block in text[at..].split(DATA_KEY_BEGIN).skip(1) {
            let b64 = block.split(DATA_KEY_END).next().unwrap_or_default();
            let bytes: [u8; 32] = STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .with_context(|| format!("{}: a data key is damaged", path.display()))?;
            keys.push(StoreKey::from_bytes(bytes));
        }
        Ok((text[..at].to_string(), keys))
    }

    /// Writes the key file: the private key PEM, then the data keys, sealed
    /// together with the unlock key when there is one (one file, so they
    /// are always sealed with the same key).
    fn write_key_file(&self, pem: &str, data_keys: &[StoreKey]) -> anyhow::Result<()> {
        let mut plain = pem.to_string();
        for k in data_keys {
            plain.push_str(&format!(
                "{DATA_KEY_BEGIN}\n{}\n{DATA_KEY_END}\n",
                STANDARD.encode(k.bytes())
            ));
        }
        let text = match self.seal() {
            Some(k) => k.seal(plain.as_bytes()),
            None => plain,
        };
        write_atomic(&self.key_file(), text.as_bytes())?;
        set_private(&self.key_file());
        Ok(())
    }

    /// The keys the Raft log and snapshots are sealed with, the one for
    /// new writes first (made on first use; more than one only while a
    /// re-keying is unfinished). They are kept in the node's key file, so
    /// they are sealed with the unlock key while autolock is on: a copied
    /// data dir reveals neither.
    pub fn data_keys(&self) -> anyhow::Result<Vec<StoreKey>> {
        let (pem, keys) = self.read_key_file()?;
        if !keys.is_empty() {
            return Ok(keys);
        }
        let keys = vec![StoreKey::generate()];
        self.write_key_file(&pem, &keys)?;
        Ok(keys)
    }

    /// Replaces the data keys (the current one first).
    pub fn set_data_keys(&self, keys: &[StoreKey]) -> anyhow::Result<()> {
        let (pem, _) = self.read_key_file()?;
        self.write_key_file(&pem, keys)
    }

    fn node_json(&self) -> PathBuf {
        self.root.join("node.json")
    }

    /// Where the Raft files are.
    pub fn raft_dir(&self) -> PathBuf {
        self.root.join("raft")
    }

    fn certs(&self) -> PathBuf {
        self.root.join("certs")
    }

    /// Whether the directory already holds a node.
    pub fn exists(&self) -> bool {
        self.node_json().exists()
    }

    /// Refuses to reuse a directory that belongs to a cluster.
    pub fn ensure_unused(&self) -> anyhow::Result<()> {
        if let Ok(s) = self.load() {
            bail!(
                "the data dir {} already belongs to cluster {} (node {}); restart it with `shoal daemon --data-dir {}` or use an empty directory",
                self.root.display(),
                s.cluster_id,
                s.node_id,
                self.root.display()
            );
        }
        if self.exists() {
            bail!(
                "the data dir {} holds an unreadable node.json; use an empty directory",
                self.root.display()
            );
        }
        Ok(())
    }

    /// Reads `node.json`.
    pub fn load(&self) -> anyhow::Result<NodeState> {
        let bytes = std::fs::read(self.node_json()).with_context(|| {
            format!(
                "{} is not a shoal data dir (no node.json); use `shoal init` or `shoal join`",
                self.root.display()
            )
        })?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is corrupt", self.node_json().display()))
    }

    /// Writes `node.json` atomically.
    pub fn save(&self, s: &NodeState) -> anyhow::Result<()> {
        write_atomic(&self.node_json(), &serde_json::to_vec_pretty(s)?)
    }

    /// Reads (ca, cert, key) PEMs.
    pub fn load_certs(&self) -> anyhow::Result<(String, String, String)> {
        let read = |n: &str| {
            std::fs::read_to_string(self.certs().join(n))
                .with_context(|| format!("reading {}", self.certs().join(n).display()))
        };
        let (key, _) = self.read_key_file()?;
        Ok((read("ca.pem")?, read("node.pem")?, key))
    }

    /// Writes the CA, node certificate and key.
    pub fn save_certs(&self, ca: &str, cert: &str, key: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.certs())?;
        write_atomic(&self.certs().join("ca.pem"), ca.as_bytes())?;
        write_atomic(&self.certs().join("node.pem"), cert.as_bytes())?;
        // A renewed key keeps the store's data keys.
        let data_keys = self.read_key_file().map(|(_, k)| k).unwrap_or_default();
        self.write_key_file(key, &data_keys)
    }

    /// Removes everything that makes this directory a node.
    pub fn wipe(&self) -> anyhow::Result<()> {
        for p in [self.node_json(), self.certs(), self.raft_dir()] {
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else if p.exists() {
                std::fs::remove_file(&p)?;
            }
        }
        *self.seal.lock().expect("lock") = None;
        Ok(())
    }
}

fn set_private(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));
}

/// Writes a file via a temporary file, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}
