//! The step loop: faults and operators' commands, the machines' lifecycle
//! (watchdog kills, `slotd fence`, restarts), message delivery, each node's
//! Raft, leader work (failure detector, then the switchover conductor) and
//! agent, then the checkers — every `STEP` ms of true time, all in a
//! deterministic order so a seed replays exactly. One section a file:
//! `faults`, `operators`, `lifecycle`, `delivery`, `elections`, `leader`,
//! `agent`, `progress`; the world itself, a seed's run and its step here.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use slotd_core::leader::switchover::{self, failover_command, rebalance_plan, stranded, Facts};
use slotd_core::leader::Decision;
use slotd_core::node::watchdog;
use slotd_core::time::Mono;
use slotd_core::timing::SwitchoverConfig;
use slotd_raft_store::plan::{plan, Naming};
use slotd_raft_store::{ClusterState, Command, NodeId, NodeMode, Phase, Reason, Rejection, Request};

use super::checker::{drain_resting, Checker, Stuck};
use super::clock::{to_mono, Clock};
use super::network::{Msg, Network};
use super::node::{FenceRun, Node, Wedges};
use super::raft::{Role, Vote};
use super::rng::Rng;
use super::switchover::{self as sw, Op, To};
use super::timing::*;
use super::{SimTiming, Variant};

mod agent;
mod delivery;
mod elections;
mod faults;
mod leader;
mod lifecycle;
mod operators;
mod progress;

/// A fault of the schedule.
#[derive(Clone, Debug)]
enum Fault {
    /// The agent dies; `power`: the whole machine (IPs and instances gone at
    /// once), else `slotd fence` clears it shortly after and tells the
    /// leader. Restarts after `down`.
    Crash { node: usize, power: bool, down: u64 },
    /// The same, on whoever leads now.
    LeaderCrash { power: bool, down: u64 },
    /// The whole agent hangs for `dur` (SIGSTOP; the watchdog kills it).
    Freeze { node: usize, dur: u64 },
    /// The reconciler alone is stuck for `dur` (the watchdog kills it).
    Stall { node: usize, dur: u64 },
    /// The current leader alone on one side.
    LeaderAlone { dur: u64 },
    /// A random minority cut off.
    Minority { dur: u64 },
    /// Every node in one of three random components.
    Split { dur: u64 },
    /// Message loss `p` for `dur`.
    LossBurst { dur: u64, p: f64 },
    /// The next switchover attempt (begun before `HEALED_BY`, not forced)
    /// fails to flush: the old master's sync client wedges, its demote
    /// fails after `demote_timeout`, at every try of that attempt.
    WedgedFlush,
    /// The next promotion (before `HEALED_BY`) fails: the new master's
    /// Cyrus will not start as master, at every try of that attempt.
    FailedStart,
}

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Fault::Crash { power: true, .. } => "power loss",
            Fault::Crash { power: false, .. } => "agent crash",
            Fault::LeaderCrash { power: true, .. } => "leader power loss",
            Fault::LeaderCrash { power: false, .. } => "leader agent crash",
            Fault::Freeze { .. } => "agent hang",
            Fault::Stall { .. } => "reconciler stall",
            Fault::LeaderAlone { .. } => "leader partitioned alone",
            Fault::Minority { .. } => "minority partition",
            Fault::Split { .. } => "three-way split",
            Fault::LossBurst { .. } => "loss burst",
            Fault::WedgedFlush => "wedged flush",
            Fault::FailedStart => "failed start",
        }
    }
}

#[derive(Clone, Debug)]
enum Event {
    Fault(Fault),
    /// An operator's command, through whoever leads.
    Op(Op),
    /// End of the partition of generation `gen` (a later one replaces it).
    Heal {
        gen: u64,
    },
}

/// What one seed did, for the totals.
#[derive(Clone, Debug, Default)]
pub struct SeedReport {
    pub nodes: usize,
    pub stores: usize,
    pub faults: BTreeMap<&'static str, u64>,
    pub watchdog_kills: u64,
    pub elections: u64,
    /// The longest time without a leader (true ms).
    pub max_leaderless_ms: u64,
    pub failovers: u64,
    pub stores_moved: u64,
    pub rejected_failovers: u64,
    pub notices_accepted: u64,
    pub allowances: u64,
    pub max_overshoot_ms: f64,
    pub master_fences: u64,
    /// Whether the liveness checker ran (realistic clocks).
    pub liveness_checked: bool,
    pub messages: u64,
    pub lost: u64,
    /// Operators' commands by kind: ordered, refused by the rules or the
    /// state machine, skipped (no leader or no quorum).
    pub ops: BTreeMap<&'static str, u64>,
    pub ops_refused: u64,
    pub ops_skipped: u64,
    /// Switchover entries written (by anyone), by what they do.
    pub entries: BTreeMap<&'static str, u64>,
    /// Entries the conductor asked for that the state machine refused.
    pub rejected_switchover_entries: u64,
    /// Switchover attempts a wedged flush or a failed start broke.
    pub broken_attempts: u64,
    /// How long the seed ran (true ms).
    pub ran_ms: u64,
}

/// A broken invariant: which seed, when, what, and the recent trace.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub at: u64,
    pub what: String,
    pub trace: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {}: {} at t={} ms", self.seed, self.what, self.at)?;
        writeln!(f, "trace (last events):")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        write!(
            f,
            "replay: SLOTD_SIM_SEED={} cargo test -p slotd-tests --test simulation -- --nocapture replay",
            self.seed
        )
    }
}

struct World {
    now: u64,
    variant: Variant,
    t: SimTiming,
    /// The `[switchover]` table every agent runs with.
    config: SwitchoverConfig,
    rng: Rng,
    nodes: Vec<Node>,
    voters: Vec<usize>,
    /// The committed log (`None`: a new leader's blank entry) and the state
    /// it makes.
    log: Vec<Option<Request>>,
    log_state: ClusterState,
    net: Network,
    events: BTreeMap<(u64, u64), Event>,
    partition_gen: u64,
    checker: Checker,
    report: SeedReport,
    trace: VecDeque<String>,
    fence_runs: u64,
    leaderless_since: Option<u64>,
    /// Liveness is checked only with realistic clocks (see `World::new`).
    realistic_clocks: bool,
    /// openraft's replication backoff: after an AppendEntries to a peer
    /// fails as unreachable, (leader, peer) → the true time before which
    /// it sends none (500 ms, openraft's default `RaftNetwork::backoff`);
    /// lease renewals are not held back.
    backoff: BTreeMap<(usize, usize), u64>,
    /// The operators' draws (their own stream, so that the fault schedule
    /// of a seed does not depend on them).
    ops_rng: Rng,
    /// Switchover attempts that fail on the machines, and faults armed for
    /// the next attempt.
    wedges: Wedges,
    armed_flush: bool,
    armed_start: bool,
    /// Stuck switchovers, drains, rebalances; from when faults were over
    /// and a leader had settled.
    stuck: Stuck,
    settled_since: Option<u64>,
    /// A broken rule found outside the checkers (a refused operator command
    /// that changed the state, a conductor entry refused).
    violation: Option<String>,
}

const TRACE_LEN: usize = 150;

/// openraft 0.9's default replication backoff after an unreachable peer.
const OPENRAFT_BACKOFF: u64 = 500;

/// Runs one seed to the end; `Err` on the first broken invariant.
pub fn run_seed(seed: u64, variant: Variant) -> Result<SeedReport, Failure> {
    let mut w = World::new(seed, variant).map_err(|what| Failure {
        seed,
        at: 0,
        what,
        trace: Vec::new(),
    })?;
    let fail = |w: &World, what: String| Failure {
        seed,
        at: w.now,
        what,
        trace: w.trace.iter().cloned().collect(),
    };
    // Until `END`; on while switchovers are under way (or a failing action
    // is in flight), then `SETTLE` more; never past `END_MAX`.
    let mut quiet_since: Option<u64> = None;
    loop {
        w.step();
        let ignore = w.variant.ignore_lease;
        if let Err(what) = w.checker.check(w.now, &w.nodes, ignore) {
            return Err(fail(&w, what));
        }
        if w.realistic_clocks {
            let connected = w.connected();
            let lease = w.t.lease;
            if let Err(what) = w
                .checker
                .check_liveness(w.now, &w.nodes, &connected, &w.log_state, lease)
            {
                return Err(fail(&w, what));
            }
        }
        if let Err(what) = w.check_stuck() {
            return Err(fail(&w, what));
        }
        if let Some(what) = w.violation.take() {
            return Err(fail(&w, what));
        }
        w.now += STEP;
        if w.now <= END {
            continue;
        }
        if w.now > END_MAX {
            break;
        }
        if w.switchover_work() || w.wedge_in_flight() {
            quiet_since = None;
            continue;
        }
        if w.now > END + STEP {
            let since = *quiet_since.get_or_insert(w.now);
            if w.now - since < SETTLE {
                continue;
            }
        }
        break;
    }
    w.report.ran_ms = w.now;
    if w.switchover_work() {
        let what = format!("switchovers, a drain or a rebalance still under way at t={}", w.now);
        return Err(fail(&w, what));
    }
    if let Some(n) = w.nodes.iter().find(|n| !n.running()) {
        let what = format!("node {} is still down at the end", n.id);
        return Err(fail(&w, what));
    }
    if w.leader().is_none() {
        return Err(fail(&w, "no leader at the end".into()));
    }
    if let Err(what) = w.checker.check_converged(&w.nodes, &w.log_state) {
        return Err(fail(&w, what));
    }
    if w.report.rejected_failovers > 2 {
        let what = format!("{} failover entries rejected", w.report.rejected_failovers);
        return Err(fail(&w, what));
    }
    w.report.allowances = w.checker.allowances;
    w.report.max_overshoot_ms = w.checker.max_overshoot_ms;
    w.report.master_fences = w.checker.master_fences;
    w.report.liveness_checked = w.realistic_clocks;
    w.report.messages = w.net.sent;
    w.report.lost = w.net.lost;
    Ok(w.report)
}

impl World {
    fn new(seed: u64, variant: Variant) -> Result<World, String> {
        let mut rng = Rng::new(seed);
        let ops_rng = Rng::new(seed ^ 0x0b5e_55ed_0f5e_ed00);
        let t = variant.timing();
        let n = rng.range(3, 7) as usize;
        // Up to 40 slots a machine: 20 masters per node.
        let mut slots = rng.range(4, 40) as usize;
        if n * slots % 2 == 1 {
            slots += 1;
        }
        let voters = match n {
            3 | 4 => n.min(3 + rng.index(2) * (n - 3)),
            _ => [3, 5, n][rng.index(3)],
        };
        let naming = Naming {
            voters,
            ..Naming::default()
        };
        let topology = plan(n, slots).map_err(|e| e.to_string())?.to_topology(&naming);
        let init = Request {
            at_ms: 0,
            command: Command::Init(topology),
        };
        let mut state = ClusterState::default();
        state.apply(&init).into_result().map_err(|e| e.to_string())?;

        // Half the seeds get clocks as bad as the margin allows (safety must
        // hold with them); the others realistic ones (100 ppm), on which
        // liveness is checked too: no lease survives a clock that runs 10 %
        // fast through a change of leader budgeted on the local clock.
        let realistic_clocks = rng.chance(0.5);
        let eps = if realistic_clocks { 1e-4 } else { variant.clock_epsilon };
        let cyrus_start = [0.0, 50.0, 500.0, 1500.0][rng.index(4)];
        let mut nodes = Vec::new();
        for i in 0..n {
            // A third of the clocks sit at the extremes of the bound.
            let rate = match rng.index(6) {
                0 => 1.0 - eps,
                1 => 1.0 + eps,
                _ => 1.0 - eps + 2.0 * eps * rng.unit(),
            };
            let offset = rng.range(0, 1_000_000) as f64;
            let (timeout, phase) = election_draw(&mut rng, &t);
            let mut node = Node::new(i, Clock { offset, rate }, &t, timeout, phase);
            node.cyrus_start = cyrus_start;
            nodes.push(node);
        }
        let loss = [0.0, 0.01, 0.05, 0.1][rng.index(4)];
        let max_delay = [40, 100, 300][rng.index(3)];
        let net = Network::new(n, loss, max_delay);
        let idx_of = |id: NodeId| (id - 1) as usize;
        let checker = Checker::new(&state, idx_of, t.margin);
        let mut w = World {
            now: 0,
            variant,
            t,
            config: variant.switchover(),
            rng,
            nodes,
            voters: (0..voters).collect(),
            log: vec![Some(init)],
            log_state: state.clone(),
            net,
            events: BTreeMap::new(),
            partition_gen: 0,
            checker,
            report: SeedReport {
                nodes: n,
                stores: state.stores.len(),
                ..SeedReport::default()
            },
            trace: VecDeque::new(),
            fence_runs: 0,
            leaderless_since: Some(0),
            realistic_clocks,
            backoff: BTreeMap::new(),
            ops_rng,
            wedges: Wedges::default(),
            armed_flush: false,
            armed_start: false,
            stuck: Stuck::new(t.stuck),
            settled_since: None,
            violation: None,
        };
        w.schedule_faults();
        w.schedule_ops();
        w.log(format!(
            "{n} nodes ({voters} voters), {slots} slots each, {} stores, loss {loss}, max delay {max_delay} ms, \
             Cyrus start {cyrus_start} ms, clock rates {:?}{}",
            state.stores.len(),
            w.nodes
                .iter()
                .map(|x| (x.clock.rate * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>(),
            if w.realistic_clocks {
                " (realistic: liveness checked)"
            } else {
                ""
            }
        ));
        Ok(w)
    }

    fn log(&mut self, line: String) {
        if self.trace.len() >= TRACE_LEN {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("t={:>6} {line}", self.now));
    }

    fn majority(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    fn step(&mut self) {
        self.run_events();
        self.lifecycle();
        self.deliver();
        for i in 0..self.nodes.len() {
            self.raft_step(i);
        }
        for i in 0..self.nodes.len() {
            self.agent_step(i);
        }
        match (self.leader(), self.leaderless_since) {
            (Some(_), Some(since)) => {
                self.report.max_leaderless_ms = self.report.max_leaderless_ms.max(self.now - since);
                self.leaderless_since = None;
            }
            (None, None) => self.leaderless_since = Some(self.now),
            _ => {}
        }
    }

    /// The leader that can commit now, if any.
    fn leader(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| self.nodes[i].raft.is_leader() && self.quorum_ok(i))
    }

    /// Whether node `i` leads and a majority of voters run, reach it, and
    /// have not moved past its term (so its entries commit).
    fn quorum_ok(&self, i: usize) -> bool {
        let l = &self.nodes[i];
        if !l.running() || !l.raft.is_leader() {
            return false;
        }
        let term = l.raft.term();
        let acks = self.voters.iter().filter(|&&v| self.follows(v, i, term)).count();
        acks >= self.majority()
    }

    /// Whether voter `v` runs, reaches `i` and has not moved past `term`.
    fn follows(&self, v: usize, i: usize, term: u64) -> bool {
        let n = &self.nodes[v];
        n.running() && self.net.connected(i, v) && n.raft.term() <= term
    }

    /// For the liveness checker: which nodes run and are connected, without
    /// message loss, to a majority of running voters.
    fn connected(&self) -> Vec<bool> {
        let lossless = self.net.loss_at(self.now) == 0.0;
        (0..self.nodes.len())
            .map(|i| {
                lossless
                    && self.nodes[i].running()
                    && self
                        .voters
                        .iter()
                        .filter(|&&v| self.nodes[v].running() && self.net.connected(i, v))
                        .count()
                        >= self.majority()
            })
            .collect()
    }
}

/// A process's election timeout in [min, max) and the phase of its tick.
fn election_draw(rng: &mut Rng, t: &SimTiming) -> (f64, f64) {
    let span = (t.election_max - t.election_min).max(1.0);
    let timeout = t.election_min + span * rng.unit();
    let phase = t.raft_tick * rng.unit();
    (timeout, phase)
}
