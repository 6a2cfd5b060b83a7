//! The elector: turns openraft's elections on only while this voter may
//! campaign (the rule, and why: `slotd_core::node::elector`). While it
//! hears a leader it asks nobody; once it has heard none for `quiet`
//! (openraft's shortest election timeout, well inside openraft's own wait
//! before a campaign), it asks every other voter every [`ELECTOR_EVERY`],
//! each answer bounded by [`ELECTOR_CALL_TIMEOUT`].
//!
//! While this node leads, the elector watches its standing instead: once a
//! majority of the voters has not answered its appends for
//! [`give_up_after`], it gives up leading (the rule, and why:
//! `slotd_core::leader::standing`); the network then sends nothing more in
//! that term.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use slotd_core::leader::standing::give_up_after;
use slotd_core::node::elector::{may_campaign, Answer};
use slotd_core::timing::{Timing, ELECTOR_CALL_TIMEOUT, ELECTOR_EVERY};
use slotd_raft_store::NodeId;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::clock;

use crate::cluster::channel::Method;
use crate::cluster::wire::{ReachRequest, Reached};
use crate::cluster::Cluster;

/// Runs until `stop`.
pub async fn run(cluster: Arc<Cluster>, timing: Timing, mut stop: watch::Receiver<bool>) {
    let quiet = Duration::from_millis(cluster.raft.config().election_timeout_min);
    let bound = give_up_after(&timing);
    let mut tick = tokio::time::interval(ELECTOR_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // As openraft starts (`raft_config`: elections off).
    let mut allowed = false;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let m = cluster.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        // A leader does not campaign: it may give up.
        if m.state == ServerState::Leader {
            let term = m.current_term;
            let mut standing = cluster.network.standing();
            if !standing.gave_up_in(term) && standing.lost(term, cluster.id, &voters, clock::now(), bound) {
                standing.give_up(term);
                drop(standing);
                warn!(
                    term,
                    ?bound,
                    "no majority of the voters answered this leader in time: giving up leading (nothing more \
                     is sent in this term, so that a leader they can hear takes over)"
                );
            }
            continue;
        }
        // A learner never campaigns.
        if !voters.contains(&cluster.id) {
            continue;
        }
        let may = if cluster.leader_contact.within(quiet) {
            false
        } else {
            let ask = ReachRequest { node: cluster.id };
            let asks = voters.iter().filter(|v| **v != cluster.id).map(|v| {
                let addr = membership.get_node(v).map(|n| n.addr.clone());
                let (cluster, ask) = (&cluster, &ask);
                async move {
                    let addr = addr?;
                    let reply =
                        cluster
                            .network
                            .channels
                            .call::<_, Reached>(&addr, Method::Reach, ask, ELECTOR_CALL_TIMEOUT);
                    // Bounded twice: the channel's deadline, and this one
                    // around connecting as well.
                    match tokio::time::timeout(ELECTOR_CALL_TIMEOUT, reply).await {
                        Ok(Ok(r)) => Some(r.leader_heard),
                        _ => None,
                    }
                }
            });
            let answers: Vec<Answer> = futures::future::join_all(asks).await;
            may_campaign(voters.len(), false, answers)
        };
        if may != allowed {
            debug!(may, "elections {}", if may { "on" } else { "off" });
            cluster.raft.runtime_config().elect(may);
            allowed = may;
        }
    }
}
