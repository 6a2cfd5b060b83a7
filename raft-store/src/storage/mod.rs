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
    #[error(
        "Raft database {path} is corrupt ({what}); it was left as it is: restore it, or take \
         the node out (slotctl node remove) and add it back with an empty data directory"
    )]
    Corrupt { path: PathBuf, what: String },
}

/// Reads every record of the database and decodes it as its reader will:
/// the log entries, the vote and the committed and purged ids, the
/// snapshot. Tables not created yet are fine (a database from a first
/// start that stopped early).
fn verify(db: &Database) -> Result<(), String> {
    use crate::types::typ::{Entry, LogId, Vote};
    use redb::{ReadableDatabase, ReadableTable, TableError};
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    match txn.open_table(LOGS) {
        Ok(table) => {
            let mut expected = None;
            for row in table.iter().map_err(|e| e.to_string())? {
                let (index, raw) = row.map_err(|e| e.to_string())?;
                let index = index.value();
                let entry: Entry = crate::codec::decode(raw.value()).map_err(|e| format!("log entry {index}: {e}"))?;
                if entry.log_id.index != index {
                    return Err(format!("log entry {index} says it is entry {}", entry.log_id.index));
                }
                if expected.is_some_and(|e| e != index) {
                    return Err(format!("log entries jump to {index}"));
                }
                expected = Some(index + 1);
            }
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    match txn.open_table(META) {
        Ok(table) => {
            for row in table.iter().map_err(|e| e.to_string())? {
                let (key, raw) = row.map_err(|e| e.to_string())?;
                let (key, raw) = (key.value(), raw.value());
                let bad = |e: CodecError| format!("record {key:?}: {e}");
                match key {
                    KEY_VOTE => drop(crate::codec::decode::<Vote>(raw).map_err(bad)?),
                    KEY_COMMITTED => drop(crate::codec::decode::<Option<LogId>>(raw).map_err(bad)?),
                    KEY_LAST_PURGED => drop(crate::codec::decode::<LogId>(raw).map_err(bad)?),
                    other => return Err(format!("unknown record {other:?}")),
                }
            }
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    match txn.open_table(SNAPSHOT) {
        Ok(table) => {
            if let Some(raw) = table.get(KEY_SNAPSHOT).map_err(|e| e.to_string())? {
                state_machine::check_snapshot(raw.value()).map_err(|e| format!("snapshot: {e}"))?;
            }
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    Ok(())
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
    let existed = path.exists();
    // An existing file is read whole before anything is written: a damaged
    // file is refused (never half-read into a running node) and left as it
    // is. redb answers some damage with a panic, not an error.
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let db = Database::create(&path).map_err(|e| Err(db_err(e.into())))?;
        if existed {
            verify(&db).map_err(Ok)?;
        }
        Ok(db)
    }));
    let corrupt = |what: String| OpenError::Corrupt {
        path: path.clone(),
        what,
    };
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(Err(e))) => return Err(e),
        Ok(Err(Ok(what))) => return Err(corrupt(what)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "reading it failed".to_owned());
            return Err(corrupt(what));
        }
    };
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
