//! What the docker executor runs: one task as one container. The agent
//! converts the API's `ContainerSpec` into a [`ContainerTaskSpec`]; this
//! module turns that into the Engine API's container create body.

use crate::process::StopSignal;
use bollard::models::{
    ContainerCreateBody, HealthConfig, HostConfig, Mount, MountType, ResourcesUlimits,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Docker's default grace period between the stop signal and SIGKILL.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// Label every container started by shoal carries; `list` adopts by it.
pub const LABEL_SHOAL_TASK: &str = "com.shoal.task";
pub const LABEL_SERVICE_ID: &str = "com.docker.swarm.service.id";
pub const LABEL_SERVICE_NAME: &str = "com.docker.swarm.service.name";
/// Present (empty) on every Swarm task container.
pub const LABEL_TASK: &str = "com.docker.swarm.task";
pub const LABEL_TASK_ID: &str = "com.docker.swarm.task.id";
pub const LABEL_TASK_NAME: &str = "com.docker.swarm.task.name";
pub const LABEL_NODE_ID: &str = "com.docker.swarm.node.id";

/// The labels the executor sets itself; a spec's own labels never override them.
pub const RESERVED_LABELS: [&str; 7] = [
    LABEL_SHOAL_TASK,
    LABEL_SERVICE_ID,
    LABEL_SERVICE_NAME,
    LABEL_TASK,
    LABEL_TASK_ID,
    LABEL_TASK_NAME,
    LABEL_NODE_ID,
];

/// One task to run as a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerTaskSpec {
    pub task_id: String,
    /// The container's name, `<service>.<slot>.<task_id>` as Swarm names
    /// them; empty means [`ContainerTaskSpec::container_name`] derives it.
    pub task_name: String,
    pub service_id: String,
    pub service_name: String,
    /// Replica slot; 0 for a global service's task.
    pub slot: u64,
    pub node_id: String,
    /// Image reference; it must exist in the engine or be pullable.
    pub image: String,
    /// Entrypoint override (empty: the image's).
    pub command: Vec<String>,
    /// Arguments (empty: the image's `Cmd`, unless `command` is set).
    pub args: Vec<String>,
    /// `KEY=VALUE` entries, added to the image's environment.
    pub env: Vec<String>,
    /// Working directory (default: the image's).
    pub dir: Option<String>,
    /// `name`, `uid`, `name:group` or `uid:gid` (default: the image's).
    pub user: Option<String>,
    pub hostname: Option<String>,
    /// Container labels (`ContainerSpec.Labels`).
    pub labels: BTreeMap<String, String>,
    pub mounts: Vec<MountSpec>,
    /// `SIGTERM`, `TERM`, `15`... (default: the image's, else SIGTERM).
    pub stop_signal: Option<String>,
    /// How long `shutdown` waits after the stop signal before SIGKILL.
    #[serde(with = "duration_text")]
    pub stop_grace: Duration,
    pub healthcheck: Option<HealthcheckSpec>,
    /// Run an init process as PID 1 (default: the engine's setting).
    pub init: Option<bool>,
    /// Mount the root filesystem read-only.
    pub read_only: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub sysctls: BTreeMap<String, String>,
    pub ulimits: Vec<UlimitSpec>,
    pub limits: ContainerLimits,
    pub reservations: ContainerReservations,
    /// `HostConfig.NetworkMode` (`none`, `host`, `bridge`, a network name);
    /// default: the engine's default network.
    pub network_mode: Option<String>,
}

impl Default for ContainerTaskSpec {
    fn default() -> Self {
        ContainerTaskSpec {
            task_id: String::new(),
            task_name: String::new(),
            service_id: String::new(),
            service_name: String::new(),
            slot: 0,
            node_id: String::new(),
            image: String::new(),
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            user: None,
            hostname: None,
            labels: BTreeMap::new(),
            mounts: Vec::new(),
            stop_signal: None,
            stop_grace: DEFAULT_STOP_GRACE,
            healthcheck: None,
            init: None,
            read_only: false,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            sysctls: BTreeMap::new(),
            ulimits: Vec::new(),
            limits: ContainerLimits::default(),
            reservations: ContainerReservations::default(),
            network_mode: None,
        }
    }
}

/// What kind of mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

/// One mount (`ContainerSpec.Mounts[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// Host path (bind), volume name (volume; empty: anonymous), empty (tmpfs).
    #[serde(default)]
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

/// `ContainerSpec.Healthcheck`. Zero durations and retries mean "the
/// image's or the engine's default", as in Docker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthcheckSpec {
    /// `["NONE"]`, `["CMD", prog, args...]` or `["CMD-SHELL", "command"]`;
    /// empty: inherit the image's test.
    pub test: Vec<String>,
    #[serde(with = "duration_text")]
    pub interval: Duration,
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    pub retries: u32,
    #[serde(with = "duration_text")]
    pub start_period: Duration,
}

/// One `ulimit` (`nofile`, `nproc`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UlimitSpec {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// Hard limits; 0 means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerLimits {
    /// CPU in units of 1e-9 CPUs (`--limit-cpu 0.5` is 500_000_000).
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    /// Maximum number of processes (`--limit-pids`).
    pub pids: i64,
}

/// Soft reservations; 0 means none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerReservations {
    /// `HostConfig.MemoryReservation`.
    pub memory_bytes: i64,
}

impl ContainerTaskSpec {
    /// The container's name: `task_name`, else `<service>.<slot>.<task_id>`
    /// (`<service>.<node_id>.<task_id>` for slot 0, i.e. global services).
    pub fn container_name(&self) -> String {
        if !self.task_name.is_empty() {
            return self.task_name.clone();
        }
        if self.slot == 0 && !self.node_id.is_empty() {
            format!("{}.{}.{}", self.service_name, self.node_id, self.task_id)
        } else {
            format!("{}.{}.{}", self.service_name, self.slot, self.task_id)
        }
    }

    /// Checks what can be checked without the engine.
    pub fn validate(&self) -> Result<(), String> {
        validate_task_id(&self.task_id)?;
        let name = self.container_name();
        let name_ok = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !name_ok {
            return Err(format!(
                "container name {name:?} must start with [A-Za-z0-9] and contain only [A-Za-z0-9_.-]"
            ));
        }
        if self.image.trim().is_empty() {
            return Err("no image given".into());
        }
        if let Some(bad) = self
            .env
            .iter()
            .find(|e| !e.contains('=') || e.starts_with('='))
        {
            return Err(format!("environment entry {bad:?} is not KEY=VALUE"));
        }
        if let Some(signal) = &self.stop_signal {
            signal.parse::<StopSignal>()?;
        }
        for m in &self.mounts {
            if !m.target.starts_with('/') {
                return Err(format!(
                    "mount target {:?} is not an absolute path",
                    m.target
                ));
            }
            match m.kind {
                MountKind::Bind if !m.source.starts_with('/') => {
                    return Err(format!(
                        "bind mount source {:?} is not an absolute path",
                        m.source
                    ));
                }
                MountKind::Tmpfs if !m.source.is_empty() => {
                    return Err(format!(
                        "tmpfs mount on {:?} cannot have a source",
                        m.target
                    ));
                }
                _ => {}
            }
        }
        for u in &self.ulimits {
            if u.name.is_empty() || u.soft < 0 || u.hard < 0 || u.soft > u.hard {
                return Err(format!(
                    "invalid ulimit {}={}:{} (need a name and 0 <= soft <= hard)",
                    u.name, u.soft, u.hard
                ));
            }
        }
        let l = &self.limits;
        if l.nano_cpus < 0 || l.memory_bytes < 0 || l.pids < 0 || self.reservations.memory_bytes < 0
        {
            return Err("resource limits and reservations must not be negative".into());
        }
        if let Some(h) = &self.healthcheck {
            if let Some(kind) = h.test.first() {
                if !matches!(kind.as_str(), "NONE" | "CMD" | "CMD-SHELL") {
                    return Err(format!(
                        "healthcheck test must start with NONE, CMD or CMD-SHELL, not {kind:?}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The container's labels: the spec's, then Swarm's and shoal's (which win).
    pub fn container_labels(&self) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in [
            (LABEL_SHOAL_TASK, "1".to_string()),
            (LABEL_SERVICE_ID, self.service_id.clone()),
            (LABEL_SERVICE_NAME, self.service_name.clone()),
            (LABEL_TASK, String::new()),
            (LABEL_TASK_ID, self.task_id.clone()),
            (LABEL_TASK_NAME, self.container_name()),
            (LABEL_NODE_ID, self.node_id.clone()),
        ] {
            labels.insert(k.to_string(), v);
        }
        labels
    }

    /// The Engine API's create body for this task.
    pub fn to_create_body(&self) -> ContainerCreateBody {
        let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let stop_signal = self
            .stop_signal
            .as_deref()
            .and_then(|s| s.parse::<StopSignal>().ok())
            .map(|s| s.to_string());
        let mounts: Vec<Mount> = self
            .mounts
            .iter()
            .map(|m| Mount {
                typ: Some(match m.kind {
                    MountKind::Bind => MountType::BIND,
                    MountKind::Volume => MountType::VOLUME,
                    MountKind::Tmpfs => MountType::TMPFS,
                }),
                source: (!m.source.is_empty()).then(|| m.source.clone()),
                target: Some(m.target.clone()),
                read_only: Some(m.read_only),
                ..Default::default()
            })
            .collect();
        let positive = |n: i64| (n > 0).then_some(n);
        let host_config = HostConfig {
            mounts: (!mounts.is_empty()).then_some(mounts),
            init: self.init,
            readonly_rootfs: self.read_only.then_some(true),
            cap_add: non_empty(&self.cap_add),
            cap_drop: non_empty(&self.cap_drop),
            sysctls: (!self.sysctls.is_empty()).then(|| {
                self.sysctls
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }),
            ulimits: (!self.ulimits.is_empty()).then(|| {
                self.ulimits
                    .iter()
                    .map(|u| ResourcesUlimits {
                        name: Some(u.name.clone()),
                        soft: Some(u.soft),
                        hard: Some(u.hard),
                    })
                    .collect()
            }),
            nano_cpus: positive(self.limits.nano_cpus),
            memory: positive(self.limits.memory_bytes),
            pids_limit: positive(self.limits.pids),
            memory_reservation: positive(self.reservations.memory_bytes),
            network_mode: self.network_mode.clone(),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            entrypoint: non_empty(&self.command),
            cmd: non_empty(&self.args),
            env: non_empty(&self.env),
            working_dir: self.dir.clone(),
            user: self.user.clone(),
            hostname: self.hostname.clone(),
            labels: Some(self.container_labels()),
            stop_signal,
            stop_timeout: Some(grace_seconds(self.stop_grace)),
            healthcheck: self.healthcheck.as_ref().map(|h| HealthConfig {
                test: non_empty(&h.test),
                interval: nanos(h.interval),
                timeout: nanos(h.timeout),
                retries: (h.retries > 0).then_some(i64::from(h.retries)),
                start_period: nanos(h.start_period),
                start_interval: None,
            }),
            tty: Some(false),
            open_stdin: Some(false),
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

/// A grace period as the whole seconds the Engine API takes, rounded up
/// so that a sub-second grace still gives the task a chance to stop.
pub(crate) fn grace_seconds(grace: Duration) -> i64 {
    let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn nanos(d: Duration) -> Option<i64> {
    (!d.is_zero()).then(|| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Task IDs become part of container names: plain names only.
pub(crate) fn validate_task_id(id: &str) -> Result<(), String> {
    let plain = !id.is_empty()
        && id.len() <= 128
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if plain {
        Ok(())
    } else {
        Err(format!(
            "task ID {id:?} must be 1-128 characters of [A-Za-z0-9_.-], starting with a letter or digit"
        ))
    }
}

/// Durations as human text (`10s`, `1m 30s`).
mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerTaskSpec {
        ContainerTaskSpec {
            task_id: "abc123".into(),
            service_id: "svc1".into(),
            service_name: "web".into(),
            slot: 2,
            node_id: "node1".into(),
            image: "local/busybox:1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn container_names_follow_swarm() {
        assert_eq!(spec().container_name(), "web.2.abc123");
        let global = ContainerTaskSpec { slot: 0, ..spec() };
        assert_eq!(global.container_name(), "web.node1.abc123");
        let named = ContainerTaskSpec {
            task_name: "x.1.y".into(),
            ..spec()
        };
        assert_eq!(named.container_name(), "x.1.y");
    }

    #[test]
    fn minimal_json_gets_docker_defaults() {
        let s: ContainerTaskSpec =
            serde_json::from_str(r#"{"task_id":"t","service_name":"web","image":"busybox"}"#)
                .unwrap();
        assert_eq!(s.stop_grace, DEFAULT_STOP_GRACE);
        assert!(s.validate().is_ok(), "{:?}", s.validate());
        let back: ContainerTaskSpec =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn mounts_serialize_with_a_type_field() {
        let m: MountSpec = serde_json::from_str(r#"{"type":"tmpfs","target":"/scratch"}"#).unwrap();
        assert_eq!(m.kind, MountKind::Tmpfs);
        assert!(!m.read_only);
        assert!(serde_json::to_string(&m)
            .unwrap()
            .contains(r#""type":"tmpfs""#));
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(spec().validate().is_ok());
        let cases: Vec<(ContainerTaskSpec, &str)> = vec![
            (
                ContainerTaskSpec {
                    task_id: "a/b".into(),
                    ..spec()
                },
                "task ID",
            ),
            (
                ContainerTaskSpec {
                    image: " ".into(),
                    ..spec()
                },
                "image",
            ),
            (
                ContainerTaskSpec {
                    env: vec!["NOEQ".into()],
                    ..spec()
                },
                "KEY=VALUE",
            ),
            (
                ContainerTaskSpec {
                    stop_signal: Some("SIGNOPE".into()),
                    ..spec()
                },
                "signal",
            ),
            (
                ContainerTaskSpec {
                    mounts: vec![MountSpec {
                        kind: MountKind::Bind,
                        source: "rel".into(),
                        target: "/x".into(),
                        read_only: false,
                    }],
                    ..spec()
                },
                "bind mount source",
            ),
            (
                ContainerTaskSpec {
                    limits: ContainerLimits {
                        memory_bytes: -1,
                        ..Default::default()
                    },
                    ..spec()
                },
                "negative",
            ),
            (
                ContainerTaskSpec {
                    service_name: "bad name".into(),
                    ..spec()
                },
                "container name",
            ),
        ];
        for (s, want) in cases {
            let err = s.validate().unwrap_err();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }

    #[test]
    fn create_body_carries_the_spec() {
        let mut s = spec();
        s.command = vec!["sh".into(), "-c".into()];
        s.args = vec!["echo hi".into()];
        s.env = vec!["A=1".into()];
        s.labels.insert("team".into(), "blue".into());
        // A spec label cannot spoof the executor's own.
        s.labels.insert(LABEL_TASK_ID.into(), "spoofed".into());
        s.stop_signal = Some("int".into());
        s.stop_grace = Duration::from_millis(1500);
        s.read_only = true;
        s.cap_drop = vec!["ALL".into()];
        s.mounts = vec![MountSpec {
            kind: MountKind::Tmpfs,
            source: String::new(),
            target: "/scratch".into(),
            read_only: false,
        }];
        s.limits = ContainerLimits {
            nano_cpus: 500_000_000,
            memory_bytes: 64 << 20,
            pids: 50,
        };
        s.reservations.memory_bytes = 32 << 20;
        s.healthcheck = Some(HealthcheckSpec {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: Duration::from_millis(200),
            ..Default::default()
        });
        let body = s.to_create_body();
        assert_eq!(body.entrypoint.as_deref(), Some(&s.command[..]));
        assert_eq!(body.cmd.as_deref(), Some(&s.args[..]));
        assert_eq!(body.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(body.stop_timeout, Some(2));
        let labels = body.labels.unwrap();
        assert_eq!(labels["team"], "blue");
        assert_eq!(labels[LABEL_TASK_ID], "abc123");
        assert_eq!(labels[LABEL_TASK_NAME], "web.2.abc123");
        assert_eq!(labels[LABEL_SHOAL_TASK], "1");
        let health = body.healthcheck.unwrap();
        assert_eq!(health.interval, Some(200_000_000));
        assert_eq!(health.timeout, None);
        let hc = body.host_config.unwrap();
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(hc.memory, Some(64 << 20));
        assert_eq!(hc.memory_reservation, Some(32 << 20));
        assert_eq!(hc.nano_cpus, Some(500_000_000));
        assert_eq!(hc.pids_limit, Some(50));
        let mount = &hc.mounts.unwrap()[0];
        assert_eq!(mount.typ, Some(MountType::TMPFS));
        assert_eq!(mount.source, None);
    }

    #[test]
    fn unset_fields_leave_image_defaults_alone() {
        let body = spec().to_create_body();
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.cmd, None);
        assert_eq!(body.env, None);
        assert_eq!(body.stop_signal, None);
        assert_eq!(body.healthcheck, None);
        let hc = body.host_config.unwrap();
        assert_eq!(hc.memory, None);
        assert_eq!(hc.mounts, None);
    }

    #[test]
    fn grace_rounds_up_to_whole_seconds() {
        assert_eq!(grace_seconds(Duration::ZERO), 0);
        assert_eq!(grace_seconds(Duration::from_millis(1)), 1);
        assert_eq!(grace_seconds(Duration::from_secs(10)), 10);
        assert_eq!(grace_seconds(Duration::from_millis(10_001)), 11);
    }
}
