//! Switchover benchmark in network namespaces (root), default timings, real
//! `slotd` processes (release build), the `none` driver (no Cyrus: phases
//! only). Prints one table; asserts nothing; every wait is bounded.
//!
//! `cargo bench -p slotd-agent --bench switchover -- [RUNS] [one] [drain] [sigterm]`
//! (default 10 runs of every section).
//!
//! - one store's switchover (`slotctl failover ST --wait`): the phases as
//!   the history times them (begin → complete), and from the command to
//!   the client reaching the new master; with the default RFC 5227 probe
//!   (200 ms) and with a 20 ms one, to show what the probe costs;
//! - `slotctl drain --wait` of a node with 20 masters at concurrency 1, 4, 8;
//! - SIGTERM of an agent with 20 masters → all of them served elsewhere
//!   (and the agent's exit).

#[path = "../tests/common/netns.rs"]
mod netns;

mod common;

use common::{figures, Args};

use std::net::IpAddr;
use std::time::{Duration, Instant};

use netns::{masters, ok, wait_for, Site, SiteOptions, WAIT};
use serde_json::Value;

fn row(what: &str, v: Vec<Duration>) {
    let (median, max, n) = figures(v);
    println!("| {what} | {median:.0} ms | {max:.0} ms | {n} |");
}

/// Waits until the client reaches each of `ips` on a node other than `from`.
fn served_elsewhere(site: &Site, ips: &[IpAddr], from: &str) {
    wait_for("the moved IPs served elsewhere", WAIT, || {
        site.who_serves_all_within(ips, Duration::from_millis(50))
            .iter()
            .all(|w| w.as_deref().is_some_and(|w| w != from))
            .then_some(())
    });
}

/// Waits until every backlog is reported and all is served: a switchover
/// is measured from a settled cluster.
fn settled(site: &Site) -> Value {
    wait_for("backlogs reported", WAIT, || {
        let s = site.served_by_masters(0);
        s["stores"]
            .as_array()?
            .iter()
            .all(|st| st["backlog"].as_u64().is_some())
            .then_some(s)
    })
}

fn one_store(runs: usize, probe_ms: u64) -> (Vec<Duration>, Vec<Duration>) {
    let site = Site::start_with(
        "bsw",
        SiteOptions {
            slots: 40,
            probe_timeout_ms: probe_ms,
            ..SiteOptions::default()
        },
    );
    site.init();
    let (mut phases, mut client) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let s = settled(&site);
        let st = &s["stores"][run % 60];
        let name = st["name"].as_str().expect("name").to_owned();
        let from = st["master"].as_str().expect("master").to_owned();
        let ip = netns::master_ip(st).expect("ip");
        let t0 = Instant::now();
        let out = ok(site.slotctl(0, &["failover", &name, "--json"]));
        let begun: Value = serde_json::from_str(&out).expect("json");
        served_elsewhere(&site, &[ip], &from);
        client.push(t0.elapsed());
        let done = ok(site.slotctl(0, &["history", &name, "--limit", "1", "--json"]));
        let h: Value = serde_json::from_str(&done).expect("json");
        let e = &h["entries"][0];
        if e["what"] == "switchover" && e["epoch"].as_u64() > begun["epoch"].as_u64() {
            phases.push(Duration::from_millis(e["duration_ms"].as_u64().unwrap_or(0)));
        } else {
            wait_for("the switchover completed", WAIT, || {
                let h: Value =
                    serde_json::from_str(&ok(site.slotctl(0, &["history", &name, "--limit", "1", "--json"]))).ok()?;
                let e = &h["entries"][0];
                (e["epoch"].as_u64() > begun["epoch"].as_u64()).then(|| {
                    phases.push(Duration::from_millis(e["duration_ms"].as_u64().unwrap_or(0)));
                })
            });
        }
    }
    (phases, client)
}

fn drains(runs: usize) {
    let site = Site::start_with(
        "bdr",
        SiteOptions {
            slots: 40,
            ..SiteOptions::default()
        },
    );
    site.init();
    for k in [1, 4, 8] {
        let mut took = Vec::new();
        for _ in 0..runs {
            let s = settled(&site);
            assert_eq!(masters(&s, "imap1").len(), 20, "imap1 has its 20 masters");
            let t0 = Instant::now();
            ok(site.slotctl(1, &["drain", "imap1", "--concurrency", &k.to_string(), "--wait"]));
            took.push(t0.elapsed());
            ok(site.slotctl(1, &["undrain", "imap1"]));
            ok(site.slotctl(1, &["rebalance", "--concurrency", "8", "--wait"]));
        }
        row(&format!("drain of a node with 20 masters, concurrency {k}"), took);
    }
}

fn sigterms(runs: usize) {
    let site = Site::start_with(
        "bst",
        SiteOptions {
            slots: 40,
            ..SiteOptions::default()
        },
    );
    site.init();
    let (mut moved, mut exited) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let s = settled(&site);
        let mine = masters(&s, "imap2");
        assert_eq!(mine.len(), 20, "imap2 has its 20 masters");
        let ips: Vec<IpAddr> = mine.iter().map(|(_, ip)| *ip).collect();
        let t0 = Instant::now();
        site.signal(1, libc::SIGTERM);
        served_elsewhere(&site, &ips, "imap2");
        moved.push(t0.elapsed());
        wait_for("imap2's agent to exit", WAIT, || site.exit_status(1));
        exited.push(t0.elapsed());
        // Back: the restarted agent makes itself active again.
        site.spawn(1);
        wait_for("imap2 active again", WAIT, || {
            let s = site.status(0)?;
            let n = s["nodes"].as_array()?.iter().find(|n| n["name"] == "imap2")?.clone();
            (n["mode"] == "active").then_some(())
        });
        ok(site.slotctl(0, &["rebalance", "--concurrency", "8", "--wait"]));
    }
    row("SIGTERM of an agent with 20 masters → all 20 served elsewhere", moved);
    row("SIGTERM of an agent with 20 masters → the agent has exited", exited);
}

fn main() {
    let args = Args::parse(10);
    let (runs, run) = (args.runs, |section: &str| args.run(section));
    println!("slotd switchover figures, {runs} runs each, default timings, `none` driver (no Cyrus)\n");
    println!("| what | median | max | runs |");
    println!("| --- | --- | --- | --- |");
    if run("one") {
        for probe in [slotd_agent::config::Timing::default().probe_timeout_ms, 20] {
            let (phases, client) = one_store(runs, probe);
            row(
                &format!("one store, probe {probe} ms: begin → complete (history)"),
                phases,
            );
            row(
                &format!("one store, probe {probe} ms: command → client reaches the new master"),
                client,
            );
        }
    }
    if run("drain") {
        drains(runs);
    }
    if run("sigterm") {
        sigterms(runs);
    }
    if run("cyrus") {
        cyrus(runs);
    }
}

/// Whose Cyrus answers IMAP on `ip` (the banner's `SLOT.NODE`), from the
/// client namespace.
fn banner(site: &Site, ip: IpAddr) -> Option<String> {
    site.lan
        .host("cl")
        .spawn_blocking(move || netns::cyrus::banner(ip))
        .join()
        .ok()
        .flatten()
}

fn served_by(site: &Site, ip: IpAddr, node: &str) {
    wait_for("the new master's Cyrus on the master IP", WAIT, || {
        banner(site, ip)
            .filter(|b| b.ends_with(&format!(".{node}")))
            .map(|_| ())
    });
}

fn cyrus(runs: usize) {
    let site = Site::start_with(
        "bcy",
        SiteOptions {
            slots: 8,
            cyrus: true,
            ..SiteOptions::default()
        },
    );
    site.init();
    let (mut phases, mut served, mut drains, mut deaths) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        // One store's switchover, flush included.
        let s = settled(&site);
        let st = &s["stores"][run % 12];
        let name = st["name"].as_str().expect("name").to_owned();
        let ip = netns::master_ip(st).expect("ip");
        let to = st["replicas"][0].as_str().expect("replica").to_owned();
        let t0 = Instant::now();
        ok(site.slotctl(0, &["failover", &name, "--to", &to, "--wait"]));
        served_by(&site, ip, &to);
        served.push(t0.elapsed());
        let h: Value =
            serde_json::from_str(&ok(site.slotctl(0, &["history", &name, "--limit", "1", "--json"]))).expect("json");
        phases.push(Duration::from_millis(
            h["entries"][0]["duration_ms"].as_u64().unwrap_or(0),
        ));
    }
    for _ in 0..runs {
        // A drain of a node with its 4 Cyrus masters, then back.
        let s = settled(&site);
        let n = masters(&s, "imap1").len();
        let t0 = Instant::now();
        ok(site.slotctl(1, &["drain", "imap1", "--wait"]));
        drains.push(t0.elapsed());
        ok(site.slotctl(1, &["undrain", "imap1"]));
        ok(site.slotctl(1, &["rebalance", "--wait"]));
        assert!(n > 0, "imap1 had masters");
    }
    for run in 0..runs {
        // The unclean death of a master's machine.
        let s = settled(&site);
        let victim = run % 3;
        let node = format!("imap{}", victim + 1);
        let Some((_, ip)) = masters(&s, &node).into_iter().next() else {
            continue;
        };
        let t0 = Instant::now();
        site.kill9(victim);
        netns::cyrus::kill_all(&site.cyrus_root(victim));
        site.fence(victim);
        wait_for("another node's Cyrus on the master IP", WAIT, || {
            banner(&site, ip)
                .filter(|b| !b.ends_with(&format!(".{node}")))
                .map(|_| ())
        });
        deaths.push(t0.elapsed());
        site.spawn(victim);
        wait_for("the dirty marks cleared", Duration::from_secs(60), || {
            let s = site.status(0)?;
            s["stores"]
                .as_array()?
                .iter()
                .all(|st| st["dirty"].as_array().is_some_and(Vec::is_empty))
                .then_some(())
        });
        ok(site.slotctl(0, &["rebalance", "--wait"]));
    }
    row(
        "Cyrus: one store's switchover, begin → complete (history, flush included)",
        phases,
    );
    row(
        "Cyrus: the same, command → the new master's IMAP banner on the master IP",
        served,
    );
    row("Cyrus: drain of a node with 4 Cyrus masters (--wait)", drains);
    row(
        "Cyrus: kill -9 of a master's machine (agent + Cyrus) + fence → another node's IMAP banner",
        deaths,
    );
}
