//! Failover for real: three `slotd` processes, each in its own network
//! namespace on one bridge, binding and announcing store IPs with netlink and
//! ARP; a client namespace checks who answers on each master IP (every host
//! runs a tiny TCP responder that says its name). Needs root; never skips.
//!
//! - kill -9 of a master's agent (then `slotd fence`, as systemd's
//!   ExecStopPost would): the client reaches every moved master IP on its
//!   new node;
//! - a master's link cut: it drops its master IPs by itself before any other
//!   node binds them; after healing, nothing flaps back.

mod common;

use std::time::{Duration, Instant};

use common::netns::{find_store, leader, masters, store, wait_for, Site, HOSTS, WAIT};
use slotd_agent::config::Timing;

#[test]
fn kill_9_of_a_master_moves_its_ips_to_live_replicas() {
    let site = Site::start("fok");
    let before = site.init();
    let victim = (0..3).find(|i| *i != leader(&before)).unwrap();
    let victim_name = format!("imap{}", victim + 1);
    let moved = masters(&before, &victim_name);
    assert_eq!(moved.len(), 2);

    let killed = Instant::now();
    site.kill9(victim);
    // What systemd's ExecStopPost does after any exit of the agent.
    let out = site.fence(victim);
    assert!(out.status.success(), "fence: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("the leader accepted"), "fence: {said}");
    assert!(site.held(victim).is_empty(), "fence left {:?}", site.held(victim));

    let survivor = (0..3).find(|i| *i != victim).unwrap();
    let after = site.moved_served(survivor, &moved, &victim_name);
    // The fence told the leader, so the stores did not wait out the dead
    // agent's lease + margin, which is what the silent path takes.
    let took = killed.elapsed();
    let t = Timing::default();
    assert!(t.lease() + t.clock_skew_margin() > took, "moved only after {took:?}");
    for (store, _) in &moved {
        let st = find_store(&after, store);
        assert_eq!(st["epoch"], 2);
        assert_eq!(st["dirty"], serde_json::json!([victim_name]));
    }
    // The stores that did not move are still served where they were.
    site.served_by_masters(survivor);
    // And a replica of each moved store saw the new master's MAC answer.
    wait_for("the layer-2 check ok for the moved stores", WAIT, || {
        let s = site.status(survivor)?;
        moved
            .iter()
            .all(|(name, _)| store(&s, name).is_some_and(|x| x["l2"] == "ok"))
            .then_some(())
    });
}

#[test]
fn a_cut_master_fences_itself_before_anyone_takes_over() {
    cut_master(false);
}

/// The same with the Raft leader cut off alone: openraft 0.9 has no check
/// quorum, so it may go on believing it leads; its lease still runs out.
#[test]
fn a_cut_leader_fences_itself_before_anyone_takes_over() {
    cut_master(true);
}

fn cut_master(the_leader: bool) {
    let site = Site::start(if the_leader { "fol" } else { "foc" });
    let before = site.init();
    let lead = leader(&before);
    let victim = if the_leader {
        lead
    } else {
        (0..3).find(|i| *i != lead).unwrap()
    };
    let victim_name = format!("imap{}", victim + 1);
    let moved = masters(&before, &victim_name);
    let moved_ips: Vec<String> = moved.iter().map(|(_, ip)| format!("{ip}/32")).collect();
    assert_eq!(site.held(victim).iter().filter(|a| moved_ips.contains(a)).count(), 2);

    let port = format!("p-{}", HOSTS[victim]);
    let cut_at = Instant::now();
    site.lan.switch().ip(&["link", "set", &port, "down"]);
    // Watch both sides of the cut, every 10 ms, until the IPs have moved.
    let (mut dropped, mut taken) = (None, None);
    let deadline = cut_at + WAIT;
    while dropped.is_none() || taken.is_none() {
        assert!(Instant::now() < deadline, "dropped {dropped:?}, taken {taken:?}");
        let now = cut_at.elapsed();
        if dropped.is_none() && !site.held(victim).iter().any(|a| moved_ips.contains(a)) {
            dropped = Some(now);
        }
        if taken.is_none() {
            let others = (0..3).filter(|i| *i != victim);
            if others.flat_map(|i| site.held(i)).any(|a| moved_ips.contains(&a)) {
                taken = Some(now);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (dropped, taken) = (dropped.unwrap(), taken.unwrap());
    eprintln!("cut: the master dropped its IPs after {dropped:?}, another node bound one after {taken:?}");
    assert!(
        dropped < taken,
        "the cut master dropped its IPs at {dropped:?}, but another node bound one at {taken:?}"
    );

    let survivor = (0..3).find(|i| *i != victim).unwrap();
    let after = site.served_by_masters(survivor);
    let new_masters: Vec<String> = moved
        .iter()
        .map(|(store, _)| {
            let st = find_store(&after, store);
            st["master"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(new_masters.iter().all(|m| *m != victim_name));

    // Heal: the old master comes back as replica; nothing flaps back.
    site.lan.switch().ip(&["link", "set", &port, "up"]);
    wait_for("the healed node alive again", WAIT, || {
        let s = site.status(survivor)?;
        let n = s["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["name"] == victim_name.as_str())?
            .clone();
        (n["alive"] == true).then_some(())
    });
    // Absence of flapping can only be watched over a window.
    let window = Instant::now() + Duration::from_secs(3);
    while Instant::now() < window {
        assert!(
            !site.held(victim).iter().any(|a| moved_ips.contains(a)),
            "the healed node took a master IP back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let settled = site.served_by_masters(survivor);
    for ((store, _), master) in moved.iter().zip(&new_masters) {
        let st = find_store(&settled, store);
        assert_eq!(st["master"].as_str().unwrap(), master, "{store} flapped");
        assert_eq!(st["epoch"], 2, "{store} flapped");
    }
}
