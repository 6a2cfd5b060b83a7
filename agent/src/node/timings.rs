//! The cluster's timings as this node applied them (`slotd_raft_store::
//! timings`): this node's own `[timing]` until the log has some, the log's
//! from then on, published to the loops that act on them (the lease keeper:
//! heartbeat, lease, margin). The Raft timings (election, Raft heartbeat)
//! are openraft's, fixed when it starts: the agent starts with the log's
//! (as this node last applied them) and says when its own file differs.

use slotd_raft_store::storage::StateReader;
use slotd_raft_store::TimingsInForce;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Timing;

/// The timings a node acts on, and the change (`TimingsInForce::seq`, 0 for
/// its own file's) they come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InForce {
    pub timing: Timing,
    pub seq: u64,
}

impl InForce {
    /// `file`'s timings with the cluster's `t` in their place.
    pub fn of(file: &Timing, t: Option<&TimingsInForce>) -> InForce {
        match t {
            Some(t) => InForce {
                timing: file.with_cluster(&t.now),
                seq: t.seq,
            },
            None => InForce {
                timing: file.clone(),
                seq: 0,
            },
        }
    }
}

/// What this node starts with: the cluster's timings as it last applied
/// them, saying which of its own file's values they override (the file's
/// count only for the cluster's first write).
pub fn at_start(file: &Timing, reader: &StateReader) -> InForce {
    let stored = reader.with(|d| d.state.timings);
    let now = InForce::of(file, stored.as_ref());
    if let Some(t) = &stored {
        let differs: Vec<String> = file
            .cluster()
            .pairs()
            .iter()
            .zip(t.now.pairs())
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, b)| format!("timing.{} = {} (the cluster's: {})", a.0, a.1, b.1))
            .collect();
        if !differs.is_empty() {
            warn!(
                differs = %differs.join(", "),
                "this file's timings are not the cluster's; the cluster's count (`slotctl config set` changes them)"
            );
        }
    }
    now
}

/// Follows the applied state: publishes each new change of the cluster's
/// timings until `stop`.
pub fn follow(
    file: Timing,
    reader: StateReader,
    start: InForce,
    mut stop: watch::Receiver<bool>,
) -> watch::Receiver<InForce> {
    let (tx, rx) = watch::channel(start);
    let mut applied = reader.subscribe();
    tokio::spawn(async move {
        loop {
            let now = reader.with(|d| d.state.timings);
            let next = InForce::of(&file, now.as_ref());
            if next.seq != tx.borrow().seq {
                info!(seq = next.seq, timings = ?next.timing.cluster(), "the cluster's timings changed");
                let raft = |t: &Timing| {
                    (
                        t.election_timeout_min_ms,
                        t.election_timeout_max_ms,
                        t.raft_heartbeat_ms,
                    )
                };
                if raft(&next.timing) != raft(&tx.borrow().timing) {
                    warn!("the cluster's Raft timings changed: this node uses them from its next start");
                }
                tx.send_replace(next);
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                changed = applied.changed() => if changed.is_err() { return },
            }
        }
    });
    rx
}
