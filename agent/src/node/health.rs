//! The health check loop: every `HEALTH_EVERY`, the driver checks each
//! instance this node runs in the role the log gives it; what fails goes
//! into the health report, for `slotctl status` on the leader.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use slotd_core::node::reconcile::{missing_role, MISSING_ROUNDS};
use slotd_core::timing::{HEALTH_CHECK_TIMEOUT, HEALTH_EVERY};
use slotd_raft_store::storage::StateReader;
use slotd_raft_store::NodeId;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cluster::wire::HealthReport;
use crate::host::driver::{SlotContext, SlotDriver};

/// The health check loop: every `HEALTH_EVERY`, the driver checks each
/// instance this node runs in the role the log gives it (banners on the
/// store's IPs, sync_client on a master); failures go into the health
/// report, for `slotctl status` on the leader.
pub(super) struct HealthChecker<D: SlotDriver> {
    pub(super) me: NodeId,
    pub(super) reader: StateReader,
    pub(super) driver: Arc<D>,
    pub(super) report: Arc<Mutex<HealthReport>>,
}

impl<D: SlotDriver> HealthChecker<D> {
    pub(super) async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut missing: BTreeMap<String, u32> = BTreeMap::new();
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(HEALTH_EVERY) => {}
            }
            let state = self.reader.with(|d| d.state.clone());
            // What the reconciler last observed (the driver's own view is
            // the reconciler's to keep).
            let (instances, failing) = {
                let r = self.report.lock().unwrap_or_else(PoisonError::into_inner);
                (r.instances.clone(), r.failing.clone())
            };
            let checks = state.stores.values().filter_map(|s| {
                let slot = s.slot_on(self.me)?;
                let master = match instances.get(&slot.slot)?.as_str() {
                    "master" if s.master == self.me => true,
                    "replica" if s.master != self.me => false,
                    // Between roles: the reconciler is at work.
                    _ => return None,
                };
                let ctx = SlotContext::of(s, s.epoch);
                let driver = &self.driver;
                Some(async move {
                    // A check that does not end is a failing check.
                    let problems = tokio::time::timeout(HEALTH_CHECK_TIMEOUT, driver.health(&slot.slot, &ctx, master))
                        .await
                        .unwrap_or_else(|_| {
                            vec![format!(
                                "the health check gave no answer within {HEALTH_CHECK_TIMEOUT:?}"
                            )]
                        });
                    (s.name.clone(), problems)
                })
            });
            let mut health: BTreeMap<String, Vec<String>> = futures::future::join_all(checks)
                .await
                .into_iter()
                .filter(|(_, problems)| !problems.is_empty())
                .collect();
            // An instance the log wants here that does not run (and whose
            // start is not already reported as failing): a check that
            // cannot run is a failing check.
            let mut still = BTreeMap::new();
            for s in state.stores.values() {
                let Some(slot) = s.slot_on(self.me) else { continue };
                let Some(want) = missing_role(s, self.me, instances.get(&slot.slot).map(String::as_str)) else {
                    continue;
                };
                let rounds = missing.get(&s.name).copied().unwrap_or(0) + 1;
                still.insert(s.name.clone(), rounds);
                if rounds >= MISSING_ROUNDS && !failing.contains_key(&slot.slot) {
                    health
                        .entry(s.name.clone())
                        .or_default()
                        .push(format!("the {want} instance ({}) is not running", slot.slot));
                }
            }
            missing = still;
            let mut report = self.report.lock().unwrap_or_else(PoisonError::into_inner);
            for (store, problems) in &health {
                if report.health.get(store) != Some(problems) {
                    warn!(store = %store, ?problems, "health check failing");
                }
            }
            for store in report.health.keys().filter(|s| !health.contains_key(*s)) {
                info!(store = %store, "health checks pass again");
            }
            report.health = health;
        }
    }
}
