//! openraft's network over gRPC: `RaftNetwork` calls become `slotd.v1.Peer`
//! calls (through `peer_call`) carrying openraft's own types as versioned
//! binary payloads. A peer that cannot be reached is reported as
//! `Unreachable`, and openraft backs off; nothing here retries or sleeps.

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use slotd_raft_store::{NodeId, TypeConfig};

use crate::peer_call::{CallError, Channels, Method};

/// Creates one `PeerConnection` per target for openraft.
#[derive(Clone)]
pub struct PeerNetwork {
    pub channels: Channels,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            target,
            addr: node.addr.clone(),
            channels: self.channels.clone(),
        }
    }
}

/// openraft's client for one peer.
pub struct PeerConnection {
    target: NodeId,
    addr: String,
    channels: Channels,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl PeerConnection {
    /// One RPC; the peer answers `Result<Resp, E>` (openraft's own error).
    async fn rpc<Req, Resp, E>(
        &self,
        method: Method,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        match self
            .channels
            .call::<Req, Result<Resp, E>>(&self.addr, method, req, option.hard_ttl())
            .await
        {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e @ CallError::Unreachable { .. }) => Err(RPCError::Unreachable(Unreachable::new(&Msg(format!(
                "node {}: {e}",
                self.target
            ))))),
            Err(e) => Err(RPCError::Network(NetworkError::new(&Msg(format!(
                "node {}: {e}",
                self.target
            ))))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(Method::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.rpc(Method::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(Method::Vote, &rpc, &option).await
    }
}
