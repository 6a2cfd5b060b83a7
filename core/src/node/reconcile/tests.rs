//! The reconciler as tables: state + lease + observation → actions.

use std::collections::BTreeMap;

use slotd_raft_store::command::{NodeSpec, StoreSpec};
use slotd_raft_store::{ClusterState, Command, Move, Phase, Reason, Request, SlotRef, Topology};

use super::*;

fn state() -> ClusterState {
    let node = |id: u64| NodeSpec {
        id,
        name: format!("imap{id}"),
        addr: format!("10.0.0.{id}:7420"),
        voter: true,
        slots: vec!["s01".into(), "s02".into()],
    };
    let store = |name: &str, k: u8, a: u64, b: u64, slot: &str| StoreSpec {
        name: name.into(),
        master_ip: format!("10.0.1.{k}/32").parse().unwrap(),
        replica_ip: format!("10.0.2.{k}/32").parse().unwrap(),
        slots: vec![
            SlotRef {
                node: a,
                slot: slot.into(),
            },
            SlotRef {
                node: b,
                slot: slot.into(),
            },
        ],
    };
    let mut s = ClusterState::default();
    let r = s.apply(&Request {
        at_ms: 0,
        command: Command::Init(Topology {
            nodes: vec![node(1), node(2), node(3)],
            stores: vec![store("st01", 1, 1, 2, "s01"), store("st02", 2, 2, 1, "s02")],
        }),
    });
    assert!(r.is_applied());
    s
}

fn ip(s: &str) -> ServiceIp {
    s.parse().unwrap()
}

fn observed(ips: &[&str], instances: &[(&str, Instance)]) -> Observed {
    Observed {
        addresses: ips.iter().map(|i| i.parse().unwrap()).collect(),
        instances: instances
            .iter()
            .map(|(s, i)| ((*s).to_owned(), *i))
            .collect::<BTreeMap<_, _>>(),
        leftovers: BTreeMap::new(),
        demoted: BTreeMap::new(),
        replayed: BTreeMap::new(),
        busy: Default::default(),
    }
}

/// An operator's switchover of st01 (epoch 1) from imap1 to imap2.
fn begin_switchover_to_imap2(s: &mut ClusterState) {
    apply(
        s,
        Command::BeginSwitchover {
            store: "st01".into(),
            epoch: 1,
            to: 2,
            force: false,
            reason: Reason::Operator,
        },
    );
}

fn apply(s: &mut ClusterState, command: Command) {
    let r = s.apply(&Request { at_ms: 0, command });
    assert!(r.is_applied(), "{r:?}");
}

#[test]
fn fresh_node_takes_its_roles_in_order() {
    let s = state();
    // imap1: master of st01 (slot s01), replica of st02 (slot s02).
    let actions = reconcile(&s, 1, true, &Observed::default());
    assert_eq!(
        actions,
        vec![
            Action::Bind {
                store: "st01".into(),
                ip: ip("10.0.1.1/32"),
                epoch: 1
            },
            Action::Announce {
                store: "st01".into(),
                ip: ip("10.0.1.1/32")
            },
            Action::StartMaster {
                store: "st01".into(),
                slot: "s01".into(),
                epoch: 1
            },
            Action::Bind {
                store: "st02".into(),
                ip: ip("10.0.2.2/32"),
                epoch: 1
            },
            Action::Announce {
                store: "st02".into(),
                ip: ip("10.0.2.2/32")
            },
            Action::StartReplica {
                store: "st02".into(),
                slot: "s02".into(),
                epoch: 1
            },
        ]
    );
    // Without a lease it takes only the replica role.
    let actions = reconcile(&s, 1, false, &Observed::default());
    assert!(
        actions.iter().all(|a| !matches!(a, Action::StartMaster { .. })),
        "{actions:?}"
    );
    assert!(!actions.contains(&Action::Bind {
        store: "st01".into(),
        ip: ip("10.0.1.1/32"),
        epoch: 1
    }));
    // A node with no slot in any store does nothing.
    assert!(reconcile(&s, 3, true, &Observed::default()).is_empty());
}

#[test]
fn converged_node_does_nothing() {
    let s = state();
    let o = observed(
        &["10.0.1.1", "10.0.2.2"],
        &[
            ("s01", Instance::Master { epoch: 1 }),
            ("s02", Instance::Replica { epoch: 1 }),
        ],
    );
    assert_eq!(reconcile(&s, 1, true, &o), vec![]);
}

#[test]
fn lease_lost_fences_masters_only() {
    let s = state();
    let o = observed(
        &["10.0.1.1", "10.0.2.2"],
        &[
            ("s01", Instance::Master { epoch: 1 }),
            ("s02", Instance::Replica { epoch: 1 }),
        ],
    );
    assert_eq!(
        reconcile(&s, 1, false, &o),
        vec![
            Action::Release {
                store: "st01".into(),
                ip: ip("10.0.1.1/32")
            },
            Action::Stop {
                store: "st01".into(),
                slot: "s01".into()
            },
        ]
    );
}

#[test]
fn failed_away_old_master_gives_up_then_becomes_replica() {
    let mut s = state();
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
    // imap1 comes back still holding st01's master IP and running it as master.
    let o = observed(
        &["10.0.1.1", "10.0.2.2"],
        &[
            ("s01", Instance::Master { epoch: 1 }),
            ("s02", Instance::Replica { epoch: 1 }),
        ],
    );
    assert_eq!(
        reconcile(&s, 1, true, &o),
        vec![
            Action::Release {
                store: "st01".into(),
                ip: ip("10.0.1.1/32")
            },
            Action::Stop {
                store: "st01".into(),
                slot: "s01".into()
            },
            Action::Bind {
                store: "st01".into(),
                ip: ip("10.0.2.1/32"),
                epoch: 2
            },
            Action::Announce {
                store: "st01".into(),
                ip: ip("10.0.2.1/32")
            },
            Action::StartReplica {
                store: "st01".into(),
                slot: "s01".into(),
                epoch: 2
            },
        ]
    );
    // imap2, the new master, first gives up st01's replica role (instance,
    // then address: the log names it master, its lease holds).
    let o = observed(
        &["10.0.2.1", "10.0.1.2"],
        &[
            ("s01", Instance::Replica { epoch: 1 }),
            ("s02", Instance::Master { epoch: 1 }),
        ],
    );
    assert_eq!(
        reconcile(&s, 2, true, &o),
        vec![
            Action::Stop {
                store: "st01".into(),
                slot: "s01".into()
            },
            Action::Release {
                store: "st01".into(),
                ip: ip("10.0.2.1/32")
            },
            Action::Bind {
                store: "st01".into(),
                ip: ip("10.0.1.1/32"),
                epoch: 2
            },
            Action::Announce {
                store: "st01".into(),
                ip: ip("10.0.1.1/32")
            },
            Action::StartMaster {
                store: "st01".into(),
                slot: "s01".into(),
                epoch: 2
            },
        ]
    );
}

#[test]
fn switchover_phases() {
    let mut s = state();
    begin_switchover_to_imap2(&mut s);
    assert!(matches!(s.stores["st01"].phase, Phase::Demoting { .. }));
    // Demoting: the old master stops (and flushes) on a task of its own;
    // the master IP stays meanwhile.
    let mut o = observed(
        &["10.0.1.1", "10.0.2.2"],
        &[
            ("s01", Instance::Master { epoch: 1 }),
            ("s02", Instance::Replica { epoch: 1 }),
        ],
    );
    assert_eq!(
        reconcile(&s, 1, true, &o),
        vec![Action::Demote {
            store: "st01".into(),
            slot: "s01".into(),
            epoch: 2,
            force: false,
        }]
    );
    // While it runs, the slot and the master IP are left alone.
    o.busy.insert("s01".into());
    o.instances.remove("s01");
    assert_eq!(reconcile(&s, 1, true, &o), vec![]);
    assert!(phase_done(&s, 1, true, &o).is_empty(), "not acked while demoting");
    // A demote that failed: tried again, the IP still kept.
    o.busy.clear();
    assert!(matches!(reconcile(&s, 1, true, &o)[..], [Action::Demote { .. }]));
    // Done: now the address goes.
    o.demoted.insert("s01".into(), 2);
    assert_eq!(
        reconcile(&s, 1, true, &o),
        vec![Action::Release {
            store: "st01".into(),
            ip: ip("10.0.1.1/32")
        }]
    );
    // The lease gone, fencing waits for no demote: the IP goes at once.
    let mut fencing = o.clone();
    fencing.demoted.clear();
    fencing.busy.insert("s01".into());
    assert_eq!(
        reconcile(&s, 1, false, &fencing),
        vec![Action::Release {
            store: "st01".into(),
            ip: ip("10.0.1.1/32")
        }]
    );
    // Demoted for this attempt: nothing more, and the phase is acked.
    let mut after = observed(&["10.0.2.2"], &[("s02", Instance::Replica { epoch: 1 })]);
    after.demoted.insert("s01".into(), 2);
    assert_eq!(reconcile(&s, 1, false, &after), vec![]);
    assert_eq!(phase_done(&s, 1, false, &after), [("st01".to_owned(), 2)].into());
    // The target stays replica until the log says Promoting.
    let o2 = observed(
        &["10.0.2.1", "10.0.1.2"],
        &[
            ("s01", Instance::Replica { epoch: 1 }),
            ("s02", Instance::Master { epoch: 1 }),
        ],
    );
    assert_eq!(reconcile(&s, 2, true, &o2), vec![]);
    apply(
        &mut s,
        Command::AdvanceSwitchover {
            store: "st01".into(),
            epoch: 2,
        },
    );
    let actions = reconcile(&s, 2, true, &o2);
    assert_eq!(
        actions.last(),
        Some(&Action::StartMaster {
            store: "st01".into(),
            slot: "s01".into(),
            epoch: 3
        })
    );
    // No lease, no promotion.
    let unleased = reconcile(&s, 2, false, &o2);
    assert!(
        !unleased.iter().any(|a| matches!(a, Action::StartMaster { .. })),
        "{unleased:?}"
    );
    assert!(!unleased.contains(&Action::Bind {
        store: "st01".into(),
        ip: ip("10.0.1.1/32"),
        epoch: 3
    }));
}

#[test]
fn never_two_masters_for_one_state() {
    // For every node and every observation, at most one node may end with
    // the master role of a store: the one the log names.
    let mut s = state();
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
    for me in 1..=3 {
        for lease in [true, false] {
            let actions = reconcile(&s, me, lease, &Observed::default());
            for a in &actions {
                if let Action::StartMaster { store, .. } = a {
                    assert_eq!(s.stores[store].master, me);
                    assert!(lease);
                }
                if let Action::Bind { store, ip, .. } = a {
                    if *ip == s.stores[store].master_ip {
                        assert_eq!(s.stores[store].master, me);
                    }
                }
            }
        }
    }
}

#[test]
fn a_removed_store_leaves_nothing_behind() {
    let s = state();
    // Node 1 still holds st09's master IP from before the store was removed
    // (its ledger says so): it goes, whatever the lease.
    let mut o = observed(&["10.0.1.1"], &[("s01", Instance::Master { epoch: 1 })]);
    let gone = ip("10.0.9.1/32");
    o.leftovers.insert(gone.addr, (gone, "st09".into()));
    for lease in [true, false] {
        let actions = reconcile(&s, 1, lease, &o);
        let release = Action::Release {
            store: "st09".into(),
            ip: gone,
        };
        let at = actions.iter().position(|a| *a == release);
        let first_take = actions.iter().position(|a| !a.is_give_up()).unwrap_or(actions.len());
        assert!(at.is_some_and(|i| i < first_take), "{actions:?}");
    }
    let plan = plan_pass(&s, reconcile(&s, 1, true, &o));
    assert_eq!(plan.give_up.len(), 1);
    assert!(plan.take.iter().all(|c| c.iter().all(|a| a.store() != "st09")));
}

#[test]
fn an_instance_the_log_wants_and_that_does_not_run_is_missing() {
    let mut s = state();
    let st = s.stores["st01"].clone();
    // imap1 masters st01, imap2 is its replica.
    assert_eq!(missing_role(&st, 1, Some("master")), None);
    assert_eq!(missing_role(&st, 1, None), Some("master"));
    assert_eq!(missing_role(&st, 1, Some("replica")), Some("master"));
    assert_eq!(missing_role(&st, 2, Some("replica")), None);
    assert_eq!(missing_role(&st, 2, Some("stopped")), Some("replica"));
    assert_eq!(missing_role(&st, 3, None), None, "no slot of the store here");
    // While a switchover runs, instances change on purpose.
    begin_switchover_to_imap2(&mut s);
    assert_eq!(missing_role(&s.stores["st01"], 1, None), None);
}

#[test]
fn a_stopping_agent_stops_a_demoting_instance_without_its_flush() {
    let demote = Action::Demote {
        store: "st01".into(),
        slot: "s01".into(),
        epoch: 4,
        force: false,
    };
    let release = Action::Release {
        store: "st01".into(),
        ip: ip("10.0.1.1/32"),
    };
    assert_eq!(
        at_stop(vec![demote, release.clone()]),
        vec![
            Action::Stop {
                store: "st01".into(),
                slot: "s01".into()
            },
            release
        ]
    );
}

#[test]
fn a_master_is_taken_only_with_nobody_answering_and_lease_to_spare() {
    let plenty = Duration::from_secs(1);
    assert_eq!(may_bind_master(None, plenty), Ok(()));
    assert_eq!(
        may_bind_master(Some("02:00:00:00:00:02".into()), plenty),
        Err(Hold::Answered("02:00:00:00:00:02".into()))
    );
    assert_eq!(
        may_bind_master(None, TAKE_GUARD - Duration::from_millis(1)),
        Err(Hold::LeaseEnding)
    );
    assert_eq!(may_start_master(TAKE_GUARD), Ok(()));
    assert_eq!(may_start_master(Duration::ZERO), Err(Hold::LeaseEnding));
}
