//! The cluster state: what every node's state machine holds, written only by
//! applied log entries (see `apply.rs`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ip::ServiceIp;

/// A node's id; the same number openraft uses.
pub type NodeId = u64;

/// How many transitions `ClusterState::history` keeps. Enough to explain the
/// last incident on a large cluster (a dead node moves ~20 stores) without
/// letting snapshots grow for ever.
pub const HISTORY_LEN: usize = 1024;

/// Everything the Raft log has decided. Nothing but applied entries writes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// False until an `Init` entry is applied; every other command waits for it.
    pub initialised: bool,
    /// Storage machines, by id.
    pub nodes: BTreeMap<NodeId, Node>,
    /// Stores, by name.
    pub stores: BTreeMap<String, Store>,
    /// The last `HISTORY_LEN` changes of master, oldest first.
    pub history: VecDeque<Transition>,
    /// Sequence number of the next transition, so that history entries stay
    /// identifiable after older ones have been dropped.
    pub next_transition: u64,
    /// The last epoch of every removed store, by name: a store created again
    /// under the same name starts above it, so its fencing token never goes
    /// backwards.
    pub retired_epochs: BTreeMap<String, u64>,
    /// A `rebalance` under way; the leader moves masters until its plan is
    /// empty, then ends it. In the log, so that a new leader carries on.
    pub rebalance: Option<RebalanceJob>,
    /// Numbers rebalances, so that the end of one cannot end the next.
    pub next_rebalance: u64,
    /// The cluster-wide timings (`timings`); none until the first leader
    /// writes them. Last, so that a snapshot written before it existed
    /// still reads (`storage`).
    pub timings: Option<crate::timings::TimingsInForce>,
}

/// A rebalance, as ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceJob {
    /// Which rebalance (`RebalanceDone` names it).
    pub seq: u64,
    /// Switchovers at a time.
    pub concurrency: u32,
}

/// One storage machine running one agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    /// Operator-facing name, unique; topology files refer to nodes by it.
    pub name: String,
    /// `host:port` of the node's Peer (and Admin) gRPC service.
    pub addr: String,
    /// Whether the node should be a Raft voter (else a learner). The agent
    /// makes openraft's membership follow this.
    pub voter: bool,
    /// Operator mode: an `active` node can be given masters, the others not.
    pub mode: NodeMode,
    /// The Cyrus instances on this node, by slot name.
    pub slots: BTreeMap<String, SlotSettings>,
    /// How the node is being (or was) drained; `None` while active.
    pub drain: Option<DrainJob>,
}

/// A drain of a node's masters, as ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainJob {
    /// Switchovers away from the node at a time.
    pub concurrency: u32,
    /// Ordered by the node's own agent stopping (DESIGN rule 7): when it
    /// starts again it makes itself active, where an operator's drain
    /// stays until `undrain`.
    pub on_stop: bool,
}

/// Per-slot settings of the Cyrus instance. Unit name, config and directories
/// derive from the slot name; overrides will live here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotSettings {}

/// A node's operator mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NodeMode {
    /// Takes masters: by failover, switchover or rebalance.
    #[default]
    Active,
    /// Its masters are being moved away; takes no new ones.
    Draining,
    /// Holds no masters and takes none until undrained.
    Drained,
}

impl NodeMode {
    /// The lower-case word `slotctl status` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeMode::Active => "active",
            NodeMode::Draining => "draining",
            NodeMode::Drained => "drained",
        }
    }
}

impl fmt::Display for NodeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A slot of a store: which node, and which Cyrus instance on it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SlotRef {
    pub node: NodeId,
    pub slot: String,
}

/// A replicated mailbox store: one master slot, the others replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Store {
    pub name: String,
    /// Bound by the master; clients, proxies and LMTP connect here.
    pub master_ip: ServiceIp,
    /// Bound by the replica; the master's `sync_client` connects here.
    pub replica_ip: ServiceIp,
    /// The store's slots, each on a different node; the first is the
    /// preferred master (where `rebalance` moves it back to).
    pub slots: Vec<SlotRef>,
    /// The node whose slot is master for `epoch`.
    pub master: NodeId,
    /// The fencing token every action carries: +1 at every change of master
    /// and at every start or rollback of a switchover, so that an ack names
    /// exactly one attempt and a late ack of an abandoned one is refused.
    pub epoch: u64,
    /// Where a controlled switchover stands.
    pub phase: Phase,
    /// Nodes that were master when the store was failed away from them, and
    /// may hold changes the new master never received.
    pub dirty: BTreeSet<NodeId>,
    /// A dirty node's leftover sync log, for the master to replay
    /// (`sync_client -r -f`: it pulls what only that replica has).
    pub replay: Option<Replay>,
    /// Dirty nodes whose leftover log the master failed to replay: not
    /// offered again by themselves (an operator looks first); they stay
    /// dirty.
    pub replay_failed: BTreeSet<NodeId>,
}

/// A leftover sync log waiting to be replayed by the store's master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// The dirty node the log comes from.
    pub from: NodeId,
    /// The sync log's lines (mailbox names to look at; no mail).
    pub log: String,
}

impl Store {
    /// Nodes holding a slot of this store, in slot order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.slots.iter().map(|s| s.node)
    }

    /// True when `node` holds one of this store's slots.
    pub fn has_node(&self, node: NodeId) -> bool {
        self.slots.iter().any(|s| s.node == node)
    }

    /// Nodes holding a replica slot now.
    pub fn replicas(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes().filter(move |n| *n != self.master)
    }

    /// The preferred master: the first slot's node.
    pub fn preferred(&self) -> NodeId {
        // A store always has at least two slots (validated on entry).
        self.slots.first().map_or(self.master, |s| s.node)
    }

    /// The slot the given node holds, if any.
    pub fn slot_on(&self, node: NodeId) -> Option<&SlotRef> {
        self.slots.iter().find(|s| s.node == node)
    }
}

/// Where a store's controlled switchover stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// One master, serving.
    #[default]
    Stable,
    /// `from` (still `master`, at the epoch this phase started) stops taking
    /// clients, flushes its sync log to `to`, and stops; it acks with
    /// `AdvanceSwitchover`.
    Demoting {
        from: NodeId,
        to: NodeId,
        force: bool,
        reason: Reason,
        /// When the switchover began (the proposer's unix ms), for its
        /// duration in the history.
        since_ms: u64,
        /// It goes back where a rolled-back attempt came from: should it
        /// fail too, the store stays where it is (no ping-pong).
        returning: bool,
    },
    /// `to` is master (epoch already +1): it binds the master IP, announces,
    /// starts Cyrus as master; it acks with `CompleteSwitchover`. `from` is
    /// kept so a rollback knows where to go back to.
    Promoting {
        from: NodeId,
        to: NodeId,
        force: bool,
        reason: Reason,
        since_ms: u64,
        returning: bool,
    },
}

impl Phase {
    /// The switchover under way: (old master, new master).
    pub fn switchover(&self) -> Option<(NodeId, NodeId)> {
        match *self {
            Phase::Stable => None,
            Phase::Demoting { from, to, .. } | Phase::Promoting { from, to, .. } => Some((from, to)),
        }
    }

    /// Why the switchover under way was started.
    pub fn reason(&self) -> Option<Reason> {
        match *self {
            Phase::Stable => None,
            Phase::Demoting { reason, .. } | Phase::Promoting { reason, .. } => Some(reason),
        }
    }

    /// The lower-case word `slotctl status` prints.
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Stable => "stable",
            Phase::Demoting { .. } => "demoting",
            Phase::Promoting { .. } => "promoting",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a master changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// `slotctl failover` or `drain`.
    Operator,
    /// The old master's node was declared dead by the leader.
    Failure,
    /// `slotctl rebalance`.
    Rebalance,
    /// The master's agent was stopping (DESIGN rule 7: stopping is draining).
    Stop,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Operator => "operator",
            Reason::Failure => "failure",
            Reason::Rebalance => "rebalance",
            Reason::Stop => "stop",
        })
    }
}

/// One recorded change of a store's master (or a rolled-back attempt).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub seq: u64,
    pub store: String,
    pub from: NodeId,
    pub to: NodeId,
    /// The store's epoch after the transition.
    pub epoch: u64,
    pub reason: Reason,
    /// What happened: "failover", "switchover", "rollback: …".
    pub what: String,
    /// Unix time in ms as stamped by the proposer of the entry (apply never
    /// reads a clock).
    pub at_ms: u64,
    /// For a switchover or rollback: from its start to this entry, in ms.
    pub duration_ms: Option<u64>,
}

impl ClusterState {
    /// How many stores each node masters now; every node appears, with 0 if
    /// it masters none.
    pub fn master_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut counts: BTreeMap<NodeId, usize> = self.nodes.keys().map(|id| (*id, 0)).collect();
        for store in self.stores.values() {
            *counts.entry(store.master).or_default() += 1;
        }
        counts
    }

    /// The node with this name.
    pub fn node_by_name(&self, name: &str) -> Option<&Node> {
        self.nodes.values().find(|n| n.name == name)
    }

    /// Stores in which `node` holds a slot.
    pub fn stores_on(&self, node: NodeId) -> impl Iterator<Item = &Store> + '_ {
        self.stores.values().filter(move |s| s.has_node(node))
    }

    /// Stores in a switchover away from `node`.
    pub fn leaving(&self, node: NodeId) -> impl Iterator<Item = &Store> + '_ {
        self.stores
            .values()
            .filter(move |s| s.phase.switchover().is_some_and(|(from, _)| from == node))
    }

    /// Stores `node` masters now.
    pub fn masters_of(&self, node: NodeId) -> impl Iterator<Item = &Store> + '_ {
        self.stores.values().filter(move |s| s.master == node)
    }

    /// A node's name for messages, or its id when unknown.
    pub fn node_name(&self, id: NodeId) -> String {
        self.nodes
            .get(&id)
            .map_or_else(|| format!("node {id}"), |n| n.name.clone())
    }
}
