//! Real Cyrus IMAP under slotd in network namespaces: a client delivers
//! numbered messages over LMTP to a store's master IP without pause while
//! `slotctl failover` and `slotctl drain` move the master (the `exec`
//! driver), or while the master's machine dies (the `systemd` driver, with
//! a stand-in systemctl running the real unit: systemd cannot be the
//! service manager here); afterwards every message LMTP acknowledged is in
//! the mailbox exactly once, `slotctl verify` finds master and replica
//! alike, and at no sampled instant did two machines hold the master IP.
//! Needs root and Cyrus (CI installs both).

mod common;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::netns::cyrus::{banner, deliver, delivered, imap, kill_all};
use common::netns::{beside, find_store, master_ip, ok, wait_for, Site, SiteOptions, WAIT};

/// Bounds of the delivery loop.
const MAX_MESSAGES: u64 = 5000;
const MAX_LOAD: Duration = Duration::from_secs(120);

/// Deliveries acknowledged (250 after DATA) and attempted.
#[derive(Default)]
struct Load {
    acked: Mutex<Vec<u64>>,
    attempted: AtomicU64,
}

/// A site with real Cyrus, st0001's master answering IMAP on its master
/// IP, and alice's mailbox created there: (site, master IP, master).
fn cyrus_site(tag: &str, systemd: bool) -> (Site, IpAddr, String) {
    let site = Site::start_with(
        tag,
        SiteOptions {
            slots: 2,
            cyrus: true,
            systemd,
            ..SiteOptions::default()
        },
    );
    let s = site.init();
    let st = find_store(&s, "st0001");
    let ip: IpAddr = master_ip(st).expect("master ip");
    let first = st["master"].as_str().expect("master").to_owned();
    let client = site.lan.host("cl");
    // The master's Cyrus answers on the master IP; the admin creates the
    // mailbox there (replication carries it to the replica).
    let answers = wait_for("Cyrus to answer IMAP on the master IP", WAIT, || {
        client.spawn_blocking(move || banner(ip)).join().ok().flatten()
    });
    assert!(answers.ends_with(&format!(".{first}")), "banner {answers:?}");
    let greeting = client
        .spawn_blocking(move || common::netns::cyrus::greeting(ip))
        .join()
        .ok()
        .flatten()
        .unwrap_or_default();
    assert!(
        !greeting.contains("3."),
        "imapd.local.conf's serverinfo: min hides the version: {greeting:?}"
    );
    let created = client
        .spawn_blocking(move || imap(ip, "cyrus", &["CREATE user.alice"]))
        .join()
        .expect("imap thread");
    assert!(created.is_ok(), "CREATE user.alice: {created:?}");
    (site, ip, first)
}

/// The load: from the client, one delivery after another to `ip`, each
/// with a new number (a failed one, without 250, is not retried under the
/// same number), until `stop` (bounded in count and time).
fn start_load(site: &Site, ip: IpAddr, stop: &Arc<AtomicBool>) -> (Arc<Load>, std::thread::JoinHandle<()>) {
    let load = Arc::new(Load::default());
    let loader = {
        let (load, stop) = (load.clone(), stop.clone());
        site.lan.host("cl").spawn_blocking(move || {
            let until = Instant::now() + MAX_LOAD;
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && Instant::now() < until && n < MAX_MESSAGES {
                n += 1;
                load.attempted.store(n, Ordering::SeqCst);
                match deliver(ip, n) {
                    Ok(()) => load.acked.lock().expect("acked").push(n),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    };
    (load, loader)
}

/// Waits until `k` more deliveries are acknowledged.
fn more(load: &Load, k: usize) {
    let acked = |l: &Load| l.acked.lock().map(|a| a.len()).unwrap_or(0);
    let from = acked(load);
    wait_for("deliveries to go on", WAIT, || (acked(load) >= from + k).then_some(()));
}

#[test]
fn switchover_and_drain_under_lmtp_load_lose_no_acknowledged_message() {
    let (site, ip, first) = cyrus_site("cyr", false);
    let client = site.lan.host("cl");
    let stop = Arc::new(AtomicBool::new(false));
    let (load, loader) = start_load(&site, ip, &stop);
    // Addresses sampled while the master moves.
    let sample = |done: &AtomicBool| {
        let (mut samples, mut doubles) = (0u64, Vec::<Vec<String>>::new());
        let until = Instant::now() + MAX_LOAD;
        while !done.load(Ordering::SeqCst) && Instant::now() < until {
            let held = site.held_all(&[]);
            samples += 1;
            let holders: Vec<String> = (0..3)
                .filter(|i| held[*i].contains(&format!("{ip}/32")))
                .map(|i| format!("imap{}", i + 1))
                .collect();
            if holders.len() > 1 {
                doubles.push(holders);
            }
        }
        (samples, doubles)
    };
    let (second, (samples, doubles)) = beside(sample, || {
        more(&load, 20);
        let out = ok(site.slotctl(0, &["failover", "st0001", "--wait"]));
        assert!(out.contains("switchover in"), "{out}");
        more(&load, 20);
        let s = site.status(0).expect("status");
        let second = find_store(&s, "st0001")["master"].as_str().expect("master").to_owned();
        assert_ne!(second, first, "the switchover moved the master");
        let out = ok(site.slotctl(0, &["drain", &second, "--wait"]));
        assert!(out.contains(&format!("node {second} drained")), "{out}");
        more(&load, 20);
        second
    });
    stop.store(true, Ordering::SeqCst);
    loader.join().expect("loader");
    let acked = load.acked.lock().expect("acked").clone();
    let attempted = load.attempted.load(Ordering::SeqCst);

    // Every acknowledged message is on the master now, exactly once; a
    // delivery that got no 250 may or may not have landed, but only once.
    let s = site.status(0).expect("status");
    let third = find_store(&s, "st0001")["master"].as_str().expect("master").to_owned();
    assert_ne!(third, second, "the drain moved the master again");
    let found = wait_for("alice's messages on the master", WAIT, || {
        client.spawn_blocking(move || delivered(ip).ok()).join().ok().flatten()
    });
    let mut counts = std::collections::BTreeMap::<u64, usize>::new();
    for n in &found {
        *counts.entry(*n).or_default() += 1;
    }
    let missing: Vec<u64> = acked.iter().copied().filter(|n| !counts.contains_key(n)).collect();
    let twice: Vec<u64> = counts.iter().filter(|(_, c)| **c > 1).map(|(n, _)| *n).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but lost: {missing:?} (of {} acked)",
        acked.len()
    );
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert!(found.iter().all(|n| *n <= attempted), "a message nobody sent?");
    assert!(doubles.is_empty(), "two holders: {doubles:?}");
    assert!(samples >= 10, "the sampler looked only {samples} times");
    // Master and replica agree, once replication has caught up.
    verify_agrees(&site);
    let (mut starts, mut releases) = (0, 0);
    for i in 0..3 {
        let (s, r) = check_order(&site.log(i), "st0001", ip, &format!("imap{}", i + 1));
        starts += s;
        releases += r;
    }
    assert!(
        starts >= 3 && releases >= 2,
        "the logs show {starts} starts as master, {releases} releases"
    );
    let history = ok(site.slotctl(0, &["history", "st0001"]));
    assert!(history.matches("switchover").count() >= 2, "{history}");
    eprintln!(
        "{} delivered and acknowledged, {} attempts, master {first} → {second} → {third}",
        acked.len(),
        attempted
    );
}

/// Waits until `slotctl verify st0001` finds master and replica alike
/// (replication catches up meanwhile), failing the test if it never does.
fn verify_agrees(site: &Site) {
    let password = site.dir.path().join("sync-password");
    let password = password.to_str().expect("path");
    let mut last = String::new();
    let deadline = Instant::now() + WAIT;
    let agreed = loop {
        let out = site.slotctl(0, &["verify", "st0001", "--password-file", password]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "slotctl verify still finds differences: {last}"
        );
        last = text;
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(agreed.contains("master and replica agree on"), "{agreed}");
}

/// Node `name`'s index in the site, and its slot of st0001.
fn node_and_slot(site: &Site, name: &str) -> (usize, String) {
    let i = name.trim_start_matches("imap").parse::<usize>().expect("node number") - 1;
    let slot = site
        .topology()
        .stores
        .iter()
        .find(|x| x.name == "st0001")
        .and_then(|x| x.slots.iter().find(|r| r.node == i as u64 + 1))
        .map(|r| r.slot.clone())
        .expect("its slot of st0001");
    (i, slot)
}

/// The failing health checks of st0001 in the leader's status.
fn health(site: &Site) -> Option<Vec<String>> {
    let s = site.status(0)?;
    let checks = find_store(&s, "st0001")["health"].as_array()?.clone();
    Some(checks.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect())
}

/// The mission's order in one agent's log, for `store` with master IP `ip`:
/// Cyrus starts as master only while the master IP is bound here, and the
/// master IP is released only once no master instance runs.
/// Returns how many starts as master and releases it checked.
fn check_order(log: &str, store: &str, ip: IpAddr, node: &str) -> (usize, usize) {
    let span = format!("act{{store={store} ");
    let (bound, released) = (format!("bound ip={ip}/32"), format!("released ip={ip}/32"));
    let (mut holding, mut serving) = (false, false);
    let (mut starts, mut releases) = (0, 0);
    for line in log.lines().filter(|l| l.contains(&span)) {
        if line.ends_with(&bound) {
            holding = true;
        } else if line.contains("cyrmaster serving") && line.contains("role=Master") {
            assert!(holding, "{node}: Cyrus started as master without the master IP: {line}");
            serving = true;
            starts += 1;
        } else if line.contains("demoted") || line.contains("instance stopped") {
            serving = false;
        } else if line.ends_with(&released) {
            assert!(
                !serving,
                "{node}: master IP released while Cyrus served as master: {line}"
            );
            holding = false;
            releases += 1;
        }
    }
    (starts, releases)
}

/// The pids of `comm` processes in the process group of the cyrmaster
/// whose pidfile is `pidfile`.
fn group_processes(pidfile: &std::path::Path, comm: &str) -> Vec<i32> {
    let Some(pgid) = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return Vec::new();
    };
    slotd_agent::host::cyrus::procs::members(pgid)
        .into_iter()
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm))
        .collect()
}

/// With the `systemd` driver: the agents start and stop every instance as
/// `cyrus-slot@SLOT.service`, and `slotd fence` stops the units.
#[test]
fn unclean_death_of_the_master_machine_loses_nothing_once_its_leftovers_are_replayed() {
    let (site, ip, old) = cyrus_site("cyu", true);
    let (oi, slot) = node_and_slot(&site, &old);
    let client = site.lan.host("cl");
    let stop = Arc::new(AtomicBool::new(false));
    let (load, loader) = start_load(&site, ip, &stop);
    more(&load, 20);
    // Replication has caught up once (the mailbox and what was delivered
    // so far are on the replica): the master's sync_client may have
    // started before the replica listened, and waited out its back-off.
    let s = site.status(0).expect("status");
    let replica_ip: IpAddr = find_store(&s, "st0001")["replica_ip"]
        .as_str()
        .and_then(|r| r.split('/').next())
        .and_then(|r| r.parse().ok())
        .expect("replica ip");
    let so_far = load.acked.lock().expect("acked").clone();
    wait_for("the replica to have what was delivered so far", WAIT, || {
        let there = client
            .spawn_blocking(move || delivered(replica_ip).ok())
            .join()
            .ok()
            .flatten()?;
        so_far.iter().all(|n| there.contains(n)).then_some(())
    });

    // The master's rolling sync_client stops: what is delivered from now
    // on exists only on the master (in its sync log), as after a stall.
    let pidfile = site.cyrus_root(oi).join(&slot).join("run/master.pid");
    let senders = group_processes(&pidfile, "sync_client");
    assert!(!senders.is_empty(), "no rolling sync_client in {}", pidfile.display());
    for pid in &senders {
        // SAFETY: kill(2) on a test-owned process; no memory involved.
        unsafe {
            libc::kill(*pid, libc::SIGSTOP);
        }
    }
    more(&load, 10);

    // The machine dies uncleanly: kill -9 of the agent and of every Cyrus
    // process; then what systemd's ExecStopPost does: slotd fence.
    let t0 = Instant::now();
    site.kill9(oi);
    kill_all(&site.cyrus_root(oi));
    let fenced = site.fence(oi);
    assert!(
        fenced.status.success(),
        "slotd fence: {}",
        String::from_utf8_lossy(&fenced.stderr)
    );
    let new = wait_for("another machine's Cyrus on the master IP", WAIT, || {
        let b = client.spawn_blocking(move || banner(ip)).join().ok().flatten()?;
        (!b.ends_with(&format!(".{old}"))).then_some(b)
    });
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(15), "IMAP on the master IP after {took:?}");
    more(&load, 20);

    // The old machine returns: its leftover sync log is set aside, offered,
    // and replayed by the new master.
    site.spawn(oi);
    let history = wait_for("the replay in the history", WAIT, || {
        let out = site.slotctl(0, &["history", "st0001"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("replayed the leftover sync log").then_some(text)
    });
    more(&load, 10);
    stop.store(true, Ordering::SeqCst);
    loader.join().expect("loader");
    let acked = load.acked.lock().expect("acked").clone();

    let s = site.status(0).expect("status");
    let st = find_store(&s, "st0001");
    assert!(
        st["dirty"].as_array().is_some_and(Vec::is_empty),
        "the dirty mark is gone: {st}"
    );
    let new_master = st["master"].as_str().expect("master").to_owned();
    assert_ne!(new_master, old);
    let mut last_missing = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let found = client
            .spawn_blocking(move || delivered(ip).ok())
            .join()
            .ok()
            .flatten()
            .unwrap_or_default();
        let mut counts = std::collections::BTreeMap::<u64, usize>::new();
        for n in &found {
            *counts.entry(*n).or_default() += 1;
        }
        let missing: Vec<u64> = acked.iter().copied().filter(|n| !counts.contains_key(n)).collect();
        let twice: Vec<u64> = counts.iter().filter(|(_, c)| **c > 1).map(|(n, _)| *n).collect();
        assert!(twice.is_empty(), "delivered more than once: {twice:?}");
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged but lost: {last_missing:?} (of {}; history: {history})",
            acked.len()
        );
        last_missing = missing;
        std::thread::sleep(Duration::from_millis(200));
    }
    verify_agrees(&site);

    // Health checks: a master whose instance hangs greets nobody on the
    // master IP, and the leader's status says so; once it runs again, every
    // check of master and replica passes.
    let (ni, new_slot) = node_and_slot(&site, &new_master);
    let pid: i32 = std::fs::read_to_string(site.cyrus_root(ni).join(&new_slot).join("run/master.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .expect("the new master's cyrmaster");
    // The whole instance (idle imapd and lmtpd children accept new clients
    // themselves): its group, led by cyrmaster.
    // SAFETY: kill(2) on a test-owned process group; no memory involved.
    unsafe {
        libc::kill(-pid, libc::SIGSTOP);
    }
    let hung = wait_for("the status to show the hung master", WAIT, || {
        let h = health(&site)?;
        h.iter()
            .any(|p| p.starts_with(&format!("{new_master}: imap {ip}:143")) && p.contains("no greeting"))
            .then_some(h)
    });
    // SAFETY: as above.
    unsafe {
        libc::kill(-pid, libc::SIGCONT);
    }
    wait_for("every health check to pass again", WAIT, || {
        health(&site)?.is_empty().then_some(())
    });
    assert!(
        hung.iter().any(|p| p.contains("lmtp")),
        "LMTP greets nobody either: {hung:?}"
    );

    let leftovers = site.cyrus_root(oi).join(&slot).join("conf/sync-replayed");
    assert!(
        leftovers.is_dir(),
        "the replayed leftovers are put away in {}",
        leftovers.display()
    );
    eprintln!(
        "{} acknowledged, all there; {new} served the master IP {took:?} after the kill",
        acked.len()
    );
}

/// `systemctl stop` of an agent with real Cyrus under the shipped unit's
/// watchdog, which systemd keeps running through the stop, with a Cyrus
/// that takes a second to stop (its cyrmaster stopped meanwhile, as one
/// busy finishing a command): the last pass releases the master IP at once,
/// waits for the instance, and the agent exits 0, never killed by the
/// watchdog. (With the pings ending with the loops, every stop that took
/// 200 ms longer ended `failed`, killed, fenced.)
#[test]
fn a_stop_waiting_on_a_slow_cyrus_satisfies_the_watchdog_to_the_end() {
    let site = Site::start_with(
        "cyst",
        SiteOptions {
            slots: 2,
            cyrus: true,
            service_manager: true,
            ..SiteOptions::default()
        },
    );
    let s = site.init();
    let st = find_store(&s, "st0001");
    let master = st["master"].as_str().expect("master").to_owned();
    let ip = format!("{}/32", master_ip(st).expect("master ip"));
    let (victim, slot) = node_and_slot(&site, &master);
    // The master serving (its start waited out), not merely spawned: a
    // stop that begins mid-start has no started instance to wait for.
    let started = format!("instance started as master slot=\"{slot}\"");
    wait_for("the master instance to serve", WAIT, || {
        site.log(victim).contains(&started).then_some(())
    });
    let pidfile = site.cyrus_root(victim).join(&slot).join("run/master.pid");
    let cyrmaster = group_processes(&pidfile, "cyrmaster");
    assert_eq!(cyrmaster.len(), 1, "one cyrmaster in {}", pidfile.display());
    let signal = |pid: i32, sig: libc::c_int| {
        // SAFETY: kill(2) on a test-owned process; no memory involved.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    };
    signal(cyrmaster[0], libc::SIGSTOP);

    let stopping = Instant::now();
    site.signal(victim, libc::SIGTERM);
    // A second SIGTERM cuts the handover short: the last pass gives the
    // master role up itself.
    wait_for("the stop to begin", WAIT, || {
        site.log(victim).contains("handing masters over first").then_some(())
    });
    site.signal(victim, libc::SIGTERM);
    let released = wait_for("the master IP to be released", WAIT, || {
        (!site.held(victim).contains(&ip)).then(|| stopping.elapsed())
    });
    // Cyrus takes its time: a second, then it gets the SIGTERM it was sent.
    std::thread::sleep(Duration::from_secs(1));
    signal(cyrmaster[0], libc::SIGCONT);
    let status = wait_for("the stopped agent to exit", WAIT, || {
        let killed = site.killed.lock().unwrap().clone();
        assert!(
            killed.is_empty(),
            "the watchdog killed the stopping agent: {killed:?}; its log: {}",
            site.log(victim)
        );
        site.exit_status(victim)
    });
    let took = stopping.elapsed();
    eprintln!(
        "imap{}: master IP released {released:?} after the stop began; stopped in {took:?}",
        victim + 1
    );
    assert!(status.success(), "{status:?}");
    assert!(took > Duration::from_secs(1), "the stop waited for Cyrus: {took:?}");
    let log = site.log(victim);
    assert!(log.contains("instance stopped"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}
