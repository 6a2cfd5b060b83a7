//! Applying a command to the cluster state.
//!
//! Every command is first checked against `&self` and only then carried out,
//! by code that cannot fail: a rejected command leaves the state exactly as it
//! was. No clock, randomness or I/O here: every node computes the same state
//! from the same log.

use std::collections::BTreeSet;

use tracing::debug;

use crate::command::{Command, Move, NodeSpec, Rejection, Request, Response, StoreSpec, Topology};
use crate::state::{
    ClusterState, DrainJob, Node, NodeId, NodeMode, Phase, Reason, RebalanceJob, Store, Transition, HISTORY_LEN,
};
use crate::timings::TimingsInForce;

/// Longest accepted node, slot or store name.
pub const MAX_NAME_LEN: usize = 64;

/// Largest leftover sync log carried in the log for a replay (it lists
/// mailbox names, not mail: far more than any real one).
pub const MAX_REPLAY_LOG: usize = 1 << 20;

/// Most switchovers a drain or rebalance may run at once.
pub const MAX_CONCURRENCY: u32 = 64;

impl ClusterState {
    /// Applies one log entry. Rejections are ordinary answers, not errors:
    /// they are logged in the entry's response and change nothing.
    pub fn apply(&mut self, req: &Request) -> Response {
        match self.check(&req.command) {
            Err(rejection) => {
                debug!(%rejection, "command rejected");
                Response::Rejected(rejection)
            }
            Ok(()) => {
                self.carry_out(&req.command, req.at_ms);
                Response::Applied
            }
        }
    }

    /// Would `command` be applied to the current state? Side-effect free; the
    /// leader uses it to refuse bad operator input before it reaches the log.
    pub fn check(&self, command: &Command) -> Result<(), Rejection> {
        if !self.initialised && !matches!(command, Command::Init(_)) {
            return Err(Rejection::NotInitialised);
        }
        match command {
            Command::Init(topology) => self.check_init(topology),
            Command::AddNode(spec) => self.check_node_spec(spec),
            Command::RemoveNode { node } => self.check_remove_node(*node),
            Command::SetNodeMode { node, mode } => self.check_set_mode(*node, *mode),
            Command::Drain { node, concurrency, .. } => {
                self.node(*node)?;
                check_concurrency(*concurrency)
            }
            Command::Rebalance { concurrency } => check_concurrency(*concurrency),
            Command::RebalanceDone { seq } => match self.rebalance {
                Some(job) if job.seq == *seq => Ok(()),
                _ => Err(Rejection::OtherRebalance { seq: *seq }),
            },
            Command::EndStopDrain { node } => {
                let n = self.node(*node)?;
                if n.mode != NodeMode::Active && n.drain.is_some_and(|d| d.on_stop) {
                    Ok(())
                } else {
                    Err(Rejection::NotStopDrain { node: n.name.clone() })
                }
            }
            Command::SetVoter { node, voter } => {
                self.node(*node)?;
                if !voter {
                    self.check_not_last_voter(*node)?;
                }
                Ok(())
            }
            Command::AddStore(spec) => {
                self.check_store_spec(spec)?;
                self.check_target_mode(&spec.name, spec.slots[0].node, false)
            }
            Command::RemoveStore { store, epoch } => self.store_at(store, *epoch).map(|_| ()),
            Command::BeginSwitchover { store, epoch, to, .. } => {
                let s = self.store_at(store, *epoch)?;
                self.check_phase(s, "stable", |p| matches!(p, Phase::Stable))?;
                self.check_new_master(s, *to, false)?;
                if s.dirty.contains(to) {
                    return Err(Rejection::TargetDirty {
                        store: s.name.clone(),
                        node: self.node_name(*to),
                    });
                }
                Ok(())
            }
            Command::AdvanceSwitchover { store, epoch } => {
                let s = self.store_at(store, *epoch)?;
                self.check_phase(s, "demoting", |p| matches!(p, Phase::Demoting { .. }))?;
                // A target drained meanwhile cannot take it. A draining one
                // can: the old master of a rolled-back attempt going home,
                // or a target whose drain began meanwhile (the drain moves
                // the store on afterwards).
                if let Phase::Demoting { to, .. } = s.phase {
                    self.check_target_mode(store, to, true)?;
                }
                Ok(())
            }
            Command::CompleteSwitchover { store, epoch } => {
                let s = self.store_at(store, *epoch)?;
                self.check_phase(s, "promoting", |p| matches!(p, Phase::Promoting { .. }))
            }
            Command::RollbackSwitchover { store, epoch, .. } => {
                let s = self.store_at(store, *epoch)?;
                self.check_phase(s, "demoting or promoting", |p| !matches!(p, Phase::Stable))?;
                // Going back from Promoting makes `from` master again: it
                // must not have been drained meanwhile.
                if let Phase::Promoting { from, .. } = s.phase {
                    let node = self.node(from)?;
                    if node.mode == NodeMode::Drained {
                        return Err(Rejection::TargetUnavailable {
                            store: store.clone(),
                            node: node.name.clone(),
                            mode: node.mode,
                        });
                    }
                }
                Ok(())
            }
            Command::Failover { moves, .. } => self.check_failover(moves),
            Command::Replay { store, from, log } => {
                let s = self.store(store)?;
                let bad = |problem: &str| {
                    Err(Rejection::BadReplay {
                        store: store.clone(),
                        problem: problem.to_owned(),
                    })
                };
                if !s.dirty.contains(from) || s.master == *from {
                    return bad("the node is not a dirty replica of it");
                }
                if s.replay.is_some() {
                    return bad("a replay is already pending");
                }
                if s.replay_failed.contains(from) {
                    return bad("a replay of this node's leftovers failed before");
                }
                if log.is_empty() || log.len() > MAX_REPLAY_LOG {
                    return bad("the leftover log is empty or larger than 1 MiB");
                }
                Ok(())
            }
            Command::ReplayDone { store, from, .. } => {
                let s = self.store(store)?;
                match &s.replay {
                    Some(r) if r.from == *from => Ok(()),
                    _ => Err(Rejection::BadReplay {
                        store: store.clone(),
                        problem: format!("no replay from {} is pending", self.node_name(*from)),
                    }),
                }
            }
            Command::ClearDirty { store, node } => {
                let s = self.store(store)?;
                if s.dirty.contains(node) {
                    Ok(())
                } else {
                    Err(Rejection::NotDirty {
                        store: store.clone(),
                        node: self.node_name(*node),
                    })
                }
            }
            // The values are checked at the leader, by the rules
            // `--check-config` applies to a node's file (`slotd-core`'s
            // `timing::check`), before the command is logged.
            Command::SetTimings { replaces, .. } => {
                let actual = self.timings.map_or(0, |t| t.seq);
                match self.timings {
                    _ if *replaces != actual => Err(Rejection::TimingsChanged {
                        expected: *replaces,
                        actual,
                    }),
                    Some(t) if t.before.is_some() => Err(Rejection::TimingsSettling { seq: t.seq }),
                    _ => Ok(()),
                }
            }
            Command::SettleTimings { seq } => match self.timings {
                Some(t) if t.seq == *seq && t.before.is_some() => Ok(()),
                _ => Err(Rejection::TimingsNotSettling { seq: *seq }),
            },
        }
    }

    fn carry_out(&mut self, command: &Command, at_ms: u64) {
        match command {
            Command::Init(topology) => {
                for spec in &topology.nodes {
                    self.insert_node(spec);
                }
                for spec in &topology.stores {
                    self.insert_store(spec);
                }
                self.initialised = true;
            }
            Command::AddNode(spec) => self.insert_node(spec),
            Command::RemoveNode { node } => {
                self.nodes.remove(node);
            }
            Command::SetNodeMode { node, mode } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.mode = *mode;
                    if *mode == NodeMode::Active {
                        n.drain = None;
                    }
                }
            }
            Command::Drain {
                node,
                concurrency,
                on_stop,
            } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    // A drained node masters nothing: it stays drained.
                    if n.mode != NodeMode::Drained {
                        n.mode = NodeMode::Draining;
                    }
                    n.drain = Some(DrainJob {
                        concurrency: *concurrency,
                        on_stop: *on_stop,
                    });
                }
            }
            Command::Rebalance { concurrency } => {
                self.rebalance = Some(RebalanceJob {
                    seq: self.next_rebalance,
                    concurrency: *concurrency,
                });
                self.next_rebalance += 1;
            }
            Command::RebalanceDone { .. } => self.rebalance = None,
            Command::EndStopDrain { node } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.mode = NodeMode::Active;
                    n.drain = None;
                }
            }
            Command::SetVoter { node, voter } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.voter = *voter;
                }
            }
            Command::AddStore(spec) => self.insert_store(spec),
            Command::RemoveStore { store, .. } => {
                if let Some(s) = self.stores.remove(store) {
                    self.retired_epochs.insert(s.name, s.epoch);
                }
            }
            Command::BeginSwitchover {
                store,
                to,
                force,
                reason,
                ..
            } => {
                let since_ms = at_ms;
                if let Some(s) = self.stores.get_mut(store) {
                    // A new attempt, a new epoch: acks of an earlier attempt
                    // (rolled back, perhaps to another target) no longer match.
                    s.epoch += 1;
                    s.phase = Phase::Demoting {
                        from: s.master,
                        to: *to,
                        force: *force,
                        reason: *reason,
                        since_ms,
                        returning: false,
                    };
                }
            }
            Command::AdvanceSwitchover { store, .. } => {
                let Some(s) = self.stores.get_mut(store) else { return };
                let Phase::Demoting {
                    from,
                    to,
                    force,
                    reason,
                    since_ms,
                    returning,
                } = s.phase
                else {
                    return;
                };
                s.master = to;
                s.epoch += 1;
                // Without the flush, what the old master had not sent
                // exists only there: as after a failover.
                if force {
                    s.dirty.insert(from);
                }
                s.phase = Phase::Promoting {
                    from,
                    to,
                    force,
                    reason,
                    since_ms,
                    returning,
                };
            }
            Command::CompleteSwitchover { store, .. } => {
                let Some(s) = self.stores.get_mut(store) else { return };
                let Phase::Promoting {
                    from,
                    to,
                    force,
                    reason,
                    since_ms,
                    returning,
                } = s.phase
                else {
                    return;
                };
                s.phase = Phase::Stable;
                let epoch = s.epoch;
                let what = match (returning, force) {
                    (true, _) => "switchover back (after a rollback)",
                    (false, true) => "switchover (forced: no flush)",
                    (false, false) => "switchover",
                };
                let t = Change::new(store, from, to, epoch, reason, what.into());
                self.record(t.lasting(since_ms, at_ms), at_ms);
            }
            Command::RollbackSwitchover { store, why, .. } => {
                let Some(s) = self.stores.get_mut(store) else { return };
                let (from, to, reason, since_ms, phase) = match s.phase {
                    Phase::Stable => return,
                    // The old master is still master: it only has to start
                    // serving again, under a new epoch so that a late ack
                    // of the abandoned attempt is refused.
                    Phase::Demoting {
                        from,
                        to,
                        reason,
                        since_ms,
                        ..
                    } => {
                        s.phase = Phase::Stable;
                        (to, from, reason, since_ms, "demoting")
                    }
                    // Already going back, and failing again: both nodes
                    // failed to serve; stay (the master keeps trying)
                    // rather than bounce between them.
                    Phase::Promoting {
                        from,
                        to,
                        reason,
                        since_ms,
                        returning: true,
                        ..
                    } => {
                        s.phase = Phase::Stable;
                        (from, to, reason, since_ms, "promoting back (staying)")
                    }
                    // The master already changed, and the new one may hold
                    // the master IP: going back is a switchover the other
                    // way (it demotes and acks before the old master takes
                    // over again), under a new epoch, so nothing the aborted
                    // attempt does still counts.
                    Phase::Promoting {
                        from,
                        to,
                        reason,
                        since_ms,
                        returning: false,
                        ..
                    } => {
                        s.phase = Phase::Demoting {
                            from: to,
                            to: from,
                            force: false,
                            reason,
                            since_ms: at_ms,
                            returning: true,
                        };
                        (to, from, reason, since_ms, "promoting")
                    }
                };
                s.epoch += 1;
                let epoch = s.epoch;
                let t = Change::new(store, from, to, epoch, reason, format!("rollback while {phase}: {why}"));
                self.record(t.lasting(since_ms, at_ms), at_ms);
            }
            Command::Failover { reason, moves } => {
                for m in moves {
                    // A switchover under way ends here; say so.
                    let what = match self.stores.get(&m.store).map(|s| s.phase) {
                        Some(p @ (Phase::Demoting { to, .. } | Phase::Promoting { to, .. })) => {
                            format!("failover (ended the switchover to {} while {p})", self.node_name(to))
                        }
                        _ => "failover".to_owned(),
                    };
                    let Some(s) = self.stores.get_mut(&m.store) else {
                        continue;
                    };
                    let from = s.master;
                    // Failover skips the flush: whatever `from` had not sent
                    // yet exists only there.
                    s.dirty.insert(from);
                    s.master = m.to;
                    s.epoch += 1;
                    s.phase = Phase::Stable;
                    let epoch = s.epoch;
                    self.record(Change::new(&m.store, from, m.to, epoch, *reason, what), at_ms);
                }
            }
            Command::ClearDirty { store, node } => {
                if let Some(s) = self.stores.get_mut(store) {
                    s.dirty.remove(node);
                    s.replay_failed.remove(node);
                }
            }
            Command::SetTimings { timings, .. } => {
                self.timings = Some(match self.timings {
                    // The first write: nothing granted under cluster
                    // timings before it.
                    None => TimingsInForce {
                        seq: 1,
                        now: *timings,
                        before: None,
                    },
                    Some(t) => TimingsInForce {
                        seq: t.seq + 1,
                        now: *timings,
                        before: Some(t.now),
                    },
                });
            }
            Command::SettleTimings { .. } => {
                if let Some(t) = &mut self.timings {
                    t.before = None;
                }
            }
            Command::Replay { store, from, log } => {
                if let Some(s) = self.stores.get_mut(store) {
                    s.replay = Some(crate::state::Replay {
                        from: *from,
                        log: log.clone(),
                    });
                }
            }
            Command::ReplayDone { store, from, ok, note } => {
                let Some(s) = self.stores.get_mut(store) else { return };
                s.replay = None;
                if *ok {
                    s.dirty.remove(from);
                } else {
                    s.replay_failed.insert(*from);
                }
                let (master, epoch) = (s.master, s.epoch);
                let what = if *ok {
                    format!("replayed the leftover sync log: {note}")
                } else {
                    format!("replay of the leftover sync log failed: {note}")
                };
                self.record(Change::new(store, *from, master, epoch, Reason::Failure, what), at_ms);
            }
        }
    }

    fn record(&mut self, c: Change, at_ms: u64) {
        if self.history.len() >= HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(Transition {
            seq: self.next_transition,
            store: c.store,
            from: c.from,
            to: c.to,
            epoch: c.epoch,
            reason: c.reason,
            what: c.what,
            at_ms,
            duration_ms: c.duration_ms,
        });
        self.next_transition += 1;
    }

    fn insert_node(&mut self, spec: &NodeSpec) {
        let node = Node {
            id: spec.id,
            name: spec.name.clone(),
            addr: spec.addr.clone(),
            voter: spec.voter,
            mode: NodeMode::Active,
            slots: spec.slots.iter().map(|s| (s.clone(), Default::default())).collect(),
            drain: None,
        };
        self.nodes.insert(spec.id, node);
    }

    fn insert_store(&mut self, spec: &StoreSpec) {
        let store = Store {
            name: spec.name.clone(),
            master_ip: spec.master_ip,
            replica_ip: spec.replica_ip,
            slots: spec.slots.clone(),
            master: spec.slots[0].node,
            epoch: self.retired_epochs.get(&spec.name).map_or(1, |e| e + 1),
            phase: Phase::Stable,
            dirty: BTreeSet::new(),
            replay: None,
            replay_failed: BTreeSet::new(),
        };
        self.stores.insert(spec.name.clone(), store);
    }

    // ------------------------------------------------------------ checks

    fn node(&self, id: NodeId) -> Result<&Node, Rejection> {
        self.nodes
            .get(&id)
            .ok_or_else(|| Rejection::UnknownNode(id.to_string()))
    }

    fn store(&self, name: &str) -> Result<&Store, Rejection> {
        self.stores
            .get(name)
            .ok_or_else(|| Rejection::UnknownStore(name.to_owned()))
    }

    /// The store, if it is still at the epoch the command was decided at.
    fn store_at(&self, name: &str, epoch: u64) -> Result<&Store, Rejection> {
        let s = self.store(name)?;
        if s.epoch != epoch {
            return Err(Rejection::EpochMismatch {
                store: name.to_owned(),
                expected: epoch,
                actual: s.epoch,
            });
        }
        Ok(s)
    }

    fn check_phase(&self, s: &Store, wanted: &'static str, ok: impl Fn(&Phase) -> bool) -> Result<(), Rejection> {
        if ok(&s.phase) {
            Ok(())
        } else {
            Err(Rejection::WrongPhase {
                store: s.name.clone(),
                phase: s.phase.as_str().to_owned(),
                wanted: wanted.to_owned(),
            })
        }
    }

    /// `to` may become master of `s`: one of its slots, not already master,
    /// active (or, with `draining_ok`, not drained).
    fn check_new_master(&self, s: &Store, to: NodeId, draining_ok: bool) -> Result<(), Rejection> {
        if !s.has_node(to) {
            return Err(Rejection::NotASlotOfStore {
                store: s.name.clone(),
                node: self.node_name(to),
            });
        }
        if s.master == to {
            return Err(Rejection::AlreadyMaster {
                store: s.name.clone(),
                node: self.node_name(to),
            });
        }
        self.check_target_mode(&s.name, to, draining_ok)
    }

    fn check_target_mode(&self, store: &str, to: NodeId, draining_ok: bool) -> Result<(), Rejection> {
        let node = self.node(to)?;
        let ok = match node.mode {
            NodeMode::Active => true,
            NodeMode::Draining => draining_ok,
            NodeMode::Drained => false,
        };
        if !ok {
            return Err(Rejection::TargetUnavailable {
                store: store.to_owned(),
                node: node.name.clone(),
                mode: node.mode,
            });
        }
        Ok(())
    }

    fn check_failover(&self, moves: &[Move]) -> Result<(), Rejection> {
        if moves.is_empty() {
            return Err(Rejection::EmptyFailover);
        }
        let mut seen = BTreeSet::new();
        for m in moves {
            if !seen.insert(m.store.as_str()) {
                return Err(Rejection::DuplicateMove(m.store.clone()));
            }
            let s = self.store_at(&m.store, m.epoch)?;
            // A failover may take a draining replica when nothing better is
            // left (`decide::failover_targets`): served beats unserved.
            self.check_new_master(s, m.to, true)?;
        }
        Ok(())
    }

    fn check_init(&self, topology: &Topology) -> Result<(), Rejection> {
        if self.initialised {
            return Err(Rejection::AlreadyInitialised);
        }
        if topology.nodes.is_empty() {
            return Err(invalid("topology", "node", "at least one node is needed"));
        }
        // Check each entry against those before it, exactly as if they were
        // added one by one.
        let mut scratch = ClusterState {
            initialised: true,
            ..ClusterState::default()
        };
        for spec in &topology.nodes {
            scratch.check_node_spec(spec)?;
            scratch.insert_node(spec);
        }
        if !scratch.nodes.values().any(|n| n.voter) {
            return Err(invalid("topology", "voter", "at least one node must be a voter"));
        }
        for spec in &topology.stores {
            scratch.check_store_spec(spec)?;
            scratch.insert_store(spec);
        }
        Ok(())
    }

    fn check_node_spec(&self, spec: &NodeSpec) -> Result<(), Rejection> {
        let what = format!("node {}", spec.id);
        check_name(&what, "name", &spec.name)?;
        check_addr(&what, &spec.addr)?;
        for n in self.nodes.values() {
            let clash = if n.id == spec.id {
                Some(format!("id {}", spec.id))
            } else if n.name == spec.name {
                Some(format!("name {:?}", spec.name))
            } else if n.addr == spec.addr {
                Some(format!("address {}", spec.addr))
            } else {
                None
            };
            if let Some(existing) = clash {
                return Err(Rejection::DuplicateNode {
                    what: existing,
                    existing: format!("node {} ({})", n.id, n.name),
                });
            }
        }
        let mut slots = BTreeSet::new();
        for slot in &spec.slots {
            check_name(&what, "slots", slot)?;
            if !slots.insert(slot) {
                return Err(invalid(&what, "slots", &format!("slot {slot:?} listed twice")));
            }
        }
        Ok(())
    }

    fn check_store_spec(&self, spec: &StoreSpec) -> Result<(), Rejection> {
        let what = format!("store {:?}", spec.name);
        check_name(&what, "name", &spec.name)?;
        if self.stores.contains_key(&spec.name) {
            return Err(Rejection::DuplicateStore(spec.name.clone()));
        }
        // Deserialising checks these too, but a command built in memory (by
        // the leader, from a plan) must not be able to log an address that
        // no node could later decode.
        for (field, ip) in [("master_ip", spec.master_ip), ("replica_ip", spec.replica_ip)] {
            if let Err(e) = crate::ip::ServiceIp::new(ip.addr, ip.len) {
                return Err(invalid(&what, field, &e.to_string()));
            }
        }
        if spec.master_ip.addr == spec.replica_ip.addr {
            return Err(invalid(&what, "replica_ip", "must differ from master_ip"));
        }
        for ip in [spec.master_ip, spec.replica_ip] {
            let used = self
                .stores
                .values()
                .find(|s| s.master_ip.addr == ip.addr || s.replica_ip.addr == ip.addr);
            if let Some(other) = used {
                return Err(Rejection::DuplicateIp {
                    store: spec.name.clone(),
                    ip: ip.to_string(),
                    other: other.name.clone(),
                });
            }
        }
        if spec.slots.len() < 2 {
            return Err(invalid(
                &what,
                "slots",
                "a store needs at least two slots (a master and a replica)",
            ));
        }
        let mut nodes = BTreeSet::new();
        for slot in &spec.slots {
            let node = self.node(slot.node)?;
            if !node.slots.contains_key(&slot.slot) {
                return Err(Rejection::UnknownSlot {
                    store: spec.name.clone(),
                    node: node.name.clone(),
                    slot: slot.slot.clone(),
                });
            }
            if !nodes.insert(slot.node) {
                return Err(Rejection::SlotsShareNode {
                    store: spec.name.clone(),
                    node: node.name.clone(),
                });
            }
            if let Some(other) = self.stores.values().find(|s| s.slots.contains(slot)) {
                return Err(Rejection::SlotInUse {
                    store: spec.name.clone(),
                    node: node.name.clone(),
                    slot: slot.slot.clone(),
                    other: other.name.clone(),
                });
            }
        }
        Ok(())
    }

    fn check_remove_node(&self, id: NodeId) -> Result<(), Rejection> {
        let node = self.node(id)?;
        let stores = list(self.stores_on(id).map(|s| s.name.as_str()));
        if !stores.is_empty() {
            return Err(Rejection::NodeInUse {
                node: node.name.clone(),
                stores,
            });
        }
        self.check_not_last_voter(id)
    }

    fn check_not_last_voter(&self, id: NodeId) -> Result<(), Rejection> {
        let others = self.nodes.values().any(|n| n.voter && n.id != id);
        match self.nodes.get(&id) {
            Some(n) if n.voter && !others => Err(Rejection::LastVoter(n.name.clone())),
            _ => Ok(()),
        }
    }

    fn check_set_mode(&self, id: NodeId, mode: NodeMode) -> Result<(), Rejection> {
        let node = self.node(id)?;
        if mode == NodeMode::Drained {
            // Only a drain ends in `Drained`: an undrain that came first wins.
            if node.mode != NodeMode::Draining {
                return Err(Rejection::NotDraining {
                    node: node.name.clone(),
                    mode: node.mode,
                });
            }
            let stores = list(self.masters_of(id).map(|s| s.name.as_str()));
            if !stores.is_empty() {
                return Err(Rejection::NodeStillMaster {
                    node: node.name.clone(),
                    stores,
                });
            }
            // A rollback would make it master again.
            let stores = list(
                self.stores
                    .values()
                    .filter(|s| s.phase.switchover().is_some_and(|(f, t)| f == id || t == id))
                    .map(|s| s.name.as_str()),
            );
            if !stores.is_empty() {
                return Err(Rejection::NodeStillLeaving {
                    node: node.name.clone(),
                    stores,
                });
            }
        }
        Ok(())
    }
}

/// A history entry before it gets its number and time.
struct Change {
    store: String,
    from: NodeId,
    to: NodeId,
    epoch: u64,
    reason: Reason,
    what: String,
    duration_ms: Option<u64>,
}

impl Change {
    fn new(store: &str, from: NodeId, to: NodeId, epoch: u64, reason: Reason, what: String) -> Change {
        Change {
            store: store.to_owned(),
            from,
            to,
            epoch,
            reason,
            what,
            duration_ms: None,
        }
    }

    /// From `since_ms` to `at_ms` (both proposers' clocks: never negative).
    fn lasting(mut self, since_ms: u64, at_ms: u64) -> Change {
        self.duration_ms = Some(at_ms.saturating_sub(since_ms));
        self
    }
}

fn check_concurrency(concurrency: u32) -> Result<(), Rejection> {
    if (1..=MAX_CONCURRENCY).contains(&concurrency) {
        Ok(())
    } else {
        Err(invalid(
            "switchovers",
            "concurrency",
            &format!("{concurrency} is not from 1 to {MAX_CONCURRENCY}"),
        ))
    }
}

fn invalid(what: &str, field: &'static str, problem: &str) -> Rejection {
    Rejection::InvalidField {
        what: what.to_owned(),
        field: field.to_owned(),
        problem: problem.to_owned(),
    }
}

/// Up to five names, then a count: enough to act on, short enough for one line.
fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    let shown = names.iter().take(5).copied().collect::<Vec<_>>().join(", ");
    match names.len() {
        n if n > 5 => format!("{shown} and {} more", n - 5),
        _ => shown,
    }
}

/// Names end up in systemd unit names, paths and tables: keep them plain.
/// `None` when `name` is a valid node, slot or store name, else why not. The
/// one rule for topology files, commands and `slotd.toml`.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("must not be empty".to_owned())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!("{name:?} is longer than {MAX_NAME_LEN} characters"))
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        Some(format!("{name:?} may only hold letters, digits, '.', '_' and '-'"))
    } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
        Some(format!("{name:?} must start with a letter or digit"))
    } else {
        None
    }
}

/// `name_problem` as a rejection naming the object and field.
pub fn check_name(what: &str, field: &'static str, name: &str) -> Result<(), Rejection> {
    match name_problem(name) {
        Some(p) => Err(invalid(what, field, &p)),
        None => Ok(()),
    }
}

/// A Peer address: `host:port`, `ip:port` or `[ipv6]:port`.
pub fn check_addr(what: &str, addr: &str) -> Result<(), Rejection> {
    let bad = |p: &str| Err(invalid(what, "addr", &format!("{addr:?}: {p}")));
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad("expected host:port");
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return bad("port must be a number from 1 to 65535"),
    }
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
        });
    if host_ok {
        Ok(())
    } else {
        bad("host is neither an IP address nor a DNS name")
    }
}
