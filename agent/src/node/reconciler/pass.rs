//! One pass of the reconciler: observe the machine, plan
//! (`slotd_core::node::reconcile`: `reconcile`, then `plan_pass`), and carry
//! the plan out — giving up first, store by store side by side; then the
//! probes of every master IP the pass binds, at once; then taking. Before a
//! bind, the ledger on disk names the address (`slotd fence` must know every
//! address this node may hold). After the pass: the ledger trimmed to what
//! is held, and the health report the lease keeper sends.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use slotd_core::node::reconcile::{
    at_stop, leftovers_settled, may_bind_master, may_start_master, phase_done, plan_pass, reconcile, serves_as_master,
    store_addresses, Action, Hold, Instance, Observed, PassPlan,
};
use slotd_core::timing::{DEMOTE_RETRY, DRIVER_LOOK_TIMEOUT};
use slotd_netops::{AddressOps, AnnounceOptions, IpPrefix, Outcome};
use slotd_raft_store::{ClusterState, ServiceIp};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, error, info, info_span, warn, Instrument};

use super::Reconciler;
use crate::clock;
use crate::cluster::wire::Replayed;
use crate::host::driver::{SlotContext, SlotDriver};
use crate::host::ledger::Entries;
use crate::node::announcer::FollowUp;
use crate::stats::Stats;

/// Probe results by address, taken before a pass binds.
type Probes = BTreeMap<IpAddr, Result<Option<slotd_netops::MacAddr>, String>>;

/// The longest one action (a bind, a driver start or stop) may take.
const ACTION_TIMEOUT: Duration = Duration::from_secs(5);

fn prefix(ip: ServiceIp) -> Result<IpPrefix, String> {
    IpPrefix::new(ip.addr, ip.len).map_err(|e| e.to_string())
}

/// One pass's work, with the reconciler it belongs to.
pub(super) struct Pass<'a, A: AddressOps, D: SlotDriver> {
    r: &'a Reconciler<A, D>,
    announce: mpsc::UnboundedSender<FollowUp>,
}

impl<'a, A: AddressOps, D: SlotDriver> Pass<'a, A, D> {
    pub(super) fn new(r: &'a Reconciler<A, D>, announce: mpsc::UnboundedSender<FollowUp>) -> Self {
        Pass { r, announce }
    }

    async fn observe(&self, state: &ClusterState) -> Option<Observed> {
        let r = self.r;
        let managed = store_addresses(state);
        let list = match r.ops.list(&r.interface).await {
            Ok(list) => list,
            Err(e) => {
                error!(interface = %r.interface, error = %e, "cannot list addresses");
                return None;
            }
        };
        let ledger = r.ledger_entries.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let Ok(instances) = tokio::time::timeout(DRIVER_LOOK_TIMEOUT, r.driver.observe()).await else {
            error!("the driver did not say which instances run within {DRIVER_LOOK_TIMEOUT:?}");
            return None;
        };
        let mut observed = Observed {
            instances,
            // Busy first: a demote that ends between the two reads is then
            // seen busy (and waited for), never neither busy nor done.
            busy: r.busy.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            demoted: r.demoted.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            replayed: r
                .replayed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(s, o)| (s.clone(), (o.from, o.digest)))
                .collect(),
            ..Observed::default()
        };
        for b in list {
            let addr = b.prefix.addr();
            if managed.contains(&addr) {
                observed.addresses.insert(addr);
            } else if let Some(entry) = ledger.get(&addr) {
                observed.leftovers.insert(addr, entry.clone());
            } else if b.ours {
                let ip = ServiceIp {
                    addr,
                    len: b.prefix.prefix_len(),
                };
                observed.leftovers.insert(addr, (ip, "(unknown store)".into()));
            }
        }
        Some(observed)
    }

    /// Adds the addresses this pass binds to the ledger, on disk, before any
    /// bind: `slotd fence` must know every address this node may hold.
    async fn record(&self, plan: &PassPlan) -> Result<(), String> {
        let mut grown = self
            .r
            .ledger_entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let before = grown.clone();
        for a in plan.take.iter().flatten() {
            if let Action::Bind { store, ip, .. } = a {
                grown.insert(ip.addr, (*ip, store.clone()));
            }
        }
        if grown == before {
            return Ok(());
        }
        self.write_ledger(grown).await
    }

    /// Trims the ledger to what the node holds after a pass.
    async fn settle_ledger(&self, state: &ClusterState, observed: &Observed) {
        let mut held = Entries::new();
        for s in state.stores.values() {
            for ip in [s.master_ip, s.replica_ip] {
                if observed.addresses.contains(&ip.addr) {
                    held.insert(ip.addr, (ip, s.name.clone()));
                }
            }
        }
        for (addr, entry) in &observed.leftovers {
            held.insert(*addr, entry.clone());
        }
        if held == *self.r.ledger_entries.lock().unwrap_or_else(PoisonError::into_inner) {
            return;
        }
        if let Err(e) = self.write_ledger(held).await {
            warn!(error = %e, "cannot trim the ledger");
        }
    }

    /// Writes the ledger (synced: off the async threads), then keeps it.
    /// Numbered: should this pass be dropped while its write is under way,
    /// that write cannot land over a later one.
    async fn write_ledger(&self, entries: Entries) -> Result<(), String> {
        let ledger = self.r.ledger.clone();
        let written = entries.clone();
        let seq = self.r.ledger_writes.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::task::spawn_blocking(move || ledger.write_numbered(&written, seq))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        *self.r.ledger_entries.lock().unwrap_or_else(PoisonError::into_inner) = entries;
        Ok(())
    }

    /// A replay goes on only while this node serves the store as master
    /// (the role rule of `reconcile`: stable or promoted to it, with a
    /// valid lease) and the store still waits for it: its sync_client must
    /// not write into mailboxes this node does not serve, a demote's
    /// included. Looked at first in every pass, the blind ones too.
    fn trim_replays(&self, state: &ClusterState, lease_valid: bool) {
        let me = self.r.me;
        self.r
            .replaying
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|store, job| {
                let wanted = state
                    .stores
                    .get(store)
                    .is_some_and(|s| s.replay.is_some() && serves_as_master(s, me, lease_valid));
                if !wanted && !job.is_finished() {
                    warn!(store = %store, "replay stopped: this node no longer serves the store as master");
                    job.abort();
                }
                wanted && !job.is_finished()
            });
    }

    pub(super) async fn run(&self, lease_valid: bool) {
        let r = self.r;
        let (state, applied_at) = r.reader.with(|d| (d.state.clone(), d.last_applied));
        if !lease_valid {
            // Fencing: what must go is gone only once a look says so. A
            // list or release that does not answer is no progress: the
            // clock runs from here (see `slotd_core::node::watchdog`).
            r.progress.giving_up();
        }
        self.trim_replays(&state, lease_valid);
        let Some(observed) = self.observe(&state).await else {
            if !lease_valid {
                self.blind_fence(&state).await;
            }
            return;
        };
        let named_master = state.stores.values().any(|s| s.master == r.me);
        let fenced = named_master && !lease_valid;
        r.stats.fenced.store(fenced, Ordering::Relaxed);
        let mut actions = reconcile(&state, r.me, lease_valid, &observed);
        if r.stopping.load(Ordering::SeqCst) {
            for a in &actions {
                if let Action::Demote { slot, .. } = a {
                    warn!(slot, "the agent stops: instance stopped without the demote's flush");
                }
            }
            actions = at_stop(actions);
        }
        let plan = plan_pass(&state, actions);
        if plan.is_empty() {
            // Nothing to release (releases that failed earlier are done now).
            r.progress.given_up();
            // Nothing changed on the machine: report what was just seen
            // rather than asking the kernel again.
            self.settle_ledger(&state, &observed).await;
            self.publish(&state, &observed, lease_valid, fenced).await;
            return;
        }
        let none = Probes::new();
        // At a stop, the fence's clock is the addresses': once every one is
        // released, an instance that takes its time to stop (bounded by the
        // driver) does not get the agent killed halfway through a clean stop.
        let releases = plan
            .give_up
            .iter()
            .flatten()
            .filter(|a| matches!(a, Action::Release { .. }))
            .count();
        let unreleased = AtomicUsize::new(releases);
        let watch_releases = r.stopping.load(Ordering::SeqCst).then_some(&unreleased);
        if releases == 0 && watch_releases.is_some() {
            r.progress.given_up();
        }
        let mut release_failed = futures::future::join_all(
            plan.give_up
                .iter()
                .map(|c| self.chain(c, &state, applied_at, &none, watch_releases)),
        )
        .await
        .contains(&true);
        if !release_failed {
            // Given up: whatever the rest of the pass does (a ledger that
            // cannot be written) is no longer the fence's clock.
            r.progress.given_up();
        }
        let answers = futures::future::join_all(
            plan.probe
                .iter()
                .map(|addr| r.ops.probe(&r.interface, *addr, r.probe_timeout)),
        )
        .await;
        if let Err(e) = self.record(&plan).await {
            // Never bind what `slotd fence` might not know of.
            Stats::add(&r.stats.action_errors, 1);
            error!(ledger = %r.ledger.path().display(), error = %e, "cannot record the addresses to bind; not binding");
            return;
        }
        let probes: Probes = plan
            .probe
            .iter()
            .copied()
            .zip(answers)
            .map(|(addr, a)| (addr, a.map_err(|e| e.to_string())))
            .collect();
        release_failed |= futures::future::join_all(
            plan.take
                .iter()
                .map(|c| self.chain(c, &state, applied_at, &probes, None)),
        )
        .await
        .contains(&true);
        if !release_failed {
            r.progress.given_up();
        }
        if let Some(observed) = self.observe(&state).await {
            self.settle_ledger(&state, &observed).await;
            self.publish(&state, &observed, lease_valid, fenced).await;
        }
    }

    /// One store's steps, in order; a failed taking step ends the chain
    /// (never start Cyrus as master without its IP bound), a failed giving
    /// up does not (a stop that fails must not keep the address bound).
    /// True if a release failed. With `unreleased` (the releases of the
    /// pass not yet done), the last one to succeed ends the fence's clock.
    async fn chain(
        &self,
        steps: &[Action],
        state: &ClusterState,
        applied_at: Option<slotd_raft_store::typ::LogId>,
        probes: &Probes,
        unreleased: Option<&AtomicUsize>,
    ) -> bool {
        let r = self.r;
        let mut release_failed = false;
        for action in steps {
            let store = action.store().to_owned();
            // Taking is decided on the state this pass started from: if the
            // log moved on meanwhile, plan again rather than act on a
            // decision the log may have revoked.
            if !action.is_give_up() && r.reader.with(|d| d.last_applied) != applied_at {
                debug!("the log moved on during the pass; planning again");
                return false;
            }
            let epoch = state.stores.get(&store).map_or(0, |s| s.epoch);
            let span = info_span!("act", store = %store, epoch);
            // A demote flushes the sync log: it has the phase's time.
            // The driver bounds its own steps; the pass gives each kind the
            // time the driver may take, so that the driver, not a cut
            // future, ends it (a start cut half-way would leave an
            // untracked instance behind).
            let limit = match action {
                // A demote only starts its task, but at stop it stops the
                // instance right here: the driver's stop bound, not 5 s.
                Action::Stop { .. }
                | Action::Demote { .. }
                | Action::StartMaster { .. }
                | Action::StartReplica { .. } => crate::host::cyrus::instance::START_STOP_BOUND,
                _ => ACTION_TIMEOUT,
            };
            if matches!(action, Action::Release { .. }) {
                // Sent is not done: the clock runs until it answers.
                r.progress.giving_up();
            }
            let result = within(limit, self.execute(action, state, probes).instrument(span)).await;
            if let (Ok(_), Action::Release { .. }, Some(left)) = (&result, action, unreleased) {
                if left.fetch_sub(1, Ordering::SeqCst) == 1 {
                    r.progress.given_up();
                }
            }
            if let Err(e) = result {
                Stats::add(&r.stats.action_errors, 1);
                warn!(store = %store, epoch, ?action, error = %e, "action failed");
                if matches!(action, Action::Release { .. }) {
                    release_failed = true;
                }
                if !action.is_give_up() {
                    return release_failed;
                }
            }
        }
        release_failed
    }

    /// Fences without being able to see the interface: release every master
    /// IP of the log's stores (releasing an address not held is a no-op) and
    /// stop every instance running as master.
    async fn blind_fence(&self, state: &ClusterState) {
        let r = self.r;
        warn!("cannot observe the interface and the lease is not valid: fencing blind");
        // Whether the master IPs are gone cannot be seen: the clock the
        // pass started keeps running, so that it escalates if it lasts.
        r.progress.giving_up();
        // Addresses first, instances after; each call bounded (the
        // kernel's by `ops` itself), so a hung one cannot keep the others.
        for s in state.stores.values() {
            let ip = s.master_ip;
            if let Ok(p) = prefix(ip) {
                match r.ops.release(&r.interface, p).await {
                    Ok(Outcome::Changed) => info!(%ip, store = %s.name, "released"),
                    Ok(Outcome::Unchanged) => {}
                    Err(e) => warn!(%ip, store = %s.name, error = %e, "cannot release while fencing blind"),
                }
            }
        }
        let Ok(instances) = tokio::time::timeout(DRIVER_LOOK_TIMEOUT, r.driver.observe()).await else {
            error!("the driver did not say which instances run while fencing blind");
            return;
        };
        for (slot, instance) in instances {
            if matches!(instance, Instance::Master { .. }) {
                let stop = within(crate::host::cyrus::instance::START_STOP_BOUND, r.driver.stop(&slot));
                if let Err(e) = stop.await {
                    error!(slot, error = %e, "cannot stop a master instance while fencing");
                }
            }
        }
    }

    /// Keeps the outcome of a start for the health report (sent at once
    /// when it changes: the leader must not promote a failing slot).
    fn started(&self, slot: &str, outcome: &Result<(), String>) {
        let mut rep = self.r.report.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = match outcome {
            Ok(()) => rep.failing.remove(slot).is_some(),
            Err(e) => rep.failing.insert(slot.to_owned(), e.clone()).as_ref() != Some(e),
        };
        if changed {
            self.r.renew_now.notify_one();
        }
    }

    async fn publish(&self, state: &ClusterState, observed: &Observed, lease_valid: bool, fenced: bool) {
        let r = self.r;
        let done = phase_done(state, r.me, lease_valid, observed);
        // Leftover sync logs of a life as master: offered for a replay while
        // this node is dirty for the store (if configured), put away once it
        // is not (replayed) or when no replay is wanted (kept).
        let mut waiting = BTreeSet::new();
        let mut leftovers = BTreeMap::new();
        // Only a replica's slot can have them (set aside when it starts as
        // one): no look at a master's directory on every pass.
        for s in state.stores.values().filter(|s| s.master != r.me) {
            let Some(slot) = s.slot_on(r.me) else { continue };
            let Ok(log) = tokio::time::timeout(DRIVER_LOOK_TIMEOUT, r.driver.leftover_log(&slot.slot)).await else {
                warn!(store = %s.name, "the driver did not find the leftover sync log within {DRIVER_LOOK_TIMEOUT:?}");
                waiting.insert(slot.slot.clone());
                continue;
            };
            let Some(log) = log else {
                continue;
            };
            let dirty = s.dirty.contains(&r.me) && s.master != r.me;
            let log = match log {
                Ok(log) => log,
                Err(why) if dirty => {
                    // Neither offered nor put away: the node stays dirty for
                    // the store until an operator looks.
                    warn!(store = %s.name, %why, "the leftover sync log cannot be offered for a replay; the node stays dirty");
                    waiting.insert(slot.slot.clone());
                    continue;
                }
                Err(_) => String::new(),
            };
            if dirty && r.replay_leftover {
                waiting.insert(slot.slot.clone());
                leftovers.insert(s.name.clone(), log);
            } else if let Err(e) = within(DRIVER_LOOK_TIMEOUT, r.driver.finish_leftovers(&slot.slot, !dirty)).await {
                warn!(store = %s.name, error = %e, "cannot put the leftover sync log away");
            } else if dirty {
                warn!(store = %s.name, "leftover sync log kept aside, not replayed (cyrus.replay_leftover = false)");
            } else {
                info!(store = %s.name, "leftover sync log replayed by the master; put away");
            }
        }
        let clean = leftovers_settled(state, r.me, observed, &waiting);
        // Replays run here as master, while the store still waits for that
        // very replay (an outcome of an earlier one is forgotten).
        let replayed: BTreeMap<String, Replayed> = {
            let mut ran = r.replayed.lock().unwrap_or_else(PoisonError::into_inner);
            ran.retain(|store, out| {
                state
                    .stores
                    .get(store)
                    .and_then(|s| s.replay.as_ref())
                    .is_some_and(|p| p.from == out.from && slotd_core::report::replay_digest(&p.log) == out.digest)
            });
            ran.clone()
        };
        let mut backlog = BTreeMap::new();
        let mut backlog_age = BTreeMap::new();
        for s in state.stores.values().filter(|s| s.master == r.me) {
            let Some(slot) = s.slot_on(r.me) else { continue };
            if !matches!(observed.instances.get(&slot.slot), Some(Instance::Master { .. })) {
                continue;
            }
            // A backlog not read in time is not reported (as if unknown).
            if let Ok(Some(bytes)) = tokio::time::timeout(DRIVER_LOOK_TIMEOUT, r.driver.backlog(&slot.slot)).await {
                backlog.insert(s.name.clone(), bytes);
            }
            if let Ok(Some(age)) = tokio::time::timeout(DRIVER_LOOK_TIMEOUT, r.driver.backlog_age(&slot.slot)).await {
                backlog_age.insert(s.name.clone(), age.as_millis() as u64);
            }
        }
        let mut rep = r.report.lock().unwrap_or_else(PoisonError::into_inner);
        // News the leader acts on goes at once, not at the next heartbeat:
        // an ack moves a switchover on; a store's first backlog makes its
        // replica eligible for switchovers.
        let acks = rep.done != done && !done.is_empty();
        let new_backlog = backlog.keys().any(|s| !rep.backlog.contains_key(s));
        let new_clean = clean.iter().any(|(s, e)| rep.clean.get(s) != Some(e));
        let news = rep.leftovers != leftovers || rep.replayed != replayed;
        if acks || new_backlog || new_clean || news {
            r.renew_now.notify_one();
        }
        rep.done = done;
        rep.clean = clean;
        rep.leftovers = leftovers;
        rep.replayed = replayed;
        rep.backlog = backlog;
        rep.backlog_age_ms = backlog_age;
        rep.addresses = observed.addresses.iter().map(IpAddr::to_string).collect();
        rep.instances = observed
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
        rep.fenced = fenced;
    }

    async fn execute(&self, action: &Action, state: &ClusterState, probes: &Probes) -> Result<(), String> {
        let r = self.r;
        let iface = &r.interface;
        match action {
            Action::Release { ip, .. } => {
                r.ops.release(iface, prefix(*ip)?).await.map_err(|e| e.to_string())?;
                info!(%ip, "released");
            }
            Action::Stop { slot, .. } => {
                r.driver.stop(slot).await.map_err(|e| e.to_string())?;
                info!(slot, "instance stopped");
            }
            Action::Demote {
                store,
                slot,
                epoch,
                force,
            } => {
                // On a task of its own: a flush may take the phase's whole
                // timeout, and the rest of the node must not wait for it.
                // The slot is busy meanwhile (`reconcile` leaves it and its
                // master IP alone); its end wakes the loop.
                let ctx = context(state, store, *epoch)?;
                if !r
                    .busy
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(slot.clone())
                {
                    return Ok(());
                }
                let busy = Busy {
                    slots: r.busy.clone(),
                    slot: slot.clone(),
                    done: r.job_done.clone(),
                };
                let (driver, demoted, stats) = (r.driver.clone(), r.demoted.clone(), r.stats.clone());
                let (slot, epoch, force, limit) = (slot.clone(), *epoch, *force, r.demote_timeout);
                let job = async move {
                    match within(limit, driver.demote(&slot, &ctx, force)).await {
                        Ok(()) => {
                            demoted
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .insert(slot.clone(), epoch);
                            if force {
                                warn!(
                                    slot,
                                    "demoted without a flush (forced): unreplicated changes may be lost"
                                );
                            } else {
                                info!(slot, "demoted: clients stopped, sync log flushed, instance stopped");
                            }
                        }
                        Err(error) => {
                            Stats::add(&stats.action_errors, 1);
                            warn!(slot, %error, "demote failed; trying again in a moment");
                            // Busy a while longer: a demote that fails at
                            // once is tried again after a pause, not at
                            // every pass the wake-up below would start.
                            tokio::time::sleep(DEMOTE_RETRY).await;
                        }
                    }
                    drop(busy);
                };
                let handle = tokio::spawn(job.instrument(tracing::Span::current()));
                let mut jobs = r.demote_jobs.lock().unwrap_or_else(PoisonError::into_inner);
                jobs.retain(|j| !j.is_finished());
                jobs.push(handle);
            }
            Action::Bind { store, ip, .. } => {
                let is_master_ip = state.stores.get(store).is_some_and(|s| s.master_ip == *ip);
                if is_master_ip {
                    // RFC 5227: is anyone else answering for it? (Probed for
                    // all of this pass's master IPs at once, see `run`.)
                    let found = match probes.get(&ip.addr) {
                        Some(p) => p.clone()?,
                        None => r
                            .ops
                            .probe(iface, ip.addr, r.probe_timeout)
                            .await
                            .map_err(|e| e.to_string())?,
                    };
                    // The probe took time: the lease must still hold now, with
                    // room to spare for the bind itself.
                    let left = r.lease.borrow().remaining(clock::now());
                    match may_bind_master(found.map(|m| m.to_string()), left) {
                        Ok(()) => {}
                        Err(Hold::Answered(mac)) => {
                            Stats::add(&r.stats.split_brain_alarms, 1);
                            error!(%ip, %mac, "split-brain alarm: another machine answers for the master IP; not binding it");
                            return Err(format!("{mac} answers for {ip}"));
                        }
                        Err(Hold::LeaseEnding) => return Err("lease (nearly) expired while probing".into()),
                    }
                }
                r.ops.bind(iface, prefix(*ip)?).await.map_err(|e| e.to_string())?;
                info!(%ip, "bound");
            }
            Action::Announce { store, ip } => {
                // The first round now (it comes before Cyrus starts); the
                // rest from the announcer, off this pass.
                let first = AnnounceOptions {
                    count: r.announce.count.min(1),
                    ..r.announce
                };
                r.ops.announce(iface, ip.addr, first).await.map_err(|e| e.to_string())?;
                let epoch = state.stores.get(store).map_or(0, |s| s.epoch);
                let _ = self.announce.send(FollowUp {
                    store: store.clone(),
                    addr: ip.addr,
                    epoch,
                });
            }
            Action::StartMaster { store, slot, epoch } => {
                if may_start_master(r.lease.borrow().remaining(clock::now())).is_err() {
                    return Err("lease (nearly) expired before starting as master".into());
                }
                let ctx = context(state, store, *epoch)?;
                let started = r.driver.start_master(slot, &ctx).await.map_err(|e| e.to_string());
                self.started(slot, &started);
                started?;
                info!(slot, "instance started as master");
            }
            Action::Replay { store, slot, from } => {
                let log = state
                    .stores
                    .get(store)
                    .and_then(|s| s.replay.as_ref())
                    .filter(|p| p.from == *from)
                    .map(|p| p.log.clone())
                    .ok_or("the replay is no longer pending")?;
                let digest = slotd_core::report::replay_digest(&log);
                let mut jobs = r.replaying.lock().unwrap_or_else(PoisonError::into_inner);
                let done = r
                    .replayed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(store)
                    .is_some_and(|o| o.from == *from && o.digest == digest);
                // Under way, or ended since this pass looked: not again.
                if done || jobs.get(store).is_some_and(|j| !j.is_finished()) {
                    return Ok(());
                }
                let (driver, replayed) = (r.driver.clone(), r.replayed.clone());
                let (store, slot, from) = (store.clone(), slot.clone(), *from);
                let key = store.clone();
                let bound = crate::host::cyrus::instance::REPLAY_BOUND;
                let job = async move {
                    let outcome = match within(bound, driver.replay(&slot, &log)).await {
                        Ok(note) => {
                            info!(slot, from, %note, "leftover sync log replayed");
                            Replayed {
                                from,
                                digest,
                                ok: true,
                                note,
                            }
                        }
                        Err(note) => {
                            warn!(slot, from, error = %note, "replay of the leftover sync log failed");
                            Replayed {
                                from,
                                digest,
                                ok: false,
                                note,
                            }
                        }
                    };
                    // The next pass reports it (`publish`).
                    replayed
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(store, outcome);
                };
                let span = tracing::Span::current();
                jobs.insert(key, tokio::spawn(job.instrument(span)).abort_handle());
            }
            Action::StartReplica { store, slot, epoch } => {
                let ctx = context(state, store, *epoch)?;
                let started = r.driver.start_replica(slot, &ctx).await.map_err(|e| e.to_string());
                self.started(slot, &started);
                started?;
                info!(slot, "instance started as replica");
            }
        }
        Ok(())
    }
}

/// A slot's demote task: while it lives, the slot is busy; when it ends
/// (done, failed, or dropped), the slot is free and the loop wakes.
struct Busy {
    slots: Arc<Mutex<BTreeSet<String>>>,
    slot: String,
    done: Arc<Notify>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.slot);
        self.done.notify_one();
    }
}

/// A driver call that gets `limit`: its error, or that it gave none in time.
async fn within<T, E: std::fmt::Display>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no result within {limit:?}")),
    }
}

/// What the driver needs to know of `store` to run a slot of it at `epoch`.
fn context(state: &ClusterState, store: &str, epoch: u64) -> Result<SlotContext, String> {
    let s = state
        .stores
        .get(store)
        .ok_or_else(|| format!("store {store:?} is not in the state"))?;
    Ok(SlotContext::of(s, epoch))
}
