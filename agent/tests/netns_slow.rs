//! A slow link or a slow disk at the Raft leader, for real: three `slotd`
//! machines with 20 masters each (60 stores), every Peer port behind a
//! delaying proxy (this kernel has no netem). openraft 0.9 waits for each
//! voter's answer no longer than the Raft heartbeat (75 ms): with 80 ms one
//! way on the leader's link, no answer comes in time, no lease is granted,
//! and, while the followers still hear the leader, nobody else may lead, so
//! every master in the cluster fences. A leader a majority does not answer
//! in time gives up leading (`slotd_core::leader::standing`), and a leader
//! the others hear in time takes over well inside the lease.
//!
//! Three spells of 30 s each at whoever leads: 80 ms one way, 150 ms one
//! way, and every Raft data commit 100 ms slower with the leader writing
//! (an undrain every second). Sampled every 10 ms, each master IP stays
//! bound by its master alone throughout, no agent releases one, fences or
//! is killed by the (stand-in) watchdog. Needs root; never skips.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::netns::{beside, leader, masters, ok, wait_for, Site, SiteOptions, WAIT};

/// How long each fault lasts.
const SPELL: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
enum Fault {
    Link(Duration),
    Disk,
}

/// Whom every agent names as leader, once they agree and all are alive.
fn settled(site: &Site) -> (usize, u64) {
    wait_for("every agent alive under one leader", WAIT, || {
        let views: Vec<_> = (0..3).map(|i| site.status(i)).collect::<Option<_>>()?;
        let lead = leader(&views[0]);
        let all_alive = views.iter().all(|v| {
            leader(v) == lead
                && v["nodes"]
                    .as_array()
                    .is_some_and(|ns| ns.iter().all(|n| n["alive"] == true))
        });
        all_alive.then(|| (lead, views[0]["term"].as_u64().unwrap_or(0)))
    })
}

#[test]
fn a_slow_link_or_disk_at_the_leader_costs_no_master_its_ip() {
    let site = Site::start_with(
        "fsl",
        SiteOptions {
            slots: 40,
            slow_links: true,
            // The shipped unit's watchdog, and fault injection.
            service_manager: true,
            ..SiteOptions::default()
        },
    );
    let before = site.init();
    // Each master IP and the machine that must hold it, alone.
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..3 {
        let mine = masters(&before, &format!("imap{}", i + 1));
        assert_eq!(mine.len(), 20, "{before}");
        for (_, ip) in mine {
            owner.insert(format!("{ip}/32"), i);
        }
    }

    let started = Instant::now();
    let mut spells = Vec::new();
    let sample = |done: &AtomicBool| {
        let mut wrong: Vec<(Duration, String, Vec<usize>)> = Vec::new();
        while !done.load(Ordering::SeqCst) {
            let held = site.held_all(&[]);
            for (ip, i) in &owner {
                let holders: Vec<usize> = (0..3).filter(|h| held[*h].contains(ip)).collect();
                if holders != [*i] && wrong.len() < 50 {
                    wrong.push((started.elapsed(), ip.clone(), holders));
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        wrong
    };
    let ((), wrong) = beside(sample, || {
        for fault in [
            Fault::Link(Duration::from_millis(80)),
            Fault::Link(Duration::from_millis(150)),
            Fault::Disk,
        ] {
            let (slow, term) = settled(&site);
            let began = Instant::now();
            let fast = (slow + 1) % 3;
            match fault {
                Fault::Link(d) => site.slow_link(Some((slow, d))),
                Fault::Disk => site.signal(slow, libc::SIGRTMIN() + 1),
            }
            // While it lasts: who leads, seen from a fast machine (every
            // 100 ms until another does, then every second).
            let mut leaders = vec![slow];
            let mut moved = None;
            let mut writes = 0;
            let mut took: Vec<Duration> = Vec::new();
            while began.elapsed() < SPELL {
                if let Some(now) = site.status(fast).map(|s| leader(&s)) {
                    if leaders.last() != Some(&now) {
                        leaders.push(now);
                        moved.get_or_insert(began.elapsed());
                    }
                }
                if moved.is_none() && began.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                if matches!(fault, Fault::Disk) {
                    // The slow leader writes: one log entry a second.
                    let node = format!("imap{}", fast + 1);
                    let t = Instant::now();
                    ok(site.slotctl(slow, &["undrain", &node]));
                    took.push(t.elapsed());
                    writes += 1;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            match fault {
                Fault::Link(_) => site.slow_link(None),
                Fault::Disk => site.signal(slow, libc::SIGRTMIN() + 1),
            }
            took.sort();
            if let (Some(median), Some(max)) = (took.get(took.len() / 2), took.last()) {
                eprintln!("{fault:?}: a write through the slow leader took {median:?} (median), {max:?} (max)");
            }
            let (after, term_after) = settled(&site);
            eprintln!(
                "{fault:?} at imap{} for {SPELL:?}: leaders {:?} (another seen leading {moved:?} in), term \
                     {term} → {term_after}, {writes} writes, then imap{} leads",
                slow + 1,
                leaders.iter().map(|l| l + 1).collect::<Vec<_>>(),
                after + 1
            );
            spells.push((fault, slow, leaders, after));
        }
    });
    assert!(
        wrong.is_empty(),
        "master IPs not bound by their master alone (when, ip, holders): {wrong:#?}"
    );
    let killed = site.killed.lock().unwrap().clone();
    assert!(killed.is_empty(), "the watchdog killed {killed:?}");
    for i in 0..3 {
        let released = site.master_releases(i);
        assert!(released.is_empty(), "imap{} released {released:#?}", i + 1);
        let log = site.log(i);
        let fences = log.matches("lease expired: fencing").count();
        assert_eq!(fences, 0, "imap{} fenced {fences} times", i + 1);
    }
    // Beyond what openraft's deadline bears, the slow leader gave up
    // leading, and a fast machine led instead.
    for (fault, slow, leaders, _) in &spells {
        if let Fault::Link(_) = fault {
            assert!(
                leaders.iter().any(|l| l != slow),
                "{fault:?}: imap{} kept leading: {leaders:?}",
                slow + 1
            );
            assert!(
                site.log(*slow).contains("giving up leading"),
                "imap{} never gave up",
                slow + 1
            );
        }
    }
}
