//! How the agent starts, stops and observes a slot's Cyrus instance. The
//! reconciler decides *what*; a driver only does it.
//!
//! The `none` driver starts nothing and records what it was told: for
//! demos, tests and simulations. The systemd and exec drivers come with the
//! Cyrus issue.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use crate::reconcile::Instance;

/// Why a driver could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("slot {slot}: {message}")]
    Failed { slot: String, message: String },
}

/// Starts, stops and observes slot instances.
pub trait SlotDriver: Send + Sync + 'static {
    fn start_master(&self, slot: &str, epoch: u64) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Starts the slot as replica. A sync log left over from a life as
    /// master (an unclean failover) is set aside first, never replayed by
    /// this instance: the leader clears the store's dirty mark once the
    /// replica runs (`reconcile::leftovers_settled`).
    fn start_replica(&self, slot: &str, epoch: u64) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Stops the whole instance (every process of it).
    fn stop(&self, slot: &str) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// A switchover's old master: stop client services, flush the sync log
    /// to the replica until it is empty (skipped when `force`), stop the
    /// instance. Works from any state (a stopped instance may still hold an
    /// unsent sync log).
    fn demote(&self, slot: &str, force: bool) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Bytes of the master's sync log not yet sent to its replica; `None`
    /// when it cannot be told.
    fn backlog(&self, slot: &str) -> impl Future<Output = Option<u64>> + Send;
    /// The state of every slot this driver knows; missing = stopped.
    fn observe(&self) -> impl Future<Output = BTreeMap<String, Instance>> + Send;
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
    async fn start_master(&self, slot: &str, epoch: u64) -> Result<(), DriverError> {
        self.set(slot, Instance::Master { epoch });
        Ok(())
    }

    async fn start_replica(&self, slot: &str, epoch: u64) -> Result<(), DriverError> {
        self.set(slot, Instance::Replica { epoch });
        Ok(())
    }

    async fn stop(&self, slot: &str) -> Result<(), DriverError> {
        self.set(slot, Instance::Stopped);
        Ok(())
    }

    async fn demote(&self, slot: &str, _force: bool) -> Result<(), DriverError> {
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
}
