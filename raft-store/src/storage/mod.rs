//! Durable Raft storage on one redb file per node (`<data_dir>/raft.redb`):
//! the log, the vote, the committed id, and the latest snapshot.
//!
//! The state machine itself lives in memory and is rebuilt at start from the
//! latest snapshot plus the committed log after it (openraft re-applies from
//! `read_committed`). Every write transaction is committed with redb's
//! default durability (fsync) before openraft is told it is done; the log's
//! go through one writer thread, so that appends do not hold up the Raft
//! core (see `LogStore`).

// openraft's traits fix the error type (`StorageError`, ~224 bytes); boxing it
// in our helpers would only mean unboxing it at every trait method.
#![allow(clippy::result_large_err)]

mod log_store;
pub mod slow;
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
    #[error("cannot start the writer of Raft database {path}: {source}")]
    Writer { path: PathBuf, source: std::io::Error },
    #[error("Raft database {path}: stored snapshot is unreadable: {source}")]
    Snapshot { path: PathBuf, source: CodecError },
    #[error(
        "Raft database {path} is corrupt ({what}); it was left as it is: restore it, or take \
         the node out (slotctl node remove) and add it back with an empty data directory"
    )]
    Corrupt { path: PathBuf, what: String },
    #[error("Raft database {path} was written by a newer slotd ({what}); run that version, or restore a copy")]
    Newer { path: PathBuf, what: String },
    #[error(
        "Raft database {path} was written by an older slotd ({what}) whose format this one cannot read; \
         run that version, or take the node out (slotctl node remove) and add it back with an empty data directory"
    )]
    Older { path: PathBuf, what: String },
}

/// Reads every record of the database and decodes it as its reader will:
/// the log entries, the vote and the committed and purged ids, the
/// snapshot. Tables not created yet are fine (a database from a first
/// start that stopped early).
fn verify(db: &impl redb::ReadableDatabase) -> Result<(), Found> {
    use crate::types::typ::{Entry, LogId, Vote};
    use redb::{ReadableTable, TableError};
    let txn = db.begin_read().map_err(|e| Found::from(e.to_string()))?;
    match txn.open_table(LOGS) {
        Ok(table) => {
            let mut expected = None;
            for row in table.iter().map_err(|e| Found::from(e.to_string()))? {
                let (index, raw) = row.map_err(|e| Found::from(e.to_string()))?;
                let index = index.value();
                let entry: Entry =
                    crate::codec::decode(raw.value()).map_err(|e| Found::of(e, &format!("log entry {index}")))?;
                if entry.log_id.index != index {
                    return Err(format!("log entry {index} says it is entry {}", entry.log_id.index).into());
                }
                if expected.is_some_and(|e| e != index) {
                    return Err(format!("log entries jump to {index}").into());
                }
                expected = Some(index + 1);
            }
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.to_string().into()),
    }
    match txn.open_table(META) {
        Ok(table) => {
            for row in table.iter().map_err(|e| Found::from(e.to_string()))? {
                let (key, raw) = row.map_err(|e| Found::from(e.to_string()))?;
                let (key, raw) = (key.value(), raw.value());
                let bad = |e: CodecError| Found::of(e, &format!("record {key:?}"));
                match key {
                    KEY_VOTE => drop(crate::codec::decode::<Vote>(raw).map_err(bad)?),
                    KEY_COMMITTED => drop(crate::codec::decode::<Option<LogId>>(raw).map_err(bad)?),
                    KEY_LAST_PURGED => drop(crate::codec::decode::<LogId>(raw).map_err(bad)?),
                    other => return Err(format!("unknown record {other:?}").into()),
                }
            }
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.to_string().into()),
    }
    match txn.open_table(SNAPSHOT) {
        Ok(table) => {
            if let Some(raw) = table.get(KEY_SNAPSHOT).map_err(|e| Found::from(e.to_string()))? {
                state_machine::check_snapshot(raw.value()).map_err(|e| Found::of(e, "snapshot"))?;
            }
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.to_string().into()),
    }
    Ok(())
}

/// What reading a database found wrong with it.
#[derive(Debug)]
enum Found {
    /// Damage (or something this slotd cannot make sense of).
    Damaged(String),
    /// Records of a format a newer slotd writes.
    Newer(String),
    /// Records of a format an older slotd wrote, which this one cannot read.
    Older(String),
}

impl From<String> for Found {
    fn from(what: String) -> Found {
        Found::Damaged(what)
    }
}

impl Found {
    /// A record `what` that does not decode.
    fn of(e: CodecError, what: &str) -> Found {
        match e {
            CodecError::Version { found } if found < crate::codec::FORMAT_VERSION => {
                Found::Older(format!("{what}: {e}"))
            }
            CodecError::Version { .. } => Found::Newer(format!("{what}: {e}")),
            e => Found::Damaged(format!("{what}: {e}")),
        }
    }

    /// The refusal naming `path`.
    fn refusal(self, path: &Path) -> OpenError {
        let path = path.to_owned();
        match self {
            Found::Damaged(what) => OpenError::Corrupt { path, what },
            Found::Newer(what) => OpenError::Newer { path, what },
            Found::Older(what) => OpenError::Older { path, what },
        }
    }

    fn also(self, more: &str) -> Found {
        match self {
            Found::Damaged(what) => Found::Damaged(format!("{what}; {more}")),
            Found::Newer(what) => Found::Newer(format!("{what}; {more}")),
            Found::Older(what) => Found::Older(format!("{what}; {more}")),
        }
    }
}

/// Runs `f`, turning a panic (redb answers some damage with one) into
/// damage that says what it was.
fn guarded<T>(f: impl FnOnce() -> Result<T, Found>) -> Result<T, Found> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        Err(Found::Damaged(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "reading it failed".to_owned()),
        ))
    })
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
    // An existing file is read whole before anything is written: a damaged
    // file is refused (never half-read into a running node) and left as it
    // is. A file a crash left open needs redb's repair, which writes: a
    // copy of it as it was is kept until it has been read whole.
    let mut unrepaired = None;
    if path.exists() {
        match guarded(|| match redb::ReadOnlyDatabase::open(&path) {
            Ok(ro) => verify(&ro).map(|()| true),
            Err(redb::DatabaseError::RepairAborted) => Ok(false),
            Err(e) => Err(format!("cannot open it: {e}").into()),
        }) {
            Ok(true) => {}
            Ok(false) => {
                let copy = path.with_extension("redb.unrepaired");
                std::fs::copy(&path, &copy).map_err(|e| OpenError::Corrupt {
                    path: path.clone(),
                    what: format!(
                        "it needs a repair, and keeping a copy at {} first failed: {e}",
                        copy.display()
                    ),
                })?;
                unrepaired = Some(copy);
            }
            Err(found) => return Err(found.refusal(&path)),
        }
    }
    let db = guarded(|| {
        let db = Database::create(&path).map_err(|e| Found::from(format!("cannot open it: {e}")))?;
        if unrepaired.is_some() {
            verify(&db)?;
        }
        Ok(db)
    });
    let db = match db {
        Ok(db) => db,
        Err(found) => {
            let found = match &unrepaired {
                Some(copy) => found.also(&format!(
                    "after redb's repair (the file as it was is kept at {})",
                    copy.display()
                )),
                None => found,
            };
            return Err(found.refusal(&path));
        }
    };
    if let Some(copy) = unrepaired {
        // Repaired and read whole: the copy is not needed.
        let _ = std::fs::remove_file(copy);
    }
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
    let log = LogStore::new(db).map_err(|source| OpenError::Writer { path, source })?;
    Ok((log, sm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::typ::Entry;

    /// Writes rows into the log table of a cleanly closed database.
    fn write_logs(path: &Path, rows: &[(u64, Vec<u8>)]) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut logs = txn.open_table(LOGS).unwrap();
            for (i, bytes) in rows {
                logs.insert(*i, bytes.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    fn entry(index: u64) -> Vec<u8> {
        let id = openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index);
        crate::codec::encode(&Entry {
            log_id: id,
            payload: openraft::EntryPayload::Blank,
        })
        .unwrap()
    }

    #[test]
    fn a_bad_record_is_refused_by_name_without_a_byte_written() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open(dir.path()).is_ok(), "a new database");
        let path = dir.path().join(DB_FILE);
        let mut garbage = entry(2);
        let last = garbage.len() - 1;
        garbage[last] ^= 0xff;
        garbage.truncate(garbage.len() / 2);
        write_logs(&path, &[(1, entry(1)), (2, garbage)]);
        let before = std::fs::read(&path).unwrap();
        let err = open(dir.path()).err().expect("refused");
        let text = err.to_string();
        assert!(matches!(err, OpenError::Corrupt { .. }), "{text}");
        assert!(text.contains("log entry 2") && text.contains(DB_FILE), "{text}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "not a byte written");
    }

    #[test]
    fn entries_out_of_sequence_and_other_formats_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open(dir.path()).is_ok());
        let path = dir.path().join(DB_FILE);
        write_logs(&path, &[(1, entry(1)), (3, entry(3))]);
        let text = open(dir.path()).err().expect("a gap").to_string();
        assert!(text.contains("log entries jump to 3"), "{text}");

        let dir = tempfile::tempdir().unwrap();
        assert!(open(dir.path()).is_ok());
        let path = dir.path().join(DB_FILE);
        let mut newer = entry(1);
        newer[0] = crate::codec::FORMAT_VERSION + 1;
        write_logs(&path, &[(1, newer)]);
        let err = open(dir.path()).err().expect("a newer format");
        assert!(matches!(err, OpenError::Newer { .. }), "{err}");
        assert!(err.to_string().contains("written by a newer slotd"), "{err}");

        // Format 1, from before the state remembered removed nodes.
        let dir = tempfile::tempdir().unwrap();
        assert!(open(dir.path()).is_ok());
        let path = dir.path().join(DB_FILE);
        let mut older = entry(1);
        older[0] = crate::codec::FORMAT_VERSION - 1;
        write_logs(&path, &[(1, older)]);
        let err = open(dir.path()).err().expect("an older format");
        assert!(matches!(err, OpenError::Older { .. }), "{err}");
        assert!(err.to_string().contains("written by an older slotd"), "{err}");
    }

    #[test]
    fn a_healthy_database_opens_again_and_again() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open(dir.path()).is_ok());
        write_logs(&dir.path().join(DB_FILE), &[(1, entry(1)), (2, entry(2))]);
        for _ in 0..3 {
            assert!(open(dir.path()).is_ok());
        }
        assert!(!dir.path().join("raft.redb.unrepaired").exists());
    }
}
