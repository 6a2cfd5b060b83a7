//! Leases: how long this node may act as master without hearing from a Raft
//! majority (DESIGN "Safety", rules 1–3).
//!
//! Node side (`spawn_keeper`): every `heartbeat`, a `Renewal` (with this
//! node's health report) goes to the leader. When it is granted, the lease
//! runs until *send time* + `lease`, on this node's monotonic clock.
//!
//! Leader side (`Granter`): renewals are parked and answered together after
//! a quorum round (openraft's `get_read_log_id`) that started after every
//! one of them was received, so a granted lease ends before any leader
//! elected later could act. The leader remembers when it last granted each
//! node a lease, in memory only: the failure detector reads it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use slotd_proto::v1::RaftPayload;
use slotd_raft_store::{codec, NodeId};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::cluster::{AgentError, Cluster};

/// What a node reports with each renewal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Store addresses bound on the node.
    pub addresses: Vec<String>,
    /// Instance state by slot (`stopped`, `master`, `replica`).
    pub instances: BTreeMap<String, String>,
    /// Replication backlog in bytes by store, for stores it masters.
    pub backlog: BTreeMap<String, u64>,
    /// Whether the node is fenced (holds no master role for lack of a lease).
    pub fenced: bool,
    /// The MAC of the node's service interface.
    pub mac: Option<String>,
    /// What this node, as replica, saw answering for each store's master IP
    /// after the store's last move.
    pub l2: BTreeMap<String, crate::l2::L2Seen>,
}

/// A lease renewal request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Renewal {
    pub node: NodeId,
    pub report: HealthReport,
}

/// Which grant a lease came from: a fenced node reports its last one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub leader: NodeId,
    pub term: u64,
    pub seq: u64,
}

/// `slotd fence` tells the leader this node now holds nothing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FencedNotice {
    pub node: NodeId,
    /// The last grant the agent recorded before it stopped, if any.
    pub generation: Option<Generation>,
}

/// File in the data directory holding the generation of the last grant the
/// agent used (written before the lease counts).
pub const GENERATION_FILE: &str = "lease-generation";

/// Reads the generation `slotd fence` reports.
pub fn read_generation(dir: &std::path::Path) -> Option<Generation> {
    let bytes = std::fs::read(dir.join(GENERATION_FILE)).ok()?;
    codec::decode(&bytes).ok()
}

fn write_generation(dir: &std::path::Path, g: Generation) -> std::io::Result<()> {
    let bytes = codec::encode(&g).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{GENERATION_FILE}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, dir.join(GENERATION_FILE))
}

/// A granted renewal.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Granted {
    pub leader: NodeId,
    pub term: u64,
    /// This grant's number at the leader.
    pub seq: u64,
    /// The leader's read index for this grant (its committed log at the
    /// quorum round). The lease counts only once this node has applied that
    /// far: a node must not act as master on a log that is behind what the
    /// leader has already decided (say, a failover away from it).
    pub read_index: u64,
}

/// This node's lease as the reconciler sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseState {
    /// The lease is valid strictly before this instant.
    pub valid_until: Option<Instant>,
}

impl LeaseState {
    pub fn valid_at(&self, now: Instant) -> bool {
        self.valid_until.is_some_and(|t| now < t)
    }

    pub fn remaining(&self, now: Instant) -> Duration {
        self.valid_until
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }
}

/// What the leader last heard from each node: when it granted it a lease,
/// and its report. In memory only, never in the log.
///
/// It is also where granting and failing over meet: both look at a node
/// under one lock, so a node is never granted a lease (with a read index
/// from before its failover) while the failover of its stores is being
/// written. See `condemn` and `Granter`.
#[derive(Clone, Default)]
pub struct Seen {
    inner: Arc<Mutex<SeenInner>>,
}

#[derive(Default)]
struct SeenInner {
    granted: BTreeMap<NodeId, (Instant, HealthReport)>,
    /// Nodes whose failover is being written: no grants until it is settled.
    condemned: BTreeSet<NodeId>,
    /// The log index of the last failover away from each node: its grants
    /// carry at least this read index, so it learns it lost its stores
    /// before its lease counts.
    failed_over_at: BTreeMap<NodeId, u64>,
    /// Numbers grants, so that a fenced node can say which was its last.
    next_seq: u64,
    /// The sequence number of the last grant to each node.
    last_seq: BTreeMap<NodeId, u64>,
    /// Nodes whose `slotd fence` reported them empty after this leader's
    /// last grant to them: dead now, no need to wait out their lease.
    fenced: BTreeSet<NodeId>,
}

impl Seen {
    fn lock(&self) -> std::sync::MutexGuard<'_, SeenInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When `node` was last granted a lease by this leader.
    pub fn granted_at(&self, node: NodeId) -> Option<Instant> {
        self.lock().granted.get(&node).map(|(t, _)| *t)
    }

    /// The latest report of every node.
    pub fn reports(&self) -> BTreeMap<NodeId, HealthReport> {
        self.lock().granted.iter().map(|(n, (_, r))| (*n, r.clone())).collect()
    }

    /// Of `candidates`, the nodes not granted a lease within `dead_after`;
    /// atomically marks them condemned, so that no grant slips in between
    /// this decision and the failover entry. Settle with `failed_over` or
    /// `pardon`.
    pub fn condemn(
        &self,
        candidates: impl Iterator<Item = NodeId>,
        dead_after: std::time::Duration,
    ) -> BTreeSet<NodeId> {
        let mut inner = self.lock();
        let dead: BTreeSet<NodeId> = candidates
            .filter(|n| inner.fenced.contains(n) || inner.granted.get(n).is_none_or(|(t, _)| t.elapsed() > dead_after))
            .collect();
        inner.condemned.extend(dead.iter().copied());
        dead
    }

    /// `slotd fence` on `node` released everything after the grant
    /// `generation` (or before any grant, if `None`). Accepted only if this
    /// leader has granted the node nothing newer: then no process on it can
    /// hold a lease, and its stores may move at once (DESIGN rule 6). The
    /// node is condemned from now on, so no renewal slips in before the
    /// failover.
    pub fn accept_fenced(&self, node: NodeId, generation: Option<Generation>, me: NodeId, term: u64) -> bool {
        let mut inner = self.lock();
        let ok = match (inner.last_seq.get(&node).copied(), generation) {
            // Never granted by this leader: only older leaders' leases,
            // which the engine's own wait after its election outlasts.
            (None, _) => true,
            (Some(seq), Some(g)) => g.leader == me && g.term == term && g.seq == seq,
            (Some(_), None) => false,
        };
        if ok {
            inner.fenced.insert(node);
            inner.condemned.insert(node);
        }
        ok
    }

    /// The failover of `nodes` is in the log at `index`.
    pub fn failed_over(&self, nodes: &BTreeSet<NodeId>, index: u64) {
        let mut inner = self.lock();
        for n in nodes {
            inner.condemned.remove(n);
            inner.fenced.remove(n);
            let at = inner.failed_over_at.entry(*n).or_default();
            *at = (*at).max(index);
        }
    }

    /// No failover was written for `nodes` after all.
    pub fn pardon(&self, nodes: &BTreeSet<NodeId>) {
        let mut inner = self.lock();
        for n in nodes {
            inner.condemned.remove(n);
            inner.fenced.remove(n);
        }
    }

    /// Records a grant for `node` after a quorum round with `read_index`;
    /// `None` if the node is condemned, else the read index to send it.
    fn grant(&self, node: NodeId, at: Instant, report: HealthReport, read_index: u64) -> Option<(u64, u64)> {
        let mut inner = self.lock();
        if inner.condemned.contains(&node) {
            return None;
        }
        inner.granted.insert(node, (at, report));
        inner.next_seq += 1;
        let seq = inner.next_seq;
        inner.last_seq.insert(node, seq);
        Some((
            read_index.max(inner.failed_over_at.get(&node).copied().unwrap_or(0)),
            seq,
        ))
    }
}

type Pending = (Renewal, oneshot::Sender<Result<Granted, AgentError>>);

/// The leader side: parks renewals and answers them after a quorum round.
#[derive(Clone)]
pub struct Granter {
    tx: mpsc::Sender<Pending>,
}

impl Granter {
    /// Starts the granting loop; it ends when every `Granter` is dropped.
    pub fn spawn(cluster: Arc<Cluster>, lease: Duration) -> Granter {
        let seen = cluster.seen.clone();
        let (tx, mut rx) = mpsc::channel::<Pending>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                // Started after every request in the batch was received.
                let round = tokio::time::timeout(lease, cluster.raft.get_read_log_id()).await;
                let now = Instant::now();
                let term = cluster.raft.metrics().borrow().current_term;
                let round = match round {
                    Ok(Ok((read_log_id, _applied))) => Ok(read_log_id.map_or(0, |l| l.index)),
                    Ok(Err(e)) => Err(cluster.raft_err(e)),
                    Err(_) => Err(AgentError::Raft(format!("no quorum answered within {lease:?}"))),
                };
                for (renewal, reply) in batch {
                    let outcome = match &round {
                        Ok(read_index) => match seen.grant(renewal.node, now, renewal.report, *read_index) {
                            Some((read_index, seq)) => Ok(Granted {
                                leader: cluster.id,
                                term,
                                seq,
                                read_index,
                            }),
                            None => Err(AgentError::Precondition(format!(
                                "node {} is being failed over; no lease until that is settled",
                                renewal.node
                            ))),
                        },
                        Err(e) => Err(e.clone()),
                    };
                    let _ = reply.send(outcome);
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

/// Sends one renewal to whoever leads now (this node included).
async fn renew(cluster: &Cluster, granter: &Granter, renewal: Renewal) -> Result<Granted, AgentError> {
    let leader = cluster
        .raft
        .metrics()
        .borrow()
        .current_leader
        .ok_or(AgentError::NoLeader)?;
    if leader == cluster.id {
        return granter.grant(renewal).await;
    }
    let addr = cluster.leader_addr(leader).ok_or(AgentError::NoLeader)?;
    let mut client = cluster
        .network
        .channels
        .peer(&addr)
        .map_err(|e| AgentError::Raft(format!("{addr}: {e}")))?;
    let payload = codec::encode(&renewal).map_err(|e| AgentError::Raft(e.to_string()))?;
    let reply = client
        .heartbeat(RaftPayload { payload })
        .await
        .map_err(|s| AgentError::Raft(format!("{addr}: {}", s.message())))?;
    codec::decode::<Result<Granted, AgentError>>(&reply.into_inner().payload)
        .map_err(|e| AgentError::Raft(format!("{addr}: {e}")))?
}

/// Renews this node's lease every `heartbeat` until `stop` is set; publishes
/// it on the returned receiver. Each renewal runs on its own (bounded by the
/// lease), so a slow leader never delays the next one.
pub fn spawn_keeper(
    cluster: Arc<Cluster>,
    granter: Granter,
    heartbeat: Duration,
    lease: Duration,
    report: Arc<dyn Fn() -> HealthReport + Send + Sync>,
    data_dir: std::path::PathBuf,
    mut stop: watch::Receiver<bool>,
) -> (watch::Receiver<LeaseState>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(LeaseState::default());
    let tx = Arc::new(tx);
    let handle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_valid = false;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let valid = tx.borrow().valid_at(now);
            if was_valid && !valid {
                warn!("lease expired: fencing (no master role until a renewal is granted)");
            }
            was_valid = valid;
            let sent = Instant::now();
            let renewal = Renewal {
                node: cluster.id,
                report: report(),
            };
            let (cluster, granter, tx, data_dir) = (cluster.clone(), granter.clone(), tx.clone(), data_dir.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(lease, renew(&cluster, &granter, renewal)).await {
                    Ok(Ok(granted)) => {
                        let until = sent + lease;
                        // Catch up with the leader's decisions first (bounded
                        // by the lease itself: a grant that arrives too late
                        // to matter is simply not used).
                        let mut applied = cluster.reader.subscribe();
                        let caught_up = tokio::time::timeout_at(
                            until.into(),
                            applied.wait_for(|a| {
                                a.is_some_and(|l| l.index >= granted.read_index) || granted.read_index == 0
                            }),
                        )
                        .await;
                        if !matches!(caught_up, Ok(Ok(_))) {
                            debug!(
                                read_index = granted.read_index,
                                "lease granted but the log did not catch up in time"
                            );
                            return;
                        }
                        // Recorded before the lease counts, so that `slotd
                        // fence` can tell the leader which grant was the last.
                        let g = Generation {
                            leader: granted.leader,
                            term: granted.term,
                            seq: granted.seq,
                        };
                        if let Err(e) = write_generation(&data_dir, g) {
                            warn!(error = %e, "cannot record the lease generation; not using this grant");
                            return;
                        }
                        tx.send_if_modified(|s| {
                            if s.valid_until.is_none_or(|t| t < until) {
                                if !s.valid_at(Instant::now()) {
                                    info!("lease granted");
                                }
                                s.valid_until = Some(until);
                                true
                            } else {
                                false
                            }
                        });
                    }
                    Ok(Err(e)) => debug!(error = %e, "lease renewal refused"),
                    Err(_) => debug!("lease renewal timed out"),
                }
            });
        }
    });
    (rx, handle)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn read_index(g: Option<(u64, u64)>) -> Option<u64> {
        g.map(|(r, _)| r)
    }

    #[test]
    fn grants_and_failovers_do_not_cross() {
        let seen = Seen::default();
        let now = Instant::now();
        let long = Duration::from_secs(3600);
        // Granted just now: not dead.
        assert_eq!(read_index(seen.grant(1, now, HealthReport::default(), 5)), Some(5));
        assert!(seen.condemn([1].into_iter(), long).is_empty());
        // Never granted: dead, and condemned until settled.
        let dead = seen.condemn([2, 3].into_iter(), long);
        assert_eq!(dead, BTreeSet::from([2, 3]));
        assert_eq!(
            seen.grant(2, now, HealthReport::default(), 7),
            None,
            "no lease while being failed over"
        );
        // Node 2's stores moved at index 42: its next lease carries 42.
        seen.failed_over(&BTreeSet::from([2]), 42);
        assert_eq!(read_index(seen.grant(2, now, HealthReport::default(), 7)), Some(42));
        assert_eq!(read_index(seen.grant(2, now, HealthReport::default(), 50)), Some(50));
        // Node 3 had nothing to move: pardoned, granted as usual.
        seen.pardon(&BTreeSet::from([3]));
        assert_eq!(read_index(seen.grant(3, now, HealthReport::default(), 9)), Some(9));
        assert!(seen.granted_at(3).is_some());
    }

    #[test]
    fn a_fence_notice_counts_only_for_the_last_grant() {
        let seen = Seen::default();
        let now = Instant::now();
        let long = Duration::from_secs(3600);
        let (_, seq) = seen.grant(4, now, HealthReport::default(), 1).unwrap();
        let g = |seq| {
            Some(Generation {
                leader: 1,
                term: 7,
                seq,
            })
        };
        // A notice about an older grant (the node was granted again since):
        // refused, and the node is not dead.
        let (_, newer) = seen.grant(4, now, HealthReport::default(), 1).unwrap();
        assert!(!seen.accept_fenced(4, g(seq), 1, 7));
        assert!(!seen.accept_fenced(4, None, 1, 7));
        assert!(!seen.accept_fenced(4, g(newer), 2, 7), "another leader's grant");
        assert!(!seen.accept_fenced(4, g(newer), 1, 8), "another term");
        assert!(seen.condemn([4].into_iter(), long).is_empty());
        // About the last grant: dead at once, and no renewal gets through.
        assert!(seen.accept_fenced(4, g(newer), 1, 7));
        assert_eq!(seen.condemn([4].into_iter(), long), BTreeSet::from([4]));
        assert_eq!(seen.grant(4, now, HealthReport::default(), 1), None);
        seen.failed_over(&BTreeSet::from([4]), 12);
        assert!(seen.condemn([4].into_iter(), long).is_empty(), "settled");
        // A node this leader never granted: accepted (older leases have run out).
        assert!(seen.accept_fenced(5, None, 1, 7));
    }
}
