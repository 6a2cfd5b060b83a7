//! A seeded, reproducible discrete-event simulation of a slotd cluster in
//! virtual time, driving the project's real decision code
//! (`ClusterState::apply`, `decide::failover_targets`, `reconcile::reconcile`)
//! under crashes, hangs, partitions, message loss and delay and clock drift,
//! and checking DESIGN's safety invariant S1 after every step.
//!
//! Modules, one concept each:
//! - `rng`: the seeded generator every choice comes from;
//! - `clock`: per-node monotonic clocks running at 1 ± ε;
//! - `network`: partitions, delayed and lost messages;
//! - `node`: a machine (IPs, instances) and its agent (applied log, lease,
//!   believed leader, the real reconciler);
//! - `raft`: the abstracted Raft log and leadership, and the real failure
//!   detector decision;
//! - `checker`: S1, the lease rule, and convergence;
//! - `world`: the step loop and the fault schedule.
//!
//! See `tests/tests/simulation.rs` for the model in full.

pub mod checker;
pub mod clock;
pub mod network;
pub mod node;
pub mod raft;
pub mod rng;
pub mod world;

pub use world::{run_seed, Failure, SeedReport};

/// Deliberate deviations from the real protocol: the default is the
/// protocol as DESIGN and `agent/` implement it; the others exist to prove
/// the checker catches a broken one, or to try a fix.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    /// Nodes act as master whatever their lease says (broken).
    pub ignore_lease: bool,
    /// The failure detector's margin in ms (real: `clock_skew_margin`).
    pub detector_margin_ms: f64,
    /// A fresh leader waits `lease + margin` before any failover (real: yes).
    pub fresh_leader_wait: bool,
    /// A granted lease counts only once the node has applied the log up to
    /// the leader's read index at grant time (real: yes, `Granted::read_index`).
    /// Without it a node whose lease is renewed before its log catches up
    /// serves as master of a store already failed away from it (the
    /// simulation found this; seed 4).
    pub lease_waits_for_log: bool,
    /// Also inject agent hangs (caught by systemd's watchdog).
    pub freezes: bool,
    /// Largest clock rate error ε (real assumption: drift over a lease
    /// stays within the margin; 0.1 → ≤ 200 ms per node over 2 s).
    pub clock_epsilon: f64,
}

impl Variant {
    /// The protocol as implemented.
    pub const REAL: Variant = Variant {
        ignore_lease: false,
        detector_margin_ms: 500.0,
        fresh_leader_wait: true,
        lease_waits_for_log: true,
        freezes: false,
        clock_epsilon: 0.1,
    };
}

impl Variant {
    /// From `SLOTD_SIM_VARIANT`: `real` (default), `real+hangs`,
    /// `no-read-index` (the protocol before the read-index fix).
    pub fn from_env() -> Variant {
        match std::env::var("SLOTD_SIM_VARIANT").as_deref() {
            Ok("real+hangs") => Variant {
                freezes: true,
                ..Variant::REAL
            },
            Ok("no-read-index") => Variant {
                lease_waits_for_log: false,
                ..Variant::REAL
            },
            _ => Variant::REAL,
        }
    }
}

/// Timings (DESIGN defaults) and the run's bounds, in ms.
pub mod timing {
    pub const HEARTBEAT: f64 = 200.0;
    pub const LEASE: f64 = 2000.0;
    pub const MARGIN: f64 = 500.0;
    /// systemd `WatchdogSec` (DESIGN: 1 s); the agent pings every step.
    pub const WATCHDOG: f64 = 1000.0;
    /// Reconciler resync period (run.rs `RESYNC`).
    pub const RESYNC: f64 = 1000.0;
    /// Leader → follower AppendEntries/heartbeat period.
    pub const APPEND_EVERY: u64 = 50;
    pub const ELECTION_MIN: u64 = 600;
    pub const ELECTION_MAX: u64 = 2400;
    /// One simulation step.
    pub const STEP: u64 = 10;
    /// Faults start in `FAULTS_FROM..FAULTS_UNTIL` and are all over by `HEALED_BY`.
    pub const FAULTS_FROM: u64 = 1_000;
    pub const FAULTS_UNTIL: u64 = 36_000;
    pub const HEALED_BY: u64 = 42_000;
    /// Virtual time per seed; the quiet time before it is for liveness.
    pub const END: u64 = 56_000;
}
