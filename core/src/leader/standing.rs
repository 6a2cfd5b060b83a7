//! When a leader gives up: its standing with the voters.
//!
//! openraft 0.9 waits for each voter's answer to an append (the heartbeat
//! and every quorum round behind a lease grant) no longer than the Raft
//! heartbeat interval. A leader whose own link or machine got slow (80 ms
//! one way is enough with the default 75 ms heartbeat) hears no answer in
//! time, commits nothing and grants no lease; its followers, whose appends
//! still arrive, keep it as leader (openraft's followers refuse to vote
//! while appends come) and their elector sees a leader. Left alone, every
//! master in the cluster fences once its lease runs out. So a leader that a
//! majority of the voters (itself included) has not answered for
//! [`give_up_after`] steps down: it sends nothing more in that term (the
//! agent's network refuses its appends), its followers stop hearing it,
//! their elector lets them campaign, and a leader they can hear in time
//! takes over well inside the lease.
//!
//! "Not answered" counts only failed attempts: a voter that has not been
//! asked since the leader resumed from a stall is not held against it, and
//! any answer (the follower accepting this leader) clears it.

use std::collections::BTreeMap;
use std::time::Duration;

use slotd_raft_store::NodeId;

use crate::time::Mono;
use crate::timing::Timing;

/// How long a majority may leave a leader's appends unanswered before it
/// steps down: openraft's longest election timeout, the longest its
/// followers keep refusing other candidates after its last append (so
/// a leader that cannot be heard is replaced about as fast as a dead one).
pub fn give_up_after(timing: &Timing) -> Duration {
    timing.election_timeout_max()
}

/// What a leader knows of its voters' answers in one term.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// The term these answers belong to (a new term starts afresh).
    term: u64,
    /// Per voter: since when (the send of the first failed attempt after its
    /// last answer) it has not answered.
    failing_since: BTreeMap<NodeId, Mono>,
    /// The term this node gave up leading in, if it did.
    gave_up: Option<u64>,
    /// How many times it gave up, all terms.
    times: u64,
}

impl Standing {
    /// Forgets another term's answers.
    fn enter(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.failing_since.clear();
        }
    }

    /// `target` answered an append of `term`: it accepts this leader.
    pub fn answered(&mut self, term: u64, target: NodeId) {
        self.enter(term);
        self.failing_since.remove(&target);
    }

    /// An append of `term` sent to `target` at `sent` got no answer in time.
    pub fn failed(&mut self, term: u64, target: NodeId, sent: Mono) {
        self.enter(term);
        self.failing_since.entry(target).or_insert(sent);
    }

    /// Whether, leading in `term` at `now`, too few of `voters` (this node,
    /// `me`, among them or not) have answered: a majority is failing for
    /// longer than `bound`.
    pub fn lost(&self, term: u64, me: NodeId, voters: &[NodeId], now: Mono, bound: Duration) -> bool {
        if voters.is_empty() {
            return false;
        }
        let answering = voters
            .iter()
            .filter(|v| {
                **v == me
                    || self.term != term
                    || self.failing_since.get(v).is_none_or(|since| now.since(*since) <= bound)
            })
            .count();
        answering <= voters.len() / 2
    }

    /// This node gives up leading in `term`.
    pub fn give_up(&mut self, term: u64) {
        if self.gave_up != Some(term) {
            self.times += 1;
        }
        self.gave_up = Some(term);
    }

    /// How many times this node gave up leading since it started.
    pub fn times_given_up(&self) -> u64 {
        self.times
    }

    /// Whether this node gave up leading in `term` (and so sends nothing
    /// more in it).
    pub fn gave_up_in(&self, term: u64) -> bool {
        self.gave_up == Some(term)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Mono {
        Mono::from_origin(Duration::from_millis(ms))
    }

    const B: Duration = Duration::from_millis(250);

    #[test]
    fn a_leader_no_majority_answers_for_the_bound_has_lost_its_standing() {
        let voters = [1, 2, 3];
        let mut s = Standing::default();
        // Nothing known yet: standing.
        assert!(!s.lost(5, 1, &voters, at(10_000), B));
        // One follower failing for long: the other and the leader are a majority.
        s.failed(5, 2, at(0));
        assert!(!s.lost(5, 1, &voters, at(1_000), B));
        // Both failing, but not yet for the bound.
        s.failed(5, 3, at(900));
        assert!(!s.lost(5, 1, &voters, at(1_100), B));
        // Later failures do not move the start.
        s.failed(5, 3, at(1_000));
        assert!(s.lost(5, 1, &voters, at(1_151), B));
        // An answer clears it.
        s.answered(5, 3);
        assert!(!s.lost(5, 1, &voters, at(1_200), B));
    }

    #[test]
    fn another_terms_answers_do_not_count() {
        let voters = [1, 2, 3];
        let mut s = Standing::default();
        s.failed(5, 2, at(0));
        s.failed(5, 3, at(0));
        assert!(s.lost(5, 1, &voters, at(1_000), B));
        // Leading again in a later term: nothing held against anyone.
        assert!(!s.lost(7, 1, &voters, at(1_000), B));
        s.failed(7, 2, at(1_000));
        assert!(!s.lost(7, 1, &voters, at(1_100), B), "one of two, new");
    }

    #[test]
    fn a_lone_voter_and_five_voters() {
        let s = Standing::default();
        assert!(!s.lost(1, 1, &[1], at(5_000), B));
        let mut s = Standing::default();
        for v in [2, 3] {
            s.failed(1, v, at(0));
        }
        // Five voters, two failing: three answer.
        assert!(!s.lost(1, 1, &[1, 2, 3, 4, 5], at(5_000), B));
        s.failed(1, 4, at(0));
        assert!(s.lost(1, 1, &[1, 2, 3, 4, 5], at(5_000), B));
        // A leader no longer a voter (being removed) counts only the others.
        assert!(s.lost(1, 1, &[2, 3, 4, 5], at(5_000), B));
    }

    #[test]
    fn giving_up_is_for_one_term() {
        let mut s = Standing::default();
        assert!(!s.gave_up_in(4));
        s.give_up(4);
        s.give_up(4);
        assert!(s.gave_up_in(4));
        assert!(!s.gave_up_in(5));
        s.give_up(6);
        assert_eq!(s.times_given_up(), 2);
    }
}
