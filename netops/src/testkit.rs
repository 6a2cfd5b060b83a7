//! Network-namespace fixtures for tests that need a real kernel (feature
//! `testkit`). Shared by this crate's tests, the agent's and the failover
//! tests.
//!
//! - [`Netns`]: a named namespace, deleted when dropped (also on panic).
//! - [`Lan`]: a "switch" namespace with a bridge and one namespace per host,
//!   each with an `eth0` plugged into the bridge. No interface or address is
//!   ever created in the caller's own namespace.
//! - [`Netns::run`]/[`Netns::run_blocking`]/[`Netns::spawn`]: run code
//!   inside a namespace (a thread that `setns`es, with its own runtime).
//!
//! Fixtures shell out to `ip` (iproute2): they are test scaffolding, not the
//! product. They panic with a message saying what failed, which is how a
//! test fails.

use std::fs::File;
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::MacAddr;

/// The interface name every [`Lan`] host gets.
pub const IFACE: &str = "eth0";

/// How long waiting helpers wait before failing the test.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// Fail the test unless running as root. Tests needing namespaces call this
/// first: they must fail loudly, never skip.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test needs root (network namespaces, CAP_NET_ADMIN/CAP_NET_RAW); \
         run it as root, e.g. `sudo -E cargo nextest run -p slotd-netops` (euid is {euid})"
    );
}

/// A namespace-name prefix unique to this process and call:
/// `sn<pid>-<tag><n>`. Keep `tag` short (namespace names show up in
/// `ip netns list`, interface names are derived from host names, not this).
pub fn unique_prefix(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("sn{}-{tag}{n}", std::process::id())
}

/// Run a command, returning stdout, or a message with its stderr.
fn run_cmd(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Create namespace `name` (replacing a stale one of that name, left by
    /// an earlier run whose process id was the same), with loopback up and
    /// IPv6 DAD off, so test addresses are usable at once.
    pub fn create(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        if let Err(e) = run_cmd(Command::new("ip").args(["netns", "add", name])) {
            panic!("creating namespace {name}: {e}");
        }
        let ns = Netns { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"]);
        for key in ["net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"] {
            ns.sysctl(key, "0");
        }
        ns
    }

    /// The namespace's name (for `ip -n`, `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`, returning stdout, or the error text.
    pub fn try_ip(&self, args: &[&str]) -> Result<String, String> {
        run_cmd(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `ip -n NAME ARGS...`, returning stdout; panics on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        self.try_ip(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `ip netns exec NAME PROGRAM ARGS...`: run a program inside.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
    }

    /// Set a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        let out = self.exec("sysctl", &["-qw", &format!("{key}={value}")]);
        assert!(
            out.status.success(),
            "sysctl {key}={value} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Add a fixture address (`10.77.0.3/24`, `fd00:77::3/64`) to `iface`;
    /// IPv6 ones with `nodad` so they are usable at once.
    pub fn add_addr(&self, iface: &str, cidr: &str) {
        let mut args = vec!["addr", "add", cidr, "dev", iface];
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.ip(&args);
    }

    /// The MAC address of `iface`.
    pub fn mac(&self, iface: &str) -> MacAddr {
        let out = self.ip(&["link", "show", "dev", iface]);
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .and_then(parse_mac)
            .unwrap_or_else(|| panic!("no MAC for {iface} in {}: {out}", self.name))
    }

    /// The link-layer address of the neighbour entry for `addr` on `iface`,
    /// read from the kernel (`ip neigh show`), if there is one with a MAC.
    pub fn neighbour_mac(&self, iface: &str, addr: IpAddr) -> Option<MacAddr> {
        let out = self.ip(&["neigh", "show", &addr.to_string(), "dev", iface]);
        out.split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .and_then(parse_mac)
    }

    /// Wait (polling every 10 ms, at most `timeout`) until the neighbour
    /// entry for `addr` on `iface` shows `want`; returns how long it took.
    /// Panics with the last value seen on timeout.
    pub fn wait_neighbour_mac(&self, iface: &str, addr: IpAddr, want: MacAddr, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let seen = self.neighbour_mac(iface, addr);
            if seen == Some(want) {
                return start.elapsed();
            }
            if start.elapsed() > timeout {
                let all = self.try_ip(&["neigh", "show"]).unwrap_or_default();
                panic!(
                    "neighbour entry for {addr} in {} is {seen:?}, not {want} after {timeout:?}; table:\n{all}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Move the current thread into this namespace. Sockets opened by the
    /// thread afterwards belong to it (and keep belonging to it when used
    /// from other threads).
    pub fn enter_current_thread(&self) -> std::io::Result<()> {
        enter(&self.name)
    }

    /// Run `f` on a new thread inside the namespace; the handle yields its
    /// result.
    pub fn spawn_blocking<T, F>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || {
                if let Err(e) = enter(&name) {
                    panic!("setns into {name}: {e}");
                }
                f()
            })
            .unwrap_or_else(|e| panic!("spawning a thread: {e}"))
    }

    /// Run `f` inside the namespace and wait for its result (panics inside
    /// are re-raised here).
    pub fn run_blocking<T, F>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self.spawn_blocking(f).join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Run the future made by `f` inside the namespace on a new
    /// current-thread tokio runtime (its blocking pool threads inherit the
    /// namespace), on a new thread; the handle yields its output.
    pub fn spawn<T, F, Fut>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        self.spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("building a runtime: {e}"));
            rt.block_on(f())
        })
    }

    /// Like [`Netns::spawn`] but waits for the result.
    pub fn run<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        match self.spawn(f).join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys its interfaces, and with them the
        // veth peers in other namespaces.
        if let Err(e) = run_cmd(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("testkit: {e}");
        }
    }
}

/// Move the current thread into namespace `name` (setns on
/// `/var/run/netns/NAME`).
fn enter(name: &str) -> std::io::Result<()> {
    let file = File::open(format!("/var/run/netns/{name}"))?;
    // SAFETY: a valid, open namespace fd; setns(CLONE_NEWNET) only changes
    // this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<MacAddr> {
    let mut b = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut b {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(MacAddr(b))
}

/// One Ethernet segment: a bridge in its own namespace and one namespace per
/// host, each with [`IFACE`] plugged into the bridge. Everything is deleted
/// when the `Lan` is dropped.
#[derive(Debug)]
pub struct Lan {
    /// Host namespaces, in the order given; dropped before the switch.
    hosts: Vec<(String, Netns)>,
    /// The namespace holding bridge `br0`.
    switch: Netns,
}

impl Lan {
    /// Build a LAN for hosts named `hosts` (each at most 12 characters).
    /// `tag` makes the namespace names unique to the calling test, e.g.
    /// `Lan::new("takeover4", &["a", "b", "c"])` gives `sn<pid>-takeover40-a`.
    pub fn new(tag: &str, hosts: &[&str]) -> Lan {
        require_root();
        let prefix = unique_prefix(tag);
        let switch = Netns::create(&format!("{prefix}-sw"));
        // No multicast snooping: NDP multicast reaches every port at once,
        // without waiting for MLD reports.
        switch.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
            "stp_state",
            "0",
        ]);
        switch.ip(&["link", "set", "br0", "up"]);
        let mut lan = Lan {
            hosts: Vec::new(),
            switch,
        };
        for host in hosts {
            assert!(host.len() <= 12, "host name {host:?} too long (max 12)");
            let ns = Netns::create(&format!("{prefix}-{host}"));
            let port = format!("p-{host}");
            lan.switch.ip(&[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                IFACE,
                "netns",
                ns.name(),
            ]);
            lan.switch.ip(&["link", "set", &port, "master", "br0", "up"]);
            ns.ip(&["link", "set", IFACE, "up"]);
            lan.hosts.push((host.to_string(), ns));
        }
        lan
    }

    /// The namespace of host `name`.
    pub fn host(&self, name: &str) -> &Netns {
        self.hosts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, ns)| ns)
            .unwrap_or_else(|| panic!("no host {name:?} in this Lan"))
    }

    /// The switch namespace (for captures or to break a port).
    pub fn switch(&self) -> &Netns {
        &self.switch
    }
}
