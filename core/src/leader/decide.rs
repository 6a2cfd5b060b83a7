//! Pure decisions the leader makes from the cluster state and what nodes
//! last reported: where each of a dead node's stores goes, and which
//! masters a rebalance moves. No I/O, no clock: the same inputs always give
//! the same answer, which is what makes them testable as tables.

use std::collections::{BTreeMap, BTreeSet};

use slotd_raft_store::{ClusterState, Move, NodeId, NodeMode, Phase, Rejection, Store};

/// What the leader last heard from nodes, as far as decisions need it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reports {
    /// Bytes a store's master had not yet sent to a replica, by (store,
    /// replica node), as last reported by the master. Missing = unknown.
    pub backlog: BTreeMap<(String, NodeId), u64>,
    /// Slots whose instance failed to start, by (store, node), with why:
    /// such a node gets the store's master only when nothing else is left
    /// (failover), never by a switchover.
    pub failing: BTreeMap<(String, NodeId), String>,
}

impl Reports {
    /// Why `node`'s instance of `store` is failing, if it is.
    pub fn failing(&self, store: &str, node: NodeId) -> Option<&str> {
        self.failing.get(&(store.to_owned(), node)).map(String::as_str)
    }

    pub fn backlog(&self, store: &str, node: NodeId) -> Option<u64> {
        self.backlog.get(&(store.to_owned(), node)).copied()
    }
}

/// The failover of a set of dead nodes: moves for one log entry, and the
/// stores that have nowhere to go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailoverPlan {
    pub moves: Vec<Move>,
    pub stranded: Vec<Stranded>,
}

/// A store whose master is dead and that has no live, active replica. It is
/// reported, not flapped: it stays where it is until something changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stranded {
    pub store: String,
    pub why: String,
}

/// Chooses, for every store mastered by a node in `dead`, the best live
/// replica: not drained, not dirty for the store, active rather than
/// draining, with the fewest masters now (counting this plan's earlier
/// moves), the smallest last reported backlog, then slot order. A dirty or a
/// draining replica is taken only when nothing better is left: serving
/// (possibly stale) mail beats serving none, and a drain moves the store on
/// again once it can.
pub fn failover_targets(state: &ClusterState, dead: &BTreeSet<NodeId>, reports: &Reports) -> FailoverPlan {
    let mut counts = state.master_counts();
    let mut plan = FailoverPlan::default();
    for store in state.stores.values().filter(|s| dead.contains(&s.master)) {
        let best = store
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.node != store.master && !dead.contains(&slot.node))
            .filter(|(_, slot)| state.nodes.get(&slot.node).is_some_and(|n| n.mode != NodeMode::Drained))
            .min_by_key(|(pos, slot)| {
                (
                    store.dirty.contains(&slot.node),
                    reports.failing(&store.name, slot.node).is_some(),
                    state
                        .nodes
                        .get(&slot.node)
                        .is_some_and(|n| n.mode == NodeMode::Draining),
                    counts.get(&slot.node).copied().unwrap_or(0),
                    reports.backlog(&store.name, slot.node).unwrap_or(u64::MAX),
                    *pos,
                )
            })
            .map(|(_, slot)| slot.node);
        match best {
            Some(to) => {
                *counts.entry(to).or_default() += 1;
                plan.moves.push(Move {
                    store: store.name.clone(),
                    epoch: store.epoch,
                    to,
                });
            }
            None => plan.stranded.push(Stranded {
                store: store.name.clone(),
                why: why_stranded(state, store, dead),
            }),
        }
    }
    plan
}

fn why_stranded(state: &ClusterState, store: &Store, dead: &BTreeSet<NodeId>) -> String {
    let replicas: Vec<String> = store
        .replicas()
        .map(|n| {
            let name = state.node_name(n);
            match state.nodes.get(&n) {
                _ if dead.contains(&n) => format!("{name} dead"),
                Some(node) => format!("{name} {}", node.mode),
                None => format!("{name} unknown"),
            }
        })
        .collect();
    format!("no live active replica ({})", replicas.join(", "))
}

/// Knobs of `rebalance_moves`.
#[derive(Clone, Debug)]
pub struct RebalanceOptions {
    /// A replica further behind than this (bytes of its master's backlog) is
    /// lagging and never gets the master. Unknown backlog counts as lagging.
    pub max_backlog_bytes: u64,
}

impl Default for RebalanceOptions {
    fn default() -> Self {
        // A switchover flushes before promoting, so a little backlog only
        // lengthens the demote phase; a lot means a replica still catching
        // up after a return, which must not take the master yet.
        RebalanceOptions {
            max_backlog_bytes: 1 << 20,
        }
    }
}

/// Masters to move (each by a controlled switchover) toward each store's
/// preferred master and an even count per node.
///
/// Only stores in `Stable` phase whose master is live move, only to a live,
/// active, caught-up replica that is not dirty for the store. Every move
/// strictly lowers (sum of squared master counts, stores off their preferred
/// node), so the plan is finite and applying it and planning again gives no
/// further moves: rebalance never flaps.
pub fn rebalance_moves(
    state: &ClusterState,
    live: &BTreeSet<NodeId>,
    reports: &Reports,
    options: &RebalanceOptions,
) -> Vec<Move> {
    let mut counts = state.master_counts();
    let mut master: BTreeMap<&str, NodeId> = BTreeMap::new();
    let movable: Vec<&Store> = state
        .stores
        .values()
        .filter(|s| s.phase == Phase::Stable && live.contains(&s.master))
        .collect();
    for s in &movable {
        master.insert(&s.name, s.master);
    }
    let eligible = |s: &Store, to: NodeId| {
        // Back where it is now: no switchover at all, always fine.
        if to == s.master {
            return true;
        }
        live.contains(&to)
            && s.has_node(to)
            && !s.dirty.contains(&to)
            && state.nodes.get(&to).is_some_and(|n| n.mode == NodeMode::Active)
            && reports
                .backlog(&s.name, to)
                .is_some_and(|b| b <= options.max_backlog_bytes)
    };
    let count = |counts: &BTreeMap<NodeId, usize>, n: NodeId| counts.get(&n).copied().unwrap_or(0);

    // Each iteration makes one move; the potential argument bounds them, the
    // explicit bound is a guard against a mistake in that argument.
    let bound = movable.len() * (state.nodes.len() + 1) + 1;
    // The order stores were first chosen in: a rebalance begins its moves
    // in this order, and every prefix of it lowers the imbalance.
    let mut chosen_order: Vec<String> = Vec::new();
    for _ in 0..bound {
        let mut chosen: Option<(&str, NodeId, NodeId)> = None;
        // (P) back to the preferred node, if that does not raise imbalance.
        for s in &movable {
            let from = master[s.name.as_str()];
            let p = s.preferred();
            if from != p && eligible(s, p) && count(&counts, p) < count(&counts, from) {
                chosen = Some((&s.name, from, p));
                break;
            }
        }
        // (E) from the most loaded node to the least loaded eligible replica,
        // if that narrows the gap; stores off their preferred node go first.
        if chosen.is_none() {
            let mut by_load: Vec<(usize, NodeId)> = counts.iter().map(|(n, c)| (*c, *n)).collect();
            by_load.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            'heavy: for (load, from) in by_load {
                let mut candidates: Vec<&&Store> = movable.iter().filter(|s| master[s.name.as_str()] == from).collect();
                candidates.sort_by_key(|s| (s.preferred() == from, s.name.as_str()));
                for s in candidates {
                    let best = s
                        .nodes()
                        .filter(|t| *t != from && eligible(s, *t) && count(&counts, *t) + 2 <= load)
                        .min_by_key(|t| (count(&counts, *t), *t));
                    if let Some(to) = best {
                        chosen = Some((&s.name, from, to));
                        break 'heavy;
                    }
                }
            }
        }
        let Some((name, from, to)) = chosen else { break };
        if !chosen_order.iter().any(|n| n == name) {
            chosen_order.push(name.to_owned());
        }
        *counts.entry(from).or_default() -= 1;
        *counts.entry(to).or_default() += 1;
        master.insert(name, to);
    }

    chosen_order
        .iter()
        .filter_map(|name| movable.iter().find(|s| s.name == *name))
        .filter(|s| master[s.name.as_str()] != s.master)
        .map(|s| Move {
            store: s.name.clone(),
            epoch: s.epoch,
            to: master[s.name.as_str()],
        })
        .collect()
}

/// Masters per node once every switchover under way has finished (a store
/// still demoting counts at its target): what a new switchover adds to.
pub fn projected_counts(state: &ClusterState) -> BTreeMap<NodeId, usize> {
    let mut counts: BTreeMap<NodeId, usize> = state.nodes.keys().map(|id| (*id, 0)).collect();
    for s in state.stores.values() {
        let at = match s.phase {
            Phase::Demoting { to, .. } => to,
            _ => s.master,
        };
        *counts.entry(at).or_default() += 1;
    }
    counts
}

/// Whether replica `to` of `store` may take the master by a switchover now:
/// live, active, not dirty for it, and (unless `max_backlog` is `None`, a
/// forced switchover) caught up within `max_backlog` bytes.
pub fn check_switchover_target(
    state: &ClusterState,
    store: &Store,
    to: NodeId,
    live: &BTreeSet<NodeId>,
    reports: &Reports,
    max_backlog: Option<u64>,
) -> Result<(), Rejection> {
    let name = state.node_name(to);
    let Some(node) = state.nodes.get(&to) else {
        return Err(Rejection::UnknownNode(name));
    };
    if !store.has_node(to) {
        return Err(Rejection::NotASlotOfStore {
            store: store.name.clone(),
            node: name,
        });
    }
    if store.master == to {
        return Err(Rejection::AlreadyMaster {
            store: store.name.clone(),
            node: name,
        });
    }
    if !live.contains(&to) {
        return Err(Rejection::NodeDown {
            store: store.name.clone(),
            node: name,
        });
    }
    if node.mode != NodeMode::Active {
        return Err(Rejection::TargetUnavailable {
            store: store.name.clone(),
            node: name,
            mode: node.mode,
        });
    }
    if store.dirty.contains(&to) {
        return Err(Rejection::TargetDirty {
            store: store.name.clone(),
            node: name,
        });
    }
    if let Some(why) = reports.failing(&store.name, to) {
        return Err(Rejection::TargetFailing {
            store: store.name.clone(),
            node: name,
            why: why.to_owned(),
        });
    }
    if let Some(bound) = max_backlog {
        let backlog = reports.backlog(&store.name, to);
        if backlog.is_none_or(|b| b > bound) {
            return Err(Rejection::ReplicaLagging {
                store: store.name.clone(),
                node: name,
                lag: backlog.map_or_else(
                    || "by an unknown amount (no report from its master)".to_owned(),
                    |b| format!("{b} bytes"),
                ),
                bound,
            });
        }
    }
    Ok(())
}

/// The replica a switchover of `store` should go to: among those
/// `check_switchover_target` allows, the one with the fewest masters once
/// the switchovers under way are done, then the smallest backlog, then slot
/// order. The error says why none can (the first replica's reason when
/// there is one replica).
pub fn switchover_target(
    state: &ClusterState,
    store: &Store,
    live: &BTreeSet<NodeId>,
    reports: &Reports,
    max_backlog: Option<u64>,
) -> Result<NodeId, Rejection> {
    let counts = projected_counts(state);
    let mut why = Vec::new();
    let mut best: Option<((usize, u64, usize), NodeId)> = None;
    for (pos, to) in store.nodes().enumerate().filter(|(_, n)| *n != store.master) {
        match check_switchover_target(state, store, to, live, reports, max_backlog) {
            Ok(()) => {
                let key = (
                    counts.get(&to).copied().unwrap_or(0),
                    reports.backlog(&store.name, to).unwrap_or(u64::MAX),
                    pos,
                );
                if best.as_ref().is_none_or(|(k, _)| key < *k) {
                    best = Some((key, to));
                }
            }
            Err(e) => why.push(e),
        }
    }
    match (best, why.len()) {
        (Some((_, to)), _) => Ok(to),
        (None, 1) => Err(why.remove(0)),
        (None, _) => Err(Rejection::NoTarget {
            store: store.name.clone(),
            why: why.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        }),
    }
}
