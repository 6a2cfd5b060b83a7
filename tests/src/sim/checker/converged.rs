//! Convergence (at the end, after quiet time): every store has exactly one
//! master, holding its IP and running master, and it is the log's master.

use slotd_raft_store::ClusterState;

use super::Checker;
use crate::sim::node::Node;

impl Checker {
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
