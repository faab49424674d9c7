//! `/swarm`: inspect, update (settings, token rotation), leave.

use super::error::{bool_param, json_body, version_param};
use super::{ApiError, ApiState};
use crate::writes;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use shoal_api::{Cluster, ClusterSpec, NodeRole, Timestamp};
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

/// `POST /swarm/update?version=N&rotateWorkerToken=…&rotateManagerToken=…` with a `ClusterSpec`.
pub async fn update(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let m = s.manager()?;
    let version = version_param(q.get("version"))?;
    let spec: ClusterSpec = json_body(&body)?;
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
    rec.cluster.spec = spec;
    rec.cluster.updated_at = Timestamp::now();
    writes::commit_one(&m.proposer, Object::Cluster(rec), Expect::Version(version)).await?;
    Ok(StatusCode::OK)
}

/// `POST /swarm/leave?force=bool`.
pub async fn leave(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let force = bool_param(q.get("force"));
    if let (Some(m), false) = (&s.manager, force) {
        let (managers, reachable) = m.store.view(|t| {
            let ms: Vec<_> = t
                .nodes
                .iter()
                .filter(|n| n.spec.role == NodeRole::Manager)
                .collect();
            let r = ms
                .iter()
                .filter(|n| n.status.state == shoal_api::NodeState::Ready)
                .count();
            (ms.len(), r)
        });
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "You are attempting to leave the swarm on a node that is participating as a manager. \
                 Removing this node leaves {} managers out of {managers}. Without a Raft quorum your swarm will be inaccessible. \
                 The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. \
                 Use `--force` to suppress this message.",
                reachable.saturating_sub(1)
            ),
        ));
    }
    s.control.leave(force)?;
    Ok(StatusCode::OK)
}
