//! Calls only a leader carries out, from wherever they are asked (an
//! operator's Admin call on any node, an agent's own drain at stop, the
//! bootstrap's writes): [`call_by`] finds the leader and runs the call there
//! (here, or passed on with `Peer.Leader`), following a change of leader a
//! few times; [`execute`] carries it out on the leader (the handlers:
//! `operate`, `membership`), and [`fence_request`] answers `slotd fence`.

use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use slotd_raft_store::{Command, NodeId, Rejection};
use tracing::info;

use super::{membership, operate};
use crate::clock;
use crate::cluster::status;
use crate::cluster::wire::{Asker, FenceReply, FenceRequest, LeaderCall, LeaderReply};
use crate::cluster::Cluster;
use crate::convert;
use crate::error::AgentError;

/// How long a leader call waits for a leader to be known.
pub const LEADER_WAIT: Duration = Duration::from_secs(5);

/// The longest a leader call is carried on before it is given up (below
/// slotctl's own 30 s timeout, so the operator hears why).
pub const CALL_DEADLINE: Duration = Duration::from_secs(25);

/// Runs this agent's own `call` on the leader (see `call_by`).
pub async fn call(cluster: &Arc<Cluster>, call: LeaderCall) -> Result<LeaderReply, AgentError> {
    let by = format!("the agent of node {}", cluster.name);
    call_by(cluster, &by, &Asker::Agent, call).await
}

/// Runs `call`, asked for by `by` (`asker`, checked where it came in), on
/// the leader, wherever it is, following a change of leader a few times.
pub async fn call_by(
    cluster: &Arc<Cluster>,
    by: &str,
    asker: &Asker,
    call: LeaderCall,
) -> Result<LeaderReply, AgentError> {
    // Below slotctl's own 30 s timeout, so the operator hears why.
    match tokio::time::timeout(CALL_DEADLINE, call_inner(cluster, by, asker, call)).await {
        Ok(r) => r,
        Err(_) => Err(AgentError::Raft(format!(
            "no answer from the leader within {CALL_DEADLINE:?}; the call may still complete"
        ))),
    }
}

async fn call_inner(
    cluster: &Arc<Cluster>,
    by: &str,
    asker: &Asker,
    call: LeaderCall,
) -> Result<LeaderReply, AgentError> {
    let mut last = AgentError::NoLeader;
    for _ in 0..4 {
        let Some(leader) = cluster.wait_leader(LEADER_WAIT).await else {
            return Err(AgentError::NoLeader);
        };
        let result = if leader == cluster.id {
            execute(cluster, call.clone(), by).await
        } else {
            match cluster.leader_addr(leader) {
                Some(addr) => cluster.forward(&addr, by, asker, &call).await,
                None => Err(AgentError::NoLeader),
            }
        };
        match result {
            // Leadership moved, or the leader went away mid-call: wait
            // for the next leader and try again.
            Err(e @ (AgentError::NotLeader { .. } | AgentError::ShuttingDown | AgentError::Unreachable(_))) => {
                last = e;
                let _ = cluster
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

/// Carries out `call`, asked for by `by`, here; answers `NotLeader` if
/// this node is not the leader (except `Init`, which needs no leader).
pub async fn execute(cluster: &Arc<Cluster>, call: LeaderCall, by: &str) -> Result<LeaderReply, AgentError> {
    if !matches!(call, LeaderCall::Status | LeaderCall::History { .. }) {
        info!(by, call = ?call, "leader call");
    }
    match call {
        LeaderCall::Status => {
            cluster
                .raft
                .ensure_linearizable()
                .await
                .map_err(|e| cluster.raft_err(e))?;
            Ok(LeaderReply::Status(status::of(cluster)))
        }
        LeaderCall::WriteInit(topology) => {
            cluster.confirm_leader().await?;
            cluster
                .write(Command::Init(topology))
                .await
                .map(|index| LeaderReply::Written { index })
        }
        LeaderCall::AddNode(spec) => {
            cluster.confirm_leader().await?;
            membership::add_node(cluster, spec).await
        }
        LeaderCall::RemoveStore { store, epoch } => {
            cluster.confirm_leader().await?;
            let epoch = match epoch {
                Some(e) => e,
                None => cluster
                    .reader
                    .with(|d| d.state.stores.get(&store).map(|s| s.epoch))
                    .ok_or_else(|| AgentError::Refused(Rejection::UnknownStore(store.clone())))?,
            };
            let index = cluster.write(Command::RemoveStore { store, epoch }).await?;
            Ok(LeaderReply::Written { index })
        }
        LeaderCall::RemoveNode(name) => {
            cluster.confirm_leader().await?;
            let by_name = cluster.reader.with(|d| d.state.node_by_name(&name).map(|n| n.id));
            let member = || {
                let id: NodeId = name.parse().ok()?;
                let m = cluster.raft.metrics().borrow().clone();
                m.membership_config.membership().get_node(&id).map(|_| id)
            };
            match by_name.or_else(member) {
                Some(id) => membership::remove_node(cluster, id).await,
                None => Err(AgentError::Refused(Rejection::UnknownNode(format!("{name:?}")))),
            }
        }
        LeaderCall::AddStore(store) => {
            cluster.confirm_leader().await?;
            let spec = cluster.reader.with(|d| {
                let lookup = |n: &str| d.state.node_by_name(n).map(|x| x.id);
                convert::store_spec(store.into(), &lookup)
            });
            let spec = spec.map_err(|e| AgentError::Invalid(e.to_string()))?;
            // Not an address a cut-off old master may still hold.
            let term = cluster.raft.metrics().borrow().current_term;
            let now = clock::now();
            cluster
                .reader
                .with(|d| {
                    let mut core = cluster.core();
                    core.observe(Some(term), now);
                    core.may_use_addresses(&d.state, &spec, now)
                })
                .map_err(AgentError::Refused)?;
            let index = cluster.write(Command::AddStore(spec)).await?;
            Ok(LeaderReply::Written { index })
        }
        LeaderCall::AddTopologyLearners => {
            cluster.confirm_leader().await?;
            let members: Vec<NodeId> = {
                let m = cluster.raft.metrics().borrow().clone();
                m.membership_config.membership().nodes().map(|(id, _)| *id).collect()
            };
            let nodes: Vec<(NodeId, String)> = cluster.reader.with(|d| {
                d.state
                    .nodes
                    .values()
                    .filter(|n| !n.voter && !members.contains(&n.id))
                    .map(|n| (n.id, n.addr.clone()))
                    .collect()
            });
            let mut index = 0;
            for (id, addr) in nodes {
                let r = cluster
                    .raft
                    .add_learner(id, BasicNode::new(addr), false)
                    .await
                    .map_err(|e| cluster.raft_err(e))?;
                index = r.log_id.index;
            }
            Ok(LeaderReply::Written { index })
        }
        // The bootstrap has a path of its own (`bootstrap::init`, which the
        // services call): there is no leader yet to carry it out.
        LeaderCall::Init { .. } => Err(AgentError::Precondition(
            "init is carried out by the topology's first voter, not by a leader".into(),
        )),
        LeaderCall::Failover { store, to, force } => operate::failover(cluster, store, to, force).await,
        LeaderCall::Drain {
            node,
            concurrency,
            on_stop,
        } => operate::drain(cluster, node, concurrency, on_stop).await,
        LeaderCall::Undrain { node, after_stop } => operate::undrain(cluster, node, after_stop).await,
        LeaderCall::Rebalance { dry_run, concurrency } => operate::rebalance(cluster, dry_run, concurrency).await,
        LeaderCall::History { store, limit } => operate::history(cluster, store, limit).await,
        LeaderCall::Config { set } => operate::config(cluster, set).await,
    }
}

/// `slotd fence` on `node` asks for a ticket or presents its notice
/// (DESIGN rule 6; the rule is `LeaderCore::fenced_notice`). An accepted
/// notice wakes the failover engine.
pub async fn fence_request(cluster: &Cluster, request: FenceRequest) -> Result<FenceReply, AgentError> {
    cluster.confirm_leader().await?;
    let term = cluster.raft.metrics().borrow().current_term;
    let now = clock::now();
    let mut core = cluster.core();
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
                cluster.engine_wake.notify_one();
            }
            Ok(FenceReply::Accepted(accepted))
        }
    }
}
