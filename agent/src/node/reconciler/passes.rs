//! The reconciler's loop: a pass at start, then one on every applied
//! entry, every lease flip (valid ↔ not, as it stands now), every resync
//! and every end of a demote task — and a pass cut short, and the node
//! fenced, the moment the lease runs out. At stop: the other tasks end, and
//! a last pass gives up every master role.

use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::time::Duration;

use slotd_core::node::lease::LeaseState;
use slotd_core::node::watchdog::Part;
use slotd_core::timing::{MARK_EVERY, RESYNC};
use slotd_netops::AddressOps;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::pass::Pass;
use super::Reconciler;
use crate::clock::{self, sleep_until};
use crate::host::driver::SlotDriver;
use crate::node::announcer::Announcer;
use crate::node::health::HealthChecker;
use crate::node::l2::L2Checker;

impl<A: AddressOps + 'static, D: SlotDriver> Reconciler<A, D> {
    /// Runs `work`, marking progress meanwhile (when there is a watchdog).
    async fn marking(&self, work: impl std::future::Future<Output = ()>, mark: &mut tokio::time::Interval) {
        let marking = self.mark_every.is_some();
        tokio::pin!(work);
        loop {
            tokio::select! {
                _ = &mut work => return,
                _ = mark.tick(), if marking => self.tick(),
            }
        }
    }

    /// Marks progress, and (testing only) stalls when asked to.
    fn tick(&self) {
        self.progress.mark(Part::Reconciler);
        let ms = self.stall_requests.swap(0, Ordering::Relaxed);
        if ms > 0 {
            warn!("fault injection: the reconciler stalls for {ms} ms");
            // Blocking on purpose: a stuck reconciler, as a bug would make it.
            std::thread::sleep(Duration::from_millis(ms));
        }
    }

    /// Runs until `stop`; then gives up every master role (as a lost lease
    /// would) before returning.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut applied = self.reader.subscribe();
        match self.ops.mac(&self.interface).await {
            Ok(mac) => self.report.lock().unwrap_or_else(PoisonError::into_inner).mac = Some(mac.to_string()),
            Err(e) => warn!(interface = %self.interface, error = %e, "no MAC for the layer-2 check"),
        }
        // Layer-2 probes of other nodes' IPs wait out their timeout when
        // nobody answers: they run on their own, never delaying a pass.
        let l2 = tokio::spawn(
            L2Checker {
                me: self.me,
                reader: self.reader.clone(),
                ops: self.ops.clone(),
                interface: self.interface.clone(),
                probe_timeout: self.probe_timeout,
                report: self.report.clone(),
            }
            .run(stop.clone()),
        );
        // Health checks wait on banners: on their own task too.
        let health = tokio::spawn(
            HealthChecker {
                me: self.me,
                reader: self.reader.clone(),
                driver: self.driver.clone(),
                report: self.report.clone(),
            }
            .run(stop.clone()),
        );
        let (announce_tx, announce_rx) = mpsc::unbounded_channel();
        let announcer = tokio::spawn(
            Announcer {
                me: self.me,
                reader: self.reader.clone(),
                ops: self.ops.clone(),
                interface: self.interface.clone(),
                lease: self.lease.clone(),
                options: self.announce,
                refresh: self.announce_refresh,
            }
            .run(announce_rx, stop.clone()),
        );
        let this = Pass::new(&self, announce_tx);
        // Marks progress for the watchdog while the loop runs — including
        // while a pass waits on its actions; a loop stuck in one place
        // stops marking, and systemd kills and fences the agent.
        let marking = self.mark_every.is_some();
        let mut mark = tokio::time::interval(self.mark_every.unwrap_or(MARK_EVERY));
        mark.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'passes: loop {
            self.tick();
            let valid = self.lease.borrow().valid_at(clock::now());
            // The pass gives way to the lease's end, as it stands now: what
            // was in flight is dropped and the node fences at once.
            let expired = {
                let pass = this.run(valid);
                tokio::pin!(pass);
                let end = lease_flips(self.lease.clone(), true);
                tokio::pin!(end);
                loop {
                    tokio::select! {
                        _ = &mut pass => break false,
                        _ = &mut end, if valid => break true,
                        _ = mark.tick(), if marking => self.tick(),
                    }
                }
            };
            if expired {
                warn!("lease ran out: fencing now");
                // The fence's clock starts at the lease's end, not at a
                // release of the pass just cut short.
                self.progress.giving_up_from_now();
                self.marking(this.run(false), &mut mark).await;
                continue;
            }
            let resync = tokio::time::Instant::now() + RESYNC;
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break 'passes,
                    r = applied.changed() => if r.is_err() { break 'passes } else { break },
                    _ = lease_flips(self.lease.clone(), valid) => break,
                    _ = tokio::time::sleep_until(resync) => break,
                    _ = self.job_done.notified() => break,
                    _ = mark.tick(), if marking => self.tick(),
                }
            }
        }
        l2.abort();
        health.abort();
        announcer.abort();
        info!("reconciler stopping: giving up master roles");
        // Demotes and replays under way end here (the instance of a demote
        // cut short is stopped by the last pass, without its flush), so
        // that no slot is left busy and nothing runs on after the agent.
        self.stopping.store(true, Ordering::SeqCst);
        let jobs = std::mem::take(&mut *self.demote_jobs.lock().unwrap_or_else(PoisonError::into_inner));
        for job in &jobs {
            job.abort();
        }
        for job in jobs {
            let _ = job.await;
        }
        for job in self.replaying.lock().unwrap_or_else(PoisonError::into_inner).values() {
            job.abort();
        }
        self.marking(this.run(false), &mut mark).await;
    }
}

/// Returns when the lease, as it stands now and with every renewal that
/// arrives meanwhile, stops being `valid`: it ran out (if valid), or a
/// grant made it valid (if not).
async fn lease_flips(mut lease: watch::Receiver<LeaseState>, valid: bool) {
    loop {
        let state = *lease.borrow_and_update();
        if state.valid_at(clock::now()) != valid {
            return;
        }
        let until = state.valid_until.filter(|_| valid);
        tokio::select! {
            changed = lease.changed() => {
                if changed.is_err() {
                    // No more renewals: only time can change it now.
                    sleep_until(until).await;
                    return;
                }
            }
            _ = sleep_until(until) => {}
        }
    }
}
