//! Just enough of `/proc` to recognise our own processes after a restart
//! (pids are reused, so a pid alone proves nothing) and to find a task's
//! leftover processes.

use std::fs;
use std::path::Path;

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// `R`, `S`, `D`, `Z`, ...
    pub state: u8,
    pub ppid: i32,
    pub pgrp: i32,
    /// Clock ticks after boot at which the process started.
    pub start_ticks: u64,
}

impl ProcStat {
    pub fn is_zombie(&self) -> bool {
        self.state == b'Z' || self.state == b'X'
    }
}

/// Reads `/proc/<pid>/stat`; `None` when there is no such process.
pub(crate) fn stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    let text = fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &[u8]) -> Option<ProcStat> {
    // The command name (field 2) may hold spaces and parentheses: skip to the last ')'.
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // fields[0] is field 3 (state); field N is fields[N - 3].
    Some(ProcStat {
        state: *fields.first()?.as_bytes().first()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// Whether `pid` is still the process that started at `start_ticks`
/// (zombies included: a zombie's pid is not free for reuse yet).
pub(crate) fn is_same_process(pid: i32, start_ticks: u64) -> bool {
    stat(pid).is_some_and(|s| s.start_ticks == start_ticks)
}

/// The arguments of a live (non-zombie) process.
pub(crate) fn cmdline(pid: i32) -> Option<Vec<Vec<u8>>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None; // zombie or kernel thread
    }
    let trimmed = raw.strip_suffix(&[0]).unwrap_or(&raw);
    Some(trimmed.split(|&b| b == 0).map(<[u8]>::to_vec).collect())
}

/// Whether `pid` is a live shim for the task directory `dir`: a shim's
/// last argument is its task directory.
pub(crate) fn is_shim_for(pid: i32, dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    if stat(pid).is_none_or(|s| s.is_zombie()) {
        return false;
    }
    cmdline(pid)
        .and_then(|args| args.last().cloned())
        .is_some_and(|last| last == dir.as_os_str().as_bytes())
}

/// Every pid in /proc with its stat.
pub(crate) fn all_processes() -> Vec<(i32, ProcStat)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .collect()
}

/// Direct children of `ppid`.
pub(crate) fn children_of(ppid: i32) -> Vec<i32> {
    all_processes()
        .into_iter()
        .filter(|(_, s)| s.ppid == ppid)
        .map(|(pid, _)| pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let line =
            b"1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            (s.state, s.ppid, s.pgrp, s.start_ticks),
            (b'S', 1, 1234, 98765)
        );
    }

    #[test]
    fn own_process_is_recognised_by_start_time() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        assert!(is_same_process(me, s.start_ticks));
        assert!(!is_same_process(me, s.start_ticks + 1));
        assert!(!cmdline(me).unwrap().is_empty());
    }
}
