//! The invariant checker, run after every step on true time.
//!
//! S1: for every store, at most one machine holds its master IP and at most
//! one runs its instance as master — except within `clock_skew_margin` of
//! the other holder's lease expiry (DESIGN); every use of that allowance is
//! counted (the model says it should never be needed).
//! Lease: a machine holds a master IP or a master instance only while its
//! lease is valid, up to `clock_skew_margin` later (e.g. while ExecStopPost
//! runs); the largest overshoot is recorded.
//! Liveness, at every step: a master whose machine stays connected to a
//! majority never loses its role — a running node named master in the log
//! whose lease runs out, although for a whole lease before it was running
//! and connected (no partition, no message loss) to a majority of running
//! voters, is a failure (say, a change of leader that outlasts the lease).
//! Stuck (`Stuck`, once faults are over and a leader has settled):
//! switchovers end, drains drain, rebalances end; and rebalances never flap.
//! Convergence (at the end, after quiet time): every store has exactly one
//! master, holding its IP and running master, and it is the log's master.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use slotd_core::node::reconcile::Instance;
use slotd_raft_store::{ClusterState, Command, NodeId, NodeMode, Phase, Reason};

use super::switchover::involved;

use super::node::Node;

/// Which store an address or a slot belongs to.
pub struct Checker {
    pub names: Vec<String>,
    master_ip: HashMap<IpAddr, usize>,
    /// Per node index: slot name → store index.
    slot: Vec<HashMap<String, usize>>,
    margin: f64,
    ip_holders: Vec<Vec<usize>>,
    runners: Vec<Vec<usize>>,
    /// The machines' versions the holders above were collected from.
    seen: Vec<u64>,
    /// Each node's lease end (true ms) at the step being checked.
    ends: Vec<f64>,
    /// Per node, whether it holds a master IP or runs a master; whether
    /// any store has two holders of either.
    holding: Vec<bool>,
    shared: bool,
    /// Counters for the report.
    pub allowances: u64,
    pub max_overshoot_ms: f64,
    /// Per node: since when (true ms) it has been connected to a majority,
    /// and whether its lease was valid at the last step (with the
    /// incarnation it was seen in).
    connected_since: Vec<Option<u64>>,
    was_valid: Vec<(u64, bool)>,
    /// Leases that ran out on a master, in all and on connected nodes
    /// (the latter are failures).
    pub master_fences: u64,
}

impl Checker {
    pub fn new(state: &ClusterState, idx_of: impl Fn(u64) -> usize, margin: f64) -> Checker {
        let mut names = Vec::new();
        let mut master_ip = HashMap::new();
        let mut slot: Vec<HashMap<String, usize>> = Vec::new();
        for (k, s) in state.stores.values().enumerate() {
            names.push(s.name.clone());
            master_ip.insert(s.master_ip.addr, k);
            for r in &s.slots {
                let i = idx_of(r.node);
                if slot.len() <= i {
                    slot.resize_with(i + 1, HashMap::new);
                }
                slot[i].insert(r.slot.clone(), k);
            }
        }
        let n = names.len();
        Checker {
            names,
            master_ip,
            slot,
            margin,
            ip_holders: vec![Vec::new(); n],
            runners: vec![Vec::new(); n],
            seen: Vec::new(),
            ends: Vec::new(),
            holding: Vec::new(),
            shared: false,
            allowances: 0,
            max_overshoot_ms: 0.0,
            connected_since: Vec::new(),
            was_valid: Vec::new(),
            master_fences: 0,
        }
    }

    fn collect(&mut self, nodes: &[Node]) {
        let same = self.seen.len() == nodes.len() && self.seen.iter().zip(nodes).all(|(v, n)| *v == n.machine.version);
        if same {
            return;
        }
        self.seen = nodes.iter().map(|n| n.machine.version).collect();
        self.ip_holders.iter_mut().for_each(Vec::clear);
        self.runners.iter_mut().for_each(Vec::clear);
        for n in nodes {
            for a in &n.machine.addresses {
                if let Some(&k) = self.master_ip.get(a) {
                    self.ip_holders[k].push(n.idx);
                }
            }
            for (slot, inst) in &n.machine.instances {
                if matches!(inst, Instance::Master { .. }) {
                    if let Some(&k) = self.slot.get(n.idx).and_then(|m| m.get(slot.as_str())) {
                        self.runners[k].push(n.idx);
                    }
                }
            }
        }
        self.holding = vec![false; nodes.len()];
        for &h in self.ip_holders.iter().chain(self.runners.iter()).flatten() {
            self.holding[h] = true;
        }
        self.shared = self.ip_holders.iter().chain(self.runners.iter()).any(|h| h.len() > 1);
    }

    /// Checks S1 and the lease rule at true time `now`.
    pub fn check(&mut self, now: u64, nodes: &[Node], ignore_lease_rule: bool) -> Result<(), String> {
        self.collect(nodes);
        let t = now as f64;
        self.ends.clear();
        self.ends.extend(nodes.iter().map(Node::lease_end_true));
        let ends = &self.ends;
        // Every store has one holder at most, each within its lease: nothing
        // to count or find.
        if !self.shared && self.holding.iter().zip(ends).all(|(holds, end)| !holds || *end >= t) {
            return Ok(());
        }
        for k in 0..self.names.len() {
            for (what, holders) in [
                ("holds the master IP", &self.ip_holders[k]),
                ("runs master", &self.runners[k]),
            ] {
                for &h in holders.iter() {
                    let over = t - ends[h];
                    if over > 0.0 {
                        self.max_overshoot_ms = self.max_overshoot_ms.max(over.min(1e9));
                        if over > self.margin && !ignore_lease_rule {
                            return Err(format!(
                                "store {}: node {} {what} {:.0} ms after its lease ended",
                                self.names[k],
                                nodes[h].id,
                                over.min(1e9)
                            ));
                        }
                    }
                }
                if holders.len() > 1 {
                    // Allowed only while the earliest-expiring holder is
                    // within the margin of its lease end.
                    let earliest = holders.iter().map(|&h| ends[h]).fold(f64::INFINITY, f64::min);
                    if t >= earliest && t <= earliest + self.margin {
                        self.allowances += 1;
                    } else {
                        let ids: Vec<u64> = holders.iter().map(|&h| nodes[h].id).collect();
                        return Err(format!("S1 broken: store {}: nodes {ids:?} all {what}", self.names[k]));
                    }
                }
            }
        }
        Ok(())
    }

    /// Liveness at true time `now`: `connected[i]` says whether node `i`
    /// runs and is connected to a majority of running voters without loss;
    /// `log` is the committed state. `lease` in ms.
    pub fn check_liveness(
        &mut self,
        now: u64,
        nodes: &[Node],
        connected: &[bool],
        log: &ClusterState,
        lease: f64,
    ) -> Result<(), String> {
        if self.connected_since.len() < nodes.len() {
            self.connected_since.resize(nodes.len(), None);
            self.was_valid.resize(nodes.len(), (0, false));
        }
        for (i, n) in nodes.iter().enumerate() {
            let since = &mut self.connected_since[i];
            if connected[i] {
                since.get_or_insert(now);
            } else {
                *since = None;
            }
            let valid = n.running() && n.lease_valid(now);
            let (inc, was) = self.was_valid[i];
            self.was_valid[i] = (n.incarnation, valid);
            if !(was && !valid && inc == n.incarnation && n.running()) {
                continue;
            }
            let masters: Vec<&str> = log
                .stores
                .values()
                .filter(|s| s.master == n.id)
                .map(|s| s.name.as_str())
                .collect();
            if masters.is_empty() {
                continue;
            }
            self.master_fences += 1;
            if let Some(since) = self.connected_since[i] {
                if (now - since) as f64 >= lease {
                    return Err(format!(
                        "liveness: node {} lost its lease (and its master role of {}) although connected to a \
                         majority since t={since}",
                        n.id,
                        masters.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }

    /// Liveness: exactly one master per store, holding the IP and running
    /// master, and it is the log's master.
    pub fn check_converged(&mut self, nodes: &[Node], log_state: &ClusterState) -> Result<(), String> {
        self.collect(nodes);
        for (k, s) in log_state.stores.values().enumerate() {
            let want = vec![nodes.iter().position(|n| n.id == s.master).unwrap_or(usize::MAX)];
            if self.ip_holders[k] != want || self.runners[k] != want {
                return Err(format!(
                    "not converged: store {}: log master node {}, IP held by {:?}, master run by {:?}",
                    s.name,
                    s.master,
                    self.ip_holders[k].iter().map(|&h| nodes[h].id).collect::<Vec<_>>(),
                    self.runners[k].iter().map(|&h| nodes[h].id).collect::<Vec<_>>()
                ));
            }
        }
        Ok(())
    }
}

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
