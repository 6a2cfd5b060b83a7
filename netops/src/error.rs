//! The one error type of the crate.
//!
//! Callers (the reconciler, `slotd-net`, later `slotctl net`) act on the
//! variant: a missing interface or capability is a configuration problem to
//! report, not something to retry, while a netlink or I/O error may be
//! transient. Every message names what it is about (interface, address,
//! capability) so a one-line log or CLI error is enough to act on.

use std::net::IpAddr;

/// Everything that can go wrong while binding, releasing, listing,
/// announcing or probing an address.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The named interface does not exist (in this network namespace).
    #[error("no such interface: {name:?}")]
    NoSuchInterface {
        /// The interface name as given by the caller.
        name: String,
    },

    /// The kernel refused because the process lacks a capability.
    #[error("{op} on {interface:?} needs {cap}, which this process does not have")]
    MissingCapability {
        /// `CAP_NET_ADMIN` (addresses) or `CAP_NET_RAW` (ARP/NA sockets).
        cap: &'static str,
        /// The operation that was refused (`bind`, `announce`, ...).
        op: &'static str,
        /// The interface the operation was for.
        interface: String,
    },

    /// A prefix that cannot exist: bad syntax or a length beyond the family's
    /// maximum (32 for IPv4, 128 for IPv6).
    #[error("invalid prefix {input:?}: {reason}")]
    InvalidPrefix {
        /// The text (or `addr/len`) that was rejected.
        input: String,
        /// Why it was rejected.
        reason: String,
    },

    /// IPv6 is disabled on the interface (`disable_ipv6=1`) or in the kernel.
    #[error("IPv6 is disabled on interface {interface:?}")]
    Ipv6Disabled {
        /// The interface whose IPv6 is off.
        interface: String,
    },

    /// The address is already bound (or was asked to be released) with a
    /// different prefix length than the one requested. We do not silently
    /// change or remove an address somebody else configured differently.
    #[error("{addr} is bound on {interface:?} as /{bound_len}, not /{requested_len} as requested")]
    PrefixMismatch {
        /// The interface holding the address.
        interface: String,
        /// The address in question.
        addr: IpAddr,
        /// The prefix length the kernel has.
        bound_len: u8,
        /// The prefix length the caller asked for.
        requested_len: u8,
    },

    /// An announcement of an address that is not bound on the interface:
    /// nothing was sent (announcing it would pull its clients here).
    #[error("{addr} is not bound on {interface:?}: not announced")]
    NotBound {
        /// The interface the announcement was for.
        interface: String,
        /// The address in question.
        addr: IpAddr,
    },

    /// The interface has no Ethernet address, so ARP/NA cannot be sent on it.
    #[error("interface {interface:?} has no Ethernet (MAC) address")]
    NoMacAddress {
        /// The interface without a MAC (loopback, tun, ...).
        interface: String,
    },

    /// Any other error reported by the kernel over netlink.
    #[error("netlink {op} on {interface:?} failed: {source}")]
    Netlink {
        /// The operation that failed.
        op: &'static str,
        /// The interface it was for.
        interface: String,
        /// The error as rtnetlink reported it.
        #[source]
        source: rtnetlink::Error,
    },

    /// A socket or other I/O error (opening the netlink or packet socket,
    /// sending or receiving frames).
    #[error("{op} on {interface:?} failed: {source}")]
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The interface it was for (empty if none).
        interface: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The call did not finish within its deadline (see [`crate::Bounded`]):
    /// a kernel that does not answer (a reply lost under ENOBUFS, a stuck
    /// netlink socket) must not hold its caller for ever.
    #[error("{op} on {interface:?} did not finish within {after:?}")]
    Timeout {
        /// The operation that did not finish.
        op: &'static str,
        /// The interface it was for.
        interface: String,
        /// The deadline it had.
        after: std::time::Duration,
    },

    /// A failure injected into the in-memory implementation by a simulation.
    #[error("injected failure for {op}")]
    Injected {
        /// The operation that was told to fail.
        op: &'static str,
    },
}
