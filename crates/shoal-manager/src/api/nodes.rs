//! `/nodes`: list, inspect, update (availability, labels, role), remove.

use super::error::{bool_param, json_body, version_param};
use super::{ApiError, ApiState};
use crate::writes;
use crate::Manager;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use shoal_api::{ManagerStatus, Node, NodeRole, NodeSpec, NodeState, Timestamp};
use shoal_store::{ClusterRecord, Expect, Kind, Object, Op, StoreError, Tables};
use std::collections::HashMap;
use std::sync::Arc;

/// Finds a node by exact ID, exact name or hostname, or unique ID prefix.
pub fn resolve(t: &Tables, key: &str) -> Result<Arc<Node>, ApiError> {
    if let Some(n) = t.nodes.get(key) {
        return Ok(n.clone());
    }
    let by_name: Vec<_> = t
        .nodes
        .iter()
        .filter(|n| n.spec.name == key || n.description.hostname == key)
        .collect();
    match by_name.len() {
        1 => return Ok(by_name[0].clone()),
        n if n > 1 => {
            return Err(ApiError::bad_request(format!(
                "node {key} is ambiguous ({n} matches found)"
            )))
        }
        _ => {}
    }
    let by_prefix: Vec<_> = if key.is_empty() {
        Vec::new()
    } else {
        t.nodes.with_prefix(key).collect()
    };
    match by_prefix.len() {
        0 => Err(ApiError::not_found(format!("node {key} not found"))),
        1 => Ok(by_prefix[0].clone()),
        n => Err(ApiError::bad_request(format!(
            "node {key} is ambiguous ({n} matches found)"
        ))),
    }
}

/// A node as the API shows it: leadership and reachability filled in.
pub fn present(m: &Manager, n: &Node) -> Node {
    let mut n = n.clone();
    let leader = m.leader_node_id();
    if n.spec.role == NodeRole::Manager {
        let ms = n.manager_status.get_or_insert_with(ManagerStatus::default);
        ms.leader = leader.as_deref() == Some(n.id.as_str());
        ms.reachability = if ms.leader || n.id == m.node_id {
            "reachable"
        } else {
            match n.status.state {
                NodeState::Ready => "reachable",
                NodeState::Down | NodeState::Disconnected => "unreachable",
                NodeState::Unknown => "unknown",
            }
        }
        .into();
    } else {
        n.manager_status = None;
    }
    n
}

/// Parses Docker's `filters` query parameter (`{"key":{"value":true}}` or `{"key":["value"]}`).
pub fn filters(q: &HashMap<String, String>) -> Result<HashMap<String, Vec<String>>, ApiError> {
    let Some(raw) = q.get("filters") else {
        return Ok(HashMap::new());
    };
    if raw.is_empty() {
        return Ok(HashMap::new());
    }
    let v: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid filter: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("invalid filter: expected a JSON object"))?;
    let mut out = HashMap::new();
    for (k, vals) in obj {
        let list: Vec<String> = match vals {
            serde_json::Value::Object(m) => m
                .iter()
                .filter(|(_, b)| b.as_bool() != Some(false))
                .map(|(s, _)| s.clone())
                .collect(),
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect(),
            _ => return Err(ApiError::bad_request(format!("invalid filter {k:?}"))),
        };
        out.insert(k.clone(), list);
    }
    Ok(out)
}

fn label_matches(labels: &shoal_api::Labels, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(filter),
    }
}

/// `GET /nodes`.
pub async fn list(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Node>>, ApiError> {
    let m = s.manager()?;
    let f = filters(&q)?;
    for k in f.keys() {
        if !["id", "name", "role", "membership", "label", "node.label"].contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!("invalid filter '{k}'")));
        }
    }
    let nodes: Vec<Node> = m
        .store
        .view(|t| t.nodes.iter().map(|n| (**n).clone()).collect());
    let out = nodes
        .iter()
        .filter(|n| {
            f.get("id")
                .is_none_or(|ids| ids.iter().any(|i| n.id.starts_with(i.as_str())))
        })
        .filter(|n| {
            f.get("name").is_none_or(|ns| {
                ns.iter()
                    .any(|x| *x == n.spec.name || *x == n.description.hostname)
            })
        })
        .filter(|n| {
            f.get("role")
                .is_none_or(|r| r.iter().any(|x| x == n.spec.role.as_str()))
        })
        .filter(|_| {
            f.get("membership")
                .is_none_or(|r| r.iter().any(|x| x == "accepted"))
        })
        .filter(|n| {
            f.get("node.label")
                .or(f.get("label"))
                .is_none_or(|ls| ls.iter().all(|l| label_matches(&n.spec.labels, l)))
        })
        .map(|n| present(m, n))
        .collect();
    Ok(Json(out))
}

/// `GET /nodes/{id}`.
pub async fn inspect(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Node>, ApiError> {
    let m = s.manager()?;
    let n = m.store.view(|t| resolve(t, &id))?;
    Ok(Json(present(m, &n)))
}

/// Refuses a change of manager set that would lose the last manager or quorum.
fn check_quorum(m: &Manager, leaving: &Node, verb: &str) -> Result<(), ApiError> {
    let (total, reachable_after) = m.store.view(|t| {
        let managers: Vec<_> = t
            .nodes
            .iter()
            .filter(|n| n.spec.role == NodeRole::Manager)
            .collect();
        let reachable_after = managers
            .iter()
            .filter(|n| n.id != leaving.id)
            .filter(|n| n.status.state == NodeState::Ready || n.id == m.node_id)
            .count();
        (managers.len(), reachable_after)
    });
    if total <= 1 {
        return Err(ApiError::bad_request(format!(
            "attempting to {verb} the last manager of the swarm"
        )));
    }
    let remaining = total - 1;
    if reachable_after < remaining / 2 + 1 {
        return Err(ApiError::bad_request(format!(
            "can't {verb} node {}: it would leave {reachable_after} reachable managers out of {remaining}, and the cluster would lose quorum",
            leaving.id
        )));
    }
    Ok(())
}

/// `POST /nodes/{id}/update?version=N` with a full `NodeSpec` body.
pub async fn update(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let m = s.manager()?;
    let version = version_param(q.get("version"))?;
    let spec: NodeSpec = json_body(&body)?;
    let current = m.store.view(|t| resolve(t, &id))?;
    let mut node = (*current).clone();
    let old_role = node.spec.role;
    if old_role == NodeRole::Manager && spec.role == NodeRole::Worker {
        check_quorum(m, &node, "demote")?;
        node.raft_id = 0;
        node.manager_status = None;
    }
    if old_role == NodeRole::Worker && spec.role == NodeRole::Manager {
        if node.addr.is_empty() {
            return Err(ApiError::bad_request(format!(
                "node {} has no known address yet and can't be promoted",
                node.id
            )));
        }
        node.manager_status = Some(ManagerStatus {
            addr: node.addr.clone(),
            ..Default::default()
        });
    }
    node.spec = spec;
    node.updated_at = Timestamp::now();
    writes::commit_one(
        &m.proposer,
        Object::Node(node.clone().into()),
        Expect::Version(version),
    )
    .await?;
    // The leader's dispatcher tells the node about its new role.
    Ok(StatusCode::OK)
}

/// `DELETE /nodes/{id}?force=bool`.
pub async fn remove(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let m = s.manager()?;
    let force = bool_param(q.get("force"));
    let node = m.store.view(|t| resolve(t, &id))?;
    if node.spec.role == NodeRole::Manager {
        return Err(ApiError::bad_request(format!(
            "rpc error: code = FailedPrecondition desc = node {} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal",
            node.id
        )));
    }
    if !force && node.status.state != NodeState::Down {
        return Err(ApiError::bad_request(format!(
            "rpc error: code = FailedPrecondition desc = node {} is not down and can't be removed",
            node.id
        )));
    }
    // The node goes, and into the cluster's list of removed nodes, in one
    // command (retried if the cluster object changed meanwhile).
    let mut attempts = 0;
    loop {
        let rec = m
            .store
            .view(|t| t.cluster.clone())
            .ok_or_else(|| ApiError::internal("no cluster object"))?;
        let version = rec.cluster.version.index;
        let mut rec = (*rec).clone();
        record_removal(&mut rec, &node.id, Timestamp::now());
        let ops = vec![
            Op::Delete {
                kind: Kind::Node,
                id: node.id.clone(),
                expect: None,
            },
            Op::Put {
                object: Object::Cluster(rec.into()),
                expect: Expect::Version(version),
            },
        ];
        match writes::commit(&m.proposer, ops).await {
            Err(writes::WriteFailure::Refused(StoreError::OutOfSequence)) if attempts < 5 => {
                attempts += 1
            }
            r => {
                r?;
                return Ok(StatusCode::OK);
            }
        }
    }
}

/// Most removed nodes remembered; the oldest go first (their certificates
/// have long expired by then).
const REMOVED_NODES_KEPT: usize = 10_000;

/// Adds `id` to the cluster's removed nodes, forgetting those removed
/// longer ago than a node certificate lives (their certificates have
/// expired), and the oldest beyond [`REMOVED_NODES_KEPT`].
fn record_removal(rec: &mut ClusterRecord, id: &str, now: Timestamp) {
    let lifetime = rec.cluster.spec.node_cert_expiry();
    rec.removed_nodes.retain(|_, at| at.elapsed() <= lifetime);
    rec.removed_nodes.insert(id.to_string(), now);
    while rec.removed_nodes.len() > REMOVED_NODES_KEPT {
        let oldest = rec
            .removed_nodes
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => rec.removed_nodes.remove(&k),
            None => break,
        };
    }
}

#[cfg(test)]
mod removal_tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn removed_nodes_are_remembered_while_their_certificates_live() {
        let mut rec = ClusterRecord::default();
        let lifetime = rec.cluster.spec.node_cert_expiry();
        let long_ago = Timestamp(Some(SystemTime::now() - lifetime - Duration::from_secs(60)));
        let recently = Timestamp(Some(SystemTime::now() - Duration::from_secs(60)));
        rec.removed_nodes.insert("expired".into(), long_ago);
        rec.removed_nodes.insert("recent".into(), recently);
        record_removal(&mut rec, "n1", Timestamp::now());
        let kept: Vec<&str> = rec.removed_nodes.keys().map(String::as_str).collect();
        assert_eq!(kept, ["n1", "recent"]);
    }
}
