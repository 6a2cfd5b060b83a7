//! The machines' lifecycle: watchdog kills of hung agents, `slotd fence`
//! after an agent dies (releases, then telling the leader), restarts.

use super::*;

impl World {
    pub(super) fn lifecycle(&mut self) {
        for i in 0..self.nodes.len() {
            let now = self.now;
            let id = self.nodes[i].id;
            let local = self.nodes[i].clock.local(now);
            // systemd's watchdog: no ping for WatchdogSec → SIGKILL, fence.
            if self.nodes[i].up && local - self.nodes[i].last_ping > self.t.watchdog {
                let down = self.rng.range(200, 2000);
                self.crash(i, false, down);
                self.report.watchdog_kills += 1;
                self.log(format!("node {id}: the watchdog kills the agent"));
                continue;
            }
            if self.nodes[i].frozen_until.is_some_and(|u| u <= now) {
                self.nodes[i].frozen_until = None;
                self.log(format!("node {id}: agent resumes"));
            }
            if self.nodes[i].stalled.is_some_and(|(u, _)| u <= now) {
                self.nodes[i].stalled = None;
                self.nodes[i].needs_pass = true;
                self.log(format!("node {id}: reconciler moves again"));
            }
            self.fence_step(i);
            let fence_done = self.nodes[i].fence.is_none();
            if !self.nodes[i].up && fence_done && self.nodes[i].restart_at.is_some_and(|t| t <= now) {
                let (timeout, phase) = election_draw(&mut self.rng, &self.t);
                let t = self.t;
                let node = &mut self.nodes[i];
                node.restart_at = None;
                node.restart(now, &t, timeout, phase);
                if node.raft.is_leader() {
                    let term = node.raft.term();
                    self.log(format!("node {id}: agent restarts, leader of term {term} again"));
                    self.on_elected(i);
                } else {
                    let applied = self.nodes[i].applied;
                    self.log(format!("node {id}: agent restarts (applied {applied} entries)"));
                }
            }
        }
    }

    /// `slotd fence` on node `i`: rounds of ticket requests to every other
    /// node until a leader accepts its notice or it gives up; then, if a
    /// notice is still in doubt, it waits until its ticket went stale.
    pub(super) fn fence_step(&mut self, i: usize) {
        let local = self.nodes[i].clock.local(self.now);
        let in_doubt = self.t.fence_in_doubt;
        let Some(f) = self.nodes[i].fence.as_ref() else { return };
        if local < f.begins {
            return;
        }
        if f.next_round <= f.begins {
            // First of all it releases and stops everything.
            self.nodes[i].machine.clear();
        }
        let Some(f) = self.nodes[i].fence.as_mut() else { return };
        if let Some((_, _, got_at)) = f.presenting {
            if local - got_at > FENCE_CALL_TIMEOUT {
                // No answer to the notice: it may still be accepted.
                let until = got_at + in_doubt;
                f.in_doubt_until = Some(f.in_doubt_until.map_or(until, |u: f64| u.max(until)));
                f.presenting = None;
            }
        }
        if f.accepted || local >= f.deadline {
            if f.accepted || f.in_doubt_until.is_none_or(|u| local >= u) {
                let accepted = f.accepted;
                self.nodes[i].fence = None;
                let id = self.nodes[i].id;
                self.log(format!(
                    "node {id}: fence exits ({})",
                    if accepted {
                        "notice accepted"
                    } else {
                        "no leader took the notice"
                    }
                ));
            }
            return;
        }
        if f.presenting.is_none() && local >= f.next_round {
            f.next_round = local + FENCE_RETRY;
            let run = f.run;
            for j in 0..self.nodes.len() {
                if j != i {
                    self.net.send(self.now, i, j, Msg::TicketAsk { run }, &mut self.rng);
                }
            }
        }
    }
}
