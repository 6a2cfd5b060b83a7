//! The cluster as operators see it: built from the state machine (and, on
//! the leader, liveness and Raft roles), carried over gRPC, printed by
//! `slotctl status` as a table or as JSON.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use slotd_proto::v1 as pb;
use slotd_raft_store::storage::SmData;
use slotd_raft_store::NodeId;

/// `slotctl status --json` prints exactly this.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    /// The leader's node id, if one is known.
    pub leader: Option<NodeId>,
    pub leader_name: String,
    pub term: u64,
    /// Log index of the state shown.
    pub applied: u64,
    pub initialised: bool,
    pub answered_by: NodeId,
    pub nodes: Vec<NodeView>,
    pub stores: Vec<StoreView>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: NodeId,
    pub name: String,
    pub addr: String,
    /// active | draining | drained
    pub mode: String,
    /// Heard by the leader within lease + margin.
    pub alive: bool,
    /// voter | learner | none
    pub raft: String,
    /// Names of the stores it masters.
    pub masters: Vec<String>,
    pub slots: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreView {
    pub name: String,
    /// Node names.
    pub master: String,
    pub epoch: u64,
    /// stable | demoting | promoting
    pub phase: String,
    pub replicas: Vec<String>,
    pub dirty: Vec<String>,
    pub master_ip: String,
    pub replica_ip: String,
    /// The layer-2 check (leader only): ok | unchecked | no answer | wrong: …
    pub l2: String,
}

/// What the builder needs besides the state machine.
pub struct Liveness<'a> {
    pub leader: Option<NodeId>,
    pub term: u64,
    pub answered_by: NodeId,
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    /// Whether a node counts as alive (only the leader knows; elsewhere all false).
    pub alive: &'a dyn Fn(NodeId) -> bool,
    /// The layer-2 verdict of a store (only the leader knows).
    pub l2: &'a dyn Fn(&slotd_raft_store::Store) -> String,
}

impl StatusView {
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
        }
    }

    /// Human tables, as `slotctl status` prints by default.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let leader = match self.leader {
            Some(id) => format!("{} ({id})", self.leader_name),
            None => "none".to_owned(),
        };
        let _ = writeln!(
            out,
            "leader: {leader}   term: {}   applied: {}   answered by: node {}",
            self.term, self.applied, self.answered_by
        );
        if !self.initialised {
            let _ = writeln!(out, "cluster not initialised (slotctl init TOPOLOGY)");
            return out;
        }
        let rows: Vec<Vec<String>> = self
            .nodes
            .iter()
            .map(|n| {
                vec![
                    n.id.to_string(),
                    n.name.clone(),
                    n.addr.clone(),
                    n.mode.clone(),
                    if n.alive { "yes" } else { "no" }.to_owned(),
                    n.raft.clone(),
                    n.masters.len().to_string(),
                    n.slots.len().to_string(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["ID", "NODE", "ADDR", "MODE", "ALIVE", "RAFT", "MASTERS", "SLOTS"],
            &rows,
        ));
        let rows: Vec<Vec<String>> = self
            .stores
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.master.clone(),
                    s.epoch.to_string(),
                    s.phase.clone(),
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
        out.push_str(&table(
            &[
                "STORE",
                "MASTER",
                "EPOCH",
                "PHASE",
                "REPLICAS",
                "DIRTY",
                "MASTER IP",
                "REPLICA IP",
            ],
            &rows,
        ));
        out
    }
}

/// Left-aligned columns, two spaces apart.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
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

impl From<StatusView> for pb::StatusReply {
    fn from(v: StatusView) -> Self {
        pb::StatusReply {
            leader: v.leader,
            leader_name: v.leader_name,
            term: v.term,
            applied: v.applied,
            initialised: v.initialised,
            answered_by: v.answered_by,
            nodes: v
                .nodes
                .into_iter()
                .map(|n| pb::NodeStatus {
                    id: n.id,
                    name: n.name,
                    addr: n.addr,
                    mode: n.mode,
                    alive: n.alive,
                    raft: n.raft,
                    masters: n.masters,
                    slots: n.slots,
                })
                .collect(),
            stores: v
                .stores
                .into_iter()
                .map(|s| pb::StoreStatus {
                    name: s.name,
                    master: s.master,
                    epoch: s.epoch,
                    phase: s.phase,
                    replicas: s.replicas,
                    dirty: s.dirty,
                    master_ip: s.master_ip,
                    replica_ip: s.replica_ip,
                    l2: s.l2,
                })
                .collect(),
        }
    }
}

impl From<pb::StatusReply> for StatusView {
    fn from(r: pb::StatusReply) -> Self {
        StatusView {
            leader: r.leader,
            leader_name: r.leader_name,
            term: r.term,
            applied: r.applied,
            initialised: r.initialised,
            answered_by: r.answered_by,
            nodes: r
                .nodes
                .into_iter()
                .map(|n| NodeView {
                    id: n.id,
                    name: n.name,
                    addr: n.addr,
                    mode: n.mode,
                    alive: n.alive,
                    raft: n.raft,
                    masters: n.masters,
                    slots: n.slots,
                })
                .collect(),
            stores: r
                .stores
                .into_iter()
                .map(|s| StoreView {
                    name: s.name,
                    master: s.master,
                    epoch: s.epoch,
                    phase: s.phase,
                    replicas: s.replicas,
                    dirty: s.dirty,
                    master_ip: s.master_ip,
                    replica_ip: s.replica_ip,
                    l2: s.l2,
                })
                .collect(),
        }
    }
}
