//! How a task ended (`exit.json`) and what that means for the task's state.

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// The end of a task, as recorded by its shim in `exit.json`. Exactly one of
/// `code`, `signal` or `error` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code of a process that exited.
    pub code: Option<i32>,
    /// Number of the signal that killed the process.
    pub signal: Option<i32>,
    /// Why the task never ran or was lost (start error, dead shim).
    pub error: Option<String>,
    #[serde(with = "rfc3339")]
    pub finished_at: SystemTime,
}

impl ExitStatus {
    /// A process that exited with `code`.
    pub fn exited(code: i32) -> Self {
        ExitStatus {
            code: Some(code),
            signal: None,
            error: None,
            finished_at: SystemTime::now(),
        }
    }

    /// A process killed by signal number `signal`.
    pub fn killed(signal: i32) -> Self {
        ExitStatus {
            code: None,
            signal: Some(signal),
            error: None,
            finished_at: SystemTime::now(),
        }
    }

    /// A task that could not start or whose end could not be observed.
    pub fn error(message: impl Into<String>) -> Self {
        ExitStatus {
            code: None,
            signal: None,
            error: Some(message.into()),
            finished_at: SystemTime::now(),
        }
    }

    /// The task state this ends in, with the message Docker Swarm shows.
    pub fn outcome(&self) -> ExitOutcome {
        match (self.code, self.signal, &self.error) {
            (_, _, Some(error)) => ExitOutcome::Failed(error.clone()),
            (Some(0), _, _) => ExitOutcome::Complete,
            (Some(code), _, _) => ExitOutcome::Failed(format!("task: non-zero exit ({code})")),
            (None, Some(signal), _) => {
                ExitOutcome::Failed(format!("task: killed by signal {signal}"))
            }
            (None, None, None) => ExitOutcome::Failed("task: exit status unknown".into()),
        }
    }
}

/// The terminal task state an exit maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitOutcome {
    /// Exit code 0: the task is `complete`.
    Complete,
    /// The task is `failed`; the text goes into the task status' `Err`.
    Failed(String),
}

/// `SystemTime` as RFC 3339 with nanoseconds, UTC (`2026-01-02T03:04:05.123456789Z`).
pub(crate) mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_nanos(*t).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_signals_map_to_swarm_messages() {
        assert_eq!(ExitStatus::exited(0).outcome(), ExitOutcome::Complete);
        assert_eq!(
            ExitStatus::exited(3).outcome(),
            ExitOutcome::Failed("task: non-zero exit (3)".into())
        );
        assert_eq!(
            ExitStatus::killed(9).outcome(),
            ExitOutcome::Failed("task: killed by signal 9".into())
        );
        assert_eq!(
            ExitStatus::error("exec: \"x\": executable file not found in $PATH").outcome(),
            ExitOutcome::Failed("exec: \"x\": executable file not found in $PATH".into())
        );
    }

    #[test]
    fn exit_status_json_keeps_nanoseconds() {
        let status = ExitStatus::killed(15);
        let text = serde_json::to_string(&status).unwrap();
        assert!(text.contains(r#""signal":15"#), "{text}");
        let back: ExitStatus = serde_json::from_str(&text).unwrap();
        assert_eq!(back, status);
    }
}
