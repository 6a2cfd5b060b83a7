//! Each node's Raft: campaigns, votes, the leader's appends and the quorum
//! rounds behind its grants, timed as openraft does (`sim::raft`).

use super::*;

impl World {
    /// A fence request reaches node `l` (as `Cluster::fence_request`): it
    /// answers only as a leader with a quorum, its core told of its term.
    pub(super) fn confirm_leader(&mut self, l: usize, mono: Mono) -> bool {
        if !self.quorum_ok(l) {
            return false;
        }
        let term = self.nodes[l].raft.term();
        self.nodes[l].core.observe(Some(term), mono);
        true
    }

    /// A lease quorum round: the quorum, and each voter's heartbeat and
    /// answer not lost.
    pub(super) fn round_ok(&mut self, i: usize) -> bool {
        if !self.quorum_ok(i) {
            return false;
        }
        let p = self.net.loss_at(self.now);
        let term = self.nodes[i].raft.term();
        let mut acks = 0;
        for k in 0..self.voters.len() {
            let v = self.voters[k];
            let reach = self.follows(v, i, term);
            let lost = v != i && (self.rng.chance(p) || self.rng.chance(p));
            if reach && !lost {
                acks += 1;
            }
        }
        acks >= self.majority()
    }

    /// Node `i` has just become leader (elected, or restored at restart).
    pub(super) fn on_elected(&mut self, i: usize) {
        let now = self.now;
        let dead_after = crate::sim::ms(self.t.leader.dead_after());
        let fresh_wait = self.variant.fresh_leader_wait;
        let node = &mut self.nodes[i];
        let term = node.raft.term();
        let local = node.clock.local(now);
        // A fresh leader waits lease + margin (the core's rule); the broken
        // variant pretends its leadership began long ago.
        let since = if fresh_wait { local } else { local - dead_after - 1.0 };
        node.core.observe(Some(term), to_mono(since));
        // A Raft leader holds every committed entry.
        let len = self.log.len();
        node.catch_up(&self.log, len, now);
        node.raft.next_append = local;
        if self.quorum_ok(i) {
            self.log.push(None);
            let len = self.log.len();
            self.nodes[i].catch_up(&self.log, len, now);
        }
        self.broadcast_append(i);
    }

    pub(super) fn broadcast_append(&mut self, li: usize) {
        let l = &mut self.nodes[li];
        let local = l.clock.local(self.now);
        l.raft.next_append = local + self.t.raft_heartbeat;
        let term = l.raft.term();
        let commit = self.log.len();
        for j in 0..self.nodes.len() {
            if j == li || self.backoff.get(&(li, j)).is_some_and(|t| self.now < *t) {
                continue;
            }
            if !self.net.connected(li, j) || !self.nodes[j].up {
                // Unreachable: openraft backs off before trying again.
                self.backoff.insert((li, j), self.now + OPENRAFT_BACKOFF);
                continue;
            }
            self.net
                .send(self.now, li, j, Msg::Append { term, commit }, &mut self.rng);
        }
    }

    pub(super) fn raft_step(&mut self, i: usize) {
        if !self.nodes[i].running() {
            return;
        }
        let local = self.nodes[i].clock.local(self.now);
        let tick = self.t.raft_tick;
        if local >= self.nodes[i].raft.next_tick {
            self.nodes[i].raft.next_tick += tick;
            if self.nodes[i].raft.next_tick <= local {
                self.nodes[i].raft.next_tick = local + tick;
            }
            if self.voters.contains(&i) && self.nodes[i].raft.due_to_campaign(local) {
                let term = self.nodes[i].raft.campaign(local);
                let log = self.nodes[i].applied;
                let id = self.nodes[i].id;
                self.log(format!("node {id} campaigns, term {term}"));
                for k in 0..self.voters.len() {
                    let v = self.voters[k];
                    if v != i {
                        self.net.send(self.now, i, v, Msg::Vote { term, log }, &mut self.rng);
                    }
                }
            }
        }
        if self.nodes[i].raft.is_leader() && local >= self.nodes[i].raft.next_append {
            self.broadcast_append(i);
        }
    }
}
