//! Membership: bootstrapping the cluster, adding and removing nodes. The
//! Raft membership and the cluster state change together; every step looks
//! at what is already done, so a call retried after a change of leader
//! finishes the job instead of doing it twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::RaftError;
use openraft::{BasicNode, ChangeMembers};
use slotd_raft_store::{ClusterState, Command, NodeId, NodeSpec, Rejection, Topology};
use tracing::{info, warn};

use crate::clock;
use crate::cluster::Cluster;
use crate::error::AgentError;
use crate::identity::ClusterId;
use crate::peer_call::Method;
use crate::wire::{JoinRequest, LeaderCall, LeaderReply};

/// How long a node may take to answer a join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

impl Cluster {
    /// Gives node `n` (at its topology address) the cluster id.
    async fn join_node(&self, id: ClusterId, n: &NodeSpec) -> Result<(), AgentError> {
        let request = JoinRequest {
            cluster: id,
            node: n.id,
            name: n.name.clone(),
        };
        let answer = self
            .network
            .channels
            .call::<_, Result<(), AgentError>>(&n.addr, Method::Join, &request, JOIN_TIMEOUT)
            .await;
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AgentError::Precondition(format!("node {} at {}: {e}", n.name, n.addr))),
            Err(e) => Err(AgentError::Precondition(format!(
                "node {} cannot be reached to join it to the cluster ({e}); it must run first",
                n.name
            ))),
        }
    }

    /// Bootstraps the cluster. Always carried out by the topology's first
    /// voter (others pass it there once): concurrent inits then meet on one
    /// node, where only the first can initialise Raft.
    ///
    /// Re-running it finishes a bootstrap that stopped half-way (Raft
    /// initialised, but no leader yet to write the topology, or learners
    /// not yet added); it is refused only once the state holds a topology.
    pub(crate) async fn init(
        self: &Arc<Self>,
        topology: Topology,
        forwarded: bool,
        by: &str,
    ) -> Result<LeaderReply, AgentError> {
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
                    by,
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
        // Every node joins the cluster (takes its id) before Raft starts, so
        // that none of them ever answers a stranger. This node first: a
        // bootstrap re-run after a failure keeps the id it drew.
        let id = self.identity.get().unwrap_or_else(ClusterId::random);
        self.identity
            .join(id)
            .map_err(|e| AgentError::Precondition(e.to_string()))?;
        for n in topology.nodes.iter().filter(|n| n.id != self.id) {
            self.join_node(id, n).await?;
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
        let mut reply = self.call_by(by, LeaderCall::WriteInit(topology.clone())).await?;
        if topology.nodes.iter().any(|n| !n.voter) {
            reply = self.call_by(by, LeaderCall::AddTopologyLearners).await?;
        }
        Ok(reply)
    }

    pub(crate) async fn add_node(&self, mut spec: NodeSpec) -> Result<LeaderReply, AgentError> {
        // New nodes join as learners; voters change only by promotion.
        spec.voter = false;
        let command = Command::AddNode(spec.clone());
        self.reader
            .with(|d| d.state.check(&command))
            .map_err(AgentError::Refused)?;
        // The node takes the cluster id first: until then it answers no
        // Raft call.
        let id = self.identity.get().ok_or_else(|| {
            AgentError::Precondition("this node has no cluster id; is the cluster initialised?".into())
        })?;
        self.join_node(id, &spec).await?;
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
    pub(crate) async fn remove_node(&self, id: NodeId) -> Result<LeaderReply, AgentError> {
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
                    .filter(|l| self.core().alive(*l, clock::now()))
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
}
