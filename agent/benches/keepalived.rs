//! slotd vs keepalived, measured in the same run on the same network
//! namespaces (root; `apt-get install keepalived`): three hosts on one
//! bridge, a client namespace, the harness's responders (each host answers
//! with its name on whatever IP it holds, a keepalived VIP included).
//! Prints one markdown table and writes it, with a header line, to a file.
//! Asserts nothing about the figures; every wait is bounded.
//!
//! `cargo bench -p slotd-agent --bench keepalived -- [RUNS] [--out FILE]`
//! (default 10 runs of every row; default file `keepalived-vs-slotd.md` in
//! the target directory; a relative FILE is taken from the directory cargo
//! was run from).
//!
//! The slotd rows run first, on a site of 3 nodes × 40 slots (20 masters
//! per node, default timings, `none` driver, release build); then the slotd
//! agents are killed and fenced and keepalived runs in the same namespaces,
//! twice: its defaults (`advert_int 1`, VRRPv2) and tuned (`advert_int 0.1`,
//! VRRPv3, which sub-second adverts need). Both keepalived setups: one VRRP
//! instance, `state BACKUP` + `nopreempt` everywhere, priorities 100/90/80,
//! VIP 10.99.0.100/32 (in the LAN's subnet, distinct from the hosts'
//! addresses and from slotd's store IPs), multicast adverts over the bridge,
//! every other setting keepalived's default (gratuitous ARPs on becoming
//! master, no `max_auto_priority`, no `track_interface` beyond the VRRP
//! interface itself). Each keepalived runs with `--dont-fork --vrrp`, its
//! own config, pid files and log in a temp dir, in its own process group.
//!
//! What each row does, side by side. Every row measures from the action to
//! the first time the client is answered on the moved IP (for slotd's
//! deaths and drain: on the last of the moved IPs) by another host than the
//! old owner. The same client for both sides: it starts a probe of every
//! moved IP every 20 ms (8 threads per IP taking turns, so a probe stuck on
//! the dying owner delays no other), a new TCP connection each time, 50 ms
//! to connect, 100 ms for the answer.
//!
//! 1. kill -9 of the owner. slotd: SIGKILL of the owner's agent, then
//!    `slotd fence` in its namespace (what systemd's `ExecStopPost` does;
//!    fence removes the agent's master IPs), timed until ALL 20 of the
//!    machine's master IPs are reached on other machines; the owner a
//!    follower (1a) or the Raft leader (1b, an election first). keepalived:
//!    SIGKILL to the owner's keepalived process group (parent and VRRP child
//!    at once: the child gets no chance to send a priority-0 advert, and
//!    nothing removes the VIP: the dead owner's namespace still holds it and
//!    still answers for it); the backup takes over after its master-down
//!    interval (3 × advert_int + skew) and sends gratuitous ARPs, which move
//!    the client. The killed keepalived is restarted afterwards (it removes
//!    the stale VIP when it starts, as BACKUP).
//! 2. link cut: the owner's switch port down (both sides' agents run on).
//!    slotd: the store's lease (+ margin) must run out first (and for the
//!    leader, an election). keepalived: the backups hear no adverts and take
//!    over after the master-down interval; the cut owner sees its carrier
//!    go (a veth whose peer is down) and enters FAULT, dropping the VIP.
//! 3. planned move of one IP. slotd: `slotctl failover STORE` (a controlled
//!    switchover: the old master demotes and releases, the new one probes,
//!    binds and announces). keepalived: SIGTERM of the owner's keepalived
//!    (it sends a priority-0 advert and removes the VIP; the best backup
//!    takes over after its skew time and sends gratuitous ARPs); it is
//!    restarted afterwards, as BACKUP, and nopreempt keeps it backup.
//! 4. slotd only: `slotctl drain NODE --wait` of a node with 20 masters
//!    (default concurrency), until every drained IP is served elsewhere.
//!
//! Before every slotd run the cluster is steady (every master IP served by
//! its master, leader and term unchanged for lease + margin, all alive,
//! backlogs reported) and, for rows 1, 2 and 4, every node masters 20
//! stores (`slotctl rebalance` if not). Before every keepalived run exactly
//! one namespace holds the VIP, the client reaches it there, all three
//! keepalived processes run, and advert_int + 0.5 s have passed since the
//! last restart or port-up and since the owner last changed (every backup
//! has heard an advert since).
//!
//! Cleanup: the site (namespaces, slotd agents) and the keepalived guard
//! are dropped on return and on panic; the guard kills every keepalived
//! process group it started (and any VRRP child its pid files name, by
//! checking its command line) before the namespaces go. keepalived's
//! parent also gets `PR_SET_PDEATHSIG` = SIGKILL, for when the bench itself
//! is killed.

#[path = "../tests/common/netns.rs"]
mod netns;

// `Args` is not used: this bench also takes `--out FILE`.
#[allow(dead_code)]
mod common;

use common::figures;

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use netns::{leader, masters, ok, wait_for, Site, SiteOptions, HOSTS, WAIT};
use serde_json::Value;

/// The client's connect timeout while it waits for a moved IP.
const POLL: Duration = Duration::from_millis(50);
/// How long the client waits for the responder's answer once connected.
const READ: Duration = Duration::from_millis(100);
/// How often the client starts a probe of each moved IP, and with how many
/// threads per IP taking turns (a probe lasts up to `POLL` + `READ`).
const EVERY: Duration = Duration::from_millis(20);
const PROBERS: u32 = 8;
/// keepalived's virtual IP (the LAN is 10.99.0.0/24; hosts are .1–.3, the
/// client .9; slotd's store IPs are in 10.64/16 and 10.128/16).
const VIP: &str = "10.99.0.100";
/// keepalived priorities of hosts a, b, c (all `state BACKUP`, `nopreempt`).
const PRIORITY: [u8; 3] = [100, 90, 80];
/// Masters per node: 3 nodes × 40 slots.
const SLOTS: usize = 40;
const MASTERS: usize = 20;

// ----------------------------------------------------------- the client --

fn node(i: usize) -> String {
    format!("imap{}", i + 1)
}

/// One question from the client namespace: who answers on `ip` (a new TCP
/// connection, `POLL` to connect, `READ` for the answer).
fn probe(ip: IpAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::new(ip, netns::PORT), POLL).ok()?;
    s.set_read_timeout(Some(READ)).ok()?;
    let mut name = String::new();
    s.read_to_string(&mut name).ok()?;
    Some(name)
}

/// Who answers on each of `ips`, asked once, all at once.
fn ask(site: &Site, ips: &[IpAddr]) -> Vec<Option<String>> {
    let client = site.lan.host("cl");
    let asks: Vec<_> = ips
        .iter()
        .map(|ip| {
            let ip = *ip;
            client.spawn_blocking(move || probe(ip))
        })
        .collect();
    asks.into_iter().map(|h| h.join().ok().flatten()).collect()
}

/// Waits until the client has been answered on each of `ips` by another
/// host than `from`; returns when the last of them first was. A probe of
/// every IP starts every `EVERY` (`PROBERS` threads per IP in the client
/// namespace taking turns, so that a probe stuck on the dying owner, or
/// waiting for a connect timeout, delays no other).
fn served_elsewhere(site: &Site, ips: &[IpAddr], from: &str) -> Instant {
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let done: Arc<Vec<AtomicBool>> = Arc::new(ips.iter().map(|_| AtomicBool::new(false)).collect());
    let (tx, rx) = mpsc::channel::<(usize, Instant)>();
    let client = site.lan.host("cl");
    let mut probers = Vec::new();
    for (n, ip) in ips.iter().enumerate() {
        for k in 0..PROBERS {
            let (ip, from, tx, stop, done) = (*ip, from.to_owned(), tx.clone(), stop.clone(), done.clone());
            probers.push(client.spawn_blocking(move || {
                let mut slot = k;
                while !stop.load(Ordering::Relaxed) && !done[n].load(Ordering::Relaxed) {
                    let at = start + EVERY * slot;
                    let now = Instant::now();
                    slot += PROBERS;
                    if at + EVERY < now {
                        continue; // a slow probe made this one miss its turn
                    }
                    if at > now {
                        std::thread::sleep(at - now);
                    }
                    if probe(ip).is_some_and(|who| who != from) {
                        done[n].store(true, Ordering::Relaxed);
                        let _ = tx.send((n, Instant::now()));
                    }
                }
            }));
        }
    }
    drop(tx);
    let deadline = start + WAIT;
    let mut first: Vec<Option<Instant>> = vec![None; ips.len()];
    while first.iter().any(Option::is_none) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((n, at)) => {
                first[n].get_or_insert(at);
            }
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                panic!("timed out after {WAIT:?} waiting for the moved IPs served elsewhere than {from}");
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for p in probers {
        let _ = p.join();
    }
    first.into_iter().flatten().max().expect("an IP")
}

// ---------------------------------------------------------------- slotd --

/// Waits until the cluster is steady: every master IP served by its master,
/// leader and term unchanged for lease + margin, every node alive, every
/// backlog reported (as failover.rs and switchover.rs wait); with `even`,
/// also every node mastering `MASTERS` stores (`slotctl rebalance` until
/// so, the quiet time running meanwhile).
fn ready(site: &Site, even: bool) -> Value {
    let t = slotd_agent::config::Timing::default();
    let quiet = t.lease() + t.clock_skew_margin() + Duration::from_millis(100);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last: Option<(u64, u64)> = None;
    let mut since = Instant::now();
    loop {
        let s = site.served_by_masters(0);
        let all_alive = s["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().all(|n| n["alive"] == true));
        let now = (s["leader"].as_u64().unwrap_or(0), s["term"].as_u64().unwrap_or(0));
        if last != Some(now) || !all_alive {
            last = Some(now);
            since = Instant::now();
        }
        let balanced = !even || (0..HOSTS.len()).all(|i| masters(&s, &node(i)).len() == MASTERS);
        let backlogs = s["stores"]
            .as_array()
            .is_some_and(|st| st.iter().all(|st| st["backlog"].as_u64().is_some()));
        if balanced && backlogs && since.elapsed() > quiet {
            return s;
        }
        assert!(Instant::now() < deadline, "no steady cluster within 180 s");
        if !balanced && all_alive {
            // May be refused while a restarted node catches up: try again.
            let out = site.slotctl(0, &["rebalance", "--concurrency", "20", "--wait"]);
            if !out.status.success() {
                std::thread::sleep(Duration::from_millis(300));
            }
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Owner {
    Follower,
    Leader,
}

#[derive(Clone, Copy, PartialEq)]
enum Death {
    /// kill -9 (slotd: + `slotd fence`, as ExecStopPost).
    Kill,
    /// The owner's switch port down.
    PortDown,
}

/// One death of a slotd node mastering 20 stores; time until the client
/// reaches all its master IPs on other nodes.
fn slotd_death(site: &Site, owner: Owner, death: Death, run: usize) -> Duration {
    let before = ready(site, true);
    let lead = leader(&before);
    let v = match owner {
        Owner::Leader => lead,
        Owner::Follower => (0..HOSTS.len())
            .filter(|i| *i != lead)
            .nth(run % 2)
            .expect("a follower"),
    };
    let name = node(v);
    let ips: Vec<IpAddr> = masters(&before, &name).into_iter().map(|(_, ip)| ip).collect();
    assert_eq!(ips.len(), MASTERS, "{name} masters {MASTERS} stores");
    let port = format!("p-{}", HOSTS[v]);
    let t0 = Instant::now();
    match death {
        Death::Kill => {
            site.kill9(v);
            let out = site.fence(v);
            assert!(out.status.success(), "fence: {}", String::from_utf8_lossy(&out.stderr));
        }
        Death::PortDown => {
            site.lan.switch().ip(&["link", "set", &port, "down"]);
        }
    }
    let took = served_elsewhere(site, &ips, &name).saturating_duration_since(t0);
    match death {
        Death::Kill => site.spawn(v),
        Death::PortDown => {
            site.lan.switch().ip(&["link", "set", &port, "up"]);
        }
    }
    took
}

/// `slotctl failover STORE` of one store; time until the client reaches its
/// master IP on the new master. Waits for the switchover to complete.
fn slotd_switchover(site: &Site, run: usize) -> Duration {
    let s = ready(site, false);
    let stores = s["stores"].as_array().expect("stores");
    let st = &stores[(run * 7) % stores.len()];
    let name = st["name"].as_str().expect("name").to_owned();
    let from = st["master"].as_str().expect("master").to_owned();
    let ip = netns::master_ip(st).expect("ip");
    let t0 = Instant::now();
    let begun: Value = serde_json::from_str(&ok(site.slotctl(0, &["failover", &name, "--json"]))).expect("json");
    let took = served_elsewhere(site, &[ip], &from).saturating_duration_since(t0);
    wait_for("the switchover completed", WAIT, || {
        let h: Value =
            serde_json::from_str(&ok(site.slotctl(0, &["history", &name, "--limit", "1", "--json"]))).ok()?;
        (h["entries"][0]["epoch"].as_u64() > begun["epoch"].as_u64()).then_some(())
    });
    took
}

/// `slotctl drain imap1 --wait` (20 masters, default concurrency); time
/// until the client reaches every drained IP elsewhere. Undrains after.
fn slotd_drain(site: &Site) -> Duration {
    let s = ready(site, true);
    let ips: Vec<IpAddr> = masters(&s, "imap1").into_iter().map(|(_, ip)| ip).collect();
    assert_eq!(ips.len(), MASTERS, "imap1 masters {MASTERS} stores");
    let t0 = Instant::now();
    ok(site.slotctl(1, &["drain", "imap1", "--wait"]));
    let took = served_elsewhere(site, &ips, "imap1").saturating_duration_since(t0);
    ok(site.slotctl(1, &["undrain", "imap1"]));
    took
}

// ----------------------------------------------------------- keepalived --

/// One keepalived setup.
#[derive(Clone, Copy)]
struct Vrrp {
    /// `advert_int`, as written in the config.
    advert: &'static str,
    secs: f64,
    /// `vrrp_version` (sub-second adverts need 3).
    version: u8,
    vrid: u8,
}

const VRRP_DEFAULT: Vrrp = Vrrp {
    advert: "1",
    secs: 1.0,
    version: 2,
    vrid: 51,
};
const VRRP_TUNED: Vrrp = Vrrp {
    advert: "0.1",
    secs: 0.1,
    version: 3,
    vrid: 52,
};

/// keepalived in the site's three host namespaces. Dropping it (also on
/// panic) kills every keepalived process it started.
struct Keepalived<'s> {
    site: &'s Site,
    vrrp: Vrrp,
    dir: tempfile::TempDir,
    /// Each host's keepalived parent (the leader of its process group).
    procs: Vec<Option<Child>>,
    /// Last restart or port-up: the steady wait counts from it.
    disturbed: Instant,
}

impl<'s> Keepalived<'s> {
    fn start(site: &'s Site, vrrp: Vrrp) -> Keepalived<'s> {
        let mut ka = Keepalived {
            site,
            vrrp,
            dir: tempfile::Builder::new()
                .prefix("bka-keepalived")
                .tempdir()
                .expect("tempdir"),
            procs: (0..HOSTS.len()).map(|_| None).collect(),
            disturbed: Instant::now(),
        };
        for i in 0..HOSTS.len() {
            std::fs::write(ka.file(i, "conf"), ka.config(i)).expect("keepalived config");
            ka.spawn(i);
        }
        ka
    }

    fn file(&self, i: usize, what: &str) -> PathBuf {
        self.dir.path().join(format!("{}.{what}", HOSTS[i]))
    }

    fn config(&self, i: usize) -> String {
        let Vrrp {
            advert, version, vrid, ..
        } = self.vrrp;
        format!(
            "global_defs {{\n    router_id bka-{host}\n    vrrp_version {version}\n}}\n\
             vrrp_instance VI_{vrid} {{\n    state BACKUP\n    nopreempt\n    interface eth0\n    \
             virtual_router_id {vrid}\n    priority {prio}\n    advert_int {advert}\n    \
             virtual_ipaddress {{\n        {VIP}/32 dev eth0\n    }}\n}}\n",
            host = HOSTS[i],
            prio = PRIORITY[i],
        )
    }

    /// Starts host `i`'s keepalived and waits for its VRRP child.
    fn spawn(&mut self, i: usize) {
        let path = |what: &str| self.file(i, what).into_os_string();
        for what in ["pid", "vrrp.pid", "checkers.pid"] {
            let _ = std::fs::remove_file(self.file(i, what));
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.file(i, "log"))
            .expect("keepalived log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.site.lan.host(HOSTS[i]).name(), "keepalived"])
            .args(["--dont-fork", "--vrrp", "--log-console", "--no-syslog", "--use-file"])
            .arg(path("conf"))
            .arg("--pid")
            .arg(path("pid"))
            .arg("--vrrp_pid")
            .arg(path("vrrp.pid"))
            .arg("--checkers_pid")
            .arg(path("checkers.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            // Its own group: one kill(2) reaches the parent and the VRRP
            // child at once.
            .process_group(0);
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of the
        // parent; it makes the kernel SIGKILL keepalived if this thread dies.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        // `ip netns exec` execs keepalived: the child's pid is keepalived's.
        let child = cmd.spawn().expect("spawn keepalived (apt-get install -y keepalived)");
        self.procs[i] = Some(child);
        wait_for("keepalived's VRRP child", Duration::from_secs(10), || {
            self.vrrp_child(i)?;
            Some(())
        });
        self.disturbed = Instant::now();
    }

    /// The pid of host `i`'s VRRP child, if it runs (its pid file names it
    /// and its command line is ours).
    fn vrrp_child(&self, i: usize) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.file(i, "vrrp.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        ours(pid, &self.file(i, "conf")).then_some(pid)
    }

    fn running(&mut self, i: usize) -> bool {
        self.procs[i].as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// kill -9 of every keepalived process of host `i` (its process group).
    fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            if matches!(c.try_wait(), Ok(None)) {
                // SAFETY: kill(2) of the process group of our own,
                // unreaped child; no memory is involved.
                unsafe { libc::kill(-(c.id() as libc::pid_t), libc::SIGKILL) };
            }
            let _ = c.wait();
        }
        if let Some(pid) = self.vrrp_child(i) {
            // SAFETY: as above, a process whose command line is ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// SIGTERM of host `i`'s keepalived parent (it stops its VRRP child,
    /// which sends a priority-0 advert and removes the VIP).
    fn terminate(&mut self, i: usize) {
        let pid = self.procs[i].as_ref().expect("keepalived runs").id();
        // SAFETY: kill(2) on our own, unreaped child.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill({pid}, SIGTERM)");
    }

    /// Waits until host `i`'s keepalived (parent and child) has exited.
    fn wait_exit(&mut self, i: usize) {
        wait_for("keepalived to exit", Duration::from_secs(10), || {
            let exited = self.procs[i].as_mut()?.try_wait().ok()??;
            self.vrrp_child(i).is_none().then_some(exited)
        });
        self.procs[i] = None;
    }

    /// Hosts whose namespace holds the VIP.
    fn holders(&self) -> Vec<usize> {
        let bound = format!("inet {VIP}/32 ");
        (0..HOSTS.len())
            .filter(|i| {
                self.site
                    .lan
                    .host(HOSTS[*i])
                    .ip(&["-4", "-o", "addr", "show", "dev", "eth0"])
                    .contains(&bound)
            })
            .collect()
    }

    /// Waits until one host holds the VIP and the client reaches it there,
    /// all three keepalived run, and that has held for advert_int + 0.5 s,
    /// also since the last restart or port-up (every backup has heard an
    /// advert since); returns the owner.
    fn steady(&mut self) -> usize {
        let settle = Duration::from_secs_f64(self.vrrp.secs + 0.5);
        let vip: IpAddr = VIP.parse().expect("VIP");
        let mut last: Option<usize> = None;
        let mut since = Instant::now();
        wait_for("keepalived steady", Duration::from_secs(60), || {
            let holders = self.holders();
            let all = (0..HOSTS.len()).all(|i| self.running(i));
            let served = ask(self.site, &[vip]).pop().flatten();
            let owner = match holders[..] {
                [h] if all && served.as_deref() == Some(node(h).as_str()) => Some(h),
                _ => None,
            };
            if owner.is_none() || owner != last {
                last = owner;
                since = Instant::now();
            }
            let quiet = since.elapsed().min(self.disturbed.elapsed());
            owner.filter(|_| quiet >= settle)
        })
    }

    /// One keepalived run; time until the client reaches the VIP on another
    /// host than the owner.
    fn run(&mut self, how: KaMove) -> Duration {
        let v = self.steady();
        let name = node(v);
        let port = format!("p-{}", HOSTS[v]);
        let vip: IpAddr = VIP.parse().expect("VIP");
        let t0 = Instant::now();
        match how {
            KaMove::Kill => self.kill9(v),
            KaMove::PortDown => {
                self.site.lan.switch().ip(&["link", "set", &port, "down"]);
            }
            KaMove::Planned => self.terminate(v),
        }
        let took = served_elsewhere(self.site, &[vip], &name).saturating_duration_since(t0);
        match how {
            KaMove::Kill => {
                assert!(self.vrrp_child(v).is_none(), "the killed VRRP child is gone");
                self.spawn(v);
            }
            KaMove::PortDown => {
                self.site.lan.switch().ip(&["link", "set", &port, "up"]);
                self.disturbed = Instant::now();
            }
            KaMove::Planned => {
                self.wait_exit(v);
                self.spawn(v);
            }
        }
        took
    }

    fn logs(&self) -> String {
        (0..HOSTS.len())
            .map(|i| {
                let log = std::fs::read_to_string(self.file(i, "log")).unwrap_or_default();
                format!("---- keepalived of {} ----\n{log}", HOSTS[i])
            })
            .collect()
    }
}

impl Drop for Keepalived<'_> {
    fn drop(&mut self) {
        for i in 0..HOSTS.len() {
            self.kill9(i);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Whether process `pid` is a live keepalived run with `conf`.
fn ours(pid: i32, conf: &Path) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name in parentheses; a zombie is gone.
    let alive = stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let conf = conf.as_os_str().as_encoded_bytes();
    alive && cmdline.windows(conf.len()).any(|w| w == conf)
}

#[derive(Clone, Copy)]
enum KaMove {
    /// kill -9 of the owner's parent and VRRP child.
    Kill,
    /// The owner's switch port down.
    PortDown,
    /// SIGTERM of the owner's keepalived.
    Planned,
}

// ---------------------------------------------------------------- table --

struct Row {
    what: &'static str,
    slotd: Vec<Duration>,
    /// keepalived's default and tuned figures (none for slotd-only rows).
    ka: Option<[Vec<Duration>; 2]>,
}

fn cell(v: &[Duration]) -> (String, f64) {
    let (median, max, _) = figures(v.to_vec());
    (format!("{median:.0} / {max:.0} ms"), median)
}

fn table(rows: &[Row]) -> String {
    let mut t = String::new();
    t.push_str(
        "| # | what | slotd | keepalived `advert_int 1` | keepalived `advert_int 0.1` \
         | ratio `advert_int 1` / slotd | ratio `advert_int 0.1` / slotd |\n",
    );
    t.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    for (n, r) in rows.iter().enumerate() {
        let (slotd, s) = cell(&r.slotd);
        let (k1, k01, q1, q01) = match &r.ka {
            Some([d, tuned]) => {
                let ((c1, m1), (c01, m01)) = (cell(d), cell(tuned));
                (c1, c01, format!("{:.1}×", m1 / s), format!("{:.1}×", m01 / s))
            }
            None => ("—".into(), "—".into(), "—".into(), "—".into()),
        };
        let num = ["1a", "1b", "2a", "2b", "3", "4"].get(n).copied().unwrap_or("");
        let _ = writeln!(t, "| {num} | {} | {slotd} | {k1} | {k01} | {q1} | {q01} |", r.what);
    }
    t
}

// ----------------------------------------------------------------- main --

struct Options {
    runs: usize,
    out: PathBuf,
}

/// `[RUNS] [--out FILE]` (cargo adds `--bench`, ignored).
fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut runs = 10;
    let mut out = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--out" {
            out = args.get(i + 1).cloned();
            i += 1;
        } else if let Some(f) = a.strip_prefix("--out=") {
            out = Some(f.to_owned());
        } else if let Ok(n) = a.parse::<usize>() {
            runs = n;
        }
        i += 1;
    }
    let out = match out {
        // cargo runs benches in the package directory; PWD is still where
        // cargo was run from.
        Some(f) if Path::new(&f).is_relative() => std::env::var_os("PWD")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::current_dir().expect("cwd"))
            .join(f),
        Some(f) => PathBuf::from(f),
        // target/release/deps/keepalived-HASH → target/.
        None => std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.parent()?.parent()?.to_path_buf()))
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("keepalived-vs-slotd.md"),
    };
    Options { runs, out }
}

fn keepalived_version() -> String {
    let out = Command::new("keepalived")
        .arg("--version")
        .output()
        .expect("keepalived not found: apt-get install -y keepalived");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().next().unwrap_or("keepalived ?").trim().to_owned()
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Time since the bench started (progress lines).
fn since_start() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

fn timed(what: &str, runs: usize, mut one: impl FnMut(usize) -> Duration) -> Vec<Duration> {
    (0..runs)
        .map(|run| {
            let d = one(run);
            eprintln!(
                "[{:.1?}] {what}: run {}/{runs}: {} ms",
                since_start(),
                run + 1,
                d.as_millis()
            );
            d
        })
        .collect()
}

fn main() {
    let Options { runs, out } = options();
    let version = keepalived_version();
    let t = slotd_agent::config::Timing::default();
    let header = format!(
        "slotd vs keepalived, {date}: {runs} runs per row, median / max; slotd default timings \
         (lease {lease:?} + margin {margin:?}, elections {emin}–{emax} ms, probe {probe} ms), \
         3 nodes × {SLOTS} slots; {version}, `nopreempt`, priorities 100/90/80, \
         `advert_int 1` (VRRPv2) and `advert_int 0.1` (VRRPv3); ratios are of medians",
        date = now_utc(),
        lease = t.lease(),
        margin = t.clock_skew_margin(),
        emin = t.election_timeout_min_ms,
        emax = t.election_timeout_max_ms,
        probe = t.probe_timeout_ms,
    );
    since_start();
    eprintln!("{header}");

    let site = Site::start_with(
        "bka",
        SiteOptions {
            slots: SLOTS,
            ..SiteOptions::default()
        },
    );
    site.init();

    let kill_f = timed("slotd kill -9 + fence, follower", runs, |r| {
        slotd_death(&site, Owner::Follower, Death::Kill, r)
    });
    let kill_l = timed("slotd kill -9 + fence, leader", runs, |r| {
        slotd_death(&site, Owner::Leader, Death::Kill, r)
    });
    let port_f = timed("slotd port down, follower", runs, |r| {
        slotd_death(&site, Owner::Follower, Death::PortDown, r)
    });
    let port_l = timed("slotd port down, leader", runs, |r| {
        slotd_death(&site, Owner::Leader, Death::PortDown, r)
    });
    let switch = timed("slotd failover STORE", runs, |r| slotd_switchover(&site, r));
    let drain = timed("slotd drain --wait", runs, |_| slotd_drain(&site));

    // The slotd agents leave (and their store IPs with them): keepalived
    // runs alone on the same namespaces.
    for i in 0..HOSTS.len() {
        site.kill9(i);
        let _ = site.fence(i);
    }

    let mut ka: Vec<[Vec<Duration>; 3]> = Vec::new();
    for vrrp in [VRRP_DEFAULT, VRRP_TUNED] {
        let mut k = Keepalived::start(&site, vrrp);
        let label = |what: &str| format!("keepalived advert_int {}: {what}", vrrp.advert);
        let kill = timed(&label("kill -9"), runs, |_| k.run(KaMove::Kill));
        let port = timed(&label("port down"), runs, |_| k.run(KaMove::PortDown));
        let planned = timed(&label("SIGTERM"), runs, |_| k.run(KaMove::Planned));
        ka.push([kill, port, planned]);
    }
    let ka_row = |n: usize| Some([ka[0][n].clone(), ka[1][n].clone()]);

    let rows = [
        Row {
            what: "kill -9 of the owner → client reaches the IP on the new owner \
                   (slotd: a follower's agent + `slotd fence`, all its 20 master IPs)",
            slotd: kill_f,
            ka: ka_row(0),
        },
        Row {
            what: "the same, the slotd owner being the Raft leader (election first)",
            slotd: kill_l,
            ka: ka_row(0),
        },
        Row {
            what: "owner's switch port down → client reaches the IP on the new owner \
                   (slotd: a follower, all its 20 master IPs)",
            slotd: port_f,
            ka: ka_row(1),
        },
        Row {
            what: "the same, the slotd owner being the Raft leader",
            slotd: port_l,
            ka: ka_row(1),
        },
        Row {
            what: "planned move of one IP → client reaches it on the new owner \
                   (slotd: `slotctl failover STORE`; keepalived: SIGTERM of the owner's keepalived)",
            slotd: switch,
            ka: ka_row(2),
        },
        Row {
            what:
                "slotd only: `slotctl drain NODE --wait` of a node with 20 masters → every drained IP served elsewhere",
            slotd: drain,
            ka: None,
        },
    ];
    let table = format!(
        "{}\nRows 1a/1b and 2a/2b share the keepalived figures (VRRP has no leader). slotd's rows 1, 2 \
         and 4 wait for all 20 moved IPs of a machine, keepalived's for its one VIP. keepalived's kill -9 \
         leaves the VIP bound on the dead owner (the client reaches it there until the backup's \
         gratuitous ARP); slotd's is followed by `slotd fence`.\n",
        table(&rows)
    );
    println!("{header}\n\n{table}");
    if let Some(dir) = out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&out, format!("{header}\n\n{table}")).expect("write the markdown file");
    eprintln!("written to {}", out.display());
}
