//! Running Cyrus IMAP slots (DESIGN "The Cyrus driver"; the recipe and its
//! pitfalls: `../shared/lab/README.md`).
//!
//! - `render`: a slot's `imapd.conf` and `cyrus.conf` for a role, from the
//!   templates in `agent/cyrus/` (built in) with the store's IPs filled in;
//! - `procs`: process groups, seen through `/proc` (zombies do not count:
//!   they serve nothing);
//! - `synclog`: the sync log's backlog, and setting leftovers aside;
//! - `exec`: the `exec` driver — the agent runs `cyrmaster` per slot in a
//!   process group of its own.

pub mod exec;
pub mod procs;
pub mod render;
pub mod synclog;

pub use exec::ExecDriver;
