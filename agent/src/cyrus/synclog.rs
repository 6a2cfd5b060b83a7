//! A master's sync log (`conf/sync/log`, and `log-run` while the rolling
//! sync_client works on it): its size is the backlog the leader is told;
//! after an unclean failover, what is left of it is set aside before the
//! slot runs as replica (lab pitfall 13: a replica ignores it, but the slot
//! would resend it if it became master again).

use std::io;
use std::path::{Path, PathBuf};

/// The files that hold changes not yet sent.
const PENDING: [&str; 2] = ["log", "log-run"];

/// Where leftovers go, below the config directory.
pub const LEFTOVER_DIR: &str = "sync-leftover";

/// Bytes of the sync log not yet replicated (`conf` = configdirectory).
pub fn pending_bytes(conf: &Path) -> u64 {
    PENDING
        .iter()
        .filter_map(|f| std::fs::metadata(conf.join("sync").join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Whether any sync log file is left.
pub fn has_pending(conf: &Path) -> bool {
    PENDING.iter().any(|f| conf.join("sync").join(f).exists())
}

/// Moves every leftover sync log file (`log`, `log-run`, `log-*`) into
/// `conf/sync-leftover/<stamp>/`; the directory, if anything was moved.
pub fn set_aside(conf: &Path, stamp: u64) -> io::Result<Option<PathBuf>> {
    let sync = conf.join("sync");
    let files: Vec<PathBuf> = match std::fs::read_dir(&sync) {
        Ok(dir) => dir
            .filter_map(|e| e.ok())
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name == "log" || name.starts_with("log-")
            })
            .map(|e| e.path())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if files.is_empty() {
        return Ok(None);
    }
    let aside = conf.join(LEFTOVER_DIR).join(stamp.to_string());
    std::fs::create_dir_all(&aside)?;
    for f in files {
        if let Some(name) = f.file_name() {
            std::fs::rename(&f, aside.join(name))?;
        }
    }
    Ok(Some(aside))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_counts_log_and_log_run_and_leftovers_go_aside() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path();
        assert_eq!(pending_bytes(conf), 0);
        assert_eq!(set_aside(conf, 1).unwrap(), None);
        std::fs::create_dir_all(conf.join("sync")).unwrap();
        std::fs::write(conf.join("sync/log"), b"APPEND user.bob\n").unwrap();
        std::fs::write(conf.join("sync/log-run"), b"MAILBOX user.bob\n").unwrap();
        std::fs::write(conf.join("sync/log-1234"), b"x\n").unwrap();
        assert_eq!(pending_bytes(conf), 33);
        assert!(has_pending(conf));
        let aside = set_aside(conf, 7).unwrap().expect("moved");
        assert_eq!(aside, conf.join("sync-leftover/7"));
        assert!(aside.join("log").exists() && aside.join("log-run").exists() && aside.join("log-1234").exists());
        assert!(!has_pending(conf));
        assert_eq!(pending_bytes(conf), 0);
    }
}
