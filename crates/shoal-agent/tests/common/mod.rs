//! Test harness for the process executor: a state root in a temp dir, the
//! crate's own `shoal-shim` binary, and a guard that kills every process a
//! test started, pass or fail.

#![allow(dead_code)]

use shoal_agent::process::{LogLine, LogOptions, ProcessExecutor, ProcessTaskSpec};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Harness {
    pub exec: ProcessExecutor,
    root: tempfile::TempDir,
}

impl Harness {
    pub fn new() -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let exec = new_executor(root.path());
        Harness { exec, root }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Another executor on the same state root, as after an agent restart.
    pub fn another_executor(&self) -> ProcessExecutor {
        new_executor(self.root.path())
    }

    /// A path that runs `sleep` but carries `name` (and the temp dir's
    /// unique name) in its command line, to find the process by.
    pub fn sleep_named(&self, name: &str) -> PathBuf {
        let sleep = ["/bin/sleep", "/usr/bin/sleep"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("sleep binary");
        let link = self.root.path().join(name);
        std::os::unix::fs::symlink(sleep, &link).expect("symlink");
        link
    }

    /// A spec running `sh -c script`.
    pub fn sh(&self, task_id: &str, script: &str) -> ProcessTaskSpec {
        ProcessTaskSpec {
            task_id: task_id.into(),
            service_id: "svc-id-1".into(),
            service_name: "web".into(),
            slot: 2,
            node_id: "node-1".into(),
            command: "sh".into(),
            args: vec!["-c".into(), script.into()],
            ..Default::default()
        }
    }
}

fn new_executor(root: &Path) -> ProcessExecutor {
    ProcessExecutor::new(
        root.join("tasks"),
        vec![env!("CARGO_BIN_EXE_shoal-shim").into()],
    )
}

impl Drop for Harness {
    fn drop(&mut self) {
        let Ok(entries) = fs::read_dir(self.root.path().join("tasks")) else {
            return;
        };
        for entry in entries.flatten() {
            kill_task(&entry.path());
        }
    }
}

/// SIGKILLs a task's process group, lets its shim clean up, and kills the
/// shim if it does not.
fn kill_task(dir: &Path) {
    if let Some((pid, ticks)) = start_record(dir) {
        if start_ticks(pid) == Some(ticks) {
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
    let Some(shim) = read_pid(&dir.join("shim.pid")) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while is_shim_for(shim, dir) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if is_shim_for(shim, dir) {
        unsafe { libc::kill(shim, libc::SIGKILL) };
    }
}

pub fn start_record(dir: &Path) -> Option<(i32, u64)> {
    let text = fs::read(dir.join("start.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    Some((v["pid"].as_i64()? as i32, v["pid_start_ticks"].as_u64()?))
}

pub fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// (state, pgrp, start ticks) from /proc/<pid>/stat.
fn proc_stat(pid: i32) -> Option<(char, i32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((
        f.first()?.chars().next()?,
        f.get(2)?.parse().ok()?,
        f.get(19)?.parse().ok()?,
    ))
}

fn start_ticks(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|s| s.2)
}

/// Whether `pid` exists and is not a zombie.
pub fn is_running(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(state, _, _)| state != 'Z' && state != 'X')
}

fn is_shim_for(pid: i32, dir: &Path) -> bool {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    is_running(pid)
        && cmdline(pid).is_some_and(|args| args.last().map(PathBuf::from) == Some(dir.clone()))
}

fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Live (non-zombie) processes in process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| proc_stat(pid).is_some_and(|(state, pgrp, _)| pgrp == pgid && state != 'Z'))
        .collect()
}

/// Live processes whose program name (argv[0]) contains `marker`.
pub fn processes_with(marker: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| is_running(pid))
        .filter(|&pid| {
            cmdline(pid).is_some_and(|args| args.first().is_some_and(|a| a.contains(marker)))
        })
        .collect()
}

fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Follows the task's log until a line equal to `wanted` appears.
pub async fn wait_for_line(exec: &ProcessExecutor, task_id: &str, wanted: &str) {
    let opts = LogOptions {
        follow: true,
        ..Default::default()
    };
    let mut rx = exec.logs(task_id, opts).await.expect("logs");
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(line) = rx.recv().await {
            if line.line == wanted.as_bytes() {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "task {task_id} never printed {wanted:?}");
}

/// All lines of a finished log, as text.
pub async fn all_lines(exec: &ProcessExecutor, task_id: &str, opts: LogOptions) -> Vec<LogLine> {
    let mut rx = exec.logs(task_id, opts).await.expect("logs");
    let mut lines = Vec::new();
    while let Some(line) = rx.recv().await {
        lines.push(line);
    }
    lines
}

pub fn text(line: &LogLine) -> String {
    String::from_utf8_lossy(&line.line).into_owned()
}
