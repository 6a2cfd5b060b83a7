//! Time as the agent's pure cores see it: a point on a monotonic clock,
//! passed in as a value. The agent reads tokio's clock (so tests with paused
//! time see leases run out); the simulation passes each node's virtual clock.
//! Either way the decision code never reads a clock itself.

use std::ops::Add;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point on one node's monotonic clock: the time since an origin fixed by
/// whoever drives the code (the process's first reading, or the simulation's
/// start). Only points of one clock are ever compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mono(Duration);

impl Mono {
    /// The point `d` after the origin.
    pub const fn from_origin(d: Duration) -> Mono {
        Mono(d)
    }

    /// Now, on this process's monotonic clock (tokio's, which is the
    /// system's unless a test paused it).
    pub fn now() -> Mono {
        static ORIGIN: OnceLock<tokio::time::Instant> = OnceLock::new();
        let origin = *ORIGIN.get_or_init(tokio::time::Instant::now);
        Mono(tokio::time::Instant::now().saturating_duration_since(origin))
    }

    /// How long after `earlier` this is (zero if it is not after it).
    pub fn since(self, earlier: Mono) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// The time since the origin.
    pub fn as_duration(self) -> Duration {
        self.0
    }

    /// The tokio instant of this point, for timers (this process's clock only).
    pub fn to_instant(self) -> tokio::time::Instant {
        let now = Mono::now();
        let at = tokio::time::Instant::now();
        if self >= now {
            at + self.since(now)
        } else {
            at.checked_sub(now.since(self)).unwrap_or(at)
        }
    }
}

impl Add<Duration> for Mono {
    type Output = Mono;

    fn add(self, d: Duration) -> Mono {
        Mono(self.0.saturating_add(d))
    }
}

/// Sleeps until `at` on this process's clock; with no point, for ever (a
/// `select!` branch that never fires).
pub async fn sleep_until(at: Option<Mono>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.to_instant()).await,
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
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let a = Mono::from_origin(Duration::from_millis(5));
        let b = a + Duration::from_millis(10);
        assert_eq!(b.since(a), Duration::from_millis(10));
        assert_eq!(a.since(b), Duration::ZERO);
        assert!(b > a);
    }

    #[tokio::test(start_paused = true)]
    async fn follows_paused_time() {
        let a = Mono::now();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(Mono::now().since(a), Duration::from_secs(3));
        let later = Mono::now() + Duration::from_secs(1);
        tokio::time::sleep_until(later.to_instant()).await;
        assert!(Mono::now() >= later);
    }
}
