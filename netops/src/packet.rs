//! AF_PACKET sockets (through pnet) for sending and receiving whole
//! Ethernet frames: announcements and probes.
//!
//! pnet's socket calls block (poll with a timeout), so every send and receive
//! runs in `spawn_blocking`; the async side only waits. A socket is opened
//! per announce/probe: these are rare, and a fresh socket binds to the
//! network namespace and interface of the moment.

use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use pnet_datalink::{Channel, DataLinkReceiver, DataLinkSender, NetworkInterface};

use crate::netlink::Link;
use crate::{arp, ndp, AnnounceOptions, MacAddr, NetError};

/// How long one receive waits before we look at the clock again.
const READ_SLICE: Duration = Duration::from_millis(20);
/// A send that cannot complete in this time is an error, not a hang.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// An open packet socket on one interface.
struct Socket {
    tx: Box<dyn DataLinkSender>,
    rx: Box<dyn DataLinkReceiver>,
    mac: MacAddr,
    interface: String,
}

fn io_error(op: &'static str, interface: &str, e: io::Error) -> NetError {
    if e.raw_os_error() == Some(libc::EPERM) || e.kind() == io::ErrorKind::PermissionDenied {
        NetError::MissingCapability {
            cap: "CAP_NET_RAW",
            op,
            interface: interface.to_string(),
        }
    } else if e.raw_os_error() == Some(libc::ENODEV) || e.raw_os_error() == Some(libc::ENXIO) {
        NetError::NoSuchInterface {
            name: interface.to_string(),
        }
    } else {
        NetError::Io {
            op,
            interface: interface.to_string(),
            source: e,
        }
    }
}

fn open(link: &Link, op: &'static str) -> Result<Socket, NetError> {
    let mac = link.mac.ok_or_else(|| NetError::NoMacAddress {
        interface: link.name.clone(),
    })?;
    // pnet only uses the index (to bind) and the name (for messages).
    let iface = NetworkInterface {
        name: link.name.clone(),
        description: String::new(),
        index: link.index,
        mac: None,
        ips: Vec::new(),
        flags: 0,
    };
    let config = pnet_datalink::Config {
        read_timeout: Some(READ_SLICE),
        write_timeout: Some(WRITE_TIMEOUT),
        // We only need frames addressed to us, broadcast and multicast.
        promiscuous: false,
        ..Default::default()
    };
    match pnet_datalink::channel(&iface, config) {
        Ok(Channel::Ethernet(tx, rx)) => Ok(Socket {
            tx,
            rx,
            mac,
            interface: link.name.clone(),
        }),
        Ok(_) => Err(NetError::Io {
            op,
            interface: link.name.clone(),
            source: io::Error::other("pnet returned a non-Ethernet channel"),
        }),
        Err(e) => Err(io_error(op, &link.name, e)),
    }
}

impl Socket {
    /// Send each frame once (blocking).
    fn send_all(&mut self, frames: &[Vec<u8>], op: &'static str) -> Result<(), NetError> {
        for f in frames {
            match self.tx.send_to(f, None) {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(io_error(op, &self.interface, e)),
                None => {
                    return Err(NetError::Io {
                        op,
                        interface: self.interface.clone(),
                        source: io::Error::other("frame not sent"),
                    })
                }
            }
        }
        Ok(())
    }
}

/// Run `f` on the blocking pool; a panic there becomes an error.
async fn blocking<T: Send + 'static>(
    op: &'static str,
    interface: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| NetError::Io {
        op,
        interface: interface.to_string(),
        source: io::Error::other(e.to_string()),
    })
}

/// The frames of one announcement round for `addr`.
fn announcement(mac: MacAddr, addr: IpAddr) -> Vec<Vec<u8>> {
    match addr {
        IpAddr::V4(ip) => vec![arp::gratuitous_request(mac, ip), arp::gratuitous_reply(mac, ip)],
        IpAddr::V6(ip) => vec![ndp::unsolicited_na(mac, ip)],
    }
}

/// Send `options.count` announcement rounds, `options.interval` apart.
/// The pauses are async, so dropping the future stops further rounds.
pub(crate) async fn announce(link: &Link, addr: IpAddr, options: AnnounceOptions) -> Result<(), NetError> {
    if options.count == 0 {
        return Ok(());
    }
    let mut socket = open(link, "announce")?;
    let frames = announcement(socket.mac, addr);
    for round in 0..options.count {
        if round > 0 {
            tokio::time::sleep(options.interval).await;
        }
        let frames = frames.clone();
        let (back, result) = blocking("announce", &link.name, move || {
            let r = socket.send_all(&frames, "announce");
            (socket, r)
        })
        .await?;
        socket = back;
        result?;
        tracing::debug!(interface = %link.name, %addr, round, "announced");
    }
    Ok(())
}

/// Probe for another owner of `addr` for up to `timeout`; the probe is sent
/// three times, spread over the timeout (RFC 5227 sends PROBE_NUM = 3).
pub(crate) async fn probe(link: &Link, addr: IpAddr, timeout: Duration) -> Result<Option<MacAddr>, NetError> {
    let mut socket = open(link, "probe")?;
    let frame = match addr {
        IpAddr::V4(ip) => arp::probe(socket.mac, ip),
        IpAddr::V6(ip) => ndp::dad_solicitation(socket.mac, ip),
    };
    let interface = link.name.clone();
    blocking("probe", &link.name, move || {
        let start = Instant::now();
        let deadline = start + timeout;
        let spacing = timeout / 3;
        let mut sent = 0u32;
        loop {
            let now = Instant::now();
            if sent < 3 && now >= start + spacing * sent {
                socket.send_all(std::slice::from_ref(&frame), "probe")?;
                sent += 1;
            }
            if now >= deadline {
                return Ok(None);
            }
            match socket.rx.next() {
                Ok(frame) => {
                    let found = match addr {
                        IpAddr::V4(ip) => arp::claimant(frame, ip, socket.mac),
                        IpAddr::V6(ip) => ndp::claimant(frame, ip, socket.mac),
                    };
                    if found.is_some() {
                        return Ok(found);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(io_error("probe", &interface, e)),
            }
        }
    })
    .await?
}
