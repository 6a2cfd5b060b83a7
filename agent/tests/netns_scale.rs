//! Failover at the size users run, with real processes in network
//! namespaces (root; never skips): three machines with 40 slots each (60
//! stores, 20 masters per machine), default timings.
//!
//! - After init all 60 master IPs are bound, each by its master alone, and
//!   in two steady minutes no master IP is released anywhere.
//! - The leader's machine dies (its agent killed with kill -9, its port off
//!   the switch): no survivor releases a master IP, and the dead machine's
//!   stores are reachable on the survivors within a change of leader plus
//!   lease + margin.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::netns::{find_store, leader, masters, wait_for, Site, SiteOptions, HOSTS, WAIT};
use slotd_agent::config::Timing;

#[test]
fn sixty_masters_stay_bound_and_survive_the_leader_machine_dying() {
    let site = Site::start_with(
        "scl",
        SiteOptions {
            slots: 40,
            ..SiteOptions::default()
        },
    );
    let started = Instant::now();
    let before = site.init();
    eprintln!(
        "all 60 master IPs bound and served {:?} after init began",
        started.elapsed()
    );
    assert_eq!(before["stores"].as_array().unwrap().len(), 60);
    for i in 0..3 {
        assert_eq!(masters(&before, &format!("imap{}", i + 1)).len(), 20);
    }

    // Two steady minutes: nothing released (the interface is looked at
    // every second; the logs, which show every release, at the end).
    let steady = Instant::now() + Duration::from_secs(120);
    while Instant::now() < steady {
        for i in 0..3 {
            let held = site.held(i).len();
            assert_eq!(
                held,
                40,
                "imap{} holds {held} store IPs, not 20 master + 20 replica",
                i + 1
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    for i in 0..3 {
        let gone = site.master_releases(i);
        assert!(
            gone.is_empty(),
            "imap{} released master IPs while steady: {gone:#?}",
            i + 1
        );
    }

    // The leader's machine dies: agent killed, port off the switch.
    let lead = leader(&site.status(0).unwrap());
    let name = format!("imap{}", lead + 1);
    let moved: Vec<(String, IpAddr)> = masters(&before, &name);
    let died = Instant::now();
    site.kill9(lead);
    site.lan
        .switch()
        .ip(&["link", "set", &format!("p-{}", HOSTS[lead]), "down"]);
    let survivor = (0..3).find(|i| *i != lead).unwrap();
    let ips: Vec<IpAddr> = moved.iter().map(|(_, ip)| *ip).collect();
    wait_for("the dead leader's stores served by the survivors", WAIT, || {
        site.who_serves_all(&ips)
            .iter()
            .all(|who| who.as_ref().is_some_and(|w| *w != name))
            .then_some(())
    });
    let took = died.elapsed();
    let t = Timing::default();
    let bound = t.leader_change() + t.lease() + t.clock_skew_margin();
    eprintln!("the leader's machine died: its 20 stores reachable elsewhere after {took:?} (bound {bound:?})");
    for i in (0..3).filter(|i| *i != lead) {
        let gone = site.master_releases(i);
        assert!(
            gone.is_empty(),
            "imap{} released master IPs when the leader died: {gone:#?}",
            i + 1
        );
    }
    // Generous: the bound, plus the client's own polling and a busy machine.
    assert!(took < bound + Duration::from_secs(3), "moved after {took:?}");
    let after = site.served_by_masters_but(survivor, &[lead]);
    for (store, _) in &moved {
        let st = find_store(&after, store);
        assert_ne!(st["master"], name.as_str());
        assert_eq!(st["dirty"], serde_json::json!([name]));
    }
}
