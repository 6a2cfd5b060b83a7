//! `KernelOps`: the real [`AddressOps`], on the kernel of the network
//! namespace it was created in.

use std::net::IpAddr;
use std::time::Duration;

use rtnetlink::Handle;
use tokio::task::JoinHandle;

use crate::{netlink, packet, AddressOps, AnnounceOptions, BoundAddress, IpPrefix, MacAddr, NetError, Outcome};

/// Addresses through rtnetlink, announcements and probes through AF_PACKET.
///
/// Netlink and packet sockets belong to the network namespace of the thread
/// that opens them: the netlink socket is opened by [`KernelOps::new`],
/// packet sockets by each announce/probe.
#[derive(Debug)]
pub struct KernelOps {
    /// Requests go out through this handle; replies come back via the
    /// connection task.
    handle: Handle,
    /// The task driving the netlink socket; aborted on drop.
    connection: JoinHandle<()>,
    /// One netlink operation at a time: the kernel runs one dump per socket
    /// and answers a second with EBUSY, and a bind or release looks at the
    /// interface (a dump) before it changes it.
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl KernelOps {
    /// Open a netlink connection. Must be called inside a tokio runtime; the
    /// connection task runs on it until this value is dropped.
    pub fn new() -> Result<Self, NetError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| NetError::Io {
            op: "open netlink socket",
            interface: String::new(),
            source: e,
        })?;
        Ok(Self {
            handle,
            connection: tokio::spawn(connection),
            one_at_a_time: tokio::sync::Mutex::new(()),
        })
    }
}

impl Drop for KernelOps {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl KernelOps {
    /// The interface's index and MAC (one netlink request, in turn).
    async fn link(&self, interface: &str) -> Result<netlink::Link, NetError> {
        let _one = self.one_at_a_time.lock().await;
        netlink::link(&self.handle, interface).await
    }
}

impl AddressOps for KernelOps {
    async fn bind(&self, interface: &str, prefix: IpPrefix) -> Result<Outcome, NetError> {
        let _one = self.one_at_a_time.lock().await;
        let link = netlink::link(&self.handle, interface).await?;
        let outcome = netlink::add(&self.handle, &link, prefix).await?;
        tracing::debug!(interface, %prefix, ?outcome, "bind");
        Ok(outcome)
    }

    async fn release(&self, interface: &str, prefix: IpPrefix) -> Result<Outcome, NetError> {
        let _one = self.one_at_a_time.lock().await;
        let link = netlink::link(&self.handle, interface).await?;
        let outcome = netlink::del(&self.handle, &link, prefix).await?;
        tracing::debug!(interface, %prefix, ?outcome, "release");
        Ok(outcome)
    }

    async fn list(&self, interface: &str) -> Result<Vec<BoundAddress>, NetError> {
        let _one = self.one_at_a_time.lock().await;
        let link = netlink::link(&self.handle, interface).await?;
        netlink::list(&self.handle, &link).await
    }

    async fn announce(&self, interface: &str, addr: IpAddr, options: AnnounceOptions) -> Result<(), NetError> {
        // Looked at and sent in turn with bind and release: one sent late
        // (its check made before a release, on a busy machine) pulled the
        // clients to a machine that no longer had the address, until their
        // ARP entries aged out, tens of seconds.
        let _one = self.one_at_a_time.lock().await;
        let link = netlink::link(&self.handle, interface).await?;
        let bound = netlink::list(&self.handle, &link).await?;
        if !bound.iter().any(|b| b.prefix.addr() == addr) {
            return Err(NetError::NotBound {
                interface: interface.to_owned(),
                addr,
            });
        }
        packet::announce(&link, addr, options).await?;
        tracing::debug!(interface, %addr, count = options.count, "announced");
        Ok(())
    }

    async fn mac(&self, interface: &str) -> Result<MacAddr, NetError> {
        let link = self.link(interface).await?;
        link.mac.ok_or_else(|| NetError::NoMacAddress {
            interface: interface.to_owned(),
        })
    }

    async fn probe(&self, interface: &str, addr: IpAddr, timeout: Duration) -> Result<Option<MacAddr>, NetError> {
        let link = self.link(interface).await?;
        let found = packet::probe(&link, addr, timeout).await?;
        // The caller says what an answer means (a split-brain alarm before
        // a bind, the expected master after a move).
        match found {
            Some(mac) => tracing::debug!(interface, %addr, %mac, "probe: another machine answers"),
            None => tracing::debug!(interface, %addr, "probe: nobody answers"),
        }
        Ok(found)
    }
}
