//! What a node's config picks: the address operations — the kernel's, or
//! (with `manage_addresses = false`, for demos and tests on a shared host)
//! an in-memory stand-in that touches no interface — and the Cyrus driver
//! (`cyrus.driver`: `none`, or Cyrus run by the agent or by systemd).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use slotd_core::node::reconcile::Instance;
use slotd_netops::{
    AddressOps, AnnounceOptions, BoundAddress, IpPrefix, KernelOps, MacAddr, MemoryOps, NetError, Outcome,
};

use super::cyrus::CyrusDriver;
use super::driver::{DriverError, NoneDriver, SlotContext, SlotDriver};

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

/// `inner`, unless told to stop answering (fault injection, for tests
/// only): then every call waits for ever, as a kernel that never replies
/// would have it. The deadlines around it (`slotd_netops::Bounded`) must
/// end them.
pub struct Stuckable<A> {
    inner: A,
    stuck: Arc<AtomicBool>,
}

impl<A> Stuckable<A> {
    pub fn new(inner: A, stuck: Arc<AtomicBool>) -> Stuckable<A> {
        Stuckable { inner, stuck }
    }

    async fn gate(&self) {
        if self.stuck.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    }
}

impl<A: AddressOps> AddressOps for Stuckable<A> {
    async fn bind(&self, interface: &str, prefix: IpPrefix) -> Result<Outcome, NetError> {
        self.gate().await;
        self.inner.bind(interface, prefix).await
    }

    async fn release(&self, interface: &str, prefix: IpPrefix) -> Result<Outcome, NetError> {
        self.gate().await;
        self.inner.release(interface, prefix).await
    }

    async fn list(&self, interface: &str) -> Result<Vec<BoundAddress>, NetError> {
        self.gate().await;
        self.inner.list(interface).await
    }

    async fn announce(&self, interface: &str, addr: IpAddr, options: AnnounceOptions) -> Result<(), NetError> {
        self.gate().await;
        self.inner.announce(interface, addr, options).await
    }

    async fn mac(&self, interface: &str) -> Result<MacAddr, NetError> {
        self.gate().await;
        self.inner.mac(interface).await
    }

    async fn probe(&self, interface: &str, addr: IpAddr, timeout: Duration) -> Result<Option<MacAddr>, NetError> {
        self.gate().await;
        self.inner.probe(interface, addr, timeout).await
    }
}

/// The driver a node's config names.
pub enum AnyDriver {
    None(NoneDriver),
    Cyrus(CyrusDriver),
}

impl SlotDriver for AnyDriver {
    async fn start_master(&self, slot: &str, ctx: &SlotContext) -> Result<(), DriverError> {
        match self {
            AnyDriver::None(d) => d.start_master(slot, ctx).await,
            AnyDriver::Cyrus(d) => d.start_master(slot, ctx).await,
        }
    }

    async fn start_replica(&self, slot: &str, ctx: &SlotContext) -> Result<(), DriverError> {
        match self {
            AnyDriver::None(d) => d.start_replica(slot, ctx).await,
            AnyDriver::Cyrus(d) => d.start_replica(slot, ctx).await,
        }
    }

    async fn stop(&self, slot: &str) -> Result<(), DriverError> {
        match self {
            AnyDriver::None(d) => d.stop(slot).await,
            AnyDriver::Cyrus(d) => d.stop(slot).await,
        }
    }

    async fn demote(&self, slot: &str, ctx: &SlotContext, force: bool) -> Result<(), DriverError> {
        match self {
            AnyDriver::None(d) => d.demote(slot, ctx, force).await,
            AnyDriver::Cyrus(d) => d.demote(slot, ctx, force).await,
        }
    }

    async fn backlog(&self, slot: &str) -> Option<u64> {
        match self {
            AnyDriver::None(d) => d.backlog(slot).await,
            AnyDriver::Cyrus(d) => d.backlog(slot).await,
        }
    }

    async fn backlog_age(&self, slot: &str) -> Option<Duration> {
        match self {
            AnyDriver::None(d) => d.backlog_age(slot).await,
            AnyDriver::Cyrus(d) => d.backlog_age(slot).await,
        }
    }

    async fn health(&self, slot: &str, ctx: &SlotContext, master: bool) -> Vec<String> {
        match self {
            AnyDriver::None(d) => d.health(slot, ctx, master).await,
            AnyDriver::Cyrus(d) => d.health(slot, ctx, master).await,
        }
    }

    async fn observe(&self) -> BTreeMap<String, Instance> {
        match self {
            AnyDriver::None(d) => d.observe().await,
            AnyDriver::Cyrus(d) => d.observe().await,
        }
    }

    async fn leftover_log(&self, slot: &str) -> Option<Result<String, String>> {
        match self {
            AnyDriver::None(d) => d.leftover_log(slot).await,
            AnyDriver::Cyrus(d) => d.leftover_log(slot).await,
        }
    }

    async fn finish_leftovers(&self, slot: &str, replayed: bool) -> Result<(), DriverError> {
        match self {
            AnyDriver::None(d) => d.finish_leftovers(slot, replayed).await,
            AnyDriver::Cyrus(d) => d.finish_leftovers(slot, replayed).await,
        }
    }

    async fn replay(&self, slot: &str, log: &str) -> Result<String, DriverError> {
        match self {
            AnyDriver::None(d) => d.replay(slot, log).await,
            AnyDriver::Cyrus(d) => d.replay(slot, log).await,
        }
    }
}
