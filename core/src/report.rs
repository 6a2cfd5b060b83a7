//! What a node tells the leader with each lease renewal: its health
//! report. The leader's decisions (failover targets, switchover acks, dirty
//! marks, replays, layer-2 verdicts) read it; it travels in `Peer.Heartbeat`
//! as part of the agent's `Renewal`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use slotd_raft_store::NodeId;

/// What a node reports with each lease renewal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Store addresses bound on the node.
    pub addresses: Vec<String>,
    /// Instance state by slot (`stopped`, `master`, `replica`).
    pub instances: BTreeMap<String, String>,
    /// Replication backlog in bytes by store, for stores it masters.
    pub backlog: BTreeMap<String, u64>,
    /// Age in ms of the oldest change not yet sent, by store (stores with
    /// nothing waiting are absent).
    pub backlog_age_ms: BTreeMap<String, u64>,
    /// Whether the node is fenced (holds no master role for lack of a lease).
    pub fenced: bool,
    /// The MAC of the node's service interface.
    pub mac: Option<String>,
    /// What this node, as replica, saw answering for each store's master IP
    /// after the store's last move.
    pub l2: BTreeMap<String, L2Seen>,
    /// Switchover phases this node finished its part of: store → the
    /// attempt's epoch (`reconcile::phase_done`). The leader's acks.
    pub done: BTreeMap<String, u64>,
    /// Stores this node, marked dirty for them, runs as replica again at
    /// this epoch (its leftovers are set aside): store → epoch
    /// (`reconcile::leftovers_settled`). The leader clears the mark.
    pub clean: BTreeMap<String, u64>,
    /// Slots whose last start failed, with why (cleared by a start that
    /// works): the leader promotes them only when nothing else is left.
    pub failing: BTreeMap<String, String>,
    /// Leftover sync logs this node (dirty, now a replica) set aside and
    /// offers for replay (`cyrus.replay_leftover`): store → the log.
    pub leftovers: BTreeMap<String, String>,
    /// Replays this node ran as master: store → how it went.
    pub replayed: BTreeMap<String, Replayed>,
    /// Failing health checks of this node's running instances: store →
    /// what fails (stores whose checks pass are absent).
    pub health: BTreeMap<String, Vec<String>>,
    /// The cluster timings change (`TimingsInForce::seq`) this node has
    /// applied and acts on: the leader grants it no longer a lease than
    /// that change allows, and settles a change once every live node has it.
    pub timings_seq: u64,
}

/// A fingerprint of a leftover log (FNV-1a: the same on every node).
pub fn replay_digest(log: &str) -> u64 {
    log.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What a master's replay of a leftover sync log came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    /// Whose leftover log it was.
    pub from: NodeId,
    /// Which log (`replay_digest`): an outcome answers that very replay,
    /// never a later one from the same node.
    pub digest: u64,
    pub ok: bool,
    pub note: String,
}

/// What a replica saw when it probed a store's master IP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct L2Seen {
    /// The store's epoch when probed: an observation of an older move
    /// says nothing about the current one.
    pub epoch: u64,
    /// The MAC that answered, if any.
    pub answered_by: Option<String>,
}
