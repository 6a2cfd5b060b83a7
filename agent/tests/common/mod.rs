//! Real `slotd` processes on loopback for tests, one data directory each,
//! every process killed when the cluster is dropped.
//!
//! Each cluster listens on a loopback address of its own (127.a.b.c, from
//! the test process's pid and a counter; Linux answers on all of
//! 127.0.0.0/8), with fixed ports: an agent keeps its address across
//! restarts, and no other test — running in parallel, or started after
//! this one let a port go — can ever be reached at it. No luck with free
//! ports involved.
#![allow(dead_code)]

pub mod netns;

pub use netns::{cert_env, make_certs, node_tls};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use slotd_agent::config::{Config, Driver};

/// Generous: a 2-core CI machine may be busy compiling other tests.
pub const WAIT: Duration = Duration::from_secs(30);

pub struct Agent {
    pub id: u64,
    pub name: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub metrics: SocketAddr,
    pub child: Option<Child>,
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub agents: Vec<Agent>,
    /// Ids of the agents that are in the cluster (all, unless a test
    /// initialises fewer and adds the others later).
    pub members: Vec<u64>,
    /// Which cluster of this test process it is (picks its ports).
    nth: u16,
}

/// A loopback address no other test process uses: 127 + the 24 low bits
/// of the pid; `nth` picks the ports, for several clusters in one process.
fn own_loopback(nth: u16, agent: u16) -> SocketAddr {
    let pid = std::process::id();
    let ip = std::net::Ipv4Addr::new(127, (pid >> 16) as u8, (pid >> 8) as u8, pid as u8);
    SocketAddr::new(ip.into(), 17420 + nth * 32 + agent)
}

/// A gRPC channel to `endpoint` showing the certificate `stem` of the CA
/// in `tls` (for tests that call Peer or Admin themselves), or why none
/// could be had.
pub async fn try_channel_as(tls: &Path, stem: &str, endpoint: &str) -> Result<tonic::transport::Channel, String> {
    let creds = slotd_agent::tls::Credentials::load(&slotd_agent::tls::Files {
        ca: ("ca", &tls.join("ca.pem")),
        cert: ("cert", &tls.join(format!("{stem}.pem"))),
        key: ("key", &tls.join(format!("{stem}.key"))),
    })
    .map_err(|e| e.to_string())?;
    slotd_agent::tls::endpoint(endpoint, Some(&creds))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())
}

/// `try_channel_as`, which must work.
pub async fn channel_as(tls: &Path, stem: &str, endpoint: &str) -> tonic::transport::Channel {
    try_channel_as(tls, stem, endpoint).await.expect("a channel")
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `within`.
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

fn read_endpoints(dir: &Path) -> Option<(SocketAddr, SocketAddr)> {
    let text = std::fs::read_to_string(dir.join("endpoints")).ok()?;
    let mut listen = None;
    let mut metrics = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("listen", v)) => listen = v.parse().ok(),
            Some(("metrics", v)) => metrics = v.parse().ok(),
            _ => {}
        }
    }
    Some((listen?, metrics?))
}

impl Agent {
    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.data_dir.join("endpoints"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join("slotd.log"))
            .expect("open agent log");
        let child = Command::new(env!("CARGO_BIN_EXE_slotd"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info,openraft=warn")
            // Signals inject faults (see `slotd_agent::daemon::run`).
            .env("SLOTD_INJECT_FAULTS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn slotd");
        self.child = Some(child);
        let dir = self.data_dir.clone();
        let (listen, metrics) = wait_for(&format!("{} to serve", self.name), WAIT, || read_endpoints(&dir));
        self.listen = listen;
        self.metrics = metrics;
    }

    pub fn endpoint(&self) -> String {
        self.listen.to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("slotd.log")).unwrap_or_default()
    }

    /// The value of one series of its `/metrics` (`name{labels}` exactly as
    /// exposed), if it answers.
    pub fn metric(&self, series: &str) -> Option<f64> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect_timeout(&self.metrics, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

impl TestCluster {
    /// Starts `n` agents (not yet initialised).
    pub fn start(n: usize) -> TestCluster {
        TestCluster::start_with(n, |_| {})
    }

    /// Starts `n` agents with their config changed by `tweak`.
    pub fn start_with(n: usize, tweak: impl Fn(&mut Config)) -> TestCluster {
        static STARTED: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let nth = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert!(nth < 64 && n < 32, "too many test clusters in one process");
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = make_certs(dir.path(), n);
        let mut agents = Vec::new();
        for i in 1..=n as u64 {
            let data_dir = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&data_dir).expect("data dir");
            let listen = own_loopback(nth, i as u16);
            let mut config = Config::builder(i, &format!("imap{i}"), listen, data_dir.clone());
            config.metrics_listen = SocketAddr::new(listen.ip(), 0);
            config.cyrus.driver = Driver::None;
            config.tls = node_tls(&tls, &format!("imap{i}"));
            tweak(&mut config);
            let path = dir.path().join(format!("n{i}.toml"));
            std::fs::write(&path, config.to_toml()).expect("write config");
            let mut agent = Agent {
                id: i,
                name: format!("imap{i}"),
                config: path.clone(),
                data_dir,
                listen,
                metrics: "127.0.0.1:0".parse().unwrap(),
                child: None,
            };
            agent.spawn();
            agents.push(agent);
        }
        let members = (1..=n as u64).collect();
        TestCluster {
            dir,
            agents,
            members,
            nth,
        }
    }

    /// An address on this cluster's own loopback where nothing listens
    /// (agent ids start at 1; port 0 of the block is never used).
    pub fn unused_addr(&self) -> SocketAddr {
        own_loopback(self.nth, 0)
    }

    pub fn agent(&self, id: u64) -> &Agent {
        &self.agents[(id - 1) as usize]
    }

    /// A planned topology (`slotctl plan`) of the members, with their
    /// real addresses.
    pub fn topology(&self, slots: usize) -> PathBuf {
        let n = self.members.len();
        let mut t =
            slotd_raft_store::plan::plan(n, slots)
                .expect("plan")
                .to_topology(&slotd_raft_store::plan::Naming {
                    voters: slotd_raft_store::topology::default_voters(n),
                    ..Default::default()
                });
        for (node, agent) in t.nodes.iter_mut().zip(&self.agents) {
            node.addr = agent.endpoint();
        }
        let path = self.dir.path().join("topology.toml");
        std::fs::write(&path, slotd_raft_store::topology::render(&t)).expect("write topology");
        path
    }

    /// The certificates of this cluster (`make_certs`).
    pub fn tls(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    /// A channel to agent `id` showing certificate `stem` (`node-imap2`,
    /// `operator-ops`…).
    pub async fn channel_as(&self, id: u64, stem: &str) -> tonic::transport::Channel {
        channel_as(&self.tls(), stem, &self.agent(id).endpoint()).await
    }

    /// Runs slotctl against agent `id`, as operator `ops`.
    pub fn slotctl(&self, id: u64, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_slotctl"))
            .envs(cert_env(&self.tls(), "operator-ops"))
            .arg("--endpoint")
            .arg(self.agent(id).endpoint())
            .args(args)
            .output()
            .expect("run slotctl")
    }

    /// `slotctl status --json` from agent `id`; `None` if it failed.
    pub fn status(&self, id: u64, stale: bool) -> Option<Value> {
        let mut args = vec!["status", "--json"];
        if stale {
            args.push("--stale");
        }
        let out = self.slotctl(id, &args);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Initialises with a planned topology through agent `via`, and waits
    /// until every running agent has applied it.
    pub fn init(&self, via: u64, slots: usize) -> Value {
        let topology = self.topology(slots);
        let out = self.slotctl(via, &["init", topology.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.timings_written(via);
        self.converged()
    }

    /// Waits until the leader has written the cluster's first timings (the
    /// entry after init), so that later states compare without it.
    pub fn timings_written(&self, via: u64) {
        wait_for("the cluster's first timings", WAIT, || {
            let out = self.slotctl(via, &["--json", "config", "show"]);
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["seq"].as_u64()? >= 1).then_some(())
        });
    }

    /// Initialises through agent 1 with every agent holding one slot
    /// (`s01`), the first three voters (learners after), and one store
    /// `st01` on the slots of `store_on` (node names); waits until every
    /// agent applied it.
    pub fn init_one_store(&self, store_on: [&str; 2]) -> Value {
        let topology = self.dir.path().join("one-store.toml");
        let nodes: String = self
            .agents
            .iter()
            .map(|a| {
                format!(
                    "[[node]]\nid = {}\nname = \"{}\"\naddr = \"{}\"\nslots = [\"s01\"]\n",
                    a.id,
                    a.name,
                    a.endpoint()
                )
            })
            .collect();
        let [a, b] = store_on;
        let text = format!(
            "voters = 3\n{nodes}[[store]]\nname = \"st01\"\nmaster_ip = \"10.7.0.1/32\"\nreplica_ip = \"10.7.0.2/32\"\nslots = [\"{a}:s01\", \"{b}:s01\"]\n"
        );
        std::fs::write(&topology, text).expect("write topology");
        let out = self.slotctl(1, &["init", topology.to_str().expect("utf-8 path")]);
        assert!(out.status.success(), "init: {}", String::from_utf8_lossy(&out.stderr));
        self.timings_written(1);
        self.converged()
    }

    /// Waits until all running members show the same state, a leader and
    /// the same applied index; returns the leader's linearizable status.
    pub fn converged(&self) -> Value {
        wait_for("all agents to agree", WAIT, || {
            let running: Vec<&Agent> = self.running_members().collect();
            let views: Vec<Value> = running.iter().map(|a| self.status(a.id, true)).collect::<Option<_>>()?;
            let first = comparable(&views[0]);
            let leader = views[0]["leader"].as_u64()?;
            let same = views
                .iter()
                .all(|v| comparable(v) == first && v["leader"].as_u64() == Some(leader));
            if !same || !views[0]["initialised"].as_bool()? {
                return None;
            }
            self.status(running[0].id, false)
        })
    }

    fn running_members(&self) -> impl Iterator<Item = &Agent> + '_ {
        self.agents
            .iter()
            .filter(|a| a.child.is_some() && self.members.contains(&a.id))
    }

    pub fn leader(&self) -> u64 {
        let running = self.running_members().next().expect("a member runs");
        wait_for("a leader", WAIT, || self.status(running.id, true)?["leader"].as_u64())
    }

    /// Sends `signal` to agent `id`, if it runs.
    pub fn signal(&self, id: u64, signal: libc::c_int) {
        if let Some(child) = &self.agents[(id - 1) as usize].child {
            // SAFETY: a plain kill(2) of our own child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
    }

    pub fn kill9(&mut self, id: u64) {
        let agent = &mut self.agents[(id - 1) as usize];
        if let Some(mut child) = agent.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills agent `id` and starts, at its address and with its config, a
    /// fresh agent with an empty data directory (one that never joined the
    /// cluster: as another test's agent on a recycled port would be). Its
    /// own data is kept aside for `restore`.
    pub fn replace_with_stranger(&mut self, id: u64) {
        self.kill9(id);
        let agent = &mut self.agents[(id - 1) as usize];
        let aside = agent.data_dir.with_extension("aside");
        std::fs::rename(&agent.data_dir, &aside).expect("move the data aside");
        std::fs::create_dir_all(&agent.data_dir).expect("fresh data dir");
        agent.spawn();
    }

    /// Stops the stranger started by `replace_with_stranger` and brings
    /// agent `id` back with its own data.
    pub fn restore(&mut self, id: u64) {
        self.kill9(id);
        let agent = &mut self.agents[(id - 1) as usize];
        let aside = agent.data_dir.with_extension("aside");
        std::fs::remove_dir_all(&agent.data_dir).expect("remove the stranger's data");
        std::fs::rename(&aside, &agent.data_dir).expect("restore the data");
        agent.spawn();
    }

    pub fn restart(&mut self, id: u64) {
        self.agents[(id - 1) as usize].spawn();
    }

    /// SIGTERM, then wait for the exit; returns the exit status and how long it took.
    pub fn sigterm(&mut self, id: u64) -> (std::process::ExitStatus, Duration) {
        let agent = &mut self.agents[(id - 1) as usize];
        let mut child = agent.child.take().expect("agent runs");
        let t = Instant::now();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill -TERM failed");
        let status = wait_for("slotd to exit after SIGTERM", WAIT, || child.try_wait().ok().flatten());
        (status, t.elapsed())
    }
}

/// The parts of a status every agent must agree on (not who answered, not
/// liveness or the layer-2 check, which only the leader knows).
pub fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("answered_by");
        o.remove("term");
        o.remove("leader_name");
    }
    if let Some(nodes) = v["nodes"].as_array_mut() {
        for n in nodes {
            if let Some(o) = n.as_object_mut() {
                o.remove("alive");
            }
        }
    }
    // The layer-2 verdict and the backlogs are the leader's alone, like
    // liveness.
    if let Some(stores) = v["stores"].as_array_mut() {
        for s in stores {
            if let Some(o) = s.as_object_mut() {
                o.remove("l2");
                o.remove("backlog");
                o.remove("backlog_age_ms");
                o.remove("failing");
            }
        }
    }
    v
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for a in &mut self.agents {
            if let Some(mut child) = a.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for a in &self.agents {
                eprintln!("---- log of {} ----\n{}", a.name, a.log());
            }
        }
    }
}
