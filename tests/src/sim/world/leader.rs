//! Leader work, as the agent's failover engine does it: the failure
//! detector's decision written and settled, then a round of the switchover
//! conductor; and writing an entry (only with a quorum, only if the state
//! machine takes it).

use super::*;

impl World {
    /// The engine on leader `li` (`leader::engine`): the failure detector
    /// — the core decides, and the failover is written if it can commit —
    /// then the switchover conductor.
    pub(super) fn detect(&mut self, li: usize) {
        if !self.nodes[li].raft.is_leader() || !self.nodes[li].running() {
            return;
        }
        let mono = self.nodes[li].clock.mono(self.now);
        let term = self.nodes[li].raft.term();
        let node = &mut self.nodes[li];
        node.core.observe(Some(term), mono);
        let decision = node.core.decide(&node.state, mono);
        if let Some(command) = decision.command() {
            self.fail_over(li, &decision, command);
        }
        self.conduct(li);
    }

    pub(super) fn fail_over(&mut self, li: usize, decision: &Decision, command: Command) {
        let dead = &decision.dead;
        let moves = decision.plan.moves.len() as u64;
        let written = self.write(li, command);
        self.nodes[li]
            .core
            .settle(dead, written.as_ref().ok().map(|len| *len as u64));
        match written {
            Err(None) => {}
            Err(Some(r)) => {
                self.report.rejected_failovers += 1;
                self.log(format!("leader node {}: failover of {dead:?} REJECTED: {r}", li + 1));
            }
            Ok(len) => {
                self.report.failovers += 1;
                self.report.stores_moved += moves;
                self.log(format!(
                    "leader node {}: failover of dead {dead:?}, {moves} stores (entry {len})",
                    li + 1
                ));
                self.broadcast_append(li);
            }
        }
    }

    /// The engine's round on leader `li`: the conductor's memory brought up
    /// to date, its round asked what to write (unless the simulation's
    /// shortcut knows it asks nothing), each entry written in turn until
    /// one cannot be.
    pub(super) fn conduct(&mut self, li: usize) {
        let now = self.now;
        let no_rollback = self.variant.no_rollback;
        let node = &mut self.nodes[li];
        let mono = node.clock.mono(now);
        let term = node.raft.term();
        node.conducting.prepare(term, &node.state, mono);
        // The round's own shortcut, taken here before the inputs are built.
        if switchover::idle(&node.state) {
            return;
        }
        let inputs = node
            .conducting
            .inputs(&node.core, &node.state, node.applied, node.reports_seen, mono);
        if node.conducting.still_quiet(&inputs, mono) {
            return;
        }
        let mut round = node
            .conducting
            .round(inputs, term, &node.core, &node.state, mono, &self.config, now);
        if no_rollback {
            round
                .commands
                .retain(|c| !matches!(c, Command::RollbackSwitchover { .. }));
        }
        let mut wrote = false;
        for command in round.commands.clone() {
            let what = describe(&command);
            match self.write(li, command.clone()) {
                Ok(len) => {
                    self.nodes[li].conducting.written(&round, &command, mono, &self.config);
                    self.log(format!("leader node {}: {what} (entry {len})", li + 1));
                    wrote = true;
                }
                Err(None) => break,
                Err(Some(r)) => {
                    self.report.rejected_switchover_entries += 1;
                    self.log(format!("leader node {}: {what} REJECTED: {r}", li + 1));
                    // Dropping rollbacks leaves the conductor's later
                    // entries out of step: expected there.
                    if !no_rollback && self.violation.is_none() {
                        self.violation = Some(format!("the conductor's entry was refused: {what}: {r}"));
                    }
                    break;
                }
            }
        }
        if wrote {
            self.broadcast_append(li);
        }
    }

    /// Writes `command` as leader `li`: only with a quorum (`Err(None)`),
    /// and only if the state machine takes it (the leader's state is the
    /// whole log); then it is committed, and applied on the leader. The
    /// new entry's length of log.
    pub(super) fn write(&mut self, li: usize, command: Command) -> Result<usize, Option<Rejection>> {
        if !self.quorum_ok(li) {
            return Err(None);
        }
        self.nodes[li].state.check(&command).map_err(Some)?;
        let request = Request {
            at_ms: self.now,
            command,
        };
        let _ = self.log_state.apply(&request);
        let term = self.nodes[li].raft.term();
        if let Err(what) = self.stuck.entry(self.now, term, &request.command, &self.log_state) {
            self.violation.get_or_insert(what);
        }
        self.count_entry(&request.command);
        self.log.push(Some(request));
        let len = self.log.len();
        let now = self.now;
        self.nodes[li].catch_up(&self.log, len, now);
        Ok(len)
    }

    /// Counts a written entry, and gives an armed fault its attempt.
    pub(super) fn count_entry(&mut self, command: &Command) {
        let kind = match command {
            Command::BeginSwitchover { .. } => "begin",
            Command::AdvanceSwitchover { .. } => "advance",
            Command::CompleteSwitchover { .. } => "complete",
            Command::RollbackSwitchover { .. } => "rollback",
            Command::Drain { .. } => "drain",
            Command::SetNodeMode {
                mode: NodeMode::Drained,
                ..
            } => "drained",
            Command::SetNodeMode { .. } => "undrain",
            Command::Rebalance { .. } => "rebalance",
            Command::RebalanceDone { .. } => "rebalance done",
            Command::Failover {
                reason: Reason::Operator,
                ..
            } => "forced failover",
            Command::ClearDirty { .. } => "clear dirty",
            Command::EndStopDrain { .. } => "end stop drain",
            _ => return,
        };
        *self.report.entries.entry(kind).or_default() += 1;
        if self.now >= HEALED_BY {
            return;
        }
        let (store, wedges) = match command {
            Command::BeginSwitchover {
                store, force: false, ..
            } if self.armed_flush => {
                self.armed_flush = false;
                (store, &mut self.wedges.flush)
            }
            Command::AdvanceSwitchover { store, .. } if self.armed_start => {
                self.armed_start = false;
                (store, &mut self.wedges.start)
            }
            _ => return,
        };
        let epoch = self.log_state.stores.get(store).map_or(0, |s| s.epoch);
        wedges.insert((store.clone(), epoch));
        self.report.broken_attempts += 1;
        let line = format!("store {store}: this attempt (epoch {epoch}) will fail on its node");
        self.log(line);
    }
}

/// A switchover entry in a line of the trace.
pub(super) fn describe(command: &Command) -> String {
    match command {
        Command::BeginSwitchover {
            store,
            epoch,
            to,
            force,
            reason,
        } => {
            let forced = if *force { ", forced" } else { "" };
            format!("begin switchover of {store} (epoch {epoch}) to node {to} ({reason}{forced})")
        }
        Command::AdvanceSwitchover { store, epoch } => format!("advance {store} (epoch {epoch}): promoting"),
        Command::CompleteSwitchover { store, epoch } => format!("complete {store} (epoch {epoch})"),
        Command::RollbackSwitchover { store, epoch, why } => format!("roll back {store} (epoch {epoch}): {why}"),
        Command::Drain {
            node,
            concurrency,
            on_stop,
        } => format!("drain node {node}, {concurrency} at a time (on stop: {on_stop})"),
        Command::SetNodeMode { node, mode } => format!("node {node} {mode:?}"),
        Command::Rebalance { concurrency } => format!("rebalance, {concurrency} at a time"),
        Command::RebalanceDone { .. } => "rebalance done".into(),
        Command::Failover { reason, moves } => format!("failover ({reason}) {moves:?}"),
        other => format!("{other:?}"),
    }
}
