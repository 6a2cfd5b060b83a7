//! The lease keeper: renews this node's lease with whoever leads, every
//! `heartbeat` and at once when a new leader becomes known (so a change of
//! leader costs no heartbeat of lease), and publishes the lease the
//! [`LeaseBook`] makes of the grants.
//!
//! Each renewal runs on its own task (bounded by the lease), so a slow or
//! dead leader never delays the next one; results come back to the one loop
//! that owns the book. With no leader to renew with (none known, or this
//! node gave up leading), it asks every other voter every
//! [`RENEW_WITHOUT_LEADER_EVERY`]: whichever leads by the time the renewal
//! arrives grants it.

use std::sync::Arc;
use std::time::Duration;

use slotd_raft_store::NodeId;
use tokio::sync::{mpsc, watch, Notify};
use tracing::{debug, info, warn};

use crate::clock::{self, sleep_until, Mono};
use crate::cluster::channel::Method;
use crate::cluster::wire::{Granted, HealthReport, Renewal};
use crate::cluster::Cluster;
use crate::error::AgentError;
use crate::leader::Granter;
use crate::node::progress::Progress;
use crate::node::timings::InForce;
use slotd_core::node::lease::{paused, LeaseBook, LeaseState};
use slotd_core::node::watchdog::Part;
use slotd_core::timing::RENEW_WITHOUT_LEADER_EVERY;

/// Whom a renewal goes to now.
enum RenewWith {
    /// This node leads (and has not given up leading).
    Me,
    /// Another node leads, at this Peer address.
    Leader(String),
    /// No leader this node can renew with: every other voter's address.
    Everyone(Vec<String>),
}

fn renew_with(cluster: &Cluster) -> Result<RenewWith, AgentError> {
    let m = cluster.raft.metrics().borrow().clone();
    match m.current_leader {
        Some(l) if l != cluster.id => cluster
            .leader_addr(l)
            .map(RenewWith::Leader)
            .ok_or(AgentError::NoLeader),
        Some(_) if !cluster.network.standing().gave_up_in(m.current_term) => Ok(RenewWith::Me),
        _ => {
            let membership = m.membership_config.membership();
            let others: Vec<String> = membership
                .voter_ids()
                .filter(|v| *v != cluster.id)
                .filter_map(|v| membership.get_node(&v).map(|n| n.addr.clone()))
                .collect();
            if others.is_empty() {
                Err(AgentError::NoLeader)
            } else {
                Ok(RenewWith::Everyone(others))
            }
        }
    }
}

/// Sends one renewal to whoever leads now (this node included); with no
/// leader to renew with, to every other voter, the first grant counting.
async fn renew(
    cluster: &Cluster,
    granter: &Granter,
    renewal: Renewal,
    timeout: Duration,
) -> Result<Granted, AgentError> {
    let call = |addr: String| {
        let renewal = &renewal;
        async move {
            cluster
                .network
                .channels
                .call::<_, Result<Granted, AgentError>>(&addr, Method::Heartbeat, renewal, timeout)
                .await
                .map_err(|e| AgentError::Raft(e.to_string()))?
        }
    };
    match renew_with(cluster)? {
        RenewWith::Me => granter.grant(renewal.clone()).await,
        RenewWith::Leader(addr) => call(addr).await,
        RenewWith::Everyone(addrs) => {
            let asks = addrs.into_iter().map(|a| Box::pin(call(a)));
            futures::future::select_ok(asks).await.map(|(granted, _)| granted)
        }
    }
}

/// Whether this node has a leader to renew with.
fn has_leader(cluster: &Cluster) -> bool {
    !matches!(renew_with(cluster), Ok(RenewWith::Everyone(_)) | Err(_))
}

/// A pause this node's clock did not see (a frozen VM, resumed) since the
/// loop last looked, at `came_round` (this node's clock, the wall clock;
/// now from here on): the wall clock ran ahead by more than `margin`.
/// Whatever the lease says, it is gone: voided, and true.
fn pause_voids(book: &mut LeaseBook, came_round: &mut (Mono, Duration), margin: Duration) -> bool {
    let (now, wall) = (clock::now(), clock::wall());
    let (then, then_wall) = std::mem::replace(came_round, (now, wall));
    let Some(ahead) = paused(now.since(then), wall.saturating_sub(then_wall), margin) else {
        return false;
    };
    warn!(
        ?ahead,
        "the wall clock ran ahead of this node's clock: paused without its clocks seeing it; the lease is \
         void (fencing, then renewing)"
    );
    book.void(now);
    true
}

/// Renews this node's lease every `heartbeat` (and when `renew_now` is
/// notified: a health report with news for the leader) until `stop` is set;
/// publishes it on the returned receiver.
#[allow(clippy::too_many_arguments)]
pub fn spawn_keeper(
    cluster: Arc<Cluster>,
    granter: Granter,
    mut timings: watch::Receiver<InForce>,
    report: Arc<dyn Fn() -> HealthReport + Send + Sync>,
    progress: Progress,
    renew_now: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> (watch::Receiver<LeaseState>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(LeaseState::default());
    let handle = tokio::spawn(async move {
        // The cluster's timings as this node applied them (its own file's
        // until the first are in the log): a change counts from the next
        // renewal on.
        let first = timings.borrow_and_update().clone();
        let (mut heartbeat, mut lease, mut margin) = (
            first.timing.heartbeat(),
            first.timing.lease(),
            first.timing.clock_skew_margin(),
        );
        let mut timings_seq = first.seq;
        let mut book = LeaseBook::new(lease);
        let mut tick = tokio::time::interval(heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut metrics = cluster.raft.metrics();
        let mut leader = metrics.borrow().current_leader;
        let mut applied = cluster.reader.subscribe();
        let (done_tx, mut done) = mpsc::channel::<(Mono, Result<Granted, AgentError>)>(64);
        let applied_index = |rx: &watch::Receiver<Option<openraft::LogId<NodeId>>>| rx.borrow().map_or(0, |l| l.index);
        let mut came_round = (clock::now(), clock::wall());
        loop {
            // The loop comes round at least every heartbeat (the watchdog's
            // bound for the keeper is far longer).
            progress.mark(Part::LeaseKeeper);
            let mut paused_now = pause_voids(&mut book, &mut came_round, margin);
            let was_valid = book.state().valid_at(clock::now()) || paused_now;
            let expiry = book.state().valid_until.filter(|_| was_valid);
            let renew_now = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => true,
                _ = renew_now.notified() => {
                    tick.reset();
                    true
                }
                changed = metrics.changed() => {
                    if changed.is_err() { return }
                    let now_leader = metrics.borrow_and_update().current_leader;
                    let new = now_leader.is_some() && now_leader != leader;
                    leader = now_leader;
                    if new {
                        debug!(leader = ?leader, "new leader: renewing the lease at once");
                        tick.reset();
                    }
                    new
                }
                Some((sent, result)) = done.recv() => {
                    // Woken by a grant after a pause: the pause first.
                    paused_now |= pause_voids(&mut book, &mut came_round, margin);
                    match result {
                        Ok(g) => {
                            let granted = Duration::from_millis(g.lease_ms);
                            if granted < lease {
                                debug!(?granted, own = ?lease, "the leader grants a shorter lease than the one this node applied: that one counts");
                            }
                            book.granted_for(sent, granted, g.read_index, applied_index(&applied), clock::now());
                        }
                        Err(e) => debug!(error = %e, "lease renewal refused"),
                    }
                    false
                }
                changed = applied.changed(), if book.waiting() => {
                    if changed.is_err() { return }
                    paused_now |= pause_voids(&mut book, &mut came_round, margin);
                    book.applied(applied_index(&applied), clock::now());
                    false
                }
                changed = timings.changed() => {
                    if changed.is_err() { return }
                    let InForce { timing: t, seq } = timings.borrow_and_update().clone();
                    (lease, margin, timings_seq) = (t.lease(), t.clock_skew_margin(), seq);
                    book.set_own(lease);
                    if t.heartbeat() != heartbeat {
                        heartbeat = t.heartbeat();
                        tick = tokio::time::interval(heartbeat);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                    info!(?heartbeat, ?lease, ?margin, seq = timings_seq, "the cluster's timings in force here now");
                    false
                }
                _ = sleep_until(expiry) => false,
                _ = tokio::time::sleep(RENEW_WITHOUT_LEADER_EVERY), if !has_leader(&cluster) => true,
            };
            let renew_now = renew_now || paused_now;
            let state = book.state();
            let valid = state.valid_at(clock::now());
            if !was_valid && valid {
                info!("lease granted");
            } else if was_valid && !valid {
                warn!("lease expired: fencing (no master role until a renewal is granted)");
            }
            tx.send_if_modified(|s| {
                let changed = *s != state;
                *s = state;
                changed
            });
            if renew_now {
                let sent = clock::now();
                let mut report = report();
                // The leader's ack that this node knows the timings.
                report.timings_seq = timings_seq;
                let renewal = Renewal {
                    node: cluster.id,
                    report,
                };
                let (cluster, granter, done_tx) = (cluster.clone(), granter.clone(), done_tx.clone());
                tokio::spawn(async move {
                    let result = match tokio::time::timeout(lease, renew(&cluster, &granter, renewal, lease)).await {
                        Ok(r) => r,
                        Err(_) => Err(AgentError::Raft(format!("no answer within {lease:?}"))),
                    };
                    let _ = done_tx.send((sent, result)).await;
                });
            }
        }
    });
    (rx, handle)
}
