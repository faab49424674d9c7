//! The per-task state directory `<state_root>/<task_id>/`, shared by the
//! executor and the shim. Files are the only channel between them, so that
//! either side can die and the other (or a new agent) can read where things
//! stand:
//!
//! | file         | written by | when |
//! |--------------|------------|------|
//! | `spec.json`  | executor   | before the shim starts |
//! | `shim.log`   | shim       | the shim's own diagnostics (its stderr) |
//! | `shim.pid`   | shim       | once it has detached |
//! | `start.json` | shim       | the task process runs: pid, its /proc start time, limit warnings |
//! | `pid`        | shim       | right after `start.json`; its presence means "started" |
//! | `log`, `log.1`, ... | shim | task output, one record per line, rotated |
//! | `exit.json`  | shim (or the executor for a lost shim) | last; nothing of the task is left |
//!
//! Every file another process may read is written atomically (temp file +
//! rename), so a reader sees nothing or all of it.

use crate::process::status::rfc3339;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What the shim records once the task process runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StartRecord {
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat`: tells our process from a later one
    /// that reused the pid.
    pub pid_start_ticks: u64,
    pub shim_pid: i32,
    #[serde(with = "rfc3339")]
    pub started_at: SystemTime,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Paths inside one task's state directory.
#[derive(Debug, Clone)]
pub(crate) struct TaskDir {
    path: PathBuf,
}

impl TaskDir {
    pub fn new(path: PathBuf) -> Self {
        TaskDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn spec(&self) -> PathBuf {
        self.path.join("spec.json")
    }

    pub fn shim_log(&self) -> PathBuf {
        self.path.join("shim.log")
    }

    pub fn shim_pid(&self) -> PathBuf {
        self.path.join("shim.pid")
    }

    pub fn start(&self) -> PathBuf {
        self.path.join("start.json")
    }

    pub fn pid(&self) -> PathBuf {
        self.path.join("pid")
    }

    pub fn exit(&self) -> PathBuf {
        self.path.join("exit.json")
    }

    /// The live log file; rotated ones are `log.1`, `log.2`, ...
    pub fn log(&self) -> PathBuf {
        self.path.join("log")
    }
}

/// The path of rotated log file number `n` (0 is the live file).
pub(crate) fn rotated_log(base: &Path, n: u32) -> PathBuf {
    if n == 0 {
        base.to_path_buf()
    } else {
        let mut name = base.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }
}

/// Writes `bytes` to `path` so that readers see either the old file or the new one.
///
/// No fsync: these files describe processes, which a machine crash ends
/// anyway (after a reboot the agent finds no live shim and reports the task
/// lost, whatever the files say). While the machine runs, the rename alone
/// makes the write atomic for every reader. Skipping four fsyncs per task
/// start matters when a node starts hundreds of tasks at once.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads a JSON file; `Ok(None)` when it does not exist (yet).
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a file holding one pid; `Ok(None)` when it does not exist (yet).
pub(crate) fn read_pid(path: &Path) -> io::Result<Option<i32>> {
    match fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_logs_are_numbered_after_the_live_file() {
        let base = Path::new("/x/t1/log");
        assert_eq!(rotated_log(base, 0), PathBuf::from("/x/t1/log"));
        assert_eq!(rotated_log(base, 2), PathBuf::from("/x/t1/log.2"));
    }

    #[test]
    fn atomic_json_round_trips_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("start.json");
        assert!(read_json::<StartRecord>(&path).unwrap().is_none());
        let record = StartRecord {
            pid: 42,
            pid_start_ticks: 7,
            shim_pid: 41,
            started_at: SystemTime::now(),
            warnings: vec!["w".into()],
        };
        write_json_atomic(&path, &record).unwrap();
        assert_eq!(read_json::<StartRecord>(&path).unwrap(), Some(record));
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file is left behind");
    }
}
