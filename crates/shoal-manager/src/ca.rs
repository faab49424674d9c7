//! The cluster's certificate authority at work: admitting nodes that present
//! a valid join token, and renewing node certificates (also on role change).

use crate::proposer::Proposer;
use crate::writes::{commit_one, WriteFailure};
use shoal_api::{ManagerStatus, Node, NodeRole, NodeSpec, NodeState, NodeStatus, Timestamp};
use shoal_net::pki::{Role, RootCa};
use shoal_net::rpc::{JoinRequest, JoinResponse, ManagerAddr, RenewResponse};
use shoal_net::token::ParsedToken;
use shoal_store::{ClusterRecord, Expect, Object, Shared};
use std::sync::Arc;
use tonic::Status;

/// Converts between the API's role and the certificate's.
pub fn cert_role(r: NodeRole) -> Role {
    match r {
        NodeRole::Manager => Role::Manager,
        NodeRole::Worker => Role::Worker,
    }
}

fn cluster(store: &Shared) -> Result<Arc<ClusterRecord>, Status> {
    store
        .view(|t| t.cluster.clone())
        .ok_or_else(|| Status::unavailable("this manager has no cluster state yet"))
}

fn root_ca(c: &ClusterRecord) -> Result<RootCa, Status> {
    RootCa::from_pem(&c.ca_cert_pem, &c.ca_key_pem)
        .map_err(|e| Status::internal(format!("root CA: {e}")))
}

/// Which role a presented token grants, if any.
pub fn role_of_token(c: &ClusterRecord, token: &str) -> Result<NodeRole, Status> {
    let parsed = ParsedToken::parse(token).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let ca = root_ca(c)?;
    if !parsed.matches_ca(&ca.cert_der()) {
        return Err(Status::permission_denied(
            "the join token belongs to another cluster (its CA digest does not match this cluster's root CA)",
        ));
    }
    for (role, stored) in [
        (NodeRole::Worker, &c.cluster.join_tokens.worker),
        (NodeRole::Manager, &c.cluster.join_tokens.manager),
    ] {
        if let Ok(s) = ParsedToken::parse(stored) {
            if parsed.secret_matches(&s.secret) {
                return Ok(role);
            }
        }
    }
    Err(Status::permission_denied(
        "invalid join token (wrong secret, or it was rotated)",
    ))
}

/// The host part of `host:port`.
pub fn host_of(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        None => addr.to_string(),
    }
}

/// Admits a node: checks the token, signs its CSR, registers it.
pub async fn join(
    store: &Shared,
    proposer: &Proposer,
    req: JoinRequest,
) -> Result<JoinResponse, Status> {
    let c = cluster(store)?;
    let role = role_of_token(&c, &req.token)?;
    if req.addr.parse::<std::net::SocketAddr>().is_err() {
        return Err(Status::invalid_argument(format!(
            "invalid node address {:?}: expected IP:PORT",
            req.addr
        )));
    }
    let ca = root_ca(&c)?;
    let node_id = shoal_api::new_id();
    let raft_id = if role == NodeRole::Manager {
        shoal_api::new_raft_id()
    } else {
        0
    };
    let cert_pem = ca
        .sign_csr_with_sans(
            &req.csr_pem,
            &node_id,
            cert_role(role),
            &c.cluster.id,
            c.cluster.spec.node_cert_expiry(),
            &[host_of(&req.addr)],
        )
        .map_err(|e| Status::invalid_argument(format!("certificate request refused: {e}")))?;
    let now = Timestamp::now();
    let node = Node {
        id: node_id.clone(),
        created_at: now,
        updated_at: now,
        spec: NodeSpec {
            role,
            availability: req.availability.unwrap_or_default(),
            ..Default::default()
        },
        description: req.description,
        status: NodeStatus {
            state: NodeState::Unknown,
            message: String::new(),
            addr: host_of(&req.addr),
        },
        manager_status: (role == NodeRole::Manager).then(|| ManagerStatus {
            addr: req.addr.clone(),
            ..Default::default()
        }),
        raft_id,
        addr: req.addr.clone(),
        ..Default::default()
    };
    commit_one(proposer, Object::Node(node.into()), Expect::Absent)
        .await
        .map_err(WriteFailure::into_status)?;
    let managers = managers(store);
    tracing::info!(node = %node_id, role = role.as_str(), addr = %req.addr, "node joined");
    Ok(JoinResponse {
        node_id,
        role,
        cluster_id: c.cluster.id.clone(),
        cert_pem,
        ca_pem: c.ca_cert_pem.clone(),
        raft_id,
        managers,
    })
}

/// Renews `node_id`'s certificate with its current desired role; gives a
/// manager-to-be a Raft id.
pub async fn renew(
    store: &Shared,
    proposer: &Proposer,
    node_id: &str,
    csr_pem: &str,
) -> Result<RenewResponse, Status> {
    let c = cluster(store)?;
    let mut node = store
        .view(|t| t.nodes.get(node_id).map(|n| (**n).clone()))
        .ok_or_else(|| {
            Status::permission_denied(format!("node {node_id} is not part of the cluster"))
        })?;
    let role = node.spec.role;
    if role == NodeRole::Manager && node.raft_id == 0 {
        let version = node.version.index;
        node.raft_id = shoal_api::new_raft_id();
        let addr = node
            .manager_status
            .as_ref()
            .map(|m| m.addr.clone())
            .unwrap_or_default();
        if addr.is_empty() {
            return Err(Status::failed_precondition("the node has no known address"));
        }
        node.updated_at = Timestamp::now();
        commit_one(
            proposer,
            Object::Node(node.clone().into()),
            Expect::Version(version),
        )
        .await
        .map_err(WriteFailure::into_status)?;
    }
    let ca = root_ca(&c)?;
    let cert_pem = ca
        .sign_csr_with_sans(
            csr_pem,
            node_id,
            cert_role(role),
            &c.cluster.id,
            c.cluster.spec.node_cert_expiry(),
            &[node.status.addr.clone()],
        )
        .map_err(|e| Status::invalid_argument(format!("certificate request refused: {e}")))?;
    Ok(RenewResponse {
        cert_pem,
        role,
        raft_id: if role == NodeRole::Manager {
            node.raft_id
        } else {
            0
        },
    })
}

/// Managers' addresses.
pub fn managers(store: &Shared) -> Vec<ManagerAddr> {
    store.view(|t| {
        t.nodes
            .iter()
            .filter(|n| n.spec.role == NodeRole::Manager)
            .filter_map(|n| {
                n.manager_status.as_ref().map(|m| ManagerAddr {
                    node_id: n.id.clone(),
                    addr: m.addr.clone(),
                })
            })
            .collect()
    })
}
