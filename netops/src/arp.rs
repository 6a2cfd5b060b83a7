//! IPv4 ARP frames: gratuitous announcements and RFC 5227 probes.
//!
//! Pure functions from addresses to Ethernet frames and back, so the exact
//! bytes are unit-tested without sockets.

use std::net::Ipv4Addr;

use pnet_packet::arp::{ArpHardwareTypes, ArpOperation, ArpOperations, ArpPacket, MutableArpPacket};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket};
use pnet_packet::{MutablePacket, Packet};

use crate::MacAddr;

/// Ethernet header (14) + ARP for IPv4 over Ethernet (28).
const FRAME_LEN: usize = 42;

const BROADCAST: MacAddr = MacAddr([0xff; 6]);
const ZERO: MacAddr = MacAddr([0; 6]);

fn pnet_mac(m: MacAddr) -> pnet_datalink::MacAddr {
    let b = m.0;
    pnet_datalink::MacAddr::new(b[0], b[1], b[2], b[3], b[4], b[5])
}

fn our_mac(m: pnet_datalink::MacAddr) -> MacAddr {
    MacAddr(m.octets())
}

/// One broadcast ARP frame with the given fields.
fn frame(
    op: ArpOperation,
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let mut buf = vec![0u8; FRAME_LEN];
    // The lengths are constants, so these constructors cannot fail; an
    // empty frame (never sent as anything meaningful) is the fallback.
    let Some(mut eth) = MutableEthernetPacket::new(&mut buf) else {
        return Vec::new();
    };
    eth.set_destination(pnet_mac(BROADCAST));
    eth.set_source(pnet_mac(sender_mac));
    eth.set_ethertype(EtherTypes::Arp);
    let Some(mut arp) = MutableArpPacket::new(eth.payload_mut()) else {
        return Vec::new();
    };
    arp.set_hardware_type(ArpHardwareTypes::Ethernet);
    arp.set_protocol_type(EtherTypes::Ipv4);
    arp.set_hw_addr_len(6);
    arp.set_proto_addr_len(4);
    arp.set_operation(op);
    arp.set_sender_hw_addr(pnet_mac(sender_mac));
    arp.set_sender_proto_addr(sender_ip);
    arp.set_target_hw_addr(pnet_mac(target_mac));
    arp.set_target_proto_addr(target_ip);
    buf
}

/// Gratuitous ARP request (`arping -U`): "who has IP? tell IP", sender and
/// target IP both the service IP. Linux updates an existing neighbour entry
/// from it even within `locktime`, because sender IP equals target IP.
pub(crate) fn gratuitous_request(mac: MacAddr, ip: Ipv4Addr) -> Vec<u8> {
    frame(ArpOperations::Request, mac, ip, ZERO, ip)
}

/// Gratuitous ARP reply (`arping -A`): for hosts that only learn from
/// replies. Target MAC is our own, as iputils arping does.
pub(crate) fn gratuitous_reply(mac: MacAddr, ip: Ipv4Addr) -> Vec<u8> {
    frame(ArpOperations::Reply, mac, ip, mac, ip)
}

/// RFC 5227 ARP probe: sender IP 0.0.0.0, so nobody's cache is changed by
/// it, and an owner of `ip` answers with a reply.
pub(crate) fn probe(mac: MacAddr, ip: Ipv4Addr) -> Vec<u8> {
    frame(ArpOperations::Request, mac, Ipv4Addr::UNSPECIFIED, ZERO, ip)
}

/// If `frame` shows another machine claiming `ip` (any ARP packet whose
/// sender IP is `ip` from a MAC other than ours, RFC 5227 section 2.1.1),
/// that machine's MAC.
pub(crate) fn claimant(frame: &[u8], ip: Ipv4Addr, own: MacAddr) -> Option<MacAddr> {
    let eth = EthernetPacket::new(frame)?;
    if eth.get_ethertype() != EtherTypes::Arp {
        return None;
    }
    let arp = ArpPacket::new(eth.payload())?;
    if arp.get_protocol_type() != EtherTypes::Ipv4 || arp.get_sender_proto_addr() != ip {
        return None;
    }
    let sender = our_mac(arp.get_sender_hw_addr());
    (sender != own).then_some(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

    #[test]
    fn gratuitous_request_bytes() {
        let f = gratuitous_request(MAC, IP);
        assert_eq!(f.len(), 42);
        assert_eq!(&f[0..6], &[0xff; 6]); // broadcast
        assert_eq!(&f[6..12], &MAC.0);
        assert_eq!(&f[12..14], &[0x08, 0x06]); // ARP
        assert_eq!(&f[14..22], &[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
        assert_eq!(&f[22..28], &MAC.0);
        assert_eq!(&f[28..32], &IP.octets());
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &IP.octets());
    }

    #[test]
    fn gratuitous_reply_and_probe_fields() {
        let f = gratuitous_reply(MAC, IP);
        assert_eq!(&f[20..22], &[0, 2]); // reply
        assert_eq!(&f[28..32], &IP.octets());
        assert_eq!(&f[32..38], &MAC.0);
        let p = probe(MAC, IP);
        assert_eq!(&p[20..22], &[0, 1]);
        assert_eq!(&p[28..32], &[0, 0, 0, 0]); // RFC 5227: sender IP zero
        assert_eq!(&p[38..42], &IP.octets());
    }

    #[test]
    fn claimant_ignores_own_frames_and_other_ips() {
        let other = MacAddr([2, 0, 0, 0, 0, 2]);
        assert_eq!(claimant(&gratuitous_reply(other, IP), IP, MAC), Some(other));
        assert_eq!(claimant(&gratuitous_reply(MAC, IP), IP, MAC), None);
        assert_eq!(
            claimant(&gratuitous_reply(other, Ipv4Addr::new(10, 0, 1, 2)), IP, MAC),
            None
        );
        assert_eq!(claimant(&probe(other, IP), IP, MAC), None);
        assert_eq!(claimant(&[0u8; 10], IP, MAC), None);
    }
}
