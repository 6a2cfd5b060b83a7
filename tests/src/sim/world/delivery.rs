//! Message delivery: what arrives this step, and what each node does with
//! it (votes, appends, renewals and grants, fence tickets and notices).

use super::*;

impl World {
    pub(super) fn deliver(&mut self) {
        while let Some(env) = self.net.due(self.now) {
            let (from, to) = (env.from, env.to);
            if !self.net.connected(from, to) {
                continue;
            }
            // Answers to `slotd fence` reach the fence process, not the agent.
            match env.msg {
                Msg::Ticket { run, id } => {
                    let local = self.nodes[to].clock.local(self.now);
                    if let Some(f) = self.nodes[to].fence.as_mut() {
                        if f.run == run && f.presenting.is_none() && !f.accepted {
                            f.presenting = Some((from, id, local));
                            self.net
                                .send(self.now, to, from, Msg::Notice { run, id }, &mut self.rng);
                        }
                    }
                    continue;
                }
                Msg::NoticeReply { run, accepted } => {
                    if let Some(f) = self.nodes[to].fence.as_mut() {
                        if f.run == run {
                            f.presenting = None;
                            f.accepted |= accepted;
                        }
                    }
                    continue;
                }
                _ => {}
            }
            if !self.nodes[to].running() {
                continue;
            }
            self.handle(from, to, env.msg);
        }
    }

    pub(super) fn handle(&mut self, from: usize, to: usize, msg: Msg) {
        let now = self.now;
        let local = self.nodes[to].clock.local(now);
        let mono = self.nodes[to].clock.mono(now);
        match msg {
            Msg::Append { term, commit } => {
                let node = &mut self.nodes[to];
                let before = node.raft.leader;
                let leader_vote = Vote {
                    term,
                    node: Some(from),
                    committed: true,
                };
                if !node.raft.update_vote(leader_vote, local) {
                    let vote = node.raft.vote;
                    self.net.send(now, to, from, Msg::Stale { vote }, &mut self.rng);
                    return;
                }
                node.catch_up(&self.log, commit, now);
                // The keeper renews at once with a new leader.
                if before != Some(from) {
                    node.next_heartbeat = local;
                }
            }
            Msg::Stale { vote } => {
                let node = &mut self.nodes[to];
                let was = node.raft.is_leader();
                node.raft.see_vote(vote, local);
                if was && !node.raft.is_leader() {
                    let id = node.id;
                    self.log(format!("node {id}: steps down ({vote:?} seen)"));
                }
            }
            Msg::Vote { term, log } => {
                if !self.voters.contains(&to) {
                    return;
                }
                let node = &mut self.nodes[to];
                let was = node.raft.is_leader();
                let granted = node.raft.vote_request(from, term, log, node.applied, local);
                let vote = node.raft.vote;
                let log = node.applied;
                if was && !node.raft.is_leader() {
                    let id = node.id;
                    self.log(format!("node {id}: steps down (votes in term {term})"));
                }
                self.net
                    .send(now, to, from, Msg::VoteReply { vote, granted, log }, &mut self.rng);
            }
            Msg::VoteReply { vote, granted, log } => {
                let majority = self.majority();
                let node = &mut self.nodes[to];
                let my_term = node.raft.term();
                if !granted {
                    if log > node.applied && matches!(node.raft.role, Role::Candidate { .. }) {
                        node.raft.seen_greater_log = true;
                    }
                    node.raft.see_vote(vote, local);
                    return;
                }
                let won = match &mut node.raft.role {
                    Role::Candidate { granted: g } if vote.term == my_term => {
                        g.insert(from);
                        g.len() >= majority
                    }
                    _ => false,
                };
                if won {
                    node.raft.update_vote(
                        Vote {
                            term: my_term,
                            node: Some(to),
                            committed: true,
                        },
                        local,
                    );
                    self.report.elections += 1;
                    let id = self.nodes[to].id;
                    self.log(format!("node {id} elected leader, term {my_term}"));
                    self.on_elected(to);
                }
            }
            Msg::Renew {
                sent_local,
                incarnation,
                report,
            } => {
                let node = &self.nodes[to];
                if node.raft.is_leader() {
                    // A quorum round started now, after receipt.
                    let at = now + self.rng.range(2, 40);
                    let msg = Msg::RoundDone {
                        term: node.raft.term(),
                        node: from,
                        sent_local,
                        incarnation,
                        report,
                    };
                    self.net.push(at, to, to, msg);
                }
            }
            Msg::RoundDone {
                term,
                node,
                sent_local,
                incarnation,
                report,
            } => {
                if self.nodes[to].raft.term() != term || !self.round_ok(to) {
                    return;
                }
                let read_index = self.log.len();
                let asker = self.nodes[node].id;
                let l = &mut self.nodes[to];
                l.core.observe(Some(term), mono);
                let changed = l.last_reports.get(&asker) != Some(&report);
                let copy = changed.then(|| report.clone());
                if let Some(g) = l.core.grant(asker, mono, report, read_index as u64) {
                    if let Some(copy) = copy {
                        l.last_reports.insert(asker, copy);
                        l.reports_seen += 1;
                    }
                    let msg = Msg::Grant {
                        sent_local,
                        incarnation,
                        read_index: g.read_index as usize,
                    };
                    self.net.send(now, to, node, msg, &mut self.rng);
                    // The granter wakes the engine when a phase is acked.
                    if g.acks {
                        self.detect(to);
                    }
                }
            }
            Msg::Grant {
                sent_local,
                incarnation,
                read_index,
            } => {
                let waits = self.variant.lease_waits_for_log;
                let node = &mut self.nodes[to];
                if incarnation != node.incarnation {
                    return;
                }
                let applied = if waits { node.applied as u64 } else { u64::MAX };
                node.book.granted(to_mono(sent_local), read_index as u64, applied, mono);
            }
            Msg::TicketAsk { run } => {
                if !self.confirm_leader(to, mono) {
                    return;
                }
                let id = self.rng.next_u64();
                let asker = self.nodes[from].id;
                if self.nodes[to].core.issue_ticket(asker, id, mono) {
                    self.net.send(now, to, from, Msg::Ticket { run, id }, &mut self.rng);
                }
            }
            Msg::Notice { run, id } => {
                if !self.confirm_leader(to, mono) {
                    return;
                }
                let asker = self.nodes[from].id;
                let accepted = self.nodes[to].core.fenced_notice(asker, id, mono);
                self.net
                    .send(now, to, from, Msg::NoticeReply { run, accepted }, &mut self.rng);
                if accepted {
                    self.report.notices_accepted += 1;
                    let lid = self.nodes[to].id;
                    self.log(format!("leader node {lid}: fence notice of node {asker} accepted"));
                    // The engine wakes at once.
                    self.detect(to);
                }
            }
            Msg::Ticket { .. } | Msg::NoticeReply { .. } => {}
        }
    }
}
