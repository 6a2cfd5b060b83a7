//! A seeded, reproducible discrete-event simulation of a slotd cluster in
//! virtual time, under crashes, hangs, stalls, partitions, message loss and
//! delay and clock drift, with operators ordering switchovers, drains,
//! undrains and rebalances meanwhile, checking DESIGN's safety invariant S1
//! and the liveness rules beside it after every step.
//!
//! It runs the agent's own code for everything it models — the state
//! machine (`ClusterState::apply`) and the pure decisions of `slotd-core`:
//! the leader's core (`leader::LeaderCore`: lease ledger, fresh-leader
//! wait, who is dead, who is down, fence notices, failover targets, phase
//! acks and backlogs from health reports, the failover entry it decides
//! and how it is settled), the engine's switchover rounds
//! (`leader::conductor::Conductor`, the conductor's memory and facts
//! included), the operator's commands as the leader checks them
//! (`leader::switchover::{failover_command, stranded, rebalance_plan}`), the
//! node's lease rules (`node::lease::LeaseBook`), the reconciler's
//! decision, its reports and the shape of its passes
//! (`node::reconcile::{reconcile, phase_done, leftovers_settled,
//! plan_pass}`), the watchdog rule (`node::watchdog::verdict`), and every
//! timing they count on (`timing`: the `[timing]` and `[switchover]`
//! defaults, the loops' intervals, `slotd fence`'s timings). The simulation
//! supplies time, the network, Raft, the machines, the operators, and how
//! long each action takes.
//!
//! Modules, one concept each:
//! - `rng`: the seeded generator every choice comes from;
//! - `clock`: per-node monotonic clocks running at 1 ± ε;
//! - `network`: partitions, delayed and lost messages;
//! - `raft`: each node's openraft-like vote, roles and election timing;
//! - `pass`: a reconciler pass in time (probes, binds, announcements and
//!   Cyrus starts take time);
//! - `node`: a machine (IPs, instances) and its agent;
//! - `switchover`: the leader engine's memory while it conducts
//!   switchovers, and the operators' schedule;
//! - `checker`: S1, the lease rule, liveness, stuck switchovers and
//!   convergence;
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
pub mod switchover;
pub mod world;

use std::time::Duration;

use slotd_core::leader::switchover::SwitchoverTiming;
use slotd_core::leader::LeaderTiming;
use slotd_core::node::fence;
use slotd_core::timing::{SwitchoverConfig, Timing};

pub use world::{run_seed, Failure, SeedReport};

/// Deliberate deviations from the real protocol: the default is the
/// protocol as DESIGN and `agent/` implement it; the others exist to prove
/// the checkers catch a broken one (teeth), or to try a fix.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    /// Nodes act as master whatever their lease says (broken).
    pub ignore_lease: bool,
    /// The failure detector runs without the clock margin (broken; real:
    /// `clock_skew_margin`).
    pub detector_without_margin: bool,
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
    /// The leader drops every `RollbackSwitchover` the conductor asks for
    /// (broken: a switchover whose attempt failed never ends).
    pub no_rollback: bool,
    /// Operators order rebalances (real: yes). Off, the same seeds run
    /// every other command: the rest of the switchover machinery apart
    /// from the rebalance.
    pub rebalances: bool,
}

impl Variant {
    /// The protocol as implemented.
    pub const REAL: Variant = Variant {
        ignore_lease: false,
        detector_without_margin: false,
        fresh_leader_wait: true,
        lease_waits_for_log: true,
        stalls: true,
        probes: true,
        clock_epsilon: 0.1,
        old_reconciler: false,
        old_elections: false,
        old_watchdog: false,
        no_rollback: false,
        rebalances: true,
    };
    pub const OLD_RECONCILER: Variant = Variant {
        old_reconciler: true,
        ..Variant::REAL
    };
    pub const OLD_ELECTIONS: Variant = Variant {
        old_elections: true,
        ..Variant::REAL
    };
    pub const OLD_WATCHDOG: Variant = Variant {
        old_watchdog: true,
        ..Variant::REAL
    };
    /// Leases that count before the log reached the read index (and no
    /// probe, which would also stop the second master).
    pub const NO_READ_INDEX: Variant = Variant {
        lease_waits_for_log: false,
        probes: false,
        ..Variant::REAL
    };
    pub const NO_PROBES: Variant = Variant {
        probes: false,
        ..Variant::REAL
    };
    pub const NO_STALLS: Variant = Variant {
        stalls: false,
        ..Variant::REAL
    };
    /// Nodes that ignore their lease (no probe to save them).
    pub const IGNORE_LEASE: Variant = Variant {
        ignore_lease: true,
        probes: false,
        ..Variant::REAL
    };
    /// A failure detector without margin or fresh-leader wait (no probe).
    pub const NO_DETECTOR_WAIT: Variant = Variant {
        detector_without_margin: true,
        fresh_leader_wait: false,
        probes: false,
        ..Variant::REAL
    };

    pub const NO_ROLLBACK: Variant = Variant {
        no_rollback: true,
        ..Variant::REAL
    };
    /// The protocol as implemented, operators that never rebalance.
    pub const NO_REBALANCE: Variant = Variant {
        rebalances: false,
        ..Variant::REAL
    };

    /// Every variant by the name `SLOTD_SIM_VARIANT` and `sim-survey` use.
    pub const NAMED: &[(&str, Variant)] = &[
        ("real", Variant::REAL),
        ("old-reconciler", Variant::OLD_RECONCILER),
        ("old-elections", Variant::OLD_ELECTIONS),
        ("old-watchdog", Variant::OLD_WATCHDOG),
        ("no-read-index", Variant::NO_READ_INDEX),
        ("no-probes", Variant::NO_PROBES),
        ("no-stalls", Variant::NO_STALLS),
        ("ignore-lease", Variant::IGNORE_LEASE),
        ("no-detector-wait", Variant::NO_DETECTOR_WAIT),
        ("no-rollback", Variant::NO_ROLLBACK),
        ("no-rebalance", Variant::NO_REBALANCE),
    ];

    /// From `SLOTD_SIM_VARIANT` (a name of [`Variant::NAMED`]; `real` when
    /// unset or unknown).
    pub fn from_env() -> Variant {
        let name = std::env::var("SLOTD_SIM_VARIANT").unwrap_or_default();
        Variant::NAMED
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Variant::REAL, |(_, v)| *v)
    }

    /// The `[switchover]` table every agent runs with (the defaults).
    pub fn switchover(&self) -> SwitchoverConfig {
        SwitchoverConfig::default()
    }

    /// The timings this variant runs with.
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
        let switchover = self.switchover();
        let mut leader = LeaderTiming::of(&t);
        if self.detector_without_margin {
            leader.margin = Duration::ZERO;
        }
        SimTiming {
            heartbeat: t.heartbeat_ms as f64,
            lease: t.lease_ms as f64,
            margin: t.clock_skew_margin_ms as f64,
            election_min: t.election_timeout_min_ms as f64,
            election_max: t.election_timeout_max_ms as f64,
            raft_heartbeat: t.raft_heartbeat_ms as f64,
            raft_tick: t.raft_heartbeat_ms as f64 * 1.5,
            probe: t.probe_timeout_ms as f64,
            watchdog: if self.old_watchdog {
                1000.0
            } else {
                ms(slotd_core::timing::UNIT_WATCHDOG)
            },
            ping_every: ms(slotd_core::timing::PING_EVERY),
            fence_telling: ms(fence::telling_for(&t)),
            fence_in_doubt: ms(fence::in_doubt_for(&t)),
            leader,
            switchover: SwitchoverTiming::of(&switchover),
            demote_timeout: ms(switchover.demote_timeout()),
            stuck: 2.0 * (ms(switchover.demote_timeout()) + ms(switchover.promote_timeout())) + 10_000.0,
        }
    }
}

/// A duration in the simulation's unit (ms, as `f64`).
pub const fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// Timings in ms, from the agent's defaults and rules, and the leader
/// core's own.
#[derive(Clone, Copy, Debug)]
pub struct SimTiming {
    pub heartbeat: f64,
    pub lease: f64,
    /// `clock_skew_margin`, as the checkers count it.
    pub margin: f64,
    pub election_min: f64,
    pub election_max: f64,
    pub raft_heartbeat: f64,
    /// openraft's election tick: 1.5 Raft heartbeats.
    pub raft_tick: f64,
    pub probe: f64,
    /// systemd's `WatchdogSec` of the shipped unit.
    pub watchdog: f64,
    pub ping_every: f64,
    /// How long `slotd fence` tries to tell a leader, and how long after a
    /// ticket an unanswered notice keeps it waiting (`fence`).
    pub fence_telling: f64,
    pub fence_in_doubt: f64,
    /// What the leader core runs with (the variant's detector margin).
    pub leader: LeaderTiming,
    /// The conductor's timings (`[switchover]` defaults: demote 20 s,
    /// promote 10 s, a drain retries a rolled-back store after 5 s).
    pub switchover: SwitchoverTiming,
    /// How long a node's demote action may take before it fails (the
    /// reconciler gives it the phase's time, `demote_timeout_ms`).
    pub demote_timeout: f64,
    /// Once faults are over and a leader has settled, a switchover, a
    /// drain or a rebalance that makes no progress for this long is stuck:
    /// 2 × (demote + promote timeouts) + 10 s.
    pub stuck: f64,
}

/// How long the agent's actions take on a machine (true ms), and the run's
/// bounds.
pub mod timing {
    use slotd_netops::AnnounceOptions;

    use super::ms;

    /// A bind or release (netlink, acknowledged).
    pub const CHANGE: f64 = 1.0;
    /// One announcement round (raw socket).
    pub const ANNOUNCE_ROUND: f64 = 1.0;
    /// Between announcement rounds, and how many (as the agent sends them).
    pub const ANNOUNCE_INTERVAL: f64 = ms(AnnounceOptions::DEFAULT.interval);
    pub const ANNOUNCE_ROUNDS: u32 = AnnounceOptions::DEFAULT.count;
    /// Stopping an instance.
    pub const STOP: f64 = 5.0;
    /// Reconciler resync period.
    pub const RESYNC: f64 = ms(slotd_core::timing::RESYNC);
    /// `slotd fence` retries its round over the nodes this often, and
    /// gives up on one call after this long.
    pub const FENCE_RETRY: f64 = ms(slotd_core::timing::FENCE_RETRY);
    pub const FENCE_CALL_TIMEOUT: f64 = ms(slotd_core::timing::FENCE_CALL_TIMEOUT);
    /// One simulation step.
    pub const STEP: u64 = 10;
    /// Faults (and operators' commands) start in `FAULTS_FROM..FAULTS_UNTIL`
    /// and are all over by `HEALED_BY`.
    pub const FAULTS_FROM: u64 = 1_000;
    pub const FAULTS_UNTIL: u64 = 36_000;
    pub const HEALED_BY: u64 = 42_000;
    /// Virtual time per seed; the quiet time before it is for liveness.
    pub const END: u64 = 58_000;
    /// A seed whose switchovers, drains or rebalance are still under way at
    /// `END` (or with a failed attempt's action still in flight) runs on
    /// until they are over and `SETTLE` more has passed, but not past
    /// `END_MAX`: the stuck checker has long caught a stuck one by then.
    pub const SETTLE: u64 = 5_000;
    pub const END_MAX: u64 = 200_000;
}
