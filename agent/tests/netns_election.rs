//! A healed stale voter, for real: five `slotd` voters, each in its own
//! network namespace on one bridge. The highest-id voter is cut off for
//! 10 s and healed, 20 times. openraft 0.9 has no pre-vote: cut off, a
//! voter campaigns again and again, and healed, its higher term makes the
//! leader step down; the election that follows can outlast the masters'
//! leases. The elector (a pre-vote: a voter campaigns only while a majority
//! hears no leader) keeps the cut voter from campaigning at all. Needs
//! root; never skips.

mod common;

use std::time::{Duration, Instant};

use common::netns::{wait_for, Site, SiteOptions, WAIT};

/// How long each cut lasts, and how many rounds.
const CUT: Duration = Duration::from_secs(10);
const ROUNDS: usize = 20;

fn term(site: &Site, via: usize) -> Option<u64> {
    site.status(via)?["term"].as_u64()
}

#[test]
fn a_voter_cut_off_and_healed_twenty_times_fences_no_connected_master() {
    let site = Site::start_with(
        "fev",
        SiteOptions {
            hosts: 5,
            ..SiteOptions::default()
        },
    );
    let before = site.init();
    let voters = before["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["raft"] == "voter")
        .count();
    assert_eq!(voters, 5, "{before}");
    let victim = 4;
    let lead = common::netns::leader(&before);
    assert_ne!(lead, victim, "node 1 bootstraps and leads: {before}");
    let connected: Vec<usize> = (0..4).collect();
    let term_before = term(&site, lead).expect("term");
    let started = Instant::now();
    for round in 0..ROUNDS {
        site.port(victim, false);
        std::thread::sleep(CUT);
        site.port(victim, true);
        // Back: the leader grants it a lease again.
        wait_for(&format!("round {round}: imap5 alive again"), WAIT, || {
            let s = site.status(lead)?;
            let n = s["nodes"].as_array()?.iter().find(|n| n["name"] == "imap5")?.clone();
            (n["alive"] == true).then_some(())
        });
    }
    let took = started.elapsed();
    // No election: the same term on the leader and on the healed voter…
    let after = wait_for("the healed voter to agree", WAIT, || {
        let s = site.status(victim)?;
        (s["term"].as_u64()? == term(&site, lead)?).then_some(s)
    });
    let term_after = term(&site, lead).expect("term");
    eprintln!("{ROUNDS} cuts of {CUT:?} in {took:?}; term {term_before} → {term_after}");
    assert_eq!(term_after, term_before, "a healed voter forced an election");
    assert_eq!(common::netns::leader(&after), lead);
    // …and no connected master fenced, nor gave up a master IP.
    for i in connected {
        let log = site.log(i);
        let fences = log.matches("lease expired: fencing").count();
        assert_eq!(fences, 0, "imap{} fenced {fences} times", i + 1);
        let released = site.master_releases(i);
        assert!(released.is_empty(), "imap{} released {released:?}", i + 1);
    }
    site.served_by_masters(lead);
}
