//! Resource limits through cgroups, detected rather than assumed.
//!
//! - **v2** (unified; `/sys/fs/cgroup/cgroup.controllers` exists): the task
//!   gets `/sys/fs/cgroup/shoal/<task_id>` with `memory.max` and `cpu.max`;
//!   the `cpu` and `memory` controllers are enabled in the `subtree_control`
//!   of the root and of `shoal/` as needed.
//! - **v1** (legacy or hybrid): one directory per controller hierarchy,
//!   `<memory>/shoal/<task_id>/memory.limit_in_bytes` and
//!   `<cpu>/shoal/<task_id>/cpu.cfs_{period,quota}_us`.
//!
//! A limit that cannot be applied (no controller, no permission) does not
//! stop the task: it becomes a warning for the task's status. The task
//! process joins its cgroup(s) before `exec` (the shim writes `0` to
//! `cgroup.procs` in the child), so not a single allocation escapes the limit.

use crate::process::spec::ResourceLimits;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Parent of every task cgroup, in each hierarchy.
const SHOAL_GROUP: &str = "shoal";
/// CFS period for CPU limits: 100 ms, as Docker uses.
const CPU_PERIOD_US: i64 = 100_000;
/// The kernel refuses quotas under 1 ms.
const MIN_CPU_QUOTA_US: i64 = 1_000;

/// Which cgroup hierarchies this host offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// Unified hierarchy mounted at `root`; `controllers` lists what it offers.
    V2 {
        root: PathBuf,
        controllers: Vec<String>,
    },
    /// Legacy hierarchies: the mount of the memory and of the cpu controller.
    V1 {
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
    },
    /// No cgroup filesystem we can use.
    None,
}

impl CgroupLayout {
    /// Looks at `/sys/fs/cgroup`.
    pub fn detect() -> Self {
        Self::detect_at(Path::new(CGROUP_ROOT))
    }

    /// Looks at a cgroup mount point (a fake tree in tests).
    pub fn detect_at(root: &Path) -> Self {
        if let Ok(text) = fs::read_to_string(root.join("cgroup.controllers")) {
            return CgroupLayout::V2 {
                root: root.to_path_buf(),
                controllers: text.split_whitespace().map(str::to_owned).collect(),
            };
        }
        let memory = Some(root.join("memory")).filter(|p| p.join("memory.limit_in_bytes").exists());
        let cpu = ["cpu", "cpu,cpuacct", "cpuacct,cpu"]
            .iter()
            .map(|name| root.join(name))
            .find(|p| p.join("cpu.cfs_quota_us").exists());
        if memory.is_none() && cpu.is_none() {
            CgroupLayout::None
        } else {
            CgroupLayout::V1 { memory, cpu }
        }
    }

    /// One line for logs and reports.
    pub fn describe(&self) -> String {
        match self {
            CgroupLayout::V2 { root, controllers } => format!(
                "cgroup v2 at {} (controllers: {})",
                root.display(),
                controllers.join(" ")
            ),
            CgroupLayout::V1 { memory, cpu } => {
                let show = |p: &Option<PathBuf>| {
                    p.as_ref()
                        .map_or("none".to_string(), |p| p.display().to_string())
                };
                format!("cgroup v1 (memory: {}, cpu: {})", show(memory), show(cpu))
            }
            CgroupLayout::None => "no cgroup filesystem".into(),
        }
    }

    /// The directories a task's cgroup would have, whether or not they exist.
    pub fn task_dirs(&self, task_id: &str) -> Vec<PathBuf> {
        match self {
            CgroupLayout::V2 { root, .. } => vec![root.join(SHOAL_GROUP).join(task_id)],
            CgroupLayout::V1 { memory, cpu } => [memory, cpu]
                .into_iter()
                .flatten()
                .map(|h| h.join(SHOAL_GROUP).join(task_id))
                .collect(),
            CgroupLayout::None => Vec::new(),
        }
    }
}

/// The CFS quota (µs per 100 ms period) for a CPU limit in nano-CPUs.
pub(crate) fn cpu_quota_us(nano_cpus: i64) -> i64 {
    (nano_cpus.saturating_mul(CPU_PERIOD_US) / 1_000_000_000).max(MIN_CPU_QUOTA_US)
}

/// The cgroup directories a task was placed in.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskCgroup {
    dirs: Vec<PathBuf>,
}

impl TaskCgroup {
    /// Creates the task's cgroup(s) and writes its limits. Returns the cgroup
    /// (`None` when nothing could be set up) and one warning per limit that
    /// is not enforced.
    pub fn create(
        layout: &CgroupLayout,
        task_id: &str,
        limits: &ResourceLimits,
    ) -> (Option<TaskCgroup>, Vec<String>) {
        let mut warnings = Vec::new();
        let mut dirs = Vec::new();
        let wants_memory = limits.memory_bytes > 0;
        let wants_cpu = limits.nano_cpus > 0;
        let quota = cpu_quota_us(limits.nano_cpus);
        match layout {
            CgroupLayout::None => {
                if wants_memory {
                    warnings.push("memory limit not applied: no cgroup filesystem".into());
                }
                if wants_cpu {
                    warnings.push("cpu limit not applied: no cgroup filesystem".into());
                }
            }
            CgroupLayout::V2 { root, controllers } => {
                let mut wanted = Vec::new();
                for (want, name) in [(wants_memory, "memory"), (wants_cpu, "cpu")] {
                    if !want {
                        continue;
                    }
                    if controllers.iter().any(|c| c == name) {
                        wanted.push(name);
                    } else {
                        warnings.push(format!(
                            "{name} limit not applied: no {name} cgroup controller"
                        ));
                    }
                }
                if !wanted.is_empty() {
                    match v2_create(root, task_id, &wanted) {
                        Ok(dir) => {
                            if wanted.contains(&"memory") {
                                if let Err(e) = write_value(&dir, "memory.max", limits.memory_bytes)
                                {
                                    warnings.push(format!("memory limit not applied: {e}"));
                                }
                            }
                            if wanted.contains(&"cpu") {
                                let value = format!("{quota} {CPU_PERIOD_US}");
                                if let Err(e) = write_value(&dir, "cpu.max", value) {
                                    warnings.push(format!("cpu limit not applied: {e}"));
                                }
                            }
                            dirs.push(dir);
                        }
                        Err(e) => {
                            for name in wanted {
                                warnings.push(format!("{name} limit not applied: {e}"));
                            }
                        }
                    }
                }
            }
            CgroupLayout::V1 { memory, cpu } => {
                if wants_memory {
                    match v1_create(memory.as_deref(), "memory", task_id).and_then(|dir| {
                        write_value(&dir, "memory.limit_in_bytes", limits.memory_bytes)
                            .map_err(|e| (e, Some(dir.clone())))?;
                        Ok(dir)
                    }) {
                        Ok(dir) => dirs.push(dir),
                        Err((e, made)) => {
                            warnings.push(format!("memory limit not applied: {e}"));
                            dirs.extend(made);
                        }
                    }
                }
                if wants_cpu {
                    match v1_create(cpu.as_deref(), "cpu", task_id).and_then(|dir| {
                        write_value(&dir, "cpu.cfs_period_us", CPU_PERIOD_US)
                            .and_then(|()| write_value(&dir, "cpu.cfs_quota_us", quota))
                            .map_err(|e| (e, Some(dir.clone())))?;
                        Ok(dir)
                    }) {
                        Ok(dir) => dirs.push(dir),
                        Err((e, made)) => {
                            warnings.push(format!("cpu limit not applied: {e}"));
                            dirs.extend(made);
                        }
                    }
                }
            }
        }
        let cgroup = (!dirs.is_empty()).then_some(TaskCgroup { dirs });
        (cgroup, warnings)
    }

    /// Opens every `cgroup.procs` for writing, for the child to join before
    /// `exec` with nothing but `write(2)`.
    pub fn open_procs(&self) -> io::Result<Vec<File>> {
        self.dirs
            .iter()
            .map(|d| OpenOptions::new().write(true).open(d.join("cgroup.procs")))
            .collect()
    }

    /// Pids currently in any of the task's cgroups.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self.dirs.iter().flat_map(|d| procs_of(d)).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs everything in the cgroup, also processes that left the
    /// task's process group.
    pub fn kill_all(&self) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Removes the cgroup directories (they must be empty of processes).
    pub fn remove(&self) -> Vec<String> {
        remove_dirs(&self.dirs)
    }
}

/// Removes cgroup directories, retrying briefly while the kernel finishes
/// tearing down exited processes. Returns one message per failure.
pub(crate) fn remove_dirs(dirs: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for dir in dirs {
        let mut attempt = 0;
        loop {
            match fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(_) if attempt < 50 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    failures.push(format!("removing cgroup {}: {e}", dir.display()));
                    break;
                }
            }
        }
    }
    failures
}

fn procs_of(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn write_value(dir: &Path, file: &str, value: impl ToString) -> io::Result<()> {
    let path = dir.join(file);
    let mut f = OpenOptions::new().write(true).open(&path)?;
    f.write_all(value.to_string().as_bytes())
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

/// Adds `+controller` to a `cgroup.subtree_control` unless it is already there.
fn enable_controllers(group: &Path, names: &[&str]) -> io::Result<()> {
    let path = group.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&path)?;
    for name in names {
        if enabled.split_whitespace().any(|c| c == *name) {
            continue;
        }
        let mut f = OpenOptions::new().write(true).open(&path)?;
        f.write_all(format!("+{name}").as_bytes()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("enabling {name} in {}: {e}", path.display()),
            )
        })?;
    }
    Ok(())
}

fn v2_create(root: &Path, task_id: &str, controllers: &[&str]) -> io::Result<PathBuf> {
    enable_controllers(root, controllers)?;
    let parent = root.join(SHOAL_GROUP);
    create_dir_if_missing(&parent)?;
    enable_controllers(&parent, controllers)?;
    let dir = parent.join(task_id);
    create_dir_if_missing(&dir)?;
    Ok(dir)
}

type V1Error = (io::Error, Option<PathBuf>);

fn v1_create(hierarchy: Option<&Path>, name: &str, task_id: &str) -> Result<PathBuf, V1Error> {
    let Some(hierarchy) = hierarchy else {
        let e = io::Error::new(
            io::ErrorKind::NotFound,
            format!("no {name} cgroup controller"),
        );
        return Err((e, None));
    };
    let dir = hierarchy.join(SHOAL_GROUP).join(task_id);
    fs::create_dir_all(&dir).map_err(|e| {
        let e = io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()));
        (e, None)
    })?;
    Ok(dir)
}

fn create_dir_if_missing(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("creating {}: {e}", dir.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path, content: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    #[test]
    fn unified_hierarchy_is_detected_by_its_controllers_file() {
        let root = tempfile::tempdir().unwrap();
        touch(
            &root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        );
        match CgroupLayout::detect_at(root.path()) {
            CgroupLayout::V2 { controllers, .. } => {
                assert!(controllers.contains(&"memory".to_string()));
                assert!(controllers.contains(&"cpu".to_string()));
            }
            other => panic!("expected v2, got {other:?}"),
        }
    }

    #[test]
    fn legacy_hierarchies_are_found_under_their_usual_names() {
        let root = tempfile::tempdir().unwrap();
        touch(&root.path().join("memory/memory.limit_in_bytes"), "0");
        touch(&root.path().join("cpu,cpuacct/cpu.cfs_quota_us"), "-1");
        assert_eq!(
            CgroupLayout::detect_at(root.path()),
            CgroupLayout::V1 {
                memory: Some(root.path().join("memory")),
                cpu: Some(root.path().join("cpu,cpuacct")),
            }
        );
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(CgroupLayout::detect_at(empty.path()), CgroupLayout::None);
    }

    #[test]
    fn missing_controllers_become_warnings_not_errors() {
        let layout = CgroupLayout::V1 {
            memory: None,
            cpu: None,
        };
        let limits = ResourceLimits {
            nano_cpus: 1_000_000_000,
            memory_bytes: 1 << 24,
        };
        let (cgroup, warnings) = TaskCgroup::create(&layout, "t1", &limits);
        assert!(cgroup.is_none());
        assert_eq!(
            warnings,
            vec![
                "memory limit not applied: no memory cgroup controller".to_string(),
                "cpu limit not applied: no cpu cgroup controller".to_string(),
            ]
        );
        let v2 = CgroupLayout::V2 {
            root: PathBuf::from("/nonexistent"),
            controllers: vec!["pids".into()],
        };
        let (_, warnings) = TaskCgroup::create(&v2, "t1", &limits);
        assert!(
            warnings[0].contains("no memory cgroup controller"),
            "{warnings:?}"
        );
    }

    #[test]
    fn v1_limits_are_written_into_a_fake_tree() {
        let root = tempfile::tempdir().unwrap();
        // A plain directory accepts any file, which is all this test needs.
        let memory = root.path().join("memory");
        fs::create_dir_all(memory.join("shoal/t1")).unwrap();
        touch(&memory.join("shoal/t1/memory.limit_in_bytes"), "");
        let layout = CgroupLayout::V1 {
            memory: Some(memory.clone()),
            cpu: None,
        };
        let limits = ResourceLimits {
            nano_cpus: 0,
            memory_bytes: 16 << 20,
        };
        let (cgroup, warnings) = TaskCgroup::create(&layout, "t1", &limits);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cgroup.unwrap().dirs, vec![memory.join("shoal/t1")]);
        assert_eq!(
            fs::read_to_string(memory.join("shoal/t1/memory.limit_in_bytes")).unwrap(),
            "16777216"
        );
    }

    #[test]
    fn v2_enables_controllers_and_writes_limits_into_a_fake_tree() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        touch(&r.join("cgroup.controllers"), "cpu io memory pids");
        touch(&r.join("cgroup.subtree_control"), "");
        // cgroupfs makes these files itself; a plain directory needs them made.
        touch(&r.join("shoal/cgroup.subtree_control"), "");
        touch(&r.join("shoal/t1/memory.max"), "");
        touch(&r.join("shoal/t1/cpu.max"), "");
        let limits = ResourceLimits {
            nano_cpus: 1_500_000_000,
            memory_bytes: 1 << 26,
        };
        let (cgroup, warnings) = TaskCgroup::create(&CgroupLayout::detect_at(r), "t1", &limits);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cgroup.unwrap().dirs, vec![r.join("shoal/t1")]);
        let read = |p: &str| fs::read_to_string(r.join(p)).unwrap();
        assert_eq!(read("shoal/t1/memory.max"), "67108864");
        assert_eq!(read("shoal/t1/cpu.max"), "150000 100000");
        // Plain files are overwritten in place, not parsed as cgroupfs does:
        // all that shows is that the controllers were enabled at both levels.
        assert!(read("cgroup.subtree_control").starts_with("+cpu"));
        assert!(read("shoal/cgroup.subtree_control").starts_with("+cpu"));
    }

    #[test]
    fn cpu_limits_become_cfs_quotas() {
        assert_eq!(cpu_quota_us(1_000_000_000), 100_000);
        assert_eq!(cpu_quota_us(500_000_000), 50_000);
        assert_eq!(cpu_quota_us(2_500_000_000), 250_000);
        assert_eq!(cpu_quota_us(1), MIN_CPU_QUOTA_US);
    }
}
