//! The granter: parks lease renewals and answers them together after a
//! quorum round (openraft's `get_read_log_id`) that started after every one
//! of them was received, so a granted lease ends before any leader elected
//! later could act (DESIGN "Safety", rule 1). At scale this is one round for
//! a whole batch of renewals.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::{mpsc, oneshot};

use crate::clock;
use crate::cluster::wire::{Granted, Renewal};
use crate::cluster::Cluster;
use crate::error::AgentError;

type Pending = (Renewal, oneshot::Sender<Result<Granted, AgentError>>);

#[derive(Clone)]
pub struct Granter {
    tx: mpsc::Sender<Pending>,
}

impl Granter {
    /// Starts the granting loop; it ends when every `Granter` is dropped.
    /// `lease` counts until the log has the cluster's timings.
    pub fn spawn(cluster: Arc<Cluster>, lease: Duration) -> Granter {
        let (tx, mut rx) = mpsc::channel::<Pending>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                // The lease in force (the given one until the log has
                // timings) bounds the round.
                let bound = cluster.core().timing().lease;
                let mut outcome = round(&cluster, bound).await;
                // Grants name the timings of the log as far as the read
                // index (a new leader may not have applied its predecessor's
                // last change yet): applied that far first, within the bound.
                if let Ok((_, read_index)) = &outcome {
                    if let Err(e) = applied_to(&cluster, *read_index, bound).await {
                        outcome = Err(e);
                    }
                }
                let now = clock::now();
                let mut core = cluster.core();
                let timings = match &outcome {
                    Ok((term, _)) => {
                        core.observe(Some(*term), now);
                        // The waits this leader counts and the leases it
                        // gives come from the same state.
                        cluster.reader.with(|d| {
                            core.see_timings(&d.state, now);
                            d.state.timings
                        })
                    }
                    Err(_) => None,
                };
                for (renewal, reply) in batch {
                    let knows = renewal.report.timings_seq;
                    let answer = match &outcome {
                        Ok((term, read_index)) => match core.grant(renewal.node, now, renewal.report, *read_index) {
                            Some(g) => {
                                if g.acks {
                                    cluster.engine_wake.notify_one();
                                }
                                Ok(Granted {
                                    leader: cluster.id,
                                    term: *term,
                                    seq: g.seq,
                                    read_index: g.read_index,
                                    // No longer than the timings the node
                                    // says it applied allow.
                                    lease_ms: timings
                                        .map_or(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX), |t| {
                                            t.lease_ms_for(knows)
                                        }),
                                })
                            }
                            None => Err(AgentError::Precondition(format!(
                                "node {} is being failed over; no lease until that is settled",
                                renewal.node
                            ))),
                        },
                        Err(e) => Err(e.clone()),
                    };
                    let _ = reply.send(answer);
                }
            }
        });
        Granter { tx }
    }

    /// Asks for a renewal; answers once a quorum round confirmed leadership.
    pub async fn grant(&self, renewal: Renewal) -> Result<Granted, AgentError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((renewal, tx))
            .await
            .map_err(|_| AgentError::ShuttingDown)?;
        rx.await.map_err(|_| AgentError::ShuttingDown)?
    }
}

/// Until this node has applied the log up to `index`, within `bound`.
async fn applied_to(cluster: &Cluster, index: u64, bound: Duration) -> Result<(), AgentError> {
    let mut applied = cluster.reader.subscribe();
    let waited = tokio::time::timeout(bound, applied.wait_for(|a| a.map_or(0, |l| l.index) >= index)).await;
    match waited {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(AgentError::ShuttingDown),
        Err(_) => Err(AgentError::Raft(format!(
            "the log not applied to the read index {index} within {bound:?}"
        ))),
    }
}

/// One quorum round, started now: the term it confirmed and the read index.
/// Refused if leadership changed during the round (the grant must name the
/// term whose quorum answered).
async fn round(cluster: &Cluster, lease: Duration) -> Result<(u64, u64), AgentError> {
    let before = cluster.raft.metrics().borrow().clone();
    if before.state != ServerState::Leader {
        return Err(AgentError::NotLeader {
            me: cluster.id,
            leader: before
                .current_leader
                .zip(before.current_leader.and_then(|l| cluster.leader_addr(l))),
        });
    }
    let read = match tokio::time::timeout(lease, cluster.raft.get_read_log_id()).await {
        Ok(Ok((read_log_id, _applied))) => read_log_id.map_or(0, |l| l.index),
        Ok(Err(e)) => return Err(cluster.raft_err(e)),
        Err(_) => return Err(AgentError::Raft(format!("no quorum answered within {lease:?}"))),
    };
    let after = cluster.raft.metrics().borrow().current_term;
    if after != before.current_term {
        return Err(AgentError::Raft(format!(
            "the term changed during the quorum round ({} → {after})",
            before.current_term
        )));
    }
    Ok((before.current_term, read))
}
