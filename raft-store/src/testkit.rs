//! Builders of topologies and states, for tests and benches (of this crate,
//! `slotd-core` and the agent). They panic on what a test got wrong (a
//! refused init): never call them on input from outside.

use std::net::{IpAddr, Ipv4Addr};

use crate::command::{Command, NodeSpec, Request, StoreSpec, Topology};
use crate::ip::ServiceIp;
use crate::plan::{plan, Naming};
use crate::state::{ClusterState, SlotRef};

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

/// `command` as a request, stamped with a fixed time.
pub fn req(command: Command) -> Request {
    Request {
        at_ms: 1_700_000_000_000,
        command,
    }
}

/// Node `id` called `name` with `slots`, at `10.0.0.ID:7420`, a voter if
/// `id <= 3`.
pub fn node(id: u64, name: &str, slots: &[&str]) -> NodeSpec {
    NodeSpec {
        id,
        name: name.into(),
        addr: format!("10.0.0.{id}:7420"),
        voter: id <= 3,
        slots: slots.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Store `name` with master IP `10.0.1.K/32`, replica IP `10.0.2.K/32`,
/// on `slots` (node, slot), the first its master.
pub fn store(name: &str, k: u8, slots: &[(u64, &str)]) -> StoreSpec {
    StoreSpec {
        name: name.into(),
        master_ip: host(1, k),
        replica_ip: host(2, k),
        slots: slots
            .iter()
            .map(|(node, slot)| SlotRef {
                node: *node,
                slot: (*slot).to_owned(),
            })
            .collect(),
    }
}

/// `10.0.NET.K/32`.
fn host(net: u8, k: u8) -> ServiceIp {
    ServiceIp {
        addr: IpAddr::V4(Ipv4Addr::new(10, 0, net, k)),
        len: 32,
    }
}
