//! openraft's network. AppendEntries (every write's replication, and the
//! heartbeats) go over the Raft replication stream ([`shoal_net::frame`]):
//! one mutual-TLS connection per replication session, request then response,
//! no task in between. Votes and snapshots are unary gRPC calls carrying the
//! openraft message as JSON; snapshots go whole, as raw bytes. A peer that
//! does not serve the stream (an older shoal during an upgrade) gets
//! AppendEntries over gRPC too.
//!
//! The replication streams to the followers send the same entries, so each
//! entry's JSON is made once, by the log store that writes it, and shared by
//! all of them ([`EncodedEntries`]).

use crate::early::{Early, Registration};
use crate::peers::Peers;
use crate::raft_stream::{StreamClient, StreamError};
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
use shoal_net::frame;
use shoal_net::rpc::pb::raft_client::RaftClient;
use shoal_net::rpc::{msg, Msg};
use shoal_store::{EncodedEntries, LogId, Member, TypeConfig, Vote};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long an AppendEntries without entries waits for the leader's next
/// append to carry its news to the follower early (see
/// [`Registration::answer_for_commit`]).
const COMMIT_WINDOW: Duration = Duration::from_millis(1);

/// Makes Raft clients for openraft.
#[derive(Clone)]
pub struct Network {
    peers: Arc<Peers>,
    encoded: EncodedEntries,
    early: Arc<Early>,
}

impl Network {
    /// A network reaching peers through `peers`, taking entries' JSON from
    /// `encoded` (the log store's, [`shoal_store::LogStore::encoded`]) and
    /// the answers to early AppendEntries from `early`.
    pub fn new(peers: Arc<Peers>, encoded: EncodedEntries, early: Arc<Early>) -> Network {
        Network {
            peers,
            encoded,
            early,
        }
    }
}

/// A Raft client for one target.
pub struct Client {
    target: u64,
    peers: Arc<Peers>,
    encoded: EncodedEntries,
    /// The replication stream to the target.
    stream: StreamClient,
    /// Where early AppendEntries are sent (see [`crate::early`]).
    early: Arc<Early>,
    /// This client's registration with `early`, made when it first sends
    /// entries: openraft also makes clients for votes and for leadership
    /// checks (heartbeats only), which must not take the target over from
    /// the replication session's client.
    registered: Option<Registration>,
}

/// Appends to `out` the JSON of `rpc` (exactly what `serde_json::to_vec(rpc)`
/// gives), with its entries taken from `cache`.
fn encode_append_entries(
    rpc: &AppendEntriesRequest<TypeConfig>,
    cache: &EncodedEntries,
    out: &mut Vec<u8>,
) {
    let entries: Vec<Arc<[u8]>> = rpc.entries.iter().map(|e| cache.get(e)).collect();
    encode_append(
        &rpc.vote,
        &rpc.prev_log_id,
        entries.iter().map(|e| &e[..]),
        &rpc.leader_commit,
        out,
    );
}

/// Appends to `out` the JSON of an AppendEntries request made of these
/// parts, `entries` being each entry's JSON.
pub(crate) fn encode_append<'a>(
    vote: &Vote,
    prev_log_id: &Option<LogId>,
    entries: impl ExactSizeIterator<Item = &'a [u8]> + Clone,
    leader_commit: &Option<LogId>,
    out: &mut Vec<u8>,
) {
    out.reserve(entries.clone().map(|e| e.len() + 1).sum::<usize>() + 256);
    field(out, "{\"vote\":", vote);
    field(out, ",\"prev_log_id\":", prev_log_id);
    out.extend_from_slice(b",\"entries\":[");
    for (i, e) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.push(b']');
    field(out, ",\"leader_commit\":", leader_commit);
    out.push(b'}');
}

/// Writes `prefix` then `value` as JSON.
fn field<T: serde::Serialize>(out: &mut Vec<u8>, prefix: &str, value: &T) {
    out.extend_from_slice(prefix.as_bytes());
    serde_json::to_writer(out, value).expect("serializable");
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: u64, node: &Member) -> Client {
        Client {
            target,
            peers: self.peers.clone(),
            encoded: self.encoded.clone(),
            stream: StreamClient::new(&node.addr, self.peers.raft_tls()),
            early: self.early.clone(),
            registered: None,
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
            .channel(self.stream.addr())
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

    /// Sends `rpc`: over the replication stream, or over gRPC to a peer
    /// that does not serve the stream.
    async fn append_entries_now(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcErr> {
        if self.peers.serves_stream(self.stream.addr()) {
            if let Some(r) = self.append_over_stream(rpc, option.soft_ttl()).await {
                return r;
            }
        }
        let mut json = Vec::new();
        encode_append_entries(rpc, &self.encoded, &mut json);
        let req = Msg {
            json,
            data: Vec::new(),
        };
        self.call(RPCTypes::AppendEntries, req, option).await
    }

    /// AppendEntries over the replication stream; `None` when the target
    /// does not serve it.
    async fn append_over_stream(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        ttl: Duration,
    ) -> Option<Result<AppendEntriesResponse<u64>, RpcErr>> {
        let mut req = frame::start(frame::APPEND_ENTRIES, 256);
        encode_append_entries(rpc, &self.encoded, &mut req);
        append_over(&mut self.stream, &self.peers, self.target, &mut req, ttl).await
    }
}

/// Sends the AppendEntries frame `req` to `target` over `stream` and reads
/// its answer within `ttl`; `None` when the target does not serve the
/// stream (it is then marked so in `peers`).
pub(crate) async fn append_over(
    stream: &mut StreamClient,
    peers: &Peers,
    target: u64,
    req: &mut [u8],
    ttl: Duration,
) -> Option<Result<AppendEntriesResponse<u64>, RpcErr>> {
    let r = match tokio::time::timeout(ttl, stream.call(req)).await {
        Err(_) => {
            // Cut off mid-exchange: the connection's state is unknown.
            stream.reset();
            return Some(Err(RPCError::Timeout(Timeout {
                action: RPCTypes::AppendEntries,
                id: 0,
                target,
                timeout: ttl,
            })));
        }
        Ok(Err(StreamError::NotServed)) => {
            peers.stream_not_served(stream.addr());
            return None;
        }
        Ok(Err(StreamError::Unreachable(e))) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        Ok(Err(StreamError::Io(e))) => Err(network(&e)),
        Ok(Ok(tag)) => {
            let r = append_answer(target, tag, stream.reply());
            if !matches!(tag, frame::OK | frame::REFUSED) {
                stream.reset();
            }
            r
        }
    };
    Some(r)
}

/// The AppendEntries answer in a frame of type `tag` with body `reply`.
#[allow(clippy::result_large_err)] // openraft's error type, as `RaftNetwork` returns it
pub(crate) fn append_answer(
    target: u64,
    tag: u8,
    reply: &[u8],
) -> Result<AppendEntriesResponse<u64>, RpcErr> {
    match tag {
        frame::OK => {
            let result: Result<AppendEntriesResponse<u64>, RaftError<u64>> =
                serde_json::from_slice(reply).map_err(|e| network(&e))?;
            result.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
        }
        frame::REFUSED => {
            let why = String::from_utf8_lossy(reply).into_owned();
            Err(network(&std::io::Error::other(why)))
        }
        tag => Err(network(&std::io::Error::other(format!(
            "unknown answer type {tag}"
        )))),
    }
}

fn network<E: std::error::Error + 'static>(e: &E) -> RpcErr {
    RPCError::Network(NetworkError::new(e))
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
        let last = rpc.entries.last().map(|e| e.log_id);
        if last.is_some() && self.registered.is_none() {
            let addr = self.stream.addr().to_string();
            self.registered = Some(self.early.register(self.target, &addr));
        }
        let Some(early) = self.registered.as_mut() else {
            return self.append_entries_now(&rpc, &option).await;
        };
        let wait = option.soft_ttl() / 2;
        let answer = if last.is_some() {
            early.answer_for(&rpc.vote, last, wait).await
        } else {
            let (vote, prev, commit) = (&rpc.vote, rpc.prev_log_id, rpc.leader_commit);
            early
                .answer_for_commit(vote, prev, commit, COMMIT_WINDOW)
                .await
        };
        if let Some(answer) = answer {
            return Ok(answer);
        }
        let r = self.append_entries_now(&rpc, &option).await;
        if let (Ok(AppendEntriesResponse::Success), Some(early)) = (&r, &self.registered) {
            early.in_step();
        }
        r
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
            .channel(self.stream.addr())
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

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};
    use shoal_store::{Batch, Command, Entry, Expect, LogId, Object, Op};

    fn entry(term: u64, index: u64, name: &str) -> Entry {
        let config = shoal_api::Secret {
            id: format!("id-{index}"),
            spec: shoal_api::BlobSpec {
                name: name.into(),
                data: "aGk=".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Batch(vec![Command {
                ops: vec![Op::Put {
                    object: Object::Config(config.into()),
                    expect: Expect::Absent,
                }],
                atomic: true,
                request: index,
            }])),
        }
    }

    #[test]
    fn append_entries_json_is_serdes_and_shared() {
        let cache = EncodedEntries::default();
        let vote = Vote::new_committed(3, 1);
        for entries in [
            vec![],
            vec![entry(3, 7, "a")],
            vec![entry(3, 7, "a"), entry(3, 8, "b\"")],
        ] {
            let rpc = AppendEntriesRequest::<TypeConfig> {
                vote,
                prev_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), 6)),
                entries,
                leader_commit: None,
            };
            let mut ours = Vec::new();
            encode_append_entries(&rpc, &cache, &mut ours);
            assert_eq!(ours, serde_json::to_vec(&rpc).unwrap());
            let back: AppendEntriesRequest<TypeConfig> = serde_json::from_slice(&ours).unwrap();
            assert_eq!(back.entries, rpc.entries);
        }
        // Entry 7 was encoded once and reused.
        assert_eq!(cache.len(), 2);
        // The same index under another term is another entry.
        let other = entry(4, 7, "c");
        let json = cache.get(&other);
        assert_eq!(&json[..], &serde_json::to_vec(&other).unwrap()[..]);
    }
}
