//! `/swarm`: inspect, update (settings, token rotation), leave.

use super::error::{bool_param, json_body, version_param};
use super::{ApiError, ApiState, HostRequest, Presence};
use crate::writes;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use shoal_api::{
    Cluster, ClusterSpec, InitRequest, JoinRequest, NodeRole, Timestamp, UnlockRequest,
};
use shoal_net::pki::RootCa;
use shoal_net::token::JoinToken;
use shoal_store::{Expect, Object};
use std::collections::HashMap;

/// `GET /swarm`.
pub async fn inspect(State(s): State<ApiState>) -> Result<Json<Cluster>, ApiError> {
    let m = s.manager()?;
    let c = m
        .store
        .view(|t| t.cluster.clone())
        .ok_or_else(|| ApiError::internal("no cluster object"))?;
    Ok(Json(present(&c.cluster)))
}

/// The cluster as the API shows it: the settings in effect, defaults
/// included (as swarmkit stores them explicitly).
pub fn present(c: &Cluster) -> Cluster {
    let mut c = c.clone();
    let spec = &mut c.spec;
    spec.orchestration
        .task_history_retention_limit
        .get_or_insert(shoal_api::DEFAULT_TASK_HISTORY);
    spec.dispatcher
        .heartbeat_period
        .get_or_insert(shoal_api::DEFAULT_HEARTBEAT_PERIOD.as_nanos() as i64);
    spec.ca_config
        .node_cert_expiry
        .get_or_insert(shoal_api::DEFAULT_NODE_CERT_EXPIRY.as_nanos() as i64);
    if spec.name.is_empty() {
        spec.name = "default".into();
    }
    if c.default_addr_pool.is_none() {
        c.default_addr_pool = Some(vec!["10.0.0.0/8".into()]);
    }
    if c.subnet_size == 0 {
        c.subnet_size = 24;
    }
    if c.data_path_port == 0 {
        c.data_path_port = 4789;
    }
    c
}

/// A fresh join token for `role` of the cluster whose root CA is `ca_cert_pem`.
pub fn new_token(ca_cert_pem: &str, ca_key_pem: &str, role: NodeRole) -> Result<String, ApiError> {
    let ca =
        RootCa::from_pem(ca_cert_pem, ca_key_pem).map_err(|e| ApiError::internal(e.to_string()))?;
    let role = crate::ca::cert_role(role);
    Ok(JoinToken::generate(&ca.digest_bytes(), role).to_string())
}

/// Refuses settings out of range.
fn validate_spec(spec: &ClusterSpec) -> Result<(), ApiError> {
    if let Some(n) = spec.orchestration.task_history_retention_limit {
        if n < 0 {
            return Err(ApiError::bad_request(format!(
                "invalid task history retention limit {n}: must be 0 or more"
            )));
        }
    }
    if let Some(hb) = spec.dispatcher.heartbeat_period {
        if hb < 0 {
            return Err(ApiError::bad_request(
                "invalid heartbeat period: must be positive",
            ));
        }
    }
    Ok(())
}

/// `POST /swarm/update?version=N&rotateWorkerToken=…&rotateManagerToken=…` with a `ClusterSpec`.
pub async fn update(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let m = s.manager()?;
    let version = version_param(q.get("version"))?;
    let spec: ClusterSpec = json_body(&body)?;
    validate_spec(&spec)?;
    let mut rec = (*m
        .store
        .view(|t| t.cluster.clone())
        .ok_or_else(|| ApiError::internal("no cluster object"))?)
    .clone();
    if bool_param(q.get("rotateWorkerToken")) {
        rec.cluster.join_tokens.worker =
            new_token(&rec.ca_cert_pem, &rec.ca_key_pem, NodeRole::Worker)?;
    }
    if bool_param(q.get("rotateManagerToken")) {
        rec.cluster.join_tokens.manager =
            new_token(&rec.ca_cert_pem, &rec.ca_key_pem, NodeRole::Manager)?;
    }
    // Autolock: a key while it is on (a new one on rotation), none when off.
    if !spec.encryption_config.auto_lock_managers {
        rec.unlock_key.clear();
    } else if rec.unlock_key.is_empty() || bool_param(q.get("rotateManagerUnlockKey")) {
        rec.unlock_key = shoal_net::lock::UnlockKey::generate().to_string();
    }
    rec.cluster.spec = spec;
    rec.cluster.updated_at = Timestamp::now();
    writes::commit_one(
        &m.proposer,
        Object::Cluster(rec.into()),
        Expect::Version(version),
    )
    .await?;
    Ok(StatusCode::OK)
}

/// `POST /swarm/leave?force=bool`, with Docker's refusals.
pub async fn leave(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let force = bool_param(q.get("force"));
    match s.presence {
        Presence::Inactive => return Err(ApiError::no_swarm()),
        Presence::Locked if !force => {
            return Err(ApiError::unavailable(
                "Swarm is encrypted and locked. Please unlock it first or use `--force` to ignore this message.",
            ))
        }
        _ => {}
    }
    if let (Some(m), false) = (&s.manager, force) {
        let (reachable, unreachable) = m.store.view(|t| {
            let managers: Vec<_> = t
                .nodes
                .iter()
                .filter(|n| n.spec.role == NodeRole::Manager)
                .collect();
            let r = managers
                .iter()
                .filter(|n| n.status.state == shoal_api::NodeState::Ready)
                .count();
            (r, managers.len() - r)
        });
        return Err(ApiError::unavailable(manager_leave_refusal(
            reachable,
            unreachable,
        )));
    }
    s.ask(HostRequest::Leave).await?;
    Ok(StatusCode::OK)
}

/// Why a manager may not leave without `--force` (Docker's wording).
fn manager_leave_refusal(reachable: usize, unreachable: usize) -> String {
    let mut msg = String::from(
        "You are attempting to leave the swarm on a node that is participating as a manager. ",
    );
    // Losing this manager leaves no quorum of the reachable ones.
    if reachable <= unreachable + 2 {
        if reachable == 1 && unreachable == 0 {
            msg += "Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message. ";
            return msg;
        }
        msg += &format!(
            "Removing this node leaves {} managers out of {}. Without a Raft quorum your swarm will be inaccessible. ",
            reachable.saturating_sub(1),
            reachable + unreachable
        );
    }
    msg + "The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress this message."
}

/// `POST /swarm/init` with an `InitRequest`; answers the new node ID (a JSON string).
pub async fn init(State(s): State<ApiState>, body: Bytes) -> Result<Json<String>, ApiError> {
    let mut req: InitRequest = json_body(&body)?;
    match (s.presence, req.force_new_cluster) {
        (Presence::Inactive, _) => {}
        (_, false) => return Err(ApiError::swarm_exists()),
        (Presence::Active, true) if s.manager.is_none() => return Err(ApiError::not_a_manager()),
        (Presence::Locked, true) => return Err(ApiError::locked()),
        (Presence::Active, true) => {}
    }
    if req.listen_addr.is_empty() {
        return Err(ApiError::bad_request(
            "invalid ListenAddr \"\": invalid empty address",
        ));
    }
    if let Some(spec) = &mut req.spec {
        if spec.name.is_empty() {
            spec.name = "default".into();
        } else if spec.name != "default" {
            return Err(ApiError::bad_request(
                r#"swarm spec must be named "default""#,
            ));
        }
        validate_spec(spec)?;
    }
    let id = s.ask(|r| HostRequest::Init(Box::new(req), r)).await?;
    Ok(Json(id))
}

/// `POST /swarm/join` with a `JoinRequest`.
pub async fn join(State(s): State<ApiState>, body: Bytes) -> Result<StatusCode, ApiError> {
    let req: JoinRequest = json_body(&body)?;
    if s.presence != Presence::Inactive {
        return Err(ApiError::swarm_exists());
    }
    if req.listen_addr.is_empty() {
        return Err(ApiError::bad_request(
            "invalid ListenAddr \"\": invalid empty address",
        ));
    }
    if req.remote_addrs.is_empty() {
        return Err(ApiError::bad_request(
            "at least 1 RemoteAddr is required to join",
        ));
    }
    if req.join_token.is_empty() {
        return Err(ApiError::bad_request(
            "a join token is required to join (docker swarm join-token on a manager prints it)",
        ));
    }
    s.ask(|r| HostRequest::Join(Box::new(req), r)).await?;
    Ok(StatusCode::OK)
}

/// `GET /swarm/unlockkey`: `{"UnlockKey": …}`, empty while autolock is off.
pub async fn unlock_key(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let m = s.manager()?;
    let key = m
        .store
        .view(|t| t.cluster.as_ref().map(|c| c.unlock_key.clone()))
        .unwrap_or_default();
    Ok(Json(serde_json::json!({ "UnlockKey": key })))
}

/// `POST /swarm/unlock` with `{"UnlockKey": …}` on a locked manager.
pub async fn unlock(State(s): State<ApiState>, body: Bytes) -> Result<StatusCode, ApiError> {
    let req: UnlockRequest = json_body(&body)?;
    match s.presence {
        Presence::Active => return Err(ApiError::not_locked()),
        Presence::Inactive => return Err(ApiError::no_swarm_manager()),
        Presence::Locked => {}
    }
    if shoal_net::lock::UnlockKey::parse(&req.unlock_key).is_none() {
        return Err(ApiError::bad_request(
            "invalid unlock key: expected SWMKEY-1-… as `docker swarm unlock-key` prints it",
        ));
    }
    s.ask(|r| HostRequest::Unlock(req.unlock_key, r)).await?;
    Ok(StatusCode::OK)
}
