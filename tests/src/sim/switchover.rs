//! Controlled switchovers in the simulation: the leader's conductor (the
//! agent's own `Conductor`, whose rounds run here as in the engine) with the
//! simulation's shortcut beside it, and the operators' seeded schedule of
//! commands.
//!
//! The rules themselves — `switchover::{conduct, failover_command,
//! stranded, rebalance_plan}` — and the facts they are given
//! (`Facts::of`) are the agent's, called as they are.

use std::collections::BTreeSet;
use std::time::Duration;

use slotd_core::leader::conductor::{Conductor, Round};
use slotd_core::leader::switchover::{Facts, SwitchoverTiming};
use slotd_core::leader::LeaderCore;
use slotd_core::time::Mono;
use slotd_core::timing::SwitchoverConfig;
use slotd_raft_store::{ClusterState, Command, NodeId, Phase};

use super::rng::Rng;
use super::timing::{FAULTS_FROM, FAULTS_UNTIL};

/// What the engine keeps while it leads: the agent's own [`Conductor`],
/// plus the simulation's shortcut (the inputs of the last round that
/// answered nothing).
#[derive(Clone, Debug, Default)]
pub struct Conducting {
    conductor: Conductor,
    /// The simulation's, not the engine's: the inputs of the last round
    /// that answered nothing, and until when that answer holds.
    quiet: Option<(Inputs, Mono)>,
}

/// What a round's answer depends on, but for the phase clocks: the state
/// (by how much of the log is applied), the reports the core holds (by how
/// often one changed: acks, backlogs, settled leftovers), who is down,
/// whether the leadership has settled, what is cooling or given up. The
/// stamp in `Facts::now_ms` only dates history entries, never changes a
/// command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inputs {
    applied: usize,
    reports: u64,
    down: BTreeSet<NodeId>,
    settled: bool,
    cooling: BTreeSet<String>,
    given_up: BTreeSet<String>,
}

impl Conducting {
    /// The conductor's memory brought up to date at `now`, leading `term`
    /// (as a round begins), so that the shortcut sees what the round would.
    pub fn prepare(&mut self, term: u64, state: &ClusterState, now: Mono) {
        self.conductor.prepare(term, state, now);
    }

    /// A round's inputs now (see [`Inputs`]).
    pub fn inputs(&self, core: &LeaderCore, state: &ClusterState, applied: usize, reports: u64, now: Mono) -> Inputs {
        let mine = self.conductor.memory().facts(Facts::default());
        Inputs {
            applied,
            reports,
            down: state.nodes.keys().copied().filter(|n| core.down(*n, now)).collect(),
            settled: core.settled(now),
            cooling: mine.cooling,
            given_up: mine.given_up,
        }
    }

    /// Whether a round would answer nothing now: one did with these very
    /// inputs, and no phase has run past its timeout since (a round is
    /// pure; the simulation skips such rounds, which copy the state — the
    /// engine runs them).
    pub fn still_quiet(&self, inputs: &Inputs, now: Mono) -> bool {
        self.quiet
            .as_ref()
            .is_some_and(|(i, until)| i == inputs && now <= *until)
    }

    /// The engine's round (`Conductor::round`), remembered as quiet when it
    /// asks for nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn round(
        &mut self,
        inputs: Inputs,
        term: u64,
        core: &LeaderCore,
        state: &ClusterState,
        now: Mono,
        config: &SwitchoverConfig,
        now_ms: u64,
    ) -> Round {
        let round = self.conductor.round(term, core, state, now, config, now_ms);
        self.quiet = None;
        if round.commands.is_empty() {
            let timing = SwitchoverTiming::of(config);
            // A phase times out once its age exceeds its limit.
            let until = state
                .stores
                .values()
                .filter_map(|s| {
                    let since = self.conductor.memory().seen(&s.name)?;
                    let limit = match s.phase {
                        Phase::Demoting { .. } => timing.demote,
                        Phase::Promoting { .. } => timing.promote,
                        Phase::Stable => return None,
                    };
                    Some(since + limit)
                })
                .min();
            let until = until.unwrap_or_else(|| Mono::from_origin(Duration::MAX));
            self.quiet = Some((inputs, until));
        }
        round
    }

    /// `command` of `round` was written at `now` (`Conductor::written`).
    pub fn written(&mut self, round: &Round, command: &Command, now: Mono, config: &SwitchoverConfig) {
        self.conductor.written(round, command, now, config);
    }
}

/// Whether a node is part of a switchover under way (leaving or taking).
pub fn involved(state: &ClusterState, node: NodeId) -> bool {
    state
        .stores
        .values()
        .any(|s| s.phase.switchover().is_some_and(|(f, t)| f == node || t == node))
}

/// The `--to` of an operator's failover, drawn ahead.
#[derive(Clone, Copy, Debug)]
pub enum To {
    /// None: the leader picks.
    Auto,
    /// The store's other slot (a valid target, unless down, draining…).
    Replica,
    /// Any node (often not a slot of the store: refused).
    Any(u64),
}

/// An operator's command, drawn ahead; the raw picks (`store`, `node`) are
/// resolved against the state when it runs.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// `slotctl failover STORE [--to NODE] [--force]`.
    Failover { store: u64, to: To, force: bool },
    /// `slotctl drain NODE --concurrency N`, or a stopping agent's own
    /// drain (`on_stop`).
    Drain { node: u64, concurrency: u32, on_stop: bool },
    /// `slotctl undrain NODE` (a node not active, if there is one).
    Undrain { node: u64 },
    /// `slotctl rebalance --concurrency N`.
    Rebalance { concurrency: u32 },
}

impl Op {
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Failover { force: false, .. } => "failover",
            Op::Failover { force: true, .. } => "forced failover",
            Op::Drain { on_stop: false, .. } => "drain",
            Op::Drain { on_stop: true, .. } => "stop drain",
            Op::Undrain { .. } => "undrain",
            Op::Rebalance { .. } => "rebalance",
        }
    }
}

/// The operators' commands of one seed, in `FAULTS_FROM..FAULTS_UNTIL`: on
/// half the seeds a maintenance (drain a node, undrain it 3–12 s later,
/// rebalance 0.5–5 s after that), and 0–4 failovers, 0–1 more drain,
/// undrain and rebalance at random times: at most 10. Without
/// `rebalances`, the same draws, and no rebalance ordered.
pub fn schedule(rng: &mut Rng, rebalances: bool) -> Vec<(u64, Op)> {
    let mut ops = Vec::new();
    let concurrency = |rng: &mut Rng| rng.range(1, 8) as u32;
    if rng.chance(0.5) {
        let node = rng.next_u64();
        let drain = rng.range(FAULTS_FROM, 20_000);
        let undrain = drain + rng.range(3_000, 12_000);
        let rebalance = (undrain + rng.range(500, 5_000)).min(FAULTS_UNTIL);
        ops.push((
            drain,
            Op::Drain {
                node,
                concurrency: concurrency(rng),
                on_stop: rng.chance(0.3),
            },
        ));
        ops.push((undrain, Op::Undrain { node }));
        ops.push((
            rebalance,
            Op::Rebalance {
                concurrency: concurrency(rng),
            },
        ));
    }
    for _ in 0..rng.range(0, 4) {
        let to = match rng.index(3) {
            0 => To::Auto,
            1 => To::Replica,
            _ => To::Any(rng.next_u64()),
        };
        let op = Op::Failover {
            store: rng.next_u64(),
            to,
            force: rng.chance(0.2),
        };
        ops.push((rng.range(FAULTS_FROM, FAULTS_UNTIL), op));
    }
    if rng.chance(0.4) {
        let op = Op::Drain {
            node: rng.next_u64(),
            concurrency: concurrency(rng),
            on_stop: rng.chance(0.3),
        };
        ops.push((rng.range(FAULTS_FROM, FAULTS_UNTIL), op));
    }
    if rng.chance(0.3) {
        ops.push((
            rng.range(FAULTS_FROM, FAULTS_UNTIL),
            Op::Undrain { node: rng.next_u64() },
        ));
    }
    if rng.chance(0.3) {
        let op = Op::Rebalance {
            concurrency: concurrency(rng),
        };
        ops.push((rng.range(FAULTS_FROM, FAULTS_UNTIL), op));
    }
    if !rebalances {
        ops.retain(|(_, op)| !matches!(op, Op::Rebalance { .. }));
    }
    ops
}
