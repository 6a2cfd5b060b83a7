//! When this voter may campaign: a pre-vote, decided outside openraft.
//!
//! openraft 0.9 has no pre-vote. A voter cut off for a few seconds keeps
//! campaigning, its term climbing; healed, it answers the leader's appends
//! with that higher term, the leader steps down, and the election that
//! follows (with a shorter-log candidate or two) outlasts what is left of
//! the masters' leases: every connected master fences. So openraft's own
//! elections are off (`enable_elect`), and the agent turns them on only
//! while [`may_campaign`] says so: while a majority of the voters, this one
//! included, answer and have heard from no leader for `quiet` (less than
//! openraft's own wait before a campaign, so a dead leader is replaced as
//! fast as before). A voter that cannot reach a majority never campaigns,
//! and its term stays where the cluster's is; one that can reach them while
//! they hear a leader does not disturb it.

/// One voter's answer to "have you heard from a leader?": `None` when it
/// did not answer in time.
pub type Answer = Option<bool>;

/// Whether this voter (`heard`: it heard from a leader within `quiet`) may
/// campaign, with the other voters' `answers`, out of `voters` in all.
pub fn may_campaign(voters: usize, heard: bool, answers: impl IntoIterator<Item = Answer>) -> bool {
    let quiet = usize::from(!heard) + answers.into_iter().filter(|a| *a == Some(false)).count();
    quiet > voters / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_that_hears_no_leader_lets_a_voter_campaign() {
        // Five voters; the leader is dead and nobody hears it.
        assert!(may_campaign(5, false, [Some(false), Some(false), None, None]));
        // Cut off: nobody answers.
        assert!(!may_campaign(5, false, [None, None, None, None]));
        // Healed, the others hear the leader: no campaign.
        assert!(!may_campaign(
            5,
            false,
            [Some(true), Some(true), Some(true), Some(true)]
        ));
        // Two of five quiet are not a majority; three are.
        assert!(!may_campaign(5, false, [Some(false), Some(true), Some(true), None]));
        assert!(may_campaign(5, true, [Some(false), Some(false), Some(false), None]));
        // A lone voter decides alone.
        assert!(may_campaign(1, false, []));
        assert!(!may_campaign(1, true, []));
        // Three voters, one of the two others quiet with me: a majority.
        assert!(may_campaign(3, false, [Some(false), None]));
        assert!(!may_campaign(3, false, [None, None]));
    }
}
