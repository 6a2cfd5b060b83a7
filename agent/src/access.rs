//! Who may make which call: the rules, as pure functions of the caller's
//! certificate (`tls::Caller`), what the call claims, and the cluster
//! state. `peer` and `admin` apply them; the tables below check them.
//!
//! - A Peer call needs a node certificate; an operator's never passes.
//! - A call that names a node (lease renewal, fence notice) passes only
//!   from that node's certificate, and the node must be a member.
//! - Raft calls name their sender (the leader or candidate). A node that
//!   knows the sender checks the certificate names it. A node that knows
//!   neither the id nor the name accepts: it may not have learned of a
//!   newer member yet (a node being added, a node that was away while one
//!   joined), and refusing would keep it behind for ever. A removed node
//!   (`ClusterState::removed_nodes`) is refused.
//! - Calls passed to the leader need a member's certificate (the bootstrap
//!   excepted: there are no members yet). `Join` needs a node certificate.
//! - Admin calls need an operator's certificate or a member's.
//!
//! On a plain-text port (`tls.insecure`) everyone passes: there is nobody
//! to check.

use slotd_raft_store::{ClusterState, NodeId};

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
    /// first voter, before there is a state.
    Leader { bootstrap: bool },
    /// `Peer.Join`.
    Join,
}

/// Why a call is refused (PERMISSION_DENIED, with this as the message).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

fn member<'a>(state: &'a ClusterState, name: &str) -> Option<&'a slotd_raft_store::Node> {
    state.nodes.values().find(|n| n.name == name)
}

/// May `caller` make a Peer call claiming `claim`?
pub fn peer(caller: &Caller, claim: Claim, state: &ClusterState) -> Result<(), Denied> {
    let name = match caller {
        Caller::Insecure => return Ok(()),
        Caller::Cert(Who::Operator(o)) => {
            return Err(Denied(format!(
                "operator {o}: an operator certificate may call Admin, never Peer"
            )))
        }
        Caller::Cert(Who::Node(n)) => n.as_str(),
    };
    let removed = || state.removed_nodes.iter().any(|(_, gone)| gone == name);
    match claim {
        Claim::Join | Claim::Leader { bootstrap: true } => Ok(()),
        Claim::Leader { bootstrap: false } => match member(state, name) {
            Some(_) => Ok(()),
            None => Err(Denied(format!("node {name} is not a member of this cluster"))),
        },
        Claim::OnBehalf { node } => match state.nodes.get(&node) {
            Some(n) if n.name == name => Ok(()),
            Some(n) => Err(Denied(format!(
                "the certificate names node {name}, the call is for node {node} ({})",
                n.name
            ))),
            None => Err(Denied(format!("node {node} is not a member of this cluster"))),
        },
        Claim::Raft { from } => match (state.nodes.get(&from), member(state, name)) {
            (Some(n), _) if n.name == name => Ok(()),
            (Some(n), _) => Err(Denied(format!(
                "the certificate names node {name}, the call comes from node {from} ({})",
                n.name
            ))),
            (None, Some(m)) => Err(Denied(format!(
                "the certificate names node {name} (node {}), the call comes from node {from}",
                m.id
            ))),
            (None, None) if state.removed_nodes.contains_key(&from) || removed() => {
                Err(Denied(format!("node {from} ({name}) was removed from this cluster")))
            }
            (None, None) => Ok(()),
        },
    }
}

/// May `caller` make an Admin call? Returns who it is, for the leader's log.
pub fn admin(caller: &Caller, state: &ClusterState) -> Result<(), Denied> {
    match caller {
        Caller::Insecure | Caller::Cert(Who::Operator(_)) => Ok(()),
        Caller::Cert(Who::Node(n)) if member(state, n).is_some() || !state.initialised => Ok(()),
        Caller::Cert(Who::Node(n)) => Err(Denied(format!("node {n} is not a member of this cluster"))),
    }
}

#[cfg(test)]
mod tests {
    use slotd_raft_store::{Command, NodeSpec, Request, Topology};

    use super::*;

    fn node(n: &str) -> Caller {
        Caller::Cert(Who::Node(n.to_owned()))
    }

    /// imap1 and imap2 members, imap3 removed.
    fn state() -> ClusterState {
        let spec = |id: u64| NodeSpec {
            id,
            name: format!("imap{id}"),
            addr: format!("10.0.0.{id}:7420"),
            voter: true,
            slots: vec![],
        };
        let mut s = ClusterState::default();
        let mut apply = |command| {
            s.apply(&Request { at_ms: 0, command });
        };
        apply(Command::Init(Topology {
            nodes: vec![spec(1), spec(2), spec(3)],
            stores: vec![],
        }));
        apply(Command::RemoveNode { node: 3 });
        assert_eq!(s.removed_nodes.get(&3).map(String::as_str), Some("imap3"));
        s
    }

    #[test]
    fn peer_calls() {
        let s = state();
        let op = Caller::Cert(Who::Operator("alice".into()));
        let cases: Vec<(&str, Caller, Claim, bool)> = vec![
            ("insecure port", Caller::Insecure, Claim::OnBehalf { node: 1 }, true),
            ("operator, renewal", op.clone(), Claim::OnBehalf { node: 1 }, false),
            ("operator, raft", op.clone(), Claim::Raft { from: 1 }, false),
            ("operator, join", op.clone(), Claim::Join, false),
            ("operator, bootstrap", op, Claim::Leader { bootstrap: true }, false),
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
            ("raft from itself", node("imap2"), Claim::Raft { from: 2 }, true),
            (
                "raft claiming another member",
                node("imap2"),
                Claim::Raft { from: 1 },
                false,
            ),
            (
                "raft, member claiming an unknown id",
                node("imap2"),
                Claim::Raft { from: 7 },
                false,
            ),
            (
                "raft, unknown node claiming a member",
                node("imap7"),
                Claim::Raft { from: 1 },
                false,
            ),
            (
                "raft from a node not learned of yet",
                node("imap7"),
                Claim::Raft { from: 7 },
                true,
            ),
            (
                "raft from a removed node",
                node("imap3"),
                Claim::Raft { from: 3 },
                false,
            ),
            (
                "raft, removed name, new id",
                node("imap3"),
                Claim::Raft { from: 8 },
                false,
            ),
            (
                "raft, unknown name, removed id",
                node("imap8"),
                Claim::Raft { from: 3 },
                false,
            ),
            (
                "leader call from a member",
                node("imap1"),
                Claim::Leader { bootstrap: false },
                true,
            ),
            (
                "leader call from a removed node",
                node("imap3"),
                Claim::Leader { bootstrap: false },
                false,
            ),
            (
                "leader call from a stranger",
                node("imap9"),
                Claim::Leader { bootstrap: false },
                false,
            ),
            (
                "bootstrap from any node",
                node("imap9"),
                Claim::Leader { bootstrap: true },
                true,
            ),
            ("join from any node", node("imap9"), Claim::Join, true),
        ];
        for (what, caller, claim, ok) in cases {
            assert_eq!(peer(&caller, claim, &s).is_ok(), ok, "{what}");
        }
    }

    #[test]
    fn a_new_state_accepts_raft_from_any_node_and_a_node_added_again_is_no_longer_removed() {
        assert!(peer(&node("imap5"), Claim::Raft { from: 5 }, &ClusterState::default()).is_ok());
        let mut s = state();
        s.apply(&Request {
            at_ms: 0,
            command: Command::AddNode(NodeSpec {
                id: 4,
                name: "imap3".into(),
                addr: "10.0.0.4:7420".into(),
                voter: false,
                slots: vec![],
            }),
        });
        assert!(s.removed_nodes.is_empty());
        assert!(peer(&node("imap3"), Claim::Raft { from: 4 }, &s).is_ok());
        assert!(peer(&node("imap3"), Claim::OnBehalf { node: 4 }, &s).is_ok());
        // Id 3 is still a removed node's; nobody may claim it.
        assert!(peer(&node("imap3"), Claim::Raft { from: 3 }, &s).is_err());
    }

    #[test]
    fn admin_calls() {
        let s = state();
        assert!(admin(&Caller::Cert(Who::Operator("alice".into())), &s).is_ok());
        assert!(admin(&node("imap1"), &s).is_ok());
        assert!(admin(&node("imap3"), &s).is_err(), "a removed node");
        assert!(admin(&node("imap9"), &s).is_err(), "a stranger");
        assert!(admin(&Caller::Insecure, &s).is_ok());
        // Before init there are no members: `slotctl init` with a node's
        // certificate works.
        assert!(admin(&node("imap9"), &ClusterState::default()).is_ok());
    }
}
