//! One agent's view of the cluster and the calls only a leader may carry
//! out. Every admin operation ends up in `Cluster::execute` on the leader:
//! a node that is not the leader passes the call on (`Peer.Leader`), so
//! operators may talk to any node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use slotd_proto::v1::RaftPayload;
use slotd_raft_store::storage::StateReader;
use slotd_raft_store::typ::Raft;
use slotd_raft_store::{codec, ClusterState, Command, NodeId, NodeSpec, Rejection, Request, Response, Topology};
use tracing::{info, warn};

use crate::network::PeerNetwork;
use crate::status::{Liveness, StatusView};

/// How long an admin call waits for a leader to be known.
pub const LEADER_WAIT: Duration = Duration::from_secs(10);

/// A call that must run on the leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LeaderCall {
    /// A linearizable status read.
    Status,
    /// Append one command to the log.
    Write(Command),
    /// Add a node as a Raft learner, then to the cluster state.
    AddNode(NodeSpec),
    /// Take a node out of the state and the membership, promoting a learner
    /// first if it was a voter.
    RemoveNode(NodeId),
    /// Remove a store; without an epoch, at whatever epoch the leader sees
    /// (a follower's view may be behind).
    RemoveStore { store: String, epoch: Option<u64> },
    /// After bootstrap: add these nodes as learners.
    AddLearners(Vec<(NodeId, String)>),
    /// Bootstrap; sent to a voter of the topology (not to a leader: there is
    /// none yet).
    Init(Topology),
}

/// What a leader call answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LeaderReply {
    Status(StatusView),
    /// The log index of the last entry the call wrote.
    Written {
        index: u64,
    },
}

/// Why an admin call failed. Carried between agents, so serialisable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AgentError {
    /// The state machine refuses the command: nothing changed.
    #[error("{0}")]
    Refused(Rejection),
    /// An argument is malformed: the message names it.
    #[error("{0}")]
    Invalid(String),
    /// This node is not the leader (any more).
    #[error("node {me} is not the leader{}", leader_hint(.leader))]
    NotLeader {
        me: NodeId,
        leader: Option<(NodeId, String)>,
    },
    /// No leader could be found in time (no quorum, or not initialised).
    #[error("no leader is known (is a majority of voters up? is the cluster initialised?)")]
    NoLeader,
    /// The agent is shutting down.
    #[error("the agent is shutting down")]
    ShuttingDown,
    /// Raft or the network failed; the message says how.
    #[error("{0}")]
    Raft(String),
}

fn leader_hint(leader: &Option<(NodeId, String)>) -> String {
    match leader {
        Some((id, addr)) => format!("; the leader is node {id} at {addr}"),
        None => String::new(),
    }
}

/// Unix time in ms for `Request::at_ms` (history only; apply never reads it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// This agent's handle on Raft and the state machine.
pub struct Cluster {
    pub id: NodeId,
    pub name: String,
    pub raft: Raft,
    pub reader: StateReader,
    pub network: PeerNetwork,
    /// Leases granted and reports received while this node leads.
    pub seen: crate::lease::Seen,
    /// A node not heard from for this long is shown as not alive.
    pub alive_within: Duration,
}

impl Cluster {
    /// Runs `call` on the leader, wherever it is, following a change of
    /// leader a few times.
    pub async fn call(self: &Arc<Self>, call: LeaderCall) -> Result<LeaderReply, AgentError> {
        let mut last = AgentError::NoLeader;
        for _ in 0..4 {
            let Some(leader) = self.wait_leader(LEADER_WAIT).await else {
                return Err(AgentError::NoLeader);
            };
            let result = if leader == self.id {
                self.execute(call.clone()).await
            } else {
                match self.leader_addr(leader) {
                    Some(addr) => self.forward(&addr, &call).await,
                    None => Err(AgentError::NoLeader),
                }
            };
            match result {
                Err(e @ AgentError::NotLeader { .. }) => {
                    // Leadership moved under us: wait for the next leader.
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
    pub async fn forward(&self, addr: &str, call: &LeaderCall) -> Result<LeaderReply, AgentError> {
        let mut client = self
            .network
            .channels
            .peer(addr)
            .map_err(|e| AgentError::Raft(format!("{addr}: {e}")))?;
        let payload = codec::encode(call).map_err(|e| AgentError::Raft(e.to_string()))?;
        let reply = client
            .leader(RaftPayload { payload })
            .await
            .map_err(|s| AgentError::Raft(format!("{addr}: {}", s.message())))?;
        codec::decode::<Result<LeaderReply, AgentError>>(&reply.into_inner().payload)
            .map_err(|e| AgentError::Raft(format!("{addr}: {e}")))?
    }

    /// Carries out `call` here; answers `NotLeader` if this node is not the
    /// leader (except `Init`, which needs no leader).
    pub async fn execute(self: &Arc<Self>, call: LeaderCall) -> Result<LeaderReply, AgentError> {
        match call {
            LeaderCall::Status => {
                self.raft.ensure_linearizable().await.map_err(|e| self.raft_err(e))?;
                Ok(LeaderReply::Status(self.status()))
            }
            LeaderCall::Write(command) => self.write(command).await.map(|index| LeaderReply::Written { index }),
            LeaderCall::AddNode(spec) => self.add_node(spec).await,
            LeaderCall::RemoveStore { store, epoch } => {
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
            LeaderCall::RemoveNode(id) => self.remove_node(id).await,
            LeaderCall::AddLearners(nodes) => {
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
            LeaderCall::Init(topology) => Box::pin(self.init(topology)).await,
        }
    }

    /// This node's own view, without asking anyone (liveness is known only
    /// on the leader).
    pub fn status(&self) -> StatusView {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        let leading = m.state == ServerState::Leader;
        let alive = |n: NodeId| {
            n == self.id || (leading && self.network.last_seen.since(n).is_some_and(|d| d <= self.alive_within))
        };
        self.reader.with(|data| {
            StatusView::build(
                data,
                &Liveness {
                    leader: m.current_leader,
                    term: m.current_term,
                    answered_by: self.id,
                    voters,
                    learners,
                    alive: &alive,
                },
            )
        })
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
                at_ms: now_ms(),
                command,
            })
            .await
            .map_err(|e| self.raft_err(e))?;
        match response.data {
            Response::Applied => Ok(response.log_id.index),
            Response::Rejected(r) => Err(AgentError::Refused(r)),
        }
    }

    async fn init(self: &Arc<Self>, topology: Topology) -> Result<LeaderReply, AgentError> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| AgentError::Raft(e.to_string()))?
        {
            return Err(AgentError::Refused(Rejection::AlreadyInitialised));
        }
        ClusterState::default()
            .check(&Command::Init(topology.clone()))
            .map_err(AgentError::Refused)?;
        let voters: BTreeMap<NodeId, BasicNode> = topology
            .nodes
            .iter()
            .filter(|n| n.voter)
            .map(|n| (n.id, BasicNode::new(n.addr.clone())))
            .collect();
        if !voters.contains_key(&self.id) {
            // Only a member can bootstrap: hand it to the first voter.
            let (first, node) = voters
                .iter()
                .next()
                .ok_or(AgentError::Refused(Rejection::NotInitialised))?;
            info!(to = first, "init: passing the bootstrap to the first voter");
            return self.forward(&node.addr, &LeaderCall::Init(topology)).await;
        }
        match topology.nodes.iter().find(|n| n.id == self.id) {
            Some(me) if me.name != self.name => {
                return Err(AgentError::Invalid(format!(
                    "topology names node {} {:?}, but this node's config calls it {:?}",
                    self.id, me.name, self.name
                )))
            }
            _ => {}
        }
        info!(voters = ?voters.keys().collect::<Vec<_>>(), "init: bootstrapping the Raft group");
        self.raft.initialize(voters).await.map_err(|e| match e {
            RaftError::APIError(openraft::error::InitializeError::NotAllowed(_)) => {
                AgentError::Refused(Rejection::AlreadyInitialised)
            }
            other => AgentError::Raft(other.to_string()),
        })?;
        let learners: Vec<(NodeId, String)> = topology
            .nodes
            .iter()
            .filter(|n| !n.voter)
            .map(|n| (n.id, n.addr.clone()))
            .collect();
        let reply = self.call(LeaderCall::Write(Command::Init(topology))).await?;
        if learners.is_empty() {
            return Ok(reply);
        }
        self.call(LeaderCall::AddLearners(learners)).await
    }

    async fn add_node(&self, mut spec: NodeSpec) -> Result<LeaderReply, AgentError> {
        // New nodes join as learners; voters change only by promotion.
        spec.voter = false;
        let command = Command::AddNode(spec.clone());
        self.reader
            .with(|d| d.state.check(&command))
            .map_err(AgentError::Refused)?;
        // Membership first: if it fails, the state says nothing of the node
        // and the operator can simply try again.
        self.raft
            .add_learner(spec.id, BasicNode::new(spec.addr.clone()), false)
            .await
            .map_err(|e| self.raft_err(e))?;
        let index = self.write(command).await?;
        info!(node = spec.id, name = %spec.name, "node added as learner");
        Ok(LeaderReply::Written { index })
    }

    async fn remove_node(&self, id: NodeId) -> Result<LeaderReply, AgentError> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let in_state = self.reader.with(|d| d.state.nodes.contains_key(&id));
        let is_voter = membership.voter_ids().any(|v| v == id);
        let is_member = is_voter || membership.learner_ids().any(|l| l == id);
        if !in_state && !is_member {
            return Err(AgentError::Refused(Rejection::UnknownNode(id.to_string())));
        }
        let mut index = 0;
        if in_state {
            self.reader
                .with(|d| d.state.check(&Command::RemoveNode { node: id }))
                .map_err(AgentError::Refused)?;
        }
        if is_voter {
            // Keep the number of voters: promote the learner most caught up.
            let replication = m.replication.clone().unwrap_or_default();
            let replacement = membership
                .learner_ids()
                .filter(|l| *l != id)
                .filter(|l| self.reader.with(|d| d.state.nodes.contains_key(l)))
                .max_by_key(|l| {
                    (
                        replication.get(l).copied().flatten().map(|x| x.index),
                        std::cmp::Reverse(*l),
                    )
                });
            match replacement {
                Some(new_voter) => {
                    info!(node = new_voter, replaces = id, "promoting a learner to voter");
                    self.raft
                        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([new_voter])), true)
                        .await
                        .map_err(|e| self.raft_err(e))?;
                    index = self
                        .write(Command::SetVoter {
                            node: new_voter,
                            voter: true,
                        })
                        .await?;
                }
                None => warn!(
                    node = id,
                    "removing a voter with no learner to promote: fewer voters remain"
                ),
            }
        }
        if in_state {
            index = self.write(Command::RemoveNode { node: id }).await?;
        }
        if is_member {
            let change = if is_voter {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            let r = self
                .raft
                .change_membership(change, false)
                .await
                .map_err(|e| self.raft_err(e))?;
            index = index.max(r.log_id.index);
        }
        info!(node = id, "node removed");
        Ok(LeaderReply::Written { index })
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
        match forward {
            Some(f) => AgentError::NotLeader {
                me: self.id,
                leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
            },
            None => AgentError::Raft(e.to_string()),
        }
    }
}
