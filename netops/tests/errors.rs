//! Errors name what is wrong: interface, prefix, IPv6 state, capability.

mod common;

use std::time::Duration;

use common::*;
use slotd_netops::testkit::{require_root, unique_prefix, Lan, Netns, IFACE};
use slotd_netops::{AddressOps, AnnounceOptions, IpPrefix, KernelOps, NetError};

fn is_no_such(r: &Result<impl std::fmt::Debug, NetError>, name: &str) -> bool {
    matches!(r, Err(NetError::NoSuchInterface { name: n }) if n == name)
}

#[test]
fn unknown_interface_is_named() {
    require_root();
    let ns = Netns::create(&format!("{}-x", unique_prefix("noif")));
    let results = ns.run(|| async {
        let ops = KernelOps::new().unwrap();
        let p = prefix("10.77.0.100/32");
        (
            ops.bind("nosuch0", p).await.map(|_| ()),
            ops.release("nosuch0", p).await.map(|_| ()),
            ops.list("nosuch0").await.map(|_| ()),
            ops.announce("nosuch0", p.addr(), AnnounceOptions::default()).await,
            ops.probe("nosuch0", p.addr(), Duration::from_millis(100))
                .await
                .map(|_| ()),
            ops.bind("this-name-is-too-long", p).await.map(|_| ()),
        )
    });
    assert!(is_no_such(&results.0, "nosuch0"), "bind: {:?}", results.0);
    assert!(is_no_such(&results.1, "nosuch0"), "release: {:?}", results.1);
    assert!(is_no_such(&results.2, "nosuch0"), "list: {:?}", results.2);
    assert!(is_no_such(&results.3, "nosuch0"), "announce: {:?}", results.3);
    assert!(is_no_such(&results.4, "nosuch0"), "probe: {:?}", results.4);
    assert!(is_no_such(&results.5, "this-name-is-too-long"), "{:?}", results.5);

    let out = slotd_net(&ns, &["bind", "--interface", "nosuch0", "10.77.0.100/32"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("nosuch0") && err.lines().count() == 1, "{err}");
}

#[test]
fn invalid_prefix_is_named() {
    for bad in ["10.0.0.1/33", "fd00::1/129", "10.0.0.1/-1", "10.0.0/32"] {
        let err = bad.parse::<IpPrefix>().unwrap_err();
        assert!(
            matches!(err, NetError::InvalidPrefix { .. }) && err.to_string().contains(bad),
            "{err}"
        );
    }
    assert!(matches!(
        IpPrefix::new("fd00::1".parse().unwrap(), 129),
        Err(NetError::InvalidPrefix { .. })
    ));

    // The binary refuses before touching anything: exit 2, one line naming
    // the argument. Runs in a namespace like every other binary test.
    require_root();
    let ns = Netns::create(&format!("{}-x", unique_prefix("badpfx")));
    for bad in ["10.0.0.1/33", "fd00::1/129"] {
        let out = slotd_net(&ns, &["bind", "--interface", "lo", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = text(&out.stderr);
        assert!(
            err.contains(bad) && err.contains("ADDR") && err.lines().count() == 1,
            "{err}"
        );
    }
}

#[test]
fn ipv6_disabled_interface_is_reported() {
    let lan = Lan::new("nov6", &["h"]);
    let h = lan.host("h");
    h.sysctl("net.ipv6.conf.eth0.disable_ipv6", "1");
    let err = bind(h, prefix("fd00:77::100/128")).unwrap_err();
    assert!(
        matches!(&err, NetError::Ipv6Disabled { interface } if interface == IFACE),
        "{err}"
    );
    // IPv4 on the same interface is unaffected.
    bind(h, prefix("10.77.0.100/32")).unwrap();

    let out = slotd_net(h, &["bind", "--interface", IFACE, "fd00:77::100"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("IPv6 is disabled on interface \"eth0\""),
        "{}",
        text(&out.stderr)
    );
}

/// Run `slotd-net` as nobody with every capability dropped.
fn unprivileged(ns: &Netns, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec![
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        env!("CARGO_BIN_EXE_slotd-net"),
    ];
    all.extend_from_slice(args);
    let out = ns.exec("setpriv", &all);
    (out.status.code(), text(&out.stderr))
}

#[test]
fn missing_capabilities_are_named() {
    let lan = Lan::new("nocap", &["h"]);
    let h = lan.host("h");
    number(&lan, &[("h", 1)]);

    let (code, err) = unprivileged(h, &["bind", "--interface", IFACE, "10.77.0.100/32"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("CAP_NET_ADMIN") && err.contains("bind"), "{err}");

    bind(h, prefix("10.77.0.100/32")).unwrap();
    let (code, err) = unprivileged(h, &["release", "--interface", IFACE, "10.77.0.100/32"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("CAP_NET_ADMIN") && err.contains("release"), "{err}");

    let (code, err) = unprivileged(h, &["announce", "--interface", IFACE, "10.77.0.100"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("CAP_NET_RAW") && err.contains("announce"), "{err}");

    let (code, err) = unprivileged(h, &["probe", "--interface", IFACE, "10.77.0.100"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("CAP_NET_RAW") && err.contains("probe"), "{err}");

    // Listing needs no privilege.
    let (code, err) = unprivileged(h, &["list", "--interface", IFACE]);
    assert_eq!(code, Some(0), "{err}");
}
