//! systemd's `sd_notify` protocol without libsystemd: one datagram per
//! message to the Unix socket named in `NOTIFY_SOCKET`.
//!
//! slotd runs as `Type=notify` with a watchdog: READY tells systemd (and units
//! ordered after slotd) that the agent serves; STOPPING marks a clean
//! shutdown; WATCHDOG pings prove the main loop is alive, so a hung agent is
//! restarted instead of keeping its master leases in limbo. Outside systemd
//! (tests, a shell) there is no socket and every call is a successful no-op.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

/// Where notifications go.
#[derive(Debug)]
enum Target {
    /// Not started by systemd (or no notification wanted): do nothing.
    Disabled,
    /// The notification socket.
    Socket(SocketAddr),
    /// `NOTIFY_SOCKET` was set but unusable; kept so every send reports why
    /// instead of silently doing nothing while systemd waits for READY.
    Invalid(String),
}

/// Sends `sd_notify` messages to systemd.
#[derive(Debug)]
pub struct Notifier {
    /// Destination of every message.
    target: Target,
}

impl Notifier {
    /// The notifier systemd asked for through `NOTIFY_SOCKET` (a path, or
    /// `@name` for an abstract socket). Without it, a no-op notifier. An
    /// unusable value is logged, and every send then fails with its reason.
    pub fn from_env() -> Notifier {
        let notifier = match std::env::var_os("NOTIFY_SOCKET") {
            None => Notifier {
                target: Target::Disabled,
            },
            Some(value) => Notifier {
                target: parse_notify_socket(&value),
            },
        };
        if let Target::Invalid(why) = &notifier.target {
            tracing::warn!("{why}");
        }
        notifier
    }

    /// A notifier sending to the socket at `path` (tests).
    pub fn to_socket(path: &Path) -> Notifier {
        let target = match SocketAddr::from_pathname(path) {
            Ok(addr) => Target::Socket(addr),
            Err(e) => Target::Invalid(format!("notify socket {}: {e}", path.display())),
        };
        Notifier { target }
    }

    /// A notifier that does nothing (what `from_env` gives outside systemd).
    pub fn disabled() -> Notifier {
        Notifier {
            target: Target::Disabled,
        }
    }

    /// Start-up is complete: `READY=1`.
    pub fn ready(&self) -> io::Result<()> {
        self.send("READY=1")
    }

    /// Shutdown has begun: `STOPPING=1`.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    /// Keep-alive for the service watchdog: `WATCHDOG=1`.
    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }

    /// Free-form status shown by `systemctl status`: `STATUS=...`. Line
    /// breaks are replaced by spaces, since each line of a notification is a
    /// separate assignment and must not be able to smuggle in `READY=1`.
    pub fn status(&self, text: &str) -> io::Result<()> {
        let text: String = text
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        self.send(&format!("STATUS={text}"))
    }

    /// How often to call [`Notifier::watchdog`]: half of `WATCHDOG_USEC`, as
    /// systemd recommends, or `None` if no watchdog is configured for this
    /// process (unset, zero, unparsable, or `WATCHDOG_PID` names another
    /// process).
    pub fn watchdog_interval() -> Option<Duration> {
        let usec = std::env::var_os("WATCHDOG_USEC");
        let pid = std::env::var_os("WATCHDOG_PID");
        watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
    }

    /// The watchdog timeout systemd set for this process (`WATCHDOG_USEC`),
    /// if any.
    pub fn watchdog_timeout() -> Option<Duration> {
        Notifier::watchdog_interval().map(|half| half * 2)
    }

    /// Whether messages go anywhere (false for the no-op notifier).
    pub fn is_active(&self) -> bool {
        !matches!(self.target, Target::Disabled)
    }

    fn send(&self, message: &str) -> io::Result<()> {
        match &self.target {
            Target::Disabled => Ok(()),
            Target::Invalid(why) => Err(io::Error::new(io::ErrorKind::InvalidInput, why.clone())),
            Target::Socket(addr) => {
                // A fresh unbound socket per message, like sd_notify: messages
                // are rare and this keeps the notifier free of state.
                let socket = UnixDatagram::unbound()?;
                let sent = socket.send_to_addr(message.as_bytes(), addr)?;
                if sent != message.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("notify: sent {sent} of {} bytes", message.len()),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Interprets a `NOTIFY_SOCKET` value: `/path`, or `@name` for a Linux
/// abstract socket. Anything else (e.g. `vsock:`) is not supported.
fn parse_notify_socket(value: &OsStr) -> Target {
    let bytes = value.as_bytes();
    match bytes.first() {
        None => Target::Disabled,
        Some(b'@') => match SocketAddr::from_abstract_name(&bytes[1..]) {
            Ok(addr) => Target::Socket(addr),
            Err(e) => Target::Invalid(format!("NOTIFY_SOCKET={}: {e}", value.to_string_lossy())),
        },
        Some(b'/') => match SocketAddr::from_pathname(value) {
            Ok(addr) => Target::Socket(addr),
            Err(e) => Target::Invalid(format!("NOTIFY_SOCKET={}: {e}", value.to_string_lossy())),
        },
        Some(_) => Target::Invalid(format!(
            "NOTIFY_SOCKET={}: unsupported (expected an absolute path or @abstract name)",
            value.to_string_lossy()
        )),
    }
}

/// The logic of [`Notifier::watchdog_interval`], on explicit values so it can
/// be tested without touching the process environment.
fn watchdog_interval_from(usec: Option<&OsStr>, pid: Option<&OsStr>, our_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        let pid: u32 = pid.to_str()?.trim().parse().ok()?;
        if pid != our_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(socket: &UnixDatagram) -> io::Result<String> {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[test]
    fn sends_each_message_to_a_path_socket() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path)?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;

        let n = Notifier::to_socket(&path);
        assert!(n.is_active());
        n.ready()?;
        assert_eq!(recv(&socket)?, "READY=1");
        n.watchdog()?;
        assert_eq!(recv(&socket)?, "WATCHDOG=1");
        n.status("serving 3 stores\nREADY=1")?;
        assert_eq!(recv(&socket)?, "STATUS=serving 3 stores READY=1");
        n.stopping()?;
        assert_eq!(recv(&socket)?, "STOPPING=1");
        Ok(())
    }

    #[test]
    fn sends_to_an_abstract_socket() -> io::Result<()> {
        let name = format!(
            "slotd-notify-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;

        let n = Notifier {
            target: parse_notify_socket(OsStr::new(&format!("@{name}"))),
        };
        assert!(n.is_active());
        n.ready()?;
        assert_eq!(recv(&socket)?, "READY=1");
        Ok(())
    }

    #[test]
    fn a_missing_listener_is_an_error() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let n = Notifier::to_socket(&dir.path().join("nobody-listens.sock"));
        assert!(n.ready().is_err());
        Ok(())
    }

    #[test]
    fn disabled_notifier_is_a_no_op() -> io::Result<()> {
        let n = Notifier::disabled();
        assert!(!n.is_active());
        n.ready()?;
        n.status("x")?;
        n.watchdog()?;
        n.stopping()
    }

    #[test]
    fn notify_socket_values() {
        assert!(matches!(parse_notify_socket(OsStr::new("")), Target::Disabled));
        assert!(matches!(
            parse_notify_socket(OsStr::new("/run/systemd/notify")),
            Target::Socket(_)
        ));
        assert!(matches!(parse_notify_socket(OsStr::new("@abc")), Target::Socket(_)));
        assert!(matches!(
            parse_notify_socket(OsStr::new("vsock:2:1234")),
            Target::Invalid(_)
        ));
        let long = format!("/{}", "x".repeat(200));
        assert!(matches!(parse_notify_socket(OsStr::new(&long)), Target::Invalid(_)));

        let n = Notifier {
            target: parse_notify_socket(OsStr::new("relative.sock")),
        };
        assert!(n.is_active());
        assert_eq!(n.ready().map_err(|e| e.kind()), Err(io::ErrorKind::InvalidInput));
    }

    #[test]
    fn watchdog_interval_is_half_of_watchdog_usec_for_our_pid() {
        let s = |v: &'static str| Some(OsStr::new(v));
        assert_eq!(watchdog_interval_from(None, None, 42), None);
        assert_eq!(
            watchdog_interval_from(s("2000000"), None, 42),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            watchdog_interval_from(s("2000000"), s("42"), 42),
            Some(Duration::from_secs(1))
        );
        assert_eq!(watchdog_interval_from(s("2000000"), s("43"), 42), None);
        assert_eq!(watchdog_interval_from(s("2000000"), s("junk"), 42), None);
        assert_eq!(watchdog_interval_from(s("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(s("soon"), None, 42), None);
    }
}
