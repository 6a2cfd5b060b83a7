//! The step loop: faults, message delivery, Raft/leader work, each agent's
//! heartbeat and reconciler, then the checker — every `STEP` ms of true
//! time, all in a deterministic order so a seed replays exactly.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use slotd_raft_store::plan::{plan, Naming};
use slotd_raft_store::{ClusterState, Command, NodeId, Request};

use super::checker::Checker;
use super::clock::Clock;
use super::network::{Msg, Network};
use super::node::Node;
use super::raft::{detect, Detector, Leader, Raft};
use super::rng::Rng;
use super::timing::*;
use super::Variant;

/// A fault of the schedule.
#[derive(Clone, Debug)]
enum Fault {
    /// The agent dies; `power`: the whole machine (IPs and instances gone at
    /// once), else ExecStopPost fences within 0–100 ms. Restarts after `down`.
    Crash { node: usize, power: bool, down: u64 },
    /// The agent hangs for `dur` (the watchdog may kill it first).
    Freeze { node: usize, dur: u64 },
    /// The current leader alone on one side.
    LeaderAlone { dur: u64 },
    /// A random minority cut off.
    Minority { dur: u64 },
    /// Every node in one of three random components.
    Split { dur: u64 },
    /// Message loss `p` for `dur`.
    LossBurst { dur: u64, p: f64 },
}

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Fault::Crash { power: true, .. } => "power loss",
            Fault::Crash { power: false, .. } => "agent crash",
            Fault::Freeze { .. } => "agent hang",
            Fault::LeaderAlone { .. } => "leader partitioned alone",
            Fault::Minority { .. } => "minority partition",
            Fault::Split { .. } => "three-way split",
            Fault::LossBurst { .. } => "loss burst",
        }
    }
}

#[derive(Clone, Debug)]
enum Event {
    Fault(Fault),
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
    pub failovers: u64,
    pub stores_moved: u64,
    pub rejected_failovers: u64,
    pub allowances: u64,
    pub max_overshoot_ms: f64,
    pub messages: u64,
    pub lost: u64,
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
    rng: Rng,
    nodes: Vec<Node>,
    raft: Raft,
    net: Network,
    events: BTreeMap<(u64, u64), Event>,
    partition_gen: u64,
    checker: Checker,
    report: SeedReport,
    trace: VecDeque<String>,
}

const TRACE_LEN: usize = 120;

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
    while w.now <= END {
        w.step();
        let ignore = w.variant.ignore_lease;
        if let Err(what) = w.checker.check(w.now, &w.nodes, ignore) {
            return Err(fail(&w, what));
        }
        w.now += STEP;
    }
    // Liveness, after quiet time.
    let mut log_state = ClusterState::default();
    for r in &w.raft.log {
        let _ = log_state.apply(r);
    }
    if let Some(n) = w.nodes.iter().find(|n| !n.running()) {
        let what = format!("node {} is still down at the end", n.id);
        return Err(fail(&w, what));
    }
    if w.raft.leader.is_none() {
        return Err(fail(&w, "no leader at the end".into()));
    }
    if let Err(what) = w.checker.check_converged(&w.nodes, &log_state) {
        return Err(fail(&w, what));
    }
    if w.report.rejected_failovers > 2 {
        let what = format!("{} failover entries rejected", w.report.rejected_failovers);
        return Err(fail(&w, what));
    }
    w.report.allowances = w.checker.allowances;
    w.report.max_overshoot_ms = w.checker.max_overshoot_ms;
    w.report.messages = w.net.sent;
    w.report.lost = w.net.lost;
    Ok(w.report)
}

impl World {
    fn new(seed: u64, variant: Variant) -> Result<World, String> {
        let mut rng = Rng::new(seed);
        let n = rng.range(3, 7) as usize;
        let mut slots = rng.range(4, 12) as usize;
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

        let eps = variant.clock_epsilon;
        let nodes: Vec<Node> = (0..n)
            .map(|i| {
                // A third of the clocks sit at the extremes of the bound.
                let rate = match rng.index(6) {
                    0 => 1.0 - eps,
                    1 => 1.0 + eps,
                    _ => 1.0 - eps + 2.0 * eps * rng.unit(),
                };
                let offset = rng.range(0, 1_000_000) as f64;
                Node::new(i, Clock { offset, rate })
            })
            .collect();
        let loss = [0.0, 0.01, 0.05, 0.1][rng.index(4)];
        let max_delay = [40, 100, 300][rng.index(3)];
        let net = Network::new(n, loss, max_delay);
        let idx_of = |id: NodeId| (id - 1) as usize;
        let checker = Checker::new(&state, idx_of, MARGIN);
        let raft = Raft {
            log: vec![init],
            leader: None,
            term: 0,
            election_at: Some(0),
            voters: (0..voters).collect(),
        };
        let mut w = World {
            now: 0,
            variant,
            rng,
            nodes,
            raft,
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
        };
        w.schedule_faults();
        w.log(format!(
            "{n} nodes ({voters} voters), {} stores, loss {loss}, max delay {max_delay} ms, clock rates {:?}",
            state.stores.len(),
            w.nodes
                .iter()
                .map(|x| (x.clock.rate * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>()
        ));
        Ok(w)
    }

    fn log(&mut self, line: String) {
        if self.trace.len() >= TRACE_LEN {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("t={:>6} {line}", self.now));
    }

    fn schedule_faults(&mut self) {
        let n = self.nodes.len();
        let count = self.rng.range(3, 8);
        for k in 0..count {
            let at = self.rng.range(FAULTS_FROM, FAULTS_UNTIL);
            let room = HEALED_BY - at;
            let dur = self.rng.range(300, 6000).min(room);
            let kinds = if self.variant.freezes { 7 } else { 6 };
            let fault = match self.rng.index(kinds) {
                0 | 1 => Fault::Crash {
                    node: self.rng.index(n),
                    power: self.rng.chance(0.3),
                    down: dur,
                },
                2 => Fault::LeaderAlone { dur },
                3 => Fault::Minority { dur },
                4 => Fault::Split { dur },
                5 => Fault::LossBurst {
                    dur,
                    p: 0.3 + 0.5 * self.rng.unit(),
                },
                _ => Fault::Freeze {
                    node: self.rng.index(n),
                    dur: self.rng.range(200, 3000),
                },
            };
            self.events.insert((at, k), Event::Fault(fault));
        }
    }

    fn step(&mut self) {
        self.run_events();
        self.lifecycle();
        self.deliver();
        self.raft_step();
        for i in 0..self.nodes.len() {
            self.agent_step(i);
        }
    }

    fn quorum_ok(&self, leader: usize) -> bool {
        if !self.nodes[leader].running() {
            return false;
        }
        let acks = self
            .raft
            .voters
            .iter()
            .filter(|&&v| self.nodes[v].running() && self.net.connected(leader, v))
            .count();
        acks >= self.raft.majority()
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
                let (node, power, down) = (*node, *power, *down);
                if !self.nodes[node].up {
                    return;
                }
                self.crash(node, power, down.max(100));
                let id = self.nodes[node].id;
                self.log(format!("node {id}: {}, down {down} ms", f.kind()));
            }
            Fault::Freeze { node, dur } => {
                let (node, dur) = (*node, *dur);
                if !self.nodes[node].running() {
                    return;
                }
                self.nodes[node].frozen_until = Some(self.now + dur);
                let id = self.nodes[node].id;
                self.log(format!("node {id}: agent hangs for {dur} ms"));
            }
            Fault::LeaderAlone { dur } => {
                let l = self.raft.leader.as_ref().map_or(0, |l| l.node);
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
        }
        *self.report.faults.entry(f.kind()).or_default() += 1;
    }

    /// The agent process is gone: a power loss clears the machine at once,
    /// an agent exit has ExecStopPost clear it shortly after.
    fn crash(&mut self, i: usize, power: bool, down: u64) {
        let fence = self.rng.range(0, 100);
        let node = &mut self.nodes[i];
        node.up = false;
        node.frozen_until = None;
        if power {
            node.machine.clear();
        } else {
            node.fence_at = Some(self.now + fence);
        }
        node.restart_at = Some(self.now + down);
        // Leadership is in memory: a restarted agent comes back a follower.
        if self.raft.leader.as_ref().is_some_and(|l| l.node == i) {
            self.raft.leader = None;
        }
    }

    fn lifecycle(&mut self) {
        for i in 0..self.nodes.len() {
            let now = self.now;
            let id = self.nodes[i].id;
            if self.nodes[i].fence_at.is_some_and(|t| t <= now) {
                self.nodes[i].fence_at = None;
                self.nodes[i].machine.clear();
            }
            if let Some(until) = self.nodes[i].frozen_until {
                let local = self.nodes[i].clock.local(now);
                if local - self.nodes[i].last_ping > WATCHDOG {
                    let down = self.rng.range(500, 3000);
                    self.crash(i, false, down);
                    self.report.watchdog_kills += 1;
                    self.log(format!("node {id}: watchdog kills the hung agent"));
                } else if until <= now {
                    self.nodes[i].frozen_until = None;
                    self.log(format!("node {id}: agent resumes"));
                }
            }
            if self.nodes[i].restart_at.is_some_and(|t| t <= now) {
                let node = &mut self.nodes[i];
                node.restart_at = None;
                node.fence_at = None;
                node.machine.clear();
                node.up = true;
                node.incarnation += 1;
                node.lease_until = None;
                node.pending_grant = None;
                node.leader = None;
                let local = node.clock.local(now);
                node.last_ping = local;
                node.next_heartbeat = local;
                node.next_resync = local;
                node.needs_pass = true;
                let applied = node.applied;
                self.log(format!("node {id}: agent restarts (applied {applied} entries)"));
            }
        }
    }

    fn deliver(&mut self) {
        while let Some(env) = self.net.due(self.now) {
            let (from, to) = (env.from, env.to);
            if !self.nodes[to].running() || !self.net.connected(from, to) {
                continue;
            }
            match env.msg {
                Msg::Append { term, commit } => {
                    let node = &mut self.nodes[to];
                    if term >= node.term {
                        node.term = term;
                        node.leader = Some(from);
                        node.catch_up(&self.raft.log, commit);
                    }
                }
                Msg::Renew {
                    sent_local,
                    incarnation,
                } => {
                    if let Some(l) = &self.raft.leader {
                        if l.node == to {
                            // A quorum round started now, after receipt.
                            let at = self.now + self.rng.range(2, 2 * 20);
                            let msg = Msg::RoundDone {
                                term: l.term,
                                node: from,
                                sent_local,
                                incarnation,
                            };
                            self.net.push(at, to, to, msg);
                        }
                    }
                }
                Msg::RoundDone {
                    term,
                    node,
                    sent_local,
                    incarnation,
                } => {
                    let still = self
                        .raft
                        .leader
                        .as_ref()
                        .is_some_and(|l| l.node == to && l.term == term);
                    if still && self.quorum_ok(to) {
                        let local = self.nodes[to].clock.local(self.now);
                        if let Some(l) = self.raft.leader.as_mut() {
                            l.granted.insert(node, local);
                        }
                        let msg = Msg::Grant {
                            sent_local,
                            incarnation,
                            read_index: self.raft.log.len(),
                        };
                        self.net.send(self.now, to, node, msg, &mut self.rng);
                    }
                }
                Msg::Grant {
                    sent_local,
                    incarnation,
                    read_index,
                } => {
                    let node = &mut self.nodes[to];
                    if incarnation != node.incarnation {
                        continue;
                    }
                    let until = sent_local + LEASE;
                    if self.variant.lease_waits_for_log && node.applied < read_index {
                        let keep = node.pending_grant.is_none_or(|(u, _)| u < until);
                        if keep {
                            node.pending_grant = Some((until, read_index));
                        }
                    } else {
                        node.extend_lease(until);
                    }
                }
            }
        }
    }

    fn raft_step(&mut self) {
        let now = self.now;
        let healthy = self.raft.leader.as_ref().is_some_and(|l| self.quorum_ok(l.node));
        if healthy {
            self.raft.election_at = None;
        } else if self.raft.election_at.is_none() {
            self.raft.election_at = Some(now + self.rng.range(ELECTION_MIN, ELECTION_MAX));
        }
        if self.raft.election_at.is_some_and(|t| t <= now) {
            self.elect();
        }
        let Some((li, next_append)) = self.raft.leader.as_ref().map(|l| (l.node, l.next_append)) else {
            return;
        };
        if !healthy {
            return;
        }
        // AppendEntries / heartbeats.
        if now >= next_append {
            self.broadcast_append(li);
        }
        // The failure detector, every heartbeat on the leader's clock.
        let local = self.nodes[li].clock.local(now);
        let Some(l) = self.raft.leader.as_ref() else { return };
        if local < l.next_detect_local {
            return;
        }
        let d = Detector {
            lease: LEASE,
            margin: self.variant.detector_margin_ms,
            fresh_wait: self.variant.fresh_leader_wait,
        };
        let decided = detect(l, &self.nodes[li].state, |id| (id - 1) as usize, local, d);
        if let Some(l) = self.raft.leader.as_mut() {
            l.next_detect_local = local + HEARTBEAT;
        }
        let Some((dead, command)) = decided else { return };
        let moves = match &command {
            Command::Failover { moves, .. } => moves.len() as u64,
            _ => 0,
        };
        let rejected = self.nodes[li].state.check(&command).err();
        self.raft.log.push(Request { at_ms: now, command });
        let len = self.raft.log.len();
        self.nodes[li].catch_up(&self.raft.log, len);
        match rejected {
            Some(r) => {
                self.report.rejected_failovers += 1;
                self.log(format!("leader node {}: failover of {dead:?} REJECTED: {r}", li + 1));
            }
            None => {
                self.report.failovers += 1;
                self.report.stores_moved += moves;
                self.log(format!(
                    "leader node {}: failover of dead {dead:?}, {moves} stores (entry {len})",
                    li + 1
                ));
            }
        }
        self.broadcast_append(li);
    }

    fn broadcast_append(&mut self, li: usize) {
        let Some(l) = self.raft.leader.as_mut() else { return };
        l.next_append = self.now + APPEND_EVERY;
        let term = l.term;
        let commit = self.raft.log.len();
        for j in 0..self.nodes.len() {
            if j != li {
                self.net
                    .send(self.now, li, j, Msg::Append { term, commit }, &mut self.rng);
            }
        }
    }

    fn elect(&mut self) {
        let candidates: Vec<usize> = self
            .raft
            .voters
            .iter()
            .copied()
            .filter(|&v| self.quorum_ok(v))
            .collect();
        if candidates.is_empty() {
            self.raft.election_at = Some(self.now + self.rng.range(ELECTION_MIN, ELECTION_MAX));
            return;
        }
        let c = candidates[self.rng.index(candidates.len())];
        self.raft.term += 1;
        self.raft.election_at = None;
        let term = self.raft.term;
        let local = self.nodes[c].clock.local(self.now);
        self.raft.leader = Some(Leader {
            node: c,
            term,
            since_local: local,
            granted: BTreeMap::new(),
            next_detect_local: local,
            next_append: self.now,
        });
        // A Raft leader holds every committed entry; it applies them now.
        let len = self.raft.log.len();
        let node = &mut self.nodes[c];
        node.catch_up(&self.raft.log, len);
        node.term = term;
        node.leader = Some(c);
        self.report.elections += 1;
        self.log(format!("node {} elected leader, term {term}", c + 1));
    }

    fn agent_step(&mut self, i: usize) {
        if !self.nodes[i].running() {
            return;
        }
        let now = self.now;
        let local = self.nodes[i].clock.local(now);
        self.nodes[i].last_ping = local;
        if local >= self.nodes[i].next_heartbeat {
            self.nodes[i].next_heartbeat = local + HEARTBEAT;
            if let Some(l) = self.nodes[i].leader {
                let msg = Msg::Renew {
                    sent_local: local,
                    incarnation: self.nodes[i].incarnation,
                };
                self.net.send(now, i, l, msg, &mut self.rng);
            }
        }
        let ignore = self.variant.ignore_lease;
        let node = &mut self.nodes[i];
        let valid = ignore || node.lease_valid(now);
        if valid != node.last_valid {
            node.needs_pass = true;
        }
        if local >= node.next_resync {
            node.next_resync = local + RESYNC;
            node.needs_pass = true;
        }
        if node.needs_pass {
            node.needs_pass = false;
            let was = node.last_valid;
            node.last_valid = valid;
            let acted = node.reconcile_pass(valid);
            if was && !valid && acted > 0 {
                let id = node.id;
                self.log(format!("node {id}: lease expired, fenced ({acted} actions)"));
            }
        }
    }
}
