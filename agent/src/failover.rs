//! The failure detector and failover engine, on the leader only.
//!
//! A node the leader has not granted a lease for `lease + clock_skew_margin`
//! is dead (its own lease ran out at least `margin` ago, so it has fenced
//! itself). One log entry moves every store it mastered, each to the best
//! live replica (`decide::failover_targets`). A newly elected leader first
//! waits a full `lease + margin`: an older leader may have granted leases
//! it does not know about.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use slotd_raft_store::decide::{failover_targets, Reports};
use slotd_raft_store::{Command, NodeId, Reason};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::cluster::{now_ms, Cluster};
use crate::stats::Stats;

pub struct FailoverEngine {
    pub cluster: Arc<Cluster>,
    pub heartbeat: Duration,
    /// `lease + clock_skew_margin`.
    pub dead_after: Duration,
    pub stats: Arc<Stats>,
}

impl FailoverEngine {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leading_since: Option<(u64, Instant)> = None;
        let mut reported_stranded: BTreeSet<String> = BTreeSet::new();
        let mut l2_alarms: BTreeSet<String> = BTreeSet::new();
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            let m = self.cluster.raft.metrics().borrow().clone();
            if m.state != ServerState::Leader {
                leading_since = None;
                continue;
            }
            // A new term is a new leadership, even on the same node.
            let since = match leading_since {
                Some((term, at)) if term == m.current_term => at,
                // Grants recorded before (in an earlier term, or by the
                // granter a moment ago) stay: they are real grants, and a
                // fresh leader waits a full lease + margin anyway.
                _ => {
                    let now = Instant::now();
                    leading_since = Some((m.current_term, now));
                    info!(term = m.current_term, wait = ?self.dead_after, "leading: no failover before a full lease + margin");
                    now
                }
            };
            self.watch_l2(&mut l2_alarms);
            if since.elapsed() < self.dead_after {
                continue;
            }
            let dead = self.condemn_dead();
            if dead.is_empty() {
                reported_stranded.clear();
                continue;
            }
            let plan = self
                .cluster
                .reader
                .with(|d| failover_targets(&d.state, &dead, &self.reports()));
            self.stats
                .stranded
                .store(plan.stranded.len() as u64, std::sync::atomic::Ordering::Relaxed);
            for s in &plan.stranded {
                if reported_stranded.insert(s.store.clone()) {
                    error!(store = %s.store, why = %s.why, "store has no live replica to fail over to; it stays where it is");
                }
            }
            if plan.moves.is_empty() {
                self.cluster.seen.pardon(&dead);
                continue;
            }
            let n = plan.moves.len();
            let moves = plan.moves.clone();
            match self
                .cluster
                .write(Command::Failover {
                    reason: Reason::Failure,
                    moves,
                })
                .await
            {
                Ok(index) => {
                    self.cluster.seen.failed_over(&dead, index);
                    Stats::add(&self.stats.failovers_failure, 1);
                    Stats::add(&self.stats.stores_failed_over, n as u64);
                    self.stats
                        .last_failover_ms
                        .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
                    for m in &plan.moves {
                        info!(store = %m.store, epoch = m.epoch + 1, to = m.to, index, "failed over");
                    }
                    info!(dead = ?dead, stores = n, index, "failover committed");
                }
                // Refused (a store moved meanwhile) or lost leadership: the
                // next tick decides again from the state it then sees.
                Err(e) => {
                    self.cluster.seen.pardon(&dead);
                    warn!(error = %e, "failover not committed; deciding again");
                }
            }
        }
    }

    /// Logs stores entering and leaving a layer-2 alarm.
    fn watch_l2(&self, alarms: &mut BTreeSet<String>) {
        let reports = self.cluster.seen.reports();
        let verdicts: Vec<(String, u64, crate::l2::Verdict)> = self.cluster.reader.with(|d| {
            d.state
                .stores
                .values()
                .map(|s| (s.name.clone(), s.epoch, crate::l2::verdict(s, &reports)))
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

    /// Nodes unseen for `lease + margin`, condemned (no grants) until their
    /// failover is settled.
    fn condemn_dead(&self) -> BTreeSet<NodeId> {
        let me = self.cluster.id;
        let nodes: Vec<NodeId> = self
            .cluster
            .reader
            .with(|d| d.state.nodes.keys().copied().filter(|n| *n != me).collect());
        self.cluster.seen.condemn(nodes.into_iter(), self.dead_after)
    }

    fn reports(&self) -> Reports {
        let mut r = Reports::default();
        for report in self.cluster.seen.reports().values() {
            for (store, bytes) in &report.backlog {
                // A master's backlog concerns its replicas; with one replica
                // per store the replica is whoever is not master.
                let replicas: Vec<NodeId> = self.cluster.reader.with(|d| {
                    d.state
                        .stores
                        .get(store)
                        .map(|s| s.replicas().collect())
                        .unwrap_or_default()
                });
                for n in replicas {
                    r.backlog.insert((store.clone(), n), *bytes);
                }
            }
        }
        r
    }
}
