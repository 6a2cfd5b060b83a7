//! Counters and flags the agent's loops update and `/metrics` shows.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Shared, lock-free; every field is read by the metrics renderer.
#[derive(Default)]
pub struct Stats {
    /// 1 while this node is named master of some store but may not act (no lease).
    pub fenced: AtomicBool,
    /// An ARP/NA probe found another MAC answering for an IP we were about to bind.
    pub split_brain_alarms: AtomicU64,
    /// Failover entries written by this node as leader, by reason.
    pub failovers_failure: AtomicU64,
    /// Stores moved by those entries.
    pub stores_failed_over: AtomicU64,
    /// Unix ms of the last failover entry written here (0: never).
    pub last_failover_ms: AtomicU64,
    /// Stores whose master is dead and that have no live replica to go to.
    pub stranded: AtomicU64,
    /// Peer calls refused, by method and reason (`not_joined`: this agent
    /// has joined no cluster yet; `other_cluster`: the call carries another
    /// cluster's id, or none).
    pub peer_refused: std::sync::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    /// Reconciler actions that failed.
    pub action_errors: AtomicU64,
    /// Admin calls refused for the caller's certificate.
    pub admin_refused: AtomicU64,
}

impl Stats {
    pub fn get(v: &AtomicU64) -> u64 {
        v.load(Ordering::Relaxed)
    }

    pub fn add(v: &AtomicU64, n: u64) {
        v.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one refused Peer call.
    pub fn peer_refused(&self, method: &'static str, reason: &'static str) {
        let mut m = self
            .peer_refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *m.entry((method, reason)).or_default() += 1;
    }
}
