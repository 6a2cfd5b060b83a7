//! What agents say to each other over `slotd.v1.Peer`, in one place. Each
//! travels as a versioned binary payload (`slotd_raft_store::codec`); the
//! behaviour modules use these types and never define wire messages of
//! their own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use slotd_raft_store::{NodeId, NodeSpec, Topology};

use slotd_proto::v1 as pb;

use crate::identity::ClusterId;
use crate::status::StatusView;

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

/// A lease renewal request (`Peer.Heartbeat`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Renewal {
    pub node: NodeId,
    pub report: HealthReport,
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

/// `slotd fence` tells the leader this node now holds nothing
/// (`Peer.Fenced`, DESIGN rule 6), in two steps: it asks for a ticket, then
/// presents it with the notice, which the leader accepts only while the
/// ticket is fresh on its own clock (see `leader::core`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FenceRequest {
    /// Answered with `FenceReply::Ticket`.
    Ticket { node: NodeId },
    /// Answered with `FenceReply::Accepted` (true: its stores move now).
    Notice { node: NodeId, ticket: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FenceReply {
    Ticket(u64),
    Accepted(bool),
}

/// `Peer.Join`: join cluster `cluster` as node `node` called `name` (the
/// receiver checks it is that node).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub cluster: ClusterId,
    pub node: NodeId,
    pub name: String,
}

/// What `Peer.Leader` carries: the call, and who asked for it (an operator
/// known by its certificate, or an agent for its own calls), for the
/// leader's log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaderRequest {
    pub by: String,
    pub call: LeaderCall,
}

/// A call that must run on the leader (`Peer.Leader`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LeaderCall {
    /// A linearizable status read.
    Status,
    /// Write the initial state (the bootstrap's first entry; refused once
    /// the cluster is initialised). Peers may ask the leader only for
    /// typed things like this one, never to append a command of their
    /// choosing.
    WriteInit(Topology),
    /// Add a node as a Raft learner, then to the cluster state.
    AddNode(NodeSpec),
    /// Take a node (by name, or by id for one only Raft knows) out of the
    /// state and the membership, promoting a learner first if it was a voter.
    RemoveNode(String),
    /// Add a store whose slots name nodes by name.
    AddStore(NamedStore),
    /// Remove a store; without an epoch, at whatever epoch the leader sees
    /// (a follower's view may be behind).
    RemoveStore { store: String, epoch: Option<u64> },
    /// After bootstrap: add as Raft learners the state's non-voters that
    /// are not members yet, at their addresses in the state (never nodes
    /// or addresses a caller names: that would be a raw membership change).
    AddTopologyLearners,
    /// Bootstrap; carried out by the topology's first voter (not by a
    /// leader: there is none yet). `forwarded` is set on the one hop there.
    Init { topology: Topology, forwarded: bool },
    /// `slotctl failover STORE [--to NODE] [--force]`.
    Failover {
        store: String,
        to: Option<String>,
        force: bool,
    },
    /// `slotctl drain NODE`, or a stopping agent's own drain (`on_stop`:
    /// stores with nowhere to go are reported, not refused).
    Drain {
        node: String,
        concurrency: Option<u32>,
        on_stop: bool,
    },
    /// `slotctl undrain NODE`; `after_stop`: the node's own agent, started
    /// again, ending a stop's drain (and only that: `EndStopDrain`).
    Undrain { node: String, after_stop: bool },
    /// `slotctl rebalance [--dry-run]`.
    Rebalance { dry_run: bool, concurrency: Option<u32> },
    /// `slotctl history [STORE]`.
    History { store: Option<String>, limit: u32 },
}

/// A store as an operator writes it: slots as `NODE:SLOT` with node names.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NamedStore {
    pub name: String,
    pub master_ip: String,
    pub replica_ip: String,
    pub slots: Vec<String>,
}

/// What a leader call answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LeaderReply {
    Status(StatusView),
    /// The log index of the last entry the call wrote.
    Written {
        index: u64,
    },
    Failover(pb::FailoverReply),
    Drain {
        reply: pb::DrainReply,
        /// Stores with nowhere to go, and why (a stop's drain only).
        stranded: Vec<(String, String)>,
    },
    Rebalance(pb::RebalanceReply),
    History(pb::HistoryReply),
}
