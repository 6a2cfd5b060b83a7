//! openraft's `RaftLogStorage` on redb.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;
use tracing::warn;

use super::{KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE, LOGS, META};
use crate::codec;
use crate::types::typ::{Entry, LogId, LogState, StorageError, StorageIOError, Vote};
use crate::types::TypeConfig;

/// The Raft log, vote and committed id. Cheap to clone: clones share the
/// database and the writer, which is how openraft gets its separate log
/// reader.
///
/// Every write goes through one writer thread, in the order it was asked
/// for. An append returns at once: its entries are readable from memory
/// until the writer has committed them (fsync) and told openraft through
/// the callback. (openraft 0.9's core still waits for that callback before
/// it goes on, so today one append is in flight at a time; the writer is
/// ready for a core that pipelines them.) The vote, a truncation and a
/// purge wait for the writer (they are rare, and must be durable, in
/// order, when they return); the commit point does not: it is written
/// after the appends before it, so never ahead of the durable log, and one
/// lost in a crash is only re-learned. That saves the core a second fsync
/// per write (on a slow disk, a write through the leader took half as long).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    pending: Arc<Mutex<Pending>>,
    // Dropped in this order: the last clone's sender, then the writer's
    // end, which waits for the writer to finish.
    jobs: mpsc::Sender<Job>,
    _writer: Arc<WriterEnd>,
}

/// How long the last clone dropped waits for the writer to finish what it
/// was asked (its commits and callbacks), so that the database is closed
/// once the store is gone and can be opened again at once.
const WRITER_DRAIN: Duration = Duration::from_secs(5);

/// Shared by every clone; dropped with the last.
struct WriterEnd {
    finished: Mutex<mpsc::Receiver<()>>,
}

impl Drop for WriterEnd {
    fn drop(&mut self) {
        let finished = self.finished.lock().unwrap_or_else(PoisonError::into_inner);
        // Disconnected once the writer has returned (it never sends).
        let _ = finished.recv_timeout(WRITER_DRAIN);
    }
}

/// Entries appended and not yet committed by the writer, by index, each
/// with the sequence number of its append (an entry appended again after a
/// truncation must not be dropped when the older write lands).
#[derive(Default)]
struct Pending {
    entries: BTreeMap<u64, (u64, Arc<[u8]>)>,
    seq: u64,
    /// The commit point last saved, whether the writer has written it yet
    /// or not (it is read back from here until the next start).
    committed: Option<Option<LogId>>,
}

type Write = Box<dyn FnOnce(&Database) -> Result<(), redb::Error> + Send>;

enum Job {
    Append {
        rows: Vec<(u64, u64, Arc<[u8]>)>,
        callback: LogFlushed<TypeConfig>,
    },
    Write {
        write: Write,
        done: Option<oneshot::Sender<Result<(), String>>>,
    },
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

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct WriteFailed(String);

fn lock(p: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer: commits appends (a run of them in one transaction) and
/// writes in order, until every `LogStore` is dropped.
fn writer(db: Arc<Database>, pending: Arc<Mutex<Pending>>, jobs: mpsc::Receiver<Job>, finished: mpsc::Sender<()>) {
    write_all(&db, &pending, &jobs);
    // The database first: whoever waits on `finished` may open it again.
    drop(db);
    drop(finished);
}

fn write_all(db: &Database, pending: &Mutex<Pending>, jobs: &mpsc::Receiver<Job>) {
    let mut next = None;
    // After the first failed write nothing more is written: what came
    // after it in the queue must not land without it (a gap in the log, a
    // commit point past what is stored). openraft stops on the error.
    let mut failed: Option<String> = None;
    loop {
        let Some(job) = next.take().or_else(|| jobs.recv().ok()) else {
            return;
        };
        match job {
            Job::Write { write, done } => {
                let result = match &failed {
                    Some(first) => Err(format!("not written: an earlier write failed ({first})")),
                    None => write(db).map_err(|e| e.to_string()),
                };
                if let Err(e) = &result {
                    failed.get_or_insert_with(|| e.clone());
                }
                match done {
                    Some(done) => {
                        let _ = done.send(result);
                    }
                    None => {
                        if let Err(e) = result {
                            warn!(error = %e, "a write of the Raft data failed");
                        }
                    }
                }
            }
            Job::Append { rows, callback } => {
                let mut batch = vec![(rows, callback)];
                while let Ok(more) = jobs.try_recv() {
                    match more {
                        Job::Append { rows, callback } => batch.push((rows, callback)),
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                let result = (|| -> Result<(), String> {
                    if let Some(first) = &failed {
                        return Err(format!("not written: an earlier write failed ({first})"));
                    }
                    let txn = db.begin_write().map_err(|e| e.to_string())?;
                    {
                        let mut table = txn.open_table(LOGS).map_err(|e| e.to_string())?;
                        for (index, _, bytes) in batch.iter().flat_map(|(rows, _)| rows) {
                            table.insert(*index, &bytes[..]).map_err(|e| e.to_string())?;
                        }
                    }
                    super::slow::before_commit();
                    txn.commit().map_err(|e| e.to_string())?;
                    Ok(())
                })();
                if let Err(e) = &result {
                    failed.get_or_insert_with(|| e.clone());
                }
                {
                    let mut p = lock(pending);
                    for (index, seq, _) in batch.iter().flat_map(|(rows, _)| rows) {
                        if p.entries.get(index).is_some_and(|(s, _)| s == seq) {
                            p.entries.remove(index);
                        }
                    }
                }
                // Committed (fsynced): only now may openraft count these
                // entries as persisted (and vote or ack on them).
                for (_, callback) in batch {
                    match &result {
                        Ok(()) => callback.log_io_completed(Ok(())),
                        Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.clone()))),
                    }
                }
            }
        }
    }
}

impl LogStore {
    pub(super) fn new(db: Arc<Database>) -> Result<Self, std::io::Error> {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (jobs, rx) = mpsc::channel();
        let (finished_tx, finished) = mpsc::channel();
        let (w_db, w_pending) = (db.clone(), pending.clone());
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer(w_db, w_pending, rx, finished_tx))?;
        Ok(LogStore {
            db,
            pending,
            jobs,
            _writer: Arc::new(WriterEnd {
                finished: Mutex::new(finished),
            }),
        })
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

    /// Runs `write` (one durable transaction) on the writer, after
    /// everything asked for before; waits for it unless `wait` is false.
    async fn write(&self, write: Write, wait: bool, subject: ErrorSubject<u64>) -> Result<(), StorageError> {
        let gone = || {
            io_err(
                subject.clone(),
                ErrorVerb::Write,
                WriteFailed("the log writer has stopped".into()),
            )
        };
        if !wait {
            return self.jobs.send(Job::Write { write, done: None }).map_err(|_| gone());
        }
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job::Write {
                write,
                done: Some(done),
            })
            .map_err(|_| gone())?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_err(subject, ErrorVerb::Write, WriteFailed(e))),
            Err(_) => Err(gone()),
        }
    }

    /// Writes one meta record durably, in order with the log.
    async fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
        subject: ErrorSubject<u64>,
        wait: bool,
    ) -> Result<(), StorageError> {
        let bytes = codec::encode(value).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
        let write: Write = Box::new(move |db: &Database| {
            let txn = db.begin_write()?;
            txn.open_table(META)?.insert(key, bytes.as_slice())?;
            super::slow::before_commit();
            txn.commit()?;
            Ok(())
        });
        self.write(write, wait, subject).await
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
        // What is pending first, then the database: an entry the writer
        // commits in between is in one or the other (it leaves the pending
        // ones only once committed).
        let pending: Vec<(u64, Arc<[u8]>)> = lock(&self.pending)
            .entries
            .range(start..)
            .take_while(|(i, _)| range.contains(*i))
            .map(|(i, (_, b))| (*i, b.clone()))
            .collect();
        let mut rows: BTreeMap<u64, Arc<[u8]>> = BTreeMap::new();
        let txn = self.db.begin_read().map_err(read_logs_err)?;
        let table = txn.open_table(LOGS).map_err(read_logs_err)?;
        for item in table.range(start..).map_err(read_logs_err)? {
            let (index, raw) = item.map_err(read_logs_err)?;
            if !range.contains(&index.value()) {
                break;
            }
            rows.insert(index.value(), Arc::from(raw.value()));
        }
        rows.extend(pending);
        let mut entries = Vec::with_capacity(rows.len());
        for raw in rows.values() {
            let entry: Entry = codec::decode(raw).map_err(read_logs_err)?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        let last_purged: Option<LogId> = self.read_meta(KEY_LAST_PURGED, ErrorSubject::Store)?;
        let pending_last = lock(&self.pending)
            .entries
            .last_key_value()
            .map(|(_, (_, b))| b.clone());
        let txn = self.db.begin_read().map_err(read_logs_err)?;
        let table = txn.open_table(LOGS).map_err(read_logs_err)?;
        let stored = match table.last().map_err(read_logs_err)? {
            Some((_, raw)) => Some(codec::decode::<Entry>(raw.value()).map_err(read_logs_err)?.log_id),
            None => None,
        };
        let pending = match pending_last {
            Some(raw) => Some(codec::decode::<Entry>(&raw).map_err(read_logs_err)?.log_id),
            None => None,
        };
        let last = stored.max(pending);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.max(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(KEY_VOTE, vote, ErrorSubject::Vote, true).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(KEY_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not waited for: written after every append asked for before it
        // (so never ahead of the durable log), and a commit point lost in a
        // crash is only re-learned from the leader.
        lock(&self.pending).committed = Some(committed);
        self.write_meta(KEY_COMMITTED, &committed, ErrorSubject::Store, false)
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        if let Some(saved) = lock(&self.pending).committed {
            return Ok(saved);
        }
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
            encoded.push((entry.log_id.index, Arc::<[u8]>::from(bytes)));
        }
        let rows = {
            let mut p = lock(&self.pending);
            p.seq += 1;
            let seq = p.seq;
            let rows: Vec<(u64, u64, Arc<[u8]>)> = encoded.into_iter().map(|(i, b)| (i, seq, b)).collect();
            for (i, seq, b) in &rows {
                p.entries.insert(*i, (*seq, b.clone()));
            }
            rows
        };
        // The writer calls back once these are committed.
        self.jobs
            .send(Job::Append { rows, callback })
            .map_err(|_| write_logs_err(WriteFailed("the log writer has stopped".into())))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = log_id.index;
        lock(&self.pending).entries.retain(|i, _| *i < from);
        let write: Write = Box::new(move |db: &Database| {
            let txn = db.begin_write()?;
            txn.open_table(LOGS)?.retain_in(from.., |_, _| false)?;
            super::slow::before_commit();
            txn.commit()?;
            Ok(())
        });
        self.write(write, true, ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge point and the removal in one transaction: the log state
        // read after a crash is always one openraft could have left.
        let point = codec::encode(&log_id).map_err(write_logs_err)?;
        let upto = log_id.index;
        lock(&self.pending).entries.retain(|i, _| *i > upto);
        let write: Write = Box::new(move |db: &Database| {
            let txn = db.begin_write()?;
            txn.open_table(META)?.insert(KEY_LAST_PURGED, point.as_slice())?;
            txn.open_table(LOGS)?.retain_in(..=upto, |_, _| false)?;
            super::slow::before_commit();
            txn.commit()?;
            Ok(())
        });
        self.write(write, true, ErrorSubject::Logs).await
    }
}
