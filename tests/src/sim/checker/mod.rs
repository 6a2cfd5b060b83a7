//! The invariant checker, run after every step on true time. This file
//! collects who holds what on the machines; each invariant has its own:
//! S1 (`s1`), the lease rule (`lease`), liveness (`liveness`), stuck
//! switchover work (`stuck`), convergence at the end (`converged`).

use std::collections::HashMap;
use std::net::IpAddr;

use slotd_core::node::reconcile::Instance;
use slotd_raft_store::ClusterState;

use super::node::Node;

mod converged;
mod lease;
mod liveness;
mod s1;
mod stuck;

pub use stuck::{drain_resting, Stuck, FLAP};

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
                let store = &self.names[k];
                let overshoot = lease::overshoot(store, what, holders, nodes, ends, t, self.margin);
                if let Some(over) = overshoot.max {
                    self.max_overshoot_ms = self.max_overshoot_ms.max(over);
                }
                if !ignore_lease_rule {
                    overshoot.verdict?;
                }
                if s1::shared(store, what, holders, nodes, ends, t, self.margin)? {
                    self.allowances += 1;
                }
            }
        }
        Ok(())
    }
}
