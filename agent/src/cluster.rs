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
pub const LEADER_WAIT: Duration = Duration::from_secs(5);

/// The longest an admin call is carried on before it is given up.
pub const CALL_DEADLINE: Duration = Duration::from_secs(25);

/// The longest one hop to the leader may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// A call that must run on the leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LeaderCall {
    /// A linearizable status read.
    Status,
    /// Append one command to the log.
    Write(Command),
    /// Add a node as a Raft learner, then to the cluster state.
    AddNode(NodeSpec),
    /// Take a node (by name, or by id for one only Raft knows) out of the
    /// state and the membership, promoting a learner first if it was a voter.
    RemoveNode(String),
    /// Add a store whose slots name nodes by name.
    AddStore(NamedStore),
    /// Remove a store; without an epoch, at whatever epoch the leader sees
    /// (a follower's view may be behind).
    RemoveStore { store: String, epoch: Option<u64> },
    /// After bootstrap: add these nodes as learners.
    AddLearners(Vec<(NodeId, String)>),
    /// Bootstrap; carried out by the topology's first voter (not by a
    /// leader: there is none yet). `forwarded` is set on the one hop there.
    Init { topology: Topology, forwarded: bool },
}

/// A store as an operator writes it: slots as `NODE:SLOT` with node names.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NamedStore {
    pub name: String,
    pub master_ip: String,
    pub replica_ip: String,
    pub slots: Vec<String>,
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
    /// The cluster is not in a state where the call can be done safely;
    /// nothing changed.
    #[error("{0}")]
    Precondition(String),
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
    /// The leader could not be reached (it may just have died).
    #[error("cannot reach the leader: {0}")]
    Unreachable(String),
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
        // Below slotctl's own 30 s timeout, so the operator hears why.
        match tokio::time::timeout(CALL_DEADLINE, self.call_inner(call)).await {
            Ok(r) => r,
            Err(_) => Err(AgentError::Raft(format!(
                "no answer from the leader within {CALL_DEADLINE:?}; the call may still complete"
            ))),
        }
    }

    async fn call_inner(self: &Arc<Self>, call: LeaderCall) -> Result<LeaderReply, AgentError> {
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
    pub async fn forward(&self, addr: &str, call: &LeaderCall) -> Result<LeaderReply, AgentError> {
        let mut client = self
            .network
            .channels
            .peer(addr)
            .map_err(|e| AgentError::Raft(format!("{addr}: {e}")))?;
        let payload = codec::encode(call).map_err(|e| AgentError::Raft(e.to_string()))?;
        let mut request = tonic::Request::new(RaftPayload { payload });
        request.set_timeout(FORWARD_TIMEOUT);
        let reply = client.leader(request).await.map_err(|s| match s.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                AgentError::Unreachable(format!("{addr}: {}", s.message()))
            }
            _ => AgentError::Raft(format!("{addr}: {}", s.message())),
        })?;
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
            LeaderCall::Write(command) => {
                self.confirm_leader().await?;
                self.write(command).await.map(|index| LeaderReply::Written { index })
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
            LeaderCall::Init { topology, forwarded } => Box::pin(self.init(topology, forwarded)).await,
        }
    }

    /// `slotd fence` reports `notice.node` empty. On the leader, accepted if
    /// no newer lease was granted to it (see `Seen::accept_fenced`); the
    /// failover engine then moves its stores without waiting out the lease.
    pub async fn fenced(&self, notice: crate::lease::FencedNotice) -> Result<bool, AgentError> {
        self.confirm_leader().await?;
        let term = self.raft.metrics().borrow().current_term;
        let accepted = self.seen.accept_fenced(notice.node, notice.generation, self.id, term);
        info!(node = notice.node, accepted, "fence notice");
        Ok(accepted)
    }

    /// Confirms with a quorum that this node leads and has applied all that
    /// was committed, so that checks against the local state are not stale.
    async fn confirm_leader(&self) -> Result<(), AgentError> {
        self.raft.ensure_linearizable().await.map_err(|e| self.raft_err(e))?;
        Ok(())
    }

    /// This node's own view, without asking anyone (liveness is known only
    /// on the leader).
    pub fn status(&self) -> StatusView {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        let leading = m.state == ServerState::Leader;
        let reports = if leading {
            self.seen.reports()
        } else {
            Default::default()
        };
        let alive = |n: NodeId| {
            // Alive = granted a lease recently (renewals carry the health
            // report); only the leader grants, so only it knows.
            n == self.id
                || (leading
                    && self
                        .seen
                        .granted_at(n)
                        .is_some_and(|t| t.elapsed() <= self.alive_within))
        };
        self.reader.with(|data| {
            crate::status::build(
                data,
                &Liveness {
                    leader: m.current_leader,
                    term: m.current_term,
                    answered_by: self.id,
                    voters,
                    learners,
                    alive: &alive,
                    l2: &|s| {
                        if leading {
                            crate::l2::verdict(s, &reports).to_string()
                        } else {
                            "unknown".to_owned()
                        }
                    },
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

    /// Bootstraps the cluster. Always carried out by the topology's first
    /// voter (others pass it there once): concurrent inits then meet on one
    /// node, where only the first can initialise Raft.
    ///
    /// Re-running it finishes a bootstrap that stopped half-way (Raft
    /// initialised, but no leader yet to write the topology, or learners
    /// not yet added); it is refused only once the state holds a topology.
    async fn init(self: &Arc<Self>, topology: Topology, forwarded: bool) -> Result<LeaderReply, AgentError> {
        if self.reader.with(|d| d.state.initialised) {
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
        let Some((&first, first_node)) = voters.iter().next() else {
            return Err(AgentError::Invalid(
                "topology: at least one node must be a voter".into(),
            ));
        };
        if first != self.id {
            if forwarded {
                // Passed here as the first voter, but we are not it: the
                // topology's address for that node reaches another agent.
                return Err(AgentError::Invalid(format!(
                    "topology: node {first} addr {} reaches node {} ({}), not node {first}",
                    first_node.addr, self.id, self.name
                )));
            }
            info!(to = first, "init: passing the bootstrap to the first voter");
            return self
                .forward(
                    &first_node.addr,
                    &LeaderCall::Init {
                        topology,
                        forwarded: true,
                    },
                )
                .await;
        }
        if let Some(me) = topology.nodes.iter().find(|n| n.id == self.id) {
            if me.name != self.name {
                return Err(AgentError::Invalid(format!(
                    "topology names node {} {:?}, but this node's config calls it {:?}",
                    self.id, me.name, self.name
                )));
            }
        }
        let raft_ready = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| AgentError::Raft(e.to_string()))?;
        if !raft_ready {
            info!(voters = ?voters.keys().collect::<Vec<_>>(), "init: bootstrapping the Raft group");
            match self.raft.initialize(voters.clone()).await {
                Ok(()) => {}
                // Another init got here first; carry on and let the state
                // machine decide which topology stands.
                Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
                Err(other) => return Err(AgentError::Raft(other.to_string())),
            }
        } else {
            let members: BTreeMap<NodeId, BasicNode> = self
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .nodes()
                .map(|(id, n)| (*id, n.clone()))
                .collect();
            if voters.iter().any(|(id, n)| members.get(id) != Some(n)) {
                return Err(AgentError::Invalid(
                    "this node's Raft group was bootstrapped with other voters; init with the same topology".into(),
                ));
            }
            info!("init: Raft already bootstrapped, finishing the topology");
        }
        let mut reply = self.call(LeaderCall::Write(Command::Init(topology.clone()))).await?;
        let learners: Vec<(NodeId, String)> = topology
            .nodes
            .iter()
            .filter(|n| !n.voter)
            .map(|n| (n.id, n.addr.clone()))
            .collect();
        if !learners.is_empty() {
            reply = self.call(LeaderCall::AddLearners(learners)).await?;
        }
        Ok(reply)
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
        let index = match self.write(command).await {
            Ok(index) => index,
            Err(AgentError::Refused(r)) => {
                // Refused after all (a concurrent add won): take the learner
                // back out, so that "refused" still means "nothing changed".
                if !self.reader.with(|d| d.state.nodes.contains_key(&spec.id)) {
                    if let Err(e) = self
                        .raft
                        .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([spec.id])), false)
                        .await
                    {
                        warn!(node = spec.id, error = %e, "could not take back the learner of a refused add");
                    }
                }
                return Err(AgentError::Refused(r));
            }
            Err(e) => return Err(e),
        };
        info!(node = spec.id, name = %spec.name, "node added as learner");
        Ok(LeaderReply::Written { index })
    }

    /// Removes a node from the state and the Raft membership. Each step
    /// looks at what is already done, so a retry (after a change of leader
    /// half-way) finishes the job instead of promoting a second learner.
    async fn remove_node(&self, id: NodeId) -> Result<LeaderReply, AgentError> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let in_state = self.reader.with(|d| d.state.nodes.contains_key(&id));
        let is_voter = membership.voter_ids().any(|v| v == id);
        let is_member = is_voter || membership.learner_ids().any(|l| l == id);
        if !in_state && !is_member {
            return Err(AgentError::Refused(Rejection::UnknownNode(id.to_string())));
        }
        if in_state {
            self.reader
                .with(|d| d.state.check(&Command::RemoveNode { node: id }))
                .map_err(AgentError::Refused)?;
        }
        let mut index = 0;
        if is_voter {
            let others: BTreeSet<NodeId> = membership.voter_ids().filter(|v| *v != id).collect();
            // How many voters the state asks for; the node going away counts.
            let wanted = self
                .reader
                .with(|d| d.state.nodes.values().filter(|n| n.voter).count())
                .max(1);
            if others.len() < wanted {
                let replication = m.replication.clone().unwrap_or_default();
                let last = m.last_log_index.unwrap_or(0);
                // Only a live, caught-up learner: promoting a dead one would
                // leave the joint configuration without a quorum.
                let replacement = membership
                    .learner_ids()
                    .filter(|l| *l != id)
                    .filter(|l| self.reader.with(|d| d.state.nodes.contains_key(l)))
                    .filter(|l| {
                        self.seen
                            .granted_at(*l)
                            .is_some_and(|t| t.elapsed() <= self.alive_within)
                    })
                    .filter(|l| {
                        replication
                            .get(l)
                            .copied()
                            .flatten()
                            .is_some_and(|x| x.index + 100 >= last)
                    })
                    .min();
                match replacement {
                    Some(new_voter) => {
                        info!(node = new_voter, replaces = id, "promoting a learner to voter");
                        self.raft
                            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([new_voter])), true)
                            .await
                            .map_err(|e| self.raft_err(e))?;
                    }
                    // Removing a voter without a replacement would weaken the
                    // quorum behind the operator's back: refuse, change nothing.
                    None => {
                        return Err(AgentError::Precondition(format!(
                            "node {} is a Raft voter and no live, caught-up learner can replace it \
                             (add a node, or wait until the learners are alive and caught up)",
                            self.reader.with(|d| d.state.node_name(id))
                        )));
                    }
                }
            }
        }
        // The state follows the membership: every Raft voter is a voter in
        // the state (covers a promotion done by an earlier attempt).
        let voters_now: Vec<NodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != id)
            .collect();
        for v in voters_now {
            if self.reader.with(|d| d.state.nodes.get(&v).is_some_and(|n| !n.voter)) {
                index = self.write(Command::SetVoter { node: v, voter: true }).await?;
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
