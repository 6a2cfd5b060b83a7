//! Durable Raft storage on one redb file per node (`<data_dir>/raft.redb`):
//! the log, the vote, the committed id, and the latest snapshot.
//!
//! The state machine itself lives in memory and is rebuilt at start from the
//! latest snapshot plus the committed log after it (openraft re-applies from
//! `read_committed`). Every write transaction is committed with redb's
//! default durability (fsync) before openraft is told it is done.

// openraft's traits fix the error type (`StorageError`, ~224 bytes); boxing it
// in our helpers would only mean unboxing it at every trait method.
#![allow(clippy::result_large_err)]

mod log_store;
mod state_machine;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, TableDefinition};

pub use log_store::LogStore;
pub use state_machine::{in_memory, MemoryState, SmData, StateMachineStore, StateReader};

use crate::codec::CodecError;

/// Log entries by index.
const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
/// Small records: vote, committed log id, last purged log id.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The latest snapshot (metadata and data), under one key.
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
const KEY_SNAPSHOT: &str = "current";

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "raft.redb";

/// Why the storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open Raft database {path}: {source}")]
    Db { path: PathBuf, source: Box<redb::Error> },
    #[error("Raft database {path}: stored snapshot is unreadable: {source}")]
    Snapshot { path: PathBuf, source: CodecError },
}

/// Opens (creating if needed) the Raft storage in `data_dir` and returns the
/// log store and state machine that openraft drives.
pub fn open(data_dir: &Path) -> Result<(LogStore, StateMachineStore), OpenError> {
    std::fs::create_dir_all(data_dir).map_err(|source| OpenError::CreateDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let path = data_dir.join(DB_FILE);
    let db_err = |e: redb::Error| OpenError::Db {
        path: path.clone(),
        source: Box::new(e),
    };
    let db = Database::create(&path).map_err(|e| db_err(e.into()))?;
    // Create the tables once, so that readers never meet a missing table.
    let txn = db.begin_write().map_err(|e| db_err(e.into()))?;
    for table in [META, SNAPSHOT] {
        txn.open_table(table).map_err(|e| db_err(e.into()))?;
    }
    txn.open_table(LOGS).map_err(|e| db_err(e.into()))?;
    txn.commit().map_err(|e| db_err(e.into()))?;

    let db = Arc::new(db);
    let sm = StateMachineStore::load(db.clone()).map_err(|e| match e {
        state_machine::LoadError::Db(e) => db_err(e),
        state_machine::LoadError::Codec(source) => OpenError::Snapshot {
            path: path.clone(),
            source,
        },
    })?;
    Ok((LogStore::new(db), sm))
}
