//! `slotd-netops`: the kernel side of moving a service IP.
//!
//! It binds, releases and lists addresses (rtnetlink, waiting for the
//! kernel's acknowledgement), announces a moved address (gratuitous ARP,
//! IPv6 unsolicited neighbour advertisement) and probes whether anyone else
//! answers for it (RFC 5227 ARP probe, IPv6 DAD solicitation). It knows
//! nothing of stores or Raft.
//!
//! # Layout
//!
//! - [`ops`]: the [`AddressOps`] trait and its small value types.
//! - [`addr`]: [`IpPrefix`], a validated address/length.
//! - [`error`]: [`NetError`], the crate's one error type.
//! - [`bounded`]: [`Bounded`], a deadline on every call of any [`AddressOps`].
//! - `kernel`: [`KernelOps`], the real implementation, built from
//!   `netlink` (addresses and links) and `packet` (AF_PACKET send/receive),
//!   which uses the pure frame builders/parsers in `arp` and `ndp`.
//! - [`memory`]: [`MemoryOps`]/[`MemoryNet`], the in-memory implementation
//!   for simulations.
//! - [`cli`]: the logic behind the `slotd-net` debug command (and later
//!   `slotctl net`).
//! - `testkit` (feature `testkit`): network-namespace fixtures for tests.

pub mod addr;
mod arp;
pub mod bounded;
pub mod cli;
pub mod error;
mod kernel;
pub mod memory;
mod ndp;
mod netlink;
pub mod ops;
mod packet;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use addr::IpPrefix;
pub use bounded::Bounded;
pub use error::NetError;
pub use kernel::KernelOps;
pub use memory::{Call, MemoryNet, MemoryOps, MemoryTiming, Op};
pub use ops::{AddressOps, AnnounceOptions, BoundAddress, MacAddr, Outcome, ADDRESS_PROTOCOL};
