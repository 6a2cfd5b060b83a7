//! Builders shared by this crate's tests.
#![allow(dead_code)]

use slotd_raft_store::command::{NodeSpec, StoreSpec};
use slotd_raft_store::plan::{plan, Naming};
use slotd_raft_store::{ClusterState, Command, Request, SlotRef, Topology};

/// A planned topology of `nodes` × `slots`, as `slotctl plan` would print it.
pub fn planned(nodes: usize, slots: usize) -> Topology {
    plan(nodes, slots)
        .expect("valid plan parameters in tests")
        .to_topology(&Naming::default())
}

/// A state initialised from `topology`.
pub fn initialised(topology: Topology) -> ClusterState {
    let mut state = ClusterState::default();
    let r = state.apply(&req(Command::Init(topology)));
    assert!(r.is_applied(), "init refused: {r:?}");
    state
}

pub fn req(command: Command) -> Request {
    Request {
        at_ms: 1_700_000_000_000,
        command,
    }
}

pub fn node(id: u64, name: &str, slots: &[&str]) -> NodeSpec {
    NodeSpec {
        id,
        name: name.into(),
        addr: format!("10.0.0.{id}:7420"),
        voter: id <= 3,
        slots: slots.iter().map(|s| (*s).to_owned()).collect(),
    }
}

pub fn store(name: &str, k: u8, slots: &[(u64, &str)]) -> StoreSpec {
    StoreSpec {
        name: name.into(),
        master_ip: format!("10.0.1.{k}/32").parse().expect("test IP"),
        replica_ip: format!("10.0.2.{k}/32").parse().expect("test IP"),
        slots: slots
            .iter()
            .map(|(node, slot)| SlotRef {
                node: *node,
                slot: (*slot).to_owned(),
            })
            .collect(),
    }
}
