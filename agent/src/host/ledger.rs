//! The ledger: the addresses this node may hold, written *before* each bind
//! and trimmed to what is held after each pass. It lives in the runtime
//! directory (`/run/slotd/ledger` by default, a tmpfs: empty after a reboot,
//! as the interface is), not with the Raft data, so that `slotd fence`
//! releases every address in it even when the data directory is unreadable
//! or corrupt. Each address is also tagged on the interface
//! (`BoundAddress::ours`): either record alone finds it.
//!
//! One line per address, readable by an operator: `ADDRESS/LEN STORE`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use slotd_raft_store::ServiceIp;

/// File name of the ledger in the runtime directory.
pub const LEDGER_FILE: &str = "ledger";

/// What the ledger says of one address: which store it was bound for.
pub type Entries = BTreeMap<IpAddr, (ServiceIp, String)>;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Lines that could not be read (reported, not fatal: every readable line
/// still counts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unreadable(pub Vec<String>);

#[derive(Clone, Debug)]
pub struct Ledger {
    path: PathBuf,
    /// One write at a time (they share the temporary file), and the number
    /// of the last one written: an older write that arrives late (its
    /// caller gave up waiting) does not overwrite a newer one.
    writing: std::sync::Arc<std::sync::Mutex<u64>>,
}

impl Ledger {
    /// The ledger in `runtime_dir`.
    pub fn new(runtime_dir: &Path) -> Ledger {
        Ledger {
            path: runtime_dir.join(LEDGER_FILE),
            writing: Default::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its entries (none if there is no file), and the lines it could not
    /// read.
    pub fn read(&self) -> Result<(Entries, Unreadable), LedgerError> {
        let text = match std::fs::read(&self.path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
            Err(source) => {
                return Err(LedgerError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        Ok(parse(&text))
    }

    /// Its entries, saying (at warn) what could not be read and what the
    /// caller does `instead` (the interface's tags still show every address).
    pub fn read_or_warn(&self, instead: &str) -> Entries {
        match self.read() {
            Ok((entries, bad)) => {
                if !bad.0.is_empty() {
                    tracing::warn!(ledger = %self.path.display(), lines = ?bad.0, "unreadable ledger lines ignored");
                }
                entries
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the ledger; {instead}");
                Entries::new()
            }
        }
    }

    /// Replaces its entries, durably: a temporary file, synced, renamed
    /// over the old one, the directory synced (creating it if needed).
    pub fn write(&self, entries: &Entries) -> Result<(), LedgerError> {
        let mut last = self.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *last += 1;
        self.write_locked(entries)
    }

    /// Writes `entries` as write number `seq`, unless a later one was
    /// written already (then it is dropped: `Ok(false)`).
    pub fn write_numbered(&self, entries: &Entries, seq: u64) -> Result<bool, LedgerError> {
        let mut last = self.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seq <= *last {
            return Ok(false);
        }
        self.write_locked(entries)?;
        *last = seq;
        Ok(true)
    }

    fn write_locked(&self, entries: &Entries) -> Result<(), LedgerError> {
        let io = |source| LedgerError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        crate::host::durable::replace(&self.path, render(entries).as_bytes()).map_err(io)
    }
}

fn render(entries: &Entries) -> String {
    entries.values().map(|(ip, store)| format!("{ip} {store}\n")).collect()
}

fn parse(text: &str) -> (Entries, Unreadable) {
    let mut entries = Entries::new();
    let mut bad = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut words = line.split_whitespace();
        let ip = words.next().and_then(|w| w.parse::<ServiceIp>().ok());
        match ip {
            Some(ip) => {
                let store = words.next().unwrap_or("").to_owned();
                entries.insert(ip.addr, (ip, store));
            }
            None => bad.push(line.chars().take(80).collect()),
        }
    }
    (entries, Unreadable(bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damaged_lines() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(&dir.path().join("run"));
        assert_eq!(ledger.read().unwrap(), Default::default(), "no file: empty");
        let mut e = Entries::new();
        let a: ServiceIp = "10.64.0.1/32".parse().unwrap();
        let b: ServiceIp = "fd00::7/128".parse().unwrap();
        e.insert(a.addr, (a, "st0001".into()));
        e.insert(b.addr, (b, "st0002".into()));
        ledger.write(&e).unwrap();
        assert_eq!(ledger.read().unwrap(), (e.clone(), Unreadable::default()));
        let text = std::fs::read_to_string(ledger.path()).unwrap();
        assert_eq!(text, "10.64.0.1/32 st0001\nfd00::7/128 st0002\n");
        // A late, older write does not overwrite a newer one.
        let mut newer = e.clone();
        newer.remove(&b.addr);
        assert!(ledger.write_numbered(&newer, 10).unwrap());
        assert!(!ledger.write_numbered(&e, 9).unwrap());
        assert_eq!(ledger.read().unwrap().0, newer);
        // A damaged file: every readable line still counts.
        std::fs::write(ledger.path(), "garbage\n10.64.0.1/32 st0001\n\u{0}\u{1}x\n").unwrap();
        let (read, bad) = ledger.read().unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(bad.0.len(), 2);
    }
}
