//! Failover benchmark in network namespaces (root), default timings:
//! - kill -9 of a master's agent (then `slotd fence`, as ExecStopPost): time
//!   until the client reaches every moved master IP on its new node;
//! - the same after cutting the master's switch port.
//!
//! `cargo bench -p slotd-agent --bench failover -- [RUNS]` (default 20).
//! Prints figures, asserts nothing; every wait is bounded.

#[path = "../tests/common/netns.rs"]
mod netns;

use std::time::{Duration, Instant};

use netns::{leader, masters, wait_for, Site, HOSTS, WAIT};

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "median {:.0} ms, min {:.0} ms, max {:.0} ms (n={})",
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1]),
        v.len()
    )
}

/// Runs `cut` on a master node that is not the leader, waits until the
/// client reaches all its master IPs on other nodes, then `heal`s.
/// Waits until the leader and term have not changed for `lease + margin` and
/// every master IP is served: failover is measured from a steady cluster.
fn steady(site: &Site) -> serde_json::Value {
    let mut last: Option<(u64, u64)> = None;
    let mut since = Instant::now();
    wait_for("a steady cluster", Duration::from_secs(60), || {
        let s = site.served_by_masters(0);
        let now = (s["leader"].as_u64()?, s["term"].as_u64()?);
        if last != Some(now) {
            last = Some(now);
            since = Instant::now();
        }
        (since.elapsed() > Duration::from_millis(2600)).then_some(s)
    })
}

fn one_run(
    site: &mut Site,
    cut: &mut dyn FnMut(&mut Site, usize),
    heal: &mut dyn FnMut(&mut Site, usize),
    elections: &mut u32,
) -> Duration {
    let before = steady(site);
    let lead = leader(&before);
    let victim = (0..3)
        .filter(|i| *i != lead)
        .max_by_key(|i| masters(&before, &format!("imap{}", i + 1)).len())
        .expect("a node");
    let name = format!("imap{}", victim + 1);
    let moved = masters(&before, &name);
    let t0 = Instant::now();
    cut(site, victim);
    wait_for("moved master IPs served elsewhere", WAIT, || {
        moved
            .iter()
            .all(|(_, ip)| site.who_serves(*ip).is_some_and(|who| who != name))
            .then_some(())
    });
    let took = t0.elapsed();
    if std::env::var("BENCH_DEBUG").is_ok() {
        eprintln!("victim imap{} with {} masters: {took:?}", victim + 1, moved.len());
        for i in 0..3 {
            for line in site
                .log(i)
                .lines()
                .filter(|l| {
                    l.contains("split-brain")
                        || l.contains("action failed")
                        || l.contains("failover committed")
                        || l.contains(" bound")
                })
                .rev()
                .take(6)
            {
                eprintln!("  imap{}: {}", i + 1, &line[..line.len().min(200)]);
            }
        }
    }
    let term = site
        .status((0..3).find(|i| *i != victim).expect("a survivor"))
        .map(|s| s["term"].clone());
    heal(site, victim);
    let survivor = (0..3).find(|i| *i != victim).expect("a survivor");
    wait_for("the node alive again", WAIT, || {
        let s = site.status(survivor)?;
        let n = s["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["name"] == name.as_str())?
            .clone();
        (n["alive"] == true).then_some(())
    });
    if site.status(survivor).map(|s| s["term"].clone()) != term {
        *elections += 1;
    }
    took
}

fn main() {
    let runs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(20);
    let mut site = Site::start("bfo");
    site.init();
    let mut elections = 0;

    let mut kills = Vec::new();
    for _ in 0..runs {
        kills.push(one_run(
            &mut site,
            &mut |s, v| {
                s.kill9(v);
                let cfg = s.config(v);
                let out = s.lan.host(HOSTS[v]).exec(
                    env!("CARGO_BIN_EXE_slotd"),
                    &["fence", "--config", cfg.to_str().unwrap()],
                );
                assert!(out.status.success());
            },
            &mut |s, v| s.spawn(v),
            &mut elections,
        ));
    }
    println!(
        "kill -9 of a master's agent -> client reaches every moved master IP: {}",
        stats(kills)
    );
    println!("  runs where the node's return caused a new Raft election: {elections} of {runs}");
    elections = 0;

    let mut cuts = Vec::new();
    for _ in 0..runs {
        cuts.push(one_run(
            &mut site,
            &mut |s, v| {
                s.lan.switch().ip(&["link", "set", &format!("p-{}", HOSTS[v]), "down"]);
            },
            &mut |s, v| {
                s.lan.switch().ip(&["link", "set", &format!("p-{}", HOSTS[v]), "up"]);
            },
            &mut elections,
        ));
    }
    println!(
        "link cut of a master -> client reaches every moved master IP: {}",
        stats(cuts)
    );
    println!("  runs where healing the link caused a new Raft election: {elections} of {runs}");
}
