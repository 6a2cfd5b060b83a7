//! The leader's pure decisions: failover targets and rebalance moves.

use std::collections::BTreeSet;

use proptest::prelude::*;
use slotd_core::leader::decide::{failover_targets, rebalance_moves, RebalanceOptions, Reports};
use slotd_raft_store::{ClusterState, Command, Move, NodeMode, Reason, Topology};

use slotd_raft_store::testkit::{initialised, node, planned, req, store};

/// Three stores with three slots each over four nodes, all mastered on imap1.
fn triple() -> ClusterState {
    let slots = ["s01", "s02", "s03"];
    initialised(Topology {
        nodes: (1..=4).map(|i| node(i, &format!("imap{i}"), &slots)).collect(),
        stores: vec![
            store("st01", 1, &[(1, "s01"), (2, "s01"), (3, "s01")]),
            store("st02", 2, &[(1, "s02"), (2, "s02"), (4, "s02")]),
            store("st03", 3, &[(1, "s03"), (3, "s03"), (4, "s03")]),
        ],
    })
}

fn apply(state: &mut ClusterState, command: Command) {
    let r = state.apply(&req(command.clone()));
    assert!(r.is_applied(), "{command:?}: {r:?}");
}

fn targets(state: &ClusterState, dead: &[u64], reports: &Reports) -> Vec<(String, u64)> {
    let plan = failover_targets(state, &dead.iter().copied().collect(), reports);
    plan.moves.into_iter().map(|m| (m.store, m.to)).collect()
}

#[test]
fn failover_spreads_and_prefers_small_backlog() {
    let s = triple();
    // Fewest masters first: each store to a different node where possible.
    assert_eq!(
        targets(&s, &[1], &Reports::default()),
        vec![("st01".into(), 2), ("st02".into(), 4), ("st03".into(), 3)]
    );
    // Backlog breaks ties between equally loaded replicas.
    let mut reports = Reports::default();
    reports.backlog.insert(("st01".into(), 2), 5000);
    reports.backlog.insert(("st01".into(), 3), 10);
    assert_eq!(targets(&s, &[1], &reports)[0], ("st01".into(), 3));
    // Nobody dead, nothing to do; a dead replica is not a master to move.
    assert!(targets(&s, &[], &Reports::default()).is_empty());
    assert!(targets(&s, &[2], &Reports::default()).is_empty());
}

#[test]
fn failover_skips_drained_dead_and_dirty_and_reports_stranded() {
    let mut s = triple();
    apply(
        &mut s,
        Command::SetNodeMode {
            node: 2,
            mode: NodeMode::Draining,
        },
    );
    assert_eq!(targets(&s, &[1], &Reports::default())[0], ("st01".into(), 3));
    assert_eq!(
        targets(&s, &[1, 3], &Reports::default()),
        vec![("st01".into(), 2), ("st02".into(), 4), ("st03".into(), 4)]
    );
    // A draining replica, when nothing else is left: served beats unserved.
    let plan = failover_targets(&s, &BTreeSet::from([1, 3]), &Reports::default());
    assert!(plan.stranded.is_empty(), "{:?}", plan.stranded);
    assert!(plan.moves.contains(&Move {
        store: "st01".into(),
        epoch: 1,
        to: 2
    }));
    // A drained one never.
    apply(
        &mut s,
        Command::SetNodeMode {
            node: 2,
            mode: NodeMode::Drained,
        },
    );
    let plan = failover_targets(&s, &BTreeSet::from([1, 3]), &Reports::default());
    assert_eq!(plan.stranded.len(), 1);
    assert_eq!(plan.stranded[0].store, "st01");
    assert!(
        plan.stranded[0].why.contains("imap2 drained") && plan.stranded[0].why.contains("imap3 dead"),
        "{}",
        plan.stranded[0].why
    );

    // A dirty replica only when nothing else is left.
    let mut s = triple();
    apply(
        &mut s,
        Command::Failover {
            reason: Reason::Failure,
            moves: vec![Move {
                store: "st01".into(),
                epoch: 1,
                to: 2,
            }],
        },
    );
    apply(
        &mut s,
        Command::Failover {
            reason: Reason::Failure,
            moves: vec![Move {
                store: "st01".into(),
                epoch: 2,
                to: 3,
            }],
        },
    );
    // st01: master imap3, dirty {imap1, imap2}. imap3 dies: imap1 and imap2 are both dirty,
    // so the less loaded one wins; with imap1 dead as well, imap2 is the only choice left.
    assert_eq!(targets(&s, &[3], &Reports::default())[0].0, "st01");
    assert_eq!(targets(&s, &[1, 3], &Reports::default())[0], ("st01".into(), 2));
}

fn caught_up(state: &ClusterState) -> Reports {
    let mut r = Reports::default();
    for st in state.stores.values() {
        for n in st.nodes() {
            r.backlog.insert((st.name.clone(), n), 0);
        }
    }
    r
}

fn all_live(state: &ClusterState) -> BTreeSet<u64> {
    state.nodes.keys().copied().collect()
}

/// Applies moves the way switchovers would end: master moved, epoch + 1.
fn apply_moves(state: &mut ClusterState, moves: &[Move]) {
    if !moves.is_empty() {
        apply(
            state,
            Command::Failover {
                reason: Reason::Rebalance,
                moves: moves.to_vec(),
            },
        );
        for m in moves {
            state.stores.get_mut(&m.store).unwrap().dirty.clear();
        }
    }
}

#[test]
fn rebalance_brings_masters_home_after_a_failure() {
    let mut s = initialised(planned(5, 4));
    let before = s.master_counts();
    let plan = failover_targets(&s, &BTreeSet::from([3]), &Reports::default());
    apply(
        &mut s,
        Command::Failover {
            reason: Reason::Failure,
            moves: plan.moves.clone(),
        },
    );
    for m in &plan.moves {
        apply(
            &mut s,
            Command::ClearDirty {
                store: m.store.clone(),
                node: 3,
            },
        );
    }
    let reports = caught_up(&s);
    let opts = RebalanceOptions::default();

    // Node 3 not yet live: nothing moves to it.
    let live: BTreeSet<u64> = all_live(&s).into_iter().filter(|n| *n != 3).collect();
    assert!(rebalance_moves(&s, &live, &reports, &opts).iter().all(|m| m.to != 3));

    // Live but lagging: nothing moves to it either.
    let mut lagging = reports.clone();
    for st in s.stores_on(3) {
        lagging.backlog.insert((st.name.clone(), 3), 50 << 20);
    }
    assert!(rebalance_moves(&s, &all_live(&s), &lagging, &opts)
        .iter()
        .all(|m| m.to != 3));

    // Caught up: every store goes home, and counts are back to the plan's.
    let moves = rebalance_moves(&s, &all_live(&s), &reports, &opts);
    assert_eq!(moves.len(), plan.moves.len());
    apply_moves(&mut s, &moves);
    assert_eq!(s.master_counts(), before);
    assert!(rebalance_moves(&s, &all_live(&s), &caught_up(&s), &opts).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// From any scramble of masters, rebalance reaches even counts (within 1
    /// where replicas allow) and then proposes nothing more: no flapping.
    #[test]
    fn rebalance_converges_and_is_idempotent(n in 3usize..9, s in 1usize..7, picks in prop::collection::vec(any::<bool>(), 200)) {
        prop_assume!(n * s % 2 == 0);
        let mut state = initialised(planned(n, s));
        let scramble: Vec<Move> = state.stores.values().zip(picks.iter().cycle())
            .filter(|(_, p)| **p)
            .map(|(st, _)| Move { store: st.name.clone(), epoch: st.epoch, to: st.replicas().next().unwrap() })
            .collect();
        apply_moves(&mut state, &scramble);
        let live = all_live(&state);
        let opts = RebalanceOptions::default();
        let moves = rebalance_moves(&state, &live, &caught_up(&state), &opts);
        apply_moves(&mut state, &moves);
        prop_assert!(rebalance_moves(&state, &live, &caught_up(&state), &opts).is_empty());
        let counts = state.master_counts();
        let (min, max) = (counts.values().min().unwrap(), counts.values().max().unwrap());
        prop_assert!(max - min <= 2, "counts {:?}", counts);
    }
}
