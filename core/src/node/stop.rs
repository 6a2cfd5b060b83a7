//! Stopping is draining (DESIGN rule 7): the rule the agent's stop waits
//! on (`agent::daemon::stop`).

use slotd_raft_store::{ClusterState, NodeId, NodeMode, Store};

/// Whether this node still masters stores that could go elsewhere, or has
/// switchovers away from it under way. A store can go elsewhere only to an
/// active replica: when every other node is draining too (the whole cluster
/// is being stopped), nothing is left to wait for. `stranded`: stores the
/// leader found no live replica for.
pub fn handing_over(state: &ClusterState, me: NodeId, stranded: &[String]) -> bool {
    let movable = |s: &Store| {
        !stranded.contains(&s.name)
            && s.replicas()
                .any(|n| state.nodes.get(&n).is_some_and(|n| n.mode == NodeMode::Active))
    };
    // Switchovers from or to this node must end before it goes: one toward
    // it (a rollback going home) would otherwise make a stopped node master.
    let involved = state
        .stores
        .values()
        .any(|s| s.phase.switchover().is_some_and(|(from, to)| from == me || to == me));
    state.masters_of(me).any(movable) || involved
}

#[cfg(test)]
mod tests {
    use slotd_raft_store::command::{NodeSpec, StoreSpec};
    use slotd_raft_store::{Command, Request, SlotRef, Topology};

    use super::*;

    fn apply(s: &mut ClusterState, command: Command) {
        assert!(s.apply(&Request { at_ms: 0, command }).is_applied());
    }

    /// A stop waits for masters that can go somewhere, and only for them:
    /// when every other node is stopping (draining) too, not at all.
    #[test]
    fn a_stop_waits_only_while_a_master_can_go_somewhere() {
        let node = |id: u64| NodeSpec {
            id,
            name: format!("imap{id}"),
            addr: format!("10.0.0.{id}:7420"),
            voter: true,
            slots: vec!["s01".into()],
        };
        let slot = |node: u64| SlotRef {
            node,
            slot: "s01".into(),
        };
        let mut s = ClusterState::default();
        apply(
            &mut s,
            Command::Init(Topology {
                nodes: vec![node(1), node(2)],
                stores: vec![StoreSpec {
                    name: "st01".into(),
                    master_ip: "10.0.1.1/32".parse().unwrap(),
                    replica_ip: "10.0.2.1/32".parse().unwrap(),
                    slots: vec![slot(1), slot(2)],
                }],
            }),
        );
        assert!(handing_over(&s, 1, &[]), "imap2 is active: st01 can go there");
        assert!(
            !handing_over(&s, 1, &["st01".to_owned()]),
            "stranded by the leader's word"
        );
        assert!(!handing_over(&s, 2, &[]), "imap2 masters nothing");
        apply(
            &mut s,
            Command::Drain {
                node: 2,
                concurrency: 8,
                on_stop: true,
            },
        );
        assert!(!handing_over(&s, 1, &[]), "imap2 is stopping too: nothing to wait for");
    }
}
