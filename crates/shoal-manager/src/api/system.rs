//! `/_ping`, `/version`, `/info` and the fallbacks.

use super::{ApiError, ApiState, Presence, API_VERSION, MIN_API_VERSION, SHOAL_VERSION};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use shoal_api::NodeRole;

/// `GET|HEAD /_ping`.
pub async fn ping(State(state): State<ApiState>) -> impl IntoResponse {
    let swarm = if state.manager.is_some() {
        "active/manager"
    } else {
        "active/worker"
    };
    (
        [
            (header::CACHE_CONTROL, "no-cache, no-store, must-revalidate"),
            (header::PRAGMA, "no-cache"),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::HeaderName::from_static("swarm"), swarm),
        ],
        "OK",
    )
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `GET /version`.
pub async fn version() -> Json<Value> {
    Json(json!({
        "Platform": {"Name": "shoal"},
        "Components": [{
            "Name": "Engine",
            "Version": SHOAL_VERSION,
            "Details": {
                "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Arch": arch(),
                "Os": "linux", "KernelVersion": kernel_version(), "Experimental": "false",
                "GitCommit": "", "GoVersion": "n/a (Rust)", "BuildTime": ""
            }
        }],
        "Version": SHOAL_VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "n/a (Rust)",
        "Os": "linux",
        "Arch": arch(),
        "KernelVersion": kernel_version(),
        "BuildTime": ""
    }))
}

/// `GET /info`: the engine-level fields the CLI reads and the `Swarm` object.
pub async fn info(State(state): State<ApiState>) -> Json<Value> {
    let local = &state.local;
    let host = local
        .addr
        .rsplit_once(':')
        .map(|(h, _)| h.to_string())
        .unwrap_or_default();
    let swarm = match (state.presence, &state.manager) {
        (Presence::Inactive, _) => json!({
            "NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
            "ControlAvailable": false, "Error": "", "RemoteManagers": null,
        }),
        (Presence::Locked, _) => json!({
            "NodeID": local.node_id, "NodeAddr": host, "LocalNodeState": "locked",
            "ControlAvailable": false, "Error": ApiError::locked().message, "RemoteManagers": null,
        }),
        (Presence::Active, Some(m)) => {
            let (cluster, nodes, managers, remote) = m.store.view(|t| {
                let managers: Vec<Value> = t
                    .nodes
                    .iter()
                    .filter(|n| n.spec.role == NodeRole::Manager)
                    .filter_map(|n| {
                        n.manager_status
                            .as_ref()
                            .map(|s| json!({"NodeID": n.id, "Addr": s.addr}))
                    })
                    .collect();
                (
                    t.cluster.as_ref().map(|c| c.cluster.clone()),
                    t.nodes.len(),
                    managers.len(),
                    managers,
                )
            });
            let cluster = cluster.map(|c| {
                let mut c = super::swarm::present(&c);
                c.join_tokens = Default::default();
                let mut v = serde_json::to_value(&c).unwrap_or(Value::Null);
                if let Some(o) = v.as_object_mut() {
                    o.remove("JoinTokens");
                }
                v
            });
            json!({
                "NodeID": local.node_id, "NodeAddr": host, "LocalNodeState": "active",
                "ControlAvailable": true, "Error": "", "RemoteManagers": remote,
                "Nodes": nodes, "Managers": managers, "Cluster": cluster,
            })
        }
        (Presence::Active, None) => {
            let remote: Vec<Value> = local
                .managers
                .iter()
                .map(|m| json!({"NodeID": m.node_id, "Addr": m.addr}))
                .collect();
            json!({
                "NodeID": local.node_id, "NodeAddr": host, "LocalNodeState": "active",
                "ControlAvailable": false, "Error": "", "RemoteManagers": remote,
            })
        }
    };
    let mut out = json!({
        "ID": local.node_id,
        "Name": local.hostname,
        "ServerVersion": SHOAL_VERSION,
        "OSType": "linux",
        "OperatingSystem": "shoal",
        "Architecture": std::env::consts::ARCH,
        "KernelVersion": kernel_version(),
        "NCPU": local.ncpu,
        "MemTotal": local.mem_total,
        "Containers": 0, "ContainersRunning": 0, "ContainersPaused": 0, "ContainersStopped": 0, "Images": 0,
        "Driver": "", "Labels": [], "ExperimentalBuild": false,
        "Swarm": swarm,
    });
    // The engine-level facts (containers, images, storage, runtimes) are
    // this node's Docker Engine's, when it has one.
    if let Some(Value::Object(engine)) =
        super::engine::get_json("/info", std::time::Duration::from_secs(2)).await
    {
        const FROM_ENGINE: &[&str] = &[
            "Containers",
            "ContainersRunning",
            "ContainersPaused",
            "ContainersStopped",
            "Images",
            "Driver",
            "DriverStatus",
            "Plugins",
            "MemoryLimit",
            "SwapLimit",
            "CpuCfsPeriod",
            "CpuCfsQuota",
            "CPUShares",
            "CPUSet",
            "PidsLimit",
            "IPv4Forwarding",
            "LoggingDriver",
            "CgroupDriver",
            "CgroupVersion",
            "DockerRootDir",
            "Runtimes",
            "DefaultRuntime",
            "InitBinary",
            "ContainerdCommit",
            "RuncCommit",
            "InitCommit",
            "SecurityOptions",
            "IndexServerAddress",
            "RegistryConfig",
            "Isolation",
            "LiveRestoreEnabled",
            "OperatingSystem",
            "OSVersion",
        ];
        if let Some(o) = out.as_object_mut() {
            for k in FROM_ENGINE {
                if let Some(v) = engine.get(*k) {
                    o.insert((*k).to_string(), v.clone());
                }
            }
        }
    }
    Json(out)
}

/// Unknown paths.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("page not found: {}", uri.path()))
}

/// A `/v1.NN/` prefix outside the supported range.
pub async fn bad_version(Path(v): Path<String>) -> ApiError {
    let too_new = super::parse_version(&v) > super::parse_version(API_VERSION);
    if too_new {
        ApiError::bad_request(format!(
            "client version {v} is too new. Maximum supported API version is {API_VERSION}"
        ))
    } else {
        ApiError::bad_request(format!(
            "client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        ))
    }
}
