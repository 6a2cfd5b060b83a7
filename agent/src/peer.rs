//! `slotd.v1.Peer`: Raft RPCs from other agents, and leader calls passed on
//! by them.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use slotd_proto::v1::peer_server::Peer;
use slotd_proto::v1::RaftPayload;
use slotd_raft_store::codec;
use tonic::{Request, Response, Status};

use crate::cluster::Cluster;
use crate::leader::Granter;
use crate::wire::{FenceRequest, LeaderCall, Renewal};

/// The Peer service of one agent.
pub struct PeerService {
    pub cluster: Arc<Cluster>,
    pub granter: Granter,
}

fn decode<T: DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, Status> {
    codec::decode(&req.into_inner().payload).map_err(|e| Status::invalid_argument(format!("payload: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    codec::encode(value)
        .map(|payload| Response::new(RaftPayload { payload }))
        .map_err(|e| Status::internal(format!("encode reply: {e}")))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(req)?;
        encode(&self.cluster.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(req)?;
        encode(&self.cluster.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(req)?;
        encode(&self.cluster.raft.install_snapshot(rpc).await)
    }

    async fn heartbeat(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let renewal: Renewal = decode(req)?;
        encode(&self.granter.grant(renewal).await)
    }

    async fn fenced(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let request: FenceRequest = decode(req)?;
        encode(&self.cluster.fence_request(request).await)
    }

    async fn leader(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let call: LeaderCall = decode(req)?;
        encode(&self.cluster.execute(call).await)
    }
}
