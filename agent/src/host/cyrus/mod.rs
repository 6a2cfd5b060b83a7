//! Running Cyrus IMAP slots (DESIGN "The Cyrus driver"; the recipe and its
//! pitfalls: `../shared/lab/README.md`).
//!
//! - `render`: a slot's `imapd.conf` and `cyrus.conf` for a role, from the
//!   templates in `agent/cyrus/` (built in) with the store's IPs filled in;
//! - `procs`: process groups, seen through `/proc` (zombies do not count:
//!   they serve nothing);
//! - `synclog`: the sync log's backlog, and setting leftovers aside;
//! - `instance`: the driver — start, stop, flush, replay of a slot's
//!   instance, run by the agent itself (`exec`) or by systemd;
//! - `systemd`: `cyrus-slot@SLOT.service` through systemctl;
//! - `health`: greetings of an instance's services.

pub mod health;
pub mod instance;
pub mod procs;
pub mod render;
pub mod synclog;
pub mod systemd;

pub use instance::CyrusDriver;
