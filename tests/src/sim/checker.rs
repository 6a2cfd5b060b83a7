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
//! Convergence (at the end, after quiet time): every store has exactly one
//! master, holding its IP and running master, and it is the log's master.

use std::collections::HashMap;
use std::net::IpAddr;

use slotd_agent::reconcile::Instance;
use slotd_raft_store::ClusterState;

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
            allowances: 0,
            max_overshoot_ms: 0.0,
            connected_since: Vec::new(),
            was_valid: Vec::new(),
            master_fences: 0,
        }
    }

    fn collect(&mut self, nodes: &[Node]) {
        let versions: Vec<u64> = nodes.iter().map(|n| n.machine.version).collect();
        if versions == self.seen {
            return;
        }
        self.seen = versions;
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
    }

    /// Checks S1 and the lease rule at true time `now`.
    pub fn check(&mut self, now: u64, nodes: &[Node], ignore_lease_rule: bool) -> Result<(), String> {
        self.collect(nodes);
        let t = now as f64;
        for k in 0..self.names.len() {
            for (what, holders) in [
                ("holds the master IP", &self.ip_holders[k]),
                ("runs master", &self.runners[k]),
            ] {
                for &h in holders.iter() {
                    let over = t - nodes[h].lease_end_true();
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
                    let earliest = holders
                        .iter()
                        .map(|&h| nodes[h].lease_end_true())
                        .fold(f64::INFINITY, f64::min);
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
