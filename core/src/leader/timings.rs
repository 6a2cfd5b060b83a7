//! The leader's part in the cluster's timings (`slotd_raft_store::timings`):
//! writing the first set, and settling a change. A change is settled once
//! every live node reports it applied it, and the `lease + margin` of the
//! timings before it has passed since this leader saw it applied: no grant
//! given under the old timings can still run then, and no node acts on
//! timings older than the log's.

use std::time::Duration;

use slotd_raft_store::{ClusterState, ClusterTimings, Command, NodeId};

use crate::time::Mono;

/// What the leader follows of the timings in the state.
#[derive(Clone, Debug, Default)]
pub struct Follow {
    /// Written when the state has none (the leader's own file).
    pub first: Option<ClusterTimings>,
    /// The change last seen applied, and when this leader first saw it.
    seen: Option<(u64, Mono)>,
}

impl Follow {
    /// A new leadership: what an earlier one saw counts for nothing.
    pub fn forget(&mut self) {
        self.seen = None;
    }

    pub fn see(&mut self, state: &ClusterState, now: Mono) {
        let seq = state.timings.map(|t| t.seq);
        if self.seen.map(|(s, _)| s) != seq {
            self.seen = seq.map(|s| (s, now));
        }
    }

    /// The command to log, if any. `acked(node)`: the node has applied the
    /// change in force, or holds no lease.
    pub fn command(&self, state: &ClusterState, now: Mono, acked: impl Fn(NodeId) -> bool) -> Option<Command> {
        if !state.initialised {
            return None;
        }
        let Some(t) = state.timings else {
            return self.first.map(|timings| Command::SetTimings { timings, replaces: 0 });
        };
        let before = t.before?;
        let (seq, since) = self.seen?;
        let waited = now.since(since) >= Duration::from_millis(before.dead_after_ms());
        (seq == t.seq && waited && state.nodes.keys().all(|n| acked(*n))).then_some(Command::SettleTimings { seq })
    }
}

#[cfg(test)]
mod tests {
    use slotd_raft_store::plan::{plan, Naming};
    use slotd_raft_store::{Request, Response};

    use super::*;

    fn at(ms: u64) -> Mono {
        Mono::from_origin(Duration::from_millis(ms))
    }

    fn apply(state: &mut ClusterState, command: Command) {
        let req = Request { at_ms: 0, command };
        assert_eq!(state.apply(&req), Response::Applied, "{:?}", req.command);
    }

    #[test]
    fn the_first_set_is_the_leaders_file_and_a_change_settles_after_acks_and_the_old_wait() {
        let mut state = plan(3, 4).unwrap().initial_state(&Naming::default()).unwrap();
        let file = ClusterTimings::default();
        let mut follow = Follow {
            first: Some(file),
            ..Follow::default()
        };
        follow.see(&state, at(0));
        let first = follow.command(&state, at(0), |_| true);
        assert_eq!(
            first,
            Some(Command::SetTimings {
                timings: file,
                replaces: 0
            })
        );
        apply(&mut state, first.unwrap());
        follow.see(&state, at(10));
        assert_eq!(follow.command(&state, at(10_000), |_| true), None, "nothing to settle");

        let longer = ClusterTimings { lease_ms: 4000, ..file };
        apply(
            &mut state,
            Command::SetTimings {
                timings: longer,
                replaces: 1,
            },
        );
        follow.see(&state, at(1000));
        // The old lease + margin (2.5 s) from when it was seen applied.
        assert_eq!(follow.command(&state, at(3499), |_| true), None);
        // A live node that has not applied it holds it up.
        assert_eq!(follow.command(&state, at(3500), |n| n != 2), None);
        assert_eq!(
            follow.command(&state, at(3500), |_| true),
            Some(Command::SettleTimings { seq: 2 })
        );
        // A follower's core (no first set) writes nothing of its own.
        let mut fresh = plan(3, 4).unwrap().initial_state(&Naming::default()).unwrap();
        fresh.timings = None;
        assert_eq!(Follow::default().command(&fresh, at(0), |_| true), None);
    }
}
