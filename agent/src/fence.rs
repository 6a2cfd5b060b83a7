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

/// Releases every store address on the configured interface. Returns what
/// was released.
pub async fn fence(config: &Config) -> anyhow::Result<Vec<ServiceIp>> {
    let state = local_state(config).await?;
    let mut released = Vec::new();
    if !config.manage_addresses {
        return Ok(released);
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
    Ok(released)
}
