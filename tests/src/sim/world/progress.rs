//! Whether switchover work is stuck once the faults are over, and what the
//! stuck checker needs to know to tell.

use super::*;

impl World {
    /// Checks that no switchover, drain or rebalance is stuck, once faults
    /// are over and a leader has settled.
    pub(super) fn check_stuck(&mut self) -> Result<(), String> {
        if self.settled_since.is_none() && self.now >= HEALED_BY {
            let settled = self.leader().is_some_and(|l| {
                let n = &self.nodes[l];
                n.core.settled(n.clock.mono(self.now))
            });
            if settled {
                self.settled_since = Some(self.now);
                self.log("faults over, a leader has settled: stuck switchovers are failures from now".into());
            }
        }
        let Some(settled) = self.settled_since else {
            return Ok(());
        };
        let mut stuck = std::mem::take(&mut self.stuck);
        let r = stuck.check(self.now, settled, &self.log_state, |n| self.drain_resting(n));
        self.stuck = stuck;
        r
    }

    /// Whether draining `node` has nothing left a drain could do, by the
    /// leader's facts (`None`: no leader).
    pub(super) fn drain_resting(&self, node: NodeId) -> Option<bool> {
        let l = self.leader()?;
        let n = &self.nodes[l];
        let facts = Facts::of(&n.core, &self.log_state, n.clock.mono(self.now), &self.config, self.now);
        let stranded = stranded(&self.log_state, &facts, node).len();
        Some(drain_resting(&self.log_state, node, stranded))
    }

    /// Whether a switchover, a drain that could still move something, or a
    /// rebalance is under way in the log.
    pub(super) fn switchover_work(&self) -> bool {
        let s = &self.log_state;
        s.rebalance.is_some()
            || s.stores.values().any(|x| x.phase != Phase::Stable)
            || s.nodes
                .values()
                .filter(|x| x.mode == NodeMode::Draining)
                .any(|x| self.drain_resting(x.id) != Some(true))
    }

    /// Whether a failing action (a broken attempt's) is in flight somewhere,
    /// or ended less than `SETTLE` ago: a fault still in effect.
    pub(super) fn wedge_in_flight(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| n.wedge_ends + SETTLE as f64 > self.now as f64)
    }
}
