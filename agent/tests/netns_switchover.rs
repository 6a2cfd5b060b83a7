//! Controlled switchovers with real addresses: three agents in network
//! namespaces on one bridge, a client namespace connecting to every master
//! IP in a loop, and a sampler that looks at every namespace's addresses
//! while masters move: at no sampled instant may two machines hold one
//! master IP. Needs root (run by CI).

mod common;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::netns::{beside, masters, ok, wait_for, Site, SiteOptions, WAIT};
use serde_json::Value;

/// What the sampler saw while it ran.
#[derive(Debug, Default)]
struct Seen {
    /// Looks at all three namespaces' addresses.
    samples: u64,
    /// (master IP, holders) whenever more than one machine held it.
    doubles: Vec<(String, Vec<String>)>,
    /// Client connections to master IPs, and how many got an answer.
    asked: u64,
    answered: u64,
}

/// Samples addresses and asks every master IP from the client until
/// `stop`, at most `limit` (a bounded loop).
fn sample(site: &Site, ips: &[IpAddr], stop: &AtomicBool, limit: Duration) -> Seen {
    let mut seen = Seen::default();
    let until = Instant::now() + limit;
    let wanted: Vec<String> = ips.iter().map(|ip| format!("{ip}/32")).collect();
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        let held = site.held_all(&[]);
        seen.samples += 1;
        for ip in &wanted {
            let holders: Vec<String> = (0..3)
                .filter(|i| held[*i].contains(ip))
                .map(|i| format!("imap{}", i + 1))
                .collect();
            if holders.len() > 1 {
                seen.doubles.push((ip.clone(), holders));
            }
        }
        let answers = site.who_serves_all_within(ips, Duration::from_millis(200));
        seen.asked += answers.len() as u64;
        seen.answered += answers.iter().filter(|a| a.is_some()).count() as u64;
    }
    seen
}

fn node<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == name))
        .unwrap_or_else(|| panic!("no node {name}"))
}

fn master_ips(status: &Value) -> Vec<IpAddr> {
    status["stores"]
        .as_array()
        .expect("stores")
        .iter()
        .filter_map(common::netns::master_ip)
        .collect()
}

#[test]
fn drain_moves_six_masters_with_never_two_holders_and_rebalance_brings_them_back() {
    // 12 slots per node: 18 stores, 6 masters on each node.
    let site = Site::start_with(
        "swdr",
        SiteOptions {
            slots: 12,
            ..SiteOptions::default()
        },
    );
    site.init();
    let before = site.served_by_masters(1);
    let mine = masters(&before, "imap1");
    assert_eq!(mine.len(), 6);
    let ips = master_ips(&before);

    let (drained, seen) = beside(
        |stop| sample(&site, &ips, stop, Duration::from_secs(120)),
        || {
            let out = ok(site.slotctl(1, &["drain", "imap1", "--wait"]));
            assert!(out.contains("node imap1 drained"), "{out}");
            site.served_by_masters(1)
        },
    );

    assert_eq!(node(&drained, "imap1")["mode"], "drained");
    for (name, ip) in &mine {
        let st = common::netns::find_store(&drained, name);
        assert_ne!(st["master"], "imap1", "{name} ({ip}) still on imap1");
    }
    assert!(seen.samples >= 3, "the sampler looked only {} times", seen.samples);
    assert!(
        seen.doubles.is_empty(),
        "two holders of one master IP: {:?}",
        seen.doubles
    );
    assert!(seen.answered > 0, "the client never got an answer: {seen:?}");
    let history = ok(site.slotctl(0, &["history", "--json"]));
    let h: Value = serde_json::from_str(&history).expect("json");
    let switchovers = h["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["from"] == "imap1" && e["what"] == "switchover")
        .count();
    assert_eq!(switchovers, 6, "{history}");

    ok(site.slotctl(2, &["undrain", "imap1"]));
    let out = ok(site.slotctl(2, &["rebalance", "--wait"]));
    assert!(out.contains("rebalance done"), "{out}");
    let back = site.served_by_masters(1);
    assert_eq!(
        masters(&back, "imap1").len(),
        6,
        "rebalance brings imap1's masters home"
    );
}

#[test]
fn sigterm_of_a_masters_agent_moves_its_masters_by_switchover_not_failover() {
    let site = Site::start_with(
        "swst",
        SiteOptions {
            slots: 8,
            // The shipped unit's watchdog, which runs through the stop.
            service_manager: true,
            ..SiteOptions::default()
        },
    );
    site.init();
    let before = site.served_by_masters(0);
    let mine = masters(&before, "imap2");
    assert_eq!(mine.len(), 4);

    site.signal(1, libc::SIGTERM);
    wait_for("imap2's agent to exit", WAIT, || {
        let killed = site.killed.lock().unwrap().clone();
        assert!(killed.is_empty(), "the watchdog killed the stopping agent: {killed:?}");
        site.exit_status(1)
            .map(|s| assert!(s.success(), "exit 0 after the drain: {s:?}"))
    });
    let after = site.served_by_masters_but(0, &[1]);
    for (name, _) in &mine {
        let st = common::netns::find_store(&after, name);
        assert_ne!(st["master"], "imap2", "{name}");
        assert!(
            st["dirty"].as_array().is_some_and(Vec::is_empty),
            "{name} moved with a flush"
        );
    }
    let held = site.held(1);
    assert!(
        !held.iter().any(|a| a.starts_with("10.64.")),
        "the stopped agent holds no master IP: {held:?}"
    );
    let h: Value = serde_json::from_str(&ok(site.slotctl(0, &["history", "--json"]))).expect("json");
    let entries = h["entries"].as_array().expect("entries");
    for (name, _) in &mine {
        let e = entries
            .iter()
            .rev()
            .find(|e| e["store"] == name.as_str())
            .expect("entry");
        assert_eq!(e["what"], "switchover", "{e}");
        assert_eq!(e["reason"], "stop", "{e}");
    }
    assert!(site.log(1).contains("masters handed over"), "{}", site.log(1));
}
