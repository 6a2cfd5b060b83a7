//! The operators: their seeded commands, checked as the leader checks them
//! (a refusal must change nothing), and a restarted agent's end of its
//! stop's drain.

use super::leader::describe;
use super::*;

impl World {
    /// The operators' commands, and the faults that break a switchover
    /// attempt, from their own stream.
    pub(super) fn schedule_ops(&mut self) {
        for (k, (at, op)) in sw::schedule(&mut self.ops_rng, self.variant.rebalances)
            .into_iter()
            .enumerate()
        {
            self.events.insert((at, 1_000_000 + k as u64), Event::Op(op));
        }
        for (k, fault) in [Fault::WedgedFlush, Fault::FailedStart].into_iter().enumerate() {
            if self.ops_rng.chance(0.35) {
                let at = self.ops_rng.range(FAULTS_FROM, FAULTS_UNTIL);
                self.events.insert((at, 2_000_000 + k as u64), Event::Fault(fault));
            }
        }
    }

    /// An operator's command through whoever leads, as the admin service
    /// carries it out (`operate.rs`): checked by the agent's rules with the
    /// leader's facts, refused with a reason, or written.
    pub(super) fn operate(&mut self, op: Op) {
        *self.report.ops.entry(op.kind()).or_default() += 1;
        let Some(li) = self.leader() else {
            self.report.ops_skipped += 1;
            self.log(format!("operator: {}: no leader, skipped", op.kind()));
            return;
        };
        let mono = self.nodes[li].clock.mono(self.now);
        if !self.confirm_leader(li, mono) {
            self.report.ops_skipped += 1;
            return;
        }
        let n = self.nodes.len() as u64;
        let node = &self.nodes[li];
        let state = &node.state;
        let facts = Facts::of(&node.core, state, mono, &self.config, self.now);
        // What to write and whether to wake the engine, or why not, with
        // the command an operator without the rules would have written.
        let (decided, wake, naive): (Result<Command, String>, bool, Option<Command>) = match op {
            Op::Failover { store, to, force } => {
                let names: Vec<&String> = state.stores.keys().collect();
                let name = names[(store % names.len() as u64) as usize].clone();
                let s = &state.stores[&name];
                let to = match to {
                    To::Auto => None,
                    To::Replica => s.nodes().find(|x| *x != s.master),
                    To::Any(k) => Some(k % n + 1),
                };
                let naive = Command::BeginSwitchover {
                    store: name.clone(),
                    epoch: s.epoch,
                    to: to.or_else(|| s.nodes().find(|x| *x != s.master)).unwrap_or(s.master),
                    force,
                    reason: Reason::Operator,
                };
                let decided = failover_command(state, &facts, &name, to, force)
                    .map_err(|r| format!("failover {name} to {to:?} (force {force}): {r}"));
                (decided, false, Some(naive))
            }
            Op::Drain {
                node,
                concurrency,
                on_stop,
            } => {
                let id = node % n + 1;
                let stranded = stranded(state, &facts, id);
                let command = Command::Drain {
                    node: id,
                    concurrency,
                    on_stop,
                };
                if !on_stop && !stranded.is_empty() {
                    let why = format!("drain node {id}: {} masters stranded", stranded.len());
                    (Err(why), false, Some(command))
                } else {
                    (Ok(command), true, None)
                }
            }
            Op::Undrain { node } => {
                let resting: Vec<NodeId> = state
                    .nodes
                    .values()
                    .filter(|x| x.mode != NodeMode::Active)
                    .map(|x| x.id)
                    .collect();
                let id = if resting.is_empty() {
                    node % n + 1
                } else {
                    resting[(node % resting.len() as u64) as usize]
                };
                let command = Command::SetNodeMode {
                    node: id,
                    mode: NodeMode::Active,
                };
                (Ok(command), false, None)
            }
            Op::Rebalance { concurrency } => {
                let command = Command::Rebalance { concurrency };
                if rebalance_plan(state, &facts).is_empty() {
                    let checked = state.check(&command).map_err(|r| r.to_string());
                    let why = checked.map_or_else(|r| r, |()| "nothing to move".to_owned());
                    (Err(format!("rebalance: {why}")), false, None)
                } else {
                    (Ok(command), true, None)
                }
            }
        };
        // A failover without the two phases, of a master that is down: no
        // grant may slip in between the decision and the entry (as the
        // admin service does it).
        let condemned = match &decided {
            Ok(Command::Failover { moves, .. }) => {
                let from = moves
                    .first()
                    .and_then(|m| self.nodes[li].state.stores.get(&m.store))
                    .map(|s| s.master);
                let from = from.unwrap_or_default();
                if self.nodes[li].core.condemn_if_down(from, mono) {
                    Some(std::collections::BTreeSet::from([from]))
                } else {
                    let why = format!("forced failover: the master, node {from}, answered meanwhile");
                    self.report.ops_refused += 1;
                    self.log(format!("operator: refused: {why}"));
                    return;
                }
            }
            _ => None,
        };
        let command = match decided {
            Ok(c) => c,
            Err(why) => {
                self.report.ops_refused += 1;
                self.log(format!("operator: refused: {why}"));
                if let Some(naive) = naive {
                    self.refusal_changes_nothing(li, naive);
                }
                return;
            }
        };
        let what = describe(&command);
        let before = self.log.len();
        let written = self.write(li, command.clone());
        if let Some(nodes) = &condemned {
            match written {
                Ok(len) => self.nodes[li].core.failed_over(nodes, len as u64),
                Err(_) => self.nodes[li].core.pardon(nodes),
            }
        }
        match written {
            Ok(len) => {
                self.log(format!("operator via leader node {}: {what} (entry {len})", li + 1));
                self.broadcast_append(li);
                if wake {
                    self.detect(li);
                }
            }
            Err(None) => {
                self.report.ops_skipped += 1;
            }
            Err(Some(r)) => {
                self.report.ops_refused += 1;
                self.log(format!("operator: {what} REFUSED by the state machine: {r}"));
                if self.log.len() != before {
                    self.violation = Some(format!("a refused command was written: {what}"));
                }
                self.refusal_changes_nothing(li, command);
            }
        }
    }

    /// One try of `stop::undrain_after_stop` on node `i` (local time
    /// `local`): done if its own state shows no stop's drain; else through
    /// the leader it follows, if reachable, `EndStopDrain`; again in 1 s.
    pub(super) fn undrain_after_stop(&mut self, i: usize, local: f64) {
        let node = &mut self.nodes[i];
        node.undrain_tries -= 1;
        node.next_undrain = local + 1000.0;
        let id = node.id;
        let job = node
            .state
            .nodes
            .get(&id)
            .map(|n| (n.mode, n.drain.is_some_and(|j| j.on_stop)));
        match job {
            Some((NodeMode::Active, _)) | Some((_, false)) => {
                node.undrain_tries = 0;
                return;
            }
            Some((_, true)) => {}
            None => return,
        }
        let Some(l) = node
            .raft
            .leader
            .filter(|&l| self.net.connected(i, l) && self.leader() == Some(l))
        else {
            return;
        };
        let mono = self.nodes[l].clock.mono(self.now);
        if !self.confirm_leader(l, mono) {
            return;
        }
        let command = Command::EndStopDrain { node: id };
        match self.write(l, command) {
            Ok(len) => {
                self.nodes[i].undrain_tries = 0;
                self.log(format!("node {id}: started again, ends its stop's drain (entry {len})"));
                self.broadcast_append(l);
            }
            Err(Some(r)) => self.log(format!("node {id}: cannot end its stop's drain: {r}")),
            Err(None) => {}
        }
    }

    /// Applies `command` to a copy of leader `li`'s state: if the state
    /// machine refuses it, the copy must be unchanged.
    pub(super) fn refusal_changes_nothing(&mut self, li: usize, command: Command) {
        let state = &self.nodes[li].state;
        let mut copy = state.clone();
        let request = Request {
            at_ms: self.now,
            command,
        };
        if !copy.apply(&request).is_applied() && copy != *state {
            let what = describe(&request.command);
            self.violation = Some(format!("a refused command changed the state: {what}"));
        }
    }
}
