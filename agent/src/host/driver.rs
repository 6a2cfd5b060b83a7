//! How the agent starts, stops and observes a slot's Cyrus instance. The
//! reconciler decides *what*; a driver only does it.
//!
//! The `none` driver starts nothing and records what it was told: for
//! demos and tests. The Cyrus driver (`cyrus::instance`) runs Cyrus itself
//! (`exec`) or through systemd units (`systemd`); `any` picks one.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use slotd_core::node::reconcile::Instance;
use slotd_raft_store::Store;

/// What an instance needs to know of its store to run in a role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotContext {
    pub store: String,
    /// The epoch the role is for.
    pub epoch: u64,
    /// Where a master's services listen (and clients connect).
    pub master_ip: IpAddr,
    /// Where a replica's sync_server listens (and the master's
    /// sync_client connects).
    pub replica_ip: IpAddr,
    /// How many slots the store has (one master and `slots - 1` replicas).
    pub slots: usize,
}

impl SlotContext {
    /// What a slot of `store` needs to run at `epoch`.
    pub fn of(store: &Store, epoch: u64) -> SlotContext {
        SlotContext {
            store: store.name.clone(),
            epoch,
            master_ip: store.master_ip.addr,
            replica_ip: store.replica_ip.addr,
            slots: store.slots.len(),
        }
    }
}

/// Why a driver could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("slot {slot}: {message}")]
    Failed { slot: String, message: String },
}

/// Starts, stops and observes slot instances.
pub trait SlotDriver: Send + Sync + 'static {
    fn start_master(&self, slot: &str, ctx: &SlotContext) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Starts the slot as replica. A sync log left over from a life as
    /// master (an unclean failover) is set aside first, never replayed by
    /// this instance: the leader clears the store's dirty mark once the
    /// replica runs (`reconcile::leftovers_settled`).
    fn start_replica(&self, slot: &str, ctx: &SlotContext) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Stops the whole instance (every process of it).
    fn stop(&self, slot: &str) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// A switchover's old master: stop client services, flush the sync log
    /// to the replica until it is empty (skipped when `force`), stop the
    /// instance. Works from any state (a stopped instance may still hold an
    /// unsent sync log).
    fn demote(
        &self,
        slot: &str,
        ctx: &SlotContext,
        force: bool,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Bytes of the master's sync log not yet sent to its replica; `None`
    /// when it cannot be told.
    fn backlog(&self, slot: &str) -> impl Future<Output = Option<u64>> + Send;
    /// How long the oldest change not yet sent has waited; `None` when
    /// nothing waits (or it cannot be told).
    fn backlog_age(&self, _slot: &str) -> impl Future<Output = Option<std::time::Duration>> + Send {
        async { None }
    }
    /// What fails in the checks of a running instance (empty: healthy):
    /// the banners of the role's services on the store's IPs, and on a
    /// master the rolling `sync_client`.
    fn health(&self, _slot: &str, _ctx: &SlotContext, _master: bool) -> impl Future<Output = Vec<String>> + Send {
        async { Vec::new() }
    }
    /// The state of every slot this driver knows; missing = stopped.
    fn observe(&self) -> impl Future<Output = BTreeMap<String, Instance>> + Send;
    /// A leftover sync log set aside and not yet dealt with, if any (an
    /// error when it is there but cannot be offered: too large, unreadable).
    fn leftover_log(&self, slot: &str) -> impl Future<Output = Option<Result<String, String>>> + Send;
    /// The leftovers were replayed (`true`) or are kept without a replay:
    /// put them where they no longer count as waiting.
    fn finish_leftovers(&self, slot: &str, replayed: bool) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// As master: replay a dirty replica's leftover `log` (pull what only
    /// that replica has); a note on how it went.
    fn replay(&self, slot: &str, log: &str) -> impl Future<Output = Result<String, DriverError>> + Send;
}

/// Starts nothing; remembers what it was told, so the reconciler converges
/// and tests can read what happened.
#[derive(Clone, Default)]
pub struct NoneDriver {
    instances: Arc<Mutex<BTreeMap<String, Instance>>>,
}

impl NoneDriver {
    fn set(&self, slot: &str, instance: Instance) {
        self.instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(slot.to_owned(), instance);
    }
}

impl SlotDriver for NoneDriver {
    async fn start_master(&self, slot: &str, ctx: &SlotContext) -> Result<(), DriverError> {
        self.set(slot, Instance::Master { epoch: ctx.epoch });
        Ok(())
    }

    async fn start_replica(&self, slot: &str, ctx: &SlotContext) -> Result<(), DriverError> {
        self.set(slot, Instance::Replica { epoch: ctx.epoch });
        Ok(())
    }

    async fn stop(&self, slot: &str) -> Result<(), DriverError> {
        self.set(slot, Instance::Stopped);
        Ok(())
    }

    async fn demote(&self, slot: &str, _ctx: &SlotContext, _force: bool) -> Result<(), DriverError> {
        // Nothing to flush without Cyrus.
        self.set(slot, Instance::Stopped);
        Ok(())
    }

    async fn backlog(&self, _slot: &str) -> Option<u64> {
        // No sync log without Cyrus: a replica is always caught up.
        Some(0)
    }

    async fn observe(&self) -> BTreeMap<String, Instance> {
        self.instances.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    async fn leftover_log(&self, _slot: &str) -> Option<Result<String, String>> {
        None
    }

    async fn finish_leftovers(&self, _slot: &str, _replayed: bool) -> Result<(), DriverError> {
        Ok(())
    }

    async fn replay(&self, _slot: &str, log: &str) -> Result<String, DriverError> {
        Ok(format!("{} lines, nothing to pull without Cyrus", log.lines().count()))
    }
}
