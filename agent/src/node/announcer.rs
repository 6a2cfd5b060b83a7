//! Announcements off the reconciler's path: the follow-up rounds of each
//! address a pass bound (the pass sends the first round itself, before
//! Cyrus starts), and the periodic refresh of every master IP held.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use slotd_core::node::lease::LeaseState;
use slotd_core::node::reconcile::wants_ip;
use slotd_netops::{AddressOps, AnnounceOptions, NetError};
use slotd_raft_store::storage::StateReader;
use slotd_raft_store::NodeId;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::clock;

/// The rest of an announcement whose first round a pass sent.
#[derive(Debug)]
pub(super) struct FollowUp {
    pub(super) store: String,
    pub(super) addr: IpAddr,
    pub(super) epoch: u64,
}

/// Sends announcements off the reconciler's path: the follow-up rounds of
/// each new address, and every `refresh` a full announcement of each master
/// IP held (switches forget MACs; a lost gratuitous ARP must not strand
/// clients). Before every round it checks that this node should still hold
/// the address — announcing an IP it gave up would pull clients back to it.
pub(super) struct Announcer<A: AddressOps> {
    pub(super) me: NodeId,
    pub(super) reader: StateReader,
    pub(super) ops: Arc<A>,
    pub(super) interface: String,
    pub(super) lease: watch::Receiver<LeaseState>,
    pub(super) options: AnnounceOptions,
    pub(super) refresh: Duration,
}

impl<A: AddressOps + 'static> Announcer<A> {
    pub(super) async fn run(self, mut jobs: mpsc::UnboundedReceiver<FollowUp>, mut stop: watch::Receiver<bool>) {
        let mut bursts: JoinSet<()> = JoinSet::new();
        // The burst in flight for each address: a newer one replaces it.
        let mut by_addr: BTreeMap<IpAddr, tokio::task::AbortHandle> = BTreeMap::new();
        let mut refresh = tokio::time::interval(self.refresh);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.tick().await;
        loop {
            let (store, addr, epoch, rounds, first_now) = tokio::select! {
                _ = stopped(&mut stop) => break,
                job = jobs.recv() => match job {
                    Some(j) => (j.store, j.addr, Some(j.epoch), self.options.count.saturating_sub(1), false),
                    None => break,
                },
                _ = refresh.tick() => {
                    for (store, addr) in self.held_masters().await {
                        self.spawn(&mut bursts, &mut by_addr, store, addr, None, self.options.count, true);
                    }
                    continue;
                }
                Some(_) = bursts.join_next() => continue,
            };
            self.spawn(&mut bursts, &mut by_addr, store, addr, epoch, rounds, first_now);
        }
        bursts.abort_all();
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &self,
        bursts: &mut JoinSet<()>,
        by_addr: &mut BTreeMap<IpAddr, tokio::task::AbortHandle>,
        store: String,
        addr: IpAddr,
        epoch: Option<u64>,
        rounds: u32,
        first_now: bool,
    ) {
        by_addr.retain(|_, h| !h.is_finished());
        if let Some(old) = by_addr.remove(&addr) {
            old.abort();
        }
        if rounds == 0 {
            return;
        }
        let (ops, iface, interval) = (self.ops.clone(), self.interface.clone(), self.options.interval);
        let (reader, lease, me) = (self.reader.clone(), self.lease.clone(), self.me);
        let still = move || {
            let valid = lease.borrow().valid_at(clock::now());
            reader.with(|d| {
                wants_ip(&d.state, me, valid, &store, addr)
                    && epoch.is_none_or(|e| d.state.stores.get(&store).is_some_and(|s| s.epoch == e))
            })
        };
        let handle = bursts.spawn(async move {
            for round in 0..rounds {
                if round > 0 || !first_now {
                    tokio::time::sleep(interval).await;
                }
                if !still() {
                    return;
                }
                let one = AnnounceOptions { count: 1, interval };
                match ops.announce(&iface, addr, one).await {
                    Ok(()) => {}
                    // Released since the check: nothing was sent.
                    Err(NetError::NotBound { .. }) => {
                        debug!(%addr, "not announced: no longer bound here");
                        return;
                    }
                    Err(e) => {
                        warn!(%addr, error = %e, "announce failed");
                        return;
                    }
                }
            }
        });
        by_addr.insert(addr, handle);
    }

    /// The master IPs this node holds and serves now.
    async fn held_masters(&self) -> Vec<(String, IpAddr)> {
        let held: BTreeSet<IpAddr> = match self.ops.list(&self.interface).await {
            Ok(list) => list.into_iter().map(|b| b.prefix.addr()).collect(),
            Err(e) => {
                warn!(interface = %self.interface, error = %e, "cannot list addresses to re-announce");
                return Vec::new();
            }
        };
        let valid = self.lease.borrow().valid_at(clock::now());
        self.reader.with(|d| {
            d.state
                .stores
                .values()
                .filter(|s| s.master == self.me && held.contains(&s.master_ip.addr))
                .filter(|s| wants_ip(&d.state, self.me, valid, &s.name, s.master_ip.addr))
                .map(|s| (s.name.clone(), s.master_ip.addr))
                .collect()
        })
    }
}

/// `stop` was set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
