use std::collections::BTreeSet;
use std::time::Duration;

use slotd_raft_store::plan::{plan, Naming};
use slotd_raft_store::{ClusterState, Command, Request};

use super::*;

fn at(ms: u64) -> Mono {
    Mono::from_origin(Duration::from_millis(ms))
}

fn timing() -> LeaderTiming {
    LeaderTiming {
        lease: Duration::from_millis(2000),
        margin: Duration::from_millis(500),
        ticket_fresh: Duration::from_millis(1000),
        settling: Duration::ZERO,
    }
}

/// Three nodes, four slots each: six stores, two masters per node.
fn state() -> ClusterState {
    plan(3, 4).unwrap().initial_state(&Naming::default()).unwrap()
}

fn read_index(g: Option<Grant>) -> Option<u64> {
    g.map(|g| g.read_index)
}

#[test]
fn grants_and_failovers_do_not_cross() {
    let s = state();
    let mut core = LeaderCore::new(1, timing());
    core.observe(Some(3), at(0));
    let r = HealthReport::default;
    assert_eq!(read_index(core.grant(2, at(2600), r(), 5)), Some(5));
    // Settled and node 3 never granted: dead, condemned until settled.
    let d = core.decide(&s, at(2600));
    assert_eq!(d.dead, BTreeSet::from([3]));
    assert!(!d.plan.moves.is_empty());
    assert_eq!(
        core.grant(3, at(2600), r(), 7),
        None,
        "no lease while being failed over"
    );
    // Node 3's stores moved at index 42: its next lease carries 42.
    core.failed_over(&BTreeSet::from([3]), 42);
    assert_eq!(read_index(core.grant(3, at(2700), r(), 7)), Some(42));
    assert_eq!(read_index(core.grant(3, at(2800), r(), 50)), Some(50));
    assert!(core.alive(3, at(2800)));
    assert!(core.decide(&s, at(2800)).dead.is_empty());
    // A failover that did not commit: pardoned, granted as usual.
    let d = core.decide(&s, at(5400));
    assert_eq!(d.dead, BTreeSet::from([2, 3]));
    core.pardon(&d.dead);
    assert!(core.grant(2, at(5400), r(), 60).is_some());
}

#[test]
fn a_fresh_leader_waits_a_lease_and_margin_and_a_new_term_is_a_new_leader() {
    let s = state();
    let mut core = LeaderCore::new(1, timing());
    assert!(core.decide(&s, at(0)).dead.is_empty(), "not leading");
    assert!(core.observe(Some(1), at(1000)));
    assert!(!core.observe(Some(1), at(1100)), "the same leadership");
    assert!(
        core.decide(&s, at(3499)).dead.is_empty(),
        "within lease + margin of the election"
    );
    assert_eq!(core.decide(&s, at(3500)).dead, BTreeSet::from([2, 3]));
    // Re-elected in a later term: waits again, whatever it granted before.
    core.pardon(&BTreeSet::from([2, 3]));
    assert!(core.observe(Some(4), at(4000)));
    assert!(core.decide(&s, at(6499)).dead.is_empty());
    assert!(!core.settled(at(6499)) && core.settled(at(6500)));
    // Only the leader knows liveness.
    core.grant(2, at(6000), HealthReport::default(), 1);
    assert!(core.alive(2, at(6100)) && core.alive(1, at(6100)));
    core.observe(None, at(6200));
    assert!(!core.alive(2, at(6300)) && core.alive(1, at(6300)));
}

#[test]
fn a_fence_notice_counts_with_a_fresh_ticket_of_this_leadership() {
    let s = state();
    let mut core = LeaderCore::new(1, timing());
    assert!(!core.issue_ticket(3, 7, at(0)), "no tickets while not leading");
    core.observe(Some(2), at(0));
    // A stale ticket (older than ticket_fresh) is refused, and is void after.
    assert!(core.issue_ticket(3, 7, at(100)));
    assert!(!core.fenced_notice(3, 7, at(1101)));
    // Another node's ticket, or an unknown one: refused.
    assert!(core.issue_ticket(3, 8, at(1200)));
    assert!(!core.fenced_notice(2, 8, at(1210)));
    assert!(!core.fenced_notice(3, 99, at(1210)));
    // A ticket from an earlier leadership: refused.
    assert!(core.issue_ticket(3, 9, at(1300)));
    core.observe(Some(3), at(1300));
    assert!(!core.fenced_notice(3, 9, at(1310)));
    // A grant after the ticket was issued (a new agent of that node):
    // the notice is void.
    assert!(core.issue_ticket(3, 11, at(1350)));
    core.grant(3, at(1360), HealthReport::default(), 1);
    assert!(!core.fenced_notice(3, 11, at(1370)));
    // Fresh, this leadership: dead at once, even within the fresh wait.
    assert!(core.issue_ticket(3, 10, at(1400)));
    assert!(core.fenced_notice(3, 10, at(1450)));
    assert!(!core.fenced_notice(3, 10, at(1460)), "a ticket is used once");
    // Its stores go only to nodes this leadership has heard from: nobody
    // yet, so they wait (the node stays dead for the next look).
    let d = core.decide(&s, at(1470));
    assert_eq!(d.dead, BTreeSet::from([3]));
    assert!(d.plan.moves.is_empty());
    core.grant(1, at(1480), HealthReport::default(), 1);
    core.grant(2, at(1480), HealthReport::default(), 1);
    let d = core.decide(&s, at(1500));
    assert_eq!(d.dead, BTreeSet::from([3]));
    assert_eq!(d.plan.moves.len(), 2);
    assert_eq!(core.grant(3, at(1500), HealthReport::default(), 1), None, "condemned");
    core.failed_over(&d.dead, 12);
    assert!(core.decide(&s, at(1600)).dead.is_empty(), "settled");
}

#[test]
fn a_dead_node_with_nothing_to_move_is_pardoned() {
    let mut s = state();
    // Node 3 masters nothing: move its stores away by hand first.
    let moves: Vec<_> = s
        .masters_of(3)
        .map(|st| slotd_raft_store::Move {
            store: st.name.clone(),
            epoch: st.epoch,
            to: st.replicas().next().unwrap(),
        })
        .collect();
    s.apply(&Request {
        at_ms: 0,
        command: Command::Failover {
            reason: slotd_raft_store::Reason::Operator,
            moves,
        },
    })
    .into_result()
    .unwrap();
    let mut core = LeaderCore::new(1, timing());
    core.observe(Some(1), at(0));
    core.grant(2, at(2400), HealthReport::default(), 0);
    let d = core.decide(&s, at(2600));
    assert_eq!(d.dead, BTreeSet::from([3]));
    assert!(d.plan.moves.is_empty());
    assert!(
        core.grant(3, at(2700), HealthReport::default(), 0).is_some(),
        "not condemned"
    );
}

#[test]
fn the_next_decision_is_when_the_first_grant_runs_out() {
    let mut core = LeaderCore::new(1, timing());
    assert_eq!(core.next_decision(), None, "not leading");
    core.observe(Some(1), at(1000));
    assert_eq!(core.next_decision(), None, "nobody granted yet");
    core.grant(2, at(100), HealthReport::default(), 0);
    // Not before the fresh-leader wait is over (a grant of an earlier
    // leadership ran out before).
    assert_eq!(core.next_decision(), Some(at(3501)));
    core.grant(2, at(3000), HealthReport::default(), 0);
    core.grant(3, at(2800), HealthReport::default(), 0);
    assert_eq!(core.next_decision(), Some(at(5301)));
    assert!(core.decide(&state(), at(5300)).dead.is_empty());
    assert_eq!(core.decide(&state(), at(5301)).dead, BTreeSet::from([3]));
}

#[test]
fn a_stale_term_is_not_a_new_leadership() {
    let mut core = LeaderCore::new(1, timing());
    assert!(core.observe(Some(5), at(0)));
    assert!(!core.observe(Some(4), at(100)), "read before term 5 was seen");
    assert_eq!(core.term(), Some(5));
    assert!(core.settled(at(2500)));
    assert!(!core.observe(None, at(2600)) || core.term().is_none());
    assert_eq!(core.term(), None);
}

/// A change of the cluster's timings settles only after this leadership's
/// own wait, every live node's ack, and the old lease + margin since this
/// leadership saw it; meanwhile silent nodes count as dead only after the
/// longer wait.
#[test]
fn a_timings_change_settles_after_acks_and_waits_and_a_new_leadership_waits_again() {
    let mut s = state();
    let apply = |s: &mut ClusterState, command| {
        assert_eq!(
            s.apply(&Request { at_ms: 0, command }),
            slotd_raft_store::Response::Applied
        );
    };
    let base = slotd_raft_store::ClusterTimings::default();
    let mut core = LeaderCore::new(1, timing()).writes_first_timings(base);
    core.observe(Some(3), at(0));
    core.see_timings(&s, at(0));
    let first = core.timings_command(&s, at(0));
    assert_eq!(
        first,
        Some(Command::SetTimings {
            timings: base,
            replaces: 0
        })
    );
    apply(&mut s, first.unwrap());
    let longer = slotd_raft_store::ClusterTimings { lease_ms: 4000, ..base };
    apply(
        &mut s,
        Command::SetTimings {
            timings: longer,
            replaces: 1,
        },
    );
    core.see_timings(&s, at(100));
    assert_eq!(core.timing().dead_after(), Duration::from_millis(4500));
    let acked = HealthReport {
        timings_seq: 2,
        ..HealthReport::default()
    };
    for n in [1, 2, 3] {
        core.grant(
            n,
            at(4400),
            if n == 3 { HealthReport::default() } else { acked.clone() },
            5,
        );
    }
    // Not within this leadership's own wait (the longer lease + margin).
    assert_eq!(core.timings_command(&s, at(4499)), None);
    // Node 3 (live) has not applied it.
    assert_eq!(core.timings_command(&s, at(4600)), None);
    core.grant(3, at(4600), acked.clone(), 6);
    assert_eq!(
        core.timings_command(&s, at(4600)),
        Some(Command::SettleTimings { seq: 2 })
    );
    // Another leadership (this node again, a later term): its own wait, and
    // the old lease + margin from when it saw the change, first.
    core.observe(None, at(4700));
    core.observe(Some(5), at(5000));
    core.see_timings(&s, at(5000));
    for n in [1, 2, 3] {
        core.grant(n, at(9000), acked.clone(), 7);
    }
    assert_eq!(
        core.timings_command(&s, at(9499)),
        None,
        "settled within the new leadership's wait"
    );
    assert_eq!(
        core.timings_command(&s, at(9500)),
        Some(Command::SettleTimings { seq: 2 })
    );
}
