//! The reconciler loop: observe, decide (`reconcile`), act (`plan_pass`) —
//! on every applied entry, when the lease starts or stops being valid, and
//! every second to repair drift.
//!
//! Fencing is decided on the lease *as it stands now*: a pass is cut, and
//! the node gives up its master roles, only when the current lease (with
//! every renewal that arrived meanwhile) has run out — never on a deadline
//! read when the pass began. Nothing slow sits on that path: announcements
//! (after the first round) and their periodic refresh run on their own task
//! (`Announcer`), and layer-2 checks on another (`L2Checker`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use slotd_netops::{AddressOps, AnnounceOptions, IpPrefix, Outcome};
use slotd_raft_store::storage::StateReader;
use slotd_raft_store::{ClusterState, NodeId, Phase, ServiceIp};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::clock::{self, sleep_until};
use crate::driver::SlotDriver;
use crate::ledger::{Entries, Ledger};
use crate::stats::Stats;
use crate::watchdog::Progress;
use crate::wire::{HealthReport, Replayed};
use slotd_core::node::lease::LeaseState;
use slotd_core::node::reconcile::{
    leftovers_settled, missing_role, phase_done, plan_pass, reconcile, serves_as_master, store_addresses, wants_ip,
    Action, Instance, Observed, PassPlan, MISSING_ROUNDS,
};
use slotd_core::node::watchdog::Part;
use slotd_core::report::L2Seen;
use slotd_core::timing::{DEMOTE_RETRY, HEALTH_EVERY, MARK_EVERY, RESYNC, TAKE_GUARD};

/// Probe results by address, taken before a pass binds.
type Probes = BTreeMap<IpAddr, Result<Option<slotd_netops::MacAddr>, String>>;

/// The longest one action (a bind, a driver start or stop) may take.
const ACTION_TIMEOUT: Duration = Duration::from_secs(5);

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

pub struct Reconciler<A: AddressOps, D: SlotDriver> {
    pub me: NodeId,
    pub reader: StateReader,
    pub ops: Arc<A>,
    pub driver: Arc<D>,
    pub interface: String,
    pub lease: watch::Receiver<LeaseState>,
    /// Rounds of one announcement (the first is sent before Cyrus starts).
    pub announce: AnnounceOptions,
    pub announce_refresh: Duration,
    pub probe_timeout: Duration,
    pub stats: Arc<Stats>,
    /// The last observation, for the health report the lease keeper sends.
    pub report: Arc<Mutex<HealthReport>>,
    /// Progress marks for the watchdog (and failing releases), and how
    /// often to mark while waiting (`None`: no watchdog, no need to wake).
    pub progress: Progress,
    pub mark_every: Option<Duration>,
    /// Testing only (`SLOTD_INJECT_FAULTS`): stall the loop this many ms.
    pub stall_requests: Arc<AtomicU64>,
    /// The addresses this node may hold, on disk (written before binding)
    /// and as last written.
    pub ledger: Ledger,
    pub ledger_entries: Mutex<Entries>,
    /// Numbers the ledger writes.
    pub ledger_writes: AtomicU64,
    /// Slots demoted for a switchover, with the attempt's epoch.
    pub demoted: Arc<Mutex<BTreeMap<String, u64>>>,
    /// Slots whose demote runs now, on a task of its own (`Observed::busy`).
    pub busy: Arc<Mutex<BTreeSet<String>>>,
    /// Wakes the loop when such a task ends: the next step (releasing the
    /// master IP, the ack) should not wait for the next resync.
    pub job_done: Arc<Notify>,
    /// The demote tasks, to end them when the reconciler stops.
    pub demote_jobs: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Set when the reconciler stops: its last pass stops instances itself
    /// (a demote then stops the instance without a flush).
    pub stopping: std::sync::atomic::AtomicBool,
    /// The longest a demote (with its flush) may take.
    pub demote_timeout: Duration,
    /// Asks the lease keeper to renew now: a finished phase is acked in the
    /// next health report, and the switchover should not wait a heartbeat.
    pub renew_now: Arc<Notify>,
    /// Offer leftover sync logs for a replay (`cyrus.replay_leftover`).
    pub replay_leftover: bool,
    /// Replays run as master, by store.
    pub replayed: Arc<Mutex<BTreeMap<String, Replayed>>>,
    /// Replays under way, by store: they run on tasks of their own (up to
    /// `REPLAY_BOUND`), never holding up a pass.
    pub replaying: Mutex<BTreeMap<String, tokio::task::AbortHandle>>,
}

fn prefix(ip: ServiceIp) -> Result<IpPrefix, String> {
    IpPrefix::new(ip.addr, ip.len).map_err(|e| e.to_string())
}

/// Returns when the lease, as it stands now and with every renewal that
/// arrives meanwhile, stops being `valid`: it ran out (if valid), or a
/// grant made it valid (if not).
pub async fn lease_flips(mut lease: watch::Receiver<LeaseState>, valid: bool) {
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

/// `stop` was set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

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
        let this = Pass {
            r: &self,
            announce: announce_tx,
        };
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

/// One pass's work, with the reconciler it belongs to.
struct Pass<'a, A: AddressOps, D: SlotDriver> {
    r: &'a Reconciler<A, D>,
    announce: mpsc::UnboundedSender<FollowUp>,
}

impl<A: AddressOps, D: SlotDriver> Pass<'_, A, D> {
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
        let mut observed = Observed {
            instances: r.driver.observe().await,
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

    async fn run(&self, lease_valid: bool) {
        let r = self.r;
        let (state, applied_at) = r.reader.with(|d| (d.state.clone(), d.last_applied));
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
        let plan = plan_pass(&state, reconcile(&state, r.me, lease_valid, &observed));
        if plan.is_empty() {
            // Nothing to release (releases that failed earlier are done now).
            r.progress.release_ok();
            // Nothing changed on the machine: report what was just seen
            // rather than asking the kernel again.
            self.settle_ledger(&state, &observed).await;
            self.publish(&state, &observed, lease_valid, fenced).await;
            return;
        }
        let none = Probes::new();
        let mut release_failed =
            futures::future::join_all(plan.give_up.iter().map(|c| self.chain(c, &state, applied_at, &none)))
                .await
                .contains(&true);
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
        release_failed |=
            futures::future::join_all(plan.take.iter().map(|c| self.chain(c, &state, applied_at, &probes)))
                .await
                .contains(&true);
        if !release_failed {
            r.progress.release_ok();
        }
        if let Some(observed) = self.observe(&state).await {
            self.settle_ledger(&state, &observed).await;
            self.publish(&state, &observed, lease_valid, fenced).await;
        }
    }

    /// One store's steps, in order; a failed taking step ends the chain
    /// (never start Cyrus as master without its IP bound), a failed giving
    /// up does not (a stop that fails must not keep the address bound).
    /// True if a release failed.
    async fn chain(
        &self,
        steps: &[Action],
        state: &ClusterState,
        applied_at: Option<slotd_raft_store::typ::LogId>,
        probes: &Probes,
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
                | Action::StartReplica { .. } => crate::cyrus::instance::START_STOP_BOUND,
                _ => ACTION_TIMEOUT,
            };
            let result = within(limit, self.execute(action, state, probes).instrument(span)).await;
            if let Err(e) = result {
                Stats::add(&r.stats.action_errors, 1);
                warn!(store = %store, epoch, ?action, error = %e, "action failed");
                if matches!(action, Action::Release { .. }) {
                    r.progress.release_failed();
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
        // Whether the master IPs are gone cannot be seen: count it as a
        // failing release, so that it escalates if it lasts.
        r.progress.release_failed();
        for s in state.stores.values() {
            let ip = s.master_ip;
            if let Ok(p) = prefix(ip) {
                if let Ok(Outcome::Changed) = r.ops.release(&r.interface, p).await {
                    info!(%ip, store = %s.name, "released");
                }
            }
        }
        for (slot, instance) in r.driver.observe().await {
            if matches!(instance, Instance::Master { .. }) {
                if let Err(e) = r.driver.stop(&slot).await {
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
            let Some(log) = r.driver.leftover_log(&slot.slot).await else {
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
            } else if let Err(e) = r.driver.finish_leftovers(&slot.slot, !dirty).await {
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
            if let Some(bytes) = r.driver.backlog(&slot.slot).await {
                backlog.insert(s.name.clone(), bytes);
            }
            if let Some(age) = r.driver.backlog_age(&slot.slot).await {
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
                if r.stopping.load(Ordering::SeqCst) {
                    r.driver.stop(slot).await.map_err(|e| e.to_string())?;
                    warn!(slot, "the agent stops: instance stopped without the demote's flush");
                    return Ok(());
                }
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
                    if let Some(mac) = found {
                        Stats::add(&r.stats.split_brain_alarms, 1);
                        error!(%ip, %mac, "split-brain alarm: another machine answers for the master IP; not binding it");
                        return Err(format!("{mac} answers for {ip}"));
                    }
                    // The probe took time: the lease must still hold now, with
                    // room to spare for the bind itself.
                    if r.lease.borrow().remaining(clock::now()) < TAKE_GUARD {
                        return Err("lease (nearly) expired while probing".into());
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
                if r.lease.borrow().remaining(clock::now()) < TAKE_GUARD {
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
                let bound = crate::cyrus::instance::REPLAY_BOUND;
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
fn context(state: &ClusterState, store: &str, epoch: u64) -> Result<crate::driver::SlotContext, String> {
    let s = state
        .stores
        .get(store)
        .ok_or_else(|| format!("store {store:?} is not in the state"))?;
    Ok(slot_context(s, epoch))
}

fn slot_context(s: &slotd_raft_store::Store, epoch: u64) -> crate::driver::SlotContext {
    crate::driver::SlotContext {
        store: s.name.clone(),
        epoch,
        master_ip: s.master_ip.addr,
        replica_ip: s.replica_ip.addr,
        slots: s.slots.len(),
    }
}

/// The rest of an announcement whose first round a pass sent.
#[derive(Debug)]
struct FollowUp {
    store: String,
    addr: IpAddr,
    epoch: u64,
}

/// Sends announcements off the reconciler's path: the follow-up rounds of
/// each new address, and every `refresh` a full announcement of each master
/// IP held (switches forget MACs; a lost gratuitous ARP must not strand
/// clients). Before every round it checks that this node should still hold
/// the address — announcing an IP it gave up would pull clients back to it.
struct Announcer<A: AddressOps> {
    me: NodeId,
    reader: StateReader,
    ops: Arc<A>,
    interface: String,
    lease: watch::Receiver<LeaseState>,
    options: AnnounceOptions,
    refresh: Duration,
}

impl<A: AddressOps + 'static> Announcer<A> {
    async fn run(self, mut jobs: mpsc::UnboundedReceiver<FollowUp>, mut stop: watch::Receiver<bool>) {
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
                if let Err(e) = ops.announce(&iface, addr, one).await {
                    warn!(%addr, error = %e, "announce failed");
                    return;
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

/// The health check loop: every `HEALTH_EVERY`, the driver checks each
/// instance this node runs in the role the log gives it (banners on the
/// store's IPs, sync_client on a master); failures go into the health
/// report, for `slotctl status` on the leader.
struct HealthChecker<D: SlotDriver> {
    me: NodeId,
    reader: StateReader,
    driver: Arc<D>,
    report: Arc<Mutex<HealthReport>>,
}

impl<D: SlotDriver> HealthChecker<D> {
    async fn run(self, mut stop: watch::Receiver<bool>) {
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
                let ctx = slot_context(s, s.epoch);
                let driver = &self.driver;
                Some(async move {
                    let problems = driver.health(&slot.slot, &ctx, master).await;
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
