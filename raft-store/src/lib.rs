//! `slotd-raft-store`: what the Raft log decides and how it is kept.
//!
//! Layout:
//! - `types`: openraft's type configuration and the `typ` aliases.
//! - `state`: `ClusterState` — nodes, stores, masters, epochs, phases, history.
//! - `command`: `Command`s that change it, `Response`s and typed `Rejection`s.
//! - `apply`: validation and application; deterministic (no clock, no I/O).
//! - `storage`: the durable log store and state machine on redb.
//! - `codec`: the versioned binary encoding used on disk and between agents.
//! - `timings`: the cluster-wide timings the lease rule depends on.
//! - `topology`: the `topology.toml` parser.
//! - `plan`: the initial placement (`slotctl plan`); the leader's decisions
//!   over the state are `slotd-core`'s.
//! - `testkit`: builders of topologies and states for tests and benches.
//!
//! This crate does no I/O but on its own database file.

pub mod apply;
pub mod codec;
pub mod command;
pub mod ip;
pub mod plan;
pub mod state;
pub mod storage;
pub mod testkit;
pub mod timings;
pub mod topology;
pub mod types;

pub use command::{Command, Move, NodeSpec, Rejection, Request, Response, StoreSpec, Topology};
pub use ip::ServiceIp;
pub use state::{
    ClusterState, DrainJob, Node, NodeId, NodeMode, Phase, Reason, RebalanceJob, Replay, SlotRef, Store, Transition,
};
pub use timings::{ClusterTimings, TimingsInForce};
pub use types::{typ, TypeConfig};
