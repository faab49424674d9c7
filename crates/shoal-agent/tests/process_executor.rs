//! The process executor, end to end: real shims and real processes in a
//! temporary state root. Every test's processes are killed by the harness
//! when it ends.

mod common;

use common::{
    all_lines, eventually, group_members, is_running, processes_with, text, wait_for_line, Harness,
};
use shoal_agent::process::shim_command;
use shoal_agent::process::{
    AdoptedState, CgroupLayout, ExecError, ExitOutcome, LogConfig, LogOptions, OutputStream,
    ProcessExecutor, ResourceLimits,
};
use std::time::{Duration, Instant};

const SOON: Duration = Duration::from_secs(5);

#[tokio::test]
async fn exit_code_and_both_output_streams_are_recorded() {
    let h = Harness::new();
    let spec = h.sh("t-exit", "echo hi; echo err >&2; exit 3");
    h.exec.start(spec).await.unwrap();
    let status = h.exec.wait("t-exit").await.unwrap();
    assert_eq!(status.code, Some(3));
    assert_eq!(status.signal, None);
    assert_eq!(
        status.outcome(),
        ExitOutcome::Failed("task: non-zero exit (3)".into())
    );

    let mut lines: Vec<(OutputStream, String)> =
        all_lines(&h.exec, "t-exit", LogOptions::default())
            .await
            .iter()
            .map(|l| (l.stream, text(l)))
            .collect();
    lines.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(
        lines,
        vec![
            (OutputStream::Stderr, "err".to_string()),
            (OutputStream::Stdout, "hi".to_string()),
        ]
    );
}

#[tokio::test]
async fn task_sees_its_identity_spec_env_and_working_dir() {
    let h = Harness::new();
    let mut spec = h.sh(
        "t-env",
        "echo \"$SHOAL_TASK_ID|$SHOAL_SERVICE_ID|$SHOAL_SERVICE_NAME|$SHOAL_TASK_SLOT|$SHOAL_NODE_ID\"; \
         echo \"$FOO\"; pwd; test -n \"$PATH\" && echo has-path",
    );
    spec.env = vec!["FOO=bar baz".into()];
    spec.dir = Some("/tmp".into());
    h.exec.start(spec).await.unwrap();
    let status = h.exec.wait("t-env").await.unwrap();
    assert_eq!(status.outcome(), ExitOutcome::Complete);
    let lines: Vec<String> = all_lines(&h.exec, "t-env", LogOptions::default())
        .await
        .iter()
        .map(text)
        .collect();
    assert_eq!(
        lines,
        vec!["t-env|svc-id-1|web|2|node-1", "bar baz", "/tmp", "has-path"]
    );
}

#[tokio::test]
async fn task_starts_with_default_signal_handling_and_no_stdin() {
    let h = Harness::new();
    // The shim ignores SIGPIPE (Rust's runtime does); the task must not.
    let spec = h.sh(
        "t-signals",
        "grep -E '^Sig(Ign|Blk)' /proc/self/status; cat; yes | head -n 1",
    );
    h.exec.start(spec).await.unwrap();
    assert_eq!(h.exec.wait("t-signals").await.unwrap().code, Some(0));
    let lines: Vec<String> = all_lines(&h.exec, "t-signals", LogOptions::default())
        .await
        .iter()
        .map(text)
        .collect();
    assert_eq!(
        lines,
        vec![
            "SigBlk:\t0000000000000000",
            "SigIgn:\t0000000000000000",
            "y"
        ]
    );
}

#[tokio::test]
async fn task_runs_as_the_requested_user() {
    let h = Harness::new();
    let mut spec = h.sh("t-user", "id -u; id -g");
    spec.user = Some("65534:65534".into());
    h.exec.start(spec).await.unwrap();
    assert_eq!(h.exec.wait("t-user").await.unwrap().code, Some(0));
    let lines: Vec<String> = all_lines(&h.exec, "t-user", LogOptions::default())
        .await
        .iter()
        .map(text)
        .collect();
    assert_eq!(lines, vec!["65534", "65534"]);
}

#[tokio::test]
async fn task_that_handles_the_stop_signal_stops_quickly() {
    let h = Harness::new();
    let spec = h.sh(
        "t-term",
        "trap 'echo bye; exit 0' TERM; echo ready; sleep 100 & wait",
    );
    let handle = h.exec.start(spec).await.unwrap();
    wait_for_line(&h.exec, "t-term", "ready").await;

    let began = Instant::now();
    let status = h
        .exec
        .shutdown("t-term", Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "took {:?}",
        began.elapsed()
    );
    assert_eq!(status.code, Some(0));
    assert!(
        group_members(handle.pid).is_empty(),
        "the background sleep died too"
    );
    let lines = all_lines(&h.exec, "t-term", LogOptions::default()).await;
    assert_eq!(text(lines.last().unwrap()), "bye");
}

#[tokio::test]
async fn task_ignoring_sigterm_is_killed_with_its_children_after_the_grace_period() {
    let h = Harness::new();
    let spec = h.sh(
        "t-stubborn",
        "trap '' TERM; echo ready; sleep 100; sleep 100",
    );
    let handle = h.exec.start(spec).await.unwrap();
    wait_for_line(&h.exec, "t-stubborn", "ready").await;
    assert!(
        eventually(SOON, || group_members(handle.pid).len() == 2),
        "sh and its sleep child run in the task's process group"
    );

    let grace = Duration::from_millis(700);
    let began = Instant::now();
    let status = h.exec.shutdown("t-stubborn", grace).await.unwrap();
    let took = began.elapsed();
    assert!(
        took >= grace,
        "SIGKILL came before the grace period ended ({took:?})"
    );
    assert!(took < grace + Duration::from_secs(3), "took {took:?}");
    assert_eq!(status.signal, Some(9));
    assert_eq!(
        status.outcome(),
        ExitOutcome::Failed("task: killed by signal 9".into())
    );
    assert!(
        group_members(handle.pid).is_empty(),
        "no process of the group is left"
    );
}

#[tokio::test]
async fn processes_left_behind_by_a_finished_task_are_killed() {
    let h = Harness::new();
    // One background child stays in the task's process group, one escapes
    // it into a session of its own.
    let escaper = h.sleep_named("escaper");
    let script = format!(
        "sleep 300 & setsid {} 300 & echo ready; sleep 300",
        escaper.display()
    );
    let handle = h.exec.start(h.sh("t-orphans", &script)).await.unwrap();
    wait_for_line(&h.exec, "t-orphans", "ready").await;
    let marker = escaper.to_str().unwrap();
    assert!(eventually(SOON, || processes_with(marker).len() == 1));
    assert!(eventually(SOON, || group_members(handle.pid).len() == 3));

    // The task's main process ends; its leftovers must not outlive it.
    unsafe { libc::kill(handle.pid, libc::SIGKILL) };
    let status = h.exec.wait("t-orphans").await.unwrap();
    assert_eq!(status.signal, Some(9));
    assert!(group_members(handle.pid).is_empty());
    assert!(
        processes_with(marker).is_empty(),
        "the escaped process died too"
    );
}

#[tokio::test]
async fn unknown_command_bad_dir_and_bad_user_are_start_errors() {
    let h = Harness::new();
    let mut missing = h.sh("t-nocmd", "");
    missing.command = "no-such-command-xyz".into();
    missing.args.clear();
    let err = h.exec.start(missing).await.unwrap_err();
    assert!(matches!(err, ExecError::StartFailed(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        r#"exec: "no-such-command-xyz": executable file not found in $PATH"#
    );
    // The failure is recorded like an exit, for status and for a later list().
    let status = h.exec.wait("t-nocmd").await.unwrap();
    assert_eq!(status.error.as_deref(), Some(err.to_string().as_str()));

    let mut bad_dir = h.sh("t-nodir", "true");
    bad_dir.dir = Some("/no/such/dir".into());
    let err = h.exec.start(bad_dir).await.unwrap_err().to_string();
    assert!(err.starts_with("working directory /no/such/dir: "), "{err}");

    let mut bad_user = h.sh("t-nouser", "true");
    bad_user.user = Some("no-such-user-xyz".into());
    let err = h.exec.start(bad_user).await.unwrap_err().to_string();
    assert_eq!(
        err,
        "unable to find user no-such-user-xyz: no matching entries in passwd file"
    );
}

#[tokio::test]
async fn a_broken_shim_command_is_a_start_error_recorded_as_the_exit() {
    let h = Harness::new();
    for (n, shim) in ["/no/such/shim", "false"].into_iter().enumerate() {
        let exec = ProcessExecutor::new(h.root().join("tasks"), vec![shim.into()]);
        let id = format!("t-noshim-{n}");
        let err = exec.start(h.sh(&id, "true")).await.unwrap_err();
        assert!(err.to_string().contains("task shim"), "{err}");
        let status = exec.wait(&id).await.unwrap();
        assert_eq!(status.error, Some(err.to_string()));
    }
}

#[tokio::test]
async fn a_task_id_can_only_be_started_once() {
    let h = Harness::new();
    h.exec.start(h.sh("t-once", "true")).await.unwrap();
    let err = h.exec.start(h.sh("t-once", "true")).await.unwrap_err();
    assert!(matches!(err, ExecError::AlreadyExists(_)), "{err:?}");
    let err = h.exec.wait("t-never").await.unwrap_err();
    assert!(matches!(err, ExecError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn rotated_logs_keep_working_and_tail_spans_files() {
    let h = Harness::new();
    let mut spec = h.sh(
        "t-rotate",
        "i=0; while [ $i -lt 200 ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); done",
    );
    spec.log = LogConfig {
        max_size: 4096,
        max_files: 3,
    };
    h.exec.start(spec).await.unwrap();
    assert_eq!(h.exec.wait("t-rotate").await.unwrap().code, Some(0));

    let dir = h.root().join("tasks/t-rotate");
    for name in ["log", "log.1", "log.2"] {
        let size = std::fs::metadata(dir.join(name)).unwrap().len();
        assert!(size <= 4096, "{name} is {size} bytes");
    }
    assert!(!dir.join("log.3").exists());

    // Everything still kept: the oldest lines were rotated out, the rest
    // is complete and in order for each stream.
    let kept = all_lines(&h.exec, "t-rotate", LogOptions::default()).await;
    assert!(
        kept.len() > 150 && kept.len() < 400,
        "{} lines kept",
        kept.len()
    );
    for stream in [OutputStream::Stdout, OutputStream::Stderr] {
        let numbers: Vec<u32> = kept
            .iter()
            .filter(|l| l.stream == stream)
            .map(|l| text(l).split(' ').nth(1).unwrap().parse().unwrap())
            .collect();
        if let Some(&last) = numbers.last() {
            assert_eq!(last, 199, "{stream:?} ends with the last line");
            let expected: Vec<u32> = (last + 1 - numbers.len() as u32..=last).collect();
            assert_eq!(numbers, expected, "{stream:?} lines are consecutive");
        }
    }
    let timestamps: Vec<_> = kept.iter().map(|l| l.timestamp).collect();
    assert!(timestamps.windows(2).all(|w| w[0] <= w[1]), "in time order");

    // 150 records of about 45 bytes span more than one file; stdout and
    // stderr count together.
    let tail = all_lines(
        &h.exec,
        "t-rotate",
        LogOptions {
            tail: Some(150),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(tail, kept[kept.len() - 150..]);
}

#[tokio::test]
async fn follow_sees_new_lines_until_the_task_exits() {
    let h = Harness::new();
    let mut spec = h.sh(
        "t-follow",
        "echo first; sleep 0.3; i=0; while [ $i -lt 40 ]; do \
         echo \"line $i padded to make rotation come sooner\"; \
         [ $((i % 10)) -eq 9 ] && sleep 0.1; i=$((i+1)); done; echo last",
    );
    spec.log = LogConfig {
        max_size: 1024,
        max_files: 2,
    };
    h.exec.start(spec).await.unwrap();
    let opts = LogOptions {
        follow: true,
        ..Default::default()
    };
    let mut rx = h.exec.logs("t-follow", opts).await.unwrap();
    let first = tokio::time::timeout(SOON, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(&first), "first");
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = rx.recv().await {
            rest.push(text(&line));
        }
    })
    .await;
    assert!(ended.is_ok(), "follow ends after the task exits");
    let mut expected: Vec<String> = (0..40)
        .map(|i| format!("line {i} padded to make rotation come sooner"))
        .collect();
    expected.push("last".into());
    assert_eq!(rest, expected, "nothing lost or repeated across rotations");
    assert!(
        h.root().join("tasks/t-follow/log.1").exists(),
        "the log did rotate"
    );
}

#[tokio::test]
async fn restarted_executor_readopts_the_running_task_without_duplicates() {
    let h = Harness::new();
    let program = h.sleep_named("adopt-me");
    let marker = program.to_str().unwrap();
    let mut spec = h.sh("t-adopt", "");
    spec.command = marker.into();
    spec.args = vec!["300".into()];
    let a = h.another_executor();
    let handle = a.start(spec.clone()).await.unwrap();
    assert!(eventually(SOON, || processes_with(marker) == vec![handle.pid]));

    // The agent dies: executor A and all it knew go away; shim and task keep running.
    drop(a);
    let b = h.another_executor();
    let tasks = b.list().await.unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].spec, spec);
    match &tasks[0].state {
        AdoptedState::Running(found) => {
            assert_eq!(found.pid, handle.pid);
            assert_eq!(found.shim_pid, handle.shim_pid);
        }
        other => panic!("expected running, got {other:?}"),
    }
    assert_eq!(
        processes_with(marker),
        vec![handle.pid],
        "exactly one task process"
    );

    let status = b.shutdown("t-adopt", Duration::from_secs(5)).await.unwrap();
    assert_eq!(status.signal, Some(15));
    assert!(processes_with(marker).is_empty());
    assert!(
        eventually(SOON, || !is_running(handle.shim_pid)),
        "the shim exits"
    );
    match &b.list().await.unwrap()[0].state {
        AdoptedState::Exited(s) => assert_eq!(s.signal, Some(15)),
        other => panic!("expected exited, got {other:?}"),
    }
}

#[tokio::test]
async fn task_that_exits_while_the_agent_is_down_is_reported_with_its_status() {
    let h = Harness::new();
    let handle = h
        .exec
        .start(h.sh("t-gone", "sleep 0.3; exit 7"))
        .await
        .unwrap();
    assert!(eventually(SOON, || !is_running(handle.shim_pid)));

    let b = h.another_executor();
    let tasks = b.list().await.unwrap();
    match &tasks[0].state {
        AdoptedState::Exited(status) => assert_eq!(status.code, Some(7)),
        other => panic!("expected exited, got {other:?}"),
    }
    assert_eq!(b.wait("t-gone").await.unwrap().code, Some(7));
}

#[tokio::test]
async fn task_whose_shim_dies_is_killed_and_reported_lost() {
    let h = Harness::new();
    let handle = h
        .exec
        .start(h.sh("t-lost", "echo ready; sleep 300"))
        .await
        .unwrap();
    wait_for_line(&h.exec, "t-lost", "ready").await;
    unsafe { libc::kill(handle.shim_pid, libc::SIGKILL) };
    assert!(eventually(SOON, || !is_running(handle.shim_pid)));

    let tasks = h.another_executor().list().await.unwrap();
    match &tasks[0].state {
        AdoptedState::Exited(status) => {
            assert!(
                status.error.as_deref().unwrap().contains("shim exited"),
                "{status:?}"
            )
        }
        other => panic!("expected exited, got {other:?}"),
    }
    assert!(
        eventually(SOON, || group_members(handle.pid).is_empty()),
        "the unsupervised task was killed"
    );
}

#[tokio::test]
async fn remove_stops_a_running_task_and_deletes_its_state() {
    let h = Harness::new();
    let mut spec = h.sh("t-remove", "echo ready; sleep 300");
    spec.stop_grace = Duration::from_secs(2);
    let handle = h.exec.start(spec).await.unwrap();
    wait_for_line(&h.exec, "t-remove", "ready").await;
    h.exec.remove("t-remove").await.unwrap();
    assert!(group_members(handle.pid).is_empty());
    assert!(!h.root().join("tasks/t-remove").exists());
    assert!(h.exec.list().await.unwrap().is_empty());
    h.exec.remove("t-remove").await.unwrap();
}

fn skip_unless_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    eprintln!("skipping {test}: cgroup limits need root");
    true
}

#[tokio::test]
async fn memory_limit_kills_a_task_that_allocates_more() {
    if skip_unless_root("memory_limit_kills_a_task_that_allocates_more") {
        return;
    }
    let h = Harness::new();
    // Cgroups are host-wide: a task ID unique to this test run.
    let id = format!("t-oom-{}", std::process::id());
    let mut spec = h.sh(&id, "");
    // dd allocates (and fills) a 64 MiB buffer.
    spec.command = "dd".into();
    spec.args = vec![
        "if=/dev/zero".into(),
        "of=/dev/null".into(),
        "bs=64M".into(),
        "count=1".into(),
    ];
    spec.limits = ResourceLimits {
        nano_cpus: 0,
        memory_bytes: 16 << 20,
    };
    let handle = h.exec.start(spec).await.unwrap();
    if !handle.warnings.is_empty() {
        eprintln!(
            "skipping memory limit check on this host ({}): {:?}",
            CgroupLayout::detect().describe(),
            handle.warnings
        );
        assert!(handle.warnings[0].starts_with("memory limit not applied"));
        return;
    }
    let status = h.exec.wait(&id).await.unwrap();
    assert_eq!(status.signal, Some(9), "OOM-killed: {status:?}");
    for dir in CgroupLayout::detect().task_dirs(&id) {
        assert!(!dir.exists(), "{} is removed", dir.display());
    }
}

#[tokio::test]
async fn cpu_limit_becomes_a_cfs_quota_on_the_task_cgroup() {
    if skip_unless_root("cpu_limit_becomes_a_cfs_quota_on_the_task_cgroup") {
        return;
    }
    let h = Harness::new();
    let id = format!("t-cpu-{}", std::process::id());
    let mut spec = h.sh(&id, "echo ready; sleep 300");
    spec.limits = ResourceLimits {
        nano_cpus: 500_000_000,
        memory_bytes: 0,
    };
    let handle = h.exec.start(spec).await.unwrap();
    if !handle.warnings.is_empty() {
        eprintln!(
            "skipping cpu limit check on this host: {:?}",
            handle.warnings
        );
        assert!(handle.warnings[0].starts_with("cpu limit not applied"));
        return;
    }
    let (file, expected) = match CgroupLayout::detect() {
        CgroupLayout::V2 { root, .. } => (root.join(format!("shoal/{id}/cpu.max")), "50000 100000"),
        CgroupLayout::V1 { cpu: Some(cpu), .. } => {
            (cpu.join(format!("shoal/{id}/cpu.cfs_quota_us")), "50000")
        }
        other => panic!("no warning, yet no cpu controller: {other:?}"),
    };
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), expected);
    let procs = std::fs::read_to_string(file.with_file_name("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l.trim() == handle.pid.to_string()),
        "the task is in its cgroup"
    );
    h.exec.shutdown(&id, Duration::from_secs(2)).await.unwrap();
    assert!(!file.parent().unwrap().exists(), "the cgroup is removed");
}

/// A daemon uses the `shoal-shim` beside it only when that program was
/// built from its own shim sources; otherwise (missing, stale, broken) it
/// runs its own copy of the shim.
#[tokio::test]
async fn the_shim_beside_the_daemon_is_used_only_when_built_from_the_same_sources() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("shoal");
    let sibling = dir.path().join("shoal-shim");
    let own = vec![exe.clone().into_os_string(), "task-shim".into()];

    // None beside it.
    assert_eq!(shim_command(&exe, "task-shim").await, own);

    // The real one, from this build.
    std::fs::copy(env!("CARGO_BIN_EXE_shoal-shim"), &sibling).unwrap();
    assert_eq!(
        shim_command(&exe, "task-shim").await,
        vec![sibling.clone().into_os_string()]
    );

    // A stale one (other sources), and one that fails.
    for script in ["#!/bin/sh\necho 0123456789abcdef\n", "#!/bin/sh\nexit 3\n"] {
        std::fs::remove_file(&sibling).unwrap();
        std::fs::write(&sibling, script).unwrap();
        std::fs::set_permissions(&sibling, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(shim_command(&exe, "task-shim").await, own, "{script}");
    }
}
