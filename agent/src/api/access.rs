//! Who may make which call: the rules, as pure functions of the caller's
//! certificate (`tls::Caller`), what the call claims, and the cluster
//! state. `peer` and `admin` apply them; the tables below check them.
//!
//! - A Peer call needs a node certificate; an operator's never passes.
//! - A call that names a node (lease renewal, fence notice) passes only
//!   from that node's certificate, and the node must be a member.
//! - Raft calls name their sender (the leader or candidate), which must be
//!   in the receiver's Raft membership (as its log has it, committed or
//!   not) and, if the state knows it, have the certificate's name; one the
//!   state does not know (between a bootstrap and its first entry, or a
//!   node whose removal the state has and the membership not yet) must not
//!   carry a name the state gives another node. A removed node is out of
//!   the membership, so its certificate gets nothing in.
//!   The sender must be a voter there: a learner never campaigns, leads or
//!   sends a snapshot, so its certificate cannot take a term or write a
//!   log. A node that knows no membership at all (joined, never yet
//!   reached by a leader) takes them from any node certificate: it has
//!   nothing to check against. The price of the membership rule: a node
//!   that was away while another was added *and promoted to voter* does
//!   not take calls from that one while it leads; it catches up once
//!   another node leads.
//! - Calls passed to the leader need a member's certificate (the bootstrap
//!   excepted: there are no members yet); those only a node's own agent
//!   makes for itself (its stop's drain, and the end of it) need that
//!   node's. The member says who asked (`Asker`): a change passes only if
//!   an operator asked, or it is the agent's own call (`passed_on`).
//!   `Join` needs a node certificate (an agent that has not joined has no
//!   state to check a caller against).
//! - Admin calls need an operator's certificate; a member's may read
//!   (status, history), never change.
//!
//! On a plain-text port (`tls.insecure`) everyone passes: there is nobody
//! to check.

use std::collections::BTreeSet;

use slotd_raft_store::{ClusterState, NodeId};

use crate::cluster::wire::{Asker, LeaderCall};
use crate::tls::{Caller, Who};

/// What a Peer call claims about its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// A Raft call (append, vote, snapshot) sent by node `from`.
    Raft { from: NodeId },
    /// A call on behalf of node `node` (lease renewal, fence ticket or
    /// notice): only that node may make it.
    OnBehalf { node: NodeId },
    /// A call passed on to the leader; `bootstrap`: the init passed to the
    /// first voter, before there is a state; `own`: one only node `own`'s
    /// agent makes for itself (`Drain { on_stop }`, `Undrain { after_stop }`).
    Leader { bootstrap: bool, own: Option<NodeId> },
    /// `Peer.Join`.
    Join,
}

/// Why a call is refused (PERMISSION_DENIED, with this as the message).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// The certificate names `name`, and node `node` (of the state) is that one.
fn is_node(state: &ClusterState, node: NodeId, name: &str) -> Result<(), Denied> {
    match state.nodes.get(&node) {
        Some(n) if n.name == name => Ok(()),
        Some(n) => Err(Denied(format!(
            "the certificate names node {name}, the call is for node {node} ({})",
            n.name
        ))),
        None => Err(Denied(format!("node {node} is not a member of this cluster"))),
    }
}

/// A receiver's Raft membership, as its log has it (committed or not; in a
/// joint configuration, the voters of both).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftMembers {
    /// Voters and learners.
    pub all: BTreeSet<NodeId>,
    pub voters: BTreeSet<NodeId>,
}

/// May `caller` make a Peer call claiming `claim`? `raft`: the receiver's
/// Raft membership.
pub fn peer(caller: &Caller, claim: Claim, state: &ClusterState, raft: &RaftMembers) -> Result<(), Denied> {
    let raft_members = &raft.all;
    let name = match caller {
        Caller::Insecure => return Ok(()),
        Caller::Cert(Who::Operator(o)) => {
            return Err(Denied(format!(
                "operator {o}: an operator certificate may call Admin, never Peer"
            )))
        }
        Caller::Cert(Who::Node(n)) => n.as_str(),
    };
    match claim {
        Claim::Join | Claim::Leader { bootstrap: true, .. } => Ok(()),
        Claim::Leader { own: Some(node), .. } => is_node(state, node, name),
        Claim::Leader { own: None, .. } => match state.node_by_name(name) {
            Some(_) => Ok(()),
            None => Err(Denied(format!("node {name} is not a member of this cluster"))),
        },
        Claim::OnBehalf { node } => is_node(state, node, name),
        Claim::Raft { .. } if raft_members.is_empty() => Ok(()),
        Claim::Raft { from } if !raft_members.contains(&from) => Err(Denied(format!(
            "node {from} ({name}) is not in this node's Raft membership"
        ))),
        Claim::Raft { from } => {
            match (state.nodes.get(&from), state.node_by_name(name)) {
                (Some(n), _) if n.name == name => {}
                (Some(n), _) => {
                    return Err(Denied(format!(
                        "the certificate names node {name}, the call comes from node {from} ({})",
                        n.name
                    )))
                }
                (None, Some(m)) => {
                    return Err(Denied(format!(
                        "the certificate names node {name} (node {}), the call comes from node {from}",
                        m.id
                    )))
                }
                (None, None) => {}
            }
            // A learner never campaigns, leads or sends a snapshot: its
            // certificate must not be able to take a term or write a log.
            if raft.voters.contains(&from) {
                Ok(())
            } else {
                Err(Denied(format!(
                    "node {from} ({name}) is a learner in this node's Raft membership: only a voter \
                     asks for votes, leads or sends snapshots"
                )))
            }
        }
    }
}

/// What an Admin call does, for [`admin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminCall {
    /// Reads (status, history).
    Read,
    /// Changes the cluster.
    Change,
    /// The bootstrap.
    Init,
}

const NODE_READS_ONLY: &str = "a node certificate may read (status, history); changes need an operator's certificate";

/// May `caller` make an Admin call of kind `call`?
pub fn admin(caller: &Caller, state: &ClusterState, call: AdminCall) -> Result<(), Denied> {
    match caller {
        Caller::Insecure | Caller::Cert(Who::Operator(_)) => Ok(()),
        Caller::Cert(Who::Node(n)) if call == AdminCall::Init => Err(Denied(format!(
            "node {n}: the bootstrap needs an operator's certificate"
        ))),
        Caller::Cert(Who::Node(n)) if state.node_by_name(n).is_none() => {
            Err(Denied(format!("node {n} is not a member of this cluster")))
        }
        Caller::Cert(Who::Node(_)) if call == AdminCall::Read => Ok(()),
        Caller::Cert(Who::Node(n)) => Err(Denied(format!("node {n}: {NODE_READS_ONLY}"))),
    }
}

/// May a leader call asked for by `asker` be carried out, as the member
/// passing it on vouches (its own certificate passed [`peer`])? Reads by
/// anyone; changes by an operator; an agent passes on only its own calls.
/// `secure`: this port runs TLS (so an unchecked asker is a forgery).
pub fn passed_on(asker: &Asker, call: &LeaderCall, secure: bool) -> Result<(), Denied> {
    let read = match call {
        LeaderCall::Status | LeaderCall::History { .. } => true,
        LeaderCall::Config { set } => set.is_empty(),
        _ => false,
    };
    let own = matches!(
        call,
        LeaderCall::Drain { on_stop: true, .. }
            | LeaderCall::Undrain { after_stop: true, .. }
            | LeaderCall::WriteInit(_)
            | LeaderCall::AddTopologyLearners
    );
    match asker {
        _ if read => Ok(()),
        Asker::Operator(_) => Ok(()),
        Asker::Unchecked if !secure => Ok(()),
        Asker::Unchecked => Err(Denied(
            "a change passed on as asked on a plain-text port, to a port that runs TLS".into(),
        )),
        Asker::Agent if own => Ok(()),
        Asker::Agent => Err(Denied(
            "an agent passes on only its own calls (a stop's drain and its end, the bootstrap's writes); \
             this one needs an operator's certificate"
                .into(),
        )),
        Asker::Node(n) => Err(Denied(format!("node {n}: {NODE_READS_ONLY}"))),
    }
}

#[cfg(test)]
mod tests {
    use slotd_raft_store::{Command, NodeSpec, Request, Topology};

    use super::*;

    fn node(n: &str) -> Caller {
        Caller::Cert(Who::Node(n.to_owned()))
    }

    fn spec(id: u64, name: &str) -> NodeSpec {
        NodeSpec {
            id,
            name: name.to_owned(),
            addr: format!("10.0.0.{id}:7420"),
            voter: true,
            slots: vec![],
        }
    }

    fn apply(s: &mut ClusterState, command: Command) {
        s.apply(&Request { at_ms: 0, command });
    }

    /// imap1 and imap2 members, imap3 removed, imap4 a learner; Raft
    /// voters 1, 2 and 5 (a node being bootstrapped, or removed from the
    /// state and not yet from the membership), learner 4.
    fn state() -> (ClusterState, RaftMembers) {
        let mut s = ClusterState::default();
        let topology = Topology {
            nodes: vec![spec(1, "imap1"), spec(2, "imap2"), spec(3, "imap3")],
            stores: vec![],
        };
        apply(&mut s, Command::Init(topology));
        apply(&mut s, Command::RemoveNode { node: 3 });
        let learner = NodeSpec {
            voter: false,
            ..spec(4, "imap4")
        };
        apply(&mut s, Command::AddNode(learner));
        let raft = RaftMembers {
            all: BTreeSet::from([1, 2, 4, 5]),
            voters: BTreeSet::from([1, 2, 5]),
        };
        (s, raft)
    }

    const LEADER: Claim = Claim::Leader {
        bootstrap: false,
        own: None,
    };

    #[test]
    fn peer_calls() {
        let (s, members) = state();
        let op = Caller::Cert(Who::Operator("alice".into()));
        let own = |node| Claim::Leader {
            bootstrap: false,
            own: Some(node),
        };
        let boot = Claim::Leader {
            bootstrap: true,
            own: None,
        };
        let raft = |from| Claim::Raft { from };
        let cases: Vec<(&str, Caller, Claim, bool)> = vec![
            ("insecure port", Caller::Insecure, Claim::OnBehalf { node: 1 }, true),
            ("operator, renewal", op.clone(), Claim::OnBehalf { node: 1 }, false),
            ("operator, raft", op.clone(), raft(1), false),
            ("operator, join", op.clone(), Claim::Join, false),
            ("operator, leader call", op.clone(), LEADER, false),
            ("operator, bootstrap", op, boot, false),
            ("own renewal", node("imap1"), Claim::OnBehalf { node: 1 }, true),
            ("renewal for another", node("imap2"), Claim::OnBehalf { node: 1 }, false),
            (
                "renewal of a non-member",
                node("imap9"),
                Claim::OnBehalf { node: 9 },
                false,
            ),
            (
                "removed node's renewal",
                node("imap3"),
                Claim::OnBehalf { node: 3 },
                false,
            ),
            ("raft from itself", node("imap2"), raft(2), true),
            ("raft claiming another member", node("imap2"), raft(1), false),
            ("raft, member claiming an unknown id", node("imap2"), raft(7), false),
            ("raft, unknown node claiming a member", node("imap7"), raft(1), false),
            (
                "raft from a stranger outside the membership",
                node("imap9"),
                raft(9),
                false,
            ),
            (
                "raft from a Raft member the state has not yet",
                node("imap5"),
                raft(5),
                true,
            ),
            (
                "raft, Raft member 5 with a member's name",
                node("imap1"),
                raft(5),
                false,
            ),
            ("raft from a removed node", node("imap3"), raft(3), false),
            ("raft from a learner, as itself", node("imap4"), raft(4), false),
            ("raft from a learner, as a voter", node("imap4"), raft(1), false),
            ("leader call from a member", node("imap1"), LEADER, true),
            ("leader call from a removed node", node("imap3"), LEADER, false),
            ("leader call from a stranger", node("imap9"), LEADER, false),
            ("own call of its own", node("imap2"), own(2), true),
            ("own call for another node", node("imap1"), own(2), false),
            ("bootstrap from any node", node("imap9"), boot, true),
            ("join from any node", node("imap9"), Claim::Join, true),
        ];
        for (what, caller, claim, ok) in cases {
            assert_eq!(peer(&caller, claim, &s, &members).is_ok(), ok, "{what}");
        }
    }

    #[test]
    fn a_node_that_knows_no_membership_takes_raft_calls_from_any_node_certificate() {
        let none = RaftMembers::default();
        assert!(peer(&node("imap5"), Claim::Raft { from: 5 }, &ClusterState::default(), &none).is_ok());
        let op = Caller::Cert(Who::Operator("alice".into()));
        assert!(peer(&op, Claim::Raft { from: 5 }, &ClusterState::default(), &none).is_err());
    }

    #[test]
    fn a_node_added_again_under_a_removed_name_is_that_name() {
        let (mut s, _) = state();
        let spec = NodeSpec {
            voter: false,
            ..spec(6, "imap3")
        };
        apply(&mut s, Command::AddNode(spec));
        let members = RaftMembers {
            all: BTreeSet::from([1, 2, 6]),
            voters: BTreeSet::from([1, 2, 6]),
        };
        assert!(peer(&node("imap3"), Claim::Raft { from: 6 }, &s, &members).is_ok());
        assert!(peer(&node("imap3"), Claim::OnBehalf { node: 6 }, &s, &members).is_ok());
        // The old id is out of the membership: nobody may claim it.
        assert!(peer(&node("imap3"), Claim::Raft { from: 3 }, &s, &members).is_err());
        assert!(peer(&node("imap8"), Claim::Raft { from: 3 }, &s, &members).is_err());
    }

    #[test]
    fn admin_calls() {
        let (s, _) = state();
        let fresh = ClusterState::default();
        let op = Caller::Cert(Who::Operator("alice".into()));
        use AdminCall::{Change, Init, Read};
        let cases: Vec<(&str, Caller, &ClusterState, AdminCall, bool)> = vec![
            ("operator, change", op.clone(), &s, Change, true),
            ("operator, init", op, &fresh, Init, true),
            ("insecure port, change", Caller::Insecure, &s, Change, true),
            ("member node, read", node("imap1"), &s, Read, true),
            ("member node, change", node("imap1"), &s, Change, false),
            ("member node, init", node("imap1"), &fresh, Init, false),
            ("removed node, read", node("imap3"), &s, Read, false),
            ("stranger, read", node("imap9"), &s, Read, false),
        ];
        for (what, caller, state, call, ok) in cases {
            let r = admin(&caller, state, call);
            assert_eq!(r.is_ok(), ok, "{what}: {r:?}");
        }
        let err = admin(&node("imap1"), &s, Change).unwrap_err();
        assert!(err.0.contains("changes need an operator's certificate"), "{err}");
    }

    #[test]
    fn calls_passed_on_to_the_leader() {
        let failover = LeaderCall::Failover {
            store: "st01".into(),
            to: None,
            force: true,
        };
        let stop_drain = LeaderCall::Drain {
            node: "imap1".into(),
            concurrency: None,
            on_stop: true,
        };
        let drain = LeaderCall::Drain {
            node: "imap1".into(),
            concurrency: None,
            on_stop: false,
        };
        let op = Asker::Operator("alice".into());
        let member = Asker::Node("imap1".into());
        let init = LeaderCall::Init {
            topology: Topology::default(),
            forwarded: true,
        };
        let cases: Vec<(&str, &Asker, &LeaderCall, bool, bool)> = vec![
            ("operator's failover", &op, &failover, true, true),
            ("operator's status", &op, &LeaderCall::Status, true, true),
            ("node's status", &member, &LeaderCall::Status, true, true),
            ("node's failover", &member, &failover, true, false),
            ("agent's own stop drain", &Asker::Agent, &stop_drain, true, true),
            ("agent's operator-style drain", &Asker::Agent, &drain, true, false),
            ("agent's failover", &Asker::Agent, &failover, true, false),
            (
                "unchecked on a plain-text port",
                &Asker::Unchecked,
                &failover,
                false,
                true,
            ),
            ("unchecked on a TLS port", &Asker::Unchecked, &failover, true, false),
            ("init, from an operator", &op, &init, true, true),
            ("init, from an agent", &Asker::Agent, &init, true, false),
        ];
        for (what, asker, call, secure, ok) in cases {
            let r = passed_on(asker, call, secure);
            assert_eq!(r.is_ok(), ok, "{what}: {r:?}");
        }
    }
}
