//! The cluster as operators see it: built from the state machine (and, on
//! the leader, liveness and Raft roles), carried over gRPC, printed by
//! `slotctl status` as a table or as JSON.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use openraft::ServerState;
use slotd_proto::v1 as pb;
use slotd_raft_store::storage::SmData;
use slotd_raft_store::NodeId;

use crate::clock;
use crate::cluster::Cluster;

/// `slotctl status --json` prints exactly this: the protobuf reply itself
/// (field names and order as in `slotd.proto`).
pub type StatusView = pb::StatusReply;
/// One node of a status.
pub type NodeView = pb::NodeStatus;
/// One store of a status.
pub type StoreView = pb::StoreStatus;

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
pub fn build(data: &SmData, live: &Liveness<'_>) -> StatusView {
    let state = &data.state;
    let name = |id: NodeId| state.node_name(id);
    let nodes = state
        .nodes
        .values()
        .map(|n| NodeView {
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
        .map(|s| StoreView {
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
    StatusView {
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

impl Cluster {
    /// This node's own view, without asking anyone (liveness is known only
    /// on the leader).
    pub fn status(&self) -> StatusView {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        let leading = m.state == ServerState::Leader;
        let now = clock::now();
        self.reader.with(|data| {
            // Alive = granted a lease recently (renewals carry the health
            // report); only the leader grants, so only it knows.
            let core = self.core();
            let reports = if leading { core.reports() } else { Default::default() };
            let alive = |n: NodeId| n == self.id || (leading && core.alive(n, now));
            crate::status::build(
                data,
                &Liveness {
                    leader: m.current_leader,
                    term: m.current_term,
                    answered_by: self.id,
                    cluster_id: self.identity.get().map(|i| i.to_string()).unwrap_or_default(),
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
}

/// Human tables, as `slotctl status` prints by default.
pub fn table(view: &StatusView) -> String {
    let mut out = String::new();
    let leader = match view.leader {
        Some(id) => format!("{} ({id})", view.leader_name),
        None => "none".to_owned(),
    };
    let _ = writeln!(
        out,
        "leader: {leader}   term: {}   applied: {}   answered by: node {}",
        view.term, view.applied, view.answered_by
    );
    if !view.cluster_id.is_empty() {
        let _ = writeln!(out, "cluster: {}", view.cluster_id);
    }
    if !view.initialised {
        let _ = writeln!(out, "cluster not initialised (slotctl init TOPOLOGY)");
        return out;
    }
    if view.rebalancing {
        let _ = writeln!(out, "rebalance under way");
    }
    let rows: Vec<Vec<String>> = view
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.id.to_string(),
                n.name.clone(),
                n.addr.clone(),
                match (n.mode.as_str(), n.leaving) {
                    ("draining", 0) => format!("draining ({} left)", n.left),
                    ("draining", k) => format!("draining ({} left, {k} moving)", n.left),
                    (m, _) => m.to_owned(),
                },
                if n.alive { "yes" } else { "no" }.to_owned(),
                n.raft.clone(),
                n.masters.len().to_string(),
                n.slots.len().to_string(),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&columns(
        &["ID", "NODE", "ADDR", "MODE", "ALIVE", "RAFT", "MASTERS", "SLOTS"],
        &rows,
    ));
    let rows: Vec<Vec<String>> = view
        .stores
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.master.clone(),
                s.epoch.to_string(),
                if s.target.is_empty() {
                    s.phase.clone()
                } else {
                    format!("{} → {}", s.phase, s.target)
                },
                s.replicas.join(","),
                if s.dirty.is_empty() {
                    "-".to_owned()
                } else {
                    s.dirty.join(",")
                },
                s.master_ip.clone(),
                s.replica_ip.clone(),
                s.l2.clone(),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&columns(
        &[
            "STORE",
            "MASTER",
            "EPOCH",
            "PHASE",
            "REPLICAS",
            "DIRTY",
            "MASTER IP",
            "REPLICA IP",
            "L2",
        ],
        &rows,
    ));
    // What needs an operator's eyes, one line each (leader only).
    let problems: Vec<String> = view
        .stores
        .iter()
        .flat_map(|s| {
            let failing = s
                .failing
                .iter()
                .map(move |f| format!("{}: failing to start on {f}", s.name));
            let health = s.health.iter().map(move |h| format!("{}: {h}", s.name));
            failing.chain(health)
        })
        .collect();
    if !problems.is_empty() {
        out.push_str("\nproblems:\n");
        for p in problems {
            let _ = writeln!(out, "  {p}");
        }
    }
    out
}

/// Left-aligned columns, two spaces apart.
fn columns(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<String> = cells.zip(&width).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut head.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_problems_only_when_there_are_some() {
        let store = StoreView {
            name: "st01".into(),
            master: "imap1".into(),
            epoch: 3,
            phase: "stable".into(),
            replicas: vec!["imap2".into()],
            ..Default::default()
        };
        let mut view = StatusView {
            leader: Some(1),
            leader_name: "imap1".into(),
            initialised: true,
            stores: vec![store],
            ..Default::default()
        };
        assert!(!table(&view).contains("problems:"), "{}", table(&view));
        view.stores[0].health = vec!["imap1: imap 10.0.1.1:143: no greeting within 2s".into()];
        view.stores[0].failing = vec!["imap2: cyrmaster did not serve".into()];
        let text = table(&view);
        assert!(text.contains("\nproblems:\n"), "{text}");
        assert!(
            text.contains("  st01: failing to start on imap2: cyrmaster did not serve\n"),
            "{text}"
        );
        assert!(
            text.contains("  st01: imap1: imap 10.0.1.1:143: no greeting within 2s\n"),
            "{text}"
        );
    }
}
