//! The engine's round of switchover work, as one step: what the leader
//! remembers while it leads a term ([`Memory`]), brought up to date at the
//! round's start, the facts it decides with ([`Facts::of`] and the
//! memory's cooling and given-up stores), the entries [`conduct`] asks
//! for, and, for each entry written, what the memory keeps of it. The
//! agent's failover engine and the simulation's leader both run rounds of
//! this one [`Conductor`]; only writing the entries is theirs.

use std::collections::BTreeSet;
use std::time::Duration;

use slotd_raft_store::{ClusterState, Command, Store};

use super::switchover::{conduct, idle, rebalancing, Facts, Memory, SwitchoverTiming};
use super::LeaderCore;
use crate::time::Mono;
use crate::timing::SwitchoverConfig;

/// The switchover conductor of one leader.
#[derive(Clone, Debug, Default)]
pub struct Conductor {
    memory: Memory,
}

/// What a round asks the leader to write, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// The entries, each accepted by the state machine on the state the
    /// earlier ones leave.
    pub commands: Vec<Command>,
    /// The stores whose switchover was the rebalance's when the round
    /// began (see [`Conductor::written`]).
    rebalancing: BTreeSet<String>,
}

impl Conductor {
    /// A round at `now`, leading `term`, on `state` (applied here), with
    /// what `core` knows and the leader's `[switchover]` table; `now_ms`
    /// stamps the entries (history durations).
    pub fn round(
        &mut self,
        term: u64,
        core: &LeaderCore,
        state: &ClusterState,
        now: Mono,
        config: &SwitchoverConfig,
        now_ms: u64,
    ) -> Round {
        self.prepare(term, state, now);
        // Nearly every round on a healthy cluster: nothing to look at.
        if idle(state) {
            return Round::default();
        }
        let facts = self.memory.facts(Facts::of(core, state, now, config, now_ms));
        let age = |s: &Store| self.memory.age(s, now);
        Round {
            commands: conduct(state, &facts, &age, &SwitchoverTiming::of(config)),
            rebalancing: rebalancing(state),
        }
    }

    /// Brings the memory up to date at `now`, leading `term` (a round does
    /// this first; a caller may do it before to look at the memory).
    pub fn prepare(&mut self, term: u64, state: &ClusterState, now: Mono) {
        self.memory.prepare(term, state, now);
    }

    /// `command` of `round` was written at `now`. Returns, for a rollback,
    /// how long a drain now leaves the store alone.
    pub fn written(
        &mut self,
        round: &Round,
        command: &Command,
        now: Mono,
        config: &SwitchoverConfig,
    ) -> Option<Duration> {
        self.memory
            .written(command, &round.rebalancing, now, &SwitchoverTiming::of(config))
    }

    /// What this leader remembers of switchovers (read-only: for a caller
    /// that wants to know whether a round can change anything).
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// A new leadership, or none: forget everything.
    pub fn forget(&mut self) {
        self.memory = Memory::default();
    }
}
