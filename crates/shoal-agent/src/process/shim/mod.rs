//! The per-task shim: a small process that owns one task process for its
//! whole life, so that the task outlives the agent (the containerd-shim model).
//!
//! Started as `<shim command> <task dir>` (the task dir is always the last
//! argument; it also identifies a live shim in `/proc/<pid>/cmdline`):
//!
//! 1. forks and lets the launcher exit, then `setsid`s: the agent is not its
//!    parent and nothing sent to the agent's session or group reaches it;
//! 2. reads `spec.json`, writes `shim.pid`, sets up the task's cgroup;
//! 3. spawns the task (module `launch`), writes `start.json` and `pid`;
//! 4. copies stdout and stderr, line by line, into the rotating `log`;
//! 5. reaps the task, kills and reaps whatever it left behind (module `reap`),
//!    removes the cgroup, and writes `exit.json` last.
//!
//! If the task cannot start, `exit.json` carries the reason in `error`.

mod launch;
mod reap;

use crate::process::cgroup::{CgroupLayout, TaskCgroup};
use crate::process::logfile::{LineSplitter, LogWriter, OutputStream};
use crate::process::procfs;
use crate::process::spec::ProcessTaskSpec;
use crate::process::status::ExitStatus;
use crate::process::taskdir::{read_json, write_atomic, write_json_atomic, StartRecord, TaskDir};
use nix::unistd::{fork, setsid, ForkResult, Pid};
use std::io::Read;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A fingerprint of the shim's sources (see `build.rs`): `shoal-shim
/// --source` prints it.
pub const SOURCE: &str = env!("SHOAL_SHIM_SOURCE");

/// How long to hunt down a task's leftover processes before giving up.
const LEFTOVER_LIMIT: Duration = Duration::from_secs(5);
/// How long to wait for the output pipes to drain once no process is left.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Entry point of a shim process: runs the task whose directory is the last
/// command-line argument, then exits. Call it first thing in `main`, before
/// any thread or async runtime exists (it forks).
pub fn main() -> ! {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new("--source")) {
        println!("{SOURCE}");
        std::process::exit(0);
    }
    let code = match std::env::args_os().nth(1).and(std::env::args_os().last()) {
        Some(dir) => run(PathBuf::from(dir)),
        None => {
            eprintln!("usage: shoal-shim <task-dir>");
            2
        }
    };
    std::process::exit(code)
}

/// The write end of the pipe the launcher waits on (-1: none).
static STARTED_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Tells the launcher the task started (its `start.json` and `pid` exist),
/// so the agent finds them at once instead of polling for them.
fn signal_started() {
    let fd = STARTED_FD.swap(-1, std::sync::atomic::Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: fd is the pipe's write end, owned by this process; it is
        // written once and closed once.
        unsafe {
            libc::write(fd, b"s".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
}

fn run(dir: PathBuf) -> i32 {
    // The launcher exits once the task has started (a byte on the pipe) or
    // the shim has given up (end of file: exit.json holds why).
    let pipe = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok();
    // SAFETY: no other thread exists yet (see `main`'s contract).
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => {
            if let Some((read, write)) = pipe {
                drop(write);
                let mut byte = [0u8; 1];
                let _ = std::fs::File::from(read).read(&mut byte);
            }
            return 0;
        }
        Ok(ForkResult::Child) => {}
        Err(e) => {
            eprintln!("shim: fork: {e}");
            return 1;
        }
    }
    if let Some((read, write)) = pipe {
        drop(read);
        use std::os::fd::IntoRawFd;
        STARTED_FD.store(write.into_raw_fd(), std::sync::atomic::Ordering::SeqCst);
    }
    if let Err(e) = setsid() {
        eprintln!("shim: setsid: {e}");
    }
    // Hold no directory of the agent's open (paths here are absolute).
    let _ = std::env::set_current_dir("/");
    let dir = TaskDir::new(dir);
    let status = supervise(&dir);
    if let Err(e) = write_json_atomic(&dir.exit(), &status) {
        eprintln!("shim: writing {}: {e}", dir.exit().display());
        return 1;
    }
    0
}

/// Runs the task to its end and returns what goes into `exit.json`.
fn supervise(dir: &TaskDir) -> ExitStatus {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("shim: cannot become a subreaper ({e}); orphans of the task go to init");
    }
    let me = std::process::id();
    if let Err(e) = write_atomic(&dir.shim_pid(), format!("{me}\n").as_bytes()) {
        return ExitStatus::error(format!("shim: writing shim.pid: {e}"));
    }
    let spec: ProcessTaskSpec = match read_json(&dir.spec()) {
        Ok(Some(spec)) => spec,
        Ok(None) => return ExitStatus::error("shim: spec.json is missing"),
        Err(e) => return ExitStatus::error(format!("shim: reading spec.json: {e}")),
    };
    let log = match LogWriter::open(dir.log(), spec.log) {
        Ok(log) => Arc::new(Mutex::new(log)),
        Err(e) => return ExitStatus::error(format!("opening the task log: {e}")),
    };
    let (cgroup, mut warnings) = if spec.limits.is_none() {
        (None, Vec::new())
    } else {
        TaskCgroup::create(&CgroupLayout::detect(), &spec.task_id, &spec.limits)
    };
    let status = run_task(dir, &spec, cgroup.as_ref(), &mut warnings, log);
    if let Some(cgroup) = &cgroup {
        for failure in cgroup.remove() {
            eprintln!("shim: {failure}");
        }
    }
    status
}

fn run_task(
    dir: &TaskDir,
    spec: &ProcessTaskSpec,
    cgroup: Option<&TaskCgroup>,
    warnings: &mut Vec<String>,
    log: Arc<Mutex<LogWriter>>,
) -> ExitStatus {
    let procs = match cgroup.map(TaskCgroup::open_procs).transpose() {
        Ok(procs) => procs.unwrap_or_default(),
        Err(e) => {
            warnings.push(format!("limits not applied: opening cgroup.procs: {e}"));
            Vec::new()
        }
    };
    let mut child = match launch::prepare(spec).and_then(|p| launch::spawn(spec, &p, &procs)) {
        Ok(child) => child,
        Err(message) => return ExitStatus::error(message),
    };
    drop(procs);
    let pid = child.id() as i32;
    if let Some(cgroup) = cgroup {
        // The child joins before exec; a child that is already gone proves nothing.
        let joined = cgroup.pids().contains(&pid);
        if !joined && procfs::stat(pid).is_some_and(|s| !s.is_zombie()) {
            warnings.push("limits not applied: the task could not join its cgroup".into());
        }
    }
    let record = StartRecord {
        pid,
        // The child is not reaped before wait_for below, so its stat exists.
        pid_start_ticks: procfs::stat(pid).map_or(0, |s| s.start_ticks),
        shim_pid: std::process::id() as i32,
        started_at: SystemTime::now(),
        warnings: std::mem::take(warnings),
    };
    if let Err(e) = write_json_atomic(&dir.start(), &record)
        .and_then(|()| write_atomic(&dir.pid(), format!("{pid}\n").as_bytes()))
    {
        eprintln!("shim: recording the task start: {e}");
    }
    signal_started();

    let (done_tx, done_rx) = mpsc::channel();
    let mut pumps = 0;
    if let Some(out) = child.stdout.take() {
        pump(out, OutputStream::Stdout, log.clone(), done_tx.clone());
        pumps += 1;
    }
    if let Some(err) = child.stderr.take() {
        pump(err, OutputStream::Stderr, log, done_tx);
        pumps += 1;
    }

    let status = reap::wait_for(Pid::from_raw(pid));
    reap::kill_leftovers(Pid::from_raw(pid), cgroup, LEFTOVER_LIMIT);
    let drained_by = Instant::now() + DRAIN_LIMIT;
    for _ in 0..pumps {
        let left = drained_by.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            eprintln!("shim: task output still open after the task ended; not waiting");
            break;
        }
    }
    status
}

/// Copies one output pipe into the log until it closes, then says so on `done`.
fn pump(
    mut pipe: impl Read + Send + 'static,
    stream: OutputStream,
    log: Arc<Mutex<LogWriter>>,
    done: mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        let mut splitter = LineSplitter::default();
        let mut buf = vec![0u8; 32 * 1024];
        let mut failed = false;
        let mut write = |line: &[u8]| {
            let result = log
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .write_line(stream, line);
            // Keep draining the pipe so the task never blocks on a full log disk.
            if let Err(e) = result {
                if !failed {
                    eprintln!("shim: writing the task log: {e}; dropping output");
                    failed = true;
                }
            }
        };
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => splitter.push(&buf[..n], &mut write),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("shim: reading task {}: {e}", stream.as_str());
                    break;
                }
            }
        }
        splitter.finish(&mut write);
        let _ = done.send(());
    });
}
