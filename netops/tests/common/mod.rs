//! Helpers shared by this crate's namespace tests.
#![allow(dead_code)]

use std::net::IpAddr;
use std::process::Output;

use slotd_netops::testkit::{Lan, Netns, IFACE};
use slotd_netops::{AddressOps, BoundAddress, IpPrefix, KernelOps, NetError, Outcome};

/// Host `name` gets 10.77.0.N/24 and fd00:77::N/64 on eth0, so it has an
/// on-link route to every service IP used in the tests.
pub fn number(lan: &Lan, hosts: &[(&str, u8)]) {
    for (name, n) in hosts {
        let ns = lan.host(name);
        ns.add_addr(IFACE, &format!("10.77.0.{n}/24"));
        ns.add_addr(IFACE, &format!("fd00:77::{n}/64"));
    }
}

pub fn prefix(s: &str) -> IpPrefix {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Bind `p` on eth0 in `ns` with the real implementation.
pub fn bind(ns: &Netns, p: IpPrefix) -> Result<Outcome, NetError> {
    ns.run(move || async move { KernelOps::new()?.bind(IFACE, p).await })
}

/// Release `p` from eth0 in `ns` with the real implementation.
pub fn release(ns: &Netns, p: IpPrefix) -> Result<Outcome, NetError> {
    ns.run(move || async move { KernelOps::new()?.release(IFACE, p).await })
}

/// The addresses on eth0 in `ns`, through the real implementation.
pub fn bound(ns: &Netns) -> Vec<BoundAddress> {
    ns.run(|| async { KernelOps::new()?.list(IFACE).await })
        .unwrap_or_else(|e| panic!("list: {e}"))
}

/// The prefixes on eth0 in `ns`.
pub fn list(ns: &Netns) -> Vec<IpPrefix> {
    bound(ns).into_iter().map(|b| b.prefix).collect()
}

/// The addresses on eth0 in `ns` that slotd tagged as its own.
pub fn ours(ns: &Netns) -> Vec<IpPrefix> {
    bound(ns).into_iter().filter(|b| b.ours).map(|b| b.prefix).collect()
}

/// `ip -n NS addr show dev eth0` as text.
pub fn kernel_addrs(ns: &Netns) -> String {
    ns.ip(&["addr", "show", "dev", IFACE])
}

/// Run the `slotd-net` binary inside `ns`.
pub fn slotd_net(ns: &Netns, args: &[&str]) -> Output {
    ns.exec(env!("CARGO_BIN_EXE_slotd-net"), args)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn vip4() -> IpAddr {
    "10.77.0.100".parse().unwrap_or_else(|e| panic!("{e}"))
}
