//! Operator commands that move masters, carried out on the leader: failover
//! (a controlled switchover), drain, undrain, rebalance, and the history
//! that shows what happened. Each is checked against the state and what
//! only the leader knows (who is down, backlogs) by the conductor's own
//! rules (`slotd_core::leader::switchover`), and refused with a reason before anything
//! reaches the log.

use slotd_proto::v1 as pb;
use slotd_raft_store::state::HISTORY_LEN;
use slotd_raft_store::{timings, ClusterState, Command, NodeId, NodeMode, Rejection, TimingsInForce};
use tracing::info;

use crate::clock::{self, unix_ms};
use crate::cluster::wire::LeaderReply;
use crate::cluster::Cluster;
use crate::convert;
use crate::error::AgentError;
use slotd_core::leader::switchover::{failover_command, rebalance_plan, stranded, Facts};

/// Switchovers at a time of a rebalance without `--concurrency`.
pub const REBALANCE_CONCURRENCY: u32 = 4;

/// History entries `slotctl history` shows without `--limit`.
pub const HISTORY_DEFAULT: u32 = 50;

/// What the leader knows beside the log, for the conductor's rules.
pub fn facts(cluster: &Cluster, state: &ClusterState) -> Facts {
    Facts::of(&cluster.core(), state, clock::now(), &cluster.switchover, unix_ms())
}

fn node_named(state: &ClusterState, name: &str) -> Result<NodeId, AgentError> {
    state
        .node_by_name(name)
        .map(|n| n.id)
        .ok_or_else(|| AgentError::Refused(Rejection::UnknownNode(format!("{name:?}"))))
}

/// `slotctl failover`: begins a switchover (or, forced, with the master
/// down, fails the store over at once).
pub async fn failover(
    cluster: &Cluster,
    store: String,
    to: Option<String>,
    force: bool,
) -> Result<LeaderReply, AgentError> {
    cluster.confirm_leader().await?;
    let (command, from) = cluster.reader.with(|d| {
        let state = &d.state;
        let to = to.as_deref().map(|n| node_named(state, n)).transpose()?;
        let facts = facts(cluster, state);
        let command = failover_command(state, &facts, &store, to, force).map_err(AgentError::Refused)?;
        let from = state.stores.get(&store).map(|s| s.master).unwrap_or_default();
        // A failover without the two phases, of a master that is down:
        // as the failover engine does, no grant to it may slip in
        // between this decision and the entry (its lease would count
        // on a log from before the failover).
        if matches!(command, Command::Failover { .. }) && !cluster.core().condemn_if_down(from, clock::now()) {
            return Err(AgentError::Precondition(format!(
                "store {store:?}: its master {} answered meanwhile; try again",
                state.node_name(from)
            )));
        }
        Ok::<_, AgentError>((command, from))
    })?;
    let (target, immediate, epoch) = match &command {
        Command::BeginSwitchover { to, epoch, .. } => (*to, false, epoch + 1),
        Command::Failover { moves, .. } => moves.first().map_or((0, true, 0), |m| (m.to, true, m.epoch + 1)),
        _ => (0, false, 0),
    };
    let condemned = std::collections::BTreeSet::from([from]);
    let index = match cluster.write(command).await {
        Ok(index) => {
            if immediate {
                cluster.core().failed_over(&condemned, index);
            }
            index
        }
        Err(e) => {
            if immediate {
                cluster.core().pardon(&condemned);
            }
            return Err(e);
        }
    };
    let names = cluster
        .reader
        .with(|d| (d.state.node_name(from), d.state.node_name(target)));
    info!(store = %store, from = %names.0, to = %names.1, force, immediate, index, "failover ordered");
    Ok(LeaderReply::Failover(pb::FailoverReply {
        index,
        store,
        from: names.0,
        to: names.1,
        epoch,
        forced: force,
        immediate,
    }))
}

/// `slotctl drain`, or a stopping agent's own drain (`on_stop`): the
/// node's mode becomes `draining` and the conductor switches its
/// masters over. An operator's drain is refused if a master has nowhere
/// to go; a stop's is not (those stores are fenced when it exits), and
/// the reply says which.
pub async fn drain(
    cluster: &Cluster,
    node: String,
    concurrency: Option<u32>,
    on_stop: bool,
) -> Result<LeaderReply, AgentError> {
    cluster.confirm_leader().await?;
    let concurrency = concurrency.unwrap_or(cluster.switchover.drain_concurrency);
    let (id, masters, stranded) = cluster.reader.with(|d| {
        let state = &d.state;
        let id = node_named(state, &node)?;
        let facts = facts(cluster, state);
        let stranded: Vec<(String, String)> = stranded(state, &facts, id)
            .into_iter()
            .map(|(s, why)| (s, why.to_string()))
            .collect();
        Ok::<_, AgentError>((id, state.masters_of(id).count() as u32, stranded))
    })?;
    if !on_stop && !stranded.is_empty() {
        let stores = stranded
            .iter()
            .map(|(s, why)| format!("{s} ({why})"))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(AgentError::Refused(Rejection::Stranded { node, stores }));
    }
    let index = cluster
        .write(Command::Drain {
            node: id,
            concurrency,
            on_stop,
        })
        .await?;
    cluster.engine_wake.notify_one();
    info!(node = %node, masters, concurrency, on_stop, index, "drain ordered");
    Ok(LeaderReply::Drain {
        reply: pb::DrainReply {
            index,
            masters,
            concurrency,
        },
        stranded,
    })
}

/// `slotctl undrain`: mode `active`; a drain under way stops beginning
/// switchovers (those under way finish). `after_stop`: only a stop's
/// drain ends (a restarted agent must not undo an operator's drain).
pub async fn undrain(cluster: &Cluster, node: String, after_stop: bool) -> Result<LeaderReply, AgentError> {
    cluster.confirm_leader().await?;
    let id = cluster.reader.with(|d| node_named(&d.state, &node))?;
    let command = if after_stop {
        Command::EndStopDrain { node: id }
    } else {
        Command::SetNodeMode {
            node: id,
            mode: NodeMode::Active,
        }
    };
    let index = cluster.write(command).await?;
    info!(node = %node, index, "undrained");
    Ok(LeaderReply::Written { index })
}

/// `slotctl rebalance [--dry-run]`: the moves the rebalance makes from
/// the state now; unless a dry run (or nothing to move), it begins.
pub async fn rebalance(cluster: &Cluster, dry_run: bool, concurrency: Option<u32>) -> Result<LeaderReply, AgentError> {
    cluster.confirm_leader().await?;
    let concurrency = concurrency.unwrap_or(REBALANCE_CONCURRENCY);
    let moves = cluster.reader.with(|d| {
        let state = &d.state;
        let facts = facts(cluster, state);
        rebalance_plan(state, &facts)
            .into_iter()
            .map(|m| convert::planned_move(state, m))
            .collect::<Vec<_>>()
    });
    let index = if dry_run || moves.is_empty() {
        // Checked all the same: a bad --concurrency is an error here too.
        cluster
            .reader
            .with(|d| d.state.check(&Command::Rebalance { concurrency }))
            .map_err(AgentError::Refused)?;
        None
    } else {
        let index = cluster.write(Command::Rebalance { concurrency }).await?;
        cluster.engine_wake.notify_one();
        info!(moves = moves.len(), concurrency, index, "rebalance ordered");
        Some(index)
    };
    Ok(LeaderReply::Rebalance(pb::RebalanceReply { index, moves }))
}

/// `slotctl history [STORE]`: the last `limit` transitions, oldest first.
pub async fn history(cluster: &Cluster, store: Option<String>, limit: u32) -> Result<LeaderReply, AgentError> {
    cluster.confirm_leader().await?;
    let limit = match limit {
        0 => HISTORY_DEFAULT as usize,
        n => (n as usize).min(HISTORY_LEN),
    };
    cluster.reader.with(|d| {
        let state = &d.state;
        if let Some(name) = &store {
            let known = state.stores.contains_key(name) || state.history.iter().any(|t| &t.store == name);
            if !known {
                return Err(AgentError::Refused(Rejection::UnknownStore(name.clone())));
            }
        }
        let chosen: Vec<_> = state
            .history
            .iter()
            .filter(|t| store.as_ref().is_none_or(|s| &t.store == s))
            .collect();
        let skip = chosen.len().saturating_sub(limit);
        let entries = chosen
            .into_iter()
            .skip(skip)
            .map(|t| convert::history_entry(state, t))
            .collect();
        Ok(LeaderReply::History(pb::HistoryReply { entries }))
    })
}

/// `slotctl config show` (`set` empty) and `slotctl config set`: the
/// cluster's timings, or a change of some of them checked by the rules of
/// `--check-config` (with a fencer beside any node) and
/// logged. A refused change changes nothing.
pub async fn config(cluster: &Cluster, set: Vec<(String, u64)>) -> Result<LeaderReply, AgentError> {
    cluster.confirm_leader().await?;
    let in_force = cluster.reader.with(|d| d.state.timings);
    let reply = |t: Option<TimingsInForce>, index: u64| LeaderReply::Config(convert::config_reply(t.as_ref(), index));
    if set.is_empty() {
        return Ok(reply(in_force, 0));
    }
    let Some(current) = in_force else {
        return Err(AgentError::Precondition(
            "the cluster's timings are not in the log yet (the leader writes them within a heartbeat of leading); try again"
                .into(),
        ));
    };
    let mut next = current.now;
    for (key, value) in &set {
        if !next.set(key, *value) {
            return Err(AgentError::Invalid(format!(
                "config: no cluster timing {key:?}; the keys are {}",
                timings::KEYS.join(", ")
            )));
        }
    }
    // The rules read only the cluster's keys.
    let timing = slotd_core::timing::Timing::default().with_cluster(&next);
    // The fencer's rule whatever this leader runs: any node may have one.
    slotd_core::timing::check(&timing, Some(slotd_core::node::fencer::check), "")
        .map_err(|i| AgentError::Invalid(format!("config: {}: {}", i.key, i.reason)))?;
    if next == current.now {
        return Ok(reply(in_force, 0));
    }
    let command = Command::SetTimings {
        timings: next,
        replaces: current.seq,
    };
    cluster
        .reader
        .with(|d| d.state.check(&command))
        .map_err(AgentError::Refused)?;
    let index = cluster.write(command).await?;
    info!(index, set = ?set, "the cluster's timings changed");
    Ok(reply(cluster.reader.with(|d| d.state.timings), index))
}
