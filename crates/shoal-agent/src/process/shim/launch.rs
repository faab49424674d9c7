//! From spec to running child: the user to run as, the program to exec, the
//! environment and working directory, and what the child does between fork
//! and exec (own session, join the cgroup, drop privileges).
//!
//! Everything that can be checked before forking is, so that a bad spec
//! fails with a message a user can act on (`unable to find user bob`,
//! `exec: "nope": executable file not found in $PATH`) rather than an errno.

use crate::process::spec::ProcessTaskSpec;
use nix::unistd::{Group, Uid, User};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// `PATH` for tasks whose spec has none (Docker's default).
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Who the task runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    pub home: Option<PathBuf>,
}

/// Resolves `name`, `uid`, `name:group` or `uid:gid` against the passwd
/// and group databases. A numeric uid need not exist (its gid is then 0
/// unless given), as in Docker.
pub(crate) fn resolve_user(text: &str) -> Result<Credentials, String> {
    let (user, group) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (text, None),
    };
    let lookup_err = |e: nix::Error| format!("unable to look up user {user}: {e}");
    let (uid, entry) = match user.parse::<u32>() {
        Ok(uid) => (uid, User::from_uid(Uid::from_raw(uid)).map_err(lookup_err)?),
        Err(_) => {
            let entry = User::from_name(user).map_err(lookup_err)?.ok_or_else(|| {
                format!("unable to find user {user}: no matching entries in passwd file")
            })?;
            (entry.uid.as_raw(), Some(entry))
        }
    };
    let gid = match group {
        None => entry.as_ref().map_or(0, |e| e.gid.as_raw()),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => Group::from_name(g)
                .map_err(|e| format!("unable to look up group {g}: {e}"))?
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?
                .gid
                .as_raw(),
        },
    };
    let groups = entry
        .as_ref()
        .and_then(|e| CString::new(e.name.as_str()).ok())
        .and_then(|name| nix::unistd::getgrouplist(&name, gid.into()).ok())
        .map(|gs| gs.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|| vec![gid]);
    Ok(Credentials {
        uid,
        gid,
        groups,
        home: entry.map(|e| e.dir),
    })
}

/// The task's environment: the spec's entries (a later duplicate wins),
/// then the `SHOAL_*` task identity, then `PATH` and `HOME` if still unset.
pub(crate) fn task_env(spec: &ProcessTaskSpec, home: Option<&Path>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: String| match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => env.push((key.to_string(), value)),
    };
    for entry in &spec.env {
        if let Some((k, v)) = entry.split_once('=') {
            set(k, v.to_string());
        }
    }
    set("SHOAL_SERVICE_NAME", spec.service_name.clone());
    set("SHOAL_SERVICE_ID", spec.service_id.clone());
    set("SHOAL_TASK_ID", spec.task_id.clone());
    set("SHOAL_TASK_SLOT", spec.slot.to_string());
    set("SHOAL_NODE_ID", spec.node_id.clone());
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        let home = home.map_or("/".into(), |h| h.display().to_string());
        env.push(("HOME".into(), home));
    }
    env
}

/// Finds the program: a name is looked up in the task's `PATH`; a relative
/// path is taken from the working directory.
pub(crate) fn resolve_command(
    command: &str,
    path_var: &str,
    dir: &Path,
) -> Result<PathBuf, String> {
    if command.contains('/') {
        let path = dir.join(command);
        return match path.metadata() {
            Ok(_) => Ok(path),
            Err(e) => Err(format!("exec: {command:?}: {e}")),
        };
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| dir.join(d).join(command))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| format!("exec: {command:?}: executable file not found in $PATH"))
}

/// Everything needed to start the task, checked.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub program: PathBuf,
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
    pub credentials: Option<Credentials>,
}

pub(crate) fn prepare(spec: &ProcessTaskSpec) -> Result<Prepared, String> {
    let dir = PathBuf::from(spec.dir.as_deref().unwrap_or("/"));
    match dir.metadata() {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "working directory {}: not a directory",
                dir.display()
            ))
        }
        Err(e) => return Err(format!("working directory {}: {e}", dir.display())),
    }
    let credentials = spec.user.as_deref().map(resolve_user).transpose()?;
    let home = match &credentials {
        Some(c) => c.home.clone(),
        None => User::from_uid(Uid::effective())
            .ok()
            .flatten()
            .map(|u| u.dir),
    };
    let env = task_env(spec, home.as_deref());
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let program = resolve_command(&spec.command, path_var, &dir)?;
    Ok(Prepared {
        program,
        env,
        dir,
        credentials,
    })
}

/// Forks and execs the task with stdin from /dev/null and stdout/stderr on
/// pipes. In the child, before exec: a new session (the task's pid is its
/// process group), membership of each cgroup whose `cgroup.procs` is
/// given, then the task's groups and user.
pub(crate) fn spawn(
    spec: &ProcessTaskSpec,
    prepared: &Prepared,
    cgroup_procs: &[File],
) -> Result<Child, String> {
    let mut cmd = Command::new(&prepared.program);
    cmd.arg0(&spec.command)
        .args(&spec.args)
        .env_clear()
        .envs(prepared.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&prepared.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let fds: Vec<RawFd> = cgroup_procs.iter().map(|f| f.as_raw_fd()).collect();
    let credentials = prepared.credentials.clone();
    // SAFETY: the closure runs in the forked child and only makes
    // async-signal-safe system calls on memory allocated before the fork.
    unsafe {
        cmd.pre_exec(move || in_child(&fds, credentials.as_ref()));
    }
    cmd.spawn()
        .map_err(|e| format!("exec: {:?}: {e}", spec.command))
}

fn in_child(cgroup_procs: &[RawFd], credentials: Option<&Credentials>) -> io::Result<()> {
    reset_signal_dispositions();
    // SAFETY: plain system calls with valid arguments.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        // A failed join is not fatal here: the shim checks membership after
        // the spawn and reports the limit as not applied.
        for &fd in cgroup_procs {
            libc::write(fd, b"0".as_ptr().cast(), 1);
        }
        if let Some(c) = credentials {
            if libc::setgroups(c.groups.len(), c.groups.as_ptr()) < 0
                || libc::setgid(c.gid) < 0
                || libc::setuid(c.uid) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Ignored signals survive `exec`: the task would inherit whatever the
/// agent's own parent ignored (`nohup`'s SIGHUP, the SIGPIPE Rust ignores,
/// glibc's internal signals 32 and 33 that `posix_spawn` leaves ignored).
/// Every signal goes back to its default, as a container's init gets it.
fn reset_signal_dispositions() {
    for signal in 1..=64 {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            // SAFETY: resetting a disposition to SIG_DFL has no memory effects.
            unsafe { set_default(signal) };
        }
    }
}

/// The raw system call, because glibc refuses to touch its internal signals.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
unsafe fn set_default(signal: libc::c_int) {
    /// The kernel's `struct sigaction` on these architectures.
    #[repr(C)]
    struct KernelSigaction {
        handler: libc::sighandler_t,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let action = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    libc::syscall(
        libc::SYS_rt_sigaction,
        signal,
        &action as *const KernelSigaction,
        std::ptr::null_mut::<KernelSigaction>(),
        std::mem::size_of::<u64>(),
    );
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn set_default(signal: libc::c_int) {
    libc::signal(signal, libc::SIG_DFL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_by_name_and_number() {
        let root = resolve_user("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(root.home.as_deref(), Some(Path::new("/root")));
        let numeric = resolve_user("4242:4343").unwrap();
        assert_eq!((numeric.uid, numeric.gid), (4242, 4343));
        assert_eq!(numeric.groups, vec![4343]);
        let by_group_name = resolve_user("0:root").unwrap();
        assert_eq!(by_group_name.gid, 0);
    }

    #[test]
    fn unknown_users_and_groups_are_named_in_the_error() {
        assert_eq!(
            resolve_user("no-such-user-x").unwrap_err(),
            "unable to find user no-such-user-x: no matching entries in passwd file"
        );
        assert!(resolve_user("root:no-such-group-x")
            .unwrap_err()
            .contains("unable to find group no-such-group-x"));
    }

    #[test]
    fn environment_has_task_identity_and_defaults() {
        let spec = ProcessTaskSpec {
            task_id: "t1".into(),
            service_id: "s1".into(),
            service_name: "web".into(),
            slot: 3,
            node_id: "n1".into(),
            env: vec!["A=1".into(), "B=x=y".into(), "A=2".into()],
            ..Default::default()
        };
        let env = task_env(&spec, Some(Path::new("/home/u")));
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("A"), Some("2"));
        assert_eq!(get("B"), Some("x=y"));
        assert_eq!(get("SHOAL_TASK_ID"), Some("t1"));
        assert_eq!(get("SHOAL_SERVICE_ID"), Some("s1"));
        assert_eq!(get("SHOAL_SERVICE_NAME"), Some("web"));
        assert_eq!(get("SHOAL_TASK_SLOT"), Some("3"));
        assert_eq!(get("SHOAL_NODE_ID"), Some("n1"));
        assert_eq!(get("PATH"), Some(DEFAULT_PATH));
        assert_eq!(get("HOME"), Some("/home/u"));

        let own_path = ProcessTaskSpec {
            env: vec!["PATH=/opt/bin".into()],
            ..spec
        };
        let env = task_env(&own_path, None);
        assert_eq!(env.iter().filter(|(k, _)| k == "PATH").count(), 1);
        assert!(env.contains(&("PATH".into(), "/opt/bin".into())));
    }

    #[test]
    fn commands_are_found_in_path_or_reported_clearly() {
        let root = Path::new("/");
        assert!(resolve_command("sh", DEFAULT_PATH, root)
            .unwrap()
            .ends_with("sh"));
        assert_eq!(
            resolve_command("no-such-cmd-x", DEFAULT_PATH, root).unwrap_err(),
            r#"exec: "no-such-cmd-x": executable file not found in $PATH"#
        );
        assert!(resolve_command("/no/such/file", DEFAULT_PATH, root)
            .unwrap_err()
            .starts_with(r#"exec: "/no/such/file": No such file"#));
    }

    #[test]
    fn a_missing_working_directory_fails_preparation() {
        let spec = ProcessTaskSpec {
            task_id: "t".into(),
            command: "true".into(),
            dir: Some("/no/such/dir".into()),
            ..Default::default()
        };
        let err = prepare(&spec).unwrap_err();
        assert!(err.starts_with("working directory /no/such/dir: "), "{err}");
    }
}
