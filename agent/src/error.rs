//! Why an agent call failed. Carried between agents (a follower passes the
//! leader's answer on to the operator), so serialisable; mapped to a gRPC
//! status only at the service edge (`admin::to_status`).

use serde::{Deserialize, Serialize};
use slotd_raft_store::{NodeId, Rejection};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AgentError {
    /// The state machine refuses the command: nothing changed.
    #[error("{0}")]
    Refused(Rejection),
    /// The cluster is not in a state where the call can be done safely;
    /// nothing changed.
    #[error("{0}")]
    Precondition(String),
    /// An argument is malformed: the message names it.
    #[error("{0}")]
    Invalid(String),
    /// This node is not the leader (any more).
    #[error("node {me} is not the leader{}", leader_hint(.leader))]
    NotLeader {
        me: NodeId,
        leader: Option<(NodeId, String)>,
    },
    /// No leader could be found in time (no quorum, or not initialised).
    #[error("no leader is known (is a majority of voters up? is the cluster initialised?)")]
    NoLeader,
    /// The agent is shutting down.
    #[error("the agent is shutting down")]
    ShuttingDown,
    /// The leader could not be reached (it may just have died).
    #[error("cannot reach the leader: {0}")]
    Unreachable(String),
    /// Raft or the network failed; the message says how.
    #[error("{0}")]
    Raft(String),
}

fn leader_hint(leader: &Option<(NodeId, String)>) -> String {
    match leader {
        Some((id, addr)) => format!("; the leader is node {id} at {addr}"),
        None => String::new(),
    }
}
