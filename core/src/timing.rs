//! Every timing a decision depends on, in one place: the node's `[timing]`
//! and `[switchover]` tables (read by the agent's `config`, defaults here),
//! and the fixed intervals and bounds of the agent's loops that the rules
//! (and the simulation, which runs the rules in virtual time) count on.

use std::time::Duration;

use serde::Deserialize;
use slotd_raft_store::ClusterTimings;

/// The `[timing]` table, all in milliseconds. Kept as plain integers (not
/// `Duration`) so the file format is obvious; use the accessor methods in code.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timing {
    /// How often a node reports liveness (and renews its master leases).
    pub heartbeat_ms: u64,
    /// How long a master lease lasts without renewal; a master that cannot
    /// renew demotes itself before this runs out.
    pub lease_ms: u64,
    /// Extra wait after a lease expires before another node may promote, to
    /// cover clock-rate differences between machines.
    pub clock_skew_margin_ms: u64,
    /// Lower bound of the randomised Raft election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised Raft election timeout.
    pub election_timeout_max_ms: u64,
    /// Interval of Raft leader heartbeats (AppendEntries when idle).
    pub raft_heartbeat_ms: u64,
    /// A master re-announces its IPs this often: shorter than common switch
    /// MAC ageing (300 s), so a switch that forgot the port relearns it.
    pub announce_refresh_ms: u64,
    /// How long to listen for another machine answering for an IP before
    /// binding it (RFC 5227 probe).
    pub probe_timeout_ms: u64,
}

impl Default for Timing {
    /// The cluster's keys at `ClusterTimings`' defaults, and this node's own.
    fn default() -> Self {
        Timing::of(&ClusterTimings::default(), 60_000, 200)
    }
}

impl Timing {
    /// The keys that are the cluster's, as these values.
    pub fn cluster(&self) -> ClusterTimings {
        ClusterTimings {
            heartbeat_ms: self.heartbeat_ms,
            lease_ms: self.lease_ms,
            clock_skew_margin_ms: self.clock_skew_margin_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
            raft_heartbeat_ms: self.raft_heartbeat_ms,
        }
    }

    /// These timings with the cluster's in place of this node's own.
    pub fn with_cluster(&self, c: &ClusterTimings) -> Timing {
        Timing::of(c, self.announce_refresh_ms, self.probe_timeout_ms)
    }

    /// The cluster's `c` and this node's own keys.
    fn of(c: &ClusterTimings, announce_refresh_ms: u64, probe_timeout_ms: u64) -> Timing {
        Timing {
            heartbeat_ms: c.heartbeat_ms,
            lease_ms: c.lease_ms,
            clock_skew_margin_ms: c.clock_skew_margin_ms,
            election_timeout_min_ms: c.election_timeout_min_ms,
            election_timeout_max_ms: c.election_timeout_max_ms,
            raft_heartbeat_ms: c.raft_heartbeat_ms,
            announce_refresh_ms,
            probe_timeout_ms,
        }
    }

    /// `heartbeat_ms` as a `Duration`.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    /// `announce_refresh_ms` as a `Duration`.
    pub fn announce_refresh(&self) -> Duration {
        Duration::from_millis(self.announce_refresh_ms)
    }

    /// `probe_timeout_ms` as a `Duration`.
    pub fn probe_timeout(&self) -> Duration {
        Duration::from_millis(self.probe_timeout_ms)
    }

    /// `lease_ms` as a `Duration`.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// `clock_skew_margin_ms` as a `Duration`.
    pub fn clock_skew_margin(&self) -> Duration {
        Duration::from_millis(self.clock_skew_margin_ms)
    }

    /// `election_timeout_min_ms` as a `Duration`.
    pub fn election_timeout_min(&self) -> Duration {
        Duration::from_millis(self.election_timeout_min_ms)
    }

    /// `election_timeout_max_ms` as a `Duration`.
    pub fn election_timeout_max(&self) -> Duration {
        Duration::from_millis(self.election_timeout_max_ms)
    }

    /// `raft_heartbeat_ms` as a `Duration`.
    pub fn raft_heartbeat(&self) -> Duration {
        Duration::from_millis(self.raft_heartbeat_ms)
    }

    /// The longest a change of Raft leader keeps a node from renewing its
    /// lease, from the old leader's last heartbeat to the first grant of the
    /// new one, as openraft 0.9 times elections (E = `election_timeout_max`,
    /// a tick = 1.5 Raft heartbeats):
    /// - a follower votes for a candidate only once its *leader lease* (E)
    ///   has passed since it last heard the leader, and campaigns only after
    ///   that lease plus its own election timeout (≤ E), on a tick;
    /// - a node that once campaigned and was told of a longer log waits 2E
    ///   more before it campaigns next (`smaller_log_timeout`, kept until
    ///   that campaign);
    /// - votes of one term are ordered by node id: a candidate with a shorter
    ///   log but a higher id that campaigned first in the same term refuses
    ///   the one that can win, which tries again after its election timeout
    ///   and a tick.
    ///
    /// So 5E + 2 ticks, then the node hearing of the new leader, renewing at
    /// once, and the new leader's first entry ([`LEADER_CHANGE_SLACK`]).
    /// With five voters each further shorter-log candidate can cost another
    /// E + tick; the defaults leave room for one.
    pub fn leader_change(&self) -> Duration {
        Duration::from_millis(5 * self.election_timeout_max_ms + 3 * self.raft_heartbeat_ms) + LEADER_CHANGE_SLACK
    }
}

/// Upper bound for every timing (one hour). Far above any sane setting; it
/// exists so that `Instant + Duration` arithmetic on configured values can
/// never overflow and panic.
pub const MAX_TIMING_MS: u64 = 3_600_000;

/// A timing that breaks a rule: its key (with the caller's prefix) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub reason: String,
}

fn invalid(p: &str, key: &str, reason: String) -> Invalid {
    Invalid {
        key: format!("{p}{key}"),
        reason,
    }
}

/// The rules the cluster-wide timings must keep, the same for a node's
/// file (`--check-config`, keys prefixed `timing.`) and for `slotctl config
/// set` (no prefix). `fencer`: a fencer runs beside the agents, and the
/// margin must pass its rule (`node::fencer::check`: its tick and its pass).
pub fn check(t: &Timing, fencer: Option<fn(Duration) -> Result<(), String>>, p: &str) -> Result<(), Invalid> {
    for (key, value) in t.cluster().pairs() {
        if value == 0 {
            return Err(invalid(p, key, "must be greater than 0".to_owned()));
        }
        if value > MAX_TIMING_MS {
            return Err(invalid(
                p,
                key,
                format!("must be at most {MAX_TIMING_MS} (one hour), got {value}"),
            ));
        }
    }
    // Pairs that must keep their order (less, more); which key the error
    // names: the smaller, or (the lease) the larger.
    let ordered = [
        ("heartbeat_ms", t.heartbeat_ms, "lease_ms", t.lease_ms, false),
        (
            "clock_skew_margin_ms",
            t.clock_skew_margin_ms,
            "lease_ms",
            t.lease_ms,
            true,
        ),
        (
            "election_timeout_min_ms",
            t.election_timeout_min_ms,
            "election_timeout_max_ms",
            t.election_timeout_max_ms,
            true,
        ),
        (
            "raft_heartbeat_ms",
            t.raft_heartbeat_ms,
            "election_timeout_min_ms",
            t.election_timeout_min_ms,
            true,
        ),
    ];
    for (less, small, more, large, blame_less) in ordered {
        if small >= large {
            return Err(if blame_less {
                invalid(p, less, format!("must be less than {p}{more} ({large})"))
            } else {
                invalid(p, more, format!("must be greater than {p}{less} ({small})"))
            });
        }
    }
    if let Some(fencer) = fencer {
        fencer(t.clock_skew_margin()).map_err(|reason| invalid(p, "clock_skew_margin_ms", reason))?;
    }
    // The elector asks the other voters once a node has heard no leader
    // for election_timeout_min_ms; its answers must be in before
    // openraft's own wait (election_timeout_max_ms more) is over, or it
    // would slow every change of leader.
    let asking = ELECTOR_EVERY + ELECTOR_CALL_TIMEOUT;
    if u128::from(t.election_timeout_max_ms) < asking.as_millis() {
        return Err(invalid(
            p,
            "election_timeout_max_ms",
            format!(
                "must be at least {} (the elector's round and its answers' deadline), or every change of \
                 leader waits for the elector",
                asking.as_millis()
            ),
        ));
    }
    // A change of Raft leader must not end any lease: the last grant of
    // the old leader (sent up to a heartbeat before it died) must last
    // until the new leader's first grant.
    let needed = t.heartbeat() + t.leader_change();
    if t.lease() < needed {
        return Err(invalid(
            p,
            "lease_ms",
            format!(
                "must be at least {} to outlast a change of Raft leader: heartbeat_ms ({}) + 5 × \
                 election_timeout_max_ms ({}) + 3 × raft_heartbeat_ms ({}) + {} ms; with less, every \
                 master fences itself when the leader dies (raise lease_ms, or lower the election timeouts)",
                needed.as_millis(),
                t.heartbeat_ms,
                t.election_timeout_max_ms,
                t.raft_heartbeat_ms,
                LEADER_CHANGE_SLACK.as_millis()
            ),
        ));
    }
    Ok(())
}

/// How often a voter asks the others whether they hear a leader (see
/// `node::elector`), and how long it waits for their answers.
pub const ELECTOR_EVERY: Duration = Duration::from_millis(20);
pub const ELECTOR_CALL_TIMEOUT: Duration = Duration::from_millis(50);

/// How often a node with no leader it can renew with (none known, or it
/// gave up leading itself) asks every other voter for its lease: the first
/// to lead once the renewal arrives grants it, without the node first
/// hearing of the new leader (on a slow link, two one-way trips sooner).
pub const RENEW_WITHOUT_LEADER_EVERY: Duration = Duration::from_millis(50);

/// Round trips and disk writes of a change of leader (vote, first entry,
/// renewal, quorum round), with room for a loaded machine.
pub const LEADER_CHANGE_SLACK: Duration = Duration::from_millis(100);
/// The `[switchover]` table. The leader's values govern the switchovers it
/// conducts; `stop_drain_timeout_ms` is this node's own.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwitchoverConfig {
    /// The old master must have stopped taking clients and flushed its sync
    /// log within this, or the switchover rolls back.
    pub demote_timeout_ms: u64,
    /// The new master must serve (IP bound, announced, Cyrus started as
    /// master) within this, or the store switches back.
    pub promote_timeout_ms: u64,
    /// A replica further behind than this (bytes of its master's sync log)
    /// does not get the master, unless `--force`.
    pub max_backlog_bytes: u64,
    /// Switchovers at a time of `slotctl drain` without `--concurrency`.
    pub drain_concurrency: u32,
    /// On SIGTERM, how long the agent hands its masters over before it
    /// fences the rest and exits; 0 skips that. Keep it below the unit's
    /// `TimeoutStopSec`.
    pub stop_drain_timeout_ms: u64,
}

impl Default for SwitchoverConfig {
    fn default() -> Self {
        SwitchoverConfig {
            demote_timeout_ms: 20_000,
            promote_timeout_ms: 10_000,
            max_backlog_bytes: 1 << 20,
            drain_concurrency: 4,
            stop_drain_timeout_ms: 30_000,
        }
    }
}

impl SwitchoverConfig {
    pub fn demote_timeout(&self) -> Duration {
        Duration::from_millis(self.demote_timeout_ms)
    }

    pub fn promote_timeout(&self) -> Duration {
        Duration::from_millis(self.promote_timeout_ms)
    }

    pub fn stop_drain_timeout(&self) -> Duration {
        Duration::from_millis(self.stop_drain_timeout_ms)
    }
}

// The leader.

/// How long a fence ticket stays good: a notice presented later is refused.
/// `slotd fence` waits this (plus the clock margin) before it exits with a
/// notice unanswered.
pub const TICKET_FRESH: Duration = Duration::from_secs(1);

/// After a rollback, a drain tries the store again only this much later
/// (doubling with each rollback of the same store, up to [`MAX_COOLING`]).
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The longest a drain leaves a store alone after rollbacks.
pub const MAX_COOLING: Duration = Duration::from_secs(300);

// This machine's reconciler.

/// How often the machine is compared with the log even when nothing changed.
pub const RESYNC: Duration = Duration::from_secs(1);

/// A master IP is bound, or Cyrus started as master, only with at least this
/// much lease left: an action must not straddle the lease's end.
pub const TAKE_GUARD: Duration = Duration::from_millis(300);

/// How long a failed demote waits before it is tried again.
pub const DEMOTE_RETRY: Duration = RESYNC;

/// The deadline of one kernel call (netlink: bind, release, list; a
/// packet send): they take a millisecond, and a kernel that does not answer
/// (a reply dropped under ENOBUFS) must not hold a pass. A fence that
/// cannot give up its addresses escalates long before this (the watchdog,
/// after [`STALL_BOUND`]); the deadline lets the rest of the pass go on.
pub const KERNEL_CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// The deadline of a driver's look at its instances (and its other quick
/// answers: backlog, leftover sync log).
pub const DRIVER_LOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the running instances are checked.
pub const HEALTH_EVERY: Duration = Duration::from_secs(5);

/// The longest one instance's health check may take: it ends before the
/// next is due, and one that does not end counts as failing.
pub const HEALTH_CHECK_TIMEOUT: Duration = HEALTH_EVERY;

// The watchdog (see `node::watchdog`).

/// How often the reconciler marks its progress (a third of its bound).
pub const MARK_EVERY: Duration = Duration::from_millis(50);

/// The reconciler is stalled when its last mark is older than this.
pub const STALL_BOUND: Duration = Duration::from_millis(150);

/// The lease keeper and the Raft core are stalled when their last mark is
/// older than this.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(1);

/// How often the pinger looks and (if nothing stalled) pings.
pub const PING_EVERY: Duration = Duration::from_millis(25);

/// What the shipped unit sets (`WatchdogSec=200ms`).
pub const UNIT_WATCHDOG: Duration = Duration::from_millis(200);

/// Budget for systemd's kill and `slotd fence` releasing the addresses
/// (measured: a few ms to start, ~1 ms per address). It holds only with
/// the fence run outside the unit's sandbox (`ExecStopPost=+…`, as the
/// shipped unit has it): systemd takes [`FENCE_SANDBOX_TIME`] more to set
/// that up for each process.
pub const FENCE_TIME: Duration = Duration::from_millis(60);

/// What setting up the shipped unit's sandbox (`Protect*`, `Private*`…)
/// costs a process systemd starts (measured: about 80 ms): with a
/// sandboxed `ExecStopPost`, the worst case would be over the default
/// margin.
pub const FENCE_SANDBOX_TIME: Duration = Duration::from_millis(80);

// `slotd fence` (see `node::fence`).

/// How long one call of `slotd fence` to a peer may take.
pub const FENCE_CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// Pause between rounds of `slotd fence` over the nodes while no leader
/// answers (an election may be under way).
pub const FENCE_RETRY: Duration = Duration::from_millis(50);

// Stopping is draining (see `node::stop`).

/// How long a stopping agent waits for the leader to take its drain order
/// (without a quorum there is nobody to hand masters to: fence at once).
pub const STOP_ORDER_TIMEOUT: Duration = Duration::from_secs(5);

/// How often, and how many times, the agent tries after start to make its
/// node active again after a stop's drain (the leader may still be coming up).
pub const UNDRAIN_EVERY: Duration = Duration::from_secs(1);
pub const UNDRAIN_TRIES: u32 = 60;
