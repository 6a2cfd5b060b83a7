//! The layer-2 check, this machine's side (the rule and the leader's
//! verdict: `slotd_core::l2`): as a replica, after every move of a store,
//! probe its master IP and report which MAC answers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use slotd_core::report::L2Seen;
use slotd_core::timing::RESYNC;
use slotd_netops::AddressOps;
use slotd_raft_store::storage::StateReader;
use slotd_raft_store::{NodeId, Phase};
use tokio::sync::watch;
use tracing::warn;

use crate::cluster::wire::HealthReport;

/// Layer-2 probes per round of the checker.
const L2_PER_PASS: usize = 8;

/// Probes without an answer before "no answer" is reported.
const L2_MISSES: u32 = 3;

/// Where this replica stands in checking one store after its last move.
struct L2Progress {
    epoch: u64,
    answered: bool,
    misses: u32,
}

/// The layer-2 check loop (see `slotd_core::l2`): on every applied entry and every
/// second, probe the master IPs this node should check.
pub(super) struct L2Checker<A: AddressOps> {
    pub(super) me: NodeId,
    pub(super) reader: StateReader,
    pub(super) ops: Arc<A>,
    pub(super) interface: String,
    pub(super) probe_timeout: Duration,
    pub(super) report: Arc<Mutex<HealthReport>>,
}

impl<A: AddressOps> L2Checker<A> {
    pub(super) async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut applied = self.reader.subscribe();
        let mut checked: BTreeMap<String, L2Progress> = BTreeMap::new();
        loop {
            self.check(&mut checked).await;
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                r = applied.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(RESYNC) => {}
            }
        }
    }

    /// As replica, probe the master IP of every store that moved since the
    /// last look and report which MAC answers (see `slotd_core::l2`). A store is looked
    /// at again until something answers; a few per round, so that a burst
    /// of moves does not keep the checker busy for long.
    async fn check(&self, checked: &mut BTreeMap<String, L2Progress>) {
        let state = self.reader.with(|d| d.state.clone());
        checked.retain(|name, _| state.stores.contains_key(name));
        let due: Vec<&slotd_raft_store::Store> = state
            .stores
            .values()
            .filter(|s| s.phase == Phase::Stable && slotd_core::l2::checks(s, state.nodes.keys().copied(), self.me))
            .filter(|s| !checked.get(&s.name).is_some_and(|p| p.epoch == s.epoch && p.answered))
            .take(L2_PER_PASS)
            .collect();
        for s in due {
            let answered_by = match self
                .ops
                .probe(&self.interface, s.master_ip.addr, self.probe_timeout)
                .await
            {
                Ok(found) => found.map(|m| m.to_string()),
                Err(e) => {
                    warn!(store = %s.name, error = %e, "layer-2 probe failed");
                    continue;
                }
            };
            let progress = checked.entry(s.name.clone()).or_insert(L2Progress {
                epoch: s.epoch,
                answered: false,
                misses: 0,
            });
            if progress.epoch != s.epoch {
                *progress = L2Progress {
                    epoch: s.epoch,
                    answered: false,
                    misses: 0,
                };
            }
            progress.answered = answered_by.is_some();
            if answered_by.is_none() {
                progress.misses += 1;
                // Right after a move the new master may not have bound the
                // IP yet: silence is news only after a few looks.
                if progress.misses < L2_MISSES {
                    continue;
                }
            }
            self.report.lock().unwrap_or_else(PoisonError::into_inner).l2.insert(
                s.name.clone(),
                L2Seen {
                    epoch: s.epoch,
                    answered_by,
                },
            );
        }
    }
}
