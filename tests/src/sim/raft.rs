//! Raft, abstracted: one authoritative committed log, a leader that exists
//! while it is up and connected to a majority of voters, elections that take
//! a random 600–2400 ms, and the leader-side pieces slotd adds on top —
//! lease granting (`granted`) and the failure detector.
//!
//! Entries are committed the instant the leader appends them (it is
//! connected to a majority at that instant); followers learn of them by
//! `Append` messages and apply with their own lag.

use std::collections::{BTreeMap, BTreeSet};

use slotd_raft_store::decide::{failover_targets, Reports};
use slotd_raft_store::{ClusterState, Command, NodeId, Reason, Request};

/// The current leadership.
#[derive(Clone, Debug)]
pub struct Leader {
    pub node: usize,
    pub term: u64,
    /// Leader's local time when it was elected (fresh leaders wait).
    pub since_local: f64,
    /// Leader's local time of its last grant to each node (in memory only,
    /// cleared with every new term, like `Seen`).
    pub granted: BTreeMap<usize, f64>,
    pub next_detect_local: f64,
    pub next_append: u64,
}

/// The committed log and who leads.
pub struct Raft {
    pub log: Vec<Request>,
    pub leader: Option<Leader>,
    pub term: u64,
    /// When the next election completes (scheduled when the leader is lost).
    pub election_at: Option<u64>,
    /// Indices of the voting nodes.
    pub voters: Vec<usize>,
}

impl Raft {
    pub fn majority(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

/// The failure detector's knobs (the real ones, or broken ones for the
/// sanity test).
#[derive(Clone, Copy, Debug)]
pub struct Detector {
    pub lease: f64,
    pub margin: f64,
    /// Whether a fresh leader waits `lease + margin` before any failover.
    pub fresh_wait: bool,
}

/// The leader's decision at local time `now_local`, as `agent/src/failover.rs`
/// makes it: the dead nodes (never granted this term, or not for more than
/// `lease + margin`) and one `Failover` command for their stores, if any
/// store can move.
pub fn detect(
    leader: &Leader,
    state: &ClusterState,
    idx_of: impl Fn(NodeId) -> usize,
    now_local: f64,
    d: Detector,
) -> Option<(BTreeSet<NodeId>, Command)> {
    let dead_after = d.lease + d.margin;
    if d.fresh_wait && now_local - leader.since_local < dead_after {
        return None;
    }
    let dead: BTreeSet<NodeId> = state
        .nodes
        .keys()
        .copied()
        .filter(|n| idx_of(*n) != leader.node)
        .filter(|n| {
            leader
                .granted
                .get(&idx_of(*n))
                .is_none_or(|t| now_local - t > dead_after)
        })
        .collect();
    if dead.is_empty() {
        return None;
    }
    let plan = failover_targets(state, &dead, &Reports::default());
    if plan.moves.is_empty() {
        return None;
    }
    Some((
        dead,
        Command::Failover {
            reason: Reason::Failure,
            moves: plan.moves,
        },
    ))
}
