//! The Cyrus driver: a slot's instance, in the slot's directory
//! `<cyrus.root>/<slot>/` (`etc/` is rendered here; `conf/`, `spool/`,
//! `run/`, `log/` are the operator's, prepared as `cyrus makedirs` does,
//! with the slot's sasldb). Two runners start cyrmaster there:
//!
//! - `exec`: the agent runs it itself, in a process group of its own
//!   (cyrmaster's SIGTERM handler signals its whole group);
//! - `systemd`: `cyrus-slot@SLOT.service`, through systemctl (`systemd`).
//!
//! Stopping means the whole process group, checked empty through `/proc`
//! (an orphaned `imapd` keeps accepting clients on the master IP). A start
//! waits until the role's port answers; cyrmaster refuses to start when the
//! store IP is not bound here (`master_bind_errors_fatal`), which is the
//! interlock behind the reconciler's order (bind, announce, then start).
//! Flush, replay, backlog and health are the same whoever runs cyrmaster.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::process::{Child, Command};
use tracing::{info, warn};

use super::procs::{members, stop_group};
use super::render::{render, with_local, Local, Role, Values};
use super::synclog;
use super::systemd;
use crate::config::{CyrusConfig, Driver};
use crate::host::driver::{DriverError, SlotContext, SlotDriver};
use slotd_core::node::reconcile::Instance;

/// How long a start may take until its port answers (the lab: < 0.2 s).
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// SIGTERM, then SIGKILL after this (the lab: all gone in ~12 ms).
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The longest a start (a stop of what ran first included) or a stop may
/// take here, SIGKILL's wait included, with room to spare (a test checks it
/// against the longest path): the reconciler allows this much, and must
/// never cut a start half-way (it would leave an instance it does not
/// track).
pub const START_STOP_BOUND: Duration = Duration::from_secs(120);
/// One `sync_client -R -1` pass of a flush (it retries an unreachable
/// replica for ever: lab pitfall 9).
const FLUSH_PASS: Duration = Duration::from_secs(30);
/// One replay of a leftover sync log, and how often (and how far apart)
/// it is tried: all of it fits the reconciler's bound on a replay.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(10);
const REPLAY_ATTEMPTS: u32 = 5;
const REPLAY_RETRY: Duration = Duration::from_secs(1);
/// The longest a replay action may take (all its attempts).
pub const REPLAY_BOUND: Duration = Duration::from_secs(60);
/// Passes of a flush before it gives up (each sends one file).
const FLUSH_PASSES: u32 = 20;

/// Ports an instance's role listens on, to tell it has started.
const IMAP_PORT: u16 = 143;
const LMTP_PORT: u16 = 24;
const SYNC_PORT: u16 = 2005;
/// One health check (connect and greeting).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

struct Running {
    pgid: i32,
    instance: Instance,
    /// `exec`: cyrmaster, the agent's child.
    child: Option<Child>,
    /// A stop is under way: its group ending is no news.
    stopping: bool,
}

/// Who starts and stops a slot's cyrmaster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Runner {
    /// The agent itself, as its child in a process group of its own.
    Exec { cyrmaster: PathBuf },
    /// systemd, as `cyrus-slot@SLOT.service`.
    Systemd,
}

pub struct CyrusDriver {
    root: PathBuf,
    /// The site's own imapd.conf options (`cyrus.imapd_local`), if present.
    imapd_local: PathBuf,
    runner: Runner,
    bin_dir: PathBuf,
    sync_password: String,
    /// This node's name, for servernames (`SLOT.NODE`).
    node: String,
    running: Mutex<BTreeMap<String, Running>>,
}

fn failed(slot: &str, message: impl Into<String>) -> DriverError {
    DriverError::Failed {
        slot: slot.to_owned(),
        message: message.into(),
    }
}

/// The sync password (`cyrus.sync_password_file`): one line, not empty.
/// Read when the agent starts, and by `--check-config`.
pub fn read_sync_password(config: &CyrusConfig) -> Result<String, String> {
    let file = &config.sync_password_file;
    let why = |what: String| {
        format!(
            "cyrus.sync_password_file {}: {what} (the password of cyrus in the replicas' sasldb; needed with driver = {:?})",
            file.display(),
            config.driver.as_str()
        )
    };
    let password = std::fs::read_to_string(file)
        .map_err(|e| why(e.to_string()))?
        .trim_end_matches(['\n', '\r'])
        .to_owned();
    if password.is_empty() {
        return Err(why("empty".to_owned()));
    }
    Ok(password)
}

impl CyrusDriver {
    /// Reads the sync password file; refuses a missing or empty one. With
    /// `systemd`, also asks systemd whether it knows the unit template.
    pub async fn new(config: &CyrusConfig, node: &str) -> Result<CyrusDriver, String> {
        let runner = match config.driver {
            Driver::Exec => Runner::Exec {
                cyrmaster: config.cyrmaster.clone(),
            },
            Driver::Systemd => {
                systemd::check_installed().await?;
                Runner::Systemd
            }
            Driver::None => return Err("cyrus.driver = \"none\" runs no Cyrus".to_owned()),
        };
        let password = read_sync_password(config)?;
        let left = stop_leftovers(&config.root, &runner).await;
        if !left.is_empty() {
            warn!(instances = ?left, "stopped Cyrus instances a previous agent left running");
        }
        // With non-local binds allowed, cyrmaster binds a store IP this
        // machine does not hold: the interlock behind the mission's order
        // (no master without its IP) is gone; the reconciler's order stays.
        for (family, file) in [
            ("ipv4", "/proc/sys/net/ipv4/ip_nonlocal_bind"),
            ("ipv6", "/proc/sys/net/ipv6/ip_nonlocal_bind"),
        ] {
            if std::fs::read_to_string(file).is_ok_and(|v| v.trim() == "1") {
                warn!(
                    "net.{family}.ip_nonlocal_bind = 1: Cyrus can start without its store IP bound \
                     (master_bind_errors_fatal no longer guards the order); set it to 0 on slot machines"
                );
            }
        }
        Ok(CyrusDriver {
            root: config.root.clone(),
            imapd_local: config.imapd_local.clone(),
            runner,
            bin_dir: config.bin_dir.clone(),
            sync_password: password,
            node: node.to_owned(),
            running: Mutex::new(BTreeMap::new()),
        })
    }

    /// The slot's instance directory.
    pub fn dir(&self, slot: &str) -> PathBuf {
        self.root.join(slot)
    }

    /// The IMAP banner's name and the SASL realm of the slot's users.
    pub fn servername(&self, slot: &str) -> String {
        format!("{slot}.{}", self.node)
    }

    fn take(&self, slot: &str) -> Option<Running> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner).remove(slot)
    }

    /// Writes the slot's config for `role` (synced writes: off the async
    /// threads, whose progress the watchdog watches).
    async fn configure(&self, slot: &str, role: Role, ctx: &SlotContext) -> Result<PathBuf, DriverError> {
        let dir = self.dir(slot);
        if !dir.join("conf").is_dir() {
            return Err(failed(
                slot,
                format!(
                    "instance directory {} has no conf/ (prepare the slot first)",
                    dir.display()
                ),
            ));
        }
        let servername = self.servername(slot);
        let name = format!("{}-{slot}", self.node);
        let values = Values {
            dir: &dir,
            servername: &servername,
            name: &name,
            master_ip: ctx.master_ip,
            replica_ip: ctx.replica_ip,
            sync_password: &self.sync_password,
        };
        let (imapd, cyrus) = render(role, &values).map_err(|e| failed(slot, e.to_string()))?;
        let written = {
            let dir = dir.clone();
            let site_local = self.imapd_local.clone();
            tokio::task::spawn_blocking(move || -> Result<(), String> {
                // The operator's own options, after slotd's (see `render`).
                let read = |path: &Path| match std::fs::read_to_string(path) {
                    Ok(text) => Ok(Some(text)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(format!("{}: {e}", path.display())),
                };
                let slot_local = dir.join("imapd.local.conf");
                let (site_text, slot_text) = (read(&site_local)?, read(&slot_local)?);
                let site = site_text.as_deref().map(|text| Local {
                    file: &site_local,
                    text,
                });
                let slot = slot_text.as_deref().map(|text| Local {
                    file: &slot_local,
                    text,
                });
                let imapd = with_local(&imapd, site, slot).map_err(|e| e.to_string())?;
                let etc = dir.join("etc");
                std::fs::create_dir_all(&etc).map_err(|e| format!("{}: {e}", etc.display()))?;
                // imapd.conf holds the sync password: readable by the Cyrus
                // group (the one that owns conf/), never by others.
                let gid = {
                    use std::os::unix::fs::MetadataExt;
                    std::fs::metadata(dir.join("conf")).map(|m| m.gid()).ok()
                };
                for (file, text) in [("imapd.conf", imapd), ("cyrus.conf", cyrus)] {
                    let path = etc.join(file);
                    crate::host::durable::replace_private(&path, text.as_bytes(), gid)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
                Ok(())
            })
            .await
        };
        match written {
            Ok(Ok(())) => Ok(dir),
            Ok(Err(e)) => Err(failed(slot, e)),
            Err(e) => Err(failed(slot, format!("writing the config: {e}"))),
        }
    }

    async fn start(&self, slot: &str, role: Role, ctx: &SlotContext) -> Result<(), DriverError> {
        self.stop(slot).await?;
        if ctx.slots > 2 {
            // One replica IP: a second replica could not bind it, and the
            // master's sync_client, flush and replay reach only one.
            return Err(failed(
                slot,
                format!(
                    "store {} has {} slots; the Cyrus driver runs stores of one master and one replica",
                    ctx.store, ctx.slots
                ),
            ));
        }
        if role == Role::Replica {
            // Never resend an earlier life's changes (see `synclog`).
            let conf = self.dir(slot).join("conf");
            match synclog::set_aside(&conf, crate::clock::unix_ms()) {
                Ok(Some(aside)) => {
                    warn!(slot, aside = %aside.display(), "leftover sync log of an earlier life as master set aside")
                }
                Ok(None) => {}
                Err(e) => return Err(failed(slot, format!("setting the leftover sync log aside: {e}"))),
            }
        }
        let dir = self.configure(slot, role, ctx).await?;
        let (ip, port) = match role {
            Role::Master => (ctx.master_ip, IMAP_PORT),
            Role::Replica => (ctx.replica_ip, SYNC_PORT),
        };
        let (pgid, child) = match &self.runner {
            Runner::Exec { cyrmaster } => {
                let (pgid, child) = self.spawn(slot, cyrmaster, &dir, ip, port).await?;
                (pgid, Some(child))
            }
            Runner::Systemd => (self.start_unit(slot, &dir, ip, port).await?, None),
        };
        let instance = match role {
            Role::Master => Instance::Master { epoch: ctx.epoch },
            Role::Replica => Instance::Replica { epoch: ctx.epoch },
        };
        info!(slot, pgid, ?role, "cyrmaster serving");
        self.running.lock().unwrap_or_else(PoisonError::into_inner).insert(
            slot.to_owned(),
            Running {
                pgid,
                instance,
                child,
                stopping: false,
            },
        );
        Ok(())
    }

    /// `exec`: runs cyrmaster as a child in a group of its own, until it
    /// serves `ip:port`. Its group, and the child.
    async fn spawn(
        &self,
        slot: &str,
        cyrmaster: &Path,
        dir: &Path,
        ip: IpAddr,
        port: u16,
    ) -> Result<(i32, Child), DriverError> {
        let log_path = dir.join("log").join("master.out");
        let log = {
            use std::os::unix::fs::OpenOptionsExt;
            // Never through a link planted in the Cyrus-owned log/.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&log_path)
        }
        .map_err(|e| failed(slot, format!("{}: {e}", log_path.display())))?;
        let err = log.try_clone().map_err(|e| failed(slot, e.to_string()))?;
        let mut child = Command::new(cyrmaster)
            .arg("-C")
            .arg(dir.join("etc/imapd.conf"))
            .arg("-M")
            .arg(dir.join("etc/cyrus.conf"))
            .arg("-p")
            .arg(dir.join("run/master.pid"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            // Its own group: cyrmaster's SIGTERM handler signals its group.
            .process_group(0)
            .spawn()
            .map_err(|e| failed(slot, format!("{}: {e}", cyrmaster.display())))?;
        let pgid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| failed(slot, "cyrmaster exited at once"))?;
        let served = wait_listening(ip, port, || match child.try_wait() {
            Ok(Some(status)) => Some(format!("cyrmaster exited with {status}")),
            _ => None,
        })
        .await;
        if let Err(why) = served {
            stop_group(pgid, STOP_GRACE).await;
            let _ = child.wait().await;
            let tail = tail(&log_path);
            return Err(failed(
                slot,
                format!("cyrmaster did not serve {ip}:{port}: {why}; {tail}"),
            ));
        }
        Ok((pgid, child))
    }

    /// `systemd`: starts the slot's unit, checks that it runs the config
    /// rendered here, and waits until it serves `ip:port`. Its group.
    async fn start_unit(&self, slot: &str, dir: &Path, ip: IpAddr, port: u16) -> Result<i32, DriverError> {
        let unit = systemd::unit(slot);
        let hint = format!("journalctl -u {unit} tells more");
        let started: Result<i32, String> = async {
            // Type=exec: the start returns once cyrmaster runs (or failed to).
            systemd::systemctl(&["start", &unit]).await?;
            let pid = systemd::main_pid(&systemd::show(&unit, "MainPID").await?)
                .ok_or_else(|| format!("{unit} has no main process"))?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !super::procs::runs_config(&cmdline, dir) {
                return Err(format!(
                    "{unit} does not run {}/etc/imapd.conf (its command line: {:?}): set CYRUS_ROOT \
                     in /etc/slotd/cyrus-slot.env to cyrus.root ({})",
                    dir.display(),
                    String::from_utf8_lossy(&cmdline).replace('\0', " ").trim(),
                    self.root.display()
                ));
            }
            // systemd starts services in a session of their own.
            let pgid = super::procs::group_of(pid).unwrap_or(pid);
            wait_listening(ip, port, || {
                (!super::procs::group_exists(pgid)).then(|| format!("{unit} exited"))
            })
            .await?;
            Ok(pgid)
        }
        .await;
        match started {
            Ok(pgid) => Ok(pgid),
            Err(why) => {
                // Also when systemctl itself failed or gave up: its start
                // job may still run inside systemd; a stop cancels it.
                if let Err(e) = systemd::systemctl(&["stop", &unit]).await {
                    warn!(slot, error = %e, "cannot stop the unit of a failed start");
                }
                Err(failed(
                    slot,
                    format!("cyrmaster did not serve {ip}:{port}: {why}; {hint}"),
                ))
            }
        }
    }

    /// `sync_client` with the slot's config, ended with the future that
    /// waits for it (a flush or replay cut short leaves none behind).
    fn sync_client(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("sync_client"));
        cmd.arg("-C")
            .arg(dir.join("etc/imapd.conf"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// One `sync_client -r -f FILE` on the master: for each mailbox the file
    /// names, it pulls the records only the replica has (lab pitfall 13).
    async fn replay_once(&self, slot: &str, log: &str) -> Result<String, DriverError> {
        let dir = self.dir(slot);
        let file = dir.join("conf").join(format!("replay-{}", crate::clock::unix_ms()));
        // sync_client runs as the Cyrus user and locks the file it reads:
        // it must own it, as it owns the configuration directory. Created
        // anew (never through a link the Cyrus user may have planted) and
        // chowned by its descriptor.
        {
            use std::io::Write;
            use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
            let conf = std::fs::metadata(dir.join("conf")).map_err(|e| failed(slot, e.to_string()))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&file)
                .map_err(|e| failed(slot, format!("{}: {e}", file.display())))?;
            std::os::unix::fs::fchown(&f, Some(conf.uid()), Some(conf.gid()))
                .and_then(|()| f.write_all(log.as_bytes()))
                .map_err(|e| failed(slot, format!("{}: {e}", file.display())))?;
        }
        let child = self
            .sync_client(&dir)
            .args(["-v", "-r", "-f"])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(slot, format!("sync_client: {e}")))?;
        let result = tokio::time::timeout(REPLAY_TIMEOUT, child.wait_with_output()).await;
        let _ = std::fs::remove_file(&file);
        let lines = log.lines().count();
        match result {
            Ok(Ok(out)) if out.status.success() => Ok(format!("{lines} lines")),
            Ok(Ok(out)) => {
                let said = String::from_utf8_lossy(&out.stderr);
                let said: Vec<&str> = said
                    .lines()
                    .chain(std::str::from_utf8(&out.stdout).unwrap_or("").lines())
                    .take(3)
                    .collect();
                Err(failed(
                    slot,
                    format!("sync_client -r -f exited with {}: {}", out.status, said.join(" | ")),
                ))
            }
            Ok(Err(e)) => Err(failed(slot, format!("sync_client: {e}"))),
            Err(_) => Err(failed(
                slot,
                format!("sync_client -r -f gave no result within {REPLAY_TIMEOUT:?}"),
            )),
        }
    }

    /// One sync_client pass after another until the sync log is empty.
    async fn flush(&self, slot: &str) -> Result<u32, DriverError> {
        let dir = self.dir(slot);
        let conf = dir.join("conf");
        let pending = |conf: &Path| {
            synclog::has_pending(conf).map_err(|e| failed(slot, format!("cannot look at the sync log: {e}")))
        };
        for pass in 0..FLUSH_PASSES {
            if !pending(&conf)? {
                return Ok(pass);
            }
            let mut child = self
                .sync_client(&dir)
                .args(["-R", "-1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| failed(slot, format!("sync_client: {e}")))?;
            match tokio::time::timeout(FLUSH_PASS, child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => return Err(failed(slot, format!("flush: sync_client -R -1 exited with {status}"))),
                Ok(Err(e)) => return Err(failed(slot, format!("flush: sync_client: {e}"))),
                Err(_) => {
                    return Err(failed(
                        slot,
                        format!("flush: sync_client gave no result within {FLUSH_PASS:?}"),
                    ))
                }
            }
        }
        if pending(&conf)? {
            return Err(failed(
                slot,
                format!("sync log still not empty after {FLUSH_PASSES} passes"),
            ));
        }
        Ok(FLUSH_PASSES)
    }
}

/// Until `ip:port` accepts a connection (or `gone` says why the instance
/// is no more, or time is up).
async fn wait_listening(ip: IpAddr, port: u16, mut gone: impl FnMut() -> Option<String>) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Some(why) = gone() {
            return Err(why);
        }
        let connect = tokio::net::TcpStream::connect(SocketAddr::new(ip, port));
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("nothing listening after {START_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The last lines of cyrmaster's output, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    let shown: Vec<&str> = lines.into_iter().rev().collect();
    format!("{} says: {}", path.display(), shown.join(" | "))
}

/// The pid in the slot directory's pidfile, if it names a cyrmaster that
/// runs this very slot's config (a pid reused by another slot's cyrmaster
/// is not ours to stop).
fn pidfile_cyrmaster(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join("run/master.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    (matches!(comm.trim(), "cyrmaster" | "master") && super::procs::runs_config(&cmdline, dir)).then_some(pid)
}

/// Every slot's cyrmaster a pidfile below `root` names: (slot, group).
fn pidfile_groups(root: &Path) -> Vec<(String, i32)> {
    let Ok(dir) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let slot = entry.file_name().to_string_lossy().into_owned();
            Some((slot, pidfile_cyrmaster(&entry.path())?))
        })
        .collect()
}

/// For `slotd fence`, which runs when the agent is gone and must be quick
/// (DESIGN rule 4: within the margin, IPs included): SIGKILL to every
/// slot's group a pidfile names, all at once, then a short wait until they
/// are empty (Cyrus recovers its databases at the next start). The slots
/// killed.
pub async fn kill_all(root: &Path) -> Vec<String> {
    kill_groups(pidfile_groups(root)).await
}

/// As [`kill_all`], only the instances of `slots` (for `slotd fencer`:
/// the masters of a lease that ran out; the replicas go on).
pub async fn kill_slots(root: &Path, slots: &[&str]) -> Vec<String> {
    let mut groups = pidfile_groups(root);
    groups.retain(|(slot, _)| slots.contains(&slot.as_str()));
    kill_groups(groups).await
}

async fn kill_groups(groups: Vec<(String, i32)>) -> Vec<String> {
    for (_, pgid) in &groups {
        super::procs::signal_group(*pgid, libc::SIGKILL);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut killed = Vec::new();
    for (slot, pgid) in groups {
        while !super::procs::is_empty(pgid).await && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if super::procs::is_empty(pgid).await {
            killed.push(slot);
        } else {
            warn!(slot, pgid, "processes of the instance survive SIGKILL");
        }
    }
    killed
}

/// Stops what a previous life of the agent left running (a fence that
/// failed, an agent run by hand): every slot unit (`systemd`) and every
/// group a pidfile names, side by side. The agent then starts only what
/// the log asks for.
async fn stop_leftovers(root: &Path, runner: &Runner) -> Vec<String> {
    let mut stopped = Vec::new();
    if *runner == Runner::Systemd {
        match systemd::stop_all().await {
            Ok(units) => stopped.extend(units),
            Err(e) => warn!(error = %e, "cannot stop the slot units left running"),
        }
    }
    let groups = pidfile_groups(root);
    let stops = groups.iter().map(|(_, pgid)| stop_group(*pgid, STOP_GRACE));
    for ((slot, _), empty) in groups.iter().zip(futures::future::join_all(stops).await) {
        if empty {
            stopped.push(slot.clone());
        } else {
            warn!(slot, "processes of an instance left running survive SIGKILL");
        }
    }
    stopped
}

impl SlotDriver for CyrusDriver {
    async fn start_master(&self, slot: &str, ctx: &SlotContext) -> Result<(), DriverError> {
        self.start(slot, Role::Master, ctx).await
    }

    async fn start_replica(&self, slot: &str, ctx: &SlotContext) -> Result<(), DriverError> {
        self.start(slot, Role::Replica, ctx).await
    }

    async fn stop(&self, slot: &str) -> Result<(), DriverError> {
        // One this agent started, or one a previous agent left (pidfile).
        // The instance stays known until it is stopped: a stop that fails,
        // or is cut short (the agent stopping), leaves it seen as running,
        // and it is stopped again.
        let known = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(slot)
            .map(|r| {
                r.stopping = true;
                r.pgid
            });
        let pgid = known.or_else(|| pidfile_cyrmaster(&self.dir(slot)));
        if self.runner == Runner::Systemd {
            // systemd stops the unit's whole cgroup; a stop of a unit that
            // does not run is a no-op, so it is always asked.
            let unit = systemd::unit(slot);
            systemd::systemctl(&["stop", &unit])
                .await
                .map_err(|e| failed(slot, e))?;
            let state = systemd::show(&unit, "ActiveState").await.map_err(|e| failed(slot, e))?;
            if !systemd::is_down(&state) {
                return Err(failed(slot, format!("{unit} is still {state} after a stop")));
            }
        }
        if let Some(pgid) = pgid {
            let empty = match self.runner {
                Runner::Exec { .. } => stop_group(pgid, STOP_GRACE).await,
                // Checked, and what escaped the unit's cgroup ended as with exec.
                Runner::Systemd => super::procs::is_empty(pgid).await || stop_group(pgid, STOP_GRACE).await,
            };
            if !empty {
                return Err(failed(
                    slot,
                    format!("processes of group {pgid} survive SIGKILL: {:?}", members(pgid)),
                ));
            }
        }
        if let Some(mut r) = self.take(slot) {
            if let Some(child) = r.child.as_mut() {
                let _ = child.wait().await;
            }
        }
        Ok(())
    }

    async fn demote(&self, slot: &str, ctx: &SlotContext, force: bool) -> Result<(), DriverError> {
        // Clients first: the whole instance stops (imapd, lmtpd, the rolling
        // sync_client); what its sync log still lists is sent by hand.
        self.stop(slot).await?;
        if force {
            return Ok(());
        }
        // The master's config (sync_host = the replica IP), whatever ran last.
        self.configure(slot, Role::Master, ctx).await?;
        let passes = self.flush(slot).await?;
        info!(slot, passes, "sync log flushed to the replica");
        Ok(())
    }

    async fn backlog(&self, slot: &str) -> Option<u64> {
        synclog::pending_bytes(&self.dir(slot).join("conf"))
    }

    async fn backlog_age(&self, slot: &str) -> Option<Duration> {
        synclog::oldest_age(&self.dir(slot).join("conf"))
    }

    async fn leftover_log(&self, slot: &str) -> Option<Result<String, String>> {
        let conf = self.dir(slot).join("conf");
        synclog::leftover_log(&conf, slotd_raft_store::apply::MAX_REPLAY_LOG)
            .map_err(|e| e.to_string())
            .transpose()
    }

    async fn finish_leftovers(&self, slot: &str, replayed: bool) -> Result<(), DriverError> {
        synclog::finish(&self.dir(slot).join("conf"), replayed).map_err(|e| failed(slot, e.to_string()))
    }

    async fn replay(&self, slot: &str, log: &str) -> Result<String, DriverError> {
        // Right after the replica came back, the rolling sync_client may
        // still be repairing the same mailboxes: a replay that fails then is
        // tried again a little later.
        let mut last = None;
        for attempt in 0..REPLAY_ATTEMPTS {
            match self.replay_once(slot, log).await {
                Ok(note) if attempt == 0 => return Ok(note),
                Ok(note) => return Ok(format!("{note} (attempt {})", attempt + 1)),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(REPLAY_RETRY).await;
        }
        Err(last.unwrap_or_else(|| failed(slot, "no replay attempt")))
    }

    async fn health(&self, slot: &str, ctx: &SlotContext, master: bool) -> Vec<String> {
        let name = self.servername(slot);
        // Every banner names the instance (`servername`): one that answers
        // with another name is not this slot's.
        let checks: Vec<(&str, SocketAddr, &str)> = if master {
            vec![
                ("imap", SocketAddr::new(ctx.master_ip, IMAP_PORT), "* OK"),
                ("lmtp", SocketAddr::new(ctx.master_ip, LMTP_PORT), "220 "),
            ]
        } else {
            vec![
                ("sync_server", SocketAddr::new(ctx.replica_ip, SYNC_PORT), "* OK"),
                ("imap", SocketAddr::new(ctx.replica_ip, IMAP_PORT), "* OK"),
            ]
        };
        let banners = checks.into_iter().map(|(what, addr, greeting)| {
            let name = name.clone();
            async move {
                super::health::banner(addr, greeting, &name, HEALTH_TIMEOUT)
                    .await
                    .err()
                    .map(|why| format!("{what} {addr}: {why}"))
            }
        });
        let mut problems: Vec<String> = futures::future::join_all(banners).await.into_iter().flatten().collect();
        if master {
            let pgid = self
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(slot)
                .map(|r| r.pgid);
            let alive = match pgid {
                Some(pgid) => tokio::task::spawn_blocking(move || super::procs::group_runs(pgid, "sync_client"))
                    .await
                    .unwrap_or(false),
                None => false,
            };
            if !alive {
                problems.push("sync_client is not running (changes are not replicated)".to_owned());
            }
        }
        problems
    }

    async fn observe(&self) -> BTreeMap<String, Instance> {
        // One scan of /proc for all slots, off the async threads (the
        // reconciler's progress is what the watchdog watches), and only
        // when some group still exists.
        let groups: Vec<i32> = {
            let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            running.values().map(|r| r.pgid).collect()
        };
        let live = if groups.iter().any(|g| super::procs::group_exists(*g)) {
            tokio::task::spawn_blocking(super::procs::live_groups)
                .await
                .unwrap_or_default()
        } else {
            Default::default()
        };
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        // An instance whose group died (crash, OOM kill) is stopped: the
        // reconciler starts it again.
        running.retain(|slot, r| {
            let alive = live.contains(&r.pgid);
            if !alive && !r.stopping {
                warn!(slot, pgid = r.pgid, "cyrmaster is gone");
            }
            alive
        });
        running.iter().map(|(slot, r)| (slot.clone(), r.instance)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reconcilers_bound_covers_the_longest_start() {
        // stop_group waits STOP_GRACE, then up to 2 s after SIGKILL.
        let group = STOP_GRACE + Duration::from_secs(2);
        let connect = Duration::from_millis(200);
        let systemctl = systemd::SYSTEMCTL_TIMEOUT;
        // systemd: stop (stop, show, the group), then start, show, wait to
        // serve, and the stop of a failed start.
        let systemd = (systemctl * 2 + group) + (systemctl * 2 + START_TIMEOUT + connect + systemctl);
        // exec: stop, start, the stop of a failed start.
        let exec = group + START_TIMEOUT + connect + group;
        assert!(systemd < START_STOP_BOUND, "{systemd:?}");
        assert!(exec < START_STOP_BOUND, "{exec:?}");
    }

    #[tokio::test]
    async fn stores_of_more_than_two_slots_are_refused_before_anything_runs() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let password = dir.path().join("pw");
        std::fs::write(&password, "secret\n").map_err(|e| e.to_string())?;
        let config = CyrusConfig {
            driver: Driver::Exec,
            root: dir.path().join("cyrus"),
            cyrmaster: PathBuf::from("/nonexistent/cyrmaster"),
            sync_password_file: password,
            ..CyrusConfig::default()
        };
        let driver = CyrusDriver::new(&config, "imap1").await?;
        let mut ctx = SlotContext {
            store: "st01".into(),
            epoch: 1,
            master_ip: "10.64.0.1".parse().map_err(|_| "ip")?,
            replica_ip: "10.128.0.1".parse().map_err(|_| "ip")?,
            slots: 3,
        };
        let e = driver
            .start_master("s01", &ctx)
            .await
            .err()
            .ok_or("a 3-slot store started")?;
        assert!(e.to_string().contains("store st01 has 3 slots"), "{e}");
        // Two slots get past that check (and fail later, for lack of a
        // prepared instance directory).
        ctx.slots = 2;
        let e = driver
            .start_master("s01", &ctx)
            .await
            .err()
            .ok_or("started without a slot directory")?;
        assert!(e.to_string().contains("has no conf/"), "{e}");
        Ok(())
    }
}
