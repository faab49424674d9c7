//! Helpers for the tests that need a real Docker Engine: the one at
//! DOCKER_HOST (`.ci/run` starts a private one), driven with the docker CLI.

use std::path::Path;
use std::process::Command;

/// The docker CLI: /usr/local/bin/docker (CLI 28) if present, else `docker`
/// on PATH.
pub fn docker_bin() -> &'static str {
    if Path::new("/usr/local/bin/docker").exists() {
        "/usr/local/bin/docker"
    } else {
        "docker"
    }
}

/// The real engine's address (what the daemons under test use too).
pub fn engine_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// Runs the docker CLI against the real engine; its stdout if it succeeded.
pub fn engine(args: &[&str]) -> Option<String> {
    let out = Command::new(docker_bin())
        .args(args)
        .env("DOCKER_HOST", engine_host())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

/// The image container tests run: /bin/busybox and a few of its applets.
pub const BUSYBOX_IMAGE: &str = "local/busybox:1";

/// Whether an engine answers and has [`BUSYBOX_IMAGE`] (imported from
/// /bin/busybox when missing: no registry is needed).
pub fn engine_with_busybox() -> Result<(), String> {
    engine(&["version"]).ok_or_else(|| format!("no Docker Engine answers at {}", engine_host()))?;
    if engine(&["image", "inspect", BUSYBOX_IMAGE]).is_some() {
        return Ok(());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .map_err(|e| format!("no /bin/busybox to build {BUSYBOX_IMAGE} from: {e}"))?;
    for applet in ["sh", "sleep", "echo", "cat", "ls", "true", "false", "httpd"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).map_err(|e| e.to_string())?;
    }
    let imported = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -c . | {} import - {BUSYBOX_IMAGE}",
            dir.path().display(),
            docker_bin()
        ))
        .env("DOCKER_HOST", engine_host())
        .status()
        .map_err(|e| e.to_string())?
        .success();
    imported
        .then_some(())
        .ok_or_else(|| format!("could not import {BUSYBOX_IMAGE}"))
}

/// Removes (through the real engine) every container of the given node IDs
/// when dropped, pass or fail (declared before the cluster, it is dropped
/// after the daemons are gone).
pub struct Containers(pub Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for node in &self.0 {
            remove_labelled(&format!("com.docker.swarm.node.id={node}"));
        }
    }
}

/// Removes every container of a service (by its Swarm label) when dropped.
pub struct ServiceContainers(pub &'static str);

impl Drop for ServiceContainers {
    fn drop(&mut self) {
        remove_labelled(&format!("com.docker.swarm.service.name={}", self.0));
    }
}

/// Removes the engine's containers carrying `label` (`KEY=VALUE`).
fn remove_labelled(label: &str) {
    if let Some(ids) = engine(&["ps", "-aq", "--filter", &format!("label={label}")]) {
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            engine(&args);
        }
    }
}
