//! A deadline on every call: [`Bounded`] wraps any [`AddressOps`] so that no
//! call can hold its caller longer than its deadline, whatever the kernel
//! does (a netlink reply dropped under ENOBUFS is never resent; a call
//! queued behind a hung one waits with it). A call past its deadline is
//! dropped and answers [`NetError::Timeout`]; what the kernel did with it
//! meanwhile is unknown, so callers look again (list) rather than assume.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use crate::addr::IpPrefix;
use crate::error::NetError;
use crate::ops::{AddressOps, AnnounceOptions, BoundAddress, MacAddr, Outcome};

/// `inner`, with every call bounded by `call` (plus, for a probe, its own
/// wait, and for an announcement, its rounds' pauses).
#[derive(Clone, Debug)]
pub struct Bounded<A> {
    inner: A,
    call: Duration,
}

impl<A> Bounded<A> {
    pub fn new(inner: A, call: Duration) -> Bounded<A> {
        Bounded { inner, call }
    }

    pub fn inner(&self) -> &A {
        &self.inner
    }
}

async fn within<T>(
    op: &'static str,
    interface: &str,
    after: Duration,
    call: impl Future<Output = Result<T, NetError>>,
) -> Result<T, NetError> {
    match tokio::time::timeout(after, call).await {
        Ok(r) => r,
        Err(_) => Err(NetError::Timeout {
            op,
            interface: interface.to_owned(),
            after,
        }),
    }
}

impl<A: AddressOps> AddressOps for Bounded<A> {
    async fn bind(&self, interface: &str, prefix: IpPrefix) -> Result<Outcome, NetError> {
        within("bind", interface, self.call, self.inner.bind(interface, prefix)).await
    }

    async fn release(&self, interface: &str, prefix: IpPrefix) -> Result<Outcome, NetError> {
        within("release", interface, self.call, self.inner.release(interface, prefix)).await
    }

    async fn list(&self, interface: &str) -> Result<Vec<BoundAddress>, NetError> {
        within("list", interface, self.call, self.inner.list(interface)).await
    }

    async fn announce(&self, interface: &str, addr: IpAddr, options: AnnounceOptions) -> Result<(), NetError> {
        let pauses = options.interval.saturating_mul(options.count.saturating_sub(1));
        let after = self.call.saturating_add(pauses);
        within(
            "announce",
            interface,
            after,
            self.inner.announce(interface, addr, options),
        )
        .await
    }

    async fn mac(&self, interface: &str) -> Result<MacAddr, NetError> {
        within("mac", interface, self.call, self.inner.mac(interface)).await
    }

    async fn probe(&self, interface: &str, addr: IpAddr, timeout: Duration) -> Result<Option<MacAddr>, NetError> {
        let after = self.call.saturating_add(timeout);
        within("probe", interface, after, self.inner.probe(interface, addr, timeout)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryOps, Op};

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_answers_ends_at_its_deadline() {
        let mem = MemoryOps::new(MacAddr([2, 0, 0, 0, 0, 1])).with_interface("eth0");
        let ops = Bounded::new(mem.clone(), Duration::from_millis(100));
        let p: IpPrefix = "10.0.0.1/32".parse().unwrap();
        assert_eq!(ops.bind("eth0", p).await.unwrap(), Outcome::Changed);
        mem.hang(Op::Release, true);
        mem.hang(Op::List, true);
        let started = tokio::time::Instant::now();
        let err = ops.release("eth0", p).await.unwrap_err();
        assert!(matches!(err, NetError::Timeout { op: "release", .. }), "{err}");
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        assert!(err.to_string().contains("did not finish within 100ms"), "{err}");
        assert!(matches!(
            ops.list("eth0").await,
            Err(NetError::Timeout { op: "list", .. })
        ));
        // A probe gets its own wait on top.
        let started = tokio::time::Instant::now();
        mem.hang(Op::Probe, true);
        let err = ops
            .probe("eth0", p.addr(), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::Timeout { op: "probe", .. }), "{err}");
        assert_eq!(started.elapsed(), Duration::from_millis(400));
        // Answering again: the calls go through.
        mem.hang(Op::Release, false);
        assert_eq!(ops.release("eth0", p).await.unwrap(), Outcome::Changed);
    }
}
