//! Stuck (once faults are over and a leader has settled): switchovers end,
//! drains drain, rebalances end; and rebalances never flap.

use std::collections::BTreeMap;

use slotd_raft_store::{ClusterState, Command, NodeId, NodeMode, Phase, Reason};

use crate::sim::switchover::involved;

/// Liveness of controlled switchovers, on the log's entries: once the
/// faults are over and a leader has settled, no store stays out of `Stable`
/// (its phases end or roll back within their timeouts), no drain stops
/// moving masters off its node before it is drained (unless every master
/// it has left is stranded: no replica could take it), and no rebalance
/// stops moving before it ends — each for longer than `bound`, counted from
/// when it began, or from when the cluster settled if later. And at any
/// time, a rebalance never flaps: under one leader it switches no store
/// over more than `FLAP` times.
#[derive(Clone, Debug, Default)]
pub struct Stuck {
    bound: f64,
    /// Stores out of `Stable`, since when (true ms).
    unstable: BTreeMap<String, u64>,
    /// Draining nodes: what progress changes (masters left, switchovers
    /// it takes part in), and since when it has not changed.
    drains: BTreeMap<NodeId, ((usize, usize), u64)>,
    /// The rebalance under way: the count of transitions, and since when
    /// it has not changed.
    rebalance: Option<(u64, u64)>,
    /// Switchovers the rebalance under way began, by store and leader's
    /// term.
    rebalanced: BTreeMap<(String, u64), u32>,
}

/// How many times one rebalance may switch one store over under one
/// leader: its plan moves a store once; failures and rollbacks between may
/// call for a move or two more. (A new leader may not know what the
/// rebalance did before it.)
pub const FLAP: u32 = 3;

impl Stuck {
    pub fn new(bound: f64) -> Stuck {
        Stuck {
            bound,
            ..Stuck::default()
        }
    }

    /// Follows the log: `command` was written by the leader of `term` and
    /// applied, at true time `now`, and left `log`.
    pub fn entry(&mut self, now: u64, term: u64, command: &Command, log: &ClusterState) -> Result<(), String> {
        let old = std::mem::take(&mut self.unstable);
        for s in log.stores.values().filter(|s| s.phase != Phase::Stable) {
            let since = old.get(&s.name).copied().unwrap_or(now);
            self.unstable.insert(s.name.clone(), since);
        }
        let old = std::mem::take(&mut self.drains);
        for n in log.nodes.values().filter(|n| n.mode == NodeMode::Draining) {
            let involved = log
                .stores
                .values()
                .filter(|s| s.phase.switchover().is_some_and(|(f, t)| f == n.id || t == n.id))
                .count();
            let marker = (log.masters_of(n.id).count(), involved);
            let since = match old.get(&n.id) {
                Some((m, t)) if *m == marker => *t,
                _ => now,
            };
            self.drains.insert(n.id, (marker, since));
        }
        self.rebalance = log.rebalance.map(|_| match self.rebalance {
            Some((m, t)) if m == log.next_transition => (m, t),
            _ => (log.next_transition, now),
        });
        match command {
            Command::Rebalance { .. } | Command::RebalanceDone { .. } => self.rebalanced.clear(),
            Command::BeginSwitchover {
                store,
                to,
                reason: Reason::Rebalance,
                ..
            } => {
                let n = self.rebalanced.entry((store.clone(), term)).or_default();
                *n += 1;
                if *n > FLAP {
                    return Err(format!(
                        "rebalance flaps: under the leader of term {term} it switches store {store} over for the {} \
                         time (now to node {to})",
                        ordinal(*n)
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The first thing stuck at `now`, time counted from `settled` on.
    /// `resting(node)` says whether a draining node has nothing left a
    /// drain could do (every master it has is stranded), `None` when
    /// nobody can tell (no leader).
    pub fn check(
        &mut self,
        now: u64,
        settled: u64,
        log: &ClusterState,
        resting: impl Fn(NodeId) -> Option<bool>,
    ) -> Result<(), String> {
        let bound = self.bound;
        let over = |since: u64| (now - since.max(settled).min(now)) as f64 > bound;
        let bound_s = bound / 1000.0;
        for (name, since) in &self.unstable {
            if over(*since) {
                let phase = log.stores.get(name).map_or_else(String::new, |s| s.phase.to_string());
                return Err(format!(
                    "stuck: store {name} out of stable since t={since} ({phase}), more than {bound_s} s after the faults"
                ));
            }
        }
        for (node, ((masters, under_way), since)) in self.drains.iter_mut() {
            if !over(*since) {
                continue;
            }
            match resting(*node) {
                // Nothing it could do: not stuck; look again later.
                Some(true) => *since = now,
                None => {}
                Some(false) => {
                    return Err(format!(
                        "stuck: the drain of node {node} made no progress since t={since} ({masters} masters left, \
                         {under_way} switchovers under way), more than {bound_s} s after the faults"
                    ))
                }
            }
        }
        if let Some((_, since)) = self.rebalance {
            if over(since) {
                return Err(format!(
                    "stuck: the rebalance made no progress since t={since}, more than {bound_s} s after the faults"
                ));
            }
        }
        Ok(())
    }
}

fn ordinal(n: u32) -> String {
    match n {
        1 => "first".into(),
        2 => "second".into(),
        3 => "third".into(),
        n => format!("{n}th"),
    }
}

/// Whether draining `node` has nothing a drain could still do in `log`:
/// masters left, every one `stranded` (by the leader's facts), and no
/// switchover it takes part in.
pub fn drain_resting(log: &ClusterState, node: NodeId, stranded: usize) -> bool {
    let masters = log.masters_of(node).count();
    masters > 0 && stranded == masters && !involved(log, node)
}
