//! openraft's network over gRPC: each Raft RPC is one unary call carrying
//! the openraft message as JSON; snapshots go whole, as raw bytes.

use crate::peers::Peers;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::Snapshot;
use serde::de::DeserializeOwned;
use shoal_net::rpc::pb::raft_client::RaftClient;
use shoal_net::rpc::{msg, Msg};
use shoal_store::{Member, TypeConfig, Vote};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Makes Raft clients for openraft.
#[derive(Clone)]
pub struct Network {
    peers: Arc<Peers>,
}

impl Network {
    /// A network reaching peers through `peers`.
    pub fn new(peers: Arc<Peers>) -> Network {
        Network { peers }
    }
}

/// A Raft client for one target.
pub struct Client {
    target: u64,
    addr: String,
    peers: Arc<Peers>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: u64, node: &Member) -> Client {
        Client {
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
        }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<u64, Member, RaftError<u64, E>>;

fn map_status<E: std::error::Error>(
    target: u64,
    action: RPCTypes,
    ttl: Duration,
    s: tonic::Status,
) -> RPCError<u64, Member, E> {
    match s.code() {
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&s)),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => RPCError::Timeout(Timeout {
            action,
            id: 0,
            target,
            timeout: ttl,
        }),
        _ => RPCError::Network(NetworkError::new(&s)),
    }
}

impl Client {
    async fn call<Resp, E>(
        &self,
        action: RPCTypes,
        req: Msg,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, Member, RaftError<u64, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let ttl = option.soft_ttl();
        let channel = self
            .peers
            .channel(&self.addr)
            .map_err(|s| map_status(self.target, action, ttl, s))?;
        let mut client = RaftClient::new(channel).max_decoding_message_size(256 << 20);
        let mut request = tonic::Request::new(req);
        request.set_timeout(ttl);
        let fut = match action {
            RPCTypes::AppendEntries => client.append_entries(request).await,
            RPCTypes::Vote => client.vote(request).await,
            RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
        };
        let resp = fut
            .map_err(|s| map_status(self.target, action, ttl, s))?
            .into_inner();
        let result: Result<Resp, RaftError<u64, E>> = serde_json::from_slice(&resp.json)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Client {
    /// Retry a down peer every 100 ms (openraft's default is 500 ms), so a
    /// restarted manager is caught up, and counted, quickly.
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(100)))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcErr> {
        self.call(RPCTypes::AppendEntries, msg(&rpc), &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcErr> {
        self.call(RPCTypes::Vote, msg(&rpc), &option).await
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcErr<InstallSnapshotError>> {
        // Snapshots are always sent whole by `full_snapshot` below.
        let e = std::io::Error::other("chunked snapshots are not used");
        Err(RPCError::Network(NetworkError::new(&e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
        let meta = (vote, snapshot.meta.clone());
        let req = Msg {
            json: serde_json::to_vec(&meta).expect("serializable"),
            data: snapshot.snapshot.into_inner(),
        };
        // Transfer plus install on the follower; generous for multi-MB states.
        let ttl = Duration::from_secs(30);
        let channel = self
            .peers
            .channel(&self.addr)
            .map_err(|s| StreamingError::Unreachable(Unreachable::new(&s)))?;
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(1 << 30)
            .max_encoding_message_size(1 << 30);
        let mut request = tonic::Request::new(req);
        request.set_timeout(ttl);
        let resp = client
            .install_snapshot(request)
            .await
            .map_err(|s| match s.code() {
                tonic::Code::Unavailable => StreamingError::Unreachable(Unreachable::new(&s)),
                _ => StreamingError::Network(NetworkError::new(&s)),
            })?;
        let result: Result<SnapshotResponse<u64>, Fatal<u64>> =
            serde_json::from_slice(&resp.into_inner().json)
                .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| StreamingError::Network(NetworkError::new(&e)))
    }
}
