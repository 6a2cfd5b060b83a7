//! Three `slotd` processes in their own network namespaces on one bridge,
//! plus a client namespace; each host runs a TCP responder that says its
//! name, so the client can tell who holds an IP. Shared by the netns tests,
//! the benchmarks and the demo.
//!
//! With `SiteOptions::service_manager`, the test plays systemd with the
//! shipped unit's settings: each agent gets a `NOTIFY_SOCKET` and
//! `WATCHDOG_USEC` (200 ms); once READY, an agent that sends no
//! `WATCHDOG=1` for 200 ms is killed with SIGKILL (`WatchdogSignal=SIGKILL`)
//! and `slotd fence` runs in its namespace (`ExecStopPost`). As under
//! systemd, the watchdog runs until the agent has exited, a stop included. Agents also get
//! `SLOTD_INJECT_FAULTS=1` (SIGUSR1 stalls the reconciler for 10 s; SIGUSR2 makes every
//! kernel call hang).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use slotd_agent::config::{Config, Driver, FencerMode, TlsConfig};
use slotd_netops::testkit::{require_root, Lan, IFACE};

#[path = "cyrus.rs"]
pub mod cyrus;
#[path = "delay.rs"]
pub mod delay;

pub const WAIT: Duration = Duration::from_secs(30);
pub const PORT: u16 = 8143;
pub const HOSTS: [&str; 3] = ["a", "b", "c"];
/// Host names of a site of up to five machines (`SiteOptions::hosts`).
const ALL_HOSTS: [&str; 5] = ["a", "b", "c", "d", "e"];
/// The shipped unit's `WatchdogSec`.
pub const WATCHDOG: Duration = Duration::from_millis(200);

/// The agent's binary `name` (`slotd`, `slotctl`): Cargo's own for tests
/// and benches (built with them, from the same source); for the demo (an
/// example, which Cargo gives no binaries) the one beside it,
/// `target/PROFILE/NAME`, which `./dev.sh` builds in the same run.
pub fn bin(name: &str) -> String {
    let cargo = match name {
        "slotd" => option_env!("CARGO_BIN_EXE_slotd"),
        "slotctl" => option_env!("CARGO_BIN_EXE_slotctl"),
        _ => None,
    };
    if let Some(path) = cargo {
        return path.to_owned();
    }
    // target/PROFILE/examples/demo → target/PROFILE/NAME
    let exe = std::env::current_exe().expect("the path of this program");
    let dir = exe.parent().and_then(Path::parent).expect("a target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first (cargo build -p slotd-agent --bins, with this program's profile)",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// Runs `body` while `beside` runs on a scoped thread of its own (a
/// sampler, say), which is told through its flag once `body` is over,
/// returned or panicked, and joined before this returns: so a failing test
/// still drops its `Site`, stopping the agents and removing the
/// namespaces (a thread left holding the site kept both past the test).
pub fn beside<B, R, F, T>(beside: B, body: F) -> (T, R)
where
    B: FnOnce(&AtomicBool) -> R + Send,
    R: Send,
    F: FnOnce() -> T,
{
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let side = scope.spawn(|| beside(&done));
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        done.store(true, Ordering::SeqCst);
        let side = side.join();
        match (out, side) {
            (Ok(t), Ok(r)) => (t, r),
            (Err(p), _) | (_, Err(p)) => std::panic::resume_unwind(p),
        }
    })
}

pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Clone, Copy, Debug)]
pub struct SiteOptions {
    /// Slots per node (the plan's stores: 3 × slots / 2, half mastered by each).
    pub slots: usize,
    /// Play systemd's watchdog and ExecStopPost (see the module docs).
    pub service_manager: bool,
    /// `timing.probe_timeout_ms` of every agent.
    pub probe_timeout_ms: u64,
    /// How many machines (3 to 5; [`HOSTS`] names the first three).
    pub hosts: usize,
    /// Real Cyrus: the `exec` driver, every slot's instance prepared (see
    /// `cyrus::prepare`); the site stops them all when dropped.
    pub cyrus: bool,
    /// With `cyrus`: the `systemd` driver instead of `exec`, with the
    /// stand-in `systemctl` (`common/systemctl.sh`) on the agents' PATH
    /// running the real `systemd/cyrus-slot@.service`.
    pub systemd: bool,
    /// Each agent's Peer port behind a delaying proxy ([`delay`]), so that
    /// [`Site::slow_link`] can make one machine's link slow.
    pub slow_links: bool,
    /// A fencer (`slotd fencer`) beside every agent, which then runs with
    /// `fencer = "required"` (else `"off"`).
    pub fencers: bool,
}

impl Default for SiteOptions {
    fn default() -> Self {
        SiteOptions {
            slots: 4,
            service_manager: false,
            probe_timeout_ms: slotd_agent::config::Timing::default().probe_timeout_ms,
            hosts: 3,
            cyrus: false,
            systemd: false,
            slow_links: false,
            fencers: false,
        }
    }
}

/// What the stand-in service manager did to an agent.
#[derive(Clone, Debug)]
pub struct Killed {
    pub node: usize,
    /// When it sent SIGKILL (the watchdog ran out).
    pub killed: Instant,
    /// When `slotd fence` had exited, and what it printed.
    pub fenced: Instant,
    pub fence: Output,
}

type Agents = Arc<Mutex<Vec<Option<Child>>>>;

pub struct Site {
    pub lan: Lan,
    pub dir: tempfile::TempDir,
    pub options: SiteOptions,
    /// Each agent's runtime directory (its ledger), as its config says.
    runtime_dirs: Vec<PathBuf>,
    agents: Agents,
    stop: Arc<AtomicBool>,
    /// Agents killed by the stand-in service manager.
    pub killed: Arc<Mutex<Vec<Killed>>>,
    /// Which machine's link is slow (with `SiteOptions::slow_links`).
    delays: Arc<delay::Delays>,
    /// Each machine's fencer (with `SiteOptions::fencers`).
    fencers: Mutex<Vec<Child>>,
}

pub fn addr_of(i: usize) -> String {
    format!("10.99.0.{}", i + 1)
}

/// `slotd fence` with `config` in namespace `ns`, as ExecStopPost runs it.
pub fn fence_command(ns: &str, config: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, &bin("slotd"), "fence", "--config"])
        .arg(config);
    cmd
}

/// A slotctl run that must succeed: its stdout (else the test fails, with
/// what slotctl said).
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "slotctl failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Site {
    pub fn start(tag: &str) -> Site {
        Site::start_with(tag, SiteOptions::default())
    }

    pub fn start_with(tag: &str, options: SiteOptions) -> Site {
        require_root();
        assert!((3..=5).contains(&options.hosts), "a site has 3 to 5 machines");
        let hosts = &ALL_HOSTS[..options.hosts];
        let names: Vec<&str> = hosts.iter().copied().chain(["cl"]).collect();
        let lan = Lan::new(tag, &names);
        let stop = Arc::new(AtomicBool::new(false));
        for (i, h) in names.iter().enumerate() {
            let ns = lan.host(h);
            let ip = if *h == "cl" { "10.99.0.9".to_owned() } else { addr_of(i) };
            ns.add_addr(IFACE, &format!("{ip}/24"));
            // Store IPs are /32s that move between hosts of this segment.
            for net in ["10.64.0.0/16", "10.128.0.0/16"] {
                ns.ip(&["route", "add", net, "dev", IFACE]);
            }
            if *h != "cl" {
                let name = format!("imap{}", i + 1);
                let stop = stop.clone();
                ns.spawn_blocking(move || responder(&name, &stop));
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut site = Site {
            lan,
            dir,
            options,
            runtime_dirs: Vec::new(),
            agents: Arc::new(Mutex::new(hosts.iter().map(|_| None).collect())),
            stop,
            killed: Arc::default(),
            delays: Arc::default(),
            fencers: Mutex::default(),
        };
        let tls = make_certs(site.dir.path(), hosts.len());
        for (i, host) in hosts.iter().enumerate() {
            let data_dir = site.data_dir(i);
            std::fs::create_dir_all(&data_dir).expect("data dir");
            // Behind the proxy, the agent listens on the next port; the
            // topology names the proxy.
            let peer: SocketAddr = format!("{}:7420", addr_of(i)).parse().unwrap();
            let listen = if options.slow_links {
                let behind = SocketAddr::new(peer.ip(), 7421);
                let (delays, stop) = (site.delays.clone(), site.stop.clone());
                site.lan
                    .host(host)
                    .spawn_blocking(move || delay::serve(peer, behind, delays, stop));
                behind
            } else {
                peer
            };
            let mut c = Config::builder(i as u64 + 1, &format!("imap{}", i + 1), listen, data_dir);
            c.interface = IFACE.to_owned();
            c.manage_addresses = true;
            c.tls = node_tls(&tls, &format!("imap{}", i + 1));
            c.cyrus.driver = Driver::None;
            c.timing.probe_timeout_ms = options.probe_timeout_ms;
            c.fencer = if options.fencers {
                FencerMode::Required
            } else {
                FencerMode::Off
            };
            if options.cyrus {
                let password = site.dir.path().join("sync-password");
                std::fs::write(&password, format!("{}\n", cyrus::PASSWORD)).expect("sync password");
                c.cyrus.driver = Driver::Exec;
                c.cyrus.root = site.cyrus_root(i);
                c.cyrus.sync_password_file = password;
                c.cyrus.replay_leftover = true;
                // The site's own options reach every instance (the
                // greeting shows it: no version with `serverinfo: min`).
                c.cyrus.imapd_local = site.dir.path().join("imapd.local.conf");
                std::fs::write(&c.cyrus.imapd_local, "# the site's own\nserverinfo: min\n").expect("imapd.local.conf");
                if options.systemd {
                    c.cyrus.driver = Driver::Systemd;
                    let root = site.cyrus_root(i);
                    let env = format!("CYRUS_ROOT={}\n", root.to_str().expect("utf-8 path"));
                    std::fs::write(site.systemd_env(i), env).expect("cyrus-slot.env");
                }
                let node = format!("imap{}", i + 1);
                let topology = site.topology();
                let slots = &topology.nodes[i].slots;
                cyrus::prepare(&c.cyrus.root, &node, slots);
            }
            std::fs::write(site.config(i), c.to_toml()).expect("config");
            site.runtime_dirs.push(c.runtime_dir.clone());
            if options.fencers {
                site.spawn_fencer(i, &c.runtime_dir);
            }
            site.spawn(i);
        }
        site
    }

    /// This site's machines' host names.
    pub fn hosts(&self) -> &'static [&'static str] {
        &ALL_HOSTS[..self.options.hosts]
    }

    /// Cuts machine `i`'s switch port (`up`: heals it).
    pub fn port(&self, i: usize, up: bool) {
        let port = format!("p-{}", self.hosts()[i]);
        self.lan
            .switch()
            .ip(&["link", "set", &port, if up { "up" } else { "down" }]);
    }

    /// Makes machine `i`'s link slow by `delay` one way, to and from every
    /// other machine (`None`: every link as fast as the bridge). Needs
    /// `SiteOptions::slow_links`.
    pub fn slow_link(&self, slow: Option<(usize, Duration)>) {
        assert!(self.options.slow_links, "a site without slow_links");
        self.delays
            .set(slow.map(|(i, d)| (addr_of(i).parse().expect("an address"), d)));
    }

    /// Node `i`'s Cyrus instance directories (`cyrus.root`).
    pub fn cyrus_root(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}-cyrus", i + 1))
    }

    pub fn config(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}.toml", i + 1))
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}", i + 1))
    }

    /// The agent's runtime directory (its ledger).
    pub fn runtime_dir(&self, i: usize) -> PathBuf {
        self.runtime_dirs[i].clone()
    }

    /// `slotd fencer` for machine `i`, in its namespace, as
    /// `slotd-fencer.service` runs it; returns once it listens.
    fn spawn_fencer(&self, i: usize, runtime_dir: &Path) {
        let log = std::fs::File::create(self.dir.path().join(format!("n{}-fencer.log", i + 1))).expect("log");
        let socket = runtime_dir.join("fencer.sock");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.lan.host(self.hosts()[i]).name(),
                &bin("slotd"),
                "fencer",
                "--config",
            ])
            .arg(self.config(i))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn slotd fencer");
        lock(&self.fencers).push(child);
        wait_for("the fencer to listen", WAIT, || socket.exists().then_some(()));
    }

    /// What machine `i`'s fencer logged.
    pub fn fencer_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("n{}-fencer.log", i + 1))).unwrap_or_default()
    }

    pub fn spawn(&self, i: usize) {
        let data = self.data_dir(i);
        let _ = std::fs::remove_file(data.join("endpoints"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("n{}.log", i + 1)))
            .expect("log");
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            self.lan.host(self.hosts()[i]).name(),
            &bin("slotd"),
            "--config",
        ])
        .arg(self.config(i))
        .envs(self.systemd_vars(i))
        .env("RUST_LOG", "info,openraft=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
        let socket = if self.options.service_manager {
            let path = self.dir.path().join(format!("notify-{}.sock", i + 1));
            let _ = std::fs::remove_file(&path);
            let socket = UnixDatagram::bind(&path).expect("notify socket");
            cmd.env("NOTIFY_SOCKET", &path)
                .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
                .env("SLOTD_INJECT_FAULTS", "1");
            Some(socket)
        } else {
            None
        };
        // `ip netns exec` execs slotd: the child's pid is the agent's.
        let child = cmd.spawn().expect("spawn slotd");
        let pid = child.id();
        lock(&self.agents)[i] = Some(child);
        if let Some(socket) = socket {
            self.watch(i, pid, socket);
        }
        wait_for("slotd to serve", WAIT, || data.join("endpoints").exists().then_some(()));
    }

    /// systemd's watchdog and ExecStopPost for agent `i` (process `pid`),
    /// on a thread.
    fn watch(&self, i: usize, pid: u32, socket: UnixDatagram) {
        let (agents, stop, killed) = (self.agents.clone(), self.stop.clone(), self.killed.clone());
        let mut fence = self.fence_command(i);
        std::thread::spawn(move || {
            let _ = socket.set_read_timeout(Some(Duration::from_millis(5)));
            let mut last: Option<Instant> = None;
            let mut buf = [0u8; 256];
            while !stop.load(Ordering::SeqCst) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]);
                    if msg.contains("READY=1") || (last.is_some() && msg.contains("WATCHDOG=1")) {
                        last = Some(Instant::now());
                    }
                }
                // As systemd, the watchdog runs until the agent has exited,
                // through a stop (STOPPING=1) too.
                let exited = lock(&agents)[i]
                    .as_mut()
                    .is_none_or(|c| c.id() != pid || c.try_wait().ok().flatten().is_some());
                if exited {
                    return;
                }
                if last.is_some_and(|t| t.elapsed() > WATCHDOG) {
                    // Only the agent this thread watches (the test may have
                    // killed it and started another meanwhile).
                    let Some(mut child) = lock(&agents)[i].take_if(|c| c.id() == pid) else {
                        return;
                    };
                    let _ = child.kill();
                    let at = Instant::now();
                    let _ = child.wait();
                    let fence = fence.output().expect("slotd fence");
                    lock(&killed).push(Killed {
                        node: i,
                        killed: at,
                        fenced: Instant::now(),
                        fence,
                    });
                    return;
                }
            }
        });
    }

    pub fn kill9(&self, i: usize) {
        if let Some(mut c) = lock(&self.agents)[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Agent `i`'s process id.
    pub fn pid(&self, i: usize) -> u32 {
        lock(&self.agents)[i].as_ref().expect("agent runs").id()
    }

    /// Sends `signal` to agent `i` (SIGSTOP, SIGCONT, SIGUSR1…).
    pub fn signal(&self, i: usize, signal: libc::c_int) {
        let agents = lock(&self.agents);
        let pid = agents[i].as_ref().expect("agent runs").id();
        // SAFETY: kill(2) on our own child; no memory is involved.
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Agent `i`'s exit status, once it has exited (it no longer runs then).
    pub fn exit_status(&self, i: usize) -> Option<std::process::ExitStatus> {
        let mut agents = lock(&self.agents);
        let status = agents[i].as_mut()?.try_wait().ok().flatten()?;
        agents[i] = None;
        Some(status)
    }

    pub fn running(&self, i: usize) -> bool {
        lock(&self.agents)[i].is_some()
    }

    /// slotctl run inside host `i`'s namespace against its own agent.
    pub fn slotctl(&self, i: usize, args: &[&str]) -> Output {
        let endpoint = format!("{}:7420", addr_of(i));
        let env = cert_env(&self.dir.path().join("tls"), "operator-ops");
        let files: Vec<&str> = env.iter().map(|(_, p)| p.to_str().expect("utf-8 path")).collect();
        let mut full = vec![
            "--endpoint",
            &endpoint,
            "--ca",
            files[0],
            "--cert",
            files[1],
            "--key",
            files[2],
        ];
        full.extend_from_slice(args);
        self.lan.host(self.hosts()[i]).exec(&bin("slotctl"), &full)
    }

    /// `slotd fence` in host `i`'s namespace, as ExecStopPost runs it.
    pub fn fence_command(&self, i: usize) -> Command {
        let mut cmd = fence_command(self.lan.host(self.hosts()[i]).name(), &self.config(i));
        cmd.envs(self.systemd_vars(i));
        cmd
    }

    /// Node `i`'s stand-in for `/etc/slotd/cyrus-slot.env`.
    fn systemd_env(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}-cyrus-slot.env", i + 1))
    }

    /// What node `i`'s agent and fence need for the stand-in systemctl
    /// (nothing without `systemd`).
    fn systemd_vars(&self, i: usize) -> Vec<(String, std::ffi::OsString)> {
        if !self.options.systemd {
            return Vec::new();
        }
        let bin = self.dir.path().join("bin");
        let shim = bin.join("systemctl");
        if !shim.exists() {
            std::fs::create_dir_all(&bin).expect("bin dir");
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/systemctl.sh");
            std::os::unix::fs::symlink(script, &shim).expect("systemctl stand-in");
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin];
        paths.extend(std::env::split_paths(&path));
        let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/cyrus-slot@.service");
        vec![
            ("PATH".to_owned(), std::env::join_paths(paths).expect("PATH")),
            ("FAKE_SYSTEMD_UNIT".to_owned(), unit.into_os_string()),
            ("FAKE_SYSTEMD_ENV".to_owned(), self.systemd_env(i).into_os_string()),
            (
                "FAKE_SYSTEMD_STATE".to_owned(),
                self.dir.path().join(format!("n{}-systemd", i + 1)).into_os_string(),
            ),
        ]
    }

    pub fn fence(&self, i: usize) -> Output {
        self.fence_command(i).output().expect("slotd fence")
    }

    pub fn status(&self, i: usize) -> Option<Value> {
        let out = self.slotctl(i, &["status", "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// The planned topology of the site, with the agents' Peer addresses.
    pub fn topology(&self) -> slotd_raft_store::Topology {
        let naming = slotd_raft_store::plan::Naming {
            voters: slotd_raft_store::topology::default_voters(self.options.hosts),
            ..Default::default()
        };
        let mut t = slotd_raft_store::plan::plan(self.options.hosts, self.options.slots)
            .expect("plan")
            .to_topology(&naming);
        for (i, n) in t.nodes.iter_mut().enumerate() {
            n.addr = format!("{}:7420", addr_of(i));
        }
        t
    }

    /// Initialises the planned topology (node 1's Peer address first) and
    /// waits until every master IP is served by its master.
    pub fn init(&self) -> Value {
        let t = self.topology();
        let path = self.dir.path().join("topology.toml");
        std::fs::write(&path, slotd_raft_store::topology::render(&t)).expect("topology");
        let out = self.slotctl(0, &["init", path.to_str().unwrap()]);
        assert!(out.status.success(), "init: {}", String::from_utf8_lossy(&out.stderr));
        self.served_by_masters(0)
    }

    /// Waits until every store's master IP is answered, from the client, by
    /// the node the log names master; returns that status.
    pub fn served_by_masters(&self, via: usize) -> Value {
        self.served_by_masters_but(via, &[])
    }

    /// The same, not looking at the namespaces of machines in `dead` (whose
    /// addresses stay bound behind a cut port).
    pub fn served_by_masters_but(&self, via: usize, dead: &[usize]) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let last = match self.check_served(via, dead) {
                Ok(s) => return s,
                Err(why) => why,
            };
            assert!(
                Instant::now() < deadline,
                "timed out waiting for every master IP served by its master: {last}; the agents' last words:\n{}",
                self.log_tails(40)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn check_served(&self, via: usize, dead: &[usize]) -> Result<Value, String> {
        let s = self.status(via).ok_or("no status")?;
        // Who holds what, once per look (not once per store).
        let held = self.held_all(dead);
        let stores: Vec<(&Value, IpAddr)> = s["stores"]
            .as_array()
            .ok_or("no stores")?
            .iter()
            .map(|st| master_ip(st).map(|ip| (st, ip)).ok_or("bad master_ip"))
            .collect::<Result<_, _>>()?;
        let ips: Vec<IpAddr> = stores.iter().map(|(_, ip)| *ip).collect();
        let answers = self.who_serves_all(&ips);
        for ((st, ip), who) in stores.into_iter().zip(answers) {
            let holders: Vec<String> = (0..self.hosts().len())
                .filter(|i| held[*i].contains(&format!("{ip}/32")))
                .map(|i| format!("imap{}", i + 1))
                .collect();
            let master = st["master"].as_str().unwrap_or_default();
            if holders != [master] {
                return Err(format!(
                    "{} (master {master} epoch {}) held by {holders:?}",
                    st["name"], st["epoch"]
                ));
            }
            if who.as_deref() != Some(master) {
                return Err(format!("{} (master {master}) answered by {who:?}", st["name"]));
            }
        }
        Ok(s)
    }

    /// Who answers on `ip`, seen from the client namespace.
    pub fn who_serves(&self, ip: IpAddr) -> Option<String> {
        self.who_serves_all(&[ip]).pop().flatten()
    }

    /// Waits until every store of `moved` is mastered, by the log as seen
    /// from node `via`, by another node than `from`, and that node answers
    /// on its master IP; returns that status.
    pub fn moved_served(&self, via: usize, moved: &[(String, IpAddr)], from: &str) -> Value {
        let ips: Vec<IpAddr> = moved.iter().map(|(_, ip)| *ip).collect();
        wait_for("the moved stores served by their new masters", WAIT, || {
            let s = self.status(via)?;
            let answers = self.who_serves_all(&ips);
            moved
                .iter()
                .zip(answers)
                .all(|((name, _), who)| {
                    store(&s, name)
                        .and_then(|st| st["master"].as_str())
                        .is_some_and(|m| m != from && who.as_deref() == Some(m))
                })
                .then_some(s)
        })
    }

    /// Who answers on each of `ips`, asked all at once (an unreachable IP
    /// costs one connect timeout, not one each).
    pub fn who_serves_all(&self, ips: &[IpAddr]) -> Vec<Option<String>> {
        self.who_serves_all_within(ips, Duration::from_millis(300))
    }

    /// The same, giving up on a connection after `timeout` (the benchmark
    /// asks often, with a short one).
    pub fn who_serves_all_within(&self, ips: &[IpAddr], timeout: Duration) -> Vec<Option<String>> {
        let client = self.lan.host("cl");
        let asks: Vec<_> = ips
            .iter()
            .map(|ip| {
                let ip = *ip;
                client.spawn_blocking(move || {
                    let mut s = TcpStream::connect_timeout(&SocketAddr::new(ip, PORT), timeout).ok()?;
                    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
                    let mut name = String::new();
                    s.read_to_string(&mut name).ok()?;
                    Some(name)
                })
            })
            .collect();
        asks.into_iter().map(|h| h.join().ok().flatten()).collect()
    }

    /// Store IPs bound in each namespace (none looked at for `skip`).
    pub fn held_all(&self, skip: &[usize]) -> Vec<Vec<String>> {
        (0..self.hosts().len())
            .map(|i| if skip.contains(&i) { Vec::new() } else { self.held(i) })
            .collect()
    }

    /// Store IPs bound in host `i`'s namespace.
    pub fn held(&self, i: usize) -> Vec<String> {
        self.lan
            .host(self.hosts()[i])
            .ip(&["-4", "-o", "addr", "show", "dev", IFACE])
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
            .filter(|a| a.starts_with("10.64.") || a.starts_with("10.128."))
            .collect()
    }

    /// The last `n` lines of every agent's log, for a failure's message.
    pub fn log_tails(&self, n: usize) -> String {
        (0..self.hosts().len())
            .map(|i| {
                let log = self.log(i);
                let lines: Vec<&str> = log.lines().collect();
                format!("imap{}:\n{}", i + 1, lines[lines.len().saturating_sub(n)..].join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("n{}.log", i + 1))).unwrap_or_default()
    }

    /// The master IPs agent `i` has logged releasing (the plan's master IPs
    /// are 10.64.x.x; every release is logged, fencing blind included).
    pub fn master_releases(&self, i: usize) -> Vec<String> {
        self.log(i)
            .lines()
            .filter(|l| l.contains("released ip=10.64."))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // SIGKILL ends a stopped agent too.
        for i in 0..self.hosts().len() {
            self.kill9(i);
        }
        for mut fencer in std::mem::take(&mut *lock(&self.fencers)) {
            let _ = fencer.kill();
            let _ = fencer.wait();
        }
        if self.options.cyrus {
            // Cyrus runs in process groups of its own: gone with the site.
            for i in 0..self.hosts().len() {
                cyrus::kill_all(&self.cyrus_root(i));
            }
        }
        if std::thread::panicking() {
            for i in 0..self.hosts().len() {
                eprintln!("---- log of imap{} ----\n{}", i + 1, self.log(i));
                if self.options.fencers {
                    eprintln!("---- log of imap{}'s fencer ----\n{}", i + 1, self.fencer_log(i));
                }
            }
        }
    }
}

/// Answers every connection with `name`, until `stop`.
fn responder(name: &str, stop: &AtomicBool) {
    let listener = TcpListener::bind(("0.0.0.0", PORT)).expect("responder bind");
    listener.set_nonblocking(true).expect("nonblocking");
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((mut s, _)) => {
                let _ = s.write_all(name.as_bytes());
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// The master IP of a store of a status.
pub fn master_ip(store: &Value) -> Option<IpAddr> {
    store["master_ip"].as_str()?.split('/').next()?.parse().ok()
}

/// The stores `node` masters in a status, with their master IPs.
pub fn masters(status: &Value, node: &str) -> Vec<(String, IpAddr)> {
    status["stores"]
        .as_array()
        .expect("stores")
        .iter()
        .filter(|s| s["master"] == node)
        .map(|s| {
            let name = s["name"].as_str().expect("store name").to_owned();
            (name, master_ip(s).expect("master_ip"))
        })
        .collect()
}

/// The store called `name` in a status, if there is one.
pub fn store<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["stores"].as_array()?.iter().find(|x| x["name"] == name)
}

/// The store called `name` in a status.
pub fn find_store<'a>(status: &'a Value, name: &str) -> &'a Value {
    store(status, name).unwrap_or_else(|| panic!("no store {name} in {status}"))
}

pub fn leader(status: &Value) -> usize {
    status["leader"].as_u64().expect("a leader") as usize - 1
}

/// A CA, certificates for nodes imap1..imapN and for operator `ops`, in
/// `dir/tls`: every test cluster runs mutual TLS, as in production.
pub fn make_certs(dir: &Path, n: usize) -> PathBuf {
    let tls = dir.join("tls");
    let request = slotd_agent::tls::certs::Request {
        nodes: (1..=n).map(|i| (format!("imap{i}"), Vec::new())).collect(),
        operators: vec!["ops".into()],
        days: 1,
    };
    slotd_agent::tls::certs::make(&tls, &request).expect("make certificates");
    tls
}

/// `[tls]` of node `name` with the certificates of `make_certs`.
pub fn node_tls(tls: &Path, name: &str) -> TlsConfig {
    TlsConfig {
        ca_file: Some(tls.join("ca.pem")),
        cert_file: Some(tls.join(format!("node-{name}.pem"))),
        key_file: Some(tls.join(format!("node-{name}.key"))),
        insecure: false,
    }
}

/// slotctl's environment for a certificate of `make_certs` (`stem`:
/// `operator-ops`, `node-imap1`…).
pub fn cert_env(tls: &Path, stem: &str) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("SLOTCTL_CA", tls.join("ca.pem")),
        ("SLOTCTL_CERT", tls.join(format!("{stem}.pem"))),
        ("SLOTCTL_KEY", tls.join(format!("{stem}.key"))),
    ]
}

/// A process held in a frozen cgroup-v1 freezer group: it cannot run, and
/// it cannot die either (SIGKILL waits for the thaw), as a process with a
/// thread stuck in the kernel (D state: a sync on a stalled disk). Thawed,
/// its processes moved out and the group removed when dropped, also when
/// the test fails.
pub struct Unkillable {
    dir: PathBuf,
}

const FREEZER: &str = "/sys/fs/cgroup/freezer";

impl Unkillable {
    /// Freezes `pid` (every thread) in a group named after `tag`.
    pub fn freeze(tag: &str, pid: u32) -> Unkillable {
        let root = Path::new(FREEZER);
        assert!(
            root.join("cgroup.procs").exists(),
            "this test needs the cgroup-v1 freezer at {FREEZER} (a frozen process there survives SIGKILL)"
        );
        let dir = root.join(format!("slotd-test-{}-{tag}", std::process::id()));
        std::fs::create_dir(&dir).expect("freezer group");
        let group = Unkillable { dir };
        std::fs::write(group.dir.join("cgroup.procs"), pid.to_string()).expect("into the freezer group");
        std::fs::write(group.dir.join("freezer.state"), "FROZEN").expect("freeze");
        wait_for("the process to be frozen", WAIT, || {
            let state = std::fs::read_to_string(group.dir.join("freezer.state")).ok()?;
            (state.trim() == "FROZEN").then_some(())
        });
        group
    }

    pub fn thaw(&self) {
        let _ = std::fs::write(self.dir.join("freezer.state"), "THAWED");
    }
}

impl Drop for Unkillable {
    fn drop(&mut self) {
        self.thaw();
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace() {
            let _ = std::fs::write(Path::new(FREEZER).join("cgroup.procs"), pid);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}
