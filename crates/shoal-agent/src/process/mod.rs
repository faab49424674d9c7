//! The process executor: runs a task as a plain Linux process, supervised by
//! a small per-task shim so that tasks survive an agent restart (the
//! containerd-shim model).
//!
//! ```text
//!  agent ── ProcessExecutor ──launch──▶ shim (setsid, subreaper) ──spawn──▶ task process
//!                │                       │  writes shim.pid, start.json, pid,     (own session and
//!                │                       │  log (stdout+stderr), exit.json        process group,
//!                └──reads / signals──────┴──▶ <state_root>/<task_id>/            optional cgroup)
//! ```
//!
//! The executor never is the task's parent; everything it knows comes from
//! the task directory ([`taskdir`] lists the files) and `/proc`. Stopping a
//! task signals its process group directly (stop signal, then SIGKILL after
//! the grace period); the shim reaps it, kills whatever it left behind and
//! writes `exit.json`.
//!
//! **Agent restarts.** Killing the agent (even with SIGKILL) leaves shims and
//! tasks running. A new [`ProcessExecutor`] on the same state root calls
//! [`ProcessExecutor::list`] and RE-ADOPTS every running task: it reports the
//! same pid, and from then on `wait`, `shutdown`, `logs` and `remove` work on
//! it as if this executor had started it. Nothing is restarted, so there is
//! no orphan and no duplicate. Tasks that exited while no agent watched are
//! reported with their recorded exit status. A shim is recognised by its
//! command line (its last argument is the task directory) and a task process
//! by its start time in `/proc/<pid>/stat`, so a reused pid is never taken for
//! ours. A task whose shim died without writing `exit.json` is killed and
//! reported as exited with an error.
//!
//! Limits go through cgroups when the host has them ([`cgroup`]); when it
//! does not, the task still runs and [`TaskHandle::warnings`] says which
//! limit is not enforced.

pub mod cgroup;
mod error;
mod executor;
mod logfile;
mod logs;
mod procfs;
pub mod shim;
mod spec;
mod status;
pub mod taskdir;

pub use cgroup::CgroupLayout;
pub use error::ExecError;
pub use executor::{AdoptedState, AdoptedTask, ProcessExecutor, TaskHandle};
pub use logfile::{LogLine, OutputStream, MAX_LINE};
pub use logs::LogOptions;
pub use spec::{
    LogConfig, ProcessTaskSpec, ResourceLimits, StopSignal, DEFAULT_LOG_MAX_FILES,
    DEFAULT_LOG_MAX_SIZE, DEFAULT_STOP_GRACE,
};
pub use status::{ExitOutcome, ExitStatus};

/// The shim command for a daemon whose program is `exe`: the `shoal-shim`
/// program beside it when there is one built from the same shim sources
/// (it starts in about half the CPU time of the whole daemon binary, which
/// counts when a node starts hundreds of tasks), else `exe <fallback_arg>`
/// (the daemon's own copy of the shim).
pub async fn shim_command(exe: &std::path::Path, fallback_arg: &str) -> Vec<std::ffi::OsString> {
    let fallback = vec![exe.as_os_str().to_owned(), fallback_arg.into()];
    let Some(sibling) = exe.parent().map(|d| d.join("shoal-shim")) else {
        return fallback;
    };
    if !sibling.is_file() {
        return fallback;
    }
    let probe = tokio::process::Command::new(&sibling)
        .arg("--source")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(std::time::Duration::from_secs(5), probe).await {
        Ok(Ok(out))
            if out.status.success() && out.stdout.trim_ascii() == shim::SOURCE.as_bytes() =>
        {
            vec![sibling.into_os_string()]
        }
        _ => {
            tracing::info!(
                "not using {}: not built from this daemon's shim sources; tasks start through {} {fallback_arg}",
                sibling.display(),
                exe.display()
            );
            fallback
        }
    }
}
