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

/// Bytes of the sync log not yet replicated (`conf` = configdirectory);
/// `None` if a file cannot be looked at (unknown is not empty).
pub fn pending_bytes(conf: &Path) -> Option<u64> {
    let mut total = 0;
    for f in PENDING {
        match std::fs::metadata(conf.join("sync").join(f)) {
            Ok(m) => total += m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => return None,
        }
    }
    Some(total)
}

/// How long the oldest pending change has waited: since the sync log file
/// that holds it was created (`log-run` is older than `log`).
pub fn oldest_age(conf: &Path) -> Option<std::time::Duration> {
    PENDING
        .iter()
        .filter_map(|f| std::fs::metadata(conf.join("sync").join(f)).ok())
        .filter_map(|m| m.created().or_else(|_| m.modified()).ok())
        .min()
        .and_then(|t| t.elapsed().ok())
}

/// Whether any sync log file is left; an error if that cannot be told (a
/// flush must not report an empty log it could not see).
pub fn has_pending(conf: &Path) -> io::Result<bool> {
    for f in PENDING {
        if conf.join("sync").join(f).try_exists()? {
            return Ok(true);
        }
    }
    Ok(false)
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

/// Where leftovers go once replayed, or kept without a replay.
pub const REPLAYED_DIR: &str = "sync-replayed";
pub const KEPT_DIR: &str = "sync-kept";

/// Every leftover set aside and not yet dealt with, one after another
/// (oldest first), at most `limit` bytes; `None` if there is none.
pub fn leftover_log(conf: &Path, limit: usize) -> io::Result<Option<String>> {
    let dir = conf.join(LEFTOVER_DIR);
    let mut stamps: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(d) => d
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if stamps.is_empty() {
        return Ok(None);
    }
    stamps.sort();
    // A replay needs each mailbox once: the same line twice says nothing
    // more (an hour of deliveries is a few distinct lines per mailbox).
    let mut seen = std::collections::BTreeSet::new();
    let mut log = String::new();
    for stamp in stamps {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&stamp)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        // log-run was being sent when the master died: it comes first.
        files.sort_by_key(|f| (f.file_name().is_none_or(|n| n != "log-run"), f.clone()));
        for f in files {
            let text = std::fs::read_to_string(&f)?;
            for line in text.lines().filter(|l| !l.is_empty()) {
                if !seen.insert(line.to_owned()) {
                    continue;
                }
                if log.len() + line.len() + 1 > limit {
                    return Err(io::Error::other(format!("leftover sync log over {limit} bytes")));
                }
                log.push_str(line);
                log.push('\n');
            }
        }
    }
    Ok(Some(log))
}

/// Moves every waiting leftover to `sync-replayed/` or `sync-kept/`.
pub fn finish(conf: &Path, replayed: bool) -> io::Result<()> {
    let dir = conf.join(LEFTOVER_DIR);
    let to = conf.join(if replayed { REPLAYED_DIR } else { KEPT_DIR });
    let entries = match std::fs::read_dir(&dir) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    std::fs::create_dir_all(&to)?;
    for e in entries.flatten() {
        std::fs::rename(e.path(), to.join(e.file_name()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_counts_log_and_log_run_and_leftovers_go_aside() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path();
        assert_eq!(pending_bytes(conf), Some(0));
        assert_eq!(set_aside(conf, 1).unwrap(), None);
        std::fs::create_dir_all(conf.join("sync")).unwrap();
        std::fs::write(conf.join("sync/log"), b"APPEND user.bob\n").unwrap();
        std::fs::write(conf.join("sync/log-run"), b"MAILBOX user.bob\n").unwrap();
        std::fs::write(conf.join("sync/log-1234"), b"x\n").unwrap();
        assert_eq!(pending_bytes(conf), Some(33));
        assert!(has_pending(conf).unwrap());
        assert!(oldest_age(conf).is_some_and(|a| a < std::time::Duration::from_secs(60)));
        let aside = set_aside(conf, 7).unwrap().expect("moved");
        assert_eq!(aside, conf.join("sync-leftover/7"));
        assert!(aside.join("log").exists() && aside.join("log-run").exists() && aside.join("log-1234").exists());
        assert!(!has_pending(conf).unwrap());
        assert_eq!(pending_bytes(conf), Some(0));
        let log = leftover_log(conf, 1 << 20).unwrap().expect("waiting");
        assert!(log.starts_with("MAILBOX user.bob\n"), "log-run first: {log:?}");
        assert_eq!(log.lines().count(), 3, "each line once: {log:?}");
        assert!(leftover_log(conf, 4).is_err(), "over the limit");
        finish(conf, true).unwrap();
        assert_eq!(leftover_log(conf, 1 << 20).unwrap(), None);
        assert!(conf.join("sync-replayed/7/log").exists());
    }
}
