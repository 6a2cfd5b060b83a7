//! The `AddressOps` trait: everything slotd does to the network to move a
//! service IP, behind one small interface so the reconciler can run against
//! the kernel ([`crate::KernelOps`]) or against an in-memory model in
//! simulations ([`crate::MemoryOps`]).

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use crate::{IpPrefix, NetError};

/// An Ethernet (MAC) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// Whether a bind or release changed anything. Both are idempotent; the
/// reconciler logs and counts real changes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel state changed (the address was added or removed).
    Changed,
    /// The address already was in the requested state.
    Unchanged,
}

/// One address on an interface, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundAddress {
    /// Address and prefix length.
    pub prefix: IpPrefix,
    /// Still in IPv6 duplicate address detection: not usable yet. Service
    /// IPs are bound with `nodad`, so only other addresses show this.
    pub tentative: bool,
    /// IPv6 DAD found a duplicate; the kernel will not use the address.
    pub dad_failed: bool,
    /// Bound by slotd: [`AddressOps::bind`] tags its addresses (the
    /// kernel's address protocol, [`ADDRESS_PROTOCOL`]), so that whatever
    /// slotd left on an interface can be found without any other record.
    pub ours: bool,
}

/// The address protocol (`IFA_PROTO`, Linux ≥ 5.18) slotd tags its
/// addresses with. Kernels without it drop the tag; slotd's own ledger still
/// knows them.
pub const ADDRESS_PROTOCOL: u8 = 0x5d;

/// How often to repeat an announcement. Several copies, spaced out, survive
/// a lost frame and a switch port that is still coming up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnounceOptions {
    /// Number of rounds (each round: gratuitous ARP request + reply, or one
    /// unsolicited NA). Zero sends nothing.
    pub count: u32,
    /// Pause between rounds.
    pub interval: Duration,
}

impl AnnounceOptions {
    /// 3 rounds 100 ms apart, like `arping -U`/`-A` and keepalived.
    pub const DEFAULT: AnnounceOptions = AnnounceOptions {
        count: 3,
        interval: Duration::from_millis(100),
    };
}

impl Default for AnnounceOptions {
    fn default() -> Self {
        AnnounceOptions::DEFAULT
    }
}

/// Bind, release, list, announce and probe service addresses on a named
/// interface.
///
/// Bind and release are idempotent and return only after the kernel has
/// acknowledged the change, so "bound" means bound. Implementations must be
/// cheap to share (`&self`) between the reconciler's tasks.
///
/// The futures are `Send` so callers can `tokio::spawn` them; the trait is
/// used generically (`impl AddressOps`/`A: AddressOps`), not as `dyn`.
pub trait AddressOps: Send + Sync {
    /// Add `prefix` to `interface` (IPv6: with `nodad` and `noprefixroute`),
    /// tagged as slotd's ([`BoundAddress::ours`]).
    /// Already there with the same length is `Unchanged`; there with another
    /// length is [`NetError::PrefixMismatch`].
    fn bind(&self, interface: &str, prefix: IpPrefix) -> impl Future<Output = Result<Outcome, NetError>> + Send;

    /// Remove `prefix` from `interface`. Already gone is `Unchanged`.
    fn release(&self, interface: &str, prefix: IpPrefix) -> impl Future<Output = Result<Outcome, NetError>> + Send;

    /// All addresses on `interface` (both families, including link-local).
    fn list(&self, interface: &str) -> impl Future<Output = Result<Vec<BoundAddress>, NetError>> + Send;

    /// Tell the LAN that `addr` is now at this interface's MAC: gratuitous
    /// ARP request and reply (IPv4) or an unsolicited, overriding neighbour
    /// advertisement to all nodes (IPv6), `options.count` times. Only while
    /// `addr` is bound on `interface`, looked at in turn with `release`
    /// (else [`NetError::NotBound`], nothing sent): an announcement never
    /// follows the release of its address.
    fn announce(
        &self,
        interface: &str,
        addr: IpAddr,
        options: AnnounceOptions,
    ) -> impl Future<Output = Result<(), NetError>> + Send;

    /// The interface's own hardware address (what neighbours should see
    /// answering for the addresses bound on it).
    fn mac(&self, interface: &str) -> impl Future<Output = Result<MacAddr, NetError>> + Send;

    /// Ask whether another machine answers for `addr` (RFC 5227 ARP probe,
    /// or an IPv6 DAD neighbour solicitation). Returns the first foreign MAC
    /// that answers within `timeout`, or `None`.
    fn probe(
        &self,
        interface: &str,
        addr: IpAddr,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<MacAddr>, NetError>> + Send;
}
