//! `slotd fence`: give up every store address and instance on this machine,
//! whatever the agent's state. Run by systemd after the agent exits for any
//! reason (`ExecStopPost`, DESIGN "Safety" rules 4 and 6), so that a crashed,
//! killed or frozen agent cannot leave a master behind it.
//!
//! It takes the agent lock in the runtime directory (refusing to run beside
//! a live agent, unless systemd runs it after stopping one) and releases
//! every address the node may hold: first those in its ledger and those
//! the interface shows tagged as slotd's — needing nothing but the runtime
//! directory and the kernel — then any store address the Raft data names
//! that is still on the interface (read with a deadline: a stuck data disk
//! does not hold the fence up). With the data directory unreadable or
//! corrupt, the ledger and the tags still name everything. It goes on past
//! a failed release, and fails (exit 1) only after trying them all. Then,
//! if it holds the lock, saw the interface, released everything and knows
//! the other nodes, it tells the leader (see [`tell_leader`]).

use std::net::IpAddr;
use std::time::Duration;

use openraft::storage::RaftLogStorage;
use openraft::{EntryPayload, RaftLogReader, StorageError};
use slotd_core::timing::KERNEL_CALL_TIMEOUT;
use slotd_netops::{AddressOps, Bounded, IpPrefix, KernelOps, NetError, Outcome};
use slotd_raft_store::storage::OpenError;
use slotd_raft_store::{storage, ClusterState, NodeId, ServiceIp};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::cluster::channel::{Channels, Method};
use crate::cluster::identity::Identity;
use crate::cluster::wire::{FenceReply, FenceRequest};
use crate::config::Config;
use crate::daemon::lock::{self, LockError};
use crate::error::AgentError;
use crate::host::ledger::{Entries, Ledger};
use crate::tls::Credentials;
use slotd_core::node::fence::{in_doubt_for, telling_for};
use slotd_core::timing::{FENCE_CALL_TIMEOUT, FENCE_RETRY};

/// Why `slotd fence` could not do all it should.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("the agent lock: {0}")]
    Lock(#[from] LockError),
    #[error("{0}")]
    Open(#[from] OpenError),
    #[error("reading the Raft log: {0}")]
    Log(Box<StorageError<NodeId>>),
    #[error("netlink: {0}")]
    Netlink(NetError),
    #[error("could not release {0}")]
    Release(String),
    #[error("starting a runtime to read the Raft data: {0}")]
    Runtime(std::io::Error),
}

/// The cluster state as far as this node had committed it.
pub async fn local_state(config: &Config) -> Result<ClusterState, FenceError> {
    let (mut log, sm) = storage::open(&config.data_dir)?;
    let mut data = sm.reader().snapshot();
    let committed = log.read_committed().await.map_err(|e| FenceError::Log(Box::new(e)))?;
    let from = data.last_applied.map_or(0, |l| l.index + 1);
    if let Some(committed) = committed {
        if committed.index >= from {
            let entries = log
                .try_get_log_entries(from..=committed.index)
                .await
                .map_err(|e| FenceError::Log(Box::new(e)))?;
            for entry in entries {
                if let EntryPayload::Normal(req) = &entry.payload {
                    data.state.apply(req);
                }
            }
        }
    }
    Ok(data.state)
}

/// What `slotd fence` did.
pub struct Fenced {
    /// The addresses it released.
    pub released: Vec<ServiceIp>,
    /// Whether the leader took the notice (`None`: nobody was told, or no
    /// leader answered).
    pub leader_accepted: Option<bool>,
}

/// How long reading the Raft data may take (a stuck data disk must not
/// hold up the fence: everything has been released by then).
const RAFT_DATA_DEADLINE: Duration = Duration::from_secs(2);

/// Whether systemd runs us to clean up after the agent (ExecStopPost sets
/// these): then the agent is gone or beyond saving, whatever its lock says.
fn run_by_systemd_after_stop() -> bool {
    std::env::var_os("SERVICE_RESULT").is_some() || std::env::var_os("EXIT_CODE").is_some()
}

/// Releases every address this node may hold, then tells the leader.
///
/// Order matters: first the addresses that need nothing but the runtime
/// directory and the kernel (the ledger, the interface's tags), then the
/// instances, then the addresses the Raft data names (read with a
/// deadline), then the leader.
pub async fn fence(config: &Config) -> Result<Fenced, FenceError> {
    // Held until we return: no agent starts meanwhile. Held by someone
    // else: a live agent (refuse), unless systemd runs us after stopping it
    // (an agent stuck in the kernel survives SIGKILL): then release, but
    // tell nobody. Unavailable: release, tell nobody — the notice is safe
    // only while no agent can run.
    let lock = match lock::acquire(&config.runtime_dir) {
        Ok(l) => Some(l),
        Err(e @ LockError::Held { .. }) if !run_by_systemd_after_stop() => return Err(e.into()),
        Err(e) => {
            warn!(error = %e, "without the agent lock: releasing, but not telling the leader");
            None
        }
    };
    // Addresses first: what the ledger and the interface's tags name, the
    // kernel's work in milliseconds (the IPs must go within the margin).
    let cyrus = config.cyrus.driver != crate::config::Driver::None;
    let known = if config.manage_addresses {
        Some(release_known(config).await)
    } else {
        None
    };
    // Then the instances, whatever the releases did: SIGKILL to every
    // slot's group a pidfile names, all at once (also milliseconds). An
    // instance without its address reaches nobody; stopped before the
    // slow part below, it cannot serve as master past the margin either.
    if cyrus {
        let killed = crate::host::cyrus::instance::kill_all(&config.cyrus.root).await;
        if !killed.is_empty() {
            info!(slots = ?killed, "Cyrus instances killed");
        }
    }
    // Then the Raft data (read with a deadline): any store address it
    // names that the ledger and the tags missed.
    let done = match known {
        Some(known) => release_the_rest(config, known?).await,
        // The addresses lived in the agent's memory: gone with it.
        None => Ok(Released {
            addresses: Vec::new(),
            state: read_state(config).await,
            seen_interface: true,
        }),
    };
    // Then systemd's units, also one whose cyrmaster has no pidfile yet;
    // bounded, it waits for no job.
    if cyrus && config.cyrus.driver == crate::config::Driver::Systemd {
        let kill = crate::host::cyrus::systemd::kill_all();
        match tokio::time::timeout(crate::host::cyrus::systemd::FENCE_SYSTEMCTL_TIMEOUT, kill).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot kill the slot units"),
            Err(_) => warn!("systemctl kill of the slot units gave no answer in time"),
        }
    }
    let done = done?;
    let may_tell = lock.is_some() && done.seen_interface;
    let leader_accepted = tell(config, may_tell, done.state.as_ref()).await;
    Ok(Fenced {
        released: done.addresses,
        leader_accepted,
    })
}

/// What [`release_all`] released, and what it learnt on the way.
struct Released {
    addresses: Vec<ServiceIp>,
    /// The committed cluster state, if the Raft data could be read in time.
    state: Option<ClusterState>,
    /// Whether the interface could be listed (if not, what it holds beyond
    /// the ledger and the Raft data is unknown: nobody is told).
    seen_interface: bool,
}

/// What [`release_known`] did, for [`release_the_rest`].
struct Known {
    ops: Bounded<KernelOps>,
    ledger: Ledger,
    targets: Entries,
    listed: Option<Vec<slotd_netops::BoundAddress>>,
    released: Vec<ServiceIp>,
    still: Entries,
    failures: Vec<String>,
}

/// Releases what needs nothing but the runtime directory and the kernel:
/// the ledger's addresses and those tagged on the interface.
async fn release_known(config: &Config) -> Result<Known, FenceError> {
    let ledger = Ledger::new(&config.runtime_dir);
    let mut targets: Entries = ledger.read_or_warn("releasing what the interface and the Raft data name");
    let mut released = Vec::new();
    let mut still = Entries::new();
    let mut failures = Vec::new();
    let ops = Bounded::new(KernelOps::new().map_err(FenceError::Netlink)?, KERNEL_CALL_TIMEOUT);
    let listed = match ops.list(&config.interface).await {
        Ok(list) => Some(list),
        Err(e) => {
            warn!(
                interface = %config.interface,
                error = %e,
                "cannot list the interface: releasing every address the ledger and the Raft data name"
            );
            None
        }
    };
    if let Some(list) = &listed {
        add_tagged(&mut targets, list);
    }
    release(
        &ops,
        config,
        &targets,
        "fenced",
        &mut released,
        &mut still,
        &mut failures,
    )
    .await;
    Ok(Known {
        ops,
        ledger,
        targets,
        listed,
        released,
        still,
        failures,
    })
}

/// Then the Raft data: any store address it names that is still here (one
/// the ledger and the tags missed). An error (after trying them all) if any
/// address is still held.
async fn release_the_rest(config: &Config, known: Known) -> Result<Released, FenceError> {
    let Known {
        ops,
        ledger,
        targets,
        listed,
        mut released,
        mut still,
        mut failures,
    } = known;
    let state = read_state(config).await;
    if let Some(state) = &state {
        let mut more = Entries::new();
        for st in state.stores.values() {
            for ip in [st.master_ip, st.replica_ip] {
                let here = listed
                    .as_ref()
                    .is_none_or(|l| l.iter().any(|b| b.prefix.addr() == ip.addr));
                if here && !targets.contains_key(&ip.addr) {
                    more.insert(ip.addr, (ip, st.name.clone()));
                }
            }
        }
        release(&ops, config, &more, "fenced", &mut released, &mut still, &mut failures).await;
    }
    // The ledger now names what may still be held.
    if let Err(e) = ledger.write(&still) {
        warn!(error = %e, "cannot rewrite the ledger");
    }
    if !failures.is_empty() {
        // Still holding something: the leader must not hear "nothing here".
        return Err(FenceError::Release(failures.join("; ")));
    }
    Ok(Released {
        addresses: released,
        state,
        seen_interface: listed.is_some(),
    })
}

/// Adds the addresses the interface shows tagged as slotd's.
fn add_tagged(targets: &mut Entries, list: &[slotd_netops::BoundAddress]) {
    let on_interface: Vec<IpAddr> = list.iter().map(|b| b.prefix.addr()).collect();
    // Ledger entries not on the interface are gone already.
    targets.retain(|addr, _| on_interface.contains(addr));
    for b in list.iter().filter(|b| b.ours) {
        let addr = b.prefix.addr();
        let ip = ServiceIp {
            addr,
            len: b.prefix.prefix_len(),
        };
        targets.entry(addr).or_insert((ip, "(tagged)".into()));
    }
}

/// Releases `targets`, going on past failures.
/// Also the fencer's (`who` starts its log lines).
pub(super) async fn release(
    ops: &Bounded<KernelOps>,
    config: &Config,
    targets: &Entries,
    who: &str,
    released: &mut Vec<ServiceIp>,
    still: &mut Entries,
    failures: &mut Vec<String>,
) {
    for (addr, (ip, store)) in targets {
        let result = match IpPrefix::new(ip.addr, ip.len) {
            Ok(prefix) => ops.release(&config.interface, prefix).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(Outcome::Changed) => {
                info!(store = %store, %addr, len = ip.len, "{who}: released");
                released.push(*ip);
            }
            Ok(Outcome::Unchanged) => {}
            Err(e) => {
                failures.push(format!("{ip} (store {store}): {e}"));
                still.insert(*addr, (*ip, store.clone()));
            }
        }
    }
}

/// The committed cluster state, if it can be read in time (off the async
/// threads: a stuck disk is left behind, not waited for).
async fn read_state(config: &Config) -> Option<ClusterState> {
    let config = config.clone();
    let read = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread().build();
        match rt {
            Ok(rt) => rt.block_on(local_state(&config)),
            Err(e) => Err(FenceError::Runtime(e)),
        }
    });
    match tokio::time::timeout(RAFT_DATA_DEADLINE, read).await {
        Ok(Ok(Ok(state))) => Some(state),
        Ok(Ok(Err(e))) => {
            warn!(error = %e, "cannot read the Raft data");
            None
        }
        Ok(Err(e)) => {
            warn!(error = %e, "reading the Raft data failed");
            None
        }
        Err(_) => {
            warn!("the Raft data could not be read within {RAFT_DATA_DEADLINE:?}; going on without it");
            None
        }
    }
}

/// Tells the leader if allowed (the lock is held) and possible (the other
/// nodes are known from the Raft data).
async fn tell(config: &Config, allowed: bool, state: Option<&ClusterState>) -> Option<bool> {
    match state {
        Some(s) if allowed => tell_leader(config, s).await,
        Some(_) => None,
        None => {
            info!("the other nodes are unknown without the Raft data: the stores move after the lease");
            None
        }
    }
}

/// Best effort (DESIGN rule 6): tell the leader this node holds nothing, so
/// its stores move now rather than after the lease. Asks the nodes (the
/// leader's hint first) for a fence ticket, then presents it with the
/// notice; keeps trying for `lease + margin` (long enough to outlast an
/// election when the leader itself died), after which the silent path
/// would have moved the stores anyway.
///
/// A notice whose fate is unknown (sent, no answer) could still be
/// accepted while its ticket is fresh: then we wait that out before
/// returning, so that the next agent (which systemd starts only after we
/// exit) never runs while the leader may still act on the notice.
async fn tell_leader(config: &Config, state: &ClusterState) -> Option<bool> {
    let me = config.node_id;
    // Without the cluster id no leader would hear us.
    let identity = match Identity::load(&config.data_dir) {
        Ok(i) if i.get().is_some() => i,
        Ok(_) => {
            info!("this node has not joined a cluster: nobody to tell");
            return None;
        }
        Err(e) => {
            warn!(error = %e, "cannot read the cluster id: not telling the leader");
            return None;
        }
    };
    // The node's own certificate: the leader hears a fence notice only
    // from the node it is about.
    let tls = match crate::tls::Files::of_config(&config.tls).and_then(|f| f.map(|f| Credentials::load(&f)).transpose())
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot load the node's certificate: not telling the leader");
            return None;
        }
    };
    let channels = Channels::new(identity, tls);
    let nodes: Vec<String> = state
        .nodes
        .values()
        .filter(|n| n.id != me)
        .map(|n| n.addr.clone())
        .collect();
    let deadline = Instant::now() + telling_for(&config.timing);
    // Until when an unanswered notice might still be accepted.
    let mut in_doubt_until: Option<Instant> = None;
    let mut outcome = None;
    'rounds: while Instant::now() < deadline {
        let mut targets = nodes.clone();
        let mut i = 0;
        while i < targets.len() && Instant::now() < deadline {
            let addr = targets[i].clone();
            i += 1;
            let ticket = channels
                .call::<_, Result<FenceReply, AgentError>>(
                    &addr,
                    Method::Fenced,
                    &FenceRequest::Ticket { node: me },
                    FENCE_CALL_TIMEOUT,
                )
                .await;
            let id = match ticket {
                Ok(Ok(FenceReply::Ticket(id))) => id,
                Ok(Err(AgentError::NotLeader {
                    leader: Some((_, hint)),
                    ..
                })) => {
                    // Ask the node named next, unless it is already next
                    // (a bounded number of times: leaders come and go).
                    if targets.get(i) != Some(&hint) && targets.len() < 4 * nodes.len() + 4 {
                        targets.insert(i, hint);
                    }
                    continue;
                }
                _ => continue,
            };
            let got_at = Instant::now();
            let notice = channels
                .call::<_, Result<FenceReply, AgentError>>(
                    &addr,
                    Method::Fenced,
                    &FenceRequest::Notice { node: me, ticket: id },
                    FENCE_CALL_TIMEOUT,
                )
                .await;
            match notice {
                Ok(Ok(FenceReply::Accepted(true))) => {
                    info!(leader = %addr, "told the leader this node holds nothing: its stores move now");
                    outcome = Some(true);
                    break 'rounds;
                }
                // Refused (the leadership changed since the ticket): the
                // ticket is void; try again with a new one.
                Ok(_) => outcome = Some(false),
                Err(_) => {
                    let until = got_at + in_doubt_for(&config.timing);
                    in_doubt_until = Some(in_doubt_until.map_or(until, |t| t.max(until)));
                }
            }
        }
        tokio::time::sleep(FENCE_RETRY).await;
    }
    if outcome != Some(true) {
        match outcome {
            Some(_) => warn!("the leader declined the fence notice; the stores move after the lease"),
            None => info!("no leader heard the fence notice; the stores move after the lease"),
        }
        if let Some(until) = in_doubt_until {
            info!("waiting until an unanswered notice can no longer be accepted");
            tokio::time::sleep_until(until).await;
        }
    }
    outcome
}
