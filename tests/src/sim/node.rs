//! One storage machine and its agent: the machine state (held IPs, Cyrus
//! instance roles) that the checker inspects, and the agent process — its
//! Raft, its lease (the agent's `LeaseBook`), its leader core (the agent's
//! `LeaderCore`), its reconciler pass in flight, its watchdog pings and,
//! after it dies, `slotd fence` — all on its own clock.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use slotd_agent::leader::LeaderCore;
use slotd_agent::lease::LeaseBook;
use slotd_agent::reconcile::{reconcile, Action, Instance, Observed};
use slotd_raft_store::{ClusterState, NodeId, Request};

use super::clock::Clock;
use super::pass::{Host, Pass};
use super::raft::{RaftNode, Vote};
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
    pub machine: Machine,
    /// How long a Cyrus start takes on this machine (true ms).
    pub cyrus_start: f64,
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
            machine: Machine::default(),
            cyrus_start: 0.0,
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
        }
        any
    }

    /// Starts a reconciler pass at true time `now` with the agent's own
    /// decision code.
    pub fn start_pass(&mut self, now: u64, lease_valid: bool, probe_ms: f64, old: bool) {
        let observed = Observed {
            addresses: self.machine.addresses.clone(),
            instances: self.machine.instances.clone(),
            leftovers: Default::default(),
            demoted: self.machine.demoted.clone(),
        };
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

    /// Advances the pass in flight; drops it once it is over.
    pub fn advance_pass(&mut self, now: u64, others: &dyn Fn(IpAddr) -> bool, ignore_lease: bool) {
        let Some(mut pass) = self.pass.take() else { return };
        let mut host = NodeHost {
            node: self,
            now,
            others,
            ignore_lease,
        };
        pass.advance(now as f64, &mut host);
        if !pass.done() {
            self.pass = Some(pass);
        }
    }
}

fn core(idx: usize, t: &SimTiming) -> LeaderCore {
    LeaderCore::new(idx as NodeId + 1, t.leader)
}

/// What a pass sees of and does to its node.
struct NodeHost<'a> {
    node: &'a mut Node,
    now: u64,
    others: &'a dyn Fn(IpAddr) -> bool,
    ignore_lease: bool,
}

impl Host for NodeHost<'_> {
    fn lease_room(&self, ms: f64) -> bool {
        if self.ignore_lease {
            return true;
        }
        let now = self.node.clock.mono(self.now);
        self.node.book.state().remaining(now) >= Duration::from_secs_f64(ms / 1000.0)
    }

    fn log_moved(&self, since: usize) -> bool {
        self.node.applied != since
    }

    fn someone_else_holds(&self, ip: IpAddr) -> bool {
        (self.others)(ip)
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
            Action::Announce { .. } => {}
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
