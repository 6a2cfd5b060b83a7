//! The leader's side of the agent: the pure core that keeps the lease ledger
//! and decides who is dead (`core`), and the two shells that drive it — the
//! granter, which answers lease renewals after quorum rounds (`granter`),
//! and the failover engine, which writes the core's decisions to the log
//! (`engine`), switchovers included (the rules: `switchover`).

pub mod core;
pub mod engine;
pub mod granter;
pub mod switchover;

pub use self::core::{Decision, LeaderCore, LeaderTiming};
pub use engine::FailoverEngine;
pub use granter::Granter;
