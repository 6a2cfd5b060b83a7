//! The watchdog's shell (the rule, and why: `slotd_core::node::watchdog`):
//! the pinger that pings systemd only while the rule allows, and the marks
//! of the Raft core's progress (the loops leave theirs: `node::progress`).

use std::sync::Arc;

use slotd_core::node::watchdog::{verdict, verdict_stopping, Part};
use slotd_core::timing::PING_EVERY;
use slotd_raft_store::typ::Raft;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::clock;
use crate::daemon::notify::Notifier;
use crate::node::progress::Progress;

/// Pings systemd every [`PING_EVERY`] while [`verdict`] allows (once the
/// agent stops, [`verdict_stopping`]: systemd keeps the watchdog running
/// through a stop), until `stop`, which the daemon sends last; says once why it stopped pinging (systemd then kills the agent
/// and `slotd fence` runs) and once when it pings again.
pub async fn run_pinger(notifier: Arc<Notifier>, progress: Progress, mut stop: watch::Receiver<bool>) {
    let started = clock::now();
    let mut tick = tokio::time::interval(PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut withheld = false;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let now = clock::now();
        let judged = match progress.stopping_since() {
            None => verdict(progress.marks(), started, now, progress.giving_up_since()),
            Some(since) => verdict_stopping(
                progress.mark_of(Part::Reconciler),
                since,
                now,
                progress.is_last_pass_done(),
                progress.giving_up_since(),
            ),
        };
        match judged {
            Ok(()) => {
                if withheld {
                    info!("watchdog pings resume");
                    withheld = false;
                }
                let _ = notifier.watchdog();
            }
            Err(why) => {
                if !withheld {
                    warn!("{why}: no more watchdog pings (systemd kills the agent and fences)");
                    withheld = true;
                }
            }
        }
    }
}

/// Marks the Raft core's progress: a round trip through it, a few times
/// within its bound.
pub async fn mark_raft(raft: Raft, progress: Progress, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Part::Raft.mark_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        if let Ok(Ok(())) = tokio::time::timeout(Part::Raft.bound(), raft.with_raft_state(|_| ())).await {
            progress.mark(Part::Raft);
        }
    }
}
