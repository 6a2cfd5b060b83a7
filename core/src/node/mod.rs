//! This machine's decisions:
//! - `elector`: when this voter may campaign (a pre-vote openraft 0.9 lacks);
//! - `lease`: grants in, lease out (the lease keeper's book);
//! - `reconcile`: from the log, the lease and what is observed, the actions
//!   that make the machine match, and how a pass carries them out;
//! - `watchdog`: when the agent may ping systemd's watchdog;
//! - `fence`: how long `slotd fence` tries to tell the leader;
//! - `fencer`: when the fencer beside the agent gives up its addresses;
//! - `stop`: what a stopping agent waits for (stopping is draining).

pub mod elector;
pub mod fence;
pub mod fencer;
pub mod lease;
pub mod reconcile;
pub mod stop;
pub mod watchdog;
