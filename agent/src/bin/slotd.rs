//! `slotd`: the agent. `slotd --config FILE` runs it; `slotd --check-config
//! FILE` only checks the file; `slotd fence --config FILE` gives up every
//! store address on this machine (systemd's ExecStopPost); `slotd fencer
//! --config FILE` runs the fencer beside the agent (slotd-fencer.service). Exit codes: 0 clean stop, 1 failure while
//! running, 2 bad arguments or configuration (one line on stderr).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use slotd_agent::config::Config;
use slotd_agent::daemon;
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(name = "slotd", version, about = "The slotd agent")]
struct Args {
    /// `fence`: release every store address and stop every instance here,
    /// then exit (run after the agent stops, whatever the reason).
    /// `fencer`: run the fencer beside the agent, which gives up the
    /// addresses and masters of a lease that ran out, whatever the agent's
    /// state.
    #[arg(value_parser = ["fence", "fencer"])]
    action: Option<String>,
    /// Node config (slotd.toml) to run with.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "check_config",
        required_unless_present = "check_config"
    )]
    config: Option<PathBuf>,
    /// Check a node config and exit.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = match slotd_netops::cli::parse_or_exit::<Args>("slotd") {
        Ok(a) => a,
        Err(code) => return code,
    };
    if let Some(path) = args.check_config {
        // What the agent would refuse at start, beside the file itself.
        let ready = |c: &Config| {
            slotd_agent::daemon::node_credentials(c).map_err(|e| e.to_string())?;
            match c.cyrus.driver {
                slotd_agent::config::Driver::None => Ok(()),
                _ => slotd_agent::host::cyrus::instance::read_sync_password(&c.cyrus).map(drop),
            }
        };
        return match Config::load(&path) {
            Ok(c) => match ready(&c) {
                Ok(()) => {
                    println!("{}: ok", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("slotd: {}: {e}", path.display());
                    ExitCode::from(2)
                }
            },
            Err(e) => {
                eprintln!("slotd: {e}");
                ExitCode::from(2)
            }
        };
    }
    let Some(path) = args.config else {
        eprintln!("slotd: --config FILE is required");
        return ExitCode::from(2);
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("slotd: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    if journal::stderr_is_journal() {
        // journald stamps each line itself and reads its priority from
        // the line's `<N>` prefix (without one, every line is "info").
        log.without_time().event_format(journal::Prefixed::default()).init();
    } else {
        log.init();
    }
    if args.action.as_deref() == Some("fence") {
        let runtime = match slotd_netops::cli::runtime_or_exit("slotd") {
            Ok(rt) => rt,
            Err(code) => return code,
        };
        let fenced = runtime.block_on(slotd_agent::daemon::fence::fence(&config));
        // A read of a stuck data disk may still be running: do not wait.
        runtime.shutdown_background();
        return match fenced {
            Ok(done) => {
                let leader = match done.leader_accepted {
                    Some(true) => "the leader accepted: stores move now",
                    Some(false) => "the leader declined the notice: stores move after the lease",
                    None => "the leader was not told (or did not answer): stores move after the lease",
                };
                println!("fenced: released {} address(es); {leader}", done.released.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("slotd: fence: {e:#}");
                ExitCode::FAILURE
            }
        };
    }

    if args.action.as_deref() == Some("fencer") {
        let runtime = match slotd_netops::cli::runtime_or_exit("slotd") {
            Ok(rt) => rt,
            Err(code) => return code,
        };
        let stop = async {
            use tokio::signal::unix::{signal, SignalKind};
            match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => std::future::pending().await,
            }
        };
        return match runtime.block_on(daemon::fencer::run(config, stop)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("slotd: fencer: {e}");
                ExitCode::FAILURE
            }
        };
    }

    // Four workers: a thread held up by a disk write (the Raft log's fsync)
    // must not hold up the lease keeper or the reconciler, whose progress
    // the watchdog demands (see `watchdog::STALL_BOUND`).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slotd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (stops_tx, stops) = tokio::sync::mpsc::unbounded_channel();
    runtime.spawn(stop_signals(stops_tx));
    runtime.spawn(reload_signals(path.clone(), config.clone()));
    match runtime.block_on(daemon::run(config, stops)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("slotd: {e:#}");
            // Bad TLS files are bad input, like a bad config.
            if e.is_bad_input() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Logging to journald: systemd connects stderr to the journal and says
/// so in `JOURNAL_STREAM` (`DEVICE:INODE` of that stream).
mod journal {
    use std::fmt;

    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::fmt::format::{Format, Writer};
    use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
    use tracing_subscriber::registry::LookupSpan;

    /// Whether stderr is the stream `JOURNAL_STREAM` names (not merely
    /// inherited by a process whose stderr went elsewhere).
    pub fn stderr_is_journal() -> bool {
        let Some(named) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat(2) fills `st` for an open descriptor; fd 2 is ours.
        if unsafe { libc::fstat(2, st.as_mut_ptr()) } != 0 {
            return false;
        }
        // SAFETY: fstat returned 0, so `st` is initialised.
        let st = unsafe { st.assume_init() };
        named.to_string_lossy() == format!("{}:{}", st.st_dev, st.st_ino)
    }

    /// The usual line, after the priority prefix journald reads
    /// (sd-daemon(3)): error 3, warning 4, info 6, debug and trace 7.
    pub struct Prefixed(Format<tracing_subscriber::fmt::format::Full, ()>);

    impl Default for Prefixed {
        fn default() -> Prefixed {
            Prefixed(Format::default().without_time().with_ansi(false))
        }
    }

    fn priority(level: Level) -> u8 {
        match level {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        }
    }

    impl<S, N> FormatEvent<S, N> for Prefixed
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
            write!(writer, "<{}>", priority(*event.metadata().level()))?;
            self.0.format_event(ctx, writer, event)
        }
    }
}

/// The log filter without `RUST_LOG`: openraft's warnings, but not its
/// replication errors toward a peer that is down (one every Raft heartbeat,
/// for as long as it is down); slotd says what matters about peers itself.
const DEFAULT_LOG: &str =
    "info,openraft=warn,openraft::replication=off,openraft::engine::handler::replication_handler=off";

/// Every SIGHUP (`systemctl reload`, or an operator's `kill -HUP`): the
/// agent reads its configuration only at start, so it reads the file again
/// and names every setting that differs from the running one (each takes
/// effect at the next start; a restart drains first), and runs on. (SIGHUP's
/// default action would end it without handing its masters over.)
async fn reload_signals(path: PathBuf, running: Config) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(h) => h,
        Err(e) => {
            error!("cannot install the SIGHUP handler: {e}");
            return;
        }
    };
    while hup.recv().await.is_some() {
        match Config::load(&path) {
            Err(e) => warn!("SIGHUP: {e}; running on with the configuration it started with"),
            Ok(now) => {
                let (cluster, changed): (Vec<String>, Vec<String>) =
                    running.changed_keys(&now).into_iter().partition(|k| {
                        k.strip_prefix("timing.")
                            .is_some_and(|k| slotd_raft_store::timings::KEYS.contains(&k))
                    });
                if !cluster.is_empty() {
                    warn!(
                        path = %path.display(),
                        changed = %cluster.join(", "),
                        "SIGHUP: these timings are the cluster's, not this file's, and a restart does not change them: \
                         use `slotctl config set`"
                    );
                }
                if changed.is_empty() && cluster.is_empty() {
                    info!(
                        path = %path.display(),
                        "SIGHUP: the configuration is unchanged (certificate files are read at start: restart to \
                         use new ones)"
                    );
                } else if !changed.is_empty() {
                    warn!(
                        path = %path.display(),
                        changed = %changed.join(", "),
                        "SIGHUP: these settings differ from the running ones and take effect only after a restart \
                         (systemctl restart slotd: it hands its masters over first)"
                    );
                }
            }
        }
    }
}

/// Every SIGTERM (systemd stop) or SIGINT (Ctrl-C): the first stops the
/// agent (handing its masters over first), the second cuts that short.
async fn stop_signals(stops: tokio::sync::mpsc::UnboundedSender<()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            // Without signal handlers we could only be killed, never
            // stopped cleanly; say so and keep running.
            error!("cannot install signal handlers: {e}");
            return std::future::pending::<()>().await;
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if stops.send(()).is_err() {
            return;
        }
    }
}
