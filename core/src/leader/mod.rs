//! The leader's decisions.
//!
//! [`LeaderCore`], here: the lease ledger (who was granted what, when), the
//! fresh-leader wait, declaring nodes dead, liveness, and the rule for
//! fence notices (DESIGN "Safety", rules 1–3 and 6). No I/O and no clock:
//! time comes in as [`Mono`] values, so the agent (its granter and engine)
//! and the simulation drive the very same code. Beside it:
//! - `decide`: where a dead node's stores go, switchover targets,
//!   rebalance moves (from the state and what nodes reported);
//! - `switchover`: the switchover phase machine, drains and rebalances, and
//!   the checks of operators' commands;
//! - `conductor`: the engine's round, as the engine and the simulation run it;
//! - `standing`: when a leader its voters do not answer in time steps down.
//!
//! Grants and failovers meet here, under the one lock the agent holds the
//! core with: a node being failed over is *condemned* and gets no grant until
//! that failover is settled, so no lease (with a read index from before the
//! failover) slips in between the decision and the log entry.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use slotd_raft_store::{ClusterState, ClusterTimings, Command, NodeId, Reason, Rejection, StoreSpec, TimingsInForce};

use crate::report::{HealthReport, Replayed};
use crate::time::Mono;
use crate::timing::{Timing, TICKET_FRESH};

pub mod addresses;
pub mod conductor;
pub mod decide;
pub mod standing;
pub mod switchover;
pub mod timings;

use decide::{failover_targets, FailoverPlan, Reports};

/// The timings the leader decides with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderTiming {
    /// How long a grant lets a node act as master (`lease_ms`).
    pub lease: Duration,
    /// Added before a silent node counts as dead (`clock_skew_margin_ms`).
    pub margin: Duration,
    /// How long a fence ticket stays good (see [`LeaderCore::fenced_notice`]).
    pub ticket_fresh: Duration,
    /// While a change of the cluster's timings is not settled: the
    /// `lease + margin` of the timings before it (grants given under them
    /// may still run); zero otherwise.
    pub settling: Duration,
}

impl LeaderTiming {
    /// The leader's timings of a node's `[timing]`.
    pub fn of(t: &Timing) -> LeaderTiming {
        LeaderTiming {
            lease: t.lease(),
            margin: t.clock_skew_margin(),
            ticket_fresh: TICKET_FRESH,
            settling: Duration::ZERO,
        }
    }

    /// The timings of the cluster's state.
    pub fn in_force(t: &TimingsInForce) -> LeaderTiming {
        LeaderTiming {
            lease: Duration::from_millis(t.now.lease_ms),
            margin: Duration::from_millis(t.now.clock_skew_margin_ms),
            ticket_fresh: TICKET_FRESH,
            settling: t
                .before
                .map_or(Duration::ZERO, |b| Duration::from_millis(b.dead_after_ms())),
        }
    }

    /// A node not granted for this long has fenced itself at least `margin`
    /// ago, whichever timings it was granted under.
    pub fn dead_after(&self) -> Duration {
        (self.lease + self.margin).max(self.settling)
    }
}

/// What the leader knows of one node.
#[derive(Clone, Debug, Default)]
struct Book {
    /// When this node (as leader, in any term) last granted it a lease.
    granted_at: Option<Mono>,
    /// Its latest health report.
    report: HealthReport,
    /// The log index of the last failover away from it: its grants carry
    /// at least this read index, so it learns it lost its stores before its
    /// lease counts.
    failed_over_at: u64,
    /// Its failover is being written: no grants until it is settled.
    condemned: bool,
    /// `slotd fence` reported it empty, and the notice was accepted: dead
    /// now, no need to wait out its lease.
    fenced: bool,
}

/// A fence ticket handed out and not yet used.
#[derive(Clone, Copy, Debug)]
struct TicketOut {
    node: NodeId,
    term: u64,
    issued: Mono,
}

/// Leftover sync logs offered, by node and store.
pub type Offered = BTreeMap<NodeId, BTreeMap<String, String>>;
/// Replays run, by (master) node and store.
pub type Ran = BTreeMap<NodeId, BTreeMap<String, Replayed>>;

/// A grant's numbers, for the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The read index to send: at least the last failover away from the node.
    pub read_index: u64,
    /// This grant's number.
    pub seq: u64,
    /// The report acks a switchover phase it did not before: the engine
    /// should write the next step now.
    pub acks: bool,
}

/// What the failure detector decided at one tick.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Nodes declared dead (condemned until `failed_over` or `pardon`).
    pub dead: BTreeSet<NodeId>,
    /// Where their stores go, and which cannot go anywhere.
    pub plan: FailoverPlan,
}

impl Decision {
    /// The log entry that carries the decision out: one `Failover` moving
    /// every store that can go (none when none can).
    pub fn command(&self) -> Option<Command> {
        (!self.plan.moves.is_empty()).then(|| Command::Failover {
            reason: Reason::Failure,
            moves: self.plan.moves.clone(),
        })
    }
}

/// The leader side of leases and failure detection.
#[derive(Clone, Debug)]
pub struct LeaderCore {
    me: NodeId,
    timing: LeaderTiming,
    /// The term this node leads and when it first saw itself leading it.
    leading: Option<(u64, Mono)>,
    books: BTreeMap<NodeId, Book>,
    /// Fence tickets handed out, by id.
    tickets: BTreeMap<u64, TicketOut>,
    /// Numbers grants (unique within this process).
    next_seq: u64,
    /// Addresses freed by removed stores, not to be given out yet.
    addresses: addresses::Addresses,
    /// The cluster's timings as this leader follows them (`timings`).
    timings: timings::Follow,
}

impl LeaderCore {
    pub fn new(me: NodeId, timing: LeaderTiming) -> LeaderCore {
        LeaderCore {
            me,
            timing,
            leading: None,
            books: BTreeMap::new(),
            tickets: BTreeMap::new(),
            next_seq: 0,
            addresses: addresses::Addresses::default(),
            timings: timings::Follow::default(),
        }
    }

    /// A leader that finds no cluster timings in the state writes `file`
    /// (its own `[timing]`): `init`, or a cluster from before them.
    pub fn writes_first_timings(mut self, file: ClusterTimings) -> LeaderCore {
        self.timings.first = Some(file);
        self
    }

    /// Takes the timings of `state` (each tick): the leases it grants and
    /// waits out are the cluster's from then on.
    pub fn see_timings(&mut self, state: &ClusterState, now: Mono) {
        if let Some(t) = &state.timings {
            self.timing = LeaderTiming {
                ticket_fresh: self.timing.ticket_fresh,
                ..LeaderTiming::in_force(t)
            };
        }
        self.timings.see(state, now);
    }

    /// What to log about the cluster's timings now, if anything: the first
    /// write, or the settling of a change (see `timings`).
    pub fn timings_command(&self, state: &ClusterState, now: Mono) -> Option<Command> {
        let acked = |node: NodeId| {
            // A node not granted within `lease + margin` holds no lease (nor
            // one that never renewed with this leader, once its wait is
            // over: see below): it does not hold the change up (its own
            // keeper caps what it acts on by the timings it applied).
            self.books.get(&node).is_none_or(|b| {
                let live = b.granted_at.is_some_and(|g| now.since(g) <= self.timing.dead_after());
                !live || b.report.timings_seq >= state.timings.map_or(0, |t| t.seq)
            })
        };
        // Settling needs this leadership's own wait over (leases an older
        // leader granted run out by then), and every live node to have
        // renewed with it.
        let settled = self.settled(now);
        self.timings
            .command(state, now, acked)
            .filter(|c| settled || !matches!(c, Command::SettleTimings { .. }))
    }

    pub fn timing(&self) -> LeaderTiming {
        self.timing
    }

    /// What Raft says now: `Some(term)` while this node leads that term.
    /// A new term is a new leadership, even on the same node: it starts its
    /// fresh-leader wait, and forgets fence notices and pending verdicts of
    /// the old one (they were judged against that term's grants). Returns
    /// true when a leadership begins.
    pub fn observe(&mut self, leading: Option<u64>, now: Mono) -> bool {
        let current = self.leading.map(|(t, _)| t);
        if current == leading {
            return false;
        }
        // A term read before a newer one was seen: stale, not a leadership.
        if let (Some(old), Some(new)) = (current, leading) {
            if new < old {
                return false;
            }
        }
        for book in self.books.values_mut() {
            book.fenced = false;
            book.condemned = false;
        }
        self.tickets.clear();
        self.addresses.forget();
        // A change seen applied in an earlier leadership: its wait counts
        // again from this one (a leader in between may have granted under
        // the old timings).
        self.timings.forget();
        self.leading = leading.map(|t| (t, now));
        leading.is_some()
    }

    /// Looks at the addresses `state`'s stores use (every tick, and before
    /// checking a new store): those gone since the last look were freed now.
    pub fn see_addresses(&mut self, state: &ClusterState, now: Mono) {
        self.addresses.see(state, now, self.timing.dead_after());
    }

    /// Whether a new store may have `spec`'s addresses at `now`: not one in
    /// use, nor one freed less than `lease + margin` ago (see `addresses`).
    pub fn may_use_addresses(&mut self, state: &ClusterState, spec: &StoreSpec, now: Mono) -> Result<(), Rejection> {
        self.see_addresses(state, now);
        self.addresses.may_use(state, spec, now, self.timing.dead_after())
    }

    /// The term led now, if any.
    pub fn term(&self) -> Option<u64> {
        self.leading.map(|(t, _)| t)
    }

    /// Whether failovers of silent nodes may be decided at `now`: not within
    /// `lease + margin` of this leadership's start, since an older leader may
    /// have granted leases this one does not know of (rule 3).
    pub fn settled(&self, now: Mono) -> bool {
        self.leading
            .is_some_and(|(_, since)| now.since(since) >= self.timing.dead_after())
    }

    /// Records a lease granted to `node` after a quorum round that
    /// started when its renewal (sent before) had arrived; `at` is when the
    /// round ended. `None` while the node is condemned.
    pub fn grant(&mut self, node: NodeId, at: Mono, report: HealthReport, read_index: u64) -> Option<Grant> {
        let book = self.books.entry(node).or_default();
        if book.condemned {
            return None;
        }
        self.next_seq += 1;
        book.granted_at = Some(at);
        let acks = report.done.iter().any(|(s, e)| book.report.done.get(s) != Some(e));
        book.report = report;
        Some(Grant {
            read_index: read_index.max(book.failed_over_at),
            seq: self.next_seq,
            acks,
        })
    }

    /// `slotd fence` on `node` asks for a ticket (DESIGN rule 6): it will
    /// present it with its notice, which counts only while the ticket is
    /// fresh. `id` is random, from the caller (the core draws nothing).
    pub fn issue_ticket(&mut self, node: NodeId, id: u64, now: Mono) -> bool {
        let Some((term, _)) = self.leading else {
            return false;
        };
        let fresh = self.timing.ticket_fresh;
        self.tickets.retain(|_, t| now.since(t.issued) <= fresh);
        self.tickets.insert(
            id,
            TicketOut {
                node,
                term,
                issued: now,
            },
        );
        true
    }

    /// `slotd fence` on `node`, holding the agent's lock (no agent process
    /// runs there), released every address and instance, and says so with
    /// ticket `id`. Accepted — the node is dead at once, whatever the
    /// fresh-leader wait — only with a ticket this leadership issued to that
    /// node less than `ticket_fresh` ago, and only if this leader granted
    /// the node nothing since it issued the ticket (DESIGN rule 6: "no newer
    /// lease"). `slotd fence` waits out a fresh ticket before it exits
    /// without an answer, and the next agent starts only after it exits; and
    /// should it be killed meanwhile, a new agent's grant here voids the
    /// notice. So no process of the node can hold a lease when the notice
    /// is accepted. From then on the node is condemned (no grant here), and
    /// later leaders' grants carry a read index past the failover.
    pub fn fenced_notice(&mut self, node: NodeId, id: u64, now: Mono) -> bool {
        let Some((term, _)) = self.leading else {
            return false;
        };
        let fresh = self.timing.ticket_fresh;
        let granted_at = self.books.get(&node).and_then(|b| b.granted_at);
        let ok = self.tickets.remove(&id).is_some_and(|t| {
            t.node == node && t.term == term && now.since(t.issued) <= fresh && granted_at.is_none_or(|g| g < t.issued)
        });
        if ok {
            let book = self.books.entry(node).or_default();
            book.fenced = true;
            book.condemned = true;
        }
        ok
    }

    /// The failure detector at `now`: the nodes of `state` that are dead —
    /// fenced, or (once this leadership is settled) not granted a lease for
    /// `lease + margin` — condemned, and where their stores go. Settle with
    /// [`LeaderCore::failed_over`] or [`LeaderCore::pardon`].
    pub fn decide(&mut self, state: &ClusterState, now: Mono) -> Decision {
        if self.leading.is_none() {
            return Decision::default();
        }
        let settled = self.settled(now);
        let dead: BTreeSet<NodeId> = state
            .nodes
            .keys()
            .copied()
            .filter(|n| *n != self.me)
            .filter(|n| self.books.get(n).is_some_and(|b| b.fenced) || (settled && !self.granted_within(*n, now)))
            .collect();
        if dead.is_empty() {
            return Decision::default();
        }
        for n in &dead {
            self.books.entry(*n).or_default().condemned = true;
        }
        let mut plan = failover_targets(state, &dead, &self.backlog(state));
        let mut deferred = false;
        if !settled {
            // Before this leadership settled, a silent node cannot be told
            // from a live one: move a fenced node's stores only to nodes it
            // has heard from since it began; the others wait for the next
            // tick (renewals come at once to a new leader).
            let since = self.leading.map(|(_, since)| since);
            let heard = |n: NodeId| {
                self.books
                    .get(&n)
                    .and_then(|b| b.granted_at)
                    .zip(since)
                    .is_some_and(|(t, s)| t >= s)
            };
            let before = plan.moves.len();
            plan.moves.retain(|m| heard(m.to));
            deferred = plan.moves.len() < before;
        }
        if plan.moves.is_empty() && !deferred {
            self.pardon(&dead);
        }
        Decision { dead, plan }
    }

    /// When the next node could be found dead if nothing changes (its last
    /// grant plus `lease + margin`, but not before this leadership settled):
    /// the engine wakes then, rather than up to a tick later.
    pub fn next_decision(&self) -> Option<Mono> {
        let (_, since) = self.leading?;
        let dead_after = self.timing.dead_after();
        let settle = since + dead_after;
        self.books
            .values()
            .filter_map(|b| b.granted_at)
            .map(|t| (t + dead_after).max(settle) + Duration::from_millis(1))
            .min()
    }

    /// Condemns `node` if it is down now (no grants until `failed_over` or
    /// `pardon`): for a failover decided outside `decide` (an operator's
    /// forced failover of a down master). False if it is not down (any
    /// more): then nothing may be failed over.
    pub fn condemn_if_down(&mut self, node: NodeId, now: Mono) -> bool {
        if !self.down(node, now) {
            return false;
        }
        self.books.entry(node).or_default().condemned = true;
        true
    }

    /// The failover of `nodes` is in the log at `index`.
    pub fn failed_over(&mut self, nodes: &BTreeSet<NodeId>, index: u64) {
        for n in nodes {
            let book = self.books.entry(*n).or_default();
            book.condemned = false;
            book.fenced = false;
            book.failed_over_at = book.failed_over_at.max(index);
        }
    }

    /// The failover of `nodes` was written at `index` (`Some`), or could
    /// not be (`None`: refused, or leadership lost): settles their
    /// condemnation either way (`failed_over` or `pardon`).
    pub fn settle(&mut self, nodes: &BTreeSet<NodeId>, written: Option<u64>) {
        match written {
            Some(index) => self.failed_over(nodes, index),
            None => self.pardon(nodes),
        }
    }

    /// No failover was written for `nodes` after all.
    pub fn pardon(&mut self, nodes: &BTreeSet<NodeId>) {
        for n in nodes {
            if let Some(book) = self.books.get_mut(n) {
                book.condemned = false;
                book.fenced = false;
            }
        }
    }

    /// Whether `node` counts as alive: this node itself, or (while leading)
    /// a node granted a lease within `lease + margin`. Only a leader grants,
    /// so only a leader knows.
    pub fn alive(&self, node: NodeId, now: Mono) -> bool {
        node == self.me || (self.leading.is_some() && self.granted_within(node, now))
    }

    /// Whether `node` counts as down for switchovers: it fenced, or this
    /// leadership has settled and granted it nothing within `lease +
    /// margin`. A fresh leader counts nobody down for silence alone: it has
    /// not heard anyone yet, and must not roll back or refuse switchovers
    /// for that.
    pub fn down(&self, node: NodeId, now: Mono) -> bool {
        if node == self.me || self.leading.is_none() {
            return false;
        }
        self.books.get(&node).is_some_and(|b| b.fenced) || (self.settled(now) && !self.granted_within(node, now))
    }

    /// Leftover sync logs each node offers for a replay, and the replays
    /// each node ran as master.
    pub fn leftovers(&self) -> (Offered, Ran) {
        let mut offered = BTreeMap::new();
        let mut ran = BTreeMap::new();
        for (n, b) in &self.books {
            if !b.report.leftovers.is_empty() {
                offered.insert(*n, b.report.leftovers.clone());
            }
            if !b.report.replayed.is_empty() {
                ran.insert(*n, b.report.replayed.clone());
            }
        }
        (offered, ran)
    }

    /// Stores each node reported it settled its leftovers of.
    pub fn clean(&self) -> BTreeMap<NodeId, BTreeMap<String, u64>> {
        self.books
            .iter()
            .filter(|(_, b)| !b.report.clean.is_empty())
            .map(|(n, b)| (*n, b.report.clean.clone()))
            .collect()
    }

    /// Phases each node acked in its latest report.
    pub fn acks(&self) -> BTreeMap<NodeId, BTreeMap<String, u64>> {
        self.books
            .iter()
            .filter(|(_, b)| !b.report.done.is_empty())
            .map(|(n, b)| (*n, b.report.done.clone()))
            .collect()
    }

    /// Whether this node granted `node` a lease within `lease + margin` of
    /// `now` (if not, that node has fenced itself at least `margin` ago).
    fn granted_within(&self, node: NodeId, now: Mono) -> bool {
        self.granted_at(node)
            .is_some_and(|t| now.since(t) <= self.timing.dead_after())
    }

    /// When `node` was last granted a lease by this node.
    pub fn granted_at(&self, node: NodeId) -> Option<Mono> {
        self.books.get(&node).and_then(|b| b.granted_at)
    }

    /// The latest report of every node granted a lease.
    pub fn reports(&self) -> BTreeMap<NodeId, HealthReport> {
        self.books
            .iter()
            .filter(|(_, b)| b.granted_at.is_some())
            .map(|(n, b)| (*n, b.report.clone()))
            .collect()
    }

    /// Replication backlogs as the decision code wants them: a master's
    /// backlog concerns its replicas (with one replica per store, whoever is
    /// not master).
    pub fn backlog(&self, state: &ClusterState) -> Reports {
        let mut r = Reports::default();
        for (node, book) in &self.books {
            for (slot, why) in &book.report.failing {
                let store = state
                    .stores
                    .values()
                    .find(|s| s.slot_on(*node).is_some_and(|x| &x.slot == slot));
                if let Some(s) = store {
                    r.failing.insert((s.name.clone(), *node), why.clone());
                }
            }
            for (store, bytes) in &book.report.backlog {
                if let Some(s) = state.stores.get(store) {
                    for n in s.replicas() {
                        r.backlog.insert((store.clone(), n), *bytes);
                    }
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests;
