//! What agents say to each other over `slotd.v1.Peer`, in one place. Each
//! travels as a versioned binary payload (`slotd_raft_store::codec`); the
//! behaviour modules use these types and never define wire messages of
//! their own.

use serde::{Deserialize, Serialize};
use slotd_raft_store::{NodeId, NodeSpec, Topology};

use slotd_proto::v1 as pb;

pub use slotd_core::report::{replay_digest, HealthReport, L2Seen, Replayed};

use crate::cluster::identity::ClusterId;
use crate::tls::{Caller, Who};

/// A lease renewal request (`Peer.Heartbeat`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Renewal {
    pub node: NodeId,
    pub report: HealthReport,
}

/// A voter's question before it may campaign (`Peer.Reach`; see
/// `slotd_core::node::elector`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReachRequest {
    pub node: NodeId,
}

/// The answer: this node's term, and whether it heard from a leader lately
/// (or leads).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reached {
    pub term: u64,
    pub leader_heard: bool,
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
    /// The lease this grant gives, in ms: the leader's. A node acts on no
    /// longer one, whatever its own `lease_ms` (the leader moves its stores
    /// `lease + margin` after its last grant, by its own lease).
    pub lease_ms: u64,
}

/// `slotd fence` tells the leader this node now holds nothing
/// (`Peer.Fenced`, DESIGN rule 6), in two steps: it asks for a ticket, then
/// presents it with the notice, which the leader accepts only while the
/// ticket is fresh on its own clock (see `slotd_core::leader::LeaderCore`).
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

/// What `Peer.Leader` carries: the call, and who asked for it, for the
/// leader's log (`by`) and its check (`asker`: `access::passed_on`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaderRequest {
    pub by: String,
    pub asker: Asker,
    pub call: LeaderCall,
}

/// Who asked for a leader call, as the member passing it on vouches (it
/// checked the certificate; the leader checks the member's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Asker {
    /// An operator's certificate, by its name.
    Operator(String),
    /// A member node's certificate (a node's own `slotctl`): reads only.
    Node(String),
    /// A plain-text port: nobody to check.
    Unchecked,
    /// The passing node's own agent, for its own calls (a stop's drain and
    /// its end, the bootstrap's writes).
    Agent,
}

impl From<&Caller> for Asker {
    fn from(caller: &Caller) -> Asker {
        match caller {
            Caller::Cert(Who::Operator(o)) => Asker::Operator(o.clone()),
            Caller::Cert(Who::Node(n)) => Asker::Node(n.clone()),
            Caller::Insecure => Asker::Unchecked,
        }
    }
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
    /// `slotctl config show` (nothing to set) and `slotctl config set`.
    Config { set: Vec<(String, u64)> },
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
    Status(pb::StatusReply),
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
    Config(pb::ConfigReply),
}

impl From<pb::StoreSpec> for NamedStore {
    fn from(s: pb::StoreSpec) -> Self {
        NamedStore {
            name: s.name,
            master_ip: s.master_ip,
            replica_ip: s.replica_ip,
            slots: s.slots,
        }
    }
}

impl From<NamedStore> for pb::StoreSpec {
    fn from(s: NamedStore) -> Self {
        pb::StoreSpec {
            name: s.name,
            master_ip: s.master_ip,
            replica_ip: s.replica_ip,
            slots: s.slots,
        }
    }
}
