//! Membership, on the leader: adding and removing nodes (bootstrapping the
//! cluster is `bootstrap`'s). The Raft membership and the cluster state
//! change together; every step looks
//! at what is already done, so a call retried after a change of leader
//! finishes the job instead of doing it twice.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers};
use slotd_raft_store::{Command, NodeId, NodeSpec, Rejection};
use tracing::{info, warn};

use crate::clock;
use crate::cluster::channel::Method;
use crate::cluster::identity::ClusterId;
use crate::cluster::wire::{JoinRequest, LeaderReply};
use crate::cluster::Cluster;
use crate::error::AgentError;

/// How long a node may take to answer a join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Gives node `n` (at its topology address) the cluster id.
pub async fn join_node(cluster: &Cluster, id: ClusterId, n: &NodeSpec) -> Result<(), AgentError> {
    let request = JoinRequest {
        cluster: id,
        node: n.id,
        name: n.name.clone(),
    };
    let answer = cluster
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

pub async fn add_node(cluster: &Cluster, mut spec: NodeSpec) -> Result<LeaderReply, AgentError> {
    // New nodes join as learners; voters change only by promotion.
    spec.voter = false;
    let command = Command::AddNode(spec.clone());
    cluster
        .reader
        .with(|d| d.state.check(&command))
        .map_err(AgentError::Refused)?;
    // The node takes the cluster id first: until then it answers no
    // Raft call.
    let id = cluster
        .identity
        .get()
        .ok_or_else(|| AgentError::Precondition("this node has no cluster id; is the cluster initialised?".into()))?;
    join_node(cluster, id, &spec).await?;
    // Membership first: if it fails, the state says nothing of the node
    // and the operator can simply try again.
    cluster
        .raft
        .add_learner(spec.id, BasicNode::new(spec.addr.clone()), false)
        .await
        .map_err(|e| cluster.raft_err(e))?;
    let index = match cluster.write(command).await {
        Ok(index) => index,
        Err(AgentError::Refused(r)) => {
            // Refused after all (a concurrent add won): take the learner
            // back out, so that "refused" still means "nothing changed".
            if !cluster.reader.with(|d| d.state.nodes.contains_key(&spec.id)) {
                if let Err(e) = cluster
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
pub async fn remove_node(cluster: &Cluster, id: NodeId) -> Result<LeaderReply, AgentError> {
    let m = cluster.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    let in_state = cluster.reader.with(|d| d.state.nodes.contains_key(&id));
    let is_voter = membership.voter_ids().any(|v| v == id);
    let is_member = is_voter || membership.learner_ids().any(|l| l == id);
    if !in_state && !is_member {
        return Err(AgentError::Refused(Rejection::UnknownNode(id.to_string())));
    }
    if in_state {
        cluster
            .reader
            .with(|d| d.state.check(&Command::RemoveNode { node: id }))
            .map_err(AgentError::Refused)?;
    }
    let mut index = 0;
    if is_voter {
        let others: BTreeSet<NodeId> = membership.voter_ids().filter(|v| *v != id).collect();
        // How many voters the state asks for; the node going away counts.
        let wanted = cluster
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
                .filter(|l| cluster.reader.with(|d| d.state.nodes.contains_key(l)))
                .filter(|l| cluster.core().alive(*l, clock::now()))
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
                    cluster
                        .raft
                        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([new_voter])), true)
                        .await
                        .map_err(|e| cluster.raft_err(e))?;
                }
                // Removing a voter without a replacement would weaken the
                // quorum behind the operator's back: refuse, change nothing.
                None => {
                    return Err(AgentError::Precondition(format!(
                        "node {} is a Raft voter and no live, caught-up learner can replace it \
                         (add a node, or wait until the learners are alive and caught up)",
                        cluster.reader.with(|d| d.state.node_name(id))
                    )));
                }
            }
        }
    }
    // The state follows the membership: every Raft voter is a voter in
    // the state (covers a promotion done by an earlier attempt).
    let voters_now: Vec<NodeId> = cluster
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .filter(|v| *v != id)
        .collect();
    for v in voters_now {
        if cluster.reader.with(|d| d.state.nodes.get(&v).is_some_and(|n| !n.voter)) {
            index = cluster.write(Command::SetVoter { node: v, voter: true }).await?;
        }
    }
    if in_state {
        index = cluster.write(Command::RemoveNode { node: id }).await?;
    }
    if is_member {
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let r = cluster
            .raft
            .change_membership(change, false)
            .await
            .map_err(|e| cluster.raft_err(e))?;
        index = index.max(r.log_id.index);
    }
    info!(node = id, "node removed");
    Ok(LeaderReply::Written { index })
}
