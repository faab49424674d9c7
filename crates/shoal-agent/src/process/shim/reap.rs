//! Reaping: the task's exit status, then every process it left behind.
//!
//! The shim is a child subreaper, so processes orphaned anywhere below the
//! task are re-parented to it rather than to init. Once the task's main
//! process has exited, the shim kills its process group, its cgroup and any
//! remaining child until it has no child left: a task ends with all of its
//! processes, as a container does.

use crate::process::cgroup::TaskCgroup;
use crate::process::procfs;
use crate::process::status::ExitStatus;
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// Blocks until `task` exits, reaping any orphan that arrives meanwhile.
pub(crate) fn wait_for(task: Pid) -> ExitStatus {
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == task => return ExitStatus::exited(code),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == task => {
                return ExitStatus::killed(signal as i32)
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return ExitStatus::error(format!("waiting for the task process: {e}")),
        }
    }
}

/// SIGKILLs what is left of the task (its process group, its cgroup, and
/// every child of the shim) and reaps it all. Gives up after `limit`
/// (a process stuck in uninterruptible sleep cannot be hurried).
pub(crate) fn kill_leftovers(group: Pid, cgroup: Option<&TaskCgroup>, limit: Duration) {
    let me = nix::unistd::getpid().as_raw();
    let give_up = Instant::now() + limit;
    loop {
        let _ = kill(Pid::from_raw(-group.as_raw()), Signal::SIGKILL);
        if let Some(cgroup) = cgroup {
            cgroup.kill_all();
        }
        for child in procfs::children_of(me) {
            let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                // ECHILD: nothing of the task is left.
                Err(_) => return,
            }
        }
        if Instant::now() >= give_up {
            eprintln!("shim: task processes still present after {limit:?}; giving up");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
