//! `topology.toml`: the cluster layout given once to `slotctl init`.
//!
//! ```toml
//! voters = 3                          # optional: how many of the first nodes vote
//! [[node]]
//! id = 1
//! name = "imap1"
//! addr = "10.0.0.1:7420"
//! slots = ["s01", "s02"]
//! [[store]]
//! name = "st01"
//! master_ip = "10.0.1.1/32"
//! replica_ip = "10.0.2.1/32"
//! slots = ["imap1:s01", "imap2:s01"]  # first = preferred master, and master at init
//! ```
//!
//! Parsing resolves node names to ids and then runs exactly the checks the
//! state machine runs on `Init`, so a file that parses cleanly is one the
//! cluster accepts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use crate::command::{Command, NodeSpec, Rejection, StoreSpec, Topology};
use crate::ip::ServiceIp;
use crate::state::{ClusterState, NodeId, SlotRef};

/// Why a topology file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// Not TOML, a key of the wrong type, or an unknown key (the message has
    /// the line and the key).
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("{entry}: field `{field}`: {problem}")]
    Field {
        entry: String,
        field: &'static str,
        problem: String,
    },
    /// Well-formed, but the cluster would refuse it.
    #[error("{0}")]
    Invalid(#[from] Rejection),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    voters: Option<usize>,
    #[serde(default)]
    node: Vec<RawNode>,
    #[serde(default)]
    store: Vec<RawStore>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: Option<NodeId>,
    name: Option<String>,
    addr: Option<String>,
    slots: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    name: Option<String>,
    master_ip: Option<String>,
    replica_ip: Option<String>,
    slots: Option<Vec<String>>,
}

/// Voters when the file does not say: five from five nodes on (two may
/// fail), else up to three.
pub fn default_voters(nodes: usize) -> usize {
    if nodes >= 5 {
        5
    } else {
        nodes.min(3)
    }
}

fn field_err(entry: &str, field: &'static str, problem: impl Into<String>) -> TopologyError {
    TopologyError::Field {
        entry: entry.to_owned(),
        field,
        problem: problem.into(),
    }
}

fn required<T>(value: Option<T>, entry: &str, field: &'static str) -> Result<T, TopologyError> {
    value.ok_or_else(|| field_err(entry, field, "missing"))
}

/// Parses and checks a topology file's text.
pub fn parse(text: &str) -> Result<Topology, TopologyError> {
    let raw: RawTopology = toml::from_str(text)?;
    if raw.node.is_empty() {
        return Err(field_err("topology", "node", "no [[node]] entries"));
    }
    let voters = raw.voters.unwrap_or_else(|| default_voters(raw.node.len()));
    if voters == 0 || voters > raw.node.len() {
        return Err(field_err(
            "topology",
            "voters",
            format!("must be from 1 to the number of nodes ({})", raw.node.len()),
        ));
    }

    let mut nodes = Vec::with_capacity(raw.node.len());
    for (i, n) in raw.node.into_iter().enumerate() {
        let entry = match &n.name {
            Some(name) => format!("node #{} ({name})", i + 1),
            None => format!("node #{}", i + 1),
        };
        nodes.push(NodeSpec {
            id: required(n.id, &entry, "id")?,
            name: required(n.name, &entry, "name")?,
            addr: required(n.addr, &entry, "addr")?,
            voter: i < voters,
            slots: required(n.slots, &entry, "slots")?,
        });
    }
    // Each node checked against those before it, exactly as the state
    // machine will, and any refusal tied to this entry and field.
    let mut scratch = ClusterState {
        initialised: true,
        ..ClusterState::default()
    };
    for (i, spec) in nodes.iter().enumerate() {
        let entry = format!("node #{} ({})", i + 1, spec.name);
        if let Err(r) = scratch.check(&Command::AddNode(spec.clone())) {
            return Err(field_err(&entry, node_field(&r), r.to_string()));
        }
        scratch.apply(&crate::Request {
            at_ms: 0,
            command: Command::AddNode(spec.clone()),
        });
    }
    let by_name: BTreeMap<&str, NodeId> = nodes.iter().map(|n| (n.name.as_str(), n.id)).collect();

    let mut stores = Vec::with_capacity(raw.store.len());
    for (i, s) in raw.store.iter().enumerate() {
        let entry = match &s.name {
            Some(name) => format!("store #{} ({name})", i + 1),
            None => format!("store #{}", i + 1),
        };
        let name = required(s.name.clone(), &entry, "name")?;
        let ip = |field: &'static str, v: &Option<String>| -> Result<ServiceIp, TopologyError> {
            let text = required(v.as_ref(), &entry, field)?;
            text.parse().map_err(|e| field_err(&entry, field, format!("{e}")))
        };
        let master_ip = ip("master_ip", &s.master_ip)?;
        let replica_ip = ip("replica_ip", &s.replica_ip)?;
        let mut slots = Vec::new();
        for r in required(s.slots.as_ref(), &entry, "slots")? {
            let Some((node, slot)) = r.split_once(':') else {
                return Err(field_err(&entry, "slots", format!("{r:?} is not NODE:SLOT")));
            };
            let Some(&id) = by_name.get(node) else {
                return Err(field_err(&entry, "slots", format!("{r:?} names unknown node {node:?}")));
            };
            slots.push(SlotRef {
                node: id,
                slot: slot.to_owned(),
            });
        }
        let spec = StoreSpec {
            name,
            master_ip,
            replica_ip,
            slots,
        };
        if let Err(r) = scratch.check(&Command::AddStore(spec.clone())) {
            return Err(field_err(&entry, store_field(&r, &spec), r.to_string()));
        }
        scratch.apply(&crate::Request {
            at_ms: 0,
            command: Command::AddStore(spec.clone()),
        });
        stores.push(spec);
    }

    let topology = Topology { nodes, stores };
    ClusterState::default().check(&Command::Init(topology.clone()))?;
    Ok(topology)
}

/// The field of a `[[node]]` entry a refusal is about.
fn node_field(r: &Rejection) -> &'static str {
    match r {
        Rejection::DuplicateNode { what, .. } if what.starts_with("id") => "id",
        Rejection::DuplicateNode { what, .. } if what.starts_with("address") => "addr",
        Rejection::InvalidField { field, .. } if field == "addr" => "addr",
        Rejection::InvalidField { field, .. } if field == "slots" => "slots",
        _ => "name",
    }
}

/// The field of a `[[store]]` entry a refusal is about.
fn store_field(r: &Rejection, spec: &StoreSpec) -> &'static str {
    match r {
        Rejection::DuplicateIp { ip, .. } if *ip == spec.master_ip.to_string() => "master_ip",
        Rejection::DuplicateIp { .. } => "replica_ip",
        Rejection::InvalidField { field, .. } => match field.as_str() {
            "master_ip" => "master_ip",
            "replica_ip" => "replica_ip",
            "slots" => "slots",
            _ => "name",
        },
        Rejection::DuplicateStore(_) => "name",
        _ => "slots",
    }
}

/// Writes a topology in the file format `parse` reads.
pub fn render(topology: &Topology) -> String {
    let names: BTreeMap<NodeId, &str> = topology.nodes.iter().map(|n| (n.id, n.name.as_str())).collect();
    let voters = topology.nodes.iter().filter(|n| n.voter).count();
    let quoted =
        |items: &mut dyn Iterator<Item = String>| items.map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let mut out = String::new();
    let _ = writeln!(out, "voters = {voters}");
    for n in &topology.nodes {
        let _ = writeln!(
            out,
            "\n[[node]]\nid = {}\nname = {:?}\naddr = {:?}",
            n.id, n.name, n.addr
        );
        let _ = writeln!(out, "slots = [{}]", quoted(&mut n.slots.iter().cloned()));
    }
    for s in &topology.stores {
        let _ = writeln!(
            out,
            "\n[[store]]\nname = {:?}\nmaster_ip = \"{}\"\nreplica_ip = \"{}\"",
            s.name, s.master_ip, s.replica_ip
        );
        let mut refs = s.slots.iter().map(|r| {
            let node = names
                .get(&r.node)
                .map_or_else(|| r.node.to_string(), |n| (*n).to_owned());
            format!("{node}:{}", r.slot)
        });
        let _ = writeln!(out, "slots = [{}]", quoted(&mut refs));
    }
    out
}
