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

use slotd_core::node::stop::handing_over;
use slotd_core::timing::{STOP_ORDER_TIMEOUT, UNDRAIN_EVERY, UNDRAIN_TRIES};
use slotd_raft_store::NodeMode;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::cluster::wire::{LeaderCall, LeaderReply};
use crate::cluster::Cluster;
use crate::leader::calls;

/// Switchovers at a time when stopping: the stop is bounded in time, not
/// in load.
pub const STOP_CONCURRENCY: u32 = 8;

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
        let order = calls::call(
            cluster,
            LeaderCall::Drain {
                node: cluster.name.clone(),
                concurrency: Some(STOP_CONCURRENCY),
                on_stop: true,
            },
        );
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
                let undrain = LeaderCall::Undrain {
                    node: cluster.name.clone(),
                    after_stop: true,
                };
                match calls::call(&cluster, undrain).await {
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
        tokio::time::sleep(UNDRAIN_EVERY).await;
    }
}
