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

use openraft::SnapshotPolicy;
use slotd_netops::{Bounded, KernelOps, MacAddr, MemoryOps, NetError};
use slotd_proto::v1::admin_server::AdminServer;
use slotd_proto::v1::peer_server::PeerServer;
use slotd_raft_store::storage::{self, OpenError};
use slotd_raft_store::typ::Raft;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::api::admin::AdminService;
use crate::api::peer::PeerService;
use crate::cluster::channel::PeerNetwork;
use crate::cluster::channel::{Channels, MAX_MESSAGE};
use crate::cluster::identity::{Identity, IdentityError};
use crate::cluster::wire::HealthReport;
use crate::cluster::Cluster;
use crate::config::{Config, Driver};
use crate::daemon::lock::{self, LockError};
use crate::daemon::metrics::{self};
use crate::daemon::notify::Notifier;
use crate::daemon::watchdog;
use crate::host::any::AnyDriver;
use crate::host::any::{AnyOps, Stuckable};
use crate::host::cyrus::CyrusDriver;
use crate::host::driver::NoneDriver;
use crate::host::ledger::Ledger;
use crate::leader::{FailoverEngine, Granter};
use crate::node::progress::Progress;
use crate::node::reconciler::{self, Reconciler};
use crate::node::{elector, lease_keeper};
use crate::stats::Stats;
use crate::tls::{Credentials, Who};
use slotd_core::leader::{LeaderCore, LeaderTiming};
use slotd_core::timing::{KERNEL_CALL_TIMEOUT, MARK_EVERY, UNIT_WATCHDOG};

/// Why the agent could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
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

impl DaemonError {
    /// Bad input (exit code 2, like a bad config) rather than a failure.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, DaemonError::Tls(_) | DaemonError::NotOurCertificate { .. })
    }
}

/// This node's credentials from `[tls]` (none when `insecure`), checked to
/// name this node: a certificate of another node would be refused by every
/// peer, and one that passed could speak for the wrong node.
pub fn node_credentials(config: &Config) -> Result<Option<Credentials>, DaemonError> {
    let Some(files) = crate::tls::Files::of_config(&config.tls)? else {
        return Ok(None);
    };
    let creds = Credentials::load(&files)?;
    if creds.who != Who::Node(config.name.clone()) {
        return Err(DaemonError::NotOurCertificate {
            found: creds.who.to_string(),
            name: config.name.clone(),
            expected: format!("{}{}", crate::tls::NODE_URI, config.name),
        });
    }
    Ok(Some(creds))
}

/// File in the data directory where a running agent writes the addresses it
/// bound (`listen=…`, `metrics=…`), so that tools and tests using port 0
/// learn them.
pub const ENDPOINTS_FILE: &str = "endpoints";

/// openraft's settings from the node config. Election timeouts are sized for
/// lossy LANs (several heartbeats may be lost before anyone campaigns).
pub fn raft_config(config: &Config) -> Result<Arc<openraft::Config>, DaemonError> {
    let t = &config.timing;
    let c = openraft::Config {
        cluster_name: "slotd".into(),
        heartbeat_interval: t.raft_heartbeat_ms,
        election_timeout_min: t.election_timeout_min_ms,
        election_timeout_max: t.election_timeout_max_ms,
        install_snapshot_timeout: 5_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(5_000),
        max_in_snapshot_log_to_keep: 1_000,
        // Campaigns only when the elector (a pre-vote) turns them on.
        enable_elect: false,
        ..Default::default()
    };
    c.validate()
        .map(Arc::new)
        .map_err(|e| DaemonError::RaftConfig(e.to_string()))
}

/// Runs an agent until the first message on `stops` (SIGTERM, SIGINT),
/// hands its masters over (DESIGN rule 7; a second message cuts that
/// short), then stops it in order.
pub async fn run(config: Config, mut stops: tokio::sync::mpsc::UnboundedReceiver<()>) -> Result<(), DaemonError> {
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
                .map_err(DaemonError::Cyrus)?,
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
    // The cluster's timings as this node last applied them rule from here
    // on, Raft's included; the file's count only for the cluster's first.
    let file_timing = config.timing.clone();
    let in_force = crate::node::timings::at_start(&file_timing, &reader);
    let config = Config {
        timing: in_force.timing.clone(),
        ..config
    };
    let network = PeerNetwork::new(Channels::new(identity.clone(), tls.clone()));
    let raft = Raft::new(config.node_id, raft_config(&config)?, network.clone(), log, sm)
        .await
        .map_err(|e| DaemonError::Raft(e.to_string()))?;
    let engine_wake = Arc::new(Notify::new());
    let cluster = Arc::new(Cluster {
        id: config.node_id,
        name: config.name.clone(),
        raft: raft.clone(),
        reader,
        network,
        leader: Mutex::new(
            LeaderCore::new(config.node_id, LeaderTiming::of(&config.timing))
                .writes_first_timings(file_timing.cluster()),
        ),
        engine_wake: engine_wake.clone(),
        identity,
        switchover: config.switchover.clone(),
        leader_contact: Default::default(),
    });
    let stats = Arc::new(Stats::default());
    let granter = Granter::spawn(cluster.clone(), config.timing.lease());
    let ops = if config.manage_addresses {
        AnyOps::Kernel(KernelOps::new()?)
    } else {
        AnyOps::Memory(MemoryOps::new(MacAddr([0x02, 0, 0, 0, 0, 0x01])).with_interface(&config.interface))
    };
    // Every kernel call has a deadline, whoever makes it (reconciler,
    // announcer, layer-2 checker).
    let kernel_stuck = Arc::new(AtomicBool::new(false));
    let ops = Bounded::new(Stuckable::new(ops, kernel_stuck.clone()), KERNEL_CALL_TIMEOUT);

    let bind = |what: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind { what, addr, source })
    };
    let listener = bind("listen", config.listen).await?;
    let metrics_listener = bind("metrics_listen", config.metrics_listen).await?;
    let local = |l: &TcpListener, what: &'static str, addr: SocketAddr| {
        l.local_addr()
            .map_err(|source| DaemonError::Bind { what, addr, source })
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
        .map_err(|e| DaemonError::Reflection(e.to_string()))?;
    let reflection_alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| DaemonError::Reflection(e.to_string()))?;
    let peer = PeerServer::new(PeerService {
        cluster: cluster.clone(),
        granter: granter.clone(),
        stats: stats.clone(),
        leader_calls: crate::api::CallLimit::new(crate::api::MAX_LEADER_CALLS),
        secure: tls.is_some(),
    })
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE);
    let admin = AdminServer::new(AdminService {
        cluster: cluster.clone(),
        closing: closing.clone(),
        calls: crate::api::CallLimit::new(crate::api::MAX_ADMIN_CALLS),
        secure: tls.is_some(),
        stats: stats.clone(),
    })
    .max_decoding_message_size(crate::api::MAX_ADMIN_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE);
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        server = server
            .tls_config(tls.server())
            .map_err(|e| DaemonError::ServerTls(e.to_string()))?;
    }
    let grpc = tokio::spawn(
        server
            // No call holds the agent's resources for ever (a client that
            // stalls, a forwarded call whose leader hangs).
            .timeout(crate::api::SERVER_TIMEOUT)
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
    let renew_now = Arc::new(Notify::new());
    let (lease, keeper) = lease_keeper::spawn_keeper(
        cluster.clone(),
        granter.clone(),
        crate::node::timings::follow(file_timing, cluster.reader.clone(), in_force, loops_rx.clone()),
        Arc::new(move || report_now.lock().unwrap_or_else(PoisonError::into_inner).clone()),
        progress.clone(),
        renew_now.clone(),
        loops_rx.clone(),
    );
    // The watchdog's machinery runs only when systemd watches: without one
    // nothing would act on it, and it costs wake-ups.
    let watched = Notifier::watchdog_timeout().is_some();
    let elector = tokio::spawn(elector::run(cluster.clone(), config.timing.clone(), loops_rx.clone()));
    let raft_marks =
        watched.then(|| tokio::spawn(watchdog::mark_raft(raft.clone(), progress.clone(), loops_rx.clone())));
    let stall_requests = Arc::new(AtomicU64::new(0));
    if std::env::var_os(INJECT_FAULTS).is_some_and(|v| v == "1") {
        warn!(
            "{INJECT_FAULTS}=1: SIGUSR1 stalls the reconciler for 10 s, SIGUSR2 makes every kernel call \
             hang from then on, SIGPWR sets the wall clock 5 s ahead of the agent's, SIGRTMIN+1 makes every \
             Raft data commit take {SLOW_DISK:?} longer or, sent again, as fast as before (for tests only)"
        );
        tokio::spawn(stall_on_sigusr1(stall_requests.clone()));
        tokio::spawn(stick_on_sigusr2(kernel_stuck));
        tokio::spawn(shift_wall_on_sigpwr());
        tokio::spawn(slow_disk_on_sigrtmin1());
    }
    // The lease the agent acts on: the keeper's, as far as the fencer
    // beside the agent has acknowledged it (`fencer`).
    let lease = crate::node::fencer_link::spawn(
        config.fencer,
        crate::host::fencer_socket::socket_path(&config),
        lease,
        cluster.reader.clone(),
        config.node_id,
        loops_rx.clone(),
    );
    let lease_for_metrics = lease.clone();
    let reconciler = Reconciler::new(
        reconciler::Deps {
            me: config.node_id,
            reader: cluster.reader.clone(),
            ops: Arc::new(ops),
            driver: Arc::new(driver),
            lease,
            ledger: Ledger::new(&config.runtime_dir),
            stats: stats.clone(),
            report,
            progress: progress.clone(),
            renew_now,
            stall_requests,
        },
        reconciler::Settings {
            interface: config.interface.clone(),
            announce: slotd_netops::AnnounceOptions::default(),
            announce_refresh: config.timing.announce_refresh(),
            probe_timeout: config.timing.probe_timeout(),
            mark_every: watched.then_some(MARK_EVERY),
            demote_timeout: config.switchover.demote_timeout(),
            replay_leftover: config.cyrus.replay_leftover,
        },
    );
    let reconciler = tokio::spawn(reconciler.run(loops_rx.clone()));
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
        Arc::new(move || metrics::exposition(&render_cluster, &render_stats, &lease_for_metrics, &render_report)),
        stopped(stop_rx.clone()),
    ));

    let notifier = Arc::new(Notifier::from_env());
    check_watchdog(&config, &notifier)?;
    if let Err(e) = notifier.ready() {
        warn!(error = %e, "sd_notify READY failed");
    }
    // The pinger outlives the loops: systemd's watchdog runs through a stop.
    let (pinger_tx, pinger_rx) = watch::channel(false);
    let watchdog = watched.then(|| tokio::spawn(watchdog::run_pinger(notifier.clone(), progress.clone(), pinger_rx)));

    let undrain = tokio::spawn(crate::daemon::stop::undrain_after_stop(cluster.clone()));
    stops.recv().await;
    info!("shutting down");
    let _ = notifier.stopping();
    undrain.abort();
    crate::daemon::stop::drain_before_stopping(&cluster, config.switchover.stop_drain_timeout(), async {
        stops.recv().await;
    })
    .await;
    closing.store(true, Ordering::SeqCst);
    health.set_not_serving::<AdminServer<AdminService>>().await;
    progress.stopping();
    let _ = loops_tx.send(true);
    match tokio::time::timeout(STOP_STEP, reconciler).await {
        Ok(_) => progress.last_pass_done(),
        Err(_) => warn!("reconciler did not stop within {STOP_STEP:?}"),
    }
    for (name, task) in [("lease keeper", keeper), ("failover engine", engine)] {
        if tokio::time::timeout(STOP_STEP, task).await.is_err() {
            warn!("{name} did not stop within {STOP_STEP:?}");
        }
    }
    match tokio::time::timeout(STOP_STEP, raft.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "Raft did not stop cleanly"),
        Err(_) => warn!("Raft did not stop within {STOP_STEP:?}"),
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
    if let Some(marks) = raft_marks {
        marks.abort();
    }
    elector.abort();
    let _ = pinger_tx.send(true);
    if let Some(watchdog) = watchdog {
        let _ = tokio::time::timeout(grace, watchdog).await;
    }
    info!("stopped");
    Ok(())
}

fn write_endpoints(dir: &Path, listen: SocketAddr, metrics: SocketAddr) -> Result<(), DaemonError> {
    let path: PathBuf = dir.join(ENDPOINTS_FILE);
    // Whole: a reader never sees half a file.
    crate::host::durable::replace(&path, format!("listen={listen}\nmetrics={metrics}\n").as_bytes())
        .map_err(|source| DaemonError::Write { path, source })
}

/// The longest each step of a stop after the drain may take (the
/// reconciler's last pass, the lease keeper, the engine, Raft): all of
/// them, with the servers' grace, well inside the unit's `TimeoutStopSec`.
const STOP_STEP: Duration = Duration::from_secs(2);

/// Environment variable that turns on fault injection (tests only).
pub const INJECT_FAULTS: &str = "SLOTD_INJECT_FAULTS";

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

/// Testing only: SIGUSR2 makes every kernel call of the agent hang (a
/// netlink socket that never answers), for good.
async fn stick_on_sigusr2(stuck: Arc<AtomicBool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
        warn!("cannot listen for SIGUSR2: no fault injection");
        return;
    };
    if usr2.recv().await.is_some() {
        warn!("fault injection: every kernel call hangs from now on");
        stuck.store(true, Ordering::Relaxed);
    }
}

/// Testing only: each SIGPWR moves the agent's wall clock 5 s ahead of its
/// own clock, as a VM frozen with its clocks sees it once resumed and set.
async fn shift_wall_on_sigpwr() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut pwr) = signal(SignalKind::from_raw(libc::SIGPWR)) else {
        warn!("cannot listen for SIGPWR: no fault injection");
        return;
    };
    while pwr.recv().await.is_some() {
        warn!("fault injection: the wall clock jumps 5 s ahead");
        crate::clock::shift_wall(Duration::from_secs(5));
    }
}

/// How much longer a Raft data commit takes on a slow disk (fault injection).
const SLOW_DISK: Duration = Duration::from_millis(100);

/// Testing only: each SIGRTMIN+1 turns a slow data disk on or off: every
/// commit of the Raft data takes [`SLOW_DISK`] longer, as when the mail
/// spool on the same disk keeps it busy.
async fn slow_disk_on_sigrtmin1() {
    use slotd_raft_store::storage::slow;
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut rt) = signal(SignalKind::from_raw(libc::SIGRTMIN() + 1)) else {
        warn!("cannot listen for SIGRTMIN+1: no fault injection");
        return;
    };
    while rt.recv().await.is_some() {
        let extra = if slow::extra().is_zero() {
            SLOW_DISK
        } else {
            Duration::ZERO
        };
        warn!(
            ?extra,
            "fault injection: every Raft data commit takes this much longer from now on"
        );
        slow::set(extra);
    }
}

/// Refuses a systemd watchdog too long for the margin (see `watchdog`);
/// under systemd without one, says what that means.
fn check_watchdog(config: &Config, notifier: &Notifier) -> Result<(), DaemonError> {
    match Notifier::watchdog_timeout() {
        Some(w) => {
            slotd_core::node::watchdog::check(w, config.timing.clock_skew_margin()).map_err(DaemonError::Watchdog)
        }
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
