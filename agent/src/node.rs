//! Start-up and shutdown of one agent.
//!
//! Start: open the Raft storage, start the Raft node, bind the gRPC and
//! metrics listeners, write the bound addresses to `<data_dir>/endpoints`,
//! serve, then tell systemd READY.
//!
//! Shutdown, in this order (so that nothing half-served outlives Raft):
//! 0. STOPPING to systemd; this node's masters are handed over by
//!    switchovers (`stop`), bounded by `switchover.stop_drain_timeout_ms`;
//! 1. admin calls refused from now on, health NOT_SERVING;
//! 2. the acting loops stop: lease keeper, failover engine, and the
//!    reconciler, which first gives up every master role it holds;
//! 3. Raft stops (no more votes, appends, or applies);
//! 4. the gRPC and metrics servers stop taking connections and finish;
//! 5. the remaining tasks (watchdog) are joined.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::{ServerState, SnapshotPolicy};
use slotd_netops::{KernelOps, MacAddr, MemoryOps, NetError};
use slotd_proto::v1::admin_server::AdminServer;
use slotd_proto::v1::peer_server::PeerServer;
use slotd_raft_store::storage::{self, OpenError};
use slotd_raft_store::typ::Raft;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::addresses::AnyOps;
use crate::admin::AdminService;
use crate::clock;
use crate::cluster::Cluster;
use crate::config::{Config, Driver};
use crate::cyrus::CyrusDriver;
use crate::driver::{AnyDriver, NoneDriver};
use crate::identity::{Identity, IdentityError};
use crate::leader::{FailoverEngine, Granter};
use crate::lease;
use crate::ledger::Ledger;
use crate::lock::{self, LockError};
use crate::metrics::{self, Exposition};
use crate::network::PeerNetwork;
use crate::notify::Notifier;
use crate::peer::PeerService;
use crate::peer_call::{Channels, MAX_MESSAGE};
use crate::reconcile::run::Reconciler;
use crate::stats::Stats;
use crate::tls::{Credentials, Who};
use crate::watchdog::{self, Progress};
use crate::wire::HealthReport;
use slotd_core::leader::{LeaderCore, LeaderTiming};
use slotd_core::node::lease::LeaseState;
use slotd_core::node::watchdog::Part;
use slotd_core::timing::{MARK_EVERY, UNIT_WATCHDOG};

/// Why the agent could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("runtime_dir: {0}")]
    Lock(#[from] LockError),
    #[error("{0}")]
    Storage(#[from] OpenError),
    #[error("data_dir: {0}")]
    Identity(#[from] IdentityError),
    #[error("Raft settings from [timing]: {0}")]
    RaftConfig(String),
    #[error("starting Raft: {0}")]
    Raft(String),
    #[error("netlink: {0}")]
    Netlink(#[from] NetError),
    #[error("{0}")]
    Cyrus(String),
    #[error("{what}: cannot bind {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("{0}")]
    Watchdog(String),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("tls.cert_file names {found}; this node is {name} (it must name {expected})")]
    NotOurCertificate {
        found: String,
        name: String,
        expected: String,
    },
    #[error("gRPC TLS: {0}")]
    ServerTls(String),
}

impl NodeError {
    /// Bad input (exit code 2, like a bad config) rather than a failure.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, NodeError::Tls(_) | NodeError::NotOurCertificate { .. })
    }
}

/// This node's credentials from `[tls]` (none when `insecure`), checked to
/// name this node: a certificate of another node would be refused by every
/// peer, and one that passed could speak for the wrong node.
pub fn node_credentials(config: &Config) -> Result<Option<Credentials>, NodeError> {
    let Some(files) = crate::tls::Files::of_config(&config.tls)? else {
        return Ok(None);
    };
    let creds = Credentials::load(&files)?;
    if creds.who != Who::Node(config.name.clone()) {
        return Err(NodeError::NotOurCertificate {
            found: creds.who.to_string(),
            name: config.name.clone(),
            expected: format!("{}{}", crate::tls::NODE_URI, config.name),
        });
    }
    Ok(Some(creds))
}

/// The longest any gRPC call may run here: well above every legitimate
/// one (a forwarded call, an init that joins every node, a snapshot).
pub const CALL_DEADLINE: Duration = Duration::from_secs(60);

/// File in the data directory where a running agent writes the addresses it
/// bound (`listen=…`, `metrics=…`), so that tools and tests using port 0
/// learn them.
pub const ENDPOINTS_FILE: &str = "endpoints";

/// openraft's settings from the node config. Election timeouts are sized for
/// lossy LANs (several heartbeats may be lost before anyone campaigns).
pub fn raft_config(config: &Config) -> Result<Arc<openraft::Config>, NodeError> {
    let t = &config.timing;
    let c = openraft::Config {
        cluster_name: "slotd".into(),
        heartbeat_interval: t.raft_heartbeat_ms,
        election_timeout_min: t.election_timeout_min_ms,
        election_timeout_max: t.election_timeout_max_ms,
        install_snapshot_timeout: 5_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(5_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Default::default()
    };
    c.validate()
        .map(Arc::new)
        .map_err(|e| NodeError::RaftConfig(e.to_string()))
}

/// Runs an agent until the first message on `stops` (SIGTERM, SIGINT),
/// hands its masters over (DESIGN rule 7; a second message cuts that
/// short), then stops it in order.
pub async fn run(config: Config, mut stops: tokio::sync::mpsc::UnboundedReceiver<()>) -> Result<(), NodeError> {
    // Bad TLS files are bad input: refused before anything is touched.
    let tls = node_credentials(&config)?;
    // Then: no other agent, and no `slotd fence`, on this data.
    let _lock = lock::acquire(&config.runtime_dir)?;
    // Before Raft: a driver that cannot work refuses the start cleanly.
    let driver = match config.cyrus.driver {
        Driver::None => AnyDriver::None(NoneDriver::default()),
        Driver::Exec | Driver::Systemd => AnyDriver::Cyrus(
            CyrusDriver::new(&config.cyrus, &config.name)
                .await
                .map_err(NodeError::Cyrus)?,
        ),
    };
    if tls.is_none() {
        warn!(
            listen = %config.listen,
            "tls.insecure = true: the gRPC port serves plain text to anyone who reaches it; \
             whoever can reach it can move masters and fake heartbeats"
        );
    }
    let identity = Identity::load(&config.data_dir)?;
    let (log, sm) = storage::open(&config.data_dir)?;
    let reader = sm.reader();
    let network = PeerNetwork {
        channels: Channels::new(identity.clone(), tls.clone()),
    };
    let raft = Raft::new(config.node_id, raft_config(&config)?, network.clone(), log, sm)
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
    let engine_wake = Arc::new(Notify::new());
    let cluster = Arc::new(Cluster {
        id: config.node_id,
        name: config.name.clone(),
        raft: raft.clone(),
        reader,
        network,
        leader: Mutex::new(LeaderCore::new(config.node_id, LeaderTiming::of(&config.timing))),
        engine_wake: engine_wake.clone(),
        identity,
        switchover: config.switchover.clone(),
    });
    let stats = Arc::new(Stats::default());
    let granter = Granter::spawn(cluster.clone(), config.timing.lease());
    let ops = if config.manage_addresses {
        AnyOps::Kernel(KernelOps::new()?)
    } else {
        AnyOps::Memory(MemoryOps::new(MacAddr([0x02, 0, 0, 0, 0, 0x01])).with_interface(&config.interface))
    };

    let bind = |what: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Bind { what, addr, source })
    };
    let listener = bind("listen", config.listen).await?;
    let metrics_listener = bind("metrics_listen", config.metrics_listen).await?;
    let local = |l: &TcpListener, what: &'static str, addr: SocketAddr| {
        l.local_addr().map_err(|source| NodeError::Bind { what, addr, source })
    };
    let listen = local(&listener, "listen", config.listen)?;
    let metrics_at = local(&metrics_listener, "metrics_listen", config.metrics_listen)?;
    write_endpoints(&config.data_dir, listen, metrics_at)?;
    info!(node = config.node_id, name = %config.name, %listen, metrics = %metrics_at, "slotd serving");

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let closing = Arc::new(AtomicBool::new(false));
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AdminServer<AdminService>>().await;
    // Both versions: grpcurl and current clients ask v1; Python's
    // grpcio-reflection, Evans, Postman and older grpcurl ask v1alpha.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(slotd_proto::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .map_err(|e| NodeError::Reflection(e.to_string()))?;
    let reflection_alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| NodeError::Reflection(e.to_string()))?;
    let peer = PeerServer::new(PeerService {
        cluster: cluster.clone(),
        granter: granter.clone(),
        stats: stats.clone(),
        leader_calls: crate::admin::CallLimit::new(crate::admin::MAX_LEADER_CALLS),
        secure: tls.is_some(),
    })
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE);
    let admin = AdminServer::new(AdminService {
        cluster: cluster.clone(),
        closing: closing.clone(),
        calls: crate::admin::CallLimit::new(crate::admin::MAX_ADMIN_CALLS),
        secure: tls.is_some(),
    })
    .max_decoding_message_size(crate::admin::MAX_ADMIN_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE);
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        server = server
            .tls_config(tls.server())
            .map_err(|e| NodeError::ServerTls(e.to_string()))?;
    }
    let grpc = tokio::spawn(
        server
            // No call holds the agent's resources for ever (a client that
            // stalls, a forwarded call whose leader hangs).
            .timeout(CALL_DEADLINE)
            .add_service(peer)
            .add_service(admin)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                stopped(stop_rx.clone()),
            ),
    );
    let (render_cluster, render_stats) = (cluster.clone(), stats.clone());

    // The loops that act: lease keeper, reconciler, failover engine. They
    // stop first at shutdown (the reconciler gives up its master roles).
    let (loops_tx, loops_rx) = watch::channel(false);
    let report = Arc::new(Mutex::new(HealthReport::default()));
    let render_report = report.clone();
    let report_now = report.clone();
    let progress = Progress::default();
    let ledger = Ledger::new(&config.runtime_dir);
    let renew_now = Arc::new(Notify::new());
    let (lease, keeper) = lease::spawn_keeper(
        cluster.clone(),
        granter.clone(),
        config.timing.heartbeat(),
        config.timing.lease(),
        Arc::new(move || report_now.lock().unwrap_or_else(PoisonError::into_inner).clone()),
        progress.clone(),
        renew_now.clone(),
        loops_rx.clone(),
    );
    // The watchdog's machinery runs only when systemd watches: without one
    // nothing would act on it, and it costs wake-ups.
    let watched = Notifier::watchdog_timeout().is_some();
    let raft_marks = watched.then(|| tokio::spawn(mark_raft(raft.clone(), progress.clone(), loops_rx.clone())));
    let stall_requests = Arc::new(AtomicU64::new(0));
    if std::env::var_os(INJECT_FAULTS).is_some_and(|v| v == "1") {
        warn!("{INJECT_FAULTS}=1: SIGUSR1 stalls the reconciler for 10 s (for tests only)");
        tokio::spawn(stall_on_sigusr1(stall_requests.clone()));
    }
    let lease_for_metrics = lease.clone();
    let reconciler = tokio::spawn(
        Reconciler {
            me: config.node_id,
            reader: cluster.reader.clone(),
            ops: Arc::new(ops),
            driver: Arc::new(driver),
            interface: config.interface.clone(),
            lease,
            announce: slotd_netops::AnnounceOptions::default(),
            announce_refresh: config.timing.announce_refresh(),
            probe_timeout: config.timing.probe_timeout(),
            stats: stats.clone(),
            report,
            progress: progress.clone(),
            mark_every: watched.then_some(MARK_EVERY),
            stall_requests,
            // As the last agent (or `slotd fence`) left it.
            ledger_entries: Mutex::new(ledger.read_or_warn("starting from the interface's tags")),
            ledger,
            ledger_writes: AtomicU64::new(0),
            demoted: Default::default(),
            busy: Default::default(),
            job_done: Default::default(),
            demote_jobs: Default::default(),
            stopping: Default::default(),
            demote_timeout: config.switchover.demote_timeout(),
            renew_now,
            replay_leftover: config.cyrus.replay_leftover,
            replayed: Default::default(),
            replaying: Default::default(),
        }
        .run(loops_rx.clone()),
    );
    let engine = tokio::spawn(
        FailoverEngine {
            cluster: cluster.clone(),
            heartbeat: config.timing.heartbeat(),
            stats: stats.clone(),
            wake: engine_wake,
            switchover: config.switchover.clone(),
        }
        .run(loops_rx.clone()),
    );

    let metrics_task = tokio::spawn(metrics::serve(
        metrics_listener,
        Arc::new(move || render(&render_cluster, &render_stats, &lease_for_metrics, &render_report)),
        stopped(stop_rx.clone()),
    ));

    let notifier = Arc::new(Notifier::from_env());
    check_watchdog(&config, &notifier)?;
    if let Err(e) = notifier.ready() {
        warn!(error = %e, "sd_notify READY failed");
    }
    let watchdog = watched.then(|| {
        tokio::spawn(watchdog::run_pinger(
            notifier.clone(),
            progress,
            config.timing.clock_skew_margin(),
            loops_rx.clone(),
        ))
    });

    let undrain = tokio::spawn(crate::stop::undrain_after_stop(cluster.clone()));
    stops.recv().await;
    info!("shutting down");
    let _ = notifier.stopping();
    undrain.abort();
    crate::stop::drain_before_stopping(&cluster, config.switchover.stop_drain_timeout(), async {
        stops.recv().await;
    })
    .await;
    closing.store(true, Ordering::SeqCst);
    health.set_not_serving::<AdminServer<AdminService>>().await;
    let _ = loops_tx.send(true);
    for (name, task) in [
        ("reconciler", reconciler),
        ("lease keeper", keeper),
        ("failover engine", engine),
    ] {
        if tokio::time::timeout(Duration::from_secs(2), task).await.is_err() {
            warn!("{name} did not stop within 2 s");
        }
    }
    if let Err(e) = raft.shutdown().await {
        warn!(error = %e, "Raft did not stop cleanly");
    }
    let _ = stop_tx.send(true);
    // Bounded: a peer holding a connection open must not keep us alive.
    let grace = Duration::from_millis(500);
    match tokio::time::timeout(grace, grpc).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "gRPC server ended with an error"),
        Ok(Err(e)) => warn!(error = %e, "gRPC server task failed"),
        Err(_) => warn!("gRPC server still had connections after {grace:?}; leaving them"),
    }
    let _ = tokio::time::timeout(grace, metrics_task).await;
    if let Some(watchdog) = watchdog {
        let _ = tokio::time::timeout(grace, watchdog).await;
    }
    if let Some(marks) = raft_marks {
        marks.abort();
    }
    info!("stopped");
    Ok(())
}

fn write_endpoints(dir: &Path, listen: SocketAddr, metrics: SocketAddr) -> Result<(), NodeError> {
    let path: PathBuf = dir.join(ENDPOINTS_FILE);
    // Whole: a reader never sees half a file.
    crate::durable::replace(&path, format!("listen={listen}\nmetrics={metrics}\n").as_bytes())
        .map_err(|source| NodeError::Write { path, source })
}

/// Environment variable that turns on fault injection (tests only).
pub const INJECT_FAULTS: &str = "SLOTD_INJECT_FAULTS";

/// Marks the Raft core's progress: a round trip through it, a few times
/// within its bound.
async fn mark_raft(raft: Raft, progress: Progress, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Part::Raft.mark_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        if let Ok(Ok(())) = tokio::time::timeout(Part::Raft.bound(), raft.with_raft_state(|_| ())).await {
            progress.mark(Part::Raft);
        }
    }
}

/// Testing only: each SIGUSR1 stalls the reconciler for 10 s.
async fn stall_on_sigusr1(requests: Arc<AtomicU64>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        warn!("cannot listen for SIGUSR1: no fault injection");
        return;
    };
    while usr1.recv().await.is_some() {
        requests.store(10_000, Ordering::Relaxed);
    }
}

/// Refuses a systemd watchdog too long for the margin (see `watchdog`);
/// under systemd without one, says what that means.
fn check_watchdog(config: &Config, notifier: &Notifier) -> Result<(), NodeError> {
    match Notifier::watchdog_timeout() {
        Some(w) => slotd_core::node::watchdog::check(w, config.timing.clock_skew_margin()).map_err(NodeError::Watchdog),
        None => {
            if notifier.is_active() {
                warn!(
                    "no systemd watchdog (WatchdogSec) for this unit: a frozen agent would keep its master IPs \
                     until it is killed by hand; the shipped unit sets WatchdogSec={}ms",
                    UNIT_WATCHDOG.as_millis()
                );
            }
            Ok(())
        }
    }
}

/// The Prometheus text for `/metrics`.
pub fn render(
    cluster: &Cluster,
    stats: &Stats,
    lease: &watch::Receiver<LeaseState>,
    report: &Mutex<HealthReport>,
) -> String {
    let m = cluster.raft.metrics().borrow().clone();
    let mut x = Exposition::new();
    let id = cluster.id.to_string();
    for (state, name) in [
        (ServerState::Leader, "leader"),
        (ServerState::Follower, "follower"),
        (ServerState::Candidate, "candidate"),
        (ServerState::Learner, "learner"),
    ] {
        x.gauge(
            "slotd_raft_state",
            "Raft role of this node (1 for the current one).",
            &[("node", &id), ("state", name)],
            if m.state == state { 1.0 } else { 0.0 },
        );
    }
    x.gauge("slotd_raft_term", "Current Raft term.", &[], m.current_term as f64);
    x.gauge(
        "slotd_raft_leader",
        "Node id of the known leader (-1 when none).",
        &[],
        m.current_leader.map_or(-1.0, |l| l as f64),
    );
    x.gauge(
        "slotd_raft_last_log_index",
        "Index of the last log entry.",
        &[],
        m.last_log_index.unwrap_or(0) as f64,
    );
    x.gauge(
        "slotd_raft_last_applied_index",
        "Index of the last applied log entry.",
        &[],
        m.last_applied.map_or(0, |l| l.index) as f64,
    );
    cluster.reader.with(|d| {
        for s in d.state.stores.values() {
            let master = d.state.node_name(s.master);
            x.gauge(
                "slotd_store_epoch",
                "Current epoch of the store.",
                &[("store", &s.name)],
                s.epoch as f64,
            );
            x.gauge(
                "slotd_store_master",
                "1 for the node that masters the store.",
                &[("store", &s.name), ("node", &master)],
                1.0,
            );
        }
    });
    {
        // What this node saw of its own instances (health report).
        // Only the three small maps, not the whole report (leftover sync
        // logs ride in it): a scrape copies what it shows.
        let (failing, backlog, backlog_age) = {
            let r = report.lock().unwrap_or_else(PoisonError::into_inner);
            let failing: std::collections::BTreeMap<String, usize> =
                r.health.iter().map(|(s, p)| (s.clone(), p.len())).collect();
            (failing, r.backlog.clone(), r.backlog_age_ms.clone())
        };
        cluster.reader.with(|d| {
            for s in d.state.stores.values().filter(|s| s.slot_on(cluster.id).is_some()) {
                x.gauge(
                    "slotd_health_checks_failing",
                    "Failing health checks of this node's instance of the store (banners, sync_client).",
                    &[("store", &s.name)],
                    failing.get(&s.name).copied().unwrap_or(0) as f64,
                );
            }
        });
        for (store, bytes) in &backlog {
            x.gauge(
                "slotd_replication_backlog_bytes",
                "Bytes of the sync log this master has not sent to its replica yet.",
                &[("store", store)],
                *bytes as f64,
            );
        }
        for (store, ms) in &backlog_age {
            x.gauge(
                "slotd_replication_backlog_age_seconds",
                "How long the oldest change this master has not sent yet has waited.",
                &[("store", store)],
                *ms as f64 / 1000.0,
            );
        }
    }
    let l = *lease.borrow();
    x.gauge(
        "slotd_lease_remaining_seconds",
        "Time left on this node's master lease.",
        &[],
        l.remaining(clock::now()).as_secs_f64(),
    );
    x.gauge(
        "slotd_fenced",
        "1 while this node is named master of a store but holds no lease (it has fenced itself).",
        &[],
        if stats.fenced.load(Ordering::Relaxed) { 1.0 } else { 0.0 },
    );
    x.counter(
        "slotd_failovers_total",
        "Failover entries this node wrote as leader, by reason.",
        &[("reason", "failure")],
        Stats::get(&stats.failovers_failure) as f64,
    );
    x.counter(
        "slotd_stores_failed_over_total",
        "Stores moved by those failover entries.",
        &[],
        Stats::get(&stats.stores_failed_over) as f64,
    );
    x.gauge(
        "slotd_last_failover_timestamp_seconds",
        "Unix time of the last failover entry this node wrote (0: never).",
        &[],
        Stats::get(&stats.last_failover_ms) as f64 / 1000.0,
    );
    x.gauge(
        "slotd_stranded_stores",
        "Stores whose master is dead and that have no live replica to move to.",
        &[],
        Stats::get(&stats.stranded) as f64,
    );
    x.counter(
        "slotd_split_brain_alarms_total",
        "Probes that found another machine answering for a master IP about to be bound.",
        &[],
        Stats::get(&stats.split_brain_alarms) as f64,
    );
    let refused = stats
        .peer_refused
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for ((method, reason), n) in refused {
        x.counter(
            "slotd_peer_refused_total",
            "Peer calls refused: this agent has joined no cluster yet (not_joined), or the call is from another cluster (other_cluster).",
            &[("method", method), ("reason", reason)],
            n as f64,
        );
    }

    if m.state == ServerState::Leader {
        let reports = cluster.core().reports();
        let alarms = cluster.reader.with(|d| {
            d.state
                .stores
                .values()
                .filter(|s| slotd_core::l2::verdict(s, &reports).is_alarm())
                .count()
        });
        x.gauge(
            "slotd_l2_alarms",
            "Stores whose master IP a replica saw answered by the wrong MAC, or by none (leader only).",
            &[],
            alarms as f64,
        );
    }
    x.counter(
        "slotd_reconcile_errors_total",
        "Reconciler actions that failed.",
        &[],
        Stats::get(&stats.action_errors) as f64,
    );
    x.finish()
}
