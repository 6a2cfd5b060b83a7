//! The reconciler loop: observe, decide (`reconcile`), act — on every
//! applied entry, every lease change, at lease expiry (to fence at once),
//! and every second to repair drift. Masters re-announce their IPs every
//! `announce_refresh`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use slotd_netops::{AddressOps, AnnounceOptions, IpPrefix};
use slotd_raft_store::storage::StateReader;
use slotd_raft_store::{ClusterState, NodeId, Phase, ServiceIp};
use tokio::sync::watch;
use tracing::{debug, error, info, info_span, warn, Instrument};

use super::{reconcile, store_addresses, Action, Instance, Observed};
use crate::clock::Mono;
use crate::driver::SlotDriver;
use crate::l2::L2Seen;
use crate::lease::LeaseState;
use crate::stats::Stats;
use crate::wire::HealthReport;

/// How often the machine is compared with the log even when nothing changed.
const RESYNC: Duration = Duration::from_secs(1);

/// Probe results by address, taken at the start of a pass.
type Probes = BTreeMap<IpAddr, Result<Option<slotd_netops::MacAddr>, String>>;

/// The longest one action (a bind, a driver start or stop) may take.
const ACTION_TIMEOUT: Duration = Duration::from_secs(5);

/// A master IP is bound, or Cyrus started as master, only with at least this
/// much lease left: an action must not straddle the lease's end.
const TAKE_GUARD: Duration = Duration::from_millis(300);

/// Layer-2 probes per reconciler pass.
const L2_PER_PASS: usize = 8;

/// Probes without an answer before "no answer" is reported.
const L2_MISSES: u32 = 3;

/// Where this replica stands in checking one store after its last move.
struct L2Progress {
    epoch: u64,
    answered: bool,
    misses: u32,
}

pub struct Reconciler<A: AddressOps, D: SlotDriver> {
    pub me: NodeId,
    pub reader: StateReader,
    pub ops: Arc<A>,
    pub driver: D,
    pub interface: String,
    pub lease: watch::Receiver<LeaseState>,
    pub announce_refresh: Duration,
    pub probe_timeout: Duration,
    pub stats: Arc<Stats>,
    /// The last observation, for the health report the lease keeper sends.
    pub report: Arc<Mutex<HealthReport>>,
}

fn prefix(ip: ServiceIp) -> Result<IpPrefix, String> {
    IpPrefix::new(ip.addr, ip.len).map_err(|e| e.to_string())
}

impl<A: AddressOps, D: SlotDriver> Reconciler<A, D> {
    /// Runs until `stop`; then gives up every master role (as a lost lease
    /// would) before returning.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>)
    where
        A: 'static,
    {
        let mut applied = self.reader.subscribe();
        let mut last_announce = Instant::now();
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
        loop {
            let lease = *self.lease.borrow();
            let valid = lease.valid_at(Mono::now());
            let expiry = lease
                .valid_until
                .filter(|_| valid)
                .unwrap_or_else(|| Mono::now() + RESYNC)
                .to_instant();
            // All the work of one round gives way to the lease's end: when
            // it comes, whatever was in flight is dropped and the node
            // fences at once (a fence does not wait behind probes).
            let expired = tokio::select! {
                _ = async {
                    self.pass(valid).await;
                    if last_announce.elapsed() >= self.announce_refresh {
                        self.refresh_announcements().await;
                        last_announce = Instant::now();
                    }
                } => false,
                _ = tokio::time::sleep_until(expiry), if valid => true,
            };
            if expired {
                warn!("lease ran out during a pass: fencing now");
                self.pass(false).await;
                continue;
            }
            self.stats
                .last_pass
                .store(crate::stats::now_mono_ms(), Ordering::Relaxed);
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                r = applied.changed() => if r.is_err() { break },
                r = self.lease.changed() => if r.is_err() { break },
                _ = tokio::time::sleep_until(expiry) => {}
                _ = tokio::time::sleep(RESYNC) => {}
            }
        }
        l2.abort();
        info!("reconciler stopping: giving up master roles");
        self.pass(false).await;
    }

    async fn observe(&self, state: &ClusterState) -> Option<Observed> {
        let managed = store_addresses(state);
        let addresses: BTreeSet<IpAddr> = match self.ops.list(&self.interface).await {
            Ok(list) => list
                .into_iter()
                .map(|b| b.prefix.addr())
                .filter(|a| managed.contains(a))
                .collect(),
            Err(e) => {
                error!(interface = %self.interface, error = %e, "cannot list addresses");
                return None;
            }
        };
        Some(Observed {
            addresses,
            instances: self.driver.observe().await,
        })
    }

    async fn pass(&self, lease_valid: bool) {
        let (state, applied_at) = self.reader.with(|d| (d.state.clone(), d.last_applied));
        let Some(observed) = self.observe(&state).await else {
            if !lease_valid {
                self.blind_fence(&state).await;
            }
            return;
        };
        let named_master = state.stores.values().any(|s| s.master == self.me);
        self.stats.fenced.store(named_master && !lease_valid, Ordering::Relaxed);
        let actions = reconcile(&state, self.me, lease_valid, &observed);
        let fenced = named_master && !lease_valid;
        if actions.is_empty() {
            // Nothing changed on the machine: report what was just seen
            // rather than asking the kernel again.
            self.publish(&observed, fenced);
            return;
        }
        // Probe every master IP this pass will bind, together: one probe
        // waits its full timeout when nobody answers (the normal case), and
        // a node taking over many stores must not wait that many times.
        let to_probe: Vec<IpAddr> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Bind { store, ip, .. } if state.stores.get(store).is_some_and(|s| s.master_ip == *ip) => {
                    Some(ip.addr)
                }
                _ => None,
            })
            .collect();
        let answers = futures::future::join_all(
            to_probe
                .iter()
                .map(|addr| self.ops.probe(&self.interface, *addr, self.probe_timeout)),
        )
        .await;
        let probes: Probes = to_probe
            .into_iter()
            .zip(answers)
            .map(|(addr, r)| (addr, r.map_err(|e| e.to_string())))
            .collect();
        let mut failed: BTreeSet<String> = BTreeSet::new();
        for action in actions {
            let store = store_of(&action).to_owned();
            if !is_give_up(&action) {
                // A store whose earlier step failed takes no later step this
                // pass: never start Cyrus as master without its IP bound.
                if failed.contains(&store) {
                    continue;
                }
                // Taking is decided on the state this pass started from: if
                // the log moved on meanwhile, plan again rather than act on
                // a decision the log may have revoked.
                if self.reader.with(|d| d.last_applied) != applied_at {
                    debug!("the log moved on during the pass; planning again");
                    break;
                }
            }
            let epoch = state.stores.get(&store).map_or(0, |s| s.epoch);
            let span = info_span!("act", store = %store, epoch);
            let result =
                match tokio::time::timeout(ACTION_TIMEOUT, self.execute(&action, &state, &probes).instrument(span))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(format!("no result within {ACTION_TIMEOUT:?}")),
                };
            if let Err(e) = result {
                Stats::add(&self.stats.action_errors, 1);
                warn!(store = %store, epoch, ?action, error = %e, "action failed");
                failed.insert(store);
            }
        }
        if let Some(observed) = self.observe(&state).await {
            self.publish(&observed, fenced);
        }
    }

    /// Fences without being able to see the interface: release every master
    /// IP of the log's stores (releasing an address not held is a no-op) and
    /// stop every instance running as master.
    async fn blind_fence(&self, state: &ClusterState) {
        warn!("cannot observe the interface and the lease is not valid: fencing blind");
        for s in state.stores.values() {
            if let Ok(p) = prefix(s.master_ip) {
                let _ = self.ops.release(&self.interface, p).await;
            }
        }
        for (slot, instance) in self.driver.observe().await {
            if matches!(instance, Instance::Master { .. }) {
                if let Err(e) = self.driver.stop(&slot).await {
                    error!(slot, error = %e, "cannot stop a master instance while fencing");
                }
            }
        }
    }

    fn publish(&self, observed: &Observed, fenced: bool) {
        let mut r = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        r.addresses = observed.addresses.iter().map(IpAddr::to_string).collect();
        r.instances = observed
            .instances
            .iter()
            .map(|(slot, i)| {
                let role = match i {
                    Instance::Stopped => "stopped",
                    Instance::Master { .. } => "master",
                    Instance::Replica { .. } => "replica",
                };
                (slot.clone(), role.to_owned())
            })
            .collect();
        r.fenced = fenced;
    }

    async fn execute(&self, action: &Action, state: &ClusterState, probes: &Probes) -> Result<(), String> {
        let iface = &self.interface;
        match action {
            Action::Release { ip, .. } => {
                self.ops.release(iface, prefix(*ip)?).await.map_err(|e| e.to_string())?;
                info!(%ip, "released");
            }
            Action::Stop { slot, .. } => {
                self.driver.stop(slot).await.map_err(|e| e.to_string())?;
                info!(slot, "instance stopped");
            }
            Action::Bind { store, ip, .. } => {
                let is_master_ip = state.stores.get(store).is_some_and(|s| s.master_ip == *ip);
                if is_master_ip {
                    // RFC 5227: is anyone else answering for it? (Probed for
                    // all of this pass's master IPs at once, see `pass`.)
                    let found = match probes.get(&ip.addr) {
                        Some(r) => r.clone()?,
                        None => self
                            .ops
                            .probe(iface, ip.addr, self.probe_timeout)
                            .await
                            .map_err(|e| e.to_string())?,
                    };
                    if let Some(mac) = found {
                        Stats::add(&self.stats.split_brain_alarms, 1);
                        error!(%ip, %mac, "split-brain alarm: another machine answers for the master IP; not binding it");
                        return Err(format!("{mac} answers for {ip}"));
                    }
                    // The probe took time: the lease must still hold now, with
                    // room to spare for the bind itself.
                    if self.lease.borrow().remaining(Mono::now()) < TAKE_GUARD {
                        return Err("lease (nearly) expired while probing".into());
                    }
                }
                self.ops.bind(iface, prefix(*ip)?).await.map_err(|e| e.to_string())?;
                info!(%ip, "bound");
            }
            Action::Announce { ip, .. } => {
                self.ops
                    .announce(iface, ip.addr, AnnounceOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Action::StartMaster { slot, epoch, .. } => {
                if self.lease.borrow().remaining(Mono::now()) < TAKE_GUARD {
                    return Err("lease (nearly) expired before starting as master".into());
                }
                self.driver
                    .start_master(slot, *epoch)
                    .await
                    .map_err(|e| e.to_string())?;
                info!(slot, "instance started as master");
            }
            Action::StartReplica { slot, epoch, .. } => {
                self.driver
                    .start_replica(slot, *epoch)
                    .await
                    .map_err(|e| e.to_string())?;
                info!(slot, "instance started as replica");
            }
        }
        Ok(())
    }

    /// Re-announce every master IP this node holds as master (switches
    /// forget MACs; a lost gratuitous ARP must not strand clients).
    async fn refresh_announcements(&self) {
        let state = self.reader.with(|d| d.state.clone());
        let Some(observed) = self.observe(&state).await else {
            return;
        };
        for s in state.stores.values().filter(|s| s.master == self.me) {
            // Checked right before each announcement: announcing an IP this
            // node may no longer serve would pull clients back to it.
            let serving =
                matches!(s.phase, Phase::Stable) || matches!(s.phase, Phase::Promoting { to, .. } if to == self.me);
            let still_master = self.reader.with(|d| {
                d.state
                    .stores
                    .get(&s.name)
                    .is_some_and(|c| c.master == self.me && c.epoch == s.epoch)
            });
            if !serving || !still_master || !self.lease.borrow().valid_at(Mono::now()) {
                continue;
            }
            if observed.addresses.contains(&s.master_ip.addr) {
                if let Err(e) = self
                    .ops
                    .announce(&self.interface, s.master_ip.addr, AnnounceOptions::default())
                    .await
                {
                    warn!(store = %s.name, error = %e, "re-announce failed");
                }
            }
        }
    }
}

fn store_of(a: &Action) -> &str {
    match a {
        Action::Stop { store, .. }
        | Action::Release { store, .. }
        | Action::Bind { store, .. }
        | Action::Announce { store, .. }
        | Action::StartMaster { store, .. }
        | Action::StartReplica { store, .. } => store,
    }
}

fn is_give_up(a: &Action) -> bool {
    matches!(a, Action::Stop { .. } | Action::Release { .. })
}

/// The layer-2 check loop (see `l2`): on every applied entry and every
/// second, probe the master IPs this node should check.
struct L2Checker<A: AddressOps> {
    me: NodeId,
    reader: StateReader,
    ops: Arc<A>,
    interface: String,
    probe_timeout: Duration,
    report: Arc<Mutex<HealthReport>>,
}

impl<A: AddressOps> L2Checker<A> {
    async fn run(self, mut stop: watch::Receiver<bool>) {
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
    /// last look and report which MAC answers (see `l2`). A store is looked
    /// at again until something answers; a few per pass, so that a burst of
    /// moves does not stall the reconciler.
    async fn check(&self, checked: &mut BTreeMap<String, L2Progress>) {
        let state = self.reader.with(|d| d.state.clone());
        checked.retain(|name, _| state.stores.contains_key(name));
        let due: Vec<&slotd_raft_store::Store> = state
            .stores
            .values()
            .filter(|s| s.phase == Phase::Stable && crate::l2::checks(s, state.nodes.keys().copied(), self.me))
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
