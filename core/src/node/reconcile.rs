//! The reconciler's decision: from the cluster state (what the log says),
//! this node's lease, and what is observed on this machine (addresses held,
//! Cyrus instances running), the actions that make the machine match.
//!
//! Pure: no I/O, no clock. The agent's reconciler (`agent::node::reconciler`)
//! executes the actions; the simulation times them.
//!
//! Rules:
//! - A node acts as master of a store only while the log names it master,
//!   the phase lets it serve (`Stable`, or `Promoting` to it), and its lease
//!   is valid. Otherwise it holds neither the master IP nor a master
//!   instance: that is self-fencing.
//! - Taking over comes in DESIGN order: bind the master IP, announce it, and
//!   only then start Cyrus as master.
//! - All giving up comes before any taking, so a node never holds two roles
//!   of one store at once. A master that hands over (the log still names it,
//!   its lease holds) stops its instance before it releases the address;
//!   every other address (fencing, an address the log gives elsewhere) goes
//!   first.
//! - A replica holds the store's replica IP (the first replica in slot order
//!   if there are several) and runs its instance as replica. Replicas need no
//!   lease: a replica cannot lose mail.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use slotd_raft_store::{ClusterState, NodeId, Phase, ServiceIp, Store};

use crate::report::replay_digest;
use crate::timing::TAKE_GUARD;

/// The role an instance was started in, and for which epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instance {
    Stopped,
    Master { epoch: u64 },
    Replica { epoch: u64 },
}

/// What is true on this machine now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Store addresses (master or replica IPs of any store) bound here.
    pub addresses: BTreeSet<IpAddr>,
    /// Instance state by slot name; a missing slot is stopped.
    pub instances: BTreeMap<String, Instance>,
    /// Addresses bound here by this agent (its ledger or the interface's
    /// tag says so) that belong to no store of the state any more (a
    /// removed store), with the store they were bound for.
    pub leftovers: BTreeMap<IpAddr, (ServiceIp, String)>,
    /// Slots demoted (clients stopped, sync log flushed unless forced,
    /// instance stopped) by this agent, with the epoch of the attempt.
    pub demoted: BTreeMap<String, u64>,
    /// Stores whose pending replay this agent has run (well or not): the
    /// node the log came from and its digest (`report::replay_digest`).
    pub replayed: BTreeMap<String, (NodeId, u64)>,
    /// Slots whose demote runs now, on a task of its own (a flush may take
    /// the phase's whole timeout): nothing else is done to them meanwhile.
    pub busy: BTreeSet<String>,
}

/// One thing to do. The executor runs them in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop the slot's instance (its whole process group).
    Stop {
        store: String,
        slot: String,
    },
    /// A switchover's old master: stop taking clients, flush the sync log
    /// to the replica until empty (unless `force`), stop the instance. Done
    /// once per attempt (`epoch`), whatever state the instance was in.
    Demote {
        store: String,
        slot: String,
        epoch: u64,
        force: bool,
    },
    /// Remove the address from the interface.
    Release {
        store: String,
        ip: ServiceIp,
    },
    /// Bind the address (after probing that nobody else answers for it).
    Bind {
        store: String,
        ip: ServiceIp,
        epoch: u64,
    },
    /// Gratuitous ARP / unsolicited NA for the address.
    Announce {
        store: String,
        ip: ServiceIp,
    },
    StartMaster {
        store: String,
        slot: String,
        epoch: u64,
    },
    StartReplica {
        store: String,
        slot: String,
        epoch: u64,
    },
    /// As master: replay a dirty replica's leftover sync log (pull what
    /// only that replica has).
    Replay {
        store: String,
        slot: String,
        from: NodeId,
    },
}

/// The role this node should have in a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Serve: master IP, master instance.
    Master,
    /// Master in the log, but not allowed to serve (no lease, or demoting):
    /// hold nothing of the master role.
    Fenced,
    /// Replica; `holds_ip` for the one that binds the replica IP.
    Replica { holds_ip: bool },
}

/// Whether this node serves `store` as master now: the log names it, the
/// phase lets it serve, its lease is valid (the rule `reconcile` acts on).
pub fn serves_as_master(store: &Store, me: NodeId, lease_valid: bool) -> bool {
    role(store, me, lease_valid) == Role::Master
}

fn role(store: &Store, me: NodeId, lease_valid: bool) -> Role {
    if store.master == me {
        let may_serve = match store.phase {
            Phase::Stable => true,
            Phase::Promoting { to, .. } => to == me,
            Phase::Demoting { .. } => false,
        };
        if may_serve && lease_valid {
            Role::Master
        } else {
            Role::Fenced
        }
    } else {
        Role::Replica {
            holds_ip: store.replicas().next() == Some(me),
        }
    }
}

/// The actions that bring this node to what the log says.
pub fn reconcile(state: &ClusterState, me: NodeId, lease_valid: bool, observed: &Observed) -> Vec<Action> {
    let mut give_up = Vec::new();
    let mut take = Vec::new();
    let held = |ip: &ServiceIp| observed.addresses.contains(&ip.addr);
    let mut wanted_ips: BTreeSet<IpAddr> = BTreeSet::new();

    for store in state.stores.values() {
        let Some(slot) = store.slot_on(me) else { continue };
        let name = store.name.clone();
        let slot = slot.slot.clone();
        let instance = observed.instances.get(&slot).copied().unwrap_or(Instance::Stopped);
        match role(store, me, lease_valid) {
            Role::Master => {
                wanted_ips.insert(store.master_ip.addr);
                if !matches!(instance, Instance::Master { .. }) && instance != Instance::Stopped {
                    give_up.push(Action::Stop {
                        store: name.clone(),
                        slot: slot.clone(),
                    });
                }
                if !held(&store.master_ip) {
                    take.extend(bind_and_announce(store, store.master_ip));
                }
                if !matches!(instance, Instance::Master { .. }) {
                    take.push(Action::StartMaster {
                        store: name.clone(),
                        slot: slot.clone(),
                        epoch: store.epoch,
                    });
                }
                if let Some(r) = &store.replay {
                    let this = (r.from, replay_digest(&r.log));
                    if observed.replayed.get(&name) != Some(&this) {
                        take.push(Action::Replay {
                            store: name,
                            slot,
                            from: r.from,
                        });
                    }
                }
            }
            Role::Fenced => {
                if let Phase::Demoting { force, .. } = store.phase {
                    if observed.demoted.get(&slot) != Some(&store.epoch) {
                        give_up.push(Action::Demote {
                            store: name.clone(),
                            slot,
                            epoch: store.epoch,
                            force,
                        });
                    }
                } else if matches!(instance, Instance::Master { .. }) {
                    give_up.push(Action::Stop {
                        store: name.clone(),
                        slot,
                    });
                }
            }
            Role::Replica { holds_ip } => {
                if holds_ip {
                    wanted_ips.insert(store.replica_ip.addr);
                    if !held(&store.replica_ip) {
                        take.extend(bind_and_announce(store, store.replica_ip));
                    }
                }
                if !matches!(instance, Instance::Replica { .. }) {
                    if instance != Instance::Stopped {
                        give_up.push(Action::Stop {
                            store: name.clone(),
                            slot: slot.clone(),
                        });
                    }
                    take.push(Action::StartReplica {
                        store: name,
                        slot,
                        epoch: store.epoch,
                    });
                }
            }
        }
    }

    // Any store address held here that no role above wants goes: stale
    // master IPs first of all (fencing), but also replica IPs of stores this
    // node no longer serves.
    for store in state.stores.values() {
        // The mission's order for a demote, which runs on its own: the
        // master IP stays until the demote is done (instance stopped, sync
        // log flushed), then goes in a later pass. Not when the lease is
        // gone: fencing waits for nothing.
        let demoting_here = lease_valid
            && store.master == me
            && matches!(store.phase, Phase::Demoting { .. })
            && store.slot_on(me).is_some_and(|r| {
                observed.busy.contains(&r.slot) || observed.demoted.get(&r.slot) != Some(&store.epoch)
            });
        for ip in [store.master_ip, store.replica_ip] {
            if demoting_here && ip == store.master_ip {
                continue;
            }
            if held(&ip) && !wanted_ips.contains(&ip.addr) {
                give_up.push(Action::Release {
                    store: store.name.clone(),
                    ip,
                });
            }
        }
    }
    // A removed store leaves nothing behind: its addresses go, so that no
    // ghost answers for an IP a new store may be given.
    for (ip, store) in observed.leftovers.values() {
        give_up.push(Action::Release {
            store: store.clone(),
            ip: *ip,
        });
    }
    // The mission's order while the log still names this node master and
    // its lease holds (a demote): the instance stops (its whole process
    // group, the flush included) before the address goes, so that nothing
    // behind the address still takes mail once another machine may hold
    // it; nobody else may take it before this node acks. Any other address
    // goes first of all: fencing for a lost lease must finish within the
    // margin whatever a hanging stop does, and an address the log gives to
    // another master must not stay bound here a moment longer.
    let order = |a: &Action| match a {
        Action::Release { store, .. } => {
            let own = lease_valid && state.stores.get(store).is_some_and(|s| s.master == me);
            if own {
                2
            } else {
                0
            }
        }
        _ => 1,
    };
    give_up.sort_by_key(order);
    give_up.extend(take);
    // A slot whose demote still runs is left alone (a rollback may already
    // want it back as master): its next step waits for the demote's end.
    give_up.retain(|a| !a.slot().is_some_and(|s| observed.busy.contains(s)));
    give_up
}

/// Taking an address: bind it, then tell the LAN at once.
fn bind_and_announce(store: &Store, ip: ServiceIp) -> [Action; 2] {
    [
        Action::Bind {
            store: store.name.clone(),
            ip,
            epoch: store.epoch,
        },
        Action::Announce {
            store: store.name.clone(),
            ip,
        },
    ]
}

/// How one pass carries out its actions (the reconciler does it; the simulation
/// times it the same way):
/// 1. giving up, the stores side by side, each store's steps in order
///    (release, then stop);
/// 2. the RFC 5227 probes of every master IP the pass will bind, all at once
///    (one waits its full timeout when nobody answers: the normal case);
/// 3. taking, the stores side by side, each store's steps in order (bind,
///    announce, start).
///
/// So a pass that takes N master IPs costs about one probe and one store's
/// steps, never N announcements one after another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassPlan {
    /// Per store (in name order), its giving-up steps.
    pub give_up: Vec<Vec<Action>>,
    /// The master IPs to probe before binding.
    pub probe: Vec<IpAddr>,
    /// Per store (in name order), its taking steps.
    pub take: Vec<Vec<Action>>,
}

impl PassPlan {
    pub fn is_empty(&self) -> bool {
        self.give_up.is_empty() && self.take.is_empty()
    }
}

/// Arranges `reconcile`'s actions into a [`PassPlan`], keeping each store's
/// order.
pub fn plan_pass(state: &ClusterState, actions: Vec<Action>) -> PassPlan {
    let mut give_up: BTreeMap<String, Vec<Action>> = BTreeMap::new();
    let mut take: BTreeMap<String, Vec<Action>> = BTreeMap::new();
    let mut probe = Vec::new();
    for a in actions {
        let store = a.store().to_owned();
        if let Action::Bind { ip, .. } = &a {
            if state.stores.get(&store).is_some_and(|s| s.master_ip == *ip) {
                probe.push(ip.addr);
            }
        }
        if a.is_give_up() {
            give_up.entry(store).or_default().push(a);
        } else {
            take.entry(store).or_default().push(a);
        }
    }
    PassPlan {
        give_up: give_up.into_values().collect(),
        probe,
        take: take.into_values().collect(),
    }
}

impl Action {
    /// The slot the action is for, if it acts on an instance.
    pub fn slot(&self) -> Option<&str> {
        match self {
            Action::Stop { slot, .. }
            | Action::Demote { slot, .. }
            | Action::StartMaster { slot, .. }
            | Action::StartReplica { slot, .. }
            | Action::Replay { slot, .. } => Some(slot),
            Action::Release { .. } | Action::Bind { .. } | Action::Announce { .. } => None,
        }
    }

    /// The store the action is for.
    pub fn store(&self) -> &str {
        match self {
            Action::Stop { store, .. }
            | Action::Demote { store, .. }
            | Action::Release { store, .. }
            | Action::Bind { store, .. }
            | Action::Announce { store, .. }
            | Action::StartMaster { store, .. }
            | Action::StartReplica { store, .. }
            | Action::Replay { store, .. } => store,
        }
    }

    /// Releasing or stopping (as opposed to taking).
    pub fn is_give_up(&self) -> bool {
        matches!(
            self,
            Action::Stop { .. } | Action::Demote { .. } | Action::Release { .. }
        )
    }
}

/// Whether this node should hold `ip` of `store` now, by the same rule as
/// `reconcile` (announcements in flight stop when it says no).
pub fn wants_ip(state: &ClusterState, me: NodeId, lease_valid: bool, store: &str, ip: IpAddr) -> bool {
    let Some(s) = state.stores.get(store) else {
        return false;
    };
    if !s.has_node(me) {
        return false;
    }
    match role(s, me, lease_valid) {
        Role::Master => s.master_ip.addr == ip,
        Role::Fenced => false,
        Role::Replica { holds_ip } => holds_ip && s.replica_ip.addr == ip,
    }
}

/// The switchover phases this node has finished its part of, by store,
/// with the epoch of the attempt — what it acks to the leader in its health
/// reports (the leader then writes the next phase):
/// - `Demoting`, as the old master: the master IP is not held here, the
///   instance is not master, and the slot was demoted for this epoch;
/// - `Promoting`, as the new master: it serves — the master IP is bound
///   (and was announced, which comes before the start in a pass) and the
///   instance runs as master for this epoch. A node without a valid lease
///   does not serve, so does not ack.
pub fn phase_done(state: &ClusterState, me: NodeId, lease_valid: bool, observed: &Observed) -> BTreeMap<String, u64> {
    let mut done = BTreeMap::new();
    for store in state.stores.values() {
        let Some(slot) = store.slot_on(me) else { continue };
        let instance = observed.instances.get(&slot.slot).copied().unwrap_or(Instance::Stopped);
        let holds = observed.addresses.contains(&store.master_ip.addr);
        let finished = match store.phase {
            Phase::Stable => false,
            Phase::Demoting { from, .. } => {
                from == me
                    && !holds
                    && !matches!(instance, Instance::Master { .. })
                    && observed.demoted.get(&slot.slot) == Some(&store.epoch)
            }
            Phase::Promoting { to, .. } => {
                to == me
                    && role(store, me, lease_valid) == Role::Master
                    && holds
                    && instance == Instance::Master { epoch: store.epoch }
            }
        };
        if finished {
            done.insert(store.name.clone(), store.epoch);
        }
    }
    done
}

/// The stores this node is marked dirty for and runs as replica again, at
/// the store's epoch, with no leftover sync log waiting for a replay
/// (`waiting`: slots that have one): the driver set it aside before it
/// started the replica (see `SlotDriver::start_replica`), so the mark can go.
pub fn leftovers_settled(
    state: &ClusterState,
    me: NodeId,
    observed: &Observed,
    waiting: &BTreeSet<String>,
) -> BTreeMap<String, u64> {
    state
        .stores
        .values()
        .filter(|s| s.dirty.contains(&me) && s.master != me)
        .filter(|s| s.slot_on(me).is_some_and(|slot| !waiting.contains(&slot.slot)))
        .filter(|s| {
            s.slot_on(me)
                .is_some_and(|slot| observed.instances.get(&slot.slot) == Some(&Instance::Replica { epoch: s.epoch }))
        })
        .map(|s| (s.name.clone(), s.epoch))
        .collect()
}

/// The store addresses of `state` (to pick them out of an interface's list).
pub fn store_addresses(state: &ClusterState) -> BTreeSet<IpAddr> {
    state
        .stores
        .values()
        .flat_map(|s| [s.master_ip.addr, s.replica_ip.addr])
        .collect()
}

/// The last pass of an agent that stops: a demote becomes a plain stop of
/// the instance, without its flush (it would run on a task of its own, and
/// nothing may outlive the agent; the stop's own drain has had its time),
/// and every other action stays as planned.
pub fn at_stop(actions: Vec<Action>) -> Vec<Action> {
    actions
        .into_iter()
        .map(|a| match a {
            Action::Demote { store, slot, .. } => Action::Stop { store, slot },
            other => other,
        })
        .collect()
}

/// Why a taking step that the plan holds must not go ahead when its turn
/// comes (the pass's probes and earlier steps took time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Another machine answers for the master IP (RFC 5227): a split-brain
    /// alarm. Its MAC.
    Answered(String),
    /// Less than [`TAKE_GUARD`] of the lease is left: the step could
    /// straddle the lease's end.
    LeaseEnding,
}

/// Whether binding a master IP may go ahead, with `answered` the MAC its
/// probe heard (if any) and `lease_left` what is left of the lease now.
pub fn may_bind_master(answered: Option<String>, lease_left: Duration) -> Result<(), Hold> {
    if let Some(mac) = answered {
        return Err(Hold::Answered(mac));
    }
    may_start_master(lease_left)
}

/// Whether starting Cyrus as master may go ahead with `lease_left`.
pub fn may_start_master(lease_left: Duration) -> Result<(), Hold> {
    if lease_left < TAKE_GUARD {
        return Err(Hold::LeaseEnding);
    }
    Ok(())
}

/// The role a stable store's instance here should run in but does not
/// (`instance` as the reconciler last saw it): "master" or "replica".
pub fn missing_role(store: &Store, me: NodeId, instance: Option<&str>) -> Option<&'static str> {
    store.slot_on(me)?;
    if store.phase != Phase::Stable {
        return None;
    }
    let want = if store.master == me { "master" } else { "replica" };
    (instance != Some(want)).then_some(want)
}

/// Health rounds an instance may be missing before it is reported (the
/// reconciler may be starting it).
pub const MISSING_ROUNDS: u32 = 2;

#[cfg(test)]
mod tests;
