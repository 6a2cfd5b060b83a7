//! A service IP moves from A to B; client C follows within moments.

mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use slotd_netops::testkit::{Lan, DEFAULT_WAIT, IFACE};
use slotd_netops::{AddressOps, AnnounceOptions, IpPrefix, KernelOps};

const PORT: u16 = 4242;

/// A holds `vip`; C has A's MAC for it; A releases; B binds and announces;
/// C's neighbour entry switches to B's MAC and a TCP connect from C reaches
/// a listener in B.
fn takeover(tag: &str, vip: &str, client_addr: &str) {
    let lan = Lan::new(tag, &["a", "b", "c"]);
    number(&lan, &[("a", 1), ("b", 2), ("c", 3)]);
    let (a, b, c) = (lan.host("a"), lan.host("b"), lan.host("c"));
    let (mac_a, mac_b) = (a.mac(IFACE), b.mac(IFACE));
    let vip: IpPrefix = prefix(vip);
    let target = SocketAddr::new(vip.addr(), PORT);

    // A holds the IP; C talks to it (A refuses the port), so C's kernel
    // resolves the IP to A's MAC.
    bind(a, vip).unwrap();
    let refused = c.run_blocking(move || TcpStream::connect_timeout(&target, Duration::from_secs(5)));
    match refused {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
        other => panic!("expected A to refuse the connection, got {other:?}"),
    }
    assert_eq!(c.neighbour_mac(IFACE, vip.addr()), Some(mac_a), "C learnt A's MAC");

    // A is fenced: the IP goes.
    release(a, vip).unwrap();

    // B takes over: bind, listen, announce.
    let listener: TcpListener = b.run(move || async move {
        let ops = KernelOps::new().unwrap();
        ops.bind(IFACE, vip).await.unwrap();
        let listener = TcpListener::bind(target).unwrap();
        ops.announce(IFACE, vip.addr(), AnnounceOptions::default())
            .await
            .unwrap();
        listener
    });

    // C's kernel now has B's MAC for the IP, from the announcement alone
    // (no traffic from C in between).
    c.wait_neighbour_mac(IFACE, vip.addr(), mac_b, DEFAULT_WAIT);

    // And C's connection reaches B.
    let stream = c
        .run_blocking(move || TcpStream::connect_timeout(&target, Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("connect from C to {target}: {e}"));
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + DEFAULT_WAIT;
    let (_conn, peer) = loop {
        match listener.accept() {
            Ok(x) => break x,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("B did not accept C's connection: {e}"),
        }
    };
    assert_eq!(peer.ip().to_string(), client_addr, "B's listener got C's connection");
    assert_eq!(stream.peer_addr().unwrap(), target);

    // A, which released the IP, announces it late (a round checked before
    // its release): refused, nothing sent, C stays with B.
    let late = a.run(move || async move {
        let ops = KernelOps::new().unwrap();
        ops.announce(IFACE, vip.addr(), AnnounceOptions::default()).await
    });
    assert!(matches!(late, Err(slotd_netops::NetError::NotBound { .. })), "{late:?}");
    // Had A announced, C would have switched to A's MAC within the rounds.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.neighbour_mac(IFACE, vip.addr()), Some(mac_b), "C still goes to B");
}

#[test]
fn ipv4_takeover_moves_client_to_new_holder() {
    takeover("tk4", "10.77.0.100/32", "10.77.0.3");
}

#[test]
fn ipv6_takeover_moves_client_to_new_holder() {
    takeover("tk6", "fd00:77::100/128", "fd00:77::3");
}
