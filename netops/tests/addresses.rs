//! Bind/list/release against the real kernel, in a namespace.

mod common;

use common::*;
use slotd_netops::testkit::{Lan, IFACE};
use slotd_netops::{NetError, Outcome};

#[test]
fn ipv4_bind_list_release_round_trip_is_idempotent() {
    let lan = Lan::new("addr4", &["h"]);
    let h = lan.host("h");
    let p = prefix("10.77.0.100/32");

    assert_eq!(bind(h, p).unwrap(), Outcome::Changed);
    assert_eq!(bind(h, p).unwrap(), Outcome::Unchanged, "second bind is a no-op");
    assert!(list(h).contains(&p));
    assert!(kernel_addrs(h).contains("inet 10.77.0.100/32"), "{}", kernel_addrs(h));

    // Same address, other length: refused, nothing changed.
    let err = bind(h, prefix("10.77.0.100/24")).unwrap_err();
    assert!(
        matches!(
            err,
            NetError::PrefixMismatch {
                bound_len: 32,
                requested_len: 24,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(list(h).iter().filter(|q| q.addr() == p.addr()).count(), 1);

    assert_eq!(release(h, p).unwrap(), Outcome::Changed);
    assert_eq!(release(h, p).unwrap(), Outcome::Unchanged, "second release is a no-op");
    assert!(!list(h).contains(&p));
    assert!(!kernel_addrs(h).contains("10.77.0.100"), "{}", kernel_addrs(h));
}

#[test]
fn ipv6_bind_list_release_round_trip_is_idempotent() {
    let lan = Lan::new("addr6", &["h"]);
    let h = lan.host("h");
    let p = prefix("fd00:77::100/128");

    assert_eq!(bind(h, p).unwrap(), Outcome::Changed);
    assert_eq!(bind(h, p).unwrap(), Outcome::Unchanged);
    assert!(list(h).contains(&p));
    let shown = kernel_addrs(h);
    let line = shown
        .lines()
        .find(|l| l.contains("fd00:77::100/128"))
        .unwrap_or_else(|| panic!("not bound: {shown}"));
    assert!(line.contains("nodad") && line.contains("noprefixroute"), "{line}");
    assert!(!line.contains("tentative"), "{line}");
    // noprefixroute: no route for the /128 was added.
    let routes = h.ip(&["-6", "route", "show"]);
    assert!(!routes.contains("fd00:77::100"), "{routes}");

    assert_eq!(release(h, p).unwrap(), Outcome::Changed);
    assert_eq!(release(h, p).unwrap(), Outcome::Unchanged);
    assert!(!list(h).contains(&p));
    assert!(!kernel_addrs(h).contains("fd00:77::100"));
}

/// What slotd binds carries its tag (IPv4 and IPv6); what others bound
/// does not: `slotd fence` finds its leftovers on the interface alone.
#[test]
fn our_addresses_are_tagged_others_not() {
    let lan = Lan::new("addrtag", &["h"]);
    let h = lan.host("h");
    h.add_addr(IFACE, "10.77.0.5/24");
    let (p4, p6) = (prefix("10.77.0.101/32"), prefix("fd00:77::101/128"));
    bind(h, p4).unwrap();
    bind(h, p6).unwrap();
    let tagged = ours(h);
    assert!(tagged.contains(&p4) && tagged.contains(&p6), "{tagged:?}");
    assert!(!tagged.contains(&prefix("10.77.0.5/24")), "{tagged:?}");
    assert!(list(h).contains(&prefix("10.77.0.5/24")));
    release(h, p4).unwrap();
    release(h, p6).unwrap();
    assert!(ours(h).is_empty());
}

/// The operator's command does the same, with exit status 0.
#[test]
fn slotd_net_binary_round_trip() {
    let lan = Lan::new("addrbin", &["h"]);
    let h = lan.host("h");
    for (addr, shown) in [
        ("10.77.0.100", "10.77.0.100/32"),
        ("fd00:77::100/128", "fd00:77::100/128"),
    ] {
        let out = slotd_net(h, &["bind", "--interface", IFACE, addr]);
        assert!(out.status.success(), "bind: {}", text(&out.stderr));
        assert!(text(&out.stdout).starts_with("bound"), "{}", text(&out.stdout));
        let out = slotd_net(h, &["bind", "--interface", IFACE, addr]);
        assert!(text(&out.stdout).starts_with("already bound"), "{}", text(&out.stdout));

        let out = slotd_net(h, &["list", "--interface", IFACE]);
        assert!(out.status.success());
        assert!(text(&out.stdout).lines().any(|l| l == shown), "{}", text(&out.stdout));

        let out = slotd_net(h, &["release", "--interface", IFACE, addr]);
        assert!(out.status.success(), "release: {}", text(&out.stderr));
        assert!(text(&out.stdout).starts_with("released"));
        let out = slotd_net(h, &["release", "--interface", IFACE, addr]);
        assert!(out.status.success());
        assert!(text(&out.stdout).starts_with("not bound"));

        let out = slotd_net(h, &["list", "--interface", IFACE]);
        assert!(!text(&out.stdout).contains(shown));
    }
}
