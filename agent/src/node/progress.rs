//! Progress marks the parts that fence leave for the watchdog (the lease
//! keeper, the reconciler, a round trip through the Raft core), since when
//! giving up an address has not succeeded, and how far a stop is: what the
//! daemon's pinger judges by `slotd_core::node::watchdog::verdict` (and
//! `verdict_stopping` once the agent stops).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use slotd_core::node::watchdog::Part;

use crate::clock::{self, Mono};

/// Progress marks, shared by the parts and the pinger.
#[derive(Clone, Default)]
pub struct Progress {
    /// Per part (in [`Part::ALL`] order): `Mono` ms + 1 of its last mark, 0 for none.
    marks: Arc<[AtomicU64; 3]>,
    /// `Mono` ms + 1 since when an address is being given up and not yet
    /// seen gone, 0 when none is.
    giving_up: Arc<AtomicU64>,
    /// `Mono` ms + 1 of when the agent began to stop (its loops ending), 0
    /// before; and whether the reconciler's last pass is done.
    stopping: Arc<AtomicU64>,
    last_pass_done: Arc<AtomicBool>,
}

fn enc(m: Mono) -> u64 {
    u64::try_from(m.as_duration().as_millis()).unwrap_or(u64::MAX - 1) + 1
}

fn dec(v: u64) -> Option<Mono> {
    (v > 0).then(|| Mono::from_origin(Duration::from_millis(v - 1)))
}

impl Progress {
    /// `part` made progress now.
    pub fn mark(&self, part: Part) {
        let i = Part::ALL.iter().position(|p| *p == part).unwrap_or(0);
        self.marks[i].store(enc(clock::now()), Ordering::Relaxed);
    }

    pub fn marks(&self) -> [Option<Mono>; 3] {
        [0, 1, 2].map(|i| dec(self.marks[i].load(Ordering::Relaxed)))
    }

    /// `part`'s last mark.
    pub fn mark_of(&self, part: Part) -> Option<Mono> {
        let i = Part::ALL.iter().position(|p| *p == part).unwrap_or(0);
        dec(self.marks[i].load(Ordering::Relaxed))
    }

    /// An address must be given up (a fencing pass begins, a release is
    /// sent, or one failed): the clock starts, unless it runs already.
    /// Waiting on the kernel is never progress: only `given_up` stops it.
    pub fn giving_up(&self) {
        let _ = self
            .giving_up
            .compare_exchange(0, enc(clock::now()), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The lease ran out and the fence begins: the clock starts now, even
    /// if it ran (from a release of the pass the lease's end cut short,
    /// done or not: the fence looks again, and the margin is reckoned from
    /// the lease's end).
    pub fn giving_up_from_now(&self) {
        self.giving_up.store(enc(clock::now()), Ordering::Relaxed);
    }

    /// Every address that had to go is seen gone.
    pub fn given_up(&self) {
        self.giving_up.store(0, Ordering::Relaxed);
    }

    pub fn giving_up_since(&self) -> Option<Mono> {
        dec(self.giving_up.load(Ordering::Relaxed))
    }

    /// The agent stops: its loops end now (the pinger judges by
    /// `verdict_stopping` from here on).
    pub fn stopping(&self) {
        let _ = self
            .stopping
            .compare_exchange(0, enc(clock::now()), Ordering::Relaxed, Ordering::Relaxed);
    }

    pub fn stopping_since(&self) -> Option<Mono> {
        dec(self.stopping.load(Ordering::Relaxed))
    }

    /// The reconciler's last pass (every master role given up) is done.
    pub fn last_pass_done(&self) {
        self.last_pass_done.store(true, Ordering::Relaxed);
    }

    pub fn is_last_pass_done(&self) -> bool {
        self.last_pass_done.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn progress_marks_round_trip() {
        let p = Progress::default();
        assert_eq!(p.marks(), [None, None, None]);
        tokio::time::advance(Duration::from_millis(7)).await;
        let before = clock::now();
        p.mark(Part::Reconciler);
        let marked = p.marks()[1].unwrap();
        assert!(
            before.since(marked) < Duration::from_millis(1),
            "marks keep the millisecond"
        );
        p.giving_up();
        let since = p.giving_up_since();
        tokio::time::advance(Duration::from_millis(30)).await;
        p.giving_up();
        assert_eq!(p.giving_up_since(), since, "the first need starts the clock");
        tokio::time::advance(Duration::from_millis(30)).await;
        p.giving_up_from_now();
        assert!(p.giving_up_since() > since, "a fence restarts the clock");
        p.given_up();
        assert_eq!(p.giving_up_since(), None);
    }
}
