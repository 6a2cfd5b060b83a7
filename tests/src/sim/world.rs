//! The step loop: faults and operators' commands, the machines' lifecycle
//! (watchdog kills, `slotd fence`, restarts), message delivery, each node's
//! Raft, leader work (failure detector, then the switchover conductor) and
//! agent, then the checkers — every `STEP` ms of true time, all in a
//! deterministic order so a seed replays exactly.

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

    fn schedule_faults(&mut self) {
        let n = self.nodes.len();
        let count = self.rng.range(3, 8);
        for k in 0..count {
            let at = self.rng.range(FAULTS_FROM, FAULTS_UNTIL);
            let room = HEALED_BY - at;
            let dur = self.rng.range(300, 6000).min(room);
            let kinds = if self.variant.stalls { 10 } else { 8 };
            let fault = match self.rng.index(kinds) {
                0 | 1 => Fault::Crash {
                    node: self.rng.index(n),
                    power: self.rng.chance(0.3),
                    down: dur,
                },
                2 => Fault::LeaderCrash {
                    power: self.rng.chance(0.4),
                    down: dur,
                },
                3 => Fault::LeaderAlone { dur },
                4 => Fault::Minority { dur },
                5 => Fault::Split { dur },
                6 => Fault::LossBurst {
                    dur,
                    p: 0.3 + 0.5 * self.rng.unit(),
                },
                7 => Fault::LeaderAlone { dur: dur.min(3000) },
                8 => Fault::Freeze {
                    node: self.rng.index(n),
                    dur: self.rng.range(100, 3000),
                },
                _ => Fault::Stall {
                    node: self.rng.index(n),
                    dur: self.rng.range(100, 10_000).min(room),
                },
            };
            self.events.insert((at, k), Event::Fault(fault));
        }
    }

    /// The operators' commands, and the faults that break a switchover
    /// attempt, from their own stream.
    fn schedule_ops(&mut self) {
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

    fn run_events(&mut self) {
        while let Some((&(at, _), _)) = self.events.first_key_value() {
            if at > self.now {
                break;
            }
            let Some((_, ev)) = self.events.pop_first() else { break };
            match ev {
                Event::Heal { gen } => {
                    if gen == self.partition_gen {
                        self.net.heal();
                        self.log("partition healed".into());
                    }
                }
                Event::Fault(f) => self.inject(f),
                Event::Op(op) => self.operate(op),
            }
        }
    }

    fn partition(&mut self, component: Vec<u32>, dur: u64, what: String) {
        self.net.component = component;
        self.partition_gen += 1;
        self.events.insert(
            (self.now + dur, u64::MAX - self.partition_gen),
            Event::Heal {
                gen: self.partition_gen,
            },
        );
        self.log(format!("partition for {dur} ms: {what}"));
    }

    fn inject(&mut self, f: Fault) {
        let n = self.nodes.len();
        match &f {
            Fault::Crash { node, power, down } => {
                if !self.nodes[*node].up {
                    return;
                }
                self.crash(*node, *power, (*down).max(100));
                let id = self.nodes[*node].id;
                self.log(format!("node {id}: {}, down {down} ms", f.kind()));
            }
            Fault::LeaderCrash { power, down } => {
                let Some(l) = self.leader() else { return };
                self.crash(l, *power, (*down).max(100));
                let id = self.nodes[l].id;
                self.log(format!("node {id} (the leader): {}, down {down} ms", f.kind()));
            }
            Fault::Freeze { node, dur } => {
                if !self.nodes[*node].running() {
                    return;
                }
                self.nodes[*node].frozen_until = Some(self.now + dur);
                let id = self.nodes[*node].id;
                self.log(format!("node {id}: agent hangs for {dur} ms"));
            }
            Fault::Stall { node, dur } => {
                let node_ref = &mut self.nodes[*node];
                if !node_ref.reconciling() {
                    return;
                }
                let local = node_ref.clock.local(self.now);
                node_ref.stalled = Some((self.now + dur, local));
                let id = node_ref.id;
                self.log(format!("node {id}: reconciler stuck for {dur} ms"));
            }
            Fault::LeaderAlone { dur } => {
                let l = self.leader().unwrap_or(0);
                let comp = (0..n).map(|i| u32::from(i == l)).collect();
                self.partition(comp, *dur, format!("leader node {} alone", l + 1));
            }
            Fault::Minority { dur } => {
                let size = 1 + self.rng.index((n - 1) / 2);
                let mut comp = vec![0; n];
                for _ in 0..size {
                    let i = self.rng.index(n);
                    comp[i] = 1;
                }
                let what = format!(
                    "cut off {:?}",
                    (0..n).filter(|&i| comp[i] == 1).map(|i| i + 1).collect::<Vec<_>>()
                );
                self.partition(comp, *dur, what);
            }
            Fault::Split { dur } => {
                let comp: Vec<u32> = (0..n).map(|_| self.rng.index(3) as u32).collect();
                let what = format!("components {comp:?}");
                self.partition(comp, *dur, what);
            }
            Fault::LossBurst { dur, p } => {
                self.net.burst_until = self.now + dur;
                self.net.burst_loss = *p;
                self.log(format!("loss {p:.2} for {dur} ms"));
            }
            Fault::WedgedFlush => {
                self.armed_flush = true;
                self.log("the next switchover attempt's flush will wedge".into());
            }
            Fault::FailedStart => {
                self.armed_start = true;
                self.log("the next promotion's Cyrus start will fail".into());
            }
        }
        *self.report.faults.entry(f.kind()).or_default() += 1;
    }

    /// The agent process is gone: a power loss clears the machine at once;
    /// an agent exit has `slotd fence` clear it shortly after (systemd's
    /// ExecStopPost) and tell the leader; the agent starts again after
    /// `down`, and never before the fence has exited.
    fn crash(&mut self, i: usize, power: bool, down: u64) {
        let fence_after = self.rng.range(5, 50);
        let node = &mut self.nodes[i];
        node.up = false;
        node.frozen_until = None;
        node.stalled = None;
        node.pass = None;
        node.jobs.clear();
        node.wedge_ends = f64::NEG_INFINITY;
        node.raft.role = Role::Follower;
        node.restart_at = Some(self.now + down);
        if power {
            node.machine.clear();
            node.fence = None;
        } else {
            // The fence starts once the process is gone: modelled as a run
            // that clears the machine when it begins.
            self.fence_runs += 1;
            let local = node.clock.local(self.now + fence_after);
            node.fence = Some(FenceRun {
                run: self.fence_runs,
                begins: local,
                deadline: local + self.t.fence_telling,
                next_round: local,
                in_doubt_until: None,
                presenting: None,
                accepted: false,
            });
        }
    }

    fn lifecycle(&mut self) {
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
    fn fence_step(&mut self, i: usize) {
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

    fn deliver(&mut self) {
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

    fn handle(&mut self, from: usize, to: usize, msg: Msg) {
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

    /// A fence request reaches node `l` (as `Cluster::fence_request`): it
    /// answers only as a leader with a quorum, its core told of its term.
    fn confirm_leader(&mut self, l: usize, mono: Mono) -> bool {
        if !self.quorum_ok(l) {
            return false;
        }
        let term = self.nodes[l].raft.term();
        self.nodes[l].core.observe(Some(term), mono);
        true
    }

    /// A lease quorum round: the quorum, and each voter's heartbeat and
    /// answer not lost.
    fn round_ok(&mut self, i: usize) -> bool {
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
    fn on_elected(&mut self, i: usize) {
        let now = self.now;
        let dead_after = super::ms(self.t.leader.dead_after());
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

    fn broadcast_append(&mut self, li: usize) {
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

    fn raft_step(&mut self, i: usize) {
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

    /// The engine on leader `li` (`leader::engine`): the failure detector
    /// — the core decides, and the failover is written if it can commit —
    /// then the switchover conductor.
    fn detect(&mut self, li: usize) {
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

    fn fail_over(&mut self, li: usize, decision: &Decision, command: Command) {
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
    fn conduct(&mut self, li: usize) {
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
    fn write(&mut self, li: usize, command: Command) -> Result<usize, Option<Rejection>> {
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
    fn count_entry(&mut self, command: &Command) {
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

    /// An operator's command through whoever leads, as the admin service
    /// carries it out (`operate.rs`): checked by the agent's rules with the
    /// leader's facts, refused with a reason, or written.
    fn operate(&mut self, op: Op) {
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
    fn undrain_after_stop(&mut self, i: usize, local: f64) {
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
    fn refusal_changes_nothing(&mut self, li: usize, command: Command) {
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

    /// Checks that no switchover, drain or rebalance is stuck, once faults
    /// are over and a leader has settled.
    fn check_stuck(&mut self) -> Result<(), String> {
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
    fn drain_resting(&self, node: NodeId) -> Option<bool> {
        let l = self.leader()?;
        let n = &self.nodes[l];
        let facts = Facts::of(&n.core, &self.log_state, n.clock.mono(self.now), &self.config, self.now);
        let stranded = stranded(&self.log_state, &facts, node).len();
        Some(drain_resting(&self.log_state, node, stranded))
    }

    /// Whether a switchover, a drain that could still move something, or a
    /// rebalance is under way in the log.
    fn switchover_work(&self) -> bool {
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
    fn wedge_in_flight(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| n.wedge_ends + SETTLE as f64 > self.now as f64)
    }

    fn agent_step(&mut self, i: usize) {
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
            if watchdog::verdict(marks, mono, mono, None, self.t.leader.margin).is_ok() {
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

/// A process's election timeout in [min, max) and the phase of its tick.
fn election_draw(rng: &mut Rng, t: &SimTiming) -> (f64, f64) {
    let span = (t.election_max - t.election_min).max(1.0);
    let timeout = t.election_min + span * rng.unit();
    let phase = t.raft_tick * rng.unit();
    (timeout, phase)
}

/// A switchover entry in a line of the trace.
fn describe(command: &Command) -> String {
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
