//! A reconciler pass in time, shaped as the agent's reconciler pass runs it: the
//! agent's `plan_pass` arranges `reconcile`'s actions (giving up, store by
//! store side by side; the probes of all master IPs at once; then taking,
//! store by store side by side, each store's steps in order), and here each
//! step takes the time it takes on a machine. Before each taking step the
//! pass checks, as the reconciler does, that the log has not moved on, and before a
//! master bind or start that the lease (as it stands then) has room left.
//!
//! A step may fail (a switchover attempt whose flush wedges, or whose new
//! master will not start, see `world`): it takes its time and changes
//! nothing more; as in the reconciler, a failed taking step ends its store's
//! chain, a failed giving up does not (the address must still go).
//!
//! A demote (stop, flush) runs on a task of its own, as in the reconciler: the
//! pass hands it to the node (`Host::detach`), which finishes it later and
//! passes again; meanwhile `reconcile` sees its slot busy.
//!
//! With `Variant::old_reconciler`, the pass of before: taking steps one
//! store after another, each announcement in full (three rounds 100 ms
//! apart) inside the pass.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use slotd_core::node::reconcile::{may_bind_master, may_start_master, plan_pass, Action, PassPlan};
use slotd_raft_store::ClusterState;

use super::timing::*;

/// Where one store's steps stand.
#[derive(Clone, Debug)]
struct Chain {
    steps: Vec<Action>,
    next: usize,
    /// The step in flight, when it completes (true ms), and whether it
    /// fails then.
    in_flight: Option<(Action, f64, bool)>,
    /// When the last step completed.
    last_end: f64,
    /// When the chain ended (all done, or a step could not start).
    finished: Option<f64>,
}

impl Chain {
    fn new(steps: Vec<Action>) -> Chain {
        Chain {
            steps,
            next: 0,
            in_flight: None,
            last_end: f64::NEG_INFINITY,
            finished: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Stage {
    GiveUp,
    /// Probing until this true time.
    Probe(f64),
    Take,
    Done,
}

/// What a step needs to know about the node, and does to its machine.
pub trait Host {
    /// What is left of the lease, as it stands now.
    fn lease_left(&self) -> Duration;
    /// Whether the node has applied more than when the pass began.
    fn log_moved(&self, since: usize) -> bool;
    /// Whether another machine holds `ip` now (an RFC 5227 probe's answer).
    fn someone_else_holds(&self, ip: IpAddr) -> bool;
    /// A step begins, to end at `end` (true ms), failing then if `fails`
    /// (a demote stops client services at once).
    fn begin(&mut self, action: &Action, end: f64, fails: bool);
    /// A demote goes on on a task of its own (as the reconciler runs it): the
    /// node finishes it at `end`, failing then if `fails`.
    fn detach(&mut self, action: &Action, end: f64, fails: bool);
    /// Carries out a completed step on the machine.
    fn apply(&mut self, action: &Action);
    /// Whether step `a` fails (its switchover attempt is broken here).
    fn fails(&self, a: &Action) -> bool;
    /// How long starting a Cyrus instance takes here.
    fn cyrus_start(&self) -> f64;
    /// How long a demote may take before it fails (`demote_timeout`).
    fn demote_timeout(&self) -> f64;
}

/// One pass in flight.
#[derive(Clone, Debug)]
pub struct Pass {
    /// The lease validity the pass was planned with.
    pub lease_valid: bool,
    /// The node's applied count when it began.
    pub applied: usize,
    /// The lease end (true ms) read when it began: only the old
    /// reconciler cuts a pass on it.
    pub lease_end_at_start: f64,
    old: bool,
    probe_ms: f64,
    stage: Stage,
    give_up: Vec<Chain>,
    take: Vec<Chain>,
    probe: Vec<IpAddr>,
    answers: BTreeMap<IpAddr, bool>,
    /// When the current stage began (true ms).
    clock: f64,
    /// How many actions the pass planned.
    pub actions: usize,
}

impl Pass {
    /// Arranges `actions` (the agent's `reconcile` output) with the agent's
    /// `plan_pass`, starting at true time `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        state: &ClusterState,
        actions: Vec<Action>,
        lease_valid: bool,
        applied: usize,
        lease_end: f64,
        now: f64,
        probe_ms: f64,
        old: bool,
    ) -> Pass {
        let n = actions.len();
        let PassPlan { give_up, probe, take } = plan_pass(state, actions);
        Pass {
            lease_valid,
            applied,
            lease_end_at_start: lease_end,
            old,
            probe_ms,
            stage: Stage::GiveUp,
            give_up: give_up.into_iter().map(Chain::new).collect(),
            take: take.into_iter().map(Chain::new).collect(),
            probe,
            answers: BTreeMap::new(),
            clock: now,
            actions: n,
        }
    }

    pub fn done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Advances the pass to true time `now`.
    pub fn advance(&mut self, now: f64, host: &mut impl Host) {
        loop {
            match self.stage {
                Stage::GiveUp => {
                    let mut chains = std::mem::take(&mut self.give_up);
                    let r = run_chains(&mut chains, self.clock, now, false, self, host);
                    self.give_up = chains;
                    let Some(t) = r else { return };
                    self.clock = t;
                    self.stage = if self.probe.is_empty() {
                        Stage::Take
                    } else {
                        Stage::Probe(t + self.probe_ms)
                    };
                }
                Stage::Probe(until) => {
                    if now < until {
                        return;
                    }
                    for ip in &self.probe {
                        self.answers.insert(*ip, host.someone_else_holds(*ip));
                    }
                    self.clock = until;
                    self.stage = Stage::Take;
                }
                Stage::Take => {
                    let mut chains = std::mem::take(&mut self.take);
                    let r = run_chains(&mut chains, self.clock, now, self.old, self, host);
                    self.take = chains;
                    if r.is_none() {
                        return;
                    }
                    self.stage = Stage::Done;
                }
                Stage::Done => return,
            }
        }
    }

    fn duration(&self, a: &Action, fails: bool, host: &impl Host) -> f64 {
        match a {
            // A wedged flush: the action gives up at its timeout.
            Action::Demote { .. } if fails => host.demote_timeout(),
            Action::Release { .. } | Action::Bind { .. } | Action::Replay { .. } => CHANGE,
            Action::Stop { .. } | Action::Demote { .. } => STOP,
            Action::Announce { .. } if self.old => {
                ANNOUNCE_ROUNDS as f64 * ANNOUNCE_ROUND + (ANNOUNCE_ROUNDS - 1) as f64 * ANNOUNCE_INTERVAL
            }
            Action::Announce { .. } => ANNOUNCE_ROUND,
            Action::StartMaster { .. } | Action::StartReplica { .. } => host.cyrus_start(),
        }
    }

    /// Whether step `a` may start now (the checks the reconciler makes).
    fn may_start(&self, a: &Action, host: &impl Host) -> bool {
        if a.is_give_up() {
            return true;
        }
        if host.log_moved(self.applied) {
            return false;
        }
        match a {
            Action::Bind { ip, .. } => match self.answers.get(&ip.addr) {
                // A master IP: nobody else may answer, and the lease must
                // have room for the bind.
                Some(other) => may_bind_master(other.then(|| "another machine".to_owned()), host.lease_left()).is_ok(),
                None => true,
            },
            Action::StartMaster { .. } => may_start_master(host.lease_left()).is_ok(),
            _ => true,
        }
    }
}

/// Runs `chains` up to `now`, side by side from `start` (or one after
/// another when `sequential`). When all are over: when the last ended.
fn run_chains(
    chains: &mut [Chain],
    start: f64,
    now: f64,
    sequential: bool,
    pass: &Pass,
    host: &mut impl Host,
) -> Option<f64> {
    let (mut prev, mut end, mut all) = (start, start, true);
    for c in chains.iter_mut() {
        let from = if sequential { prev } else { start };
        match run_chain(c, from, now, pass, host) {
            Some(t) => {
                prev = t;
                end = end.max(t);
            }
            None if sequential => return None,
            None => all = false,
        }
    }
    all.then_some(end)
}

/// Runs one chain, allowed to start at `from`, up to `now`; when over:
/// when it ended.
fn run_chain(c: &mut Chain, from: f64, now: f64, pass: &Pass, host: &mut impl Host) -> Option<f64> {
    if let Some(t) = c.finished {
        return Some(t);
    }
    loop {
        let mut at = from.max(c.last_end);
        if let Some((a, end, fails)) = c.in_flight.take() {
            if end > now {
                c.in_flight = Some((a, end, fails));
                return None;
            }
            c.last_end = end;
            at = from.max(end);
            if fails {
                // A failed taking step ends the store's chain.
                if !a.is_give_up() {
                    c.next = c.steps.len();
                    c.finished = Some(at);
                    return Some(at);
                }
            } else {
                host.apply(&a);
            }
        }
        if c.next >= c.steps.len() {
            c.finished = Some(at);
            return Some(at);
        }
        let a = c.steps[c.next].clone();
        if !pass.may_start(&a, host) {
            // A failed step ends the store's chain (never start Cyrus as
            // master without its IP bound).
            c.finished = Some(at);
            return Some(at);
        }
        c.next += 1;
        let fails = host.fails(&a);
        let end = at + pass.duration(&a, fails, host);
        host.begin(&a, end, fails);
        if matches!(a, Action::Demote { .. }) {
            // Its own task: the chain (and the pass) goes on at once.
            host.detach(&a, end, fails);
            c.last_end = at;
            continue;
        }
        c.in_flight = Some((a, end, fails));
    }
}
