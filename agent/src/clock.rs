//! This process's clock, for the shells: the pure cores take time as
//! [`Mono`] values (`slotd_core::time`), read here from tokio's clock (so
//! tests with paused time see leases run out).

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

pub use slotd_core::time::Mono;

/// Now, on this process's monotonic clock (tokio's, which is the system's
/// unless a test paused it).
pub fn now() -> Mono {
    static ORIGIN: OnceLock<tokio::time::Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(tokio::time::Instant::now);
    Mono::from_origin(tokio::time::Instant::now().saturating_duration_since(origin))
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
