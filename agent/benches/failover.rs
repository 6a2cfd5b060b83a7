//! Failover benchmark in network namespaces (root), default timings, real
//! `slotd` processes (release build), the client polling every moved master
//! IP at once. Prints one table of figures; asserts nothing; every wait is
//! bounded.
//!
//! `cargo bench -p slotd-agent --bench failover -- [RUNS] [init] [deaths] [sigstop]`
//! (default 20 runs of every section).
//!
//! - init → every master IP bound and served, for 3 × 20 and 3 × 40 masters;
//! - the leader's machine, and a follower's, killed (kill -9 of the agent,
//!   then `slotd fence` as ExecStopPost) → the client reaches every moved
//!   master IP on its new master; master IPs the survivors released;
//! - the same for a silent death (the machine's switch port down);
//! - SIGSTOP of a master's agent (the bench playing systemd: watchdog 200 ms,
//!   SIGKILL, `slotd fence`) → its master IPs gone from its namespace.

#[path = "../tests/common/netns.rs"]
mod netns;

mod common;

use common::{figures, Args};

use std::net::IpAddr;
use std::time::{Duration, Instant};

use netns::{leader, masters, wait_for, Site, SiteOptions, HOSTS, WAIT};

/// The client's connect timeout while it waits for moved IPs: it asks all
/// of them at once, every `POLL` + 20 ms at most.
const POLL: Duration = Duration::from_millis(50);

fn row(what: &str, v: Vec<Duration>, bound: &str) {
    let (median, max, n) = figures(v);
    println!("| {what} | {median:.0} ms | {max:.0} ms | {n} | {bound} |");
}

/// Master IPs released so far in the logs of `nodes`.
fn master_releases(site: &Site, nodes: &[usize]) -> usize {
    nodes.iter().map(|i| site.master_releases(*i).len()).sum()
}

/// Waits until every master IP is served by its master, the leader and term
/// have not changed for lease + margin, and every node is alive: failover
/// is measured from a steady cluster.
fn steady(site: &Site) -> serde_json::Value {
    let mut last: Option<(u64, u64)> = None;
    let mut since = Instant::now();
    wait_for("a steady cluster", Duration::from_secs(90), || {
        let s = site.served_by_masters(0);
        let all_alive = s["nodes"].as_array()?.iter().all(|n| n["alive"] == true);
        let now = (s["leader"].as_u64()?, s["term"].as_u64()?);
        if last != Some(now) || !all_alive {
            last = Some(now);
            since = Instant::now();
        }
        (since.elapsed() > Duration::from_millis(2600)).then_some(s)
    })
}

/// Who to make die, and how.
#[derive(Clone, Copy, PartialEq)]
enum Victim {
    Leader,
    Follower,
}

#[derive(Clone, Copy, PartialEq)]
enum Death {
    /// kill -9 of the agent, then `slotd fence` (ExecStopPost).
    KillAndFence,
    /// The machine's switch port goes down; the agent runs on, alone.
    PortDown,
}

/// One death and recovery; returns the time until the client reached every
/// moved master IP on its new master, and the master IPs the survivors
/// released meanwhile.
fn one_death(site: &Site, victim: Victim, death: Death) -> (Duration, usize) {
    let before = steady(site);
    let lead = leader(&before);
    let v = match victim {
        Victim::Leader => lead,
        Victim::Follower => (0..3)
            .filter(|i| *i != lead)
            .max_by_key(|i| masters(&before, &format!("imap{}", i + 1)).len())
            .expect("a follower"),
    };
    let name = format!("imap{}", v + 1);
    let ips: Vec<IpAddr> = masters(&before, &name).into_iter().map(|(_, ip)| ip).collect();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != v).collect();
    let released_before = master_releases(site, &survivors);
    let port = format!("p-{}", HOSTS[v]);
    let t0 = Instant::now();
    match death {
        Death::KillAndFence => {
            site.kill9(v);
            let out = site.fence(v);
            assert!(out.status.success(), "fence: {}", String::from_utf8_lossy(&out.stderr));
        }
        Death::PortDown => {
            site.lan.switch().ip(&["link", "set", &port, "down"]);
        }
    }
    wait_for("the moved master IPs served elsewhere", WAIT, || {
        site.who_serves_all_within(&ips, POLL)
            .iter()
            .all(|w| w.as_ref().is_some_and(|w| *w != name))
            .then_some(())
    });
    let took = t0.elapsed();
    let released = master_releases(site, &survivors) - released_before;
    match death {
        Death::KillAndFence => site.spawn(v),
        Death::PortDown => {
            site.lan.switch().ip(&["link", "set", &port, "up"]);
        }
    }
    (took, released)
}

/// Init of a fresh site with `slots` per node; time until every master IP
/// is bound by its master and served.
fn init_time(tag: &str, slots: usize) -> Duration {
    let site = Site::start_with(
        tag,
        SiteOptions {
            slots,
            ..SiteOptions::default()
        },
    );
    let t0 = Instant::now();
    site.init();
    t0.elapsed()
}

/// SIGSTOP of a master's agent; time until its master IPs left its
/// namespace (the site plays systemd).
fn sigstop(site: &Site) -> Duration {
    let before = steady(site);
    // The node with the most masters (stores failed away from a node stay
    // away: the victims of earlier runs have none).
    let v = (0..3)
        .max_by_key(|i| masters(&before, &format!("imap{}", i + 1)).len())
        .expect("a node");
    let ips: Vec<String> = masters(&before, &format!("imap{}", v + 1))
        .into_iter()
        .map(|(_, ip)| format!("{ip}/32"))
        .collect();
    assert!(!ips.is_empty(), "no master to freeze");
    let kills = site.killed.lock().map(|k| k.len()).unwrap_or(0);
    let t0 = Instant::now();
    site.signal(v, libc::SIGSTOP);
    wait_for("the frozen master's IPs gone", WAIT, || {
        (!site.held(v).iter().any(|a| ips.contains(a))).then_some(())
    });
    let took = t0.elapsed();
    wait_for("the watchdog kill recorded", WAIT, || {
        (site.killed.lock().map(|k| k.len()).unwrap_or(0) > kills).then_some(())
    });
    site.spawn(v);
    took
}

fn main() {
    // Sections to run (all without names): init, deaths, sigstop.
    let args = Args::parse(20);
    let (runs, run) = (args.runs, |section: &str| args.run(section));
    let t = slotd_agent::config::Timing::default();
    println!(
        "slotd failover figures, {runs} runs each, default timings (lease {:?}, margin {:?}, elections {}–{} ms)\n",
        t.lease(),
        t.clock_skew_margin(),
        t.election_timeout_min_ms,
        t.election_timeout_max_ms
    );
    println!("| what | median | max | runs | bound |");
    println!("| --- | --- | --- | --- | --- |");

    for (slots, label) in [(40, "3 × 20"), (80, "3 × 40")].into_iter().filter(|_| run("init")) {
        let v: Vec<Duration> = (0..runs).map(|_| init_time("bi", slots)).collect();
        row(&format!("init → all {label} master IPs bound and served"), v, "—");
    }

    if run("deaths") {
        deaths(runs);
    }
    if run("sigstop") {
        sigstops(runs);
    }
}

fn deaths(runs: usize) {
    let t = slotd_agent::config::Timing::default();
    let lm = t.lease() + t.clock_skew_margin();
    let silent_leader = t.leader_change() + lm;
    let site = Site::start_with(
        "bfo",
        SiteOptions {
            slots: 40,
            ..SiteOptions::default()
        },
    );
    site.init();
    let mut releases = Vec::new();
    for (victim, death, what, bound) in [
        (
            Victim::Leader,
            Death::KillAndFence,
            "leader's agent kill -9 + fence → client reaches its 20 moved IPs",
            format!("election + probe (≤ {:?})", t.leader_change()),
        ),
        (
            Victim::Follower,
            Death::KillAndFence,
            "follower's agent kill -9 + fence → the same",
            "probe + commit".to_owned(),
        ),
        (
            Victim::Leader,
            Death::PortDown,
            "leader's port down (silent) → the same",
            format!("election + lease + margin (≤ {silent_leader:?})"),
        ),
        (
            Victim::Follower,
            Death::PortDown,
            "follower's port down (silent) → the same",
            format!("lease + margin ({lm:?})"),
        ),
    ] {
        let mut took = Vec::new();
        for _ in 0..runs {
            let (d, r) = one_death(&site, victim, death);
            took.push(d);
            if victim == Victim::Leader {
                releases.push(r);
            }
        }
        row(what, took, &bound);
    }
    println!(
        "\nmaster IPs released by survivors when the leader died: {} in {} leader deaths",
        releases.iter().sum::<usize>(),
        releases.len()
    );
}

fn sigstops(runs: usize) {
    let t = slotd_agent::config::Timing::default();
    let lm = t.lease() + t.clock_skew_margin();
    let site = Site::start_with(
        "bfz",
        SiteOptions {
            service_manager: true,
            ..SiteOptions::default()
        },
    );
    site.init();
    let stops: Vec<Duration> = (0..runs).map(|_| sigstop(&site)).collect();
    row(
        "SIGSTOP of a master's agent → its master IPs leave its namespace",
        stops,
        &format!("lease + margin ({lm:?})"),
    );
}
