//! The state machine: a table of commands that must be refused (and change
//! nothing), the switchover and failover life cycles, and a property test
//! over random sequences of valid and invalid commands.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use slotd_raft_store::codec;
use slotd_raft_store::{ClusterState, Command, Move, NodeMode, Phase, Reason, Rejection, Request, Response, Topology};

use common::{initialised, node, planned, req, store};

fn small() -> Topology {
    Topology {
        nodes: vec![
            node(1, "imap1", &["s01", "s02"]),
            node(2, "imap2", &["s01", "s02"]),
            node(3, "imap3", &["s01", "s02"]),
        ],
        stores: vec![
            store("st01", 1, &[(1, "s01"), (2, "s01")]),
            store("st02", 2, &[(2, "s02"), (3, "s01")]),
        ],
    }
}

/// Applies and asserts the outcome; a rejection must leave the state
/// byte-for-byte as it was.
fn must_reject(state: &mut ClusterState, command: Command, want: &str) -> Rejection {
    let before = codec::encode(state).unwrap();
    match state.apply(&req(command.clone())) {
        Response::Rejected(r) => {
            assert!(
                r.to_string().contains(want),
                "{command:?}: message {:?} lacks {want:?}",
                r.to_string()
            );
            assert_eq!(
                codec::encode(state).unwrap(),
                before,
                "rejected {command:?} changed the state"
            );
            r
        }
        Response::Applied => panic!("{command:?} was applied, expected a rejection containing {want:?}"),
    }
}

fn must_apply(state: &mut ClusterState, command: Command) {
    let r = state.apply(&req(command.clone()));
    assert_eq!(r, Response::Applied, "{command:?}");
}

#[test]
fn invalid_commands_are_refused_and_change_nothing() {
    let mut fresh = ClusterState::default();
    must_reject(
        &mut fresh,
        Command::SetNodeMode {
            node: 1,
            mode: NodeMode::Drained,
        },
        "not initialised",
    );
    let mut bad_topology = small();
    bad_topology.stores[1].slots[1].node = 2;
    must_reject(&mut fresh, Command::Init(bad_topology), "two slots on node imap2");

    let mut s = initialised(small());
    let st01 = |epoch| Command::BeginSwitchover {
        store: "st01".into(),
        epoch,
        to: 2,
        force: false,
        reason: Reason::Operator,
    };
    let cases: Vec<(Command, &str)> = vec![
        (Command::Init(small()), "already initialised"),
        (
            Command::SetNodeMode {
                node: 9,
                mode: NodeMode::Draining,
            },
            "unknown node 9",
        ),
        (
            Command::SetNodeMode {
                node: 1,
                mode: NodeMode::Drained,
            },
            "is active, not draining",
        ),
        (
            Command::RemoveNode { node: 2 },
            "still holds slots of stores st01, st02",
        ),
        (Command::AddNode(node(4, "imap1", &["s01"])), "name \"imap1\""),
        (Command::AddNode(node(2, "imap9", &["s01"])), "id 2"),
        (Command::AddNode(node(4, "imap 4", &["s01"])), "field name"),
        (Command::AddNode(node(4, "imap4", &["s01", "s01"])), "listed twice"),
        (
            Command::AddNode(slotd_raft_store::NodeSpec {
                addr: "nowhere".into(),
                ..node(4, "imap4", &["s01"])
            }),
            "field addr",
        ),
        (
            Command::AddStore(store("st01", 9, &[(1, "s02"), (3, "s02")])),
            "already exists",
        ),
        (
            Command::AddStore(store("st03", 1, &[(1, "s02"), (3, "s02")])),
            "already used by store \"st01\"",
        ),
        (Command::AddStore(store("st03", 3, &[(1, "s02")])), "at least two slots"),
        (
            Command::AddStore(store("st03", 3, &[(1, "s02"), (1, "s01")])),
            "two slots on node imap1",
        ),
        (
            Command::AddStore(store("st03", 3, &[(1, "s01"), (3, "s02")])),
            "already belongs to store \"st01\"",
        ),
        (
            Command::AddStore(store("st03", 3, &[(1, "s09"), (3, "s02")])),
            "has no slot \"s09\"",
        ),
        (
            Command::AddStore(store("st03", 3, &[(7, "s01"), (3, "s02")])),
            "unknown node 7",
        ),
        (
            Command::RemoveStore {
                store: "st09".into(),
                epoch: 1,
            },
            "unknown store \"st09\"",
        ),
        (
            Command::RemoveStore {
                store: "st01".into(),
                epoch: 2,
            },
            "epoch is 1, not 2",
        ),
        (st01(7), "epoch is 1, not 7"),
        (
            Command::BeginSwitchover {
                store: "st01".into(),
                epoch: 1,
                to: 3,
                force: false,
                reason: Reason::Operator,
            },
            "imap3 holds no slot",
        ),
        (
            Command::BeginSwitchover {
                store: "st01".into(),
                epoch: 1,
                to: 1,
                force: false,
                reason: Reason::Operator,
            },
            "already its master",
        ),
        (
            Command::AdvanceSwitchover {
                store: "st01".into(),
                epoch: 1,
            },
            "is stable, not demoting",
        ),
        (
            Command::CompleteSwitchover {
                store: "st01".into(),
                epoch: 1,
            },
            "not promoting",
        ),
        (
            Command::RollbackSwitchover {
                store: "st01".into(),
                epoch: 1,
                why: "x".into(),
            },
            "not demoting or promoting",
        ),
        (
            Command::Failover {
                reason: Reason::Failure,
                moves: vec![],
            },
            "at least one store",
        ),
        (
            Command::Failover {
                reason: Reason::Failure,
                moves: vec![
                    Move {
                        store: "st01".into(),
                        epoch: 1,
                        to: 2,
                    },
                    Move {
                        store: "st01".into(),
                        epoch: 1,
                        to: 2,
                    },
                ],
            },
            "appears twice",
        ),
        (
            // One bad move spoils the whole entry: the valid one is not applied either.
            Command::Failover {
                reason: Reason::Failure,
                moves: vec![
                    Move {
                        store: "st01".into(),
                        epoch: 1,
                        to: 2,
                    },
                    Move {
                        store: "st02".into(),
                        epoch: 5,
                        to: 3,
                    },
                ],
            },
            "epoch is 1, not 5",
        ),
        (
            Command::ClearDirty {
                store: "st01".into(),
                node: 1,
            },
            "not marked dirty",
        ),
        (Command::SetVoter { node: 4, voter: true }, "unknown node 4"),
    ];
    for (command, want) in cases {
        must_reject(&mut s, command, want);
    }

    // An address built in memory (not parsed) is checked all the same.
    let mut loopback = store("st03", 3, &[(1, "s02"), (3, "s02")]);
    loopback.master_ip = slotd_raft_store::ServiceIp {
        addr: [127, 0, 0, 1].into(),
        len: 32,
    };
    must_reject(
        &mut s,
        Command::AddStore(loopback),
        "field master_ip: 127.0.0.1 cannot be a service address",
    );
    let mut long = store("st03", 3, &[(1, "s02"), (3, "s02")]);
    long.replica_ip.len = 200;
    must_reject(
        &mut s,
        Command::AddStore(long),
        "field replica_ip: prefix /200 is too long",
    );

    // Targets that are not active.
    must_apply(
        &mut s,
        Command::SetNodeMode {
            node: 2,
            mode: NodeMode::Draining,
        },
    );
    must_reject(&mut s, st01(1), "imap2 is draining");
    // A failover may take a draining node (nothing better left).
    must_apply(
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
}

fn begin(store: &str, epoch: u64, to: u64) -> Command {
    Command::BeginSwitchover {
        store: store.into(),
        epoch,
        to,
        force: false,
        reason: Reason::Operator,
    }
}

#[test]
fn switchover_phases_each_take_an_epoch_and_leave_history() {
    let mut s = initialised(small());
    must_apply(&mut s, begin("st01", 1, 2));
    let st = &s.stores["st01"];
    assert_eq!(
        (st.master, st.epoch),
        (1, 2),
        "old master stays master, under the attempt's epoch"
    );
    assert!(matches!(st.phase, Phase::Demoting { from: 1, to: 2, .. }));
    // A second switchover of the same store waits for this one.
    must_reject(&mut s, begin("st01", 2, 2), "is demoting, not stable");
    must_apply(
        &mut s,
        Command::AdvanceSwitchover {
            store: "st01".into(),
            epoch: 2,
        },
    );
    let st = &s.stores["st01"];
    assert_eq!((st.master, st.epoch), (2, 3));
    assert!(matches!(st.phase, Phase::Promoting { from: 1, to: 2, .. }));
    must_apply(
        &mut s,
        Command::CompleteSwitchover {
            store: "st01".into(),
            epoch: 3,
        },
    );
    assert_eq!(s.stores["st01"].phase, Phase::Stable);
    let last = s.history.back().unwrap();
    assert_eq!(
        (last.from, last.to, last.epoch, last.reason, last.what.as_str()),
        (1, 2, 3, Reason::Operator, "switchover")
    );
    assert!(last.duration_ms.is_some(), "a switchover says how long it took");

    // Rolling back from Promoting switches back, with a new epoch.
    must_apply(&mut s, begin("st01", 3, 1));
    must_apply(
        &mut s,
        Command::AdvanceSwitchover {
            store: "st01".into(),
            epoch: 4,
        },
    );
    must_apply(
        &mut s,
        Command::RollbackSwitchover {
            store: "st01".into(),
            epoch: 5,
            why: "timeout".into(),
        },
    );
    let st = &s.stores["st01"];
    assert_eq!((st.master, st.epoch), (1, 6));
    assert!(
        matches!(st.phase, Phase::Demoting { from: 1, to: 2, .. }),
        "the new master may hold the IP: it demotes first, then the old one takes over"
    );
    let last = s.history.back().unwrap();
    assert_eq!(last.what, "rollback while promoting: timeout");
    assert!(last.duration_ms.is_some(), "a rollback says how long the attempt took");
    // Going back fails too: no ping-pong, it stays where it is.
    must_apply(
        &mut s,
        Command::AdvanceSwitchover {
            store: "st01".into(),
            epoch: 6,
        },
    );
    must_apply(
        &mut s,
        Command::RollbackSwitchover {
            store: "st01".into(),
            epoch: 7,
            why: "timeout".into(),
        },
    );
    let st = &s.stores["st01"];
    assert_eq!((st.master, st.epoch, st.phase), (2, 8, Phase::Stable));
    let last = s.history.back().unwrap();
    assert_eq!(last.what, "rollback while promoting back (staying): timeout");
}

/// The old master's ack of an abandoned attempt arrives after a rollback
/// and a new attempt towards another replica: it must not promote anyone.
#[test]
fn a_late_ack_of_an_abandoned_attempt_is_refused() {
    let slots = ["s01"];
    let mut s = initialised(Topology {
        nodes: (1..=3).map(|i| node(i, &format!("imap{i}"), &slots)).collect(),
        stores: vec![store("st01", 1, &[(1, "s01"), (2, "s01"), (3, "s01")])],
    });
    must_apply(&mut s, begin("st01", 1, 2));
    let late_ack = Command::AdvanceSwitchover {
        store: "st01".into(),
        epoch: 2,
    };
    must_apply(
        &mut s,
        Command::RollbackSwitchover {
            store: "st01".into(),
            epoch: 2,
            why: "flush timed out".into(),
        },
    );
    must_apply(&mut s, begin("st01", 3, 3));
    must_reject(&mut s, late_ack, "epoch is 4, not 2");
    assert_eq!(s.stores["st01"].master, 1);

    // Removing and re-creating a store never gives its epoch back.
    must_apply(
        &mut s,
        Command::RollbackSwitchover {
            store: "st01".into(),
            epoch: 4,
            why: "x".into(),
        },
    );
    must_apply(
        &mut s,
        Command::RemoveStore {
            store: "st01".into(),
            epoch: 5,
        },
    );
    must_apply(&mut s, Command::AddStore(store("st01", 1, &[(1, "s01"), (2, "s01")])));
    assert_eq!(s.stores["st01"].epoch, 6);
}

#[test]
fn failover_moves_a_batch_and_marks_dirty() {
    let mut s = initialised(small());
    must_apply(
        &mut s,
        Command::Failover {
            reason: Reason::Failure,
            moves: vec![
                Move {
                    store: "st01".into(),
                    epoch: 1,
                    to: 2,
                },
                Move {
                    store: "st02".into(),
                    epoch: 1,
                    to: 3,
                },
            ],
        },
    );
    assert_eq!((s.stores["st01"].master, s.stores["st01"].epoch), (2, 2));
    assert_eq!((s.stores["st02"].master, s.stores["st02"].epoch), (3, 2));
    assert_eq!(s.stores["st01"].dirty, BTreeSet::from([1]));
    // A dirty node cannot take the master back by a switchover...
    must_reject(
        &mut s,
        Command::BeginSwitchover {
            store: "st01".into(),
            epoch: 2,
            to: 1,
            force: false,
            reason: Reason::Rebalance,
        },
        "marked dirty",
    );
    // ...until its leftovers are dealt with.
    must_apply(
        &mut s,
        Command::ClearDirty {
            store: "st01".into(),
            node: 1,
        },
    );
    assert!(s.stores["st01"].dirty.is_empty());
    assert_eq!(s.history.len(), 2);
}

#[test]
fn history_is_bounded() {
    let mut s = initialised(small());
    for i in 0..(slotd_raft_store::state::HISTORY_LEN as u64 + 10) {
        let to = if i % 2 == 0 { 2 } else { 1 };
        must_apply(
            &mut s,
            Command::Failover {
                reason: Reason::Failure,
                moves: vec![Move {
                    store: "st01".into(),
                    epoch: i + 1,
                    to,
                }],
            },
        );
    }
    assert_eq!(s.history.len(), slotd_raft_store::state::HISTORY_LEN);
    assert_eq!(s.history.front().unwrap().seq, 10);
}

// ------------------------------------------------------------ property test

/// An operation chosen without seeing the state; turned into a concrete
/// command against the state it meets, with the right epoch or a wrong one.
#[derive(Clone, Debug)]
enum Op {
    Begin {
        store: usize,
        to: usize,
        force: bool,
        good_epoch: bool,
    },
    Advance {
        store: usize,
        good_epoch: bool,
    },
    Complete {
        store: usize,
        good_epoch: bool,
    },
    Rollback {
        store: usize,
        good_epoch: bool,
    },
    Failover {
        stores: Vec<(usize, usize)>,
        good_epoch: bool,
    },
    Mode {
        node: usize,
        mode: u8,
    },
    ClearDirty {
        store: usize,
        node: usize,
    },
    RemoveStore {
        store: usize,
        good_epoch: bool,
    },
    AddStore {
        a: usize,
        b: usize,
        slot: usize,
        ip: u8,
    },
    RemoveNode {
        node: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0usize..14;
    let n = 0usize..6;
    prop_oneof![
        4 => (s.clone(), n.clone(), any::<bool>(), prop::bool::weighted(0.8))
            .prop_map(|(store, to, force, good_epoch)| Op::Begin { store, to, force, good_epoch }),
        3 => (s.clone(), prop::bool::weighted(0.8)).prop_map(|(store, good_epoch)| Op::Advance { store, good_epoch }),
        3 => (s.clone(), prop::bool::weighted(0.8)).prop_map(|(store, good_epoch)| Op::Complete { store, good_epoch }),
        1 => (s.clone(), prop::bool::weighted(0.8)).prop_map(|(store, good_epoch)| Op::Rollback { store, good_epoch }),
        3 => (prop::collection::vec((s.clone(), n.clone()), 0..4), prop::bool::weighted(0.8))
            .prop_map(|(stores, good_epoch)| Op::Failover { stores, good_epoch }),
        2 => (n.clone(), prop::sample::select(vec![0u8, 0, 1, 2])).prop_map(|(node, mode)| Op::Mode { node, mode }),
        1 => (s.clone(), n.clone()).prop_map(|(store, node)| Op::ClearDirty { store, node }),
        1 => (s.clone(), prop::bool::weighted(0.5)).prop_map(|(store, good_epoch)| Op::RemoveStore { store, good_epoch }),
        1 => (n.clone(), n.clone(), 0usize..5, 0u8..40).prop_map(|(a, b, slot, ip)| Op::AddStore { a, b, slot, ip }),
        1 => n.prop_map(|node| Op::RemoveNode { node }),
    ]
}

fn concrete(state: &ClusterState, op: &Op) -> Command {
    let names: Vec<&String> = state.stores.keys().collect();
    let store_at = |i: usize| {
        names
            .get(i % names.len().max(1))
            .map(|s| (*s).clone())
            .unwrap_or_else(|| "gone".into())
    };
    let epoch = |name: &str, good: bool| {
        let e = state.stores.get(name).map_or(1, |s| s.epoch);
        if good {
            e
        } else {
            e + 1
        }
    };
    let node_id = |i: usize| (i % 6) as u64 + 1; // 6 = one unknown node
                                                 // Mostly one of the store's own slots (so the command can be valid),
                                                 // sometimes any node at all.
    let slot_node = |name: &str, i: usize| match state.stores.get(name) {
        Some(st) if i < 5 => st.slots[i % st.slots.len()].node,
        _ => node_id(i),
    };
    // Mostly a store in the phase the command needs.
    let in_phase = |i: usize, want: fn(&Phase) -> bool| {
        let fit: Vec<&String> = state
            .stores
            .values()
            .filter(|s| want(&s.phase))
            .map(|s| &s.name)
            .collect();
        if fit.is_empty() || i.is_multiple_of(7) {
            store_at(i)
        } else {
            fit[i % fit.len()].clone()
        }
    };
    match op.clone() {
        Op::Begin {
            store,
            to,
            force,
            good_epoch,
        } => {
            let name = in_phase(store, |p| *p == Phase::Stable);
            Command::BeginSwitchover {
                epoch: epoch(&name, good_epoch),
                to: slot_node(&name, to),
                store: name,
                force,
                reason: Reason::Operator,
            }
        }
        Op::Advance { store, good_epoch } => {
            let name = in_phase(store, |p| matches!(p, Phase::Demoting { .. }));
            Command::AdvanceSwitchover {
                epoch: epoch(&name, good_epoch),
                store: name,
            }
        }
        Op::Complete { store, good_epoch } => {
            let name = in_phase(store, |p| matches!(p, Phase::Promoting { .. }));
            Command::CompleteSwitchover {
                epoch: epoch(&name, good_epoch),
                store: name,
            }
        }
        Op::Rollback { store, good_epoch } => {
            let name = in_phase(store, |p| *p != Phase::Stable);
            Command::RollbackSwitchover {
                epoch: epoch(&name, good_epoch),
                store: name,
                why: "test".into(),
            }
        }
        Op::Failover { stores, good_epoch } => Command::Failover {
            reason: Reason::Failure,
            moves: stores
                .iter()
                .map(|(s, to)| {
                    let name = store_at(*s);
                    Move {
                        epoch: epoch(&name, good_epoch),
                        to: slot_node(&name, *to),
                        store: name,
                    }
                })
                .collect(),
        },
        Op::Mode { node, mode } => Command::SetNodeMode {
            node: node_id(node),
            mode: [NodeMode::Active, NodeMode::Draining, NodeMode::Drained][mode as usize],
        },
        Op::ClearDirty { store, node } => {
            let name = in_phase(store, |_| true);
            let dirty = state
                .stores
                .get(&name)
                .and_then(|s| s.dirty.iter().nth(node % 2).copied());
            Command::ClearDirty {
                store: name,
                node: dirty.unwrap_or(node_id(node)),
            }
        }
        Op::RemoveStore { store, good_epoch } => {
            let name = store_at(store);
            Command::RemoveStore {
                epoch: epoch(&name, good_epoch),
                store: name,
            }
        }
        Op::AddStore { a, b, slot, ip } => Command::AddStore(common::store(
            &format!("new{ip}"),
            ip,
            &[
                (node_id(a), &format!("s{:02}", slot + 1)),
                (node_id(b), &format!("s{:02}", slot + 1)),
            ],
        )),
        Op::RemoveNode { node } => Command::RemoveNode { node: node_id(node) },
    }
}

/// What must hold after every applied entry.
fn check_invariants(state: &ClusterState) {
    let mut ips = BTreeSet::new();
    let mut slots = BTreeSet::new();
    for st in state.stores.values() {
        assert!(
            st.has_node(st.master),
            "{}: master {} is not one of its slots",
            st.name,
            st.master
        );
        let nodes: BTreeSet<u64> = st.nodes().collect();
        assert_eq!(nodes.len(), st.slots.len(), "{}: two slots on one node", st.name);
        for n in &nodes {
            assert!(state.nodes.contains_key(n), "{}: slot on removed node {n}", st.name);
        }
        match st.phase {
            Phase::Stable => {}
            Phase::Demoting { from, to, .. } => assert!(st.master == from && from != to && st.has_node(to)),
            Phase::Promoting { from, to, .. } => assert!(st.master == to && from != to && st.has_node(from)),
        }
        assert!(
            ips.insert(st.master_ip.addr) && ips.insert(st.replica_ip.addr),
            "{}: IP shared",
            st.name
        );
        for slot in &st.slots {
            assert!(slots.insert(slot.clone()), "{}: slot {slot:?} in two stores", st.name);
        }
    }
    for n in state.nodes.values().filter(|n| n.mode == NodeMode::Drained) {
        assert_eq!(state.masters_of(n.id).count(), 0, "drained {} masters stores", n.name);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_the_invariants(ops in prop::collection::vec(op(), 1..120)) {
        let mut state = initialised(planned(5, 4));
        let mut log: Vec<Request> = vec![req(Command::Init(planned(5, 4)))];
        let mut applied = 0usize;
        for op in &ops {
            let command = concrete(&state, op);
            let before = codec::encode(&state).unwrap();
            let epochs: BTreeMap<String, u64> = state.stores.iter().map(|(k, v)| (k.clone(), v.epoch)).collect();
            let request = req(command);
            let response = state.apply(&request);
            log.push(request);
            match response {
                Response::Rejected(_) => prop_assert_eq!(codec::encode(&state).unwrap(), before),
                Response::Applied => {
                    applied += 1;
                    for (name, e) in &epochs {
                        if let Some(st) = state.stores.get(name) {
                            prop_assert!(st.epoch >= *e, "{} epoch went from {} to {}", name, e, st.epoch);
                        }
                    }
                }
            }
            check_invariants(&state);
        }
        // Replaying the same log from scratch, twice, gives the same state.
        let replay = |log: &[Request]| {
            let mut s = ClusterState::default();
            for r in log { s.apply(r); }
            s
        };
        prop_assert_eq!(&replay(&log), &state);
        prop_assert_eq!(codec::encode(&replay(&log)).unwrap(), codec::encode(&state).unwrap());
        let _ = applied;
    }
}

/// The property above is only worth something if the generator reaches
/// deep states: most commands are applied, and every kind of change happens.
#[test]
fn generator_mostly_produces_valid_commands() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut applied, mut total) = (0, 0);
    let mut by_kind: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    let mut kinds = BTreeSet::new();
    for _ in 0..100 {
        let ops = prop::collection::vec(op(), 100)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut state = initialised(planned(5, 4));
        for op in &ops {
            let command = concrete(&state, op);
            total += 1;
            let kind = format!("{command:?}").split([' ', '(', '{']).next().unwrap().to_owned();
            let e = by_kind.entry(kind.clone()).or_default();
            e.1 += 1;
            if state.apply(&req(command.clone())).is_applied() {
                applied += 1;
                e.0 += 1;
                kinds.insert(kind);
            }
        }
    }
    // Many commands are invalid on purpose (wrong epoch, drained target);
    // a fifth being applied still walks deep into switchovers and failovers.
    assert!(
        applied * 100 / total >= 15,
        "only {applied} of {total} applied: {by_kind:?}"
    );
    for kind in [
        "BeginSwitchover",
        "AdvanceSwitchover",
        "CompleteSwitchover",
        "RollbackSwitchover",
        "Failover",
        "SetNodeMode",
        "ClearDirty",
        "RemoveStore",
        "AddStore",
    ] {
        assert!(kinds.contains(kind), "{kind} never applied; applied kinds: {kinds:?}");
    }
}

/// Drain, undrain and the `Drained` mode: a node becomes drained only once
/// it masters nothing and nothing is leaving it (a rollback would make it
/// master again).
#[test]
fn drain_marks_the_node_and_drained_waits_for_every_switchover() {
    let mut s = initialised(small());
    must_reject(
        &mut s,
        Command::Drain {
            node: 1,
            concurrency: 0,
            on_stop: false,
        },
        "concurrency: 0 is not from 1 to 64",
    );
    must_reject(
        &mut s,
        Command::Drain {
            node: 9,
            concurrency: 4,
            on_stop: false,
        },
        "unknown node 9",
    );
    must_apply(
        &mut s,
        Command::Drain {
            node: 1,
            concurrency: 4,
            on_stop: true,
        },
    );
    let n = &s.nodes[&1];
    assert_eq!(n.mode, NodeMode::Draining);
    assert_eq!(
        n.drain,
        Some(slotd_raft_store::DrainJob {
            concurrency: 4,
            on_stop: true
        })
    );
    let drained = Command::SetNodeMode {
        node: 1,
        mode: NodeMode::Drained,
    };
    must_reject(&mut s, drained.clone(), "still masters stores st01");
    must_apply(&mut s, begin("st01", 1, 2));
    must_apply(
        &mut s,
        Command::AdvanceSwitchover {
            store: "st01".into(),
            epoch: 2,
        },
    );
    // imap1 masters nothing now, but a rollback could give st01 back.
    must_reject(&mut s, drained.clone(), "is in switchovers of stores st01");
    must_apply(
        &mut s,
        Command::CompleteSwitchover {
            store: "st01".into(),
            epoch: 3,
        },
    );
    must_apply(&mut s, drained);
    assert_eq!(s.nodes[&1].mode, NodeMode::Drained);
    must_apply(
        &mut s,
        Command::SetNodeMode {
            node: 1,
            mode: NodeMode::Active,
        },
    );
    assert_eq!((s.nodes[&1].mode, s.nodes[&1].drain), (NodeMode::Active, None));

    must_reject(&mut s, Command::Rebalance { concurrency: 65 }, "concurrency");
    must_apply(&mut s, Command::Rebalance { concurrency: 4 });
    let job = s.rebalance.expect("a rebalance");
    assert_eq!(job.concurrency, 4);
    // A second rebalance ordered before the first was seen to end: the
    // first one's end does not end it.
    must_apply(&mut s, Command::Rebalance { concurrency: 2 });
    must_reject(
        &mut s,
        Command::RebalanceDone { seq: job.seq },
        "is not the one under way",
    );
    let second = s.rebalance.expect("the second rebalance").seq;
    must_apply(&mut s, Command::RebalanceDone { seq: second });
    assert_eq!(s.rebalance, None);

    // Drained only from draining: an undrain that lands first wins.
    must_reject(
        &mut s,
        Command::SetNodeMode {
            node: 1,
            mode: NodeMode::Drained,
        },
        "node imap1 is active, not draining",
    );
    // A restart ends a stop's drain, never an operator's.
    must_apply(
        &mut s,
        Command::Drain {
            node: 3,
            concurrency: 4,
            on_stop: false,
        },
    );
    must_reject(&mut s, Command::EndStopDrain { node: 3 }, "not in a stop's drain");
    must_apply(
        &mut s,
        Command::Drain {
            node: 2,
            concurrency: 4,
            on_stop: true,
        },
    );
    must_apply(&mut s, Command::EndStopDrain { node: 2 });
    assert_eq!(s.nodes[&2].mode, NodeMode::Active);
}

/// A node death during a switchover ends it: the failover moves the store,
/// marks the old master dirty and says in the history what it ended.
#[test]
fn a_failover_ends_a_switchover_under_way_and_says_so() {
    let mut s = initialised(small());
    must_apply(&mut s, begin("st01", 1, 2));
    must_apply(
        &mut s,
        Command::Failover {
            reason: Reason::Failure,
            moves: vec![slotd_raft_store::Move {
                store: "st01".into(),
                epoch: 2,
                to: 2,
            }],
        },
    );
    let st = &s.stores["st01"];
    assert_eq!((st.master, st.epoch, st.phase), (2, 3, Phase::Stable));
    assert!(st.dirty.contains(&1), "the flush may not have finished");
    let last = s.history.back().unwrap();
    assert_eq!(last.what, "failover (ended the switchover to imap2 while demoting)");
    assert_eq!(last.reason, Reason::Failure);
}

#[test]
fn timings_change_one_at_a_time_and_only_from_what_is_in_force() {
    let mut s = initialised(small());
    let base = slotd_raft_store::ClusterTimings::default();
    assert!(s.timings.is_none());
    must_reject(
        &mut s,
        Command::SetTimings {
            timings: base,
            replaces: 1,
        },
        "are change 0, not 1",
    );
    let set = |s: &mut ClusterState, timings, replaces| {
        assert_eq!(
            s.apply(&req(Command::SetTimings { timings, replaces })),
            Response::Applied
        );
    };
    // The first write: in force at once, nothing to settle.
    set(&mut s, base, 0);
    let first = s.timings.unwrap();
    assert_eq!((first.seq, first.now, first.before), (1, base, None));
    must_reject(&mut s, Command::SettleTimings { seq: 1 }, "not the one being settled");
    let longer = slotd_raft_store::ClusterTimings { lease_ms: 4000, ..base };
    // From a stale view: refused.
    must_reject(
        &mut s,
        Command::SetTimings {
            timings: longer,
            replaces: 0,
        },
        "are change 1, not 0",
    );
    set(&mut s, longer, 1);
    let changed = s.timings.unwrap();
    assert_eq!((changed.seq, changed.now, changed.before), (2, longer, Some(base)));
    // Not two at once.
    must_reject(
        &mut s,
        Command::SetTimings {
            timings: base,
            replaces: 2,
        },
        "change 2 is not settled yet",
    );
    must_reject(&mut s, Command::SettleTimings { seq: 1 }, "not the one being settled");
    assert_eq!(s.apply(&req(Command::SettleTimings { seq: 2 })), Response::Applied);
    assert_eq!(s.timings.unwrap().before, None);
    set(&mut s, base, 2);
    assert_eq!(s.timings.unwrap().seq, 3);
}
