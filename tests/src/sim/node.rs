//! One storage machine and its agent: the machine state (held IPs, Cyrus
//! instance roles) that the checker inspects, and the agent's own view —
//! its applied copy of the log, its lease, the leader it believes in, all
//! measured on its own clock. The reconciler is the project's real one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use slotd_agent::reconcile::{reconcile, Action, Instance, Observed};
use slotd_raft_store::{ClusterState, NodeId, Request};

use super::clock::Clock;

/// What is really true on the machine: the addresses bound on its interface
/// and the role each Cyrus instance runs in. Survives an agent crash until
/// ExecStopPost (or a power loss) clears it.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub addresses: BTreeSet<IpAddr>,
    pub instances: BTreeMap<String, Instance>,
}

impl Machine {
    /// ExecStopPost (`slotd fence`) or a power loss: nothing held, nothing runs.
    pub fn clear(&mut self) {
        self.addresses.clear();
        self.instances.clear();
    }
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
    /// The agent is hung (SIGSTOP-like) until this true time: it does
    /// nothing, not even fence itself, until systemd's watchdog kills it.
    pub frozen_until: Option<u64>,
    /// Local time of the last watchdog ping.
    pub last_ping: f64,
    /// Pending ExecStopPost after an agent crash: the machine is cleared at
    /// this true time (IPs stay bound until then).
    pub fence_at: Option<u64>,
    pub restart_at: Option<u64>,
    /// This node's applied state and how many log entries it holds
    /// (persisted: survives restarts).
    pub state: ClusterState,
    pub applied: usize,
    /// Highest term heard of, and the leader this node believes in.
    pub term: u64,
    pub leader: Option<usize>,
    /// Lease end on the local clock (valid strictly before).
    pub lease_until: Option<f64>,
    /// A grant waiting for `applied >= read_index` (only in the variant
    /// where a lease needs the log caught up to the grant's read index).
    pub pending_grant: Option<(f64, usize)>,
    pub next_heartbeat: f64,
    pub next_resync: f64,
    pub last_valid: bool,
    pub needs_pass: bool,
    pub machine: Machine,
}

impl Node {
    pub fn new(idx: usize, clock: Clock) -> Node {
        Node {
            idx,
            id: idx as NodeId + 1,
            clock,
            up: true,
            incarnation: 0,
            frozen_until: None,
            last_ping: clock.local(0),
            fence_at: None,
            restart_at: None,
            state: ClusterState::default(),
            applied: 0,
            term: 0,
            leader: None,
            lease_until: None,
            pending_grant: None,
            next_heartbeat: clock.local(0),
            next_resync: clock.local(0),
            last_valid: false,
            needs_pass: true,
            machine: Machine::default(),
        }
    }

    /// The agent runs and is not hung: it can act and receive.
    pub fn running(&self) -> bool {
        self.up && self.frozen_until.is_none()
    }

    pub fn lease_valid(&self, now: u64) -> bool {
        self.lease_until.is_some_and(|u| self.clock.local(now) < u)
    }

    /// True time at which the current lease ends (−∞ if none).
    pub fn lease_end_true(&self) -> f64 {
        self.lease_until.map_or(f64::NEG_INFINITY, |u| self.clock.true_at(u))
    }

    /// Applies committed entries up to `commit`, in order.
    pub fn catch_up(&mut self, log: &[Request], commit: usize) {
        let commit = commit.min(log.len());
        while self.applied < commit {
            // Rejections are counted by the leader when it appends.
            let _ = self.state.apply(&log[self.applied]);
            self.applied += 1;
            self.needs_pass = true;
        }
        if let Some((until, index)) = self.pending_grant {
            if self.applied >= index {
                self.pending_grant = None;
                self.extend_lease(until);
            }
        }
    }

    pub fn extend_lease(&mut self, until: f64) {
        if self.lease_until.is_none_or(|u| u < until) {
            self.lease_until = Some(until);
        }
    }

    /// One reconciler pass with the real `reconcile`, executed at once on
    /// the machine. Returns the number of actions.
    pub fn reconcile_pass(&mut self, lease_valid: bool) -> usize {
        let observed = Observed {
            addresses: self.machine.addresses.clone(),
            instances: self.machine.instances.clone(),
        };
        let actions = reconcile(&self.state, self.id, lease_valid, &observed);
        let n = actions.len();
        for action in actions {
            match action {
                Action::Stop { slot, .. } => {
                    self.machine.instances.remove(&slot);
                }
                Action::Release { ip, .. } => {
                    self.machine.addresses.remove(&ip.addr);
                }
                Action::Bind { ip, .. } => {
                    self.machine.addresses.insert(ip.addr);
                }
                Action::Announce { .. } => {}
                Action::StartMaster { slot, epoch, .. } => {
                    // run.rs re-checks the lease right before starting.
                    if lease_valid {
                        self.machine.instances.insert(slot, Instance::Master { epoch });
                    }
                }
                Action::StartReplica { slot, epoch, .. } => {
                    self.machine.instances.insert(slot, Instance::Replica { epoch });
                }
            }
        }
        n
    }
}
