//! The cluster as operators see it: built from the state machine (and, on
//! the leader, liveness and Raft roles), carried over gRPC as the protobuf
//! reply itself (`slotctl status --json` prints exactly that; its tables are
//! `ctl::table`'s).

use std::collections::BTreeSet;

use openraft::ServerState;
use slotd_proto::v1 as pb;
use slotd_raft_store::storage::SmData;
use slotd_raft_store::NodeId;

use crate::clock;
use crate::cluster::Cluster;

/// What the builder needs besides the state machine.
pub struct Liveness<'a> {
    pub leader: Option<NodeId>,
    pub term: u64,
    pub answered_by: NodeId,
    /// The cluster id (empty before init).
    pub cluster_id: String,
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    /// Whether a node counts as alive (only the leader knows; elsewhere all false).
    pub alive: &'a dyn Fn(NodeId) -> bool,
    /// The layer-2 verdict of a store (only the leader knows).
    pub l2: &'a dyn Fn(&slotd_raft_store::Store) -> String,
    /// The master's last reported backlog of a store (only the leader knows).
    pub backlog: &'a dyn Fn(&slotd_raft_store::Store) -> Option<u64>,
    /// Instances of a store that fail to start (only the leader knows).
    pub failing: &'a dyn Fn(&slotd_raft_store::Store) -> Vec<String>,
    /// How long the master's oldest unsent change has waited (leader only).
    pub backlog_age: &'a dyn Fn(&slotd_raft_store::Store) -> Option<u64>,
    /// Failing health checks of a store's instances (leader only).
    pub health: &'a dyn Fn(&slotd_raft_store::Store) -> Vec<String>,
}

/// The status as this node sees it.
pub fn build(data: &SmData, live: &Liveness<'_>) -> pb::StatusReply {
    let state = &data.state;
    let name = |id: NodeId| state.node_name(id);
    let nodes = state
        .nodes
        .values()
        .map(|n| pb::NodeStatus {
            id: n.id,
            name: n.name.clone(),
            addr: n.addr.clone(),
            mode: n.mode.as_str().to_owned(),
            alive: (live.alive)(n.id),
            raft: if live.voters.contains(&n.id) {
                "voter"
            } else if live.learners.contains(&n.id) {
                "learner"
            } else {
                "none"
            }
            .to_owned(),
            masters: state.masters_of(n.id).map(|s| s.name.clone()).collect(),
            slots: n.slots.keys().cloned().collect(),
            leaving: state.leaving(n.id).count() as u32,
            left: (state.masters_of(n.id).count()
                + state
                    .leaving(n.id)
                    .filter(|s| matches!(s.phase, slotd_raft_store::Phase::Promoting { .. }))
                    .count()) as u32,
            drain_concurrency: match n.mode {
                slotd_raft_store::NodeMode::Draining => n.drain.map_or(0, |d| d.concurrency),
                _ => 0,
            },
        })
        .collect();
    let stores = state
        .stores
        .values()
        .map(|s| pb::StoreStatus {
            name: s.name.clone(),
            master: name(s.master),
            epoch: s.epoch,
            phase: s.phase.as_str().to_owned(),
            replicas: s.replicas().map(name).collect(),
            dirty: s.dirty.iter().map(|n| name(*n)).collect(),
            master_ip: s.master_ip.to_string(),
            replica_ip: s.replica_ip.to_string(),
            l2: (live.l2)(s),
            target: s.phase.switchover().map(|(_, to)| name(to)).unwrap_or_default(),
            backlog: (live.backlog)(s),
            failing: (live.failing)(s),
            backlog_age_ms: (live.backlog_age)(s),
            health: (live.health)(s),
        })
        .collect();
    pb::StatusReply {
        leader: live.leader,
        leader_name: live.leader.map(name).unwrap_or_default(),
        term: live.term,
        applied: data.last_applied.map_or(0, |l| l.index),
        initialised: state.initialised,
        answered_by: live.answered_by,
        nodes,
        stores,
        cluster_id: live.cluster_id.clone(),
        rebalancing: state.rebalance.is_some(),
    }
}

/// This node's own view, without asking anyone (liveness is known only
/// on the leader).
pub fn of(cluster: &Cluster) -> pb::StatusReply {
    let m = cluster.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
    let leading = m.state == ServerState::Leader;
    let now = clock::now();
    cluster.reader.with(|data| {
        // Alive = granted a lease recently (renewals carry the health
        // report); only the leader grants, so only it knows.
        let core = cluster.core();
        let reports = if leading { core.reports() } else { Default::default() };
        let alive = |n: NodeId| n == cluster.id || (leading && core.alive(n, now));
        build(
            data,
            &Liveness {
                leader: m.current_leader,
                term: m.current_term,
                answered_by: cluster.id,
                cluster_id: cluster.identity.get().map(|i| i.to_string()).unwrap_or_default(),
                voters,
                learners,
                alive: &alive,
                backlog: &|s| reports.get(&s.master).and_then(|r| r.backlog.get(&s.name)).copied(),
                backlog_age: &|s| {
                    reports
                        .get(&s.master)
                        .and_then(|r| r.backlog_age_ms.get(&s.name))
                        .copied()
                },
                health: &|s| {
                    s.nodes()
                        .filter_map(|n| Some((n, reports.get(&n)?.health.get(&s.name)?)))
                        .flat_map(|(n, problems)| {
                            let node = data.state.node_name(n);
                            problems.iter().map(move |p| format!("{node}: {p}"))
                        })
                        .collect()
                },
                failing: &|s| {
                    s.nodes()
                        .filter_map(|n| {
                            let slot = &s.slot_on(n)?.slot;
                            let why = reports.get(&n)?.failing.get(slot)?;
                            Some(format!("{}: {why}", data.state.node_name(n)))
                        })
                        .collect()
                },
                l2: &|s| {
                    if leading {
                        slotd_core::l2::verdict(s, &reports).to_string()
                    } else {
                        "unknown".to_owned()
                    }
                },
            },
        )
    })
}
