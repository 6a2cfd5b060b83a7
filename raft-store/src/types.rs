//! openraft's type configuration for slotd, and short aliases so the rest of
//! the code says `typ::LogId`, not `openraft::LogId<NodeId>`.

use std::io::Cursor;

use crate::command::{Request, Response};

openraft::declare_raft_types!(
    /// slotd's Raft: u64 node ids, `BasicNode { addr }` as the node record,
    /// `Request` entries answered by `Response`, snapshots as byte buffers.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Aliases of openraft's generic types for this type config.
pub mod typ {
    use super::TypeConfig;
    use crate::state::NodeId;

    pub type Raft = openraft::Raft<TypeConfig>;
    pub type LogId = openraft::LogId<NodeId>;
    pub type Vote = openraft::Vote<NodeId>;
    pub type Entry = openraft::Entry<TypeConfig>;
    pub type EntryPayload = openraft::EntryPayload<TypeConfig>;
    pub type Membership = openraft::Membership<NodeId, openraft::BasicNode>;
    pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
    pub type Snapshot = openraft::storage::Snapshot<TypeConfig>;
    pub type LogState = openraft::storage::LogState<TypeConfig>;
    pub type StorageError = openraft::StorageError<NodeId>;
    pub type StorageIOError = openraft::StorageIOError<NodeId>;
    pub type RaftMetrics = openraft::RaftMetrics<NodeId, openraft::BasicNode>;
}
