//! What can be written to the log (`Request`/`Command`) and what applying it
//! answers (`Response`/`Rejection`).

use serde::{Deserialize, Serialize};

use crate::ip::ServiceIp;
use crate::state::{NodeId, NodeMode, Reason, SlotRef};
use crate::timings::ClusterTimings;

/// One log entry's payload. `at_ms` is stamped by whoever proposes it, so
/// that history has times while apply stays free of clocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Unix time in ms at the proposer.
    pub at_ms: u64,
    pub command: Command,
}

/// Every change to `ClusterState`. Each is validated in apply; an invalid
/// one is answered with a `Rejection` and changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Bootstrap nodes and stores from a topology; only once.
    Init(Topology),
    AddNode(NodeSpec),
    /// Only a node that holds no slot of any store can go.
    RemoveNode {
        node: NodeId,
    },
    /// `Active` ends a drain (undrain); `Drained` needs a node that
    /// masters nothing and leaves no switchover under way.
    SetNodeMode {
        node: NodeId,
        mode: NodeMode,
    },
    /// Drain `node`: mode `Draining`, and the leader switches its masters
    /// over `concurrency` at a time, then sets it `Drained`.
    Drain {
        node: NodeId,
        concurrency: u32,
        on_stop: bool,
    },
    /// Start a rebalance, `concurrency` switchovers at a time.
    Rebalance {
        concurrency: u32,
    },
    /// Rebalance `seq` has nothing left to move (a later one is not ended).
    RebalanceDone {
        seq: u64,
    },
    /// The node's agent started again after a stop's drain: `active` again,
    /// but only if the drain is still that stop's (an operator's drain
    /// ordered meanwhile stays).
    EndStopDrain {
        node: NodeId,
    },
    /// Whether the node should be a Raft voter.
    SetVoter {
        node: NodeId,
        voter: bool,
    },
    /// A new store; its first slot becomes master at epoch 1.
    AddStore(StoreSpec),
    RemoveStore {
        store: String,
        epoch: u64,
    },
    /// Start a controlled switchover of `store` to `to` (phase `Demoting`).
    /// `force` tells the old master not to wait for its sync log to drain.
    BeginSwitchover {
        store: String,
        epoch: u64,
        to: NodeId,
        force: bool,
        reason: Reason,
    },
    /// The old master has stopped (and flushed): `to` becomes master, epoch + 1.
    AdvanceSwitchover {
        store: String,
        epoch: u64,
    },
    /// The new master serves: back to `Stable`.
    CompleteSwitchover {
        store: String,
        epoch: u64,
    },
    /// A phase timed out or failed, `why` recorded. From `Demoting` the old
    /// master serves again at once; from `Promoting` the store switches
    /// back (`Demoting` from the new master to the old one) — unless it was
    /// already going back: then it stays where it is, `Stable`.
    RollbackSwitchover {
        store: String,
        epoch: u64,
        why: String,
    },
    /// Move each store's master at once, without a flush (the old master is
    /// dead or being forced). All moves apply together or none does.
    Failover {
        reason: Reason,
        moves: Vec<Move>,
    },
    /// Dirty node `from` set its leftover sync log aside; the master is to
    /// replay it.
    Replay {
        store: String,
        from: NodeId,
        log: String,
    },
    /// The master replayed `from`'s leftover log (`ok`), or could not;
    /// `note` says how it went. A replayed log clears the dirty mark.
    ReplayDone {
        store: String,
        from: NodeId,
        ok: bool,
        note: String,
    },
    /// The node's leftover changes for this store were replayed or given up.
    ClearDirty {
        store: String,
        node: NodeId,
    },
    /// The cluster-wide timings become `timings`, replacing change
    /// `replaces` (0: there are none yet). One change at a time: refused
    /// while the last one is not settled.
    SetTimings {
        timings: ClusterTimings,
        replaces: u64,
    },
    /// Change `seq` is settled: every node applied it and no grant given
    /// under the timings before it can still run.
    SettleTimings {
        seq: u64,
    },
}

/// A node as given to `Init` or `AddNode`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub id: NodeId,
    pub name: String,
    pub addr: String,
    pub voter: bool,
    pub slots: Vec<String>,
}

/// A store as given to `Init` or `AddStore`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSpec {
    pub name: String,
    pub master_ip: ServiceIp,
    pub replica_ip: ServiceIp,
    /// First = preferred master, and master when the store is created.
    pub slots: Vec<SlotRef>,
}

/// A whole cluster layout, as read from `topology.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub nodes: Vec<NodeSpec>,
    pub stores: Vec<StoreSpec>,
}

/// One store's new master in a `Failover` entry. `epoch` is the epoch the
/// decision was made at: if the store moved since, the entry is refused.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Move {
    pub store: String,
    pub epoch: u64,
    pub to: NodeId,
}

/// What applying an entry answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The command changed the state (or was a no-op that is fine to repeat,
    /// like setting a mode a node already has).
    Applied,
    /// The command was invalid against the state at its log position; the
    /// state is unchanged.
    Rejected(Rejection),
}

impl Response {
    pub fn is_applied(&self) -> bool {
        matches!(self, Response::Applied)
    }

    /// `Ok` when applied, the rejection otherwise.
    pub fn into_result(self) -> Result<(), Rejection> {
        match self {
            Response::Applied => Ok(()),
            Response::Rejected(r) => Err(r),
        }
    }
}

/// Why a command was refused. Messages are one line, name the object, and are
/// shown to operators as they are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("the cluster is not initialised (run `slotctl init TOPOLOGY`)")]
    NotInitialised,
    #[error("the cluster is already initialised")]
    AlreadyInitialised,
    #[error("{what}: field {field}: {problem}")]
    InvalidField {
        what: String,
        field: String,
        problem: String,
    },
    #[error("unknown node {0}")]
    UnknownNode(String),
    #[error("unknown store {0:?}")]
    UnknownStore(String),
    #[error("node {what} already exists: {existing}")]
    DuplicateNode { what: String, existing: String },
    #[error("store {0:?} already exists")]
    DuplicateStore(String),
    #[error("store {store:?}: {ip} is already used by store {other:?}")]
    DuplicateIp { store: String, ip: String, other: String },
    #[error("store {store:?}: node {node} has no slot {slot:?}")]
    UnknownSlot { store: String, node: String, slot: String },
    #[error("store {store:?}: slot {slot:?} on node {node} already belongs to store {other:?}")]
    SlotInUse {
        store: String,
        node: String,
        slot: String,
        other: String,
    },
    #[error("store {store:?}: two slots on node {node} (a store's slots must be on different nodes)")]
    SlotsShareNode { store: String, node: String },
    #[error("store {store:?}: node {node} holds no slot of this store")]
    NotASlotOfStore { store: String, node: String },
    #[error("store {store:?}: node {node} is already its master")]
    AlreadyMaster { store: String, node: String },
    #[error("store {store:?}: node {node} is {mode} and cannot become master")]
    TargetUnavailable {
        store: String,
        node: String,
        mode: NodeMode,
    },
    #[error("store {store:?}: node {node} is marked dirty for this store (replay its leftover sync log and clear the mark first)")]
    TargetDirty { store: String, node: String },
    #[error("store {store:?}: epoch is {actual}, not {expected} (it changed meanwhile; look again)")]
    EpochMismatch { store: String, expected: u64, actual: u64 },
    #[error("store {store:?} is {phase}, not {wanted}")]
    WrongPhase {
        store: String,
        phase: String,
        wanted: String,
    },
    #[error("node {node} still holds slots of stores {stores}")]
    NodeInUse { node: String, stores: String },
    #[error("node {node} still masters stores {stores}; drain it first")]
    NodeStillMaster { node: String, stores: String },
    #[error("node {0} is the last voter")]
    LastVoter(String),
    #[error("store {store:?}: node {node} is not marked dirty")]
    NotDirty { store: String, node: String },
    #[error("store {store:?}: {problem}")]
    BadReplay { store: String, problem: String },
    #[error("a failover must move at least one store")]
    EmptyFailover,
    #[error("store {0:?} appears twice in one failover")]
    DuplicateMove(String),
    #[error("node {node} is {mode}, not draining")]
    NotDraining { node: String, mode: NodeMode },
    #[error("node {node} is not in a stop's drain")]
    NotStopDrain { node: String },
    #[error("rebalance {seq} is not the one under way")]
    OtherRebalance { seq: u64 },
    #[error("node {node} is in switchovers of stores {stores}")]
    NodeStillLeaving { node: String, stores: String },
    // The leader's own checks, before anything reaches the log (they need
    // what only the leader knows: liveness and reported backlogs).
    #[error("store {store:?}: node {node} is down (no lease within lease + margin)")]
    NodeDown { store: String, node: String },
    #[error("store {store:?}: its master {node} is down; automatic failover moves it (or use --force)")]
    MasterDown { store: String, node: String },
    #[error("store {store:?}: a switchover to {to} is already running (phase {phase})")]
    SwitchoverRunning { store: String, to: String, phase: String },
    #[error(
        "store {store:?}: replica {node} lags {lag} (bound {bound} bytes; --force skips this check and the flush)"
    )]
    ReplicaLagging {
        store: String,
        node: String,
        lag: String,
        bound: u64,
    },
    #[error("store {store:?}: the instance on {node} fails to start ({why})")]
    TargetFailing { store: String, node: String, why: String },
    #[error("store {store:?}: no replica can take the master ({why})")]
    NoTarget { store: String, why: String },
    #[error("node {node}: stores {stores} have no live active replica to move to")]
    Stranded { node: String, stores: String },
    #[error(
        "store {store:?}: {ip} was freed {by}; a cut-off old master may still hold it until its lease runs out, so it is free again in {free_in}"
    )]
    AddressCooling {
        store: String,
        ip: String,
        by: String,
        free_in: String,
    },
    #[error("the cluster's timings are change {actual}, not {expected} (they changed meanwhile; look again)")]
    TimingsChanged { expected: u64, actual: u64 },
    #[error(
        "timings change {seq} is not settled yet (every node must apply it, and the old lease run out); try again"
    )]
    TimingsSettling { seq: u64 },
    #[error("timings change {seq} is not the one being settled")]
    TimingsNotSettling { seq: u64 },
}
