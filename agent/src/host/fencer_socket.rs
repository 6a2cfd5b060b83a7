//! Where the agent and its fencer meet: the socket in the runtime
//! directory (`tmpfs`, never the data disk) that `slotd fencer` listens on
//! (`daemon::fencer`) and the agent's link reaches (`node::fencer_link`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixStream;

use crate::config::Config;

/// The socket's name in the runtime directory.
pub const SOCKET: &str = "fencer.sock";

/// How long a connection to a local socket may take before it counts as
/// no fencer (a fencer stuck before `accept` is as good as none).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(100);

/// Where the fencer of `config` listens.
pub fn socket_path(config: &Config) -> PathBuf {
    config.runtime_dir.join(SOCKET)
}

/// Connects to the fencer listening on `socket`, within `CONNECT_TIMEOUT`.
pub async fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(socket)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer")),
    }
}
