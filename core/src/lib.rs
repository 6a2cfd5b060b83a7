//! `slotd-core`: every decision slotd makes, and nothing else — no I/O, no
//! clock, no tokio, tonic or netops (Cargo enforces it: this crate depends
//! only on the cluster state's crate and serde). The agent's async shells
//! and the simulation call the very same functions; time comes in as
//! [`time::Mono`] values, what nodes report as [`report::HealthReport`]s.
//!
//! Map, by who decides (the folders mirror the agent's rooms of the same
//! name, where the shells that carry the decisions out live):
//! - `leader/`: the leader's — the lease ledger and failure detector
//!   (`LeaderCore`), failover targets and rebalance moves (`decide`), the
//!   switchover phase machine with drains, rebalances and the checks of
//!   operators' commands (`switchover`), the engine's round
//!   (`conductor`), and when a leader nobody answers in time steps down
//!   (`standing`);
//! - `node/`: this machine's — the lease book (`lease`), the reconciler's
//!   plan (`reconcile`), the watchdog rule (`watchdog`), `slotd fence`'s
//!   timings (`fence`), what a stop waits for (`stop`);
//! - `l2`: the layer-2 check, both sides (which node probes, the leader's
//!   verdict);
//! - `report`: what a node tells the leader with each lease renewal;
//! - `timing`: every timing the rules depend on, the `[timing]` and
//!   `[switchover]` tables included;
//! - `time`: [`time::Mono`], a point on one node's clock.

pub mod l2;
pub mod leader;
pub mod node;
pub mod report;
pub mod time;
pub mod timing;
