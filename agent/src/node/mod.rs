//! This machine's loops (their rules: `slotd_core::node`):
//! - `elector`: turns Raft elections on only while a majority of the
//!   voters hears no leader (a pre-vote);
//! - `progress`: the marks the loops leave for the watchdog;
//! - `lease_keeper`: renews this node's lease with the leader every
//!   heartbeat and publishes the lease the book makes of the grants;
//! - `fencer_link`: tells the fencer beside the agent that lease, and
//!   bounds the lease the agent acts on by what the fencer acknowledged;
//! - `timings`: the cluster's timings as this node applied them;
//! - `reconciler`: makes the machine match the log — addresses, then Cyrus
//!   — and fences when the lease runs out; beside it, on tasks of their
//!   own, `announcer` (gratuitous ARP / NA after a bind, and every refresh),
//!   `health` (the instances' greetings) and `l2` (who answers for a master
//!   IP after a move).

pub mod announcer;
pub mod elector;
pub mod fencer_link;
pub mod health;
pub mod l2;
pub mod lease_keeper;
pub mod progress;
pub mod reconciler;
pub mod timings;
