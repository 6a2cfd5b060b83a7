//! openraft's network over gRPC: `RaftNetwork` calls become `slotd.v1.Peer`
//! calls carrying openraft's own types as versioned binary payloads.
//!
//! One lazily connected tonic `Channel` per peer address is kept and reused by
//! every client openraft creates for it (tonic reconnects by itself). A peer
//! that cannot be reached is reported as `Unreachable`, and openraft backs
//! off; nothing here retries or sleeps.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use slotd_proto::v1::peer_client::PeerClient;
use slotd_proto::v1::RaftPayload;
use slotd_raft_store::{codec, NodeId, TypeConfig};
use tonic::transport::{Channel, Endpoint};

/// Largest gRPC message between agents: a snapshot chunk or a batch of
/// entries, with room to spare (snapshots of 4,000 stores are ~300 KB).
pub const MAX_MESSAGE: usize = 64 << 20;

/// How long connecting to a peer may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Channels by address, shared by every client and by the leader calls.
#[derive(Clone, Default)]
pub struct Channels {
    inner: Arc<Mutex<BTreeMap<String, Channel>>>,
}

impl Channels {
    /// The channel to `addr` (`host:port`), created on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let ch = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        map.insert(addr.to_owned(), ch.clone());
        Ok(ch)
    }

    /// A Peer client on the channel to `addr`.
    pub fn peer(&self, addr: &str) -> Result<PeerClient<Channel>, tonic::transport::Error> {
        Ok(PeerClient::new(self.get(addr)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }
}

/// Creates one `PeerConnection` per target for openraft.
#[derive(Clone, Default)]
pub struct PeerNetwork {
    pub channels: Channels,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            target,
            client: self.channels.peer(&node.addr).map_err(|e| e.to_string()),
        }
    }
}

/// openraft's client for one peer.
pub struct PeerConnection {
    target: NodeId,
    /// `Err` when the address cannot even form a URI; every call then fails
    /// as unreachable (openraft backs off) with that reason.
    client: Result<PeerClient<Channel>, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

/// What can go wrong with one RPC before openraft sees it.
enum CallError {
    Unreachable(String),
    Network(String),
}

impl CallError {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, BasicNode, E> {
        match self {
            CallError::Unreachable(m) => RPCError::Unreachable(Unreachable::new(&Msg(m))),
            CallError::Network(m) => RPCError::Network(NetworkError::new(&Msg(m))),
        }
    }
}

impl PeerConnection {
    /// Sends one payload and decodes the peer's `Result<Resp, Err>`.
    async fn call<Req, Resp, Err, Fut>(
        &mut self,
        req: &Req,
        option: &RPCOption,
        send: impl FnOnce(PeerClient<Channel>, tonic::Request<RaftPayload>) -> Fut,
    ) -> Result<Result<Resp, Err>, CallError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        Err: DeserializeOwned,
        Fut: std::future::Future<Output = Result<tonic::Response<RaftPayload>, tonic::Status>>,
    {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(CallError::Unreachable(e.clone())),
        };
        let payload = codec::encode(req).map_err(|e| CallError::Network(format!("encode: {e}")))?;
        let mut request = tonic::Request::new(RaftPayload { payload });
        request.set_timeout(option.hard_ttl());
        let reply = send(client, request).await.map_err(|status| match status.code() {
            // Transport failures (refused, reset, DNS) and our own deadline:
            // the peer is down or too slow; openraft should back off.
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                CallError::Unreachable(format!("node {}: {}", self.target, status.message()))
            }
            _ => CallError::Network(format!("node {}: {status}", self.target)),
        })?;
        codec::decode(&reply.into_inner().payload).map_err(|e| CallError::Network(format!("decode: {e}")))
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<NodeId, BasicNode, E> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .call(&rpc, &option, |mut c, r| async move { c.append_entries(r).await })
            .await
        {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.remote(e)),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        match self
            .call(&rpc, &option, |mut c, r| async move { c.install_snapshot(r).await })
            .await
        {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.remote(e)),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .call(&rpc, &option, |mut c, r| async move { c.vote(r).await })
            .await
        {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.remote(e)),
            Err(e) => Err(e.into_rpc()),
        }
    }
}
