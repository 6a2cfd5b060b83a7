//! The switchover phase machine as tables, and the conductor driven to the
//! end of drains and rebalances.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use slotd_raft_store::command::{NodeSpec, StoreSpec};
use slotd_raft_store::{ClusterState, Command, NodeMode, Phase, Reason, Rejection, Request, SlotRef, Topology};

use super::*;
use crate::node::reconcile::{reconcile, Action, Instance, Observed};

const T: SwitchoverTiming = SwitchoverTiming {
    demote: Duration::from_secs(20),
    promote: Duration::from_secs(10),
    retry_after: RETRY_AFTER,
};

/// `nodes` nodes; store i (from 1) mastered by node `(i - 1) % nodes + 1`,
/// its replicas spread over the other nodes in turn (as `slotctl plan`).
fn cluster(nodes: u64, stores: u64) -> ClusterState {
    let slots: Vec<String> = (1..=stores).map(|i| format!("s{i:02}")).collect();
    let topology = Topology {
        nodes: (1..=nodes)
            .map(|id| NodeSpec {
                id,
                name: format!("imap{id}"),
                addr: format!("10.0.0.{id}:7420"),
                voter: true,
                slots: slots.clone(),
            })
            .collect(),
        stores: (1..=stores)
            .map(|i| {
                let a = (i - 1) % nodes + 1;
                let b = (a - 1 + 1 + ((i - 1) / nodes) % (nodes - 1)) % nodes + 1;
                StoreSpec {
                    name: format!("st{i:02}"),
                    master_ip: format!("10.0.1.{i}/32").parse().unwrap(),
                    replica_ip: format!("10.0.2.{i}/32").parse().unwrap(),
                    slots: vec![
                        SlotRef {
                            node: a,
                            slot: format!("s{i:02}"),
                        },
                        SlotRef {
                            node: b,
                            slot: format!("s{i:02}"),
                        },
                    ],
                }
            })
            .collect(),
    };
    let mut s = ClusterState::default();
    apply(&mut s, Command::Init(topology));
    s
}

fn apply(s: &mut ClusterState, command: Command) {
    let r = s.apply(&Request {
        at_ms: 1_000,
        command: command.clone(),
    });
    assert!(r.is_applied(), "{command:?}: {r:?}");
}

fn facts() -> Facts {
    Facts {
        max_backlog: 1 << 20,
        drain_concurrency: 4,
        settled: true,
        ..Facts::default()
    }
}

/// Every node caught up (as the `none` driver reports).
fn caught_up(s: &ClusterState) -> Reports {
    let mut r = Reports::default();
    for st in s.stores.values() {
        for n in st.replicas() {
            r.backlog.insert((st.name.clone(), n), 0);
        }
    }
    r
}

fn begin(s: &mut ClusterState, store: &str, to: u64) {
    let epoch = s.stores[store].epoch;
    apply(
        s,
        Command::BeginSwitchover {
            store: store.into(),
            epoch,
            to,
            force: false,
            reason: Reason::Operator,
        },
    );
}

fn advance(s: &mut ClusterState, store: &str) {
    let epoch = s.stores[store].epoch;
    apply(
        s,
        Command::AdvanceSwitchover {
            store: store.into(),
            epoch,
        },
    );
}

/// st01 (imap1 → imap2) in each phase.
fn in_phase(phase: &str) -> ClusterState {
    let mut s = cluster(3, 3);
    match phase {
        "stable" => {}
        "demoting" => begin(&mut s, "st01", 2),
        "promoting" => {
            begin(&mut s, "st01", 2);
            advance(&mut s, "st01");
        }
        other => panic!("{other}"),
    }
    s
}

/// Every (phase, event) pair: the step the leader takes.
#[test]
fn every_phase_and_event_has_its_step() {
    use Event::*;
    let rb = Step::Rollback;
    let table: [(&str, [Step; 7]); 3] = [
        // OldMasterDown, TargetDown, TargetUnavailable, OldMasterDone, NewMasterDone, TimedOut, Nothing
        ("stable", [Step::Wait; 7]),
        (
            "demoting",
            [
                Step::Wait,
                rb(Why::TargetDown),
                rb(Why::TargetUnavailable),
                Step::Advance,
                Step::Wait,
                rb(Why::DemoteTimedOut(T.demote)),
                Step::Wait,
            ],
        ),
        (
            "promoting",
            [
                Step::Wait,
                Step::Wait,
                Step::Wait,
                Step::Wait,
                Step::Complete,
                rb(Why::PromoteTimedOut(T.promote)),
                Step::Wait,
            ],
        ),
    ];
    for (phase, steps) in table {
        let s = in_phase(phase);
        for (event, want) in EVENTS.iter().zip(steps) {
            assert_eq!(on(&s.stores["st01"].phase, *event, &T), want, "{phase} × {event:?}");
        }
    }
    let _ = (OldMasterDown, Nothing);
}

/// What each step writes, the phase it leads to, and what the two nodes
/// then do (the reconciler's actions on their machines).
#[test]
fn each_step_leads_to_its_phase_and_actions() {
    let st = |s: &ClusterState| s.stores["st01"].clone();
    // imap1 serves st01 (master IP .1.1, master instance); imap2 is its
    // replica (replica IP .2.1, replica instance).
    let old_master = |epoch| Observed {
        addresses: ["10.0.1.1".parse().unwrap()].into(),
        instances: [("s01".to_owned(), Instance::Master { epoch })].into(),
        ..Observed::default()
    };
    let replica = |epoch| Observed {
        addresses: ["10.0.2.1".parse().unwrap()].into(),
        instances: [("s01".to_owned(), Instance::Replica { epoch })].into(),
        ..Observed::default()
    };
    let kinds = |actions: Vec<Action>| -> Vec<String> {
        actions
            .into_iter()
            .filter(|a| a.store() == "st01")
            .map(|a| format!("{a:?}").split([' ', '{']).next().unwrap_or("").to_owned())
            .collect()
    };

    // Begin: Demoting; the old master demotes (stops, flushes: on a task of
    // its own), and once that is done lets the IP go; the target waits as
    // replica.
    let mut s = in_phase("demoting");
    assert!(matches!(
        st(&s).phase,
        Phase::Demoting {
            from: 1,
            to: 2,
            force: false,
            ..
        }
    ));
    assert_eq!(kinds(reconcile(&s, 1, true, &old_master(1))), ["Demote"]);
    let demoted = Observed {
        instances: Default::default(),
        demoted: [("s01".to_owned(), st(&s).epoch)].into(),
        ..old_master(1)
    };
    assert_eq!(kinds(reconcile(&s, 1, true, &demoted)), ["Release"]);
    assert_eq!(kinds(reconcile(&s, 2, true, &replica(1))), Vec::<String>::new());

    // Advance: Promoting, the master is the target; it lets go of the
    // replica IP, binds and announces the master IP, starts as master; the
    // old master becomes the replica (replica IP, replica instance).
    advance(&mut s, "st01");
    assert!(matches!(st(&s).phase, Phase::Promoting { from: 1, to: 2, .. }));
    assert_eq!(st(&s).master, 2);
    assert_eq!(
        kinds(reconcile(&s, 2, true, &replica(1))),
        ["Stop", "Release", "Bind", "Announce", "StartMaster"]
    );
    let demoted = Observed {
        demoted: [("s01".to_owned(), 2)].into(),
        ..Observed::default()
    };
    assert_eq!(
        kinds(reconcile(&s, 1, true, &demoted)),
        ["Bind", "Announce", "StartReplica"]
    );

    // Complete: Stable at the new master, history says switchover.
    let epoch = st(&s).epoch;
    apply(
        &mut s,
        Command::CompleteSwitchover {
            store: "st01".into(),
            epoch,
        },
    );
    assert_eq!((st(&s).master, st(&s).phase), (2, Phase::Stable));
    assert_eq!(s.history.back().map(|t| t.what.as_str()), Some("switchover"));

    // Rollback from Demoting: the old master serves again at once.
    let mut s = in_phase("demoting");
    let epoch = st(&s).epoch;
    apply(
        &mut s,
        Command::RollbackSwitchover {
            store: "st01".into(),
            epoch,
            why: Why::DemoteTimedOut(T.demote).to_string(),
        },
    );
    assert_eq!((st(&s).master, st(&s).phase), (1, Phase::Stable));
    assert_eq!(
        kinds(reconcile(&s, 1, true, &demoted)),
        ["Bind", "Announce", "StartMaster"]
    );

    // Rollback from Promoting: a switchover back; the new master demotes
    // first (it may hold the IP), the old one waits as replica.
    let mut s = in_phase("promoting");
    let epoch = st(&s).epoch;
    apply(
        &mut s,
        Command::RollbackSwitchover {
            store: "st01".into(),
            epoch,
            why: Why::PromoteTimedOut(T.promote).to_string(),
        },
    );
    assert!(matches!(st(&s).phase, Phase::Demoting { from: 2, to: 1, .. }));
    let half = Observed {
        addresses: ["10.0.1.1".parse().unwrap()].into(),
        instances: [("s01".to_owned(), Instance::Stopped)].into(),
        ..Observed::default()
    };
    assert_eq!(kinds(reconcile(&s, 2, true, &half)), ["Demote"]);
    let half_demoted = Observed {
        demoted: [("s01".to_owned(), st(&s).epoch)].into(),
        ..half
    };
    assert_eq!(kinds(reconcile(&s, 2, true, &half_demoted)), ["Release"]);
    let last = s.history.back().map(|t| t.what.clone()).unwrap_or_default();
    assert_eq!(
        last,
        "rollback while promoting: the new master did not serve within 10s"
    );
}

/// The event that counts when several hold, and acks only of this epoch.
#[test]
fn events_are_taken_in_order_and_acks_name_the_epoch() {
    let s = in_phase("demoting");
    let st = &s.stores["st01"];
    let mut f = facts();
    let young = Duration::from_secs(1);
    let old = Duration::from_secs(30);
    assert_eq!(event(&s, st, &f, young, &T), Event::Nothing);
    assert_eq!(event(&s, st, &f, old, &T), Event::TimedOut);
    // An ack of an earlier attempt (epoch 1) is not this one's.
    f.done.insert(1, [("st01".to_owned(), 1)].into());
    assert_eq!(event(&s, st, &f, young, &T), Event::Nothing);
    f.done.insert(1, [("st01".to_owned(), st.epoch)].into());
    assert_eq!(event(&s, st, &f, old, &T), Event::OldMasterDone, "done beats late");
    // Only the old master's ack counts in Demoting.
    let mut g = facts();
    g.done.insert(2, [("st01".to_owned(), st.epoch)].into());
    assert_eq!(event(&s, st, &g, young, &T), Event::Nothing);
    f.down.insert(2);
    assert_eq!(event(&s, st, &f, young, &T), Event::TargetDown);
    f.down.insert(1);
    assert_eq!(event(&s, st, &f, young, &T), Event::OldMasterDown);
}

/// Each refusal of `slotctl failover`, with its reason, and what is written
/// when it is accepted.
#[test]
fn failover_is_refused_with_a_reason_or_written() {
    let mut s = cluster(3, 6);
    let mut f = facts();
    f.reports = caught_up(&s);
    let refused = |s: &ClusterState, f: &Facts, store: &str, to: Option<u64>, force: bool| {
        failover_command(s, f, store, to, force)
            .expect_err("refused")
            .to_string()
    };
    assert_eq!(refused(&s, &f, "nope", None, false), "unknown store \"nope\"");
    assert!(refused(&s, &f, "st01", Some(3), false).contains("node imap3 holds no slot of this store"));
    assert!(refused(&s, &f, "st01", Some(1), false).contains("imap1 is already its master"));
    f.down.insert(2);
    assert!(refused(&s, &f, "st01", Some(2), false).contains("node imap2 is down"));
    assert!(refused(&s, &f, "st01", None, false).contains("node imap2 is down"));
    f.down.clear();
    f.reports.backlog.insert(("st01".into(), 2), 5 << 20);
    let lag = refused(&s, &f, "st01", None, false);
    assert!(
        lag.contains("replica imap2 lags 5242880 bytes") && lag.contains("--force"),
        "{lag}"
    );
    // --force skips the lag check (and the flush).
    assert_eq!(
        failover_command(&s, &f, "st01", None, true),
        Ok(Command::BeginSwitchover {
            store: "st01".into(),
            epoch: 1,
            to: 2,
            force: true,
            reason: Reason::Operator,
        })
    );
    f.reports = caught_up(&s);
    apply(
        &mut s,
        Command::SetNodeMode {
            node: 2,
            mode: NodeMode::Draining,
        },
    );
    assert!(refused(&s, &f, "st01", None, false).contains("imap2 is draining and cannot become master"));
    apply(
        &mut s,
        Command::SetNodeMode {
            node: 2,
            mode: NodeMode::Active,
        },
    );
    begin(&mut s, "st01", 2);
    assert!(refused(&s, &f, "st01", None, false).contains("a switchover to imap2 is already running (phase demoting)"));
    // A master that is down: automatic failover's business, or --force.
    f.down.insert(2);
    assert!(refused(&s, &f, "st02", None, false).contains("its master imap2 is down"));
    assert_eq!(
        failover_command(&s, &f, "st02", None, true),
        Ok(Command::Failover {
            reason: Reason::Operator,
            moves: vec![Move {
                store: "st02".into(),
                epoch: 1,
                to: 3,
            }],
        })
    );
}

/// A stand-in for the nodes: every node finishes its part of every phase
/// at once (acks carry the epoch the log shows).
fn everyone_acks(s: &ClusterState) -> BTreeMap<NodeId, BTreeMap<String, u64>> {
    let mut done: BTreeMap<NodeId, BTreeMap<String, u64>> = BTreeMap::new();
    for st in s.stores.values() {
        let actor = match st.phase {
            Phase::Demoting { from, .. } => from,
            Phase::Promoting { to, .. } => to,
            Phase::Stable => continue,
        };
        done.entry(actor).or_default().insert(st.name.clone(), st.epoch);
    }
    done
}

/// Runs the conductor until it writes nothing more; returns the rounds and
/// the most switchovers seen away from `watch` at once.
fn conduct_to_the_end(s: &mut ClusterState, f: &mut Facts, watch: NodeId) -> (usize, usize) {
    let mut most = 0;
    for round in 0..200 {
        f.reports = caught_up(s);
        f.done = everyone_acks(s);
        let commands = conduct(s, f, &|_| Duration::ZERO, &T);
        if commands.is_empty() {
            return (round, most);
        }
        for c in commands {
            apply(s, c);
        }
        most = most.max(s.leaving(watch).count());
    }
    panic!("the conductor did not come to rest in 200 rounds");
}

/// A drain of a node with 20 masters: at most K at a time, spread evenly
/// over the other nodes, then `Drained`; undrain + rebalance bring it back
/// to an even count and its preferred masters.
#[test]
fn a_drain_moves_every_master_k_at_a_time_and_rebalance_brings_them_back() {
    let mut s = cluster(3, 60);
    let mut f = facts();
    assert_eq!(s.masters_of(1).count(), 20);
    apply(
        &mut s,
        Command::Drain {
            node: 1,
            concurrency: 4,
            on_stop: false,
        },
    );
    let (rounds, most) = conduct_to_the_end(&mut s, &mut f, 1);
    assert_eq!(most, 4, "4 switchovers at a time");
    assert!(rounds > 5, "20 stores, 4 at a time: {rounds} rounds");
    assert_eq!(s.nodes[&1].mode, NodeMode::Drained);
    assert_eq!(s.masters_of(1).count(), 0);
    let counts = s.master_counts();
    assert_eq!((counts[&2], counts[&3]), (30, 30), "spread evenly");
    let switchovers = s
        .history
        .iter()
        .filter(|t| t.what == "switchover" && t.from == 1)
        .count();
    assert_eq!(switchovers, 20);

    apply(
        &mut s,
        Command::SetNodeMode {
            node: 1,
            mode: NodeMode::Active,
        },
    );
    apply(&mut s, Command::Rebalance { concurrency: 4 });
    conduct_to_the_end(&mut s, &mut f, 2);
    assert_eq!(s.rebalance, None, "the rebalance ended");
    let counts = s.master_counts();
    assert_eq!((counts[&1], counts[&2], counts[&3]), (20, 20, 20));
    assert!(s
        .stores
        .values()
        .all(|st| st.master == st.preferred() && st.phase == Phase::Stable));
}

/// A switchover whose old master never acks rolls back after the timeout;
/// the drain leaves the store alone while it cools, then tries again.
#[test]
fn a_timed_out_switchover_rolls_back_and_the_drain_retries_later() {
    let mut s = cluster(3, 3);
    let mut f = facts();
    f.reports = caught_up(&s);
    apply(
        &mut s,
        Command::Drain {
            node: 1,
            concurrency: 1,
            on_stop: false,
        },
    );
    let first = conduct(&s, &f, &|_| Duration::ZERO, &T);
    assert!(matches!(first.as_slice(), [Command::BeginSwitchover { store, to: 2, .. }] if store == "st01"));
    apply(&mut s, first[0].clone());
    // No ack, 21 s later.
    let late = conduct(&s, &f, &|_| Duration::from_secs(21), &T);
    assert!(
        matches!(late.as_slice(), [Command::RollbackSwitchover { why, .. }] if why.contains("did not finish demoting within 20s")),
        "{late:?}"
    );
    for c in late {
        apply(&mut s, c);
    }
    assert_eq!((s.stores["st01"].master, s.stores["st01"].phase), (1, Phase::Stable));
    f.cooling.insert("st01".into());
    assert!(
        conduct(&s, &f, &|_| Duration::ZERO, &T).is_empty(),
        "cooling: no retry yet"
    );
    f.cooling.clear();
    assert_eq!(conduct(&s, &f, &|_| Duration::ZERO, &T).len(), 1, "then it tries again");
}

/// A drain refuses nothing it can do: stores without a target are left, and
/// the node does not become `Drained` while it still masters them.
#[test]
fn a_store_without_a_target_is_stranded_and_the_drain_waits() {
    let mut s = cluster(3, 3);
    let mut f = facts();
    f.reports = caught_up(&s);
    f.down.insert(2);
    let stranded = stranded(&s, &f, 1);
    assert_eq!(stranded.len(), 1);
    assert_eq!(stranded[0].0, "st01");
    assert!(matches!(stranded[0].1, Rejection::NodeDown { .. }));
    apply(
        &mut s,
        Command::Drain {
            node: 1,
            concurrency: 4,
            on_stop: true,
        },
    );
    assert!(conduct(&s, &f, &|_| Duration::ZERO, &T).is_empty());
    let _ = BTreeSet::<u64>::new();
}

/// A stop's drain is recorded as such.
#[test]
fn a_stop_drain_begins_switchovers_with_reason_stop() {
    let mut s = cluster(3, 6);
    let mut f = facts();
    f.reports = caught_up(&s);
    apply(
        &mut s,
        Command::Drain {
            node: 1,
            concurrency: 8,
            on_stop: true,
        },
    );
    let c = conduct(&s, &f, &|_| Duration::ZERO, &T);
    assert_eq!(c.len(), 2);
    assert!(c.iter().all(|c| matches!(
        c,
        Command::BeginSwitchover {
            reason: Reason::Stop,
            ..
        }
    )));
    let _ = &mut f;
}

/// A fresh leader cannot tell a dead node from one it has not heard yet:
/// it moves switchovers under way on, but begins none.
#[test]
fn no_switchover_begins_before_the_leadership_settled() {
    let mut s = cluster(3, 6);
    let mut f = facts();
    f.reports = caught_up(&s);
    begin(&mut s, "st01", 2);
    apply(
        &mut s,
        Command::Drain {
            node: 2,
            concurrency: 4,
            on_stop: false,
        },
    );
    f.settled = false;
    f.done = everyone_acks(&s);
    let c = conduct(&s, &f, &|_| Duration::ZERO, &T);
    assert!(matches!(c.as_slice(), [Command::AdvanceSwitchover { .. }]), "{c:?}");
    f.settled = true;
    let c = conduct(&s, &f, &|_| Duration::ZERO, &T);
    assert!(c.iter().any(|c| matches!(c, Command::BeginSwitchover { .. })), "{c:?}");
}

/// A node failed away from is dirty for the store; once it runs as the
/// store's replica again (its leftovers set aside), the mark goes, and the
/// store may switch back to it.
#[test]
fn a_dirty_mark_goes_once_the_node_runs_as_replica_again() {
    let mut s = cluster(3, 3);
    let mut f = facts();
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
    f.reports = caught_up(&s);
    assert!(failover_command(&s, &f, "st01", Some(1), false)
        .expect_err("dirty")
        .to_string()
        .contains("marked dirty"));
    // Reported for an older epoch: not this one.
    f.clean.insert(1, [("st01".to_owned(), 1)].into());
    assert!(conduct(&s, &f, &|_| Duration::ZERO, &T).is_empty());
    f.clean.insert(1, [("st01".to_owned(), 2)].into());
    let c = conduct(&s, &f, &|_| Duration::ZERO, &T);
    assert_eq!(
        c,
        vec![Command::ClearDirty {
            store: "st01".into(),
            node: 1
        }]
    );
    apply(&mut s, c[0].clone());
    assert!(failover_command(&s, &f, "st01", Some(1), false).is_ok());
}

/// A rebalance waits for a replica with nothing left to send (an
/// operator's switchover accepts a bounded lag; a rebalance is never urgent).
#[test]
fn a_rebalance_never_moves_onto_a_replica_with_a_backlog() {
    let mut s = cluster(3, 6);
    let mut f = facts();
    // st01 (preferred imap1) failed over to its replica, then cleared.
    let to = s.stores["st01"].replicas().next().expect("a replica");
    apply(
        &mut s,
        Command::Failover {
            reason: Reason::Failure,
            moves: vec![Move {
                store: "st01".into(),
                epoch: 1,
                to,
            }],
        },
    );
    apply(
        &mut s,
        Command::ClearDirty {
            store: "st01".into(),
            node: 1,
        },
    );
    f.reports = caught_up(&s);
    assert!(rebalance_plan(&s, &f).iter().any(|m| m.store == "st01" && m.to == 1));
    f.reports.backlog.insert(("st01".into(), 1), 1);
    assert!(
        !rebalance_plan(&s, &f).iter().any(|m| m.store == "st01"),
        "one byte behind: not yet"
    );
}

/// A replica whose instance fails to start gets no master by a switchover,
/// not even a forced one (the refusal says why).
#[test]
fn a_failing_instance_is_not_promoted() {
    let s = cluster(3, 6);
    let mut f = facts();
    f.reports = caught_up(&s);
    let to = s.stores["st01"].replicas().next().expect("a replica");
    f.reports
        .failing
        .insert(("st01".into(), to), "cyrmaster exited with exit status: 69".into());
    let e = failover_command(&s, &f, "st01", None, false).expect_err("failing target");
    assert!(e.to_string().contains("fails to start (cyrmaster exited"), "{e}");
    let e = failover_command(&s, &f, "st01", Some(to), true).expect_err("even forced");
    assert!(e.to_string().contains("fails to start"), "{e}");
}

/// A dead master's store goes to a replica whose instance works; to a
/// failing one only when nothing else is left.
#[test]
fn a_failover_prefers_a_working_instance() {
    use crate::leader::decide::failover_targets;
    let s = cluster(3, 6);
    let mut r = caught_up(&s);
    let dead: BTreeSet<u64> = [1].into();
    // imap1's stores: st01 (replica imap2) and st04 (replica imap3).
    let plan = failover_targets(&s, &dead, &r);
    assert_eq!(plan.moves.len(), 2);
    let st01_to = plan.moves.iter().find(|m| m.store == "st01").map(|m| m.to);
    r.failing.insert(("st01".into(), st01_to.expect("moved")), "no".into());
    // Its only other slot fails: still taken (served beats unserved).
    let plan = failover_targets(&s, &dead, &r);
    assert_eq!(plan.moves.iter().find(|m| m.store == "st01").map(|m| m.to), st01_to);
}
