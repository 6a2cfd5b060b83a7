//! The reconciler: observe, decide (`slotd_core::node::reconcile`), act —
//! on every applied entry, when the lease starts or stops being valid, and
//! every second to repair drift. One pass's work is `pass`; what runs
//! beside the loop (announcements, health checks, the layer-2 check) runs
//! on tasks of its own, started here (`announcer`, `health`, `l2`).
//!
//! Fencing is decided on the lease *as it stands now*: a pass is cut, and
//! the node gives up its master roles, only when the current lease (with
//! every renewal that arrived meanwhile) has run out — never on a deadline
//! read when the pass began. Nothing slow sits on that path: announcements
//! (after the first round) and their periodic refresh run on their own
//! task, and layer-2 checks on another.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slotd_core::node::lease::LeaseState;
use slotd_netops::{AddressOps, AnnounceOptions};
use slotd_raft_store::storage::StateReader;
use slotd_raft_store::NodeId;
use tokio::sync::{watch, Notify};

use crate::cluster::wire::{HealthReport, Replayed};
use crate::host::driver::SlotDriver;
use crate::host::ledger::{Entries, Ledger};
use crate::node::progress::Progress;
use crate::stats::Stats;

mod pass;
mod passes;
#[cfg(test)]
mod tests;

/// What the reconciler reads and acts on, and whom it tells.
pub struct Deps<A, D> {
    pub me: NodeId,
    pub reader: StateReader,
    pub ops: Arc<A>,
    pub driver: Arc<D>,
    pub lease: watch::Receiver<LeaseState>,
    /// The addresses this node may hold, on disk (written before binding).
    pub ledger: Ledger,
    pub stats: Arc<Stats>,
    /// The last observation, for the health report the lease keeper sends.
    pub report: Arc<Mutex<HealthReport>>,
    /// Progress marks for the watchdog (and failing releases).
    pub progress: Progress,
    /// Asks the lease keeper to renew now: a finished phase is acked in the
    /// next health report, and the switchover should not wait a heartbeat.
    pub renew_now: Arc<Notify>,
    /// Testing only (`SLOTD_INJECT_FAULTS`): stall the loop this many ms.
    pub stall_requests: Arc<AtomicU64>,
}

/// How it acts (from the node's config).
pub struct Settings {
    /// Where service IPs are bound and announced.
    pub interface: String,
    /// Rounds of one announcement (the first is sent before Cyrus starts).
    pub announce: AnnounceOptions,
    pub announce_refresh: Duration,
    pub probe_timeout: Duration,
    /// How often to mark progress while waiting (`None`: no watchdog, no
    /// need to wake).
    pub mark_every: Option<Duration>,
    /// The longest a demote (with its flush) may take.
    pub demote_timeout: Duration,
    /// Offer leftover sync logs for a replay (`cyrus.replay_leftover`).
    pub replay_leftover: bool,
}

/// This machine's reconciler. Built by [`Reconciler::new`]; everything
/// else in it is its own.
pub struct Reconciler<A: AddressOps, D: SlotDriver> {
    me: NodeId,
    reader: StateReader,
    ops: Arc<A>,
    driver: Arc<D>,
    lease: watch::Receiver<LeaseState>,
    stats: Arc<Stats>,
    report: Arc<Mutex<HealthReport>>,
    progress: Progress,
    renew_now: Arc<Notify>,
    stall_requests: Arc<AtomicU64>,
    interface: String,
    announce: AnnounceOptions,
    announce_refresh: Duration,
    probe_timeout: Duration,
    mark_every: Option<Duration>,
    demote_timeout: Duration,
    replay_leftover: bool,
    /// The ledger, and its entries as last written.
    ledger: Ledger,
    ledger_entries: Mutex<Entries>,
    /// Numbers the ledger writes.
    ledger_writes: AtomicU64,
    /// Slots demoted for a switchover, with the attempt's epoch.
    demoted: Arc<Mutex<BTreeMap<String, u64>>>,
    /// Slots whose demote runs now, on a task of its own (`Observed::busy`).
    busy: Arc<Mutex<BTreeSet<String>>>,
    /// Wakes the loop when such a task ends: the next step (releasing the
    /// master IP, the ack) should not wait for the next resync.
    job_done: Arc<Notify>,
    /// The demote tasks, to end them when the reconciler stops.
    demote_jobs: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Set when the reconciler stops: its last pass stops instances itself
    /// (a demote then stops the instance without a flush).
    stopping: AtomicBool,
    /// Replays run as master, by store.
    replayed: Arc<Mutex<BTreeMap<String, Replayed>>>,
    /// Replays under way, by store: they run on tasks of their own (up to
    /// `REPLAY_BOUND`), never holding up a pass.
    replaying: Mutex<BTreeMap<String, tokio::task::AbortHandle>>,
}

impl<A: AddressOps + 'static, D: SlotDriver> Reconciler<A, D> {
    /// A reconciler that starts from the ledger as the last agent (or
    /// `slotd fence`) left it.
    pub fn new(deps: Deps<A, D>, settings: Settings) -> Self {
        let Deps {
            me,
            reader,
            ops,
            driver,
            lease,
            ledger,
            stats,
            report,
            progress,
            renew_now,
            stall_requests,
        } = deps;
        let Settings {
            interface,
            announce,
            announce_refresh,
            probe_timeout,
            mark_every,
            demote_timeout,
            replay_leftover,
        } = settings;
        Reconciler {
            me,
            reader,
            ops,
            driver,
            lease,
            stats,
            report,
            progress,
            renew_now,
            stall_requests,
            interface,
            announce,
            announce_refresh,
            probe_timeout,
            mark_every,
            demote_timeout,
            replay_leftover,
            ledger_entries: Mutex::new(ledger.read_or_warn("starting from the interface's tags")),
            ledger,
            ledger_writes: AtomicU64::new(0),
            demoted: Arc::default(),
            busy: Arc::default(),
            job_done: Arc::default(),
            demote_jobs: Mutex::default(),
            stopping: AtomicBool::new(false),
            replayed: Arc::default(),
            replaying: Mutex::default(),
        }
    }
}
