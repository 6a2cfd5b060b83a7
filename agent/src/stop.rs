//! Stopping is draining (DESIGN rule 7): on SIGTERM the agent first hands
//! its masters over by switchovers with a flush — it asks the leader to
//! drain this node, marked as a stop's drain — and waits, bounded by
//! `switchover.stop_drain_timeout_ms`, until it masters nothing that could
//! go elsewhere. Then the usual shutdown fences whatever is left. A second
//! SIGTERM ends the wait at once.
//!
//! When the agent starts again, it makes its node active again if a stop's
//! drain left it draining or drained (an operator's drain stays).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use slotd_raft_store::{ClusterState, NodeId, NodeMode, Store};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::cluster::Cluster;
use crate::wire::{LeaderCall, LeaderReply};

/// Switchovers at a time when stopping: the stop is bounded in time, not
/// in load.
pub const STOP_CONCURRENCY: u32 = 8;

/// How long a stopping agent waits for the leader to take its drain order
/// (without a quorum there is nobody to hand masters to: fence at once).
pub const STOP_ORDER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the agent tries, after start, to make its node active again.
pub const UNDRAIN_TRIES: u32 = 60;

/// Whether this node still masters stores that could go elsewhere, or has
/// switchovers away from it under way. A store can go elsewhere only to an
/// active replica: when every other node is draining too (the whole cluster
/// is being stopped), nothing is left to wait for. `stranded`: stores the
/// leader found no live replica for.
pub fn handing_over(state: &ClusterState, me: NodeId, stranded: &[String]) -> bool {
    let movable = |s: &Store| {
        !stranded.contains(&s.name)
            && s.replicas()
                .any(|n| state.nodes.get(&n).is_some_and(|n| n.mode == NodeMode::Active))
    };
    // Switchovers from or to this node must end before it goes: one toward
    // it (a rollback going home) would otherwise make a stopped node master.
    let involved = state
        .stores
        .values()
        .any(|s| s.phase.switchover().is_some_and(|(from, to)| from == me || to == me));
    state.masters_of(me).any(movable) || involved
}

/// Hands this node's masters over before the agent stops; returns when
/// done, at `timeout`, or when `again` (a second SIGTERM) completes.
pub async fn drain_before_stopping(cluster: &Arc<Cluster>, timeout: Duration, again: impl Future<Output = ()>) {
    if timeout.is_zero() {
        info!("switchover.stop_drain_timeout_ms = 0: not handing masters over");
        return;
    }
    let me = cluster.id;
    let (masters, mode) = cluster
        .reader
        .with(|d| (d.state.masters_of(me).count(), d.state.nodes.get(&me).map(|n| n.mode)));
    if masters == 0 && !cluster.reader.with(|d| handing_over(&d.state, me, &[])) {
        return;
    }
    let deadline = Instant::now() + timeout;
    tokio::pin!(again);
    let started = Instant::now();
    info!(
        masters,
        ?timeout,
        "stopping: handing masters over first (a second SIGTERM skips this)"
    );
    let mut stranded: Vec<String> = Vec::new();
    // An operator's drain under way (or done) stays as it is.
    if mode == Some(NodeMode::Active) {
        let order = cluster.call(LeaderCall::Drain {
            node: cluster.name.clone(),
            concurrency: Some(STOP_CONCURRENCY),
            on_stop: true,
        });
        let answer = tokio::select! {
            a = tokio::time::timeout_at(deadline.min(Instant::now() + STOP_ORDER_TIMEOUT), order) => a,
            _ = &mut again => {
                warn!("second stop signal: fencing now");
                return;
            }
        };
        match answer {
            Ok(Ok(LeaderReply::Drain { stranded: s, .. })) => {
                for (store, why) in &s {
                    warn!(store = %store, why = %why, "no other node can take this master; it is fenced when slotd exits");
                }
                stranded = s.into_iter().map(|(store, _)| store).collect();
            }
            Ok(Ok(_)) => warn!("the leader answered the stop's drain with something else; fencing"),
            Ok(Err(e)) => {
                warn!(error = %e, "cannot hand masters over; fencing them");
                return;
            }
            Err(_) => {
                warn!(?timeout, "no answer to the stop's drain in time; fencing");
                return;
            }
        }
    }
    let mut applied = cluster.reader.subscribe();
    loop {
        if !cluster.reader.with(|d| handing_over(&d.state, me, &stranded)) {
            info!(took = ?started.elapsed(), "masters handed over");
            return;
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(deadline) => {
                let left = cluster.reader.with(|d| d.state.masters_of(me).count());
                warn!(left, ?timeout, "stop_drain_timeout reached: fencing the masters left");
                return;
            }
            _ = &mut again => {
                warn!("second stop signal: fencing now");
                return;
            }
        }
    }
}

/// After start: if a stop's drain left this node draining or drained, make
/// it active again (tries for about a minute; the leader may still be
/// coming up).
pub async fn undrain_after_stop(cluster: Arc<Cluster>) {
    for _ in 0..UNDRAIN_TRIES {
        let job = cluster.reader.with(|d| {
            d.state
                .nodes
                .get(&cluster.id)
                .map(|n| (n.mode, n.drain.is_some_and(|j| j.on_stop)))
        });
        match job {
            Some((NodeMode::Active, _)) | Some((_, false)) => return,
            Some((_, true)) => {
                match cluster
                    .call(LeaderCall::Undrain {
                        node: cluster.name.clone(),
                        after_stop: true,
                    })
                    .await
                {
                    Ok(_) => {
                        info!("active again after the stop's drain (masters come back by rebalance)");
                        return;
                    }
                    Err(e) => warn!(error = %e, "cannot make this node active again yet"),
                }
            }
            // Not in the state (yet): nothing to undo.
            None => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use slotd_raft_store::command::{NodeSpec, StoreSpec};
    use slotd_raft_store::{Command, Request, SlotRef, Topology};

    use super::*;

    fn apply(s: &mut ClusterState, command: Command) {
        assert!(s.apply(&Request { at_ms: 0, command }).is_applied());
    }

    /// A stop waits for masters that can go somewhere, and only for them:
    /// when every other node is stopping (draining) too, not at all.
    #[test]
    fn a_stop_waits_only_while_a_master_can_go_somewhere() {
        let node = |id: u64| NodeSpec {
            id,
            name: format!("imap{id}"),
            addr: format!("10.0.0.{id}:7420"),
            voter: true,
            slots: vec!["s01".into()],
        };
        let slot = |node: u64| SlotRef {
            node,
            slot: "s01".into(),
        };
        let mut s = ClusterState::default();
        apply(
            &mut s,
            Command::Init(Topology {
                nodes: vec![node(1), node(2)],
                stores: vec![StoreSpec {
                    name: "st01".into(),
                    master_ip: "10.0.1.1/32".parse().unwrap(),
                    replica_ip: "10.0.2.1/32".parse().unwrap(),
                    slots: vec![slot(1), slot(2)],
                }],
            }),
        );
        assert!(handing_over(&s, 1, &[]), "imap2 is active: st01 can go there");
        assert!(
            !handing_over(&s, 1, &["st01".to_owned()]),
            "stranded by the leader's word"
        );
        assert!(!handing_over(&s, 2, &[]), "imap2 masters nothing");
        apply(
            &mut s,
            Command::Drain {
                node: 2,
                concurrency: 8,
                on_stop: true,
            },
        );
        assert!(!handing_over(&s, 1, &[]), "imap2 is stopping too: nothing to wait for");
    }
}
