//! Raft per node, timed as openraft 0.9 does it (see `openraft`'s
//! `leader_lease` docs and `Engine::handle_vote_req`):
//!
//! - a vote is (term, node, committed), ordered by (term, node) and then
//!   `committed` (openraft's default "adv" leader ids: a candidate with a
//!   higher id wins a term, so two candidates do not split it);
//! - a voter whose vote is committed (it has heard the leader) refuses any
//!   candidate until its *leader lease* (`election_timeout_max`) has passed
//!   since it last heard the leader; it campaigns only after that lease plus
//!   its own election timeout (drawn once per process in [min, max)),
//!   looked at on a tick of 1.5 Raft heartbeats; with an uncommitted vote
//!   (after a failed campaign) only the election timeout counts;
//! - a voter refuses a candidate with a shorter log; a candidate told of a
//!   longer log waits `2 × election_timeout_max` more before its next
//!   campaign (openraft's `smaller_log_timeout`), so that a node back with a
//!   stale log does not keep out-campaigning the ones that can win;
//! - a restarted leader whose committed vote is its own comes back as
//!   leader of the same term at once (openraft's `Engine::startup`).
//!
//! The log itself is abstracted (`world::World::log`): entries commit the
//! instant a leader with a quorum appends them; followers learn of them from
//! `Append`. A leader has a quorum when a majority of voters run, reach it,
//! and have not moved to a later term.

use std::collections::BTreeSet;

/// A node's vote, as openraft keeps it (persisted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vote {
    pub term: u64,
    /// The node voted for (the leader, once committed).
    pub node: Option<usize>,
    pub committed: bool,
}

impl Vote {
    /// openraft's order: by (term, node), then committed.
    fn key(&self) -> (u64, Option<usize>, bool) {
        (self.term, self.node, self.committed)
    }

    /// `self >= other` in that order.
    pub fn at_least(&self, other: &Vote) -> bool {
        self.key() >= other.key()
    }
}

/// What a node is in Raft.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    Candidate { granted: BTreeSet<usize> },
    Leader,
}

/// One node's Raft.
#[derive(Clone, Debug)]
pub struct RaftNode {
    pub vote: Vote,
    /// Local time the vote last changed or was touched by the leader.
    pub utime: f64,
    pub role: Role,
    /// The leader this node follows (its own index when leading).
    pub leader: Option<usize>,
    /// This process's election timeout (ms).
    pub election_timeout: f64,
    /// Next election tick (local).
    pub next_tick: f64,
    /// Next AppendEntries broadcast, while leading (local).
    pub next_append: f64,
    /// A voter answered this campaign with a longer log.
    pub seen_greater_log: bool,
    /// This node's index.
    me: usize,
    /// openraft's leader lease (`election_timeout_max`): how long after
    /// hearing the leader a voter refuses candidates.
    leader_lease: f64,
}

impl RaftNode {
    /// A process starting with the persisted `vote` at local time `now`.
    pub fn start(
        me: usize,
        leader_lease: f64,
        vote: Vote,
        now: f64,
        election_timeout: f64,
        tick_phase: f64,
    ) -> RaftNode {
        let leading = vote.committed && vote.node == Some(me);
        RaftNode {
            vote,
            utime: now,
            role: if leading { Role::Leader } else { Role::Follower },
            leader: if vote.committed { vote.node } else { None },
            election_timeout,
            next_tick: now + tick_phase,
            next_append: now,
            seen_greater_log: false,
            me,
            leader_lease,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    pub fn term(&self) -> u64 {
        self.vote.term
    }

    /// openraft's `update_vote`: accept `vote` if it is at least ours
    /// (a greater one replaces ours, an equal one touches it).
    pub fn update_vote(&mut self, vote: Vote, now: f64) -> bool {
        if !vote.at_least(&self.vote) {
            return false;
        }
        let me = self.me;
        self.vote = vote;
        self.utime = now;
        if vote.committed && vote.node == Some(me) {
            self.role = Role::Leader;
            self.leader = Some(me);
        } else if vote.node == Some(me) {
            // Still campaigning for this vote.
        } else {
            self.role = Role::Follower;
            self.leader = if vote.committed { vote.node } else { None };
        }
        true
    }

    /// Whether the election tick at `now` makes this voter campaign.
    pub fn due_to_campaign(&self, now: f64) -> bool {
        let leader_lease = self.leader_lease;
        if self.is_leader() {
            return false;
        }
        let mut timeout = if self.vote.committed {
            leader_lease + self.election_timeout
        } else {
            self.election_timeout
        };
        if self.seen_greater_log {
            timeout += 2.0 * leader_lease;
        }
        now - self.utime >= timeout
    }

    /// A greater vote seen in a reply: taken, as not committed
    /// (`Engine::handle_vote_resp`, and a stale append's answer).
    pub fn see_vote(&mut self, vote: Vote, now: f64) {
        if vote != self.vote && vote.at_least(&self.vote) {
            self.update_vote(
                Vote {
                    committed: false,
                    ..vote
                },
                now,
            );
        }
    }

    /// Starts a campaign: the next term, voting for itself.
    pub fn campaign(&mut self, now: f64) -> u64 {
        let me = self.me;
        self.seen_greater_log = false;
        self.vote = Vote {
            term: self.vote.term + 1,
            node: Some(me),
            committed: false,
        };
        self.utime = now;
        self.role = Role::Candidate {
            granted: BTreeSet::from([me]),
        };
        self.leader = None;
        self.vote.term
    }

    /// `Engine::handle_vote_req`: may this voter (with `my_log` entries)
    /// vote for `candidate` in `term` with `log` entries?
    pub fn vote_request(&mut self, candidate: usize, term: u64, log: usize, my_log: usize, now: f64) -> bool {
        if self.vote.committed && now <= self.utime + self.leader_lease {
            return false;
        }
        if log < my_log {
            return false;
        }
        self.update_vote(
            Vote {
                term,
                node: Some(candidate),
                committed: false,
            },
            now,
        )
    }
}
