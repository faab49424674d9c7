//! What the process executor runs: a task's command, environment, user,
//! resource limits, stop behaviour and log rotation. The agent converts the
//! API's task spec into this; the shim reads it back from `spec.json`.

use nix::sys::signal::Signal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Docker's default grace period between the stop signal and SIGKILL.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
/// Default size of one log file before it is rotated (Docker's json-file `max-size`).
pub const DEFAULT_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// Default number of log files kept, the live one included (`max-file`).
pub const DEFAULT_LOG_MAX_FILES: u32 = 3;

/// One task to run as a plain process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessTaskSpec {
    pub task_id: String,
    pub service_id: String,
    pub service_name: String,
    /// Replica slot; 0 for a global service's task.
    #[serde(default)]
    pub slot: u64,
    pub node_id: String,
    /// Program to run: a path, or a name looked up in the task's `PATH`.
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// `KEY=VALUE` entries; the task sees only these plus the `SHOAL_*` variables.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory (default `/`).
    #[serde(default)]
    pub dir: Option<String>,
    /// `name`, `uid`, `name:group` or `uid:gid` (default: the agent's user).
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub limits: ResourceLimits,
    /// How long to wait after the stop signal before SIGKILL.
    #[serde(default = "default_stop_grace", with = "duration_text")]
    pub stop_grace: Duration,
    #[serde(default)]
    pub stop_signal: StopSignal,
    #[serde(default)]
    pub log: LogConfig,
}

impl Default for ProcessTaskSpec {
    fn default() -> Self {
        ProcessTaskSpec {
            task_id: String::new(),
            service_id: String::new(),
            service_name: String::new(),
            slot: 0,
            node_id: String::new(),
            command: String::new(),
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            user: None,
            limits: ResourceLimits::default(),
            stop_grace: DEFAULT_STOP_GRACE,
            stop_signal: StopSignal::default(),
            log: LogConfig::default(),
        }
    }
}

impl ProcessTaskSpec {
    /// Checks what can be checked without starting anything. A task ID
    /// becomes a directory and a cgroup name, so it must be a plain name.
    pub fn validate(&self) -> Result<(), String> {
        validate_task_id(&self.task_id)?;
        if self.command.is_empty() {
            return Err("no command given".into());
        }
        if let Some(bad) = self
            .env
            .iter()
            .find(|e| !e.contains('=') || e.starts_with('='))
        {
            return Err(format!("environment entry {bad:?} is not KEY=VALUE"));
        }
        if self.limits.nano_cpus < 0 || self.limits.memory_bytes < 0 {
            return Err("resource limits must not be negative".into());
        }
        if self.log.max_size == 0 || self.log.max_files == 0 {
            return Err("log max_size and max_files must be at least 1".into());
        }
        Ok(())
    }
}

pub(crate) fn validate_task_id(id: &str) -> Result<(), String> {
    let plain = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if plain {
        Ok(())
    } else {
        Err(format!(
            "task ID {id:?} must be 1-128 characters of [A-Za-z0-9_.-], not starting with '.'"
        ))
    }
}

fn default_stop_grace() -> Duration {
    DEFAULT_STOP_GRACE
}

/// CPU and memory caps; 0 means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// CPU in units of 1e-9 CPUs (`--limit-cpu 0.5` is 500_000_000).
    #[serde(default)]
    pub nano_cpus: i64,
    #[serde(default)]
    pub memory_bytes: i64,
}

impl ResourceLimits {
    /// Whether no limit is requested at all.
    pub fn is_none(&self) -> bool {
        self.nano_cpus <= 0 && self.memory_bytes <= 0
    }
}

/// Size-based rotation of the task's log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// Bytes written to one file before it is rotated.
    #[serde(default = "default_log_max_size")]
    pub max_size: u64,
    /// Files kept: `log`, `log.1`, ... `log.<max_files - 1>`.
    #[serde(default = "default_log_max_files")]
    pub max_files: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_size: DEFAULT_LOG_MAX_SIZE,
            max_files: DEFAULT_LOG_MAX_FILES,
        }
    }
}

fn default_log_max_size() -> u64 {
    DEFAULT_LOG_MAX_SIZE
}

fn default_log_max_files() -> u32 {
    DEFAULT_LOG_MAX_FILES
}

/// The signal that asks a task to stop; written and parsed like Docker's
/// `StopSignal` (`SIGTERM`, `TERM`, `15`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSignal(pub Signal);

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal(Signal::SIGTERM)
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl FromStr for StopSignal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<i32>() {
            return Signal::try_from(n)
                .map(StopSignal)
                .map_err(|_| format!("invalid signal number {n}"));
        }
        let upper = s.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        Signal::from_str(&name)
            .map(StopSignal)
            .map_err(|_| format!("invalid signal {s:?}"))
    }
}

impl Serialize for StopSignal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for StopSignal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Durations as human text (`10s`, `1m 30s`) in `spec.json`.
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

    #[test]
    fn stop_signal_accepts_docker_spellings() {
        for (text, want) in [
            ("SIGTERM", Signal::SIGTERM),
            ("TERM", Signal::SIGTERM),
            ("sigint", Signal::SIGINT),
            ("quit", Signal::SIGQUIT),
            ("9", Signal::SIGKILL),
        ] {
            assert_eq!(
                text.parse::<StopSignal>().unwrap(),
                StopSignal(want),
                "{text}"
            );
        }
        assert!("SIGNOPE".parse::<StopSignal>().is_err());
        assert!("999".parse::<StopSignal>().is_err());
    }

    #[test]
    fn minimal_spec_json_gets_docker_defaults() {
        let spec: ProcessTaskSpec = serde_json::from_str(
            r#"{"task_id":"t1","service_id":"s","service_name":"web","node_id":"n","command":"sleep"}"#,
        )
        .unwrap();
        assert_eq!(spec.stop_grace, Duration::from_secs(10));
        assert_eq!(spec.stop_signal, StopSignal(Signal::SIGTERM));
        assert_eq!(spec.log, LogConfig::default());
        assert!(spec.limits.is_none());
        assert_eq!(spec.slot, 0);
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = ProcessTaskSpec {
            task_id: "abc".into(),
            command: "sh".into(),
            args: vec!["-c".into(), "exit 0".into()],
            env: vec!["A=1".into()],
            stop_grace: Duration::from_millis(1500),
            stop_signal: StopSignal(Signal::SIGINT),
            limits: ResourceLimits {
                nano_cpus: 500_000_000,
                memory_bytes: 1 << 24,
            },
            ..Default::default()
        };
        let text = serde_json::to_string(&spec).unwrap();
        assert!(text.contains(r#""stop_signal":"SIGINT""#), "{text}");
        let back: ProcessTaskSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn task_ids_must_be_plain_names() {
        for ok in ["abc", "x1-y_2.z"] {
            assert!(validate_task_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", ".hidden", "a b"] {
            assert!(validate_task_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spec_validation_names_the_problem() {
        let base = ProcessTaskSpec {
            task_id: "t".into(),
            command: "true".into(),
            ..Default::default()
        };
        assert!(base.validate().is_ok());
        let no_cmd = ProcessTaskSpec {
            command: String::new(),
            ..base.clone()
        };
        assert!(no_cmd.validate().unwrap_err().contains("command"));
        let bad_env = ProcessTaskSpec {
            env: vec!["NOEQUALS".into()],
            ..base
        };
        assert!(bad_env.validate().unwrap_err().contains("NOEQUALS"));
    }
}
