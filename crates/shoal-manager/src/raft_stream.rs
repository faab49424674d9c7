//! The server side of the Raft replication stream ([`shoal_net::frame`]):
//! AppendEntries from the leader's replication sessions, one connection per
//! session, answered in order on the connection's own task.
//!
//! The caller's certificate is checked at every request with the same rule
//! as the Raft gRPC calls ([`Services::check_raft_peer`]), so a manager
//! demoted or removed while connected is refused from its next request on.

use crate::grpc::Services;
use openraft::raft::AppendEntriesRequest;
use shoal_net::frame;
use shoal_net::tls::TlsConn;
use shoal_store::TypeConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Serves every connection that comes in on `conns` until `stop`.
pub async fn serve(
    mut conns: mpsc::Receiver<TlsConn>,
    services: Services,
    stop: CancellationToken,
) {
    loop {
        let conn = tokio::select! {
            c = conns.recv() => match c {
                Some(c) => c,
                None => return,
            },
            _ = stop.cancelled() => return,
        };
        let services = services.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let peer = conn.peer_info().remote_addr;
            tokio::select! {
                r = connection(conn, &services) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "raft stream closed");
                    }
                }
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// Answers requests on `conn` until it closes; an error ends the connection.
async fn connection(mut conn: TlsConn, services: &Services) -> std::io::Result<()> {
    let identity = conn.peer_info().identity.clone();
    let mut body = Vec::new();
    loop {
        let tag = match frame::recv(conn.get_mut(), &mut body).await {
            Ok(tag) => tag,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut out = match answer(services, identity.as_ref(), tag, &body).await {
            Ok(json) => {
                let mut out = frame::start(frame::OK, json.len());
                out.extend_from_slice(&json);
                out
            }
            Err(why) => {
                let mut out = frame::start(frame::REFUSED, why.len());
                out.extend_from_slice(why.as_bytes());
                out
            }
        };
        frame::send(conn.get_mut(), &mut out).await?;
    }
}

/// The JSON answer to one request, or why it is refused.
async fn answer(
    services: &Services,
    identity: Option<&shoal_net::pki::NodeIdentity>,
    tag: u8,
    body: &[u8],
) -> Result<Vec<u8>, String> {
    services
        .check_raft_peer(identity)
        .map_err(|s| s.message().to_string())?;
    match tag {
        frame::APPEND_ENTRIES => {
            let rpc: AppendEntriesRequest<TypeConfig> = serde_json::from_slice(body)
                .map_err(|e| format!("invalid AppendEntries request: {e}"))?;
            let result = services.raft.append_entries(rpc).await;
            Ok(serde_json::to_vec(&result).expect("serializable"))
        }
        other => Err(format!("unknown request type {other}")),
    }
}
