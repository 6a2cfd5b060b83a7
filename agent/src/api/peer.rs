//! `slotd.v1.Peer`: Raft RPCs from other agents, lease renewals, fence
//! notices, leader calls passed on by them, and joining the cluster.
//!
//! Every call is admitted only with this agent's cluster id (see
//! `identity`), but `Join` and the bootstrap passed to the first voter,
//! which come before there is a cluster id. On a TLS port every call must
//! also come from a node certificate that may make it (`access`).

use std::sync::Arc;

use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest};
use openraft::ServerState;
use openraft::Vote;
use serde::de::DeserializeOwned;
use serde::Serialize;
use slotd_proto::v1::peer_server::Peer;
use slotd_proto::v1::RaftPayload;
use slotd_raft_store::{codec, NodeId, TypeConfig};
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::api::access::{self, Claim, RaftMembers};
use crate::cluster::identity::{Refusal, HEADER};
use crate::cluster::wire::{FenceRequest, JoinRequest, LeaderCall, LeaderRequest, ReachRequest, Reached, Renewal};
use crate::cluster::Cluster;
use crate::error::AgentError;
use crate::leader::{bootstrap, calls, Granter};
use crate::stats::Stats;
use crate::tls::{self, Caller};

/// The Peer service of one agent.
pub struct PeerService {
    pub cluster: Arc<Cluster>,
    pub granter: Granter,
    pub stats: Arc<Stats>,
    /// Calls passed on to this agent as leader (`Peer.Leader`): bounded
    /// like admin calls, since every follower may pass its own on.
    pub leader_calls: crate::api::CallLimit,
    /// The port runs mutual TLS: callers are known by their certificate.
    pub secure: bool,
}

fn decode<T: DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, Status> {
    codec::decode(&req.into_inner().payload).map_err(|e| Status::invalid_argument(format!("payload: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    codec::encode(value)
        .map(|payload| Response::new(RaftPayload { payload }))
        .map_err(|e| Status::internal(format!("encode reply: {e}")))
}

/// Who a Raft call says sent it: the leader (or candidate) in its vote.
fn raft_claim(vote: &Vote<NodeId>) -> Result<Claim, Status> {
    match vote.leader_id().voted_for() {
        Some(from) => Ok(Claim::Raft { from }),
        None => Err(Status::invalid_argument("payload: the Raft call names no sender")),
    }
}

/// The cluster id a call carries, if any.
fn header<T>(req: &Request<T>) -> Option<&str> {
    req.metadata().get(HEADER).and_then(|v| v.to_str().ok())
}

impl PeerService {
    /// Refuses a call whose certificate may not make it (`access::peer`).
    fn allow(&self, method: &'static str, caller: &Caller, claim: Claim) -> Result<(), Status> {
        // Raft calls are checked against the membership as the log has it
        // (ahead of the applied state).
        let raft = match claim {
            Claim::Raft { .. } => {
                let m = self.cluster.raft.metrics().borrow().membership_config.clone();
                RaftMembers {
                    all: m.membership().nodes().map(|(id, _)| *id).collect(),
                    voters: m.membership().voter_ids().collect(),
                }
            }
            _ => RaftMembers::default(),
        };
        self.cluster
            .reader
            .with(|d| access::peer(caller, claim, &d.state, &raft))
            .map_err(|denied| self.denied(method, caller, denied))
    }

    fn denied(&self, method: &'static str, caller: &Caller, denied: access::Denied) -> Status {
        self.stats.peer_refused(method, "certificate");
        warn!(method, caller = %caller, error = %denied, "peer call refused");
        Status::permission_denied(denied.to_string())
    }

    fn caller<T>(&self, method: &'static str, req: &Request<T>) -> Result<Caller, Status> {
        tls::caller(req, self.secure).inspect_err(|e| {
            self.stats.peer_refused(method, "certificate");
            warn!(method, error = %e.message(), "peer call refused");
        })
    }

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
        const M: &str = "append_entries";
        self.admit(M, header(&req))?;
        let caller = self.caller(M, &req)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req)?;
        self.allow(M, &caller, raft_claim(&rpc.vote)?)?;
        let reply = self.cluster.raft.append_entries(rpc).await;
        if reply
            .as_ref()
            .is_ok_and(|r| !matches!(r, AppendEntriesResponse::HigherVote(_)))
        {
            self.cluster.leader_contact.heard();
        }
        encode(&reply)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        const M: &str = "vote";
        self.admit(M, header(&req))?;
        let caller = self.caller(M, &req)?;
        let rpc: VoteRequest<NodeId> = decode(req)?;
        self.allow(M, &caller, raft_claim(&rpc.vote)?)?;
        encode(&self.cluster.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        const M: &str = "install_snapshot";
        self.admit(M, header(&req))?;
        let caller = self.caller(M, &req)?;
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req)?;
        self.allow(M, &caller, raft_claim(&rpc.vote)?)?;
        encode(&self.cluster.raft.install_snapshot(rpc).await)
    }

    async fn heartbeat(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        const M: &str = "heartbeat";
        self.admit(M, header(&req))?;
        let caller = self.caller(M, &req)?;
        let renewal: Renewal = decode(req)?;
        self.allow(M, &caller, Claim::OnBehalf { node: renewal.node })?;
        encode(&self.granter.grant(renewal).await)
    }

    async fn fenced(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        const M: &str = "fenced";
        self.admit(M, header(&req))?;
        let caller = self.caller(M, &req)?;
        let request: FenceRequest = decode(req)?;
        let node = match &request {
            FenceRequest::Ticket { node } | FenceRequest::Notice { node, .. } => *node,
        };
        self.allow(M, &caller, Claim::OnBehalf { node })?;
        encode(&calls::fence_request(&self.cluster, request).await)
    }

    async fn leader(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        const M: &str = "leader";
        // The bootstrap travels before anyone has a cluster id; it is
        // refused on its own terms once the cluster is initialised.
        let _call = self.leader_calls.enter()?;
        let header = header(&req).map(str::to_owned);
        let caller = self.caller(M, &req)?;
        let LeaderRequest { by, asker, call } = decode(req)?;
        let bootstrap = matches!(call, LeaderCall::Init { .. });
        if !bootstrap {
            self.admit(M, header.as_deref())?;
        }
        // A stop's drain, and its end, only from the stopping node itself.
        let own = match &call {
            LeaderCall::Drain {
                node, on_stop: true, ..
            }
            | LeaderCall::Undrain { node, after_stop: true } => Some(
                self.cluster
                    .reader
                    .with(|d| d.state.node_by_name(node).map_or(NodeId::MAX, |n| n.id)),
            ),
            _ => None,
        };
        self.allow(M, &caller, Claim::Leader { bootstrap, own })?;
        // The forwarding node is a member (checked above): its word for
        // who asked is taken, checked, and kept beside its own name.
        access::passed_on(&asker, &call, self.secure).map_err(|denied| self.denied(M, &caller, denied))?;
        let by: String = by.chars().filter(|c| !c.is_control()).take(200).collect();
        let by = format!("{by} via {caller}");
        let reply = match call {
            // The bootstrap's one hop to the first voter.
            LeaderCall::Init { topology, forwarded } => {
                bootstrap::init(&self.cluster, topology, forwarded, &by, &asker).await
            }
            call => calls::execute(&self.cluster, call, &by).await,
        };
        encode(&reply)
    }

    async fn reach(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        const M: &str = "reach";
        self.admit(M, header(&req))?;
        let caller = self.caller(M, &req)?;
        let ask: ReachRequest = decode(req)?;
        // Asked only by a voter about to campaign: the same rule as a vote.
        self.allow(M, &caller, Claim::Raft { from: ask.node })?;
        let m = self.cluster.raft.metrics().borrow().clone();
        let quiet = Duration::from_millis(self.cluster.raft.config().election_timeout_min);
        // A leader that gave up is no leader to be heard.
        let leading = m.state == ServerState::Leader && !self.cluster.network.standing().gave_up_in(m.current_term);
        let leader_heard = leading || self.cluster.leader_contact.within(quiet);
        encode(&Reached {
            term: m.current_term,
            leader_heard,
        })
    }

    async fn join(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let caller = self.caller("join", &req)?;
        self.allow("join", &caller, Claim::Join)?;
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
