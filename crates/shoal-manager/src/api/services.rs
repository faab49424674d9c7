//! `/services`: create, list (with status), inspect (with defaults),
//! update (and server-side rollback), remove.

use super::blobs::resolve;
use super::error::{bool_param, json_body, version_param};
use super::nodes::filters;
use super::{ApiError, ApiState};
use crate::writes;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};
use shoal_api::ServiceStatus;
use shoal_api::{
    ContainerSpec, Endpoint, EndpointSpec, ModeKind, ReplicatedMode, RuntimeKind, Service,
    ServiceSpec, TaskSpec, TaskState, Timestamp, UpdateStatus,
};
use shoal_store::{Expect, Kind, Object, Tables};
use std::collections::HashMap;

fn valid_name(name: &str) -> bool {
    let mut cs = name.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphanumeric())
        && cs.all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.len() <= 63
}

/// Checks a spec and fills the defaults Docker's daemon fills on create.
pub fn normalize(spec: &mut ServiceSpec, t: &Tables) -> Result<(), ApiError> {
    if spec.name.is_empty() {
        return Err(ApiError::bad_request("service name must not be empty"));
    }
    if !valid_name(&spec.name) {
        return Err(ApiError::bad_request(format!(
            "invalid service name {:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at most 63 characters",
            spec.name
        )));
    }
    let mode = &mut spec.mode;
    match mode.count_set() {
        0 => mode.replicated = Some(ReplicatedMode { replicas: Some(1) }),
        1 => {}
        _ => {
            return Err(ApiError::bad_request(
                "only one of Replicated, Global, ReplicatedJob and GlobalJob may be set",
            ))
        }
    }
    if let Some(r) = &mut mode.replicated {
        r.replicas.get_or_insert(1);
    }
    if let Some(j) = &mut mode.replicated_job {
        let mc = *j.max_concurrent.get_or_insert(1);
        if mc == 0 {
            return Err(ApiError::bad_request("MaxConcurrent must be at least 1"));
        }
        j.total_completions.get_or_insert(mc);
    }
    let tpl = &mut spec.task_template;
    match tpl.runtime.as_str() {
        "" | "container" | "process" => {}
        other => {
            return Err(ApiError::bad_request(format!(
                "unsupported runtime {other:?}: use container or process"
            )))
        }
    }
    match tpl.runtime_kind() {
        RuntimeKind::Process => {
            let p = tpl
                .process_spec
                .as_ref()
                .ok_or_else(|| ApiError::bad_request("runtime process needs a ProcessSpec"))?;
            if p.command.trim().is_empty() {
                return Err(ApiError::bad_request(
                    "ProcessSpec: the command must not be empty",
                ));
            }
            tpl.runtime = "process".into();
        }
        RuntimeKind::Container => {
            let c = tpl.container_spec.as_ref().ok_or_else(|| {
                ApiError::bad_request("ContainerSpec: image reference must be provided")
            })?;
            if c.image.trim().is_empty() {
                return Err(ApiError::bad_request(
                    "ContainerSpec: image reference must be provided",
                ));
            }
        }
    }
    if let Some(p) = &tpl.placement {
        shoal_scheduler::parse_constraints(&p.constraints)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let prefs: Vec<String> = p
            .preferences
            .iter()
            .map(|x| {
                x.spread
                    .as_ref()
                    .map(|s| format!("spread={}", s.spread_descriptor))
                    .unwrap_or_default()
            })
            .collect();
        shoal_scheduler::parse_preferences(&prefs)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if !["", "spread", "binpack", "random"].contains(&p.strategy.as_str()) {
            return Err(ApiError::bad_request(format!(
                "invalid placement strategy {:?}: use spread, binpack or random",
                p.strategy
            )));
        }
    }
    if let Some(r) = &tpl.resources {
        let neg = |x: i64| x < 0;
        let l = r.limits.clone().unwrap_or_default();
        let v = r.reservations.clone().unwrap_or_default();
        if neg(l.nano_cpus) || neg(l.memory_bytes) || neg(v.nano_cpus) || neg(v.memory_bytes) {
            return Err(ApiError::bad_request("resources must not be negative"));
        }
    }
    if let Some(p) = &tpl.restart_policy {
        if p.delay.is_some_and(|d| d < 0) || p.window.is_some_and(|d| d < 0) {
            return Err(ApiError::bad_request(
                "restart delay and window must not be negative",
            ));
        }
    }
    for cfg in [&spec.update_config, &spec.rollback_config]
        .into_iter()
        .flatten()
    {
        if !["", "stop-first", "start-first"].contains(&cfg.order.as_str()) {
            return Err(ApiError::bad_request(format!(
                "invalid update order {:?}: use stop-first or start-first",
                cfg.order
            )));
        }
        if !["", "pause", "continue", "rollback"].contains(&cfg.failure_action.as_str()) {
            return Err(ApiError::bad_request(format!(
                "invalid failure action {:?}",
                cfg.failure_action
            )));
        }
        if cfg.delay < 0 || cfg.monitor < 0 {
            return Err(ApiError::bad_request(
                "update delay and monitor must not be negative",
            ));
        }
    }
    let ep = spec.endpoint_spec.get_or_insert_with(EndpointSpec::default);
    match ep.mode.as_deref() {
        None | Some("") => ep.mode = Some("vip".into()),
        Some("vip") | Some("dnsrr") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid endpoint mode {other:?}: use vip or dnsrr"
            )))
        }
    }
    for p in &mut ep.ports {
        if p.protocol.is_empty() {
            p.protocol = "tcp".into();
        }
        if p.publish_mode.is_empty() {
            p.publish_mode = "ingress".into();
        }
        if p.target_port == 0 || p.target_port > 65535 || p.published_port > 65535 {
            return Err(ApiError::bad_request(format!(
                "invalid port {}:{}",
                p.published_port, p.target_port
            )));
        }
        if !["tcp", "udp", "sctp"].contains(&p.protocol.as_str())
            || !["ingress", "host"].contains(&p.publish_mode.as_str())
        {
            return Err(ApiError::bad_request(format!(
                "invalid port protocol or mode: {}/{}",
                p.protocol, p.publish_mode
            )));
        }
    }
    for n in &mut spec.task_template.networks {
        let net = resolve(&t.networks, &n.target, "network")?;
        n.target = net.id.clone();
    }
    Ok(())
}

fn endpoint_of(spec: &ServiceSpec) -> Option<Endpoint> {
    let es = spec.endpoint_spec.clone().unwrap_or_default();
    Some(Endpoint {
        ports: es.ports.clone(),
        spec: es,
        virtual_ips: Vec::new(),
    })
}

/// Whether a request comes from the docker CLI (or another Docker client).
pub fn is_docker_client(h: &HeaderMap) -> bool {
    h.get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("Docker-Client/") || ua.starts_with("Go-http-client/"))
}

/// A task template as Docker clients need it: the docker CLI reads
/// `ContainerSpec.Image` of every task and service (and crashes without a
/// `ContainerSpec`), drops the fields it does not know (`ProcessSpec`)
/// when it sends a spec back, and refuses a `ContainerSpec` with a runtime
/// other than `container`. So a process task shows its command, args, env,
/// dir, user and stop grace period as a ContainerSpec, with no `Runtime`;
/// on update, [`restore_process`] turns that back into the process spec.
pub fn docker_view(tpl: &mut TaskSpec) {
    if tpl.runtime_kind() != RuntimeKind::Process || tpl.container_spec.is_some() {
        return;
    }
    if let Some(p) = &tpl.process_spec {
        tpl.container_spec = Some(ContainerSpec {
            image: p.command.clone(),
            args: p.args.clone(),
            env: p.env.clone(),
            dir: p.dir.clone(),
            user: p.user.clone(),
            stop_grace_period: p.stop_grace_period,
            ..Default::default()
        });
        tpl.runtime.clear();
    }
}

/// When a process service's spec comes back from a Docker client as
/// [`docker_view`] showed it (no ProcessSpec, a ContainerSpec whose image is
/// the process's command), rebuilds the process spec with the edits made
/// to that ContainerSpec.
fn restore_process(current: &TaskSpec, new: &mut TaskSpec) {
    if current.runtime_kind() != RuntimeKind::Process
        || !matches!(new.runtime.as_str(), "" | "container" | "process")
    {
        return;
    }
    let (Some(cur), Some(c)) = (&current.process_spec, &new.container_spec) else {
        return;
    };
    // The docker client adds `:latest` to an image without a tag.
    if c.image != cur.command && c.image != format!("{}:latest", cur.command) {
        return;
    }
    let mut p = new.process_spec.clone().unwrap_or_else(|| cur.clone());
    p.args = c.args.clone();
    p.env = c.env.clone();
    p.dir = c.dir.clone();
    p.user = c.user.clone();
    p.stop_grace_period = c.stop_grace_period;
    new.process_spec = Some(p);
    new.container_spec = None;
    new.runtime = "process".into();
}

/// A service as the API shows it (to Docker clients, process services get
/// a stand-in `ContainerSpec`, which the docker CLI needs).
pub fn present(mut svc: Service, docker: bool) -> Service {
    if !docker {
        return svc;
    }
    docker_view(&mut svc.spec.task_template);
    if let Some(p) = &mut svc.previous_spec {
        docker_view(&mut p.task_template);
    }
    svc
}

/// `POST /services/create`.
pub async fn create(
    State(s): State<ApiState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let m = s.manager()?;
    let mut spec: ServiceSpec = json_body(&body)?;
    m.store.view(|t| normalize(&mut spec, t))?;
    let now = Timestamp::now();
    let svc = Service {
        id: shoal_api::new_id(),
        created_at: now,
        updated_at: now,
        endpoint: endpoint_of(&spec),
        spec,
        ..Default::default()
    };
    let id = svc.id.clone();
    writes::commit_one(&m.proposer, Object::Service(svc.into()), Expect::Absent).await?;
    Ok((StatusCode::CREATED, Json(json!({ "ID": id }))))
}

/// Running/desired/completed counts of a service.
pub fn status_of(t: &Tables, svc: &Service) -> ServiceStatus {
    let mut st = ServiceStatus::default();
    let mut live = 0;
    for task in t.tasks_of_service(&svc.id) {
        if task.desired_state <= TaskState::Running {
            live += 1;
            if task.status.state == TaskState::Running {
                st.running_tasks += 1;
            }
        }
        if task.status.state == TaskState::Complete {
            st.completed_tasks += 1;
        }
    }
    st.desired_tasks = match svc.spec.mode.kind() {
        ModeKind::Replicated => svc.spec.mode.replicas().unwrap_or(1),
        ModeKind::ReplicatedJob => {
            let j = svc.spec.mode.replicated_job.clone().unwrap_or_default();
            let total = j.total_completions.unwrap_or(1);
            j.max_concurrent
                .unwrap_or(1)
                .min(total.saturating_sub(st.completed_tasks))
        }
        _ => live,
    };
    st
}

/// `GET /services`.
pub async fn list(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Vec<Service>>, ApiError> {
    let m = s.manager()?;
    let docker = is_docker_client(&headers);
    let f = filters(&q)?;
    for k in f.keys() {
        if !["id", "name", "label", "mode"].contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!("invalid filter '{k}'")));
        }
    }
    let status = bool_param(q.get("status"));
    let out = m.store.view(|t| {
        t.services
            .iter()
            .filter(|x| {
                f.get("id")
                    .is_none_or(|v| v.iter().any(|i| x.id.starts_with(i.as_str())))
            })
            .filter(|x| {
                f.get("name")
                    .is_none_or(|v| v.iter().any(|n| x.spec.name.starts_with(n.as_str())))
            })
            .filter(|x| {
                f.get("mode")
                    .is_none_or(|v| v.iter().any(|md| md == x.spec.mode.kind().as_str()))
            })
            .filter(|x| {
                f.get("label").is_none_or(|ls| {
                    ls.iter().all(|l| match l.split_once('=') {
                        Some((k, v)) => x.spec.labels.get(k).is_some_and(|y| y == v),
                        None => x.spec.labels.contains_key(l),
                    })
                })
            })
            .map(|x| {
                let mut svc = (**x).clone();
                if status {
                    svc.service_status = Some(status_of(t, x));
                }
                present(svc, docker)
            })
            .collect()
    });
    Ok(Json(out))
}

/// The spec as `insertDefaults=true` shows it.
fn with_defaults(mut svc: Service) -> Service {
    let spec = &mut svc.spec;
    let tpl = &mut spec.task_template;
    if let Some(c) = &mut tpl.container_spec {
        c.stop_grace_period.get_or_insert(10_000_000_000);
        c.extra
            .entry("Isolation".into())
            .or_insert_with(|| json!("default"));
    }
    if let Some(p) = &mut tpl.process_spec {
        p.stop_grace_period.get_or_insert(10_000_000_000);
    }
    tpl.restart_policy = Some(tpl.restart());
    let rp = tpl.restart_policy.as_mut().expect("set");
    rp.max_attempts.get_or_insert(0);
    tpl.resources.get_or_insert_with(Default::default);
    tpl.placement.get_or_insert_with(Default::default);
    if tpl.runtime.is_empty() && tpl.process_spec.is_none() {
        tpl.runtime = "container".into();
    }
    let default_update = shoal_api::UpdateConfig {
        parallelism: 1,
        failure_action: "pause".into(),
        monitor: 5_000_000_000,
        order: "stop-first".into(),
        ..Default::default()
    };
    spec.update_config
        .get_or_insert_with(|| default_update.clone());
    spec.rollback_config.get_or_insert(default_update);
    svc
}

/// Finds a service by exact ID, exact name or unique ID prefix.
pub fn find(t: &Tables, key: &str) -> Result<std::sync::Arc<Service>, ApiError> {
    resolve(&t.services, key, "service")
}

/// `GET /services/{id}`.
pub async fn inspect(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Service>, ApiError> {
    let m = s.manager()?;
    let svc = (*m.store.view(|t| find(t, &id))?).clone();
    let svc = present(svc, is_docker_client(&headers));
    Ok(Json(if bool_param(q.get("insertDefaults")) {
        with_defaults(svc)
    } else {
        svc
    }))
}

/// `POST /services/{id}/update?version=N[&rollback=previous]`.
pub async fn update(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let m = s.manager()?;
    let version = version_param(q.get("version"))?;
    let current = (*m.store.view(|t| find(t, &id))?).clone();
    let rollback = q.get("rollback").map(String::as_str) == Some("previous");
    let mut spec: ServiceSpec = if rollback {
        current.previous_spec.clone().ok_or_else(|| {
            ApiError::bad_request(format!(
                "service {} does not have a previous spec",
                current.spec.name
            ))
        })?
    } else {
        json_body(&body)?
    };
    if spec.name.is_empty() {
        spec.name = current.spec.name.clone();
    }
    restore_process(&current.spec.task_template, &mut spec.task_template);
    if spec.name != current.spec.name {
        return Err(ApiError::bad_request(
            "rpc error: code = Unimplemented desc = renaming services is not supported",
        ));
    }
    m.store.view(|t| normalize(&mut spec, t))?;
    let (old_kind, new_kind) = (current.spec.mode.kind(), spec.mode.kind());
    if old_kind != new_kind {
        return Err(ApiError::bad_request(
            "rpc error: code = Unimplemented desc = service mode change is not allowed",
        ));
    }
    let now = Timestamp::now();
    let mut svc = current.clone();
    let template_changed = spec.task_template != current.spec.task_template;
    svc.previous_spec = Some(current.spec.clone());
    svc.endpoint = endpoint_of(&spec);
    svc.spec = spec;
    svc.updated_at = now;
    svc.service_status = None;
    if template_changed {
        svc.update_status = Some(if rollback {
            UpdateStatus {
                state: "rollback_started".into(),
                started_at: Some(now),
                completed_at: None,
                message: "manually requested rollback".into(),
            }
        } else {
            UpdateStatus {
                state: "updating".into(),
                started_at: Some(now),
                completed_at: None,
                message: "update in progress".into(),
            }
        });
    }
    writes::commit_one(
        &m.proposer,
        Object::Service(svc.into()),
        Expect::Version(version),
    )
    .await?;
    Ok(Json(json!({ "Warnings": null })))
}

/// `DELETE /services/{id}`.
pub async fn remove(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let m = s.manager()?;
    let svc = m.store.view(|t| find(t, &id))?;
    writes::delete_one(&m.proposer, Kind::Service, &svc.id, None).await?;
    Ok(StatusCode::OK)
}
