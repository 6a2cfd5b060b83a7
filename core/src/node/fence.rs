//! `slotd fence`'s timings (DESIGN rule 6): how long it tries to tell a
//! leader that this node holds nothing, and how long a notice it sent
//! without an answer may still be accepted. The leader's side of the rule
//! is `LeaderCore::fenced_notice`.

use std::time::Duration;

use crate::timing::{Timing, TICKET_FRESH};

/// How long `slotd fence` keeps trying to tell a leader: `lease + margin`,
/// after which the silent path has moved the stores anyway (and long
/// enough to outlast an election when the leader itself died).
pub fn telling_for(timing: &Timing) -> Duration {
    timing.lease() + timing.clock_skew_margin()
}

/// How long after its ticket arrived a notice sent without an answer may
/// still be accepted (the ticket is fresh on the leader's clock, which may
/// run slow by the margin): `slotd fence` does not exit before that.
pub fn in_doubt_for(timing: &Timing) -> Duration {
    TICKET_FRESH + timing.clock_skew_margin()
}
