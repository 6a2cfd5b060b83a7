//! The probe finds whoever answers for an IP, and nobody once it is gone.

mod common;

use std::time::Duration;

use common::*;
use slotd_netops::testkit::{Lan, IFACE};
use slotd_netops::{AddressOps, KernelOps, MacAddr, NetError};

fn probe_from(ns: &slotd_netops::testkit::Netns, addr: std::net::IpAddr) -> Result<Option<MacAddr>, NetError> {
    ns.run(move || async move { KernelOps::new()?.probe(IFACE, addr, Duration::from_millis(1500)).await })
}

fn probe_finds_holder(tag: &str, vip: &str) {
    let lan = Lan::new(tag, &["a", "b"]);
    number(&lan, &[("a", 1), ("b", 2)]);
    let (a, b) = (lan.host("a"), lan.host("b"));
    let vip = prefix(vip);

    bind(a, vip).unwrap();
    assert_eq!(probe_from(b, vip.addr()).unwrap(), Some(a.mac(IFACE)), "A answers");
    // The holder itself sees no conflict (its own frames are not answers).
    assert_eq!(probe_from(a, vip.addr()).unwrap(), None, "A's own probe");

    release(a, vip).unwrap();
    assert_eq!(probe_from(b, vip.addr()).unwrap(), None, "nobody after release");
}

#[test]
fn ipv4_probe_finds_holder_then_nobody() {
    probe_finds_holder("pr4", "10.77.0.100/32");
}

#[test]
fn ipv6_probe_finds_holder_then_nobody() {
    probe_finds_holder("pr6", "fd00:77::100/128");
}

/// The binary prints the answering MAC and exits 1 when someone answers.
#[test]
fn slotd_net_probe_reports_owner() {
    let lan = Lan::new("prbin", &["a", "b"]);
    number(&lan, &[("a", 1), ("b", 2)]);
    let (a, b) = (lan.host("a"), lan.host("b"));
    bind(a, prefix("10.77.0.100/32")).unwrap();
    let out = slotd_net(
        b,
        &["probe", "--interface", IFACE, "--timeout-ms", "1500", "10.77.0.100"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&a.mac(IFACE).to_string()),
        "{}",
        text(&out.stdout)
    );
    release(a, prefix("10.77.0.100/32")).unwrap();
    let out = slotd_net(
        b,
        &["probe", "--interface", IFACE, "--timeout-ms", "500", "10.77.0.100"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("nobody"));
}
