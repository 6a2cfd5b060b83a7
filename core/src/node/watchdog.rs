//! The systemd watchdog, as the fence of last resort (DESIGN "Safety",
//! rule 4): the agent pings systemd only while every part that fences makes
//! progress, so a frozen or stalled agent is killed (`WatchdogSignal=SIGKILL`)
//! and fenced (`ExecStopPost=slotd fence`) before its lease plus the clock
//! margin is over — the leader's failover comes only after that.
//!
//! Each part marks its progress at least every [`MARK_EVERY`] (the lease
//! keeper, the reconciler's loop, a round trip through the Raft core); the
//! pinger pings every [`PING_EVERY`] only if the reconciler's mark is not
//! older than [`STALL_BOUND`] and the others' not older than
//! [`RECOVERY_BOUND`]. The reconciler is the part that fences: from the
//! moment it stalls (or the whole process freezes, right after a ping),
//! systemd kills the agent within `STALL_BOUND + PING_EVERY + WatchdogSec`,
//! and `slotd fence` has released the addresses [`FENCE_TIME`] later:
//! [`worst_case`] must stay below the margin ([`check`]). A stuck lease
//! keeper or Raft core cannot keep a master past its lease (no renewal, no
//! lease; the reconciler fences), so they get a longer bound that a slow
//! disk write does not reach, and a restart if they stay stuck.
//!
//! Waiting is never progress: the reconciler's loop marks while a pass
//! waits on its actions, so giving up an address is watched on its own.
//! From the moment the node must give one up (a fencing pass begins, or a
//! release is sent) until it is seen gone, the clock runs; once it has run
//! [`STALL_BOUND`] — a release that fails, never answers, or a list that
//! cannot see the interface — the pinger stops, exactly as for a stalled
//! loop, and the same arithmetic keeps the address inside the margin.

use std::fmt;
use std::time::Duration;

use crate::time::Mono;
use crate::timing::{FENCE_TIME, MARK_EVERY, PING_EVERY, RECOVERY_BOUND, STALL_BOUND};

/// The parts the watchdog watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    LeaseKeeper,
    Reconciler,
    Raft,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::LeaseKeeper, Part::Reconciler, Part::Raft];

    pub fn as_str(self) -> &'static str {
        match self {
            Part::LeaseKeeper => "lease keeper",
            Part::Reconciler => "reconciler",
            Part::Raft => "Raft core",
        }
    }

    /// How often it marks progress: a few times within its bound (the lease
    /// keeper marks on its own heartbeat, at least every `heartbeat_ms`).
    pub fn mark_every(self) -> Duration {
        match self {
            Part::Reconciler => MARK_EVERY,
            Part::LeaseKeeper | Part::Raft => RECOVERY_BOUND / 4,
        }
    }

    /// How old its last mark may be.
    pub fn bound(self) -> Duration {
        match self {
            Part::Reconciler => STALL_BOUND,
            Part::LeaseKeeper | Part::Raft => RECOVERY_BOUND,
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The parts whose last mark (`marks`, in [`Part::ALL`] order; `None`: not
/// marked yet, counted from `started`) is older than their bound at `now`.
/// Empty: ping.
pub fn stalled(marks: [Option<Mono>; 3], started: Mono, now: Mono) -> Vec<Part> {
    Part::ALL
        .into_iter()
        .zip(marks)
        .filter(|(p, m)| now.since(m.unwrap_or(started)) > p.bound())
        .map(|(p, _)| p)
        .collect()
}

/// Why the pinger holds back its ping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Withheld {
    /// These parts made no progress within [`STALL_BOUND`].
    Stalled(Vec<Part>),
    /// Giving up an address has not succeeded for this long (more than
    /// [`STALL_BOUND`]): better be killed and fenced by `slotd fence`.
    GivingUpStuck(Duration),
}

impl fmt::Display for Withheld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Withheld::Stalled(parts) => {
                let names: Vec<String> = parts.iter().map(|p| format!("the {p} (for {:?})", p.bound())).collect();
                write!(f, "no progress in {}", names.join(", "))
            }
            Withheld::GivingUpStuck(d) => write!(f, "giving up an address has not succeeded for {d:?}"),
        }
    }
}

/// The pinger's rule: ping unless a part stalled ([`stalled`]) or giving
/// up an address (since `giving_up_since`) has not succeeded within
/// [`STALL_BOUND`].
pub fn verdict(
    marks: [Option<Mono>; 3],
    started: Mono,
    now: Mono,
    giving_up_since: Option<Mono>,
) -> Result<(), Withheld> {
    let parts = stalled(marks, started, now);
    if !parts.is_empty() {
        return Err(Withheld::Stalled(parts));
    }
    match giving_up_since.map(|t| now.since(t)) {
        Some(d) if d > STALL_BOUND => Err(Withheld::GivingUpStuck(d)),
        _ => Ok(()),
    }
}

/// The pinger's rule once the agent stops. Its loops end on purpose (their
/// marks go stale), but systemd keeps `WatchdogSec` running through a stop,
/// and the stop goes on: the reconciler's last pass gives up every master
/// role (instances stopped, addresses released), then Raft and the servers
/// close, each bounded. So: while that pass runs (`last_pass_done` false),
/// ping only while the reconciler's mark (`reconciler`, counted from
/// `since`, when the stop began, if older) is within [`STALL_BOUND`]; after
/// it, ping to the end; and throughout, not once giving up an address has
/// not succeeded within [`STALL_BOUND`] — then systemd kills the agent and
/// `slotd fence` releases what it could not.
pub fn verdict_stopping(
    reconciler: Option<Mono>,
    since: Mono,
    now: Mono,
    last_pass_done: bool,
    giving_up_since: Option<Mono>,
) -> Result<(), Withheld> {
    let mark = reconciler.map_or(since, |m| m.max(since));
    if !last_pass_done && now.since(mark) > Part::Reconciler.bound() {
        return Err(Withheld::Stalled(vec![Part::Reconciler]));
    }
    match giving_up_since.map(|t| now.since(t)) {
        Some(d) if d > STALL_BOUND => Err(Withheld::GivingUpStuck(d)),
        _ => Ok(()),
    }
}

/// The longest a stalled or frozen agent may keep its addresses with the
/// watchdog set to `watchdog` (`WatchdogSec`).
pub fn worst_case(watchdog: Duration) -> Duration {
    STALL_BOUND + PING_EVERY + watchdog + FENCE_TIME
}

/// Whether `watchdog` (`WatchdogSec`) is short enough for `margin`
/// (`clock_skew_margin_ms`): `Err` says why not.
pub fn check(watchdog: Duration, margin: Duration) -> Result<(), String> {
    if watchdog < 2 * PING_EVERY {
        return Err(format!(
            "WatchdogSec={}ms is shorter than two pings ({}ms): the agent would be killed while healthy",
            watchdog.as_millis(),
            (2 * PING_EVERY).as_millis()
        ));
    }
    let worst = worst_case(watchdog);
    if worst < margin {
        Ok(())
    } else {
        Err(format!(
            "WatchdogSec={}ms is too long for clock_skew_margin_ms={}: a frozen agent could keep its master \
             IPs {}ms past its lease (stall bound {}ms + ping interval {}ms + WatchdogSec + kill and fence {}ms), \
             and must keep them less than the margin; use WatchdogSec={}ms or less",
            watchdog.as_millis(),
            margin.as_millis(),
            worst.as_millis(),
            STALL_BOUND.as_millis(),
            PING_EVERY.as_millis(),
            FENCE_TIME.as_millis(),
            margin
                .saturating_sub(STALL_BOUND + PING_EVERY + FENCE_TIME)
                .saturating_sub(Duration::from_millis(1))
                .as_millis(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timing::UNIT_WATCHDOG;

    fn at(ms: u64) -> Mono {
        Mono::from_origin(Duration::from_millis(ms))
    }

    #[test]
    fn a_part_is_stalled_once_its_mark_is_older_than_its_bound() {
        // Keeper, reconciler, Raft.
        let marks = [Some(at(1000)), Some(at(1050)), None];
        assert!(stalled(marks, at(990), at(1200)).is_empty());
        assert_eq!(stalled(marks, at(990), at(1201)), vec![Part::Reconciler]);
        assert_eq!(stalled(marks, at(990), at(1991)), vec![Part::Reconciler, Part::Raft]);
        assert_eq!(stalled(marks, at(990), at(2001)), Part::ALL.to_vec());
    }

    #[test]
    fn a_stop_is_watched_by_the_last_pass_then_only_by_giving_up() {
        let b = STALL_BOUND.as_millis() as u64;
        // The stop began at 1000; the loops' old marks do not count against it.
        assert_eq!(
            verdict_stopping(Some(at(10)), at(1000), at(1000 + b), false, None),
            Ok(())
        );
        // The last pass stops marking: withheld, as a stall.
        assert_eq!(
            verdict_stopping(Some(at(1100)), at(1000), at(1101 + b), false, None),
            Err(Withheld::Stalled(vec![Part::Reconciler]))
        );
        // Once it is done, pings go on to the end however old the mark…
        assert_eq!(verdict_stopping(Some(at(1100)), at(1000), at(9000), true, None), Ok(()));
        // …unless an address it had to give up is not gone.
        assert_eq!(
            verdict_stopping(Some(at(1100)), at(1000), at(9000), true, Some(at(8999 - b))),
            Err(Withheld::GivingUpStuck(Duration::from_millis(b + 1)))
        );
    }

    #[test]
    fn giving_up_that_does_not_succeed_escalates_like_a_stall() {
        let marks = [Some(at(1000)); 3];
        assert_eq!(verdict(marks, at(0), at(1050), Some(at(900))), Ok(()));
        assert_eq!(
            verdict(marks, at(0), at(1050), Some(at(899))),
            Err(Withheld::GivingUpStuck(Duration::from_millis(151)))
        );
        assert!(matches!(
            verdict(marks, at(0), at(1200), None),
            Err(Withheld::Stalled(_))
        ));
        // The same arithmetic as a stall: the address is gone (killed,
        // fenced) within the default margin of the moment it had to go.
        assert!(worst_case(UNIT_WATCHDOG) < Duration::from_millis(500));
    }

    #[test]
    fn the_shipped_unit_fits_the_default_margin() {
        assert!(check(UNIT_WATCHDOG, Duration::from_millis(500)).is_ok());
        assert!(worst_case(UNIT_WATCHDOG) < Duration::from_millis(500));
        // Only with the fence outside the sandbox (`ExecStopPost=+…`).
        assert!(worst_case(UNIT_WATCHDOG) + crate::timing::FENCE_SANDBOX_TIME > Duration::from_millis(500));
        let err = check(Duration::from_secs(1), Duration::from_millis(500)).unwrap_err();
        assert!(err.contains("use WatchdogSec=264ms or less"), "{err}");
    }
}
