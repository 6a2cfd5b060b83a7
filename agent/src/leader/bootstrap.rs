//! The bootstrap (`slotctl init`): not a leader call — there is no leader
//! yet — but carried out by the topology's first voter, which joins every
//! node to the cluster, initialises Raft, and then has the new leader write
//! the topology and add the learners (`calls`).

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::error::RaftError;
use openraft::BasicNode;
use slotd_raft_store::{ClusterState, Command, NodeId, Rejection, Topology};
use tracing::info;

use super::calls;
use super::membership::join_node;
use crate::cluster::identity::ClusterId;
use crate::cluster::wire::{Asker, LeaderCall, LeaderReply};
use crate::cluster::Cluster;
use crate::error::AgentError;

/// Bootstraps the cluster. Always carried out by the topology's first
/// voter (others pass it there once): concurrent inits then meet on one
/// node, where only the first can initialise Raft.
///
/// Re-running it finishes a bootstrap that stopped half-way (Raft
/// initialised, but no leader yet to write the topology, or learners
/// not yet added); it is refused only once the state holds a topology.
pub async fn init(
    cluster: &Arc<Cluster>,
    topology: Topology,
    forwarded: bool,
    by: &str,
    asker: &Asker,
) -> Result<LeaderReply, AgentError> {
    info!(
        by,
        nodes = topology.nodes.len(),
        stores = topology.stores.len(),
        forwarded,
        "init"
    );
    if cluster.reader.with(|d| d.state.initialised) {
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
    if first != cluster.id {
        if forwarded {
            // Passed here as the first voter, but we are not it: the
            // topology's address for that node reaches another agent.
            return Err(AgentError::Invalid(format!(
                "topology: node {first} addr {} reaches node {} ({}), not node {first}",
                first_node.addr, cluster.id, cluster.name
            )));
        }
        info!(to = first, "init: passing the bootstrap to the first voter");
        return cluster
            .forward(
                &first_node.addr,
                by,
                asker,
                &LeaderCall::Init {
                    topology,
                    forwarded: true,
                },
            )
            .await;
    }
    if let Some(me) = topology.nodes.iter().find(|n| n.id == cluster.id) {
        if me.name != cluster.name {
            return Err(AgentError::Invalid(format!(
                "topology names node {} {:?}, but this node's config calls it {:?}",
                cluster.id, me.name, cluster.name
            )));
        }
    }
    // Every node joins the cluster (takes its id) before Raft starts, so
    // that none of them ever answers a stranger. This node first: a
    // bootstrap re-run after a failure keeps the id it drew.
    let id = cluster.identity.get().unwrap_or_else(ClusterId::random);
    cluster
        .identity
        .join(id)
        .map_err(|e| AgentError::Precondition(e.to_string()))?;
    for n in topology.nodes.iter().filter(|n| n.id != cluster.id) {
        join_node(cluster, id, n).await?;
    }
    let raft_ready = cluster
        .raft
        .is_initialized()
        .await
        .map_err(|e| AgentError::Raft(e.to_string()))?;
    if !raft_ready {
        info!(voters = ?voters.keys().collect::<Vec<_>>(), "init: bootstrapping the Raft group");
        match cluster.raft.initialize(voters.clone()).await {
            Ok(()) => {}
            // Another init got here first; carry on and let the state
            // machine decide which topology stands.
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
            Err(other) => return Err(AgentError::Raft(other.to_string())),
        }
    } else {
        let members: BTreeMap<NodeId, BasicNode> = cluster
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
    let mut reply = calls::call_by(cluster, by, &Asker::Agent, LeaderCall::WriteInit(topology.clone())).await?;
    if topology.nodes.iter().any(|n| !n.voter) {
        reply = calls::call_by(cluster, by, &Asker::Agent, LeaderCall::AddTopologyLearners).await?;
    }
    Ok(reply)
}
