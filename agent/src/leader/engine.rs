//! The failover engine: on the leader, every heartbeat (and at once when a
//! fence notice is accepted) it asks the core who is dead and writes one log
//! entry moving every store those nodes mastered, each to the best live
//! replica (`decide::failover_targets`). What counts as dead, and when a
//! fresh leader may decide at all, is the core's (`slotd_core::leader::LeaderCore`).
//!
//! Then it runs a round of the switchover conductor (`Conductor`): the next
//! phase of each switchover (at once when a node acks one: the granter wakes
//! it), rollbacks, and the switchovers of drains and rebalances.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use slotd_core::leader::conductor::Conductor;
use tokio::sync::{watch, Notify};
use tracing::{error, info, info_span, warn, Instrument};

use crate::clock::{self, sleep_until, unix_ms, Mono};
use crate::cluster::Cluster;
use crate::stats::Stats;
use slotd_core::timing::SwitchoverConfig;

pub struct FailoverEngine {
    pub cluster: Arc<Cluster>,
    pub heartbeat: Duration,
    pub stats: Arc<Stats>,
    /// Woken when a fence notice is accepted, a phase acked, or a drain or
    /// rebalance ordered, so the next step does not wait for the next tick.
    pub wake: Arc<Notify>,
    /// This node's `[switchover]` (the leader's governs).
    pub switchover: SwitchoverConfig,
}

impl FailoverEngine {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported_stranded: BTreeSet<String> = BTreeSet::new();
        let mut l2_alarms: BTreeSet<String> = BTreeSet::new();
        let mut conductor = Conductor::default();
        loop {
            // Also exactly when the next silent node's lease + margin is
            // over, not up to a tick later.
            let next = self.cluster.core().next_decision();
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
                _ = sleep_until(next) => {}
            }
            let m = self.cluster.raft.metrics().borrow().clone();
            let leading = (m.state == ServerState::Leader).then_some(m.current_term);
            let now = clock::now();
            let began = self.cluster.core().observe(leading, now);
            if began {
                let wait = self.cluster.core().timing().dead_after();
                info!(
                    term = m.current_term,
                    ?wait,
                    "leading: no failover of a silent node before lease + margin"
                );
            }
            if leading.is_none() {
                conductor.forget();
                continue;
            }
            let timings = self.cluster.reader.with(|d| {
                let mut core = self.cluster.core();
                core.see_addresses(&d.state, now);
                core.see_timings(&d.state, now);
                core.timings_command(&d.state, now)
            });
            if let Some(command) = timings {
                let what = format!("{command:?}");
                // Bounded: a write that does not answer must not hold up
                // the failovers below.
                match tokio::time::timeout(self.heartbeat * 5, self.cluster.write(command)).await {
                    Ok(Ok(index)) => info!(index, entry = %what, "the cluster's timings"),
                    Ok(Err(e)) => warn!(error = %e, entry = %what, "the cluster's timings not written; deciding again"),
                    Err(_) => warn!(entry = %what, "the cluster's timings not written in time; deciding again"),
                }
            }
            self.watch_l2(&mut l2_alarms);
            self.fail_over(now, m.current_term, &mut reported_stranded).await;
            self.conduct(m.current_term, &mut conductor).await;
        }
    }

    /// Fails over the stores of nodes the core finds dead.
    async fn fail_over(&self, now: Mono, term: u64, reported_stranded: &mut BTreeSet<String>) {
        {
            let decision = self.cluster.reader.with(|d| self.cluster.core().decide(&d.state, now));
            if decision.dead.is_empty() {
                reported_stranded.clear();
                return;
            }
            let plan = &decision.plan;
            self.stats.stranded.store(plan.stranded.len() as u64, Ordering::Relaxed);
            for s in &plan.stranded {
                if reported_stranded.insert(s.store.clone()) {
                    error!(store = %s.store, why = %s.why, "store has no live replica to fail over to; it stays where it is");
                }
            }
            let Some(command) = decision.command() else {
                return;
            };
            let n = plan.moves.len();
            let dead = &decision.dead;
            let span = info_span!("failover", dead = ?dead, term);
            let written = self.cluster.write(command).instrument(span).await;
            self.cluster.core().settle(dead, written.as_ref().ok().copied());
            match written {
                Ok(index) => {
                    Stats::add(&self.stats.failovers_failure, 1);
                    Stats::add(&self.stats.stores_failed_over, n as u64);
                    self.stats.last_failover_ms.store(unix_ms(), Ordering::Relaxed);
                    for mv in &plan.moves {
                        info!(store = %mv.store, epoch = mv.epoch + 1, to = mv.to, index, "failed over");
                    }
                    info!(dead = ?dead, stores = n, index, "failover committed");
                }
                // Refused (a store moved meanwhile) or lost leadership: the
                // next tick decides again from the state it then sees.
                Err(e) => warn!(error = %e, "failover not committed; deciding again"),
            }
        }
    }

    /// Writes what a round of the conductor asks for, one entry after
    /// another; a refused entry (the state moved on) is decided again next
    /// time.
    async fn conduct(&self, term: u64, conductor: &mut Conductor) {
        let now = clock::now();
        let round = self
            .cluster
            .reader
            .with(|d| conductor.round(term, &self.cluster.core(), &d.state, now, &self.switchover, unix_ms()));
        for command in &round.commands {
            let what = format!("{command:?}");
            match self.cluster.write(command.clone()).await {
                Ok(index) => {
                    info!(index, entry = %what, "switchover step");
                    if let Some(wait) = conductor.written(&round, command, clock::now(), &self.switchover) {
                        warn!(entry = %what, ?wait, "switchover rolled back; a drain tries it again after the wait");
                    }
                }
                Err(e) => {
                    warn!(error = %e, entry = %what, "switchover step not written; deciding again");
                    return;
                }
            }
        }
    }

    /// Logs stores entering and leaving a layer-2 alarm.
    fn watch_l2(&self, alarms: &mut BTreeSet<String>) {
        let reports = self.cluster.core().reports();
        let verdicts: Vec<(String, u64, slotd_core::l2::Verdict)> = self.cluster.reader.with(|d| {
            d.state
                .stores
                .values()
                .map(|s| (s.name.clone(), s.epoch, slotd_core::l2::verdict(s, &reports)))
                .collect()
        });
        for (store, epoch, v) in verdicts {
            if v.is_alarm() {
                if alarms.insert(store.clone()) {
                    error!(store = %store, epoch, verdict = %v, "layer-2 alarm: clients may not reach the master");
                }
            } else if alarms.remove(&store) {
                info!(store = %store, epoch, verdict = %v, "layer-2 alarm cleared");
            }
        }
    }
}
