//! The initial placement: which slots pair up into stores, and which side is
//! master, so that every node's partners are spread over all other nodes.
//!
//! When node `i` dies, each of its masters moves to its replica's node; if
//! `i`'s masters have their replicas spread evenly over the other `N − 1`
//! nodes, no survivor gains more than `⌈masters(i) / (N − 1)⌉` masters.
//!
//! Construction: `M = ⌊S/2⌋` masters per node; node `i`'s `k`-th master gets
//! its replica on node `i + d_k (mod N)` with `d_k = 1 + ((k + ⌊N/2⌋) mod
//! (N − 1))`. The layout is circulant, so every node also receives exactly
//! `M` replicas. When `S` is odd (then `N` must be even), each node `i <
//! N/2` masters one more store, replicated on `i + N/2`; the offset rotation
//! by `⌊N/2⌋` guarantees that offset `N/2` is one of the less used ones, so
//! the bound still holds.

use std::net::Ipv4Addr;

use crate::command::{Command, NodeSpec, Rejection, Request, StoreSpec, Topology};
use crate::ip::ServiceIp;
use crate::state::{ClusterState, SlotRef};

/// Largest plan we agree to compute (and print).
pub const MAX_NODES: usize = 4096;
pub const MAX_SLOTS_PER_NODE: usize = 1024;

/// Why no plan could be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("--nodes must be from 2 to {MAX_NODES} (a store needs slots on two nodes), got {0}")]
    Nodes(usize),
    #[error("--slots must be from 1 to {MAX_SLOTS_PER_NODE}, got {0}")]
    Slots(usize),
    #[error("{nodes} nodes × {slots} slots is an odd number of slots; stores pair slots, so one would be left over")]
    Odd { nodes: usize, slots: usize },
}

/// A slot in a plan: node index and slot index, both from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedSlot {
    pub node: usize,
    pub slot: usize,
}

/// One store of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedStore {
    pub master: PlannedSlot,
    pub replica: PlannedSlot,
}

/// A complete placement of `nodes × slots_per_node` slots into stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub nodes: usize,
    pub slots_per_node: usize,
    pub stores: Vec<PlannedStore>,
}

/// Computes the placement (see the module doc for how and why).
pub fn plan(nodes: usize, slots_per_node: usize) -> Result<Layout, PlanError> {
    if !(2..=MAX_NODES).contains(&nodes) {
        return Err(PlanError::Nodes(nodes));
    }
    if !(1..=MAX_SLOTS_PER_NODE).contains(&slots_per_node) {
        return Err(PlanError::Slots(slots_per_node));
    }
    if nodes * slots_per_node % 2 == 1 {
        return Err(PlanError::Odd {
            nodes,
            slots: slots_per_node,
        });
    }
    let n = nodes;
    let per_node = slots_per_node / 2;
    let mut next_slot = vec![0usize; n];
    let mut take = |node: usize| {
        let slot = next_slot[node];
        next_slot[node] += 1;
        PlannedSlot { node, slot }
    };
    let mut stores = Vec::with_capacity(n * slots_per_node / 2);
    for i in 0..n {
        for k in 0..per_node {
            let offset = 1 + (k + n / 2) % (n - 1);
            let j = (i + offset) % n;
            let master = take(i);
            let replica = take(j);
            stores.push(PlannedStore { master, replica });
        }
    }
    if slots_per_node % 2 == 1 {
        for i in 0..n / 2 {
            let master = take(i);
            let replica = take(i + n / 2);
            stores.push(PlannedStore { master, replica });
        }
    }
    Ok(Layout {
        nodes,
        slots_per_node,
        stores,
    })
}

/// How to name and address a planned cluster.
#[derive(Clone, Debug)]
pub struct Naming {
    /// Node names are `{node_prefix}{1..}`.
    pub node_prefix: String,
    /// Node `i`'s Peer address is `node_base + i`, port `port`.
    pub node_base: Ipv4Addr,
    pub port: u16,
    /// Slot names are `{slot_prefix}{01..}`.
    pub slot_prefix: String,
    /// Store names are `{store_prefix}{0001..}`.
    pub store_prefix: String,
    /// Store `k`'s master IP is `master_base + k`, its replica IP `replica_base + k`.
    pub master_base: Ipv4Addr,
    pub replica_base: Ipv4Addr,
    /// How many of the first nodes are voters.
    pub voters: usize,
}

impl Default for Naming {
    fn default() -> Self {
        Naming {
            node_prefix: "imap".into(),
            node_base: Ipv4Addr::new(10, 0, 0, 1),
            port: 7420,
            slot_prefix: "s".into(),
            store_prefix: "st".into(),
            // Two /10s: room for four million stores without overlap.
            master_base: Ipv4Addr::new(10, 64, 0, 1),
            replica_base: Ipv4Addr::new(10, 128, 0, 1),
            voters: 3,
        }
    }
}

fn nth(base: Ipv4Addr, k: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base).wrapping_add(k as u32))
}

impl Layout {
    /// The cluster state right after `slotctl init` of this layout (for
    /// tests).
    pub fn initial_state(&self, naming: &Naming) -> Result<ClusterState, Rejection> {
        let mut state = ClusterState::default();
        state
            .apply(&Request {
                at_ms: 0,
                command: Command::Init(self.to_topology(naming)),
            })
            .into_result()?;
        Ok(state)
    }

    /// Names and addresses the layout, giving a topology `slotctl init` takes.
    pub fn to_topology(&self, naming: &Naming) -> Topology {
        let digits = |max: usize, min: usize| max.to_string().len().max(min);
        let slot_w = digits(self.slots_per_node, 2);
        let store_w = digits(self.stores.len(), 4);
        let slot_name = |s: usize| format!("{}{:0w$}", naming.slot_prefix, s + 1, w = slot_w);
        let nodes = (0..self.nodes)
            .map(|i| NodeSpec {
                id: i as u64 + 1,
                name: format!("{}{}", naming.node_prefix, i + 1),
                addr: format!("{}:{}", nth(naming.node_base, i), naming.port),
                voter: i < naming.voters.clamp(1, self.nodes),
                slots: (0..self.slots_per_node).map(slot_name).collect(),
            })
            .collect();
        let slot_ref = |p: PlannedSlot| SlotRef {
            node: p.node as u64 + 1,
            slot: slot_name(p.slot),
        };
        let stores = self
            .stores
            .iter()
            .enumerate()
            .map(|(k, s)| StoreSpec {
                name: format!("{}{:0w$}", naming.store_prefix, k + 1, w = store_w),
                // Host prefixes: always valid, never loopback or multicast
                // for the bases above.
                master_ip: ServiceIp {
                    addr: nth(naming.master_base, k).into(),
                    len: 32,
                },
                replica_ip: ServiceIp {
                    addr: nth(naming.replica_base, k).into(),
                    len: 32,
                },
                slots: vec![slot_ref(s.master), slot_ref(s.replica)],
            })
            .collect();
        Topology { nodes, stores }
    }
}
