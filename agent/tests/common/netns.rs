//! Three `slotd` processes in their own network namespaces on one bridge,
//! plus a client namespace; each host runs a TCP responder that says its
//! name, so the client can tell who holds an IP. Shared by the netns tests
//! and the failover benchmark.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use slotd_agent::config::{Config, Driver};
use slotd_netops::testkit::{require_root, Lan, IFACE};

pub const WAIT: Duration = Duration::from_secs(30);
pub const PORT: u16 = 8143;
pub const HOSTS: [&str; 3] = ["a", "b", "c"];

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

pub struct Site {
    pub lan: Lan,
    pub dir: tempfile::TempDir,
    agents: Vec<Option<Child>>,
    stop: Arc<AtomicBool>,
}

pub fn addr_of(i: usize) -> String {
    format!("10.99.0.{}", i + 1)
}

impl Site {
    pub fn start(tag: &str) -> Site {
        require_root();
        let lan = Lan::new(tag, &["a", "b", "c", "cl"]);
        let stop = Arc::new(AtomicBool::new(false));
        for (i, h) in HOSTS.iter().chain(["cl"].iter()).enumerate() {
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
            agents: Vec::new(),
            stop,
        };
        for i in 0..HOSTS.len() {
            let data_dir = site.dir.path().join(format!("n{}", i + 1));
            std::fs::create_dir_all(&data_dir).expect("data dir");
            let mut c = Config::builder(
                i as u64 + 1,
                &format!("imap{}", i + 1),
                format!("{}:7420", addr_of(i)).parse().unwrap(),
                data_dir,
            );
            c.interface = IFACE.to_owned();
            c.manage_addresses = true;
            c.cyrus.driver = Driver::None;
            std::fs::write(site.config(i), c.to_toml()).expect("config");
            site.agents.push(None);
            site.spawn(i);
        }
        site
    }

    pub fn config(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}.toml", i + 1))
    }

    pub fn spawn(&mut self, i: usize) {
        let data = self.dir.path().join(format!("n{}", i + 1));
        let _ = std::fs::remove_file(data.join("endpoints"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("slotd.log"))
            .expect("log");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.lan.host(HOSTS[i]).name(),
                env!("CARGO_BIN_EXE_slotd"),
                "--config",
            ])
            .arg(self.config(i))
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn slotd");
        self.agents[i] = Some(child);
        wait_for("slotd to serve", WAIT, || data.join("endpoints").exists().then_some(()));
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.agents[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// slotctl run inside host `i`'s namespace against its own agent.
    pub fn slotctl(&self, i: usize, args: &[&str]) -> std::process::Output {
        let endpoint = format!("{}:7420", addr_of(i));
        let mut full = vec!["--endpoint", &endpoint];
        full.extend_from_slice(args);
        self.lan.host(HOSTS[i]).exec(env!("CARGO_BIN_EXE_slotctl"), &full)
    }

    pub fn status(&self, i: usize) -> Option<Value> {
        let out = self.slotctl(i, &["status", "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    pub fn init(&self) -> Value {
        let mut t = slotd_raft_store::plan::plan(3, 4)
            .expect("plan")
            .to_topology(&slotd_raft_store::plan::Naming::default());
        for (i, n) in t.nodes.iter_mut().enumerate() {
            n.addr = format!("{}:7420", addr_of(i));
        }
        let path = self.dir.path().join("topology.toml");
        std::fs::write(&path, slotd_raft_store::topology::render(&t)).expect("topology");
        let out = self.slotctl(0, &["init", path.to_str().unwrap()]);
        assert!(out.status.success(), "init: {}", String::from_utf8_lossy(&out.stderr));
        self.served_by_masters(0)
    }

    /// Waits until every store's master IP is answered, from the client, by
    /// the node the log names master; returns that status.
    pub fn served_by_masters(&self, via: usize) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let last = match self.check_served(via) {
                Ok(s) => return s,
                Err(why) => why,
            };
            assert!(
                Instant::now() < deadline,
                "timed out waiting for every master IP served by its master: {last}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn check_served(&self, via: usize) -> Result<Value, String> {
        let s = self.status(via).ok_or("no status")?;
        for st in s["stores"].as_array().ok_or("no stores")? {
            let ip: IpAddr = st["master_ip"]
                .as_str()
                .and_then(|a| a.split('/').next())
                .and_then(|a| a.parse().ok())
                .ok_or("bad ip")?;
            let who = self.who_serves(ip);
            if who.as_deref() != st["master"].as_str() {
                let holders: Vec<String> = (0..HOSTS.len())
                    .filter(|i| self.held(*i).contains(&format!("{ip}/32")))
                    .map(|i| format!("imap{}", i + 1))
                    .collect();
                return Err(format!(
                    "{} (master {} epoch {}) answered by {who:?}, held by {holders:?}",
                    st["name"], st["master"], st["epoch"]
                ));
            }
        }
        Ok(s)
    }

    /// Who answers on `ip`, seen from the client namespace.
    pub fn who_serves(&self, ip: IpAddr) -> Option<String> {
        self.lan.host("cl").run_blocking(move || {
            let mut s = TcpStream::connect_timeout(&SocketAddr::new(ip, PORT), Duration::from_millis(300)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
            let mut name = String::new();
            s.read_to_string(&mut name).ok()?;
            Some(name)
        })
    }

    /// Store IPs bound in host `i`'s namespace.
    pub fn held(&self, i: usize) -> Vec<String> {
        self.lan
            .host(HOSTS[i])
            .ip(&["-4", "-o", "addr", "show", "dev", IFACE])
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
            .filter(|a| a.starts_with("10.64.") || a.starts_with("10.128."))
            .collect()
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("n{}/slotd.log", i + 1))).unwrap_or_default()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for i in 0..self.agents.len() {
            self.kill9(i);
        }
        if std::thread::panicking() {
            for i in 0..HOSTS.len() {
                eprintln!("---- log of imap{} ----\n{}", i + 1, self.log(i));
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

pub fn masters(status: &Value, node: &str) -> Vec<(String, IpAddr)> {
    status["stores"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["master"] == node)
        .map(|s| {
            let ip = s["master_ip"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            (s["name"].as_str().unwrap().to_owned(), ip)
        })
        .collect()
}

pub fn leader(status: &Value) -> usize {
    status["leader"].as_u64().expect("a leader") as usize - 1
}
