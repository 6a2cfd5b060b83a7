//! `slotd fencer`: the process beside the agent that does not share its
//! fate (its own systemd unit, `slotd-fencer.service`; the rule and why:
//! `slotd_core::node::fencer`). It listens on `<runtime_dir>/fencer.sock`
//! for the agent's word (until when its lease runs, which slots run as
//! master on which address), acknowledges each, and when the last deadline
//! passes with nothing newer said, gives up those addresses and kills
//! those instances itself, and gives up every address in the ledger too.
//! It reads nothing from the data disk and writes nothing: a stalled data
//! disk cannot hold it up (the ledger is in the runtime directory, a tmpfs).
//! With `fencer = "off"` in the configuration it neither listens nor fences
//! (the agent does not speak to it; fencing for a live agent is an outage).

use std::path::PathBuf;
use std::time::Duration;

use slotd_core::node::fencer::{ack_line, Master, Told, Watch, FENCER_TICK};
use slotd_core::timing::KERNEL_CALL_TIMEOUT;
use slotd_netops::{Bounded, KernelOps, NetError};
use slotd_raft_store::ServiceIp;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixListener;
use tracing::{info, warn};

use crate::clock;
use crate::config::{Config, Driver, FencerMode};
use crate::host::fencer_socket::socket_path;
use crate::host::ledger::{Entries, Ledger};

/// How long an answer to the agent may take to write before the fencer
/// drops the connection (the agent then counts only what was acknowledged).
const ACK_TIMEOUT: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum FencerError {
    #[error("runtime_dir {path}: {source}")]
    Socket { path: PathBuf, source: std::io::Error },
    #[error("netlink: {0}")]
    Netlink(#[from] NetError),
}

type Lines = tokio::io::Lines<BufReader<OwnedReadHalf>>;

/// Runs the fencer until `stop` resolves.
pub async fn run(config: Config, stop: impl std::future::Future<Output = ()>) -> Result<(), FencerError> {
    if config.fencer == FencerMode::Off {
        warn!("fencer = \"off\" in the configuration: this fencer fences nothing");
        stop.await;
        return Ok(());
    }
    let path = socket_path(&config);
    let socket_error = |source| FencerError::Socket {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&config.runtime_dir).map_err(socket_error)?;
    // A socket file left by an earlier fencer refuses the bind.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(socket_error)?;
    let ops = Bounded::new(KernelOps::new()?, KERNEL_CALL_TIMEOUT);
    let margin = config.timing.clock_skew_margin();
    let mut watch = Watch::new(clock::boot_time(), clock::wall(), config.timing.lease());
    info!(socket = %path.display(), "fencer listening");
    let mut agent: Option<(Lines, OwnedWriteHalf)> = None;
    let mut tick = tokio::time::interval(FENCER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // The newest agent speaks; an older one (stuck, or gone)
                    // has nothing more to say.
                    if agent.is_some() {
                        info!("a new agent connection replaces the old one");
                    }
                    let (read, write) = stream.into_split();
                    agent = Some((BufReader::new(read).lines(), write));
                }
                Err(e) => warn!(error = %e, "accepting an agent connection"),
            },
            line = next_line(&mut agent) => match line {
                Some(line) => match Told::parse(&line) {
                    Ok(told) => {
                        watch.told(told);
                        if !ack(&mut agent, watch.deadline()).await {
                            agent = None;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "the agent said something else: dropping the connection");
                        agent = None;
                    }
                },
                None => agent = None,
            },
            _ = tick.tick() => {}
        }
        if watch.due(clock::boot_time(), clock::wall(), margin) {
            fence(&config, &ops, watch.masters()).await;
            watch.fenced();
        }
    }
}

/// The agent's next line; `None` when it closed or failed; never with no
/// agent.
async fn next_line(agent: &mut Option<(Lines, OwnedWriteHalf)>) -> Option<String> {
    match agent {
        Some((lines, _)) => lines.next_line().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

async fn ack(agent: &mut Option<(Lines, OwnedWriteHalf)>, deadline: Option<Duration>) -> bool {
    let Some((_, write)) = agent else { return false };
    let line = format!("{}\n", ack_line(deadline));
    matches!(
        tokio::time::timeout(ACK_TIMEOUT, write.write_all(line.as_bytes())).await,
        Ok(Ok(()))
    )
}

/// The lease ran out: addresses first (the kernel's work in
/// milliseconds), then the instances, each bounded. The addresses are the
/// told masters' and every one in the ledger: the reconciler writes the
/// ledger before each bind, so a master address bound a moment before the
/// agent could tell this fencer is covered too (replica addresses go as
/// well; the agent binds them again once it holds a lease).
async fn fence(config: &Config, ops: &Bounded<KernelOps>, masters: &[Master]) {
    let mut addresses: Entries = masters
        .iter()
        .map(|m| {
            (
                m.addr,
                (
                    ServiceIp {
                        addr: m.addr,
                        len: m.len,
                    },
                    m.slot.clone(),
                ),
            )
        })
        .collect();
    if config.manage_addresses {
        let ledger = Ledger::new(&config.runtime_dir).read_or_warn("releasing the told masters' addresses only");
        for (addr, entry) in ledger {
            addresses.entry(addr).or_insert(entry);
        }
    }
    if masters.is_empty() && addresses.is_empty() {
        return;
    }
    warn!(
        masters = masters.len(),
        addresses = addresses.len(),
        "the agent's lease ran out with nothing newer said: fencing for it"
    );
    if config.manage_addresses {
        let (mut released, mut still, mut failures) = (Vec::new(), Entries::new(), Vec::new());
        super::fence::release(
            ops,
            config,
            &addresses,
            "fencer",
            &mut released,
            &mut still,
            &mut failures,
        )
        .await;
        if !failures.is_empty() {
            warn!(failures = %failures.join("; "), "fencer: cannot release");
        }
    }
    if masters.is_empty() {
        return;
    }
    let slots: Vec<&str> = masters.iter().map(|m| m.slot.as_str()).collect();
    match config.cyrus.driver {
        Driver::None => {}
        Driver::Exec => {
            let killed = crate::host::cyrus::instance::kill_slots(&config.cyrus.root, &slots).await;
            if !killed.is_empty() {
                info!(slots = ?killed, "fencer: master instances killed");
            }
        }
        Driver::Systemd => {
            let kill = crate::host::cyrus::systemd::kill_units(&slots);
            match tokio::time::timeout(crate::host::cyrus::systemd::FENCE_SYSTEMCTL_TIMEOUT, kill).await {
                Ok(Ok(())) => info!(slots = ?slots, "fencer: master units killed"),
                Ok(Err(e)) => warn!(error = %e, "fencer: cannot kill the master units"),
                Err(_) => warn!("fencer: systemctl kill of the master units gave no answer in time"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path, mode: FencerMode) -> Config {
        let mut config = Config::builder(1, "imap1", "127.0.0.1:1".parse().unwrap(), dir.join("data"));
        config.runtime_dir = dir.join("run");
        config.fencer = mode;
        config
    }

    /// Run until told to stop, at once: what it set up by then stays.
    #[tokio::test]
    async fn a_fencer_configured_off_neither_listens_nor_fences() {
        let dir = tempfile::tempdir().unwrap();
        let on = config(&dir.path().join("on"), FencerMode::Automatic);
        assert!(matches!(run(on.clone(), async {}).await, Ok(())));
        assert!(socket_path(&on).exists(), "the reference fencer did not listen");
        // An agent set to "automatic" by mistake finds nobody at once
        // (rather than a socket nobody answers).
        let off = config(&dir.path().join("off"), FencerMode::Off);
        assert!(matches!(run(off.clone(), async {}).await, Ok(())));
        assert!(!socket_path(&off).exists(), "an off fencer listens");
        assert!(crate::host::fencer_socket::connect(&socket_path(&off)).await.is_err());
    }
}
