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
        })
    }
}

impl Drop for KernelOps {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl AddressOps for KernelOps {
    async fn bind(&self, interface: &str, prefix: IpPrefix) -> Result<Outcome, NetError> {
        let link = netlink::link(&self.handle, interface).await?;
        let outcome = netlink::add(&self.handle, &link, prefix).await?;
        tracing::info!(interface, %prefix, ?outcome, "bind");
        Ok(outcome)
    }

    async fn release(&self, interface: &str, prefix: IpPrefix) -> Result<Outcome, NetError> {
        let link = netlink::link(&self.handle, interface).await?;
        let outcome = netlink::del(&self.handle, &link, prefix).await?;
        tracing::info!(interface, %prefix, ?outcome, "release");
        Ok(outcome)
    }

    async fn list(&self, interface: &str) -> Result<Vec<BoundAddress>, NetError> {
        let link = netlink::link(&self.handle, interface).await?;
        netlink::list(&self.handle, &link).await
    }

    async fn announce(&self, interface: &str, addr: IpAddr, options: AnnounceOptions) -> Result<(), NetError> {
        let link = netlink::link(&self.handle, interface).await?;
        packet::announce(&link, addr, options).await?;
        tracing::info!(interface, %addr, count = options.count, "announced");
        Ok(())
    }

    async fn mac(&self, interface: &str) -> Result<MacAddr, NetError> {
        let link = netlink::link(&self.handle, interface).await?;
        link.mac.ok_or_else(|| NetError::NoMacAddress {
            interface: interface.to_owned(),
        })
    }

    async fn probe(&self, interface: &str, addr: IpAddr, timeout: Duration) -> Result<Option<MacAddr>, NetError> {
        let link = netlink::link(&self.handle, interface).await?;
        let found = packet::probe(&link, addr, timeout).await?;
        match found {
            Some(mac) => tracing::warn!(interface, %addr, %mac, "probe: another machine answers"),
            None => tracing::debug!(interface, %addr, "probe: nobody answers"),
        }
        Ok(found)
    }
}
