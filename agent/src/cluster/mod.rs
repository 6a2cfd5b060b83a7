//! This agent's view of the cluster: its handle on Raft and the state
//! machine ([`Cluster`]: who leads, writing a command, passing a call to
//! the leader), and what it shares with the other agents:
//! - `channel`: the one channel to other agents (every Peer call, and
//!   openraft's network over it);
//! - `wire`: every message agents exchange;
//! - `identity`: the cluster id every Peer call carries;
//! - `status`: the cluster as operators see it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use slotd_raft_store::storage::StateReader;
use slotd_raft_store::typ::Raft;
use slotd_raft_store::{Command, NodeId, Request, Response};
use tokio::sync::Notify;

use slotd_core::leader::LeaderCore;
use slotd_core::timing::SwitchoverConfig;

use crate::clock::{self, unix_ms, Mono};
use crate::error::AgentError;

pub mod channel;
pub mod identity;
pub mod status;
pub mod wire;

use channel::{CallError, Method, PeerNetwork};
use identity::Identity;
use wire::{Asker, LeaderCall, LeaderReply, LeaderRequest};

/// The longest one hop to the leader may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// This agent's handle on Raft and the state machine.
pub struct Cluster {
    pub id: NodeId,
    pub name: String,
    pub raft: Raft,
    pub reader: StateReader,
    pub network: PeerNetwork,
    /// The leader's lease ledger and failure detector (used while leading).
    /// Lock order: the state reader first, then this, never the reverse.
    pub leader: Mutex<LeaderCore>,
    /// Wakes the failover engine (an accepted fence notice).
    pub engine_wake: Arc<Notify>,
    /// The cluster id this agent answers to (none before it joined).
    pub identity: Identity,
    /// This node's `[switchover]` (the leader's governs operator commands).
    pub switchover: SwitchoverConfig,
    /// When this node last took an append from a leader (for the elector).
    pub leader_contact: LeaderContact,
}

/// When this node last heard from a leader: an append it took (not one it
/// refused for a higher vote of its own).
#[derive(Debug, Default)]
pub struct LeaderContact(AtomicU64);

impl LeaderContact {
    /// Heard from a leader now.
    pub fn heard(&self) {
        let ms = u64::try_from(clock::now().as_duration().as_millis()).unwrap_or(u64::MAX - 1);
        self.0.store(ms + 1, Ordering::Relaxed);
    }

    /// Whether it heard from a leader within `d` of now.
    pub fn within(&self, d: Duration) -> bool {
        match self.0.load(Ordering::Relaxed) {
            0 => false,
            v => clock::now().since(Mono::from_origin(Duration::from_millis(v - 1))) < d,
        }
    }
}

impl Cluster {
    /// The leader core, locked (see the lock order on `leader`).
    pub fn core(&self) -> MutexGuard<'_, LeaderCore> {
        self.leader.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current leader, waiting up to `timeout` for one to be known.
    pub async fn wait_leader(&self, timeout: Duration) -> Option<NodeId> {
        let m = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .ok()?;
        m.current_leader
    }

    pub fn leader_addr(&self, leader: NodeId) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
            .or_else(|| self.reader.with(|d| d.state.nodes.get(&leader).map(|n| n.addr.clone())))
    }

    /// Passes `call` to the agent at `addr` (`Peer.Leader`).
    pub async fn forward(
        &self,
        addr: &str,
        by: &str,
        asker: &Asker,
        call: &LeaderCall,
    ) -> Result<LeaderReply, AgentError> {
        let request = LeaderRequest {
            by: by.to_owned(),
            asker: asker.clone(),
            call: call.clone(),
        };
        match self
            .network
            .channels
            .call::<_, Result<LeaderReply, AgentError>>(addr, Method::Leader, &request, FORWARD_TIMEOUT)
            .await
        {
            Ok(reply) => reply,
            Err(e @ CallError::Unreachable { .. }) => Err(AgentError::Unreachable(e.to_string())),
            Err(e) => Err(AgentError::Raft(e.to_string())),
        }
    }

    /// Confirms with a quorum that this node leads and has applied all that
    /// was committed, so that checks against the local state are not stale.
    pub async fn confirm_leader(&self) -> Result<(), AgentError> {
        self.raft.ensure_linearizable().await.map_err(|e| self.raft_err(e))?;
        Ok(())
    }

    /// Appends `command`, refusing it first against the applied state so
    /// that bad operator input never reaches the log (the state machine
    /// checks again at its position in the log).
    pub async fn write(&self, command: Command) -> Result<u64, AgentError> {
        self.reader
            .with(|d| d.state.check(&command))
            .map_err(AgentError::Refused)?;
        let response = self
            .raft
            .client_write(Request {
                at_ms: unix_ms(),
                command,
            })
            .await
            .map_err(|e| self.raft_err(e))?;
        match response.data {
            Response::Applied => Ok(response.log_id.index),
            Response::Rejected(r) => Err(AgentError::Refused(r)),
        }
    }

    /// Maps openraft's errors: "go to the leader" becomes `NotLeader`.
    pub fn raft_err<E: std::fmt::Display + 'static>(&self, e: RaftError<NodeId, E>) -> AgentError {
        let forward = match &e {
            RaftError::APIError(api) => {
                let any: &dyn std::any::Any = api;
                any.downcast_ref::<ClientWriteError<NodeId, BasicNode>>()
                    .and_then(|c| match c {
                        ClientWriteError::ForwardToLeader(f) => Some(f.clone()),
                        _ => None,
                    })
                    .or_else(|| {
                        any.downcast_ref::<openraft::error::CheckIsLeaderError<NodeId, BasicNode>>()
                            .and_then(|c| match c {
                                openraft::error::CheckIsLeaderError::ForwardToLeader(f) => Some(f.clone()),
                                _ => None,
                            })
                    })
            }
            RaftError::Fatal(_) => None,
        };
        if let RaftError::Fatal(openraft::error::Fatal::Stopped) = &e {
            return AgentError::ShuttingDown;
        }
        match forward {
            Some(f) => AgentError::NotLeader {
                me: self.id,
                leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
            },
            None => AgentError::Raft(e.to_string()),
        }
    }
}
