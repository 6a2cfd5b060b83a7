//! The layer-2 check: after every move, a replica of the store probes the
//! master IP and reports which MAC answers; the leader compares it with the
//! MAC the master reports for itself. As a failed-away master is often the
//! store's only replica, one node outside the store (the lowest id) checks
//! too (`checks`). A wrong or missing answer is an alarm
//! (log, metric, `slotctl status`): a switch or neighbour that still sends
//! the store's clients to the old machine is found, not hoped away.

use std::collections::BTreeMap;
use std::fmt;

use slotd_raft_store::{NodeId, Phase, Store};

use crate::report::{HealthReport, L2Seen};

/// The leader's verdict for one store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not (yet) checkable: the master has not reported the IP bound, or no
    /// replica has probed since the last move.
    Unchecked,
    Ok,
    /// The master holds the IP, but nothing answered the replica's probe.
    NoAnswer,
    /// Another machine answers for the master IP.
    Wrong {
        seen: String,
        expected: String,
    },
}

impl Verdict {
    pub fn is_alarm(&self) -> bool {
        matches!(self, Verdict::NoAnswer | Verdict::Wrong { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Unchecked => f.write_str("unchecked"),
            Verdict::Ok => f.write_str("ok"),
            Verdict::NoAnswer => f.write_str("no answer"),
            Verdict::Wrong { seen, expected } => write!(f, "wrong: {seen} answers, the master is {expected}"),
        }
    }
}

/// Whether `node` should probe `store`'s master IP: its replicas, and the
/// lowest-id node of the cluster that holds no slot of it.
pub fn checks(store: &Store, nodes: impl Iterator<Item = NodeId>, node: NodeId) -> bool {
    if node == store.master {
        return false;
    }
    store.has_node(node) || nodes.filter(|n| !store.has_node(*n)).min() == Some(node)
}

/// Judges `store` from the latest reports of the cluster's nodes.
pub fn verdict(store: &Store, reports: &BTreeMap<NodeId, HealthReport>) -> Verdict {
    if store.phase != Phase::Stable {
        return Verdict::Unchecked;
    }
    let Some(master) = reports.get(&store.master) else {
        return Verdict::Unchecked;
    };
    let Some(expected) = master.mac.clone() else {
        return Verdict::Unchecked;
    };
    if !master.addresses.contains(&store.master_ip.addr.to_string()) {
        return Verdict::Unchecked;
    }
    let seen: Vec<&L2Seen> = reports
        .iter()
        .filter(|(n, _)| **n != store.master)
        .filter_map(|(_, r)| r.l2.get(&store.name))
        .filter(|s| s.epoch == store.epoch)
        .collect();
    if seen.is_empty() {
        return Verdict::Unchecked;
    }
    if seen.iter().any(|s| s.answered_by.as_deref() == Some(expected.as_str())) {
        return Verdict::Ok;
    }
    match seen.iter().find_map(|s| s.answered_by.clone()) {
        Some(other) => Verdict::Wrong { seen: other, expected },
        None => Verdict::NoAnswer,
    }
}

#[cfg(test)]
mod tests {
    use slotd_raft_store::command::{NodeSpec, StoreSpec};
    use slotd_raft_store::{ClusterState, Command, Request, SlotRef, Topology};

    use super::*;

    fn store() -> Store {
        let node = |id: u64| NodeSpec {
            id,
            name: format!("imap{id}"),
            addr: format!("10.0.0.{id}:7420"),
            voter: true,
            slots: vec!["s01".into()],
        };
        let mut s = ClusterState::default();
        let r = s.apply(&Request {
            at_ms: 0,
            command: Command::Init(Topology {
                nodes: vec![node(1), node(2)],
                stores: vec![StoreSpec {
                    name: "st01".into(),
                    master_ip: "10.0.1.1/32".parse().unwrap(),
                    replica_ip: "10.0.2.1/32".parse().unwrap(),
                    slots: vec![
                        SlotRef {
                            node: 1,
                            slot: "s01".into(),
                        },
                        SlotRef {
                            node: 2,
                            slot: "s01".into(),
                        },
                    ],
                }],
            }),
        });
        assert!(r.is_applied());
        s.stores["st01"].clone()
    }

    fn report(mac: &str, holds: bool, seen: Option<(u64, Option<&str>)>) -> HealthReport {
        HealthReport {
            mac: Some(mac.into()),
            addresses: if holds { vec!["10.0.1.1".into()] } else { vec![] },
            l2: seen
                .map(|(epoch, by)| {
                    BTreeMap::from([(
                        "st01".to_owned(),
                        L2Seen {
                            epoch,
                            answered_by: by.map(str::to_owned),
                        },
                    )])
                })
                .unwrap_or_default(),
            ..HealthReport::default()
        }
    }

    #[test]
    fn verdicts() {
        let st = store();
        let m = "02:00:00:00:00:01";
        let cases: Vec<(Vec<(NodeId, HealthReport)>, Verdict)> = vec![
            (vec![], Verdict::Unchecked),
            (
                vec![(1, report(m, false, None)), (2, report("x", false, Some((1, Some(m)))))],
                Verdict::Unchecked,
            ),
            (
                vec![(1, report(m, true, None)), (2, report("x", false, None))],
                Verdict::Unchecked,
            ),
            (
                vec![(1, report(m, true, None)), (2, report("x", false, Some((0, Some(m)))))],
                Verdict::Unchecked,
            ),
            (
                vec![(1, report(m, true, None)), (2, report("x", false, Some((1, Some(m)))))],
                Verdict::Ok,
            ),
            (
                vec![(1, report(m, true, None)), (2, report("x", false, Some((1, None))))],
                Verdict::NoAnswer,
            ),
            (
                vec![
                    (1, report(m, true, None)),
                    (2, report("x", false, Some((1, Some("02:00:00:00:00:09"))))),
                ],
                Verdict::Wrong {
                    seen: "02:00:00:00:00:09".into(),
                    expected: m.into(),
                },
            ),
        ];
        for (reports, want) in cases {
            let reports: BTreeMap<NodeId, HealthReport> = reports.into_iter().collect();
            assert_eq!(verdict(&st, &reports), want, "{reports:?}");
        }
        assert!(Verdict::NoAnswer.is_alarm() && !Verdict::Unchecked.is_alarm());
    }

    #[test]
    fn who_checks() {
        let st = store(); // slots on 1 (master) and 2
        let nodes = || [1u64, 2, 3, 4].into_iter();
        assert!(!checks(&st, nodes(), 1), "the master does not check itself");
        assert!(checks(&st, nodes(), 2), "its replica checks");
        assert!(checks(&st, nodes(), 3), "the lowest node outside the store checks");
        assert!(!checks(&st, nodes(), 4));
    }
}
