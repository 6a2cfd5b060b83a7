//! The leader's loops (their rules: `slotd_core::leader`): the granter,
//! which answers lease renewals after quorum rounds (`granter`), and the
//! failover engine, which writes the core's decisions to the log
//! (`engine`), switchovers included.

pub mod engine;
pub mod granter;

pub use engine::FailoverEngine;
pub use granter::Granter;
