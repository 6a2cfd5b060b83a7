//! Addresses and links over rtnetlink.
//!
//! Every request asks for the kernel's acknowledgement and waits for it: a
//! VIP mover that fires and forgets cannot tell "bound" from "about to be
//! bound". Kernel errors are turned into [`NetError`] variants that name the
//! interface and, for `EPERM`, the missing capability.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressProtocol,
};
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::Handle;

use crate::ops::ADDRESS_PROTOCOL;
use crate::{BoundAddress, IpPrefix, MacAddr, NetError, Outcome};

/// What we need to know about an interface.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    /// Kernel interface index.
    pub index: u32,
    /// Interface name as the caller gave it.
    pub name: String,
    /// Ethernet address, if the interface has one.
    pub mac: Option<MacAddr>,
}

/// The errno in a netlink error, as a positive number.
fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}

/// Map a netlink error to a `NetError` for operation `op` on `interface`.
fn classify(err: rtnetlink::Error, op: &'static str, interface: &str, v6: bool) -> NetError {
    match errno(&err) {
        Some(libc::EPERM) => NetError::MissingCapability {
            cap: "CAP_NET_ADMIN",
            op,
            interface: interface.to_string(),
        },
        Some(libc::ENODEV) => NetError::NoSuchInterface {
            name: interface.to_string(),
        },
        // addrconf answers EACCES when disable_ipv6=1 on the device, and
        // EAFNOSUPPORT when IPv6 is off in the whole kernel.
        Some(libc::EACCES) | Some(libc::EAFNOSUPPORT) if v6 => NetError::Ipv6Disabled {
            interface: interface.to_string(),
        },
        _ => NetError::Netlink {
            op,
            interface: interface.to_string(),
            source: err,
        },
    }
}

/// A name the kernel could never have given an interface. Checked up front
/// so such names fail as "no such interface" instead of a bare EINVAL.
fn impossible_name(name: &str) -> bool {
    name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

/// Look up `name` in the current network namespace.
pub(crate) async fn link(handle: &Handle, name: &str) -> Result<Link, NetError> {
    if impossible_name(name) {
        return Err(NetError::NoSuchInterface { name: name.to_string() });
    }
    let mut links = handle.link().get().match_name(name).execute();
    let msg = match links.try_next().await {
        Ok(Some(msg)) => msg,
        Ok(None) => return Err(NetError::NoSuchInterface { name: name.to_string() }),
        Err(e) => return Err(classify(e, "link lookup", name, false)),
    };
    let mac = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr),
        _ => None,
    });
    Ok(Link {
        index: msg.header.index,
        name: name.to_string(),
        mac,
    })
}

/// The local address and flags carried by an address message.
fn parse_address(msg: &AddressMessage) -> Option<BoundAddress> {
    let mut local = None;
    let mut address = None;
    let mut flags = None;
    let mut proto = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            AddressAttribute::Flags(f) => flags = Some(*f),
            AddressAttribute::Protocol(p) => proto = Some(u8::from(*p)),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
    // point-to-point links and the only one present for IPv6.
    let addr: IpAddr = local.or(address)?;
    let prefix = IpPrefix::new(addr, msg.header.prefix_len).ok()?;
    let flags = flags.unwrap_or_else(|| AddressFlags::from_bits_retain(u32::from(msg.header.flags.bits())));
    Some(BoundAddress {
        prefix,
        tentative: flags.contains(AddressFlags::Tentative),
        dad_failed: flags.contains(AddressFlags::Dadfailed),
        ours: proto == Some(ADDRESS_PROTOCOL),
    })
}

/// Addresses of `link`, with the raw messages (needed to delete one).
async fn dump(handle: &Handle, link: &Link) -> Result<Vec<(BoundAddress, AddressMessage)>, NetError> {
    let mut stream = handle.address().get().set_link_index_filter(link.index).execute();
    let mut out = Vec::new();
    loop {
        match stream.try_next().await {
            Ok(Some(msg)) => {
                if let Some(bound) = parse_address(&msg) {
                    out.push((bound, msg));
                }
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(classify(e, "list", &link.name, false)),
        }
    }
}

/// All addresses on `link`.
pub(crate) async fn list(handle: &Handle, link: &Link) -> Result<Vec<BoundAddress>, NetError> {
    Ok(dump(handle, link).await?.into_iter().map(|(b, _)| b).collect())
}

/// The entry for `addr` on `link`, if any, checked against the requested
/// prefix length.
async fn find(handle: &Handle, link: &Link, prefix: IpPrefix) -> Result<Option<AddressMessage>, NetError> {
    for (bound, msg) in dump(handle, link).await? {
        if bound.prefix.addr() != prefix.addr() {
            continue;
        }
        if bound.prefix.prefix_len() != prefix.prefix_len() {
            return Err(NetError::PrefixMismatch {
                interface: link.name.clone(),
                addr: prefix.addr(),
                bound_len: bound.prefix.prefix_len(),
                requested_len: prefix.prefix_len(),
            });
        }
        return Ok(Some(msg));
    }
    Ok(None)
}

/// Add `prefix` to `link` and wait for the kernel's acknowledgement.
pub(crate) async fn add(handle: &Handle, link: &Link, prefix: IpPrefix) -> Result<Outcome, NetError> {
    if find(handle, link, prefix).await?.is_some() {
        return Ok(Outcome::Unchanged);
    }
    let mut req = handle.address().add(link.index, prefix.addr(), prefix.prefix_len());
    req.message_mut()
        .attributes
        .push(AddressAttribute::Protocol(AddressProtocol::from(ADDRESS_PROTOCOL)));
    if prefix.is_ipv6() {
        // nodad: the address must be usable at once (the old holder is gone
        // or fenced; waiting a second for DAD is the outage we avoid).
        // noprefixroute: a service /128 needs no route of its own.
        let msg = req.message_mut();
        msg.header.flags |= AddressHeaderFlags::Nodad;
        msg.attributes.push(AddressAttribute::Flags(
            AddressFlags::Nodad | AddressFlags::Noprefixroute,
        ));
    }
    match req.execute().await {
        Ok(()) => Ok(Outcome::Changed),
        // Someone else added it between our look and our add.
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(Outcome::Unchanged),
        Err(e) => Err(classify(e, "bind", &link.name, prefix.is_ipv6())),
    }
}

/// Remove `prefix` from `link` and wait for the kernel's acknowledgement.
pub(crate) async fn del(handle: &Handle, link: &Link, prefix: IpPrefix) -> Result<Outcome, NetError> {
    let Some(msg) = find(handle, link, prefix).await? else {
        return Ok(Outcome::Unchanged);
    };
    match handle.address().del(msg).execute().await {
        Ok(()) => Ok(Outcome::Changed),
        // Removed by someone else meanwhile.
        Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(Outcome::Unchanged),
        Err(e) => Err(classify(e, "release", &link.name, prefix.is_ipv6())),
    }
}
