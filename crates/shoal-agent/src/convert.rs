//! From the API's task (Docker `ContainerSpec` JSON) to the executors' specs.

use crate::docker::{
    ContainerLimits, ContainerReservations, ContainerTaskSpec, HealthcheckSpec, MountKind,
    MountSpec, UlimitSpec,
};
use serde_json::Value;
use shoal_api::Task;
use std::time::Duration;

fn ns(v: &Value) -> Duration {
    Duration::from_nanos(v.as_i64().unwrap_or(0).max(0) as u64)
}

/// The docker executor's spec for a task.
pub fn container_spec(
    task: &Task,
    service_name: &str,
    node_id: &str,
) -> Result<ContainerTaskSpec, String> {
    let c = task
        .spec
        .container_spec
        .as_ref()
        .ok_or("the task has no ContainerSpec")?;
    let mut mounts = Vec::new();
    for m in &c.mounts {
        let kind = match m["Type"].as_str().unwrap_or("volume") {
            "bind" => MountKind::Bind,
            "volume" => MountKind::Volume,
            "tmpfs" => MountKind::Tmpfs,
            other => return Err(format!("unsupported mount type {other:?}")),
        };
        let target = m["Target"].as_str().unwrap_or_default().to_string();
        if target.is_empty() {
            return Err("a mount needs a Target".into());
        }
        mounts.push(MountSpec {
            kind,
            source: m["Source"].as_str().unwrap_or_default().to_string(),
            target,
            read_only: m["ReadOnly"].as_bool().unwrap_or(false),
        });
    }
    let healthcheck = c.health_check.as_ref().map(|h| HealthcheckSpec {
        test: h["Test"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        interval: ns(&h["Interval"]),
        timeout: ns(&h["Timeout"]),
        retries: h["Retries"].as_u64().unwrap_or(0) as u32,
        start_period: ns(&h["StartPeriod"]),
    });
    let ulimits = c
        .ulimits
        .iter()
        .map(|u| UlimitSpec {
            name: u["Name"].as_str().unwrap_or_default().to_string(),
            soft: u["Soft"].as_i64().unwrap_or(0),
            hard: u["Hard"].as_i64().unwrap_or(0),
        })
        .collect();
    let limits = task.spec.limits();
    let pids = task
        .spec
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .map(|l| l.pids)
        .unwrap_or(0);
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(ContainerTaskSpec {
        task_id: task.id.clone(),
        task_name: String::new(),
        service_id: task.service_id.clone(),
        service_name: service_name.to_string(),
        slot: task.slot,
        node_id: node_id.to_string(),
        image: c.image.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        env: c.env.clone(),
        dir: opt(&c.dir),
        user: opt(&c.user),
        hostname: opt(&c.hostname),
        labels: c.labels.clone().unwrap_or_default(),
        mounts,
        stop_signal: opt(&c.stop_signal),
        stop_grace: task.spec.stop_grace_period(),
        healthcheck,
        init: c.init,
        read_only: c.read_only,
        cap_add: c.capability_add.clone(),
        cap_drop: c.capability_drop.clone(),
        sysctls: c.sysctls.clone().unwrap_or_default(),
        ulimits,
        limits: ContainerLimits {
            nano_cpus: limits.nano_cpus,
            memory_bytes: limits.memory_bytes,
            pids,
        },
        reservations: ContainerReservations {
            memory_bytes: task.spec.reservations().memory_bytes,
        },
        network_mode: None,
    })
}
