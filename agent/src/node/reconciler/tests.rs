//! The reconciler at the size users run, in tokio's paused
//! time: a node with 40 master stores, whose addresses take as long as on a
//! real machine (an announcement is three rounds 100 ms apart, a probe that
//! finds nobody waits its 200 ms), with its lease renewed every heartbeat.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use slotd_netops::{AnnounceOptions, Bounded, Call, MacAddr, MemoryOps, MemoryTiming};
use slotd_raft_store::plan::{plan, Naming};
use slotd_raft_store::storage::{in_memory, SmData};
use slotd_raft_store::{ClusterState, NodeId};
use tokio::sync::watch;

use super::{Deps, Reconciler, Settings};
use crate::clock::{self, Mono};
use crate::host::driver::{DriverError, NoneDriver, SlotContext, SlotDriver};
use crate::host::ledger::Ledger;
use crate::node::progress::Progress;
use crate::stats::Stats;
use slotd_core::node::lease::LeaseState;
use slotd_core::node::reconcile::Instance;
use slotd_core::timing::KERNEL_CALL_TIMEOUT;

const ME: NodeId = 1;
const LEASE: Duration = Duration::from_millis(2000);
const HEARTBEAT: Duration = Duration::from_millis(200);

/// Three nodes with 80 slots each: 120 stores, 40 mastered by each node.
fn state() -> ClusterState {
    let s = plan(3, 80).unwrap().initial_state(&Naming::default()).unwrap();
    assert_eq!(s.masters_of(ME).count(), 40);
    s
}

/// The none driver, but starting an instance takes `start`.
#[derive(Clone, Default)]
struct SlowDriver {
    inner: NoneDriver,
    start: Duration,
    /// How long a replay of a leftover sync log takes.
    replay: Duration,
    /// How long a demote (stop, flush) takes.
    demote: Duration,
    /// How long its stop takes (before the instance is stopped).
    demote_stop: Duration,
    /// Demotes fail (after their time), and how many were tried.
    demote_fails: bool,
    demotes: Arc<std::sync::atomic::AtomicUsize>,
}

impl SlotDriver for SlowDriver {
    async fn start_master(&self, slot: &str, ctx: &SlotContext) -> Result<(), DriverError> {
        tokio::time::sleep(self.start).await;
        self.inner.start_master(slot, ctx).await
    }

    async fn start_replica(&self, slot: &str, ctx: &SlotContext) -> Result<(), DriverError> {
        tokio::time::sleep(self.start).await;
        self.inner.start_replica(slot, ctx).await
    }

    async fn stop(&self, slot: &str) -> Result<(), DriverError> {
        self.inner.stop(slot).await
    }

    async fn demote(&self, slot: &str, ctx: &SlotContext, force: bool) -> Result<(), DriverError> {
        self.demotes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(self.demote_stop).await;
        // Clients stop; the flush takes its time.
        self.inner.stop(slot).await?;
        tokio::time::sleep(self.demote).await;
        if self.demote_fails {
            return Err(DriverError::Failed {
                slot: slot.to_owned(),
                message: "the replica refuses the flush".into(),
            });
        }
        self.inner.demote(slot, ctx, force).await
    }

    async fn backlog(&self, slot: &str) -> Option<u64> {
        self.inner.backlog(slot).await
    }

    async fn leftover_log(&self, slot: &str) -> Option<Result<String, String>> {
        self.inner.leftover_log(slot).await
    }

    async fn finish_leftovers(&self, slot: &str, replayed: bool) -> Result<(), DriverError> {
        self.inner.finish_leftovers(slot, replayed).await
    }

    async fn replay(&self, slot: &str, log: &str) -> Result<String, DriverError> {
        tokio::time::sleep(self.replay).await;
        self.inner.replay(slot, log).await
    }

    async fn observe(&self) -> std::collections::BTreeMap<String, Instance> {
        self.inner.observe().await
    }
}

struct Shell {
    /// Keeps the state's sender alive (the reconciler stops without it).
    _state: slotd_raft_store::storage::MemoryState,
    /// Holds the ledger.
    _run: tempfile::TempDir,
    ledger: Ledger,
    progress: Progress,
    ops: MemoryOps,
    driver: SlowDriver,
    masters: BTreeSet<IpAddr>,
    stop: watch::Sender<bool>,
    renewing: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    report: Arc<std::sync::Mutex<crate::cluster::wire::HealthReport>>,
}

impl Shell {
    /// Starts the reconciler of node 1 and a stand-in lease keeper that,
    /// while `renewing`, is granted a lease every heartbeat (from send time,
    /// a few ms of round trip).
    fn start(start: Duration) -> Shell {
        Shell::start_with(start, Duration::ZERO, Duration::ZERO, state())
    }

    /// As `start`, with replays taking `replay` and demotes `demote`, from
    /// state `s`.
    fn start_with(start: Duration, replay: Duration, demote: Duration, s: ClusterState) -> Shell {
        Shell::start_driver(
            SlowDriver {
                start,
                replay,
                demote,
                ..SlowDriver::default()
            },
            s,
        )
    }

    /// The reconciler of node 1 with `driver`, from state `s`.
    fn start_driver(driver: SlowDriver, s: ClusterState) -> Shell {
        let masters = s.masters_of(ME).map(|st| st.master_ip.addr).collect();
        let (reader, writer) = in_memory(SmData {
            state: s,
            ..SmData::default()
        });
        let ops = MemoryOps::new(MacAddr([2, 0, 0, 0, 0, 1]))
            .with_interface("eth0")
            .with_timing(MemoryTiming::realistic());
        let report = Arc::new(std::sync::Mutex::new(crate::cluster::wire::HealthReport::default()));
        let (lease_tx, lease_rx) = watch::channel(LeaseState::default());
        let (renewing, mut renew_rx) = watch::channel(true);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tick.tick().await;
                if !*renew_rx.borrow_and_update() {
                    let _ = renew_rx.changed().await;
                    continue;
                }
                let sent = clock::now();
                tokio::time::sleep(Duration::from_millis(3)).await;
                lease_tx.send_modify(|l| l.valid_until = Some(sent + LEASE));
            }
        });
        let (stop, stop_rx) = watch::channel(false);
        let run = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(run.path());
        let progress = Progress::default();
        // The parts this shell stands in for make progress all along.
        let marks = progress.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(slotd_core::timing::MARK_EVERY);
            loop {
                tick.tick().await;
                marks.mark(slotd_core::node::watchdog::Part::LeaseKeeper);
                marks.mark(slotd_core::node::watchdog::Part::Raft);
            }
        });
        let task = tokio::spawn(
            Reconciler::new(
                Deps {
                    me: ME,
                    reader,
                    // Deadlines on every kernel call, as the daemon has them.
                    ops: Arc::new(Bounded::new(ops.clone(), KERNEL_CALL_TIMEOUT)),
                    driver: Arc::new(driver.clone()),
                    lease: lease_rx,
                    ledger: ledger.clone(),
                    stats: Arc::new(Stats::default()),
                    report: report.clone(),
                    progress: progress.clone(),
                    renew_now: Default::default(),
                    stall_requests: Default::default(),
                },
                Settings {
                    interface: "eth0".into(),
                    announce: AnnounceOptions::default(),
                    announce_refresh: Duration::from_secs(60),
                    probe_timeout: Duration::from_millis(200),
                    mark_every: Some(slotd_core::timing::MARK_EVERY),
                    demote_timeout: Duration::from_secs(20),
                    replay_leftover: false,
                },
            )
            .run(stop_rx),
        );
        Shell {
            _state: writer,
            _run: run,
            ledger,
            progress,
            ops,
            driver,
            masters,
            stop,
            renewing,
            task,
            report,
        }
    }

    fn bound(&self) -> BTreeSet<IpAddr> {
        self.ops.addresses("eth0").iter().map(|p| p.addr()).collect()
    }

    /// The master IPs in the ledger on disk.
    fn masters_in_ledger(&self) -> BTreeSet<IpAddr> {
        let (entries, _) = self.ledger.read().unwrap();
        entries.into_keys().filter(|a| self.masters.contains(a)).collect()
    }

    fn masters_released(&self) -> usize {
        self.ops
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Release { prefix, .. } if self.masters.contains(&prefix.addr())))
            .count()
    }

    fn announces_of_masters(&self) -> usize {
        self.ops
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Announce { addr, .. } if self.masters.contains(addr)))
            .count()
    }

    async fn masters_running(&self) -> usize {
        self.driver
            .observe()
            .await
            .values()
            .filter(|i| matches!(i, Instance::Master { .. }))
            .count()
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn sleep(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn forty_masters_with_slow_announcements_never_fence_in_ten_minutes() {
    let shell = Shell::start(Duration::ZERO);
    // One probe (200 ms, all at once) and the binds: well under a second,
    // where one announcement after another would take 40 × 200 ms.
    sleep(1000).await;
    assert!(
        shell.masters.is_subset(&shell.bound()),
        "not all 40 master IPs bound after 1 s"
    );
    assert_eq!(shell.masters_running().await, 40);
    assert_eq!(shell.masters_in_ledger(), shell.masters, "bound but not in the ledger");
    sleep(1000).await;
    // Every new master IP announced in full: the first round in the pass,
    // two more from the announcer.
    assert_eq!(shell.announces_of_masters(), 3 * 40);
    sleep(600_000).await;
    assert_eq!(
        shell.masters_released(),
        0,
        "a master IP was released while the lease held"
    );
    assert!(shell.masters.is_subset(&shell.bound()));
    assert_eq!(shell.masters_running().await, 40);
    // The refresh: every minute, a full announcement of each held master IP.
    assert!(
        shell.announces_of_masters() >= 3 * 40 + 9 * 3 * 40,
        "{} announcements",
        shell.announces_of_masters()
    );
    shell.stop().await;
}

/// A pass that takes longer than the lease (40 Cyrus starts of 3 s each, side
/// by side, after the probe) is never cut while renewals keep the lease valid:
/// the fence looks at the lease as it stands, not as it stood when the pass
/// began.
#[tokio::test(start_paused = true)]
async fn a_pass_longer_than_the_lease_goes_on_while_renewed() {
    let shell = Shell::start(Duration::from_secs(3));
    // The replicas start first (the lease is not valid yet), then the
    // masters: probe, binds, starts — each wave 3 s.
    sleep(8000).await;
    assert_eq!(shell.masters_running().await, 40);
    sleep(60_000).await;
    assert_eq!(
        shell.masters_released(),
        0,
        "a master IP was released while the lease held"
    );
    assert!(shell.masters.is_subset(&shell.bound()));
    shell.stop().await;
}

/// When renewals stop, the node gives up every master role when the last
/// lease ends, not before; announcements in flight stop with it.
#[tokio::test(start_paused = true)]
async fn when_renewals_stop_the_fence_fires_at_the_lease_end() {
    let shell = Shell::start(Duration::ZERO);
    sleep(2000).await;
    assert!(shell.masters.is_subset(&shell.bound()));
    let _ = shell.renewing.send(false);
    let last_renewal = clock::now();
    // The last grant (sent at most a heartbeat ago) still holds…
    sleep(LEASE.as_millis() as u64 - HEARTBEAT.as_millis() as u64 - 10).await;
    assert!(shell.masters.is_subset(&shell.bound()), "fenced too early");
    assert_eq!(shell.masters_released(), 0);
    // …and is over a lease after it was sent.
    sleep(HEARTBEAT.as_millis() as u64 + 50).await;
    assert!(clock::now().since(last_renewal) > LEASE);
    assert!(
        shell.bound().is_disjoint(&shell.masters),
        "master IPs kept past the lease"
    );
    assert_eq!(shell.masters_running().await, 0);
    assert!(shell.masters_in_ledger().is_empty(), "released but still in the ledger");
    let announced = shell.announces_of_masters();
    sleep(70_000).await;
    assert_eq!(shell.announces_of_masters(), announced, "announced an IP it gave up");
    assert!(shell.bound().is_disjoint(&shell.masters));
    shell.stop().await;
}

/// How giving up the master IPs goes wrong once the lease has ended.
#[derive(Clone, Copy, Debug)]
enum GivingUpFault {
    /// Every release fails (the kernel says no).
    ReleasesFail,
    /// Every list and release never answers (a kernel that does not reply).
    KernelHangs,
}

/// Once the lease ends the node must give up its master IPs, and cannot:
/// the watchdog pings stop `STALL_BOUND` after the fencing began (systemd
/// then kills the agent and `slotd fence` releases), as for a stalled loop
/// — waiting on the kernel is no progress. When the kernel works again the
/// calls' deadlines have ended the hung ones: the fence completes, and the
/// pings resume.
async fn pings_stop_while_giving_up_fails(fault: GivingUpFault) {
    use std::os::unix::net::UnixDatagram;

    use slotd_core::timing::STALL_BOUND;
    use slotd_netops::Op;

    use crate::daemon::notify::Notifier;
    use crate::daemon::watchdog::run_pinger;

    let shell = Shell::start(Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_nonblocking(true).unwrap();
    let (stop_pinger, stop_rx) = watch::channel(false);
    let pinger = tokio::spawn(run_pinger(
        Arc::new(Notifier::to_socket(&path)),
        shell.progress.clone(),
        stop_rx,
    ));
    let mut pings: Vec<Mono> = Vec::new();
    watch_for(&socket, 2000, &mut pings).await;
    assert!(pings.len() > 20, "no pings while all is well: {}", pings.len());
    match fault {
        GivingUpFault::ReleasesFail => shell.ops.fail_always(Op::Release, true),
        GivingUpFault::KernelHangs => {
            shell.ops.hang(Op::Release, true);
            shell.ops.hang(Op::List, true);
        }
    }
    // Renewals stop: the lease ends within 2 s, and the node must give up
    // its master IPs — and cannot.
    let _ = shell.renewing.send(false);
    let stopped_renewing = clock::now();
    pings.clear();
    watch_for(&socket, 5000, &mut pings).await;
    let last = *pings.last().expect("pings went on while the lease held");
    let since = shell.progress.giving_up_since().expect("giving up began");
    assert!(since.since(stopped_renewing) <= LEASE, "{fault:?}: the fence came late");
    // Pings stop once giving up has not succeeded for STALL_BOUND (one ping
    // interval of slack), and not before.
    let after = last.since(since);
    assert!(
        after <= STALL_BOUND + Duration::from_millis(60),
        "{fault:?}: pinged {after:?} after"
    );
    assert!(
        after + Duration::from_millis(60) >= STALL_BOUND,
        "{fault:?}: stopped {after:?} after"
    );
    assert!(
        shell.masters.is_subset(&shell.bound()),
        "the releases were meant to fail"
    );

    // The kernel works again: no call is left hanging for ever, so the
    // fence completes and the pings come back.
    shell.ops.fail_always(Op::Release, false);
    shell.ops.hang(Op::Release, false);
    shell.ops.hang(Op::List, false);
    pings.clear();
    watch_for(&socket, 5000, &mut pings).await;
    assert!(shell.bound().is_disjoint(&shell.masters), "{fault:?}: master IPs kept");
    assert_eq!(shell.progress.giving_up_since(), None);
    assert!(!pings.is_empty(), "{fault:?}: the pings did not resume");
    let _ = stop_pinger.send(true);
    let _ = pinger.await;
    shell.stop().await;
}

#[tokio::test(start_paused = true)]
async fn releases_that_fail_after_the_lease_stop_the_pings() {
    pings_stop_while_giving_up_fails(GivingUpFault::ReleasesFail).await;
}

#[tokio::test(start_paused = true)]
async fn a_kernel_that_stops_answering_after_the_lease_stops_the_pings() {
    pings_stop_while_giving_up_fails(GivingUpFault::KernelHangs).await;
}

/// Every 10 ms of virtual time for `ms`, notes the pings that arrived.
async fn watch_for(socket: &std::os::unix::net::UnixDatagram, ms: u64, pings: &mut Vec<Mono>) {
    for _ in 0..ms / 10 {
        sleep(10).await;
        let mut buf = [0u8; 64];
        while let Ok(n) = socket.recv(&mut buf) {
            if &buf[..n] == b"WATCHDOG=1" {
                pings.push(clock::now());
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_long_replay_does_not_hold_up_the_repair_of_other_instances() {
    // One of the 40 master stores waits for a replay that takes 50 s.
    let mut s = state();
    let mine: Vec<String> = s.masters_of(ME).take(2).map(|st| st.name.clone()).collect();
    let (replaying, other) = (mine[0].clone(), mine[1].clone());
    s.stores.get_mut(&replaying).unwrap().replay = Some(slotd_raft_store::Replay {
        from: 2,
        log: "APPEND user.alice\n".into(),
    });
    let other_slot = s.stores[&other].slot_on(ME).unwrap().slot.clone();
    let shell = Shell::start_with(Duration::ZERO, Duration::from_secs(50), Duration::ZERO, s);
    sleep(2000).await;
    assert_eq!(shell.masters_running().await, 40);

    // Another store's instance dies: the next pass starts it again while
    // the replay goes on.
    shell.driver.inner.stop(&other_slot).await.unwrap();
    assert_eq!(shell.masters_running().await, 39);
    sleep(2500).await;
    assert_eq!(shell.masters_running().await, 40, "restarted during the replay");
    let reported = |shell: &Shell| shell.report.lock().unwrap().replayed.get(&replaying).cloned();
    assert_eq!(reported(&shell), None, "the replay is still under way");

    // The replay ends and its outcome goes into the health report once.
    sleep(50_000).await;
    let outcome = reported(&shell).expect("the replay's outcome is reported");
    assert!(outcome.ok && outcome.from == 2, "{outcome:?}");
    shell.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_long_flush_does_not_hold_up_the_node_and_the_ip_goes_only_after_it() {
    let (s, moving, moving_ip) = handing_over();
    let attempt = s.stores[&moving].epoch;
    let other = s
        .masters_of(ME)
        .map(|st| st.name.clone())
        .find(|n| *n != moving)
        .unwrap();
    let other_slot = s.stores[&other].slot_on(ME).unwrap().slot.clone();
    // Its flush takes 15 s.
    let shell = Shell::start_with(Duration::ZERO, Duration::ZERO, Duration::from_secs(15), s);
    // It held its master IP when the switchover began.
    bind(&shell, moving_ip).await;
    sleep(2000).await;
    assert_eq!(shell.masters_running().await, 39, "the demoting one stopped at once");
    assert!(shell.bound().contains(&moving_ip), "the master IP stays while flushing");

    // Another store's instance dies: the next pass starts it again while
    // the flush goes on.
    shell.driver.inner.stop(&other_slot).await.unwrap();
    sleep(2500).await;
    assert_eq!(shell.masters_running().await, 39, "restarted during the flush");
    assert!(shell.bound().contains(&moving_ip), "still flushing: the IP stays");
    assert!(shell.report.lock().unwrap().done.is_empty(), "not acked yet");

    // The flush ends: the IP goes, and the phase is acked at once (no
    // wait for the next resync).
    sleep(15_000 - 4500 + 100).await;
    assert!(!shell.bound().contains(&moving_ip), "released after the demote");
    let done = shell.report.lock().unwrap().done.clone();
    assert_eq!(done.get(&moving), Some(&attempt), "{done:?}");
    shell.stop().await;
}

/// A state where node 1 hands one of its stores over (Demoting), with its
/// master IP bound: (state, store, master IP).
fn handing_over() -> (ClusterState, String, IpAddr) {
    let mut s = state();
    let moving = s.masters_of(ME).next().unwrap().name.clone();
    let ip = s.stores[&moving].master_ip.addr;
    let to = s.stores[&moving].replicas().next().unwrap();
    let epoch = s.stores[&moving].epoch;
    let r = s.apply(&slotd_raft_store::Request {
        at_ms: 0,
        command: slotd_raft_store::Command::BeginSwitchover {
            store: moving.clone(),
            epoch,
            to,
            force: false,
            reason: slotd_raft_store::Reason::Operator,
        },
    });
    assert!(r.is_applied(), "{r:?}");
    (s, moving, ip)
}

async fn bind(shell: &Shell, ip: IpAddr) {
    use slotd_netops::AddressOps;
    let prefix = slotd_netops::IpPrefix::new(ip, 32).unwrap();
    shell.ops.bind("eth0", prefix).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_demote_that_fails_at_once_is_tried_again_after_a_pause_not_in_a_loop() {
    let (s, _, ip) = handing_over();
    let driver = SlowDriver {
        demote_fails: true,
        ..SlowDriver::default()
    };
    let shell = Shell::start_driver(driver, s);
    bind(&shell, ip).await;
    sleep(5000).await;
    let tries = shell.driver.demotes.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=7).contains(&tries), "{tries} demotes in 5 s");
    assert!(
        shell.bound().contains(&ip),
        "the master IP stays while the demote fails"
    );
    shell.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_agent_that_stops_mid_demote_leaves_no_master_behind() {
    let (s, moving, ip) = handing_over();
    let slot = s.stores[&moving].slot_on(ME).unwrap().slot.clone();
    // The demote's stop hangs for 15 s.
    let driver = SlowDriver {
        demote_stop: Duration::from_secs(15),
        ..SlowDriver::default()
    };
    let shell = Shell::start_driver(driver, s);
    // Its instance ran as master when the switchover began.
    let ctx = SlotContext {
        store: moving.clone(),
        epoch: 1,
        master_ip: ip,
        replica_ip: ip,
        slots: 2,
    };
    shell.driver.inner.start_master(&slot, &ctx).await.unwrap();
    bind(&shell, ip).await;
    sleep(2000).await;
    assert_eq!(shell.driver.demotes.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(shell.bound().contains(&ip), "still demoting: the IP stays");
    let (driver, ops) = (shell.driver.clone(), shell.ops.clone());
    shell.stop().await;
    // The last pass stopped the instance itself and gave the IP up.
    let running = driver.inner.observe().await;
    assert!(
        !matches!(running.get(&slot), Some(Instance::Master { .. })),
        "{running:?}"
    );
    assert!(!ops.addresses("eth0").iter().any(|p| p.addr() == ip));
}
