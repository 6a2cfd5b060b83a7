//! Protobuf ↔ domain, in one place: what the Admin service receives
//! becomes the state machine's types (checked field by field, the error
//! naming the field), and what the state holds becomes the replies and
//! requests `slotctl` reads and sends. Node names stand for node ids on the
//! wire: the state resolves them, on the leader. (A wire message's own
//! protobuf twin, such as `NamedStore`'s, converts beside it in
//! `cluster::wire`.)

use std::collections::BTreeMap;
use std::fmt;

use slotd_proto::v1 as pb;
use slotd_raft_store::{
    ClusterState, ClusterTimings, Move, NodeId, NodeSpec, ServiceIp, SlotRef, StoreSpec, TimingsInForce, Topology,
    Transition,
};

/// A field of a request that cannot be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as its caller knows it (`store "st01": master_ip`).
    pub field: String,
    pub problem: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for FieldError {}

fn invalid(field: &str, problem: impl fmt::Display) -> FieldError {
    FieldError {
        field: field.to_owned(),
        problem: problem.to_string(),
    }
}

/// A protobuf node as the command's.
pub fn node_spec(n: pb::NodeSpec) -> NodeSpec {
    NodeSpec {
        id: n.id,
        name: n.name,
        addr: n.addr,
        voter: n.voter,
        slots: n.slots,
    }
}

/// A node of the state's commands as protobuf.
pub fn node_to_pb(n: &NodeSpec) -> pb::NodeSpec {
    pb::NodeSpec {
        id: n.id,
        name: n.name.clone(),
        addr: n.addr.clone(),
        voter: n.voter,
        slots: n.slots.clone(),
    }
}

/// A protobuf store as the command's: IPs parsed, `NODE:SLOT` resolved by
/// `nodes` (against the state, or the nodes of the same request).
pub fn store_spec(s: pb::StoreSpec, nodes: &dyn Fn(&str) -> Option<NodeId>) -> Result<StoreSpec, FieldError> {
    let what = format!("store {:?}", s.name);
    let master_ip: ServiceIp = s
        .master_ip
        .parse()
        .map_err(|e| invalid(&format!("{what}: master_ip"), e))?;
    let replica_ip: ServiceIp = s
        .replica_ip
        .parse()
        .map_err(|e| invalid(&format!("{what}: replica_ip"), e))?;
    let mut slots = Vec::new();
    for r in s.slots {
        let Some((node, slot)) = r.split_once(':') else {
            return Err(invalid(&format!("{what}: slots"), format!("{r:?} is not NODE:SLOT")));
        };
        let Some(id) = nodes(node) else {
            return Err(invalid(
                &format!("{what}: slots"),
                format!("{r:?} names unknown node {node:?}"),
            ));
        };
        slots.push(SlotRef {
            node: id,
            slot: slot.to_owned(),
        });
    }
    Ok(StoreSpec {
        name: s.name,
        master_ip,
        replica_ip,
        slots,
    })
}

/// A topology as `slotctl init` sends it: slots named `NODE:SLOT` by the
/// topology's own node names.
pub fn init_request(t: &Topology) -> pb::InitRequest {
    let names: BTreeMap<NodeId, &str> = t.nodes.iter().map(|n| (n.id, n.name.as_str())).collect();
    pb::InitRequest {
        nodes: t.nodes.iter().map(node_to_pb).collect(),
        stores: t
            .stores
            .iter()
            .map(|s| pb::StoreSpec {
                name: s.name.clone(),
                master_ip: s.master_ip.to_string(),
                replica_ip: s.replica_ip.to_string(),
                slots: s
                    .slots
                    .iter()
                    .map(|r| format!("{}:{}", names.get(&r.node).copied().unwrap_or("?"), r.slot))
                    .collect(),
            })
            .collect(),
    }
}

/// A move the rebalance plans, with node names.
pub fn planned_move(state: &ClusterState, m: Move) -> pb::PlannedMove {
    pb::PlannedMove {
        from: state
            .stores
            .get(&m.store)
            .map_or_else(String::new, |s| state.node_name(s.master)),
        to: state.node_name(m.to),
        store: m.store,
    }
}

/// A transition of the history, with node names.
pub fn history_entry(state: &ClusterState, t: &Transition) -> pb::HistoryEntry {
    pb::HistoryEntry {
        seq: t.seq,
        store: t.store.clone(),
        from: state.node_name(t.from),
        to: state.node_name(t.to),
        epoch: t.epoch,
        reason: t.reason.to_string(),
        what: t.what.clone(),
        at_ms: t.at_ms,
        duration_ms: t.duration_ms,
    }
}

/// `slotctl config show`'s answer: the timings in force (none before the
/// first are written), and while a change settles, the ones before it.
pub fn config_reply(t: Option<&TimingsInForce>, index: u64) -> pb::ConfigReply {
    let settings = |c: &ClusterTimings| {
        c.pairs()
            .iter()
            .map(|(key, value)| pb::Setting {
                key: (*key).to_owned(),
                value: *value,
            })
            .collect()
    };
    pb::ConfigReply {
        settings: t.map(|t| settings(&t.now)).unwrap_or_default(),
        seq: t.map_or(0, |t| t.seq),
        before: t.and_then(|t| t.before.as_ref().map(settings)).unwrap_or_default(),
        index,
    }
}
