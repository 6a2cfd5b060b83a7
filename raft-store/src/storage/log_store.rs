//! openraft's `RaftLogStorage` on redb.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE, LOGS, META};
use crate::codec;
use crate::types::typ::{Entry, LogId, LogState, StorageError, StorageIOError, Vote};
use crate::types::TypeConfig;

/// The Raft log, vote and committed id. Cheap to clone: clones share the
/// database, which is how openraft gets its separate log reader.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

fn read_logs_err(e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_logs_err(e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Write, e)
}

impl LogStore {
    pub(super) fn new(db: Arc<Database>) -> Self {
        LogStore { db }
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str, subject: ErrorSubject<u64>) -> Result<Option<T>, StorageError> {
        let err = |e: &dyn std::error::Error| {
            StorageIOError::new(
                subject.clone(),
                ErrorVerb::Read,
                openraft::AnyError::error(e.to_string()),
            )
        };
        let txn = self.db.begin_read().map_err(|e| err(&e))?;
        let table = txn.open_table(META).map_err(|e| err(&e))?;
        let Some(raw) = table.get(key).map_err(|e| err(&e))? else {
            return Ok(None);
        };
        Ok(Some(codec::decode(raw.value()).map_err(|e| err(&e))?))
    }

    /// Writes one meta record durably, off the async runtime.
    async fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
        subject: ErrorSubject<u64>,
    ) -> Result<(), StorageError> {
        let bytes = codec::encode(value).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(META)?.insert(key, bytes.as_slice())?;
            super::slow::before_commit();
            txn.commit()?;
            Ok(())
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_err(subject, ErrorVerb::Write, e)),
            Err(join) => Err(io_err(subject, ErrorVerb::Write, join)),
        }
    }

    /// Runs a write transaction on the log table off the async runtime.
    async fn write_logs<F>(&self, f: F) -> Result<(), StorageError>
    where
        F: FnOnce(&mut redb::Table<u64, &[u8]>) -> Result<(), redb::Error> + Send + 'static,
    {
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(LOGS)?;
                f(&mut table)?;
            }
            super::slow::before_commit();
            txn.commit()?;
            Ok(())
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(write_logs_err(e)),
            Err(join) => Err(write_logs_err(join)),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let txn = self.db.begin_read().map_err(read_logs_err)?;
        let table = txn.open_table(LOGS).map_err(read_logs_err)?;
        let mut entries = Vec::new();
        for item in table.range(start..).map_err(read_logs_err)? {
            let (index, raw) = item.map_err(read_logs_err)?;
            if !range.contains(&index.value()) {
                break;
            }
            let entry: Entry = codec::decode(raw.value()).map_err(read_logs_err)?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        let last_purged: Option<LogId> = self.read_meta(KEY_LAST_PURGED, ErrorSubject::Store)?;
        let txn = self.db.begin_read().map_err(read_logs_err)?;
        let table = txn.open_table(LOGS).map_err(read_logs_err)?;
        let last = match table.last().map_err(read_logs_err)? {
            Some((_, raw)) => Some(codec::decode::<Entry>(raw.value()).map_err(read_logs_err)?.log_id),
            None => None,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.max(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(KEY_VOTE, vote, ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(KEY_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.write_meta(KEY_COMMITTED, &committed, ErrorSubject::Store).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .read_meta::<Option<LogId>>(KEY_COMMITTED, ErrorSubject::Store)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(write_logs_err)?;
            encoded.push((entry.log_id.index, bytes));
        }
        let result = self
            .write_logs(move |table| {
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice())?;
                }
                Ok(())
            })
            .await;
        // The commit above fsynced: only now may openraft count these
        // entries as persisted (and vote or ack on them).
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = log_id.index;
        self.write_logs(move |table| {
            table.retain_in(from.., |_, _| false)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge point and the removal in one transaction: the log state
        // read after a crash is always one openraft could have left.
        let point = codec::encode(&log_id).map_err(write_logs_err)?;
        let upto = log_id.index;
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(META)?.insert(KEY_LAST_PURGED, point.as_slice())?;
            txn.open_table(LOGS)?.retain_in(..=upto, |_, _| false)?;
            super::slow::before_commit();
            txn.commit()?;
            Ok(())
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(write_logs_err(e)),
            Err(join) => Err(write_logs_err(join)),
        }
    }
}
