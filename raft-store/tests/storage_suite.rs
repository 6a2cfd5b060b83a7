//! openraft's own storage conformance suite against the redb log store and
//! state machine.

use openraft::testing::{StoreBuilder, Suite};
use slotd_raft_store::storage::{self, LogStore, StateMachineStore};
use slotd_raft_store::typ::{StorageError, StorageIOError};
use slotd_raft_store::TypeConfig;
use tempfile::TempDir;

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = TempDir::new().map_err(|e| StorageIOError::write(&e))?;
        let (log, sm) = storage::open(dir.path()).map_err(|e| StorageIOError::write(&e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_suite_passes() {
    if let Err(e) = Suite::test_all(RedbBuilder) {
        panic!("openraft storage suite failed: {e}");
    }
}
