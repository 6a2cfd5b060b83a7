//! Benchmark: time from B's bind call to client C's neighbour entry for the
//! service IP showing B's MAC, over `--runs` takeovers, IPv4 and IPv6.
//!
//! Run as root:
//! `cargo run --release -p slotd-netops --features testkit --example takeover_bench -- --runs 20`
//!
//! Setup (once): namespaces a, b, c on one bridge. Each run: C's entry for
//! the IP is set to A's MAC (stale, as after A served it), B does not hold
//! the IP; then B binds and announces (3 x 100 ms) while a watcher thread in
//! C reads C's neighbour table over netlink every 200 us. The figure is
//! watcher-saw-B's-MAC minus just-before-bind, both on the monotonic clock.

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::TryStreamExt;
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
use slotd_netops::testkit::{Lan, Netns, IFACE};
use slotd_netops::{AddressOps, AnnounceOptions, IpPrefix, KernelOps, MacAddr};

/// Upper bounds so a mistyped argument cannot run for hours.
const MAX_RUNS: usize = 1000;
const RUN_DEADLINE: Duration = Duration::from_secs(10);
/// How often the watcher reads C's neighbour table.
const POLL: Duration = Duration::from_micros(200);

#[derive(Parser)]
struct Args {
    /// Takeovers per address family.
    #[arg(long, default_value_t = 20)]
    runs: usize,
}

/// One measured takeover.
struct Sample {
    /// Bind call start → C's entry shows B's MAC.
    switch: Duration,
    /// Bind call start → bind acknowledged by the kernel.
    bind: Duration,
}

/// Commands to the long-lived actor thread in B.
enum ToB {
    /// Bind + announce; reply with (instant before bind, bind duration).
    Take(IpPrefix, mpsc::Sender<Result<(Instant, Duration), String>>),
    /// Release; reply when done.
    Release(IpPrefix, mpsc::Sender<Result<(), String>>),
}

/// B: one runtime and one netlink connection for all runs, so thread and
/// socket setup are not measured.
fn spawn_b(b: &Netns) -> tokio::sync::mpsc::UnboundedSender<ToB> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ToB>();
    drop(b.spawn(move || async move {
        let ops = match KernelOps::new() {
            Ok(ops) => ops,
            Err(e) => {
                eprintln!("B: {e}");
                return;
            }
        };
        while let Some(cmd) = rx.recv().await {
            match cmd {
                ToB::Take(p, reply) => {
                    let t0 = Instant::now();
                    let r = ops.bind(IFACE, p).await;
                    let bind = t0.elapsed();
                    let r = match r {
                        Ok(_) => ops
                            .announce(IFACE, p.addr(), AnnounceOptions::default())
                            .await
                            .map(|()| (t0, bind)),
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(r.map_err(|e| e.to_string()));
                }
                ToB::Release(p, reply) => {
                    let r = ops.release(IFACE, p).await.map(|_| ());
                    let _ = reply.send(r.map_err(|e| e.to_string()));
                }
            }
        }
    }));
    tx
}

/// C's neighbour entry for `addr`, read over netlink.
async fn neighbour(handle: &rtnetlink::Handle, addr: IpAddr) -> Result<Option<MacAddr>, String> {
    let mut dump = handle.neighbours().get().execute();
    while let Some(msg) = dump.try_next().await.map_err(|e| e.to_string())? {
        let mut dst = None;
        let mut mac = None;
        for a in &msg.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => dst = Some(IpAddr::V4(*v4)),
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => dst = Some(IpAddr::V6(*v6)),
                NeighbourAttribute::LinkLayerAddress(b) => mac = <[u8; 6]>::try_from(b.as_slice()).ok().map(MacAddr),
                _ => {}
            }
        }
        if dst == Some(addr) {
            return Ok(mac);
        }
    }
    Ok(None)
}

/// Commands to the watcher thread in C: wait until `addr` shows `mac`,
/// reply with the instant it was first seen (or an error at the deadline).
type Watch = (IpAddr, MacAddr, mpsc::Sender<Result<Instant, String>>);

fn spawn_watcher(c: &Netns) -> (tokio::sync::mpsc::UnboundedSender<Watch>, mpsc::Receiver<()>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Watch>();
    let (started_tx, started_rx) = mpsc::channel();
    drop(c.spawn(move || async move {
        let (conn, handle, _) = match rtnetlink::new_connection() {
            Ok(x) => x,
            Err(e) => {
                eprintln!("C: {e}");
                return;
            }
        };
        tokio::spawn(conn);
        while let Some((addr, want, reply)) = rx.recv().await {
            let _ = started_tx.send(());
            let deadline = Instant::now() + RUN_DEADLINE;
            let r = loop {
                match neighbour(&handle, addr).await {
                    Ok(Some(m)) if m == want => break Ok(Instant::now()),
                    // A plain 200 us sleep: tokio's timer rounds to
                    // milliseconds, which would dominate the figure. This
                    // runtime serves only the watcher, so blocking it
                    // briefly delays nothing else.
                    Ok(_) if Instant::now() < deadline => std::thread::sleep(POLL),
                    Ok(seen) => break Err(format!("C still has {seen:?} for {addr}")),
                    Err(e) => break Err(e),
                }
            };
            let _ = reply.send(r);
        }
    }));
    (tx, started_rx)
}

fn measure(lan: &Lan, vip: IpPrefix, runs: usize) -> Result<Vec<Sample>, String> {
    let (b, c) = (lan.host("b"), lan.host("c"));
    let mac_a = lan.host("a").mac(IFACE);
    let mac_b = b.mac(IFACE);
    let to_b = spawn_b(b);
    let (to_c, started) = spawn_watcher(c);
    let vip_text = vip.addr().to_string();
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        // C believes the IP is at A (as it would after A served it).
        c.try_ip(&[
            "neigh",
            "replace",
            &vip_text,
            "lladdr",
            &mac_a.to_string(),
            "dev",
            IFACE,
            "nud",
            "stale",
        ])?;
        let (w_tx, w_rx) = mpsc::channel();
        to_c.send((vip.addr(), mac_b, w_tx)).map_err(|_| "watcher gone")?;
        started
            .recv_timeout(RUN_DEADLINE)
            .map_err(|_| "watcher did not start")?;
        let (b_tx, b_rx) = mpsc::channel();
        to_b.send(ToB::Take(vip, b_tx)).map_err(|_| "B gone")?;
        let seen = w_rx
            .recv_timeout(RUN_DEADLINE + Duration::from_secs(1))
            .map_err(|_| "no answer from watcher")??;
        let (t0, bind) = b_rx.recv_timeout(RUN_DEADLINE).map_err(|_| "no answer from B")??;
        samples.push(Sample {
            switch: seen.saturating_duration_since(t0),
            bind,
        });
        let (r_tx, r_rx) = mpsc::channel();
        to_b.send(ToB::Release(vip, r_tx)).map_err(|_| "B gone")?;
        r_rx.recv_timeout(RUN_DEADLINE).map_err(|_| "no answer from B")??;
    }
    Ok(samples)
}

fn report(name: &str, samples: &[Sample]) {
    let stat = |mut v: Vec<Duration>| {
        v.sort();
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2
        };
        (median, v[0], v[n - 1])
    };
    let (med, min, max) = stat(samples.iter().map(|s| s.switch).collect());
    let (bmed, _, bmax) = stat(samples.iter().map(|s| s.bind).collect());
    println!(
        "{name}: bind call -> client neighbour switch over {} runs: median {:.2} ms, min {:.2} ms, max {:.2} ms (bind alone: median {:.3} ms, max {:.3} ms)",
        samples.len(),
        med.as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        bmed.as_secs_f64() * 1e3,
        bmax.as_secs_f64() * 1e3,
    );
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.runs == 0 || args.runs > MAX_RUNS {
        eprintln!("takeover_bench: --runs must be 1..={MAX_RUNS}");
        return ExitCode::from(2);
    }
    let lan = Lan::new("bench", &["a", "b", "c"]);
    for (name, n) in [("a", 1), ("b", 2), ("c", 3)] {
        lan.host(name).add_addr(IFACE, &format!("10.77.0.{n}/24"));
        lan.host(name).add_addr(IFACE, &format!("fd00:77::{n}/64"));
    }
    for (name, vip) in [("IPv4", "10.77.0.100/32"), ("IPv6", "fd00:77::100/128")] {
        let vip: IpPrefix = match vip.parse() {
            Ok(v) => v,
            Err(e) => {
                eprintln!("takeover_bench: {e}");
                return ExitCode::FAILURE;
            }
        };
        match measure(&lan, vip, args.runs) {
            Ok(samples) => report(name, &samples),
            Err(e) => {
                eprintln!("takeover_bench: {name}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
