//! Leases, node side: how long this node may act as master without hearing
//! from a Raft majority (DESIGN "Safety", rule 1).
//!
//! Every `heartbeat` the agent's lease keeper sends a renewal to the leader,
//! which answers after a quorum round it started after receiving it (the
//! agent's granter). [`LeaseBook`] turns the grants into a lease, by rules
//! the simulation runs too:
//! - a lease runs from when the renewal was *sent*, for `lease`, on this
//!   node's monotonic clock;
//! - it counts only once this node has applied the log up to the grant's
//!   read index (so it never serves a store the leader already moved);
//! - a grant never shortens the lease, and one that arrives too late to
//!   matter is dropped;
//! - a pause its clocks did not see ([`paused`]: a frozen VM resumed, the
//!   wall clock set forward past them) voids the lease, and every grant
//!   asked for before it ([`LeaseBook::void`]): fence first, renew after.
//!
//! The node's clock counts through suspend (the agent reads `Mono` from
//! CLOCK_BOOTTIME): a suspended machine's lease runs out while it sleeps.

use std::time::Duration;

use crate::time::Mono;

/// This node's lease as the reconciler sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseState {
    /// The lease is valid strictly before this point.
    pub valid_until: Option<Mono>,
}

impl LeaseState {
    pub fn valid_at(&self, now: Mono) -> bool {
        self.valid_until.is_some_and(|t| now < t)
    }

    pub fn remaining(&self, now: Mono) -> Duration {
        self.valid_until.map_or(Duration::ZERO, |t| t.since(now))
    }
}

/// A grant waiting for the log to reach its read index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Waiting {
    until: Mono,
    read_index: u64,
}

/// Grants in, lease out.
#[derive(Clone, Debug)]
pub struct LeaseBook {
    lease: Duration,
    state: LeaseState,
    /// Grants not yet usable, none dominated by another (later end and
    /// lower read index).
    waiting: Vec<Waiting>,
    /// The last pause: grants of renewals sent before it do not count.
    voided_at: Option<Mono>,
}

/// Whether a loop that slept `clock` on the node's own clock while the
/// wall clock moved `wall` was paused without the node's clock seeing it:
/// the wall clock ran ahead by more than `margin` (a VM frozen and resumed
/// with its clocks stopped, until the host set its wall clock again). An
/// NTP step forward looks the same: a fence that was not needed, never a
/// lease kept too long. Returns by how much.
pub fn paused(clock: Duration, wall: Duration, margin: Duration) -> Option<Duration> {
    let ahead = wall.saturating_sub(clock);
    (ahead > margin).then_some(ahead)
}

impl LeaseBook {
    pub fn new(lease: Duration) -> LeaseBook {
        LeaseBook {
            lease,
            state: LeaseState::default(),
            waiting: Vec::new(),
            voided_at: None,
        }
    }

    /// The cluster's lease changed (as this node applied it): later grants
    /// count for no longer than `lease`. The lease running now stays (the
    /// leader waits out the one it was granted under).
    pub fn set_own(&mut self, lease: Duration) {
        self.lease = lease;
    }

    /// A pause this node's clock did not see (see [`paused`]), noticed at
    /// `now`: the lease is gone, and so is every grant of a renewal sent
    /// before now (its end was reckoned on a clock that stood still).
    pub fn void(&mut self, now: Mono) {
        self.state = LeaseState::default();
        self.waiting.clear();
        self.voided_at = Some(now);
    }

    pub fn state(&self) -> LeaseState {
        self.state
    }

    /// The renewal sent at `sent` was granted with `read_index`; this node
    /// has applied up to `applied`. True if the lease grew.
    pub fn granted(&mut self, sent: Mono, read_index: u64, applied: u64, now: Mono) -> bool {
        self.granted_for(sent, self.lease, read_index, applied, now)
    }

    /// The same, for a grant that names the lease it grants (`lease`, the
    /// leader's): the lease is the shorter of it and this node's own, so
    /// that no node acts on a longer lease than the leader granted (after
    /// which the leader may move its stores).
    pub fn granted_for(&mut self, sent: Mono, lease: Duration, read_index: u64, applied: u64, now: Mono) -> bool {
        let until = sent + self.lease.min(lease);
        if now >= until || self.voided_at.is_some_and(|v| sent < v) {
            return false;
        }
        if applied >= read_index {
            return self.extend(until);
        }
        let w = Waiting { until, read_index };
        if !self
            .waiting
            .iter()
            .any(|x| x.until >= w.until && x.read_index <= w.read_index)
        {
            self.waiting
                .retain(|x| !(w.until >= x.until && w.read_index <= x.read_index));
            self.waiting.push(w);
        }
        false
    }

    /// The log is applied up to `applied`: waiting grants may count now.
    /// True if the lease grew.
    pub fn applied(&mut self, applied: u64, now: Mono) -> bool {
        let mut grew = false;
        let mut keep = Vec::new();
        for w in std::mem::take(&mut self.waiting) {
            if now >= w.until {
                continue;
            }
            if applied >= w.read_index {
                grew |= self.extend(w.until);
            } else {
                keep.push(w);
            }
        }
        self.waiting = keep;
        grew
    }

    /// Whether a grant is waiting for the log.
    pub fn waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    fn extend(&mut self, until: Mono) -> bool {
        if self.state.valid_until.is_none_or(|t| t < until) {
            self.state.valid_until = Some(until);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_counts_for_the_shorter_of_the_leaders_lease_and_this_nodes() {
        // This node is configured with 6 s; the leader grants 2 s.
        let mut b = LeaseBook::new(Duration::from_secs(6));
        assert!(b.granted_for(at(100), Duration::from_secs(2), 0, 0, at(150)));
        assert_eq!(b.state().valid_until, Some(at(2100)));
        // A leader granting more than this node's own: its own.
        let mut b = LeaseBook::new(Duration::from_secs(2));
        assert!(b.granted_for(at(100), Duration::from_secs(6), 0, 0, at(150)));
        assert_eq!(b.state().valid_until, Some(at(2100)));
    }

    #[test]
    fn a_pause_no_clock_of_the_node_saw_voids_the_lease_and_older_grants() {
        let margin = Duration::from_millis(500);
        // Slept as asked, or stalled with every clock counting: no pause.
        assert_eq!(
            paused(Duration::from_millis(200), Duration::from_millis(210), margin),
            None
        );
        assert_eq!(paused(Duration::from_secs(3), Duration::from_secs(3), margin), None);
        // The wall clock ran 5 s ahead of the node's: a frozen VM resumed.
        assert_eq!(
            paused(Duration::from_millis(200), Duration::from_millis(5200), margin),
            Some(Duration::from_secs(5))
        );
        // A wall clock set back is no pause.
        assert_eq!(paused(Duration::from_millis(200), Duration::ZERO, margin), None);

        let mut b = LeaseBook::new(Duration::from_millis(2000));
        assert!(b.granted(at(100), 0, 0, at(150)));
        assert!(!b.granted(at(200), 9, 0, at(250)), "waits for the log");
        b.void(at(300));
        assert!(!b.state().valid_at(at(301)), "voided");
        assert!(!b.waiting(), "grants in wait are dropped too");
        // A grant of a renewal sent before the pause is dropped...
        assert!(!b.granted(at(250), 0, 9, at(320)));
        assert!(!b.state().valid_at(at(330)));
        // ...one sent after it counts.
        assert!(b.granted(at(310), 0, 9, at(340)));
        assert_eq!(b.state().valid_until, Some(at(2310)));
    }

    fn at(ms: u64) -> Mono {
        Mono::from_origin(Duration::from_millis(ms))
    }

    #[test]
    fn a_lease_runs_from_the_send_and_never_shrinks() {
        let mut b = LeaseBook::new(Duration::from_millis(2000));
        assert!(b.granted(at(100), 0, 0, at(150)));
        assert_eq!(b.state().valid_until, Some(at(2100)));
        // An older renewal answered late does not shorten it.
        assert!(!b.granted(at(50), 0, 0, at(160)));
        assert_eq!(b.state().valid_until, Some(at(2100)));
        assert!(b.state().valid_at(at(2099)) && !b.state().valid_at(at(2100)));
        // A grant whose lease is already over is worthless.
        assert!(!b.granted(at(100), 0, 0, at(2100)));
    }

    #[test]
    fn a_grant_waits_for_the_log_to_reach_its_read_index() {
        let mut b = LeaseBook::new(Duration::from_millis(2000));
        assert!(!b.granted(at(0), 7, 5, at(10)), "not applied that far yet");
        assert!(!b.state().valid_at(at(10)));
        assert!(!b.applied(6, at(20)));
        assert!(b.applied(7, at(30)));
        assert_eq!(b.state().valid_until, Some(at(2000)));
        assert!(!b.waiting());
        // A waiting grant that runs out before the log catches up is dropped.
        assert!(!b.granted(at(100), 9, 7, at(110)));
        assert!(!b.applied(9, at(2100)));
        assert!(!b.waiting());
    }

    #[test]
    fn waiting_grants_keep_the_useful_ones() {
        let mut b = LeaseBook::new(Duration::from_millis(2000));
        b.granted(at(0), 5, 0, at(1));
        b.granted(at(200), 9, 0, at(201));
        // Dominated: ends earlier, needs more of the log.
        b.granted(at(100), 9, 0, at(101));
        assert_eq!(b.waiting.len(), 2);
        assert!(b.applied(5, at(300)));
        assert_eq!(b.state().valid_until, Some(at(2000)));
        assert!(b.applied(9, at(400)));
        assert_eq!(b.state().valid_until, Some(at(2200)));
    }
}
