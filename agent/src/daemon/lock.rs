//! The agent lock: `<runtime_dir>/agent.lock`, held (an exclusive `flock`) by
//! the running agent for its whole life and by `slotd fence` while it runs.
//! The kernel drops it when the holder dies, however it dies.
//!
//! It is what makes a fence notice safe to act on at once (DESIGN rule 6):
//! while `slotd fence` holds the lock, no agent process of this node runs,
//! so none can hold a lease; and `slotd fence` refuses to run beside a live
//! agent, whose addresses it would otherwise pull from under it.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// File name of the lock in the runtime directory.
pub const LOCK_FILE: &str = "agent.lock";

/// Held until dropped.
#[derive(Debug)]
pub struct AgentLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: held by another process (a running slotd agent, or `slotd fence`)")]
    Held { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Takes the lock in `dir` (the runtime directory: a tmpfs, not the data
/// disk, so that a stuck disk does not hold up the fence), creating the
/// directory and file if needed, without waiting.
pub fn acquire(dir: &Path) -> Result<AgentLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(AgentLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(LockError::Held { path }),
        Err(TryLockError::Error(e)) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path()).unwrap();
        assert!(matches!(acquire(dir.path()), Err(LockError::Held { .. })));
        drop(first);
        assert!(acquire(dir.path()).is_ok(), "free again once the holder is gone");
    }
}
