//! A seeded, reproducible discrete-event simulation of a slotd cluster in
//! virtual time, under crashes, hangs, stalls, partitions, message loss and
//! delay and clock drift, checking DESIGN's safety invariant S1 and the
//! liveness rule beside it after every step.
//!
//! It runs the agent's own code for everything it models: the state machine
//! (`ClusterState::apply`), the leader's core (`leader::core::LeaderCore`:
//! lease ledger, fresh-leader wait, who is dead, fence notices, failover
//! targets), the node's lease rules (`lease::LeaseBook`), the reconciler's
//! decision and the shape of its passes (`reconcile::{reconcile,
//! plan_pass}`), the watchdog rule (`watchdog::stalled`) and the timing
//! defaults (`config::Timing`). The simulation supplies time, the network,
//! Raft, the machines, and how long each action takes.
//!
//! Modules, one concept each:
//! - `rng`: the seeded generator every choice comes from;
//! - `clock`: per-node monotonic clocks running at 1 ± ε;
//! - `network`: partitions, delayed and lost messages;
//! - `raft`: each node's openraft-like vote, roles and election timing;
//! - `pass`: a reconciler pass in time (probes, binds, announcements and
//!   Cyrus starts take time);
//! - `node`: a machine (IPs, instances) and its agent;
//! - `checker`: S1, the lease rule, liveness and convergence;
//! - `world`: the step loop and the fault schedule.
//!
//! See `tests/tests/simulation.rs` for the model in full.

pub mod checker;
pub mod clock;
pub mod network;
pub mod node;
pub mod pass;
pub mod raft;
pub mod rng;
pub mod world;

use std::time::Duration;

use slotd_agent::config::Timing;

pub use world::{run_seed, Failure, SeedReport};

/// Deliberate deviations from the real protocol: the default is the
/// protocol as DESIGN and `agent/` implement it; the others exist to prove
/// the checkers catch a broken one (teeth), or to try a fix.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    /// Nodes act as master whatever their lease says (broken).
    pub ignore_lease: bool,
    /// The failure detector's margin (real: `clock_skew_margin`).
    pub detector_margin: Duration,
    /// A fresh leader waits `lease + margin` before any failover (real: yes).
    pub fresh_leader_wait: bool,
    /// A granted lease counts only once the node has applied the log up to
    /// the leader's read index (real: yes).
    pub lease_waits_for_log: bool,
    /// Inject agent hangs and reconciler stalls (real: yes, in CI).
    pub stalls: bool,
    /// Masters probe for another answering machine before they bind (RFC
    /// 5227, real: yes). Off, the checkers see the lease protocol alone.
    pub probes: bool,
    /// Largest clock rate error ε (real assumption: drift over a lease
    /// stays within the margin).
    pub clock_epsilon: f64,
    /// The reconciler before this issue: a pass is cut at the lease end
    /// read when it began (even if renewed), and announcements run one
    /// after another inside the pass (broken: flaps at scale).
    pub old_reconciler: bool,
    /// openraft's timing with the former defaults: elections 600–1200 ms,
    /// Raft heartbeat 150 ms (broken: a leader change ends every lease).
    pub old_elections: bool,
    /// The former unit's watchdog: 1 s, longer than the margin (broken:
    /// a hung agent outlives its lease by more than the margin).
    pub old_watchdog: bool,
}

impl Variant {
    /// The protocol as implemented.
    pub const REAL: Variant = Variant {
        ignore_lease: false,
        detector_margin: Duration::from_millis(500),
        fresh_leader_wait: true,
        lease_waits_for_log: true,
        stalls: true,
        probes: true,
        clock_epsilon: 0.1,
        old_reconciler: false,
        old_elections: false,
        old_watchdog: false,
    };

    /// From `SLOTD_SIM_VARIANT`: `real` (default), `old-reconciler`,
    /// `old-elections`, `old-watchdog`, `no-read-index` (and no probes),
    /// `no-probes`, `no-stalls`.
    pub fn from_env() -> Variant {
        let real = Variant::REAL;
        match std::env::var("SLOTD_SIM_VARIANT").as_deref() {
            Ok("old-reconciler") => Variant {
                old_reconciler: true,
                ..real
            },
            Ok("old-elections") => Variant {
                old_elections: true,
                ..real
            },
            Ok("old-watchdog") => Variant {
                old_watchdog: true,
                ..real
            },
            Ok("no-read-index") => Variant {
                lease_waits_for_log: false,
                probes: false,
                ..real
            },
            Ok("no-probes") => Variant { probes: false, ..real },
            Ok("no-stalls") => Variant { stalls: false, ..real },
            _ => real,
        }
    }

    /// The timings this variant runs with, in ms.
    pub fn timing(&self) -> SimTiming {
        let t = if self.old_elections {
            Timing {
                election_timeout_min_ms: 600,
                election_timeout_max_ms: 1200,
                raft_heartbeat_ms: 150,
                ..Timing::default()
            }
        } else {
            Timing::default()
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        SimTiming {
            heartbeat: t.heartbeat_ms as f64,
            lease: t.lease_ms as f64,
            margin: t.clock_skew_margin_ms as f64,
            election_min: t.election_timeout_min_ms as f64,
            election_max: t.election_timeout_max_ms as f64,
            raft_heartbeat: t.raft_heartbeat_ms as f64,
            probe: t.probe_timeout_ms as f64,
            watchdog: if self.old_watchdog {
                1000.0
            } else {
                ms(slotd_agent::watchdog::UNIT_WATCHDOG)
            },
            ping_every: ms(slotd_agent::watchdog::PING_EVERY),
        }
    }
}

/// Timings in ms, from the agent's defaults.
#[derive(Clone, Copy, Debug)]
pub struct SimTiming {
    pub heartbeat: f64,
    pub lease: f64,
    pub margin: f64,
    pub election_min: f64,
    pub election_max: f64,
    pub raft_heartbeat: f64,
    pub probe: f64,
    /// systemd's `WatchdogSec` of the shipped unit.
    pub watchdog: f64,
    pub ping_every: f64,
}

/// How long the agent's actions take on a machine (true ms), and the run's
/// bounds.
pub mod timing {
    /// A bind or release (netlink, acknowledged).
    pub const CHANGE: f64 = 1.0;
    /// One announcement round (raw socket).
    pub const ANNOUNCE_ROUND: f64 = 1.0;
    /// Between announcement rounds (three rounds, as shipped).
    pub const ANNOUNCE_INTERVAL: f64 = 100.0;
    pub const ANNOUNCE_ROUNDS: u32 = 3;
    /// Stopping an instance.
    pub const STOP: f64 = 5.0;
    /// A master IP is bound, or Cyrus started as master, only with this
    /// much lease left (`reconcile::run` TAKE_GUARD).
    pub const TAKE_GUARD: f64 = 300.0;
    /// Reconciler resync period (`reconcile::run` RESYNC).
    pub const RESYNC: f64 = 1000.0;
    /// `slotd fence` retries its round over the nodes this often.
    pub const FENCE_RETRY: f64 = 50.0;
    /// One simulation step.
    pub const STEP: u64 = 10;
    /// Faults start in `FAULTS_FROM..FAULTS_UNTIL` and are all over by `HEALED_BY`.
    pub const FAULTS_FROM: u64 = 1_000;
    pub const FAULTS_UNTIL: u64 = 36_000;
    pub const HEALED_BY: u64 = 42_000;
    /// Virtual time per seed; the quiet time before it is for liveness.
    pub const END: u64 = 58_000;
}
