//! The Python Docker SDK (the `docker` package, 7.x) drives two shoal nodes
//! through their Docker API sockets: swarm init/join/leave, nodes, secrets,
//! configs, networks and services (`tests/sdk/swarm_sdk.py`). Skipped, with
//! a `SKIPPED` line, when no Python with the SDK is found (`SHOAL_PYTHON`,
//! else `python3`); `.ci/run` provides one.

mod common;

use common::{free_port, Cluster};
use std::process::Command;

fn python() -> Option<String> {
    let py = std::env::var("SHOAL_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args([
            "-c",
            "import docker, sys; sys.exit(int(docker.__version__.split('.')[0]) < 7)",
        ])
        .status()
        .ok()?
        .success();
    ok.then_some(py)
}

/// Whether the nodes have a Docker Engine with the test image.
fn engine_with_image() -> bool {
    std::env::var("DOCKER_HOST").is_ok()
        && common::docker::engine(&["image", "inspect", common::docker::BUSYBOX_IMAGE]).is_some()
}

#[test]
fn python_docker_sdk_drives_the_swarm() {
    let Some(py) = python() else {
        eprintln!("SKIPPED python_sdk test: no Python with the docker 7.x package");
        return;
    };
    let _containers = common::docker::ServiceContainers("sdk-web");
    let mut c = Cluster::new();
    let sock = |n: &str| c.tmp.path().join(format!("{n}-docker.sock"));
    let (sa, sb) = (sock("a"), sock("b"));
    c.idle("a", &["--docker-socket", sa.to_str().unwrap()]);
    c.idle("b", &["--docker-socket", sb.to_str().unwrap()]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/swarm_sdk.py");
    let out = Command::new(py)
        .arg(script)
        .env("DOCKER_HOST", format!("unix://{}", sa.display()))
        .env("SECOND_HOST", format!("unix://{}", sb.display()))
        .env("PORT_A", free_port().to_string())
        .env("PORT_B", free_port().to_string())
        .env("WITH_ENGINE", if engine_with_image() { "1" } else { "0" })
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("SDK OK"),
        "the SDK script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
