//! `slotd.v1.Peer`: Raft RPCs from other agents, lease renewals, fence
//! notices, leader calls passed on by them, and joining the cluster.
//!
//! Every call is admitted only with this agent's cluster id (see
//! `identity`), but `Join` and the bootstrap passed to the first voter,
//! which come before there is a cluster id.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use slotd_proto::v1::peer_server::Peer;
use slotd_proto::v1::RaftPayload;
use slotd_raft_store::codec;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::cluster::Cluster;
use crate::error::AgentError;
use crate::identity::{Refusal, HEADER};
use crate::leader::Granter;
use crate::stats::Stats;
use crate::wire::{FenceRequest, JoinRequest, LeaderCall, Renewal};

/// The Peer service of one agent.
pub struct PeerService {
    pub cluster: Arc<Cluster>,
    pub granter: Granter,
    pub stats: Arc<Stats>,
    /// Calls passed on to this agent as leader (`Peer.Leader`): bounded
    /// like admin calls, since every follower may pass its own on.
    pub leader_calls: crate::admin::CallLimit,
}

fn decode<T: DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, Status> {
    codec::decode(&req.into_inner().payload).map_err(|e| Status::invalid_argument(format!("payload: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    codec::encode(value)
        .map(|payload| Response::new(RaftPayload { payload }))
        .map_err(|e| Status::internal(format!("encode reply: {e}")))
}

/// The cluster id a call carries, if any.
fn header<T>(req: &Request<T>) -> Option<&str> {
    req.metadata().get(HEADER).and_then(|v| v.to_str().ok())
}

impl PeerService {
    /// Refuses a call from another cluster, or any call before this agent
    /// has joined one.
    fn admit(&self, method: &'static str, header: Option<&str>) -> Result<(), Status> {
        self.cluster.identity.admit(header).map_err(|r| match r {
            Refusal::NotJoined => {
                self.stats.peer_refused(method, "not_joined");
                Status::failed_precondition(r.to_string())
            }
            Refusal::Missing | Refusal::Mismatch { .. } => {
                self.stats.peer_refused(method, "other_cluster");
                debug!(error = %r, "peer call from another cluster refused");
                Status::permission_denied(r.to_string())
            }
        })
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.admit("append_entries", header(&req))?;
        let rpc = decode(req)?;
        encode(&self.cluster.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.admit("vote", header(&req))?;
        let rpc = decode(req)?;
        encode(&self.cluster.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.admit("install_snapshot", header(&req))?;
        let rpc = decode(req)?;
        encode(&self.cluster.raft.install_snapshot(rpc).await)
    }

    async fn heartbeat(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.admit("heartbeat", header(&req))?;
        let renewal: Renewal = decode(req)?;
        encode(&self.granter.grant(renewal).await)
    }

    async fn fenced(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.admit("fenced", header(&req))?;
        let request: FenceRequest = decode(req)?;
        encode(&self.cluster.fence_request(request).await)
    }

    async fn leader(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        // The bootstrap travels before anyone has a cluster id; it is
        // refused on its own terms once the cluster is initialised.
        let _call = self.leader_calls.enter()?;
        let header = header(&req).map(str::to_owned);
        let call: LeaderCall = decode(req)?;
        if !matches!(call, LeaderCall::Init { .. }) {
            self.admit("leader", header.as_deref())?;
        }
        encode(&self.cluster.execute(call).await)
    }

    async fn join(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let join: JoinRequest = decode(req)?;
        let me = self.cluster.id;
        let result = if join.node != me || join.name != self.cluster.name {
            Err(AgentError::Invalid(format!(
                "this agent is node {me} ({}), not node {} ({}): check the address in the topology",
                self.cluster.name, join.node, join.name
            )))
        } else {
            self.cluster
                .identity
                .join(join.cluster)
                .map_err(|e| AgentError::Precondition(e.to_string()))
        };
        match &result {
            Ok(()) => info!(cluster = %join.cluster, "joined the cluster"),
            Err(e) => warn!(cluster = %join.cluster, error = %e, "join refused"),
        }
        encode(&result)
    }
}
