//! Each node's agent: lease renewals and grants, the reconciler's passes
//! and the reports they publish, watchdog pings.

use super::*;

impl World {
    pub(super) fn agent_step(&mut self, i: usize) {
        if !self.nodes[i].running() {
            return;
        }
        let now = self.now;
        let local = self.nodes[i].clock.local(now);
        let mono = self.nodes[i].clock.mono(now);
        // The watchdog pinger: every part must have marked progress lately
        // (the agent's rule); a stalled reconciler stopped marking.
        if local >= self.nodes[i].next_ping {
            self.nodes[i].next_ping = local + self.t.ping_every;
            let reconciler = self.nodes[i].stalled.map_or(local, |(_, since)| since);
            let marks = [Some(mono), Some(to_mono(reconciler)), Some(mono)];
            if watchdog::verdict(marks, mono, mono, None).is_ok() {
                self.nodes[i].last_ping = local;
            }
        }
        // The lease keeper.
        if local >= self.nodes[i].next_heartbeat {
            self.nodes[i].next_heartbeat = local + self.t.heartbeat;
            if let Some(l) = self.nodes[i].raft.leader {
                let msg = Msg::Renew {
                    sent_local: local,
                    incarnation: self.nodes[i].incarnation,
                    report: self.nodes[i].report.clone(),
                };
                self.net.send(now, i, l, msg, &mut self.rng);
            }
        }
        // The failure detector, every heartbeat on the leader's clock, and
        // when the core says the next node could be dead.
        let due = self.nodes[i].core.next_decision().is_some_and(|t| t <= mono);
        if self.nodes[i].raft.is_leader() && (local >= self.nodes[i].next_detect || due) {
            self.nodes[i].next_detect = local + self.t.heartbeat;
            self.detect(i);
        }
        // After a start, `stop::undrain_after_stop`: a stop's drain left
        // this node draining or drained: the leader ends it.
        if self.nodes[i].undrain_tries > 0 && local >= self.nodes[i].next_undrain {
            self.undrain_after_stop(i, local);
        }
        // Demotes on tasks of their own (they go on while the reconciler
        // loop is stuck, not while the whole agent is hung).
        if self.nodes[i].running() {
            self.nodes[i].advance_jobs(now);
        }
        // The reconciler.
        if !self.nodes[i].reconciling() {
            return;
        }
        let ignore = self.variant.ignore_lease;
        let old = self.variant.old_reconciler;
        let probes = self.variant.probes;
        let probe = self.t.probe;
        let demote_timeout = self.t.demote_timeout;
        let valid = ignore || self.nodes[i].lease_valid(now);
        // This node, and the others' machines (looked at only when a probe
        // ends).
        let (before, rest) = self.nodes.split_at_mut(i);
        let Some((node, after)) = rest.split_first_mut() else {
            return;
        };
        let others = |ip: std::net::IpAddr| {
            probes
                && before
                    .iter()
                    .chain(after.iter())
                    .any(|n| n.machine.addresses.contains(&ip))
        };
        let mut note = None;
        if let Some(pass) = &node.pass {
            let cut = pass.lease_valid
                && if old {
                    now as f64 >= pass.lease_end_at_start
                } else {
                    !valid
                };
            if cut {
                node.pass = None;
                node.start_pass(now, false, probe, old);
                node.advance_pass(now, &others, ignore, &self.wedges, demote_timeout);
                note = Some(format!("node {}: lease ran out during a pass: fenced", node.id));
            } else {
                node.advance_pass(now, &others, ignore, &self.wedges, demote_timeout);
            }
        } else {
            if local >= node.next_resync {
                node.next_resync = local + RESYNC;
                node.needs_pass = true;
            }
            if node.needs_pass || valid != node.last_valid {
                node.needs_pass = false;
                let was = node.last_valid;
                node.start_pass(now, valid, probe, old);
                let acted = node.pass.as_ref().map_or(0, |p| p.actions);
                node.advance_pass(now, &others, ignore, &self.wedges, demote_timeout);
                if was && !valid && acted > 0 {
                    note = Some(format!("node {}: lease expired, fenced ({acted} actions)", node.id));
                }
            }
        }
        if let Some(line) = note {
            self.log(line);
        }
    }
}
