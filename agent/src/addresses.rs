//! The address operations the agent uses: the kernel's, or (with
//! `manage_addresses = false`, for demos and tests on a shared host) an
//! in-memory stand-in that touches no interface.

use std::net::IpAddr;
use std::time::Duration;

use slotd_netops::{
    AddressOps, AnnounceOptions, BoundAddress, IpPrefix, KernelOps, MacAddr, MemoryOps, NetError, Outcome,
};

pub enum AnyOps {
    Kernel(KernelOps),
    Memory(MemoryOps),
}

impl AddressOps for AnyOps {
    async fn bind(&self, interface: &str, prefix: IpPrefix) -> Result<Outcome, NetError> {
        match self {
            AnyOps::Kernel(k) => k.bind(interface, prefix).await,
            AnyOps::Memory(m) => m.bind(interface, prefix).await,
        }
    }

    async fn release(&self, interface: &str, prefix: IpPrefix) -> Result<Outcome, NetError> {
        match self {
            AnyOps::Kernel(k) => k.release(interface, prefix).await,
            AnyOps::Memory(m) => m.release(interface, prefix).await,
        }
    }

    async fn list(&self, interface: &str) -> Result<Vec<BoundAddress>, NetError> {
        match self {
            AnyOps::Kernel(k) => k.list(interface).await,
            AnyOps::Memory(m) => m.list(interface).await,
        }
    }

    async fn announce(&self, interface: &str, addr: IpAddr, options: AnnounceOptions) -> Result<(), NetError> {
        match self {
            AnyOps::Kernel(k) => k.announce(interface, addr, options).await,
            AnyOps::Memory(m) => m.announce(interface, addr, options).await,
        }
    }

    async fn mac(&self, interface: &str) -> Result<MacAddr, NetError> {
        match self {
            AnyOps::Kernel(k) => k.mac(interface).await,
            AnyOps::Memory(m) => AddressOps::mac(m, interface).await,
        }
    }

    async fn probe(&self, interface: &str, addr: IpAddr, timeout: Duration) -> Result<Option<MacAddr>, NetError> {
        match self {
            AnyOps::Kernel(k) => k.probe(interface, addr, timeout).await,
            AnyOps::Memory(m) => m.probe(interface, addr, timeout).await,
        }
    }
}
