//! `slotd fence`: give up every store address and instance on this machine,
//! whatever the agent's state. Run by systemd after the agent exits for any
//! reason (`ExecStopPost`, DESIGN "Safety" rules 4 and 6), so that a crashed
//! or killed agent cannot leave a master behind it.
//!
//! It reads the store addresses from the node's own Raft data (snapshot plus
//! committed log), releases every one of them found on the interface, and
//! stops every slot instance.

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::Context;
use openraft::storage::RaftLogStorage;
use openraft::{EntryPayload, RaftLogReader};
use slotd_netops::{AddressOps, IpPrefix, KernelOps};
use slotd_raft_store::{storage, ClusterState, ServiceIp};
use tracing::info;

use crate::config::Config;

/// The cluster state as far as this node had committed it.
pub async fn local_state(config: &Config) -> anyhow::Result<ClusterState> {
    let (mut log, sm) = storage::open(&config.data_dir)?;
    let mut data = sm.reader().snapshot();
    let committed = log.read_committed().await.context("reading the committed log id")?;
    let from = data.last_applied.map_or(0, |l| l.index + 1);
    if let Some(committed) = committed {
        if committed.index >= from {
            let entries = log
                .try_get_log_entries(from..=committed.index)
                .await
                .context("reading the log")?;
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
pub async fn fence(config: &Config) -> anyhow::Result<Fenced> {
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
    let ops = KernelOps::new().context("netlink")?;
    let held: BTreeSet<IpAddr> = ops
        .list(&config.interface)
        .await
        .with_context(|| format!("listing addresses on {}", config.interface))?
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
        anyhow::bail!("could not release {}", failures.join("; "));
    }
    // Instances: the `none` driver runs nothing; the Cyrus drivers will stop
    // every slot's process group here.
    let leader_accepted = tell_leader(config, &state).await;
    Ok(Fenced {
        released,
        leader_accepted,
    })
}

/// Best effort (DESIGN rule 6): tell the leader this node holds nothing
/// since its last grant, so its stores move now rather than after the
/// lease. Tries the other nodes, following a "not the leader" hint once.
async fn tell_leader(config: &Config, state: &ClusterState) -> Option<bool> {
    use crate::cluster::AgentError;
    use crate::lease::{read_generation, FencedNotice};
    use slotd_proto::v1::RaftPayload;
    use slotd_raft_store::codec;

    let notice = FencedNotice {
        node: config.node_id,
        generation: read_generation(&config.data_dir),
    };
    let Ok(payload) = codec::encode(&notice) else {
        return None;
    };
    let channels = crate::network::Channels::default();
    let mut targets: Vec<String> = state
        .nodes
        .values()
        .filter(|n| n.id != config.node_id)
        .map(|n| n.addr.clone())
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut i = 0;
    while i < targets.len() && std::time::Instant::now() < deadline {
        let addr = targets[i].clone();
        i += 1;
        let Ok(mut client) = channels.peer(&addr) else { continue };
        let mut request = tonic::Request::new(RaftPayload {
            payload: payload.clone(),
        });
        request.set_timeout(std::time::Duration::from_millis(500));
        let Ok(reply) = client.fenced(request).await else {
            continue;
        };
        match codec::decode::<Result<bool, AgentError>>(&reply.into_inner().payload) {
            Ok(Ok(accepted)) => {
                info!(leader = %addr, accepted, "told the leader this node holds nothing");
                return Some(accepted);
            }
            Ok(Err(AgentError::NotLeader {
                leader: Some((_, hint)),
                ..
            })) if !targets[..i].contains(&hint) => {
                targets.insert(i, hint);
            }
            _ => {}
        }
    }
    info!("no leader heard the fence notice; the stores move after the lease");
    None
}
