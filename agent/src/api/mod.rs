//! What callers reach on the agent's gRPC port (`listen`): the Admin
//! service for operators (`admin`), the Peer service for other agents
//! (`peer`), and who may call what (`access`, pure). Errors become gRPC
//! statuses here and nowhere else ([`to_status`]), and every call is
//! bounded: in time ([`SERVER_TIMEOUT`]), in size, and in how many run at
//! once.

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use crate::error::AgentError;

pub mod access;
pub mod admin;
pub mod peer;

/// The longest any gRPC call may run here: well above every legitimate
/// one (a leader call, bounded by `leader::calls::CALL_DEADLINE`; an init
/// that joins every node; a snapshot).
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(60);

/// The most admin calls one agent carries out at once: more are refused
/// (RESOURCE_EXHAUSTED), not queued, so that a flood of calls cannot pile
/// up work on the leader.
pub const MAX_ADMIN_CALLS: usize = 64;

/// The most calls other agents pass on to this one as leader at once.
pub const MAX_LEADER_CALLS: usize = 128;

/// Largest admin request: a topology of thousands of stores fits many
/// times over.
pub const MAX_ADMIN_MESSAGE: usize = 4 << 20;

/// A bound on calls under way.
#[derive(Clone)]
pub struct CallLimit {
    permits: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl CallLimit {
    pub fn new(max: usize) -> CallLimit {
        CallLimit {
            permits: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
        }
    }

    /// A permit for one call, or the refusal.
    pub fn enter(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "more than {} calls at once on this agent; try again shortly",
                self.max
            ))
        })
    }
}

/// gRPC code for each kind of failure; slotctl prints the message as is.
pub fn to_status(e: AgentError) -> Status {
    let msg = e.to_string();
    match e {
        AgentError::Refused(_) | AgentError::Precondition(_) => Status::failed_precondition(msg),
        AgentError::Invalid(_) => Status::invalid_argument(msg),
        AgentError::NotLeader { .. } | AgentError::NoLeader | AgentError::ShuttingDown => Status::unavailable(msg),
        AgentError::Raft(_) | AgentError::Unreachable(_) => Status::unavailable(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::CallLimit;

    #[test]
    fn calls_beyond_the_bound_are_refused_until_one_ends() {
        let limit = CallLimit::new(2);
        let a = limit.enter().expect("first");
        let _b = limit.enter().expect("second");
        let refused = limit.enter().expect_err("a third at once");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("more than 2 calls"), "{}", refused.message());
        drop(a);
        assert!(limit.enter().is_ok(), "admitted again once one ended");
    }
}
