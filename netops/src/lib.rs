//! `slotd-netops` will own the kernel side of moving a service IP: bind,
//! release and list addresses (rtnetlink), gratuitous ARP and IPv6 unsolicited
//! neighbour advertisements, and the RFC 5227 ARP probe. It knows nothing of
//! stores or Raft.
