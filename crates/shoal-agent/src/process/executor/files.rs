//! What the executor reads from a task directory and `/proc`, and the one
//! thing it does to a task's processes directly: signal their group.

use crate::process::error::ExecError;
use crate::process::procfs;
use crate::process::spec::ProcessTaskSpec;
use crate::process::status::ExitStatus;
use crate::process::taskdir::{read_json, read_pid, write_json_atomic, StartRecord, TaskDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io;

/// Sends `signal` to the task's process group, unless the pid no longer
/// belongs to the task (checked by start time: pids get reused).
pub(super) fn signal_group(record: &StartRecord, signal: Signal) {
    if !procfs::is_same_process(record.pid, record.pid_start_ticks) {
        return;
    }
    if let Err(e) = kill(Pid::from_raw(-record.pid), signal) {
        if e != nix::errno::Errno::ESRCH {
            tracing::warn!(pid = record.pid, %signal, error = %e, "signalling task failed");
        }
    }
}

/// Whether the shim recorded in `shim.pid` is alive and really ours: its
/// last argument is the canonical path of this task directory.
pub(super) fn shim_alive(dir: &TaskDir) -> bool {
    let canonical = std::fs::canonicalize(dir.path()).unwrap_or_else(|_| dir.path().into());
    match read_pid(&dir.shim_pid()) {
        Ok(Some(pid)) => procfs::is_shim_for(pid, &canonical),
        _ => false,
    }
}

pub(super) async fn read_exit(dir: &TaskDir) -> Result<Option<ExitStatus>, ExecError> {
    let path = dir.exit();
    blocking(move || read_json(&path))
        .await
        .map_err(|e| ExecError::io("reading exit.json", e))
}

pub(super) async fn read_start(dir: &TaskDir) -> Result<Option<StartRecord>, ExecError> {
    let path = dir.start();
    blocking(move || read_json(&path))
        .await
        .map_err(|e| ExecError::io("reading start.json", e))
}

pub(super) async fn read_spec(dir: &TaskDir) -> Result<ProcessTaskSpec, ExecError> {
    let path = dir.spec();
    blocking(move || read_json(&path))
        .await
        .map_err(|e| ExecError::io("reading spec.json", e))?
        .ok_or_else(|| ExecError::io("reading spec.json", io::ErrorKind::NotFound.into()))
}

/// The last lines of `shim.log`, for error messages.
pub(super) async fn shim_log_tail(dir: &TaskDir) -> String {
    let text = tokio::fs::read_to_string(dir.shim_log())
        .await
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("; ");
    if tail.is_empty() {
        "no output".into()
    } else {
        tail
    }
}

/// Gives up on a task that did not start: kills its shim and whatever it
/// started, and records `message` as the task's exit unless the shim
/// recorded one.
pub(super) async fn abandon_start(dir: &TaskDir, message: &str) {
    if let Ok(Some(shim)) = read_pid(&dir.shim_pid()) {
        if shim_alive(dir) {
            let _ = kill(Pid::from_raw(shim), Signal::SIGKILL);
        }
    }
    if let Ok(Some(record)) = read_start(dir).await {
        signal_group(&record, Signal::SIGKILL);
    }
    if matches!(read_exit(dir).await, Ok(None)) {
        let path = dir.exit();
        let status = ExitStatus::error(message);
        if let Err(e) = blocking(move || write_json_atomic(&path, &status)).await {
            tracing::warn!(dir = %dir.path().display(), error = %e, "recording start failure");
        }
    }
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// A pidfd (Linux ≥ 5.3) for the task's shim while it is alive: it becomes
/// readable when the shim exits, so waiting costs nothing while tasks run.
/// `None` when the shim is not alive (or the kernel has no pidfd).
pub(super) fn shim_exit_fd(
    dir: &TaskDir,
) -> Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd;
    let pid = read_pid(&dir.shim_pid()).ok().flatten()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the syscall returned a fresh file descriptor that we own.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    // The pid file may name a reused pid: only this task's live shim counts
    // (checked after opening, so the fd refers to the process checked).
    if !shim_alive(dir) {
        return None;
    }
    // SAFETY: the AsyncFd owns the fd, which stays open until the AsyncFd
    // (and with it the registration) is dropped.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .ok()
}
