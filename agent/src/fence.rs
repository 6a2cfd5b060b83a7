//! `slotd fence`: give up every store address and instance on this machine,
//! whatever the agent's state. Run by systemd after the agent exits for any
//! reason (`ExecStopPost`, DESIGN "Safety" rules 4 and 6), so that a crashed
//! or killed agent cannot leave a master behind it.
//!
//! It takes the agent lock (refusing to run beside a live agent), reads the
//! store addresses from the node's own Raft data (snapshot plus committed
//! log), releases every one of them found on the interface, stops every slot
//! instance, and then tells the leader (see [`tell_leader`]).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use openraft::storage::RaftLogStorage;
use openraft::{EntryPayload, RaftLogReader, StorageError};
use slotd_netops::{AddressOps, IpPrefix, KernelOps, NetError};
use slotd_raft_store::storage::OpenError;
use slotd_raft_store::{storage, ClusterState, NodeId, ServiceIp};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::Config;
use crate::error::AgentError;
use crate::identity::Identity;
use crate::leader::core::TICKET_FRESH;
use crate::lock::{self, LockError};
use crate::peer_call::{Channels, Method};
use crate::wire::{FenceReply, FenceRequest};

/// Why `slotd fence` could not do all it should.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("the agent lock: {0}")]
    Lock(#[from] LockError),
    #[error("{0}")]
    Open(#[from] OpenError),
    #[error("reading the Raft log: {0}")]
    Log(#[from] StorageError<NodeId>),
    #[error("netlink: {0}")]
    Netlink(NetError),
    #[error("listing addresses on {interface}: {source}")]
    List { interface: String, source: NetError },
    #[error("could not release {0}")]
    Release(String),
}

/// The cluster state as far as this node had committed it.
pub async fn local_state(config: &Config) -> Result<ClusterState, FenceError> {
    let (mut log, sm) = storage::open(&config.data_dir)?;
    let mut data = sm.reader().snapshot();
    let committed = log.read_committed().await?;
    let from = data.last_applied.map_or(0, |l| l.index + 1);
    if let Some(committed) = committed {
        if committed.index >= from {
            let entries = log.try_get_log_entries(from..=committed.index).await?;
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
    /// Whether the leader took the notice (`None`: no leader answered).
    pub leader_accepted: Option<bool>,
}

/// Releases every store address on the configured interface, then tells
/// the leader.
pub async fn fence(config: &Config) -> Result<Fenced, FenceError> {
    // Held until we return: no agent starts meanwhile.
    let _lock = lock::acquire(&config.data_dir)?;
    let state = local_state(config).await?;
    let mut released = Vec::new();
    if !config.manage_addresses {
        // The addresses lived in the agent's memory: gone with it.
        let leader_accepted = tell_leader(config, &state).await;
        return Ok(Fenced {
            released,
            leader_accepted,
        });
    }
    let ops = KernelOps::new().map_err(FenceError::Netlink)?;
    let held: BTreeSet<IpAddr> = ops
        .list(&config.interface)
        .await
        .map_err(|source| FenceError::List {
            interface: config.interface.clone(),
            source,
        })?
        .into_iter()
        .map(|b| b.prefix.addr())
        .collect();
    // Keep going past a failed release: every other address must still go.
    let mut failures = Vec::new();
    for store in state.stores.values() {
        // Master IPs first: they are the ones that must not linger.
        for ip in [store.master_ip, store.replica_ip] {
            if held.contains(&ip.addr) {
                let result = match IpPrefix::new(ip.addr, ip.len) {
                    Ok(prefix) => ops
                        .release(&config.interface, prefix)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match result {
                    Ok(()) => {
                        info!(store = %store.name, %ip, "fenced: released");
                        released.push(ip);
                    }
                    Err(e) => failures.push(format!("{ip} (store {}): {e}", store.name)),
                }
            }
        }
    }
    if !failures.is_empty() {
        return Err(FenceError::Release(failures.join("; ")));
    }
    // Instances: the `none` driver runs nothing; the Cyrus drivers will stop
    // every slot's process group here.
    let leader_accepted = tell_leader(config, &state).await;
    Ok(Fenced {
        released,
        leader_accepted,
    })
}

/// How long one call to a peer may take.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// Pause between rounds over the nodes while no leader answers (an
/// election may be under way).
const RETRY: Duration = Duration::from_millis(50);

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
    let channels = Channels::new(identity);
    let nodes: Vec<String> = state
        .nodes
        .values()
        .filter(|n| n.id != me)
        .map(|n| n.addr.clone())
        .collect();
    let deadline = Instant::now() + config.timing.lease() + config.timing.clock_skew_margin();
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
                    CALL_TIMEOUT,
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
                    CALL_TIMEOUT,
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
                    let until = got_at + TICKET_FRESH + config.timing.clock_skew_margin();
                    in_doubt_until = Some(in_doubt_until.map_or(until, |t| t.max(until)));
                }
            }
        }
        tokio::time::sleep(RETRY).await;
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
