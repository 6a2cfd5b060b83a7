//! Automatic failover with real `slotd` processes (addresses in memory, Cyrus
//! driver `none`): a node killed with -9 loses its masters to live replicas
//! after lease + margin; it comes back as replica, and nothing flaps.

mod common;

use std::time::{Duration, Instant};

use common::{wait_for, TestCluster, WAIT};

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
