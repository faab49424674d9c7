//! The docker executor, end to end, against a real Docker Engine: the one at
//! `SHOAL_TEST_DOCKER_HOST`, else `DOCKER_HOST`, else /var/run/docker.sock.
//! Without an engine that answers, every test that needs one prints why and
//! passes without doing anything.
//!
//! Tests run `local/busybox:1`, made from the host's static busybox (see
//! `ensure_image`); nothing is ever pulled. Every container a test creates
//! carries a label unique to that test and is force-removed when the test
//! ends, pass or fail.

use bollard::query_parameters::{KillContainerOptions, ListContainersOptions};
use bollard::Docker;
use shoal_agent::docker::{
    AdoptedState, ContainerLimits, ContainerReservations, ContainerTaskSpec, DockerExecutor,
    ExecError, ExitOutcome, HealthState, HealthcheckSpec, LogLine, LogOptions, MountKind,
    MountSpec, OutputStream, UlimitSpec, LABEL_NODE_ID, LABEL_SERVICE_ID, LABEL_SERVICE_NAME,
    LABEL_SHOAL_TASK, LABEL_TASK_ID, LABEL_TASK_NAME,
};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

const IMAGE: &str = "local/busybox:1";
const SOON: Duration = Duration::from_secs(20);
/// Label on every container of one test; the guard removes by it.
const LABEL_TEST_RUN: &str = "com.shoal.test.run";

/// The engine the tests use.
fn test_host() -> String {
    ["SHOAL_TEST_DOCKER_HOST", "DOCKER_HOST"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|h| !h.trim().is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into())
}

/// Says why a test did nothing, past the test harness' output capture.
fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// One test's executor plus cleanup: dropping it force-removes every
/// container labelled with this test's run ID.
struct Harness {
    exec: DockerExecutor,
    /// Unique to this test run; part of every task ID.
    uniq: String,
    /// The value of [`LABEL_TEST_RUN`] on this test's containers.
    run: String,
    host: String,
}

impl Harness {
    /// `None` (after saying so) when no engine answers or the test image
    /// cannot be made.
    async fn new(test: &str) -> Option<Harness> {
        let host = test_host();
        let exec = match DockerExecutor::connect_to(&host).await {
            Ok(exec) => exec,
            Err(e) => {
                skip(test, &e.to_string());
                return None;
            }
        };
        if let Err(why) = ensure_image(exec.client()).await {
            skip(test, &why);
            return None;
        }
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let uniq = format!(
            "{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let run = format!("{test}-{uniq}");
        Some(Harness {
            exec,
            uniq,
            run,
            host,
        })
    }

    /// A spec for task `name` of this test running `sh -c script`.
    fn sh(&self, name: &str, script: &str) -> ContainerTaskSpec {
        let mut spec = self.spec(name);
        spec.command = vec!["sh".into(), "-c".into()];
        spec.args = vec![script.into()];
        spec
    }

    fn spec(&self, name: &str) -> ContainerTaskSpec {
        let task_id = format!("{name}-{}", self.uniq);
        ContainerTaskSpec {
            task_id,
            service_id: "svc-id-1".into(),
            service_name: "web".into(),
            slot: 2,
            node_id: "node-1".into(),
            image: IMAGE.into(),
            labels: [(LABEL_TEST_RUN.to_string(), self.run.clone())].into(),
            stop_grace: Duration::from_secs(1),
            ..Default::default()
        }
    }

    fn docker(&self) -> &Docker {
        self.exec.client()
    }

    async fn inspect(&self, spec: &ContainerTaskSpec) -> bollard::models::ContainerInspectResponse {
        self.docker()
            .inspect_container(&spec.container_name(), None)
            .await
            .unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // The test's runtime may be gone or busy: clean up on a thread of
        // our own with its own runtime and client.
        let host = self.host.clone();
        let run = self.run.clone();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(remove_run(&host, &run));
        });
        let _ = cleanup.join();
    }
}

async fn remove_run(host: &str, run: &str) {
    let Ok(exec) = DockerExecutor::connect_to(host).await else {
        return;
    };
    let docker = exec.client();
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_TEST_RUN}={run}")],
        )])),
        ..Default::default()
    };
    for container in docker
        .list_containers(Some(options))
        .await
        .unwrap_or_default()
    {
        if let Some(id) = container.id {
            let options = bollard::query_parameters::RemoveContainerOptions {
                force: true,
                v: true,
                link: false,
            };
            if let Err(e) = docker.remove_container(&id, Some(options)).await {
                let _ = writeln!(std::io::stderr(), "cleanup: removing {id}: {e}");
            }
        }
    }
}

/// Makes `local/busybox:1` from /bin/busybox (as `docker import` would) if
/// the engine does not have it yet.
async fn ensure_image(docker: &Docker) -> Result<(), String> {
    // One import for all the tests of this process (each has its own runtime).
    static IMPORTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _importing = IMPORTING.lock().await;
    if docker.inspect_image(IMAGE).await.is_ok() {
        return Ok(());
    }
    let busybox = std::fs::read("/bin/busybox")
        .map_err(|e| format!("image {IMAGE} is missing and /bin/busybox is unreadable: {e}"))?;
    let mut tar = Tar::default();
    tar.dir("bin/");
    tar.file("bin/busybox", &busybox);
    for applet in ["sh", "sleep", "echo", "cat", "ls", "true", "false", "httpd"] {
        tar.symlink(&format!("bin/{applet}"), "busybox");
    }
    let options = bollard::query_parameters::CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some("local/busybox".into()),
        tag: Some("1".into()),
        ..Default::default()
    };
    use tokio_stream::StreamExt;
    let mut import = Box::pin(docker.create_image(
        Some(options),
        Some(bollard::body_full(tar.finish().into())),
        None,
    ));
    while let Some(step) = import.next().await {
        step.map_err(|e| format!("importing {IMAGE}: {e}"))?;
    }
    Ok(())
}

/// Just enough of ustar for a root filesystem of one file and some links.
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn header(&mut self, name: &str, mode: u32, size: usize, kind: u8, link: &str) {
        let mut h = [0u8; 512];
        let put = |h: &mut [u8; 512], at: usize, text: &[u8]| {
            h[at..at + text.len()].copy_from_slice(text);
        };
        put(&mut h, 0, name.as_bytes());
        put(&mut h, 100, format!("{mode:07o}\0").as_bytes());
        put(&mut h, 108, b"0000000\0");
        put(&mut h, 116, b"0000000\0");
        put(&mut h, 124, format!("{size:011o}\0").as_bytes());
        put(&mut h, 136, b"00000000000\0");
        put(&mut h, 148, b"        ");
        h[156] = kind;
        put(&mut h, 157, link.as_bytes());
        put(&mut h, 257, b"ustar\x0000");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&h);
    }

    fn dir(&mut self, name: &str) {
        self.header(name, 0o755, 0, b'5', "");
    }

    fn file(&mut self, name: &str, data: &[u8]) {
        self.header(name, 0o755, data.len(), b'0', "");
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.header(name, 0o777, 0, b'2', target);
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.resize(self.0.len() + 1024, 0);
        self.0
    }
}

async fn collect(mut rx: tokio::sync::mpsc::Receiver<LogLine>) -> Vec<LogLine> {
    let mut lines = Vec::new();
    while let Some(line) = rx.recv().await {
        lines.push(line);
    }
    lines
}

fn text(line: &LogLine) -> String {
    String::from_utf8_lossy(&line.line).into_owned()
}

async fn wait_soon(exec: &DockerExecutor, task_id: &str) -> shoal_agent::docker::ExitStatus {
    tokio::time::timeout(SOON, exec.wait(task_id))
        .await
        .expect("the container stops in time")
        .unwrap()
}

#[tokio::test]
async fn exit_code_and_both_output_streams_are_recorded() {
    let Some(h) = Harness::new("exit").await else {
        return;
    };
    let before = SystemTime::now() - Duration::from_secs(5);
    let spec = h.sh("exit", "echo hi; echo err >&2; exit 3");
    let handle = h.exec.start(spec.clone()).await.unwrap();
    assert!(!handle.container_id.is_empty());
    let status = wait_soon(&h.exec, &spec.task_id).await;
    assert_eq!(status.code, Some(3));
    assert_eq!(
        status.outcome(),
        ExitOutcome::Failed("task: non-zero exit (3)".into())
    );
    assert!(status.finished_at > before);

    let lines = collect(
        h.exec
            .logs(&spec.task_id, LogOptions::default())
            .await
            .unwrap(),
    )
    .await;
    let mut got: Vec<(OutputStream, String)> = lines.iter().map(|l| (l.stream, text(l))).collect();
    got.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(
        got,
        vec![
            (OutputStream::Stderr, "err".to_string()),
            (OutputStream::Stdout, "hi".to_string()),
        ]
    );
    let now = SystemTime::now() + Duration::from_secs(5);
    assert!(lines
        .iter()
        .all(|l| l.timestamp > before && l.timestamp < now));

    // The last line alone; nothing from the future.
    let tail = collect(
        h.exec
            .logs(
                &spec.task_id,
                LogOptions {
                    tail: Some(1),
                    ..Default::default()
                },
            )
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(tail.len(), 1);
    let since_later = collect(
        h.exec
            .logs(
                &spec.task_id,
                LogOptions {
                    since: Some(now),
                    ..Default::default()
                },
            )
            .await
            .unwrap(),
    )
    .await;
    assert!(since_later.is_empty());

    h.exec.remove(&spec.task_id).await.unwrap();
    assert!(matches!(
        h.exec.wait(&spec.task_id).await,
        Err(ExecError::NotFound(_))
    ));
    // Removing again is fine.
    h.exec.remove(&spec.task_id).await.unwrap();
}

#[tokio::test]
async fn successful_exit_is_complete_and_follow_ends_with_the_container() {
    let Some(h) = Harness::new("follow").await else {
        return;
    };
    let spec = h.sh("follow", "echo a; sleep 1; echo b");
    h.exec.start(spec.clone()).await.unwrap();
    let rx = h
        .exec
        .logs(
            &spec.task_id,
            LogOptions {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let lines = tokio::time::timeout(SOON, collect(rx))
        .await
        .expect("following ends when the container stops");
    assert_eq!(lines.iter().map(text).collect::<Vec<_>>(), vec!["a", "b"]);
    let status = wait_soon(&h.exec, &spec.task_id).await;
    assert_eq!(status.outcome(), ExitOutcome::Complete);
}

#[tokio::test]
async fn env_labels_name_and_identity_reach_the_container() {
    let Some(h) = Harness::new("env").await else {
        return;
    };
    let mut spec = h.sh("env", "echo \"$FOO|$(cat /etc/hostname)\"; pwd");
    spec.env = vec!["FOO=bar baz".into()];
    spec.dir = Some("/bin".into());
    spec.hostname = Some("myhost".into());
    spec.labels.insert("team".into(), "blue".into());
    h.exec.start(spec.clone()).await.unwrap();
    assert_eq!(
        wait_soon(&h.exec, &spec.task_id).await.outcome(),
        ExitOutcome::Complete
    );

    let inspect = h.inspect(&spec).await;
    assert_eq!(spec.container_name(), format!("web.2.{}", spec.task_id));
    assert_eq!(inspect.name, Some(format!("/{}", spec.container_name())));
    let config = inspect.config.unwrap();
    assert!(config.env.unwrap().contains(&"FOO=bar baz".to_string()));
    let labels = config.labels.unwrap();
    assert_eq!(labels["team"], "blue");
    assert_eq!(labels[LABEL_TASK_ID], spec.task_id);
    assert_eq!(labels[LABEL_TASK_NAME], spec.container_name());
    assert_eq!(labels[LABEL_SERVICE_ID], "svc-id-1");
    assert_eq!(labels[LABEL_SERVICE_NAME], "web");
    assert_eq!(labels[LABEL_NODE_ID], "node-1");
    assert_eq!(labels[LABEL_SHOAL_TASK], "1");

    let lines = collect(
        h.exec
            .logs(&spec.task_id, LogOptions::default())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        lines.iter().map(text).collect::<Vec<_>>(),
        vec!["bar baz|myhost", "/bin"]
    );

    // The same task cannot be started twice.
    assert_eq!(
        h.exec.start(spec.clone()).await,
        Err(ExecError::AlreadyExists(spec.task_id.clone()))
    );
}

#[tokio::test]
async fn a_killed_container_exits_non_zero() {
    let Some(h) = Harness::new("kill").await else {
        return;
    };
    let spec = h.sh("kill", "sleep 1000");
    let handle = h.exec.start(spec.clone()).await.unwrap();
    assert!(handle.pid > 0);
    h.docker()
        .kill_container(&handle.container_id, None::<KillContainerOptions>)
        .await
        .unwrap();
    let status = wait_soon(&h.exec, &spec.task_id).await;
    assert_eq!(status.code, Some(137));
    assert_eq!(
        status.outcome(),
        ExitOutcome::Failed("task: non-zero exit (137)".into())
    );
}

#[tokio::test]
async fn shutdown_kills_after_the_grace_period() {
    let Some(h) = Harness::new("shutdown").await else {
        return;
    };
    // `sleep` as PID 1 ignores SIGTERM: only SIGKILL ends it.
    let mut spec = h.spec("shutdown");
    spec.command = vec!["sleep".into()];
    spec.args = vec!["1000".into()];
    h.exec.start(spec.clone()).await.unwrap();
    let started = Instant::now();
    let status = h
        .exec
        .shutdown(&spec.task_id, Duration::from_secs(1))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(status.code, Some(137));
    let state = h.inspect(&spec).await.state.unwrap();
    assert_eq!(state.running, Some(false));
    // Shutting down a stopped container returns its status at once.
    let again = h
        .exec
        .shutdown(&spec.task_id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(again.code, Some(137));
}

#[tokio::test]
async fn shutdown_sends_the_stop_signal() {
    let Some(h) = Harness::new("stopsig").await else {
        return;
    };
    let mut spec = h.sh(
        "stopsig",
        "trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.1; done",
    );
    spec.stop_signal = Some("SIGINT".into());
    h.exec.start(spec.clone()).await.unwrap();
    // Signal only once the trap is set.
    let mut rx = h
        .exec
        .logs(
            &spec.task_id,
            LogOptions {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let first = tokio::time::timeout(SOON, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(&first), "ready");
    let started = Instant::now();
    let status = h
        .exec
        .shutdown(&spec.task_id, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(status.code, Some(7));
    let lines = collect(
        h.exec
            .logs(&spec.task_id, LogOptions::default())
            .await
            .unwrap(),
    )
    .await;
    assert!(lines.iter().any(|l| text(l) == "got-int"), "{lines:?}");
}

#[tokio::test]
async fn unknown_image_is_unavailable_with_the_engines_message() {
    let Some(h) = Harness::new("noimage").await else {
        return;
    };
    let mut spec = h.sh("noimage", "true");
    spec.image = "local/nope:1".into();
    let err = h.exec.start(spec.clone()).await.unwrap_err();
    let ExecError::ImageUnavailable(message) = &err else {
        panic!("expected ImageUnavailable, got {err:?}");
    };
    assert!(message.contains("local/nope:1"), "{message}");
    assert!(
        message.len() > "No such image: local/nope:1 (pull failed: )".len(),
        "{message}"
    );
    let _ = writeln!(std::io::stderr(), "unknown image: {message}");
    assert!(matches!(
        h.exec.status(&spec.task_id).await,
        Err(ExecError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_command_that_cannot_start_fails_with_the_engines_message() {
    let Some(h) = Harness::new("nocmd").await else {
        return;
    };
    let mut spec = h.spec("nocmd");
    spec.command = vec!["/no/such/program".into()];
    let err = h.exec.start(spec.clone()).await.unwrap_err();
    let ExecError::StartFailed(message) = &err else {
        panic!("expected StartFailed, got {err:?}");
    };
    assert!(message.contains("/no/such/program"), "{message}");
    // The container stays, stopped, with the error as its exit.
    let status = wait_soon(&h.exec, &spec.task_id).await;
    assert!(
        matches!(status.outcome(), ExitOutcome::Failed(m) if m.contains("/no/such/program")),
        "{status:?}"
    );
    h.exec.remove(&spec.task_id).await.unwrap();
}

#[tokio::test]
async fn a_new_executor_adopts_running_and_exited_containers() {
    let Some(h) = Harness::new("adopt").await else {
        return;
    };
    let mut running = h.sh("adopt-run", "sleep 1000");
    running.labels.insert("team".into(), "blue".into());
    let exited = h.sh("adopt-exit", "exit 5");
    let first = DockerExecutor::connect_to(&h.host).await.unwrap();
    let handle = first.start(running.clone()).await.unwrap();
    first.start(exited.clone()).await.unwrap();
    wait_soon(&first, &exited.task_id).await;
    drop(first);

    let second = DockerExecutor::connect_to(&h.host).await.unwrap();
    let found: Vec<_> = second
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.labels.get(LABEL_TEST_RUN) == Some(&h.run))
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    let (exit_found, run_found) = (&found[0], &found[1]);
    assert_eq!(exit_found.task_id, exited.task_id);
    assert_eq!(run_found.task_id, running.task_id);
    assert_eq!(run_found.task_name, running.container_name());
    assert_eq!(run_found.service_name, "web");
    assert_eq!(run_found.node_id, "node-1");
    assert_eq!(
        run_found.labels.get("team").map(String::as_str),
        Some("blue")
    );
    assert!(!run_found.labels.contains_key(LABEL_TASK_ID));
    match &run_found.state {
        AdoptedState::Running(adopted) => {
            assert_eq!(adopted.container_id, handle.container_id);
            assert_eq!(adopted.pid, handle.pid);
        }
        other => panic!("expected running, got {other:?}"),
    }
    match &exit_found.state {
        AdoptedState::Exited(status) => assert_eq!(status.code, Some(5)),
        other => panic!("expected exited, got {other:?}"),
    }

    // The adopted container is fully managed by the new executor.
    let status = second
        .shutdown(&running.task_id, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(status.code, Some(137));
    second.remove(&running.task_id).await.unwrap();
    second.remove(&exited.task_id).await.unwrap();
}

#[tokio::test]
async fn mounts_limits_and_security_options_reach_the_container() {
    let Some(h) = Harness::new("config").await else {
        return;
    };
    let mut spec = h.sh(
        "config",
        "(: > /x) 2>/dev/null && echo writable || echo read-only; \
         echo ok > /scratch/f && cat /scratch/f",
    );
    spec.read_only = true;
    spec.cap_drop = vec!["ALL".into()];
    spec.mounts = vec![MountSpec {
        kind: MountKind::Tmpfs,
        source: String::new(),
        target: "/scratch".into(),
        read_only: false,
    }];
    spec.limits = ContainerLimits {
        nano_cpus: 500_000_000,
        memory_bytes: 64 << 20,
        pids: 50,
    };
    spec.reservations = ContainerReservations {
        memory_bytes: 32 << 20,
    };
    spec.ulimits = vec![UlimitSpec {
        name: "nofile".into(),
        soft: 1024,
        hard: 2048,
    }];
    spec.init = Some(false);
    h.exec.start(spec.clone()).await.unwrap();
    let status = wait_soon(&h.exec, &spec.task_id).await;
    assert_eq!(status.outcome(), ExitOutcome::Complete, "{status:?}");

    let hc = h.inspect(&spec).await.host_config.unwrap();
    assert_eq!(hc.readonly_rootfs, Some(true));
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(hc.memory, Some(64 << 20));
    assert_eq!(hc.memory_reservation, Some(32 << 20));
    assert_eq!(hc.nano_cpus, Some(500_000_000));
    assert_eq!(hc.pids_limit, Some(50));
    let mounts = hc.mounts.unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].target.as_deref(), Some("/scratch"));
    assert_eq!(mounts[0].typ, Some(bollard::models::MountType::TMPFS));
    let ulimit = &hc.ulimits.unwrap()[0];
    assert_eq!((ulimit.soft, ulimit.hard), (Some(1024), Some(2048)));

    let lines = collect(
        h.exec
            .logs(&spec.task_id, LogOptions::default())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        lines.iter().map(text).collect::<Vec<_>>(),
        vec!["read-only", "ok"]
    );
}

#[tokio::test]
async fn healthcheck_reports_healthy() {
    let Some(h) = Harness::new("health").await else {
        return;
    };
    let mut spec = h.sh("health", "sleep 1000");
    spec.healthcheck = Some(HealthcheckSpec {
        test: vec!["CMD-SHELL".into(), "true".into()],
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
        retries: 3,
        start_period: Duration::ZERO,
    });
    h.exec.start(spec.clone()).await.unwrap();
    let deadline = Instant::now() + SOON;
    loop {
        let status = h.exec.status(&spec.task_id).await.unwrap();
        assert!(matches!(status.state, AdoptedState::Running(_)));
        if status.health == Some(HealthState::Healthy) {
            break;
        }
        assert!(Instant::now() < deadline, "never healthy: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = h.inspect(&spec).await.config.unwrap().healthcheck.unwrap();
    assert_eq!(health.interval, Some(200_000_000));
    assert_eq!(health.retries, Some(3));
}

#[tokio::test]
async fn engine_description_names_version_and_plugins() {
    let Some(h) = Harness::new("describe").await else {
        return;
    };
    h.exec.ping().await.unwrap();
    let info = h.exec.describe().await.unwrap();
    assert!(!info.version.is_empty());
    assert!(!info.api_version.is_empty());
    assert!(info.ncpu > 0 && info.memory_bytes > 0, "{info:?}");
    assert!(
        info.plugins
            .contains(&("Volume".to_string(), "local".to_string())),
        "{info:?}"
    );
    assert!(
        info.plugins.iter().any(|(kind, _)| kind == "Log"),
        "{info:?}"
    );
}

#[tokio::test]
async fn unknown_tasks_are_not_found() {
    let Some(h) = Harness::new("unknown").await else {
        return;
    };
    let id = format!("nope-{}", h.uniq);
    assert!(matches!(
        h.exec.wait(&id).await,
        Err(ExecError::NotFound(_))
    ));
    assert!(matches!(
        h.exec.shutdown(&id, Duration::from_secs(1)).await,
        Err(ExecError::NotFound(_))
    ));
    assert!(matches!(
        h.exec.logs(&id, LogOptions::default()).await,
        Err(ExecError::NotFound(_))
    ));
    h.exec.remove(&id).await.unwrap();
    let bad = h.spec("bad");
    let bad = ContainerTaskSpec {
        image: String::new(),
        ..bad
    };
    assert!(matches!(
        h.exec.start(bad).await,
        Err(ExecError::InvalidSpec(_))
    ));
}

/// Needs no engine: an address where none listens.
#[tokio::test]
async fn an_unreachable_engine_is_reported_as_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("unix://{}/docker.sock", dir.path().display());
    let err = DockerExecutor::connect_to(&missing).await.unwrap_err();
    assert!(matches!(err, ExecError::EngineUnavailable(_)), "{err:?}");
    assert!(err.to_string().contains("docker.sock"), "{err}");

    // A socket nobody accepts on.
    let path = dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let err = DockerExecutor::connect_to(&format!("unix://{}", path.display()))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::EngineUnavailable(_)), "{err:?}");

    let err = DockerExecutor::connect_to("tcp://127.0.0.1:2375")
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::EngineUnavailable(_)), "{err:?}");
}

/// Needs no engine: a fake one answers the version handshake, then goes
/// away; every later call says the engine is unavailable.
#[tokio::test]
async fn an_engine_that_goes_away_is_reported_as_unavailable() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let fake = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed early");
            request.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"Version":"0.0.0-fake","ApiVersion":"1.41"}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(response.as_bytes()).await.unwrap();
        // The listener is dropped here: nobody accepts any more.
    });
    let exec = DockerExecutor::connect_to(&format!("unix://{}", path.display()))
        .await
        .unwrap();
    fake.await.unwrap();

    assert!(matches!(
        exec.ping().await,
        Err(ExecError::EngineUnavailable(_))
    ));
    let spec = ContainerTaskSpec {
        task_id: "t1".into(),
        service_name: "web".into(),
        slot: 1,
        image: IMAGE.into(),
        ..Default::default()
    };
    let err = exec.start(spec).await.unwrap_err();
    assert!(matches!(err, ExecError::EngineUnavailable(_)), "{err:?}");
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(matches!(
        exec.list().await,
        Err(ExecError::EngineUnavailable(_))
    ));
    assert!(matches!(
        exec.wait("t1").await,
        Err(ExecError::EngineUnavailable(_))
    ));
}

/// A unix-socket relay to the engine that counts the HTTP requests going
/// through it, by method and path (IDs and queries left out).
struct CountingRelay {
    path: std::path::PathBuf,
    counts: std::sync::Arc<std::sync::Mutex<HashMap<String, usize>>>,
    accept: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl CountingRelay {
    fn start(engine: &str) -> CountingRelay {
        let engine = engine.strip_prefix("unix://").unwrap_or(engine).to_string();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let counts = std::sync::Arc::new(std::sync::Mutex::new(HashMap::new()));
        let c = counts.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::UnixStream::connect(&engine).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let c = c.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        count_requests(&mut seen, &c);
                    }
                    let _ = sw.shutdown().await;
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
            }
        });
        CountingRelay {
            path,
            counts,
            accept,
            _dir: dir,
        }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    fn count(&self, key: &str) -> usize {
        self.counts.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    fn all(&self) -> HashMap<String, usize> {
        self.counts.lock().unwrap().clone()
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Counts the complete request lines in `seen` (`METHOD /path HTTP/1.1`),
/// keeping the unfinished tail.
fn count_requests(seen: &mut Vec<u8>, counts: &std::sync::Mutex<HashMap<String, usize>>) {
    let mut start = 0;
    while let Some(end) = seen[start..].windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&seen[start..start + end]).to_string();
        start += end + 2;
        let mut parts = line.split(' ');
        let (Some(method), Some(target), Some(version)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !version.starts_with("HTTP/1.") {
            continue;
        }
        let path = target.split('?').next().unwrap_or_default();
        let path = path
            .strip_prefix("/v1.")
            .and_then(|p| p.split_once('/').map(|(_, rest)| format!("/{rest}")))
            .unwrap_or_else(|| path.to_string());
        // /containers/{id}/start → /containers/{}/start
        let mut segments: Vec<&str> = path.split('/').collect();
        if segments.len() >= 3
            && segments[1] == "containers"
            && segments[2] != "create"
            && segments[2] != "json"
        {
            segments[2] = "{}";
        }
        let key = format!("{method} {}", segments.join("/"));
        *counts.lock().unwrap().entry(key).or_default() += 1;
    }
    seen.drain(..start);
}

/// What a container costs the engine: create, start and one inspect each;
/// its exit comes from the executor's one event stream (no `wait` request,
/// no inspect when it ends), and a shutdown adds only the stop.
#[tokio::test]
async fn exits_come_from_one_event_stream_not_a_request_per_container() {
    let Some(h) = Harness::new("events").await else {
        return;
    };
    let relay = CountingRelay::start(&h.host);
    let exec = DockerExecutor::connect_to(&relay.host()).await.unwrap();
    let specs: Vec<_> = (0..3)
        .map(|i| {
            h.sh(
                &format!("events-{i}"),
                &format!("sleep 0.3; exit {}", i + 3),
            )
        })
        .collect();
    for spec in &specs {
        exec.start(spec.clone()).await.unwrap();
    }
    let long = h.sh("events-long", "sleep 1000");
    exec.start(long.clone()).await.unwrap();
    for (i, spec) in specs.iter().enumerate() {
        let status = tokio::time::timeout(SOON, exec.wait(&spec.task_id))
            .await
            .expect("no exit within 20 s")
            .unwrap();
        assert_eq!(status.code, Some(i as i32 + 3));
    }
    let status = exec
        .shutdown(&long.task_id, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(status.code, Some(137));
    // Asked again: answered from what the stream said.
    let again = exec.wait(&specs[0].task_id).await.unwrap();
    assert_eq!(again.code, Some(3));

    let counts = relay.all();
    assert_eq!(relay.count("POST /containers/create"), 4, "{counts:?}");
    assert_eq!(relay.count("POST /containers/{}/start"), 4, "{counts:?}");
    assert_eq!(relay.count("GET /containers/{}/json"), 4, "{counts:?}");
    assert_eq!(relay.count("POST /containers/{}/stop"), 1, "{counts:?}");
    assert_eq!(relay.count("POST /containers/{}/wait"), 0, "{counts:?}");
    assert_eq!(relay.count("GET /events"), 1, "{counts:?}");
    for spec in specs.iter().chain([&long]) {
        exec.remove(&spec.task_id).await.unwrap();
    }
}
