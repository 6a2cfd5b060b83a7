//! The cluster id: drawn when the cluster is bootstrapped (`slotctl init`),
//! given to every node before it takes part (`Peer.Join`, also for `node
//! add`), kept in `<data_dir>/cluster-id`, and carried by every Peer call
//! (the `slotd-cluster-id` header).
//!
//! An agent answers Peer calls only from its own cluster. One that has
//! joined none answers only `Join` (and the bootstrap passed to the first
//! voter): it never votes, grants or applies. So an agent of another
//! cluster, or a fresh one that happens to listen on a recycled address,
//! cannot elect anybody here.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

/// File in the data directory holding the cluster id.
pub const CLUSTER_ID_FILE: &str = "cluster-id";

/// The gRPC metadata key every Peer call carries.
pub const HEADER: &str = "slotd-cluster-id";

/// A cluster's id (64 random bits, shown as 16 hex digits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub u64);

impl ClusterId {
    /// A new random id.
    pub fn random() -> ClusterId {
        ClusterId(crate::random::u64())
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for ClusterId {
    type Err = String;

    fn from_str(s: &str) -> Result<ClusterId, String> {
        let s = s.trim();
        if s.len() != 16 {
            return Err(format!("{s:?} is not 16 hex digits"));
        }
        u64::from_str_radix(s, 16)
            .map(ClusterId)
            .map_err(|_| format!("{s:?} is not 16 hex digits"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {why} (the data directory is damaged; restore it, or remove the node and add it again)")]
    Corrupt { path: PathBuf, why: String },
    #[error("this agent already belongs to cluster {mine}, not {theirs}")]
    OtherCluster { mine: ClusterId, theirs: ClusterId },
}

/// Why a Peer call is not admitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this agent has not joined a cluster yet (it answers only the bootstrap)")]
    NotJoined,
    #[error("the call carries no cluster id")]
    Missing,
    #[error("cluster id mismatch: this agent belongs to cluster {mine}, the call comes from cluster {theirs}")]
    Mismatch { mine: ClusterId, theirs: String },
}

/// This agent's cluster id (if it has joined one), shared by everything
/// that calls or answers peers.
#[derive(Clone, Debug)]
pub struct Identity {
    file: PathBuf,
    id: Arc<RwLock<Option<ClusterId>>>,
}

impl Identity {
    /// Reads the id kept in `data_dir` (none yet if there is no file).
    pub fn load(data_dir: &Path) -> Result<Identity, IdentityError> {
        let file = data_dir.join(CLUSTER_ID_FILE);
        let id = match std::fs::read_to_string(&file) {
            Ok(text) => Some(text.parse().map_err(|why| IdentityError::Corrupt {
                path: file.clone(),
                why,
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(IdentityError::Io { path: file, source }),
        };
        Ok(Identity {
            file,
            id: Arc::new(RwLock::new(id)),
        })
    }

    /// An identity that is not kept on disk (tools, tests).
    pub fn fixed(id: Option<ClusterId>) -> Identity {
        Identity {
            file: PathBuf::new(),
            id: Arc::new(RwLock::new(id)),
        }
    }

    pub fn get(&self) -> Option<ClusterId> {
        *self.id.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins cluster `id`: kept on disk (synced) before it counts. Joining
    /// the cluster it is in already is fine; another one is refused.
    pub fn join(&self, id: ClusterId) -> Result<(), IdentityError> {
        let mut current = self.id.write().unwrap_or_else(PoisonError::into_inner);
        match *current {
            Some(mine) if mine == id => return Ok(()),
            Some(mine) => return Err(IdentityError::OtherCluster { mine, theirs: id }),
            None => {}
        }
        if !self.file.as_os_str().is_empty() {
            crate::host::durable::replace(&self.file, format!("{id}\n").as_bytes()).map_err(|source| {
                IdentityError::Io {
                    path: self.file.clone(),
                    source,
                }
            })?;
        }
        *current = Some(id);
        Ok(())
    }

    /// Whether a call carrying `header` (the caller's cluster id) is
    /// admitted.
    pub fn admit(&self, header: Option<&str>) -> Result<(), Refusal> {
        let Some(mine) = self.get() else {
            return Err(Refusal::NotJoined);
        };
        let Some(theirs) = header else {
            return Err(Refusal::Missing);
        };
        match theirs.parse::<ClusterId>() {
            Ok(id) if id == mine => Ok(()),
            _ => Err(Refusal::Mismatch {
                mine,
                theirs: theirs.chars().take(32).collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_keeps_the_id_and_admits_only_its_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let me = Identity::load(dir.path()).unwrap();
        assert_eq!(me.admit(Some("0000000000000001")), Err(Refusal::NotJoined));
        let id = ClusterId(0xfeed);
        me.join(id).unwrap();
        me.join(id).unwrap();
        assert!(matches!(me.join(ClusterId(1)), Err(IdentityError::OtherCluster { .. })));
        assert_eq!(me.admit(Some("000000000000feed")), Ok(()));
        assert_eq!(me.admit(None), Err(Refusal::Missing));
        assert!(matches!(
            me.admit(Some("000000000000beef")),
            Err(Refusal::Mismatch { .. })
        ));
        assert!(matches!(me.admit(Some("nonsense")), Err(Refusal::Mismatch { .. })));
        // Kept across restarts.
        assert_eq!(Identity::load(dir.path()).unwrap().get(), Some(id));
        // A damaged file is an error, not "no cluster".
        std::fs::write(dir.path().join(CLUSTER_ID_FILE), "xyz").unwrap();
        assert!(matches!(Identity::load(dir.path()), Err(IdentityError::Corrupt { .. })));
    }
}
