//! The switchover conductor's rules (DESIGN "Controlled switchover, drain,
//! undrain, rebalance"): which log entry moves each switchover on, when one
//! rolls back, and which switchovers a drain or a rebalance begins next.
//!
//! Pure: the leader's engine (through `conductor`) and the simulation call
//! the very same functions with what the leader knows — who is down, the phases each
//! node acked in its health report, backlogs, and how long this leader has
//! seen each store in its phase.
//!
//! A switchover, per store, each step a log entry:
//! `Stable` → (Begin) → `Demoting` → the old master releases the master IP,
//! flushes and stops, and acks → (Advance) → `Promoting` → the new master
//! binds, announces, starts as master, and acks → (Complete) → `Stable`.
//! A phase that does not finish in time, or whose target goes down, rolls
//! back (`RollbackSwitchover`); a node that dies is the failover engine's,
//! which ends the switchover with its failover.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use slotd_raft_store::{ClusterState, Command, Move, NodeId, NodeMode, Phase, Reason, Rejection, Request, Store};

use super::decide::{check_switchover_target, rebalance_moves, switchover_target, RebalanceOptions, Reports};
use super::LeaderCore;
use crate::report::{replay_digest, Replayed};
use crate::time::Mono;
use crate::timing::{SwitchoverConfig, MAX_COOLING, RETRY_AFTER};

/// The conductor's timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchoverTiming {
    /// `Demoting` must be acked within this (`switchover.demote_timeout_ms`).
    pub demote: Duration,
    /// `Promoting` must be acked within this (`switchover.promote_timeout_ms`).
    pub promote: Duration,
    /// After a rollback, a drain tries the store again only this much later.
    pub retry_after: Duration,
}

impl SwitchoverTiming {
    pub fn of(c: &SwitchoverConfig) -> SwitchoverTiming {
        SwitchoverTiming {
            demote: c.demote_timeout(),
            promote: c.promote_timeout(),
            retry_after: RETRY_AFTER,
        }
    }
}

/// What the leader knows beside the log.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Nodes the leader counts as down (see `LeaderCore::down`).
    pub down: BTreeSet<NodeId>,
    /// Phases each node acked in its last health report: store → epoch.
    pub done: BTreeMap<NodeId, BTreeMap<String, u64>>,
    /// Backlogs as masters reported them.
    pub reports: Reports,
    /// A replica further behind gets no master (unless forced).
    pub max_backlog: u64,
    /// Default switchovers at a time of a drain that names none.
    pub drain_concurrency: u32,
    /// Stores a drain must not begin now (rolled back recently).
    pub cooling: BTreeSet<String>,
    /// Stores this rebalance gave up on (one of its switchovers rolled back).
    pub given_up: BTreeSet<String>,
    /// This leadership has settled (see `LeaderCore::settled`): before, a
    /// dead node cannot be told from one not heard yet, so no new
    /// switchover begins (those under way go on).
    pub settled: bool,
    /// Stores each node, as a replica, has settled its leftovers of (its
    /// instance runs as replica at this epoch): store → epoch.
    pub clean: BTreeMap<NodeId, BTreeMap<String, u64>>,
    /// Leftover sync logs dirty nodes offer for a replay: store → log.
    pub leftovers: BTreeMap<NodeId, BTreeMap<String, String>>,
    /// Replays masters ran: store → outcome.
    pub replayed: BTreeMap<NodeId, BTreeMap<String, Replayed>>,
    /// Unix ms, for the entries' stamps (history durations).
    pub now_ms: u64,
}

impl Facts {
    /// What the leader's core knows at `now` (the engine, the operator
    /// commands and the simulation build them here, the one way); cooling
    /// and given-up stores are the engine's own memory, left empty.
    pub fn of(core: &LeaderCore, state: &ClusterState, now: Mono, config: &SwitchoverConfig, now_ms: u64) -> Facts {
        let (leftovers, replayed) = core.leftovers();
        Facts {
            down: state.nodes.keys().copied().filter(|n| core.down(*n, now)).collect(),
            done: core.acks(),
            clean: core.clean(),
            leftovers,
            replayed,
            settled: core.settled(now),
            reports: core.backlog(state),
            max_backlog: config.max_backlog_bytes,
            drain_concurrency: config.drain_concurrency,
            now_ms,
            ..Facts::default()
        }
    }

    fn live(&self, state: &ClusterState) -> BTreeSet<NodeId> {
        state.nodes.keys().copied().filter(|n| !self.down.contains(n)).collect()
    }

    fn acked(&self, node: NodeId, store: &Store) -> bool {
        self.done
            .get(&node)
            .and_then(|d| d.get(&store.name))
            .is_some_and(|e| *e == store.epoch)
    }
}

/// What the leader remembers of switchovers while it leads one term (the
/// engine and the simulation both keep one): phase clocks, cooling after
/// rollbacks, and the stores the rebalance under way is done with. A new
/// term, or a new process, starts afresh.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    term: Option<u64>,
    /// Rollbacks per store (cooling doubles with each: 5 s, 10 s, … 5 min).
    rollbacks: BTreeMap<String, u32>,
    /// When this leadership first saw each store in its current phase and
    /// epoch.
    seen: BTreeMap<String, (u64, Mono)>,
    /// Stores rolled back, and until when a drain leaves them alone.
    cooling: BTreeMap<String, Mono>,
    /// Stores the rebalance under way is done with (moved, or rolled back):
    /// it plans again without them, so it can neither flap nor retry.
    given_up: BTreeSet<String>,
}

impl Memory {
    /// At the start of a round at `now`, leading `term`: the phase clocks
    /// follow the state, cooling runs out, a rebalance over forgets.
    pub fn prepare(&mut self, term: u64, state: &ClusterState, now: Mono) {
        if self.term != Some(term) {
            *self = Memory {
                term: Some(term),
                ..Memory::default()
            };
        }
        self.cooling.retain(|_, until| now < *until);
        self.seen.retain(|name, (epoch, _)| {
            state
                .stores
                .get(name)
                .is_some_and(|s| s.epoch == *epoch && s.phase.switchover().is_some())
        });
        for s in state.stores.values().filter(|s| s.phase.switchover().is_some()) {
            self.seen.entry(s.name.clone()).or_insert((s.epoch, now));
        }
        if state.rebalance.is_none() {
            self.given_up.clear();
        }
    }

    /// `base` (`Facts::of`) with this memory's cooling and given-up stores.
    pub fn facts(&self, base: Facts) -> Facts {
        Facts {
            cooling: self.cooling.keys().cloned().collect(),
            given_up: self.given_up.clone(),
            ..base
        }
    }

    /// How long this leadership has seen `store` in its phase.
    pub fn age(&self, store: &Store, now: Mono) -> Duration {
        self.seen
            .get(&store.name)
            .map_or(Duration::ZERO, |(_, t)| now.since(*t))
    }

    /// When this leadership first saw `store` in its phase, if it is in one.
    pub fn seen(&self, store: &str) -> Option<Mono> {
        self.seen.get(store).map(|(_, t)| *t)
    }

    /// `command` was written at `now`; `rebalancing`: the stores whose
    /// switchover was the rebalance's when the round began. Returns, for a
    /// rollback, how long a drain now leaves the store alone.
    pub fn written(
        &mut self,
        command: &Command,
        rebalancing: &BTreeSet<String>,
        now: Mono,
        timing: &SwitchoverTiming,
    ) -> Option<Duration> {
        match command {
            Command::RollbackSwitchover { store, .. } => {
                // Each rollback of the same store doubles the wait: a target
                // that keeps failing costs an outage now and then, not every
                // few seconds.
                let n = self.rollbacks.entry(store.clone()).or_default();
                *n += 1;
                let wait = (timing.retry_after * 2u32.saturating_pow(*n - 1)).min(MAX_COOLING);
                self.cooling.insert(store.clone(), now + wait);
                if rebalancing.contains(store) {
                    self.given_up.insert(store.clone());
                }
                Some(wait)
            }
            Command::CompleteSwitchover { store, .. } if rebalancing.contains(store) => {
                self.given_up.insert(store.clone());
                None
            }
            _ => None,
        }
    }
}

/// What holds for a store in a phase, the most important first (see
/// [`event`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    /// The old master is down: the failover engine moves the store.
    OldMasterDown,
    /// The new master is down.
    TargetDown,
    /// The new master was drained or removed.
    TargetUnavailable,
    /// The old master acked `Demoting` at this epoch.
    OldMasterDone,
    /// The new master acked `Promoting` at this epoch.
    NewMasterDone,
    /// The phase has lasted longer than its timeout.
    TimedOut,
    /// Nothing yet.
    Nothing,
}

pub const EVENTS: [Event; 7] = [
    Event::OldMasterDown,
    Event::TargetDown,
    Event::TargetUnavailable,
    Event::OldMasterDone,
    Event::NewMasterDone,
    Event::TimedOut,
    Event::Nothing,
];

/// Why a switchover rolls back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    DemoteTimedOut(Duration),
    PromoteTimedOut(Duration),
    TargetDown,
    TargetUnavailable,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::DemoteTimedOut(t) => write!(f, "the old master did not finish demoting within {t:?}"),
            Why::PromoteTimedOut(t) => write!(f, "the new master did not serve within {t:?}"),
            Why::TargetDown => f.write_str("the new master is down"),
            Why::TargetUnavailable => f.write_str("the new master is no longer active"),
        }
    }
}

/// The leader's answer to an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to write (yet).
    Wait,
    /// `AdvanceSwitchover`: the new master takes over.
    Advance,
    /// `CompleteSwitchover`: done.
    Complete,
    /// `RollbackSwitchover`.
    Rollback(Why),
}

/// The phase machine: what the leader writes for `event` in `phase`.
pub fn on(phase: &Phase, event: Event, timing: &SwitchoverTiming) -> Step {
    match (phase, event) {
        (Phase::Stable, _) => Step::Wait,
        // A dead master is failed over (without a flush, marked dirty): a
        // rollback would hand the store back to a dead node.
        (Phase::Demoting { .. }, Event::OldMasterDown) => Step::Wait,
        (Phase::Demoting { .. }, Event::TargetDown) => Step::Rollback(Why::TargetDown),
        (Phase::Demoting { .. }, Event::TargetUnavailable) => Step::Rollback(Why::TargetUnavailable),
        (Phase::Demoting { .. }, Event::OldMasterDone) => Step::Advance,
        (Phase::Demoting { .. }, Event::TimedOut) => Step::Rollback(Why::DemoteTimedOut(timing.demote)),
        (Phase::Demoting { .. }, Event::NewMasterDone | Event::Nothing) => Step::Wait,
        // The new master is master now: if it dies, the failover engine
        // moves the store (and marks it dirty: it may have taken mail).
        (Phase::Promoting { .. }, Event::TargetDown) => Step::Wait,
        (Phase::Promoting { .. }, Event::NewMasterDone) => Step::Complete,
        // Not serving in time: switch back (the new master demotes first).
        (Phase::Promoting { .. }, Event::TimedOut) => Step::Rollback(Why::PromoteTimedOut(timing.promote)),
        // It already holds the master: a drain begun meanwhile moves it on
        // afterwards, the old master's fate no longer matters here.
        (
            Phase::Promoting { .. },
            Event::OldMasterDown | Event::TargetUnavailable | Event::OldMasterDone | Event::Nothing,
        ) => Step::Wait,
    }
}

/// The event that decides a store's next step now: the first of [`Event`]'s
/// order that holds. `age` is how long this leader has seen the store in
/// its phase at this epoch.
pub fn event(state: &ClusterState, store: &Store, facts: &Facts, age: Duration, timing: &SwitchoverTiming) -> Event {
    let Some((from, to)) = store.phase.switchover() else {
        return Event::Nothing;
    };
    let demoting = matches!(store.phase, Phase::Demoting { .. });
    let limit = if demoting { timing.demote } else { timing.promote };
    let target_mode = state.nodes.get(&to).map(|n| n.mode);
    if facts.down.contains(&from) {
        Event::OldMasterDown
    } else if facts.down.contains(&to) {
        Event::TargetDown
    } else if target_mode.is_none_or(|m| m == NodeMode::Drained) {
        // (A draining target still takes it: it may be the old master of a
        // rolled-back attempt going home; a drain moves it on afterwards.)
        Event::TargetUnavailable
    } else if demoting && facts.acked(from, store) {
        Event::OldMasterDone
    } else if !demoting && facts.acked(to, store) {
        Event::NewMasterDone
    } else if age > limit {
        Event::TimedOut
    } else {
        Event::Nothing
    }
}

/// Everything the leader should write now, in order: the next step of every
/// switchover under way, then new switchovers of drains and the rebalance
/// (each target chosen on the state as the earlier entries leave it; none
/// before the leadership settled), then the end of drains (`Drained`) and
/// of the rebalance, and the dirty marks of nodes that settled their
/// leftovers. Every command is one the state machine accepts against the
/// state as the earlier ones leave it.
pub fn conduct(
    state: &ClusterState,
    facts: &Facts,
    age: &dyn Fn(&Store) -> Duration,
    timing: &SwitchoverTiming,
) -> Vec<Command> {
    // Nearly every round on a healthy cluster: nothing to copy the state for.
    if idle(state) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut scratch = state.clone();
    // Rolled back in this round: not begun again in it.
    let mut cooling = facts.cooling.clone();
    let push = |scratch: &mut ClusterState, out: &mut Vec<Command>, c: Command| {
        let applied = scratch.apply(&Request {
            at_ms: facts.now_ms,
            command: c.clone(),
        });
        if applied.is_applied() {
            out.push(c);
        }
    };

    for store in state.stores.values() {
        let ev = event(state, store, facts, age(store), timing);
        let (name, epoch) = (store.name.clone(), store.epoch);
        let command = match on(&store.phase, ev, timing) {
            Step::Wait => continue,
            Step::Advance => Command::AdvanceSwitchover { store: name, epoch },
            Step::Complete => Command::CompleteSwitchover { store: name, epoch },
            Step::Rollback(why) => {
                cooling.insert(name.clone());
                Command::RollbackSwitchover {
                    store: name,
                    epoch,
                    why: why.to_string(),
                }
            }
        };
        push(&mut scratch, &mut out, command);
    }

    // A dirty node that runs as the store's replica again has set its
    // leftovers aside (the driver does so before it starts a replica).
    for store in state.stores.values() {
        for node in &store.dirty {
            let settled = facts
                .clean
                .get(node)
                .and_then(|c| c.get(&store.name))
                .is_some_and(|e| *e == store.epoch);
            if settled && *node != store.master {
                let clear = Command::ClearDirty {
                    store: store.name.clone(),
                    node: *node,
                };
                push(&mut scratch, &mut out, clear);
            }
        }
    }

    // Leftover sync logs: a dirty replica's goes into the log for the
    // master to replay; the master's outcome ends it (and, replayed, the
    // dirty mark).
    for store in state.stores.values() {
        match &store.replay {
            Some(pending) => {
                let outcome = facts
                    .replayed
                    .get(&store.master)
                    .and_then(|r| r.get(&store.name))
                    .filter(|o| o.from == pending.from && o.digest == replay_digest(&pending.log));
                if let Some(o) = outcome {
                    let done = Command::ReplayDone {
                        store: store.name.clone(),
                        from: o.from,
                        ok: o.ok,
                        note: o.note.clone(),
                    };
                    push(&mut scratch, &mut out, done);
                }
            }
            None => {
                let offer = store
                    .dirty
                    .iter()
                    .filter(|n| **n != store.master && !store.replay_failed.contains(n))
                    .find_map(|n| {
                        facts
                            .leftovers
                            .get(n)
                            .and_then(|l| l.get(&store.name))
                            .map(|log| (*n, log))
                    });
                if let Some((from, log)) = offer {
                    let replay = Command::Replay {
                        store: store.name.clone(),
                        from,
                        log: log.clone(),
                    };
                    push(&mut scratch, &mut out, replay);
                }
            }
        }
    }

    if !facts.settled {
        return out;
    }
    let live = facts.live(state);
    // Drains: the draining node's masters, a few at a time.
    let draining: Vec<(NodeId, u32, bool)> = state
        .nodes
        .values()
        .filter(|n| n.mode == NodeMode::Draining)
        .map(|n| {
            let job = n.drain;
            (
                n.id,
                job.map_or(facts.drain_concurrency, |j| j.concurrency),
                job.is_some_and(|j| j.on_stop),
            )
        })
        .collect();
    for (node, concurrency, on_stop) in draining {
        // A node that is down is the failover engine's.
        if facts.down.contains(&node) {
            continue;
        }
        let reason = if on_stop { Reason::Stop } else { Reason::Operator };
        let candidates: Vec<String> = scratch
            .masters_of(node)
            .filter(|s| s.phase == Phase::Stable && !cooling.contains(&s.name))
            .map(|s| s.name.clone())
            .collect();
        for name in candidates {
            if scratch.leaving(node).count() >= concurrency as usize {
                break;
            }
            let Some(store) = scratch.stores.get(&name) else {
                continue;
            };
            let Ok(to) = switchover_target(&scratch, store, &live, &facts.reports, Some(facts.max_backlog)) else {
                continue;
            };
            let begin = Command::BeginSwitchover {
                store: name,
                epoch: store.epoch,
                to,
                force: false,
                reason,
            };
            push(&mut scratch, &mut out, begin);
        }
        let busy = scratch.masters_of(node).next().is_some()
            || scratch
                .stores
                .values()
                .any(|s| s.phase.switchover().is_some_and(|(f, t)| f == node || t == node));
        if !busy {
            let drained = Command::SetNodeMode {
                node,
                mode: NodeMode::Drained,
            };
            push(&mut scratch, &mut out, drained);
        }
    }

    // The rebalance: its plan, made again each time on the state as the
    // switchovers under way will leave it.
    if let Some(job) = scratch.rebalance {
        let concurrency = job.concurrency;
        let running = scratch
            .stores
            .values()
            .filter(|s| s.phase.reason() == Some(Reason::Rebalance))
            .count();
        let moves: Vec<Move> = planned_rebalance(&scratch, &live, facts)
            .into_iter()
            .filter(|m| !cooling.contains(&m.store))
            .collect();
        let free = (concurrency as usize).saturating_sub(running);
        for m in moves.iter().take(free) {
            let begin = Command::BeginSwitchover {
                store: m.store.clone(),
                epoch: m.epoch,
                to: m.to,
                force: false,
                reason: Reason::Rebalance,
            };
            push(&mut scratch, &mut out, begin);
        }
        if moves.is_empty() && running == 0 {
            push(&mut scratch, &mut out, Command::RebalanceDone { seq: job.seq });
        }
    }
    out
}

/// Whether `conduct` has nothing to look at in `state`: no switchover under
/// way, no dirty mark (nor so a replay), no node draining, no rebalance.
pub fn idle(state: &ClusterState) -> bool {
    state.rebalance.is_none()
        && state.nodes.values().all(|n| n.mode != NodeMode::Draining)
        && state
            .stores
            .values()
            .all(|s| s.phase == Phase::Stable && s.dirty.is_empty())
}

/// The stores whose switchover under way is the rebalance's (a round's
/// `Memory::written` needs them as they were when it began).
pub fn rebalancing(state: &ClusterState) -> BTreeSet<String> {
    state
        .stores
        .values()
        .filter(|s| s.phase.reason() == Some(Reason::Rebalance))
        .map(|s| s.name.clone())
        .collect()
}

/// The moves a rebalance makes next: `decide::rebalance_moves` on the state
/// as the switchovers under way leave it, without the stores it gave up on.
pub fn planned_rebalance(state: &ClusterState, live: &BTreeSet<NodeId>, facts: &Facts) -> Vec<Move> {
    let mut projected = state.clone();
    for s in projected.stores.values_mut() {
        if let Phase::Demoting { to, .. } = s.phase {
            s.master = to;
        }
    }
    // Unlike an operator's switchover (bounded lag, flushed), a rebalance
    // is never urgent: it waits for a replica with nothing left to send.
    let options = RebalanceOptions { max_backlog_bytes: 0 };
    rebalance_moves(&projected, live, &facts.reports, &options)
        .into_iter()
        .filter(|m| !facts.given_up.contains(&m.store) && !facts.cooling.contains(&m.store))
        .collect()
}

/// The rebalance as `slotctl rebalance --dry-run` shows it: every move it
/// would make from the state now.
pub fn rebalance_plan(state: &ClusterState, facts: &Facts) -> Vec<Move> {
    planned_rebalance(state, &facts.live(state), facts)
}

/// The command `slotctl failover STORE [--to NODE] [--force]` writes, or
/// why it is refused (nothing is written then):
/// - a `BeginSwitchover` (two phases, with a flush unless `force`);
/// - with `force` and a master that is down, a `Failover` at once (the
///   master's lease is over; it is marked dirty).
pub fn failover_command(
    state: &ClusterState,
    facts: &Facts,
    store: &str,
    to: Option<NodeId>,
    force: bool,
) -> Result<Command, Rejection> {
    let s = state
        .stores
        .get(store)
        .ok_or_else(|| Rejection::UnknownStore(store.to_owned()))?;
    if let Some((_, target)) = s.phase.switchover() {
        return Err(Rejection::SwitchoverRunning {
            store: s.name.clone(),
            to: state.node_name(target),
            phase: s.phase.to_string(),
        });
    }
    let live = facts.live(state);
    let bound = (!force).then_some(facts.max_backlog);
    let to = match to {
        Some(to) => {
            check_switchover_target(state, s, to, &live, &facts.reports, bound)?;
            to
        }
        None => switchover_target(state, s, &live, &facts.reports, bound)?,
    };
    if facts.down.contains(&s.master) {
        if !force {
            return Err(Rejection::MasterDown {
                store: s.name.clone(),
                node: state.node_name(s.master),
            });
        }
        return Ok(Command::Failover {
            reason: Reason::Operator,
            moves: vec![Move {
                store: s.name.clone(),
                epoch: s.epoch,
                to,
            }],
        });
    }
    Ok(Command::BeginSwitchover {
        store: s.name.clone(),
        epoch: s.epoch,
        to,
        force,
        reason: Reason::Operator,
    })
}

/// The stores of `node` a drain cannot move anywhere (no live, active
/// replica that is clean for them), with why — a drain is refused for them,
/// and a stop says so and fences them. A lagging replica does not strand a
/// store: the drain waits for it to catch up.
pub fn stranded(state: &ClusterState, facts: &Facts, node: NodeId) -> Vec<(String, Rejection)> {
    let live = facts.live(state);
    state
        .masters_of(node)
        .filter(|s| s.phase == Phase::Stable)
        .filter_map(|s| {
            switchover_target(state, s, &live, &facts.reports, None)
                .err()
                .map(|e| (s.name.clone(), e))
        })
        .collect()
}

#[cfg(test)]
mod tests;
