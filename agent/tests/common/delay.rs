//! A slow link without netem (this kernel has none): a TCP proxy in front
//! of each agent's Peer port that holds every byte to or from the slow
//! machine for the one-way delay, in order, both ways. The agents are told
//! each other's proxy as their Peer address; the proxy runs in the agent's
//! own namespace and passes each connection on to the agent's real port.
//! Which machine is slow, and by how much, changes while connections stay
//! up (bytes already held keep the delay they were given).
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The slow machine (its address) and its link's one-way delay.
#[derive(Default)]
pub struct Delays {
    slow: Mutex<Option<(IpAddr, Duration)>>,
}

impl Delays {
    /// Makes the machine at `ip` slow by `delay` one way (`None`: heals).
    pub fn set(&self, slow: Option<(IpAddr, Duration)>) {
        *self.slow.lock().unwrap_or_else(PoisonError::into_inner) = slow;
    }

    /// The one-way delay between the machines at `a` and `b` now.
    fn between(&self, a: IpAddr, b: IpAddr) -> Duration {
        match *self.slow.lock().unwrap_or_else(PoisonError::into_inner) {
            Some((ip, d)) if ip == a || ip == b => d,
            _ => Duration::ZERO,
        }
    }
}

/// Serves `listen` until `stop`, passing every connection on to `upstream`
/// with the delay between the caller's machine and this one (`listen`'s
/// address). Call inside the namespace both addresses belong to; the
/// threads it starts stay in it.
pub fn serve(listen: SocketAddr, upstream: SocketAddr, delays: Arc<Delays>, stop: Arc<AtomicBool>) {
    let listener = TcpListener::bind(listen).unwrap_or_else(|e| panic!("proxy bind {listen}: {e}"));
    listener.set_nonblocking(true).expect("nonblocking");
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, from)) => {
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                for s in [&client, &server] {
                    let _ = s.set_nodelay(true);
                }
                let (a, b) = (from.ip(), listen.ip());
                let (c2, s2) = (
                    client.try_clone().expect("clone socket"),
                    server.try_clone().expect("clone socket"),
                );
                pump(client, server, a, b, delays.clone());
                pump(s2, c2, a, b, delays.clone());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Copies `from` to `to`, each chunk held until the delay it got on arrival
/// has passed: one thread reads, one writes, so the delay is latency, not a
/// rate.
fn pump(mut from: TcpStream, mut to: TcpStream, a: IpAddr, b: IpAddr, delays: Arc<Delays>) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = Instant::now() + delays.between(a, b);
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping `tx` ends the writer once it has written what it holds.
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}
