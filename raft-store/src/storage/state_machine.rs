//! openraft's `RaftStateMachine`: the in-memory `ClusterState` plus its
//! snapshots, which are kept durably in redb.

use std::io::Cursor;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info};

use super::{KEY_SNAPSHOT, SNAPSHOT};
use crate::codec::{self, CodecError};
use crate::command::Response;
use crate::state::ClusterState;
use crate::types::typ::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership};
use crate::types::TypeConfig;

/// What a snapshot holds: the cluster state and where in the log it stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub state: ClusterState,
}

/// Decodes snapshot data as written today, or as written before
/// `ClusterState::timings` existed (then: none, and the leader writes them).
pub(super) fn decode_data(bytes: &[u8]) -> Result<SmData, CodecError> {
    // Only data that ends where the timings would begin is the old shape:
    // anything else (damaged, or newer) is an error, never misread.
    codec::decode::<SmData>(bytes).or_else(|current| match current {
        CodecError::Postcard(postcard::Error::DeserializeUnexpectedEnd) => {
            match codec::decode_exact::<before_timings::SmData>(bytes) {
                Ok(old) => Ok(old.into()),
                Err(_) => Err(current),
            }
        }
        other => Err(other),
    })
}

/// The shape of `SmData` before the cluster-wide timings.
mod before_timings {
    use std::collections::{BTreeMap, VecDeque};

    use serde::Deserialize;

    use crate::state::{NodeId, RebalanceJob, Store, Transition};
    use crate::types::typ::{LogId, StoredMembership};

    #[derive(Deserialize)]
    pub struct SmData {
        last_applied: Option<LogId>,
        last_membership: StoredMembership,
        state: ClusterState,
    }

    #[derive(Deserialize)]
    struct ClusterState {
        initialised: bool,
        nodes: BTreeMap<NodeId, crate::state::Node>,
        stores: BTreeMap<String, Store>,
        history: VecDeque<Transition>,
        next_transition: u64,
        retired_epochs: BTreeMap<String, u64>,
        rebalance: Option<RebalanceJob>,
        next_rebalance: u64,
    }

    impl From<SmData> for super::SmData {
        fn from(old: SmData) -> super::SmData {
            let s = old.state;
            super::SmData {
                last_applied: old.last_applied,
                last_membership: old.last_membership,
                state: crate::state::ClusterState {
                    initialised: s.initialised,
                    nodes: s.nodes,
                    stores: s.stores,
                    history: s.history,
                    next_transition: s.next_transition,
                    retired_epochs: s.retired_epochs,
                    rebalance: s.rebalance,
                    next_rebalance: s.next_rebalance,
                    timings: None,
                },
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use serde::Serialize;

        use crate::codec;
        use crate::storage::state_machine::decode_data;

        /// What an older slotd wrote: every field but the timings.
        #[derive(Serialize)]
        struct Old<'a> {
            last_applied: &'a Option<crate::types::typ::LogId>,
            last_membership: &'a crate::types::typ::StoredMembership,
            state: OldState<'a>,
        }

        #[derive(Serialize)]
        struct OldState<'a> {
            initialised: bool,
            nodes: &'a std::collections::BTreeMap<crate::NodeId, crate::Node>,
            stores: &'a std::collections::BTreeMap<String, crate::Store>,
            history: &'a std::collections::VecDeque<crate::Transition>,
            next_transition: u64,
            retired_epochs: &'a std::collections::BTreeMap<String, u64>,
            rebalance: Option<crate::RebalanceJob>,
            next_rebalance: u64,
        }

        #[test]
        fn a_snapshot_from_before_the_timings_reads_with_none() {
            let state = crate::testkit::initialised(crate::testkit::planned(3, 4));
            let data = super::super::SmData {
                state: state.clone(),
                ..Default::default()
            };
            let s = &data.state;
            let old = Old {
                last_applied: &data.last_applied,
                last_membership: &data.last_membership,
                state: OldState {
                    initialised: s.initialised,
                    nodes: &s.nodes,
                    stores: &s.stores,
                    history: &s.history,
                    next_transition: s.next_transition,
                    retired_epochs: &s.retired_epochs,
                    rebalance: s.rebalance,
                    next_rebalance: s.next_rebalance,
                },
            };
            let bytes = codec::encode(&old).unwrap();
            let read = decode_data(&bytes).unwrap();
            assert_eq!(read, data);
            assert!(read.state.timings.is_none());
            // Today's, with timings, reads as written (not as the old shape).
            let mut now = data.clone();
            now.state.timings = Some(crate::TimingsInForce {
                seq: 1,
                now: crate::ClusterTimings::default(),
                before: None,
            });
            assert_eq!(decode_data(&codec::encode(&now).unwrap()).unwrap(), now);
            assert!(decode_data(&bytes[..bytes.len() - 1]).is_err());
            // Today's, cut short inside the timings: an error, not the old
            // shape with none.
            let cut = codec::encode(&now).unwrap();
            assert!(decode_data(&cut[..cut.len() - 1]).is_err());
        }
    }
}

/// A snapshot as stored on disk.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

pub(super) enum LoadError {
    Db(redb::Error),
    Codec(CodecError),
}

/// The state machine openraft applies entries to. Clones share the data.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<Database>,
    data: Arc<RwLock<SmData>>,
    /// Bumped after every applied batch and installed snapshot, so that the
    /// agent's reconciler can wait for changes instead of polling.
    applied: watch::Sender<Option<LogId>>,
}

/// A read handle on the state machine for the rest of the agent.
#[derive(Clone)]
pub struct StateReader {
    data: Arc<RwLock<SmData>>,
    applied: watch::Receiver<Option<LogId>>,
}

impl StateReader {
    /// A consistent copy of the current state.
    pub fn snapshot(&self) -> SmData {
        read(&self.data).clone()
    }

    /// Runs `f` on the current state without copying it.
    pub fn with<T>(&self, f: impl FnOnce(&SmData) -> T) -> T {
        f(&read(&self.data))
    }

    /// A receiver that changes whenever entries are applied.
    pub fn subscribe(&self) -> watch::Receiver<Option<LogId>> {
        self.applied.clone()
    }
}

/// A fixed state that no storage backs, for tests of code that reads the
/// state (the agent's reconciler); the readers' subscriptions stay open
/// while the returned handle lives.
pub fn in_memory(data: SmData) -> (StateReader, MemoryState) {
    let (applied, rx) = watch::channel(data.last_applied);
    (
        StateReader {
            data: Arc::new(RwLock::new(data)),
            applied: rx,
        },
        MemoryState { _applied: applied },
    )
}

/// Keeps the state of [`in_memory`] open to its readers.
pub struct MemoryState {
    _applied: watch::Sender<Option<LogId>>,
}

// A panic while holding the lock cannot leave `SmData` half-written (apply
// works on the value in place only after all checks passed), so a poisoned
// lock is still safe to use.
fn read(lock: &RwLock<SmData>) -> RwLockReadGuard<'_, SmData> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(lock: &RwLock<SmData>) -> RwLockWriteGuard<'_, SmData> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl StateMachineStore {
    /// Loads the latest stored snapshot, if any, as the starting state.
    pub(super) fn load(db: Arc<Database>) -> Result<Self, LoadError> {
        let data = match read_snapshot(&db)? {
            Some(stored) => {
                let data: SmData = decode_data(&stored.data).map_err(LoadError::Codec)?;
                info!(last_applied = ?data.last_applied, "state machine restored from snapshot");
                data
            }
            None => SmData::default(),
        };
        let (applied, _) = watch::channel(data.last_applied);
        Ok(StateMachineStore {
            db,
            data: Arc::new(RwLock::new(data)),
            applied,
        })
    }

    /// A read handle for the agent (status, reconciler, leader decisions).
    pub fn reader(&self) -> StateReader {
        StateReader {
            data: self.data.clone(),
            applied: self.applied.subscribe(),
        }
    }

    /// Stores `stored` unless a snapshot at least as recent is already there.
    ///
    /// openraft builds snapshots in a task of their own: a build that started
    /// from an older copy can finish after a newer snapshot was installed
    /// (and the log purged up to it). Overwriting that would leave a snapshot
    /// whose following entries are gone, and the node could not restart.
    fn save_snapshot(&self, stored: &StoredSnapshot) -> Result<bool, StorageError> {
        let sig = Some(stored.meta.signature());
        let err = |e: &dyn std::error::Error| {
            StorageIOError::write_snapshot(sig.clone(), openraft::AnyError::error(e.to_string()))
        };
        let bytes = codec::encode(stored).map_err(|e| err(&e))?;
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut table = txn.open_table(SNAPSHOT).map_err(|e| err(&e))?;
            let current = match table.get(KEY_SNAPSHOT).map_err(|e| err(&e))? {
                Some(raw) => Some(
                    codec::decode::<StoredSnapshot>(raw.value())
                        .map_err(|e| err(&e))?
                        .meta
                        .last_log_id,
                ),
                None => None,
            };
            if let Some(current) = current {
                if current >= stored.meta.last_log_id {
                    debug!(snapshot = %stored.meta.snapshot_id, "a snapshot at least as recent is stored; not replacing it");
                    return Ok(false);
                }
            }
            table.insert(KEY_SNAPSHOT, bytes.as_slice()).map_err(|e| err(&e))?;
        }
        super::slow::before_commit();
        txn.commit().map_err(|e| err(&e))?;
        Ok(true)
    }
}

/// Whether stored snapshot bytes decode, data included (`storage::verify`).
pub(super) fn check_snapshot(raw: &[u8]) -> Result<(), codec::CodecError> {
    let stored: StoredSnapshot = codec::decode(raw)?;
    decode_data(&stored.data).map(drop)
}

fn read_snapshot(db: &Database) -> Result<Option<StoredSnapshot>, LoadError> {
    let txn = db.begin_read().map_err(|e| LoadError::Db(e.into()))?;
    let table = txn.open_table(SNAPSHOT).map_err(|e| LoadError::Db(e.into()))?;
    let Some(raw) = table.get(KEY_SNAPSHOT).map_err(|e| LoadError::Db(e.into()))? else {
        return Ok(None);
    };
    codec::decode(raw.value()).map(Some).map_err(LoadError::Codec)
}

/// Builds a snapshot from a copy of the state taken when openraft asked for a
/// builder, so that applying goes on while it is encoded and written.
pub struct SnapshotBuilder {
    store: StateMachineStore,
    data: SmData,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let bytes = codec::encode(&self.data).map_err(|e| StorageIOError::read_state_machine(&e))?;
        let snapshot_id = match self.data.last_applied {
            Some(last) => format!("{}-{}-{}", last.leader_id.term, last.leader_id.node_id, last.index),
            None => "empty".to_owned(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.data.last_applied,
            last_membership: self.data.last_membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        };
        let store = self.store.clone();
        let stored = tokio::task::spawn_blocking(move || store.save_snapshot(&stored).map(|_| stored))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))??;
        debug!(snapshot = %meta.snapshot_id, bytes = stored.data.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let data = read(&self.data);
        Ok((data.last_applied, data.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let last = {
            let mut data = write(&self.data);
            for entry in entries {
                data.last_applied = Some(entry.log_id);
                let response = match &entry.payload {
                    EntryPayload::Blank => Response::Applied,
                    EntryPayload::Normal(req) => data.state.apply(req),
                    EntryPayload::Membership(m) => {
                        data.last_membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        Response::Applied
                    }
                };
                responses.push(response);
            }
            data.last_applied
        };
        self.applied.send_replace(last);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.clone(),
            data: read(&self.data).clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let new: SmData = decode_data(&bytes).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        };
        // Durable first: if we crash after this, restart finds the snapshot.
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.save_snapshot(&stored))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))??;
        // Even when an equal or newer snapshot was already stored, openraft
        // asked us to install this one: the in-memory state follows it.
        let last = new.last_applied;
        *write(&self.data) = new;
        self.applied.send_replace(last);
        info!(snapshot = %meta.snapshot_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let stored = read_snapshot(&self.db).map_err(|e| match e {
            LoadError::Db(e) => StorageIOError::read_snapshot(None, &e),
            LoadError::Codec(e) => StorageIOError::read_snapshot(None, &e),
        })?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
