//! This process's clock, for the shells: the pure cores take time as
//! [`Mono`] values (`slotd_core::time`), read here from tokio's clock (so
//! tests with paused time see leases run out) plus the time the machine
//! spent suspended, which tokio's clock (CLOCK_MONOTONIC) does not count
//! and CLOCK_BOOTTIME does: a lease runs out while the machine sleeps.
//! Beside it, [`wall`]: the wall clock, the one witness of a pause that no
//! clock of the machine saw (`slotd_core::node::lease::paused`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use slotd_core::time::Mono;

/// Now, on this process's clock: tokio's (the system's monotonic clock
/// unless a test paused it), plus the time suspended since the start.
pub fn now() -> Mono {
    static ORIGIN: OnceLock<tokio::time::Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(tokio::time::Instant::now);
    Mono::from_origin(tokio::time::Instant::now().saturating_duration_since(origin) + suspended())
}

fn read(clock: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes it.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32))
}

/// CLOCK_BOOTTIME now: the one clock this process and the fencer beside
/// it read alike (a [`Mono`] is this process's own), counting suspends.
pub fn boot_time() -> Duration {
    read(libc::CLOCK_BOOTTIME).unwrap_or_default()
}

/// Below this, a difference of the two clocks is how they were read, not
/// a suspend: the clock stays exact (tests with tokio's paused time compare
/// it to the nanosecond).
const SUSPEND_NOISE: Duration = Duration::from_millis(1);

/// (boot time, monotonic time), read close together: the monotonic clock
/// around the boot clock, until the two monotonic readings are within
/// 20 µs (or the fifth try), so that a preemption between the reads
/// cannot pass for a suspend.
fn both() -> Option<(Duration, Duration)> {
    let mut best = None;
    for _ in 0..5 {
        let before = read(libc::CLOCK_MONOTONIC)?;
        let boot = read(libc::CLOCK_BOOTTIME)?;
        let after = read(libc::CLOCK_MONOTONIC)?;
        let spread = after.saturating_sub(before);
        if best.is_none_or(|(s, _)| spread < s) {
            best = Some((spread, (boot, before)));
        }
        if spread <= Duration::from_micros(20) {
            break;
        }
    }
    best.map(|(_, reading)| reading)
}

/// How much more CLOCK_BOOTTIME than CLOCK_MONOTONIC has run since the
/// first look: the time the machine spent suspended. Never less than it
/// was.
fn suspended() -> Duration {
    static ORIGIN: OnceLock<Option<(Duration, Duration)>> = OnceLock::new();
    static MOST_NS: AtomicU64 = AtomicU64::new(0);
    let Some(first) = *ORIGIN.get_or_init(both) else {
        return Duration::ZERO;
    };
    let Some(now) = both() else {
        return Duration::ZERO;
    };
    let ahead = suspended_between(first, now);
    let ns = u64::try_from(ahead.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(MOST_NS.fetch_max(ns, Ordering::Relaxed).max(ns))
}

/// Suspended time between two readings of (boot time, monotonic time),
/// differences under [`SUSPEND_NOISE`] counted as none.
fn suspended_between(first: (Duration, Duration), then: (Duration, Duration)) -> Duration {
    let boot = then.0.saturating_sub(first.0);
    let mono = then.1.saturating_sub(first.1);
    let ahead = boot.saturating_sub(mono);
    if ahead < SUSPEND_NOISE {
        Duration::ZERO
    } else {
        ahead
    }
}

/// Shifts [`wall`] forward (fault injection, tests only): as a VM sees its
/// wall clock set after it was frozen with its clocks.
static WALL_SHIFT_MS: AtomicU64 = AtomicU64::new(0);

/// The wall clock (with any shift injected), as a duration since the epoch.
pub fn wall() -> Duration {
    let real = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    real + Duration::from_millis(WALL_SHIFT_MS.load(Ordering::Relaxed))
}

/// Fault injection: the wall clock jumps `by` forward, the process's own
/// clock does not (see [`wall`]).
pub fn shift_wall(by: Duration) {
    let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
    WALL_SHIFT_MS.fetch_add(ms, Ordering::Relaxed);
}

/// The tokio instant of `at`, for timers (this process's clock only).
pub fn to_instant(at: Mono) -> tokio::time::Instant {
    let now = now();
    let instant = tokio::time::Instant::now();
    if at >= now {
        instant + at.since(now)
    } else {
        instant.checked_sub(now.since(at)).unwrap_or(instant)
    }
}

/// Sleeps until `at` on this process's clock; with no point, for ever (a
/// `select!` branch that never fires).
pub async fn sleep_until(at: Option<Mono>) {
    match at {
        Some(at) => tokio::time::sleep_until(to_instant(at)).await,
        None => std::future::pending().await,
    }
}

/// Unix time in ms, for history entries (`Request::at_ms`); apply never reads it.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn suspended_time_is_what_boot_time_ran_ahead_of_monotonic_time() {
        let s = |b: u64, m: u64| (Duration::from_millis(b), Duration::from_millis(m));
        assert_eq!(suspended_between(s(1000, 500), s(1200, 700)), Duration::ZERO);
        assert_eq!(suspended_between(s(1000, 500), s(61_200, 700)), Duration::from_secs(60));
        // Read one after the other, boot time may lag a little: never negative,
        // and a difference of how they were read is no suspend.
        assert_eq!(suspended_between(s(1000, 500), s(1199, 700)), Duration::ZERO);
        let ns = |b: u64, m: u64| (Duration::from_nanos(b), Duration::from_nanos(m));
        assert_eq!(suspended_between(ns(1000, 500), ns(1_000_030, 999_500)), Duration::ZERO);
        // This machine's clocks, not suspended while the test runs: exactly
        // nothing, many times over (a clock that drifts by the read noise
        // would fail the paused-time tests).
        for _ in 0..10_000 {
            assert_eq!(suspended(), Duration::ZERO);
        }
    }

    #[test]
    fn the_wall_clock_can_be_shifted_for_tests() {
        let before = wall();
        shift_wall(Duration::from_secs(5));
        assert!(wall() >= before + Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn follows_paused_time() {
        let a = now();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(now().since(a), Duration::from_secs(3));
        let later = now() + Duration::from_secs(1);
        tokio::time::sleep_until(to_instant(later)).await;
        assert!(now() >= later);
    }
}
