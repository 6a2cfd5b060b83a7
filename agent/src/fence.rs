//! `slotd fence`: give up every store address and instance on this machine,
//! whatever the agent's state. Run by systemd after the agent exits for any
//! reason (`ExecStopPost`, DESIGN "Safety" rules 4 and 6), so that a crashed,
//! killed or frozen agent cannot leave a master behind it.
//!
//! It takes the agent lock (refusing to run beside a live agent) and
//! releases every address the node may hold: those in its ledger (in the
//! runtime directory), those the interface shows tagged as slotd's, and —
//! if the Raft data can be read — any store address of the state found on
//! the interface. None of these needs the others: with the data directory
//! unreadable or corrupt, the ledger and the tags still name everything. It
//! goes on past a failed release, and fails (exit 1) only after trying
//! them all. Then, if it released everything and knows the other nodes, it
//! tells the leader (see [`tell_leader`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use openraft::storage::RaftLogStorage;
use openraft::{EntryPayload, RaftLogReader, StorageError};
use slotd_netops::{AddressOps, IpPrefix, KernelOps, NetError, Outcome};
use slotd_raft_store::storage::OpenError;
use slotd_raft_store::{storage, ClusterState, NodeId, ServiceIp};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::Config;
use crate::error::AgentError;
use crate::identity::Identity;
use crate::leader::core::TICKET_FRESH;
use crate::ledger::{Entries, Ledger};
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
    /// Whether the leader took the notice (`None`: nobody was told, or no
    /// leader answered).
    pub leader_accepted: Option<bool>,
}

/// Releases every address this node may hold, then tells the leader.
pub async fn fence(config: &Config) -> Result<Fenced, FenceError> {
    // Held until we return: no agent starts meanwhile. Without it (a data
    // directory that cannot be read) we still release, but tell nobody: the
    // notice is safe only while no agent can run.
    let lock = match lock::acquire(&config.data_dir) {
        Ok(l) => Some(l),
        Err(e @ LockError::Held { .. }) => return Err(e.into()),
        Err(e) => {
            warn!(error = %e, "cannot take the agent lock: releasing, but not telling the leader");
            None
        }
    };
    let ledger = Ledger::new(&config.runtime_dir);
    let mut targets: Entries = match ledger.read() {
        Ok((entries, bad)) => {
            if !bad.0.is_empty() {
                warn!(ledger = %ledger.path().display(), lines = ?bad.0, "unreadable ledger lines");
            }
            entries
        }
        Err(e) => {
            warn!(error = %e, "cannot read the ledger: releasing what the interface and the Raft data name");
            Entries::new()
        }
    };
    let state = match local_state(config).await {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot read the Raft data: releasing what the ledger and the interface name");
            None
        }
    };
    let may_tell = lock.is_some();
    if !config.manage_addresses {
        // The addresses lived in the agent's memory: gone with it.
        let leader_accepted = tell(config, may_tell, state.as_ref()).await;
        return Ok(Fenced {
            released: Vec::new(),
            leader_accepted,
        });
    }
    let ops = KernelOps::new().map_err(FenceError::Netlink)?;
    match ops.list(&config.interface).await {
        Ok(list) => {
            let store_ips: BTreeMap<IpAddr, (ServiceIp, String)> = state
                .iter()
                .flat_map(|s| s.stores.values())
                .flat_map(|st| [(st.master_ip, st.name.clone()), (st.replica_ip, st.name.clone())])
                .map(|(ip, name)| (ip.addr, (ip, name)))
                .collect();
            let on_interface: Vec<IpAddr> = list.iter().map(|b| b.prefix.addr()).collect();
            // Ledger entries not on the interface are gone already.
            targets.retain(|addr, _| on_interface.contains(addr));
            for b in list {
                let addr = b.prefix.addr();
                if let Some(entry) = store_ips.get(&addr) {
                    targets.entry(addr).or_insert_with(|| entry.clone());
                } else if b.ours {
                    let ip = ServiceIp {
                        addr,
                        len: b.prefix.prefix_len(),
                    };
                    targets.entry(addr).or_insert((ip, "(tagged)".into()));
                }
            }
        }
        Err(e) => warn!(
            interface = %config.interface,
            error = %e,
            "cannot list the interface: releasing every address in the ledger"
        ),
    }
    // Keep going past a failed release: every other address must still go.
    let mut released = Vec::new();
    let mut still = Entries::new();
    let mut failures = Vec::new();
    for (addr, (ip, store)) in &targets {
        let result = match IpPrefix::new(ip.addr, ip.len) {
            Ok(prefix) => ops.release(&config.interface, prefix).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(Outcome::Changed) => {
                info!(store = %store, %ip, "fenced: released");
                released.push(*ip);
            }
            Ok(Outcome::Unchanged) => {}
            Err(e) => {
                failures.push(format!("{ip} (store {store}): {e}"));
                still.insert(*addr, (*ip, store.clone()));
            }
        }
    }
    // Instances: the `none` driver runs nothing; the Cyrus drivers will stop
    // every slot's process group here.
    // The ledger now names what may still be held.
    if let Err(e) = ledger.write(&still) {
        warn!(error = %e, "cannot rewrite the ledger");
    }
    if !failures.is_empty() {
        // Still holding something: the leader must not hear "nothing here".
        return Err(FenceError::Release(failures.join("; ")));
    }
    let leader_accepted = tell(config, may_tell, state.as_ref()).await;
    Ok(Fenced {
        released,
        leader_accepted,
    })
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
