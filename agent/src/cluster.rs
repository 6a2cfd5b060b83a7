//! One agent's view of the cluster and the calls only a leader may carry
//! out. Every admin operation ends up in `Cluster::execute` on the leader:
//! a node that is not the leader passes the call on (`Peer.Leader`), so
//! operators may talk to any node.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use slotd_raft_store::storage::StateReader;
use slotd_raft_store::typ::Raft;
use slotd_raft_store::{Command, NodeId, Rejection, Request, Response};
use tokio::sync::Notify;
use tracing::info;

use crate::clock::{self, unix_ms};
use crate::error::AgentError;
use crate::identity::Identity;
use crate::network::PeerNetwork;
use crate::peer_call::{CallError, Method};
use crate::wire::{FenceReply, FenceRequest, LeaderCall, LeaderReply, LeaderRequest};
use slotd_core::leader::LeaderCore;

/// How long an admin call waits for a leader to be known.
pub const LEADER_WAIT: Duration = Duration::from_secs(5);

/// The longest an admin call is carried on before it is given up.
pub const CALL_DEADLINE: Duration = Duration::from_secs(25);

/// The longest one hop to the leader may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// This agent's handle on Raft and the state machine.
pub struct Cluster {
    pub id: NodeId,
    pub name: String,
    pub raft: Raft,
    pub reader: StateReader,
    pub network: PeerNetwork,
    /// The leader's lease ledger and failure detector (used while leading).
    /// Lock order: the state reader first, then this, never the reverse.
    pub leader: Mutex<LeaderCore>,
    /// Wakes the failover engine (an accepted fence notice).
    pub engine_wake: Arc<Notify>,
    /// The cluster id this agent answers to (none before it joined).
    pub identity: Identity,
    /// This node's `[switchover]` (the leader's governs operator commands).
    pub switchover: slotd_core::timing::SwitchoverConfig,
}

impl Cluster {
    /// The leader core, locked (see the lock order on `leader`).
    pub fn core(&self) -> MutexGuard<'_, LeaderCore> {
        self.leader.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs this agent's own `call` on the leader (see `call_by`).
    pub async fn call(self: &Arc<Self>, call: LeaderCall) -> Result<LeaderReply, AgentError> {
        let by = format!("the agent of node {}", self.name);
        self.call_by(&by, call).await
    }

    /// Runs `call`, asked for by `by`, on the leader, wherever it is,
    /// following a change of leader a few times.
    pub async fn call_by(self: &Arc<Self>, by: &str, call: LeaderCall) -> Result<LeaderReply, AgentError> {
        // Below slotctl's own 30 s timeout, so the operator hears why.
        match tokio::time::timeout(CALL_DEADLINE, self.call_inner(by, call)).await {
            Ok(r) => r,
            Err(_) => Err(AgentError::Raft(format!(
                "no answer from the leader within {CALL_DEADLINE:?}; the call may still complete"
            ))),
        }
    }

    async fn call_inner(self: &Arc<Self>, by: &str, call: LeaderCall) -> Result<LeaderReply, AgentError> {
        let mut last = AgentError::NoLeader;
        for _ in 0..4 {
            let Some(leader) = self.wait_leader(LEADER_WAIT).await else {
                return Err(AgentError::NoLeader);
            };
            let result = if leader == self.id {
                self.execute(call.clone(), by).await
            } else {
                match self.leader_addr(leader) {
                    Some(addr) => self.forward(&addr, by, &call).await,
                    None => Err(AgentError::NoLeader),
                }
            };
            match result {
                // Leadership moved, or the leader went away mid-call: wait
                // for the next leader and try again.
                Err(e @ (AgentError::NotLeader { .. } | AgentError::ShuttingDown | AgentError::Unreachable(_))) => {
                    last = e;
                    let _ = self
                        .raft
                        .wait(Some(LEADER_WAIT))
                        .metrics(|m| m.current_leader != Some(leader), "leader change")
                        .await;
                }
                other => return other,
            }
        }
        Err(last)
    }

    /// The current leader, waiting up to `timeout` for one to be known.
    pub async fn wait_leader(&self, timeout: Duration) -> Option<NodeId> {
        let m = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .ok()?;
        m.current_leader
    }

    pub fn leader_addr(&self, leader: NodeId) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
            .or_else(|| self.reader.with(|d| d.state.nodes.get(&leader).map(|n| n.addr.clone())))
    }

    /// Passes `call` to the agent at `addr` (`Peer.Leader`).
    pub async fn forward(&self, addr: &str, by: &str, call: &LeaderCall) -> Result<LeaderReply, AgentError> {
        let request = LeaderRequest {
            by: by.to_owned(),
            call: call.clone(),
        };
        match self
            .network
            .channels
            .call::<_, Result<LeaderReply, AgentError>>(addr, Method::Leader, &request, FORWARD_TIMEOUT)
            .await
        {
            Ok(reply) => reply,
            Err(e @ CallError::Unreachable { .. }) => Err(AgentError::Unreachable(e.to_string())),
            Err(e) => Err(AgentError::Raft(e.to_string())),
        }
    }

    /// Carries out `call`, asked for by `by`, here; answers `NotLeader` if
    /// this node is not the leader (except `Init`, which needs no leader).
    pub async fn execute(self: &Arc<Self>, call: LeaderCall, by: &str) -> Result<LeaderReply, AgentError> {
        if !matches!(call, LeaderCall::Status | LeaderCall::History { .. }) {
            info!(by, call = ?call, "leader call");
        }
        match call {
            LeaderCall::Status => {
                self.raft.ensure_linearizable().await.map_err(|e| self.raft_err(e))?;
                Ok(LeaderReply::Status(self.status()))
            }
            LeaderCall::WriteInit(topology) => {
                self.confirm_leader().await?;
                self.write(Command::Init(topology))
                    .await
                    .map(|index| LeaderReply::Written { index })
            }
            LeaderCall::AddNode(spec) => {
                self.confirm_leader().await?;
                self.add_node(spec).await
            }
            LeaderCall::RemoveStore { store, epoch } => {
                self.confirm_leader().await?;
                let epoch = match epoch {
                    Some(e) => e,
                    None => self
                        .reader
                        .with(|d| d.state.stores.get(&store).map(|s| s.epoch))
                        .ok_or_else(|| AgentError::Refused(Rejection::UnknownStore(store.clone())))?,
                };
                let index = self.write(Command::RemoveStore { store, epoch }).await?;
                Ok(LeaderReply::Written { index })
            }
            LeaderCall::RemoveNode(name) => {
                self.confirm_leader().await?;
                let by_name = self.reader.with(|d| d.state.node_by_name(&name).map(|n| n.id));
                let member = || {
                    let id: NodeId = name.parse().ok()?;
                    let m = self.raft.metrics().borrow().clone();
                    m.membership_config.membership().get_node(&id).map(|_| id)
                };
                match by_name.or_else(member) {
                    Some(id) => self.remove_node(id).await,
                    None => Err(AgentError::Refused(Rejection::UnknownNode(format!("{name:?}")))),
                }
            }
            LeaderCall::AddStore(store) => {
                self.confirm_leader().await?;
                let spec = self.reader.with(|d| {
                    let lookup = |n: &str| d.state.node_by_name(n).map(|x| x.id);
                    crate::admin::store_spec(store.into(), &lookup)
                });
                let spec = spec.map_err(|s| AgentError::Invalid(s.message().to_owned()))?;
                let index = self.write(Command::AddStore(spec)).await?;
                Ok(LeaderReply::Written { index })
            }
            LeaderCall::AddTopologyLearners => {
                self.confirm_leader().await?;
                let members: Vec<NodeId> = {
                    let m = self.raft.metrics().borrow().clone();
                    m.membership_config.membership().nodes().map(|(id, _)| *id).collect()
                };
                let nodes: Vec<(NodeId, String)> = self.reader.with(|d| {
                    d.state
                        .nodes
                        .values()
                        .filter(|n| !n.voter && !members.contains(&n.id))
                        .map(|n| (n.id, n.addr.clone()))
                        .collect()
                });
                let mut index = 0;
                for (id, addr) in nodes {
                    let r = self
                        .raft
                        .add_learner(id, BasicNode::new(addr), false)
                        .await
                        .map_err(|e| self.raft_err(e))?;
                    index = r.log_id.index;
                }
                Ok(LeaderReply::Written { index })
            }
            // Boxed: bootstrapping calls back into `call` for its first writes.
            LeaderCall::Init { topology, forwarded } => Box::pin(self.init(topology, forwarded, by)).await,
            LeaderCall::Failover { store, to, force } => self.failover(store, to, force).await,
            LeaderCall::Drain {
                node,
                concurrency,
                on_stop,
            } => self.drain(node, concurrency, on_stop).await,
            LeaderCall::Undrain { node, after_stop } => self.undrain(node, after_stop).await,
            LeaderCall::Rebalance { dry_run, concurrency } => self.rebalance(dry_run, concurrency).await,
            LeaderCall::History { store, limit } => self.history(store, limit).await,
        }
    }

    /// `slotd fence` on `node` asks for a ticket or presents its notice
    /// (DESIGN rule 6; the rule is `LeaderCore::fenced_notice`). An accepted
    /// notice wakes the failover engine.
    pub async fn fence_request(&self, request: FenceRequest) -> Result<FenceReply, AgentError> {
        self.confirm_leader().await?;
        let term = self.raft.metrics().borrow().current_term;
        let now = clock::now();
        let mut core = self.core();
        core.observe(Some(term), now);
        match request {
            FenceRequest::Ticket { node } => {
                let id = crate::random::u64();
                if !core.issue_ticket(node, id, now) {
                    return Err(AgentError::NoLeader);
                }
                Ok(FenceReply::Ticket(id))
            }
            FenceRequest::Notice { node, ticket } => {
                let accepted = core.fenced_notice(node, ticket, now);
                drop(core);
                info!(node, accepted, "fence notice");
                if accepted {
                    self.engine_wake.notify_one();
                }
                Ok(FenceReply::Accepted(accepted))
            }
        }
    }

    /// Confirms with a quorum that this node leads and has applied all that
    /// was committed, so that checks against the local state are not stale.
    pub(crate) async fn confirm_leader(&self) -> Result<(), AgentError> {
        self.raft.ensure_linearizable().await.map_err(|e| self.raft_err(e))?;
        Ok(())
    }

    /// Appends `command`, refusing it first against the applied state so
    /// that bad operator input never reaches the log (the state machine
    /// checks again at its position in the log).
    pub async fn write(&self, command: Command) -> Result<u64, AgentError> {
        self.reader
            .with(|d| d.state.check(&command))
            .map_err(AgentError::Refused)?;
        let response = self
            .raft
            .client_write(Request {
                at_ms: unix_ms(),
                command,
            })
            .await
            .map_err(|e| self.raft_err(e))?;
        match response.data {
            Response::Applied => Ok(response.log_id.index),
            Response::Rejected(r) => Err(AgentError::Refused(r)),
        }
    }

    /// Maps openraft's errors: "go to the leader" becomes `NotLeader`.
    pub fn raft_err<E: std::fmt::Display + 'static>(&self, e: RaftError<NodeId, E>) -> AgentError {
        let forward = match &e {
            RaftError::APIError(api) => {
                let any: &dyn std::any::Any = api;
                any.downcast_ref::<ClientWriteError<NodeId, BasicNode>>()
                    .and_then(|c| match c {
                        ClientWriteError::ForwardToLeader(f) => Some(f.clone()),
                        _ => None,
                    })
                    .or_else(|| {
                        any.downcast_ref::<openraft::error::CheckIsLeaderError<NodeId, BasicNode>>()
                            .and_then(|c| match c {
                                openraft::error::CheckIsLeaderError::ForwardToLeader(f) => Some(f.clone()),
                                _ => None,
                            })
                    })
            }
            RaftError::Fatal(_) => None,
        };
        if let RaftError::Fatal(openraft::error::Fatal::Stopped) = &e {
            return AgentError::ShuttingDown;
        }
        match forward {
            Some(f) => AgentError::NotLeader {
                me: self.id,
                leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
            },
            None => AgentError::Raft(e.to_string()),
        }
    }
}
