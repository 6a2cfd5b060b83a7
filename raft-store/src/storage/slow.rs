//! Testing only: a slow data disk. While set, every durable commit of the
//! Raft data (log entries, vote, commit point, purges, snapshots) first
//! waits this long on the thread that commits, as a slow fsync holds it
//! (the agent sets it on a fault-injection signal; nothing else does).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static EXTRA_MS: AtomicU64 = AtomicU64::new(0);

/// From now on every commit takes `extra` longer (zero: as fast as the disk).
pub fn set(extra: Duration) {
    EXTRA_MS.store(u64::try_from(extra.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// How much longer every commit takes now.
pub fn extra() -> Duration {
    Duration::from_millis(EXTRA_MS.load(Ordering::Relaxed))
}

/// Called just before a durable commit, on a thread that may block.
pub(super) fn before_commit() {
    let extra = extra();
    if !extra.is_zero() {
        std::thread::sleep(extra);
    }
}
