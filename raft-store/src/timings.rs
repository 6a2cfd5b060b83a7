//! The timings safety depends on, one set for the whole cluster: in the
//! Raft state, first written by the leader from its own file (`init`, or the
//! first leader of a cluster that predates them), changed only by a logged
//! `SetTimings` (`slotctl config set`). A node's `[timing]` values for these
//! keys are only what that first write starts with.
//!
//! A change is safe while it happens: until it is settled (`SettleTimings`,
//! logged by the leader once every node has said it applied the change and
//! the old lease has run out since), a grant to a node that has not applied
//! it carries the shorter of the old and new lease, and a silent node counts
//! as fenced only after the longer of the old and new `lease + margin`.

use serde::{Deserialize, Serialize};

/// The cluster-wide timings, in milliseconds (as the `[timing]` keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterTimings {
    pub heartbeat_ms: u64,
    pub lease_ms: u64,
    pub clock_skew_margin_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub raft_heartbeat_ms: u64,
}

/// The defaults of these keys in a node's `[timing]` (`slotd-core`'s
/// `Timing::default` takes them from here).
impl Default for ClusterTimings {
    fn default() -> Self {
        ClusterTimings {
            heartbeat_ms: 200,
            lease_ms: 2000,
            clock_skew_margin_ms: 500,
            election_timeout_min_ms: 100,
            election_timeout_max_ms: 250,
            raft_heartbeat_ms: 75,
        }
    }
}

/// The keys, as `slotctl config` and the `[timing]` table name them.
pub const KEYS: [&str; 6] = [
    "heartbeat_ms",
    "lease_ms",
    "clock_skew_margin_ms",
    "election_timeout_min_ms",
    "election_timeout_max_ms",
    "raft_heartbeat_ms",
];

impl ClusterTimings {
    /// Every key with its value, in `KEYS` order.
    pub fn pairs(&self) -> [(&'static str, u64); 6] {
        [
            (KEYS[0], self.heartbeat_ms),
            (KEYS[1], self.lease_ms),
            (KEYS[2], self.clock_skew_margin_ms),
            (KEYS[3], self.election_timeout_min_ms),
            (KEYS[4], self.election_timeout_max_ms),
            (KEYS[5], self.raft_heartbeat_ms),
        ]
    }

    /// Sets `key`; false (and nothing changed) for a key that is not one.
    pub fn set(&mut self, key: &str, value: u64) -> bool {
        let field = match key {
            "heartbeat_ms" => &mut self.heartbeat_ms,
            "lease_ms" => &mut self.lease_ms,
            "clock_skew_margin_ms" => &mut self.clock_skew_margin_ms,
            "election_timeout_min_ms" => &mut self.election_timeout_min_ms,
            "election_timeout_max_ms" => &mut self.election_timeout_max_ms,
            "raft_heartbeat_ms" => &mut self.raft_heartbeat_ms,
            _ => return false,
        };
        *field = value;
        true
    }

    /// How long after its last grant a silent node has fenced itself under
    /// these timings.
    pub fn dead_after_ms(&self) -> u64 {
        self.lease_ms.saturating_add(self.clock_skew_margin_ms)
    }
}

/// The timings in force, and the change being settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimingsInForce {
    /// Numbers the changes (the first write is 1): a `SetTimings` names
    /// the one it replaces, a node reports the one it has applied.
    pub seq: u64,
    pub now: ClusterTimings,
    /// What was in force before change `seq`, until it is settled: grants
    /// given under it may still run, and a node that has not applied the
    /// change knows only it.
    pub before: Option<ClusterTimings>,
}

impl TimingsInForce {
    /// The lease a grant gives a node that has applied change `node_seq`:
    /// never longer than what that node knows the cluster waits for.
    pub fn lease_ms_for(&self, node_seq: u64) -> u64 {
        match self.before {
            Some(b) if node_seq < self.seq => b.lease_ms.min(self.now.lease_ms),
            _ => self.now.lease_ms,
        }
    }

    /// How long after its last grant a silent node has fenced itself,
    /// whichever timings its last grant was given under.
    pub fn dead_after_ms(&self) -> u64 {
        let now = self.now.dead_after_ms();
        self.before.map_or(now, |b| now.max(b.dead_after_ms()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings(lease_ms: u64, margin: u64) -> ClusterTimings {
        ClusterTimings {
            lease_ms,
            clock_skew_margin_ms: margin,
            ..ClusterTimings::default()
        }
    }

    #[test]
    fn a_change_being_settled_grants_the_shorter_and_waits_the_longer() {
        let settled = TimingsInForce {
            seq: 1,
            now: timings(2000, 500),
            before: None,
        };
        assert_eq!(settled.lease_ms_for(0), 2000);
        assert_eq!(settled.dead_after_ms(), 2500);
        // Longer: only a node that has it gets it; every wait is the new one.
        let longer = TimingsInForce {
            seq: 2,
            now: timings(4000, 500),
            before: Some(timings(2000, 500)),
        };
        assert_eq!(longer.lease_ms_for(1), 2000);
        assert_eq!(longer.lease_ms_for(2), 4000);
        assert_eq!(longer.dead_after_ms(), 4500);
        // Shorter: every grant is the new one; the wait stays the old one
        // (grants given under it may run) until settled.
        let shorter = TimingsInForce {
            seq: 2,
            now: timings(1500, 300),
            before: Some(timings(2000, 500)),
        };
        assert_eq!(shorter.lease_ms_for(1), 1500);
        assert_eq!(shorter.lease_ms_for(2), 1500);
        assert_eq!(shorter.dead_after_ms(), 2500);
    }

    #[test]
    fn every_key_reads_and_sets_and_no_other() {
        let mut t = timings(2000, 500);
        for (i, key) in KEYS.iter().enumerate() {
            assert!(t.set(key, 1000 + i as u64), "{key}");
        }
        let values: Vec<u64> = t.pairs().iter().map(|(_, v)| *v).collect();
        assert_eq!(values, (1000..1006).collect::<Vec<u64>>());
        let before = t;
        assert!(!t.set("probe_timeout_ms", 1));
        assert_eq!(t, before);
    }
}
