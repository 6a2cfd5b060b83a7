//! Automatic failover with real `slotd` processes (addresses in memory, Cyrus
//! driver `none`): a node killed with -9 loses its masters to live replicas
//! after lease + margin; it comes back as replica, and nothing flaps.

mod common;

use std::time::{Duration, Instant};

use common::{comparable, wait_for, TestCluster, WAIT};

fn masters_of(status: &serde_json::Value, node: &str) -> Vec<String> {
    status["stores"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["master"] == node)
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn kill_9_of_a_master_node_moves_its_stores() {
    let mut c = TestCluster::start(3);
    let before = c.init(1, 4);
    let leader = c.leader();
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    let victim_name = format!("imap{victim}");
    let moved = masters_of(&before, &victim_name);
    assert_eq!(moved.len(), 2);
    let t = Instant::now();
    c.kill9(victim);
    let after = wait_for("the victim's stores to move", WAIT, || {
        let s = c.status(leader, false)?;
        masters_of(&s, &victim_name).is_empty().then_some(s)
    });
    let took = t.elapsed();
    // Not before the victim's lease (2 s) plus margin (0.5 s) could run out.
    assert!(took >= Duration::from_millis(2000), "moved after only {took:?}");
    for s in after["stores"].as_array().unwrap() {
        if moved.contains(&s["name"].as_str().unwrap().to_owned()) {
            assert_eq!(s["epoch"], 2, "{s}");
            assert_eq!(s["dirty"], serde_json::json!([victim_name]), "{s}");
            assert_ne!(s["master"], victim_name);
        } else {
            assert_eq!(s["epoch"], 1, "untouched store moved: {s}");
        }
    }
    let victim_node = after["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == victim_name)
        .unwrap();
    assert_eq!(victim_node["alive"], false);

    // Back: it is a replica now, and stays one.
    c.restart(victim);
    wait_for("the victim alive again", WAIT, || {
        let s = c.status(leader, false)?;
        let n = s["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["name"] == victim_name)?
            .clone();
        (n["alive"] == true).then_some(())
    });
    let settled = c.status(leader, false).unwrap();
    assert!(masters_of(&settled, &victim_name).is_empty());
    for s in settled["stores"].as_array().unwrap() {
        if moved.contains(&s["name"].as_str().unwrap().to_owned()) {
            assert_eq!(s["epoch"], 2, "flapped: {s}");
        }
    }
}

#[test]
fn metrics_show_lease_and_failover() {
    let c = TestCluster::start(3);
    c.init(1, 2);
    let leader = c.leader();
    let body = wait_for("a valid lease in metrics", WAIT, || {
        let body = http_get(c.agent(leader).metrics)?;
        let line = body.lines().find(|l| l.starts_with("slotd_lease_remaining_seconds "))?;
        let v: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        (v > 0.0).then_some(body)
    });
    assert!(body.contains("slotd_fenced 0"), "{body}");
    assert!(body.contains("slotd_failovers_total{reason=\"failure\"} 0"), "{body}");
    assert!(body.contains("slotd_store_epoch{store=\"st0001\"} 1"), "{body}");
    // The none driver checks nothing: every store this node has a slot of
    // shows no failing check.
    let health: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("slotd_health_checks_failing{store="))
        .collect();
    assert!(!health.is_empty() && health.iter().all(|l| l.ends_with(" 0")), "{body}");
}

fn http_get(addr: std::net::SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.split_once("\r\n\r\n")?.1.to_owned())
}

/// A pause no clock of the node saw (a VM frozen with its clocks, resumed
/// and its wall clock set: fault injection moves the agent's wall clock 5 s
/// ahead): its lease is void at once, whatever it says. It fences (gives
/// up every master IP), renews, and takes them back after a probe; nobody
/// moved anything meanwhile (for the others nothing happened).
#[test]
fn a_pause_its_clocks_did_not_see_voids_the_lease_then_the_node_serves_again() {
    let c = TestCluster::start(3);
    c.init(1, 2);
    let before = c.converged();
    let leader = c.leader();
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    let victim_name = format!("imap{victim}");
    let masters = before["stores"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["master"] == victim_name.as_str())
        .count();
    assert!(masters > 0, "{before}");
    // Master IPs are 10.64.x.x (replica IPs 10.128.x.x).
    let bound = |log: &str| log.matches("bound ip=10.64.").count();
    let bound_before = wait_for("the victim to serve its masters", WAIT, || {
        let n = bound(&c.agent(victim).log());
        (n >= masters).then_some(n)
    });
    c.signal(victim, libc::SIGPWR);
    let log = wait_for("the victim to fence and serve again", WAIT, || {
        let log = c.agent(victim).log();
        let paused = log.find("paused without its clocks seeing it")?;
        let after = &log[paused..];
        let released = after.matches("released ip=10.64.").count();
        (released >= masters && bound(after) >= masters).then_some(log)
    });
    let paused = log.find("paused without its clocks seeing it").unwrap();
    let after = &log[paused..];
    // Fenced first, then bound again (each bind after a probe).
    let released = after.find("released ip=10.64.").unwrap();
    let rebound = after.find("bound ip=10.64.").unwrap();
    assert!(released < rebound, "{after}");
    assert!(bound(&log) >= bound_before + masters);
    // The others saw nothing: the same masters and epochs, no history.
    let after_status = c.converged();
    assert_eq!(comparable(&after_status), comparable(&before));
}

/// Safety settings are the cluster's: a node configured with a longer
/// lease (8 s) than the leader's (2 s) acts on the leader's, since the
/// leader moves a silent node's stores `lease + margin` after its last
/// grant, by its own lease. Its lease, as its metrics show, never has more
/// than 2 s left.
#[test]
fn a_node_with_a_longer_lease_than_the_leaders_acts_on_the_leaders() {
    let c = TestCluster::start_with(3, |config| {
        if config.node_id != 1 {
            config.timing.lease_ms = 8000;
        }
    });
    c.init(1, 2);
    // Node 1 bootstraps the group and leads it.
    assert_eq!(c.leader(), 1);
    let remaining = |id: u64| -> Option<f64> { c.agent(id).metric("slotd_lease_remaining_seconds") };
    for id in [2, 3] {
        let first = wait_for(&format!("imap{id}'s lease"), WAIT, || {
            remaining(id).filter(|v| *v > 0.0)
        });
        assert!(
            first <= 2.0,
            "imap{id}: {first} s of lease left, more than the leader grants"
        );
        // And later, after many renewals.
        let mut most: f64 = 0.0;
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(50));
            most = most.max(remaining(id).unwrap_or(0.0));
        }
        assert!(most > 0.0 && most <= 2.0, "imap{id}: up to {most} s of lease left");
    }
}
