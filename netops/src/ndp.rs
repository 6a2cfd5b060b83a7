//! IPv6 neighbour discovery frames: unsolicited neighbour advertisements
//! (the IPv6 gratuitous ARP) and DAD-style neighbour solicitations (the IPv6
//! probe).
//!
//! Built by hand on top of pnet's Ethernet/IPv6 headers; pure functions, so
//! byte layout and checksum are unit-tested.

use std::net::Ipv6Addr;

use pnet_packet::ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket};
use pnet_packet::icmpv6::{self, Icmpv6Packet};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::{Ipv6Packet, MutableIpv6Packet};
use pnet_packet::{MutablePacket, Packet};

use crate::MacAddr;

const ETH_LEN: usize = 14;
const IPV6_LEN: usize = 40;
const ICMP_NS: u8 = 135;
const ICMP_NA: u8 = 136;
/// NA flags byte: Override (0x20). Not Router (0x80), not Solicited (0x40):
/// an unsolicited NA to a multicast address must have S clear.
const NA_OVERRIDE: u8 = 0x20;
/// NDP option: target link-layer address.
const OPT_TARGET_LLADDR: u8 = 2;

fn pnet_mac(m: MacAddr) -> pnet_datalink::MacAddr {
    let b = m.0;
    pnet_datalink::MacAddr::new(b[0], b[1], b[2], b[3], b[4], b[5])
}

/// The Ethernet multicast address of an IPv6 multicast group (RFC 2464).
fn multicast_mac(group: Ipv6Addr) -> MacAddr {
    let o = group.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// Solicited-node multicast group of `addr` (ff02::1:ffXX:XXXX).
fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        (u16::from(o[14]) << 8) | u16::from(o[15]),
    )
}

/// Ethernet + IPv6 (hop limit 255, as NDP requires) around an ICMPv6
/// message, with the ICMPv6 checksum filled in.
fn frame(src_mac: MacAddr, src: Ipv6Addr, dst: Ipv6Addr, mut icmp: Vec<u8>) -> Vec<u8> {
    let sum = match Icmpv6Packet::new(&icmp) {
        Some(p) => icmpv6::checksum(&p, &src, &dst),
        None => 0,
    };
    if icmp.len() >= 4 {
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    let mut buf = vec![0u8; ETH_LEN + IPV6_LEN + icmp.len()];
    let Some(mut eth) = MutableEthernetPacket::new(&mut buf) else {
        return Vec::new();
    };
    eth.set_destination(pnet_mac(multicast_mac(dst)));
    eth.set_source(pnet_mac(src_mac));
    eth.set_ethertype(EtherTypes::Ipv6);
    let Some(mut ip) = MutableIpv6Packet::new(eth.payload_mut()) else {
        return Vec::new();
    };
    ip.set_version(6);
    ip.set_payload_length(icmp.len() as u16);
    ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
    ip.set_hop_limit(255);
    ip.set_source(src);
    ip.set_destination(dst);
    ip.set_payload(&icmp);
    buf
}

/// Unsolicited neighbour advertisement for `addr` at `mac`, to all nodes
/// (ff02::1), Override set, with the target link-layer address option.
/// Linux replaces the MAC of an existing neighbour entry on receipt.
pub(crate) fn unsolicited_na(mac: MacAddr, addr: Ipv6Addr) -> Vec<u8> {
    let mut icmp = vec![0u8; 32];
    icmp[0] = ICMP_NA;
    icmp[4] = NA_OVERRIDE;
    icmp[8..24].copy_from_slice(&addr.octets());
    icmp[24] = OPT_TARGET_LLADDR;
    icmp[25] = 1; // length in units of 8 bytes
    icmp[26..32].copy_from_slice(&mac.0);
    // Source: the advertised address itself, as the kernel does for its own
    // unsolicited NAs.
    frame(mac, addr, Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), icmp)
}

/// Duplicate-address-detection solicitation for `addr`: source ::, to the
/// solicited-node group, no source link-layer option (RFC 4862 5.4.2). An
/// owner answers with an NA to all nodes; our caches are not touched.
pub(crate) fn dad_solicitation(mac: MacAddr, addr: Ipv6Addr) -> Vec<u8> {
    let mut icmp = vec![0u8; 24];
    icmp[0] = ICMP_NS;
    icmp[8..24].copy_from_slice(&addr.octets());
    frame(mac, Ipv6Addr::UNSPECIFIED, solicited_node(addr), icmp)
}

/// If `frame` is a neighbour advertisement for `addr` from a MAC other than
/// ours, that MAC (the target link-layer option, else the Ethernet source).
pub(crate) fn claimant(frame: &[u8], addr: Ipv6Addr, own: MacAddr) -> Option<MacAddr> {
    let eth = EthernetPacket::new(frame)?;
    if eth.get_ethertype() != EtherTypes::Ipv6 {
        return None;
    }
    let ip = Ipv6Packet::new(eth.payload())?;
    if ip.get_next_header() != IpNextHeaderProtocols::Icmpv6 || ip.get_hop_limit() != 255 {
        return None;
    }
    let icmp = ip.payload();
    if icmp.len() < 24 || icmp[0] != ICMP_NA || icmp[8..24] != addr.octets() {
        return None;
    }
    let mut mac = MacAddr(eth.get_source().octets());
    let mut opts = &icmp[24..];
    while opts.len() >= 8 {
        let len = usize::from(opts[1]) * 8;
        if len == 0 || len > opts.len() {
            break;
        }
        if opts[0] == OPT_TARGET_LLADDR && len >= 8 {
            let mut b = [0u8; 6];
            b.copy_from_slice(&opts[2..8]);
            mac = MacAddr(b);
        }
        opts = &opts[len..];
    }
    (mac != own).then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    fn addr() -> Ipv6Addr {
        "fd00::1:2:3".parse().unwrap()
    }

    /// Internet checksum over the IPv6 pseudo-header and the message; zero
    /// when the message carries a correct checksum.
    fn verify(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        let mut add = |b: &[u8]| {
            for c in b.chunks(2) {
                let w = if c.len() == 2 {
                    u16::from_be_bytes([c[0], c[1]])
                } else {
                    u16::from(c[0]) << 8
                };
                sum += u32::from(w);
            }
        };
        add(&src.octets());
        add(&dst.octets());
        add(&(icmp.len() as u32).to_be_bytes());
        add(&[0, 0, 0, 58]);
        add(icmp);
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn unsolicited_na_layout() {
        let f = unsolicited_na(MAC, addr());
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[14 + 7], 255, "hop limit");
        assert_eq!(f[14 + 6], 58, "ICMPv6");
        let icmp = &f[54..];
        assert_eq!(icmp[0], 136);
        assert_eq!(icmp[4], 0x20, "override only");
        assert_eq!(&icmp[8..24], &addr().octets());
        assert_eq!(&icmp[24..26], &[2, 1]);
        assert_eq!(&icmp[26..32], &MAC.0);
        let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
        assert_eq!(verify(addr(), all_nodes, icmp), 0);
    }

    #[test]
    fn dad_solicitation_layout() {
        let f = dad_solicitation(MAC, addr());
        assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0x02, 0x00, 0x03]);
        let group: Ipv6Addr = "ff02::1:ff02:3".parse().unwrap();
        assert_eq!(&f[14 + 8..14 + 24], &[0u8; 16], "source ::");
        assert_eq!(&f[14 + 24..14 + 40], &group.octets());
        let icmp = &f[54..];
        assert_eq!(icmp.len(), 24, "no options");
        assert_eq!(icmp[0], 135);
        assert_eq!(verify(Ipv6Addr::UNSPECIFIED, group, icmp), 0);
    }

    #[test]
    fn claimant_reads_target_lladdr() {
        let other = MacAddr([2, 0, 0, 0, 0, 9]);
        assert_eq!(claimant(&unsolicited_na(other, addr()), addr(), MAC), Some(other));
        assert_eq!(claimant(&unsolicited_na(MAC, addr()), addr(), MAC), None);
        assert_eq!(
            claimant(&unsolicited_na(other, "fd00::9".parse().unwrap()), addr(), MAC),
            None
        );
        assert_eq!(claimant(&dad_solicitation(other, addr()), addr(), MAC), None);
    }
}
