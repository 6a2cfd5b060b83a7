//! `MemoryOps`: an in-memory [`AddressOps`] for simulations and unit tests
//! of the reconciler.
//!
//! It keeps addresses per interface, records every call, can be told to
//! fail, and hosts joined to the same [`MemoryNet`] see each other in
//! `probe` (so a simulated split brain is detectable the same way as a real
//! one). By default nothing takes time; with [`MemoryTiming`] operations
//! take as long as they do on a real machine (an announcement's rounds are
//! spaced out, a probe that finds nobody waits its whole timeout), so that
//! code that must not wait behind them can be tested (under tokio's paused
//! time, without real waiting).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::{AddressOps, AnnounceOptions, BoundAddress, IpPrefix, MacAddr, NetError, Outcome};

/// Which trait method a recorded call or an injected failure is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// [`AddressOps::bind`]
    Bind,
    /// [`AddressOps::release`]
    Release,
    /// [`AddressOps::list`]
    List,
    /// [`AddressOps::announce`]
    Announce,
    /// [`AddressOps::probe`]
    Probe,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Bind => "bind",
            Op::Release => "release",
            Op::List => "list",
            Op::Announce => "announce",
            Op::Probe => "probe",
        }
    }
}

/// One recorded call, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `bind(interface, prefix)`
    Bind {
        /// Interface name.
        interface: String,
        /// Requested prefix.
        prefix: IpPrefix,
    },
    /// `release(interface, prefix)`
    Release {
        /// Interface name.
        interface: String,
        /// Requested prefix.
        prefix: IpPrefix,
    },
    /// `list(interface)`
    List {
        /// Interface name.
        interface: String,
    },
    /// `announce(interface, addr, options)`
    Announce {
        /// Interface name.
        interface: String,
        /// Announced address.
        addr: IpAddr,
        /// Requested repetition.
        options: AnnounceOptions,
    },
    /// `probe(interface, addr, timeout)`
    Probe {
        /// Interface name.
        interface: String,
        /// Probed address.
        addr: IpAddr,
        /// Requested timeout.
        timeout: Duration,
    },
}

impl Call {
    /// The method this call was to.
    pub fn op(&self) -> Op {
        match self {
            Call::Bind { .. } => Op::Bind,
            Call::Release { .. } => Op::Release,
            Call::List { .. } => Op::List,
            Call::Announce { .. } => Op::Announce,
            Call::Probe { .. } => Op::Probe,
        }
    }
}

/// How long operations take. The default: nothing takes time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryTiming {
    /// A bind or a release (the kernel's acknowledgement).
    pub change: Duration,
    /// Sending one announcement round.
    pub announce_round: Duration,
    /// Rounds of one announcement are `options.interval` apart, as on the wire.
    pub announce_spaced: bool,
    /// A probe that finds nobody waits its whole timeout, as a real one does.
    pub probe_waits: bool,
}

impl MemoryTiming {
    /// Roughly what a Linux machine does: changes and rounds take a
    /// millisecond, rounds are spaced, probes wait.
    pub fn realistic() -> MemoryTiming {
        MemoryTiming {
            change: Duration::from_millis(1),
            announce_round: Duration::from_millis(1),
            announce_spaced: true,
            probe_waits: true,
        }
    }
}

async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// One simulated interface.
#[derive(Debug, Default)]
struct Interface {
    /// Bound addresses, in bind order.
    addrs: Vec<IpPrefix>,
    /// Mirrors `disable_ipv6=1`.
    ipv6_disabled: bool,
}

/// The state of one simulated host.
#[derive(Debug)]
struct Host {
    mac: MacAddr,
    interfaces: BTreeMap<String, Interface>,
    calls: Vec<Call>,
    /// Failures to return, one each, on the next calls of that op.
    fail_next: Vec<(Op, NetError)>,
    /// Ops that fail every time with [`NetError::Injected`].
    fail_always: Vec<Op>,
    /// Ops that never answer (a stuck kernel) while listed.
    hanging: Vec<Op>,
}

/// A simulated LAN: the hosts that can see each other's addresses in
/// `probe`. Cloning shares the LAN.
#[derive(Debug, Clone, Default)]
pub struct MemoryNet {
    hosts: Arc<Mutex<Vec<Weak<Mutex<Host>>>>>,
}

impl MemoryNet {
    /// An empty LAN.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new host with MAC `mac` on this LAN, with no interfaces yet.
    pub fn host(&self, mac: MacAddr) -> MemoryOps {
        let ops = MemoryOps::standalone(mac, Some(self.clone()));
        lock(&self.hosts).push(Arc::downgrade(&ops.host));
        ops
    }

    /// MACs of hosts other than `me` that hold `addr` on any interface.
    fn holders(&self, me: &Arc<Mutex<Host>>, addr: IpAddr) -> Vec<MacAddr> {
        let hosts: Vec<_> = lock(&self.hosts).iter().filter_map(Weak::upgrade).collect();
        hosts
            .iter()
            .filter(|h| !Arc::ptr_eq(h, me))
            .filter_map(|h| {
                let h = lock(h);
                let holds = h.interfaces.values().any(|i| i.addrs.iter().any(|p| p.addr() == addr));
                holds.then_some(h.mac)
            })
            .collect()
    }
}

/// Lock, ignoring poisoning: a panicking simulation thread must not hide
/// the state from the test that inspects it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// In-memory [`AddressOps`]. Clones share the same host.
#[derive(Debug, Clone)]
pub struct MemoryOps {
    host: Arc<Mutex<Host>>,
    net: Option<MemoryNet>,
    timing: MemoryTiming,
}

impl MemoryOps {
    /// A host on its own (probe never finds anybody), with no interfaces.
    pub fn new(mac: MacAddr) -> Self {
        Self::standalone(mac, None)
    }

    fn standalone(mac: MacAddr, net: Option<MemoryNet>) -> Self {
        Self {
            host: Arc::new(Mutex::new(Host {
                mac,
                interfaces: BTreeMap::new(),
                calls: Vec::new(),
                fail_next: Vec::new(),
                fail_always: Vec::new(),
                hanging: Vec::new(),
            })),
            net,
            timing: MemoryTiming::default(),
        }
    }

    /// Operations take this long from now on (for this handle and clones
    /// made after). Returns `self` for chaining.
    pub fn with_timing(mut self, timing: MemoryTiming) -> Self {
        self.timing = timing;
        self
    }

    /// Add an interface (no-op if it exists). Returns `self` for chaining.
    pub fn with_interface(self, name: &str) -> Self {
        lock(&self.host).interfaces.entry(name.to_string()).or_default();
        self
    }

    /// Turn IPv6 off or on for an interface, like `disable_ipv6`.
    pub fn set_ipv6_disabled(&self, interface: &str, disabled: bool) {
        lock(&self.host)
            .interfaces
            .entry(interface.to_string())
            .or_default()
            .ipv6_disabled = disabled;
    }

    /// The next call of `op` fails with `err` (queued: several calls to
    /// this fail several calls, in order).
    pub fn fail_next(&self, op: Op, err: NetError) {
        lock(&self.host).fail_next.push((op, err));
    }

    /// Every call of `op` fails with [`NetError::Injected`] while `on`.
    pub fn fail_always(&self, op: Op, on: bool) {
        let mut h = lock(&self.host);
        h.fail_always.retain(|o| *o != op);
        if on {
            h.fail_always.push(op);
        }
    }

    /// Every call of `op` made while `on` never answers (a kernel that
    /// does not reply): the caller's deadline must end it.
    pub fn hang(&self, op: Op, on: bool) {
        let mut h = lock(&self.host);
        h.hanging.retain(|o| *o != op);
        if on {
            h.hanging.push(op);
        }
    }

    /// Waits for ever if `op` hangs now.
    async fn hung(&self, op: Op) {
        let hangs = lock(&self.host).hanging.contains(&op);
        if hangs {
            std::future::pending::<()>().await;
        }
    }

    /// All calls so far, oldest first (failed ones included).
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.host).calls.clone()
    }

    /// Forget the recorded calls.
    pub fn clear_calls(&self) {
        lock(&self.host).calls.clear();
    }

    /// The addresses bound on `interface` (empty if it does not exist).
    pub fn addresses(&self, interface: &str) -> Vec<IpPrefix> {
        lock(&self.host)
            .interfaces
            .get(interface)
            .map(|i| i.addrs.clone())
            .unwrap_or_default()
    }

    /// This host's MAC.
    pub fn mac(&self) -> MacAddr {
        lock(&self.host).mac
    }

    /// Record `call`, then return an injected failure if one is due.
    fn enter(&self, call: Call) -> Result<MutexGuard<'_, Host>, NetError> {
        let op = call.op();
        let mut h = lock(&self.host);
        h.calls.push(call);
        if let Some(i) = h.fail_next.iter().position(|(o, _)| *o == op) {
            let (_, err) = h.fail_next.remove(i);
            return Err(err);
        }
        if h.fail_always.contains(&op) {
            return Err(NetError::Injected { op: op.name() });
        }
        Ok(h)
    }
}

fn iface<'a>(h: &'a mut Host, name: &str) -> Result<&'a mut Interface, NetError> {
    h.interfaces
        .get_mut(name)
        .ok_or_else(|| NetError::NoSuchInterface { name: name.to_string() })
}

fn mismatch(interface: &str, bound: &IpPrefix, requested: IpPrefix) -> NetError {
    NetError::PrefixMismatch {
        interface: interface.to_string(),
        addr: requested.addr(),
        bound_len: bound.prefix_len(),
        requested_len: requested.prefix_len(),
    }
}

impl AddressOps for MemoryOps {
    async fn bind(&self, interface: &str, prefix: IpPrefix) -> Result<Outcome, NetError> {
        self.hung(Op::Bind).await;
        pause(self.timing.change).await;
        let mut h = self.enter(Call::Bind {
            interface: interface.to_string(),
            prefix,
        })?;
        let i = iface(&mut h, interface)?;
        if prefix.is_ipv6() && i.ipv6_disabled {
            return Err(NetError::Ipv6Disabled {
                interface: interface.to_string(),
            });
        }
        match i.addrs.iter().find(|p| p.addr() == prefix.addr()) {
            Some(p) if *p == prefix => Ok(Outcome::Unchanged),
            Some(p) => Err(mismatch(interface, p, prefix)),
            None => {
                i.addrs.push(prefix);
                Ok(Outcome::Changed)
            }
        }
    }

    async fn release(&self, interface: &str, prefix: IpPrefix) -> Result<Outcome, NetError> {
        self.hung(Op::Release).await;
        pause(self.timing.change).await;
        let mut h = self.enter(Call::Release {
            interface: interface.to_string(),
            prefix,
        })?;
        let i = iface(&mut h, interface)?;
        match i.addrs.iter().position(|p| p.addr() == prefix.addr()) {
            Some(n) if i.addrs[n] == prefix => {
                i.addrs.remove(n);
                Ok(Outcome::Changed)
            }
            Some(n) => Err(mismatch(interface, &i.addrs[n], prefix)),
            None => Ok(Outcome::Unchanged),
        }
    }

    async fn list(&self, interface: &str) -> Result<Vec<BoundAddress>, NetError> {
        self.hung(Op::List).await;
        let mut h = self.enter(Call::List {
            interface: interface.to_string(),
        })?;
        let i = iface(&mut h, interface)?;
        Ok(i.addrs
            .iter()
            .map(|p| BoundAddress {
                prefix: *p,
                tentative: false,
                dad_failed: false,
                ours: true,
            })
            .collect())
    }

    async fn announce(&self, interface: &str, addr: IpAddr, options: AnnounceOptions) -> Result<(), NetError> {
        self.hung(Op::Announce).await;
        {
            let mut h = self.enter(Call::Announce {
                interface: interface.to_string(),
                addr,
                options,
            })?;
            let i = iface(&mut h, interface)?;
            if !i.addrs.iter().any(|p| p.addr() == addr) {
                return Err(NetError::NotBound {
                    interface: interface.to_owned(),
                    addr,
                });
            }
        }
        for round in 0..options.count {
            if round > 0 && self.timing.announce_spaced {
                pause(options.interval).await;
            }
            pause(self.timing.announce_round).await;
        }
        Ok(())
    }

    async fn mac(&self, _interface: &str) -> Result<MacAddr, NetError> {
        Ok(self.mac())
    }

    async fn probe(&self, interface: &str, addr: IpAddr, timeout: Duration) -> Result<Option<MacAddr>, NetError> {
        self.hung(Op::Probe).await;
        {
            let mut h = self.enter(Call::Probe {
                interface: interface.to_string(),
                addr,
                timeout,
            })?;
            iface(&mut h, interface)?;
        }
        let found = self
            .net
            .as_ref()
            .and_then(|n| n.holders(&self.host, addr).into_iter().next());
        if found.is_none() && self.timing.probe_waits {
            pause(timeout).await;
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn bind_release_are_idempotent_and_recorded() {
        let ops = MemoryOps::new(MacAddr([2, 0, 0, 0, 0, 1])).with_interface("eth0");
        let p: IpPrefix = "10.0.1.1/32".parse().unwrap();
        block(async {
            assert_eq!(ops.bind("eth0", p).await.unwrap(), Outcome::Changed);
            assert_eq!(ops.bind("eth0", p).await.unwrap(), Outcome::Unchanged);
            assert_eq!(ops.list("eth0").await.unwrap().len(), 1);
            assert_eq!(ops.release("eth0", p).await.unwrap(), Outcome::Changed);
            assert_eq!(ops.release("eth0", p).await.unwrap(), Outcome::Unchanged);
            assert!(matches!(
                ops.bind("eth9", p).await,
                Err(NetError::NoSuchInterface { name }) if name == "eth9"
            ));
        });
        let ops_seen: Vec<Op> = ops.calls().iter().map(Call::op).collect();
        assert_eq!(
            ops_seen,
            [Op::Bind, Op::Bind, Op::List, Op::Release, Op::Release, Op::Bind]
        );
    }

    #[test]
    fn injected_failures() {
        let ops = MemoryOps::new(MacAddr([2, 0, 0, 0, 0, 1])).with_interface("eth0");
        let p: IpPrefix = "fd00::1".parse().unwrap();
        block(async {
            ops.fail_next(Op::Bind, NetError::Injected { op: "bind" });
            assert!(ops.bind("eth0", p).await.is_err());
            assert!(ops.bind("eth0", p).await.is_ok());
            ops.fail_always(Op::Announce, true);
            assert!(ops
                .announce("eth0", p.addr(), AnnounceOptions::default())
                .await
                .is_err());
            assert!(ops
                .announce("eth0", p.addr(), AnnounceOptions::default())
                .await
                .is_err());
            ops.fail_always(Op::Announce, false);
            assert!(ops.announce("eth0", p.addr(), AnnounceOptions::default()).await.is_ok());
            ops.set_ipv6_disabled("eth0", true);
            let q: IpPrefix = "fd00::2".parse().unwrap();
            assert!(matches!(ops.bind("eth0", q).await, Err(NetError::Ipv6Disabled { .. })));
        });
    }

    #[tokio::test(start_paused = true)]
    async fn with_timing_operations_take_their_time() {
        let ops = MemoryOps::new(MacAddr([2, 0, 0, 0, 0, 1]))
            .with_interface("eth0")
            .with_timing(MemoryTiming::realistic());
        let p: IpPrefix = "10.0.1.1/32".parse().unwrap();
        let t0 = tokio::time::Instant::now();
        ops.bind("eth0", p).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(1));
        let t0 = tokio::time::Instant::now();
        ops.announce("eth0", p.addr(), AnnounceOptions::default())
            .await
            .unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(203), "3 rounds 100 ms apart");
        let t0 = tokio::time::Instant::now();
        assert_eq!(
            ops.probe("eth0", p.addr(), Duration::from_millis(200)).await.unwrap(),
            None
        );
        assert_eq!(
            t0.elapsed(),
            Duration::from_millis(200),
            "nobody answers: the whole timeout"
        );
    }

    #[test]
    fn probe_sees_other_hosts_on_the_same_net() {
        let net = MemoryNet::new();
        let a = net.host(MacAddr([2, 0, 0, 0, 0, 0xa])).with_interface("eth0");
        let b = net.host(MacAddr([2, 0, 0, 0, 0, 0xb])).with_interface("eth0");
        let p: IpPrefix = "10.0.1.1/32".parse().unwrap();
        let t = Duration::from_millis(100);
        block(async {
            assert_eq!(b.probe("eth0", p.addr(), t).await.unwrap(), None);
            a.bind("eth0", p).await.unwrap();
            assert_eq!(b.probe("eth0", p.addr(), t).await.unwrap(), Some(a.mac()));
            assert_eq!(
                a.probe("eth0", p.addr(), t).await.unwrap(),
                None,
                "own address is not a conflict"
            );
            a.release("eth0", p).await.unwrap();
            assert_eq!(b.probe("eth0", p.addr(), t).await.unwrap(), None);
        });
    }
}
