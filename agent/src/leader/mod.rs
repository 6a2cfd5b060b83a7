//! The leader's loops and the calls only a leader carries out (their rules:
//! `slotd_core::leader`):
//! - `granter`: answers lease renewals after quorum rounds;
//! - `engine`: the failover engine, writing the core's decisions (failovers
//!   of dead nodes, the conductor's switchover steps) to the log;
//! - `calls`: a call that must run on the leader, from wherever it is
//!   asked, and its dispatch there; `slotd fence`'s ticket and notice;
//! - `operate`: failover, drain, undrain, rebalance, history;
//! - `membership`: adding and removing nodes;
//! - `bootstrap`: `slotctl init`, on the topology's first voter.

pub mod bootstrap;
pub mod calls;
pub mod engine;
pub mod granter;
pub mod membership;
pub mod operate;

pub use engine::FailoverEngine;
pub use granter::Granter;
