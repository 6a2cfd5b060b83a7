//! `plan`: every node's masters are spread so that one node's death adds at
//! most ⌈masters/(N−1)⌉ masters to any survivor — checked by actually failing
//! each node in turn through `failover_targets` and the state machine.

use std::collections::BTreeSet;

use slotd_core::leader::decide::{failover_targets, Reports};
use slotd_raft_store::plan::{plan, PlanError};
use slotd_raft_store::{Command, Reason, Response};

use slotd_raft_store::testkit::{initialised, planned, req};

#[test]
fn one_death_spreads_evenly_for_3_to_40_nodes() {
    let mut checked = 0;
    for n in 3..=40usize {
        for s in [1usize, 2, 3, 4, 5, 8, 11, 16, 40] {
            if n * s % 2 == 1 {
                assert_eq!(plan(n, s), Err(PlanError::Odd { nodes: n, slots: s }));
                continue;
            }
            let topology = planned(n, s);
            // Every slot used exactly once, half or so of each node's slots masters.
            assert_eq!(topology.stores.len(), n * s / 2, "n={n} s={s}");
            let state = initialised(topology);
            let counts = state.master_counts();
            for (node, c) in &counts {
                assert!(c.abs_diff(s / 2) <= 1, "n={n} s={s}: node {node} masters {c}");
                let used = state.stores_on(*node).count();
                assert_eq!(used, s, "n={n} s={s}: node {node} uses {used} slots");
            }
            for dead in 1..=n as u64 {
                let masters = counts[&dead];
                let bound = masters.div_ceil(n - 1);
                let decision = failover_targets(&state, &BTreeSet::from([dead]), &Reports::default());
                assert!(
                    decision.stranded.is_empty(),
                    "n={n} s={s} dead={dead}: {:?}",
                    decision.stranded
                );
                assert_eq!(decision.moves.len(), masters);
                if masters == 0 {
                    continue;
                }
                let mut after = state.clone();
                let r = after.apply(&req(Command::Failover {
                    reason: Reason::Failure,
                    moves: decision.moves,
                }));
                assert_eq!(r, Response::Applied, "n={n} s={s} dead={dead}");
                let new_counts = after.master_counts();
                assert_eq!(new_counts[&dead], 0);
                for (node, c) in &new_counts {
                    if *node == dead {
                        continue;
                    }
                    let gained = c - counts[node];
                    assert!(
                        gained <= bound,
                        "n={n} s={s}: node {node} gained {gained} masters when {dead} (with {masters}) died; bound {bound}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 1500, "only {checked} deaths checked");
}

#[test]
fn refuses_impossible_plans() {
    assert_eq!(plan(1, 4), Err(PlanError::Nodes(1)));
    assert_eq!(plan(3, 0), Err(PlanError::Slots(0)));
    assert!(plan(3, 3).unwrap_err().to_string().contains("odd number"));
    assert!(plan(2, 1).is_ok());
}
