//! Liveness, at every step: a master whose machine stays connected to a
//! majority never loses its role — a running node named master in the log
//! whose lease runs out, although for a whole lease before it was running
//! and connected (no partition, no message loss) to a majority of running
//! voters, is a failure (say, a change of leader that outlasts the lease).

use slotd_raft_store::ClusterState;

use super::Checker;
use crate::sim::node::Node;

impl Checker {
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
}
