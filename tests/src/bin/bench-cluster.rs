//! Benchmark of real `slotd` processes on 127.0.0.1 with default timings:
//! - leader election time after kill -9 of the leader (3 nodes, N runs):
//!   from the kill until a survivor is leader and says so itself;
//! - agent RSS and CPU at idle in a 5-node cluster with 1,000 stores.
//!
//! The agents keep their addresses in memory (`manage_addresses = false`):
//! the benchmark touches no interface of the host.
//!
//! `cargo build --release -p slotd-agent --bins && cargo run --release -p
//! slotd-tests --bin bench-cluster -- [RUNS]`. Prints figures; asserts
//! nothing. Bounded: every wait has a deadline, every process is killed at
//! the end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use slotd_agent::ctl::client;
use slotd_proto::v1::StatusRequest;

const WAIT: Duration = Duration::from_secs(30);

struct Agent {
    id: u64,
    config: PathBuf,
    data_dir: PathBuf,
    listen: String,
    child: Option<Child>,
}

struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    agents: Vec<Agent>,
}

fn endpoints(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("endpoints")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("listen=").map(str::to_owned))
}

fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Cluster {
    fn start(bin: &Path, n: u64) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        // Mutual TLS, as in production.
        let tls = dir.path().join("tls");
        let request = slotd_agent::tls::certs::Request {
            nodes: (1..=n).map(|id| (format!("imap{id}"), Vec::new())).collect(),
            operators: vec!["bench".into()],
            days: 1,
        };
        slotd_agent::tls::certs::make(&tls, &request).expect("certificates");
        let mut agents = Vec::new();
        for id in 1..=n {
            let data_dir = dir.path().join(format!("n{id}"));
            std::fs::create_dir_all(&data_dir).expect("mkdir");
            let config = dir.path().join(format!("n{id}.toml"));
            let text = |listen: &str| {
                format!(
                    "node_id = {id}\nname = \"imap{id}\"\nlisten = \"{listen}\"\nmetrics_listen = \"127.0.0.1:0\"\n\
                     data_dir = \"{}\"\nruntime_dir = \"{}.run\"\ninterface = \"lo\"\nmanage_addresses = false\n[cyrus]\ndriver = \"none\"\n\
                     [tls]\nca_file = \"{t}/ca.pem\"\ncert_file = \"{t}/node-imap{id}.pem\"\nkey_file = \"{t}/node-imap{id}.key\"\n",
                    data_dir.display(),
                    data_dir.display(),
                    t = tls.display(),
                )
            };
            std::fs::write(&config, text("127.0.0.1:0")).expect("config");
            let mut a = Agent {
                id,
                config: config.clone(),
                data_dir: data_dir.clone(),
                listen: String::new(),
                child: None,
            };
            spawn(bin, &mut a);
            std::fs::write(&config, text(&a.listen)).expect("config");
            agents.push(a);
        }
        Cluster {
            bin: bin.to_owned(),
            dir,
            agents,
        }
    }

    fn init(&self, slots: usize) {
        let mut t = slotd_raft_store::plan::plan(self.agents.len(), slots)
            .expect("plan")
            .to_topology(&slotd_raft_store::plan::Naming {
                voters: slotd_raft_store::topology::default_voters(self.agents.len()),
                ..Default::default()
            });
        for (node, a) in t.nodes.iter_mut().zip(&self.agents) {
            node.addr = a.listen.clone();
        }
        let path = self.dir.path().join("topology.toml");
        std::fs::write(&path, slotd_raft_store::topology::render(&t)).expect("topology");
        let out = Command::new(self.bin.join("slotctl"))
            .args(["--endpoint", &self.agents[0].listen, "init"])
            .envs(operator_env(self.dir.path()))
            .arg(&path)
            .output()
            .expect("slotctl");
        assert!(out.status.success(), "init: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn spawn(bin: &Path, a: &mut Agent) {
    let _ = std::fs::remove_file(a.data_dir.join("endpoints"));
    let child = Command::new(bin.join("slotd"))
        .arg("--config")
        .arg(&a.config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn slotd");
    a.child = Some(child);
    let dir = a.data_dir.clone();
    a.listen = wait("endpoints", || endpoints(&dir));
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for a in &mut self.agents {
            if let Some(mut c) = a.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// slotctl's environment for the benchmark's operator certificate.
fn operator_env(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let t = dir.join("tls");
    vec![
        ("SLOTCTL_CA", t.join("ca.pem")),
        ("SLOTCTL_CERT", t.join("operator-bench.pem")),
        ("SLOTCTL_KEY", t.join("operator-bench.key")),
    ]
}

/// (leader known to this node, applied index) from a stale status.
async fn view(dir: &Path, addr: &str) -> Option<(Option<u64>, u64)> {
    let env = operator_env(dir);
    let tls = client::Tls::from_args(Some(&env[0].1), Some(&env[1].1), Some(&env[2].1), false).ok()?;
    let mut c = client::connect(addr, &tls).await.ok()?;
    let r = c.status(StatusRequest { stale: true }).await.ok()?.into_inner();
    Some((r.leader, r.applied))
}

async fn wait_async<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "median {:.0} ms, min {:.0} ms, max {:.0} ms (n={})",
        v[v.len() / 2].as_secs_f64() * 1e3,
        v[0].as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
        v.len()
    )
}

/// Resident set size (kB) and total CPU ticks of a process, from /proc.
fn proc_stat(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((rss, ticks))
}

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let bin = PathBuf::from(std::env::var("SLOTD_BIN").unwrap_or_else(|_| "target/release".into()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // --- election after kill -9 of the leader
    let mut cluster = Cluster::start(&bin, 3);
    cluster.init(4);
    let mut times = Vec::new();
    for _ in 0..runs {
        let addrs: Vec<String> = cluster.agents.iter().map(|a| a.listen.clone()).collect();
        let dir = cluster.dir.path().to_owned();
        let leader = rt.block_on(wait_async("a leader everyone agrees on", || {
            let addrs = addrs.clone();
            let dir = dir.clone();
            async move {
                let mut seen = Vec::new();
                for a in &addrs {
                    seen.push(view(&dir, a).await?);
                }
                let l = seen[0].0?;
                let applied = seen[0].1;
                seen.iter().all(|(x, ap)| *x == Some(l) && *ap == applied).then_some(l)
            }
        }));
        let idx = (leader - 1) as usize;
        let t0 = Instant::now();
        if let Some(mut c) = cluster.agents[idx].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let survivors: Vec<String> = cluster
            .agents
            .iter()
            .filter(|a| a.id != leader)
            .map(|a| a.listen.clone())
            .collect();
        rt.block_on(wait_async("a new leader", || {
            let survivors = survivors.clone();
            let all: Vec<String> = cluster.agents.iter().map(|a| a.listen.clone()).collect();
            let dir = dir.clone();
            async move {
                for s in &survivors {
                    if let Some((Some(l), _)) = view(&dir, s).await {
                        if l != leader {
                            // The new leader says so itself.
                            let addr = &all[(l - 1) as usize];
                            if let Some((Some(me), _)) = view(&dir, addr).await {
                                if me == l {
                                    return Some(());
                                }
                            }
                        }
                    }
                }
                None
            }
        }));
        times.push(t0.elapsed());
        spawn(&bin, &mut cluster.agents[idx]);
    }
    println!(
        "election after kill -9 of the leader (3 nodes, default timings): {}",
        stats(times)
    );
    drop(cluster);

    // --- idle footprint, 5 nodes, 1,000 stores
    let cluster = Cluster::start(&bin, 5);
    cluster.init(400);
    let addrs: Vec<String> = cluster.agents.iter().map(|a| a.listen.clone()).collect();
    let dir = cluster.dir.path().to_owned();
    rt.block_on(wait_async("all 5 agents to apply the topology", || {
        let addrs = addrs.clone();
        let dir = dir.clone();
        async move {
            let mut applied = Vec::new();
            for a in &addrs {
                applied.push(view(&dir, a).await?.1);
            }
            (applied.iter().all(|x| *x == applied[0] && *x > 0)).then_some(())
        }
    }));
    std::thread::sleep(Duration::from_secs(3));
    let pids: Vec<u32> = cluster
        .agents
        .iter()
        .filter_map(|a| a.child.as_ref().map(Child::id))
        .collect();
    let before: Vec<(u64, u64)> = pids.iter().filter_map(|p| proc_stat(*p)).collect();
    let window = Duration::from_secs(10);
    std::thread::sleep(window);
    let after: Vec<(u64, u64)> = pids.iter().filter_map(|p| proc_stat(*p)).collect();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    for (i, ((_, t0), (rss, t1))) in before.iter().zip(&after).enumerate() {
        let cpu = (t1 - t0) as f64 / hz / window.as_secs_f64() * 100.0;
        println!(
            "idle, 5 nodes, 1000 stores: imap{}: RSS {} MiB, CPU {:.2} %",
            i + 1,
            rss / 1024,
            cpu
        );
    }
}
