//! One storage machine and its agent: the machine state (held IPs, Cyrus
//! instance roles) that the checker inspects, and the agent process — its
//! Raft, its lease (the agent's `LeaseBook`), its leader core (the agent's
//! `LeaderCore`) and engine memory, its reconciler pass in flight and the
//! health report it publishes after each pass (phase acks by the agent's
//! `phase_done`, backlogs), its watchdog pings and, after it dies, `slotd
//! fence` — all on its own clock.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use slotd_core::leader::LeaderCore;
use slotd_core::node::lease::LeaseBook;
use slotd_core::node::reconcile::{leftovers_settled, phase_done, reconcile, Action, Instance, Observed};
use slotd_core::report::HealthReport;
use slotd_raft_store::{ClusterState, NodeId, Request};

use super::clock::Clock;
use super::pass::{Host, Pass};
use super::raft::{RaftNode, Vote};
use super::switchover::Conducting;
use super::SimTiming;

/// What is really true on the machine: the addresses bound on its interface
/// and the role each Cyrus instance runs in. Survives an agent crash until
/// `slotd fence` (or a power loss) clears it.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub addresses: BTreeSet<IpAddr>,
    pub instances: BTreeMap<String, Instance>,
    /// Slots the agent demoted for a switchover, with the attempt's epoch
    /// (the agent's memory: gone with the agent).
    pub demoted: BTreeMap<String, u64>,
    /// +1 at every change (the checker looks again only then).
    pub version: u64,
}

impl Machine {
    /// `slotd fence` or a power loss: nothing held, nothing runs.
    pub fn clear(&mut self) {
        self.addresses.clear();
        self.instances.clear();
        self.demoted.clear();
        self.version += 1;
    }
}

/// Switchover attempts that fail on the machines (a fault of the schedule),
/// by (store, epoch of the phase): an old master's flush that wedges (its
/// demote fails after `demote_timeout`, again at every try), and a new
/// master whose Cyrus start as master fails (at every try). A later attempt
/// — a new epoch, new processes — goes through.
#[derive(Clone, Debug, Default)]
pub struct Wedges {
    pub flush: BTreeSet<(String, u64)>,
    pub start: BTreeSet<(String, u64)>,
}

impl Wedges {
    /// Whether action `a` fails.
    pub fn fails(&self, a: &Action) -> bool {
        let hit =
            |set: &BTreeSet<(String, u64)>, store: &str, epoch: u64| set.iter().any(|(s, e)| s == store && *e == epoch);
        match a {
            Action::Demote {
                store,
                epoch,
                force: false,
                ..
            } => hit(&self.flush, store, *epoch),
            Action::StartMaster { store, epoch, .. } => hit(&self.start, store, *epoch),
            _ => false,
        }
    }
}

/// `slotd fence` telling the leader (ticket, then notice), after it cleared
/// the machine. The agent restarts only once it has exited.
#[derive(Clone, Debug)]
pub struct FenceRun {
    /// Tells this run's messages from older ones.
    pub run: u64,
    /// When it starts (local): the process is gone, systemd runs it.
    pub begins: f64,
    /// It gives up at this local time (`lease + margin` after it began).
    pub deadline: f64,
    pub next_round: f64,
    /// A notice sent and not answered could be accepted until then.
    pub in_doubt_until: Option<f64>,
    /// The ticket being presented: (to whom, id, when received).
    pub presenting: Option<(usize, u64, f64)>,
    pub accepted: bool,
}

/// One node: machine plus agent.
pub struct Node {
    pub idx: usize,
    pub id: NodeId,
    pub clock: Clock,
    /// The agent process runs (false between a crash and its restart).
    pub up: bool,
    /// +1 at every restart: replies meant for an earlier process are dropped.
    pub incarnation: u64,
    /// The whole agent is hung (SIGSTOP-like) until this true time.
    pub frozen_until: Option<u64>,
    /// The reconciler alone is stuck until this true time; the local time
    /// of its last progress mark.
    pub stalled: Option<(u64, f64)>,
    /// Local time of the last watchdog ping, and of the next look.
    pub last_ping: f64,
    pub next_ping: f64,
    /// When the agent may start again (true ms), and the fence in progress.
    pub restart_at: Option<u64>,
    pub fence: Option<FenceRun>,
    /// Persisted across restarts: the applied state, how many log entries
    /// it holds, its Raft vote.
    pub state: ClusterState,
    pub applied: usize,
    pub raft: RaftNode,
    /// The process's leader core and lease (gone with the process).
    pub core: LeaderCore,
    pub book: LeaseBook,
    pub next_heartbeat: f64,
    /// Next failure-detector tick, while leading (local).
    pub next_detect: f64,
    pub next_resync: f64,
    pub needs_pass: bool,
    pub pass: Option<Pass>,
    pub last_valid: bool,
    /// The health report the reconciler last published (phase acks,
    /// backlogs): every renewal carries it.
    pub report: HealthReport,
    /// What it was made from: (applied, machine version, lease validity).
    published: Option<(usize, u64, bool)>,
    /// Whether the applied state has a switchover under way on this node
    /// (if not, `phase_done` has nothing to say), and a store marked dirty
    /// for it (if not, neither has `leftovers_settled`).
    switching: bool,
    dirty_here: bool,
    /// The leader engine's memory of switchovers (gone with the process).
    pub conducting: Conducting,
    /// As leader: the reports its core was last given, by node, and how
    /// many times one changed (the simulation's, to know when the
    /// conductor's facts may have changed).
    pub last_reports: BTreeMap<NodeId, HealthReport>,
    pub reports_seen: u64,
    /// Until when (true ms) a failing action is in flight here.
    pub wedge_ends: f64,
    /// `stop::undrain_after_stop` after a start: tries left, and the next
    /// (local).
    pub undrain_tries: u32,
    pub next_undrain: f64,
    pub machine: Machine,
    /// How long a Cyrus start takes on this machine (true ms).
    pub cyrus_start: f64,
    /// Demotes running on tasks of their own: the action, when it ends
    /// (true ms), and whether it fails then. Gone with the process.
    pub jobs: Vec<(Action, f64, bool)>,
}

impl Node {
    pub fn new(idx: usize, clock: Clock, t: &SimTiming, election_timeout: f64, tick_phase: f64) -> Node {
        let now = clock.local(0);
        Node {
            idx,
            id: idx as NodeId + 1,
            clock,
            up: true,
            incarnation: 0,
            frozen_until: None,
            stalled: None,
            last_ping: now,
            next_ping: now,
            restart_at: None,
            fence: None,
            state: ClusterState::default(),
            applied: 0,
            raft: RaftNode::start(idx, t.election_max, Vote::default(), now, election_timeout, tick_phase),
            core: core(idx, t),
            book: LeaseBook::new(t.leader.lease),
            next_heartbeat: now,
            next_detect: now,
            next_resync: now,
            needs_pass: true,
            pass: None,
            last_valid: false,
            report: HealthReport::default(),
            published: None,
            switching: false,
            dirty_here: false,
            conducting: Conducting::default(),
            last_reports: BTreeMap::new(),
            reports_seen: 0,
            wedge_ends: f64::NEG_INFINITY,
            undrain_tries: 0,
            next_undrain: now,
            machine: Machine::default(),
            cyrus_start: 0.0,
            jobs: Vec::new(),
        }
    }

    /// A new agent process (after a crash): Raft restarts from its
    /// persisted vote; lease, leader core and pass start empty.
    pub fn restart(&mut self, now: u64, t: &SimTiming, election_timeout: f64, tick_phase: f64) {
        let local = self.clock.local(now);
        self.up = true;
        self.incarnation += 1;
        self.frozen_until = None;
        self.stalled = None;
        self.raft = RaftNode::start(
            self.idx,
            t.election_max,
            self.raft.vote,
            local,
            election_timeout,
            tick_phase,
        );
        self.core = core(self.idx, t);
        self.book = LeaseBook::new(t.leader.lease);
        self.last_ping = local;
        self.next_ping = local;
        self.next_heartbeat = local;
        self.next_detect = local;
        self.next_resync = local;
        self.needs_pass = true;
        self.pass = None;
        self.last_valid = false;
        self.report = HealthReport::default();
        self.published = None;
        self.conducting = Conducting::default();
        self.last_reports.clear();
        self.reports_seen = 0;
        self.wedge_ends = f64::NEG_INFINITY;
        self.undrain_tries = UNDRAIN_TRIES;
        self.next_undrain = local;
        self.jobs.clear();
    }

    /// Finishes the demotes whose time has come (as their tasks do): a
    /// demote that worked leaves the instance stopped and the slot demoted
    /// for the attempt; either way the slot is free and the loop passes.
    pub fn advance_jobs(&mut self, now: u64) {
        let now = now as f64;
        if !self.jobs.iter().any(|(_, end, _)| *end <= now) {
            return;
        }
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.jobs)
            .into_iter()
            .partition(|(_, end, _)| *end <= now);
        self.jobs = running;
        for (action, _, fails) in done {
            if let (Action::Demote { slot, epoch, .. }, false) = (&action, fails) {
                let m = &mut self.machine;
                m.instances.remove(slot);
                m.demoted.insert(slot.clone(), *epoch);
            }
            self.machine.version += 1;
        }
        self.needs_pass = true;
    }

    /// The agent runs and is not hung: it can act and receive.
    pub fn running(&self) -> bool {
        self.up && self.frozen_until.is_none()
    }

    /// The reconciler can make progress.
    pub fn reconciling(&self) -> bool {
        self.running() && self.stalled.is_none()
    }

    pub fn lease_valid(&self, now: u64) -> bool {
        self.book.state().valid_at(self.clock.mono(now))
    }

    /// True time at which the current lease ends (−∞ if none).
    pub fn lease_end_true(&self) -> f64 {
        self.book
            .state()
            .valid_until
            .map_or(f64::NEG_INFINITY, |u| self.clock.true_of(u))
    }

    /// Applies committed entries up to `commit` (blank entries of a new
    /// leader are `None`), in order. True if anything was applied.
    pub fn catch_up(&mut self, log: &[Option<Request>], commit: usize, now: u64) -> bool {
        let commit = commit.min(log.len());
        let mut any = false;
        while self.applied < commit {
            if let Some(r) = &log[self.applied] {
                // Rejections are counted by the leader when it appends.
                let _ = self.state.apply(r);
            }
            self.applied += 1;
            self.needs_pass = true;
            any = true;
        }
        if any {
            self.book.applied(self.applied as u64, self.clock.mono(now));
            let me = self.id;
            self.switching = self
                .state
                .stores
                .values()
                .any(|s| s.phase.switchover().is_some_and(|(f, t)| f == me || t == me));
            self.dirty_here = self.state.stores.values().any(|s| s.dirty.contains(&me));
        }
        any
    }

    /// What the reconciler observes on the machine now.
    fn observed(&self) -> Observed {
        Observed {
            addresses: self.machine.addresses.clone(),
            instances: self.machine.instances.clone(),
            leftovers: Default::default(),
            demoted: self.machine.demoted.clone(),
            // The machines here keep no sync log: nothing is ever left
            // over, offered or replayed.
            replayed: Default::default(),
            busy: self
                .jobs
                .iter()
                .filter_map(|(a, _, _)| a.slot().map(str::to_owned))
                .collect(),
        }
    }

    /// The end of a pass planned with `lease_valid`: the reconciler
    /// publishes its report (as the reconciler pass's `publish`) — the phases it
    /// finished (`phase_done`, on the state applied now), the stores whose
    /// leftovers it settled (`leftovers_settled`) and the backlog of every
    /// master it runs (0 bytes: replication keeps up in this model). News
    /// (new acks, a new backlog, newly settled leftovers) makes the keeper
    /// renew at once.
    fn publish(&mut self, now: u64, lease_valid: bool) {
        let key = (self.applied, self.machine.version, lease_valid);
        if self.published == Some(key) {
            return;
        }
        self.published = Some(key);
        // With no switchover on this node and no dirty mark for it, both
        // would find nothing: spare the copy of the machine.
        let (done, clean) = if self.switching || self.dirty_here {
            let observed = self.observed();
            (
                phase_done(&self.state, self.id, lease_valid, &observed),
                leftovers_settled(&self.state, self.id, &observed, &Default::default()),
            )
        } else {
            (BTreeMap::new(), BTreeMap::new())
        };
        let me = self.id;
        let instances = &self.machine.instances;
        let backlog: BTreeMap<String, u64> = self
            .state
            .stores
            .values()
            .filter(|s| s.master == me)
            .filter(|s| {
                s.slot_on(me)
                    .is_some_and(|r| matches!(instances.get(&r.slot), Some(Instance::Master { .. })))
            })
            .map(|s| (s.name.clone(), 0))
            .collect();
        let acks = self.report.done != done && !done.is_empty();
        let new_backlog = backlog.keys().any(|s| !self.report.backlog.contains_key(s));
        let new_clean = clean.iter().any(|(s, e)| self.report.clean.get(s) != Some(e));
        if acks || new_backlog || new_clean {
            self.next_heartbeat = self.clock.local(now);
        }
        self.report.done = done;
        self.report.clean = clean;
        self.report.backlog = backlog;
    }

    /// Starts a reconciler pass at true time `now` with the agent's own
    /// decision code.
    pub fn start_pass(&mut self, now: u64, lease_valid: bool, probe_ms: f64, old: bool) {
        let observed = self.observed();
        let actions = reconcile(&self.state, self.id, lease_valid, &observed);
        self.pass = Some(Pass::new(
            &self.state,
            actions,
            lease_valid,
            self.applied,
            self.lease_end_true(),
            now as f64,
            probe_ms,
            old,
        ));
        self.last_valid = lease_valid;
    }

    /// Advances the pass in flight; drops it once it is over, and
    /// publishes the report.
    pub fn advance_pass(
        &mut self,
        now: u64,
        others: &dyn Fn(IpAddr) -> bool,
        ignore_lease: bool,
        wedges: &Wedges,
        demote_timeout: f64,
    ) {
        let Some(mut pass) = self.pass.take() else { return };
        let mut host = NodeHost {
            node: self,
            now,
            others,
            ignore_lease,
            wedges,
            demote_timeout,
        };
        pass.advance(now as f64, &mut host);
        if pass.done() {
            self.publish(now, pass.lease_valid);
        } else {
            self.pass = Some(pass);
        }
    }
}

pub use slotd_core::timing::UNDRAIN_TRIES;

fn core(idx: usize, t: &SimTiming) -> LeaderCore {
    LeaderCore::new(idx as NodeId + 1, t.leader)
}

/// What a pass sees of and does to its node.
struct NodeHost<'a> {
    node: &'a mut Node,
    now: u64,
    others: &'a dyn Fn(IpAddr) -> bool,
    ignore_lease: bool,
    wedges: &'a Wedges,
    demote_timeout: f64,
}

impl Host for NodeHost<'_> {
    fn lease_left(&self) -> Duration {
        if self.ignore_lease {
            return Duration::MAX;
        }
        let now = self.node.clock.mono(self.now);
        self.node.book.state().remaining(now)
    }

    fn log_moved(&self, since: usize) -> bool {
        self.node.applied != since
    }

    fn someone_else_holds(&self, ip: IpAddr) -> bool {
        (self.others)(ip)
    }

    fn begin(&mut self, action: &Action, end: f64, fails: bool) {
        if fails {
            self.node.wedge_ends = self.node.wedge_ends.max(end);
        }
        // A demote stops the client services first: from now on the
        // instance serves nobody (its sync client flushes, then it stops).
        if let Action::Demote { slot, .. } = action {
            let m = &mut self.node.machine;
            if m.instances.remove(slot).is_some() {
                m.version += 1;
            }
        }
    }

    fn fails(&self, a: &Action) -> bool {
        self.wedges.fails(a)
    }

    fn detach(&mut self, action: &Action, end: f64, fails: bool) {
        self.node.jobs.push((action.clone(), end, fails));
    }

    fn demote_timeout(&self) -> f64 {
        self.demote_timeout
    }

    fn apply(&mut self, action: &Action) {
        let m = &mut self.node.machine;
        m.version += 1;
        match action {
            Action::Stop { slot, .. } => {
                m.instances.remove(slot);
            }
            Action::Demote { slot, epoch, .. } => {
                m.instances.remove(slot);
                m.demoted.insert(slot.clone(), *epoch);
            }
            Action::Release { ip, .. } => {
                m.addresses.remove(&ip.addr);
            }
            Action::Bind { ip, .. } => {
                m.addresses.insert(ip.addr);
            }
            // No Cyrus in the simulation: nothing to pull.
            Action::Announce { .. } | Action::Replay { .. } => {}
            Action::StartMaster { slot, epoch, .. } => {
                m.instances.insert(slot.clone(), Instance::Master { epoch: *epoch });
            }
            Action::StartReplica { slot, epoch, .. } => {
                m.instances.insert(slot.clone(), Instance::Replica { epoch: *epoch });
            }
        }
    }

    fn cyrus_start(&self) -> f64 {
        self.node.cyrus_start
    }
}
